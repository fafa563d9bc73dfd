// Cross-entropy of the LM head's logits against the next tokens (PyTorch F.cross_entropy with
// ignore_index = -100 and mean reduction), with the softmax fused into the backward.
#pragma once

#include <cstdint>

namespace moetune::kernels::cpu {

inline constexpr std::int32_t kIgnoreIndex = -100;

// Mean over the non-ignored rows of -log softmax(logits[N,V])[target]; targets[N] are in [0, V) or
// kIgnoreIndex. losses[N], when given, gets each row's loss (0 for ignored rows). Returns 0 when
// every row is ignored (PyTorch returns NaN there).
template <typename T>
double cross_entropy_forward(T* losses, const T* logits, const std::int32_t* targets,
                             std::int64_t n, std::int64_t v);

// dlogits[N,V] (overwritten) = dloss * (softmax(logits) - one_hot(target)) / count, 0 on ignored
// rows; count = the non-ignored rows. dlogits may alias logits (the LM head's buffer is reused).
template <typename T>
void cross_entropy_backward(T* dlogits, const T* logits, const std::int32_t* targets,
                            std::int64_t n, std::int64_t v, double dloss);

// Cross-entropy over a vocabulary split over ranks (Megatron's vocab-parallel cross-entropy):
// logits[N, vl] hold columns [first, first + vl) of the vocabulary. Pass 1: each row's
// log-sum-exp over these columns, and the target's logit where this part holds it (else 0).
void vocab_parallel_ce_partial(float* lse_part, float* target_logit, const float* logits,
                               const std::int32_t* targets, std::int64_t n, std::int64_t vl,
                               std::int64_t first);
// Pass 2, over every part's row log-sum-exps lse_parts[parts, N] and the target logits summed
// over parts: lse[N] of the whole vocabulary and losses[N] = lse - target logit (0 on ignored
// rows). lse may alias lse_parts (parts == 1) and losses target_logit.
void vocab_parallel_ce_combine(float* lse, float* losses, const float* lse_parts,
                               const float* target_logit, const std::int32_t* targets,
                               std::int64_t n, std::int64_t parts);
// dlogits[N, vl] (may alias logits) = scale * (softmax - one_hot(target)) with the whole
// vocabulary's lse, 0 on ignored rows.
void vocab_parallel_ce_backward(float* dlogits, const float* logits, const float* lse,
                                const std::int32_t* targets, std::int64_t n, std::int64_t vl,
                                std::int64_t first, double scale);

// The non-ignored rows of targets[N].
std::int64_t count_targets(const std::int32_t* targets, std::int64_t n);

}  // namespace moetune::kernels::cpu
