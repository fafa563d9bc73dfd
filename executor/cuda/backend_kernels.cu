// The backend's own kernels: row kernels (a block per token row) for the embedding and the
// cross-entropy passes, grid-stride loops for the elementwise ones, and a two-kernel segmented sum
// of squares (a block per chunk, then a block per class over the chunk partials).
#include <string>

#include "executor/cuda/backend_kernels.cuh"
#include "kernels/cuda/reduce.cuh"

namespace moetune::executor::gpu {

namespace {

namespace kc = moetune::kernels::cuda;
namespace detail = moetune::kernels::cuda::detail;

constexpr std::int32_t kIgnoreIndex = -100;  // kernels/cpu/cross_entropy.hpp's
constexpr int kRowThreads = 256;
constexpr int kThreads = 256;

// Row kernels launch one block per row: the grid's x dimension takes fewer than 2^31.
unsigned row_grid(std::int64_t rows, const char* op) {
  kc::check_sizes(rows < (std::int64_t{1} << 31), op, "more than 2^31 rows");
  return unsigned(rows);
}

__global__ void vocab_embedding_forward_kernel(bf16* out, const bf16* table,
                                               const std::int32_t* ids, std::int64_t first,
                                               std::int64_t rows, std::int64_t d) {
  const std::int64_t i = blockIdx.x;
  const std::int64_t row = std::int64_t(ids[i]) - first;
  const bool here = row >= 0 && row < rows;
  bf16* dst = out + i * d;
  for (std::int64_t j = threadIdx.x; j < d; j += blockDim.x)
    dst[j] = here ? table[row * d + j] : __float2bfloat16_rn(0.f);
}

__global__ void vocab_embedding_backward_kernel(float* dtable, const bf16* dout,
                                                const std::int32_t* ids, std::int64_t first,
                                                std::int64_t rows, std::int64_t d) {
  const std::int64_t i = blockIdx.x;
  const std::int64_t row = std::int64_t(ids[i]) - first;
  if (row < 0 || row >= rows) return;  // the whole block returns together
  const bf16* src = dout + i * d;
  for (std::int64_t j = threadIdx.x; j < d; j += blockDim.x)
    atomicAdd(dtable + row * d + j, __bfloat162float(src[j]));
}

// Each thread keeps an online (max, sum of exp(x - max)) over its columns; the block merges them.
__device__ float row_logsumexp(const bf16* x, std::int64_t v, float* shared) {
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
  sum = detail::block_sum(sum, shared);
  return block_m + logf(sum);
}

__global__ void cross_entropy_partial_kernel(float* lse_part, float* target_logit,
                                             const bf16* logits, const std::int32_t* targets,
                                             std::int64_t vl, std::int64_t first) {
  __shared__ float shared[32];
  const std::int64_t row = blockIdx.x;
  const bf16* x = logits + row * vl;
  const float lse = row_logsumexp(x, vl, shared);
  if (threadIdx.x != 0) return;
  lse_part[row] = lse;
  const std::int32_t target = targets[row];
  const std::int64_t t = std::int64_t(target) - first;
  target_logit[row] = target != kIgnoreIndex && t >= 0 && t < vl ? __bfloat162float(x[t]) : 0.f;
}

__global__ void cross_entropy_combine_kernel(float* lse, float* losses, const float* lse_parts,
                                             const float* target_logit, const std::int32_t* targets,
                                             std::int64_t n, std::int64_t parts) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    double value = lse_parts[i];
    if (parts > 1) {
      double max_l = value;
      for (std::int64_t r = 1; r < parts; r++)
        max_l = fmax(max_l, double(lse_parts[r * n + i]));
      double sum = 0;
      for (std::int64_t r = 0; r < parts; r++)
        sum += exp(double(lse_parts[r * n + i]) - max_l);
      value = max_l + log(sum);
    }
    lse[i] = float(value);
    losses[i] = targets[i] == kIgnoreIndex ? 0.f : float(value - double(target_logit[i]));
  }
}

__global__ void cross_entropy_backward_kernel(bf16* dlogits, const bf16* logits, const float* lse,
                                              const std::int32_t* targets, std::int64_t vl,
                                              std::int64_t first, float scale) {
  const std::int64_t row = blockIdx.x;
  const bf16* x = logits + row * vl;
  bf16* dx = dlogits + row * vl;  // may be x: each thread reads x[j] before writing dx[j]
  const std::int32_t target = targets[row];
  if (target == kIgnoreIndex) {
    for (std::int64_t j = threadIdx.x; j < vl; j += blockDim.x)
      dx[j] = __float2bfloat16_rn(0.f);
    return;
  }
  const float l = lse[row];
  const std::int64_t t = std::int64_t(target) - first;
  for (std::int64_t j = threadIdx.x; j < vl; j += blockDim.x) {
    const float p = expf(__bfloat162float(x[j]) - l);
    dx[j] = __float2bfloat16_rn(j == t ? scale * p - scale : scale * p);
  }
}

