// The planner's search: the full list of valid layouts of a small case counted by hand, ranking,
// pins, rejections with reasons, the Pareto front, and the seed scenario (Mixtral 8x7B on p4d).
#include <catch2/catch.hpp>

#include <algorithm>
#include <set>
#include <tuple>

#include "core/constraints.hpp"
#include "core/presets.hpp"
#include "planner/planner.hpp"
#include "simulator/simulator.hpp"

using namespace moetune;
using planner::Candidate;
using planner::SearchOptions;
using planner::SearchResult;

namespace {

struct Setup {
  ModelSpec model;
  ClusterSpec cluster;
  TrainSpec train;
};

// tiny on cpu-local (one node; 2 CPU ranks unless told otherwise), fp32, seq 16, batch 8.
Setup tiny_cpu(std::int64_t devices = 2) {
  Setup s{load_model("tiny"), load_cluster("cpu-local", 1, devices), {}};
  s.train.seq_len = 16;
  s.train.global_batch = 8;
  s.train.precision = Precision::Fp32;
  return s;
}

SearchResult run(const Setup& s, const SearchOptions& o = {}) {
  return planner::search(s.model, s.cluster, s.train, o);
}

using Key = std::tuple<std::int64_t, std::int64_t, std::int64_t, std::int64_t, std::int64_t,
                       std::int64_t, Recompute>;  // tp, pp, ep, hs, rep, micro-batch, recompute

Key key_of(const Layout& l) {
  return {l.tp, l.pp, l.ep, l.hs, l.rep, l.micro_batch, l.recompute};
}

// b dominates a: no more memory, no less throughput, and better in one of them.
bool dominates(const Candidate& b, const Candidate& a) {
  return b.peak_memory_bytes <= a.peak_memory_bytes && b.tokens_per_s >= a.tokens_per_s &&
         (b.peak_memory_bytes < a.peak_memory_bytes || b.tokens_per_s > a.tokens_per_s);
}

}  // namespace

TEST_CASE("search finds every valid layout of tiny on 2 CPU ranks", "[planner][search]") {
  // World 2. tp in divisors(2 per node) = {1, 2}; pp in divisors(2 layers) = {1, 2} (one layer
  // per stage, so vpp = 1); ep in divisors(4 experts) = {1, 2, 4}; hs divides what is left.
  // Degree sets with tp*pp*ep*hs*rep = 2:
  //   tp pp ep hs rep   dp   micro-batches (divisors of 8 / dp)
  //    1  1  1  1  2     2   1, 2, 4
  //    1  1  1  2  1     2   1, 2, 4
  //    1  1  2  1  1     2   1, 2, 4
  //    1  2  1  1  1     1   1, 2, 4      (8 is rejected: 1 micro-batch cannot fill 2 stages)
  //    2  1  1  1  1     1   1, 2, 4, 8
  // ep = 4 needs 4 ranks. Each set has at most one axis of degree > 1 besides tp, so one distinct
  // mesh order; CPUs get no optimizer offload; recompute none and full: 2 * (3+3+3+3+4) = 32.
  const Setup s = tiny_cpu();
  SearchOptions o;
  o.keep_rejected = true;
  const SearchResult r = run(s, o);

  std::multiset<Key> expected;
  const std::vector<std::pair<std::array<std::int64_t, 5>, std::vector<std::int64_t>>> table = {
      {{1, 1, 1, 1, 2}, {1, 2, 4}},
      {{1, 1, 1, 2, 1}, {1, 2, 4}},
      {{1, 1, 2, 1, 1}, {1, 2, 4}},
      {{1, 2, 1, 1, 1}, {1, 2, 4}},
      {{2, 1, 1, 1, 1}, {1, 2, 4, 8}}};
  for (const auto& [d, mbs] : table) {
    for (std::int64_t mb : mbs) {
      for (Recompute rc : {Recompute::None, Recompute::Full}) {
        expected.insert({d[0], d[1], d[2], d[3], d[4], mb, rc});
      }
    }
  }
  REQUIRE(expected.size() == 32);
  std::multiset<Key> found;
  for (const Candidate& c : r.ranked)
    found.insert(key_of(c.layout));
  CHECK(found == expected);
  CHECK(r.simulated == 32);
  CHECK(r.fitting == 32);  // a few MiB against 12 GiB per rank

  // The one rejection: pp=2 with micro-batch 8, counted once per recompute choice.
  REQUIRE(r.rejected.size() == 1);
  CHECK(r.rejected[0].rejection.code == RejectCode::PipelineUnfilled);
  CHECK(r.rejected[0].layout.pp == 2);
  CHECK(r.rejected[0].layout.micro_batch == 8);
  CHECK(r.rejected_by_code[static_cast<std::size_t>(RejectCode::PipelineUnfilled)] == 1);
  CHECK(r.considered == 32 + 2);
}

