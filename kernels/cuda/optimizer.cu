// AdamW and the grad-norm reduction.
#include <cmath>

#include "kernels/cuda/optimizer.cuh"
#include "kernels/cuda/reduce.cuh"

namespace moetune::kernels::cuda {

namespace {

constexpr int kThreads = 256;

__global__ void adamw_kernel(float* param, float* m, float* v, const float* grad, bf16* working,
                             std::int64_t n, double lr, double beta1, double beta2, double eps,
                             double decay, double bias1, double bias2, double grad_scale) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    const double g = double(grad[i]) * grad_scale;
    const double mi = beta1 * double(m[i]) + (1.0 - beta1) * g;
    const double vi = beta2 * double(v[i]) + (1.0 - beta2) * g * g;
    m[i] = float(mi);
    v[i] = float(vi);
    const double p = double(param[i]) * decay;
    const float updated = float(p - lr * (mi / bias1) / (sqrt(vi / bias2) + eps));
    param[i] = updated;
    if (working != nullptr) working[i] = __float2bfloat16_rn(updated);
  }
}

// Block b sums elements b, b + blocks*threads, ... : a fixed assignment, so a fixed order.
__global__ void sum_squares_partial_kernel(double* partial, const float* x, std::int64_t n) {
  __shared__ double shared[32];
  double sum = 0;
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x)
    sum += double(x[i]) * double(x[i]);
  sum = detail::block_sum(sum, shared);
  if (threadIdx.x == 0) partial[blockIdx.x] = sum;
}

__global__ void sum_partials_kernel(double* out, const double* partial, int count) {
  __shared__ double shared[32];
  double sum = 0;
  for (int i = threadIdx.x; i < count; i += blockDim.x)
    sum += partial[i];
  sum = detail::block_sum(sum, shared);
  if (threadIdx.x == 0) *out = sum;
}

__global__ void scale_kernel(float* x, std::int64_t n, double s) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x)
    x[i] = float(double(x[i]) * s);
}

}  // namespace

void adamw_step(float* param, float* m, float* v, const float* grad, bf16* working, std::int64_t n,
                const AdamWParams& hp, std::int64_t step, double grad_scale, cudaStream_t stream) {
  check_sizes(n >= 0, "adamw_step", "negative n");
  check_sizes(step >= 1, "adamw_step", "step counts from 1");
  check_sizes(hp.lr >= 0 && hp.eps >= 0 && hp.weight_decay >= 0, "adamw_step",
              "negative lr/eps/wd");
  check_sizes(hp.beta1 >= 0 && hp.beta1 < 1 && hp.beta2 >= 0 && hp.beta2 < 1, "adamw_step",
              "betas must be in [0, 1)");
  if (n == 0) return;
  const double bias1 = 1.0 - std::pow(hp.beta1, double(step));
  const double bias2 = 1.0 - std::pow(hp.beta2, double(step));
  const double decay = 1.0 - hp.lr * hp.weight_decay;
  adamw_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(param, m, v, grad, working, n, hp.lr,
                                                               hp.beta1, hp.beta2, hp.eps, decay,
                                                               bias1, bias2, grad_scale);
  CUDA_CHECK_LAUNCH();
}

void sum_of_squares(double* out, const float* x, std::int64_t n, double* partial,
                    cudaStream_t stream) {
  check_sizes(n >= 0, "sum_of_squares", "negative n");
  // Always the full set of blocks (empty ones write 0), so the order never depends on n.
  sum_squares_partial_kernel<<<kSumOfSquaresBlocks, kThreads, 0, stream>>>(partial, x, n);
  CUDA_CHECK_LAUNCH();
  sum_partials_kernel<<<1, kThreads, 0, stream>>>(out, partial, kSumOfSquaresBlocks);
  CUDA_CHECK_LAUNCH();
}

void scale_inplace(float* x, std::int64_t n, double s, cudaStream_t stream) {
  check_sizes(n >= 0, "scale_inplace", "negative n");
  if (n == 0) return;
  scale_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(x, n, s);
  CUDA_CHECK_LAUNCH();
}

}  // namespace moetune::kernels::cuda
