// The op registry's vocabulary (ggml's test-backend-ops): an OpCase names one Backend op with its
// shapes, runs it through a Runner on whatever backend it is given and returns its outputs as
// doubles; the driver (backend_ops_test.cpp) runs each case on the CUDA and the CPU backend from
// the same inputs and compares with a normalised error against the case's tolerance. Inputs are
// drawn from a generator seeded per case, so both runs see the same numbers; inputs of the
// activation type are rounded to bf16 first, so that both backends hold exactly the same values
// and the error measures only the computation.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "executor/backend.hpp"
#include "kernels/cpu/casts.hpp"

namespace moetune::executor::ops_test {

using Values = std::vector<double>;

// Tolerances of the normalised error max|cuda - cpu| / max|cpu|, each with its reason.
// Integer maps, copies and exact sums: both backends must agree bit for bit.
inline constexpr double kExact = 0.0;
// fp32 (or double) arithmetic on identical inputs: only summation order and the last ulp of
// exp/log differ, a few 1e-7 relative; 1e-5 leaves room for sums over a few hundred terms.
inline constexpr double kFp32 = 1e-5;
// One bf16 rounding of a result computed in fp32: at most 2^-9 (0.2%) of the value, plus slack.
inline constexpr double kOneRounding = 5e-3;
// Two bf16 roundings in a row (HF's RMSNorm rounds x * rstd before the weight; a bf16 input of a
// later fp32 reduction): up to ~0.4%.
inline constexpr double kTwoRoundings = 1e-2;
// Chains of bf16 stages (scores -> bf16 probabilities -> output; h1, h3 -> act -> output; the
// backward's bf16 intermediates feeding fp32 weight gradients): errors compound to ~1-2%.
inline constexpr double kFewRoundings = 3e-2;

struct Output {
  std::string name;
  Values values;
  bool exact = false;     // integers: compared for equality whatever the case's tolerance
  double tolerance = -1;  // >= 0: this output's own tolerance (an fp32 output of a bf16 op)
};
using Outputs = std::vector<Output>;

class Runner;

struct OpCase {
  std::string name;  // op and shape, e.g. "gemm NT 24x40x32 bf16"
  double tolerance;
  std::string reason;
  std::function<Outputs(Runner&)> run;
};

// Typed buffers of one backend, filled from and read back into doubles.
class Runner {
 public:
  explicit Runner(Backend& backend) : be(backend) {}
  Backend& be;

  DType act() const { return be.act_type(); }
  bool cuda() const { return be.act_type() == DType::BF16; }

  // A buffer of `type` holding v (bf16: rounded to nearest even).
  void* put(const Values& v, DType type) {
    void* p = alloc(std::int64_t(v.size()), type);
    const std::vector<unsigned char> bytes = encode(v, type);
    if (!bytes.empty()) be.copy_from_host(p, bytes.data(), bytes.size());
    return p;
  }
  void* act_in(const Values& v) { return put(v, act()); }
  float* f32_in(const Values& v) { return static_cast<float*>(put(v, DType::F32)); }
  double* f64_in(const Values& v) { return static_cast<double*>(put(v, DType::F64)); }
  std::int32_t* i32_in(const Values& v) { return static_cast<std::int32_t*>(put(v, DType::I32)); }
  std::int64_t* i64_in(const Values& v) { return static_cast<std::int64_t*>(put(v, DType::I64)); }
  // n zero elements of `type`.
  void* alloc(std::int64_t n, DType type) {
    buffers_.emplace_back(be, n, type);
    void* p = buffers_.back().data();
    if (n > 0) be.zero(p, std::size_t(n) * dtype_size(type));
    return p;
  }
  void* act_out(std::int64_t n) { return alloc(n, act()); }
  float* f32_out(std::int64_t n) { return static_cast<float*>(alloc(n, DType::F32)); }
  // Opaque bytes (attention's saved state), zeroed.
  void* bytes_out(std::size_t bytes) { return alloc(std::int64_t((bytes + 3) / 4), DType::I32); }

  Values get(const void* p, std::int64_t n, DType type) {
    std::vector<unsigned char> bytes(std::size_t(n) * dtype_size(type));
    if (!bytes.empty()) be.copy_to_host(bytes.data(), p, bytes.size());
    return decode(bytes, n, type);
  }
  Values act_get(const void* p, std::int64_t n) { return get(p, n, act()); }
  Output out(std::string name, const void* p, std::int64_t n, DType type, double tolerance = -1) {
    const bool exact = type == DType::I32 || type == DType::I64;
    return {std::move(name), get(p, n, type), exact, tolerance};
  }
  Output act_result(std::string name, const void* p, std::int64_t n, double tolerance = -1) {
    return out(std::move(name), p, n, act(), tolerance);
  }

