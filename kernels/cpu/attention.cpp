// Attention forward and backward per (batch, query head), in blocks of query rows. The GEMMs read
// q, k, v in their [B,S,H,Dh] layout through leading dimensions, so nothing is transposed or
// copied. A block of rows [r0, r1) multiplies only against keys [0, r1), which skips most of the
// masked upper triangle of the S x S products (at S = 256, 10/16 of the full products remain)
// while each GEMM stays large enough for BLAS to run near its peak.
#include "kernels/cpu/attention.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "kernels/cpu/gemm.hpp"
#include "kernels/cpu/parallel.hpp"
#include "kernels/cpu/vec_math.hpp"

namespace moetune::kernels::cpu {

namespace {

void check_attention_sizes(std::int64_t b, std::int64_t s, std::int64_t hq, std::int64_t hkv,
                           std::int64_t dh, const char* op) {
  const std::string name(op);
  MOETUNE_CHECK(b >= 0 && s >= 0, name + ": negative batch or sequence length");
  MOETUNE_CHECK(hq > 0 && hkv > 0 && dh > 0, name + ": heads and head_dim must be > 0");
  MOETUNE_CHECK(hq % hkv == 0, name + ": " + std::to_string(hq) +
                                   " query heads is not a multiple of " + std::to_string(hkv) +
                                   " kv heads");
}

// Softmax over the visible keys [lo, i] of score row i (already scaled); zero elsewhere. exp in T
// (vec_math's for float), the sum in double.
template <typename T>
void masked_softmax_row(T* row, std::int64_t s, std::int64_t i, std::int64_t window) {
  const std::int64_t lo = window > 0 ? std::max<std::int64_t>(0, i - window + 1) : 0;
  T* visible = row + lo;  // [i - lo + 1]
  const std::int64_t count = i - lo + 1;
  const T max_score = vec::max(visible, count);
  const T inv = T(1.0 / vec::exp_shifted(visible, visible, count, max_score));
  for (std::int64_t j = 0; j < count; j++)
    visible[j] *= inv;
  std::fill(row, row + lo, T(0));
  std::fill(row + i + 1, row + s, T(0));
}

// Query rows per block (see the top of the file).
constexpr std::int64_t kQueryBlock = 64;

// Softmax backward of row i in place: d[j] = p[j] (d[j] - sum_l p[l] d[l]) on the visible keys,
// which are where p is non-zero, so [0, i] covers them; 0 on (i, end).
template <typename T>
void softmax_backward_row(T* d, const T* p, std::int64_t i, std::int64_t end) {
  const T dot = T(vec::dot(p, d, i + 1));
  for (std::int64_t j = 0; j <= i; j++)
    d[j] = p[j] * (d[j] - dot);
  std::fill(d + i + 1, d + end, T(0));
}

// The backward's block of d(scores) rows, one per thread, kept between calls: no allocation per
// step.
template <typename T>
T* dscores_scratch(std::int64_t size) {
  thread_local std::vector<T> scratch;
  if (scratch.size() < static_cast<std::size_t>(size))
    scratch.resize(static_cast<std::size_t>(size));
  return scratch.data();
}

}  // namespace

template <typename T>
void attention_forward(T* out, T* att, const T* q, const T* k, const T* v, std::int64_t b,
                       std::int64_t s, std::int64_t hq, std::int64_t hkv, std::int64_t dh,
                       std::int64_t window) {
  check_attention_sizes(b, s, hq, hkv, dh, "attention_forward");
  MOETUNE_CHECK(window >= 0, "attention_forward: negative window");
  if (b == 0 || s == 0) return;
  MOETUNE_CHECK(out && att && q && k && v, "attention_forward: null buffer");
  const std::int64_t group = hq / hkv;  // query heads per kv head
  const std::int64_t q_stride = hq * dh;
  const std::int64_t kv_stride = hkv * dh;
  const T scale = T(1.0 / std::sqrt(double(dh)));
  // (batch, query head) pairs are independent: each is a task on the kernel threads (so a thread
  // that loses its core for a while does not hold up half of them), its GEMMs one BLAS call on
  // its thread.
  parallel_tasks(b * hq, [&](std::int64_t pair) {
    const std::int64_t bi = pair / hq, h = pair % hq;
    const std::int64_t kvh = h / group;
    const T* q_bh = q + bi * s * q_stride + h * dh;     // [S,Dh], row stride Hq*Dh
    const T* k_bh = k + bi * s * kv_stride + kvh * dh;  // [S,Dh], row stride Hkv*Dh
    const T* v_bh = v + bi * s * kv_stride + kvh * dh;  // [S,Dh], row stride Hkv*Dh
    T* out_bh = out + bi * s * q_stride + h * dh;       // [S,Dh], row stride Hq*Dh
    T* att_bh = att + (bi * hq + h) * s * s;            // [S,S]
    for (std::int64_t r0 = 0; r0 < s; r0 += kQueryBlock) {
      const std::int64_t r1 = std::min(s, r0 + kQueryBlock), rows = r1 - r0;
      T* att_rows = att_bh + r0 * s;  // [rows, S]; keys [0, r1) computed here
      // scores = scale * q k^T
      gemm<T>(false, true, rows, r1, dh, scale, q_bh + r0 * q_stride, q_stride, k_bh, kv_stride,
              T(0), att_rows, s);
      for (std::int64_t i = r0; i < r1; i++)
        masked_softmax_row(att_bh + i * s, s, i, window);
      // out = att v
      gemm<T>(false, false, rows, dh, r1, T(1), att_rows, s, v_bh, kv_stride, T(0),
              out_bh + r0 * q_stride, q_stride);
    }
  });
}

template <typename T>
void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v,
                        const T* att, std::int64_t b, std::int64_t s, std::int64_t hq,
                        std::int64_t hkv, std::int64_t dh) {
  check_attention_sizes(b, s, hq, hkv, dh, "attention_backward");
  if (b == 0 || s == 0) return;
  MOETUNE_CHECK(dq && dk && dv && dout && q && k && v && att, "attention_backward: null buffer");
  const std::int64_t group = hq / hkv;
  const std::int64_t q_stride = hq * dh;
  const std::int64_t kv_stride = hkv * dh;
  const T scale = T(1.0 / std::sqrt(double(dh)));
  std::fill(dk, dk + b * s * kv_stride, T(0));
  std::fill(dv, dv + b * s * kv_stride, T(0));
  // (batch, kv head) groups are independent (dk, dv sum over a group's query heads): each is a task
  // on the kernel threads, with its thread's scratch.
  parallel_tasks(b * hkv, [&](std::int64_t kv_group) {
    T* dscores = dscores_scratch<T>(kQueryBlock * s);  // [block rows, S]: d(att), then d(scores)
    for (std::int64_t pair = kv_group * group; pair < (kv_group + 1) * group; pair++) {
      const std::int64_t bi = pair / hq, h = pair % hq;
      const std::int64_t kvh = h / group;
      const T* q_bh = q + bi * s * q_stride + h * dh;
      const T* k_bh = k + bi * s * kv_stride + kvh * dh;
      const T* v_bh = v + bi * s * kv_stride + kvh * dh;
      const T* dout_bh = dout + bi * s * q_stride + h * dh;
      const T* att_bh = att + (bi * hq + h) * s * s;
      T* dq_bh = dq + bi * s * q_stride + h * dh;
      T* dk_bh = dk + bi * s * kv_stride + kvh * dh;
      T* dv_bh = dv + bi * s * kv_stride + kvh * dh;
      for (std::int64_t r0 = 0; r0 < s; r0 += kQueryBlock) {
        const std::int64_t r1 = std::min(s, r0 + kQueryBlock), rows = r1 - r0;
        const T* att_rows = att_bh + r0 * s;  // [rows, S], zero beyond each row's query
        const T* dout_rows = dout_bh + r0 * q_stride;
        const T* q_rows = q_bh + r0 * q_stride;
        // dv[0:r1] += att^T dout ; datt = dout v[0:r1]^T
        gemm<T>(true, false, r1, dh, rows, T(1), att_rows, s, dout_rows, q_stride, T(1), dv_bh,
                kv_stride);
        gemm<T>(false, true, rows, r1, dh, T(1), dout_rows, q_stride, v_bh, kv_stride, T(0),
                dscores, s);
        // Softmax backward per row; masked entries have att == 0 and get 0.
        for (std::int64_t i = r0; i < r1; i++)
          softmax_backward_row(dscores + (i - r0) * s, att_bh + i * s, i, r1);
        // dq = scale * dscores k[0:r1] ; dk[0:r1] += scale * dscores^T q
        gemm<T>(false, false, rows, dh, r1, scale, dscores, s, k_bh, kv_stride, T(0),
                dq_bh + r0 * q_stride, q_stride);
        gemm<T>(true, false, r1, dh, rows, scale, dscores, s, q_rows, q_stride, T(1), dk_bh,
                kv_stride);
      }
    }
  });
}

#define MOETUNE_INSTANTIATE_ATTENTION(T)                                                     \
  template void attention_forward<T>(T*, T*, const T*, const T*, const T*, std::int64_t,     \
                                     std::int64_t, std::int64_t, std::int64_t, std::int64_t, \
                                     std::int64_t);                                          \
  template void attention_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*,    \
                                      const T*, std::int64_t, std::int64_t, std::int64_t,    \
                                      std::int64_t, std::int64_t);
MOETUNE_INSTANTIATE_ATTENTION(float)
MOETUNE_INSTANTIATE_ATTENTION(double)
#undef MOETUNE_INSTANTIATE_ATTENTION

}  // namespace moetune::kernels::cpu
