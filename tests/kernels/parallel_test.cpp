// The kernel thread pool (parallel.hpp) and the kernels that split work over it: every index runs
// once, chunks follow the documented formula, nested loops run inline, exceptions reach the caller,
// two callers at once both finish, and split kernels (GEMM, RMSNorm, AdamW, cross-entropy) give the
// same result on every run for a thread count and agree with one thread.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "grad_check.hpp"
#include "kernels/cpu/cross_entropy.hpp"
#include "kernels/cpu/gemm.hpp"
#include "kernels/cpu/optimizer.hpp"
#include "kernels/cpu/parallel.hpp"
#include "kernels/cpu/rmsnorm.hpp"

using namespace moetune::kernels::cpu;
using namespace moetune::kernels::test;

namespace {

// Sets the kernel threads for one test and restores the default after it.
struct ThreadsScope {
  explicit ThreadsScope(int threads) { set_kernel_threads(threads); }
  ~ThreadsScope() { set_kernel_threads(0); }
  ThreadsScope(const ThreadsScope&) = delete;
  ThreadsScope& operator=(const ThreadsScope&) = delete;
};

std::vector<float> random_floats(std::mt19937_64& rng, std::size_t n, float lo = -1, float hi = 1) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v)
    x = dist(rng);
  return v;
}

// Largest |a - b| over max(|b|) of the buffer: the precision tests' measure.
double max_rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < a.size(); i++) {
    diff = std::max(diff, std::abs(double(a[i]) - double(b[i])));
    scale = std::max(scale, std::abs(double(b[i])));
  }
  return diff / std::max(scale, 1e-30);
}

}  // namespace

TEST_CASE("parallel_for runs every index once in the documented chunks", "[kernels][parallel]") {
  for (int threads : {1, 2, 3, 4, 7}) {
    const ThreadsScope scope(threads);
    for (std::int64_t n : {0, 1, 5, 64, 1000, 4097}) {
      for (std::int64_t min_chunk : {1, 7, 100}) {
        INFO("threads " << threads << " n " << n << " min_chunk " << min_chunk);
        const std::int64_t chunks = parallel_chunks(n, min_chunk);
        CHECK(chunks <= threads);
        CHECK(chunks ==
              (n == 0 ? 0
                      : std::min<std::int64_t>(threads, std::max<std::int64_t>(1, n / min_chunk))));
        std::vector<std::atomic<int>> hits(static_cast<std::size_t>(n));
        std::vector<std::int64_t> begins(static_cast<std::size_t>(chunks), -1);
        std::vector<std::int64_t> ends(static_cast<std::size_t>(chunks), -1);
        parallel_for_chunks(n, min_chunk,
                            [&](std::int64_t c, std::int64_t begin, std::int64_t end) {
                              begins[static_cast<std::size_t>(c)] = begin;
                              ends[static_cast<std::size_t>(c)] = end;
                              for (std::int64_t i = begin; i < end; i++)
                                hits[static_cast<std::size_t>(i)]++;
                            });
        for (const auto& h : hits)
          CHECK(h.load() == 1);
        for (std::int64_t c = 0; c < chunks; c++) {
          CHECK(begins[static_cast<std::size_t>(c)] == c * n / chunks);
          CHECK(ends[static_cast<std::size_t>(c)] == (c + 1) * n / chunks);
        }
      }
    }
  }
}

TEST_CASE("parallel_for: nested loops run inline with the same chunks", "[kernels][parallel]") {
  const ThreadsScope scope(3);
  CHECK_FALSE(in_parallel_region());
  std::vector<std::vector<std::int64_t>> inner(3);
  std::atomic<int> wrong_thread{0};
  parallel_for_chunks(3, 1, [&](std::int64_t c, std::int64_t, std::int64_t) {
    CHECK(in_parallel_region());
    const auto outer_thread = std::this_thread::get_id();
    parallel_for_chunks(9, 1, [&](std::int64_t ic, std::int64_t begin, std::int64_t) {
      if (std::this_thread::get_id() != outer_thread) wrong_thread++;
      inner[static_cast<std::size_t>(c)].push_back(ic * 100 + begin);
    });
  });
  CHECK_FALSE(in_parallel_region());
  CHECK(wrong_thread.load() == 0);
  for (const auto& chunks : inner)
    CHECK(chunks == std::vector<std::int64_t>{0, 103, 206});
}

