// The MoE router after its linear layer, on fp32 logits: top-k, Mixtral's softmax routing with
// renormalised top-k weights, and Megatron's Sinkhorn routing; the CUDA twins of
// kernels/cpu/router.hpp. One thread per token: E <= kMaxExperts, K <= kMaxTopK.
#pragma once

#include "kernels/cuda/common.cuh"

namespace moetune::kernels::cuda {

inline constexpr std::int64_t kMaxExperts = 256;
inline constexpr std::int64_t kMaxTopK = 16;
inline constexpr std::int64_t kMaxSinkhornExperts = 64;

// idx[N,K] = the K largest of each row of scores[N,E], largest first, ties to the lower index.
void topk_rows(std::int32_t* topk_idx, const float* scores, std::int64_t n, std::int64_t e,
               std::int64_t k, cudaStream_t stream);

// probs[N,E] = softmax(logits); topk_idx[N,K]; topk_weight[N,K] = probs at idx, divided by their
// sum when normalize_topk.
void router_forward(float* probs, std::int32_t* topk_idx, float* topk_weight, const float* logits,
                    std::int64_t n, std::int64_t e, std::int64_t k, bool normalize_topk,
                    cudaStream_t stream);

// dlogits[N,E] (overwritten) from dtopk_weight[N,K] plus dprobs[N,E] when not null.
void router_backward(float* dlogits, const float* dtopk_weight, const float* dprobs,
                     const float* probs, const std::int32_t* topk_idx, std::int64_t n,
                     std::int64_t e, std::int64_t k, bool normalize_topk, cudaStream_t stream);

// Megatron's sinkhorn in double on one thread block (see the CPU twin); out[N,E] may alias
// logits. d0_scratch[N] doubles; iterations (when not null) receives the rounds run.
void sinkhorn(float* out, const float* logits, std::int64_t n, std::int64_t e, double tol,
              std::int64_t max_iters, double* d0_scratch, std::int64_t* iterations,
              cudaStream_t stream);

// Megatron's sinkhorn_load_balancing: experts = top-k of sinkhorn(logits); scores[N,E] = sigmoid
// (k == 1) or softmax of the logits; topk_weight = scores at the chosen experts.
void router_sinkhorn_forward(float* scores, std::int32_t* topk_idx, float* topk_weight,
                             const float* logits, std::int64_t n, std::int64_t e, std::int64_t k,
                             double tol, std::int64_t max_iters, double* d0_scratch,
                             std::int64_t* iterations, cudaStream_t stream);
void router_sinkhorn_backward(float* dlogits, const float* dtopk_weight, const float* scores,
                              const std::int32_t* topk_idx, std::int64_t n, std::int64_t e,
                              std::int64_t k, cudaStream_t stream);

}  // namespace moetune::kernels::cuda
