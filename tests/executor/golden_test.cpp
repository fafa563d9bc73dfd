// The whole Mixtral model against Hugging Face transformers (scripts/make_golden.py): the same fp32
// weights, run in float64 by transformers with its float32 casts patched out. Our model computes in
// fp32, so every comparison allows fp32 rounding accumulated over the network, and no more.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/json_reader.hpp"
#include "core/plan.hpp"
#include "core/presets.hpp"
#include "executor/io/safetensors.hpp"
#include "executor/mixtral.hpp"
#include "executor/trainer.hpp"
#include "golden_support.hpp"
#include "kernels/cpu/cross_entropy.hpp"
#include "test_support.hpp"

namespace {

using namespace moetune;
using namespace moetune::executor;
using namespace moetune::test;

TEST_CASE("Mixtral forward and backward match Hugging Face transformers", "[executor][golden]") {
  Golden g;
  REQUIRE(g.model.num_hidden_layers == 2);
  REQUIRE(g.model.num_key_value_heads < g.model.num_attention_heads);
  const Json& batch = g.inputs["input_ids"];
  const std::unique_ptr<Backend> cpu = make_cpu_backend();
  MixtralModel model(*cpu, g.model, g.moe(), static_cast<std::int64_t>(batch.size()),
                     static_cast<std::int64_t>(batch[0].size()));
  const std::vector<float> params = g.params(model.layout());
  std::vector<std::int32_t> ids, targets;
  shifted(batch, ids, targets);

  const MicroBatchLoss loss = model.forward(params.data(), ids.data(), targets.data());
  // fp32 against float64: a few ulps of fp32 (6e-8) accumulated through two layers, attention
  // and the LM head stay well below 1e-5 of the tensor's scale.
  CHECK(normalized_error(model.logits_host(), g.outputs.read_f64("logits")) < 1e-5);
  const double ce = g.outputs.read_f64("ce_loss")[0];
  const double aux = g.outputs.read_f64("aux_loss")[0];
  const double total = g.outputs.read_f64("loss")[0];
  CHECK(std::abs(loss.ce - ce) / ce < 1e-5);
  CHECK(std::abs(loss.aux - aux) / aux < 1e-5);
  CHECK(std::abs(loss.total(g.moe()) - total) / total < 1e-5);

  std::vector<float> grads(params.size(), 0.0f);
  model.backward(params.data(), grads.data(), 1.0);
  // Gradients pass through the softmax-weighted routing and the backward GEMMs: 1e-4 of each
  // tensor's scale leaves room for fp32 cancellation in the small gradients of the router.
  for (const ParamTensor& t : model.layout().tensors()) {
    INFO(t.name);
    const std::vector<double> expected = g.outputs.read_f64("grad." + t.name);
    std::vector<float> ours(grads.begin() + t.offset, grads.begin() + t.offset + t.numel);
    CHECK(normalized_error(ours, expected) < 1e-4);
  }
}

TEST_CASE("Ten AdamW steps track the Hugging Face loss curve", "[executor][golden]") {
  Golden g;
  const Json& recipe = g.curve["recipe"];
  const Json& batches = g.curve["batches"];
  Plan plan;
  plan.model = g.model;
  plan.cluster = load_cluster("cpu-local", 1, 1);
  plan.train.seq_len = static_cast<std::int64_t>(batches[0][0].size());
  plan.train.global_batch = static_cast<std::int64_t>(batches[0].size());
  plan.train.precision = Precision::Fp32;
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

  TrainOptions options;
  options.steps = recipe["steps"].get<std::int64_t>();
  options.init_from = kGolden / "model.safetensors";
  options.batch_source = [&](std::int64_t step, std::int64_t, std::int32_t* ids,
                             std::int32_t* targets) {
    std::vector<std::int32_t> i, t;
    shifted(batches[static_cast<std::size_t>(step)], i, t);
    std::copy(i.begin(), i.end(), ids);
    std::copy(t.begin(), t.end(), targets);
  };
  Trainer trainer(plan, options);
  std::vector<StepRecord> records;
  trainer.run([&](const StepRecord& r) { records.push_back(r); });
  REQUIRE(records.size() == 10);
  // Ten fp32 updates against float64 ones: Adam divides by sqrt(v), which magnifies the fp32
  // error of small gradients a little each step; 1e-4 relative on the loss still catches any
  // wrong term in the update, the schedule or the clipping (each moves the curve by > 1e-3).
  for (std::size_t s = 0; s < records.size(); ++s) {
    const Json& ref = g.curve["steps"][s];
    INFO("step " << s);
    CHECK(std::abs(records[s].lr - ref["lr"].get<double>()) < 1e-12);
    CHECK(std::abs(records[s].loss - ref["ce_loss"].get<double>()) / ref["ce_loss"].get<double>() <
          1e-4);
    CHECK(std::abs(records[s].aux_loss - ref["aux_loss"].get<double>()) /
              ref["aux_loss"].get<double>() <
          1e-4);
    CHECK(std::abs(records[s].grad_norm - ref["grad_norm"].get<double>()) /
              ref["grad_norm"].get<double>() <
          1e-4);
  }
}

}  // namespace
