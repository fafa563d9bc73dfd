// Causal GQA attention: forward against a direct loop implementation, backward against finite
// differences, and the invariants (window >= S is no window; GQA is MHA with repeated kv heads).
#include <cmath>
#include <random>
#include <vector>

#include <catch2/catch.hpp>

#include "grad_check.hpp"
#include "kernels/cpu/attention.hpp"

using namespace moetune::kernels::cpu;
using namespace moetune::kernels::test;

namespace {

struct Shape {
  std::int64_t b = 2, s = 5, hq = 4, hkv = 2, dh = 6;
  std::size_t q_size() const { return std::size_t(b * s * hq * dh); }
  std::size_t kv_size() const { return std::size_t(b * s * hkv * dh); }
  std::size_t att_size() const { return std::size_t(b * hq * s * s); }
};

// The textbook formula, one query at a time.
Vec naive_attention(const Vec& q, const Vec& k, const Vec& v, const Shape& sh,
                    std::int64_t window) {
  Vec out(sh.q_size(), 0.0);
  const std::int64_t group = sh.hq / sh.hkv;
  for (std::int64_t bi = 0; bi < sh.b; bi++) {
    for (std::int64_t h = 0; h < sh.hq; h++) {
      const std::int64_t kvh = h / group;
      for (std::int64_t i = 0; i < sh.s; i++) {
        std::vector<double> score(sh.s, 0.0);
        double max_score = -1e300, sum = 0;
        for (std::int64_t j = 0; j <= i; j++) {
          if (window > 0 && i - j >= window) continue;
          double s = 0;
          for (std::int64_t d = 0; d < sh.dh; d++) {
            s += q[((bi * sh.s + i) * sh.hq + h) * sh.dh + d] *
                 k[((bi * sh.s + j) * sh.hkv + kvh) * sh.dh + d];
          }
          score[j] = s / std::sqrt(double(sh.dh));
          max_score = std::max(max_score, score[j]);
        }
        std::vector<double> p(sh.s, 0.0);
        for (std::int64_t j = 0; j <= i; j++) {
          if (window > 0 && i - j >= window) continue;
          p[j] = std::exp(score[j] - max_score);
          sum += p[j];
        }
        for (std::int64_t j = 0; j <= i; j++) {
          for (std::int64_t d = 0; d < sh.dh; d++) {
            out[((bi * sh.s + i) * sh.hq + h) * sh.dh + d] +=
                p[j] / sum * v[((bi * sh.s + j) * sh.hkv + kvh) * sh.dh + d];
          }
        }
      }
    }
  }
  return out;
}

Vec run_forward(const Vec& q, const Vec& k, const Vec& v, const Shape& sh, std::int64_t window,
                Vec* att_out = nullptr) {
  Vec out(sh.q_size()), att(sh.att_size());
  attention_forward(out.data(), att.data(), q.data(), k.data(), v.data(), sh.b, sh.s, sh.hq, sh.hkv,
                    sh.dh, window);
  if (att_out) *att_out = att;
  return out;
}

}  // namespace

TEST_CASE("attention forward matches the direct formula", "[kernels][attention]") {
  std::mt19937_64 rng(10);
  const Shape sh;
  Vec q = random_vec(rng, sh.q_size()), k = random_vec(rng, sh.kv_size()),
      v = random_vec(rng, sh.kv_size());
  for (std::int64_t window : {0, 1, 2, 4}) {
    INFO("window " << window);
    Vec att;
    const Vec out = run_forward(q, k, v, sh, window, &att);
    // Same sums in another order: rounding only.
    CHECK(max_rel_error(out, naive_attention(q, k, v, sh, window)) < 1e-13);
    // Masked probabilities are exactly zero; visible ones sum to one.
    for (std::int64_t row = 0; row < sh.b * sh.hq * sh.s; row++) {
      const std::int64_t i = row % sh.s;
      double sum = 0;
      for (std::int64_t j = 0; j < sh.s; j++) {
        const bool visible = j <= i && (window == 0 || i - j < window);
        if (!visible) CHECK(att[row * sh.s + j] == 0.0);
        sum += att[row * sh.s + j];
      }
      CHECK(sum == Approx(1.0).epsilon(1e-14));
    }
  }
}

