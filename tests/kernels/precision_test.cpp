// float against double on the same random inputs: the fp32 kernels (what the CPU backend trains
// with) must agree with the double instantiation (what the gradient checks validate).
//
// Tolerance 1e-5 of each buffer's largest magnitude: inputs are rounded to float (6e-8 relative)
// and every output is a short chain of sums of at most a few dozen O(1) terms; the errors measured
// here are 1.4e-7 to 2.5e-7, so 1e-5 leaves 40x headroom while a precision bug (a long sum
// accumulated in float, a lost max-subtraction) lands well above it.
#include <random>
#include <vector>

#include <catch2/catch.hpp>

#include "grad_check.hpp"
#include "kernels/cpu/attention.hpp"
#include "kernels/cpu/cross_entropy.hpp"
#include "kernels/cpu/rmsnorm.hpp"
#include "kernels/cpu/router.hpp"
#include "kernels/cpu/swiglu.hpp"

using namespace moetune::kernels::cpu;
using namespace moetune::kernels::test;

namespace {

constexpr double kFloatTol = 1e-5;

template <class T>
using V = std::vector<T>;

template <class T>
std::vector<Vec> run_rmsnorm(const Vec& in_d, const Vec& w_d, const Vec& g_d, std::int64_t n,
                             std::int64_t d) {
  const V<T> in = cast_vec<T>(in_d), w = cast_vec<T>(w_d), g = cast_vec<T>(g_d);
  V<T> out(n * d), rstd(n), din(n * d), dw(d, T(0));
  rmsnorm_forward(out.data(), rstd.data(), in.data(), w.data(), n, d, 1e-5);
  rmsnorm_backward(din.data(), dw.data(), g.data(), in.data(), w.data(), rstd.data(), n, d);
  return {Vec(out.begin(), out.end()), Vec(din.begin(), din.end()), Vec(dw.begin(), dw.end())};
}

template <class T>
std::vector<Vec> run_attention(const Vec& q_d, const Vec& k_d, const Vec& v_d, const Vec& g_d,
                               std::int64_t b, std::int64_t s, std::int64_t hq, std::int64_t hkv,
                               std::int64_t dh) {
  const V<T> q = cast_vec<T>(q_d), k = cast_vec<T>(k_d), v = cast_vec<T>(v_d), g = cast_vec<T>(g_d);
  V<T> out(q.size()), att(b * hq * s * s), dq(q.size()), dk(k.size()), dv(v.size());
  attention_forward(out.data(), att.data(), q.data(), k.data(), v.data(), b, s, hq, hkv, dh, 3);
  attention_backward(dq.data(), dk.data(), dv.data(), g.data(), q.data(), k.data(), v.data(),
                     att.data(), b, s, hq, hkv, dh);
  return {Vec(out.begin(), out.end()), Vec(dq.begin(), dq.end()), Vec(dk.begin(), dk.end()),
          Vec(dv.begin(), dv.end())};
}

template <class T>
std::vector<Vec> run_swiglu(const Vec& x_d, const Vec& w1_d, const Vec& w3_d, const Vec& w2_d,
                            const Vec& g_d, std::int64_t m, std::int64_t d, std::int64_t f) {
  const V<T> x = cast_vec<T>(x_d), w1 = cast_vec<T>(w1_d), w3 = cast_vec<T>(w3_d),
             w2 = cast_vec<T>(w2_d), g = cast_vec<T>(g_d);
  V<T> out(m * d), h1(m * f), h3(m * f), act(m * f), dx(m * d), dh1(m * f), dh3(m * f);
  V<T> dw1(f * d, T(0)), dw3(f * d, T(0)), dw2(d * f, T(0));
  swiglu_forward(out.data(), h1.data(), h3.data(), act.data(), x.data(), w1.data(), w3.data(),
                 w2.data(), m, d, f);
  swiglu_backward(dx.data(), dw1.data(), dw3.data(), dw2.data(), dh1.data(), dh3.data(), g.data(),
                  x.data(), h1.data(), h3.data(), act.data(), w1.data(), w3.data(), w2.data(), m, d,
                  f);
  return {Vec(out.begin(), out.end()), Vec(dx.begin(), dx.end()), Vec(dw1.begin(), dw1.end()),
          Vec(dw3.begin(), dw3.end()), Vec(dw2.begin(), dw2.end())};
}

template <class T>
std::vector<Vec> run_router_ce(const Vec& logits_d, const Vec& gw_d,
                               const std::vector<std::int32_t>& targets, std::int64_t n,
                               std::int64_t e, std::int64_t k) {
  const V<T> logits = cast_vec<T>(logits_d), gw = cast_vec<T>(gw_d);
  V<T> probs(n * e), weight(n * k), dlogits(n * e), dce(n * e);
  std::vector<std::int32_t> idx(n * k);
  router_forward(probs.data(), idx.data(), weight.data(), logits.data(), n, e, k, true);
  router_backward(dlogits.data(), gw.data(), static_cast<const T*>(nullptr), probs.data(),
                  idx.data(), n, e, k, true);
  const double ce =
      cross_entropy_forward(static_cast<T*>(nullptr), logits.data(), targets.data(), n, e);
  cross_entropy_backward(dce.data(), logits.data(), targets.data(), n, e, 1.0);
  return {Vec(probs.begin(), probs.end()), Vec(weight.begin(), weight.end()),
          Vec(dlogits.begin(), dlogits.end()), Vec(dce.begin(), dce.end()), Vec{ce}};
}

void require_agree(const std::vector<Vec>& f, const std::vector<Vec>& d) {
  REQUIRE(f.size() == d.size());
  for (std::size_t i = 0; i < f.size(); i++) {
    INFO("output " << i);
    CHECK(max_rel_error(f[i], d[i]) < kFloatTol);
  }
}

}  // namespace

