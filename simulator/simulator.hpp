// The simulator: predicts a layout's per-rank memory, step time, throughput, MFU and cost.
// `Simulator` binds a model, a cluster and a training setup and precomputes everything that does
// not depend on the layout, so the planner can evaluate many layouts cheaply.
#pragma once

#include <array>
#include <vector>

#include "core/mesh.hpp"
#include "core/plan.hpp"
#include "simulator/collectives.hpp"
#include "simulator/step_builder.hpp"

namespace moetune::simulator {

// Parameters of one pipeline stage, split the way sharding treats them.
struct StageParams {
  double tp_split = 0;  // dense parameters split by tp (attention, shared experts, dense FFNs,
                        // embedding and LM head on their stages)
  double tp_replicated =
      0;               // dense parameters every tp rank holds whole (norms, routers, q/k norms)
  double experts = 0;  // routed expert parameters of the stage, before ep and tp splits
  double largest_unit = 0;  // biggest all-gather group (a layer, the embedding, the final norm
                            // and LM head) of this rank's share, its shard units padded to hs
  double sharded = 0;       // this rank's parameters under hs sharding (padded shards)
  double owned = 0;  // distributed optimizer: the part of the shards whose master and Adam state
                     // this rank keeps (each unit's shard split over its replicas, padded)
  std::int64_t moe_layers = 0;
  std::int64_t dense_layers = 0;
  bool first = false;  // holds the embedding
  bool last = false;   // holds the final norm, LM head and loss
};

// Activation bytes one layer saves for backward for one micro-batch on one rank.
struct LayerActivations {
  double attention = 0;
  double moe = 0;        // a layer with routed experts
  double dense_ffn = 0;  // a layer without experts
  double input = 0;      // the layer input: all a layer keeps under full recompute
  // Held once, not per layer: what one layer's forward needs and its backward does not (router
  // logits without a z-loss, the row-to-slot map of the dispatch), and the gradient buffers of
  // one layer's backward (the residual stream's, and the larger of the attention half's and the
  // MoE or dense FFN half's, which never live at once).
  double forward_scratch = 0;
  double backward_moe = 0;
  double backward_dense = 0;
};

class Simulator {
 public:
  Simulator(const ModelSpec& model, const ClusterSpec& cluster, const TrainSpec& train);

  const ModelSpec& model() const { return model_; }
  const ClusterSpec& cluster() const { return cluster_; }
  const TrainSpec& train() const { return train_; }

  Prediction predict(const Layout& layout) const;
  // Same, with the layout's mesh already built (the planner shares it between layouts that differ
  // only in micro-batch, recompute or offloading).
  Prediction predict(const Layout& layout, const Mesh& mesh) const;
  // Same, without the sentence of why a layout does not fit (`reason` stays empty): the planner
  // ranks hundreds of thousands of layouts and shows only a few.
  Prediction predict(const Layout& layout, const Mesh& mesh, bool with_reason) const;

  // Pieces of the model, exposed for tests and for the time model. stage_params remembers its
  // last results per thread: the planner asks again for every micro-batch, order, recompute and
  // offload choice of the same degrees.
  StageParams stage_params(const Layout& layout, std::int64_t stage) const;
  LayerActivations layer_activations(const Layout& layout) const;
  // The fraction of its speed alone a device keeps while every device of its node is busy:
  // 1 / (1 + device.node_contention * (devices_per_node - 1)).
  double node_share() const;
  // Expected tokens the busiest EP rank receives, as a multiple of the mean (>= 1).
  double expert_load_factor(const Layout& layout) const;
  // Coefficient of variation of expert popularity the prediction assumes: the calibrated
  // profile's (cluster.calibration.expert_skew) when it has one, else train.moe.expert_skew.
  double expert_skew() const;
  // Memory of the worst rank; also returns offloaded host bytes per node and, with activation
  // offload, the bytes of one micro-batch's activations that go to the host and back (per rank,
  // busiest stage).
  MemoryBreakdown memory(const Layout& layout, double* host_bytes_per_node,
                         double* offloaded_activation_bytes_per_micro_batch = nullptr) const;
  TimeBreakdown time(const Layout& layout, const Mesh& mesh) const;
  // Per-op costs of one micro-batch on a pipeline stage, the input of the step schedule.
  StageCosts stage_costs(const Layout& layout, const Mesh& mesh, std::int64_t stage) const;
  const CollectiveModel& collectives() const { return collectives_; }
  // Every op of one micro-batch on the first stage with its start and end.
  std::vector<TimelineOp> timeline(const Layout& layout) const;

 private:
  ModelSpec model_;
  ClusterSpec cluster_;
  TrainSpec train_;
  CollectiveModel collectives_;            // topology graph and cached collective costs
  std::vector<LayerParams> layer_params_;  // [layer], computed once
  double model_flops_per_token_ = 0;       // training, causal attention
  std::uint64_t id_ = 0;  // unique per constructed simulator: the key of per-thread memos
  StageParams compute_stage_params(const Layout& layout, std::int64_t stage) const;
};

// Expected maximum of n independent standard normal variables (Blom's approximation; 0 for n <= 1).
double expected_max_of_normals(std::int64_t n);

// Simulates a whole plan with default settings.
Prediction simulate(const Plan& plan);

}  // namespace moetune::simulator
