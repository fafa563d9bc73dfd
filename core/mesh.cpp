// Mesh: mixed-radix rank mapping and group placement.
#include "core/mesh.hpp"

#include <algorithm>

#include "core/error.hpp"

namespace moetune {

std::string to_string(Group group) {
  switch (group) {
    case Group::Tp:
      return "tp";
    case Group::Ep:
      return "ep";
    case Group::Hs:
      return "hs";
    case Group::Pp:
      return "pp";
    case Group::DenseReplicate:
      return "dense_replicate";
    case Group::ExpertReplicate:
      return "expert_replicate";
    case Group::DataParallel:
      return "dp";
  }
  return "tp";
}

Mesh::Mesh(const Layout& layout, std::int64_t devices_per_node)
    : world_size_(layout.world_size()), devices_per_node_(devices_per_node) {
  MOETUNE_CHECK(devices_per_node > 0, "devices per node must be positive");
  std::int64_t stride = 1;
  for (Axis a : layout.order) {
    const auto i = static_cast<std::size_t>(a);
    degree_[i] = layout.degree(a);
    stride_[i] = stride;
    stride *= degree_[i];
  }
  const std::int64_t d = devices_per_node_;
  for (std::size_t i = 0; i < kNumAxes; ++i) {
    const std::int64_t s = stride_[i];
    const std::int64_t span = s * degree_[i];
    if (degree_[i] == 1 || d % span == 0) {  // the whole axis lives inside one node
      inner_[i] = degree_[i];
      outer_[i] = 1;
    } else if (s % d == 0) {  // every step along the axis moves to another node
      inner_[i] = 1;
      outer_[i] = degree_[i];
    } else if (d % s == 0 && span % d == 0) {  // the node boundary splits the axis
      inner_[i] = d / s;
      outer_[i] = span / d;
    } else {
      aligned_ = false;
    }
  }
}

Coords Mesh::coords(std::int64_t rank) const {
  MOETUNE_CHECK(rank >= 0 && rank < world_size_, "rank out of range");
  Coords c{};
  for (std::size_t i = 0; i < kNumAxes; ++i)
    c[i] = (rank / stride_[i]) % degree_[i];
  return c;
}

std::int64_t Mesh::rank(const Coords& c) const {
  std::int64_t r = 0;
  for (std::size_t i = 0; i < kNumAxes; ++i) {
    MOETUNE_CHECK(c[i] >= 0 && c[i] < degree_[i], "coordinate out of range");
    r += c[i] * stride_[i];
  }
  return r;
}

std::array<bool, kNumAxes> Mesh::axes_of(Group group) const {
  std::array<bool, kNumAxes> in{};
  auto set = [&](Axis a) { in[static_cast<std::size_t>(a)] = true; };
  switch (group) {
    case Group::Tp:
      set(Axis::Tp);
      break;
    case Group::Ep:
      set(Axis::Ep);
      break;
    case Group::Hs:
      set(Axis::Hs);
      break;
    case Group::Pp:
      set(Axis::Pp);
      break;
    case Group::DenseReplicate:
      set(Axis::Ep);
      set(Axis::Rep);
      break;
    case Group::ExpertReplicate:
      set(Axis::Rep);
      break;
    case Group::DataParallel:
      set(Axis::Ep);
      set(Axis::Hs);
      set(Axis::Rep);
      break;
  }
  return in;
}

std::vector<std::int64_t> Mesh::group_ranks(Group group, std::int64_t rank) const {
  const auto in = axes_of(group);
  Coords base = coords(rank);
  std::int64_t size = 1;
  for (std::size_t i = 0; i < kNumAxes; ++i) {
    if (in[i]) {
      base[i] = 0;
      size *= degree_[i];
    }
  }
  std::vector<std::int64_t> members;
  members.reserve(static_cast<std::size_t>(size));
  // Count through the group's coordinates, first listed axis of the group fastest, in the
  // canonical axis order tp, ep, hs, rep, pp.
  Coords c = base;
  for (std::int64_t k = 0; k < size; ++k) {
    members.push_back(this->rank(c));
    for (std::size_t i = 0; i < kNumAxes; ++i) {
      if (!in[i]) continue;
      if (++c[i] < degree_[i]) break;
      c[i] = 0;
    }
  }
  return members;
}

std::vector<std::vector<std::int64_t>> Mesh::groups(Group group) const {
  const auto in = axes_of(group);
  std::vector<std::vector<std::int64_t>> out;
  for (std::int64_t r = 0; r < world_size_; ++r) {
    Coords c = coords(r);
    bool leader = true;
    for (std::size_t i = 0; i < kNumAxes; ++i)
      leader = leader && (!in[i] || c[i] == 0);
    if (leader) out.push_back(group_ranks(group, r));
  }
  return out;
}

GroupPlacement Mesh::placement(Group group) const {
  if (!aligned_) return placement_by_enumeration(group);
  const auto in = axes_of(group);
  GroupPlacement p;
  p.size = 1;
  p.nodes_spanned = 1;
  p.max_ranks_per_node = 1;
  for (std::size_t i = 0; i < kNumAxes; ++i) {
    if (!in[i]) continue;
    p.size *= degree_[i];
    p.nodes_spanned *= outer_[i];
    p.max_ranks_per_node *= inner_[i];
  }
  p.min_ranks_per_node = p.max_ranks_per_node;
  p.count = world_size_ / p.size;
  return p;
}

GroupPlacement Mesh::placement_by_enumeration(Group group) const {
  GroupPlacement p;
  p.size = 0;
  p.count = 0;
  p.nodes_spanned = 0;
  p.max_ranks_per_node = 0;
  p.min_ranks_per_node = world_size_;
  std::vector<std::int64_t> nodes;
  for (const auto& members : groups(group)) {
    nodes.clear();
    for (std::int64_t r : members)
      nodes.push_back(node_of(r));
    std::sort(nodes.begin(), nodes.end());
    std::int64_t spanned = 0;
    for (std::size_t i = 0; i < nodes.size();) {
      std::size_t j = i;
      while (j < nodes.size() && nodes[j] == nodes[i])
        ++j;
      const auto run = static_cast<std::int64_t>(j - i);
      p.max_ranks_per_node = std::max(p.max_ranks_per_node, run);
      p.min_ranks_per_node = std::min(p.min_ranks_per_node, run);
      ++spanned;
      i = j;
    }
    p.nodes_spanned = std::max(p.nodes_spanned, spanned);
    p.size = static_cast<std::int64_t>(members.size());
    ++p.count;
  }
  return p;
}

std::array<GroupPlacement, kNumGroups> Mesh::placements() const {
  std::array<GroupPlacement, kNumGroups> out;
  for (Group g : kAllGroups)
    out[static_cast<std::size_t>(g)] = placement(g);
  return out;
}

}  // namespace moetune
