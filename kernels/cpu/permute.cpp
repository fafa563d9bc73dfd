// Dispatch plan (counts, offsets, the slot <-> row maps) and the row gathers/scatters that use it.
// The gathers and scatters run over rows (or tokens) split across the kernel threads: each output
// row is written by one thread, so no reduction crosses threads.
#include "kernels/cpu/permute.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "kernels/cpu/parallel.hpp"
#include "kernels/cpu/vec_math.hpp"

namespace moetune::kernels::cpu {

namespace {

// Rows per chunk: at least ~16k values, so a chunk outweighs the pool's wake-up.
std::int64_t min_rows(std::int64_t d) {
  return std::max<std::int64_t>(1, (std::int64_t(1) << 14) / d);
}

}  // namespace

std::int64_t expert_capacity(std::int64_t n, std::int64_t e, std::int64_t k,
                             double capacity_factor) {
  MOETUNE_CHECK(n >= 0 && e > 0 && k > 0, "expert_capacity: need n >= 0, e > 0, k > 0");
  MOETUNE_CHECK(capacity_factor > 0, "expert_capacity: capacity_factor must be > 0");
  return static_cast<std::int64_t>(std::ceil(double(n * k) / double(e) * capacity_factor));
}

std::int64_t dispatch_plan(std::int64_t* counts, std::int64_t* offsets, std::int64_t* slot_row,
                           std::int64_t* row_slot, const std::int32_t* topk_idx, std::int64_t n,
                           std::int64_t e, std::int64_t k, std::int64_t capacity) {
  MOETUNE_CHECK(n >= 0 && e > 0 && k > 0, "dispatch_plan: need n >= 0, e > 0, k > 0");
  MOETUNE_CHECK(capacity >= 0, "dispatch_plan: negative capacity");
  MOETUNE_CHECK(counts && offsets, "dispatch_plan: null buffer");
  const std::int64_t slots = n * k;
  MOETUNE_CHECK(slots == 0 || (slot_row && row_slot && topk_idx), "dispatch_plan: null buffer");
  std::fill(counts, counts + e, 0);
  // Pass 1: count, marking dropped slots (-1) and kept ones (0) in slot_row.
  std::int64_t dropped = 0;
  for (std::int64_t s = 0; s < slots; s++) {
    const std::int32_t x = topk_idx[s];
    MOETUNE_CHECK(x >= 0 && x < e, "dispatch_plan: expert index " + std::to_string(x) +
                                       " outside [0, " + std::to_string(e) + ")");
    if (capacity > 0 && counts[x] >= capacity) {
      slot_row[s] = -1;
      dropped++;
    } else {
      slot_row[s] = 0;
      counts[x]++;
    }
  }
  offsets[0] = 0;
  for (std::int64_t x = 0; x < e; x++)
    offsets[x + 1] = offsets[x] + counts[x];
  // Pass 2: hand out rows in token order within each expert.
  std::vector<std::int64_t> next(offsets, offsets + e);  // [E] next free row
  std::fill(row_slot, row_slot + slots, -1);
  for (std::int64_t s = 0; s < slots; s++) {
    if (slot_row[s] < 0) continue;
    const std::int64_t r = next[topk_idx[s]]++;
    slot_row[s] = r;
    row_slot[r] = s;
  }
  return dropped;
}

template <typename T>
void permute_forward(T* out, const T* in, const std::int64_t* row_slot, std::int64_t rows,
                     std::int64_t k, std::int64_t d) {
  MOETUNE_CHECK(rows >= 0 && k > 0 && d > 0, "permute_forward: need rows >= 0, k > 0, d > 0");
  if (rows == 0) return;
  MOETUNE_CHECK(out && in && row_slot, "permute_forward: null buffer");
  parallel_for(rows, min_rows(d), [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t r = begin; r < end; r++) {
      MOETUNE_CHECK(row_slot[r] >= 0, "permute_forward: row " + std::to_string(r) + " has no slot");
      const T* src = in + (row_slot[r] / k) * d;  // [D]
      std::copy(src, src + d, out + r * d);
    }
  });
}

