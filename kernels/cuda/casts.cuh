// fp32 <-> bf16 casts (round to nearest even, as kernels/cpu/casts) and the elementwise helpers the
// model needs between ops: residual adds and bf16 gradients accumulated into fp32.
#pragma once

#include "kernels/cuda/common.cuh"

namespace moetune::kernels::cuda {

// out[N] = bf16(in[N]) and back.
void cast_float_to_bf16(bf16* out, const float* in, std::int64_t n, cudaStream_t stream);
void cast_bf16_to_float(float* out, const bf16* in, std::int64_t n, cudaStream_t stream);

// out[N] = a + b in fp32, rounded once; out may alias a or b.
void add_bf16(bf16* out, const bf16* a, const bf16* b, std::int64_t n, cudaStream_t stream);
// acc[N] += x[N] (fp32 accumulators of bf16 partial gradients).
void accumulate_bf16(float* acc, const bf16* x, std::int64_t n, cudaStream_t stream);

}  // namespace moetune::kernels::cuda
