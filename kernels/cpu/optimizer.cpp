// AdamW step and the gradient-norm helpers. The update runs in double per element and stores T.
#include "kernels/cpu/optimizer.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.hpp"
#include "kernels/cpu/parallel.hpp"

namespace moetune::kernels::cpu {

template <typename T>
void adamw_step(T* param, T* m, T* v, const T* grad, std::int64_t n, const AdamWParams& hp,
                std::int64_t step, double grad_scale) {
  MOETUNE_CHECK(n >= 0, "adamw_step: negative n");
  MOETUNE_CHECK(step >= 1, "adamw_step: step counts from 1");
  MOETUNE_CHECK(hp.lr >= 0 && hp.eps >= 0 && hp.weight_decay >= 0,
                "adamw_step: negative lr/eps/wd");
  MOETUNE_CHECK(hp.beta1 >= 0 && hp.beta1 < 1 && hp.beta2 >= 0 && hp.beta2 < 1,
                "adamw_step: betas must be in [0, 1)");
  if (n == 0) return;
  MOETUNE_CHECK(param && m && v && grad, "adamw_step: null buffer");
  const double bias1 = 1.0 - std::pow(hp.beta1, double(step));
  const double bias2 = 1.0 - std::pow(hp.beta2, double(step));
  const double decay = 1.0 - hp.lr * hp.weight_decay;
  // Elementwise and memory-bound: every thread takes its own stretch of the arrays.
  parallel_for(n, 1 << 16, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; i++) {
      const double g = double(grad[i]) * grad_scale;
      const double mi = hp.beta1 * double(m[i]) + (1.0 - hp.beta1) * g;
      const double vi = hp.beta2 * double(v[i]) + (1.0 - hp.beta2) * g * g;
      m[i] = T(mi);
      v[i] = T(vi);
      const double p = double(param[i]) * decay;
      param[i] = T(p - hp.lr * (mi / bias1) / (std::sqrt(vi / bias2) + hp.eps));
    }
  });
}

template <typename T>
double sum_of_squares(const T* x, std::int64_t n) {
  MOETUNE_CHECK(n >= 0, "sum_of_squares: negative n");
  MOETUNE_CHECK(n == 0 || x, "sum_of_squares: null buffer");
  // Partial sums per chunk, added in chunk order: the same result for the same thread count.
  constexpr std::int64_t kMinChunk = 1 << 16;
  std::vector<double> partial(static_cast<std::size_t>(parallel_chunks(n, kMinChunk)), 0.0);
  parallel_for_chunks(n, kMinChunk, [&](std::int64_t chunk, std::int64_t begin, std::int64_t end) {
    double sum = 0;
    for (std::int64_t i = begin; i < end; i++)
      sum += double(x[i]) * double(x[i]);
    partial[static_cast<std::size_t>(chunk)] = sum;
  });
  double sum = 0;
  for (double s : partial)
    sum += s;
  return sum;
}

double clip_scale(double total_norm, double max_norm) {
  MOETUNE_CHECK(total_norm >= 0, "clip_scale: negative norm");
  if (max_norm <= 0) return 1.0;
  return std::min(1.0, max_norm / (total_norm + 1e-6));
}

template <typename T>
void scale_inplace(T* x, std::int64_t n, double s) {
  MOETUNE_CHECK(n >= 0, "scale_inplace: negative n");
  MOETUNE_CHECK(n == 0 || x, "scale_inplace: null buffer");
  for (std::int64_t i = 0; i < n; i++)
    x[i] = T(double(x[i]) * s);
}

#define MOETUNE_INSTANTIATE_OPTIMIZER(T)                                              \
  template void adamw_step<T>(T*, T*, T*, const T*, std::int64_t, const AdamWParams&, \
                              std::int64_t, double);                                  \
  template double sum_of_squares<T>(const T*, std::int64_t);                          \
  template void scale_inplace<T>(T*, std::int64_t, double);
MOETUNE_INSTANTIATE_OPTIMIZER(float)
MOETUNE_INSTANTIATE_OPTIMIZER(double)
#undef MOETUNE_INSTANTIATE_OPTIMIZER

}  // namespace moetune::kernels::cpu
