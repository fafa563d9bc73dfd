// Embedding gather / scatter-add: one block per token row.
#include "kernels/cuda/embedding.cuh"

namespace moetune::kernels::cuda {

namespace {

constexpr int kThreads = 128;

__global__ void embedding_forward_kernel(bf16* out, const bf16* table, const std::int32_t* tokens,
                                         std::int64_t v, std::int64_t d) {
  const std::int64_t i = blockIdx.x;
  const std::int64_t token = tokens[i];
  const bool valid = token >= 0 && token < v;
  for (std::int64_t j = threadIdx.x; j < d; j += blockDim.x)
    out[i * d + j] = valid ? table[token * d + j] : __float2bfloat16_rn(0.f);
}

__global__ void embedding_backward_kernel(float* dtable, const bf16* dout,
                                          const std::int32_t* tokens, std::int64_t v,
                                          std::int64_t d) {
  const std::int64_t i = blockIdx.x;
  const std::int64_t token = tokens[i];
  if (token < 0 || token >= v) return;
  for (std::int64_t j = threadIdx.x; j < d; j += blockDim.x)
    atomicAdd(dtable + token * d + j, __bfloat162float(dout[i * d + j]));
}

}  // namespace

void embedding_forward(bf16* out, const bf16* table, const std::int32_t* tokens, std::int64_t n,
                       std::int64_t v, std::int64_t d, cudaStream_t stream) {
  check_sizes(n >= 0 && v > 0 && d > 0, "embedding_forward", "need n >= 0, v > 0, d > 0");
  check_sizes(n < (std::int64_t{1} << 31), "embedding_forward", "more than 2^31 rows");
  if (n == 0) return;
  embedding_forward_kernel<<<unsigned(n), kThreads, 0, stream>>>(out, table, tokens, v, d);
  CUDA_CHECK_LAUNCH();
}

void embedding_backward(float* dtable, const bf16* dout, const std::int32_t* tokens, std::int64_t n,
                        std::int64_t v, std::int64_t d, cudaStream_t stream) {
  check_sizes(n >= 0 && v > 0 && d > 0, "embedding_backward", "need n >= 0, v > 0, d > 0");
  check_sizes(n < (std::int64_t{1} << 31), "embedding_backward", "more than 2^31 rows");
  if (n == 0) return;
  embedding_backward_kernel<<<unsigned(n), kThreads, 0, stream>>>(dtable, dout, tokens, v, d);
  CUDA_CHECK_LAUNCH();
}

}  // namespace moetune::kernels::cuda
