// The topology graph: vertex and link counts, rail-local NICs, link figures taken from the cluster
// profile, and routes (inside a node through the switch, across nodes device -> NIC -> network ->
// NIC -> device) with their latency and bottleneck. Expected numbers are worked out by hand from
// the p4d.24xlarge and p5.48xlarge presets; bandwidths compared with a relative tolerance of 1e-12
// (GB/s * 1e9 and us * 1e-6 are not exact in binary).
#include <catch2/catch.hpp>

#include "core/error.hpp"
#include "core/presets.hpp"
#include "simulator/topology.hpp"

using namespace moetune;
using namespace moetune::simulator;

TEST_CASE("the graph has every device, switch, NIC and the network", "[simulator][topology]") {
  // p4d: 2 nodes x 8 A100, 4 EFA per node.
  const Topology t(load_cluster("p4d.24xlarge", 2, std::nullopt));
  CHECK(t.nic_vertices_per_node() == 4);
  // 16 devices + 2 node switches + 2 x 4 NICs + 1 network = 27 vertices.
  CHECK(t.vertex_count() == 27);
  // Per node: 8 device<->switch pairs (16), 8 device<->NIC pairs (16), 4 NIC<->network pairs (8)
  // = 40 directed links; 80 for two nodes.
  CHECK(t.edges_per_node() == 40);
  CHECK(t.edge_count() == 80);
  CHECK(t.vertex_kind(0) == VertexKind::Device);
  CHECK(t.vertex_kind(16) == VertexKind::NodeSwitch);
  CHECK(t.vertex_kind(18) == VertexKind::Nic);
  CHECK(t.vertex_kind(26) == VertexKind::Network);
  CHECK(to_string(VertexKind::Nic) == "nic");
}

TEST_CASE("devices use the NIC of their rail", "[simulator][topology]") {
  // p4d: device i uses NIC floor(i * 4 / 8) = i / 2.
  const Topology p4d(load_cluster("p4d.24xlarge", 2, std::nullopt));
  for (std::int64_t i = 0; i < 8; ++i)
    CHECK(p4d.nic_of(i) == i / 2);
  // Three NICs for eight devices: floor(i * 3 / 8) = 0 0 0 1 1 1 2 2.
  ClusterSpec odd = load_cluster("p4d.24xlarge", 2, std::nullopt);
  odd.inter_node.nics_per_node = 3;
  const Topology three(odd);
  const std::int64_t expected[8] = {0, 0, 0, 1, 1, 1, 2, 2};
  for (std::int64_t i = 0; i < 8; ++i)
    CHECK(three.nic_of(i) == expected[i]);
  // p5: 32 EFA for 8 GPUs; each GPU owns a bundle of 4, one NIC vertex per GPU.
  const Topology p5(load_cluster("p5.48xlarge", 2, std::nullopt));
  CHECK(p5.nic_vertices_per_node() == 8);
  for (std::int64_t i = 0; i < 8; ++i)
    CHECK(p5.nic_of(i) == i);
}

TEST_CASE("link figures come from the cluster profile", "[simulator][topology]") {
  const Topology p4d(load_cluster("p4d.24xlarge", 2, std::nullopt));
  // NVSwitch: 230 GB/s per device, 13 us split over the two links of a route.
  CHECK(p4d.link(p4d.device_to_switch(3)).bandwidth_Bps == Approx(230e9).epsilon(1e-12));
  CHECK(p4d.link(p4d.switch_to_device(3)).latency_s == Approx(6.5e-6).epsilon(1e-12));
  // One EFA: 12.5 GB/s x 0.78 = 9.75 GB/s; 75 us over the four links of a cross-node route.
  CHECK(p4d.link(p4d.nic_to_network(1)).bandwidth_Bps == Approx(9.75e9).epsilon(1e-12));
  CHECK(p4d.link(p4d.network_to_nic(1)).latency_s == Approx(18.75e-6).epsilon(1e-12));
  CHECK(p4d.link(p4d.device_to_nic(1)).bandwidth_Bps == Approx(9.75e9).epsilon(1e-12));
  // p5 bundle: 4 x 12.5 GB/s x 0.82 = 41 GB/s per GPU.
  const Topology p5(load_cluster("p5.48xlarge", 2, std::nullopt));
  CHECK(p5.link(p5.nic_to_network(5)).bandwidth_Bps == Approx(41e9).epsilon(1e-12));
}

