// The router's auxiliary losses on the GPU (CUDA twins of kernels/cpu/moe_losses.hpp): the
// load-balancing statistics and gradient (HF's load_balancing_loss_func) and the z-loss. Values
// are accumulated on the device; the caller reads them back once per step.
#pragma once

#include "kernels/cuda/common.cuh"

namespace moetune::kernels::cuda {

// counts[E] += routed (token, slot) pairs per expert; prob_sum[E] += column sums of probs[N,E]
// (double). The loss itself, E * sum_e counts_e prob_sum_e / T^2, is computed on the host from
// these (kernels/cpu aux_loss_from_stats).
void aux_loss_accumulate(std::int64_t* counts, double* prob_sum, const float* probs,
                         const std::int32_t* topk_idx, std::int64_t n, std::int64_t e,
                         std::int64_t k, cudaStream_t stream);

// dprobs[N,E] += dloss * E * counts_e / n_tokens^2 (counts on the device).
void aux_loss_backward(float* dprobs, const std::int64_t* counts, std::int64_t n_tokens,
                       std::int64_t n, std::int64_t e, double dloss, cudaStream_t stream);

// *z_loss += mean over the N tokens of logsumexp(logits[N,E])^2.
void z_loss_forward(double* z_loss, const float* logits, std::int64_t n, std::int64_t e,
                    cudaStream_t stream);
// dlogits[N,E] += dloss * 2 * lse_t / N * softmax(logits_t).
void z_loss_backward(float* dlogits, const float* logits, std::int64_t n, std::int64_t e,
                     double dloss, cudaStream_t stream);

}  // namespace moetune::kernels::cuda
