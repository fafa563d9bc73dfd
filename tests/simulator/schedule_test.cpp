// The step scheduler: small DAGs whose makespan, critical path and overlap are worked out by hand
// in the comments; the FSDP prefetch chain in both regimes (all-gather shorter and longer than a
// layer's compute) and the periodic extrapolation it allows; and invariants on random DAGs checked
// against references that need no scheduler (longest dependency path, per-resource busy time,
// brute-force interval overlap). Every duration is a multiple of 1/8 s, so all sums and
// differences are exact in binary and times are compared with ==.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "simulator/schedule.hpp"

using namespace moetune::simulator;

namespace {

std::vector<OpId> path(std::initializer_list<OpId> ids) {
  return ids;
}

double sum_on_path(const StepGraph& g, const std::vector<OpId>& ops) {
  double s = 0;
  for (OpId v : ops)
    s += g.op(v).duration_s;
  return s;
}

// FSDP forward over `layers` identical layers: gather_i on Comm, compute_i on Compute after
// gather_i and compute_{i-1}. The gather of layer i+1 is prefetched while layer i computes, but
// only two layers may be gathered at once, so gather_{i+1} also waits for compute_{i-1}.
struct PrefetchChain {
  std::vector<OpId> gather;
  std::vector<OpId> compute;
};

PrefetchChain build_prefetch_chain(StepGraph& g, int layers, double gather_s, double compute_s) {
  const LabelId all_gather = g.label("all_gather");
  const LabelId attention = g.label("attention");
  PrefetchChain c;
  for (int i = 0; i < layers; ++i) {
    const OpId gather = g.add_op(
        {.label = all_gather, .duration_s = gather_s, .resource = Stream::Comm, .layer = i});
    if (i >= 2) g.add_dependency(c.compute[static_cast<std::size_t>(i - 2)], gather);
    const OpId compute =
        g.add_op({.label = attention, .duration_s = compute_s, .layer = i}, {gather});
    if (i >= 1) g.add_dependency(c.compute.back(), compute);
    c.gather.push_back(gather);
    c.compute.push_back(compute);
  }
  return c;
}

double prefetch_makespan(int layers, double gather_s, double compute_s) {
  StepGraph g;
  build_prefetch_chain(g, layers, gather_s, compute_s);
  Scheduler s;
  return s.run(g).makespan_s;
}

// Measure of [begin, end) covered by a set of intervals, by sorting and merging them.
double covered(std::vector<std::pair<double, double>> intervals, double begin, double end) {
  for (auto& iv : intervals)
    iv = {std::max(iv.first, begin), std::min(iv.second, end)};
  std::sort(intervals.begin(), intervals.end());
  double total = 0;
  double reach = begin;
  for (const auto& [b, e] : intervals) {
    if (e <= b || e <= reach) continue;  // outside [begin, end), or already counted
    total += e - std::max(b, reach);
    reach = e;
  }
  return total;
}

}  // namespace

TEST_CASE("a chain on one stream takes the sum of its durations", "[simulator][schedule]") {
  StepGraph g;
  const LabelId attention = g.label("attention");
  const OpId a = g.add_op({.label = attention, .duration_s = 0.5});
  const OpId b = g.add_op({.label = attention, .duration_s = 1.25}, {a});
  const OpId c = g.add_op({.label = attention, .duration_s = 2.0}, {b});
  const OpId d = g.add_op({.label = attention, .duration_s = 0.25}, {c});
  Scheduler s;
  const Schedule& r = s.run(g);
  // 0.5 + 1.25 + 2 + 0.25 = 4; starts at the running sums 0, 0.5, 1.75, 3.75.
  CHECK(r.makespan_s == 4.0);
  CHECK(r.start_s == std::vector<double>{0.0, 0.5, 1.75, 3.75});
  CHECK(r.resource_busy_s == std::vector<double>{4.0, 0.0});
  CHECK(r.critical_path == path({a, b, c, d}));
  CHECK(r.labels[attention].total_s == 4.0);
  CHECK(r.labels[attention].comm_s == 0.0);
}

