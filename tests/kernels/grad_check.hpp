// Helpers shared by the kernel tests: seeded random buffers, central-difference gradients, and the
// comparisons, with the reasons for their tolerances written once, here.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

namespace moetune::kernels::test {

using Vec = std::vector<double>;

// Finite-difference tolerance. Step h = 1e-6 * max(1, |x|). Central differences carry truncation
// error O(h^2 |f'''|) ~ 1e-12 and rounding error ~ 1e-16 * |L| / h ~ 1e-9 for the O(10) losses the
// tests build; 1e-6 relative to max(1, |gradient|) leaves ~1000x headroom over both, while a
// missing or wrong term moves a gradient by 1e-2 or more on these O(1) inputs.
inline constexpr double kFdTol = 1e-6;
inline constexpr double kFdStep = 1e-6;

// Uniform in [lo, hi) from a seeded generator, so every run sees the same numbers.
inline Vec random_vec(std::mt19937_64& rng, std::size_t n, double lo = -1.0, double hi = 1.0) {
  std::uniform_real_distribution<double> dist(lo, hi);
  Vec v(n);
  for (double& x : v)
    x = dist(rng);
  return v;
}

inline double dot(const Vec& a, const Vec& b) {
  REQUIRE(a.size() == b.size());
  double s = 0;
  for (std::size_t i = 0; i < a.size(); i++)
    s += a[i] * b[i];
  return s;
}

// Central-difference gradient of loss() with respect to every element of x. x is perturbed in
// place (loss() must read it) and restored.
template <class Loss>
Vec numeric_grad(Vec& x, Loss&& loss) {
  Vec g(x.size());
  for (std::size_t i = 0; i < x.size(); i++) {
    const double saved = x[i];
    const double h = kFdStep * std::max(1.0, std::abs(saved));
    x[i] = saved + h;
    const double plus = loss();
    x[i] = saved - h;
    const double minus = loss();
    x[i] = saved;
    g[i] = (plus - minus) / (2 * h);
  }
  return g;
}

// Every element within kFdTol of the finite difference, relative to max(1, |value|). Also fails a
// gradient that is zero everywhere, so a check cannot pass by testing nothing.
inline void require_grad_close(const Vec& analytic, const Vec& numeric, const std::string& what) {
  REQUIRE(analytic.size() == numeric.size());
  double worst = 0, largest = 0;
  std::size_t worst_at = 0;
  for (std::size_t i = 0; i < analytic.size(); i++) {
    const double err = std::abs(analytic[i] - numeric[i]) /
                       std::max({1.0, std::abs(analytic[i]), std::abs(numeric[i])});
    if (err > worst) {
      worst = err;
      worst_at = i;
    }
    largest = std::max(largest, std::abs(numeric[i]));
  }
  INFO(what << ": worst relative error " << worst << " at " << worst_at << " (analytic "
            << analytic[worst_at] << ", numeric " << numeric[worst_at] << ")");
  REQUIRE(largest > 0);
  REQUIRE(worst <= kFdTol);
}

// max |a - b| / max |b|: one normalised error for a whole buffer (as ggml's test-backend-ops).
template <class A, class B>
double max_rel_error(const std::vector<A>& a, const std::vector<B>& b) {
  REQUIRE(a.size() == b.size());
  double err = 0, scale = 0;
  for (std::size_t i = 0; i < a.size(); i++) {
    err = std::max(err, std::abs(double(a[i]) - double(b[i])));
    scale = std::max(scale, std::abs(double(b[i])));
  }
  return scale > 0 ? err / scale : err;
}

template <class T>
std::vector<T> cast_vec(const Vec& v) {
  return std::vector<T>(v.begin(), v.end());
}

}  // namespace moetune::kernels::test
