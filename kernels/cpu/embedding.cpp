// Embedding gather and scatter-add on the kernel threads: the gather splits tokens, the scatter-add
// splits the columns (a repeated token adds into the same table row, so splitting tokens would
// race).
#include "kernels/cpu/embedding.hpp"

#include <algorithm>
#include <string>

#include "core/error.hpp"
#include "kernels/cpu/parallel.hpp"

namespace moetune::kernels::cpu {

namespace {

void check_token(std::int32_t token, std::int64_t v, std::int64_t row, const char* op) {
  MOETUNE_CHECK(token >= 0 && token < v, std::string(op) + ": token " + std::to_string(token) +
                                             " at row " + std::to_string(row) + " outside [0, " +
                                             std::to_string(v) + ")");
}

}  // namespace

template <typename T>
void embedding_forward(T* out, const T* table, const std::int32_t* tokens, std::int64_t n,
                       std::int64_t v, std::int64_t d) {
  MOETUNE_CHECK(n >= 0 && v > 0 && d > 0, "embedding_forward: need n >= 0, v > 0, d > 0");
  if (n == 0) return;
  MOETUNE_CHECK(out && table && tokens, "embedding_forward: null buffer");
  for (std::int64_t i = 0; i < n; i++)
    check_token(tokens[i], v, i, "embedding_forward");
  const std::int64_t min_tokens = std::max<std::int64_t>(1, (std::int64_t(1) << 14) / d);
  parallel_for(n, min_tokens, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; i++) {
      const T* row = table + std::int64_t(tokens[i]) * d;  // [D]
      std::copy(row, row + d, out + i * d);
    }
  });
}

template <typename T>
void embedding_backward(T* dtable, const T* dout, const std::int32_t* tokens, std::int64_t n,
                        std::int64_t v, std::int64_t d) {
  MOETUNE_CHECK(n >= 0 && v > 0 && d > 0, "embedding_backward: need n >= 0, v > 0, d > 0");
  if (n == 0) return;
  MOETUNE_CHECK(dtable && dout && tokens, "embedding_backward: null buffer");
  for (std::int64_t i = 0; i < n; i++)
    check_token(tokens[i], v, i, "embedding_backward");
  // Columns of at least 64 values per chunk, and every chunk adds the tokens in token order.
  parallel_for(d,
               std::min<std::int64_t>(d, std::max<std::int64_t>(64, (std::int64_t(1) << 14) / n)),
               [&](std::int64_t col_begin, std::int64_t col_end) {
                 for (std::int64_t i = 0; i < n; i++) {
                   T* row = dtable + std::int64_t(tokens[i]) * d;  // [D]
                   const T* g = dout + i * d;                      // [D]
                   for (std::int64_t j = col_begin; j < col_end; j++)
                     row[j] += g[j];
                 }
               });
}

template void embedding_forward<float>(float*, const float*, const std::int32_t*, std::int64_t,
                                       std::int64_t, std::int64_t);
template void embedding_forward<double>(double*, const double*, const std::int32_t*, std::int64_t,
                                        std::int64_t, std::int64_t);
template void embedding_backward<float>(float*, const float*, const std::int32_t*, std::int64_t,
                                        std::int64_t, std::int64_t);
template void embedding_backward<double>(double*, const double*, const std::int32_t*, std::int64_t,
                                         std::int64_t, std::int64_t);

}  // namespace moetune::kernels::cpu
