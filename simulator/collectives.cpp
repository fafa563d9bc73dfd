// Collective costs: the flows of ring, hierarchical, all-to-all and point-to-point algorithms laid
// on the topology graph, summed per link, turned into alpha-beta lines and cached per group shape.
#include "simulator/collectives.hpp"

#include <algorithm>
#include <array>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "core/error.hpp"

namespace moetune::simulator {

namespace {

using AxisSet = std::array<bool, kNumAxes>;

// The axes each group kind spans, read off a probe mesh with every degree 2, so Mesh stays the
// one place that defines the groups.
const std::array<AxisSet, kNumGroups>& group_axes() {
  static const std::array<AxisSet, kNumGroups> table = [] {
    Layout probe;
    probe.tp = probe.ep = probe.hs = probe.rep = probe.pp = 2;
    const Mesh mesh(probe, 1);
    std::array<AxisSet, kNumGroups> out{};
    for (Group g : kAllGroups) {
      const Coords first = mesh.coords(0);
      for (std::int64_t r : mesh.group_ranks(g, 0)) {
        const Coords c = mesh.coords(r);
        for (std::size_t i = 0; i < kNumAxes; ++i)
          out[static_cast<std::size_t>(g)][i] =
              out[static_cast<std::size_t>(g)][i] || c[i] != first[i];
      }
    }
    return out;
  }();
  return table;
}

constexpr int kMaxGroupAxes = 3;  // the data-parallel group: ep, hs, rep

// What decides the flows of a group kind: the world, the devices per node and the stride and
// degree of each of the group's axes (together they fix which ranks share a group).
struct GroupShape {
  std::int64_t world = 1;
  std::int64_t devices_per_node = 1;
  std::array<std::int64_t, 2 * kMaxGroupAxes> axes{};  // (stride, degree), by rising stride
  std::int64_t size = 1;                               // ranks per group
  bool aligned = true;             // node boundaries fall on the group's axis boundaries
  std::int64_t nodes_spanned = 1;  // per group, when aligned
};

GroupShape shape_of(const Mesh& mesh, Group group) {
  GroupShape s;
  s.world = mesh.world_size();
  s.devices_per_node = mesh.devices_per_node();
  const std::int64_t d = s.devices_per_node;
  const AxisSet& in = group_axes()[static_cast<std::size_t>(group)];
  const Coords last = mesh.coords(s.world - 1);  // every coordinate at its largest
  std::array<std::pair<std::int64_t, std::int64_t>, kMaxGroupAxes> axes{};
  int count = 0;
  s.aligned = s.world % d == 0;
  for (std::size_t i = 0; i < kNumAxes; ++i) {
    const std::int64_t degree = last[i] + 1;
    if (!in[i] || degree == 1) continue;
    Coords unit{};
    unit[i] = 1;
    const std::int64_t stride = mesh.rank(unit);
    const std::int64_t span = stride * degree;
    axes[static_cast<std::size_t>(count++)] = {stride, degree};
    s.size *= degree;
    // Mesh's rule: inside a node, across nodes with every step, or split cleanly by the boundary.
    if (d % span == 0) {
    } else if (stride % d == 0) {
      s.nodes_spanned *= degree;
    } else if (d % stride == 0 && span % d == 0) {
      s.nodes_spanned *= span / d;
    } else {
      s.aligned = false;
    }
  }
  std::sort(axes.begin(), axes.end());  // by rising stride, unused (0, 0) first
  for (std::size_t a = 0; a < axes.size(); ++a) {
    s.axes[2 * a] = axes[a].first;
    s.axes[2 * a + 1] = axes[a].second;
  }
  return s;
}

// Link loads, in bytes per byte of the collective's size S. With `node0_only`, only node 0's links
// are kept (the other nodes carry the same loads).
class Flows {
 public:
  Flows(const Topology& topology, const std::vector<double>& inverse_bandwidth, bool node0_only,
        std::int64_t nodes)
      : inverse_bandwidth_(inverse_bandwidth),
        per_node_(topology.edges_per_node()),
        node0_only_(node0_only),
        loads_(static_cast<std::size_t>(per_node_ * (node0_only ? 1 : nodes)), 0.0) {}

