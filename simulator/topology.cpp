// Topology: builds the cluster graph and routes between devices with Dijkstra over link weights
// that prefer the node's own fabric (see topology.hpp).
#include "simulator/topology.hpp"

#include <algorithm>
#include <boost/graph/adjacency_list.hpp>
#include <boost/graph/dijkstra_shortest_paths.hpp>
#include <limits>
#include <string>

#include "core/error.hpp"

namespace moetune::simulator {

namespace {

struct VertexData {
  VertexKind kind = VertexKind::Device;
  std::int64_t node = -1;  // -1 for the network
};

struct EdgeData {
  std::int64_t node = 0;        // the node that owns the link
  std::int32_t local_edge = 0;  // its number within the node
  double weight = 1;            // routing preference (not time)
};

using BoostGraph =
    boost::adjacency_list<boost::vecS, boost::vecS, boost::directedS, VertexData, EdgeData>;

// Routing weights: a hop through the node's switch costs 1, a hop between a device and its NIC 2,
// so a route inside a node never takes a device -> NIC -> device detour (NCCL keeps intra-node
// traffic on NVLink), and a route across nodes never detours through another device's NIC.
constexpr double kSwitchWeight = 1;
constexpr double kNicWeight = 2;
constexpr double kNetworkWeight = 1;

}  // namespace

struct Topology::Graph {
  BoostGraph g;
};

std::string to_string(VertexKind kind) {
  switch (kind) {
    case VertexKind::Device:
      return "device";
    case VertexKind::NodeSwitch:
      return "node_switch";
    case VertexKind::Nic:
      return "nic";
    case VertexKind::Network:
      return "network";
  }
  return "device";
}

Topology::Topology(const ClusterSpec& cluster) : cluster_(cluster) {
  const std::int64_t d = cluster_.devices_per_node;
  const InterNode& net = cluster_.inter_node;
  if (d < 1 || cluster_.nodes < 1) {
    throw InputError("cluster '" + cluster_.name + "': nodes (" + std::to_string(cluster_.nodes) +
                     ") and devices_per_node (" + std::to_string(d) + ") must be at least 1");
  }
  if (d > 1 && cluster_.intra_node.bandwidth_GBps <= 0) {
    throw InputError("cluster '" + cluster_.name +
                     "': intra_node.bandwidth_GBps must be positive with " + std::to_string(d) +
                     " devices per node");
  }
  if (cluster_.nodes > 1 &&
      (net.nics_per_node < 1 || net.nic_bandwidth_GBps <= 0 || net.efficiency <= 0)) {
    throw InputError("cluster '" + cluster_.name + "' has " + std::to_string(cluster_.nodes) +
                     " nodes but no usable network: inter_node needs nics_per_node >= 1, "
                     "nic_bandwidth_GBps > 0 and efficiency > 0");
  }
  nic_vertices_ = std::min(std::max<std::int64_t>(net.nics_per_node, 0), d);
  // Local edges: d device->switch, d switch->device, d device->NIC, d NIC->device, then one
  // NIC->network and one network->NIC per NIC vertex.
  const bool has_nics = nic_vertices_ > 0;
  edges_per_node_ = static_cast<std::int32_t>(2 * d + (has_nics ? 2 * d + 2 * nic_vertices_ : 0));

  auto graph = std::make_shared<Graph>();
  add_links(*graph);
  compute_paths(*graph);
  graph_ = std::move(graph);
}

std::int64_t Topology::nic_of(std::int64_t local) const {
  MOETUNE_CHECK(nic_vertices_ > 0, "the cluster has no NICs");
  return local * nic_vertices_ / cluster_.devices_per_node;
}

std::int32_t Topology::device_to_switch(std::int64_t local) const {
  return static_cast<std::int32_t>(local);
}
std::int32_t Topology::switch_to_device(std::int64_t local) const {
  return static_cast<std::int32_t>(cluster_.devices_per_node + local);
}
std::int32_t Topology::device_to_nic(std::int64_t local) const {
  return static_cast<std::int32_t>(2 * cluster_.devices_per_node + local);
}
std::int32_t Topology::nic_to_device(std::int64_t local) const {
  return static_cast<std::int32_t>(3 * cluster_.devices_per_node + local);
}
std::int32_t Topology::nic_to_network(std::int64_t nic) const {
  return static_cast<std::int32_t>(4 * cluster_.devices_per_node + nic);
}
std::int32_t Topology::network_to_nic(std::int64_t nic) const {
  return static_cast<std::int32_t>(4 * cluster_.devices_per_node + nic_vertices_ + nic);
}

std::size_t Topology::vertex_count() const {
  return boost::num_vertices(graph_->g);
}
std::size_t Topology::edge_count() const {
  return boost::num_edges(graph_->g);
}
VertexKind Topology::vertex_kind(std::size_t vertex) const {
  MOETUNE_CHECK(vertex < vertex_count(), "vertex out of range");
  return graph_->g[vertex].kind;
}

std::int64_t Topology::vertex_of_device(std::int64_t node, std::int64_t local) const {
  return node * cluster_.devices_per_node + local;
}

void Topology::add_links(Graph& graph) {
  BoostGraph& g = graph.g;
  const std::int64_t d = cluster_.devices_per_node;
  const std::int64_t nodes = cluster_.nodes;
  const InterNode& net = cluster_.inter_node;
  // Vertices: devices (global rank order), node switches, NICs (node-major), the network.
  const std::int64_t first_switch = nodes * d;
  const std::int64_t first_nic = first_switch + nodes;
  const std::int64_t network = first_nic + nodes * nic_vertices_;
  for (std::int64_t v = 0; v <= network; ++v) {
    VertexData data;
    if (v < first_switch) {
      data = {VertexKind::Device, v / d};
    } else if (v < first_nic) {
      data = {VertexKind::NodeSwitch, v - first_switch};
    } else if (v < network) {
      data = {VertexKind::Nic, (v - first_nic) / std::max<std::int64_t>(nic_vertices_, 1)};
    } else {
      data = {VertexKind::Network, -1};
    }
    boost::add_vertex(data, g);
  }

  // Link table, the same for every node.
  links_.assign(static_cast<std::size_t>(edges_per_node_), Link{});
  const Link intra{cluster_.intra_node.bandwidth_GBps * 1e9,
                   cluster_.intra_node.latency_us * 1e-6 / 2};
  // One NIC vertex stands for nics / nic_vertices NICs (1, or a device's bundle).
  const double nics_per_vertex = nic_vertices_ > 0 ? static_cast<double>(net.nics_per_node) /
                                                         static_cast<double>(nic_vertices_)
                                                   : 0.0;
  const Link nic{nics_per_vertex * net.nic_bandwidth_GBps * 1e9 * net.efficiency,
                 net.latency_us * 1e-6 / 4};
  for (std::int64_t j = 0; j < d; ++j) {
    links_[static_cast<std::size_t>(device_to_switch(j))] = intra;
    links_[static_cast<std::size_t>(switch_to_device(j))] = intra;
    if (nic_vertices_ > 0) {
      links_[static_cast<std::size_t>(device_to_nic(j))] = nic;
      links_[static_cast<std::size_t>(nic_to_device(j))] = nic;
    }
  }
  for (std::int64_t q = 0; q < nic_vertices_; ++q) {
    links_[static_cast<std::size_t>(nic_to_network(q))] = nic;
    links_[static_cast<std::size_t>(network_to_nic(q))] = nic;
  }

  auto add = [&](std::int64_t from, std::int64_t to, std::int64_t node, std::int32_t local,
                 double weight) {
    boost::add_edge(static_cast<std::size_t>(from), static_cast<std::size_t>(to),
                    EdgeData{node, local, weight}, g);
  };
  for (std::int64_t n = 0; n < nodes; ++n) {
    const std::int64_t sw = first_switch + n;
    for (std::int64_t j = 0; j < d; ++j) {
      const std::int64_t dev = vertex_of_device(n, j);
      add(dev, sw, n, device_to_switch(j), kSwitchWeight);
      add(sw, dev, n, switch_to_device(j), kSwitchWeight);
      if (nic_vertices_ > 0) {
        const std::int64_t nic_vertex = first_nic + n * nic_vertices_ + nic_of(j);
        add(dev, nic_vertex, n, device_to_nic(j), kNicWeight);
        add(nic_vertex, dev, n, nic_to_device(j), kNicWeight);
      }
    }
    for (std::int64_t q = 0; q < nic_vertices_; ++q) {
      const std::int64_t nic_vertex = first_nic + n * nic_vertices_ + q;
      add(nic_vertex, network, n, nic_to_network(q), kNetworkWeight);
      add(network, nic_vertex, n, network_to_nic(q), kNetworkWeight);
    }
  }
}

void Topology::compute_paths(const Graph& graph) {
  const BoostGraph& g = graph.g;
  const std::int64_t d = cluster_.devices_per_node;
  const std::size_t dd = static_cast<std::size_t>(d * d);
  paths_.assign(2 * dd, Path{});
  const std::size_t n_vertices = boost::num_vertices(g);
  std::vector<std::size_t> pred(n_vertices);
  std::vector<double> dist(n_vertices);
  const std::int64_t target_nodes = std::min<std::int64_t>(cluster_.nodes, 2);
  for (std::int64_t a = 0; a < d; ++a) {
    const auto source = static_cast<std::size_t>(vertex_of_device(0, a));
    boost::dijkstra_shortest_paths(g, source,
                                   boost::weight_map(boost::get(&EdgeData::weight, g))
                                       .predecessor_map(boost::make_iterator_property_map(
                                           pred.begin(), boost::get(boost::vertex_index, g)))
                                       .distance_map(boost::make_iterator_property_map(
                                           dist.begin(), boost::get(boost::vertex_index, g))));
    for (std::int64_t node = 0; node < target_nodes; ++node) {
      for (std::int64_t b = 0; b < d; ++b) {
        Path& p = paths_[static_cast<std::size_t>(node) * dd + static_cast<std::size_t>(a * d + b)];
        p.bottleneck_Bps = std::numeric_limits<double>::infinity();
        auto v = static_cast<std::size_t>(vertex_of_device(node, b));
        MOETUNE_CHECK(v == source || pred[v] != v, "a device cannot be reached in the topology");
        while (v != source) {
          const std::size_t u = pred[v];
          const auto [e, found] = boost::edge(u, v, g);
          MOETUNE_CHECK(found, "a routed edge is missing from the topology");
          const EdgeData& data = g[e];
          p.edges.push_back({data.node != 0, data.local_edge});
          const Link& l = link(data.local_edge);
          p.latency_s += l.latency_s;
          p.bottleneck_Bps = std::min(p.bottleneck_Bps, l.bandwidth_Bps);
          v = u;
        }
        std::reverse(p.edges.begin(), p.edges.end());
      }
    }
  }
}

const Path& Topology::path(std::int64_t from, std::int64_t to, bool same_node) const {
  const std::int64_t d = cluster_.devices_per_node;
  MOETUNE_CHECK(from >= 0 && from < d && to >= 0 && to < d, "device index out of range");
  MOETUNE_CHECK(same_node || cluster_.nodes > 1, "a route across nodes needs two nodes");
  return paths_[static_cast<std::size_t>((same_node ? 0 : 1) * d * d + from * d + to)];
}

const Path& Topology::route(std::int64_t from_rank, std::int64_t to_rank) const {
  const std::int64_t d = cluster_.devices_per_node;
  MOETUNE_CHECK(
      from_rank >= 0 && from_rank < world_size() && to_rank >= 0 && to_rank < world_size(),
      "rank out of range");
  return path(from_rank % d, to_rank % d, from_rank / d == to_rank / d);
}

Link Topology::worst_link(const std::vector<std::int64_t>& ranks) const {
  Link worst{std::numeric_limits<double>::infinity(), 0.0};
  for (std::int64_t a : ranks) {
    for (std::int64_t b : ranks) {
      if (a == b) continue;
      const Path& p = route(a, b);
      worst.bandwidth_Bps = std::min(worst.bandwidth_Bps, p.bottleneck_Bps);
      worst.latency_s = std::max(worst.latency_s, p.latency_s);
    }
  }
  return worst;
}

}  // namespace moetune::simulator
