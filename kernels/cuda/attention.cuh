// Causal grouped-query attention on the GPU (CUDA twin of kernels/cpu/attention.hpp). This is the
// correct-first version: per (batch, query head), the scores come from a batched cuBLAS GEMM into
// fp32, a masked softmax writes bf16 probabilities (kept for the backward, [B,Hq,S,S]), and a
// second batched GEMM multiplies by V. It materialises S x S scores; flash_attention.cuh has a
// fused version that does not (correct, but not yet fast: no tensor cores).
#pragma once

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/gemm.cuh"

namespace moetune::kernels::cuda {

// Bytes of device scratch attention_forward / attention_backward need for these sizes (one
// buffer serves every layer, since layers run one after another on a stream).
std::size_t attention_scratch_bytes(std::int64_t b, std::int64_t s, std::int64_t hq,
                                    std::int64_t dh);

//   out[B,S,Hq,Dh] written; probs[B,Hq,S,S] bf16 written (0 where masked)
//   q[B,S,Hq,Dh], k[B,S,Hkv,Dh], v[B,S,Hkv,Dh]; key j visible to query i iff j <= i and
//   (window == 0 or i - j < window).
void attention_forward(Blas& blas, bf16* out, bf16* probs, const bf16* q, const bf16* k,
                       const bf16* v, std::int64_t b, std::int64_t s, std::int64_t hq,
                       std::int64_t hkv, std::int64_t dh, std::int64_t window, void* scratch);

// dq[B,S,Hq,Dh], dk, dv[B,S,Hkv,Dh] overwritten (dk, dv summed over the query heads sharing a kv
// head). probs as written by the forward.
void attention_backward(Blas& blas, bf16* dq, bf16* dk, bf16* dv, const bf16* dout, const bf16* q,
                        const bf16* k, const bf16* v, const bf16* probs, std::int64_t b,
                        std::int64_t s, std::int64_t hq, std::int64_t hkv, std::int64_t dh,
                        void* scratch);

}  // namespace moetune::kernels::cuda
