// gemm() without a BLAS: plain loops over rows split across the kernel threads, accumulating in
// double. Built only where OpenBLAS is missing (the GPU machine, whose CPU twins only check the
// CUDA kernels on small sizes); the CPU backend proper always multiplies on OpenBLAS.
#include <algorithm>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "kernels/cpu/gemm.hpp"
#include "kernels/cpu/parallel.hpp"

namespace moetune::kernels::cpu {

template <typename T>
void gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, T alpha,
          const T* a, std::int64_t lda, const T* b, std::int64_t ldb, T beta, T* c,
          std::int64_t ldc) {
  check_gemm_shape(trans_a, trans_b, m, n, k, lda, ldb, ldc);
  if (m == 0 || n == 0) return;
  MOETUNE_CHECK(c != nullptr, "gemm: C is null");
  MOETUNE_CHECK(k == 0 || (a != nullptr && b != nullptr), "gemm: A or B is null");
  parallel_for(m, 8, [&](std::int64_t begin, std::int64_t end) {
    std::vector<double> row(static_cast<std::size_t>(n));
    for (std::int64_t i = begin; i < end; i++) {
      std::fill(row.begin(), row.end(), 0.0);
      for (std::int64_t p = 0; p < k; p++) {
        const double av = double(trans_a ? a[p * lda + i] : a[i * lda + p]);
        if (av == 0.0) continue;
        for (std::int64_t j = 0; j < n; j++)
          row[static_cast<std::size_t>(j)] +=
              av * double(trans_b ? b[j * ldb + p] : b[p * ldb + j]);
      }
      T* ci = c + i * ldc;
      for (std::int64_t j = 0; j < n; j++) {
        const double prior = beta == T(0) ? 0.0 : double(beta) * double(ci[j]);
        ci[j] = T(double(alpha) * row[static_cast<std::size_t>(j)] + prior);
      }
    }
  });
}

template void gemm<float>(bool, bool, std::int64_t, std::int64_t, std::int64_t, float, const float*,
                          std::int64_t, const float*, std::int64_t, float, float*, std::int64_t);
template void gemm<double>(bool, bool, std::int64_t, std::int64_t, std::int64_t, double,
                           const double*, std::int64_t, const double*, std::int64_t, double,
                           double*, std::int64_t);

// No BLAS threads to pin.
SingleThreadedBlas::SingleThreadedBlas() : saved_(false) {}
SingleThreadedBlas::~SingleThreadedBlas() = default;

}  // namespace moetune::kernels::cpu
