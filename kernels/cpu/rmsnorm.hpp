// RMSNorm as in Hugging Face's MixtralRMSNorm: y = x * rsqrt(mean(x^2) + eps) * w, per row.
#pragma once

#include <cstdint>

namespace moetune::kernels::cpu {

// out[N,D], rstd[N] (saved for backward), in[N,D], weight[D]. out may alias in.
template <typename T>
void rmsnorm_forward(T* out, T* rstd, const T* in, const T* weight, std::int64_t n, std::int64_t d,
                     double eps);

// din[N,D] is overwritten; dweight[D] accumulates (+=) so several micro-batches can add up.
// dout[N,D], in[N,D], weight[D], rstd[N] from the forward.
template <typename T>
void rmsnorm_backward(T* din, T* dweight, const T* dout, const T* in, const T* weight,
                      const T* rstd, std::int64_t n, std::int64_t d);

}  // namespace moetune::kernels::cpu
