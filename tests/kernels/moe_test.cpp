// Token dispatch (plan, permute, unpermute-combine, capacity drops) and the SwiGLU experts, single
// and grouped: hand examples, dispatch-then-combine invariants, finite-difference gradients.
#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include <catch2/catch.hpp>

#include "grad_check.hpp"
#include "kernels/cpu/permute.hpp"
#include "kernels/cpu/swiglu.hpp"

using namespace moetune::kernels::cpu;
using namespace moetune::kernels::test;

namespace {

using Ids = std::vector<std::int64_t>;

struct Plan {
  Ids counts, offsets, slot_row, row_slot;
  std::int64_t dropped = 0;
  std::int64_t rows() const { return offsets.back(); }
};

Plan make_plan(const std::vector<std::int32_t>& idx, std::int64_t n, std::int64_t e, std::int64_t k,
               std::int64_t capacity) {
  Plan p{Ids(e), Ids(e + 1), Ids(n * k), Ids(n * k), 0};
  p.dropped = dispatch_plan(p.counts.data(), p.offsets.data(), p.slot_row.data(), p.row_slot.data(),
                            idx.data(), n, e, k, capacity);
  return p;
}

// Four tokens, three experts, top-2.
const std::vector<std::int32_t> kIdx = {2, 0, 1, 2, 0, 1, 2, 1};

std::vector<std::int32_t> random_topk(std::mt19937_64& rng, std::int64_t n, std::int64_t e,
                                      std::int64_t k) {
  std::vector<std::int32_t> idx(n * k);
  std::vector<std::int32_t> experts(e);
  for (std::int64_t t = 0; t < n; t++) {
    for (std::int64_t x = 0; x < e; x++)
      experts[x] = std::int32_t(x);
    std::shuffle(experts.begin(), experts.end(), rng);
    for (std::int64_t j = 0; j < k; j++)
      idx[t * k + j] = experts[j];
  }
  return idx;
}

}  // namespace

TEST_CASE("dispatch plan groups slots by expert in token order", "[kernels][permute]") {
  const Plan p = make_plan(kIdx, 4, 3, 2, 0);
  CHECK(p.dropped == 0);
  CHECK(p.counts == Ids{2, 3, 3});
  CHECK(p.offsets == Ids{0, 2, 5, 8});
  CHECK(p.row_slot == Ids{1, 4, 2, 5, 7, 0, 3, 6});
  CHECK(p.slot_row == Ids{5, 0, 2, 6, 1, 3, 7, 4});
}

TEST_CASE("capacity drops the slots beyond the first `capacity` of each expert",
          "[kernels][permute]") {
  CHECK(expert_capacity(4, 3, 2, 1.0) == 3);  // ceil(8 / 3)
  CHECK(expert_capacity(4, 3, 2, 0.5) == 2);  // ceil(4 / 3)
  const Plan p = make_plan(kIdx, 4, 3, 2, 2);
  CHECK(p.dropped == 2);
  CHECK(p.counts == Ids{2, 2, 2});
  CHECK(p.offsets == Ids{0, 2, 4, 6});
  CHECK(p.row_slot == Ids{1, 4, 2, 5, 0, 3, -1, -1});
  CHECK(p.slot_row == Ids{4, 0, 2, 5, 1, 3, -1, -1});

  // A dropped slot contributes nothing: token 3 keeps no expert at all here.
  const std::int64_t d = 3;
  const Vec x = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
  Vec permuted(8 * d), out(4 * d);
  const Vec half(8, 0.5);
  permute_forward(permuted.data(), x.data(), p.row_slot.data(), p.rows(), 2, d);
  unpermute_combine_forward(out.data(), permuted.data(), half.data(), p.slot_row.data(), 4, 2, d);
  CHECK(Vec(out.begin(), out.begin() + 9) == Vec(x.begin(), x.begin() + 9));
  CHECK(Vec(out.begin() + 9, out.end()) == Vec{0, 0, 0});
}

