// The op graph of one micro-batch on one pipeline stage, built from per-op costs and scheduled on
// three streams: compute, the FSDP stream (all-gather / reduce-scatter over hs, prefetched one
// layer ahead) and the critical-path stream (EP all-to-all, sequence-parallel collectives). The
// step time is this schedule's makespan, extended to every layer by periodicity and to every
// micro-batch by the 1F1B pipeline.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "simulator/schedule.hpp"

namespace moetune::simulator {

// Seconds for one micro-batch, one layer, forward pass (backward is derived from these).
struct LayerCosts {
  double attention = 0;     // norm, QKV, RoPE, attention core, output projection
  double router = 0;        // post-attention norm, gate GEMM, softmax/top-k (MoE layers)
  double permute = 0;       // gather rows into expert order (and the same again to combine)
  double experts = 0;       // expert (and shared-expert) FFNs of the busiest EP rank; dense FFN
  double a2a = 0;           // one all-to-all over EP (dispatch or combine)
  double tp_gather = 0;     // sequence-parallel all-gather over TP (one of the two per block)
  double tp_scatter = 0;    // sequence-parallel reduce-scatter over TP
  double fsdp_gather = 0;   // all-gather of the layer's parameters over hs
  double fsdp_scatter = 0;  // reduce-scatter of the layer's gradients over hs
  bool moe = true;
};

struct StageCosts {
  LayerCosts layer;              // every layer of the stage is alike (periodic)
  std::int64_t layers = 1;       // on this stage
  double embedding = 0;          // first stage: embedding forward + backward
  double head = 0;               // last stage: final norm, LM head, loss, forward + backward
  double backward_factor = 2.0;  // backward compute = factor x forward
  bool recompute = false;        // full recompute: forward again before each layer's backward
};

// Phase labels, named as the executor's phases, in the order MicroBatchSchedule indexes them.
enum Phase : std::uint8_t {
  kPhaseAttention,
  kPhaseRouter,
  kPhaseDispatch,
  kPhaseExperts,
  kPhaseCombine,
  kPhaseLmHead,
  kPhaseRecompute,
  kPhaseAllGather,
  kPhaseReduceScatter,
  kNumPhases
};
inline constexpr const char* kPhaseNames[kNumPhases] = {
    "attention", "router",    "dispatch",   "experts",       "combine",
    "lm_head",   "recompute", "all_gather", "reduce_scatter"};

// One op of a scheduled micro-batch, for `moetune simulate --timeline` and the GUI.
struct TimelineOp {
  std::string phase;
  std::string stream;
  std::int32_t layer = -1;
  bool backward = false;
  double start_s = 0;
  double end_s = 0;
};

struct MicroBatchSchedule {
  double makespan_s = 0;  // one micro-batch, all layers of the stage
  double forward_s = 0;   // the forward part of it (through the last layer's forward)
  // Per phase (indexed by Phase) over the micro-batch: compute seconds, exposed and overlapped
  // communication.
  std::array<double, kNumPhases> compute_s{}, exposed_s{}, overlapped_s{};
};

class StepBuilder {
 public:
  // Schedules `layers` layers exactly when they are few, else 2 and 3 layers and extends by the
  // per-layer increment (the schedule is periodic once the prefetch pipeline is full).
  MicroBatchSchedule micro_batch(const StageCosts& costs);
  // The full graph of one micro-batch with every op's start and end.
  std::vector<TimelineOp> timeline(const StageCosts& costs);

 private:
  // Which ops a graph has: graphs of the same shape differ only in durations, so each shape is
  // built once and later layouts only set durations before scheduling.
  struct Shape {
    bool moe, tp, a2a, fsdp_gather, fsdp_scatter, recompute, embedding, head;
    std::int64_t layers;
    bool operator==(const Shape&) const = default;
  };
  // An op's duration is `factor` times one of the cost fields.
  enum Field : std::uint8_t {
    kAttention,
    kRouter,
    kPermute,
    kExperts,
    kA2a,
    kTpGather,
    kTpScatter,
    kFsdpGather,
    kFsdpScatter,
    kEmbedding,
    kHead,
    kNumFields
  };
  struct Built {
    Shape shape;
    StepGraph graph;
    std::vector<std::pair<Field, double>> duration;  // [op]
    std::vector<bool> backward;                      // [op]
    OpId forward_end = 0;
  };

  Built& graph_for(const StageCosts& costs, std::int64_t layers);
  void build(Built& b, const StageCosts& costs);
  MicroBatchSchedule run(Built& b, const StageCosts& costs);

  std::vector<std::unique_ptr<Built>> built_;
  Scheduler scheduler_;
};
}  // namespace moetune::simulator
