// vec_math.hpp, the fp32 kernels' element-wise building blocks: exp_f32 against libm in double
// over its whole range and at the edges, and the lane reductions against plain double sums.
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include <catch2/catch.hpp>

#include "kernels/cpu/vec_math.hpp"

using namespace moetune::kernels::cpu;

namespace {

// Distance in units in the last place between two finite floats of the same sign.
std::int64_t ulp_distance(float a, float b) {
  return std::abs(std::int64_t(std::bit_cast<std::int32_t>(a)) -
                  std::int64_t(std::bit_cast<std::int32_t>(b)));
}

}  // namespace

TEST_CASE("exp_f32 is within 2 ulp of the rounded exact value over the normal range",
          "[kernels][vec]") {
  // Every 97th float from -87.3 to 88.7 (the results there are normal floats): ~1e6 points over
  // every binade of the argument. The reference is libm's double exp rounded to float, itself
  // within half an ulp. The Cephes polynomial is documented at 2 ulp; measured worst is 1.
  std::int64_t worst = 0;
  float worst_x = 0;
  std::int64_t count = 0;
  for (float x = -87.3f; x < 88.7f;) {
    const float expect = float(std::exp(double(x)));
    const std::int64_t d = ulp_distance(vec::exp_f32(x), expect);
    if (d > worst) {
      worst = d;
      worst_x = x;
    }
    count++;
    const std::int32_t bits = std::bit_cast<std::int32_t>(x);
    x = std::bit_cast<float>(x < 0 ? bits - 97 : (x == 0 ? 97 : bits + 97));
    if (x < 0 && x > -1e-30f) x = 0;
  }
  INFO("worst at x = " << worst_x << " over " << count << " points");
  CHECK(count > 500000);
  CHECK(worst <= 2);
}

TEST_CASE("exp_f32 at the edges: 0, 1, overflow, underflow, NaN", "[kernels][vec]") {
  constexpr float kInf = std::numeric_limits<float>::infinity();
  CHECK(vec::exp_f32(0.0f) == 1.0f);
  CHECK(vec::exp_f32(-0.0f) == 1.0f);
  CHECK(vec::exp_f32(89.0f) == kInf);
  CHECK(vec::exp_f32(kInf) == kInf);
  CHECK(vec::exp_f32(-104.0f) == 0.0f);
  CHECK(vec::exp_f32(-kInf) == 0.0f);
  CHECK(std::isnan(vec::exp_f32(std::numeric_limits<float>::quiet_NaN())));
  // Gradual underflow: e^-95 is a subnormal float (5.5e-42), kept to a few percent.
  CHECK(double(vec::exp_f32(-95.0f)) == Approx(std::exp(-95.0)).epsilon(0.05));
  // The largest finite result.
  CHECK(double(vec::exp_f32(88.7f)) == Approx(std::exp(double(88.7f))).epsilon(1e-6));
}

TEST_CASE("lane reductions equal plain double sums", "[kernels][vec]") {
  std::mt19937_64 rng(70);
  std::uniform_real_distribution<float> dist(-2, 2);
  for (std::int64_t n : {1, 15, 16, 17, 100, 1000}) {
    std::vector<float> x(static_cast<std::size_t>(n)), y(x.size()), z(x.size());
    for (std::size_t i = 0; i < x.size(); i++) {
      x[i] = dist(rng);
      y[i] = dist(rng);
      z[i] = dist(rng);
    }
    double sum = 0, dot = 0, dot3 = 0, sum_exp = 0;
    float max = x[0];
    for (std::size_t i = 0; i < x.size(); i++) {
      sum += x[i];
      dot += double(x[i]) * y[i];
      dot3 += double(x[i]) * y[i] * z[i];
      sum_exp += std::exp(double(x[i]) - 1.5);
      max = std::max(max, x[i]);
    }
    INFO("n " << n);
    // Double sums of at most 1000 products of floats: only the order differs, ~1e-16 relative.
    CHECK(vec::sum(x.data(), n) == Approx(sum).epsilon(1e-12).margin(1e-12));
    CHECK(vec::dot(x.data(), y.data(), n) == Approx(dot).epsilon(1e-12).margin(1e-12));
    CHECK(vec::dot3(x.data(), y.data(), z.data(), n) == Approx(dot3).epsilon(1e-12).margin(1e-12));
    CHECK(vec::max(x.data(), n) == max);
    // exp_f32 within 2 ulp per term.
    CHECK(vec::sum_exp_shifted(x.data(), n, 1.5f) == Approx(sum_exp).epsilon(1e-6));
    std::vector<float> e(x.size());
    CHECK(vec::exp_shifted(e.data(), x.data(), n, 1.5f) == Approx(sum_exp).epsilon(1e-6));
    CHECK(double(e[0]) == Approx(std::exp(double(x[0]) - 1.5)).epsilon(1e-6));
  }
}
