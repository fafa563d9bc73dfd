// Collective costs on the topology graph, checked against alpha-beta figures worked out by hand.
// Most cases use a made-up cluster with round numbers: 8 devices per node at 100 GB/s and 10 us on
// the switch; 4 NICs of 25 GB/s at 50% efficiency (12.5 GB/s each, 50 GB/s per node) and 20 us
// across nodes; device i uses NIC i / 2. Others use the p4d.24xlarge and p5.48xlarge presets.
// Times are compared with a relative tolerance of 1e-12: the model divides decimal quantities
// (bytes / bytes-per-second, microseconds * 1e-6) that are not exact in binary.
#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <set>
#include <string>
#include <vector>

#include "core/mesh.hpp"
#include "core/presets.hpp"
#include "simulator/collectives.hpp"
#include "simulator/simulator.hpp"

using namespace moetune;
using namespace moetune::simulator;

namespace {

ClusterSpec round_cluster(std::int64_t nodes, std::int64_t devices_per_node = 8) {
  ClusterSpec c = load_cluster("p4d.24xlarge", nodes, devices_per_node);
  c.intra_node.bandwidth_GBps = 100;
  c.intra_node.latency_us = 10;
  c.inter_node.nics_per_node = 4;
  c.inter_node.nic_bandwidth_GBps = 25;
  c.inter_node.efficiency = 0.5;
  c.inter_node.latency_us = 20;
  return c;
}

Mesh mesh(std::int64_t d, std::int64_t ep, std::int64_t hs, const std::string& order,
          std::int64_t rep = 1, std::int64_t pp = 1, std::int64_t tp = 1) {
  Layout l;
  l.tp = tp;
  l.ep = ep;
  l.hs = hs;
  l.rep = rep;
  l.pp = pp;
  l.order = parse_order(order);
  return Mesh(l, d);
}

constexpr double kTol = 1e-12;

bool close(const AlphaBeta& a, const AlphaBeta& b) {
  const auto near = [](double x, double y) {
    return std::abs(x - y) <= kTol * std::max(std::abs(x), std::abs(y));
  };
  return near(a.alpha_s, b.alpha_s) && near(a.beta_s_per_byte, b.beta_s_per_byte);
}

}  // namespace

TEST_CASE("collectives inside a node follow the alpha-beta formula", "[simulator][collectives]") {
  const CollectiveModel model(round_cluster(2));
  // hs = 8 inside each node (order tp, hs, ep): a ring over 8 devices on the switch.
  const Mesh m = mesh(8, 2, 8, "tp,hs,ep");
  // All-gather: every hop carries 7/8 of S -> beta = 0.875 / 100e9 = 8.75e-12 s/B; 7 steps of
  // 10 us -> alpha = 70 us. 8 GB: 0.07 s + 70 us = 0.07007 s.
  const CollectiveCost ag = model.cost(Collective::AllGather, m, Group::Hs);
  CHECK(ag.algorithm == Algorithm::Ring);
  CHECK(ag.line.alpha_s == Approx(70e-6).epsilon(kTol));
  CHECK(ag.line.beta_s_per_byte == Approx(8.75e-12).epsilon(kTol));
  CHECK(ag.seconds(8e9) == Approx(0.07007).epsilon(kTol));
  CHECK(model.seconds(Collective::ReduceScatter, m, Group::Hs, 8e9) ==
        Approx(0.07007).epsilon(kTol));
  // All-reduce: 2 * 7/8 of S per hop, 14 steps: 0.14 s + 140 us; no hierarchical inside a node.
  const CollectiveCost ar = model.cost(Collective::AllReduce, m, Group::Hs);
  CHECK_FALSE(ar.has_hierarchical);
  CHECK(ar.seconds(8e9) == Approx(0.14014).epsilon(kTol));
  // All-to-all over ep = 8 inside a node (order tp, ep, hs): each device sends 1/8 of S to each of
  // 7 others, 7/8 of S through its switch link: 1e9 * 0.875 / 100e9 = 8.75 ms, + 7 * 10 us.
  const CollectiveCost a2a = model.cost(Collective::AllToAll, mesh(8, 8, 2, "tp,ep,hs"), Group::Ep);
  CHECK(a2a.algorithm == Algorithm::Direct);
  CHECK(a2a.seconds(1e9) == Approx(0.00882).epsilon(kTol));
}

