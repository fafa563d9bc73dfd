// Load-balancing loss statistics, value and gradient; z-loss value and gradient.
#include "kernels/cpu/moe_losses.hpp"

#include <cmath>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "kernels/cpu/softmax.hpp"

namespace moetune::kernels::cpu {

template <typename T>
void aux_loss_accumulate(std::int64_t* counts, double* prob_sum, const T* probs,
                         const std::int32_t* topk_idx, std::int64_t n, std::int64_t e,
                         std::int64_t k) {
  MOETUNE_CHECK(n >= 0 && e > 0 && k > 0 && k <= e, "aux_loss_accumulate: need 0 < k <= e");
  if (n == 0) return;
  MOETUNE_CHECK(counts && prob_sum && probs && topk_idx, "aux_loss_accumulate: null buffer");
  for (std::int64_t t = 0; t < n; t++) {
    for (std::int64_t j = 0; j < k; j++) {
      const std::int32_t x = topk_idx[t * k + j];
      MOETUNE_CHECK(x >= 0 && x < e,
                    "aux_loss_accumulate: expert index " + std::to_string(x) + " out of range");
      counts[x] += 1;
    }
    for (std::int64_t x = 0; x < e; x++)
      prob_sum[x] += double(probs[t * e + x]);
  }
}

double aux_loss_from_stats(const std::int64_t* counts, const double* prob_sum,
                           std::int64_t n_tokens, std::int64_t e) {
  MOETUNE_CHECK(n_tokens >= 0 && e > 0, "aux_loss_from_stats: need n_tokens >= 0 and e > 0");
  if (n_tokens == 0) return 0.0;
  MOETUNE_CHECK(counts && prob_sum, "aux_loss_from_stats: null buffer");
  const double t = double(n_tokens);
  double sum = 0;
  for (std::int64_t x = 0; x < e; x++)
    sum += (double(counts[x]) / t) * (prob_sum[x] / t);
  return double(e) * sum;
}

template <typename T>
double aux_loss_forward(const T* probs, const std::int32_t* topk_idx, std::int64_t n,
                        std::int64_t e, std::int64_t k) {
  std::vector<std::int64_t> counts(static_cast<std::size_t>(e), 0);
  std::vector<double> prob_sum(static_cast<std::size_t>(e), 0.0);
  aux_loss_accumulate(counts.data(), prob_sum.data(), probs, topk_idx, n, e, k);
  return aux_loss_from_stats(counts.data(), prob_sum.data(), n, e);
}

template <typename T>
void aux_loss_backward(T* dprobs, const std::int64_t* counts, std::int64_t n_tokens, std::int64_t n,
                       std::int64_t e, double dloss) {
  MOETUNE_CHECK(n >= 0 && e > 0 && n_tokens >= n, "aux_loss_backward: need 0 <= n <= n_tokens");
  if (n == 0) return;
  MOETUNE_CHECK(dprobs && counts, "aux_loss_backward: null buffer");
  const double t = double(n_tokens);
  std::vector<double> grad(static_cast<std::size_t>(e));  // [E] the same for every row
  for (std::int64_t x = 0; x < e; x++)
    grad[x] = dloss * double(e) * double(counts[x]) / (t * t);
  for (std::int64_t i = 0; i < n; i++) {
    for (std::int64_t x = 0; x < e; x++)
      dprobs[i * e + x] += T(grad[x]);
  }
}

template <typename T>
double z_loss_forward(const T* logits, std::int64_t n, std::int64_t e) {
  MOETUNE_CHECK(n >= 0 && e > 0, "z_loss_forward: need n >= 0 and e > 0");
  if (n == 0) return 0.0;
  std::vector<double> lse(static_cast<std::size_t>(n));  // [N]
  logsumexp_rows(lse.data(), logits, n, e);
  double sum = 0;
  for (double z : lse)
    sum += z * z;
  return sum / double(n);
}

template <typename T>
void z_loss_backward(T* dlogits, const T* logits, std::int64_t n, std::int64_t e, double dloss) {
  MOETUNE_CHECK(n >= 0 && e > 0, "z_loss_backward: need n >= 0 and e > 0");
  if (n == 0) return;
  MOETUNE_CHECK(dlogits && logits, "z_loss_backward: null buffer");
  std::vector<double> lse(static_cast<std::size_t>(n));  // [N]
  logsumexp_rows(lse.data(), logits, n, e);
  for (std::int64_t t = 0; t < n; t++) {
    const double coef = dloss * 2.0 * lse[t] / double(n);
    for (std::int64_t x = 0; x < e; x++) {
      const double p = std::exp(double(logits[t * e + x]) - lse[t]);
      dlogits[t * e + x] += T(coef * p);
    }
  }
}

#define MOETUNE_INSTANTIATE_MOE_LOSSES(T)                                                        \
  template void aux_loss_accumulate<T>(std::int64_t*, double*, const T*, const std::int32_t*,    \
                                       std::int64_t, std::int64_t, std::int64_t);                \
  template double aux_loss_forward<T>(const T*, const std::int32_t*, std::int64_t, std::int64_t, \
                                      std::int64_t);                                             \
  template void aux_loss_backward<T>(T*, const std::int64_t*, std::int64_t, std::int64_t,        \
                                     std::int64_t, double);                                      \
  template double z_loss_forward<T>(const T*, std::int64_t, std::int64_t);                       \
  template void z_loss_backward<T>(T*, const T*, std::int64_t, std::int64_t, double);
MOETUNE_INSTANTIATE_MOE_LOSSES(float)
MOETUNE_INSTANTIATE_MOE_LOSSES(double)
#undef MOETUNE_INSTANTIATE_MOE_LOSSES

}  // namespace moetune::kernels::cpu
