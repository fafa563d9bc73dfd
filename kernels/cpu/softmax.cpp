// Row softmax forward/backward and log-sum-exp. Sums accumulate in double.
#include "kernels/cpu/softmax.hpp"

#include <algorithm>
#include <cmath>

#include "core/error.hpp"

namespace moetune::kernels::cpu {

template <typename T>
void softmax_forward(T* out, const T* in, std::int64_t n, std::int64_t c) {
  MOETUNE_CHECK(n >= 0 && c > 0, "softmax_forward: need n >= 0 and c > 0");
  if (n == 0) return;
  MOETUNE_CHECK(out && in, "softmax_forward: null buffer");
  for (std::int64_t i = 0; i < n; i++) {
    const T* x = in + i * c;  // [C]
    T* y = out + i * c;       // [C]
    const T max_x = *std::max_element(x, x + c);
    double sum = 0;
    for (std::int64_t j = 0; j < c; j++) {
      const double e = std::exp(double(x[j] - max_x));
      y[j] = T(e);
      sum += e;
    }
    const double inv = 1.0 / sum;
    for (std::int64_t j = 0; j < c; j++)
      y[j] = T(double(y[j]) * inv);
  }
}

template <typename T>
void softmax_backward(T* din, const T* dout, const T* probs, std::int64_t n, std::int64_t c) {
  MOETUNE_CHECK(n >= 0 && c > 0, "softmax_backward: need n >= 0 and c > 0");
  if (n == 0) return;
  MOETUNE_CHECK(din && dout && probs, "softmax_backward: null buffer");
  for (std::int64_t i = 0; i < n; i++) {
    const T* dy = dout + i * c;  // [C]
    const T* p = probs + i * c;  // [C]
    T* dx = din + i * c;         // [C]
    double dot = 0;
    for (std::int64_t j = 0; j < c; j++)
      dot += double(dy[j]) * double(p[j]);
    for (std::int64_t j = 0; j < c; j++)
      dx[j] = T(double(p[j]) * (double(dy[j]) - dot));
  }
}

template <typename T>
void logsumexp_rows(double* out, const T* in, std::int64_t n, std::int64_t c) {
  MOETUNE_CHECK(n >= 0 && c > 0, "logsumexp_rows: need n >= 0 and c > 0");
  if (n == 0) return;
  MOETUNE_CHECK(out && in, "logsumexp_rows: null buffer");
  for (std::int64_t i = 0; i < n; i++) {
    const T* x = in + i * c;  // [C]
    const double max_x = double(*std::max_element(x, x + c));
    double sum = 0;
    for (std::int64_t j = 0; j < c; j++)
      sum += std::exp(double(x[j]) - max_x);
    out[i] = max_x + std::log(sum);
  }
}

#define MOETUNE_INSTANTIATE_SOFTMAX(T)                                                   \
  template void softmax_forward<T>(T*, const T*, std::int64_t, std::int64_t);            \
  template void softmax_backward<T>(T*, const T*, const T*, std::int64_t, std::int64_t); \
  template void logsumexp_rows<T>(double*, const T*, std::int64_t, std::int64_t);
MOETUNE_INSTANTIATE_SOFTMAX(float)
MOETUNE_INSTANTIATE_SOFTMAX(double)
#undef MOETUNE_INSTANTIATE_SOFTMAX

}  // namespace moetune::kernels::cpu