TEST_CASE("rings across nodes are limited by the NICs", "[simulator][collectives]") {
  const CollectiveModel model(round_cluster(2));
  SECTION("all-gather over hs = 16, 8 per node") {
    // The ring crosses each node boundary once; a crossing carries 15/16 of S, split over the 4
    // NICs of the node: 15/64 of S per NIC at 12.5 GB/s -> beta 1.875e-11 s/B (the switch links
    // carry 15/16 at 100 GB/s: 9.375e-12, less). 16 GB: 0.3 s + 15 steps of 20 us = 0.3003 s.
    const CollectiveCost ag = model.cost(Collective::AllGather, mesh(8, 1, 16, "tp"), Group::Hs);
    CHECK(ag.line.beta_s_per_byte == Approx(1.875e-11).epsilon(kTol));
    CHECK(ag.seconds(16e9) == Approx(0.3003).epsilon(kTol));
  }
  SECTION("all-gather over hs = 8 split 4 + 4 over the nodes") {
    // Order tp, ep, hs: the two hs groups hold local devices {0,2,4,6} and {1,3,5,7}, each on all
    // 4 NICs; per NIC 2 groups x 7/8 / 4 = 7/16 of S. 8 GB: 3.5e9 / 12.5e9 = 0.28 s + 7 * 20 us.
    CHECK(model.seconds(Collective::AllGather, mesh(8, 2, 8, "tp,ep,hs"), Group::Hs, 8e9) ==
          Approx(0.28014).epsilon(kTol));
  }
  SECTION("p4d: bus bandwidth tends to 4 x 12.5 GB/s x 0.78 = 39 GB/s per node") {
    const CollectiveModel p4d(load_cluster("p4d.24xlarge", 2, std::nullopt));
    // t = 15 * 75 us + S * 15/64 / 9.75e9; busbw = S / t * 15/16 -> 39 GB/s; at 1 TB the latency
    // is 1.1 ms of 24 s (5e-5).
    CHECK(p4d.bus_bandwidth_GBps(Collective::AllGather, mesh(8, 1, 16, "tp"), Group::Hs, 1e12) ==
          Approx(39).epsilon(1e-4));
  }
}

TEST_CASE("all-to-all across nodes runs at one NIC per GPU", "[simulator][collectives]") {
  SECTION("ep = 2, one member per node") {
    const CollectiveModel model(round_cluster(2));
    // Order tp, hs, ep: each device sends half of its 1 GB to its peer on the other node through
    // its NIC, which it shares with one other device: 1e9 / 12.5e9 = 0.08 s, + 1 step of 20 us.
    CHECK(model.seconds(Collective::AllToAll, mesh(8, 2, 8, "tp,hs,ep"), Group::Ep, 1e9) ==
          Approx(0.08002).epsilon(kTol));
  }
  SECTION("p5: ep = 16 over 2 nodes") {
    const CollectiveModel p5(load_cluster("p5.48xlarge", 2, std::nullopt));
    const Mesh m = mesh(8, 16, 1, "tp,ep");
    // Each GPU sends 8/16 of S off the node through its own 4 EFA (4 x 12.5 x 0.82 = 41 GB/s):
    // beta = 0.5 / 41e9 (NVLink: 7/16 at 370 GB/s, less). busbw = 41 x 2 x 15/16 = 76.875 GB/s
    // (measured 79.3 on 2 p5 nodes, hardware.md 3c).
    CHECK(p5.cost(Collective::AllToAll, m, Group::Ep).line.beta_s_per_byte ==
          Approx(0.5 / 41e9).epsilon(kTol));
    CHECK(p5.bus_bandwidth_GBps(Collective::AllToAll, m, Group::Ep, 1e12) ==
          Approx(76.875).epsilon(1e-4));
  }
  SECTION("p4d: two GPUs per EFA") {
    const CollectiveModel p4d(load_cluster("p4d.24xlarge", 2, std::nullopt));
    // Each NIC carries two GPUs' halves: 1 x S at 9.75 GB/s.
    CHECK(p4d.cost(Collective::AllToAll, mesh(8, 16, 1, "tp,ep"), Group::Ep).line.beta_s_per_byte ==
          Approx(1 / 9.75e9).epsilon(kTol));
  }
}

