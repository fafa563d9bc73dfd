// The CBLAS calls behind gemm(): sgemm for float, dgemm for double, with the argument checks CBLAS
// would otherwise report by printing and carrying on, and the split of a large product over the
// kernel threads. OpenBLAS is told once to use one thread: its own workers spin-wait between calls
// (issue #13 counted ~22,600 sched_yield per training step), taking the cores from the kernel
// threads' element-wise loops, and two threads gave only 1.24-1.31x of one on the 2-core machine.
#include "kernels/cpu/gemm.hpp"

#include <cblas.h>

#include <algorithm>
#include <climits>
#include <mutex>
#include <string>

#include "core/error.hpp"
#include "kernels/cpu/parallel.hpp"

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

// Set by SingleThreadedBlas: this thread's products run unsplit.
thread_local bool t_unsplit = false;

// Below this many multiply-adds a product runs as one call: a split costs a wake-up of the pool
// (microseconds) and two smaller BLAS calls each pack their own panels.
constexpr std::int64_t kMinSplitMacs = std::int64_t(1) << 21;
// Splits fall on multiples of this many rows or columns of C, a multiple of OpenBLAS's micro-tile
// edges (16 x 4 for sgemm on AVX-512), so no thread gets a ragged tile in the middle of C.
constexpr std::int64_t kSplitAlign = 32;
// A split product is cut into up to this many pieces per thread, taken by whichever thread is
// free: when another job takes a core, a thread preempted in the middle of its piece then holds up
// the product by a quarter of its share rather than all of it. Pieces keep at least
// kMinSplitSide rows or columns: each piece packs the whole of the other operand again, which
// costs about 1% of sgemm's rate per piece at 256 (measured on the build machine, 2048 x 512 x 512
// cut into 1 to 8 pieces: 98.3 to 97.3 GFLOP/s) and far more at 64.
constexpr std::int64_t kPiecesPerThread = 4;
constexpr std::int64_t kMinSplitSide = 256;

void use_one_blas_thread() {
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(1); });
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
  use_one_blas_thread();
  const CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans;
  const CBLAS_TRANSPOSE tb = trans_b ? CblasTrans : CblasNoTrans;
  // One BLAS call on rows [r0, r1) and columns [c0, c1) of C. Row r of op(A) starts at a + r * lda
  // (stored [m,k]) or a + r (stored [k,m]); column c of op(B) at b + c (stored [k,n]) or
  // b + c * ldb (stored [n,k]).
  auto block = [&](std::int64_t r0, std::int64_t r1, std::int64_t c0, std::int64_t c1) {
    const T* a_block = a + (trans_a ? r0 : r0 * lda);
    const T* b_block = b + (trans_b ? c0 * ldb : c0);
    call_blas(ta, tb, static_cast<int>(r1 - r0), static_cast<int>(c1 - c0), static_cast<int>(k),
              alpha, a_block, static_cast<int>(lda), b_block, static_cast<int>(ldb), beta,
              c + r0 * ldc + c0, static_cast<int>(ldc));
  };
  if (t_unsplit || in_parallel_region() || kernel_threads() == 1 ||
      double(m) * double(n) * double(k) < 2.0 * double(kMinSplitMacs)) {
    block(0, m, 0, n);
    return;
  }
  // Split the longer side of C: each piece then packs its own slice of that operand and the whole
  // of the other, smaller one. The pieces depend only on the shape and the thread count.
  const bool by_rows = m >= n;
  const std::int64_t side = by_rows ? m : n;
  const std::int64_t units = (side + kSplitAlign - 1) / kSplitAlign;
  const std::int64_t macs_per_unit = kSplitAlign * (by_rows ? n : m) * k;
  const std::int64_t min_units =
      std::max({std::int64_t(1), kMinSplitMacs / macs_per_unit, kMinSplitSide / kSplitAlign});
  const std::int64_t pieces =
      std::min(kPiecesPerThread * kernel_threads(), std::max<std::int64_t>(2, units / min_units));
  if (pieces > units) {
    block(0, m, 0, n);
    return;
  }
  parallel_tasks(pieces, [&](std::int64_t piece) {
    const std::int64_t lo = piece * units / pieces * kSplitAlign;
    const std::int64_t hi = std::min(side, (piece + 1) * units / pieces * kSplitAlign);
    if (by_rows) {
      block(lo, hi, 0, n);
    } else {
      block(0, m, lo, hi);
    }
  });
}

template void gemm<float>(bool, bool, std::int64_t, std::int64_t, std::int64_t, float, const float*,
                          std::int64_t, const float*, std::int64_t, float, float*, std::int64_t);
template void gemm<double>(bool, bool, std::int64_t, std::int64_t, std::int64_t, double,
                           const double*, std::int64_t, const double*, std::int64_t, double,
                           double*, std::int64_t);

SingleThreadedBlas::SingleThreadedBlas() : saved_(t_unsplit) {
  t_unsplit = true;
}

SingleThreadedBlas::~SingleThreadedBlas() {
  t_unsplit = saved_;
}

}  // namespace moetune::kernels::cpu
