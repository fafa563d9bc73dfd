// Shared CLI options and formatting.
#include "cli/common.hpp"

#include <cstdio>

#include "core/error.hpp"
#include "core/presets.hpp"
#include "core/units.hpp"

namespace moetune::cli {

void add_setup_options(CLI::App& app, SetupOptions& o, bool required) {
  auto* model = app.add_option("--model", o.model, "model preset name or JSON/config.json path");
  auto* cluster = app.add_option("--cluster", o.cluster, "cluster preset name or JSON path");
  auto* nodes = app.add_option("--nodes", o.nodes, "number of nodes (overrides the preset)");
  if (required) {
    model->required();
    cluster->required();
    nodes->required();
  }
  app.add_option("--devices-per-node", o.devices_per_node,
                 "devices per node (cpu-local: the number of CPU ranks)");
  app.add_option("--seq", o.seq_len, "sequence length in tokens")->capture_default_str();
  app.add_option("--global-batch", o.global_batch, "sequences per optimizer step")
      ->capture_default_str();
  app.add_option("--precision", o.precision,
                 "fp32, bf16 or fp8 (default: bf16 on GPUs, fp32 on CPUs)")
      ->check(CLI::IsMember({"fp32", "bf16", "fp8"}));
  app.add_option("--load-balancing", o.load_balancing, "aux_loss, sinkhorn or none")
      ->check(CLI::IsMember({"aux_loss", "sinkhorn", "none"}))
      ->capture_default_str();
  app.add_option("--aux-loss-coef", o.aux_loss_coef,
                 "load-balancing loss coefficient (default: the model's router_aux_loss_coef)");
  app.add_option("--z-loss-coef", o.z_loss_coef, "router z-loss coefficient")
      ->capture_default_str();
  app.add_option("--capacity-factor", o.capacity_factor, "expert capacity factor (0 = dropless)")
      ->capture_default_str();
  app.add_option("--dispatcher", o.dispatcher, "alltoall or allgather")
      ->check(CLI::IsMember({"alltoall", "allgather"}))
      ->capture_default_str();
  app.add_option("--expert-skew", o.expert_skew,
                 "coefficient of variation of expert popularity (aux_loss/none routing), which "
                 "sets the busiest expert-parallel rank's load in predictions")
      ->capture_default_str();
  app.add_flag("--force-balanced", o.force_balanced,
               "predict with routing forced to uniform (as many benchmarks run; the executor "
               "refuses it)");
  app.add_option("--seed", o.seed, "random seed")->capture_default_str();
  app.add_option("--lr", o.lr, "peak learning rate (default 3e-4)");
  app.add_option("--min-lr", o.min_lr,
                 "learning rate at the end of the cosine decay (default lr/10)");
  app.add_option("--warmup-steps", o.warmup_steps, "linear warmup steps (default 100)");
  app.add_option("--decay-steps", o.decay_steps,
                 "step where the cosine decay ends (default 10000)");
  app.add_option("--weight-decay", o.weight_decay, "AdamW weight decay (default 0.1)");
  app.add_option("--grad-clip", o.grad_clip, "global grad-norm clip, 0 = off (default 1.0)");
}

void apply_optimizer_flags(const SetupOptions& o, OptimizerSpec& opt, bool default_min_lr) {
  if (o.lr) opt.lr = *o.lr;
  if (o.min_lr) {
    opt.min_lr = *o.min_lr;
  } else if (default_min_lr) {
    opt.min_lr = opt.lr / 10.0;
  }
  if (o.warmup_steps) opt.warmup_steps = *o.warmup_steps;
  if (o.decay_steps) opt.decay_steps = *o.decay_steps;
  if (o.weight_decay) opt.weight_decay = *o.weight_decay;
  if (o.grad_clip) opt.grad_clip = *o.grad_clip;
  if (opt.lr <= 0 || opt.min_lr < 0 || opt.min_lr > opt.lr) {
    throw InputError("--lr must be positive and --min-lr in [0, lr]");
  }
  if (opt.warmup_steps < 0 || opt.decay_steps < 1) {
    throw InputError("--warmup-steps must be >= 0 and --decay-steps >= 1");
  }
  if (opt.weight_decay < 0 || opt.grad_clip < 0) {
    throw InputError("--weight-decay and --grad-clip must not be negative");
  }
}

Setup load_setup(const SetupOptions& o) {
  Setup s;
  s.model = load_model(o.model);
  s.cluster = load_cluster(o.cluster, o.nodes, o.devices_per_node);
  if (o.seq_len < 1) throw InputError("--seq must be at least 1");
  if (o.global_batch < 1) throw InputError("--global-batch must be at least 1");
  if (o.capacity_factor < 0) throw InputError("--capacity-factor must be 0 (dropless) or positive");
  s.train.seq_len = o.seq_len;
  s.train.global_batch = o.global_batch;
  s.train.precision =
      o.precision.empty()
          ? (s.cluster.device.kind == DeviceKind::Cpu ? Precision::Fp32 : Precision::Bf16)
          : parse_precision(o.precision);
  s.train.moe.load_balancing = parse_load_balancing(o.load_balancing);
  s.train.moe.aux_loss_coef = o.aux_loss_coef.value_or(s.model.router_aux_loss_coef);
  if (s.train.moe.aux_loss_coef < 0) throw InputError("--aux-loss-coef must not be negative");
  apply_optimizer_flags(o, s.train.optimizer, true);
  s.train.moe.z_loss_coef = o.z_loss_coef;
  s.train.moe.capacity_factor = o.capacity_factor;
  s.train.moe.dispatcher = parse_dispatcher(o.dispatcher);
  if (!(o.expert_skew >= 0 && o.expert_skew <= 100)) {
    throw InputError("--expert-skew must be in [0, 100]");
  }
  s.train.moe.expert_skew = o.expert_skew;
  s.train.moe.force_balanced = o.force_balanced;
  s.train.seed = o.seed;
  return s;
}

CLI::Validator at_least_one() {
  return CLI::Validator(
      [](std::string& value) -> std::string {
        try {
          std::size_t used = 0;
          const long long n = std::stoll(value, &used);
          if (used == value.size() && n >= 1) return {};
        } catch (const std::exception&) {
        }
        return "must be a whole number, at least 1, got " + value;
      },
      "INT>=1");
}

void add_layout_options(CLI::App& app, LayoutOptions& o) {
  const CLI::Validator positive = at_least_one();
  app.add_option("--tp", o.tp, "tensor-parallel degree")->check(positive);
  app.add_option("--pp", o.pp, "pipeline stages")->check(positive);
  app.add_option("--vpp", o.vpp, "virtual stages per pipeline rank")->check(positive);
  app.add_option("--first-stage-layers", o.first_stage_layers,
                 "uneven pipeline: layers of the first stage (with --last-stage-layers; the "
                 "middle stages split the rest evenly)")
      ->check(positive);
  app.add_option("--last-stage-layers", o.last_stage_layers,
                 "uneven pipeline: layers of the last stage")
      ->check(positive);
  app.add_option("--ep", o.ep, "expert-parallel degree")->check(positive);
  app.add_option("--hs", o.hs, "hybrid-shard degree")->check(positive);
  app.add_option("--order", o.order, "mesh order, innermost first, e.g. tp,ep,hs,rep,pp");
  app.add_option("--micro-batch", o.micro_batch, "sequences per micro-batch")->check(positive);
  app.add_option("--recompute", o.recompute, "activation recompute: none or full")
      ->check(CLI::IsMember({"none", "full"}));
  app.add_option("--optimizer-offload", o.optimizer_offload,
                 "optimizer state in host memory: on or off")
      ->check(CLI::IsMember({"on", "off"}));
  app.add_option("--activation-offload", o.activation_offload,
                 "saved activations in host memory: on or off")
      ->check(CLI::IsMember({"on", "off"}));
  app.add_option("--distributed-optimizer", o.distributed_optimizer,
                 "master weights and Adam state split over the replicas (ZeRO-1): on (default "
                 "where there are replicas) or off")
      ->check(CLI::IsMember({"on", "off"}));
}

namespace {

// --first-stage-layers and --last-stage-layers, given together or not at all.
std::optional<StageSplit> stage_split_of(const LayoutOptions& o) {
  if (o.first_stage_layers.has_value() != o.last_stage_layers.has_value()) {
    throw InputError(
        "uneven pipeline stages need both --first-stage-layers and --last-stage-layers");
  }
  if (!o.first_stage_layers) return std::nullopt;
  return StageSplit{*o.first_stage_layers, *o.last_stage_layers};
}

}  // namespace

planner::Pins to_pins(const LayoutOptions& o) {
  planner::Pins p;
  p.tp = o.tp;
  p.pp = o.pp;
  p.vpp = o.vpp;
  p.ep = o.ep;
  p.hs = o.hs;
  p.micro_batch = o.micro_batch;
  if (o.order) p.order = parse_order(*o.order);
  if (o.recompute) p.recompute = parse_recompute(*o.recompute);
  if (o.optimizer_offload) p.optimizer_offload = *o.optimizer_offload == "on";
  if (o.activation_offload) p.activation_offload = *o.activation_offload == "on";
  if (o.distributed_optimizer) p.distributed_optimizer = *o.distributed_optimizer == "on";
  p.stage_split = stage_split_of(o);
  return p;
}

Layout to_layout(const LayoutOptions& o, const ClusterSpec& cluster) {
  Layout l;
  l.tp = o.tp.value_or(1);
  l.pp = o.pp.value_or(1);
  l.vpp = o.vpp.value_or(1);
  const StageSplit split = stage_split_of(o).value_or(StageSplit{});
  l.first_stage_layers = split.first;
  l.last_stage_layers = split.last;
  l.ep = o.ep.value_or(1);
  const std::int64_t world = cluster.world_size();
  const std::int64_t inner = l.tp * l.pp * l.ep;
  if (o.hs) {
    l.hs = *o.hs;
  } else {
    if (world % inner != 0) {
      throw InputError("tp*pp*ep = " + std::to_string(inner) + " does not divide the " +
                       std::to_string(world) + " devices of the cluster");
    }
    l.hs = world / inner;
  }
  if (world % (inner * l.hs) != 0) {
    throw InputError("tp*pp*ep*hs = " + std::to_string(inner * l.hs) + " does not divide the " +
                     std::to_string(world) + " devices of the cluster");
  }
  l.rep = world / (inner * l.hs);
  if (o.order) l.order = parse_order(*o.order);
  l.micro_batch = o.micro_batch.value_or(1);
  if (o.recompute) l.recompute = parse_recompute(*o.recompute);
  l.optimizer_offload = o.optimizer_offload.value_or("off") == "on";
  l.activation_offload = o.activation_offload.value_or("off") == "on";
  l.distributed_optimizer =
      o.distributed_optimizer.value_or("on") == "on" && l.dense_replicas() > 1;
  return l;
}

std::string format_gib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", bytes / kGiB);
  return buf;
}

