// Validation against published measurements.
#include "simulator/validation.hpp"

#include <algorithm>
#include <cmath>

#include "core/constraints.hpp"
#include "core/error.hpp"
#include "core/presets.hpp"
#include "simulator/simulator.hpp"

namespace moetune::simulator {

namespace {

// Measured tokens/s per GPU: as published, or from the step time, or from TFLOPS/GPU with the
// entry's FLOPs convention.
double measured_tokens(const Json& e, const ModelSpec& model) {
  const Json& m = e["measured"];
  if (m["tokens_per_s_per_gpu"].is_number()) return m["tokens_per_s_per_gpu"].get<double>();
  const double seq = e["seq_len"].get<double>();
  const double gpus = e["gpus"].get<double>();
  if (m["step_time_s"].is_number()) {
    return e["global_batch"].get<double>() * seq / m["step_time_s"].get<double>() / gpus;
  }
  if (m["tflops_per_gpu"].is_number() && e["flops_convention"].is_string()) {
    const auto convention =
        e["flops_convention"] == "full" ? AttentionFlops::Full : AttentionFlops::Causal;
    const double per_token =
        flops_per_token(model, static_cast<std::int64_t>(seq), convention).training();
    return m["tflops_per_gpu"].get<double>() * 1e12 / per_token;
  }
  return 0;
}

PublishedOutcome evaluate(const Json& e) {
  PublishedOutcome o;
  o.id = e["id"].get<std::string>();
  const Json& lj = e["layout"];
  if (lj["cp"].is_number() && lj["cp"].get<int>() > 1) {
    o.note = "context parallelism (cp=" + std::to_string(lj["cp"].get<int>()) + ") is not modelled";
    return o;
  }
  if (e["cluster"] == "other" && e["gpu"] != "b200") {
    o.note = "no cluster preset for this system";
    return o;
  }
  ModelSpec model;
  try {
    model = load_model(e["model"].get<std::string>());
  } catch (const InputError&) {
    o.note = "model is not a preset";
    return o;
  }
  const std::int64_t gpus = e["gpus"].get<std::int64_t>();
  const std::string cluster_name =
      e["cluster"] == "other" ? std::string("dgx-b200") : e["cluster"].get<std::string>();
  ClusterSpec cluster = load_cluster(cluster_name, gpus / 8, std::nullopt);
  TrainSpec train;
  train.seq_len = e["seq_len"].get<std::int64_t>();
  train.global_batch = e["global_batch"].get<std::int64_t>();
  train.precision = parse_precision(e["precision"].get<std::string>());
  train.moe.force_balanced = e["forced_balanced_routing"] == true;
  Layout l;
  l.tp = lj["tp"].get<std::int64_t>();
  l.pp = lj["pp"].get<std::int64_t>();
  l.vpp = lj["vpp"].is_number() ? lj["vpp"].get<std::int64_t>() : 1;
  l.ep = lj["ep"].get<std::int64_t>();
  const std::int64_t dp = lj["dp"].get<std::int64_t>();
  if (dp % l.ep != 0) {
    o.note = "ep=" + std::to_string(l.ep) + " wider than dp=" + std::to_string(dp) +
             " (Megatron folds experts over tp x dp; moetune's ep divides dp)";
    return o;
  }
  if (l.tp > 1 && lj["expert_tp"] == 1) {
    // Megatron's MoE parallel folding: attention split over tp while the experts stay whole
    // (expert tp 1), the EP group carved from tp x dp ranks. moetune's tp splits the experts too
    // and draws ep from dp, a different layout with other collectives and GEMM shapes.
    o.note = "expert folding (tp=" + std::to_string(l.tp) +
             " for attention, expert tp 1) is not modelled";
    return o;
  }
  // FSDP shards parameters over dp / ep. Megatron's distributed optimizer shards master weights
  // and optimizer state over the replicas: moetune's distributed optimizer. Entries that do not
  // say are plain replicas.
  if (lj["sharding"] == "fsdp") {
    l.hs = dp / l.ep;
  } else {
    l.rep = dp / l.ep;
    l.distributed_optimizer = lj["sharding"] == "distributed_optimizer";
  }
  if (model.num_hidden_layers % l.pp != 0) {
    // moetune can run uneven stages (--first-stage-layers, --last-stage-layers), but the entry
    // does not say how its run split them, and the busiest stage sets the pace.
    o.note = "pp=" + std::to_string(l.pp) + " does not divide " +
             std::to_string(model.num_hidden_layers) +
             " layers and the source does not say how its stages split them";
    return o;
  }
  l.micro_batch = e["micro_batch"].get<std::int64_t>();
  l.recompute = e["recompute"] == "full" ? Recompute::Full : Recompute::None;
  if (auto r = check_layout(model, cluster, train, l)) {
    o.note = "layout breaks a rule: " + explain(*r, model, cluster, train, l);
    return o;
  }
  o.measured = measured_tokens(e, model);
  if (o.measured <= 0) {
    o.note = "no usable measurement (FLOPs convention unknown)";
    return o;
  }
  o.predicted = Simulator(model, cluster, train).predict(l).tokens_per_s_per_device;
  return o;
}

}  // namespace

std::vector<PublishedOutcome> evaluate_published(const Json& doc) {
  std::vector<PublishedOutcome> out;
  for (const Json& e : doc.at("entries"))
    out.push_back(evaluate(e));
  return out;
}

ErrorSummary summarise(const std::vector<PublishedOutcome>& outcomes) {
  std::vector<double> errors;
  for (const PublishedOutcome& o : outcomes) {
    if (o.note.empty()) errors.push_back(std::abs(o.error()));
  }
  ErrorSummary s;
  s.compared = errors.size();
  if (errors.empty()) return s;
  std::sort(errors.begin(), errors.end());
  const std::size_t n = errors.size();
  s.median = n % 2 ? errors[n / 2] : 0.5 * (errors[n / 2 - 1] + errors[n / 2]);
  for (double x : errors)
    s.mean += x / static_cast<double>(n);
  return s;
}

}  // namespace moetune::simulator
