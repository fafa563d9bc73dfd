// Collective costs (alpha-beta with the nccl-tests conventions) on a made-up cluster with round
// numbers, so each expected time can be worked out by hand; and one invariant of the step-time
// model that needs no reference: sending the all-to-all across nodes is never cheaper than keeping
// it inside a node. Times are compared with a relative tolerance of 1e-12: the model divides
// decimal quantities (bytes / bytes-per-second, microseconds * 1e-6) that are not exact in binary.
#include <catch2/catch.hpp>

#include "core/mesh.hpp"
#include "core/presets.hpp"
#include "simulator/collectives.hpp"
#include "simulator/simulator.hpp"

using namespace moetune;
using namespace moetune::simulator;

namespace {

// 2 nodes x 8 devices; intra-node 100 GB/s per device and 10 us; 4 NICs of 25 GB/s at 50%
// efficiency = 50 GB/s per node, 20 us.
ClusterSpec round_cluster() {
  ClusterSpec c = load_cluster("p4d.24xlarge", 2, 8);
  c.intra_node.bandwidth_GBps = 100;
  c.intra_node.latency_us = 10;
  c.inter_node.nics_per_node = 4;
  c.inter_node.nic_bandwidth_GBps = 25;
  c.inter_node.efficiency = 0.5;
  c.inter_node.latency_us = 20;
  return c;
}

GroupPlacement placement(std::int64_t ep, std::int64_t hs, const std::string& order, Group g) {
  Layout l;
  l.ep = ep;
  l.hs = hs;
  l.order = parse_order(order);
  return Mesh(l, 8).placement(g);
}

}  // namespace

TEST_CASE("collectives inside a node run at the intra-node bus bandwidth",
          "[simulator][collectives]") {
  const ClusterSpec c = round_cluster();
  // hs = 8 inside a node (order tp, hs, ep).
  const GroupPlacement hs8 = placement(2, 8, "tp,hs,ep", Group::Hs);
  REQUIRE(hs8.within_node());
  REQUIRE(hs8.size == 8);
  // All-reduce of 8 GB over 8 ranks: 2 * 8e9 * 7/8 = 14e9 bytes at 100e9 B/s = 0.14 s,
  // plus 2 * 7 = 14 steps of 10 us = 140 us -> 0.14014 s.
  CHECK(collective_seconds(Collective::AllReduce, 8e9, hs8, c) == Approx(0.14014).epsilon(1e-12));
  // All-gather of 8 GB: 8e9 * 7/8 = 7e9 bytes -> 0.07 s + 7 * 10 us = 0.07007 s.
  CHECK(collective_seconds(Collective::AllGather, 8e9, hs8, c) == Approx(0.07007).epsilon(1e-12));
  CHECK(collective_seconds(Collective::ReduceScatter, 8e9, hs8, c) ==
        Approx(0.07007).epsilon(1e-12));
}

TEST_CASE("collectives across nodes share the node's NICs", "[simulator][collectives]") {
  const ClusterSpec c = round_cluster();
  SECTION("all-gather over hs = 16 (8 per node)") {
    Layout l;
    l.hs = 16;
    const GroupPlacement hs16 = Mesh(l, 8).placement(Group::Hs);
    REQUIRE(hs16.nodes_spanned == 2);
    REQUIRE(hs16.max_ranks_per_node == 8);
    // 16 GB: wire 16e9 * 15/16 = 15e9 bytes; intra 0.15 s; one group per node (8/8) sends the
    // wire bytes over 50 GB/s: 0.3 s; the slower wins; + 15 steps of 20 us -> 0.3003 s.
    CHECK(collective_seconds(Collective::AllGather, 16e9, hs16, c) ==
          Approx(0.3003).epsilon(1e-12));
  }
  SECTION("all-to-all over ep = 2, one rank per node") {
    const GroupPlacement ep = placement(2, 8, "tp,hs,ep", Group::Ep);
    REQUIRE(ep.nodes_spanned == 2);
    REQUIRE(ep.max_ranks_per_node == 1);
    // 1 GB per rank: half of it leaves the node; all 8 ranks of the node do so at once:
    // 8 * 1e9 * (2 - 1)/2 = 4e9 bytes at 50e9 B/s = 0.08 s; + 1 step of 20 us -> 0.08002 s.
    CHECK(collective_seconds(Collective::AllToAll, 1e9, ep, c) == Approx(0.08002).epsilon(1e-12));
  }
  SECTION("all-gather over hs = 8 split 4 + 4 over the nodes") {
    const GroupPlacement hs = placement(2, 8, "tp,ep,hs", Group::Hs);
    REQUIRE(hs.nodes_spanned == 2);
    REQUIRE(hs.max_ranks_per_node == 4);
    // 8 GB: wire 7e9; two groups (8/4) share the node's NICs: 2 * 7e9 / 50e9 = 0.28 s;
    // + 7 steps of 20 us -> 0.28014 s.
    CHECK(collective_seconds(Collective::AllGather, 8e9, hs, c) == Approx(0.28014).epsilon(1e-12));
  }
}

TEST_CASE("trivial collectives cost nothing", "[simulator][collectives]") {
  const ClusterSpec c = round_cluster();
  const GroupPlacement one = placement(2, 8, "tp,ep,hs", Group::Tp);
  REQUIRE(one.size == 1);
  CHECK(collective_seconds(Collective::AllReduce, 1e9, one, c) == 0);
  const GroupPlacement hs8 = placement(2, 8, "tp,hs,ep", Group::Hs);
  CHECK(collective_seconds(Collective::AllGather, 0, hs8, c) == 0);
}

TEST_CASE("point-to-point between pipeline stages", "[simulator][collectives]") {
  const ClusterSpec c = round_cluster();
  // Inside a node: 10 us + 1e9 / 100e9 = 0.01001 s.
  CHECK(p2p_seconds(1e9, false, c) == Approx(0.01001).epsilon(1e-12));
  // Across nodes the 8 devices share 50 GB/s: 20 us + 1e9 / 6.25e9 = 0.16002 s.
  CHECK(p2p_seconds(1e9, true, c) == Approx(0.16002).epsilon(1e-12));
  CHECK(p2p_seconds(0, true, c) == 0);
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