TEST_CASE("independent ops on different streams take the max", "[simulator][schedule]") {
  StepGraph g;
  const LabelId attention = g.label("attention");
  const LabelId all_gather = g.label("all_gather");
  const OpId compute = g.add_op({.label = attention, .duration_s = 3.0});
  const OpId gather = g.add_op({.label = all_gather, .duration_s = 2.0, .resource = Stream::Comm});
  Scheduler s;
  SECTION("comm shorter than compute hides completely") {
    // max(3, 2) = 3; the gather runs in [0, 2) under the compute's [0, 3).
    const Schedule& r = s.run(g);
    CHECK(r.makespan_s == 3.0);
    CHECK(r.labels[all_gather].overlapped_s == 2.0);
    CHECK(r.labels[all_gather].exposed_s == 0.0);
    CHECK(r.exposed_comm_s == 0.0);
    CHECK(r.critical_path == path({compute}));
  }
  SECTION("comm longer than compute shows by the difference") {
    // max(3, 5) = 5; 3 s of the gather overlap the compute, 2 s are exposed.
    g.set_duration(gather, 5.0);
    const Schedule& r = s.run(g);
    CHECK(r.makespan_s == 5.0);
    CHECK(r.labels[all_gather].overlapped_s == 3.0);
    CHECK(r.labels[all_gather].exposed_s == 2.0);
    CHECK(r.exposed_comm_s == 2.0);
    CHECK(r.critical_path == path({gather}));
  }
}

TEST_CASE("a stream takes its ops in ready order, ties by priority", "[simulator][schedule]") {
  StepGraph g;
  const LabelId work = g.label("attention");
  const LabelId comm = g.label("all_gather");
  // `first` holds the comm stream over [0, 4). `late` becomes ready at 2 and `early` at 1: though
  // `late` was inserted first, `early` became ready first and runs first.
  const OpId first = g.add_op({.label = comm, .duration_s = 4.0, .resource = Stream::Comm});
  const OpId c1 = g.add_op({.label = work, .duration_s = 1.0});
  const OpId c2 = g.add_op({.label = work, .duration_s = 1.0}, {c1});
  const OpId late = g.add_op({.label = comm, .duration_s = 1.0, .resource = Stream::Comm}, {c2});
  const OpId early = g.add_op({.label = comm, .duration_s = 1.0, .resource = Stream::Comm}, {c1});
  // Two more comm ops ready at t = 0, like `first`: inserted after it, so its default priority 0
  // wins; between them an explicit priority puts `urgent` ahead of `relaxed`.
  const OpId relaxed =
      g.add_op({.label = comm, .duration_s = 0.5, .resource = Stream::Comm, .priority = 100});
  const OpId urgent =
      g.add_op({.label = comm, .duration_s = 0.5, .resource = Stream::Comm, .priority = 50});
  Scheduler s;
  const Schedule& r = s.run(g);
  // Ready at 0: first (priority 0), urgent (50), relaxed (100) -> [0,4), [4,4.5), [4.5,5).
  // Then early (ready 1) at [5, 6) and late (ready 2) at [6, 7).
  CHECK(r.start_s[first] == 0.0);
  CHECK(r.start_s[urgent] == 4.0);
  CHECK(r.start_s[relaxed] == 4.5);
  CHECK(r.start_s[early] == 5.0);
  CHECK(r.start_s[late] == 6.0);
  CHECK(r.makespan_s == 7.0);
}