  void add(const Path& p, std::int64_t src_node, std::int64_t dst_node, double coef) {
    for (const PathEdge& e : p.edges)
      add_edge(e.at_destination ? dst_node : src_node, e.local_edge, coef);
  }
  // Only the part of a cross-node route that the sending (or the receiving) node owns.
  void add_side(const Path& p, bool destination, std::int64_t node, double coef) {
    for (const PathEdge& e : p.edges)
      if (e.at_destination == destination) add_edge(node, e.local_edge, coef);
  }
  // Seconds per byte of S on the busiest link (links that carry nothing are skipped, so a link
  // of zero bandwidth that no route uses cannot turn the result into NaN).
  double beta() const {
    double worst = 0;
    const auto per_node = static_cast<std::size_t>(per_node_);
    for (std::size_t i = 0; i < loads_.size(); ++i)
      if (loads_[i] > 0) worst = std::max(worst, loads_[i] * inverse_bandwidth_[i % per_node]);
    return worst;
  }

 private:
  void add_edge(std::int64_t node, std::int32_t local, double coef) {
    if (node0_only_ && node != 0) return;
    loads_[static_cast<std::size_t>(node * per_node_ + local)] += coef;
  }

  const std::vector<double>& inverse_bandwidth_;
  std::int64_t per_node_;
  bool node0_only_;
  std::vector<double> loads_;
};

// One group's members inside one node, local indices in rising order. In the node-0 evaluation a
// group is node 0's block and one block on a stand-in node for its k - 1 other nodes (`copies`).
struct Block {
  std::int64_t node = 0;
  std::vector<std::int64_t> locals;
  std::int64_t copies = 1;
};

// A group's members by node, nodes in rising order (the ring order).
std::vector<Block> blocks_of(std::vector<std::int64_t> ranks, std::int64_t d) {
  std::sort(ranks.begin(), ranks.end());
  std::vector<Block> blocks;
  for (std::int64_t r : ranks) {
    if (blocks.empty() || blocks.back().node != r / d) blocks.push_back({r / d, {}, 1});
    blocks.back().locals.push_back(r % d);
  }
  return blocks;
}

// The ring hops inside one block (closed into a cycle when the ring stays in the node); returns
// the slowest hop's latency.
double lay_intra_hops(Flows& f, const Topology& t, std::int64_t node,
                      const std::vector<std::int64_t>& locals, double coef, bool closed) {
  const std::size_t m = locals.size();
  if (m < 2) return 0.0;
  double latency = 0;
  for (std::size_t i = 0; i + 1 < m || (closed && i < m); ++i) {
    const Path& p = t.path(locals[i], locals[(i + 1) % m], true);
    f.add(p, node, node, coef);
    latency = std::max(latency, p.latency_s);
  }
  return latency;
}

// A ring's crossing out of (or into) a node, split evenly over the distinct NICs of the block's
// members and, within a NIC, over the members that use it; returns the crossing's latency.
double lay_crossing(Flows& f, const Topology& t, std::int64_t node,
                    const std::vector<std::int64_t>& locals, double coef, bool receiving) {
  std::int64_t nics = 0;  // distinct NICs among the members
  for (std::size_t i = 0; i < locals.size(); ++i) {
    bool first = true;
    for (std::size_t k = 0; k < i && first; ++k)
      first = t.nic_of(locals[k]) != t.nic_of(locals[i]);
    nics += first ? 1 : 0;
  }
  double latency = 0;
  for (std::int64_t j : locals) {
    std::int64_t sharing = 0;  // members on j's NIC
    for (std::int64_t other : locals)
      sharing += t.nic_of(other) == t.nic_of(j) ? 1 : 0;
    const Path& p = t.path(j, j, false);
    f.add_side(p, receiving, node, coef / static_cast<double>(nics * sharing));
    latency = p.latency_s;
  }
  return latency;
}

// Which collective a cache entry holds; reduce-scatter has the all-gather's flows.
enum class Op : std::int64_t { GatherScatter, AllReduce, AllToAll, PointToPoint };

Op op_of(Collective c) {
  switch (c) {
    case Collective::AllGather:
    case Collective::ReduceScatter:
      return Op::GatherScatter;
    case Collective::AllReduce:
      return Op::AllReduce;
    case Collective::AllToAll:
      return Op::AllToAll;
  }
  return Op::GatherScatter;
}

using Key = std::array<std::int64_t, 3 + 2 * kMaxGroupAxes>;

struct KeyHash {
  std::size_t operator()(const Key& k) const {
    std::size_t h = 1469598103934665603ull;
    for (std::int64_t v : k)
      h = (h ^ static_cast<std::size_t>(v)) * 1099511628211ull;
    return h;
  }
};

Key key_of(const GroupShape& s, Op op) {
  Key k{s.world, s.devices_per_node, static_cast<std::int64_t>(op)};
  std::copy(s.axes.begin(), s.axes.end(), k.begin() + 3);
  return k;
}

// Evaluates one group shape's flows; `fast` lays out only what touches node 0.
class Evaluator {
 public:
  Evaluator(const Topology& t, const std::vector<double>& inverse_bandwidth, const Mesh& mesh,
            Group group, const GroupShape& shape, bool fast)
      : t_(t),
        inv_(inverse_bandwidth),
        mesh_(mesh),
        group_(group),
        shape_(shape),
        fast_(fast),
        d_(mesh.devices_per_node()),
        nodes_((mesh.world_size() + d_ - 1) / d_),
        n_(static_cast<double>(shape.size)) {
    if (!fast_) {
      for (const auto& members : mesh.groups(group))
        groups_.push_back(blocks_of(members, d_));
      return;
    }
    // With aligned axes every node a group spans holds the same local indices, and every node
    // sees the same flows: lay out node 0's groups against one stand-in for their other nodes.
    for (auto& locals : node0_sets()) {
      groups_.push_back({{0, locals, 1}});
      if (shape_.nodes_spanned > 1) groups_.back().push_back({1, locals, shape_.nodes_spanned - 1});
    }
  }

