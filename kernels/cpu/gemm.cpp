// The CBLAS calls behind gemm(): sgemm for float, dgemm for double, with the argument checks CBLAS
// would otherwise report by printing and carrying on.
#include "kernels/cpu/gemm.hpp"

#include <cblas.h>

#include <algorithm>
#include <climits>
#include <string>

#include "core/error.hpp"

namespace moetune::kernels::cpu {

namespace {

void check_gemm_args(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k,
                     std::int64_t lda, std::int64_t ldb, std::int64_t ldc) {
  check_gemm_shape(trans_a, trans_b, m, n, k, lda, ldb, ldc);
  // OpenBLAS here is built with 32-bit integers; larger problems must be split by the caller.
  MOETUNE_CHECK(m <= INT_MAX && n <= INT_MAX && k <= INT_MAX, "gemm: size exceeds the BLAS int");
  MOETUNE_CHECK(lda <= INT_MAX && ldb <= INT_MAX && ldc <= INT_MAX,
                "gemm: leading dimension exceeds the BLAS int");
}

// C = beta * C for the k == 0 case, which CBLAS implementations disagree about.
template <typename T>
void scale_c(std::int64_t m, std::int64_t n, T beta, T* c, std::int64_t ldc) {
  for (std::int64_t i = 0; i < m; i++) {
    T* row = c + i * ldc;
    for (std::int64_t j = 0; j < n; j++)
      row[j] = beta == T(0) ? T(0) : beta * row[j];
  }
}

void call_blas(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, float alpha,
               const float* a, int lda, const float* b, int ldb, float beta, float* c, int ldc) {
  cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void call_blas(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, double alpha,
               const double* a, int lda, const double* b, int ldb, double beta, double* c,
               int ldc) {
  cblas_dgemm(CblasRowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

}  // namespace

template <typename T>
void gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, T alpha,
          const T* a, std::int64_t lda, const T* b, std::int64_t ldb, T beta, T* c,
          std::int64_t ldc) {
  check_gemm_args(trans_a, trans_b, m, n, k, lda, ldb, ldc);
  if (m == 0 || n == 0) return;
  MOETUNE_CHECK(c != nullptr, "gemm: C is null");
  if (k == 0) {
    scale_c(m, n, beta, c, ldc);
    return;
  }
  MOETUNE_CHECK(a != nullptr && b != nullptr, "gemm: A or B is null");
  call_blas(trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
            static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), alpha, a,
            static_cast<int>(lda), b, static_cast<int>(ldb), beta, c, static_cast<int>(ldc));
}

template void gemm<float>(bool, bool, std::int64_t, std::int64_t, std::int64_t, float, const float*,
                          std::int64_t, const float*, std::int64_t, float, float*, std::int64_t);
template void gemm<double>(bool, bool, std::int64_t, std::int64_t, std::int64_t, double,
                           const double*, std::int64_t, const double*, std::int64_t, double,
                           double*, std::int64_t);

SingleThreadedBlas::SingleThreadedBlas() : saved_(openblas_get_num_threads()) {
  openblas_set_num_threads(1);
}

SingleThreadedBlas::~SingleThreadedBlas() {
  openblas_set_num_threads(saved_);
}

}  // namespace moetune::kernels::cpu