TEST_CASE("prefetched all-gathers hide behind compute after the first layer",
          "[simulator][schedule]") {
  StepGraph g;
  Scheduler s;
  const int layers = 4;
  SECTION("gather 0.5 s < compute 1 s") {
    const PrefetchChain c = build_prefetch_chain(g, layers, 0.5, 1.0);
    const Schedule& r = s.run(g);
    // gather_0 [0, 0.5), then compute_i [0.5 + i, 1.5 + i): each later gather starts when the
    // compute two layers back ends and fits inside the current compute. Makespan 0.5 + 4 * 1.
    CHECK(r.makespan_s == 4.5);
    const LabelTime& ag = r.labels[g.label("all_gather")];
    CHECK(ag.comm_s == 2.0);
    CHECK(ag.exposed_s == 0.5);  // the first layer's gather only
    CHECK(ag.overlapped_s == 1.5);
    CHECK(r.exposed_comm_s == 0.5);
    // Path: gather_0, then the compute chain.
    CHECK(r.critical_path ==
          path({c.gather[0], c.compute[0], c.compute[1], c.compute[2], c.compute[3]}));
    CHECK(r.critical_cause.back() == StartCause::Dependency);
  }
  SECTION("gather 1.5 s > compute 1 s") {
    const PrefetchChain c = build_prefetch_chain(g, layers, 1.5, 1.0);
    const Schedule& r = s.run(g);
    // The comm stream never idles: gather_i [1.5 i, 1.5 (i + 1)), compute_i [1.5 (i + 1),
    // 1.5 (i + 1) + 1). Makespan 4 * 1.5 + 1 = 7. Gather i >= 1 overlaps compute_{i-1} by 1 s:
    // overlapped 3 * 1 = 3, exposed 6 - 3 = 3 = 1.5 + 3 * (1.5 - 1).
    CHECK(r.makespan_s == 7.0);
    const LabelTime& ag = r.labels[g.label("all_gather")];
    CHECK(ag.comm_s == 6.0);
    CHECK(ag.overlapped_s == 3.0);
    CHECK(ag.exposed_s == 3.0);
    CHECK(r.exposed_comm_s == 3.0);
    // Path: the gathers back to back on the comm stream, then the last compute.
    CHECK(r.critical_path ==
          path({c.gather[0], c.gather[1], c.gather[2], c.gather[3], c.compute[3]}));
    CHECK(r.critical_cause == std::vector<StartCause>{StartCause::None, StartCause::Resource,
                                                      StartCause::Resource, StartCause::Resource,
                                                      StartCause::Dependency});
  }
}

TEST_CASE("periodic extrapolation is exact for a prefetched chain of identical layers",
          "[simulator][schedule]") {
  // Steady state from the first layer on: M(k) = 0.5 + k for gather < compute, 1.5 k + 1 for
  // gather > compute; both are linear in k, so k = 1 and 2 predict every n.
  for (const auto& [gather_s, compute_s] : {std::pair{0.5, 1.0}, std::pair{1.5, 1.0}}) {
    const double m1 = prefetch_makespan(1, gather_s, compute_s);
    const double m2 = prefetch_makespan(2, gather_s, compute_s);
    for (int n : {1, 2, 3, 8, 32}) {
      CAPTURE(gather_s, n);
      CHECK(extrapolate_periodic(m1, m2, 1, n) == prefetch_makespan(n, gather_s, compute_s));
    }
  }
  CHECK(extrapolate_periodic(1.5, 2.5, 1, 32) == 32.5);  // 1.5 + 31 * 1
  CHECK_THROWS_AS(extrapolate_periodic(1.0, 2.0, 3, 2), std::invalid_argument);
}

