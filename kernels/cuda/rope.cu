// RoPE: one thread per rotated pair (i, i + Dh/2) of one head vector.
#include <string>

#include "kernels/cuda/rope.cuh"

namespace moetune::kernels::cuda {

namespace {

constexpr int kThreads = 256;

__global__ void rope_table_kernel(float* cos_table, float* sin_table, std::int64_t positions,
                                  std::int64_t head_dim, double theta) {
  const std::int64_t half = head_dim / 2;
  const std::int64_t total = positions * half;
  for (std::int64_t idx = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t p = idx / half, i = idx % half;
    const double inv_freq = pow(theta, -double(2 * i) / double(head_dim));
    const double angle = double(p) * inv_freq;
    cos_table[idx] = float(cos(angle));
    sin_table[idx] = float(sin(angle));
  }
}

// direction = +1 forward, -1 backward (the transposed rotation).
__global__ void rope_kernel(bf16* out, const bf16* in, const float* cos_table,
                            const float* sin_table, std::int64_t start_pos, std::int64_t s,
                            std::int64_t h, std::int64_t head_dim, std::int64_t total_pairs,
                            float direction) {
  const std::int64_t half = head_dim / 2;
  for (std::int64_t idx = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; idx < total_pairs;
       idx += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t i = idx % half;
    const std::int64_t vec = idx / half;  // (b, s, h) flattened
    const std::int64_t si = (vec / h) % s;
    const std::int64_t pos = start_pos + si;
    const float c = cos_table[pos * half + i];
    const float sn = direction * sin_table[pos * half + i];
    const std::int64_t base = vec * head_dim;
    const float x1 = __bfloat162float(in[base + i]);
    const float x2 = __bfloat162float(in[base + i + half]);
    out[base + i] = __float2bfloat16_rn(x1 * c - x2 * sn);
    out[base + i + half] = __float2bfloat16_rn(x2 * c + x1 * sn);
  }
}

void launch_rope(bf16* out, const bf16* in, const float* cos_table, const float* sin_table,
                 std::int64_t table_positions, std::int64_t start_pos, std::int64_t b,
                 std::int64_t s, std::int64_t h, std::int64_t head_dim, float direction,
                 const char* op, cudaStream_t stream) {
  check_sizes(b >= 0 && s >= 0 && h >= 0 && start_pos >= 0, op, "negative size or position");
  check_sizes(head_dim > 0 && head_dim % 2 == 0, op, "head_dim must be even and > 0");
  if (b == 0 || s == 0 || h == 0) return;
  check_sizes(start_pos + s <= table_positions, op,
              "positions up to " + std::to_string(start_pos + s - 1) + " outside the table of " +
                  std::to_string(table_positions));
  const std::int64_t pairs = b * s * h * (head_dim / 2);
  rope_kernel<<<grid_for(pairs, kThreads), kThreads, 0, stream>>>(
      out, in, cos_table, sin_table, start_pos, s, h, head_dim, pairs, direction);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void rope_table(float* cos_table, float* sin_table, std::int64_t max_positions,
                std::int64_t head_dim, double theta, cudaStream_t stream) {
  check_sizes(max_positions >= 0, "rope_table", "negative max_positions");
  check_sizes(head_dim > 0 && head_dim % 2 == 0, "rope_table", "head_dim must be even and > 0");
  check_sizes(theta > 0, "rope_table", "theta must be > 0");
  if (max_positions == 0) return;
  const std::int64_t total = max_positions * (head_dim / 2);
  rope_table_kernel<<<grid_for(total, kThreads), kThreads, 0, stream>>>(
      cos_table, sin_table, max_positions, head_dim, theta);
  CUDA_CHECK_LAUNCH();
}

void rope_forward(bf16* out, const bf16* in, const float* cos_table, const float* sin_table,
                  std::int64_t table_positions, std::int64_t start_pos, std::int64_t b,
                  std::int64_t s, std::int64_t h, std::int64_t head_dim, cudaStream_t stream) {
  launch_rope(out, in, cos_table, sin_table, table_positions, start_pos, b, s, h, head_dim, 1.f,
              "rope_forward", stream);
}

void rope_backward(bf16* din, const bf16* dout, const float* cos_table, const float* sin_table,
                   std::int64_t table_positions, std::int64_t start_pos, std::int64_t b,
                   std::int64_t s, std::int64_t h, std::int64_t head_dim, cudaStream_t stream) {
  launch_rope(din, dout, cos_table, sin_table, table_positions, start_pos, b, s, h, head_dim, -1.f,
              "rope_backward", stream);
}

}  // namespace moetune::kernels::cuda
