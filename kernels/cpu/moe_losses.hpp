// The router's auxiliary losses: the Switch/GShard load-balancing loss exactly as Hugging Face's
// Mixtral load_balancing_loss_func computes it, and the ST-MoE z-loss as Megatron computes it.
// Both return the unscaled loss; the caller multiplies by its coefficient.
#pragma once

#include <cstdint>

namespace moetune::kernels::cpu {

// Load balancing, HF form (no attention mask):
//   tokens_per_expert[K,E] = mean over tokens of one_hot(topk_idx)
//   router_prob_per_expert[E] = mean over tokens of probs
//   loss = E * sum_{k,e} tokens_per_expert[k,e] * router_prob_per_expert[e]
//        = E * sum_e (counts_e / T) * (prob_sum_e / T)
// with counts_e the (token, slot) pairs routed to e over all K slots and T the token count. Note it
// is not divided by K: perfectly balanced top-2 routing gives 2. HF takes the means over the
// tokens of all layers together, so the statistics are split out: accumulate them over whatever
// set of rows the loss is defined on (all layers, all data-parallel ranks), then evaluate.

// counts[E] += routed (token, slot) pairs per expert; prob_sum[E] += column sums of probs[N,E].
template <typename T>
void aux_loss_accumulate(std::int64_t* counts, double* prob_sum, const T* probs,
                         const std::int32_t* topk_idx, std::int64_t n, std::int64_t e,
                         std::int64_t k);

// E * sum_e (counts_e / n_tokens) * (prob_sum_e / n_tokens); 0 when n_tokens == 0.
double aux_loss_from_stats(const std::int64_t* counts, const double* prob_sum,
                           std::int64_t n_tokens, std::int64_t e);

// The loss over one set of rows: accumulate + evaluate.
template <typename T>
double aux_loss_forward(const T* probs, const std::int32_t* topk_idx, std::int64_t n,
                        std::int64_t e, std::int64_t k);

// dprobs[N,E] += dloss * E * counts_e / n_tokens^2 for every row (the counts are constants: the
// top-k choice has no gradient). counts and n_tokens are those the loss was evaluated with; n is
// the number of rows of this dprobs block.
template <typename T>
void aux_loss_backward(T* dprobs, const std::int64_t* counts, std::int64_t n_tokens, std::int64_t n,
                       std::int64_t e, double dloss);

// z-loss: mean over the N tokens of logsumexp(logits[N,E])^2.
template <typename T>
double z_loss_forward(const T* logits, std::int64_t n, std::int64_t e);

// dlogits[N,E] += dloss * 2 * lse_t / N * softmax(logits_t).
template <typename T>
void z_loss_backward(T* dlogits, const T* logits, std::int64_t n, std::int64_t e, double dloss);

}  // namespace moetune::kernels::cpu
