// TrainSpec: what the user fixes about the training run (sequence, batch, precision, optimizer, MoE
// routing options, seed). How the run is split across devices is the Layout's business.
#pragma once

#include <cstdint>
#include <string>

#include "core/hardware.hpp"
#include "core/json_reader.hpp"

namespace moetune {

enum class LoadBalancing { AuxLoss, Sinkhorn, None };
enum class Dispatcher { AllToAll, AllGather };

struct OptimizerSpec {  // AdamW with warmup + cosine decay and global grad-norm clipping
  double lr = 3e-4;
  double min_lr = 3e-5;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
  std::int64_t warmup_steps = 100;
  std::int64_t decay_steps = 10000;
  double grad_clip = 1.0;  // 0 = no clipping
  bool operator==(const OptimizerSpec&) const = default;
};

struct MoeOptions {
  LoadBalancing load_balancing = LoadBalancing::AuxLoss;
  double aux_loss_coef = 0.01;
  double z_loss_coef = 0.0;
  double capacity_factor = 0.0;  // 0 = dropless
  Dispatcher dispatcher = Dispatcher::AllToAll;
  // Spread of expert popularity over a global batch, as the coefficient of variation of per-expert
  // token counts (std / mean). Used for aux_loss and none routing; sinkhorn and forced balance
  // route evenly. The default 0.2 is derived from the MaxVio figures that arXiv 2408.15664 (Wang et
  // al., "Auxiliary-Loss-Free Load Balancing Strategy for Mixture-of-Experts", Table 1) reports
  // for aux-loss training (MaxVio_global 0.52-0.72 over 64 experts, i.e. a CV of 0.2-0.3 when the
  // busiest of 64 experts sits about 2.4 sigma above the mean). `moetune calibrate` fits it to
  // measured tokens_per_expert histograms.
  double expert_skew = 0.2;
  // Routing forced to uniform random (Megatron's --moe-router-force-load-balancing), as many
  // published benchmarks run. Only the simulator models it; the executor trains real routing.
  bool force_balanced = false;
  bool operator==(const MoeOptions&) const = default;
};

struct TrainSpec {
  std::int64_t seq_len = 2048;
  std::int64_t global_batch = 128;  // sequences per optimizer step
  Precision precision = Precision::Bf16;
  OptimizerSpec optimizer;
  MoeOptions moe;
  std::uint64_t seed = 1234;
  bool operator==(const TrainSpec&) const = default;

  std::int64_t tokens_per_step() const { return seq_len * global_batch; }
};

std::string to_string(LoadBalancing lb);
LoadBalancing parse_load_balancing(const std::string& text);
std::string to_string(Dispatcher d);
Dispatcher parse_dispatcher(const std::string& text);

Json to_json(const TrainSpec& train);
TrainSpec train_from_json(JsonObjectReader reader);

}  // namespace moetune
