// fp32 <-> bf16 conversions, the CPU reference for the CUDA casts (bf16 held as its raw 16 bits).
#pragma once

#include <cstdint>

namespace moetune::kernels::cpu {

// One value, round to nearest even (what __float2bfloat16 does); NaN stays a (quiet) NaN.
std::uint16_t bf16_from_float(float x);
float float_from_bf16(std::uint16_t x);

// out[N] = bf16(in[N]) and back.
void cast_float_to_bf16(std::uint16_t* out, const float* in, std::int64_t n);
void cast_bf16_to_float(float* out, const std::uint16_t* in, std::int64_t n);

}  // namespace moetune::kernels::cpu
