// Element-wise building blocks of the fp32 kernels (internal to kernels/cpu): e^x without a libm
// call, and row reductions with fixed lanes. They are plain IEEE arithmetic in a fixed order, with
// no reassociation left to the compiler, so the loops vectorise for whatever vector instructions
// the build targets (MOETUNE_NATIVE) and an AVX-512 build and an SSE2 build compute the same bits.
// The double versions, which serve the finite-difference tests, call libm as before.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

namespace moetune::kernels::cpu::vec {

// e^x in float within 2 ulp of the correctly rounded value for x in [-87.3, 88.7] (the normal
// range), gradual underflow below, 0 below -103.97 (e^x < 2^-150), +inf above 88.72 and NaN for
// NaN. Cody-Waite reduction x = n ln2 + r, |r| <= ln2 / 2, and Cephes' expf polynomial for e^r.
// Inline and branch-free, so a loop over it vectorises; libm's expf is a call per element.
inline float exp_f32(float x) {
  constexpr float kHi = 88.72283935546875f;  // ln(FLT_MAX)
  constexpr float kLo = -103.97208404541f;   // ln(2^-150)
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f;  // 9 significant bits: n * kLn2Hi is exact
  constexpr float kLn2Lo = -2.12194440e-4f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  float xc = x < kLo ? kLo : x;          // NaN passes both comparisons unchanged
  xc = xc > kHi ? kHi : xc;
  const float shifted = xc * kLog2e + kRound;
  const float n = shifted - kRound;  // round(x / ln2), ties to even
  const std::int32_t ni =
      std::bit_cast<std::int32_t>(shifted) - std::bit_cast<std::int32_t>(kRound);
  float r = xc - n * kLn2Hi;
  r = r - n * kLn2Lo;
  const float r2 = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r2 + r + 1.0f;
  // 2^n as 2^a * 2^b with a = floor(n / 2): both factors are normal floats for n in [-150, 128].
  const std::int32_t a = ni >> 1;
  const std::int32_t b = ni - a;
  const float scale_a = std::bit_cast<float>((a + 127) << 23);
  const float scale_b = std::bit_cast<float>((b + 127) << 23);
  const float y = p * scale_a * scale_b;
  return x > kHi ? std::numeric_limits<float>::infinity() : (x < kLo ? 0.0f : y);
}

// e^x in T: exp_f32 for the fp32 kernels, libm for the double reference.
template <typename T>
inline T exp_t(T x) {
  if constexpr (std::is_same_v<T, float>) {
    return exp_f32(x);
  } else {
    return std::exp(x);
  }
}

// Lanes of the reductions below: 16 partial sums, two AVX-512 registers of doubles, enough
// independent additions to hide the adder's latency.
inline constexpr std::int64_t kLanes = 16;

// Adds the lanes in a fixed order.
inline double sum_lanes(const double* acc) {
  double s = 0;
  for (std::int64_t l = 0; l < kLanes; l++)
    s += acc[l];
  return s;
}

// sum_i x[i] in double.
template <typename T>
inline double sum(const T* x, std::int64_t n) {
  double acc[kLanes] = {};
  std::int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (std::int64_t l = 0; l < kLanes; l++)
      acc[l] += double(x[i + l]);
  }
  double s = sum_lanes(acc);
  for (; i < n; i++)
    s += double(x[i]);
  return s;
}

// sum_i x[i] y[i] in double.
template <typename T>
inline double dot(const T* x, const T* y, std::int64_t n) {
  double acc[kLanes] = {};
  std::int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (std::int64_t l = 0; l < kLanes; l++)
      acc[l] += double(x[i + l]) * double(y[i + l]);
  }
  double s = sum_lanes(acc);
  for (; i < n; i++)
    s += double(x[i]) * double(y[i]);
  return s;
}

// sum_i x[i] y[i] z[i] in double.
template <typename T>
inline double dot3(const T* x, const T* y, const T* z, std::int64_t n) {
  double acc[kLanes] = {};
  std::int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (std::int64_t l = 0; l < kLanes; l++)
      acc[l] += double(x[i + l]) * double(y[i + l]) * double(z[i + l]);
  }
  double s = sum_lanes(acc);
  for (; i < n; i++)
    s += double(x[i]) * double(y[i]) * double(z[i]);
  return s;
}

// sum_i x[i]^2 in double.
template <typename T>
inline double sum_sq(const T* x, std::int64_t n) {
  return dot(x, x, n);
}

// max_i x[i] for n >= 1 (the first NaN-free maximum; the kernels' inputs are finite).
template <typename T>
inline T max(const T* x, std::int64_t n) {
  T acc[kLanes];
  for (std::int64_t l = 0; l < kLanes; l++)
    acc[l] = x[0];
  std::int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (std::int64_t l = 0; l < kLanes; l++)
      acc[l] = x[i + l] > acc[l] ? x[i + l] : acc[l];
  }
  T m = acc[0];
  for (std::int64_t l = 1; l < kLanes; l++)
    m = acc[l] > m ? acc[l] : m;
  for (; i < n; i++)
    m = x[i] > m ? x[i] : m;
  return m;
}

// y[i] = e^(x[i] - shift) for i < n; returns their sum in double. y may be x.
template <typename T>
inline double exp_shifted(T* y, const T* x, std::int64_t n, T shift) {
  double acc[kLanes] = {};
  std::int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (std::int64_t l = 0; l < kLanes; l++) {
      const T e = exp_t(x[i + l] - shift);
      y[i + l] = e;
      acc[l] += double(e);
    }
  }
  double s = sum_lanes(acc);
  for (; i < n; i++) {
    const T e = exp_t(x[i] - shift);
    y[i] = e;
    s += double(e);
  }
  return s;
}

// sum_i e^(x[i] - shift) in double, storing nothing.
template <typename T>
inline double sum_exp_shifted(const T* x, std::int64_t n, T shift) {
  double acc[kLanes] = {};
  std::int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (std::int64_t l = 0; l < kLanes; l++)
      acc[l] += double(exp_t(x[i + l] - shift));
  }
  double s = sum_lanes(acc);
  for (; i < n; i++)
    s += double(exp_t(x[i] - shift));
  return s;
}

}  // namespace moetune::kernels::cpu::vec
