// Router: top-k tie rule, Mixtral routing and its backward, the HF load-balancing loss (hand
// example, gradients), z-loss, and Megatron's Sinkhorn routing.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include <catch2/catch.hpp>

#include "grad_check.hpp"
#include "kernels/cpu/moe_losses.hpp"
#include "kernels/cpu/router.hpp"

using namespace moetune::kernels::cpu;
using namespace moetune::kernels::test;

namespace {

// Router logits whose per-token values are at least 0.4 apart, so top-k never sits near a tie and
// a finite-difference step cannot change the choice.
Vec separated_logits(std::mt19937_64& rng, std::int64_t n, std::int64_t e) {
  Vec logits(n * e);
  std::vector<int> rank(e);
  std::uniform_real_distribution<double> noise(-0.1, 0.1);
  for (std::int64_t t = 0; t < n; t++) {
    std::iota(rank.begin(), rank.end(), 0);
    std::shuffle(rank.begin(), rank.end(), rng);
    for (std::int64_t x = 0; x < e; x++)
      logits[t * e + x] = 0.6 * rank[x] - 1.0 + noise(rng);
  }
  return logits;
}

struct Routed {
  Vec probs, weight;
  std::vector<std::int32_t> idx;
};

Routed route(const Vec& logits, std::int64_t n, std::int64_t e, std::int64_t k, bool normalize) {
  Routed r{Vec(n * e), Vec(n * k), std::vector<std::int32_t>(n * k)};
  router_forward(r.probs.data(), r.idx.data(), r.weight.data(), logits.data(), n, e, k, normalize);
  return r;
}

}  // namespace

TEST_CASE("top-k is largest first and breaks ties toward the lower index", "[kernels][router]") {
  const std::vector<double> scores = {0.2, 0.5, 0.5, 0.1, 1, 1, 1, 1};
  std::vector<std::int32_t> idx(4);
  topk_rows(idx.data(), scores.data(), 2, 4, 2);
  CHECK(idx == std::vector<std::int32_t>{1, 2, 0, 1});
  std::vector<std::int32_t> idx3(3);
  topk_rows(idx3.data(), scores.data() + 4, 1, 4, 3);
  CHECK(idx3 == std::vector<std::int32_t>{0, 1, 2});
}

TEST_CASE("router forward: softmax, top-k and Mixtral's renormalised weights",
          "[kernels][router]") {
  // Logits log(p) give back p: probabilities 0.1, 0.4, 0.3, 0.2 on experts 0..3.
  const Vec logits = {std::log(0.1), std::log(0.4), std::log(0.3), std::log(0.2)};
  const Routed norm = route(logits, 1, 4, 2, true);
  CHECK(norm.idx == std::vector<std::int32_t>{1, 2});
  CHECK(norm.probs[1] == Approx(0.4).epsilon(1e-14));
  CHECK(norm.weight[0] == Approx(0.4 / 0.7).epsilon(1e-14));
  CHECK(norm.weight[1] == Approx(0.3 / 0.7).epsilon(1e-14));
  const Routed raw = route(logits, 1, 4, 2, false);
  CHECK(raw.weight[0] == Approx(0.4).epsilon(1e-14));
  CHECK(raw.weight[1] == Approx(0.3).epsilon(1e-14));
}

TEST_CASE("router backward matches finite differences", "[kernels][router][grad]") {
  std::mt19937_64 rng(20);
  const std::int64_t n = 5, e = 4, k = 2;
  Vec logits = separated_logits(rng, n, e);
  const Vec gw = random_vec(rng, n * k), gp = random_vec(rng, n * e);
  for (bool normalize : {true, false}) {
    INFO("normalize_topk " << normalize);
    const Routed base = route(logits, n, e, k, normalize);
    // L = <topk_weight, gw> + <probs, gp>; gp stands in for a loss on probs (the aux loss).
    auto loss = [&] {
      const Routed r = route(logits, n, e, k, normalize);
      REQUIRE(r.idx == base.idx);
      return dot(r.weight, gw) + dot(r.probs, gp);
    };
    Vec dlogits(n * e);
    router_backward(dlogits.data(), gw.data(), gp.data(), base.probs.data(), base.idx.data(), n, e,
                    k, normalize);
    require_grad_close(dlogits, numeric_grad(logits, loss), "d logits");
    // Without dprobs only the weights' gradient flows.
    auto weight_loss = [&] { return dot(route(logits, n, e, k, normalize).weight, gw); };
    router_backward(dlogits.data(), gw.data(), static_cast<const double*>(nullptr),
                    base.probs.data(), base.idx.data(), n, e, k, normalize);
    require_grad_close(dlogits, numeric_grad(logits, weight_loss), "d logits (weights only)");
  }
}