TEST_CASE("attention backward matches finite differences", "[kernels][attention][grad]") {
  std::mt19937_64 rng(11);
  const Shape sh;
  Vec q = random_vec(rng, sh.q_size()), k = random_vec(rng, sh.kv_size()),
      v = random_vec(rng, sh.kv_size()), g = random_vec(rng, sh.q_size());
  for (std::int64_t window : {0, 2}) {
    INFO("window " << window);
    auto loss = [&] { return dot(run_forward(q, k, v, sh, window), g); };
    Vec att;
    run_forward(q, k, v, sh, window, &att);
    Vec dq(sh.q_size()), dk(sh.kv_size(), 7.0), dv(sh.kv_size(), 7.0);  // overwritten
    attention_backward(dq.data(), dk.data(), dv.data(), g.data(), q.data(), k.data(), v.data(),
                       att.data(), sh.b, sh.s, sh.hq, sh.hkv, sh.dh);
    require_grad_close(dq, numeric_grad(q, loss), "d q");
    require_grad_close(dk, numeric_grad(k, loss), "d k");
    require_grad_close(dv, numeric_grad(v, loss), "d v");
  }
}

TEST_CASE("attention with a window >= S equals no window", "[kernels][attention]") {
  std::mt19937_64 rng(12);
  const Shape sh;
  Vec q = random_vec(rng, sh.q_size()), k = random_vec(rng, sh.kv_size()),
      v = random_vec(rng, sh.kv_size());
  const Vec full = run_forward(q, k, v, sh, 0);
  CHECK(run_forward(q, k, v, sh, sh.s) == full);
  CHECK(run_forward(q, k, v, sh, sh.s + 3) == full);
  CHECK(max_rel_error(run_forward(q, k, v, sh, sh.s - 1), full) > 1e-3);
}

TEST_CASE("GQA equals multi-head attention with each kv head repeated", "[kernels][attention]") {
  std::mt19937_64 rng(13);
  const Shape gqa;  // 4 query heads over 2 kv heads
  Shape mha = gqa;
  mha.hkv = gqa.hq;
  const std::int64_t group = gqa.hq / gqa.hkv;
  Vec q = random_vec(rng, gqa.q_size()), k = random_vec(rng, gqa.kv_size()),
      v = random_vec(rng, gqa.kv_size()), g = random_vec(rng, gqa.q_size());
  // repeat_kv: kv head h of the MHA copy is kv head h / group of the GQA input.
  Vec k_rep(mha.kv_size()), v_rep(mha.kv_size());
  for (std::int64_t t = 0; t < gqa.b * gqa.s; t++) {
    for (std::int64_t h = 0; h < gqa.hq; h++) {
      for (std::int64_t d = 0; d < gqa.dh; d++) {
        k_rep[(t * mha.hkv + h) * gqa.dh + d] = k[(t * gqa.hkv + h / group) * gqa.dh + d];
        v_rep[(t * mha.hkv + h) * gqa.dh + d] = v[(t * gqa.hkv + h / group) * gqa.dh + d];
      }
    }
  }
  Vec att_gqa, att_mha;
  const Vec out_gqa = run_forward(q, k, v, gqa, 0, &att_gqa);
  const Vec out_mha = run_forward(q, k_rep, v_rep, mha, 0, &att_mha);
  // The same GEMMs on the same numbers, only with other leading dimensions: at most rounding.
  CHECK(max_rel_error(out_gqa, out_mha) < 1e-14);

  Vec dq_gqa(gqa.q_size()), dk_gqa(gqa.kv_size()), dv_gqa(gqa.kv_size());
  Vec dq_mha(mha.q_size()), dk_mha(mha.kv_size()), dv_mha(mha.kv_size());
  attention_backward(dq_gqa.data(), dk_gqa.data(), dv_gqa.data(), g.data(), q.data(), k.data(),
                     v.data(), att_gqa.data(), gqa.b, gqa.s, gqa.hq, gqa.hkv, gqa.dh);
  attention_backward(dq_mha.data(), dk_mha.data(), dv_mha.data(), g.data(), q.data(), k_rep.data(),
                     v_rep.data(), att_mha.data(), mha.b, mha.s, mha.hq, mha.hkv, mha.dh);
  CHECK(max_rel_error(dq_gqa, dq_mha) < 1e-14);
  // The gradient of a shared kv head is the sum over the query heads that read it.
  Vec dk_sum(gqa.kv_size(), 0.0), dv_sum(gqa.kv_size(), 0.0);
  for (std::int64_t t = 0; t < gqa.b * gqa.s; t++) {
    for (std::int64_t h = 0; h < gqa.hq; h++) {
      for (std::int64_t d = 0; d < gqa.dh; d++) {
        dk_sum[(t * gqa.hkv + h / group) * gqa.dh + d] += dk_mha[(t * mha.hkv + h) * gqa.dh + d];
        dv_sum[(t * gqa.hkv + h / group) * gqa.dh + d] += dv_mha[(t * mha.hkv + h) * gqa.dh + d];
      }
    }
  }
  CHECK(max_rel_error(dk_gqa, dk_sum) < 1e-14);
  CHECK(max_rel_error(dv_gqa, dv_sum) < 1e-14);
}

