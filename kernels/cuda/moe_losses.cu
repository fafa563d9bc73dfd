// Aux-loss statistics: per-block shared-memory sums, then one global atomic per expert per block.
// z-loss: one thread per token, a block sum, one atomic per block.
#include <string>

#include "kernels/cuda/moe_losses.cuh"
#include "kernels/cuda/reduce.cuh"
#include "kernels/cuda/router.cuh"

namespace moetune::kernels::cuda {

namespace {

constexpr int kThreads = 256;

__device__ float row_lse(const float* x, int e) {
  float m = x[0];
  for (int c = 1; c < e; c++)
    m = fmaxf(m, x[c]);
  float sum = 0.f;
  for (int c = 0; c < e; c++)
    sum += expf(x[c] - m);
  return m + logf(sum);
}

__global__ void aux_accumulate_kernel(std::int64_t* counts, double* prob_sum, const float* probs,
                                      const std::int32_t* topk_idx, std::int64_t n, int e, int k) {
  __shared__ unsigned long long s_counts[kMaxExperts];
  __shared__ double s_prob[kMaxExperts];
  for (int c = threadIdx.x; c < e; c += blockDim.x) {
    s_counts[c] = 0;
    s_prob[c] = 0;
  }
  __syncthreads();
  const std::int64_t t = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x;
  const bool active = t < n;
  if (active) {
    for (int j = 0; j < k; j++)
      atomicAdd(&s_counts[topk_idx[t * k + j]], 1ull);
  }
  const int lane = threadIdx.x & 31;
  for (int c = 0; c < e; c++) {
    double p = active ? double(probs[t * e + c]) : 0.0;
    p = detail::warp_sum(p);
    if (lane == 0) atomicAdd(&s_prob[c], p);
  }
  __syncthreads();
  for (int c = threadIdx.x; c < e; c += blockDim.x) {
    atomicAdd(reinterpret_cast<unsigned long long*>(counts + c), s_counts[c]);
    atomicAdd(prob_sum + c, s_prob[c]);
  }
}

__global__ void aux_backward_kernel(float* dprobs, const std::int64_t* counts, double scale,
                                    std::int64_t n, int e) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n * e;
       i += std::int64_t(gridDim.x) * blockDim.x)
    dprobs[i] += float(scale * double(counts[i % e]));
}

__global__ void z_loss_forward_kernel(double* z_loss, const float* logits, std::int64_t n, int e) {
  __shared__ double shared[32];
  const std::int64_t t = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x;
  double v = 0;
  if (t < n) {
    const double lse = double(row_lse(logits + t * e, e));
    v = lse * lse / double(n);
  }
  v = detail::block_sum(v, shared);
  if (threadIdx.x == 0) atomicAdd(z_loss, v);
}

__global__ void z_loss_backward_kernel(float* dlogits, const float* logits, std::int64_t n, int e,
                                       double dloss) {
  const std::int64_t t = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x;
  if (t >= n) return;
  const float* x = logits + t * e;
  const float lse = row_lse(x, e);
  const float coef = float(dloss * 2.0 * double(lse) / double(n));
  for (int c = 0; c < e; c++)
    dlogits[t * e + c] += coef * expf(x[c] - lse);
}

unsigned token_blocks(std::int64_t n, const char* op) {
  const std::int64_t blocks = (n + kThreads - 1) / kThreads;
  check_sizes(blocks < (std::int64_t{1} << 31), op, "too many tokens");
  return unsigned(blocks);
}

void check_experts(std::int64_t n, std::int64_t e, const char* op) {
  check_sizes(n >= 0 && e > 0 && e <= kMaxExperts, op,
              "need n >= 0 and 0 < e <= " + std::to_string(kMaxExperts));
}

}  // namespace

void aux_loss_accumulate(std::int64_t* counts, double* prob_sum, const float* probs,
                         const std::int32_t* topk_idx, std::int64_t n, std::int64_t e,
                         std::int64_t k, cudaStream_t stream) {
  check_experts(n, e, "aux_loss_accumulate");
  check_sizes(k > 0 && k <= e, "aux_loss_accumulate", "need 0 < k <= e");
  if (n == 0) return;
  aux_accumulate_kernel<<<token_blocks(n, "aux_loss_accumulate"), kThreads, 0, stream>>>(
      counts, prob_sum, probs, topk_idx, n, int(e), int(k));
  CUDA_CHECK_LAUNCH();
}

void aux_loss_backward(float* dprobs, const std::int64_t* counts, std::int64_t n_tokens,
                       std::int64_t n, std::int64_t e, double dloss, cudaStream_t stream) {
  check_experts(n, e, "aux_loss_backward");
  check_sizes(n_tokens >= n, "aux_loss_backward", "need n <= n_tokens");
  if (n == 0) return;
  const double t = double(n_tokens);
  const double scale = dloss * double(e) / (t * t);
  aux_backward_kernel<<<grid_for(n * e, kThreads), kThreads, 0, stream>>>(dprobs, counts, scale, n,
                                                                          int(e));
  CUDA_CHECK_LAUNCH();
}

void z_loss_forward(double* z_loss, const float* logits, std::int64_t n, std::int64_t e,
                    cudaStream_t stream) {
  check_experts(n, e, "z_loss_forward");
  if (n == 0) return;
  z_loss_forward_kernel<<<token_blocks(n, "z_loss_forward"), kThreads, 0, stream>>>(z_loss, logits,
                                                                                    n, int(e));
  CUDA_CHECK_LAUNCH();
}

void z_loss_backward(float* dlogits, const float* logits, std::int64_t n, std::int64_t e,
                     double dloss, cudaStream_t stream) {
  check_experts(n, e, "z_loss_backward");
  if (n == 0) return;
  z_loss_backward_kernel<<<token_blocks(n, "z_loss_backward"), kThreads, 0, stream>>>(
      dlogits, logits, n, int(e), dloss);
  CUDA_CHECK_LAUNCH();
}

}  // namespace moetune::kernels::cuda
