// The op graph of one micro-batch and its schedule: hand-computed makespans, periodic extension,
// overlap that never slows a step, and the layout intuitions the model must reproduce.
#include <catch2/catch.hpp>

#include <map>

#include <algorithm>

#include "core/presets.hpp"
#include "simulator/simulator.hpp"
#include "simulator/step_builder.hpp"

namespace {

using namespace moetune;
using namespace moetune::simulator;

StageCosts plain_layer() {
  StageCosts c;
  c.layers = 1;
  c.layer.attention = 4;
  c.layer.router = 1;
  c.layer.permute = 0.5;
  c.layer.experts = 6;
  c.backward_factor = 2;
  return c;
}

double end_of(const std::vector<TimelineOp>& ops) {
  double end = 0;
  for (const auto& op : ops)
    end = std::max(end, op.end_s);
  return end;
}

TEST_CASE("one layer without communication is a chain", "[simulator][step]") {
  StepBuilder b;
  StageCosts c = plain_layer();
  // Forward: attention 4 + router 1 + permute 0.5 + experts 6 + unpermute 0.5 = 12.
  // Backward: unpermute 0.5 + experts 2*6 + permute 0.5 + router 2*1 + attention 2*4 = 23.
  const MicroBatchSchedule s = b.micro_batch(c);
  CHECK(s.forward_s == Approx(12.0));
  CHECK(s.makespan_s == Approx(35.0));
  CHECK(s.compute_s[kPhaseExperts] == Approx(18.0));
  SECTION("an LM head and embedding on the stage add their time") {
    c.head = 3;         // forward and backward together
    c.embedding = 1.5;  // split 1 : 2 between forward and backward
    CHECK(b.micro_batch(c).makespan_s == Approx(35.0 + 3 + 1.5));
  }
  SECTION("full recompute runs the forward again before the backward") {
    c.recompute = true;
    const MicroBatchSchedule r = b.micro_batch(c);
    CHECK(r.makespan_s == Approx(35.0 + 12.0));
    CHECK(r.compute_s[kPhaseRecompute] == Approx(12.0));
  }
}

TEST_CASE("all-to-all sits on the critical path", "[simulator][step]") {
  StepBuilder b;
  StageCosts c = plain_layer();
  c.layer.a2a = 2;  // dispatch and combine, forward and backward: 4 of them
  const MicroBatchSchedule s = b.micro_batch(c);
  CHECK(s.makespan_s == Approx(35.0 + 4 * 2));
  CHECK(s.exposed_s[kPhaseDispatch] + s.exposed_s[kPhaseCombine] == Approx(8.0));
}

TEST_CASE("FSDP gathers hide behind compute when they are shorter", "[simulator][step]") {
  StepBuilder b;
  StageCosts c = plain_layer();
  c.layers = 8;
  c.layer.fsdp_gather = 3;   // per layer, shorter than the 12 s of forward compute
  c.layer.fsdp_scatter = 3;  // per layer, shorter than the 23 s of backward compute
  const MicroBatchSchedule s = b.micro_batch(c);
  // Layer 0's forward gather waits (3 s); the last layer's backward gather starts when its forward
  // ends and waits 3 - 0.5 s (the unpermute backward needs no weights); every other gather and
  // scatter hides, except the first layer's reduce-scatter, which ends the micro-batch:
  // 3 + 2.5 + 8 * 35 + 3.
  CHECK(s.makespan_s == Approx(3.0 + 2.5 + 8 * 35.0 + 3.0));
  SECTION("longer gathers are exposed") {
    c.layer.fsdp_gather = 20;  // longer than a layer's forward (12 s) and backward (23 s)
    const MicroBatchSchedule slow = b.micro_batch(c);
    CHECK(slow.makespan_s > s.makespan_s);
    CHECK(slow.exposed_s[kPhaseAllGather] > 0);
  }
}

TEST_CASE("the periodic extension equals scheduling every layer", "[simulator][step]") {
  StepBuilder b;
  for (double gather : {0.0, 3.0, 20.0}) {
    for (double a2a : {0.0, 1.5}) {
      for (bool recompute : {false, true}) {
        StageCosts c = plain_layer();
        c.layers = 12;
        c.layer.fsdp_gather = gather;
        c.layer.fsdp_scatter = gather / 2;
        c.layer.a2a = a2a;
        c.layer.tp_gather = 0.25;
        c.layer.tp_scatter = 0.25;
        c.recompute = recompute;
        c.head = 2;
        c.embedding = 1;
        INFO("gather " << gather << " a2a " << a2a << " recompute " << recompute);
        CHECK(b.micro_batch(c).makespan_s == Approx(end_of(b.timeline(c))).epsilon(1e-12));
      }
    }
  }
}

TEST_CASE("sequence parallelism gathers each norm output again in backward, overlapped",
          "[simulator][step]") {
  // Megatron's (and the CPU executor's) sequence parallelism keeps a norm output as this rank's
  // chunk and all-gathers it again for the weight gradients that read it: the router's and
  // q, k, v's. Two such gathers per layer, on the overlapping stream, hidden while the compute
  // they run beside is longer.
  StepBuilder b;
  StageCosts c = plain_layer();
  c.layers = 4;
  c.layer.tp_gather = 0.25;
  c.layer.tp_scatter = 0.25;
  std::map<std::int32_t, int> regathers;
  const std::vector<TimelineOp> ops = b.timeline(c);
  for (const TimelineOp& op : ops) {
    if (!op.backward || op.phase != "all_gather" || op.stream != "comm") continue;
    ++regathers[op.layer];
    // Short against the compute: it runs entirely while a compute op runs.
    const bool hidden = std::any_of(ops.begin(), ops.end(), [&](const TimelineOp& other) {
      return other.stream == "compute" && other.start_s <= op.start_s && other.end_s >= op.end_s;
    });
    CHECK(hidden);
  }
  REQUIRE(regathers.size() == 4);
  for (const auto& [layer, count] : regathers)
    CHECK(count == 2);
}

TEST_CASE("overlap never makes a step slower than running every op in turn", "[simulator][step]") {
  StepBuilder b;
  StageCosts c = plain_layer();
  c.layers = 6;
  c.layer.fsdp_gather = 5;
  c.layer.fsdp_scatter = 5;
  c.layer.a2a = 1;
  c.layer.tp_gather = 0.5;
  c.layer.tp_scatter = 0.5;
  double serial = 0;
  for (const auto& op : b.timeline(c))
    serial += op.end_s - op.start_s;
  CHECK(b.micro_batch(c).makespan_s <= serial);
}

TEST_CASE("sharding inside a node beats sharding across nodes when all-to-all is small",
          "[simulator][step]") {
  // The SageMaker blog's intuition for a medium model: with short sequences the all-to-all is
  // small, so the parameter all-gathers should stay on NVLink and the all-to-all cross nodes.
  const ModelSpec model = load_model("mixtral-8x7b");
  const ClusterSpec cluster = load_cluster("p4de.24xlarge", 2, std::nullopt);
  TrainSpec train;
  train.seq_len = 512;
  train.global_batch = 64;
  const Simulator sim(model, cluster, train);
  Layout shard_inside;
  shard_inside.ep = 2;
  shard_inside.hs = 8;
  shard_inside.micro_batch = 1;
  shard_inside.recompute = Recompute::Full;
  shard_inside.order = parse_order("tp,hs,ep,rep,pp");
  Layout shard_across = shard_inside;
  shard_across.order = parse_order("tp,ep,hs,rep,pp");
  const Prediction inside = sim.predict(shard_inside);
  const Prediction across = sim.predict(shard_across);
  CHECK(inside.step_time_s < across.step_time_s);
  CHECK(inside.peak_memory_bytes == across.peak_memory_bytes);  // the order moves no bytes
}

}  // namespace
