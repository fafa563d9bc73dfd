// Cross-entropy, AdamW, gradient-norm clipping, embedding and bf16 casts: hand-computed values and
// finite-difference gradients.
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include <catch2/catch.hpp>

#include "core/error.hpp"
#include "grad_check.hpp"
#include "kernels/cpu/casts.hpp"
#include "kernels/cpu/cross_entropy.hpp"
#include "kernels/cpu/embedding.hpp"
#include "kernels/cpu/optimizer.hpp"

using namespace moetune::kernels::cpu;
using namespace moetune::kernels::test;

TEST_CASE("cross-entropy is -log softmax at the target on a 2x3 example", "[kernels][ce]") {
  // Row 0: logits 1, 2, 3, target 2: -log(e^3 / (e + e^2 + e^3)) = log(1 + e^-1 + e^-2).
  // Row 1: equal logits, target 0: log 3. Row 2 is ignored.
  const Vec logits = {1, 2, 3, 1, 1, 1, 5, -5, 0};
  const std::vector<std::int32_t> targets = {2, 0, kIgnoreIndex};
  const double row0 = std::log(1 + std::exp(-1.0) + std::exp(-2.0)), row1 = std::log(3.0);
  Vec losses(3, -1.0);
  CHECK(cross_entropy_forward(losses.data(), logits.data(), targets.data(), 3, 3) ==
        Approx((row0 + row1) / 2).epsilon(1e-15));
  CHECK(losses[0] == Approx(row0).epsilon(1e-15));
  CHECK(losses[1] == Approx(row1).epsilon(1e-15));
  CHECK(losses[2] == 0);
  CHECK(count_targets(targets.data(), 3) == 2);

  // The fused backward: (softmax - one_hot) / count; row 1 is (1/3 - 1, 1/3, 1/3) / 2.
  Vec dlogits(9);
  cross_entropy_backward(dlogits.data(), logits.data(), targets.data(), 3, 3, 1.0);
  CHECK(dlogits[3] == Approx((1.0 / 3 - 1) / 2).epsilon(1e-15));
  CHECK(dlogits[4] == Approx(1.0 / 6).epsilon(1e-15));
  CHECK(Vec(dlogits.begin() + 6, dlogits.end()) == Vec{0, 0, 0});

  // In place over the logits, as the LM head reuses its buffer.
  Vec in_place = logits;
  cross_entropy_backward(in_place.data(), in_place.data(), targets.data(), 3, 3, 1.0);
  CHECK(in_place == dlogits);

  const std::vector<std::int32_t> bad = {2, 3, 0};
  CHECK_THROWS_AS(cross_entropy_forward(losses.data(), logits.data(), bad.data(), 3, 3),
                  moetune::InternalError);
}

TEST_CASE("cross-entropy backward matches finite differences", "[kernels][ce][grad]") {
  std::mt19937_64 rng(40);
  const std::int64_t n = 5, v = 11;
  Vec logits = random_vec(rng, n * v, -3, 3);
  const std::vector<std::int32_t> targets = {3, kIgnoreIndex, 0, 10, 3};
  const double dloss = 1.7;
  auto loss = [&] {
    return dloss * cross_entropy_forward(static_cast<double*>(nullptr), logits.data(),
                                         targets.data(), n, v);
  };
  Vec dlogits(n * v);
  cross_entropy_backward(dlogits.data(), logits.data(), targets.data(), n, v, dloss);
  require_grad_close(dlogits, numeric_grad(logits, loss), "d logits");
}

TEST_CASE("AdamW one step equals the hand-computed PyTorch update", "[kernels][adamw]") {
  AdamWParams hp;
  hp.lr = 0.1;
  hp.beta1 = 0.9;
  hp.beta2 = 0.999;
  hp.eps = 1e-8;
  hp.weight_decay = 0.01;
  Vec p = {1.0, -2.0}, m = {0, 0}, v = {0, 0};
  const Vec g = {0.5, -1e-3};
  adamw_step(p.data(), m.data(), v.data(), g.data(), 2, hp, 1, 1.0);
  // p0: decay 1 * (1 - 0.1 * 0.01) = 0.999; m = 0.05, v = 0.00025; mhat = 0.05 / 0.1 = 0.5,
  //     vhat = 0.00025 / 0.001 = 0.25; step 0.1 * 0.5 / (0.5 + 1e-8).
  CHECK(m[0] == Approx(0.05).epsilon(1e-15));
  CHECK(v[0] == Approx(0.00025).epsilon(1e-15));
  CHECK(p[0] == Approx(0.999 - 0.1 * 0.5 / (0.5 + 1e-8)).epsilon(1e-14));
  // p1: a tiny gradient still moves the weight by about lr (Adam is scale-free):
  //     mhat = -1e-3, vhat = 1e-6, step 0.1 * -1e-3 / (1e-3 + 1e-8).
  CHECK(p[1] == Approx(-2.0 * 0.999 + 0.1 * 1e-3 / (1e-3 + 1e-8)).epsilon(1e-14));

  // grad_scale multiplies the gradient before anything else (the clip factor).
  Vec p2 = {1.0, -2.0}, m2 = {0, 0}, v2 = {0, 0};
  const Vec g2 = {1.0, -2e-3};
  adamw_step(p2.data(), m2.data(), v2.data(), g2.data(), 2, hp, 1, 0.5);
  CHECK(p2 == p);
  CHECK(m2 == m);
}

