// Cross-entropy forward and fused softmax backward, rows split over the kernel threads; each row's
// log-sum-exp sums vectorised exps (vec_math.hpp) in double.
#include "kernels/cpu/cross_entropy.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "kernels/cpu/parallel.hpp"
#include "kernels/cpu/vec_math.hpp"

namespace moetune::kernels::cpu {

namespace {

void check_target(std::int32_t target, std::int64_t v, std::int64_t row) {
  MOETUNE_CHECK(target == kIgnoreIndex || (target >= 0 && target < v),
                "cross_entropy: target " + std::to_string(target) + " at row " +
                    std::to_string(row) + " outside [0, " + std::to_string(v) + ")");
}

template <typename T>
double row_logsumexp(const T* x, std::int64_t v) {
  const T max_x = vec::max(x, v);
  return double(max_x) + std::log(vec::sum_exp_shifted(x, v, max_x));
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
  for (std::int64_t i = 0; i < n; i++)
    check_target(targets[i], v, i);
  // Rows in parallel; per-chunk sums added in chunk order (reproducible for a thread count).
  const std::int64_t min_rows = std::max<std::int64_t>(1, (1 << 15) / v);
  std::vector<double> partial(static_cast<std::size_t>(parallel_chunks(n, min_rows)), 0.0);
  parallel_for_chunks(n, min_rows, [&](std::int64_t chunk, std::int64_t begin, std::int64_t end) {
    double sum = 0;
    for (std::int64_t i = begin; i < end; i++) {
      double loss = 0;
      if (targets[i] != kIgnoreIndex) {
        const T* x = logits + i * v;  // [V]
        loss = row_logsumexp(x, v) - double(x[targets[i]]);
        sum += loss;
      }
      if (losses) losses[i] = T(loss);
    }
    partial[static_cast<std::size_t>(chunk)] = sum;
  });
  double sum = 0;
  for (double p : partial)
    sum += p;
  const std::int64_t count = count_targets(targets, n);
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
  for (std::int64_t i = 0; i < n; i++)
    check_target(targets[i], v, i);
  const std::int64_t min_rows = std::max<std::int64_t>(1, (1 << 15) / v);
  parallel_for(n, min_rows, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; i++) {
      const T* x = logits + i * v;  // [V]
      T* dx = dlogits + i * v;      // [V], may be x
      if (targets[i] == kIgnoreIndex) {
        std::fill(dx, dx + v, T(0));
        continue;
      }
      const T lse = T(row_logsumexp(x, v)), scale_t = T(scale);
      // In place over one pointer (the LM head passes dx == x), so the loop needs no alias check.
      if (dx != x) std::copy(x, x + v, dx);
      for (std::int64_t j = 0; j < v; j++)
        dx[j] = scale_t * vec::exp_t(dx[j] - lse);
      dx[targets[i]] -= scale_t;
    }
  });
}

void vocab_parallel_ce_partial(float* lse_part, float* target_logit, const float* logits,
                               const std::int32_t* targets, std::int64_t n, std::int64_t vl,
                               std::int64_t first) {
  MOETUNE_CHECK(n >= 0 && vl > 0, "vocab_parallel_ce_partial: need n >= 0 and vl > 0");
  const std::int64_t min_rows = std::max<std::int64_t>(1, (1 << 15) / vl);
  parallel_for(n, min_rows, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; i++) {
      const float* x = logits + i * vl;  // [vl]
      lse_part[i] = float(row_logsumexp(x, vl));
      const std::int64_t t = std::int64_t(targets[i]) - first;
      target_logit[i] = targets[i] != kIgnoreIndex && t >= 0 && t < vl ? x[t] : 0.0f;
    }
  });
}

void vocab_parallel_ce_combine(float* lse, float* losses, const float* lse_parts,
                               const float* target_logit, const std::int32_t* targets,
                               std::int64_t n, std::int64_t parts) {
  MOETUNE_CHECK(n >= 0 && parts > 0, "vocab_parallel_ce_combine: need n >= 0 and parts > 0");
  for (std::int64_t i = 0; i < n; i++) {
    double value = lse_parts[i];
    if (parts > 1) {
      double max_l = value;
      for (std::int64_t r = 1; r < parts; r++)
        max_l = std::max(max_l, double(lse_parts[r * n + i]));
      double sum = 0;
      for (std::int64_t r = 0; r < parts; r++)
        sum += std::exp(double(lse_parts[r * n + i]) - max_l);
      value = max_l + std::log(sum);
    }
    const double target = target_logit[i];  // read before losses (which may alias it) is written
    lse[i] = float(value);
    losses[i] = targets[i] == kIgnoreIndex ? 0.0f : float(value - target);
  }
}

void vocab_parallel_ce_backward(float* dlogits, const float* logits, const float* lse,
                                const std::int32_t* targets, std::int64_t n, std::int64_t vl,
                                std::int64_t first, double scale) {
  MOETUNE_CHECK(n >= 0 && vl > 0, "vocab_parallel_ce_backward: need n >= 0 and vl > 0");
  const float scale_t = float(scale);
  const std::int64_t min_rows = std::max<std::int64_t>(1, (1 << 15) / vl);
  parallel_for(n, min_rows, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; i++) {
      const float* x = logits + i * vl;  // [vl]
      float* dx = dlogits + i * vl;      // [vl], may be x
      if (targets[i] == kIgnoreIndex) {
        std::fill(dx, dx + vl, 0.0f);
        continue;
      }
      const float l = lse[i];
      if (dx != x) std::copy(x, x + vl, dx);
      for (std::int64_t j = 0; j < vl; j++)
        dx[j] = scale_t * vec::exp_f32(dx[j] - l);
      const std::int64_t t = std::int64_t(targets[i]) - first;
      if (t >= 0 && t < vl) dx[t] -= scale_t;
    }
  });
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
