// The one Mixtral model and trainer on the CUDA backend (label `gpu`): against the Hugging Face
// golden files of tests/data/golden/tiny_mixtral (logits, losses, every gradient, the 10-step
// AdamW curve), and a 200-step run tracking the CPU backend's loss curve on the synthetic corpus.
// The multi-rank runs on one GPU (in-process ranks) live in inproc_gpu_test.cpp.
//
// Tolerances: the golden files are float64; the GPU computes in bf16 (8-bit mantissa, 0.4% per
// rounding) with fp32 accumulation, through ~20 rounded stages per layer. Errors of a few percent
// of a tensor's scale are bf16's; a wrong term moves results by O(1). Where bf16 rounding flips a
// near-tied routing choice, the routed counts differ from the fp32 CPU model's: that is checked
// separately so a failure says which it was.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>
#include <vector>

#include "core/json_reader.hpp"
#include "core/plan.hpp"
#include "core/presets.hpp"
#include "executor/backend.hpp"
#include "executor/io/safetensors.hpp"
#include "executor/mixtral.hpp"
#include "executor/trainer.hpp"
#include "golden_support.hpp"
#include "test_support.hpp"

namespace {

using namespace moetune;
using namespace moetune::executor;
using namespace moetune::test;

double relative(double a, double b) {
  return std::abs(a - b) / std::abs(b);
}

TEST_CASE("the model on the CUDA backend matches Hugging Face within bf16 tolerances",
          "[gpu][golden]") {
  Golden g;
  const Json& batch = g.inputs["input_ids"];
  const auto b = static_cast<std::int64_t>(batch.size());
  const auto s = static_cast<std::int64_t>(batch[0].size());
  std::vector<std::int32_t> ids, targets;
  shifted(batch, ids, targets);

  const std::unique_ptr<Backend> cuda = make_cuda_backend(0);
  MixtralModel model(*cuda, g.model, g.moe(), b, s);
  const std::vector<float> params = g.params(model.layout());
  // fp32 master on the device, and its bf16 working copy that the model reads.
  Buffer master(*cuda, model.layout().numel(), DType::F32);
  Buffer working(*cuda, model.layout().numel(), DType::BF16);
  Buffer grads(*cuda, model.layout().numel(), DType::F32);
  cuda->copy_from_host(master.data(), params.data(), master.bytes());
  cuda->cast(working.data(), DType::BF16, master.data(), DType::F32, master.count());
  cuda->zero(grads.data(), grads.bytes());
  const MicroBatchLoss loss = model.forward(working.data(), ids.data(), targets.data());

  // Routing against the fp32 CPU model on the same weights: a difference means bf16 flipped a
  // near-tie (the tolerances below then do not apply to that token).
  const std::unique_ptr<Backend> cpu = make_cpu_backend();
  MixtralModel cpu_model(*cpu, g.model, g.moe(), b, s);
  cpu_model.forward(params.data(), ids.data(), targets.data());
  CHECK(model.tokens_per_expert() == cpu_model.tokens_per_expert());

  CHECK(normalized_error(model.logits_host(), g.outputs.read_f64("logits")) < 5e-2);
  CHECK(relative(loss.ce, g.outputs.read_f64("ce_loss")[0]) < 2e-2);
  CHECK(relative(loss.aux, g.outputs.read_f64("aux_loss")[0]) < 2e-2);
  CHECK(relative(loss.total(g.moe()), g.outputs.read_f64("loss")[0]) < 2e-2);

  model.backward(working.data(), grads.f32(), 1.0);
  std::vector<float> host(static_cast<std::size_t>(grads.count()));
  cuda->copy_to_host(host.data(), grads.data(), grads.bytes());
  for (const ParamTensor& t : model.layout().tensors()) {
    INFO(t.name);
    const std::vector<double> expected = g.outputs.read_f64("grad." + t.name);
    const std::vector<float> ours(host.begin() + t.offset, host.begin() + t.offset + t.numel);
    // The router's gradient is a difference of nearly equal terms (dw - sum dw w): bf16 loses
    // more of it than of the others.
    const bool router = t.name.find("gate.weight") != std::string::npos;
    CHECK(normalized_error(ours, expected) < (router ? 2e-1 : 1e-1));
  }
}

Plan golden_plan(const Golden& g) {
  const Json& recipe = g.curve["recipe"];
  const Json& batches = g.curve["batches"];
  Plan plan;
  plan.model = g.model;
  plan.cluster = load_cluster("cpu-local", 1, 1);
  plan.train.seq_len = static_cast<std::int64_t>(batches[0][0].size());
  plan.train.global_batch = static_cast<std::int64_t>(batches[0].size());
  plan.train.precision = Precision::Bf16;
  plan.train.moe = g.moe();
  OptimizerSpec& o = plan.train.optimizer;
  o.lr = recipe["lr"].get<double>();
  o.min_lr = recipe["min_lr"].get<double>();
  o.warmup_steps = recipe["warmup_steps"].get<std::int64_t>();
  o.decay_steps = recipe["decay_steps"].get<std::int64_t>();
  o.beta1 = recipe["betas"][0].get<double>();
  o.beta2 = recipe["betas"][1].get<double>();
  o.eps = recipe["eps"].get<double>();
  o.weight_decay = recipe["weight_decay"].get<double>();
  o.grad_clip = recipe["grad_clip"].get<double>();
  plan.layout.micro_batch = plan.train.global_batch;
  return plan;
}

TEST_CASE("the trainer on the CUDA backend tracks the Hugging Face loss curve", "[gpu][golden]") {
  Golden g;
  const Plan plan = golden_plan(g);
  const Json& batches = g.curve["batches"];
  TrainOptions options;
  options.steps = g.curve["recipe"]["steps"].get<std::int64_t>();
  options.init_from = kGolden / "model.safetensors";
  options.batch_source = [&](std::int64_t step, std::int64_t, std::int32_t* ids,
                             std::int32_t* targets) {
    std::vector<std::int32_t> i, t;
    shifted(batches[static_cast<std::size_t>(step)], i, t);
    std::copy(i.begin(), i.end(), ids);
    std::copy(t.begin(), t.end(), targets);
  };
  const std::unique_ptr<Backend> cuda = make_cuda_backend(0);
  Trainer trainer(plan, options, nullptr, cuda.get());
  std::vector<StepRecord> records;
  trainer.run([&](const StepRecord& r) { records.push_back(r); });
  REQUIRE(records.size() == 10);
  for (std::size_t s = 0; s < records.size(); ++s) {
    const Json& ref = g.curve["steps"][s];
    INFO("step " << s);
    CHECK(std::abs(records[s].lr - ref["lr"].get<double>()) < 1e-12);  // the same schedule
    // Ten updates at lr 1e-2 from bf16 gradients: the curve stays within a few percent.
    CHECK(relative(records[s].loss, ref["ce_loss"].get<double>()) < 5e-2);
    CHECK(relative(records[s].aux_loss, ref["aux_loss"].get<double>()) < 5e-2);
    CHECK(relative(records[s].grad_norm, ref["grad_norm"].get<double>()) < 1e-1);
    CHECK(records[s].phases_s.count("experts") == 1);
  }
}

TEST_CASE("200 steps on the CUDA backend track the CPU backend's loss curve", "[gpu][curve]") {
  Plan plan;
  plan.model = load_model("tiny");
  plan.cluster = load_cluster("cpu-local", 1, 1);
  plan.train.seq_len = 64;
  plan.train.global_batch = 8;
  plan.train.optimizer.lr = 3e-3;
  plan.train.optimizer.min_lr = 3e-4;
  plan.train.optimizer.warmup_steps = 20;
  plan.train.optimizer.decay_steps = 200;
  plan.layout.micro_batch = 4;  // two micro-batches: gradient accumulation too
  const std::int64_t steps = 200;
  TrainOptions options;
  options.steps = steps;  // the built-in synthetic corpus, the same for both
  plan.train.precision = Precision::Fp32;
  std::vector<double> cpu_loss;
  Trainer(plan, options).run([&](const StepRecord& r) { cpu_loss.push_back(r.loss); });
  plan.train.precision = Precision::Bf16;  // the CUDA backend trains bf16 plans
  const std::unique_ptr<Backend> cuda = make_cuda_backend(0);
  std::vector<double> gpu_loss;
  // The same seeded initialisation and data: only the arithmetic differs.
  Trainer(plan, options, nullptr, cuda.get()).run([&](const StepRecord& r) {
    gpu_loss.push_back(r.loss);
  });
  REQUIRE(cpu_loss.size() == std::size_t(steps));
  REQUIRE(gpu_loss.size() == std::size_t(steps));
  auto mean = [](const std::vector<double>& v, std::size_t from, std::size_t to) {
    return std::accumulate(v.begin() + long(from), v.begin() + long(to), 0.0) / double(to - from);
  };
  // Both learn (the corpus is a Markov chain well below log V), and by the same amount: the
  // windowed means agree within 8% all along the curve. bf16 forward noise moves a 20-step mean
  // by a few percent; a wrong gradient term stalls or diverges the curve (tens of percent).
  CHECK(mean(gpu_loss, 180, 200) < 0.8 * mean(gpu_loss, 0, 10));
  for (std::size_t w = 0; w < 200; w += 20) {
    INFO("steps " << w << ".." << w + 20 << ": cpu " << mean(cpu_loss, w, w + 20) << " gpu "
                  << mean(gpu_loss, w, w + 20));
    CHECK(relative(mean(gpu_loss, w, w + 20), mean(cpu_loss, w, w + 20)) < 8e-2);
  }
}

TEST_CASE("the CUDA backend refuses what it cannot run with one line", "[gpu]") {
  Golden g;
  Plan plan = golden_plan(g);
  const std::unique_ptr<Backend> cuda = make_cuda_backend(0);
  TrainOptions options;
  options.steps = 1;
  plan.train.precision = Precision::Fp32;
  REQUIRE_THROWS_WITH(Trainer(plan, options, nullptr, cuda.get()), Catch::Contains("bf16"));
  plan.train.precision = Precision::Bf16;
  plan.layout.optimizer_offload = true;
  REQUIRE_THROWS_WITH(Trainer(plan, options, nullptr, cuda.get()),
                      Catch::Contains("does not offload"));
}

}  // namespace
