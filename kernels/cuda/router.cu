// Router kernels: one thread per token for top-k and the softmax routing (E is small), one block
// for Sinkhorn (its row and column scalings couple every token).
#include <string>

#include "kernels/cuda/reduce.cuh"
#include "kernels/cuda/router.cuh"

namespace moetune::kernels::cuda {

namespace {

constexpr int kThreads = 128;
constexpr int kSinkhornThreads = 1024;

void check_router(std::int64_t n, std::int64_t e, std::int64_t k, const char* op) {
  check_sizes(n >= 0, op, "negative token count");
  check_sizes(e > 0 && k > 0 && k <= e, op,
              "need 0 < k <= e, got k=" + std::to_string(k) + " e=" + std::to_string(e));
  check_sizes(e <= kMaxExperts && k <= kMaxTopK, op,
              "the CUDA router takes at most " + std::to_string(kMaxExperts) +
                  " experts and k <= " + std::to_string(kMaxTopK));
}

// K passes of an argmax; strict '>' keeps the lower index on ties.
__device__ void topk_row(std::int32_t* idx, const float* row, int e, int k) {
  unsigned taken[kMaxExperts / 32] = {};
  for (int j = 0; j < k; j++) {
    int best = -1;
    for (int x = 0; x < e; x++) {
      if (taken[x >> 5] & (1u << (x & 31))) continue;
      if (best < 0 || row[x] > row[best]) best = x;
    }
    taken[best >> 5] |= 1u << (best & 31);
    idx[j] = best;
  }
}

__global__ void topk_kernel(std::int32_t* topk_idx, const float* scores, std::int64_t n, int e,
                            int k) {
  const std::int64_t t = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x;
  if (t >= n) return;
  topk_row(topk_idx + t * k, scores + t * e, e, k);
}

__global__ void router_forward_kernel(float* probs, std::int32_t* topk_idx, float* topk_weight,
                                      const float* logits, std::int64_t n, int e, int k,
                                      bool normalize) {
  const std::int64_t t = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x;
  if (t >= n) return;
  const float* x = logits + t * e;
  float* p = probs + t * e;
  float m = x[0];
  for (int c = 1; c < e; c++)
    m = fmaxf(m, x[c]);
  float sum = 0.f;
  for (int c = 0; c < e; c++)
    sum += expf(x[c] - m);
  const float inv = 1.f / sum;
  for (int c = 0; c < e; c++)
    p[c] = expf(x[c] - m) * inv;
  std::int32_t* idx = topk_idx + t * k;
  topk_row(idx, p, e, k);
  float chosen = 0.f;
  for (int j = 0; j < k; j++)
    chosen += p[idx[j]];
  for (int j = 0; j < k; j++)
    topk_weight[t * k + j] = normalize ? p[idx[j]] / chosen : p[idx[j]];
}

// With w_j = p_{i_j} / S:  dL/dp_{i_j} = (dw_j - sum_l dw_l w_l) / S; then the softmax backward
// dlogit_x = p_x (dp_x - sum_y dp_y p_y).
__global__ void router_backward_kernel(float* dlogits, const float* dtopk_weight,
                                       const float* dprobs, const float* probs,
                                       const std::int32_t* topk_idx, std::int64_t n, int e, int k,
                                       bool normalize) {
  const std::int64_t t = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x;
  if (t >= n) return;
  const float* p = probs + t * e;
  const std::int32_t* idx = topk_idx + t * k;
  const float* dw = dtopk_weight + t * k;
  float g[kMaxTopK];
  if (normalize) {
    float sum = 0.f;
    for (int j = 0; j < k; j++)
      sum += p[idx[j]];
    float dot_w = 0.f;
    for (int j = 0; j < k; j++)
      dot_w += dw[j] * p[idx[j]] / sum;
    for (int j = 0; j < k; j++)
      g[j] = (dw[j] - dot_w) / sum;
  } else {
    for (int j = 0; j < k; j++)
      g[j] = dw[j];
  }
  float dot = 0.f;
  for (int j = 0; j < k; j++)
    dot += g[j] * p[idx[j]];
  if (dprobs != nullptr) {
    for (int c = 0; c < e; c++)
      dot += dprobs[t * e + c] * p[c];
  }
  for (int c = 0; c < e; c++) {
    float dp = dprobs != nullptr ? dprobs[t * e + c] : 0.f;
    for (int j = 0; j < k; j++)
      dp += idx[j] == c ? g[j] : 0.f;
    dlogits[t * e + c] = p[c] * (dp - dot);
  }
}

// One block. Each round: d0[r] = 1/N / (sum_c d1[c] cost[r,c] + eps) for the block's rows, then
// the column sums sum_r d0[r] cost[r,c] one column at a time (a block reduction each), then
// thread 0 updates d1 and the error. cost = exp(logits) is recomputed rather than stored.
__global__ void sinkhorn_kernel(float* out, const float* logits, std::int64_t n, int e, double tol,
                                std::int64_t max_iters, double* d0, std::int64_t* iterations) {
  constexpr double kEps = 1e-8;  // Megatron's
  __shared__ double d1[kMaxSinkhornExperts], col_sum[kMaxSinkhornExperts];
  __shared__ double reduce_buf[32];
  __shared__ double error;
  if (threadIdx.x < e) d1[threadIdx.x] = 1.0;
  if (threadIdx.x == 0) error = 1e9;
  __syncthreads();
  std::int64_t iters = 0;
  while (error > tol && iters < max_iters) {
    for (std::int64_t r = threadIdx.x; r < n; r += blockDim.x) {
      double s = 0;
      for (int c = 0; c < e; c++)
        s += d1[c] * exp(double(logits[r * e + c]));
      d0[r] = (1.0 / double(n)) / (s + kEps);
    }
    for (int c = 0; c < e; c++) {
      double part = 0;
      for (std::int64_t r = threadIdx.x; r < n; r += blockDim.x)
        part += d0[r] * exp(double(logits[r * e + c]));
      part = detail::block_sum(part, reduce_buf);
      if (threadIdx.x == 0) col_sum[c] = part;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      double err = 0;
      for (int c = 0; c < e; c++) {
        const double next = (1.0 / double(e)) / (col_sum[c] + kEps);
        err += fabs(d1[c] - next);  // d1 still holds the previous round's values (d1_old)
        d1[c] = next;
      }
      error = err / double(e);
    }
    __syncthreads();
    iters++;
  }
  // Each thread reads back only the d0 entries it wrote itself in the last round.
  for (std::int64_t r = threadIdx.x; r < n; r += blockDim.x) {
    for (int c = 0; c < e; c++)
      out[r * e + c] = float(d1[c] * exp(double(logits[r * e + c])) * d0[r]);
  }
  if (threadIdx.x == 0 && iterations != nullptr) *iterations = iters;
}

// scores[N,E] = sigmoid (k == 1) or softmax of the logits; topk_weight = scores at topk_idx.
__global__ void sinkhorn_scores_kernel(float* scores, float* topk_weight,
                                       const std::int32_t* topk_idx, const float* logits,
                                       std::int64_t n, int e, int k) {
  const std::int64_t t = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x;
  if (t >= n) return;
  const float* x = logits + t * e;
  float* s = scores + t * e;
  if (k == 1) {
    for (int c = 0; c < e; c++)
      s[c] = 1.f / (1.f + expf(-x[c]));
  } else {
    float m = x[0];
    for (int c = 1; c < e; c++)
      m = fmaxf(m, x[c]);
    float sum = 0.f;
    for (int c = 0; c < e; c++)
      sum += expf(x[c] - m);
    for (int c = 0; c < e; c++)
      s[c] = expf(x[c] - m) / sum;
  }
  for (int j = 0; j < k; j++)
    topk_weight[t * k + j] = s[topk_idx[t * k + j]];
}

__global__ void sinkhorn_sigmoid_backward_kernel(float* dlogits, const float* dtopk_weight,
                                                 const float* scores, const std::int32_t* topk_idx,
                                                 std::int64_t n, int e) {
  const std::int64_t t = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x;
  if (t >= n) return;
  const int chosen = topk_idx[t];
  for (int c = 0; c < e; c++) {
    const float s = scores[t * e + c];
    dlogits[t * e + c] = c == chosen ? dtopk_weight[t] * s * (1.f - s) : 0.f;
  }
}

unsigned token_blocks(std::int64_t n) {
  const std::int64_t blocks = (n + kThreads - 1) / kThreads;
  check_sizes(blocks < (std::int64_t{1} << 31), "router", "too many tokens");
  return unsigned(blocks);
}

}  // namespace

void topk_rows(std::int32_t* topk_idx, const float* scores, std::int64_t n, std::int64_t e,
               std::int64_t k, cudaStream_t stream) {
  check_router(n, e, k, "topk_rows");
  if (n == 0) return;
  topk_kernel<<<token_blocks(n), kThreads, 0, stream>>>(topk_idx, scores, n, int(e), int(k));
  CUDA_CHECK_LAUNCH();
}

void router_forward(float* probs, std::int32_t* topk_idx, float* topk_weight, const float* logits,
                    std::int64_t n, std::int64_t e, std::int64_t k, bool normalize_topk,
                    cudaStream_t stream) {
  check_router(n, e, k, "router_forward");
  if (n == 0) return;
  router_forward_kernel<<<token_blocks(n), kThreads, 0, stream>>>(
      probs, topk_idx, topk_weight, logits, n, int(e), int(k), normalize_topk);
  CUDA_CHECK_LAUNCH();
}

void router_backward(float* dlogits, const float* dtopk_weight, const float* dprobs,
                     const float* probs, const std::int32_t* topk_idx, std::int64_t n,
                     std::int64_t e, std::int64_t k, bool normalize_topk, cudaStream_t stream) {
  check_router(n, e, k, "router_backward");
  if (n == 0) return;
  router_backward_kernel<<<token_blocks(n), kThreads, 0, stream>>>(
      dlogits, dtopk_weight, dprobs, probs, topk_idx, n, int(e), int(k), normalize_topk);
  CUDA_CHECK_LAUNCH();
}

void sinkhorn(float* out, const float* logits, std::int64_t n, std::int64_t e, double tol,
              std::int64_t max_iters, double* d0_scratch, std::int64_t* iterations,
              cudaStream_t stream) {
  check_sizes(n >= 0 && e > 0, "sinkhorn", "need n >= 0 and e > 0");
  check_sizes(
      e <= kMaxSinkhornExperts, "sinkhorn",
      "the CUDA Sinkhorn takes at most " + std::to_string(kMaxSinkhornExperts) + " experts");
  check_sizes(tol >= 0 && max_iters > 0, "sinkhorn", "need tol >= 0 and max_iters > 0");
  if (n == 0) return;
  sinkhorn_kernel<<<1, kSinkhornThreads, 0, stream>>>(out, logits, n, int(e), tol, max_iters,
                                                      d0_scratch, iterations);
  CUDA_CHECK_LAUNCH();
}

void router_sinkhorn_forward(float* scores, std::int32_t* topk_idx, float* topk_weight,
                             const float* logits, std::int64_t n, std::int64_t e, std::int64_t k,
                             double tol, std::int64_t max_iters, double* d0_scratch,
                             std::int64_t* iterations, cudaStream_t stream) {
  check_router(n, e, k, "router_sinkhorn_forward");
  check_sizes(scores != logits, "router_sinkhorn_forward", "scores may not alias logits");
  if (n == 0) return;
  sinkhorn(scores, logits, n, e, tol, max_iters, d0_scratch, iterations, stream);
  topk_rows(topk_idx, scores, n, e, k, stream);
  sinkhorn_scores_kernel<<<token_blocks(n), kThreads, 0, stream>>>(scores, topk_weight, topk_idx,
                                                                   logits, n, int(e), int(k));
  CUDA_CHECK_LAUNCH();
}

void router_sinkhorn_backward(float* dlogits, const float* dtopk_weight, const float* scores,
                              const std::int32_t* topk_idx, std::int64_t n, std::int64_t e,
                              std::int64_t k, cudaStream_t stream) {
  check_router(n, e, k, "router_sinkhorn_backward");
  if (n == 0) return;
  if (k == 1) {
    sinkhorn_sigmoid_backward_kernel<<<token_blocks(n), kThreads, 0, stream>>>(
        dlogits, dtopk_weight, scores, topk_idx, n, int(e));
    CUDA_CHECK_LAUNCH();
    return;
  }
  router_backward(dlogits, dtopk_weight, nullptr, scores, topk_idx, n, e, k, false, stream);
}

}  // namespace moetune::kernels::cuda