TEST_CASE("makespan equals the hand-computed critical path on small DAGs",
          "[simulator][schedule]") {
  StepGraph g;
  Scheduler s;
  const LabelId work = g.label("experts");
  const LabelId comm = g.label("dispatch");
  SECTION("diamond") {
    // A(compute 1) -> {B(comm 4), C(compute 2)} -> D(compute 1). B [1, 5), C [1, 3), D [5, 6):
    // path A-B-D = 1 + 4 + 1 = 6. B overlaps C for 2 s, the other 2 s are exposed.
    const OpId a = g.add_op({.label = work, .duration_s = 1.0});
    const OpId b = g.add_op({.label = comm, .duration_s = 4.0, .resource = Stream::Comm}, {a});
    const OpId c = g.add_op({.label = work, .duration_s = 2.0}, {a});
    const OpId d = g.add_op({.label = work, .duration_s = 1.0}, {b, c});
    const Schedule& r = s.run(g);
    CHECK(r.makespan_s == 6.0);
    CHECK(r.critical_path == path({a, b, d}));
    CHECK(r.critical_cause == std::vector<StartCause>{StartCause::None, StartCause::Dependency,
                                                      StartCause::Dependency});
    CHECK(r.labels[comm].overlapped_s == 2.0);
    CHECK(r.labels[comm].exposed_s == 2.0);
  }
  SECTION("fork-join across streams") {
    // R(compute 1) forks X1(comm 2), X2(comm 3), Y1(compute 1), Y2(compute 3.5); J(compute 1)
    // joins them. Comm: X1 [1, 3), X2 [3, 6); compute: Y1 [1, 2), Y2 [2, 5.5); J [6, 7).
    // The longest dependency path is R-Y2-J = 5.5, but the comm stream serialises X1 and X2:
    // path R-X1-(stream)-X2-J = 1 + 2 + 3 + 1 = 7.
    const OpId root = g.add_op({.label = work, .duration_s = 1.0});
    const OpId x1 = g.add_op({.label = comm, .duration_s = 2.0, .resource = Stream::Comm}, {root});
    const OpId x2 = g.add_op({.label = comm, .duration_s = 3.0, .resource = Stream::Comm}, {root});
    const OpId y1 = g.add_op({.label = work, .duration_s = 1.0}, {root});
    const OpId y2 = g.add_op({.label = work, .duration_s = 3.5}, {root});
    const OpId join = g.add_op({.label = work, .duration_s = 1.0}, {x1, x2, y1, y2});
    const Schedule& r = s.run(g);
    CHECK(r.makespan_s == 7.0);
    CHECK(r.start_s[y2] == 2.0);
    CHECK(r.critical_path == path({root, x1, x2, join}));
    CHECK(r.critical_cause == std::vector<StartCause>{StartCause::None, StartCause::Dependency,
                                                      StartCause::Resource,
                                                      StartCause::Dependency});
    // Comm [1, 6) against compute [0, 5.5) and [6, 7): 4.5 s overlapped, 0.5 s exposed.
    CHECK(r.labels[comm].overlapped_s == 4.5);
    CHECK(r.exposed_comm_s == 0.5);
  }
  SECTION("1F1B over two pipeline stages") {
    // Stage 0 on Compute, stage 1 on its own compute resource, activations and gradients sent
    // over a p2p link. F = 1, B = 2, send = 0.5, 2 micro-batches; backward wins ties (1F1B).
    const Resource stage1 = g.add_resource("stage1", ResourceKind::Compute);
    const Resource p2p = g.add_resource("p2p", ResourceKind::Comm);
    const LabelId fwd = g.label("forward");
    const LabelId bwd = g.label("backward");
    const LabelId send = g.label("p2p");
    std::vector<OpId> f0, f1, b0, b1, send_f, send_b;
    for (int m = 0; m < 2; ++m) {
      f0.push_back(g.add_op({.label = fwd, .duration_s = 1.0, .micro_batch = m}));
      send_f.push_back(g.add_op(
          {.label = send, .duration_s = 0.5, .resource = p2p, .micro_batch = m}, {f0.back()}));
      f1.push_back(g.add_op({.label = fwd, .duration_s = 1.0, .resource = stage1, .micro_batch = m},
                            {send_f.back()}));
    }
    for (int m = 0; m < 2; ++m) {
      b1.push_back(g.add_op({.label = bwd,
                             .duration_s = 2.0,
                             .resource = stage1,
                             .micro_batch = m,
                             .priority = -10 + m},
                            {f1[static_cast<std::size_t>(m)]}));
      send_b.push_back(g.add_op(
          {.label = send, .duration_s = 0.5, .resource = p2p, .micro_batch = m}, {b1.back()}));
      b0.push_back(g.add_op({.label = bwd, .duration_s = 2.0, .micro_batch = m}, {send_b.back()}));
    }
    const Schedule& r = s.run(g);
    // Stage 0: F0(0) [0, 1), F0(1) [1, 2). Stage 1: F1(0) [1.5, 2.5); at 2.5 B1(0) and F1(1) are
    // both ready and B1(0) goes first: [2.5, 4.5), F1(1) [4.5, 5.5), B1(1) [5.5, 7.5). Stage 0:
    // B0(0) [5, 7), B0(1) [8, 10). Path F0(0) send F1(0) B1(0) (stage) F1(1) B1(1) send B0(1) =
    // 1 + 0.5 + 1 + 2 + 1 + 2 + 0.5 + 2 = 10.
    CHECK(r.makespan_s == 10.0);
    CHECK(r.start_s[b1[0]] == 2.5);
    CHECK(r.start_s[f1[1]] == 4.5);
    CHECK(r.critical_path ==
          path({f0[0], send_f[0], f1[0], b1[0], f1[1], b1[1], send_b[1], b0[1]}));
    CHECK(sum_on_path(g, r.critical_path) == r.makespan_s);
    // Each stage computes 2 * (1 + 2) = 6 s of the 10: a 4 s bubble.
    CHECK(r.resource_busy_s[0] == 6.0);
    CHECK(r.resource_busy_s[stage1.index] == 6.0);
  }
}

