// gemm()'s argument checks, shared by the OpenBLAS and the reference implementation.
#include <algorithm>
#include <string>

#include "core/error.hpp"
#include "kernels/cpu/gemm.hpp"

namespace moetune::kernels::cpu {

void check_gemm_shape(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k,
                      std::int64_t lda, std::int64_t ldb, std::int64_t ldc) {
  MOETUNE_CHECK(m >= 0 && n >= 0 && k >= 0, "gemm: negative size");
  const std::int64_t a_cols = trans_a ? m : k;
  const std::int64_t b_cols = trans_b ? k : n;
  MOETUNE_CHECK(lda >= std::max<std::int64_t>(1, a_cols),
                "gemm: lda " + std::to_string(lda) + " < " + std::to_string(a_cols));
  MOETUNE_CHECK(ldb >= std::max<std::int64_t>(1, b_cols),
                "gemm: ldb " + std::to_string(ldb) + " < " + std::to_string(b_cols));
  MOETUNE_CHECK(ldc >= std::max<std::int64_t>(1, n),
                "gemm: ldc " + std::to_string(ldc) + " < " + std::to_string(n));
}

}  // namespace moetune::kernels::cpu
