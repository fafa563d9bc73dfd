// Element types the executor moves and computes with: fp32 (master weights, gradients, Adam
// state, router, and every activation on the CPU backend), bf16 (activations and working weights
// on the CUDA backend), fp64 (loss and norm sums), int32 (token ids, top-k indices) and int64
// (routing maps and counts). Communicators and backends take a DType beside a pointer and count.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace moetune::executor {

enum class DType : std::uint8_t { F32, BF16, F64, I32, I64 };

constexpr std::size_t dtype_size(DType t) {
  switch (t) {
    case DType::BF16:
      return 2;
    case DType::F32:
    case DType::I32:
      return 4;
    case DType::F64:
    case DType::I64:
      return 8;
  }
  return 0;
}

inline std::string to_string(DType t) {
  switch (t) {
    case DType::F32:
      return "fp32";
    case DType::BF16:
      return "bf16";
    case DType::F64:
      return "fp64";
    case DType::I32:
      return "int32";
    case DType::I64:
      return "int64";
  }
  return "?";
}

// The DType of a C++ element type (bf16 has no standard C++ type; its buffers are void*).
template <typename T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() {
  return DType::F32;
}
template <>
constexpr DType dtype_of<double>() {
  return DType::F64;
}
template <>
constexpr DType dtype_of<std::int32_t>() {
  return DType::I32;
}
template <>
constexpr DType dtype_of<std::int64_t>() {
  return DType::I64;
}

}  // namespace moetune::executor
