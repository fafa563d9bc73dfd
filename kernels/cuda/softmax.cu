// Softmax: one warp per row, 8 rows per block.
#include "kernels/cuda/reduce.cuh"
#include "kernels/cuda/softmax.cuh"

namespace moetune::kernels::cuda {

namespace {

constexpr int kRowsPerBlock = 8;

__global__ void softmax_forward_kernel(float* out, const float* in, std::int64_t n,
                                       std::int64_t c) {
  const std::int64_t row = blockIdx.x * std::int64_t(kRowsPerBlock) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= n) return;  // whole warps leave together
  const float* x = in + row * c;
  float* y = out + row * c;
  float m = -INFINITY;
  for (std::int64_t j = lane; j < c; j += 32)
    m = fmaxf(m, x[j]);
  m = detail::warp_max(m);
  float sum = 0.f;
  for (std::int64_t j = lane; j < c; j += 32)
    sum += expf(x[j] - m);
  sum = detail::warp_sum(sum);
  const float inv = 1.f / sum;
  for (std::int64_t j = lane; j < c; j += 32)
    y[j] = expf(x[j] - m) * inv;
}

__global__ void softmax_backward_kernel(float* din, const float* dout, const float* probs,
                                        std::int64_t n, std::int64_t c) {
  const std::int64_t row = blockIdx.x * std::int64_t(kRowsPerBlock) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= n) return;
  const float* dy = dout + row * c;
  const float* p = probs + row * c;
  float* dx = din + row * c;
  float dot = 0.f;
  for (std::int64_t j = lane; j < c; j += 32)
    dot += dy[j] * p[j];
  dot = detail::warp_sum(dot);
  for (std::int64_t j = lane; j < c; j += 32)
    dx[j] = p[j] * (dy[j] - dot);
}

}  // namespace

void softmax_forward(float* out, const float* in, std::int64_t n, std::int64_t c,
                     cudaStream_t stream) {
  check_sizes(n >= 0 && c > 0, "softmax_forward", "need n >= 0 and c > 0");
  if (n == 0) return;
  const std::int64_t blocks = (n + kRowsPerBlock - 1) / kRowsPerBlock;
  check_sizes(blocks < (std::int64_t{1} << 31), "softmax_forward", "too many rows");
  softmax_forward_kernel<<<unsigned(blocks), 32 * kRowsPerBlock, 0, stream>>>(out, in, n, c);
  CUDA_CHECK_LAUNCH();
}

void softmax_backward(float* din, const float* dout, const float* probs, std::int64_t n,
                      std::int64_t c, cudaStream_t stream) {
  check_sizes(n >= 0 && c > 0, "softmax_backward", "need n >= 0 and c > 0");
  if (n == 0) return;
  const std::int64_t blocks = (n + kRowsPerBlock - 1) / kRowsPerBlock;
  check_sizes(blocks < (std::int64_t{1} << 31), "softmax_backward", "too many rows");
  softmax_backward_kernel<<<unsigned(blocks), 32 * kRowsPerBlock, 0, stream>>>(din, dout, probs, n,
                                                                               c);
  CUDA_CHECK_LAUNCH();
}

}  // namespace moetune::kernels::cuda