std::string format_count(double n) {
  char buf[32];
  if (n >= 1e9) {
    std::snprintf(buf, sizeof buf, "%.1fB", n / 1e9);
  } else if (n >= 1e6) {
    std::snprintf(buf, sizeof buf, "%.1fM", n / 1e6);
  } else if (n >= 1e3) {
    std::snprintf(buf, sizeof buf, "%.1fK", n / 1e3);
  } else {
    std::snprintf(buf, sizeof buf, "%.0f", n);
  }
  return buf;
}

std::string format_rate(double tokens_per_s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.0f", tokens_per_s);
  return buf;
}

std::string format_seconds(double s) {
  char buf[32];
  if (s >= 1.0) {
    std::snprintf(buf, sizeof buf, "%.2f s", s);
  } else {
    std::snprintf(buf, sizeof buf, "%.1f ms", s * 1e3);
  }
  return buf;
}

std::string format_text(const char* format, double a, double b, double c) {
  char buf[256];
  std::snprintf(buf, sizeof buf, format, a, b, c);
  return buf;
}

Json prediction_json(const Layout& l, const Prediction& p) {
  Json j = to_json(l);
  j["fits"] = p.fits;
  j["reason"] = p.reason;
  j["peak_memory_bytes"] = p.peak_memory_bytes;
  j["device_memory_bytes"] = p.device_memory_bytes;
  j["host_memory_bytes_per_node"] = p.host_memory_bytes_per_node;
  j["memory"] = to_json(p.memory);
  j["step_time_s"] = p.step_time_s;
  j["time"] = to_json(p.time);
  j["tokens_per_s"] = p.tokens_per_s;
  j["tokens_per_s_per_device"] = p.tokens_per_s_per_device;
  j["tflops_per_device"] = p.tflops_per_device;
  j["mfu"] = p.mfu;
  j["cost_per_step_usd"] = p.cost_per_step_usd;
  j["cost_per_billion_tokens_usd"] = p.cost_per_billion_tokens_usd;
  return j;
}

std::string describe_setup(const Setup& s) {
  const ParamCounts c = param_counts(s.model);
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "%s (%s total, %s active) on %lld x %s (%lld x %s, %.0f GiB), seq %lld, global "
                "batch %lld, %s",
                s.model.name.c_str(), format_count(static_cast<double>(c.total)).c_str(),
                format_count(static_cast<double>(c.active)).c_str(),
                static_cast<long long>(s.cluster.nodes), s.cluster.name.c_str(),
                static_cast<long long>(s.cluster.world_size()), s.cluster.device.name.c_str(),
                s.cluster.device.memory_GiB, static_cast<long long>(s.train.seq_len),
                static_cast<long long>(s.train.global_batch), to_string(s.train.precision).c_str());
  return buf;
}

}  // namespace moetune::cli