TEST_CASE("parallel_for rethrows a chunk's exception and the pool keeps working",
          "[kernels][parallel]") {
  const ThreadsScope scope(4);
  for (std::int64_t failing : {0, 3}) {
    std::atomic<int> ran{0};
    CHECK_THROWS_AS(parallel_for_chunks(4, 1,
                                        [&](std::int64_t c, std::int64_t, std::int64_t) {
                                          ran++;
                                          if (c == failing) throw std::runtime_error("chunk");
                                        }),
                    std::runtime_error);
    CHECK(ran.load() == 4);  // the other chunks still ran to the end
  }
  std::atomic<std::int64_t> sum{0};
  parallel_for(1000, 1, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; i++)
      sum += i;
  });
  CHECK(sum.load() == 999 * 1000 / 2);
}

TEST_CASE("parallel_for from two threads at once: both finish with every index",
          "[kernels][parallel]") {
  const ThreadsScope scope(2);
  constexpr std::int64_t kN = 20000;
  auto caller = [](std::int64_t* total) {
    for (int rep = 0; rep < 200; rep++) {
      std::vector<std::int64_t> partial(static_cast<std::size_t>(parallel_chunks(kN, 1)), 0);
      parallel_for_chunks(kN, 1, [&](std::int64_t c, std::int64_t begin, std::int64_t end) {
        for (std::int64_t i = begin; i < end; i++)
          partial[static_cast<std::size_t>(c)] += i;
      });
      for (std::int64_t p : partial)
        *total += p;
    }
  };
  std::int64_t a = 0, b = 0;
  std::thread other(caller, &b);
  caller(&a);
  other.join();
  CHECK(a == 200 * (kN - 1) * kN / 2);
  CHECK(b == a);
}

TEST_CASE("parallel_tasks runs every task once, rethrows, and runs inline when nested",
          "[kernels][parallel]") {
  for (int threads : {1, 2, 5}) {
    const ThreadsScope scope(threads);
    INFO("threads " << threads);
    std::vector<std::atomic<int>> hits(37);
    parallel_tasks(37, [&](std::int64_t i) { hits[static_cast<std::size_t>(i)]++; });
    for (const auto& h : hits)
      CHECK(h.load() == 1);
    std::atomic<int> ran{0};
    CHECK_THROWS_AS(parallel_tasks(9,
                                   [&](std::int64_t i) {
                                     ran++;
                                     if (i == 4) throw std::runtime_error("task");
                                   }),
                    std::runtime_error);
    CHECK(ran.load() == 9);
    // Nested inside a parallel_for body: in order, on the body's thread.
    std::vector<std::int64_t> order;
    parallel_for(1, 1, [&](std::int64_t, std::int64_t) {
      parallel_for_chunks(threads, 1, [&](std::int64_t c, std::int64_t, std::int64_t) {
        if (c == 0) parallel_tasks(4, [&](std::int64_t i) { order.push_back(i); });
      });
    });
    CHECK(order == std::vector<std::int64_t>{0, 1, 2, 3});
  }
}

TEST_CASE("gemm split over threads: the same bits every run, and equal to one thread",
          "[kernels][parallel][gemm]") {
  std::mt19937_64 rng(60);
  // Shapes that split by rows (m > n), by columns, and with transposes and padded strides.
  struct Shape {
    bool ta, tb;
    std::int64_t m, n, k;
  };
  for (const Shape& s : {Shape{false, true, 517, 130, 300}, Shape{true, false, 96, 700, 257},
                         Shape{true, true, 300, 301, 129}}) {
    INFO("m " << s.m << " n " << s.n << " k " << s.k);
    const std::int64_t lda = (s.ta ? s.m : s.k) + 3, ldb = (s.tb ? s.k : s.n) + 5, ldc = s.n + 2;
    const auto a = random_floats(rng, static_cast<std::size_t>((s.ta ? s.k : s.m) * lda));
    const auto b = random_floats(rng, static_cast<std::size_t>((s.tb ? s.n : s.k) * ldb));
    const auto c0 = random_floats(rng, static_cast<std::size_t>(s.m * ldc));
    auto run = [&](int threads) {
      const ThreadsScope scope(threads);
      std::vector<float> c = c0;
      gemm<float>(s.ta, s.tb, s.m, s.n, s.k, 0.5f, a.data(), lda, b.data(), ldb, 1.0f, c.data(),
                  ldc);
      return c;
    };
    const auto one = run(1);
    const auto three = run(3);
    CHECK(run(3) == three);
    // Each element is the same dot product over k either way; only BLAS's blocking could differ.
    CHECK(max_rel_diff(three, one) < 1e-6);
  }
}

