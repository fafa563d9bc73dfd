// Closed-form collective costs.
#include "simulator/collectives.hpp"

#include <algorithm>

namespace moetune::simulator {

double collective_seconds(Collective kind, double bytes, const GroupPlacement& g,
                          const ClusterSpec& c) {
  const double n = static_cast<double>(g.size);
  if (g.size <= 1 || bytes <= 0) return 0.0;
  const double intra_Bps = c.intra_node.bandwidth_GBps * 1e9;
  const double alpha = (g.within_node() ? c.intra_node.latency_us : c.inter_node.latency_us) * 1e-6;
  // Bytes each rank moves over its bottleneck, per the nccl-tests conventions.
  double wire = 0;
  double steps = n - 1;
  switch (kind) {
    case Collective::AllGather:
    case Collective::ReduceScatter:
    case Collective::AllToAll:
      wire = bytes * (n - 1) / n;
      break;
    case Collective::AllReduce:
      wire = 2 * bytes * (n - 1) / n;
      steps = 2 * (n - 1);
      break;
  }
  double seconds = wire / intra_Bps;
  if (!g.within_node()) {
    const double node_Bps = c.inter_node.node_bandwidth_Bps();
    const double m = static_cast<double>(g.max_ranks_per_node);
    const double d = static_cast<double>(c.devices_per_node);
    double leaving = 0;  // bytes the busiest node sends over the network
    if (kind == Collective::AllToAll) {
      // Every rank of the node sends the share of its buffer bound for other nodes.
      leaving = d * bytes * (n - m) / n;
    } else {
      // A ring leaves each node once per group; d/m groups of this kind share the node's NICs.
      leaving = (d / m) * wire;
    }
    seconds = std::max(seconds, leaving / node_Bps);
  }
  return seconds + steps * alpha;
}

double p2p_seconds(double bytes, bool crosses_nodes, const ClusterSpec& c) {
  if (bytes <= 0) return 0.0;
  if (!crosses_nodes) {
    return c.intra_node.latency_us * 1e-6 + bytes / (c.intra_node.bandwidth_GBps * 1e9);
  }
  // Every device of the node sends to its peer in the next stage at once.
  const double per_device = c.inter_node.node_bandwidth_Bps() / c.devices_per_node;
  return c.inter_node.latency_us * 1e-6 + bytes / per_device;
}

}  // namespace moetune::simulator
