// Rotary position embedding as in Hugging Face Mixtral (rotate_half convention): within each head,
// element i pairs with element i + Dh/2 (not interleaved), and the pair is rotated by
// angle(p, i) = p * theta^(-2i/Dh) for position p.
#pragma once

#include <cstdint>

namespace moetune::kernels::cpu {

// cos_table[P, Dh/2], sin_table[P, Dh/2] for positions 0..P-1. The angles are computed in double
// (HF computes them in fp32, which differs by up to ~P * 6e-8 radians at large positions).
template <typename T>
void rope_table(T* cos_table, T* sin_table, std::int64_t max_positions, std::int64_t head_dim,
                double theta);

// out[B,S,H,Dh] = rope(in[B,S,H,Dh]); out may alias in (in place).
//   out[i]        = in[i] * cos - in[i + Dh/2] * sin
//   out[i + Dh/2] = in[i + Dh/2] * cos + in[i] * sin          for i < Dh/2
// The position of (b, s) is positions[b*S + s] when positions is given ([B,S]), else start_pos + s.
// Every position must be < table_positions, the P the tables were built for.
template <typename T>
void rope_forward(T* out, const T* in, const T* cos_table, const T* sin_table,
                  std::int64_t table_positions, const std::int32_t* positions,
                  std::int64_t start_pos, std::int64_t b, std::int64_t s, std::int64_t h,
                  std::int64_t head_dim);

// din[B,S,H,Dh] from dout[B,S,H,Dh]: the inverse (transposed) rotation. din may alias dout.
template <typename T>
void rope_backward(T* din, const T* dout, const T* cos_table, const T* sin_table,
                   std::int64_t table_positions, const std::int32_t* positions,
                   std::int64_t start_pos, std::int64_t b, std::int64_t s, std::int64_t h,
                   std::int64_t head_dim);

}  // namespace moetune::kernels::cpu
