// Plans made by the planner: plan.json round trip with the simulator's own prediction, and the
// Megatron-LM and SMP v2 exports (flags present, what SMP cannot express refused with InputError).
#include <catch2/catch.hpp>

#include <string>

#include "core/error.hpp"
#include "core/presets.hpp"
#include "planner/export.hpp"
#include "planner/planner.hpp"
#include "test_support.hpp"

using namespace moetune;
using Catch::Contains;

namespace {

// Mixtral 8x7B on 2 p4d nodes (16 A100s), seq 2048, global batch 128.
Plan mixtral_plan(std::int64_t tp, std::int64_t ep, std::int64_t hs, std::int64_t pp = 1,
                  const std::string& order = "tp,ep,hs,rep,pp") {
  TrainSpec train;
  train.seq_len = 2048;
  train.global_batch = 128;
  Layout l;
  l.tp = tp;
  l.ep = ep;
  l.hs = hs;
  l.pp = pp;
  l.rep = 16 / (tp * ep * hs * pp);
  l.order = parse_order(order);
  return planner::make_plan(load_model("mixtral-8x7b"),
                            load_cluster("p4d.24xlarge", 2, std::nullopt), train, l);
}

// The value after `flag` on its line of the Megatron argument list ("--flag value \").
bool has_arg(const std::string& text, const std::string& flag, const std::string& value) {
  return text.find(flag + " " + value + " \\\n") != std::string::npos ||
         text.find(flag + " " + value + "\n") != std::string::npos;
}

}  // namespace

TEST_CASE("a planned plan round-trips through plan.json with its prediction",
          "[planner][plan][json]") {
  Plan plan = mixtral_plan(1, 2, 8, 1, "tp,hs,ep");
  plan.layout.optimizer_offload = true;
  plan.layout.recompute = Recompute::Full;
  plan = planner::make_plan(plan.model, plan.cluster, plan.train, plan.layout);
  REQUIRE(plan.prediction.has_value());
  CHECK(plan.prediction->step_time_s > 0);
  CHECK(plan.prediction->peak_memory_bytes > 0);

  moetune::test::TempDir dir;
  write_plan_file(dir / "plan.json", plan);
  const Plan back = read_plan_file(dir / "plan.json");
  CHECK(back == plan);
  CHECK(*back.prediction == *plan.prediction);
  CHECK(to_json(back).dump() == to_json(plan).dump());
  // Simulating the read-back plan gives the stored prediction: the plan carries every input.
  CHECK(planner::make_plan(back.model, back.cluster, back.train, back.layout).prediction ==
        plan.prediction);
}

TEST_CASE("Megatron-LM export of an ep=2 plan", "[planner][export]") {
  const Plan plan = mixtral_plan(1, 2, 8);
  const planner::Export e = planner::export_megatron(plan);
  const std::string& t = e.text;
  CAPTURE(t);
  CHECK(has_arg(t, "--expert-model-parallel-size", "2"));
  CHECK(has_arg(t, "--tensor-model-parallel-size", "1"));
  CHECK(has_arg(t, "--expert-tensor-parallel-size", "1"));
  CHECK(has_arg(t, "--pipeline-model-parallel-size", "1"));
  CHECK(has_arg(t, "--num-layers", "32"));
  CHECK(has_arg(t, "--hidden-size", "4096"));
  CHECK(has_arg(t, "--ffn-hidden-size", "14336"));
  CHECK(has_arg(t, "--num-attention-heads", "32"));
  CHECK(has_arg(t, "--num-query-groups", "8"));
  CHECK(has_arg(t, "--num-experts", "8"));
  CHECK(has_arg(t, "--moe-router-topk", "2"));
  CHECK(has_arg(t, "--seq-length", "2048"));
  CHECK(has_arg(t, "--micro-batch-size", "1"));
  CHECK(has_arg(t, "--global-batch-size", "128"));
  CHECK(has_arg(t, "--vocab-size", "32000"));
  CHECK_THAT(t, Contains("--bf16") && Contains("--swiglu") &&
                    Contains("--untie-embeddings-and-output-weights") &&
                    Contains("--use-distributed-optimizer"));
  // hs = 8 of dp = ep*hs*rep = 16: two optimizer instances.
  CHECK(has_arg(t, "--num-distributed-optimizer-instances", "2"));
  CHECK_THAT(t, !Contains("--sequence-parallel"));
  // The default order is Megatron's own; the only note is about FSDP vs distributed optimizer.
  REQUIRE(e.notes.size() == 1);
  CHECK_THAT(e.notes[0], Contains("hs=8"));
}

TEST_CASE("Megatron-LM and SMP exports of a plan with the distributed optimizer",
          "[planner][export]") {
  Plan plan = mixtral_plan(1, 2, 1);  // rep 8
  plan.layout.distributed_optimizer = true;
  const planner::Export megatron = planner::export_megatron(plan);
  CAPTURE(megatron.text);
  // One optimizer instance sharded over all data-parallel ranks: Megatron's default.
  CHECK_THAT(megatron.text, Contains("--use-distributed-optimizer"));
  CHECK_THAT(megatron.text, !Contains("--num-distributed-optimizer-instances"));
  CHECK(megatron.notes.empty());
  const planner::Export smp = planner::export_smp(plan);
  REQUIRE(smp.notes.size() == 1);
  CHECK_THAT(smp.notes[0], Contains("distributed optimizer"));
  plan.layout.distributed_optimizer = false;
  CHECK_THAT(planner::export_megatron(plan).text, !Contains("--use-distributed-optimizer"));
}