  // Ring with `coef` bytes per hop and `steps` latency steps.
  AlphaBeta ring(double coef, double steps) const {
    Flows f = flows();
    double latency = 0;
    for (const auto& blocks : groups_) {
      const std::size_t k = blocks.size();
      for (std::size_t b = 0; b < k; ++b) {
        const Block& here = blocks[b];
        if (counted(here.node))
          latency = std::max(latency, lay_intra_hops(f, t_, here.node, here.locals, coef, k == 1));
        if (k == 1) continue;
        const Block& next = blocks[(b + 1) % k];
        latency = std::max(latency, lay_crossing(f, t_, here.node, here.locals, coef, false));
        lay_crossing(f, t_, next.node, next.locals, coef, true);
      }
    }
    return {steps * latency, f.beta()};
  }

  // Hierarchical all-reduce, or nothing when the group stays in a node, has one member per node
  // or has different numbers of members in different nodes.
  bool hierarchical(AlphaBeta* out) const {
    std::int64_t m = 0, k = 0;
    for (const auto& blocks : groups_) {
      k = 0;
      for (const Block& b : blocks) {
        if (m != 0 && static_cast<std::int64_t>(b.locals.size()) != m) return false;
        m = static_cast<std::int64_t>(b.locals.size());
        k += b.copies;
      }
    }
    if (k < 2 || m < 2) return false;
    const double md = static_cast<double>(m), kd = static_cast<double>(k);
    Flows intra = flows();  // reduce-scatter in the node (the all-gather after has the same flows)
    Flows inter = flows();  // all-reduce of S/m across nodes among same-position members
    double intra_latency = 0, inter_latency = 0;
    for (const auto& blocks : groups_) {
      for (std::size_t b = 0; b < blocks.size(); ++b) {
        const Block& here = blocks[b];
        const Block& next = blocks[(b + 1) % blocks.size()];
        if (counted(here.node)) {
          intra_latency = std::max(intra_latency, lay_intra_hops(intra, t_, here.node, here.locals,
                                                                 (md - 1) / md, true));
        }
        for (std::size_t i = 0; i < here.locals.size(); ++i) {
          const Path& p = t_.path(here.locals[i], next.locals[i], false);
          inter.add(p, here.node, next.node, 2 * (kd - 1) / kd / md);
          inter_latency = std::max(inter_latency, p.latency_s);
        }
      }
    }
    out->alpha_s = 2 * (md - 1) * intra_latency + 2 * (kd - 1) * inter_latency;
    out->beta_s_per_byte = 2 * intra.beta() + inter.beta();
    return true;
  }

