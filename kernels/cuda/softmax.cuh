// Row softmax over fp32 [N,C] and its backward; the CUDA twin of kernels/cpu/softmax.hpp (the
// router and the losses keep their logits in fp32).
#pragma once

#include "kernels/cuda/common.cuh"

namespace moetune::kernels::cuda {

// out[N,C] = softmax(in[N,C]) per row; out may alias in.
void softmax_forward(float* out, const float* in, std::int64_t n, std::int64_t c,
                     cudaStream_t stream);
// din[N,C] = p * (dout - sum_j dout_j p_j); din may alias dout.
void softmax_backward(float* din, const float* dout, const float* probs, std::int64_t n,
                      std::int64_t c, cudaStream_t stream);

}  // namespace moetune::kernels::cuda
