// Cross-entropy: one block per row; an online (max, sum) per thread, merged across the block,
// then a second pass writes the gradient over the logits it read.
#include "kernels/cuda/cross_entropy.cuh"
#include "kernels/cuda/reduce.cuh"

namespace moetune::kernels::cuda {

namespace {

constexpr int kThreads = 512;
constexpr std::int32_t kIgnoreIndex = -100;

__global__ void cross_entropy_kernel(float* losses, bf16* dlogits, const bf16* logits,
                                     const std::int32_t* targets, std::int64_t v, float scale) {
  __shared__ float shared[32];
  __shared__ float target_logit;
  const std::int64_t row = blockIdx.x;
  const std::int32_t target = targets[row];
  const bf16* x = logits + row * v;
  bf16* dx = dlogits != nullptr ? dlogits + row * v : nullptr;
  if (target == kIgnoreIndex) {
    if (threadIdx.x == 0) losses[row] = 0.f;
    if (dx != nullptr) {
      for (std::int64_t j = threadIdx.x; j < v; j += blockDim.x)
        dx[j] = __float2bfloat16_rn(0.f);
    }
    return;  // the whole block returns together (target is per row)
  }
  if (threadIdx.x == 0) target_logit = __bfloat162float(x[target]);
  float m = -INFINITY, sum = 0.f;
  for (std::int64_t j = threadIdx.x; j < v; j += blockDim.x) {
    const float xj = __bfloat162float(x[j]);
    if (xj > m) {
      sum = sum * expf(m - xj) + 1.f;
      m = xj;
    } else {
      sum += expf(xj - m);
    }
  }
  const float block_m = detail::block_max(m, shared);
  sum = m == -INFINITY ? 0.f : sum * expf(m - block_m);
  sum = detail::block_sum(sum, shared);  // synchronises: target_logit is visible after this
  const float lse = block_m + logf(sum);
  if (threadIdx.x == 0) losses[row] = lse - target_logit;
  if (dx == nullptr) return;
  for (std::int64_t j = threadIdx.x; j < v; j += blockDim.x) {
    const float p = expf(__bfloat162float(x[j]) - lse);
    dx[j] = __float2bfloat16_rn(scale * (j == target ? p - 1.f : p));
  }
}

}  // namespace

void cross_entropy_fused(float* losses, bf16* dlogits, const bf16* logits,
                         const std::int32_t* targets, std::int64_t n, std::int64_t v, float scale,
                         cudaStream_t stream) {
  check_sizes(n >= 0 && v > 0, "cross_entropy_fused", "need n >= 0 and v > 0");
  check_sizes(n < (std::int64_t{1} << 31), "cross_entropy_fused", "more than 2^31 rows");
  if (n == 0) return;
  cross_entropy_kernel<<<unsigned(n), kThreads, 0, stream>>>(losses, dlogits, logits, targets, v,
                                                             scale);
  CUDA_CHECK_LAUNCH();
}

}  // namespace moetune::kernels::cuda
