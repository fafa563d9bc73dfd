// Token embedding on the GPU (CUDA twin of kernels/cpu/embedding.hpp): a row gather into bf16 and
// a scatter-add of the output gradient into the fp32 table gradient.
#pragma once

#include "kernels/cuda/common.cuh"

namespace moetune::kernels::cuda {

// out[N,D] = table[tokens[n]]; table[V,D] bf16. Tokens must be in [0, V) (the caller checks on
// the host; an out-of-range token leaves its row zero rather than reading outside the table).
void embedding_forward(bf16* out, const bf16* table, const std::int32_t* tokens, std::int64_t n,
                       std::int64_t v, std::int64_t d, cudaStream_t stream);

// dtable[V,D] (fp32) += dout[n] at row tokens[n] (fp32 atomics: repeated tokens add up, in an
// order that may vary run to run).
void embedding_backward(float* dtable, const bf16* dout, const std::int32_t* tokens, std::int64_t n,
                        std::int64_t v, std::int64_t d, cudaStream_t stream);

}  // namespace moetune::kernels::cuda