TEST_CASE("every ranked candidate passes the rules and ranking is by throughput",
          "[planner][search]") {
  const Setup s = tiny_cpu();
  const SearchResult r = run(s);
  REQUIRE_FALSE(r.ranked.empty());
  bool seen_not_fitting = false;
  for (std::size_t i = 0; i < r.ranked.size(); ++i) {
    const Candidate& c = r.ranked[i];
    CAPTURE(describe(c.layout));
    CHECK_FALSE(check_layout(s.model, s.cluster, s.train, c.layout).has_value());
    CHECK(c.layout.world_size() == s.cluster.world_size());
    // Fitting candidates first.
    if (!c.fits) seen_not_fitting = true;
    CHECK((c.fits || seen_not_fitting));
    CHECK_FALSE((c.fits && seen_not_fitting));
    if (i > 0 && r.ranked[i - 1].fits == c.fits) {
      CHECK(r.ranked[i - 1].tokens_per_s >= c.tokens_per_s);
    }
  }
}

TEST_CASE("memory objective ranks by peak memory", "[planner][search]") {
  SearchOptions o;
  o.objective = planner::Objective::Memory;
  const SearchResult r = run(tiny_cpu(), o);
  for (std::size_t i = 1; i < r.ranked.size(); ++i) {
    if (r.ranked[i - 1].fits == r.ranked[i].fits) {
      CHECK(r.ranked[i - 1].peak_memory_bytes <= r.ranked[i].peak_memory_bytes);
    }
  }
}

TEST_CASE("pins restrict the search", "[planner][search][pins]") {
  const Setup s = tiny_cpu();
  SECTION("ep = 2") {
    SearchOptions o;
    o.pins.ep = 2;
    const SearchResult r = run(s, o);
    CHECK(r.ranked.size() == 6);  // micro-batch 1, 2, 4 x recompute none, full
    for (const Candidate& c : r.ranked)
      CHECK(c.layout.ep == 2);
  }
  SECTION("recompute full and micro-batch 2") {
    SearchOptions o;
    o.pins.recompute = Recompute::Full;
    o.pins.micro_batch = 2;
    const SearchResult r = run(s, o);
    CHECK(r.ranked.size() == 5);  // one per degree set
    for (const Candidate& c : r.ranked) {
      CHECK(c.layout.recompute == Recompute::Full);
      CHECK(c.layout.micro_batch == 2);
    }
  }
  SECTION("an invalid pinned value is rejected with its reason") {
    // 6 ranks so that ep = 3 fits the world (ep 3 x hs 2 or ep 3 x rep 2) but not tiny's 4 experts.
    SearchOptions o;
    o.pins.ep = 3;
    o.keep_rejected = true;
    const Setup six = tiny_cpu(6);
    const SearchResult r = run(six, o);
    CHECK(r.ranked.empty());
    CHECK(r.rejected_by_code[static_cast<std::size_t>(RejectCode::EpExperts)] > 0);
    bool explained = false;
    for (const auto& rej : r.rejected) {
      CHECK(rej.layout.ep == 3);
      if (rej.rejection.code == RejectCode::EpExperts) {
        CHECK_THAT(explain(rej.rejection, six.model, six.cluster, six.train, rej.layout),
                   Catch::Contains("ep=3 does not divide 4 experts; try ep in {1, 2, 4}"));
        explained = true;
      }
    }
    CHECK(explained);
  }
}

TEST_CASE("Pareto front: no fitting candidate dominates a Pareto one", "[planner][pareto]") {
  SearchOptions o;
  o.pins.optimizer_offload = false;
  for (const Setup& s : {tiny_cpu(), tiny_cpu(4)}) {
    const SearchResult r = run(s, o);
    int on_front = 0;
    for (const Candidate& a : r.ranked) {
      if (!a.pareto) continue;
      ++on_front;
      CHECK(a.fits);
      for (const Candidate& b : r.ranked) {
        if (b.fits) CHECK_FALSE(dominates(b, a));
      }
    }
    CHECK(on_front > 0);
    // And the front is complete: every fitting candidate off it is matched or beaten by one on it.
    for (const Candidate& a : r.ranked) {
      if (!a.fits || a.pareto) continue;
      const bool covered = std::any_of(r.ranked.begin(), r.ranked.end(), [&](const Candidate& b) {
        return b.pareto && b.peak_memory_bytes <= a.peak_memory_bytes &&
               b.tokens_per_s >= a.tokens_per_s;
      });
      CHECK(covered);
    }
  }
}

