// The executor's activation memory against the simulator's activation model: on one rank, where
// the experts see exactly top-k copies of every token, the bytes the trained model holds (as
// run.jsonl reports them) are the bytes the memory model predicts, for each model, sequence,
// micro-batch, router and z-loss setting below. Both count the same buffers: what each layer
// keeps for its backward, one layer's forward scratch and backward gradients, the LM head's
// inputs and logits, and RoPE's tables.
#include <catch2/catch.hpp>

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
    INFO(s.model << " seq " << s.seq << " micro-batch " << s.micro_batch << " z-loss " << s.z_loss);
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
