// Causal grouped-query attention (the fp32 reference): scores = q k^T / sqrt(Dh), causal mask with
// an optional sliding window, softmax, times v. The probabilities are materialised ([B,Hq,S,S]) so
// the backward needs no recomputation; the CUDA twin uses a fused kernel instead.
#pragma once

#include <cstdint>

namespace moetune::kernels::cpu {

// Query head h reads kv head h / (Hq / Hkv) (Hq must be a multiple of Hkv; Hkv == Hq is plain
// multi-head attention). Key j is visible to query i iff j <= i and (window == 0 or i - j <
// window), the mask of Hugging Face Mixtral with sliding_window = window.
//   out[B,S,Hq,Dh]   written
//   att[B,Hq,S,S]    written: softmax probabilities, 0 where masked (kept for the backward)
//   q[B,S,Hq,Dh], k[B,S,Hkv,Dh], v[B,S,Hkv,Dh]
template <typename T>
void attention_forward(T* out, T* att, const T* q, const T* k, const T* v, std::int64_t b,
                       std::int64_t s, std::int64_t hq, std::int64_t hkv, std::int64_t dh,
                       std::int64_t window);

// dq[B,S,Hq,Dh], dk[B,S,Hkv,Dh], dv[B,S,Hkv,Dh] are all overwritten; dk and dv sum over the Hq/Hkv
// query heads that share a kv head. dout[B,S,Hq,Dh]; q, k, v, att as given to / by the forward.
// Uses an internal [S,S] scratch buffer.
template <typename T>
void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v,
                        const T* att, std::int64_t b, std::int64_t s, std::int64_t hq,
                        std::int64_t hkv, std::int64_t dh);

}  // namespace moetune::kernels::cpu
