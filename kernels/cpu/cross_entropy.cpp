// Cross-entropy forward and fused softmax backward, one row at a time; log-sum-exp in double.
#include "kernels/cpu/cross_entropy.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/error.hpp"

namespace moetune::kernels::cpu {

namespace {

void check_target(std::int32_t target, std::int64_t v, std::int64_t row) {
  MOETUNE_CHECK(target == kIgnoreIndex || (target >= 0 && target < v),
                "cross_entropy: target " + std::to_string(target) + " at row " +
                    std::to_string(row) + " outside [0, " + std::to_string(v) + ")");
}

template <typename T>
double row_logsumexp(const T* x, std::int64_t v) {
  const double max_x = double(*std::max_element(x, x + v));
  double sum = 0;
  for (std::int64_t j = 0; j < v; j++)
    sum += std::exp(double(x[j]) - max_x);
  return max_x + std::log(sum);
}

}  // namespace

std::int64_t count_targets(const std::int32_t* targets, std::int64_t n) {
  MOETUNE_CHECK(n >= 0, "count_targets: negative n");
  MOETUNE_CHECK(n == 0 || targets, "count_targets: null buffer");
  std::int64_t count = 0;
  for (std::int64_t i = 0; i < n; i++)
    count += targets[i] != kIgnoreIndex ? 1 : 0;
  return count;
}

template <typename T>
double cross_entropy_forward(T* losses, const T* logits, const std::int32_t* targets,
                             std::int64_t n, std::int64_t v) {
  MOETUNE_CHECK(n >= 0 && v > 0, "cross_entropy_forward: need n >= 0 and v > 0");
  if (n == 0) return 0.0;
  MOETUNE_CHECK(logits && targets, "cross_entropy_forward: null buffer");
  double sum = 0;
  std::int64_t count = 0;
  for (std::int64_t i = 0; i < n; i++) {
    check_target(targets[i], v, i);
    double loss = 0;
    if (targets[i] != kIgnoreIndex) {
      const T* x = logits + i * v;  // [V]
      loss = row_logsumexp(x, v) - double(x[targets[i]]);
      sum += loss;
      count++;
    }
    if (losses) losses[i] = T(loss);
  }
  return count > 0 ? sum / double(count) : 0.0;
}

template <typename T>
void cross_entropy_backward(T* dlogits, const T* logits, const std::int32_t* targets,
                            std::int64_t n, std::int64_t v, double dloss) {
  MOETUNE_CHECK(n >= 0 && v > 0, "cross_entropy_backward: need n >= 0 and v > 0");
  if (n == 0) return;
  MOETUNE_CHECK(dlogits && logits && targets, "cross_entropy_backward: null buffer");
  const std::int64_t count = count_targets(targets, n);
  const double scale = count > 0 ? dloss / double(count) : 0.0;
  for (std::int64_t i = 0; i < n; i++) {
    check_target(targets[i], v, i);
    const T* x = logits + i * v;  // [V]
    T* dx = dlogits + i * v;      // [V], may be x
    if (targets[i] == kIgnoreIndex) {
      std::fill(dx, dx + v, T(0));
      continue;
    }
    const double lse = row_logsumexp(x, v);
    for (std::int64_t j = 0; j < v; j++)
      dx[j] = T(scale * std::exp(double(x[j]) - lse));
    dx[targets[i]] -= T(scale);
  }
}

template double cross_entropy_forward<float>(float*, const float*, const std::int32_t*,
                                             std::int64_t, std::int64_t);
template double cross_entropy_forward<double>(double*, const double*, const std::int32_t*,
                                              std::int64_t, std::int64_t);
template void cross_entropy_backward<float>(float*, const float*, const std::int32_t*, std::int64_t,
                                            std::int64_t, double);
template void cross_entropy_backward<double>(double*, const double*, const std::int32_t*,
                                             std::int64_t, std::int64_t, double);

}  // namespace moetune::kernels::cpu
