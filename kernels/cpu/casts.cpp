// bf16 casts by bit manipulation: bf16 is the top half of an IEEE float.
#include "kernels/cpu/casts.hpp"

#include <bit>

#include "core/error.hpp"

namespace moetune::kernels::cpu {

std::uint16_t bf16_from_float(float x) {
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(x);
  if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0) {
    return static_cast<std::uint16_t>((bits >> 16) | 0x0040u);  // keep NaN a quiet NaN
  }
  // Round to nearest, ties to even: add 0x7fff plus the lowest kept bit, then truncate.
  const std::uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<std::uint16_t>((bits + rounding) >> 16);
}

float float_from_bf16(std::uint16_t x) {
  return std::bit_cast<float>(static_cast<std::uint32_t>(x) << 16);
}

void cast_float_to_bf16(std::uint16_t* out, const float* in, std::int64_t n) {
  MOETUNE_CHECK(n >= 0, "cast_float_to_bf16: negative n");
  MOETUNE_CHECK(n == 0 || (out && in), "cast_float_to_bf16: null buffer");
  for (std::int64_t i = 0; i < n; i++)
    out[i] = bf16_from_float(in[i]);
}

void cast_bf16_to_float(float* out, const std::uint16_t* in, std::int64_t n) {
  MOETUNE_CHECK(n >= 0, "cast_bf16_to_float: negative n");
  MOETUNE_CHECK(n == 0 || (out && in), "cast_bf16_to_float: null buffer");
  for (std::int64_t i = 0; i < n; i++)
    out[i] = float_from_bf16(in[i]);
}

}  // namespace moetune::kernels::cpu
