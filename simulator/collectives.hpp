// First collective cost model: alpha-beta over a group's placement on the nodes, with the
// nccl-tests bus-bandwidth conventions. A group inside a node runs at the intra-node bus bandwidth;
// a group that crosses nodes shares its node's NICs with the other groups of the same kind running
// at the same time. (The topology-graph model of the next issue replaces this.)
#pragma once

#include "core/hardware.hpp"
#include "core/mesh.hpp"

namespace moetune::simulator {

enum class Collective { AllGather, ReduceScatter, AllReduce, AllToAll };

// Seconds for one collective where `bytes` is the nccl-tests size S: the whole gathered buffer for
// all-gather and reduce-scatter, the buffer for all-reduce, the per-rank send buffer for
// all-to-all.
double collective_seconds(Collective kind, double bytes, const GroupPlacement& group,
                          const ClusterSpec& cluster);
// Point-to-point transfer between neighbouring pipeline stages.
double p2p_seconds(double bytes, bool crosses_nodes, const ClusterSpec& cluster);

}  // namespace moetune::simulator