TEST_CASE("float and double kernels agree on random inputs", "[kernels][precision]") {
  std::mt19937_64 rng(50);
  SECTION("rmsnorm") {
    const std::int64_t n = 5, d = 64;
    const Vec in = random_vec(rng, n * d), w = random_vec(rng, d), g = random_vec(rng, n * d);
    require_agree(run_rmsnorm<float>(in, w, g, n, d), run_rmsnorm<double>(in, w, g, n, d));
  }
  SECTION("attention") {
    const std::int64_t b = 2, s = 9, hq = 4, hkv = 2, dh = 16;
    const Vec q = random_vec(rng, b * s * hq * dh), k = random_vec(rng, b * s * hkv * dh),
              v = random_vec(rng, b * s * hkv * dh), g = random_vec(rng, b * s * hq * dh);
    require_agree(run_attention<float>(q, k, v, g, b, s, hq, hkv, dh),
                  run_attention<double>(q, k, v, g, b, s, hq, hkv, dh));
  }
  SECTION("swiglu") {
    const std::int64_t m = 5, d = 32, f = 48;
    const Vec x = random_vec(rng, m * d), w1 = random_vec(rng, f * d, -0.3, 0.3),
              w3 = random_vec(rng, f * d, -0.3, 0.3), w2 = random_vec(rng, d * f, -0.3, 0.3),
              g = random_vec(rng, m * d);
    require_agree(run_swiglu<float>(x, w1, w3, w2, g, m, d, f),
                  run_swiglu<double>(x, w1, w3, w2, g, m, d, f));
  }
  SECTION("router and cross-entropy") {
    const std::int64_t n = 6, e = 8, k = 2;
    // Spread logits so the float and double top-k choices are the same.
    Vec logits(n * e);
    for (std::int64_t i = 0; i < n * e; i++)
      logits[i] = double((i * 5) % e) * 0.5 - 1.5;
    const Vec gw = random_vec(rng, n * k);
    const std::vector<std::int32_t> targets = {1, 7, kIgnoreIndex, 0, 3, 3};
    require_agree(run_router_ce<float>(logits, gw, targets, n, e, k),
                  run_router_ce<double>(logits, gw, targets, n, e, k));
  }
}
