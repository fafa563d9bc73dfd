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

// The non-ignored rows of targets[N].
std::int64_t count_targets(const std::int32_t* targets, std::int64_t n);

}  // namespace moetune::kernels::cpu
