// Attention forward and backward, one GEMM pair per (batch, query head). The GEMMs read q, k, v in
// their [B,S,H,Dh] layout through leading dimensions, so nothing is transposed or copied. The S x S
// products include the masked upper triangle: simple, and BLAS makes it cheap at the sizes the CPU
// backend trains.
#include "kernels/cpu/attention.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "kernels/cpu/gemm.hpp"
#include "kernels/cpu/parallel.hpp"

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

// Softmax over the visible keys [lo, i] of score row i (already scaled); zero elsewhere.
template <typename T>
void masked_softmax_row(T* row, std::int64_t s, std::int64_t i, std::int64_t window) {
  const std::int64_t lo = window > 0 ? std::max<std::int64_t>(0, i - window + 1) : 0;
  T max_score = row[lo];
  for (std::int64_t j = lo + 1; j <= i; j++)
    max_score = std::max(max_score, row[j]);
  double sum = 0;
  for (std::int64_t j = lo; j <= i; j++) {
    // exp in T (expf for float: within an ulp, and much faster); the sum in double.
    const T e = std::exp(row[j] - max_score);
    row[j] = e;
    sum += double(e);
  }
  const double inv = 1.0 / sum;
  for (std::int64_t j = 0; j < lo; j++)
    row[j] = T(0);
  for (std::int64_t j = lo; j <= i; j++)
    row[j] = T(double(row[j]) * inv);
  for (std::int64_t j = i + 1; j < s; j++)
    row[j] = T(0);
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
  // (batch, query head) pairs are independent: split them over the kernel threads.
  const SingleThreadedBlas one_blas_thread;
  parallel_for(b * hq, 1, [&](std::int64_t pair_begin, std::int64_t pair_end) {
    for (std::int64_t pair = pair_begin; pair < pair_end; pair++) {
      const std::int64_t bi = pair / hq, h = pair % hq;
      const std::int64_t kvh = h / group;
      const T* q_bh = q + bi * s * q_stride + h * dh;     // [S,Dh], row stride Hq*Dh
      const T* k_bh = k + bi * s * kv_stride + kvh * dh;  // [S,Dh], row stride Hkv*Dh
      const T* v_bh = v + bi * s * kv_stride + kvh * dh;  // [S,Dh], row stride Hkv*Dh
      T* out_bh = out + bi * s * q_stride + h * dh;       // [S,Dh], row stride Hq*Dh
      T* att_bh = att + (bi * hq + h) * s * s;            // [S,S]
      // scores = scale * q k^T
      gemm<T>(false, true, s, s, dh, scale, q_bh, q_stride, k_bh, kv_stride, T(0), att_bh, s);
      for (std::int64_t i = 0; i < s; i++)
        masked_softmax_row(att_bh + i * s, s, i, window);
      // out = att v
      gemm<T>(false, false, s, dh, s, T(1), att_bh, s, v_bh, kv_stride, T(0), out_bh, q_stride);
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
  // (batch, kv head) groups are independent (dk, dv sum over a group's query heads): split them
  // over the kernel threads, each with its own scratch.
  const SingleThreadedBlas one_blas_thread;
  parallel_for(b * hkv, 1, [&](std::int64_t group_begin, std::int64_t group_end) {
    std::vector<T> dscores(static_cast<std::size_t>(s * s));  // [S,S]: d(att), then d(scores)
    for (std::int64_t pair = group_begin * group; pair < group_end * group; pair++) {
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
      // dv += att^T dout ; datt = dout v^T
      gemm<T>(true, false, s, dh, s, T(1), att_bh, s, dout_bh, q_stride, T(1), dv_bh, kv_stride);
      gemm<T>(false, true, s, s, dh, T(1), dout_bh, q_stride, v_bh, kv_stride, T(0), dscores.data(),
              s);
      // Softmax backward per row; masked entries have att == 0 and get 0.
      for (std::int64_t i = 0; i < s; i++) {
        const T* p = att_bh + i * s;
        T* d = dscores.data() + i * s;
        double dot = 0;
        for (std::int64_t j = 0; j <= i; j++)
          dot += double(p[j]) * double(d[j]);
        for (std::int64_t j = 0; j <= i; j++)
          d[j] = T(double(p[j]) * (double(d[j]) - dot));
        for (std::int64_t j = i + 1; j < s; j++)
          d[j] = T(0);
      }
      // dq = scale * dscores k ; dk += scale * dscores^T q
      gemm<T>(false, false, s, dh, s, scale, dscores.data(), s, k_bh, kv_stride, T(0), dq_bh,
              q_stride);
      gemm<T>(true, false, s, dh, s, scale, dscores.data(), s, q_bh, q_stride, T(1), dk_bh,
              kv_stride);
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
