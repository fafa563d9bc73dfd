// RMSNorm forward and backward. Row reductions accumulate in double so the fp32 reference stays
// close to the exact value for wide rows (D = 4096 and up).
#include "kernels/cpu/rmsnorm.hpp"

#include <cmath>

#include "core/error.hpp"

namespace moetune::kernels::cpu {

template <typename T>
void rmsnorm_forward(T* out, T* rstd, const T* in, const T* weight, std::int64_t n, std::int64_t d,
                     double eps) {
  MOETUNE_CHECK(n >= 0 && d > 0, "rmsnorm_forward: need n >= 0 and d > 0");
  MOETUNE_CHECK(eps >= 0, "rmsnorm_forward: eps must be >= 0");
  if (n == 0) return;
  MOETUNE_CHECK(out && rstd && in && weight, "rmsnorm_forward: null buffer");
  for (std::int64_t i = 0; i < n; i++) {
    const T* x = in + i * d;  // [D]
    T* y = out + i * d;       // [D]
    double sum_sq = 0;
    for (std::int64_t j = 0; j < d; j++)
      sum_sq += double(x[j]) * double(x[j]);
    const double r = 1.0 / std::sqrt(sum_sq / double(d) + eps);
    rstd[i] = T(r);
    for (std::int64_t j = 0; j < d; j++)
      y[j] = T(double(x[j]) * r) * weight[j];
  }
}

// With r = rstd and g = dout * w:  dx_j = r * g_j - x_j * r^3 / D * sum_k g_k x_k.
template <typename T>
void rmsnorm_backward(T* din, T* dweight, const T* dout, const T* in, const T* weight,
                      const T* rstd, std::int64_t n, std::int64_t d) {
  MOETUNE_CHECK(n >= 0 && d > 0, "rmsnorm_backward: need n >= 0 and d > 0");
  if (n == 0) return;
  MOETUNE_CHECK(din && dweight && dout && in && weight && rstd, "rmsnorm_backward: null buffer");
  for (std::int64_t i = 0; i < n; i++) {
    const T* x = in + i * d;     // [D]
    const T* dy = dout + i * d;  // [D]
    T* dx = din + i * d;         // [D]
    const double r = double(rstd[i]);
    double dot = 0;  // sum_k dy_k w_k x_k
    for (std::int64_t j = 0; j < d; j++)
      dot += double(dy[j]) * double(weight[j]) * double(x[j]);
    const double coef = dot * r * r * r / double(d);
    for (std::int64_t j = 0; j < d; j++) {
      dweight[j] += T(double(dy[j]) * double(x[j]) * r);
      dx[j] = T(r * double(dy[j]) * double(weight[j]) - coef * double(x[j]));
    }
  }
}

template void rmsnorm_forward<float>(float*, float*, const float*, const float*, std::int64_t,
                                     std::int64_t, double);
template void rmsnorm_forward<double>(double*, double*, const double*, const double*, std::int64_t,
                                      std::int64_t, double);
template void rmsnorm_backward<float>(float*, float*, const float*, const float*, const float*,
                                      const float*, std::int64_t, std::int64_t);
template void rmsnorm_backward<double>(double*, double*, const double*, const double*,
                                       const double*, const double*, std::int64_t, std::int64_t);

}  // namespace moetune::kernels::cpu