TEST_CASE("dispatch then combine returns the input", "[kernels][permute]") {
  std::mt19937_64 rng(30);
  const std::int64_t n = 5, e = 4, k = 2, d = 7;
  const auto idx = random_topk(rng, n, e, k);
  const Plan p = make_plan(idx, n, e, k, 0);
  const Vec x = random_vec(rng, n * d);
  Vec permuted(n * k * d), out(n * d);
  permute_forward(permuted.data(), x.data(), p.row_slot.data(), p.rows(), k, d);
  // Weights summing to one per token: identity experts give back x.
  Vec w = random_vec(rng, n * k, 0.1, 1.0);
  for (std::int64_t t = 0; t < n; t++) {
    const double s = w[t * k] + w[t * k + 1];
    w[t * k] /= s;
    w[t * k + 1] /= s;
  }
  unpermute_combine_forward(out.data(), permuted.data(), w.data(), p.slot_row.data(), n, k, d);
  CHECK(max_rel_error(out, x) < 1e-15);
  // Unit weights: every token comes back K times.
  const Vec ones(n * k, 1.0);
  unpermute_combine_forward(out.data(), permuted.data(), ones.data(), p.slot_row.data(), n, k, d);
  for (std::int64_t i = 0; i < n * d; i++)
    CHECK(out[i] == Approx(k * x[i]).epsilon(1e-15));
}

TEST_CASE("permute and unpermute-combine backwards match finite differences",
          "[kernels][permute][grad]") {
  std::mt19937_64 rng(31);
  const std::int64_t n = 5, e = 4, k = 2, d = 7;
  const auto idx = random_topk(rng, n, e, k);
  for (std::int64_t capacity : {0, 2}) {
    INFO("capacity " << capacity);
    const Plan p = make_plan(idx, n, e, k, capacity);
    if (capacity > 0) CHECK(p.dropped > 0);
    const std::int64_t r = p.rows();

    Vec x = random_vec(rng, n * d), g_rows = random_vec(rng, r * d);
    auto permute_loss = [&] {
      Vec out(r * d);
      permute_forward(out.data(), x.data(), p.row_slot.data(), r, k, d);
      return dot(out, g_rows);
    };
    Vec dx(n * d, 9.0);  // overwritten
    permute_backward(dx.data(), g_rows.data(), p.slot_row.data(), n, k, d);
    require_grad_close(dx, numeric_grad(x, permute_loss), "permute: d in");

    Vec y = random_vec(rng, r * d), w = random_vec(rng, n * k), g = random_vec(rng, n * d);
    auto combine_loss = [&] {
      Vec out(n * d);
      unpermute_combine_forward(out.data(), y.data(), w.data(), p.slot_row.data(), n, k, d);
      return dot(out, g);
    };
    Vec dy(r * d), dw(n * k, 9.0);
    unpermute_combine_backward(dy.data(), dw.data(), g.data(), y.data(), w.data(),
                               p.slot_row.data(), n, k, d);
    require_grad_close(dy, numeric_grad(y, combine_loss), "combine: d expert_out");
    require_grad_close(dw, numeric_grad(w, combine_loss), "combine: d topk_weight");
  }
}

namespace {

struct Ffn {
  std::int64_t m, d, f;
  Vec x, w1, w3, w2;
};

Vec swiglu_out(const Ffn& s) {
  Vec out(s.m * s.d), h1(s.m * s.f), h3(s.m * s.f), act(s.m * s.f);
  swiglu_forward(out.data(), h1.data(), h3.data(), act.data(), s.x.data(), s.w1.data(), s.w3.data(),
                 s.w2.data(), s.m, s.d, s.f);
  return out;
}

}  // namespace

TEST_CASE("swiglu forward matches the formula", "[kernels][swiglu]") {
  // One row, D = 1, F = 2: out = sum_f w2[f] * silu(w1[f] x) * w3[f] x.
  const Vec x = {0.5}, w1 = {1.0, -2.0}, w3 = {3.0, 0.25}, w2 = {0.7, -1.1};
  Ffn s{1, 1, 2, x, w1, w3, w2};
  auto silu = [](double z) { return z / (1 + std::exp(-z)); };
  const double expect = 0.7 * silu(0.5) * 1.5 + -1.1 * silu(-1.0) * 0.125;
  CHECK(swiglu_out(s)[0] == Approx(expect).epsilon(1e-14));
}

