// AdamW step and the gradient-norm helpers. The update runs in T (fp32 for training, double for
// the reference tests) with the bias corrections hoisted out of the loop: one square root and one
// division per element, so the loop vectorises and runs at memory speed (it reads p, m, v and g and
// writes p, m and v: 28 bytes per fp32 parameter).
#include "kernels/cpu/optimizer.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.hpp"
#include "kernels/cpu/parallel.hpp"
#include "kernels/cpu/vec_math.hpp"

namespace moetune::kernels::cpu {

namespace {

// Element-wise loops run on the kernel threads in chunks of at least this many values: ~100 us of
// AdamW, far above the pool's wake-up cost.
constexpr std::int64_t kMinChunk = 1 << 16;

// The per-step constants of AdamW in T.
template <typename T>
struct AdamWConstants {
  T decay;           // 1 - lr wd
  T step_size;       // lr / (1 - beta1^step)
  T inv_sqrt_bias2;  // 1 / sqrt(1 - beta2^step)
  T eps, b1, b2, one_minus_b1, one_minus_b2;
  T grad_scale;
};

// AdamW over n values. The constants come in by value and the arrays as restrict pointers, so
// the compiler keeps the constants in registers and vectorises without alias checks.
template <typename T>
void adamw_range(T* __restrict__ p, T* __restrict__ m, T* __restrict__ v, const T* __restrict__ g,
                 std::int64_t n, const AdamWConstants<T> c) {
  for (std::int64_t i = 0; i < n; i++) {
    const T gi = g[i] * c.grad_scale;
    const T mi = c.b1 * m[i] + c.one_minus_b1 * gi;
    const T vi = c.b2 * v[i] + c.one_minus_b2 * (gi * gi);
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * c.decay - c.step_size * mi / (std::sqrt(vi) * c.inv_sqrt_bias2 + c.eps);
  }
}

}  // namespace

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
  // PyTorch's form: p = p (1 - lr wd) - (lr / bias1) m / (sqrt(v) / sqrt(bias2) + eps), with the
  // division by sqrt(bias2) turned into a multiplication by a constant.
  const double bias1 = 1.0 - std::pow(hp.beta1, double(step));
  const double bias2 = 1.0 - std::pow(hp.beta2, double(step));
  const AdamWConstants<T> c{T(1.0 - hp.lr * hp.weight_decay),
                            T(hp.lr / bias1),
                            T(1.0 / std::sqrt(bias2)),
                            T(hp.eps),
                            T(hp.beta1),
                            T(hp.beta2),
                            T(1.0 - hp.beta1),
                            T(1.0 - hp.beta2),
                            T(grad_scale)};
  parallel_for(n, kMinChunk, [&](std::int64_t begin, std::int64_t end) {
    adamw_range(param + begin, m + begin, v + begin, grad + begin, end - begin, c);
  });
}

template <typename T>
double sum_of_squares(const T* x, std::int64_t n) {
  MOETUNE_CHECK(n >= 0, "sum_of_squares: negative n");
  MOETUNE_CHECK(n == 0 || x, "sum_of_squares: null buffer");
  // Partial sums per chunk, added in chunk order: the same result for the same thread count.
  // Chunks of at least n / 64 values make at most 64 of them, so a stack array holds them.
  constexpr std::int64_t kMaxPartials = 64;
  const std::int64_t min_chunk = std::max(kMinChunk, (n + kMaxPartials - 1) / kMaxPartials);
  double partial[kMaxPartials] = {};
  parallel_for_chunks(n, min_chunk, [&](std::int64_t chunk, std::int64_t begin, std::int64_t end) {
    partial[chunk] = vec::sum_sq(x + begin, end - begin);
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
  const T factor = T(s);
  parallel_for(n, kMinChunk, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; i++)
      x[i] *= factor;
  });
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
