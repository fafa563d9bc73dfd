// Topology: the cluster as a directed graph (Boost.Graph) of devices, one intra-node switch per
// node (NVSwitch, PCIe switch or shared memory), the node's NICs and one network fabric, with a
// bandwidth and a latency on every link. Routes between devices are shortest paths in that graph,
// computed once per (local index a, local index b, same node or not), since all nodes are alike.
//
// Vertices and links (bandwidths one direction, bytes/s):
//   device <-> node switch    intra_node.bandwidth_GBps      intra_node.latency_us / 2 each way
//   device <-> its NIC        the NIC's achievable rate      inter_node.latency_us / 4
//   NIC    <-> network        nic_bandwidth x efficiency     inter_node.latency_us / 4
// so a path inside a node adds up to the intra-node latency and a path across nodes (device, NIC,
// network, NIC, device) to the inter-node latency. Device i of a node uses NIC
// floor(i * nics / devices_per_node) (rail-local, as DGX and p4d wire them). With more NICs than
// devices (p5: 32 EFA for 8 GPUs), each device owns nics / devices_per_node of them and one NIC
// vertex stands for that bundle. The device-NIC link is as wide as the NIC (GPUDirect RDMA through
// a PCIe switch wider than the NIC), so NICs shared by several devices show up on the NIC-network
// link. Routing prefers the node's own fabric: links to and from a NIC weigh twice a switch link,
// so traffic inside a node never loops through a shared NIC.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/hardware.hpp"

namespace moetune::simulator {

// One direction of a link.
struct Link {
  double bandwidth_Bps = 0;
  double latency_s = 0;
};

enum class VertexKind : std::uint8_t { Device, NodeSwitch, Nic, Network };

// An edge of a route, named by the node that owns it (the source's or the destination's) and its
// index among that node's edges (see Topology's local edge numbering).
struct PathEdge {
  bool at_destination = false;
  std::int32_t local_edge = 0;
};

// A route between two devices.
struct Path {
  std::vector<PathEdge> edges;  // in order, source first
  double latency_s = 0;         // sum over the edges
  double bottleneck_Bps = 0;    // narrowest edge
};

class Topology {
 public:
  explicit Topology(const ClusterSpec& cluster);

  const ClusterSpec& cluster() const { return cluster_; }
  std::int64_t nodes() const { return cluster_.nodes; }
  std::int64_t devices_per_node() const { return cluster_.devices_per_node; }
  std::int64_t world_size() const { return cluster_.world_size(); }
  // NIC vertices per node (one per NIC, or one per device's bundle when NICs outnumber devices).
  std::int64_t nic_vertices_per_node() const { return nic_vertices_; }
  // The NIC vertex (index within the node) device `local` sends and receives through.
  std::int64_t nic_of(std::int64_t local) const;

  std::size_t vertex_count() const;
  std::size_t edge_count() const;
  VertexKind vertex_kind(std::size_t vertex) const;

  // Every node owns the same edges, numbered 0 .. edges_per_node() - 1; edge e of node n is
  // n * edges_per_node() + e of the whole graph. Local edge numbers:
  std::int32_t edges_per_node() const { return edges_per_node_; }
  std::int32_t device_to_switch(std::int64_t local) const;
  std::int32_t switch_to_device(std::int64_t local) const;
  std::int32_t device_to_nic(std::int64_t local) const;
  std::int32_t nic_to_device(std::int64_t local) const;
  std::int32_t nic_to_network(std::int64_t nic) const;
  std::int32_t network_to_nic(std::int64_t nic) const;
  const Link& link(std::int32_t local_edge) const {
    return links_[static_cast<std::size_t>(local_edge)];
  }

  // Route from device `from` to device `to` (indices within their nodes), either in one node or
  // between two different nodes. Precomputed; no allocation.
  const Path& path(std::int64_t from, std::int64_t to, bool same_node) const;
  // Route between two global ranks.
  const Path& route(std::int64_t from_rank, std::int64_t to_rank) const;
  // The narrowest link and the largest latency over the routes between every two members of a
  // group (global ranks): what the slowest pair in the group sees.
  Link worst_link(const std::vector<std::int64_t>& ranks) const;

 private:
  struct Graph;  // the Boost adjacency_list, kept out of this header

  std::int64_t vertex_of_device(std::int64_t node, std::int64_t local) const;
  void add_links(Graph& g);
  void compute_paths(const Graph& g);

  ClusterSpec cluster_;
  std::int64_t nic_vertices_ = 0;
  std::int32_t edges_per_node_ = 0;
  std::vector<Link> links_;  // by local edge
  std::shared_ptr<const Graph> graph_;
  // paths_[(same_node ? 0 : 1) * d * d + from * d + to]; the cross-node half is empty on one node.
  std::vector<Path> paths_;
};

std::string to_string(VertexKind kind);

}  // namespace moetune::simulator
