// Layout: how one training job is split over W devices — the degrees tp, pp (with vpp), ep, hs and
// rep (W = tp * pp * ep * hs * rep), the mesh order (innermost axis first), and how each rank runs
// its share (micro-batch, activation recompute, offloading).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>

#include "core/json_reader.hpp"

namespace moetune {

enum class Axis : std::uint8_t { Tp = 0, Ep = 1, Hs = 2, Rep = 3, Pp = 4 };
inline constexpr int kNumAxes = 5;
// Innermost first; tp is always innermost so tensor-parallel ranks share a node.
using MeshOrder = std::array<Axis, kNumAxes>;
inline constexpr MeshOrder kDefaultOrder = {Axis::Tp, Axis::Ep, Axis::Hs, Axis::Rep, Axis::Pp};

enum class Recompute { None, Full };

struct Layout {
  std::int64_t tp = 1;
  std::int64_t pp = 1;
  std::int64_t vpp = 1;  // virtual stages per pipeline rank (interleaved 1F1B); 1 = plain 1F1B
  // Uneven pipeline stages (Megatron's --decoder-first/last-pipeline-num-layers): the first and
  // the last stage hold these many layers and the middle stages split the rest evenly. Both 0:
  // every stage holds layers / pp.
  std::int64_t first_stage_layers = 0;
  std::int64_t last_stage_layers = 0;
  std::int64_t ep = 1;
  std::int64_t hs = 1;
  std::int64_t rep = 1;
  MeshOrder order = kDefaultOrder;
  std::int64_t micro_batch = 1;  // sequences per micro-batch per data-parallel rank
  Recompute recompute = Recompute::None;
  bool optimizer_offload = false;   // fp32 master weights and Adam state in host memory
  bool activation_offload = false;  // saved activations of waiting layers in host memory
  // Distributed optimizer (ZeRO-1 over the replicas, as Megatron's --use-distributed-optimizer):
  // the fp32 master weights and Adam state are split further over the replicate group (dense:
  // ep x rep, experts: rep); gradients are reduce-scattered over it instead of all-reduced, and
  // the updated parameters all-gathered back. Changes nothing when the group has one rank.
  bool distributed_optimizer = false;

  bool operator==(const Layout&) const = default;

  std::int64_t degree(Axis axis) const;
  std::int64_t world_size() const { return tp * pp * ep * hs * rep; }
  bool uneven_stages() const { return first_stage_layers > 0 || last_stage_layers > 0; }
  // Data-parallel width: every (ep, hs, rep) coordinate reads its own micro-batches.
  std::int64_t dp() const { return ep * hs * rep; }
  // Ranks holding copies of the same dense (ep x rep) and expert (rep) parameter shards.
  std::int64_t dense_replicas() const { return ep * rep; }
  std::int64_t expert_replicas() const { return rep; }
};

std::string to_string(Axis axis);
Axis parse_axis(const std::string& text);
std::string to_string(Recompute r);
Recompute parse_recompute(const std::string& text);
// "tp,ep,hs,rep,pp"
std::string order_to_string(const MeshOrder& order);
// Accepts any order of the five axis names separated by commas; axes left out are appended in the
// default order. tp must come first.
MeshOrder parse_order(const std::string& text);
// The order with axes of degree 1 moved to the end in default order: two layouts whose canonical
// orders are equal place every rank identically.
MeshOrder canonical_order(const Layout& layout);
// Compact label, e.g. "tp2 ep4 hs8 rep1 pp1 [tp,ep,hs]".
std::string describe(const Layout& layout);

// Layers [begin, end) of pipeline stage `stage` of a model with `num_layers` layers.
struct LayerRange {
  std::int64_t begin = 0, end = 0;
  std::int64_t count() const { return end - begin; }
};
LayerRange stage_layers(std::int64_t num_layers, const Layout& layout, std::int64_t stage);
// The first and last stage sizes the planner uses when pp does not divide the layers: the
// middle stages get about layers / pp each and the first and last share the rest, the last
// (which also holds the LM head and the loss) no more than the first; every stage a multiple of
// vpp. Nothing when no such split exists.
struct StageSplit {
  std::int64_t first = 0, last = 0;
};
std::optional<StageSplit> uneven_split(std::int64_t num_layers, std::int64_t pp, std::int64_t vpp);

Json to_json(const Layout& layout);
Layout layout_from_json(JsonObjectReader reader);

}  // namespace moetune