  // Every member sends S/n to every other member.
  AlphaBeta all_to_all() const {
    Flows f = flows();
    double latency = 0;
    for (const auto& blocks : groups_) {
      for (const Block& from : blocks) {
        for (const Block& to : blocks) {
          const bool same = from.node == to.node;
          if (!counted(from.node) && !counted(to.node)) continue;
          // A stand-in block's members talk to node 0 once per node they stand for.
          const double coef = static_cast<double>(same ? 1 : from.copies * to.copies) / n_;
          for (std::int64_t a : from.locals) {
            for (std::int64_t b : to.locals) {
              if (same && a == b) continue;
              const Path& p = t_.path(a, b, same);
              f.add(p, from.node, to.node, coef);
              latency = std::max(latency, p.latency_s);
            }
          }
        }
      }
    }
    return {(n_ - 1) * latency, f.beta()};
  }

  // Every pipeline stage sends S to the next one.
  AlphaBeta point_to_point() const {
    Flows f = flows();
    double latency = 0;
    const auto pp = static_cast<std::size_t>(Axis::Pp);
    if (fast_) {
      // Node 0's sends, and the receives of a node in the middle of the pipeline: the mirror of
      // node 0's sends across nodes.
      for (std::int64_t j = 0; j < d_; ++j) {
        Coords c = mesh_.coords(j);
        if (c[pp] + 1 >= shape_.size) continue;
        ++c[pp];
        const std::int64_t next = mesh_.rank(c);
        const bool same = next < d_;
        const Path& p = t_.path(j, next % d_, same);
        f.add(p, 0, same ? 0 : 1, 1.0);
        if (!same) f.add(p, 1, 0, 1.0);
        latency = std::max(latency, p.latency_s);
      }
    } else {
      for (const auto& stages : mesh_.groups(group_)) {
        for (std::size_t s = 0; s + 1 < stages.size(); ++s) {
          const Path& p = t_.route(stages[s], stages[s + 1]);
          f.add(p, stages[s] / d_, stages[s + 1] / d_, 1.0);
          latency = std::max(latency, p.latency_s);
        }
      }
    }
    return {latency, f.beta()};
  }

 private:
  Flows flows() const { return Flows(t_, inv_, fast_, nodes_); }
  // Whether a node's links are kept (skips work on the stand-in node's own links).
  bool counted(std::int64_t node) const { return !fast_ || node == 0; }

  // The local indices of each group that meets node 0.
  std::vector<std::vector<std::int64_t>> node0_sets() const {
    const AxisSet& in = group_axes()[static_cast<std::size_t>(group_)];
    std::vector<Coords> keys;
    std::vector<std::vector<std::int64_t>> sets;
    for (std::int64_t j = 0; j < std::min(d_, mesh_.world_size()); ++j) {
      Coords c = mesh_.coords(j);
      for (std::size_t i = 0; i < kNumAxes; ++i)
        if (in[i]) c[i] = 0;
      const auto it = std::find(keys.begin(), keys.end(), c);
      if (it == keys.end()) {
        keys.push_back(c);
        sets.push_back({j});
      } else {
        sets[static_cast<std::size_t>(it - keys.begin())].push_back(j);
      }
    }
    return sets;
  }