TEST_CASE("the same group size costs more when it crosses nodes", "[simulator][collectives]") {
  const CollectiveModel p4d(load_cluster("p4d.24xlarge", 2, std::nullopt));
  const Mesh inside = mesh(8, 2, 8, "tp,hs,ep");  // hs = 8 in one node
  const Mesh across = mesh(8, 2, 8, "tp,ep,hs");  // hs = 8 as 4 + 4
  for (Collective c : {Collective::AllGather, Collective::ReduceScatter, Collective::AllReduce}) {
    for (double bytes : {1e3, 1e6, 1e9}) {
      INFO(to_string(c) << " " << bytes);
      CHECK(p4d.seconds(c, inside, Group::Hs, bytes) < p4d.seconds(c, across, Group::Hs, bytes));
    }
  }
}

TEST_CASE("DESIGN example: the mesh order decides which collective crosses nodes",
          "[simulator][collectives]") {
  // 16 A100 on 2 p4d nodes, ep = 2, hs = 8; 1 GB. NVSwitch 230 GB/s, 13 us; EFA 9.75 GB/s, 75 us.
  const CollectiveModel p4d(load_cluster("p4d.24xlarge", 2, std::nullopt));
  const Mesh shard_inside = mesh(8, 2, 8, "tp,hs,ep");
  const Mesh shard_across = mesh(8, 2, 8, "tp,ep,hs");
  const double ag_in = p4d.seconds(Collective::AllGather, shard_inside, Group::Hs, 1e9);
  const double ag_out = p4d.seconds(Collective::AllGather, shard_across, Group::Hs, 1e9);
  const double a2a_out = p4d.seconds(Collective::AllToAll, shard_inside, Group::Ep, 1e9);
  const double a2a_in = p4d.seconds(Collective::AllToAll, shard_across, Group::Ep, 1e9);
  // tp,hs,ep: all-gather on NVSwitch, 7/8 GB at 230 GB/s + 7 x 13 us = 3.895 ms;
  //           all-to-all over EFA, 2 GPUs x 0.5 GB per NIC at 9.75 GB/s + 75 us = 102.6 ms.
  CHECK(ag_in == Approx(0.875 / 230 + 7 * 13e-6).epsilon(kTol));
  CHECK(a2a_out == Approx(1 / 9.75 + 75e-6).epsilon(kTol));
  // tp,ep,hs: all-gather 4 + 4, 7/16 GB per NIC + 7 x 75 us = 45.4 ms;
  //           all-to-all between pairs on NVSwitch, 0.5 GB at 230 GB/s + 13 us = 2.187 ms.
  CHECK(ag_out == Approx(0.4375 / 9.75 + 7 * 75e-6).epsilon(kTol));
  CHECK(a2a_in == Approx(0.5 / 230 + 13e-6).epsilon(kTol));
  CHECK(ag_in < ag_out);
  CHECK(a2a_out > a2a_in);
}

