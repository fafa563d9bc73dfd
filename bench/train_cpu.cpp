// bench/train_cpu: tokens/s of moetune's CPU executor on a documented small Mixtral, one process.
// Default: preset `small` (8 layers, hidden 512, 8 experts top-2, vocab 8192), seq 256, batch 8
// (2,048 tokens per step), fp32, AdamW, the kernel threads of this machine. Prints one JSON line:
// tokens/s (median step), the achieved GFLOP/s with the model's own training FLOPs per token
// (core's flops_per_token, causal attention, 3x forward: the count the planner's MFU uses), and the
// median seconds of each phase. bench/train_cpu_compare.py runs it side by side with the same step
// in PyTorch eager.
//
// Usage: train_cpu [--model NAME|FILE] [--seq S] [--batch B] [--steps N] [--warmup W] [--threads T]
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "core/model_spec.hpp"
#include "core/presets.hpp"
#include "executor/trainer.hpp"
#include "kernels/cpu/parallel.hpp"

namespace {

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values.empty() ? 0.0 : values[values.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  using namespace moetune;
  std::string model = "small";
  std::int64_t seq = 256, batch = 8, steps = 6, warmup = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const std::string value = argv[i + 1];
    if (flag == "--model") {
      model = value;
    } else if (flag == "--seq") {
      seq = std::atoll(value.c_str());
    } else if (flag == "--batch") {
      batch = std::atoll(value.c_str());
    } else if (flag == "--steps") {
      steps = std::atoll(value.c_str());
    } else if (flag == "--warmup") {
      warmup = std::atoll(value.c_str());
    } else if (flag == "--threads") {
      kernels::cpu::set_kernel_threads(std::atoi(value.c_str()));
    } else {
      std::fprintf(stderr, "train_cpu: unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  if (steps < 1) {
    std::fprintf(stderr, "train_cpu: --steps must be >= 1\n");
    return 2;
  }
  Plan plan;
  plan.model = load_model(model);
  plan.cluster = load_cluster("cpu-local", 1, 1);
  plan.train.seq_len = seq;
  plan.train.global_batch = batch;
  plan.train.precision = Precision::Fp32;
  plan.layout.micro_batch = batch;
  executor::TrainOptions options;
  options.steps = warmup + steps;
  executor::Trainer trainer(plan, options);
  std::vector<double> step_s;
  std::map<std::string, std::vector<double>> phase_s;
  trainer.run([&](const StepRecord& r) {
    if (r.step <= warmup) return;
    step_s.push_back(r.step_time_s);
    for (const auto& [phase, seconds] : r.phases_s)
      phase_s[phase].push_back(seconds);
  });
  const double step_median = median(step_s);
  const double tokens = static_cast<double>(seq * batch);
  const double training_flops = flops_per_token(plan.model, seq, AttentionFlops::Causal).training();
  std::printf(
      "{\"backend\": \"moetune-cpu\", \"model\": \"%s\", \"threads\": %d, "
      "\"tokens_per_step\": %lld, \"tokens_per_s_median\": %.1f, "
      "\"training_flops_per_token\": %.0f, \"gflops_median\": %.2f, \"step_s\": [",
      plan.model.name.c_str(), kernels::cpu::kernel_threads(), static_cast<long long>(seq * batch),
      tokens / step_median, training_flops, tokens / step_median * training_flops / 1e9);
  for (std::size_t i = 0; i < step_s.size(); ++i)
    std::printf("%s%.4f", i ? ", " : "", step_s[i]);
  std::printf("], \"phase_s_median\": {");
  bool first = true;
  for (const auto& [phase, seconds] : phase_s) {
    std::printf("%s\"%s\": %.4f", first ? "" : ", ", phase.c_str(), median(seconds));
    first = false;
  }
  std::printf("}}\n");
  return 0;
}
