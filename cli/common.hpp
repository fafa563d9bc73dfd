// Pieces every subcommand shares: the model/cluster/training options, the layout options, and
// number formatting. Subcommands stay thin: parse, call a library, print.
#pragma once

#include <CLI/CLI.hpp>

#include <optional>
#include <string>

#include "core/plan.hpp"
#include "planner/planner.hpp"

namespace moetune::cli {

// --model --cluster --nodes --devices-per-node and the TrainSpec flags.
struct SetupOptions {
  std::string model;
  std::string cluster;
  std::optional<std::int64_t> nodes;
  std::optional<std::int64_t> devices_per_node;
  std::int64_t seq_len = 2048;
  std::int64_t global_batch = 128;
  std::string precision;  // default: bf16 on GPUs, fp32 on CPUs
  std::string load_balancing = "aux_loss";
  std::optional<double> aux_loss_coef;  // default: the model's router_aux_loss_coef
  double z_loss_coef = 0.0;
  double capacity_factor = 0.0;
  std::string dispatcher = "alltoall";
  double expert_skew = MoeOptions{}.expert_skew;
  bool force_balanced = false;
  std::uint64_t seed = 1234;
  // AdamW and its schedule; unset values keep TrainSpec's defaults.
  std::optional<double> lr, min_lr, weight_decay, grad_clip;
  std::optional<std::int64_t> warmup_steps, decay_steps;
};

struct Setup {
  ModelSpec model;
  ClusterSpec cluster;
  TrainSpec train;
};

void add_setup_options(CLI::App& app, SetupOptions& options, bool required);
Setup load_setup(const SetupOptions& options);
// Applies --lr, --min-lr, --warmup-steps, --decay-steps, --weight-decay and --grad-clip to `opt`
// and checks the result; an unset --min-lr becomes lr / 10 when `default_min_lr`.
void apply_optimizer_flags(const SetupOptions& options, OptimizerSpec& opt, bool default_min_lr);

// --tp --pp --vpp --ep --hs --order --micro-batch --recompute --optimizer-offload
// --activation-offload: pins for `plan`/`explain`, the layout itself for `simulate`.
struct LayoutOptions {
  std::optional<std::int64_t> tp, pp, vpp, ep, hs, micro_batch, first_stage_layers,
      last_stage_layers;
  std::optional<std::string> order, recompute, optimizer_offload, activation_offload,
      distributed_optimizer;
};
void add_layout_options(CLI::App& app, LayoutOptions& options);
planner::Pins to_pins(const LayoutOptions& options);
// A whole layout: unset degrees default to 1 except hs, which takes what is left (rep = 1).
Layout to_layout(const LayoutOptions& options, const ClusterSpec& cluster);

// Accepts whole numbers >= 1 and says so when a value is not ("must be a whole number, at least 1,
// got 0").
CLI::Validator at_least_one();

std::string format_gib(double bytes);
std::string format_count(double n);  // 46.7B, 12.9M
std::string format_rate(double tokens_per_s);
std::string format_seconds(double s);
// printf-style text of up to three numbers, e.g. format_text("%.2f cores", x).
std::string format_text(const char* format, double a, double b = 0, double c = 0);

// Prediction as stable JSON keys: the layout's degrees and order, fits, memory, time, throughput.
Json prediction_json(const Layout& layout, const Prediction& prediction);
// One line about the setup: model, cluster, sequence, batch, precision.
std::string describe_setup(const Setup& setup);

}  // namespace moetune::cli
