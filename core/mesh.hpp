// Mesh: the rank <-> coordinate map of a Layout (mixed radix, innermost axis first), the rank lists
// of every communication group, and where each group sits on the nodes. Planner, simulator and
// executor all take their groups from here, so they agree on who talks to whom.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "core/layout.hpp"

namespace moetune {

// Each group is the set of ranks that differ only in the named coordinates.
enum class Group : std::uint8_t {
  Tp = 0,           // tp
  Ep = 1,           // ep: all-to-all of routed tokens
  Hs = 2,           // hs: all-gather of parameters, reduce-scatter of gradients
  Pp = 3,           // pp: activations pass between neighbouring stages
  DenseReplicate,   // ep x rep: all-reduce of dense gradients
  ExpertReplicate,  // rep: all-reduce of expert gradients
  DataParallel,     // ep x hs x rep: ranks that read different micro-batches
};
inline constexpr int kNumGroups = 7;
inline constexpr std::array<Group, kNumGroups> kAllGroups = {Group::Tp,
                                                             Group::Ep,
                                                             Group::Hs,
                                                             Group::Pp,
                                                             Group::DenseReplicate,
                                                             Group::ExpertReplicate,
                                                             Group::DataParallel};

std::string to_string(Group group);

using Coords = std::array<std::int64_t, kNumAxes>;  // indexed by Axis

// Where the groups of one kind sit, taken over all of them (worst case).
struct GroupPlacement {
  std::int64_t size = 1;                // ranks per group
  std::int64_t count = 1;               // groups of this kind
  std::int64_t nodes_spanned = 1;       // most nodes any one group touches
  std::int64_t max_ranks_per_node = 1;  // most members of one group inside one node
  std::int64_t min_ranks_per_node = 1;  // fewest members of one group inside a node it touches
  bool within_node() const { return nodes_spanned == 1; }
};

class Mesh {
 public:
  Mesh(const Layout& layout, std::int64_t devices_per_node);

  std::int64_t world_size() const { return world_size_; }
  std::int64_t devices_per_node() const { return devices_per_node_; }
  Coords coords(std::int64_t rank) const;
  std::int64_t rank(const Coords& coords) const;
  std::int64_t node_of(std::int64_t rank) const { return rank / devices_per_node_; }

  // The ranks of `group` that contain `rank`, in increasing coordinate order.
  std::vector<std::int64_t> group_ranks(Group group, std::int64_t rank) const;
  // Every group of a kind, each as its rank list; together they partition the world.
  std::vector<std::vector<std::int64_t>> groups(Group group) const;
  // Closed form when node boundaries fall on axis boundaries (every axis either stays inside a
  // node, crosses nodes with every step, or splits cleanly); otherwise counted rank by rank.
  GroupPlacement placement(Group group) const;
  GroupPlacement placement_by_enumeration(Group group) const;
  std::array<GroupPlacement, kNumGroups> placements() const;

 private:
  std::array<bool, kNumAxes> axes_of(Group group) const;

  std::int64_t world_size_;
  std::int64_t devices_per_node_;
  std::array<std::int64_t, kNumAxes> degree_{};  // by Axis
  std::array<std::int64_t, kNumAxes> stride_{};  // by Axis
  // Closed-form split of each axis into a part inside a node and a part across nodes; `aligned_`
  // says whether every axis splits cleanly.
  bool aligned_ = true;
  std::array<std::int64_t, kNumAxes> inner_{};
  std::array<std::int64_t, kNumAxes> outer_{};
};

}  // namespace moetune
