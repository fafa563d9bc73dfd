// Elementwise casts and adds: grid-stride loops, 256 threads.
#include "kernels/cuda/casts.cuh"

namespace moetune::kernels::cuda {

namespace {

constexpr int kThreads = 256;

__global__ void float_to_bf16_kernel(bf16* out, const float* in, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x)
    out[i] = __float2bfloat16_rn(in[i]);
}

__global__ void bf16_to_float_kernel(float* out, const bf16* in, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x)
    out[i] = __bfloat162float(in[i]);
}

__global__ void add_bf16_kernel(bf16* out, const bf16* a, const bf16* b, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x)
    out[i] = __float2bfloat16_rn(__bfloat162float(a[i]) + __bfloat162float(b[i]));
}

__global__ void accumulate_bf16_kernel(float* acc, const bf16* x, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x)
    acc[i] += __bfloat162float(x[i]);
}

}  // namespace

void cast_float_to_bf16(bf16* out, const float* in, std::int64_t n, cudaStream_t stream) {
  check_sizes(n >= 0, "cast_float_to_bf16", "negative n");
  if (n == 0) return;
  float_to_bf16_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(out, in, n);
  CUDA_CHECK_LAUNCH();
}

void cast_bf16_to_float(float* out, const bf16* in, std::int64_t n, cudaStream_t stream) {
  check_sizes(n >= 0, "cast_bf16_to_float", "negative n");
  if (n == 0) return;
  bf16_to_float_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(out, in, n);
  CUDA_CHECK_LAUNCH();
}

void add_bf16(bf16* out, const bf16* a, const bf16* b, std::int64_t n, cudaStream_t stream) {
  check_sizes(n >= 0, "add_bf16", "negative n");
  if (n == 0) return;
  add_bf16_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(out, a, b, n);
  CUDA_CHECK_LAUNCH();
}

void accumulate_bf16(float* acc, const bf16* x, std::int64_t n, cudaStream_t stream) {
  check_sizes(n >= 0, "accumulate_bf16", "negative n");
  if (n == 0) return;
  accumulate_bf16_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(acc, x, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace moetune::kernels::cuda
