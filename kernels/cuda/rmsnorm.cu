// RMSNorm: one block per row for the row statistics; the weight gradient is a column reduction
// over row chunks (fp32 atomics, one per column per chunk).
#include <algorithm>

#include "kernels/cuda/reduce.cuh"
#include "kernels/cuda/rmsnorm.cuh"

namespace moetune::kernels::cuda {

namespace {

constexpr int kRowThreads = 256;

__global__ void rmsnorm_forward_kernel(bf16* out, float* rstd, const bf16* in, const bf16* weight,
                                       std::int64_t d, float eps) {
  __shared__ float shared[32];
  const std::int64_t row = blockIdx.x;
  const bf16* x = in + row * d;
  bf16* y = out + row * d;
  float sum_sq = 0.f;
  for (std::int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    const float v = __bfloat162float(x[j]);
    sum_sq += v * v;
  }
  sum_sq = detail::block_sum(sum_sq, shared);
  const float r = rsqrtf(sum_sq / float(d) + eps);
  if (threadIdx.x == 0) rstd[row] = r;
  // Every thread has read its x[j] above before any y[j] is written, and reads/writes only its own
  // j, so out may alias in.
  for (std::int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    const float normed = __bfloat162float(__float2bfloat16_rn(__bfloat162float(x[j]) * r));
    y[j] = __float2bfloat16_rn(normed * __bfloat162float(weight[j]));
  }
}

// dx_j = r * g_j - x_j * r^3 / D * sum_k g_k x_k, with g = dout * w.
__global__ void rmsnorm_backward_kernel(bf16* din, const bf16* dout, const bf16* in,
                                        const bf16* weight, const float* rstd, std::int64_t d) {
  __shared__ float shared[32];
  const std::int64_t row = blockIdx.x;
  const bf16* x = in + row * d;
  const bf16* dy = dout + row * d;
  bf16* dx = din + row * d;
  const float r = rstd[row];
  float dot = 0.f;
  for (std::int64_t j = threadIdx.x; j < d; j += blockDim.x)
    dot += __bfloat162float(dy[j]) * __bfloat162float(weight[j]) * __bfloat162float(x[j]);
  dot = detail::block_sum(dot, shared);
  const float coef = dot * r * r * r / float(d);
  for (std::int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    const float g = __bfloat162float(dy[j]) * __bfloat162float(weight[j]);
    dx[j] = __float2bfloat16_rn(r * g - coef * __bfloat162float(x[j]));
  }
}

// Block (32, 8): 32 columns, rows [chunk * rows_per_chunk, ...) strided by 8.
constexpr int kColTile = 32, kRowLanes = 8;

__global__ void rmsnorm_dweight_kernel(float* dweight, const bf16* dout, const bf16* in,
                                       const float* rstd, std::int64_t n, std::int64_t d,
                                       std::int64_t rows_per_chunk) {
  __shared__ float partial[kRowLanes][kColTile];
  const std::int64_t col = blockIdx.x * std::int64_t(kColTile) + threadIdx.x;
  const std::int64_t row_begin = blockIdx.y * rows_per_chunk;
  const std::int64_t row_end = min(n, row_begin + rows_per_chunk);
  float sum = 0.f;
  if (col < d) {
    for (std::int64_t i = row_begin + threadIdx.y; i < row_end; i += kRowLanes)
      sum += __bfloat162float(dout[i * d + col]) * __bfloat162float(in[i * d + col]) * rstd[i];
  }
  partial[threadIdx.y][threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.y == 0 && col < d) {
    float total = 0.f;
    for (int l = 0; l < kRowLanes; l++)
      total += partial[l][threadIdx.x];
    atomicAdd(dweight + col, total);
  }
}

}  // namespace

void rmsnorm_forward(bf16* out, float* rstd, const bf16* in, const bf16* weight, std::int64_t n,
                     std::int64_t d, double eps, cudaStream_t stream) {
  check_sizes(n >= 0 && d > 0 && eps >= 0, "rmsnorm_forward", "need n >= 0, d > 0, eps >= 0");
  check_sizes(n < (std::int64_t{1} << 31), "rmsnorm_forward", "more than 2^31 rows");
  if (n == 0) return;
  rmsnorm_forward_kernel<<<unsigned(n), kRowThreads, 0, stream>>>(out, rstd, in, weight, d,
                                                                  float(eps));
  CUDA_CHECK_LAUNCH();
}

void rmsnorm_backward(bf16* din, float* dweight, const bf16* dout, const bf16* in,
                      const bf16* weight, const float* rstd, std::int64_t n, std::int64_t d,
                      cudaStream_t stream) {
  check_sizes(n >= 0 && d > 0, "rmsnorm_backward", "need n >= 0, d > 0");
  check_sizes(n < (std::int64_t{1} << 31), "rmsnorm_backward", "more than 2^31 rows");
  if (n == 0) return;
  // The weight gradient reads dout before din overwrites it (din may alias dout).
  const std::int64_t col_blocks = (d + kColTile - 1) / kColTile;
  const std::int64_t chunks = std::min<std::int64_t>(64, (n + 255) / 256);
  const std::int64_t rows_per_chunk = (n + chunks - 1) / chunks;
  rmsnorm_dweight_kernel<<<dim3(unsigned(col_blocks), unsigned(chunks)), dim3(kColTile, kRowLanes),
                           0, stream>>>(dweight, dout, in, rstd, n, d, rows_per_chunk);
  CUDA_CHECK_LAUNCH();
  rmsnorm_backward_kernel<<<unsigned(n), kRowThreads, 0, stream>>>(din, dout, in, weight, rstd, d);
  CUDA_CHECK_LAUNCH();
}

}  // namespace moetune::kernels::cuda
