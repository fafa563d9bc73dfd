// The executor's activation memory against the simulator's activation model: on one rank, where
// the experts see exactly top-k copies of every token, the bytes the trained model holds (as
// run.jsonl reports them) are the bytes the memory model predicts, for each model, sequence,
// micro-batch, router and z-loss setting below. Both count the same buffers: what each layer
// keeps for its backward, one layer's forward scratch and backward gradients, the LM head's
// inputs and logits, and RoPE's tables.
#include <catch2/catch.hpp>

#include <utility>
#include <vector>

#include "core/presets.hpp"
#include "executor/trainer.hpp"
#include "simulator/simulator.hpp"

namespace {

using namespace moetune;
using namespace moetune::executor;

struct Setup {
  const char* model;
  std::int64_t seq, global_batch, micro_batch;
  double z_loss;
  LoadBalancing balancing;
};

TEST_CASE("one-rank activation bytes are what the simulator predicts", "[executor][memory]") {
  const Setup setups[] = {
      {"tiny", 16, 8, 4, 0.001, LoadBalancing::AuxLoss},
      {"tiny", 32, 4, 2, 0.0, LoadBalancing::AuxLoss},
      {"mini", 16, 4, 2, 0.0, LoadBalancing::Sinkhorn},
      {"mini", 24, 3, 3, 0.01, LoadBalancing::AuxLoss},
  };
  const Recompute recompute = GENERATE(Recompute::None, Recompute::Full);
  for (const Setup& s : setups) {
    Plan plan;
    plan.model = load_model(s.model);
    plan.cluster = load_cluster("cpu-local", 1, 1);
    plan.train.seq_len = s.seq;
    plan.train.global_batch = s.global_batch;
    plan.train.precision = Precision::Fp32;
    plan.train.moe.load_balancing = s.balancing;
    plan.train.moe.aux_loss_coef = s.balancing == LoadBalancing::AuxLoss ? 0.02 : 0.0;
    plan.train.moe.z_loss_coef = s.z_loss;
    plan.layout.micro_batch = s.micro_batch;
    // Full recompute: every layer's input, and one layer's buffers while its backward runs.
    plan.layout.recompute = recompute;
    INFO(s.model << " seq " << s.seq << " micro-batch " << s.micro_batch << " z-loss " << s.z_loss
                 << " recompute " << to_string(recompute));
    TrainOptions options;
    options.steps = 1;
    Trainer trainer(plan, options);
    double measured = 0;
    trainer.run([&](const StepRecord& r) {
      REQUIRE(r.memory);
      measured = r.memory->activations_bytes;
    });
    const MemoryBreakdown predicted =
        simulator::Simulator(plan.model, plan.cluster, plan.train).memory(plan.layout, nullptr);
    // Whole numbers of bytes far below 2^53: exact in double on both sides.
    CHECK(measured == predicted.activations);
  }
}

}  // namespace

TEST_CASE("full recompute trains the same model as keeping every activation", "[executor]") {
  // The recomputed forward repeats the first one exactly (same inputs, parameters and routing),
  // so losses, routing statistics and weights are bit-identical, with less activation memory.
  auto train = [](Recompute recompute, double* activations) {
    Plan plan;
    plan.model = load_model("tiny");
    plan.cluster = load_cluster("cpu-local", 1, 1);
    plan.train.seq_len = 16;
    plan.train.global_batch = 8;
    plan.train.precision = Precision::Fp32;
    plan.train.moe.aux_loss_coef = 0.02;
    plan.train.moe.z_loss_coef = 0.001;
    plan.train.moe.capacity_factor = 1.0;  // some tokens dropped: counted once, not twice
    plan.train.optimizer.lr = 3e-3;
    plan.layout.micro_batch = 4;
    plan.layout.recompute = recompute;
    TrainOptions options;
    options.steps = 4;
    Trainer trainer(plan, options);
    std::vector<StepRecord> records;
    trainer.run([&](const StepRecord& r) { records.push_back(r); });
    *activations = records.back().memory->activations_bytes;
    return std::make_pair(records, trainer.params());
  };
  double kept = 0, recomputed = 0;
  const auto [plain, plain_weights] = train(Recompute::None, &kept);
  const auto [redo, redo_weights] = train(Recompute::Full, &recomputed);
  REQUIRE(plain.size() == redo.size());
  for (std::size_t i = 0; i < plain.size(); ++i) {
    CHECK(redo[i].loss == plain[i].loss);
    CHECK(redo[i].aux_loss == plain[i].aux_loss);
    CHECK(redo[i].z_loss == plain[i].z_loss);
    CHECK(redo[i].grad_norm == plain[i].grad_norm);
    CHECK(redo[i].dropped_tokens == plain[i].dropped_tokens);
    CHECK(redo[i].tokens_per_expert == plain[i].tokens_per_expert);
    // The recompute pass is timed as its own phase.
    CHECK(redo[i].phases_s.count("recompute") == 1);
    CHECK(plain[i].phases_s.count("recompute") == 0);
  }
  CHECK(redo_weights == plain_weights);
  CHECK(recomputed < kept);
}