TEST_CASE("attention over several query blocks: forward, backward at sampled entries, fp32",
          "[kernels][attention][grad]") {
  // S = 150 spans three of the kernel's 64-row query blocks, the last one ragged, so every product
  // that skips the masked triangle block by block is exercised.
  std::mt19937_64 rng(14);
  Shape sh;
  sh.b = 1;
  sh.s = 150;
  sh.hq = 2;
  sh.hkv = 1;
  sh.dh = 8;
  Vec q = random_vec(rng, sh.q_size()), k = random_vec(rng, sh.kv_size()),
      v = random_vec(rng, sh.kv_size()), g = random_vec(rng, sh.q_size());
  for (std::int64_t window : {0, 70}) {
    INFO("window " << window);
    Vec att;
    const Vec out = run_forward(q, k, v, sh, window, &att);
    CHECK(max_rel_error(out, naive_attention(q, k, v, sh, window)) < 1e-13);
    Vec dq(sh.q_size()), dk(sh.kv_size(), 7.0), dv(sh.kv_size(), 7.0);
    attention_backward(dq.data(), dk.data(), dv.data(), g.data(), q.data(), k.data(), v.data(),
                       att.data(), sh.b, sh.s, sh.hq, sh.hkv, sh.dh);
    // Central differences at 40 entries of each input, spread over every block (a full check
    // would take 7,200 forward passes); the tolerance is grad_check.hpp's.
    auto loss = [&] { return dot(run_forward(q, k, v, sh, window), g); };
    auto check_sampled = [&](Vec& x, const Vec& analytic, const char* what) {
      Vec picked_analytic, picked_numeric;
      for (std::size_t n = 0; n < 40; n++) {
        const std::size_t i = (n * 7919) % x.size();
        const double saved = x[i];
        const double h = kFdStep * std::max(1.0, std::abs(saved));
        x[i] = saved + h;
        const double plus = loss();
        x[i] = saved - h;
        const double minus = loss();
        x[i] = saved;
        picked_analytic.push_back(analytic[i]);
        picked_numeric.push_back((plus - minus) / (2 * h));
      }
      require_grad_close(picked_analytic, picked_numeric, what);
    };
    check_sampled(q, dq, "d q");
    check_sampled(k, dk, "d k");
    check_sampled(v, dv, "d v");

    // The fp32 kernels on the same inputs: within the precision suite's 1e-5 (precision_test.cpp).
    const std::vector<float> qf = cast_vec<float>(q), kf = cast_vec<float>(k),
                             vf = cast_vec<float>(v), gf = cast_vec<float>(g);
    std::vector<float> out_f(sh.q_size()), att_f(sh.att_size()), dq_f(sh.q_size()),
        dk_f(sh.kv_size()), dv_f(sh.kv_size());
    attention_forward(out_f.data(), att_f.data(), qf.data(), kf.data(), vf.data(), sh.b, sh.s,
                      sh.hq, sh.hkv, sh.dh, window);
    attention_backward(dq_f.data(), dk_f.data(), dv_f.data(), gf.data(), qf.data(), kf.data(),
                       vf.data(), att_f.data(), sh.b, sh.s, sh.hq, sh.hkv, sh.dh);
    CHECK(max_rel_error(out_f, out) < 1e-5);
    CHECK(max_rel_error(dq_f, dq) < 1e-5);
    CHECK(max_rel_error(dk_f, dk) < 1e-5);
    CHECK(max_rel_error(dv_f, dv) < 1e-5);
  }
}
