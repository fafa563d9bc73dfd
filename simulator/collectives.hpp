// Collective costs over the topology graph. Every group of a kind runs the collective at the same
// time (as in training: all TP groups all-gather together); the flows of all of them are laid on
// the graph's links, each link's load is summed, and the time for S bytes is
//   alpha + max over links (load / bandwidth)  =  alpha + beta * S,
// exact for this flow model, so each (mesh, group kind, collective) is one `AlphaBeta` line,
// computed once and cached. Sizes follow the nccl-tests conventions: S is the whole gathered
// buffer for all-gather and reduce-scatter, the buffer for all-reduce, the per-rank send buffer for
// all-to-all, and the per-rank message for point-to-point.
//
// Algorithms (n ranks per group, m of them per node on k nodes):
// - ring all-gather / reduce-scatter: members ordered by node, so the ring crosses each node
//   boundary once; every hop carries S (n-1)/n; alpha = (n-1) x the slowest hop's latency. NCCL
//   runs several channels whose rings cross nodes at different GPUs, so a crossing's traffic is
//   split evenly over the distinct NICs of the group's members in the sending node (and in the
//   receiving node).
// - all-reduce: ring (reduce-scatter + all-gather: S 2(n-1)/n per hop, 2(n-1) steps), or, across
//   nodes with the same number of members in every node, hierarchical: reduce-scatter inside each
//   node, all-reduce across nodes among the members with the same position in their node (each
//   through its own NIC), all-gather inside the node. NCCL's tuner picks the faster for the size,
//   so a cost keeps both lines.
// - all-to-all: each member sends S/n to every other member along its route; traffic for other
//   nodes leaves through the sender's own NIC (NCCL's all-to-all cannot aggregate several NICs);
//   alpha = (n-1) x the slowest route's latency.
// - point-to-point: every pipeline stage sends S to the next stage at once; alpha = one route.
//
// Speed: when node boundaries fall on the group's axis boundaries (Mesh::placement's rule, checked
// per group kind), every node a group spans holds the same local indices and every node carries
// the same loads; then only node 0's groups are laid out, against one stand-in node for the rest
// of each group, and only node 0's links are kept: about 1.5 us per collective for 1,024 devices
// (test_simulator "[.bench]"). Otherwise every group is laid out on every node. Results are cached
// by what fixes the groups (world size, devices per node, stride and degree of the group's axes),
// so layouts that differ elsewhere share an entry.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/hardware.hpp"
#include "core/mesh.hpp"
#include "simulator/topology.hpp"

namespace moetune::simulator {

enum class Collective { AllGather, ReduceScatter, AllReduce, AllToAll };
enum class Algorithm { Ring, Hierarchical, Direct };  // Direct: all-to-all and point-to-point

std::string to_string(Collective collective);
std::string to_string(Algorithm algorithm);

// time(bytes) = alpha + beta * bytes; nothing to send costs nothing.
struct AlphaBeta {
  double alpha_s = 0;
  double beta_s_per_byte = 0;
  double seconds(double bytes) const { return bytes > 0 ? alpha_s + beta_s_per_byte * bytes : 0.0; }
  bool operator==(const AlphaBeta&) const = default;
};

// The lines of the algorithms NCCL could choose for one collective; the faster one runs.
struct CollectiveCost {
  Algorithm algorithm = Algorithm::Ring;  // of `line`: Ring, or Direct for all-to-all
  AlphaBeta line;
  bool has_hierarchical = false;  // all-reduce across nodes, same members in every node
  AlphaBeta hierarchical;

  double seconds(double bytes) const;
  Algorithm fastest(double bytes) const;
  AlphaBeta line_for(double bytes) const;  // the line of the fastest algorithm at that size
};

// Which flows an evaluation lays out: only those touching node 0 where the mesh allows it, or
// all of them (the reference the fast path is checked against).
enum class Evaluation { Auto, AllNodes };

// One per cluster. Copies share the cache. Thread-safe.
class CollectiveModel {
 public:
  explicit CollectiveModel(const ClusterSpec& cluster);

  const Topology& topology() const { return *topology_; }

  // One collective run by every group of `group` at once. The mesh must have the cluster's
  // devices per node and at most its world size.
  CollectiveCost cost(Collective collective, const Mesh& mesh, Group group) const;
  double seconds(Collective collective, const Mesh& mesh, Group group, double bytes) const {
    return cost(collective, mesh, group).seconds(bytes);
  }
  // Every pipeline stage sending one message to the next stage at once.
  AlphaBeta p2p(const Mesh& mesh) const;
  // nccl-tests bus bandwidth at `bytes`: algbw = bytes / time, times (n-1)/n (all-gather,
  // reduce-scatter, all-to-all) or 2(n-1)/n (all-reduce). 0 for groups of one rank.
  double bus_bandwidth_GBps(Collective collective, const Mesh& mesh, Group group,
                            double bytes) const;

  // Uncached evaluation, for tests and benchmarks.
  CollectiveCost evaluate(Collective collective, const Mesh& mesh, Group group,
                          Evaluation evaluation) const;
  AlphaBeta evaluate_p2p(const Mesh& mesh, Evaluation evaluation) const;
  // Whether `Evaluation::Auto` takes the node-0 fast path for this group.
  bool node_symmetric(const Mesh& mesh, Group group) const;
  std::size_t cache_size() const;

 private:
  struct Cache;
  std::shared_ptr<const Topology> topology_;
  std::shared_ptr<Cache> cache_;
};

}  // namespace moetune::simulator