TEST_CASE("routes inside a node go through the switch", "[simulator][topology]") {
  const Topology t(load_cluster("p4d.24xlarge", 2, std::nullopt));
  // Devices 0 and 1 share NIC 0, yet the route is device -> NVSwitch -> device (2 links), not
  // device -> NIC -> device.
  const Path& p = t.path(0, 1, true);
  REQUIRE(p.edges.size() == 2);
  CHECK(p.edges[0].local_edge == t.device_to_switch(0));
  CHECK(p.edges[1].local_edge == t.switch_to_device(1));
  CHECK(p.latency_s == Approx(13e-6).epsilon(1e-12));
  CHECK(p.bottleneck_Bps == Approx(230e9).epsilon(1e-12));
  CHECK(&t.route(8 + 2, 8 + 7) == &t.path(2, 7, true));  // any node: the same route
}

TEST_CASE("routes across nodes leave through the sender's NIC", "[simulator][topology]") {
  const Topology t(load_cluster("p4d.24xlarge", 4, std::nullopt));
  // Local device 3 (NIC 1) of one node to local device 6 (NIC 3) of another.
  const Path& p = t.path(3, 6, false);
  REQUIRE(p.edges.size() == 4);
  CHECK(p.edges[0].local_edge == t.device_to_nic(3));
  CHECK_FALSE(p.edges[0].at_destination);
  CHECK(p.edges[1].local_edge == t.nic_to_network(1));
  CHECK_FALSE(p.edges[1].at_destination);
  CHECK(p.edges[2].local_edge == t.network_to_nic(3));
  CHECK(p.edges[2].at_destination);
  CHECK(p.edges[3].local_edge == t.nic_to_device(6));
  CHECK(p.edges[3].at_destination);
  CHECK(p.latency_s == Approx(75e-6).epsilon(1e-12));
  CHECK(p.bottleneck_Bps == Approx(9.75e9).epsilon(1e-12));
  // Global ranks 3 (node 0) and 30 (node 3, local 6) use that route.
  CHECK(&t.route(3, 30) == &p);
}

TEST_CASE("a group's worst link is its slowest pair", "[simulator][topology]") {
  const Topology t(load_cluster("p4d.24xlarge", 2, std::nullopt));
  // {0, 1, 2} stay on NVSwitch: 230 GB/s, 13 us.
  const Link inside = t.worst_link({0, 1, 2});
  CHECK(inside.bandwidth_Bps == Approx(230e9).epsilon(1e-12));
  CHECK(inside.latency_s == Approx(13e-6).epsilon(1e-12));
  // Adding rank 8 (the other node) brings in one EFA: 9.75 GB/s, 75 us.
  const Link across = t.worst_link({0, 1, 2, 8});
  CHECK(across.bandwidth_Bps == Approx(9.75e9).epsilon(1e-12));
  CHECK(across.latency_s == Approx(75e-6).epsilon(1e-12));
}

TEST_CASE("clusters the graph cannot describe are refused", "[simulator][topology]") {
  ClusterSpec c = load_cluster("p4d.24xlarge", 2, std::nullopt);
  c.inter_node.nics_per_node = 0;
  CHECK_THROWS_AS(Topology(c), InputError);
  // One node needs no network; it has no route across nodes.
  c.nodes = 1;
  const Topology one(c);
  CHECK(one.vertex_count() == 8 + 1 + 0 + 1);
  CHECK_THROWS(one.path(0, 1, false));
}
