// RMSNorm forward and backward, rows split over the kernel threads. Row reductions accumulate in
// double so the fp32 path stays close to the exact value for wide rows (D = 4096 and up); the
// per-element products run in T, as Hugging Face's fp32 RMSNorm does.
#include "kernels/cpu/rmsnorm.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.hpp"
#include "kernels/cpu/parallel.hpp"
#include "kernels/cpu/vec_math.hpp"

namespace moetune::kernels::cpu {

namespace {

// Rows per chunk: at least ~16k values, so a chunk outweighs the pool's wake-up.
std::int64_t min_rows(std::int64_t d) {
  return std::max<std::int64_t>(1, (std::int64_t(1) << 14) / d);
}

}  // namespace

template <typename T>
void rmsnorm_forward(T* out, T* rstd, const T* in, const T* weight, std::int64_t n, std::int64_t d,
                     double eps) {
  MOETUNE_CHECK(n >= 0 && d > 0, "rmsnorm_forward: need n >= 0 and d > 0");
  MOETUNE_CHECK(eps >= 0, "rmsnorm_forward: eps must be >= 0");
  if (n == 0) return;
  MOETUNE_CHECK(out && rstd && in && weight, "rmsnorm_forward: null buffer");
  parallel_for(n, min_rows(d), [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; i++) {
      const T* x = in + i * d;  // [D]
      T* y = out + i * d;       // [D]
      const T r = T(1.0 / std::sqrt(vec::sum_sq(x, d) / double(d) + eps));
      rstd[i] = r;
      for (std::int64_t j = 0; j < d; j++)
        y[j] = (x[j] * r) * weight[j];
    }
  });
}

// With r = rstd and g = dout * w:  dx_j = r * g_j - x_j * r^3 / D * sum_k g_k x_k.
// dweight sums over rows: each chunk sums its rows into its own row of a double scratch, and the
// chunks are added in chunk order, so the result is fixed for a thread count.
template <typename T>
void rmsnorm_backward(T* din, T* dweight, const T* dout, const T* in, const T* weight,
                      const T* rstd, std::int64_t n, std::int64_t d) {
  MOETUNE_CHECK(n >= 0 && d > 0, "rmsnorm_backward: need n >= 0 and d > 0");
  if (n == 0) return;
  MOETUNE_CHECK(din && dweight && dout && in && weight && rstd, "rmsnorm_backward: null buffer");
  const std::int64_t chunks = parallel_chunks(n, min_rows(d));
  // [chunks, D] partial dweight; kept between calls on the calling thread.
  thread_local std::vector<double> partial;
  partial.assign(static_cast<std::size_t>(chunks * d), 0.0);
  double* partial_data = partial.data();
  parallel_for_chunks(n, min_rows(d),
                      [&](std::int64_t chunk, std::int64_t begin, std::int64_t end) {
                        double* dw = partial_data + chunk * d;  // [D]
                        for (std::int64_t i = begin; i < end; i++) {
                          const T* x = in + i * d;     // [D]
                          const T* dy = dout + i * d;  // [D]
                          T* dx = din + i * d;         // [D]
                          const double r = double(rstd[i]);
                          const double dot = vec::dot3(dy, weight, x, d);  // sum_k dy_k w_k x_k
                          const T coef = T(dot * r * r * r / double(d));
                          const T rt = T(r);
                          for (std::int64_t j = 0; j < d; j++) {
                            dw[j] += double(dy[j] * x[j]) * r;
                            dx[j] = rt * dy[j] * weight[j] - coef * x[j];
                          }
                        }
                      });
  for (std::int64_t j = 0; j < d; j++) {
    double sum = 0;
    for (std::int64_t c = 0; c < chunks; c++)
      sum += partial_data[c * d + j];
    dweight[j] += T(sum);
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
