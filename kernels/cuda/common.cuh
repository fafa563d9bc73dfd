// What every CUDA op shares: the bf16 type, error checks that throw with file:line (CUDA_CHECK,
// CUBLAS_CHECK; NCCL_CHECK lives with the NCCL communicator), and launch-size helpers. Launchers
// are host functions over device pointers that enqueue on the given stream and never synchronise.
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace moetune::kernels::cuda {

using bf16 = __nv_bfloat16;

// A failed CUDA runtime or cuBLAS call: what was called, the library's message, file:line.
class CudaError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

void check_cuda(cudaError_t status, const char* expr, const char* file, int line);
void check_cublas(cublasStatus_t status, const char* expr, const char* file, int line);
const char* cublas_status_name(cublasStatus_t status);

// Blocks of `threads` covering n items, capped for grid-stride loops (kernels loop when n is
// larger). Always at least 1.
inline unsigned grid_for(std::int64_t n, int threads, std::int64_t cap = 65536) {
  std::int64_t blocks = (n + threads - 1) / threads;
  if (blocks < 1) blocks = 1;
  if (blocks > cap) blocks = cap;
  return static_cast<unsigned>(blocks);
}

// Element counts of every op must fit the kernels' 64-bit indexing and the int grids.
void check_sizes(bool ok, const char* op, const std::string& what);

}  // namespace moetune::kernels::cuda

#define CUDA_CHECK(expr) ::moetune::kernels::cuda::check_cuda((expr), #expr, __FILE__, __LINE__)
#define CUBLAS_CHECK(expr) ::moetune::kernels::cuda::check_cublas((expr), #expr, __FILE__, __LINE__)
// After a kernel launch: reports a bad configuration (too many threads, too much shared memory).
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())