TEST_CASE("aux loss on a hand-computed 3-token, 2-expert, top-1 example", "[kernels][aux_loss]") {
  // probs: t0 [0.8, 0.2] -> e0, t1 [0.6, 0.4] -> e0, t2 [0.3, 0.7] -> e1.
  // tokens_per_expert = [2/3, 1/3], router_prob_per_expert = [1.7/3, 1.3/3]
  // loss = 2 * (2/3 * 1.7/3 + 1/3 * 1.3/3) = 9.4 / 9.
  const Vec logits = {std::log(0.8), std::log(0.2), std::log(0.6),
                      std::log(0.4), std::log(0.3), std::log(0.7)};
  const Routed r = route(logits, 3, 2, 1, true);
  CHECK(r.idx == std::vector<std::int32_t>{0, 0, 1});
  CHECK(aux_loss_forward(r.probs.data(), r.idx.data(), 3, 2, 1) == Approx(9.4 / 9).epsilon(1e-14));
  // HF sums over the K slots without dividing by K: uniform probs with balanced top-2 give 2.
  const Vec uniform(4 * 4, 0.25);
  const std::vector<std::int32_t> balanced = {0, 1, 2, 3, 0, 1, 2, 3};
  CHECK(aux_loss_forward(uniform.data(), balanced.data(), 4, 4, 2) == Approx(2.0));
}

TEST_CASE("aux loss statistics add up across row blocks", "[kernels][aux_loss]") {
  std::mt19937_64 rng(21);
  const std::int64_t n = 5, e = 4, k = 2;
  const Routed r = route(separated_logits(rng, n, e), n, e, k, true);
  std::vector<std::int64_t> counts(e, 0);
  Vec prob_sum(e, 0.0);
  aux_loss_accumulate(counts.data(), prob_sum.data(), r.probs.data(), r.idx.data(), 2, e, k);
  aux_loss_accumulate(counts.data(), prob_sum.data(), r.probs.data() + 2 * e, r.idx.data() + 2 * k,
                      3, e, k);
  CHECK(std::accumulate(counts.begin(), counts.end(), std::int64_t(0)) == n * k);
  CHECK(aux_loss_from_stats(counts.data(), prob_sum.data(), n, e) ==
        Approx(aux_loss_forward(r.probs.data(), r.idx.data(), n, e, k)).epsilon(1e-14));
}

TEST_CASE("aux loss backward matches finite differences", "[kernels][aux_loss][grad]") {
  std::mt19937_64 rng(22);
  const std::int64_t n = 5, e = 4, k = 2;
  const double coef = 0.37;
  Vec logits = separated_logits(rng, n, e);
  const Routed base = route(logits, n, e, k, true);
  std::vector<std::int64_t> counts(e, 0);
  Vec prob_sum(e, 0.0);
  aux_loss_accumulate(counts.data(), prob_sum.data(), base.probs.data(), base.idx.data(), n, e, k);

  // With respect to probs, the routing fixed.
  Vec probs = base.probs;
  auto loss_p = [&] { return coef * aux_loss_forward(probs.data(), base.idx.data(), n, e, k); };
  Vec dprobs(n * e, 0.0);
  aux_loss_backward(dprobs.data(), counts.data(), n, n, e, coef);
  require_grad_close(dprobs, numeric_grad(probs, loss_p), "d probs");

  // Through the router, with respect to the logits.
  auto loss_l = [&] {
    const Routed r = route(logits, n, e, k, true);
    REQUIRE(r.idx == base.idx);
    return coef * aux_loss_forward(r.probs.data(), r.idx.data(), n, e, k);
  };
  const Vec no_weight_grad(n * k, 0.0);
  Vec dlogits(n * e);
  router_backward(dlogits.data(), no_weight_grad.data(), dprobs.data(), base.probs.data(),
                  base.idx.data(), n, e, k, true);
  require_grad_close(dlogits, numeric_grad(logits, loss_l), "d logits");
}

