// Router top-k, Mixtral routing with its backward, and Megatron's Sinkhorn routing.
#include "kernels/cpu/router.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "kernels/cpu/softmax.hpp"

namespace moetune::kernels::cpu {

namespace {

void check_router_sizes(std::int64_t n, std::int64_t e, std::int64_t k, const char* op) {
  const std::string name(op);
  MOETUNE_CHECK(n >= 0, name + ": negative token count");
  MOETUNE_CHECK(e > 0 && k > 0 && k <= e,
                name + ": need 0 < k <= e, got k=" + std::to_string(k) + " e=" + std::to_string(e));
}

void check_expert_index(std::int32_t expert, std::int64_t e, const char* op) {
  MOETUNE_CHECK(expert >= 0 && expert < e, std::string(op) + ": expert index " +
                                               std::to_string(expert) + " outside [0, " +
                                               std::to_string(e) + ")");
}

}  // namespace

template <typename T>
void topk_rows(std::int32_t* topk_idx, const T* scores, std::int64_t n, std::int64_t e,
               std::int64_t k) {
  check_router_sizes(n, e, k, "topk_rows");
  if (n == 0) return;
  MOETUNE_CHECK(topk_idx && scores, "topk_rows: null buffer");
  // K is small (1, 2, 8): K passes of an argmax beat a sort. Strict '>' keeps the lower index.
  std::vector<char> taken(static_cast<std::size_t>(e));
  for (std::int64_t t = 0; t < n; t++) {
    const T* row = scores + t * e;  // [E]
    std::fill(taken.begin(), taken.end(), 0);
    for (std::int64_t j = 0; j < k; j++) {
      std::int64_t best = -1;
      for (std::int64_t x = 0; x < e; x++) {
        if (taken[x]) continue;
        if (best < 0 || row[x] > row[best]) best = x;
      }
      taken[best] = 1;
      topk_idx[t * k + j] = static_cast<std::int32_t>(best);
    }
  }
}

template <typename T>
void router_forward(T* probs, std::int32_t* topk_idx, T* topk_weight, const T* logits,
                    std::int64_t n, std::int64_t e, std::int64_t k, bool normalize_topk) {
  check_router_sizes(n, e, k, "router_forward");
  if (n == 0) return;
  MOETUNE_CHECK(probs && topk_idx && topk_weight && logits, "router_forward: null buffer");
  softmax_forward(probs, logits, n, e);
  topk_rows(topk_idx, probs, n, e, k);
  for (std::int64_t t = 0; t < n; t++) {
    double sum = 0;
    for (std::int64_t j = 0; j < k; j++)
      sum += double(probs[t * e + topk_idx[t * k + j]]);
    for (std::int64_t j = 0; j < k; j++) {
      const double p = double(probs[t * e + topk_idx[t * k + j]]);
      topk_weight[t * k + j] = T(normalize_topk ? p / sum : p);
    }
  }
}

// With w_j = p_{i_j} / S, S = sum_j p_{i_j}:  dL/dp_{i_j} = (dw_j - sum_l dw_l w_l) / S.
template <typename T>
void router_backward(T* dlogits, const T* dtopk_weight, const T* dprobs, const T* probs,
                     const std::int32_t* topk_idx, std::int64_t n, std::int64_t e, std::int64_t k,
                     bool normalize_topk) {
  check_router_sizes(n, e, k, "router_backward");
  if (n == 0) return;
  MOETUNE_CHECK(dlogits && dtopk_weight && probs && topk_idx, "router_backward: null buffer");
  std::vector<double> dp(static_cast<std::size_t>(e));  // [E] gradient on this token's probs
  for (std::int64_t t = 0; t < n; t++) {
    const T* p = probs + t * e;                  // [E]
    const std::int32_t* idx = topk_idx + t * k;  // [K]
    const T* dw = dtopk_weight + t * k;          // [K]
    for (std::int64_t x = 0; x < e; x++)
      dp[x] = dprobs ? double(dprobs[t * e + x]) : 0.0;
    for (std::int64_t j = 0; j < k; j++)
      check_expert_index(idx[j], e, "router_backward");
    if (normalize_topk) {
      double sum = 0;
      for (std::int64_t j = 0; j < k; j++)
        sum += double(p[idx[j]]);
      double dot = 0;  // sum_l dw_l w_l
      for (std::int64_t j = 0; j < k; j++)
        dot += double(dw[j]) * double(p[idx[j]]) / sum;
      for (std::int64_t j = 0; j < k; j++)
        dp[idx[j]] += (double(dw[j]) - dot) / sum;
    } else {
      for (std::int64_t j = 0; j < k; j++)
        dp[idx[j]] += double(dw[j]);
    }
    double dot = 0;
    for (std::int64_t x = 0; x < e; x++)
      dot += dp[x] * double(p[x]);
    for (std::int64_t x = 0; x < e; x++)
      dlogits[t * e + x] = T(double(p[x]) * (dp[x] - dot));
  }
}

template <typename T>
std::int64_t sinkhorn(T* out, const T* logits, std::int64_t n, std::int64_t e, double tol,
                      std::int64_t max_iters) {
  MOETUNE_CHECK(n >= 0 && e > 0, "sinkhorn: need n >= 0 and e > 0");
  MOETUNE_CHECK(tol >= 0 && max_iters > 0, "sinkhorn: need tol >= 0 and max_iters > 0");
  if (n == 0) return 0;
  MOETUNE_CHECK(out && logits, "sinkhorn: null buffer");
  constexpr double kEps = 1e-8;  // Megatron's
  const auto rows = static_cast<std::size_t>(n);
  const auto cols = static_cast<std::size_t>(e);
  std::vector<double> cost(rows * cols);  // [N,E] exp(logits)
  for (std::size_t i = 0; i < rows * cols; i++)
    cost[i] = std::exp(double(logits[i]));
  std::vector<double> d0(rows, 1.0), d1(cols, 1.0), d1_old(cols, 1.0), col_sum(cols);
  double error = 1e9;
  std::int64_t iters = 0;
  while (error > tol && iters < max_iters) {
    for (std::size_t r = 0; r < rows; r++) {
      double s = 0;
      for (std::size_t c = 0; c < cols; c++)
        s += d1[c] * cost[r * cols + c];
      d0[r] = (1.0 / double(n)) / (s + kEps);
    }
    std::fill(col_sum.begin(), col_sum.end(), 0.0);
    for (std::size_t r = 0; r < rows; r++) {
      for (std::size_t c = 0; c < cols; c++)
        col_sum[c] += d0[r] * cost[r * cols + c];
    }
    error = 0;
    for (std::size_t c = 0; c < cols; c++) {
      d1[c] = (1.0 / double(e)) / (col_sum[c] + kEps);
      error += std::abs(d1_old[c] - d1[c]);
    }
    error /= double(e);
    d1_old = d1;
    iters++;
  }
  for (std::size_t r = 0; r < rows; r++) {
    for (std::size_t c = 0; c < cols; c++)
      out[r * cols + c] = T(d1[c] * cost[r * cols + c] * d0[r]);
  }
  return iters;
}

template <typename T>
std::int64_t router_sinkhorn_forward(T* scores, std::int32_t* topk_idx, T* topk_weight,
                                     const T* logits, std::int64_t n, std::int64_t e,
                                     std::int64_t k, double tol, std::int64_t max_iters) {
  check_router_sizes(n, e, k, "router_sinkhorn_forward");
  if (n == 0) return 0;
  MOETUNE_CHECK(scores && topk_idx && topk_weight && logits,
                "router_sinkhorn_forward: null buffer");
  // scores first holds the Sinkhorn-balanced matrix, only to choose the experts.
  const std::int64_t iters = sinkhorn(scores, logits, n, e, tol, max_iters);
  topk_rows(topk_idx, scores, n, e, k);
  if (k == 1) {
    for (std::int64_t i = 0; i < n * e; i++)
      scores[i] = T(1.0 / (1.0 + std::exp(-double(logits[i]))));
  } else {
    softmax_forward(scores, logits, n, e);
  }
  for (std::int64_t t = 0; t < n; t++) {
    for (std::int64_t j = 0; j < k; j++)
      topk_weight[t * k + j] = scores[t * e + topk_idx[t * k + j]];
  }
  return iters;
}

template <typename T>
void router_sinkhorn_backward(T* dlogits, const T* dtopk_weight, const T* scores,
                              const std::int32_t* topk_idx, std::int64_t n, std::int64_t e,
                              std::int64_t k) {
  check_router_sizes(n, e, k, "router_sinkhorn_backward");
  if (n == 0) return;
  MOETUNE_CHECK(dlogits && dtopk_weight && scores && topk_idx,
                "router_sinkhorn_backward: null buffer");
  if (k == 1) {  // sigmoid: ds/dx = s (1 - s), only at the chosen expert
    for (std::int64_t i = 0; i < n * e; i++)
      dlogits[i] = T(0);
    for (std::int64_t t = 0; t < n; t++) {
      const std::int32_t x = topk_idx[t];
      check_expert_index(x, e, "router_sinkhorn_backward");
      const double s = double(scores[t * e + x]);
      dlogits[t * e + x] = T(double(dtopk_weight[t]) * s * (1.0 - s));
    }
    return;
  }
  // softmax: the same as the Mixtral backward without renormalisation.
  router_backward<T>(dlogits, dtopk_weight, nullptr, scores, topk_idx, n, e, k, false);
}

#define MOETUNE_INSTANTIATE_ROUTER(T)                                                             \
  template void topk_rows<T>(std::int32_t*, const T*, std::int64_t, std::int64_t, std::int64_t);  \
  template void router_forward<T>(T*, std::int32_t*, T*, const T*, std::int64_t, std::int64_t,    \
                                  std::int64_t, bool);                                            \
  template void router_backward<T>(T*, const T*, const T*, const T*, const std::int32_t*,         \
                                   std::int64_t, std::int64_t, std::int64_t, bool);               \
  template std::int64_t sinkhorn<T>(T*, const T*, std::int64_t, std::int64_t, double,             \
                                    std::int64_t);                                                \
  template std::int64_t router_sinkhorn_forward<T>(T*, std::int32_t*, T*, const T*, std::int64_t, \
                                                   std::int64_t, std::int64_t, double,            \
                                                   std::int64_t);                                 \
  template void router_sinkhorn_backward<T>(T*, const T*, const T*, const std::int32_t*,          \
                                            std::int64_t, std::int64_t, std::int64_t);
MOETUNE_INSTANTIATE_ROUTER(float)
MOETUNE_INSTANTIATE_ROUTER(double)
#undef MOETUNE_INSTANTIATE_ROUTER

}  // namespace moetune::kernels::cpu