  static std::vector<unsigned char> encode(const Values& v, DType type) {
    std::vector<unsigned char> bytes(v.size() * dtype_size(type));
    for (std::size_t i = 0; i < v.size(); i++) {
      unsigned char* at = bytes.data() + i * dtype_size(type);
      switch (type) {
        case DType::F32:
          store(at, float(v[i]));
          break;
        case DType::BF16:
          store(at, kernels::cpu::bf16_from_float(float(v[i])));
          break;
        case DType::F64:
          store(at, v[i]);
          break;
        case DType::I32:
          store(at, std::int32_t(v[i]));
          break;
        case DType::I64:
          store(at, std::int64_t(v[i]));
          break;
      }
    }
    return bytes;
  }

  static Values decode(const std::vector<unsigned char>& bytes, std::int64_t n, DType type) {
    Values v(static_cast<std::size_t>(n));
    for (std::size_t i = 0; i < v.size(); i++) {
      const unsigned char* at = bytes.data() + i * dtype_size(type);
      switch (type) {
        case DType::F32:
          v[i] = load<float>(at);
          break;
        case DType::BF16:
          v[i] = kernels::cpu::float_from_bf16(load<std::uint16_t>(at));
          break;
        case DType::F64:
          v[i] = load<double>(at);
          break;
        case DType::I32:
          v[i] = load<std::int32_t>(at);
          break;
        case DType::I64:
          v[i] = double(load<std::int64_t>(at));
          break;
      }
    }
    return v;
  }

 private:
  template <typename T>
  static void store(unsigned char* at, T x) {
    std::memcpy(at, &x, sizeof x);
  }
  template <typename T>
  static T load(const unsigned char* at) {
    T x;
    std::memcpy(&x, at, sizeof x);
    return x;
  }
  std::vector<Buffer> buffers_;
};

// --- Inputs.

inline double round_bf16(double x) {
  return kernels::cpu::float_from_bf16(kernels::cpu::bf16_from_float(float(x)));
}

// Uniform in [lo, hi), rounded to bf16: exactly representable in both backends' act types.
inline Values bf16_values(std::mt19937_64& rng, std::size_t n, double lo = -1, double hi = 1) {
  std::uniform_real_distribution<double> dist(lo, hi);
  Values v(n);
  for (double& x : v)
    x = round_bf16(dist(rng));
  return v;
}

// Uniform in [lo, hi), rounded to fp32 (inputs that are fp32 on every backend).
inline Values f32_values(std::mt19937_64& rng, std::size_t n, double lo = -1, double hi = 1) {
  std::uniform_real_distribution<double> dist(lo, hi);
  Values v(n);
  for (double& x : v)
    x = double(float(dist(rng)));
  return v;
}

// Router logits[N,E] whose entries in a row are at least 0.3 apart (a shuffled ladder plus small
// noise), so that no rounding difference between the backends can reorder the top-k.
inline Values separated_logits(std::mt19937_64& rng, std::int64_t n, std::int64_t e) {
  std::uniform_real_distribution<double> noise(-0.05, 0.05);
  Values v(static_cast<std::size_t>(n * e));
  std::vector<int> order(static_cast<std::size_t>(e));
  for (std::int64_t t = 0; t < n; t++) {
    for (std::int64_t c = 0; c < e; c++)
      order[std::size_t(c)] = int(c);
    std::shuffle(order.begin(), order.end(), rng);
    for (std::int64_t c = 0; c < e; c++)
      v[std::size_t(t * e + c)] =
          double(float(0.4 * (order[std::size_t(c)] - e / 2.0) + noise(rng)));
  }
  return v;
}

// Integers uniform in [lo, hi].
inline Values int_values(std::mt19937_64& rng, std::size_t n, std::int64_t lo, std::int64_t hi) {
  std::uniform_int_distribution<std::int64_t> dist(lo, hi);
  Values v(n);
  for (double& x : v)
    x = double(dist(rng));
  return v;
}

// Each token's K distinct experts in [0, E), int32 top-k indices as a router would give them.
inline Values distinct_experts(std::mt19937_64& rng, std::int64_t n, std::int64_t e,
                               std::int64_t k) {
  Values v;
  std::vector<int> order(static_cast<std::size_t>(e));
  for (std::int64_t t = 0; t < n; t++) {
    for (std::int64_t c = 0; c < e; c++)
      order[std::size_t(c)] = int(c);
    std::shuffle(order.begin(), order.end(), rng);
    for (std::int64_t j = 0; j < k; j++)
      v.push_back(order[std::size_t(j)]);
  }
  return v;
}

// The case lists (dense_cases.cpp, moe_cases.cpp).
std::vector<OpCase> dense_op_cases();
std::vector<OpCase> moe_op_cases();

}  // namespace moetune::executor::ops_test
