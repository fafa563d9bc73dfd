// Row-major GEMM on OpenBLAS (CBLAS): the one place the CPU kernels multiply matrices. Every other
// kernel that needs a matrix product calls this, so swapping the BLAS touches one file.
#pragma once

#include <cstdint>

namespace moetune::kernels::cpu {

// C[m,n] = alpha * op(A)[m,k] · op(B)[k,n] + beta * C[m,n], all row-major.
//   op(A) = A   : A stored [m,k], lda >= k      op(A) = A^T : A stored [k,m], lda >= m
//   op(B) = B   : B stored [k,n], ldb >= n      op(B) = B^T : B stored [n,k], ldb >= k
// ldc >= n. beta == 0 overwrites C without reading it. k == 0 gives C = beta * C.
template <typename T>
void gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, T alpha,
          const T* a, std::int64_t lda, const T* b, std::int64_t ldb, T beta, T* c,
          std::int64_t ldc);

// Checks gemm()'s sizes and leading dimensions as documented above (an internal error otherwise);
// both gemm() implementations (OpenBLAS and the reference loops) call it.
void check_gemm_shape(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k,
                      std::int64_t lda, std::int64_t ldb, std::int64_t ldc);

// While alive, BLAS runs each GEMM on one thread: for loops that already give every kernel thread
// its own small GEMMs (attention heads), where BLAS's own threads would only oversubscribe.
class SingleThreadedBlas {
 public:
  SingleThreadedBlas();
  ~SingleThreadedBlas();
  SingleThreadedBlas(const SingleThreadedBlas&) = delete;
  SingleThreadedBlas& operator=(const SingleThreadedBlas&) = delete;

 private:
  int saved_;
};

}  // namespace moetune::kernels::cpu