TEST_CASE("AdamW bias correction uses the step count", "[kernels][adamw]") {
  AdamWParams hp;
  hp.weight_decay = 0;
  // A constant gradient: after any number of steps mhat = g and vhat = g^2 exactly, so every step
  // moves by lr * g / (|g| + eps).
  Vec p = {0.0}, m = {0.0}, v = {0.0};
  const Vec g = {0.3};
  for (std::int64_t step = 1; step <= 5; step++) {
    adamw_step(p.data(), m.data(), v.data(), g.data(), 1, hp, step, 1.0);
  }
  CHECK(p[0] == Approx(-5 * hp.lr * 0.3 / (0.3 + hp.eps)).epsilon(1e-12));
  CHECK_THROWS_AS(adamw_step(p.data(), m.data(), v.data(), g.data(), 1, hp, 0, 1.0),
                  moetune::InternalError);
}

TEST_CASE("gradient norm and clip factor", "[kernels][adamw]") {
  const std::vector<float> x = {3.0f, 4.0f};
  CHECK(sum_of_squares(x.data(), 2) == 25.0);
  CHECK(clip_scale(5.0, 1.0) == Approx(1.0 / (5.0 + 1e-6)).epsilon(1e-15));
  CHECK(clip_scale(5.0, 10.0) == 1.0);
  CHECK(clip_scale(5.0, 0.0) == 1.0);
  Vec y = {3, 4};
  scale_inplace(y.data(), 2, 0.5);
  CHECK(y == Vec{1.5, 2.0});
}

TEST_CASE("embedding gathers rows and scatter-adds repeated tokens", "[kernels][embedding][grad]") {
  std::mt19937_64 rng(41);
  const std::int64_t n = 5, v = 11, d = 7;
  const std::vector<std::int32_t> tokens = {3, 7, 3, 0, 10};
  Vec table = random_vec(rng, v * d);
  const Vec g = random_vec(rng, n * d);
  Vec out(n * d);
  embedding_forward(out.data(), table.data(), tokens.data(), n, v, d);
  for (std::int64_t i = 0; i < n; i++) {
    for (std::int64_t j = 0; j < d; j++)
      CHECK(out[i * d + j] == table[tokens[i] * d + j]);
  }
  auto loss = [&] {
    Vec o(n * d);
    embedding_forward(o.data(), table.data(), tokens.data(), n, v, d);
    return dot(o, g);
  };
  Vec dtable(v * d, 0.0);
  embedding_backward(dtable.data(), g.data(), tokens.data(), n, v, d);
  require_grad_close(dtable, numeric_grad(table, loss), "d table");
  const std::vector<std::int32_t> bad = {11};
  CHECK_THROWS_AS(embedding_forward(out.data(), table.data(), bad.data(), 1, v, d),
                  moetune::InternalError);
}

TEST_CASE("bf16 casts round to nearest even and keep NaN and infinities", "[kernels][casts]") {
  CHECK(bf16_from_float(1.0f) == 0x3f80);
  CHECK(bf16_from_float(-2.0f) == 0xc000);
  // bf16 keeps 7 mantissa bits: 1 + 2^-8 is a tie that goes to the even 1.0; 1 + 3 * 2^-8 is a
  // tie between 0x3f81 (odd) and 0x3f82 (even); just above a tie rounds up.
  CHECK(bf16_from_float(1.0f + 0x1p-8f) == 0x3f80);
  CHECK(bf16_from_float(1.0f + 3 * 0x1p-8f) == 0x3f82);
  CHECK(bf16_from_float(1.0f + 0x1p-8f + 0x1p-20f) == 0x3f81);
  CHECK(std::isnan(float_from_bf16(bf16_from_float(std::numeric_limits<float>::quiet_NaN()))));
  CHECK(float_from_bf16(bf16_from_float(std::numeric_limits<float>::infinity())) ==
        std::numeric_limits<float>::infinity());
  CHECK(bf16_from_float(std::numeric_limits<float>::max()) == 0x7f80);  // rounds up to inf
  const std::vector<float> values = {0.0f, -0.0f, 1.5f, -3.25f, 0x1p-130f, 65280.0f};
  std::vector<std::uint16_t> half(values.size());
  std::vector<float> back(values.size());
  cast_float_to_bf16(half.data(), values.data(), std::int64_t(values.size()));
  cast_bf16_to_float(back.data(), half.data(), std::int64_t(values.size()));
  CHECK(back == values);  // all exactly representable in bf16
}
