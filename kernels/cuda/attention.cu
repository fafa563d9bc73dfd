// Attention through batched GEMMs: pointer arrays per (batch, query head) built on the device, so
// q, k, v are read in their [B,S,H,Dh] layout through leading dimensions; GQA picks kv head
// h / (Hq / Hkv). Row kernels (one warp per score row) do the masked softmax and its backward.
#include <cmath>
#include <cstdint>
#include <string>

#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/reduce.cuh"

namespace moetune::kernels::cuda {

namespace {

constexpr int kRowsPerBlock = 8;  // warps per block, one score row each
constexpr int kThreads = 256;
constexpr int kPointerSets = 5;  // batched GEMM calls in one backward (forward uses 2)

std::size_t round_up(std::size_t x) {
  return (x + 255) / 256 * 256;
}

struct Scratch {
  float* scores;      // [B,Hq,S,S] fp32: the forward's scores, the backward's d(probs)
  bf16* dscores;      // [B,Hq,S,S] bf16: d(scores) / scale
  float* partial;     // [B,S,Hq,Dh] fp32: per-query-head dk or dv before the GQA sum
  const void** ptrs;  // kPointerSets x 3 x B*Hq
};

Scratch carve(void* base, std::int64_t b, std::int64_t s, std::int64_t hq, std::int64_t dh) {
  char* p = static_cast<char*>(base);
  const std::size_t score_elems = std::size_t(b * hq) * std::size_t(s) * std::size_t(s);
  Scratch sc{};
  sc.scores = reinterpret_cast<float*>(p);
  p += round_up(score_elems * sizeof(float));
  sc.dscores = reinterpret_cast<bf16*>(p);
  p += round_up(score_elems * sizeof(bf16));
  sc.partial = reinterpret_cast<float*>(p);
  p += round_up(std::size_t(b * s * hq * dh) * sizeof(float));
  sc.ptrs = reinterpret_cast<const void**>(p);
  return sc;
}

// Pointer arrays for batch item i = bi * hq + h: X_i = base_x + bi * batch_x + (h / div_x) * head_x
// (byte strides), for X in (A, B, C).
struct PtrSpec {
  const char* base;
  std::int64_t batch_stride, head_stride, head_div;
};

__global__ void pointers_kernel(const void** a, const void** b, const void** c, PtrSpec sa,
                                PtrSpec sb, PtrSpec sc, std::int64_t count, std::int64_t hq) {
  const std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x;
  if (i >= count) return;
  const std::int64_t bi = i / hq, h = i % hq;
  a[i] = sa.base + bi * sa.batch_stride + (h / sa.head_div) * sa.head_stride;
  b[i] = sb.base + bi * sb.batch_stride + (h / sb.head_div) * sb.head_stride;
  c[i] = sc.base + bi * sc.batch_stride + (h / sc.head_div) * sc.head_stride;
}

// Scores of item (bi, h) are [S,S] at (bi * hq + h) * S * S.
PtrSpec score_spec(const void* base, std::int64_t s, std::int64_t hq, std::size_t elem) {
  return {static_cast<const char*>(base), std::int64_t(hq * s * s * elem),
          std::int64_t(s * s * elem), 1};
}

// A [B,S,H,Dh] tensor (H = heads of this tensor); item (bi, h) reads head h / div.
PtrSpec head_spec(const void* base, std::int64_t s, std::int64_t heads, std::int64_t dh,
                  std::int64_t div, std::size_t elem) {
  return {static_cast<const char*>(base), std::int64_t(s * heads * dh * elem),
          std::int64_t(dh * elem), div};
}

bool aligned16(const PtrSpec& p) {
  return reinterpret_cast<std::uintptr_t>(p.base) % 16 == 0 && p.batch_stride % 16 == 0 &&
         p.head_stride % 16 == 0;
}

const char* item(const PtrSpec& p, std::int64_t i, std::int64_t hq) {
  return p.base + (i / hq) * p.batch_stride + ((i % hq) / p.head_div) * p.head_stride;
}

// `count` GEMMs of one shape whose operands PtrSpec locates. With every operand 16-byte aligned,
// one cublasGemmBatchedEx over device pointer arrays (built in `set`, 3 x count); otherwise (odd
// head sizes, as in the tiny test models) one GEMM per item, each planned for its own alignment.
void run_batched(Blas& blas, bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k,
                 float alpha, PtrSpec a, std::int64_t lda, PtrSpec b, std::int64_t ldb, float beta,
                 PtrSpec c, DType c_type, std::int64_t ldc, std::int64_t count, std::int64_t hq,
                 const void** set) {
  if (aligned16(a) && aligned16(b) && aligned16(c)) {
    pointers_kernel<<<grid_for(count, 128, std::int64_t{1} << 30), 128, 0, blas.stream()>>>(
        set, set + count, set + 2 * count, a, b, c, count, hq);
    CUDA_CHECK_LAUNCH();
    if (blas.gemm_batched(ta, tb, m, n, k, alpha, reinterpret_cast<const bf16* const*>(set), lda,
                          reinterpret_cast<const bf16* const*>(set + count), ldb, beta,
                          const_cast<void**>(set + 2 * count), c_type, ldc, count)) {
      return;
    }
    // cuBLAS refused the batched call: the same GEMMs one by one below.
  }
  for (std::int64_t i = 0; i < count; i++) {
    blas.gemm(ta, tb, m, n, k, alpha, reinterpret_cast<const bf16*>(item(a, i, hq)), lda,
              reinterpret_cast<const bf16*>(item(b, i, hq)), ldb, beta,
              const_cast<char*>(item(c, i, hq)), c_type, ldc);
  }
}

__device__ inline std::int64_t visible_from(std::int64_t i, std::int64_t window) {
  return window > 0 ? max(std::int64_t(0), i - window + 1) : 0;
}

// probs row = softmax over the visible keys [lo, i] of the (already scaled) scores row.
__global__ void masked_softmax_kernel(bf16* probs, const float* scores, std::int64_t rows,
                                      std::int64_t s, std::int64_t window) {
  const std::int64_t row = blockIdx.x * std::int64_t(kRowsPerBlock) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const std::int64_t i = row % s;
  const std::int64_t lo = visible_from(i, window);
  const float* x = scores + row * s;
  bf16* p = probs + row * s;
  float m = -INFINITY;
  for (std::int64_t j = lo + lane; j <= i; j += 32)
    m = fmaxf(m, x[j]);
  m = detail::warp_max(m);
  float sum = 0.f;
  for (std::int64_t j = lo + lane; j <= i; j += 32)
    sum += expf(x[j] - m);
  sum = detail::warp_sum(sum);
  const float inv = 1.f / sum;
  for (std::int64_t j = lane; j < s; j += 32) {
    const bool visible = j >= lo && j <= i;
    p[j] = __float2bfloat16_rn(visible ? expf(x[j] - m) * inv : 0.f);
  }
}

// dscores = p * (dp - sum_j p_j dp_j) over the visible keys, 0 elsewhere (p is 0 there).
__global__ void softmax_backward_kernel(bf16* dscores, const float* dprobs, const bf16* probs,
                                        std::int64_t rows, std::int64_t s) {
  const std::int64_t row = blockIdx.x * std::int64_t(kRowsPerBlock) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const float* dp = dprobs + row * s;
  const bf16* p = probs + row * s;
  bf16* ds = dscores + row * s;
  float dot = 0.f;
  for (std::int64_t j = lane; j < s; j += 32)
    dot += __bfloat162float(p[j]) * dp[j];
  dot = detail::warp_sum(dot);
  for (std::int64_t j = lane; j < s; j += 32) {
    const float pj = __bfloat162float(p[j]);
    ds[j] = __float2bfloat16_rn(pj * (dp[j] - dot));
  }
}

// out[B,S,Hkv,Dh] = sum over the group's query heads of partial[B,S,Hq,Dh].
__global__ void sum_groups_kernel(bf16* out, const float* partial, std::int64_t total,
                                  std::int64_t hkv, std::int64_t dh, std::int64_t group) {
  for (std::int64_t idx = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += std::int64_t(gridDim.x) * blockDim.x) {
    const std::int64_t c = idx % dh;
    const std::int64_t kvh = (idx / dh) % hkv;
    const std::int64_t token = idx / (dh * hkv);  // b * S + s
    const float* src = partial + (token * hkv * group + kvh * group) * dh + c;
    float sum = 0.f;
    for (std::int64_t j = 0; j < group; j++)
      sum += src[j * dh];
    out[idx] = __float2bfloat16_rn(sum);
  }
}

void check_attention(std::int64_t b, std::int64_t s, std::int64_t hq, std::int64_t hkv,
                     std::int64_t dh, const char* op) {
  check_sizes(b >= 0 && s >= 0, op, "negative batch or sequence length");
  check_sizes(hq > 0 && hkv > 0 && dh > 0, op, "heads and head_dim must be > 0");
  check_sizes(hq % hkv == 0, op,
              std::to_string(hq) + " query heads is not a multiple of " + std::to_string(hkv));
}

unsigned row_blocks(std::int64_t rows) {
  const std::int64_t blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
  check_sizes(blocks < (std::int64_t{1} << 31), "attention", "too many score rows");
  return unsigned(blocks);
}

}  // namespace

std::size_t attention_scratch_bytes(std::int64_t b, std::int64_t s, std::int64_t hq,
                                    std::int64_t dh) {
  const std::size_t score_elems = std::size_t(b * hq) * std::size_t(s) * std::size_t(s);
  return round_up(score_elems * sizeof(float)) + round_up(score_elems * sizeof(bf16)) +
         round_up(std::size_t(b * s * hq * dh) * sizeof(float)) +
         round_up(std::size_t(kPointerSets) * 3 * std::size_t(b * hq) * sizeof(void*));
}

void attention_forward(Blas& blas, bf16* out, bf16* probs, const bf16* q, const bf16* k,
                       const bf16* v, std::int64_t b, std::int64_t s, std::int64_t hq,
                       std::int64_t hkv, std::int64_t dh, std::int64_t window, void* scratch) {
  check_attention(b, s, hq, hkv, dh, "attention_forward");
  check_sizes(window >= 0, "attention_forward", "negative window");
  if (b == 0 || s == 0) return;
  cudaStream_t stream = blas.stream();
  const Scratch sc = carve(scratch, b, s, hq, dh);
  const std::int64_t count = b * hq, group = hq / hkv;
  const float scale = float(1.0 / std::sqrt(double(dh)));
  const void** set0 = sc.ptrs;
  const void** set1 = sc.ptrs + 3 * count;
  // scores = scale * q k^T : [S,Dh] x [S,Dh]^T per item.
  run_batched(blas, false, true, s, s, dh, scale, head_spec(q, s, hq, dh, 1, 2), hq * dh,
              head_spec(k, s, hkv, dh, group, 2), hkv * dh, 0.f, score_spec(sc.scores, s, hq, 4),
              DType::F32, s, count, hq, set0);
  masked_softmax_kernel<<<row_blocks(count * s), kThreads, 0, stream>>>(probs, sc.scores, count * s,
                                                                        s, window);
  CUDA_CHECK_LAUNCH();
  // out = probs v : [S,S] x [S,Dh].
  run_batched(blas, false, false, s, dh, s, 1.f, score_spec(probs, s, hq, 2), s,
              head_spec(v, s, hkv, dh, group, 2), hkv * dh, 0.f, head_spec(out, s, hq, dh, 1, 2),
              DType::BF16, hq * dh, count, hq, set1);
}

void attention_backward(Blas& blas, bf16* dq, bf16* dk, bf16* dv, const bf16* dout, const bf16* q,
                        const bf16* k, const bf16* v, const bf16* probs, std::int64_t b,
                        std::int64_t s, std::int64_t hq, std::int64_t hkv, std::int64_t dh,
                        void* scratch) {
  check_attention(b, s, hq, hkv, dh, "attention_backward");
  if (b == 0 || s == 0) return;
  cudaStream_t stream = blas.stream();
  const Scratch sc = carve(scratch, b, s, hq, dh);
  const std::int64_t count = b * hq, group = hq / hkv;
  const float scale = float(1.0 / std::sqrt(double(dh)));
  const void** set[kPointerSets];
  for (int i = 0; i < kPointerSets; i++)
    set[i] = sc.ptrs + std::int64_t(i) * 3 * count;
  const std::int64_t kv_total = b * s * hkv * dh;
  // dv (per query head) = probs^T dout : [S,S]^T x [S,Dh], then summed over the group.
  run_batched(blas, true, false, s, dh, s, 1.f, score_spec(probs, s, hq, 2), s,
              head_spec(dout, s, hq, dh, 1, 2), hq * dh, 0.f,
              head_spec(sc.partial, s, hq, dh, 1, 4), DType::F32, hq * dh, count, hq, set[0]);
  sum_groups_kernel<<<grid_for(kv_total, kThreads), kThreads, 0, stream>>>(dv, sc.partial, kv_total,
                                                                           hkv, dh, group);
  CUDA_CHECK_LAUNCH();
  // dprobs = dout v^T : [S,Dh] x [S,Dh]^T, into the fp32 score buffer.
  run_batched(blas, false, true, s, s, dh, 1.f, head_spec(dout, s, hq, dh, 1, 2), hq * dh,
              head_spec(v, s, hkv, dh, group, 2), hkv * dh, 0.f, score_spec(sc.scores, s, hq, 4),
              DType::F32, s, count, hq, set[1]);
  softmax_backward_kernel<<<row_blocks(count * s), kThreads, 0, stream>>>(sc.dscores, sc.scores,
                                                                          probs, count * s, s);
  CUDA_CHECK_LAUNCH();
  // dq = scale * dscores k : [S,S] x [S,Dh].
  run_batched(blas, false, false, s, dh, s, scale, score_spec(sc.dscores, s, hq, 2), s,
              head_spec(k, s, hkv, dh, group, 2), hkv * dh, 0.f, head_spec(dq, s, hq, dh, 1, 2),
              DType::BF16, hq * dh, count, hq, set[2]);
  // dk (per query head) = scale * dscores^T q, then summed over the group.
  run_batched(blas, true, false, s, dh, s, scale, score_spec(sc.dscores, s, hq, 2), s,
              head_spec(q, s, hq, dh, 1, 2), hq * dh, 0.f, head_spec(sc.partial, s, hq, dh, 1, 4),
              DType::F32, hq * dh, count, hq, set[3]);
  sum_groups_kernel<<<grid_for(kv_total, kThreads), kThreads, 0, stream>>>(dk, sc.partial, kv_total,
                                                                           hkv, dh, group);
  CUDA_CHECK_LAUNCH();
}

}  // namespace moetune::kernels::cuda
