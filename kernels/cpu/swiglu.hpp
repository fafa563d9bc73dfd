// The SwiGLU expert FFN of Mixtral (HF MixtralBlockSparseTop2MLP):
//   out = w2( silu(x w1^T) * (x w3^T) ),  w1, w3: [F,D] and w2: [D,F] in HF's (out, in) layout.
// One expert over a contiguous block of rows, and the grouped form that walks the experts of a
// permuted buffer (permute.hpp) by their row counts.
#pragma once

#include <cstdint>

namespace moetune::kernels::cpu {

// One expert over M rows:
//   out[M,D]  written            x[M,D]
//   h1[M,F] = x w1^T, h3[M,F] = x w3^T, act[M,F] = silu(h1) * h3: written, kept for the backward
//   w1[F,D], w3[F,D], w2[D,F]
template <typename T>
void swiglu_forward(T* out, T* h1, T* h3, T* act, const T* x, const T* w1, const T* w3, const T* w2,
                    std::int64_t m, std::int64_t d, std::int64_t f);

// dx[M,D] is overwritten; dw1[F,D], dw3[F,D], dw2[D,F] accumulate (+=).
// dh1[M,F] and dh3[M,F] are scratch (they end up holding d(h1) and d(h3)).
// dout[M,D]; x, h1, h3, act, w1, w3, w2 as in the forward.
template <typename T>
void swiglu_backward(T* dx, T* dw1, T* dw3, T* dw2, T* dh1, T* dh3, const T* dout, const T* x,
                     const T* h1, const T* h3, const T* act, const T* w1, const T* w3, const T* w2,
                     std::int64_t m, std::int64_t d, std::int64_t f);

// Grouped over E experts: expert x owns rows [offset_x, offset_x + counts[x]) of the permuted
// buffers, offset_x = counts[0] + ... + counts[x-1]; R = the sum of counts.
//   out[R,D], h1[R,F], h3[R,F], act[R,F], x[R,D]
//   w1[E,F,D], w3[E,F,D], w2[E,D,F]
template <typename T>
void swiglu_grouped_forward(T* out, T* h1, T* h3, T* act, const T* x, const T* w1, const T* w3,
                            const T* w2, const std::int64_t* counts, std::int64_t e, std::int64_t d,
                            std::int64_t f);

// dx[R,D] overwritten; dw1[E,F,D], dw3[E,F,D], dw2[E,D,F] accumulate; dh1, dh3 [R,F] scratch.
template <typename T>
void swiglu_grouped_backward(T* dx, T* dw1, T* dw3, T* dw2, T* dh1, T* dh3, const T* dout,
                             const T* x, const T* h1, const T* h3, const T* act, const T* w1,
                             const T* w3, const T* w2, const std::int64_t* counts, std::int64_t e,
                             std::int64_t d, std::int64_t f);

}  // namespace moetune::kernels::cpu