__global__ void localize_routing_kernel(std::int32_t* out, const std::int32_t* idx,
                                        const std::int64_t* kept, std::int64_t count,
                                        std::int64_t first, std::int64_t local) {
  for (std::int64_t s = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; s < count;
       s += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t x = std::int64_t(idx[s]) - first;
    const bool here = x >= 0 && x < local && (kept == nullptr || kept[s] >= 0);
    out[s] = std::int32_t(here ? x : local);
  }
}

__global__ void drop_rows_from_kernel(std::int64_t* slot_row, std::int64_t count,
                                      std::int64_t rows) {
  for (std::int64_t s = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; s < count;
       s += std::int64_t(gridDim.x) * blockDim.x) {
    if (slot_row[s] >= rows) slot_row[s] = -1;
  }
}

// Each thread reads and writes only its own elements, so dst may be src (the sum doubles).
template <typename T>
__global__ void accumulate_kernel(T* dst, const T* src, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x)
    dst[i] += src[i];
}

__global__ void accumulate_bf16_kernel(bf16* dst, const bf16* src, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x)
    dst[i] = __float2bfloat16_rn(__bfloat162float(dst[i]) + __bfloat162float(src[i]));
}

template <typename T>
void launch_accumulate(T* dst, const T* src, std::int64_t n, const char* op, cudaStream_t stream) {
  kc::check_sizes(n >= 0, op, "negative count");
  if (n == 0) return;
  accumulate_kernel<T><<<kc::grid_for(n, kThreads), kThreads, 0, stream>>>(dst, src, n);
  CUDA_CHECK_LAUNCH();
}

// Block b sums chunks b, b + gridDim.x, ...; inside a chunk thread i takes elements i,
// i + blockDim.x, ...: a fixed assignment, hence a fixed order.
__global__ void square_chunks_kernel(double* partial, const float* x, const SquareChunk* chunks,
                                     std::int64_t chunk_count) {
  __shared__ double shared[32];
  for (std::int64_t c = blockIdx.x; c < chunk_count; c += gridDim.x) {
    const SquareChunk chunk = chunks[c];
    const float* p = x + chunk.offset;
    double sum = 0;
    for (std::int64_t i = threadIdx.x; i < chunk.count; i += blockDim.x)
      sum += double(p[i]) * double(p[i]);
    sum = detail::block_sum(sum, shared);
    if (threadIdx.x == 0) partial[c] = sum;
  }
}

// One block per class: thread i sums the partials of chunks i, i + blockDim.x, ... of its class.
__global__ void square_classes_kernel(double* class_sums, const double* partial,
                                      const SquareChunk* chunks, std::int64_t chunk_count) {
  __shared__ double shared[32];
  const int cls = int(blockIdx.x);
  double sum = 0;
  for (std::int64_t c = threadIdx.x; c < chunk_count; c += blockDim.x) {
    if (chunks[c].cls == cls) sum += partial[c];
  }
  sum = detail::block_sum(sum, shared);
  if (threadIdx.x == 0) class_sums[cls] = sum;
}

}  // namespace

void vocab_embedding_forward(bf16* out, const bf16* table, const std::int32_t* ids, std::int64_t n,
                             std::int64_t first, std::int64_t rows, std::int64_t d,
                             cudaStream_t stream) {
  kc::check_sizes(n >= 0 && rows >= 0 && d > 0, "vocab_embedding_forward",
                  "need n >= 0, rows >= 0, d > 0");
  if (n == 0) return;
  vocab_embedding_forward_kernel<<<row_grid(n, "vocab_embedding_forward"), kRowThreads, 0,
                                   stream>>>(out, table, ids, first, rows, d);
  CUDA_CHECK_LAUNCH();
}

void vocab_embedding_backward(float* dtable, const bf16* dout, const std::int32_t* ids,
                              std::int64_t n, std::int64_t first, std::int64_t rows, std::int64_t d,
                              cudaStream_t stream) {
  kc::check_sizes(n >= 0 && rows >= 0 && d > 0, "vocab_embedding_backward",
                  "need n >= 0, rows >= 0, d > 0");
  if (n == 0 || rows == 0) return;
  vocab_embedding_backward_kernel<<<row_grid(n, "vocab_embedding_backward"), kRowThreads, 0,
                                    stream>>>(dtable, dout, ids, first, rows, d);
  CUDA_CHECK_LAUNCH();
}

void cross_entropy_partial(float* lse_part, float* target_logit, const bf16* logits,
                           const std::int32_t* targets, std::int64_t n, std::int64_t vl,
                           std::int64_t first, cudaStream_t stream) {
  kc::check_sizes(n >= 0 && vl > 0, "cross_entropy_partial", "need n >= 0 and vl > 0");
  if (n == 0) return;
  cross_entropy_partial_kernel<<<row_grid(n, "cross_entropy_partial"), kRowThreads, 0, stream>>>(
      lse_part, target_logit, logits, targets, vl, first);
  CUDA_CHECK_LAUNCH();
}