TEST_CASE("split kernels: the same bits every run for a thread count, close to one thread",
          "[kernels][parallel]") {
  std::mt19937_64 rng(61);
  // Sizes large enough for several chunks: 300 rows of 128 in RMSNorm, 2e5 AdamW values.
  const std::int64_t n = 300, d = 128, params = 200000, vocab = 700;
  const auto x = random_floats(rng, static_cast<std::size_t>(n * d));
  const auto w = random_floats(rng, static_cast<std::size_t>(d));
  const auto g = random_floats(rng, static_cast<std::size_t>(n * d));
  const auto p0 = random_floats(rng, static_cast<std::size_t>(params));
  const auto grad = random_floats(rng, static_cast<std::size_t>(params), -1e-2f, 1e-2f);
  const auto logits = random_floats(rng, static_cast<std::size_t>(n * vocab), -4, 4);
  std::vector<std::int32_t> targets(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; i++)
    targets[static_cast<std::size_t>(i)] = std::int32_t((i * 37) % vocab);

  auto run = [&](int threads) {
    const ThreadsScope scope(threads);
    std::vector<float> out(x.size()), rstd(static_cast<std::size_t>(n)), dx(x.size()), dw(w.size());
    rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), n, d, 1e-5);
    rmsnorm_backward(dx.data(), dw.data(), g.data(), x.data(), w.data(), rstd.data(), n, d);
    std::vector<float> p = p0, m(p0.size(), 0.0f), v(p0.size(), 0.0f);
    AdamWParams hp;
    for (std::int64_t step = 1; step <= 3; step++)
      adamw_step(p.data(), m.data(), v.data(), grad.data(), params, hp, step, 0.7);
    const double norm = sum_of_squares(grad.data(), params);
    std::vector<float> dlogits(logits.size());
    const double ce = cross_entropy_forward(static_cast<float*>(nullptr), logits.data(),
                                            targets.data(), n, vocab);
    cross_entropy_backward(dlogits.data(), logits.data(), targets.data(), n, vocab, 1.0);
    return std::vector<std::vector<float>>{out, dx, dw, p, m, v, dlogits, {float(norm), float(ce)}};
  };
  const auto one = run(1);
  const auto three = run(3);
  CHECK(run(3) == three);
  REQUIRE(one.size() == three.size());
  for (std::size_t i = 0; i < one.size(); i++) {
    INFO("output " << i);
    // Only the order of the double partial sums differs between thread counts.
    CHECK(max_rel_diff(three[i], one[i]) < 1e-6);
  }
}

TEST_CASE("fp32 AdamW agrees with the double update", "[kernels][adamw][precision]") {
  // Weights of 1e-3 moved by lr = 1e-3 per step, so the float rounding of p (6e-8 of 1e-3) stays
  // far below the update. Float m, v and g carry 6e-8 relative error each, about 1e-7 of lr per
  // step; 1e-5 of lr over 5 steps leaves room while a missed bias correction (a factor of 10 on
  // m at step 1) or a misplaced eps lands far above it.
  std::mt19937_64 rng(62);
  const std::int64_t n = 4099;
  const Vec p_rand = random_vec(rng, n, -1e-3, 1e-3), g_rand = random_vec(rng, n, -1e-3, 1e-3);
  const std::vector<float> p0(p_rand.begin(), p_rand.end()), gf(g_rand.begin(), g_rand.end());
  AdamWParams hp;
  hp.lr = 1e-3;
  hp.weight_decay = 0.1;
  hp.beta2 = 0.95;
  // Both sides start from the same float-rounded weights and gradient.
  Vec pd(p0.begin(), p0.end()), md(n, 0.0), vd(n, 0.0);
  const Vec gd(gf.begin(), gf.end());
  std::vector<float> pf = p0, mf(n, 0.0f), vf(n, 0.0f);
  for (std::int64_t step = 1; step <= 5; step++) {
    adamw_step(pd.data(), md.data(), vd.data(), gd.data(), n, hp, step, 0.8);
    adamw_step(pf.data(), mf.data(), vf.data(), gf.data(), n, hp, step, 0.8);
  }
  double worst = 0;
  for (std::int64_t i = 0; i < n; i++)
    worst = std::max(worst, std::abs(double(pf[i]) - pd[i]));
  CHECK(worst < 1e-5 * hp.lr);
}
