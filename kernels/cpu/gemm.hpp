// Row-major GEMM on OpenBLAS (CBLAS): the one place the CPU kernels multiply matrices. Every other
// kernel that needs a matrix product calls this, so swapping the BLAS touches one file. OpenBLAS
// runs single-threaded; gemm() splits a large product into one BLAS call per kernel thread on the
// pool of parallel.hpp.
#pragma once

#include <cstdint>

namespace moetune::kernels::cpu {

// C[m,n] = alpha * op(A)[m,k] · op(B)[k,n] + beta * C[m,n], all row-major. Large products are split
// by rows or columns of C over the kernel threads (fixed for a thread count); inside a parallel_for
// body, or under SingleThreadedBlas, it is one BLAS call on the calling thread.
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

// While alive, gemm() on this thread runs every product as one BLAS call on this thread, unsplit:
// for callers that measure one core (moetune profile) or already give every thread its own GEMMs.
class SingleThreadedBlas {
 public:
  SingleThreadedBlas();
  ~SingleThreadedBlas();
  SingleThreadedBlas(const SingleThreadedBlas&) = delete;
  SingleThreadedBlas& operator=(const SingleThreadedBlas&) = delete;

 private:
  bool saved_;  // the enclosing scope's setting
};

}  // namespace moetune::kernels::cpu
