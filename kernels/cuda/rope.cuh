// Rotary position embedding (HF rotate_half convention) on bf16 [B,S,H,Dh]; the CUDA twin of
// kernels/cpu/rope.hpp with positions start_pos + s.
#pragma once

#include "kernels/cuda/common.cuh"

namespace moetune::kernels::cuda {

// cos_table[P, Dh/2], sin_table[P, Dh/2] in fp32, angles computed in double on the device.
void rope_table(float* cos_table, float* sin_table, std::int64_t max_positions,
                std::int64_t head_dim, double theta, cudaStream_t stream);

// out[B,S,H,Dh] = rope(in) at positions start_pos + s (< table_positions, checked); out may alias
// in. backward applies the inverse rotation.
void rope_forward(bf16* out, const bf16* in, const float* cos_table, const float* sin_table,
                  std::int64_t table_positions, std::int64_t start_pos, std::int64_t b,
                  std::int64_t s, std::int64_t h, std::int64_t head_dim, cudaStream_t stream);
void rope_backward(bf16* din, const bf16* dout, const float* cos_table, const float* sin_table,
                   std::int64_t table_positions, std::int64_t start_pos, std::int64_t b,
                   std::int64_t s, std::int64_t h, std::int64_t head_dim, cudaStream_t stream);

}  // namespace moetune::kernels::cuda