TEST_CASE("z-loss value and backward", "[kernels][z_loss][grad]") {
  std::mt19937_64 rng(23);
  const std::int64_t n = 5, e = 4;
  Vec logits = random_vec(rng, n * e, -2, 2);
  double expect = 0;
  for (std::int64_t t = 0; t < n; t++) {
    double s = 0;
    for (std::int64_t x = 0; x < e; x++)
      s += std::exp(logits[t * e + x]);
    expect += std::log(s) * std::log(s) / n;
  }
  CHECK(z_loss_forward(logits.data(), n, e) == Approx(expect).epsilon(1e-14));
  const double coef = 0.01;
  auto loss = [&] { return coef * z_loss_forward(logits.data(), n, e); };
  Vec dlogits(n * e, 0.5);  // accumulates
  z_loss_backward(dlogits.data(), logits.data(), n, e, coef);
  for (double& x : dlogits)
    x -= 0.5;
  require_grad_close(dlogits, numeric_grad(logits, loss), "d logits");
}

TEST_CASE("sinkhorn balances columns to 1/E and rows to 1/N", "[kernels][sinkhorn]") {
  std::mt19937_64 rng(24);
  const std::int64_t n = 8, e = 4;
  const Vec logits = random_vec(rng, n * e, -2, 2);
  Vec out(n * e);
  const std::int64_t iters = sinkhorn(out.data(), logits.data(), n, e, 1e-6, 1000);
  CHECK(iters > 1);
  CHECK(iters < 1000);
  // Columns are exact after the last d1 update up to Megatron's 1e-8 in the denominator; rows are
  // off by that 1e-8 (~5e-8 relative here) plus the tolerance. 1e-5 relative covers both.
  for (std::int64_t x = 0; x < e; x++) {
    double s = 0;
    for (std::int64_t t = 0; t < n; t++)
      s += out[t * e + x];
    CHECK(s == Approx(1.0 / e).epsilon(1e-5));
  }
  for (std::int64_t t = 0; t < n; t++) {
    double s = 0;
    for (std::int64_t x = 0; x < e; x++)
      s += out[t * e + x];
    CHECK(s == Approx(1.0 / n).epsilon(1e-5));
  }
  // A cap on the rounds is honoured; one round is what Megatron's loop does at least.
  CHECK(sinkhorn(out.data(), logits.data(), n, e, 0.0, 3) == 3);
}

TEST_CASE("sinkhorn routing spreads tokens that all prefer one expert", "[kernels][sinkhorn]") {
  std::mt19937_64 rng(25);
  const std::int64_t n = 8, e = 4;
  Vec logits = random_vec(rng, n * e, -0.5, 0.5);
  for (std::int64_t t = 0; t < n; t++)
    logits[t * e] += 3.0;  // every token's favourite: expert 0
  Vec scores(n * e), weight(n);
  std::vector<std::int32_t> idx(n), greedy(n);
  topk_rows(greedy.data(), logits.data(), n, e, 1);
  CHECK(std::count(greedy.begin(), greedy.end(), 0) == n);
  router_sinkhorn_forward(scores.data(), idx.data(), weight.data(), logits.data(), n, e, 1, 1e-10,
                          1000);
  for (std::int32_t x = 0; x < e; x++)
    CHECK(std::count(idx.begin(), idx.end(), x) <= n / 2);
  // Top-1 weights are the sigmoid of the chosen logit (Megatron's activation for k == 1).
  for (std::int64_t t = 0; t < n; t++) {
    CHECK(weight[t] == Approx(1 / (1 + std::exp(-logits[t * e + idx[t]]))).epsilon(1e-14));
  }
}

TEST_CASE("sinkhorn routing backward matches finite differences", "[kernels][sinkhorn][grad]") {
  std::mt19937_64 rng(26);
  const std::int64_t n = 5, e = 4;
  Vec logits = separated_logits(rng, n, e);
  for (std::int64_t k : {1, 2}) {
    INFO("k " << k);
    const Vec gw = random_vec(rng, n * k);
    Vec scores(n * e), weight(n * k);
    std::vector<std::int32_t> idx(n * k);
    router_sinkhorn_forward(scores.data(), idx.data(), weight.data(), logits.data(), n, e, k, 1e-10,
                            1000);
    auto loss = [&] {
      Vec s(n * e), w(n * k);
      std::vector<std::int32_t> i(n * k);
      router_sinkhorn_forward(s.data(), i.data(), w.data(), logits.data(), n, e, k, 1e-10, 1000);
      REQUIRE(i == idx);
      return dot(w, gw);
    };
    Vec dlogits(n * e);
    router_sinkhorn_backward(dlogits.data(), gw.data(), scores.data(), idx.data(), n, e, k);
    require_grad_close(dlogits, numeric_grad(logits, loss), "d logits");
  }
}