TEST_CASE("overlap never makes a step slower than serial: random DAGs", "[simulator][schedule]") {
  std::mt19937 rng(12345);
  StepGraph g;
  const Resource compute2 = g.add_resource("host_compute", ResourceKind::Compute);
  const Resource inter = g.add_resource("comm_inter", ResourceKind::Comm);
  const std::vector<LabelId> labels{g.label("attention"), g.label("all_gather"),
                                    g.label("dispatch")};
  const std::vector<Resource> resources{Stream::Compute, Stream::Comm, compute2, inter};
  Scheduler s;
  for (int trial = 0; trial < 300; ++trial) {
    g.clear();
    const int n = std::uniform_int_distribution<int>(1, 80)(rng);
    const double p = std::uniform_real_distribution<double>(0.0, 0.3)(rng);
    std::vector<std::vector<OpId>> preds(static_cast<std::size_t>(n));
    for (int j = 0; j < n; ++j) {
      OpSpec spec;
      spec.label = labels[std::uniform_int_distribution<std::size_t>(0, 2)(rng)];
      spec.resource = resources[std::uniform_int_distribution<std::size_t>(0, 3)(rng)];
      spec.duration_s = std::uniform_int_distribution<int>(0, 16)(rng) / 8.0;
      const OpId v = g.add_op(spec);
      for (OpId i = 0; i < v; ++i) {
        if (std::bernoulli_distribution(p)(rng)) {
          g.add_dependency(i, v);
          preds[v].push_back(i);
        }
      }
    }
    const Schedule& r = s.run(g);
    CAPTURE(trial, n);

    // References: serial sum, longest dependency path (ops are in topological order), busy time.
    double serial = 0;
    std::vector<double> longest(static_cast<std::size_t>(n), 0.0);
    std::vector<double> busy(resources.size(), 0.0);
    for (OpId v = 0; v < static_cast<OpId>(n); ++v) {
      double ready = 0;
      for (OpId u : preds[v])
        ready = std::max(ready, longest[u]);
      longest[v] = ready + g.op(v).duration_s;
      serial += g.op(v).duration_s;
      busy[g.op(v).resource] += g.op(v).duration_s;
      // Dependencies hold.
      for (OpId u : preds[v])
        CHECK(r.start_s[v] >= r.end_s[u]);
      CHECK(r.end_s[v] == r.start_s[v] + g.op(v).duration_s);
    }
    CHECK(r.makespan_s <= serial);
    CHECK(r.makespan_s >= *std::max_element(longest.begin(), longest.end()));
    CHECK(r.resource_busy_s == busy);
    for (double b : busy)
      CHECK(r.makespan_s >= b);

    // One op at a time per resource.
    for (std::size_t k = 0; k < resources.size(); ++k) {
      std::vector<std::pair<double, double>> iv;
      for (OpId v = 0; v < static_cast<OpId>(n); ++v) {
        if (g.op(v).resource == k) iv.push_back({r.start_s[v], r.end_s[v]});
      }
      std::sort(iv.begin(), iv.end());
      for (std::size_t i = 1; i < iv.size(); ++i)
        CHECK(iv[i].first >= iv[i - 1].second);
    }

    // The critical path is gap-free from 0 to the makespan.
    REQUIRE(!r.critical_path.empty());
    CHECK(r.start_s[r.critical_path.front()] == 0.0);
    CHECK(r.end_s[r.critical_path.back()] == r.makespan_s);
    for (std::size_t i = 1; i < r.critical_path.size(); ++i) {
      CHECK(r.start_s[r.critical_path[i]] == r.end_s[r.critical_path[i - 1]]);
    }
    CHECK(sum_on_path(g, r.critical_path) == r.makespan_s);

    // Overlap against a brute-force union of compute intervals; the split sums to the total.
    std::vector<std::pair<double, double>> compute_iv;
    std::vector<std::pair<double, double>> comm_iv;
    for (OpId v = 0; v < static_cast<OpId>(n); ++v) {
      const bool comm = g.resource_kind(Resource(g.op(v).resource)) == ResourceKind::Comm;
      (comm ? comm_iv : compute_iv).push_back({r.start_s[v], r.end_s[v]});
    }
    std::vector<LabelTime> expected(labels.size());
    for (OpId v = 0; v < static_cast<OpId>(n); ++v) {
      LabelTime& e = expected[g.op(v).label];
      e.total_s += g.op(v).duration_s;
      if (g.resource_kind(Resource(g.op(v).resource)) != ResourceKind::Comm) continue;
      e.comm_s += g.op(v).duration_s;
      e.overlapped_s += covered(compute_iv, r.start_s[v], r.end_s[v]);
    }
    // Each label's own exposure is its comm time outside compute (brute force); the labels share
    // the exposed wall time (below) in proportion to it.
    double own_exposed = 0;
    for (LabelId l : labels)
      own_exposed += expected[l].comm_s - expected[l].overlapped_s;
    // Exposed wall time: on the elementary segments between all op boundaries, count those where
    // some comm op runs and no compute op does.
    std::vector<double> cuts{0.0};
    for (OpId v = 0; v < static_cast<OpId>(n); ++v) {
      cuts.push_back(r.start_s[v]);
      cuts.push_back(r.end_s[v]);
    }
    std::sort(cuts.begin(), cuts.end());
    double exposed = 0;
    for (std::size_t i = 1; i < cuts.size(); ++i) {
      if (cuts[i] == cuts[i - 1]) continue;
      const double mid = (cuts[i] + cuts[i - 1]) / 2;
      const auto runs = [mid](const auto& iv) {
        return std::any_of(iv.begin(), iv.end(),
                           [mid](const auto& x) { return x.first <= mid && mid < x.second; });
      };
      if (runs(comm_iv) && !runs(compute_iv)) exposed += cuts[i] - cuts[i - 1];
    }
    CHECK(r.exposed_comm_s == exposed);
    const double share = own_exposed > exposed ? exposed / own_exposed : 1.0;
    double label_exposed = 0;
    for (LabelId l : labels) {
      CHECK(r.labels[l].total_s == expected[l].total_s);
      CHECK(r.labels[l].comm_s == expected[l].comm_s);
      const double own = expected[l].comm_s - expected[l].overlapped_s;
      CHECK(r.labels[l].exposed_s == Approx(own * share).margin(1e-12));
      CHECK(r.labels[l].overlapped_s + r.labels[l].exposed_s == Approx(r.labels[l].comm_s));
      CHECK(r.labels[l].exposed_s >= 0.0);
      label_exposed += r.labels[l].exposed_s;
    }
    CHECK(label_exposed == Approx(exposed).margin(1e-12));
  }
}

