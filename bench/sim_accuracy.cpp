// bench/sim_accuracy: the simulator against published MoE training measurements
// (profiles/validation/published.json). For every entry whose layout moetune can express, predicts
// tokens/s per GPU and prints it beside the measurement, with the error and the median absolute
// error over all entries. Entries moetune cannot express (context parallelism, expert parallelism
// wider than data parallelism, a cluster without a preset) are listed with the reason.
//
// Usage: sim_accuracy [published.json]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "core/constraints.hpp"
#include "core/error.hpp"
#include "core/presets.hpp"
#include "simulator/simulator.hpp"

using namespace moetune;

namespace {

struct Outcome {
  std::string id;
  std::string note;  // why skipped, empty when compared
  double measured = 0, predicted = 0;
};

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

Outcome evaluate(const Json& e) {
  Outcome o;
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
  o.predicted = simulator::Simulator(model, cluster, train).predict(l).tokens_per_s_per_device;
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string file =
      argc > 1 ? argv[1] : (profiles_dir() / "validation" / "published.json").string();
  const Json doc = read_json_file(file);
  std::vector<double> errors;
  std::printf("%-56s %12s %12s %8s\n", "entry", "measured", "predicted", "error");
  for (const Json& e : doc["entries"]) {
    const Outcome o = evaluate(e);
    if (!o.note.empty()) {
      std::printf("%-56s skipped: %s\n", o.id.c_str(), o.note.c_str());
      continue;
    }
    const double err = (o.predicted - o.measured) / o.measured;
    errors.push_back(std::abs(err));
    std::printf("%-56s %12.0f %12.0f %+7.1f%%\n", o.id.c_str(), o.measured, o.predicted,
                100.0 * err);
  }
  std::sort(errors.begin(), errors.end());
  if (errors.empty()) return 0;
  const double median = errors.size() % 2
                            ? errors[errors.size() / 2]
                            : 0.5 * (errors[errors.size() / 2 - 1] + errors[errors.size() / 2]);
  double mean = 0;
  for (double x : errors)
    mean += x / static_cast<double>(errors.size());
  std::printf(
      "\n%zu entries compared (tokens/s per GPU): median absolute error %.1f%%, mean %.1f%%\n",
      errors.size(), 100.0 * median, 100.0 * mean);
  return 0;
}
