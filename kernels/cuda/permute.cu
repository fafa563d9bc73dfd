// Dispatch plan in three kernels: per-block expert counts; one small block that scans them into
// per-block prefixes, kept counts and offsets; and the row assignment, where each slot's rank
// among the earlier slots of its expert comes from warp match masks and per-warp counts.
#include <string>

#include "kernels/cuda/permute.cuh"
#include "kernels/cuda/reduce.cuh"

namespace moetune::kernels::cuda {

namespace {

constexpr int kPlanThreads = int(kPlanBlock);  // one slot per thread
constexpr int kPlanWarps = kPlanThreads / 32;
constexpr int kMaxPlanExperts = 1024;
constexpr int kRowThreads = 128;

// block_counts[b, E]: slots of block b per expert.
__global__ void plan_count_kernel(std::int64_t* block_counts, const std::int32_t* topk_idx,
                                  std::int64_t slots, int e) {
  extern __shared__ int s_count[];  // [E]
  for (int c = threadIdx.x; c < e; c += blockDim.x)
    s_count[c] = 0;
  __syncthreads();
  const std::int64_t s = blockIdx.x * std::int64_t(kPlanThreads) + threadIdx.x;
  if (s < slots) atomicAdd(&s_count[topk_idx[s]], 1);
  __syncthreads();
  for (int c = threadIdx.x; c < e; c += blockDim.x)
    block_counts[blockIdx.x * std::int64_t(e) + c] = s_count[c];
}

// One block, a thread per expert: block_counts become exclusive prefixes over blocks (in place),
// counts = kept rows, offsets = their exclusive scan, dropped = total - kept.
__global__ void plan_scan_kernel(std::int64_t* counts, std::int64_t* offsets, std::int64_t* dropped,
                                 std::int64_t* block_counts, std::int64_t blocks, int e,
                                 std::int64_t capacity) {
  __shared__ std::int64_t s_dropped;
  if (threadIdx.x == 0) s_dropped = 0;
  __syncthreads();
  for (int c = threadIdx.x; c < e; c += blockDim.x) {
    std::int64_t running = 0;
    for (std::int64_t b = 0; b < blocks; b++) {
      const std::int64_t here = block_counts[b * e + c];
      block_counts[b * e + c] = running;
      running += here;
    }
    const std::int64_t kept = capacity > 0 && running > capacity ? capacity : running;
    counts[c] = kept;
    atomicAdd(reinterpret_cast<unsigned long long*>(&s_dropped),
              static_cast<unsigned long long>(running - kept));
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    offsets[0] = 0;
    for (int c = 0; c < e; c++)
      offsets[c + 1] = offsets[c] + counts[c];
    if (dropped != nullptr) *dropped = s_dropped;
  }
}

__global__ void plan_assign_kernel(std::int64_t* slot_row, std::int64_t* row_slot,
                                   const std::int64_t* block_prefix, const std::int64_t* offsets,
                                   const std::int32_t* topk_idx, std::int64_t slots, int e,
                                   std::int64_t capacity) {
  extern __shared__ int s_warp_counts[];  // [warps][E]
  for (int i = threadIdx.x; i < kPlanWarps * e; i += blockDim.x)
    s_warp_counts[i] = 0;
  __syncthreads();
  const std::int64_t s = blockIdx.x * std::int64_t(kPlanThreads) + threadIdx.x;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int x = s < slots ? topk_idx[s] : -1;
  // Every lane takes part (inactive ones with x = -1, a group of their own that is never counted).
  const unsigned same = __match_any_sync(0xffffffffu, x);
  const unsigned lower = (1u << lane) - 1u;
  const int rank_in_warp = __popc(same & lower);
  if (x >= 0 && rank_in_warp == 0) s_warp_counts[warp * e + x] = __popc(same);
  __syncthreads();
  if (x < 0) return;
  std::int64_t rank = block_prefix[blockIdx.x * std::int64_t(e) + x] + rank_in_warp;
  for (int w = 0; w < warp; w++)
    rank += s_warp_counts[w * e + x];
  if (capacity > 0 && rank >= capacity) {
    slot_row[s] = -1;
    return;
  }
  const std::int64_t row = offsets[x] + rank;
  slot_row[s] = row;
  row_slot[row] = s;
}

__global__ void permute_forward_kernel(bf16* out, const bf16* in, const std::int64_t* row_slot,
                                       std::int64_t k, std::int64_t d) {
  const std::int64_t r = blockIdx.x;
  const std::int64_t slot = row_slot[r];
  if (slot < 0) return;
  const bf16* src = in + (slot / k) * d;
  bf16* dst = out + r * d;
  for (std::int64_t c = threadIdx.x; c < d; c += blockDim.x)
    dst[c] = src[c];
}

__global__ void permute_backward_kernel(bf16* din, const bf16* dout, const std::int64_t* slot_row,
                                        std::int64_t k, std::int64_t d) {
  const std::int64_t t = blockIdx.x;
  for (std::int64_t c = threadIdx.x; c < d; c += blockDim.x) {
    float sum = 0.f;
    for (std::int64_t j = 0; j < k; j++) {
      const std::int64_t r = slot_row[t * k + j];
      if (r >= 0) sum += __bfloat162float(dout[r * d + c]);
    }
    din[t * d + c] = __float2bfloat16_rn(sum);
  }
}

__global__ void combine_forward_kernel(bf16* out, const bf16* expert_out, const float* topk_weight,
                                       const std::int64_t* slot_row, std::int64_t k,
                                       std::int64_t d) {
  const std::int64_t t = blockIdx.x;
  for (std::int64_t c = threadIdx.x; c < d; c += blockDim.x) {
    float sum = 0.f;
    for (std::int64_t j = 0; j < k; j++) {
      const std::int64_t r = slot_row[t * k + j];
      if (r >= 0) sum += topk_weight[t * k + j] * __bfloat162float(expert_out[r * d + c]);
    }
    out[t * d + c] = __float2bfloat16_rn(sum);
  }
}

__global__ void combine_backward_kernel(bf16* dexpert_out, float* dtopk_weight, const bf16* dout,
                                        const bf16* expert_out, const float* topk_weight,
                                        const std::int64_t* slot_row, std::int64_t k,
                                        std::int64_t d) {
  __shared__ float shared[32];
  const std::int64_t t = blockIdx.x;
  const bf16* dy = dout + t * d;
  for (std::int64_t j = 0; j < k; j++) {
    const std::int64_t r = slot_row[t * k + j];  // the same for the whole block
    if (r < 0) {
      if (threadIdx.x == 0) dtopk_weight[t * k + j] = 0.f;
      continue;
    }
    const float w = topk_weight[t * k + j];
    float dot = 0.f;
    for (std::int64_t c = threadIdx.x; c < d; c += blockDim.x) {
      const float g = __bfloat162float(dy[c]);
      dot += g * __bfloat162float(expert_out[r * d + c]);
      dexpert_out[r * d + c] = __float2bfloat16_rn(w * g);
    }
    dot = detail::block_sum(dot, shared);
    if (threadIdx.x == 0) dtopk_weight[t * k + j] = dot;
  }
}

void check_rows(std::int64_t rows, const char* op) {
  check_sizes(rows < (std::int64_t{1} << 31), op, "more than 2^31 rows");
}

}  // namespace

std::int64_t dispatch_plan_scratch_elems(std::int64_t slots, std::int64_t e) {
  return ((slots + kPlanBlock - 1) / kPlanBlock) * e;
}

void dispatch_plan(std::int64_t* counts, std::int64_t* offsets, std::int64_t* slot_row,
                   std::int64_t* row_slot, std::int64_t* dropped, const std::int32_t* topk_idx,
                   std::int64_t n, std::int64_t e, std::int64_t k, std::int64_t capacity,
                   std::int64_t* scratch, cudaStream_t stream) {
  check_sizes(n >= 0 && e > 0 && k > 0, "dispatch_plan", "need n >= 0, e > 0, k > 0");
  check_sizes(e <= kMaxPlanExperts, "dispatch_plan",
              "at most " + std::to_string(kMaxPlanExperts) + " experts");
  check_sizes(capacity >= 0, "dispatch_plan", "negative capacity");
  const std::int64_t slots = n * k;
  if (slots == 0) {
    CUDA_CHECK(cudaMemsetAsync(counts, 0, sizeof(std::int64_t) * e, stream));
    CUDA_CHECK(cudaMemsetAsync(offsets, 0, sizeof(std::int64_t) * (e + 1), stream));
    if (dropped != nullptr) CUDA_CHECK(cudaMemsetAsync(dropped, 0, sizeof(std::int64_t), stream));
    return;
  }
  const std::int64_t blocks = (slots + kPlanBlock - 1) / kPlanBlock;
  check_rows(blocks, "dispatch_plan");
  // All bits set is -1 in two's complement: rows past R have no slot.
  CUDA_CHECK(cudaMemsetAsync(row_slot, 0xff, sizeof(std::int64_t) * slots, stream));
  plan_count_kernel<<<unsigned(blocks), kPlanThreads, sizeof(int) * e, stream>>>(scratch, topk_idx,
                                                                                 slots, int(e));
  CUDA_CHECK_LAUNCH();
  plan_scan_kernel<<<1, 1024, 0, stream>>>(counts, offsets, dropped, scratch, blocks, int(e),
                                           capacity);
  CUDA_CHECK_LAUNCH();
  const std::size_t warp_bytes = sizeof(int) * kPlanWarps * std::size_t(e);
  if (warp_bytes > 48 * 1024) {
    CUDA_CHECK(cudaFuncSetAttribute(plan_assign_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    int(warp_bytes)));
  }
  plan_assign_kernel<<<unsigned(blocks), kPlanThreads, warp_bytes, stream>>>(
      slot_row, row_slot, scratch, offsets, topk_idx, slots, int(e), capacity);
  CUDA_CHECK_LAUNCH();
}

void permute_forward(bf16* out, const bf16* in, const std::int64_t* row_slot, std::int64_t max_rows,
                     std::int64_t k, std::int64_t d, cudaStream_t stream) {
  check_sizes(max_rows >= 0 && k > 0 && d > 0, "permute_forward", "need rows >= 0, k > 0, d > 0");
  check_rows(max_rows, "permute_forward");
  if (max_rows == 0) return;
  permute_forward_kernel<<<unsigned(max_rows), kRowThreads, 0, stream>>>(out, in, row_slot, k, d);
  CUDA_CHECK_LAUNCH();
}

void permute_backward(bf16* din, const bf16* dout, const std::int64_t* slot_row, std::int64_t n,
                      std::int64_t k, std::int64_t d, cudaStream_t stream) {
  check_sizes(n >= 0 && k > 0 && d > 0, "permute_backward", "need n >= 0, k > 0, d > 0");
  check_rows(n, "permute_backward");
  if (n == 0) return;
  permute_backward_kernel<<<unsigned(n), kRowThreads, 0, stream>>>(din, dout, slot_row, k, d);
  CUDA_CHECK_LAUNCH();
}

void unpermute_combine_forward(bf16* out, const bf16* expert_out, const float* topk_weight,
                               const std::int64_t* slot_row, std::int64_t n, std::int64_t k,
                               std::int64_t d, cudaStream_t stream) {
  check_sizes(n >= 0 && k > 0 && d > 0, "unpermute_combine_forward", "need n >= 0, k > 0, d > 0");
  check_rows(n, "unpermute_combine_forward");
  if (n == 0) return;
  combine_forward_kernel<<<unsigned(n), kRowThreads, 0, stream>>>(out, expert_out, topk_weight,
                                                                  slot_row, k, d);
  CUDA_CHECK_LAUNCH();
}

void unpermute_combine_backward(bf16* dexpert_out, float* dtopk_weight, const bf16* dout,
                                const bf16* expert_out, const float* topk_weight,
                                const std::int64_t* slot_row, std::int64_t n, std::int64_t k,
                                std::int64_t d, cudaStream_t stream) {
  check_sizes(n >= 0 && k > 0 && d > 0, "unpermute_combine_backward", "need n >= 0, k > 0, d > 0");
  check_rows(n, "unpermute_combine_backward");
  if (n == 0) return;
  combine_backward_kernel<<<unsigned(n), kRowThreads, 0, stream>>>(
      dexpert_out, dtopk_weight, dout, expert_out, topk_weight, slot_row, k, d);
  CUDA_CHECK_LAUNCH();
}

}  // namespace moetune::kernels::cuda