TEST_CASE("hierarchical all-reduce beats the flat ring across many nodes",
          "[simulator][collectives]") {
  // 16 round nodes, one all-reduce over all 128 devices (rep = 128), 8 per node.
  const CollectiveModel model(round_cluster(16));
  const CollectiveCost ar =
      model.cost(Collective::AllReduce, mesh(8, 1, 1, "tp", 128), Group::ExpertReplicate);
  REQUIRE(ar.has_hierarchical);
  // Ring: 254 steps x 20 us = 5.08 ms; a crossing carries 2 x 127/128 = 1.984375 of S over 4
  // NICs: 0.49609375 / 12.5e9 = 3.96875e-11 s/B.
  CHECK(ar.line.alpha_s == Approx(5.08e-3).epsilon(kTol));
  CHECK(ar.line.beta_s_per_byte == Approx(3.96875e-11).epsilon(kTol));
  // Hierarchical: reduce-scatter and all-gather in the node (7 steps x 10 us, 7/8 of S per switch
  // link: 8.75e-12 s/B each), then 16-node rings of S/8 per device: 2 x 15/16 / 8 = 0.234375 of S
  // per device, two devices per NIC: 0.46875 / 12.5e9 = 3.75e-11 s/B, 30 steps x 20 us.
  // alpha = 140 us + 600 us = 0.74 ms; beta = 2 x 8.75e-12 + 3.75e-11 = 5.5e-11 s/B.
  CHECK(ar.hierarchical.alpha_s == Approx(0.74e-3).epsilon(kTol));
  CHECK(ar.hierarchical.beta_s_per_byte == Approx(5.5e-11).epsilon(kTol));
  // 100 MB: ring 5.08 + 3.97 = 9.05 ms, hierarchical 0.74 + 5.5 = 6.24 ms.
  CHECK(ar.fastest(1e8) == Algorithm::Hierarchical);
  CHECK(ar.seconds(1e8) == Approx(6.24e-3).epsilon(kTol));
  // 10 GB: ring 0.402 s, hierarchical 0.551 s: the ring's bandwidth wins (NCCL, too, picks ring
  // for large buffers and trees at scale for small ones).
  CHECK(ar.fastest(1e10) == Algorithm::Ring);
  CHECK(ar.seconds(1e10) == Approx(5.08e-3 + 0.396875).epsilon(kTol));
}

TEST_CASE("an 8-GPU H100 all-gather runs at the profile's NVLink bus bandwidth",
          "[simulator][collectives]") {
  const CollectiveModel p5(load_cluster("p5.48xlarge", 1, std::nullopt));
  const Mesh m = mesh(8, 1, 8, "tp");
  // 16 GiB: t = 7/8 * 2^34 / 370e9 + 7 * 13 us = 40.6 ms + 0.09 ms: busbw within 0.3% of 370.
  const double bytes = 16.0 * (1u << 30);
  CHECK(p5.bus_bandwidth_GBps(Collective::AllGather, m, Group::Hs, bytes) ==
        Approx(370).epsilon(3e-3));
  CHECK(p5.bus_bandwidth_GBps(Collective::AllGather, m, Group::Hs, bytes) < 370);
  // The bandwidth term alone: (n-1)/n / beta = 370 GB/s exactly; the ring all-reduce likewise.
  CHECK(0.875 / p5.cost(Collective::AllGather, m, Group::Hs).line.beta_s_per_byte ==
        Approx(370e9).epsilon(kTol));
  CHECK(2 * 0.875 / p5.cost(Collective::AllReduce, m, Group::Hs).line.beta_s_per_byte ==
        Approx(370e9).epsilon(kTol));
}