TEST_CASE("seed scenario: Mixtral 8x7B on p4d.24xlarge, seq 2048, batch 128",
          "[planner][search][mixtral]") {
  const ModelSpec model = load_model("mixtral-8x7b");
  TrainSpec train;
  train.seq_len = 2048;
  train.global_batch = 128;
  SECTION("2 nodes: only optimizer offload fits") {
    // Model state alone is 16 bytes x 46.7 B parameters = 747 GB; sharded over all 16 GPUs that
    // is 46.7 GB per GPU, more than an A100's 40 GiB (42.9 GB) before any activation.
    const ClusterSpec cluster = load_cluster("p4d.24xlarge", 2, std::nullopt);
    const SearchResult r = planner::search(model, cluster, train, {});
    REQUIRE_FALSE(r.ranked.empty());
    std::int64_t plain_fitting = 0, offload_fitting = 0;
    for (const Candidate& c : r.ranked) {
      (c.layout.optimizer_offload ? offload_fitting : plain_fitting) += c.fits ? 1 : 0;
    }
    CHECK(plain_fitting == 0);
    CHECK(offload_fitting > 0);
    CHECK(r.ranked.front().fits);
    CHECK(r.ranked.front().layout.optimizer_offload);
  }
  SECTION("4 nodes: something fits without offload") {
    // 747 GB over 32 GPUs = 23.4 GB of model state per GPU leaves room for activations.
    const ClusterSpec cluster = load_cluster("p4d.24xlarge", 4, std::nullopt);
    SearchOptions o;
    o.pins.optimizer_offload = false;
    const SearchResult r = planner::search(model, cluster, train, o);
    REQUIRE_FALSE(r.ranked.empty());
    CHECK(r.ranked.front().fits);
    CHECK_FALSE(r.ranked.front().layout.optimizer_offload);
  }
}

TEST_CASE("every candidate's figures equal a fresh prediction of its layout", "[planner][search]") {
  // The planner shares mesh placements between layouts that differ only in micro-batch, recompute
  // or offload; a fresh Simulator::predict builds them again. Same inputs, same arithmetic: the
  // doubles must be identical.
  const ModelSpec model = load_model("mixtral-8x7b");
  const ClusterSpec cluster = load_cluster("p4d.24xlarge", 2, std::nullopt);
  TrainSpec train;
  train.seq_len = 2048;
  train.global_batch = 128;
  const SearchResult r = planner::search(model, cluster, train, {});
  const simulator::Simulator sim(model, cluster, train);
  REQUIRE(r.ranked.size() > 1000);
  for (const Candidate& c : r.ranked) {
    const Prediction p = sim.predict(c.layout);
    if (p.fits != c.fits || p.peak_memory_bytes != c.peak_memory_bytes ||
        p.tokens_per_s != c.tokens_per_s || p.step_time_s != c.step_time_s) {
      FAIL_CHECK("candidate " << describe(c.layout) << " differs from its prediction");
    }
  }
  CHECK(r.fitting ==
        std::count_if(r.ranked.begin(), r.ranked.end(), [](const Candidate& c) { return c.fits; }));
}

TEST_CASE("the distributed optimizer is on wherever a layout has replicas, unless pinned off",
          "[planner][search]") {
  const Setup s = tiny_cpu(4);
  const SearchResult searched = run(s);
  int with_replicas = 0;
  for (const Candidate& c : searched.ranked) {
    INFO(describe(c.layout));
    CHECK(c.layout.distributed_optimizer == (c.layout.dense_replicas() > 1));
    with_replicas += c.layout.dense_replicas() > 1 ? 1 : 0;
  }
  CHECK(with_replicas > 0);
  SearchOptions off;
  off.pins.distributed_optimizer = false;
  const SearchResult plain = run(s, off);
  REQUIRE(plain.ranked.size() == searched.ranked.size());
  for (const Candidate& c : plain.ranked)
    CHECK_FALSE(c.layout.distributed_optimizer);
}

TEST_CASE("pipeline depths that do not divide the layers get a balanced uneven split",
          "[planner][search]") {
  // tiny with 5 layers on 2 ranks: pp = 2 is no divisor of 5, so the planner offers 3 + 2.
  Setup s = tiny_cpu(2);
  s.model.num_hidden_layers = 5;
  const SearchResult r = run(s);
  int uneven = 0;
  for (const Candidate& c : r.ranked) {
    if (c.layout.pp != 2) continue;
    ++uneven;
    CHECK(c.layout.first_stage_layers == 3);
    CHECK(c.layout.last_stage_layers == 2);
    CHECK_FALSE(check_layout(s.model, s.cluster, s.train, c.layout).has_value());
  }
  CHECK(uneven > 0);
  // A pinned split is used as given (and checked by the rules).
  SearchOptions pinned;
  pinned.pins.pp = 2;
  pinned.pins.stage_split = StageSplit{2, 3};
  const SearchResult p = run(s, pinned);
  REQUIRE_FALSE(p.ranked.empty());
  for (const Candidate& c : p.ranked) {
    CHECK(c.layout.first_stage_layers == 2);
    CHECK(c.layout.last_stage_layers == 3);
  }
}
