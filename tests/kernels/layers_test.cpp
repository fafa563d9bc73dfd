// gemm, RMSNorm, RoPE and softmax: values against direct formulas, backwards against finite
// differences (double precision, tolerance in grad_check.hpp).
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include <catch2/catch.hpp>

#include "core/error.hpp"
#include "grad_check.hpp"
#include "kernels/cpu/gemm.hpp"
#include "kernels/cpu/rmsnorm.hpp"
#include "kernels/cpu/rope.hpp"
#include "kernels/cpu/softmax.hpp"

using namespace moetune::kernels::cpu;
using namespace moetune::kernels::test;

TEST_CASE("gemm matches a triple loop for every transpose and padded leading dimensions",
          "[kernels][gemm]") {
  std::mt19937_64 rng(1);
  const std::int64_t m = 5, n = 7, k = 3, pad = 2;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      const std::int64_t lda = (ta ? m : k) + pad, ldb = (tb ? k : n) + pad, ldc = n + pad;
      Vec a = random_vec(rng, (ta ? k : m) * lda);
      Vec b = random_vec(rng, (tb ? n : k) * ldb);
      Vec c = random_vec(rng, m * ldc);
      Vec expect = c;
      for (std::int64_t i = 0; i < m; i++) {
        for (std::int64_t j = 0; j < n; j++) {
          double s = 0;
          for (std::int64_t p = 0; p < k; p++) {
            s += (ta ? a[p * lda + i] : a[i * lda + p]) * (tb ? b[j * ldb + p] : b[p * ldb + j]);
          }
          expect[i * ldc + j] = 0.5 * s + 2.0 * c[i * ldc + j];
        }
      }
      gemm<double>(ta, tb, m, n, k, 0.5, a.data(), lda, b.data(), ldb, 2.0, c.data(), ldc);
      INFO("trans_a=" << ta << " trans_b=" << tb);
      // Exact arithmetic differs only by summation order: a few ulps of O(1) values.
      CHECK(max_rel_error(c, expect) < 1e-14);
    }
  }
}

TEST_CASE("gemm with beta 0 ignores NaN in C, and k == 0 scales C", "[kernels][gemm]") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  std::vector<double> a = {1, 2, 3, 4}, b = {1, 0, 0, 1}, c = {nan, nan, nan, nan};
  gemm<double>(false, false, 2, 2, 2, 1.0, a.data(), 2, b.data(), 2, 0.0, c.data(), 2);
  CHECK(c == std::vector<double>{1, 2, 3, 4});
  gemm<double>(false, false, 2, 2, 0, 1.0, a.data(), 1, b.data(), 2, 3.0, c.data(), 2);
  CHECK(c == std::vector<double>{3, 6, 9, 12});
  CHECK_THROWS_AS(
      gemm<double>(false, false, 2, 2, 2, 1.0, a.data(), 1, b.data(), 2, 0.0, c.data(), 2),
      moetune::InternalError);
}

TEST_CASE("rmsnorm forward matches the formula on a hand example", "[kernels][rmsnorm]") {
  // Row [3, 4]: mean square 12.5, so y = x / sqrt(12.5) * w.
  std::vector<double> in = {3, 4}, w = {1, 2}, out(2), rstd(1);
  rmsnorm_forward(out.data(), rstd.data(), in.data(), w.data(), 1, 2, 0.0);
  CHECK(rstd[0] == Approx(1 / std::sqrt(12.5)).epsilon(1e-15));
  CHECK(out[0] == Approx(3 / std::sqrt(12.5)).epsilon(1e-15));
  CHECK(out[1] == Approx(8 / std::sqrt(12.5)).epsilon(1e-15));
}

TEST_CASE("rmsnorm backward matches finite differences", "[kernels][rmsnorm][grad]") {
  std::mt19937_64 rng(2);
  const std::int64_t n = 5, d = 7;
  const double eps = 1e-5;
  Vec in = random_vec(rng, n * d), w = random_vec(rng, d, 0.5, 1.5), g = random_vec(rng, n * d);
  auto loss = [&] {
    Vec out(n * d), rstd(n);
    rmsnorm_forward(out.data(), rstd.data(), in.data(), w.data(), n, d, eps);
    return dot(out, g);
  };
  Vec out(n * d), rstd(n), din(n * d);
  rmsnorm_forward(out.data(), rstd.data(), in.data(), w.data(), n, d, eps);
  Vec dw(d, 0.25);  // accumulates: starts from a non-zero value
  rmsnorm_backward(din.data(), dw.data(), g.data(), in.data(), w.data(), rstd.data(), n, d);
  for (double& x : dw)
    x -= 0.25;
  require_grad_close(din, numeric_grad(in, loss), "d in");
  require_grad_close(dw, numeric_grad(w, loss), "d weight");
}