TEST_CASE("point-to-point between pipeline stages", "[simulator][collectives]") {
  const CollectiveModel model(round_cluster(2));
  // Stages on different nodes (pp outermost): every device sends to its peer on the other node,
  // two devices per NIC: 2 x 1 GB / 12.5 GB/s = 0.16 s + 20 us.
  CHECK(model.p2p(mesh(8, 1, 8, "tp,hs,pp", 1, 2)).seconds(1e9) == Approx(0.16002).epsilon(kTol));
  // Neighbouring stages inside a node (pp innermost): 1 GB at 100 GB/s + 10 us.
  CHECK(model.p2p(mesh(8, 1, 8, "tp,pp,hs", 1, 2)).seconds(1e9) == Approx(0.01001).epsilon(kTol));
  // pp = 4, two stages per node (order tp, hs, pp: stages 0, 1 on node 0): the stage 1 -> 2 hop
  // crosses with 4 devices on NICs 2 and 3: 2 x S per NIC -> 1.6e-10 s/B, 20 us.
  const AlphaBeta four = model.p2p(mesh(8, 1, 4, "tp,hs,pp", 1, 4));
  CHECK(four.beta_s_per_byte == Approx(1.6e-10).epsilon(kTol));
  CHECK(four.alpha_s == Approx(20e-6).epsilon(kTol));
}

TEST_CASE("trivial collectives cost nothing", "[simulator][collectives]") {
  const CollectiveModel model(round_cluster(2));
  const Mesh m = mesh(8, 2, 8, "tp,ep,hs");
  CHECK(model.seconds(Collective::AllReduce, m, Group::Tp, 1e9) == 0);  // tp = 1
  CHECK(model.seconds(Collective::AllGather, m, Group::Hs, 0) == 0);
  CHECK(model.p2p(m).seconds(1e9) == 0);  // pp = 1
  CHECK(model.bus_bandwidth_GBps(Collective::AllReduce, m, Group::Tp, 1e9) == 0);
}

TEST_CASE("costs are cached per group shape", "[simulator][collectives]") {
  const CollectiveModel model(round_cluster(2));
  const Mesh m = mesh(8, 2, 8, "tp,ep,hs");
  CHECK(model.cache_size() == 0);
  const CollectiveCost ag = model.cost(Collective::AllGather, m, Group::Hs);
  CHECK(model.cache_size() == 1);
  // Reduce-scatter has the all-gather's flows; the same groups in another layout share the entry
  // (ep = 2 then hs = 8 in either case; rep added outside does not move them).
  (void)model.cost(Collective::ReduceScatter, m, Group::Hs);
  Layout l;
  l.ep = 2;
  l.hs = 8;
  l.micro_batch = 4;
  (void)model.cost(Collective::AllGather, Mesh(l, 8), Group::Hs);
  CHECK(model.cache_size() == 1);
  CHECK(model.cost(Collective::AllGather, m, Group::Hs).line ==
        model.evaluate(Collective::AllGather, m, Group::Hs, Evaluation::Auto).line);
  const CollectiveModel copy = model;  // copies share the cache
  (void)copy.cost(Collective::AllToAll, m, Group::Ep);
  CHECK(model.cache_size() == 2);
  CHECK(ag.line.beta_s_per_byte > 0);
}

