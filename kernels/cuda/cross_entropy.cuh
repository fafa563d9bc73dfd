// Fused cross-entropy of bf16 logits against next tokens (CUDA twin of
// kernels/cpu/cross_entropy.hpp): one pass computes each row's loss and, in place, its gradient.
#pragma once

#include "kernels/cuda/common.cuh"

namespace moetune::kernels::cuda {

// For each row of logits[N,V] (fp32 arithmetic): losses[N] = logsumexp - logit[target] (0 for
// ignored rows, target == -100); dlogits[N,V] = scale * (softmax - one_hot(target)), 0 on ignored
// rows; scale is dloss / (non-ignored rows), the caller's (the targets live on the host).
// dlogits may alias logits; dlogits null computes the losses only. Targets must be in [0, V) or
// -100 (the caller checks).
void cross_entropy_fused(float* losses, bf16* dlogits, const bf16* logits,
                         const std::int32_t* targets, std::int64_t n, std::int64_t v, float scale,
                         cudaStream_t stream);

}  // namespace moetune::kernels::cuda