template <typename T>
void permute_backward(T* din, const T* dout, const std::int64_t* slot_row, std::int64_t n,
                      std::int64_t k, std::int64_t d) {
  MOETUNE_CHECK(n >= 0 && k > 0 && d > 0, "permute_backward: need n >= 0, k > 0, d > 0");
  if (n == 0) return;
  MOETUNE_CHECK(din && dout && slot_row, "permute_backward: null buffer");
  parallel_for(n, min_rows(d * k), [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t t = begin; t < end; t++) {
      T* dx = din + t * d;  // [D]
      std::fill(dx, dx + d, T(0));
      for (std::int64_t j = 0; j < k; j++) {
        const std::int64_t r = slot_row[t * k + j];
        if (r < 0) continue;
        const T* src = dout + r * d;
        for (std::int64_t c = 0; c < d; c++)
          dx[c] += src[c];
      }
    }
  });
}

template <typename T>
void unpermute_combine_forward(T* out, const T* expert_out, const T* topk_weight,
                               const std::int64_t* slot_row, std::int64_t n, std::int64_t k,
                               std::int64_t d) {
  MOETUNE_CHECK(n >= 0 && k > 0 && d > 0, "unpermute_combine_forward: need n >= 0, k > 0, d > 0");
  if (n == 0) return;
  MOETUNE_CHECK(out && topk_weight && slot_row, "unpermute_combine_forward: null buffer");
  parallel_for(n, min_rows(d * k), [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t t = begin; t < end; t++) {
      T* y = out + t * d;  // [D]
      std::fill(y, y + d, T(0));
      for (std::int64_t j = 0; j < k; j++) {
        const std::int64_t r = slot_row[t * k + j];
        if (r < 0) continue;
        MOETUNE_CHECK(expert_out != nullptr, "unpermute_combine_forward: null expert_out");
        const T w = topk_weight[t * k + j];
        const T* src = expert_out + r * d;  // [D]
        for (std::int64_t c = 0; c < d; c++)
          y[c] += w * src[c];
      }
    }
  });
}

template <typename T>
void unpermute_combine_backward(T* dexpert_out, T* dtopk_weight, const T* dout, const T* expert_out,
                                const T* topk_weight, const std::int64_t* slot_row, std::int64_t n,
                                std::int64_t k, std::int64_t d) {
  MOETUNE_CHECK(n >= 0 && k > 0 && d > 0, "unpermute_combine_backward: need n >= 0, k > 0, d > 0");
  if (n == 0) return;
  MOETUNE_CHECK(dtopk_weight && dout && topk_weight && slot_row,
                "unpermute_combine_backward: null buffer");
  parallel_for(n, min_rows(d * k), [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t t = begin; t < end; t++) {
      const T* dy = dout + t * d;  // [D]
      for (std::int64_t j = 0; j < k; j++) {
        const std::int64_t r = slot_row[t * k + j];
        if (r < 0) {
          dtopk_weight[t * k + j] = T(0);
          continue;
        }
        MOETUNE_CHECK(dexpert_out && expert_out, "unpermute_combine_backward: null expert buffer");
        const T w = topk_weight[t * k + j];
        const T* y = expert_out + r * d;  // [D]
        T* dy_row = dexpert_out + r * d;  // [D]
        dtopk_weight[t * k + j] = T(vec::dot(dy, y, d));
        for (std::int64_t c = 0; c < d; c++)
          dy_row[c] = w * dy[c];
      }
    }
  });
}

#define MOETUNE_INSTANTIATE_PERMUTE(T)                                                             \
  template void permute_forward<T>(T*, const T*, const std::int64_t*, std::int64_t, std::int64_t,  \
                                   std::int64_t);                                                  \
  template void permute_backward<T>(T*, const T*, const std::int64_t*, std::int64_t, std::int64_t, \
                                    std::int64_t);                                                 \
  template void unpermute_combine_forward<T>(T*, const T*, const T*, const std::int64_t*,          \
                                             std::int64_t, std::int64_t, std::int64_t);            \
  template void unpermute_combine_backward<T>(T*, T*, const T*, const T*, const T*,                \
                                              const std::int64_t*, std::int64_t, std::int64_t,     \
                                              std::int64_t);
MOETUNE_INSTANTIATE_PERMUTE(float)
MOETUNE_INSTANTIATE_PERMUTE(double)
#undef MOETUNE_INSTANTIATE_PERMUTE

}  // namespace moetune::kernels::cpu