TEST_CASE("the node-0 fast path equals laying out every node", "[simulator][collectives]") {
  // Every layout of 24 devices on 4 nodes of 6 (where many axes straddle node boundaries) and of
  // 32 devices on 4 nodes of 8, every distinct mesh order, every group kind and collective.
  for (std::int64_t d : {6, 8}) {
    const std::int64_t world = 4 * d;
    ClusterSpec c = round_cluster(4, d);
    const CollectiveModel model(c);
    std::int64_t fast = 0, slow = 0, compared = 0, different = 0;
    std::string first_difference;
    // One CHECK at the end rather than ~10^5: Catch's bookkeeping would dominate the run time.
    const auto note = [&](bool same, const std::string& what) {
      ++compared;
      if (!same && different++ == 0) first_difference = what;
    };
    std::set<std::string> seen;
    std::set<std::pair<Group, std::vector<std::int64_t>>> group_shapes;
    std::set<std::vector<std::int64_t>> pipelines;
    std::vector<Axis> outer = {Axis::Ep, Axis::Hs, Axis::Rep, Axis::Pp};
    for (std::int64_t tp = 1; tp <= d; ++tp) {
      if (d % tp != 0) continue;
      for (std::int64_t ep = 1; ep <= world / tp; ++ep) {
        for (std::int64_t hs = 1; hs <= world / (tp * ep); ++hs) {
          for (std::int64_t pp = 1; pp <= world / (tp * ep * hs); ++pp) {
            if (world % (tp * ep * hs * pp) != 0) continue;
            Layout l;
            l.tp = tp;
            l.ep = ep;
            l.hs = hs;
            l.pp = pp;
            l.rep = world / (tp * ep * hs * pp);
            std::sort(outer.begin(), outer.end());
            do {
              l.order = {Axis::Tp, outer[0], outer[1], outer[2], outer[3]};
              if (!seen.insert(describe(l) + order_to_string(canonical_order(l))).second) continue;
              const Mesh m(l, d);
              for (Group g : kAllGroups) {
                // The flows depend only on which ranks form the groups; the rank list of the
                // group of rank 0 (in coordinate order) pins that down, so each is tried once.
                if (!group_shapes.insert({g, m.group_ranks(g, 0)}).second) continue;
                (model.node_symmetric(m, g) ? fast : slow) += 1;
                for (Collective k :
                     {Collective::AllGather, Collective::AllReduce, Collective::AllToAll}) {
                  const CollectiveCost a = model.evaluate(k, m, g, Evaluation::Auto);
                  const CollectiveCost b = model.evaluate(k, m, g, Evaluation::AllNodes);
                  const bool same = close(a.line, b.line) &&
                                    close(a.hierarchical, b.hierarchical) &&
                                    a.has_hierarchical == b.has_hierarchical;
                  note(same, describe(l) + " group " + to_string(g) + " " + to_string(k));
                }
              }
              if (pipelines.insert(m.group_ranks(Group::Pp, 0)).second) {
                note(close(model.evaluate_p2p(m, Evaluation::Auto),
                           model.evaluate_p2p(m, Evaluation::AllNodes)),
                     describe(l) + " p2p");
              }
            } while (std::next_permutation(outer.begin(), outer.end()));
          }
        }
      }
    }
    INFO("devices per node " << d << ", first difference: " << first_difference);
    CHECK(compared > 100);
    CHECK(different == 0);
    CHECK(fast > 0);
    if (d == 6) CHECK(slow > 0);  // some groups straddle node boundaries and take the full path
  }
  // A mesh that is not aligned: ep = 4 over nodes of 6 devices.
  const Mesh skew = mesh(6, 4, 6, "tp,ep,hs");
  const CollectiveModel model(round_cluster(4, 6));
  CHECK_FALSE(model.node_symmetric(skew, Group::Ep));
  CHECK(
      model.seconds(Collective::AllToAll, skew, Group::Ep, 1e9) ==
      Approx(
          model.evaluate(Collective::AllToAll, skew, Group::Ep, Evaluation::AllNodes).seconds(1e9))
          .epsilon(kTol));
}

TEST_CASE("all-to-all across nodes is never cheaper than inside a node", "[simulator][time]") {
  // DESIGN example: Mixtral 8x7B, 16 A100s on 2 p4d nodes, ep = 2, hs = 8. Order tp, hs, ep sends
  // the all-to-all over EFA; tp, ep, hs keeps it on NVSwitch. Same compute, so the exposed
  // dispatch + combine time must be larger in the first order.
  TrainSpec t;
  t.seq_len = 2048;
  t.global_batch = 128;
  const Simulator sim(load_model("mixtral-8x7b"), load_cluster("p4d.24xlarge", 2, std::nullopt), t);
  Layout across;
  across.ep = 2;
  across.hs = 8;
  across.order = parse_order("tp,hs,ep");
  Layout inside = across;
  inside.order = parse_order("tp,ep,hs");
  const Prediction a = sim.predict(across);
  const Prediction b = sim.predict(inside);
  CHECK(a.time.dispatch + a.time.combine > b.time.dispatch + b.time.combine);
  CHECK(a.time.experts == b.time.experts);  // compute does not depend on the order
  CHECK(a.memory == b.memory);              // nor does memory
}

