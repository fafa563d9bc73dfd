// bench/train_cpu: tokens/s of moetune's CPU executor on a documented small Mixtral, one process.
// Default: preset `small` (8 layers, hidden 512, 8 experts top-2, vocab 8192), seq 256, batch 8
// (2,048 tokens per step), fp32, AdamW, the kernel threads of this machine. Prints one JSON line;
// bench/train_cpu_compare.py runs it side by side with the same step in PyTorch eager.
//
// Usage: train_cpu [--model NAME] [--seq S] [--batch B] [--steps N] [--warmup W]
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/presets.hpp"
#include "executor/trainer.hpp"
#include "kernels/cpu/parallel.hpp"

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
    } else {
      std::fprintf(stderr, "train_cpu: unknown flag %s\n", flag.c_str());
      return 2;
    }
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
  trainer.run([&](const StepRecord& r) {
    if (r.step > warmup) step_s.push_back(r.step_time_s);
  });
  std::vector<double> sorted = step_s;
  std::sort(sorted.begin(), sorted.end());
  const double median = sorted[sorted.size() / 2];
  std::printf(
      "{\"backend\": \"moetune-cpu\", \"model\": \"%s\", \"threads\": %d, "
      "\"tokens_per_step\": %lld, \"tokens_per_s_median\": %.1f, \"step_s\": [",
      model.c_str(), kernels::cpu::kernel_threads(), static_cast<long long>(seq * batch),
      static_cast<double>(seq * batch) / median);
  for (std::size_t i = 0; i < step_s.size(); ++i)
    std::printf("%s%.4f", i ? ", " : "", step_s[i]);
  std::printf("]}\n");
  return 0;
}
