// The SwiGLU experts on the GPU (CUDA twin of kernels/cpu/swiglu.hpp): the elementwise gate
// silu(h1) * h3 and its backward, and the grouped form over a permuted buffer whose local experts
// run as grouped GEMMs (Blas::gemm_grouped) rather than a loop.
#pragma once

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/gemm.cuh"

namespace moetune::kernels::cuda {

// act[N] = silu(h1) * h3, in fp32, rounded once.
void swiglu_act_forward(bf16* act, const bf16* h1, const bf16* h3, std::int64_t n,
                        cudaStream_t stream);
// From dact[N] (may alias dh1): dh1 = dact * h3 * silu'(h1), dh3 = dact * silu(h1).
void swiglu_act_backward(bf16* dh1, bf16* dh3, const bf16* dact, const bf16* h1, const bf16* h3,
                         std::int64_t n, cudaStream_t stream);

// Expert x owns rows [offset_x, offset_x + counts[x]) of the permuted buffers; counts is a HOST
// array (the grouped GEMM needs the sizes on the host).
//   out[R,D], h1/h3/act[R,F], x[R,D]; w1, w3 [E,F,D], w2 [E,D,F] (bf16 working weights).
void swiglu_grouped_forward(Blas& blas, bf16* out, bf16* h1, bf16* h3, bf16* act, const bf16* x,
                            const bf16* w1, const bf16* w3, const bf16* w2,
                            const std::int64_t* counts, std::int64_t e, std::int64_t d,
                            std::int64_t f);

// dx[R,D] overwritten; dw1, dw3 [E,F,D] and dw2 [E,D,F] are fp32 and accumulate (+=), computed by
// one cuBLASLt GEMM per expert that adds straight into fp32 (grouped GEMMs write bf16 only);
// dh1, dh3 [R,F] scratch.
void swiglu_grouped_backward(Blas& blas, bf16* dx, float* dw1, float* dw3, float* dw2, bf16* dh1,
                             bf16* dh3, const bf16* dout, const bf16* x, const bf16* h1,
                             const bf16* h3, const bf16* act, const bf16* w1, const bf16* w3,
                             const bf16* w2, const std::int64_t* counts, std::int64_t e,
                             std::int64_t d, std::int64_t f);

}  // namespace moetune::kernels::cuda
