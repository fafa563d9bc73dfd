// AdamW over the flat fp32 master weights (CUDA twin of kernels/cpu/optimizer.hpp): every
// parameter tensor lives in one buffer, so one launch updates them all (a multi-tensor step by
// construction), and refreshes the bf16 working copy the forward reads. Plus the pieces of global
// grad-norm clipping: a deterministic sum of squares and an in-place scale.
#pragma once

#include "kernels/cpu/optimizer.hpp"
#include "kernels/cuda/common.cuh"

namespace moetune::kernels::cuda {

using AdamWParams = moetune::kernels::cpu::AdamWParams;

// As the CPU twin, in double per element: param, m, v [N] fp32 updated in place with
// grad * grad_scale; working[N] (when not null) = bf16(param) afterwards.
void adamw_step(float* param, float* m, float* v, const float* grad, bf16* working, std::int64_t n,
                const AdamWParams& hp, std::int64_t step, double grad_scale, cudaStream_t stream);

// Doubles of scratch sum_of_squares needs.
inline constexpr int kSumOfSquaresBlocks = 1024;
// *out = sum x[i]^2 in double, in a fixed order (the same every run). partial: kSumOfSquaresBlocks
// doubles of scratch.
void sum_of_squares(double* out, const float* x, std::int64_t n, double* partial,
                    cudaStream_t stream);

// x[N] *= s.
void scale_inplace(float* x, std::int64_t n, double s, cudaStream_t stream);

}  // namespace moetune::kernels::cuda
