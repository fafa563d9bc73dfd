// Helpers for the CUDA kernel tests (label `gpu`): device buffers, bf16 round trips through the
// CPU casts, seeded random inputs, and the normalised error every comparison uses. Each test runs
// a CUDA op and its kernels/cpu twin (in double) on the same bf16-representable inputs.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include <catch2/catch.hpp>

#include "kernels/cpu/casts.hpp"
#include "kernels/cuda/common.cuh"

namespace moetune::kernels::cuda_test {

using moetune::kernels::cuda::bf16;
using Vec = std::vector<double>;

// Tolerances, relative to the largest magnitude of the reference (normalized_error):
// one bf16 rounding of a result computed in fp32 is at most 2^-9 = 0.2% of the value; a chain of
// a few roundings (GEMM output, then an elementwise op, then another GEMM) stays under ~1%.
inline constexpr double kOneRounding = 5e-3;     // one bf16 rounding, with fp32 slack
inline constexpr double kFewRoundings = 2.5e-2;  // two or three bf16 stages (experts, attention)
inline constexpr double kFp32 = 1e-4;            // fp32 arithmetic on exact bf16 inputs

// A cudaMalloc'd array of n T, freed on destruction.
template <typename T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(std::size_t n) : n_(n) {
    if (n_ > 0)
      moetune::kernels::cuda::check_cuda(cudaMalloc(&ptr_, n_ * sizeof(T)), "cudaMalloc", __FILE__,
                                         __LINE__);
  }
  ~DeviceBuffer() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  T* get() const { return ptr_; }
  std::size_t size() const { return n_; }
  void upload(const std::vector<T>& host) {
    REQUIRE(host.size() == n_);
    CUDA_CHECK(cudaMemcpy(ptr_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    std::vector<T> host(n_);
    CUDA_CHECK(cudaDeviceSynchronize());
    if (n_ > 0) CUDA_CHECK(cudaMemcpy(host.data(), ptr_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
  }
  void fill_zero() { CUDA_CHECK(cudaMemset(ptr_, 0, n_ * sizeof(T))); }

 private:
  T* ptr_ = nullptr;
  std::size_t n_;
};

inline bf16 to_bf16(double x) {
  __nv_bfloat16_raw raw;
  raw.x = moetune::kernels::cpu::bf16_from_float(float(x));
  return bf16(raw);
}

inline double from_bf16(bf16 x) {
  const __nv_bfloat16_raw raw(x);
  return double(moetune::kernels::cpu::float_from_bf16(raw.x));
}

// Uniform in [lo, hi), rounded to bf16 so that the bf16 device copy and the double reference
// hold the same numbers.
inline Vec random_bf16_values(std::mt19937_64& rng, std::size_t n, double lo = -1, double hi = 1) {
  std::uniform_real_distribution<double> dist(lo, hi);
  Vec v(n);
  for (double& x : v)
    x = from_bf16(to_bf16(dist(rng)));
  return v;
}

inline Vec random_values(std::mt19937_64& rng, std::size_t n, double lo = -1, double hi = 1) {
  std::uniform_real_distribution<double> dist(lo, hi);
  Vec v(n);
  for (double& x : v)
    x = double(float(dist(rng)));  // exactly representable in fp32
  return v;
}

inline std::vector<bf16> to_bf16(const Vec& v) {
  std::vector<bf16> out(v.size());
  std::transform(v.begin(), v.end(), out.begin(), [](double x) { return to_bf16(x); });
  return out;
}

inline Vec from_bf16(const std::vector<bf16>& v) {
  Vec out(v.size());
  std::transform(v.begin(), v.end(), out.begin(), [](bf16 x) { return from_bf16(x); });
  return out;
}

inline std::vector<float> to_float(const Vec& v) {
  return std::vector<float>(v.begin(), v.end());
}

template <typename T>
Vec to_double(const std::vector<T>& v) {
  return Vec(v.begin(), v.end());
}

// Device copies of double vectors.
inline void upload_bf16(DeviceBuffer<bf16>& d, const Vec& v) {
  d.upload(to_bf16(v));
}
inline void upload_float(DeviceBuffer<float>& d, const Vec& v) {
  d.upload(to_float(v));
}
inline Vec download_bf16(const DeviceBuffer<bf16>& d) {
  return from_bf16(d.download());
}
inline Vec download_float(const DeviceBuffer<float>& d) {
  return to_double(d.download());
}

// max |a - b| / max |b|: the error relative to the tensor's scale (0/0 counts as 0).
inline double normalized_error(const Vec& a, const Vec& b) {
  REQUIRE(a.size() == b.size());
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < a.size(); i++) {
    diff = std::max(diff, std::abs(a[i] - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  if (scale == 0) return diff;
  return diff / scale;
}

}  // namespace moetune::kernels::cuda_test