TEST_CASE("a reused Scheduler and a cleared StepGraph give fresh results",
          "[simulator][schedule]") {
  Scheduler reused;
  StepGraph g;
  build_prefetch_chain(g, 6, 1.5, 1.0);
  const double long_gathers = reused.run(g).makespan_s;  // 6 * 1.5 + 1 = 10
  g.clear();
  build_prefetch_chain(g, 3, 0.5, 1.0);
  const Schedule& r = reused.run(g);
  Scheduler fresh;
  StepGraph g2;
  build_prefetch_chain(g2, 3, 0.5, 1.0);
  const Schedule& expected = fresh.run(g2);
  CHECK(long_gathers == 10.0);
  CHECK(r.makespan_s == 3.5);  // 0.5 + 3 * 1
  CHECK(r.start_s == expected.start_s);
  CHECK(r.end_s == expected.end_s);
  CHECK(r.critical_path == expected.critical_path);
  CHECK(r.labels.size() == expected.labels.size());
  CHECK(g.label("all_gather") == g2.label("all_gather"));  // labels survive clear()
  // Copies and moves rebuild the Boost graph's edge bookkeeping (its out-edges point into its
  // own edge vector); the copy and the moved-to graph must schedule like the original.
  const std::vector<double> end_s = expected.end_s;
  StepGraph copy = g2;
  StepGraph moved = std::move(g2);
  Scheduler other;
  CHECK(other.run(copy).end_s == end_s);
  CHECK(other.run(moved).end_s == end_s);
}