void cross_entropy_combine(float* lse, float* losses, const float* lse_parts,
                           const float* target_logit, const std::int32_t* targets, std::int64_t n,
                           std::int64_t parts, cudaStream_t stream) {
  kc::check_sizes(n >= 0 && parts > 0, "cross_entropy_combine", "need n >= 0 and parts > 0");
  if (n == 0) return;
  cross_entropy_combine_kernel<<<kc::grid_for(n, kThreads), kThreads, 0, stream>>>(
      lse, losses, lse_parts, target_logit, targets, n, parts);
  CUDA_CHECK_LAUNCH();
}

void cross_entropy_backward(bf16* dlogits, const bf16* logits, const float* lse,
                            const std::int32_t* targets, std::int64_t n, std::int64_t vl,
                            std::int64_t first, float scale, cudaStream_t stream) {
  kc::check_sizes(n >= 0 && vl > 0, "cross_entropy_backward", "need n >= 0 and vl > 0");
  if (n == 0) return;
  cross_entropy_backward_kernel<<<row_grid(n, "cross_entropy_backward"), kRowThreads, 0, stream>>>(
      dlogits, logits, lse, targets, vl, first, scale);
  CUDA_CHECK_LAUNCH();
}

void localize_routing(std::int32_t* out, const std::int32_t* idx, const std::int64_t* kept,
                      std::int64_t count, std::int64_t first, std::int64_t local,
                      cudaStream_t stream) {
  kc::check_sizes(count >= 0 && local >= 0, "localize_routing", "need count >= 0, local >= 0");
  kc::check_sizes(local < (std::int64_t{1} << 31), "localize_routing",
                  "local experts must fit int32");
  if (count == 0) return;
  localize_routing_kernel<<<kc::grid_for(count, kThreads), kThreads, 0, stream>>>(
      out, idx, kept, count, first, local);
  CUDA_CHECK_LAUNCH();
}

void drop_rows_from(std::int64_t* slot_row, std::int64_t count, std::int64_t rows,
                    cudaStream_t stream) {
  kc::check_sizes(count >= 0, "drop_rows_from", "negative count");
  if (count == 0) return;
  drop_rows_from_kernel<<<kc::grid_for(count, kThreads), kThreads, 0, stream>>>(slot_row, count,
                                                                                rows);
  CUDA_CHECK_LAUNCH();
}

void accumulate_f32(float* dst, const float* src, std::int64_t n, cudaStream_t stream) {
  launch_accumulate(dst, src, n, "accumulate_f32", stream);
}
void accumulate_f64(double* dst, const double* src, std::int64_t n, cudaStream_t stream) {
  launch_accumulate(dst, src, n, "accumulate_f64", stream);
}
void accumulate_i32(std::int32_t* dst, const std::int32_t* src, std::int64_t n,
                    cudaStream_t stream) {
  launch_accumulate(dst, src, n, "accumulate_i32", stream);
}
void accumulate_i64(std::int64_t* dst, const std::int64_t* src, std::int64_t n,
                    cudaStream_t stream) {
  // long long is what the device's 64-bit integer add is written for; same size and layout.
  static_assert(sizeof(long long) == sizeof(std::int64_t));
  launch_accumulate(reinterpret_cast<long long*>(dst), reinterpret_cast<const long long*>(src), n,
                    "accumulate_i64", stream);
}

void accumulate_bf16(bf16* dst, const bf16* src, std::int64_t n, cudaStream_t stream) {
  kc::check_sizes(n >= 0, "accumulate_bf16", "negative count");
  if (n == 0) return;
  accumulate_bf16_kernel<<<kc::grid_for(n, kThreads), kThreads, 0, stream>>>(dst, src, n);
  CUDA_CHECK_LAUNCH();
}

void segmented_sum_of_squares(double* class_sums, double* partial, const float* x,
                              const SquareChunk* chunks, std::int64_t chunk_count, int classes,
                              cudaStream_t stream) {
  kc::check_sizes(chunk_count >= 0 && classes >= 0, "segmented_sum_of_squares",
                  "negative chunk or class count");
  kc::check_sizes(classes < 65536, "segmented_sum_of_squares",
                  "at most 65535 classes, got " + std::to_string(classes));
  if (classes == 0) return;
  if (chunk_count > 0) {
    square_chunks_kernel<<<kc::grid_for(chunk_count, 1, std::int64_t{1} << 20), kThreads, 0,
                           stream>>>(partial, x, chunks, chunk_count);
    CUDA_CHECK_LAUNCH();
  }
  // With no chunks every class sum is 0: the class kernel writes them all the same.
  square_classes_kernel<<<unsigned(classes), kThreads, 0, stream>>>(class_sums, partial, chunks,
                                                                    chunk_count);
  CUDA_CHECK_LAUNCH();
}

}  // namespace moetune::executor::gpu
