// Fused causal GQA attention that never materialises the S x S scores (the flash-attention
// recurrence: an online softmax over the keys, the backward recomputing the probabilities from the
// saved log-sum-exp). A first, plain version: one warp per query row, fp32 arithmetic on CUDA
// cores (no tensor cores, no shared-memory tiling), dk/dv gathered with fp32 atomics. It needs
// O(S) memory per layer instead of O(S^2) but is far slower than the batched-GEMM attention
// (attention.cuh), which the model uses; head_dim <= 256.
#pragma once

#include "kernels/cuda/common.cuh"

namespace moetune::kernels::cuda {

inline constexpr std::int64_t kFlashMaxHeadDim = 256;

// out[B,S,Hq,Dh] written; lse[B,Hq,S] fp32 written (log-sum-exp of each score row, kept for the
// backward). q[B,S,Hq,Dh], k, v [B,S,Hkv,Dh]; the mask of attention.cuh (causal, sliding window).
void flash_attention_forward(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v,
                             std::int64_t b, std::int64_t s, std::int64_t hq, std::int64_t hkv,
                             std::int64_t dh, std::int64_t window, cudaStream_t stream);

// Scratch bytes of the backward: fp32 dk and dv accumulators [B,S,Hkv,Dh].
std::size_t flash_attention_scratch_bytes(std::int64_t b, std::int64_t s, std::int64_t hkv,
                                          std::int64_t dh);

// dq, dk, dv overwritten (bf16); out and lse as the forward wrote them.
void flash_attention_backward(bf16* dq, bf16* dk, bf16* dv, const bf16* dout, const bf16* q,
                              const bf16* k, const bf16* v, const bf16* out, const float* lse,
                              std::int64_t b, std::int64_t s, std::int64_t hq, std::int64_t hkv,
                              std::int64_t dh, std::int64_t window, void* scratch,
                              cudaStream_t stream);

}  // namespace moetune::kernels::cuda
