// RMSNorm (Hugging Face MixtralRMSNorm) on bf16 rows, statistics in fp32; the CUDA twin of
// kernels/cpu/rmsnorm.hpp.
#pragma once

#include "kernels/cuda/common.cuh"

namespace moetune::kernels::cuda {

// out[N,D] = bf16(bf16(x * rstd) * w) as HF rounds it; rstd[N] fp32 kept for the backward.
// in[N,D], weight[D]. out may alias in.
void rmsnorm_forward(bf16* out, float* rstd, const bf16* in, const bf16* weight, std::int64_t n,
                     std::int64_t d, double eps, cudaStream_t stream);

// din[N,D] overwritten (may alias dout); dweight[D] fp32 accumulates (+=).
void rmsnorm_backward(bf16* din, float* dweight, const bf16* dout, const bf16* in,
                      const bf16* weight, const float* rstd, std::int64_t n, std::int64_t d,
                      cudaStream_t stream);

}  // namespace moetune::kernels::cuda