TEST_CASE("rope tables follow HF's inv_freq and the rotate_half pairing", "[kernels][rope]") {
  const std::int64_t positions = 9, dh = 6;
  const double theta = 1e6;
  Vec cos_t(positions * dh / 2), sin_t(positions * dh / 2);
  rope_table(cos_t.data(), sin_t.data(), positions, dh, theta);
  for (std::int64_t p = 0; p < positions; p++) {
    for (std::int64_t i = 0; i < dh / 2; i++) {
      const double angle = double(p) / std::pow(theta, double(2 * i) / double(dh));
      CHECK(cos_t[p * 3 + i] == Approx(std::cos(angle)).epsilon(1e-14));
      CHECK(sin_t[p * 3 + i] == Approx(std::sin(angle)).epsilon(1e-14));
    }
  }
  // One head at position 2: x = e_0 rotates into the (0, 3) plane, leaving 1, 2, 4, 5 alone.
  Vec x(dh, 0.0), y(dh);
  x[0] = 1;
  const std::int32_t pos[1] = {2};
  rope_forward(y.data(), x.data(), cos_t.data(), sin_t.data(), positions, pos, 0, 1, 1, 1, dh);
  CHECK(y[0] == Approx(std::cos(2.0)));
  CHECK(y[3] == Approx(std::sin(2.0)));
  CHECK(y[1] == 0);
  CHECK(y[2] == 0);
  CHECK(y[4] == 0);
  CHECK(y[5] == 0);
}

TEST_CASE("rope: position 0 is the identity, backward inverts forward, offsets match positions",
          "[kernels][rope]") {
  std::mt19937_64 rng(3);
  const std::int64_t b = 2, s = 5, h = 3, dh = 6, table = 16;
  Vec cos_t(table * dh / 2), sin_t(table * dh / 2);
  rope_table(cos_t.data(), sin_t.data(), table, dh, 10000.0);
  Vec x = random_vec(rng, b * s * h * dh), y(x.size()), back(x.size());

  rope_forward(y.data(), x.data(), cos_t.data(), sin_t.data(), table, nullptr, 4, b, s, h, dh);
  rope_backward(back.data(), y.data(), cos_t.data(), sin_t.data(), table, nullptr, 4, b, s, h, dh);
  CHECK(max_rel_error(back, x) < 1e-14);  // rotations are orthogonal: R^T R = I

  std::vector<std::int32_t> pos(b * s);
  for (std::int64_t i = 0; i < b * s; i++)
    pos[i] = std::int32_t(4 + i % s);
  Vec y_pos(x.size());
  rope_forward(y_pos.data(), x.data(), cos_t.data(), sin_t.data(), table, pos.data(), 0, b, s, h,
               dh);
  CHECK(y_pos == y);

  Vec in_place = x;  // out may alias in
  rope_forward(in_place.data(), in_place.data(), cos_t.data(), sin_t.data(), table, nullptr, 4, b,
               s, h, dh);
  CHECK(in_place == y);

  rope_forward(y.data(), x.data(), cos_t.data(), sin_t.data(), table, nullptr, 0, 1, 1, h, dh);
  for (std::int64_t i = 0; i < h * dh; i++)
    CHECK(y[i] == x[i]);

  CHECK_THROWS_AS(
      rope_forward(y.data(), x.data(), cos_t.data(), sin_t.data(), table, nullptr, 12, b, s, h, dh),
      moetune::InternalError);
}

TEST_CASE("rope backward matches finite differences", "[kernels][rope][grad]") {
  std::mt19937_64 rng(4);
  const std::int64_t b = 2, s = 5, h = 3, dh = 6, table = 16;
  Vec cos_t(table * dh / 2), sin_t(table * dh / 2);
  rope_table(cos_t.data(), sin_t.data(), table, dh, 10000.0);
  Vec x = random_vec(rng, b * s * h * dh), g = random_vec(rng, x.size());
  auto loss = [&] {
    Vec y(x.size());
    rope_forward(y.data(), x.data(), cos_t.data(), sin_t.data(), table, nullptr, 3, b, s, h, dh);
    return dot(y, g);
  };
  Vec dx(x.size());
  rope_backward(dx.data(), g.data(), cos_t.data(), sin_t.data(), table, nullptr, 3, b, s, h, dh);
  require_grad_close(dx, numeric_grad(x, loss), "d x");
}

TEST_CASE("softmax rows sum to one and the backward matches finite differences",
          "[kernels][softmax][grad]") {
  std::mt19937_64 rng(5);
  const std::int64_t n = 5, c = 7;
  Vec x = random_vec(rng, n * c, -3, 3), g = random_vec(rng, n * c);
  Vec p(n * c);
  softmax_forward(p.data(), x.data(), n, c);
  for (std::int64_t i = 0; i < n; i++) {
    double sum = 0;
    for (std::int64_t j = 0; j < c; j++)
      sum += p[i * c + j];
    CHECK(sum == Approx(1.0).epsilon(1e-14));
  }
  Vec lse(n);
  logsumexp_rows(lse.data(), x.data(), n, c);
  CHECK(std::log(p[3]) == Approx(x[3] - lse[0]).epsilon(1e-13));

  auto loss = [&] {
    Vec q(n * c);
    softmax_forward(q.data(), x.data(), n, c);
    return dot(q, g);
  };
  Vec dx(n * c);
  softmax_backward(dx.data(), g.data(), p.data(), n, c);
  require_grad_close(dx, numeric_grad(x, loss), "d x");
}
