// Fused attention, one warp per query row. Lane l holds elements l, l + 32, ... of the row's
// vectors (at most kPerLane of them); a dot product is a per-lane partial sum and a warp sum.
#include <cmath>
#include <string>

#include "kernels/cuda/flash_attention.cuh"
#include "kernels/cuda/reduce.cuh"

namespace moetune::kernels::cuda {

namespace {

constexpr int kWarps = 8;  // query rows per block
constexpr int kPerLane = int(kFlashMaxHeadDim / 32);

struct Dims {
  std::int64_t b, s, hq, hkv, dh, window, group;
  float scale;
};

__device__ inline std::int64_t first_key(std::int64_t i, std::int64_t window) {
  return window > 0 ? max(std::int64_t(0), i - window + 1) : 0;
}

// Loads elements lane + 32 t of a bf16 row into fp32 registers (0 past dh).
__device__ inline void load_row(float (&x)[kPerLane], const bf16* row, std::int64_t dh, int lane) {
#pragma unroll
  for (int t = 0; t < kPerLane; t++) {
    const std::int64_t c = lane + 32 * t;
    x[t] = c < dh ? __bfloat162float(row[c]) : 0.f;
  }
}

__device__ inline float dot_row(const float (&x)[kPerLane], const bf16* row, std::int64_t dh,
                                int lane) {
  float partial = 0.f;
#pragma unroll
  for (int t = 0; t < kPerLane; t++) {
    const std::int64_t c = lane + 32 * t;
    if (c < dh) partial += x[t] * __bfloat162float(row[c]);
  }
  return detail::warp_sum(partial);
}

__global__ void flash_forward_kernel(bf16* out, float* lse, const bf16* q, const bf16* k,
                                     const bf16* v, Dims d) {
  const int lane = threadIdx.x & 31;
  const std::int64_t i = blockIdx.x * std::int64_t(kWarps) + (threadIdx.x >> 5);
  if (i >= d.s) return;  // whole warps
  const std::int64_t bh = blockIdx.y, bi = bh / d.hq, h = bh % d.hq, kvh = h / d.group;
  const bf16* q_row = q + ((bi * d.s + i) * d.hq + h) * d.dh;
  float qv[kPerLane], acc[kPerLane];
  load_row(qv, q_row, d.dh, lane);
#pragma unroll
  for (int t = 0; t < kPerLane; t++)
    acc[t] = 0.f;
  float m = -INFINITY, l = 0.f;
  for (std::int64_t j = first_key(i, d.window); j <= i; j++) {
    const std::int64_t kv_row = ((bi * d.s + j) * d.hkv + kvh) * d.dh;
    const float score = dot_row(qv, k + kv_row, d.dh, lane) * d.scale;
    const float m_new = fmaxf(m, score);
    const float rescale = expf(m - m_new);  // 0 on the first key (m = -inf)
    const float p = expf(score - m_new);
    l = l * rescale + p;
#pragma unroll
    for (int t = 0; t < kPerLane; t++) {
      const std::int64_t c = lane + 32 * t;
      const float vc = c < d.dh ? __bfloat162float(v[kv_row + c]) : 0.f;
      acc[t] = acc[t] * rescale + p * vc;
    }
    m = m_new;
  }
  bf16* o_row = out + ((bi * d.s + i) * d.hq + h) * d.dh;
  const float inv = 1.f / l;
#pragma unroll
  for (int t = 0; t < kPerLane; t++) {
    const std::int64_t c = lane + 32 * t;
    if (c < d.dh) o_row[c] = __float2bfloat16_rn(acc[t] * inv);
  }
  if (lane == 0) lse[bh * d.s + i] = m + logf(l);
}

// Per query row: D = dout . out; for each visible key j, p = exp(score - lse), ds = p (dout.v_j -
// D); dq += scale ds k_j (registers); dk_j += scale ds q, dv_j += p dout (fp32 atomics).
__global__ void flash_backward_kernel(bf16* dq, float* dk_acc, float* dv_acc, const bf16* dout,
                                      const bf16* q, const bf16* k, const bf16* v, const bf16* out,
                                      const float* lse, Dims d) {
  const int lane = threadIdx.x & 31;
  const std::int64_t i = blockIdx.x * std::int64_t(kWarps) + (threadIdx.x >> 5);
  if (i >= d.s) return;
  const std::int64_t bh = blockIdx.y, bi = bh / d.hq, h = bh % d.hq, kvh = h / d.group;
  const std::int64_t q_off = ((bi * d.s + i) * d.hq + h) * d.dh;
  float qv[kPerLane], dov[kPerLane], dqv[kPerLane];
  load_row(qv, q + q_off, d.dh, lane);
  load_row(dov, dout + q_off, d.dh, lane);
  const float big_d = dot_row(dov, out + q_off, d.dh, lane);
  const float row_lse = lse[bh * d.s + i];
#pragma unroll
  for (int t = 0; t < kPerLane; t++)
    dqv[t] = 0.f;
  for (std::int64_t j = first_key(i, d.window); j <= i; j++) {
    const std::int64_t kv_row = ((bi * d.s + j) * d.hkv + kvh) * d.dh;
    const float p = expf(dot_row(qv, k + kv_row, d.dh, lane) * d.scale - row_lse);
    const float dp = dot_row(dov, v + kv_row, d.dh, lane);
    const float ds = p * (dp - big_d) * d.scale;
#pragma unroll
    for (int t = 0; t < kPerLane; t++) {
      const std::int64_t c = lane + 32 * t;
      if (c < d.dh) {
        dqv[t] += ds * __bfloat162float(k[kv_row + c]);
        atomicAdd(dk_acc + kv_row + c, ds * qv[t]);
        atomicAdd(dv_acc + kv_row + c, p * dov[t]);
      }
    }
  }
#pragma unroll
  for (int t = 0; t < kPerLane; t++) {
    const std::int64_t c = lane + 32 * t;
    if (c < d.dh) dq[q_off + c] = __float2bfloat16_rn(dqv[t]);
  }
}

__global__ void to_bf16_kernel(bf16* out, const float* in, std::int64_t n) {
  for (std::int64_t idx = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; idx < n;
       idx += std::int64_t(gridDim.x) * blockDim.x)
    out[idx] = __float2bfloat16_rn(in[idx]);
}

Dims check_flash(std::int64_t b, std::int64_t s, std::int64_t hq, std::int64_t hkv, std::int64_t dh,
                 std::int64_t window, const char* op) {
  check_sizes(b >= 0 && s >= 0 && window >= 0, op, "negative batch, sequence or window");
  check_sizes(hq > 0 && hkv > 0 && dh > 0 && hq % hkv == 0, op,
              "need heads > 0 and query heads a multiple of kv heads");
  check_sizes(dh <= kFlashMaxHeadDim, op,
              "head_dim " + std::to_string(dh) + " above " + std::to_string(kFlashMaxHeadDim));
  check_sizes(b * hq <= 65535, op, "batch x heads above the grid's 65535");
  return {b, s, hq, hkv, dh, window, hq / hkv, float(1.0 / std::sqrt(double(dh)))};
}

dim3 flash_grid(const Dims& d) {
  return dim3(unsigned((d.s + kWarps - 1) / kWarps), unsigned(d.b * d.hq));
}

}  // namespace

void flash_attention_forward(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v,
                             std::int64_t b, std::int64_t s, std::int64_t hq, std::int64_t hkv,
                             std::int64_t dh, std::int64_t window, cudaStream_t stream) {
  const Dims d = check_flash(b, s, hq, hkv, dh, window, "flash_attention_forward");
  if (b == 0 || s == 0) return;
  flash_forward_kernel<<<flash_grid(d), 32 * kWarps, 0, stream>>>(out, lse, q, k, v, d);
  CUDA_CHECK_LAUNCH();
}

std::size_t flash_attention_scratch_bytes(std::int64_t b, std::int64_t s, std::int64_t hkv,
                                          std::int64_t dh) {
  return 2 * std::size_t(b * s * hkv * dh) * sizeof(float);
}

void flash_attention_backward(bf16* dq, bf16* dk, bf16* dv, const bf16* dout, const bf16* q,
                              const bf16* k, const bf16* v, const bf16* out, const float* lse,
                              std::int64_t b, std::int64_t s, std::int64_t hq, std::int64_t hkv,
                              std::int64_t dh, std::int64_t window, void* scratch,
                              cudaStream_t stream) {
  const Dims d = check_flash(b, s, hq, hkv, dh, window, "flash_attention_backward");
  if (b == 0 || s == 0) return;
  const std::int64_t kv = b * s * hkv * dh;
  float* dk_acc = static_cast<float*>(scratch);
  float* dv_acc = dk_acc + kv;
  CUDA_CHECK(cudaMemsetAsync(scratch, 0, flash_attention_scratch_bytes(b, s, hkv, dh), stream));
  flash_backward_kernel<<<flash_grid(d), 32 * kWarps, 0, stream>>>(dq, dk_acc, dv_acc, dout, q, k,
                                                                   v, out, lse, d);
  CUDA_CHECK_LAUNCH();
  to_bf16_kernel<<<grid_for(kv, 256), 256, 0, stream>>>(dk, dk_acc, kv);
  CUDA_CHECK_LAUNCH();
  to_bf16_kernel<<<grid_for(kv, 256), 256, 0, stream>>>(dv, dv_acc, kv);
  CUDA_CHECK_LAUNCH();
}

}  // namespace moetune::kernels::cuda