  const Topology& t_;
  const std::vector<double>& inv_;
  const Mesh& mesh_;
  Group group_;
  GroupShape shape_;
  bool fast_;
  std::int64_t d_;
  std::int64_t nodes_;
  double n_;
  std::vector<std::vector<Block>> groups_;
};

}  // namespace

std::string to_string(Collective c) {
  switch (c) {
    case Collective::AllGather:
      return "all_gather";
    case Collective::ReduceScatter:
      return "reduce_scatter";
    case Collective::AllReduce:
      return "all_reduce";
    case Collective::AllToAll:
      return "all_to_all";
  }
  return "all_gather";
}

std::string to_string(Algorithm a) {
  switch (a) {
    case Algorithm::Ring:
      return "ring";
    case Algorithm::Hierarchical:
      return "hierarchical";
    case Algorithm::Direct:
      return "direct";
  }
  return "ring";
}

double CollectiveCost::seconds(double bytes) const {
  return line_for(bytes).seconds(bytes);
}

Algorithm CollectiveCost::fastest(double bytes) const {
  if (has_hierarchical && hierarchical.seconds(bytes) < line.seconds(bytes))
    return Algorithm::Hierarchical;
  return algorithm;
}

AlphaBeta CollectiveCost::line_for(double bytes) const {
  return fastest(bytes) == Algorithm::Hierarchical ? hierarchical : line;
}

struct CollectiveModel::Cache {
  std::vector<double> inverse_bandwidth;  // by local edge
  std::mutex mutex;
  std::unordered_map<Key, CollectiveCost, KeyHash> entries;
};

CollectiveModel::CollectiveModel(const ClusterSpec& cluster)
    : topology_(std::make_shared<const Topology>(cluster)), cache_(std::make_shared<Cache>()) {
  for (std::int32_t e = 0; e < topology_->edges_per_node(); ++e)
    cache_->inverse_bandwidth.push_back(1.0 / topology_->link(e).bandwidth_Bps);
}

namespace {

void check_mesh(const Topology& t, const Mesh& mesh) {
  MOETUNE_CHECK(mesh.devices_per_node() == t.devices_per_node(),
                "the mesh and the cluster disagree on devices per node");
  MOETUNE_CHECK(mesh.world_size() <= t.world_size(), "the mesh is larger than the cluster");
}

}  // namespace

bool CollectiveModel::node_symmetric(const Mesh& mesh, Group group) const {
  return shape_of(mesh, group).aligned;
}

CollectiveCost CollectiveModel::evaluate(Collective collective, const Mesh& mesh, Group group,
                                         Evaluation evaluation) const {
  check_mesh(*topology_, mesh);
  const GroupShape shape = shape_of(mesh, group);
  CollectiveCost out;
  if (shape.size <= 1) return out;
  const bool fast = evaluation == Evaluation::Auto && shape.aligned;
  const Evaluator ev(*topology_, cache_->inverse_bandwidth, mesh, group, shape, fast);
  const double n = static_cast<double>(shape.size);
  switch (op_of(collective)) {
    case Op::GatherScatter:
      out.line = ev.ring((n - 1) / n, n - 1);
      break;
    case Op::AllReduce:
      out.line = ev.ring(2 * (n - 1) / n, 2 * (n - 1));
      out.has_hierarchical = ev.hierarchical(&out.hierarchical);
      break;
    case Op::AllToAll:
      out.algorithm = Algorithm::Direct;
      out.line = ev.all_to_all();
      break;
    case Op::PointToPoint:  // see evaluate_p2p
      break;
  }
  return out;
}

AlphaBeta CollectiveModel::evaluate_p2p(const Mesh& mesh, Evaluation evaluation) const {
  check_mesh(*topology_, mesh);
  const GroupShape shape = shape_of(mesh, Group::Pp);
  if (shape.size <= 1) return {};
  const bool fast = evaluation == Evaluation::Auto && shape.aligned;
  return Evaluator(*topology_, cache_->inverse_bandwidth, mesh, Group::Pp, shape, fast)
      .point_to_point();
}

CollectiveCost CollectiveModel::cost(Collective collective, const Mesh& mesh, Group group) const {
  const Key key = key_of(shape_of(mesh, group), op_of(collective));
  {
    const std::lock_guard<std::mutex> lock(cache_->mutex);
    const auto it = cache_->entries.find(key);
    if (it != cache_->entries.end()) return it->second;
  }
  const CollectiveCost c = evaluate(collective, mesh, group, Evaluation::Auto);
  const std::lock_guard<std::mutex> lock(cache_->mutex);
  cache_->entries.emplace(key, c);
  return c;
}

AlphaBeta CollectiveModel::p2p(const Mesh& mesh) const {
  const Key key = key_of(shape_of(mesh, Group::Pp), Op::PointToPoint);
  {
    const std::lock_guard<std::mutex> lock(cache_->mutex);
    const auto it = cache_->entries.find(key);
    if (it != cache_->entries.end()) return it->second.line;
  }
  CollectiveCost c;
  c.algorithm = Algorithm::Direct;
  c.line = evaluate_p2p(mesh, Evaluation::Auto);
  const std::lock_guard<std::mutex> lock(cache_->mutex);
  cache_->entries.emplace(key, c);
  return c.line;
}

double CollectiveModel::bus_bandwidth_GBps(Collective collective, const Mesh& mesh, Group group,
                                           double bytes) const {
  const double n = static_cast<double>(shape_of(mesh, group).size);
  const double t = seconds(collective, mesh, group, bytes);
  if (n <= 1 || t <= 0) return 0.0;
  const double factor = collective == Collective::AllReduce ? 2 * (n - 1) / n : (n - 1) / n;
  return bytes / t * factor / 1e9;
}

std::size_t CollectiveModel::cache_size() const {
  const std::lock_guard<std::mutex> lock(cache_->mutex);
  return cache_->entries.size();
}

}  // namespace moetune::simulator