TEST_CASE("Megatron-LM export: tp, pp, recompute and a mesh order it cannot express",
          "[planner][export]") {
  SECTION("tp=2 turns on sequence parallelism") {
    const planner::Export e = planner::export_megatron(mixtral_plan(2, 2, 4));
    CHECK(has_arg(e.text, "--tensor-model-parallel-size", "2"));
    CHECK(has_arg(e.text, "--expert-tensor-parallel-size", "2"));
    CHECK_THAT(e.text, Contains("--sequence-parallel"));
  }
  SECTION("pp=2") {
    const planner::Export e = planner::export_megatron(mixtral_plan(1, 1, 8, 2));
    CHECK(has_arg(e.text, "--pipeline-model-parallel-size", "2"));
  }
  SECTION("order tp, hs, ep is noted") {
    const planner::Export e = planner::export_megatron(mixtral_plan(1, 2, 8, 1, "tp,hs,ep"));
    bool noted = false;
    for (const auto& n : e.notes)
      noted = noted || n.find("mesh order tp,hs,ep") != std::string::npos;
    CHECK(noted);
  }
  SECTION("full recompute") {
    Plan plan = mixtral_plan(1, 2, 8);
    plan.layout.recompute = Recompute::Full;
    const planner::Export e = planner::export_megatron(plan);
    CHECK(has_arg(e.text, "--recompute-granularity", "full"));
  }
}

TEST_CASE("SMP v2 export of ep=2 hs=8", "[planner][export]") {
  const planner::Export e = planner::export_smp(mixtral_plan(1, 2, 8));
  const Json j = parse_json_text(e.text, "smp");
  CHECK(j.at("expert_parallel_degree") == 2);
  CHECK(j.at("hybrid_shard_degree") == 8);
  CHECK(j.at("tensor_parallel_degree") == 1);
  CHECK(j.at("context_parallel_degree") == 1);
  CHECK(j.at("random_seed") == 1234);
  CHECK(e.notes.empty());
}

TEST_CASE("SMP v2 refuses what it cannot express", "[planner][export]") {
  SECTION("expert parallelism together with tensor parallelism") {
    const Plan plan = mixtral_plan(2, 2, 4);
    CHECK_THROWS_AS(planner::export_smp(plan), InputError);
    CHECK_THROWS_WITH(planner::export_smp(plan), Contains("ep=2") && Contains("tp=2"));
  }
  SECTION("pipeline parallelism") {
    const Plan plan = mixtral_plan(1, 1, 8, 2);
    CHECK_THROWS_AS(planner::export_smp(plan), InputError);
    CHECK_THROWS_WITH(planner::export_smp(plan), Contains("pp=2"));
  }
  SECTION("optimizer offload") {
    Plan plan = mixtral_plan(1, 2, 8);
    plan.layout.optimizer_offload = true;
    CHECK_THROWS_WITH(planner::export_smp(plan), Contains("optimizer offloading"));
  }
  SECTION("tp without ep is fine") {
    CHECK_NOTHROW(planner::export_smp(mixtral_plan(2, 1, 8)));
  }
}

TEST_CASE("Megatron-LM export writes the rotary base of a 1e4-base model as an integer",
          "[planner][export]") {
  // tiny's rope_theta is 10000: six significant digits are enough, and Megatron parses an int.
  TrainSpec train;
  train.seq_len = 16;
  train.global_batch = 8;
  train.precision = Precision::Fp32;
  Layout l;
  l.hs = 2;
  const Plan plan =
      planner::make_plan(load_model("tiny"), load_cluster("cpu-local", 1, 2), train, l);
  CHECK(has_arg(planner::export_megatron(plan).text, "--rotary-base", "10000"));
}

// Megatron declares --rotary-base with type=int; argparse refuses "1e+06".
TEST_CASE("Megatron-LM export writes Mixtral's rotary base 1e6 as an integer",
          "[planner][export]") {
  const planner::Export e = planner::export_megatron(mixtral_plan(1, 2, 8));
  CAPTURE(e.text);
  CHECK(has_arg(e.text, "--rotary-base", "1000000"));
}

// Regression: values that are not whole once went out with the stream's default 6 significant
// digits, silently changing hyperparameters that have more.
TEST_CASE("Megatron-LM export keeps every digit of the learning rate", "[planner][export]") {
  Plan plan = mixtral_plan(1, 2, 8);
  plan.train.optimizer.lr = 1.2345678e-4;
  const planner::Export e = planner::export_megatron(plan);
  CAPTURE(e.text);
  CHECK(has_arg(e.text, "--lr", "0.00012345678"));
}

TEST_CASE("Megatron-LM export of uneven pipeline stages", "[planner][export]") {
  TrainSpec train;
  train.seq_len = 4096;
  train.global_batch = 1024;
  train.precision = Precision::Fp8;
  Layout l;
  l.pp = 8;
  l.vpp = 2;
  l.ep = 8;
  l.first_stage_layers = 12;
  l.last_stage_layers = 10;
  const Plan plan = planner::make_plan(load_model("qwen3-235b-a22b"),
                                       load_cluster("dgx-b200", 8, std::nullopt), train, l);
  const std::string t = planner::export_megatron(plan).text;
  CAPTURE(t);
  CHECK(has_arg(t, "--decoder-first-pipeline-num-layers", "12"));
  CHECK(has_arg(t, "--decoder-last-pipeline-num-layers", "10"));
  CHECK(has_arg(t, "--num-virtual-stages-per-pipeline-rank", "2"));
  CHECK_THAT(t, !Contains("--num-layers-per-virtual-pipeline-stage"));
}