TEST_CASE("cost of one (mesh, group kind) on 1,024 GPUs", "[.bench]") {
  // Hidden by default; run with `test_simulator "[.bench]"`. 128 p5 nodes.
  const auto built = std::chrono::steady_clock::now();
  const CollectiveModel model(load_cluster("p5.48xlarge", 128, std::nullopt));
  const double build_ms =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - built).count() * 1e3;
  std::vector<Mesh> meshes;
  for (std::int64_t tp : {1, 2, 4, 8})
    for (std::int64_t ep : {1, 2, 8, 32})
      for (std::int64_t pp : {1, 4})
        for (const char* order :
             {"tp,ep,hs,rep,pp", "tp,hs,ep,rep,pp", "tp,rep,hs,ep,pp", "tp,pp,ep,hs,rep"}) {
          if (tp * ep * pp * 8 > 1024) continue;
          Layout l;
          l.tp = tp;
          l.ep = ep;
          l.pp = pp;
          l.hs = 8;
          l.rep = 1024 / (tp * ep * pp * 8);
          l.order = parse_order(order);
          meshes.emplace_back(l, 8);
        }
  // Only groups of more than one rank (the others return at once).
  std::vector<std::pair<const Mesh*, Group>> cases;
  for (const Mesh& m : meshes)
    for (Group g : kAllGroups)
      if (m.placement(g).size > 1) cases.emplace_back(&m, g);
  constexpr Collective kKinds[] = {Collective::AllGather, Collective::AllReduce,
                                   Collective::AllToAll};
  using clock = std::chrono::steady_clock;
  // Mean and worst microseconds per (mesh, group kind) for the three collectives together.
  const auto time_cases = [&](Evaluation e, int repeats, double* worst_us) {
    double sink = 0, total = 0;
    *worst_us = 0;
    for (const auto& [m, g] : cases) {
      const auto start = clock::now();
      for (int r = 0; r < repeats; ++r)
        for (Collective k : kKinds)
          sink += model.evaluate(k, *m, g, e).line.beta_s_per_byte;
      const double us = std::chrono::duration<double>(clock::now() - start).count() / repeats * 1e6;
      total += us;
      *worst_us = std::max(*worst_us, us);
    }
    CHECK(sink > 0);
    return total / static_cast<double>(cases.size());
  };
  double fast_worst = 0, full_worst = 0;
  const double fast_us = time_cases(Evaluation::Auto, 50, &fast_worst);
  const double full_us = time_cases(Evaluation::AllNodes, 1, &full_worst);
  std::int64_t lookups = 0;
  const auto start = clock::now();
  for (int r = 0; r < 50; ++r)
    for (const auto& [m, g] : cases)
      for (Collective k : kKinds) {
        (void)model.cost(k, *m, g);
        ++lookups;
      }
  const double cached_us = std::chrono::duration<double>(clock::now() - start).count() /
                           static_cast<double>(lookups) * 1e6;
  std::printf(
      "W=1024 (128 x p5.48xlarge): %zu (mesh, group kind) cases of 2+ ranks, all-gather +\n"
      "all-reduce + all-to-all each: node-0 evaluation %.2f us mean, %.2f us worst;\n"
      "every node laid out %.0f us mean, %.0f us worst; cached cost() %.3f us per collective;\n"
      "building the topology and its routes %.1f ms\n",
      cases.size(), fast_us, fast_worst, full_us, full_worst, cached_us, build_ms);
}
