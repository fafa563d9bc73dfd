// The MoE router after its linear layer: softmax in fp32, top-k, Mixtral's renormalised top-k
// weights, and Megatron's Sinkhorn routing. The aux loss and z-loss live in moe_losses.hpp.
#pragma once

#include <cstdint>

namespace moetune::kernels::cpu {

// idx[N,K] = the K largest entries of each row of scores[N,E], largest first; ties go to the
// lower expert index (what a stable descending sort gives).
template <typename T>
void topk_rows(std::int32_t* topk_idx, const T* scores, std::int64_t n, std::int64_t e,
               std::int64_t k);

// Mixtral routing (HF MixtralSparseMoeBlock):
//   probs[N,E] = softmax(logits[N,E])                   written (saved for backward and aux loss)
//   topk_idx[N,K] = top-k of probs                       written
//   topk_weight[N,K] = probs at topk_idx, divided by their sum when normalize_topk (Mixtral,
//   Qwen norm_topk_prob = true), else the raw probabilities (Qwen2-MoE default).
template <typename T>
void router_forward(T* probs, std::int32_t* topk_idx, T* topk_weight, const T* logits,
                    std::int64_t n, std::int64_t e, std::int64_t k, bool normalize_topk);

// dlogits[N,E] (overwritten) from dtopk_weight[N,K] plus, when dprobs is given, a direct gradient
// on probs (dprobs[N,E], e.g. from aux_loss_backward). The top-k choice is piecewise constant, so
// no gradient flows through it. probs and topk_idx as written by router_forward.
template <typename T>
void router_backward(T* dlogits, const T* dtopk_weight, const T* dprobs, const T* probs,
                     const std::int32_t* topk_idx, std::int64_t n, std::int64_t e, std::int64_t k,
                     bool normalize_topk);

// Megatron's sinkhorn(): cost = exp(logits); alternately d0 = 1/N / (cost d1 + 1e-8) over rows and
// d1 = 1/E / (d0 cost + 1e-8) over columns until mean|d1 - d1_old| <= tol, at most max_iters
// rounds (Megatron has no cap). out[N,E] = d1 * cost * d0; out may alias logits. Computed in
// double. Returns the number of rounds run. The 1e-8 terms keep d1 drifting by ~1e-8 relative per
// round after convergence, so a tol much below 1e-7 may never be met: max_iters bounds the loop
// then. Megatron's default tol is 1e-4.
template <typename T>
std::int64_t sinkhorn(T* out, const T* logits, std::int64_t n, std::int64_t e, double tol,
                      std::int64_t max_iters);

// Megatron's sinkhorn_load_balancing (training path): the experts are the top-k of
// sinkhorn(logits); their weights come from the plain activation of the logits, written to
// scores[N,E]: sigmoid when k == 1, softmax otherwise. Weights are not renormalised, and the
// gradient flows through the activation only. Returns the Sinkhorn rounds run.
template <typename T>
std::int64_t router_sinkhorn_forward(T* scores, std::int32_t* topk_idx, T* topk_weight,
                                     const T* logits, std::int64_t n, std::int64_t e,
                                     std::int64_t k, double tol, std::int64_t max_iters);

// dlogits[N,E] (overwritten) from dtopk_weight[N,K]; scores and topk_idx from the forward.
template <typename T>
void router_sinkhorn_backward(T* dlogits, const T* dtopk_weight, const T* scores,
                              const std::int32_t* topk_idx, std::int64_t n, std::int64_t e,
                              std::int64_t k);

}  // namespace moetune::kernels::cpu