TEST_CASE("swiglu backward matches finite differences", "[kernels][swiglu][grad]") {
  std::mt19937_64 rng(32);
  Ffn s{5, 7, 9, {}, {}, {}, {}};
  s.x = random_vec(rng, s.m * s.d);
  s.w1 = random_vec(rng, s.f * s.d, -0.6, 0.6);
  s.w3 = random_vec(rng, s.f * s.d, -0.6, 0.6);
  s.w2 = random_vec(rng, s.d * s.f, -0.6, 0.6);
  const Vec g = random_vec(rng, s.m * s.d);
  auto loss = [&] { return dot(swiglu_out(s), g); };

  Vec out(s.m * s.d), h1(s.m * s.f), h3(s.m * s.f), act(s.m * s.f);
  swiglu_forward(out.data(), h1.data(), h3.data(), act.data(), s.x.data(), s.w1.data(), s.w3.data(),
                 s.w2.data(), s.m, s.d, s.f);
  const double pre = 0.125;  // weight gradients accumulate onto this
  Vec dx(s.m * s.d), dw1(s.f * s.d, pre), dw3(s.f * s.d, pre), dw2(s.d * s.f, pre);
  Vec dh1(s.m * s.f), dh3(s.m * s.f);
  swiglu_backward(dx.data(), dw1.data(), dw3.data(), dw2.data(), dh1.data(), dh3.data(), g.data(),
                  s.x.data(), h1.data(), h3.data(), act.data(), s.w1.data(), s.w3.data(),
                  s.w2.data(), s.m, s.d, s.f);
  for (Vec* dw : {&dw1, &dw3, &dw2}) {
    for (double& v : *dw)
      v -= pre;
  }
  require_grad_close(dx, numeric_grad(s.x, loss), "d x");
  require_grad_close(dw1, numeric_grad(s.w1, loss), "d w1");
  require_grad_close(dw3, numeric_grad(s.w3, loss), "d w3");
  require_grad_close(dw2, numeric_grad(s.w2, loss), "d w2");
}

TEST_CASE("grouped swiglu equals one call per expert and its backward matches finite differences",
          "[kernels][swiglu][grad]") {
  std::mt19937_64 rng(33);
  const std::int64_t e = 3, d = 7, f = 9;
  const Ids counts = {2, 0, 3};  // expert 1 gets no rows
  const std::int64_t r = 5;
  Vec x = random_vec(rng, r * d), w1 = random_vec(rng, e * f * d, -0.6, 0.6),
      w3 = random_vec(rng, e * f * d, -0.6, 0.6), w2 = random_vec(rng, e * d * f, -0.6, 0.6);
  const Vec g = random_vec(rng, r * d);
  Vec out(r * d), h1(r * f), h3(r * f), act(r * f);
  auto forward = [&] {
    swiglu_grouped_forward(out.data(), h1.data(), h3.data(), act.data(), x.data(), w1.data(),
                           w3.data(), w2.data(), counts.data(), e, d, f);
  };
  forward();

  // Expert 2 alone on its rows 2..4.
  Ffn last{3,
           d,
           f,
           Vec(x.begin() + 2 * d, x.end()),
           Vec(w1.begin() + 2 * f * d, w1.end()),
           Vec(w3.begin() + 2 * f * d, w3.end()),
           Vec(w2.begin() + 2 * d * f, w2.end())};
  // The same GEMMs on other addresses: at most rounding.
  CHECK(max_rel_error(Vec(out.begin() + 2 * d, out.end()), swiglu_out(last)) < 1e-14);

  auto loss = [&] {
    forward();
    return dot(out, g);
  };
  forward();
  Vec dx(r * d), dw1(e * f * d, 0.0), dw3(e * f * d, 0.0), dw2(e * d * f, 0.0);
  Vec dh1(r * f), dh3(r * f);
  swiglu_grouped_backward(dx.data(), dw1.data(), dw3.data(), dw2.data(), dh1.data(), dh3.data(),
                          g.data(), x.data(), h1.data(), h3.data(), act.data(), w1.data(),
                          w3.data(), w2.data(), counts.data(), e, d, f);
  require_grad_close(dx, numeric_grad(x, loss), "d x");
  require_grad_close(dw1, numeric_grad(w1, loss), "d w1");
  require_grad_close(dw3, numeric_grad(w3, loss), "d w3");
  require_grad_close(dw2, numeric_grad(w2, loss), "d w2");
}