TEST_CASE("bad step graphs are refused with a reason", "[simulator][schedule]") {
  StepGraph g;
  const LabelId l = g.label("attention");
  const OpId a = g.add_op({.label = l, .duration_s = 1.0});
  const OpId b = g.add_op({.label = l, .duration_s = 1.0}, {a});
  CHECK_THROWS_AS(g.add_op({.label = l, .duration_s = -1.0}), std::invalid_argument);
  CHECK_THROWS_AS(g.add_op({.label = l, .duration_s = 1.0, .resource = Resource(7)}),
                  std::invalid_argument);
  CHECK_THROWS_AS(g.add_op({.label = 9, .duration_s = 1.0}), std::invalid_argument);
  CHECK_THROWS_AS(g.add_dependency(a, 42), std::invalid_argument);
  CHECK_THROWS_AS(g.add_dependency(a, a), std::invalid_argument);
  g.add_dependency(b, a);
  Scheduler s;
  CHECK_THROWS_WITH(s.run(g), Catch::Contains("cycle"));
  StepGraph empty;
  CHECK(s.run(empty).makespan_s == 0.0);
  CHECK(s.run(empty).critical_path.empty());
}

// An FSDP + expert-parallel step of `layers` MoE layers, forward and backward, one micro-batch:
// 11 ops per layer on a compute stream and two comm streams (intra- and inter-node).
void build_bench_step(StepGraph& g, int layers) {
  const Resource inter = Resource(2);
  const LabelId ag = g.label("all_gather"), attn = g.label("attention"), disp = g.label("dispatch"),
                exp = g.label("experts"), comb = g.label("combine"), rs = g.label("reduce_scatter");
  OpId prev = 0;
  bool first = true;
  std::vector<OpId> gathers;
  for (int i = 0; i < layers; ++i) {
    const OpId gather =
        g.add_op({.label = ag, .duration_s = 2e-3, .resource = Stream::Comm, .layer = i});
    if (!first) g.add_dependency(prev, gather);
    const OpId a = g.add_op({.label = attn, .duration_s = 3e-3, .layer = i}, {gather});
    if (!first) g.add_dependency(prev, a);
    const OpId d =
        g.add_op({.label = disp, .duration_s = 1e-3, .resource = inter, .layer = i}, {a});
    const OpId e = g.add_op({.label = exp, .duration_s = 4e-3, .layer = i}, {d});
    prev = g.add_op({.label = comb, .duration_s = 1e-3, .resource = inter, .layer = i}, {e});
    first = false;
  }
  for (int i = layers - 1; i >= 0; --i) {
    const OpId gather =
        g.add_op({.label = ag, .duration_s = 2e-3, .resource = Stream::Comm, .layer = i});
    const OpId cb =
        g.add_op({.label = comb, .duration_s = 1e-3, .resource = inter, .layer = i}, {prev});
    const OpId e = g.add_op({.label = exp, .duration_s = 8e-3, .layer = i}, {cb, gather});
    const OpId d =
        g.add_op({.label = disp, .duration_s = 1e-3, .resource = inter, .layer = i}, {e});
    const OpId a = g.add_op({.label = attn, .duration_s = 6e-3, .layer = i}, {d});
    g.add_op({.label = rs, .duration_s = 2e-3, .resource = Stream::Comm, .layer = i}, {a});
    prev = a;
  }
}

