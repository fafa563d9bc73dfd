// RoPE tables, forward rotation and its transpose (the backward), token rows split over the kernel
// threads.
#include "kernels/cpu/rope.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/error.hpp"
#include "kernels/cpu/parallel.hpp"

namespace moetune::kernels::cpu {

template <typename T>
void rope_table(T* cos_table, T* sin_table, std::int64_t max_positions, std::int64_t head_dim,
                double theta) {
  MOETUNE_CHECK(max_positions >= 0, "rope_table: negative max_positions");
  MOETUNE_CHECK(head_dim > 0 && head_dim % 2 == 0, "rope_table: head_dim must be even and > 0");
  MOETUNE_CHECK(theta > 0, "rope_table: theta must be > 0");
  if (max_positions == 0) return;
  MOETUNE_CHECK(cos_table && sin_table, "rope_table: null buffer");
  const std::int64_t half = head_dim / 2;
  for (std::int64_t p = 0; p < max_positions; p++) {
    for (std::int64_t i = 0; i < half; i++) {
      const double inv_freq = std::pow(theta, -double(2 * i) / double(head_dim));
      const double angle = double(p) * inv_freq;
      cos_table[p * half + i] = T(std::cos(angle));
      sin_table[p * half + i] = T(std::sin(angle));
    }
  }
}

namespace {

// Rotates every head vector by +angle (direction = 1) or -angle (direction = -1).
template <typename T>
void rope_rotate(T* out, const T* in, const T* cos_table, const T* sin_table,
                 std::int64_t table_positions, const std::int32_t* positions,
                 std::int64_t start_pos, std::int64_t b, std::int64_t s, std::int64_t h,
                 std::int64_t head_dim, T direction, const char* name) {
  const std::string op(name);
  MOETUNE_CHECK(b >= 0 && s >= 0 && h >= 0, op + ": negative size");
  MOETUNE_CHECK(head_dim > 0 && head_dim % 2 == 0, op + ": head_dim must be even and > 0");
  MOETUNE_CHECK(start_pos >= 0, op + ": negative start_pos");
  if (b == 0 || s == 0 || h == 0) return;
  MOETUNE_CHECK(out && in && cos_table && sin_table, op + ": null buffer");
  const std::int64_t half = head_dim / 2;
  // Token rows (batch x sequence) are independent; chunks of at least ~16k values.
  const std::int64_t min_tokens =
      std::max<std::int64_t>(1, (std::int64_t(1) << 14) / (h * head_dim));
  parallel_for(b * s, min_tokens, [&](std::int64_t token_begin, std::int64_t token_end) {
    for (std::int64_t token = token_begin; token < token_end; token++) {
      const std::int64_t si = token % s;
      const std::int64_t pos = positions ? std::int64_t(positions[token]) : start_pos + si;
      MOETUNE_CHECK(pos >= 0 && pos < table_positions, op + ": position " + std::to_string(pos) +
                                                           " outside the table of " +
                                                           std::to_string(table_positions));
      const T* cos_row = cos_table + pos * half;  // [Dh/2]
      const T* sin_row = sin_table + pos * half;  // [Dh/2]
      for (std::int64_t hi = 0; hi < h; hi++) {
        const std::int64_t base = (token * h + hi) * head_dim;
        const T* x = in + base;  // [Dh]
        T* y = out + base;       // [Dh]
        for (std::int64_t i = 0; i < half; i++) {
          const T x1 = x[i];
          const T x2 = x[i + half];
          const T c = cos_row[i];
          const T sn = direction * sin_row[i];
          y[i] = x1 * c - x2 * sn;
          y[i + half] = x2 * c + x1 * sn;
        }
      }
    }
  });
}

}  // namespace

template <typename T>
void rope_forward(T* out, const T* in, const T* cos_table, const T* sin_table,
                  std::int64_t table_positions, const std::int32_t* positions,
                  std::int64_t start_pos, std::int64_t b, std::int64_t s, std::int64_t h,
                  std::int64_t head_dim) {
  rope_rotate(out, in, cos_table, sin_table, table_positions, positions, start_pos, b, s, h,
              head_dim, T(1), "rope_forward");
}

template <typename T>
void rope_backward(T* din, const T* dout, const T* cos_table, const T* sin_table,
                   std::int64_t table_positions, const std::int32_t* positions,
                   std::int64_t start_pos, std::int64_t b, std::int64_t s, std::int64_t h,
                   std::int64_t head_dim) {
  rope_rotate(din, dout, cos_table, sin_table, table_positions, positions, start_pos, b, s, h,
              head_dim, T(-1), "rope_backward");
}

#define MOETUNE_INSTANTIATE_ROPE(T)                                                             \
  template void rope_table<T>(T*, T*, std::int64_t, std::int64_t, double);                      \
  template void rope_forward<T>(T*, const T*, const T*, const T*, std::int64_t,                 \
                                const std::int32_t*, std::int64_t, std::int64_t, std::int64_t,  \
                                std::int64_t, std::int64_t);                                    \
  template void rope_backward<T>(T*, const T*, const T*, const T*, std::int64_t,                \
                                 const std::int32_t*, std::int64_t, std::int64_t, std::int64_t, \
                                 std::int64_t, std::int64_t);
MOETUNE_INSTANTIATE_ROPE(float)
MOETUNE_INSTANTIATE_ROPE(double)
#undef MOETUNE_INSTANTIATE_ROPE

}  // namespace moetune::kernels::cpu
