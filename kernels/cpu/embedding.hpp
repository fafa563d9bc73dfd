// Token embedding lookup (forward: gather rows; backward: scatter-add into the table's gradient).
#pragma once

#include <cstdint>

namespace moetune::kernels::cpu {

// out[N,D] = table[tokens[n], :]; table[V,D]; every token in [0, V).
template <typename T>
void embedding_forward(T* out, const T* table, const std::int32_t* tokens, std::int64_t n,
                       std::int64_t v, std::int64_t d);

// dtable[V,D] += dout[n,:] at row tokens[n] (repeated tokens add up).
template <typename T>
void embedding_backward(T* dtable, const T* dout, const std::int32_t* tokens, std::int64_t n,
                        std::int64_t v, std::int64_t d);

}  // namespace moetune::kernels::cpu