TEST_CASE("schedule: ops scheduled per second", "[.bench]") {
  StepGraph g;
  g.add_resource("comm_inter", ResourceKind::Comm);
  const int layers = 32;
  build_bench_step(g, layers);
  Scheduler s;
  const int reps = 20000;
  using clock = std::chrono::steady_clock;

  double sink = 0;
  auto t0 = clock::now();
  for (int i = 0; i < reps; ++i)
    sink += s.run(g).makespan_s;
  const double run_s = std::chrono::duration<double>(clock::now() - t0).count();

  t0 = clock::now();
  for (int i = 0; i < reps; ++i) {
    g.clear();
    build_bench_step(g, layers);
    sink += s.run(g).makespan_s;
  }
  const double build_run_s = std::chrono::duration<double>(clock::now() - t0).count();

  const double ops = static_cast<double>(g.op_count()) * reps;
  WARN(g.op_count() << " ops, " << boost::num_edges(g.graph()) << " edges, " << reps
                    << " runs: schedule only " << ops / run_s / 1e6 << " M ops/s ("
                    << run_s / reps * 1e6 << " us/run); clear + build + schedule "
                    << ops / build_run_s / 1e6 << " M ops/s (" << build_run_s / reps * 1e6
                    << " us/run); makespan " << sink / (2 * reps) << " s");
}

TEST_CASE("concurrent exposed comm ops share the time they add, once", "[simulator][schedule]") {
  // Compute [0, 1), then an all-gather on the comm stream and an all-to-all on a second comm
  // stream, both after it and independent: the gather runs [1, 3), the all-to-all [1, 2). The
  // step is 3 s, compute 1 s, so communication adds 2 s, not 2 + 1. Each label's own exposure
  // (2 and 1) is scaled by 2 / 3: 4/3 and 2/3 s, and the rest counts as hidden.
  StepGraph g;
  const LabelId attention = g.label("attention");
  const LabelId all_gather = g.label("all_gather");
  const LabelId dispatch = g.label("dispatch");
  const Resource second = g.add_resource("critical_comm", ResourceKind::Comm);
  const OpId compute = g.add_op({.label = attention, .duration_s = 1.0});
  g.add_op({.label = all_gather, .duration_s = 2.0, .resource = Stream::Comm}, {compute});
  g.add_op({.label = dispatch, .duration_s = 1.0, .resource = second}, {compute});
  Scheduler s;
  const Schedule& r = s.run(g);
  CHECK(r.makespan_s == 3.0);
  CHECK(r.exposed_comm_s == 2.0);
  CHECK(r.labels[all_gather].exposed_s == Approx(4.0 / 3.0).epsilon(1e-12));
  CHECK(r.labels[dispatch].exposed_s == Approx(2.0 / 3.0).epsilon(1e-12));
  CHECK(r.labels[all_gather].exposed_s + r.labels[dispatch].exposed_s == Approx(2.0));
  CHECK(r.labels[all_gather].overlapped_s == Approx(2.0 / 3.0).epsilon(1e-12));
  // Compute plus every label's exposed time is the makespan.
  CHECK(1.0 + r.labels[all_gather].exposed_s + r.labels[dispatch].exposed_s == Approx(3.0));
}
