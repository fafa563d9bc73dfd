// Training behaviour of the CPU executor: learning on the synthetic corpus, exact resume, gradient
// accumulation, token dropping, and the refusal of what it cannot run.
#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>
#include <numeric>

#include "core/error.hpp"
#include "core/presets.hpp"
#include "executor/io/checkpoint.hpp"
#include "executor/io/token_file.hpp"
#include "executor/trainer.hpp"
#include "test_support.hpp"

namespace {

using namespace moetune;
using namespace moetune::executor;

Plan tiny_plan(std::int64_t seq, std::int64_t batch, std::int64_t micro_batch) {
  Plan plan;
  plan.model = load_model("tiny");
  plan.cluster = load_cluster("cpu-local", 1, 1);
  plan.train.seq_len = seq;
  plan.train.global_batch = batch;
  plan.train.precision = Precision::Fp32;
  plan.train.moe.aux_loss_coef = 0.02;
  plan.train.optimizer.lr = 3e-3;
  plan.train.optimizer.min_lr = 3e-4;
  plan.train.optimizer.warmup_steps = 5;
  plan.train.optimizer.decay_steps = 60;
  plan.layout.micro_batch = micro_batch;
  return plan;
}

std::vector<StepRecord> train(const Plan& plan, TrainOptions options) {
  Trainer trainer(plan, options);
  std::vector<StepRecord> out;
  trainer.run([&](const StepRecord& r) { out.push_back(r); });
  return out;
}

TEST_CASE("Training on the synthetic corpus lowers the loss", "[executor][training]") {
  TrainOptions options;
  options.steps = 60;
  const auto records = train(tiny_plan(64, 8, 8), options);
  REQUIRE(records.size() == 60);
  // An untrained model predicts about uniformly: ln 512 = 6.24. The corpus's Markov steps carry
  // about 1.69 nats, so a model that learns the bigrams gets far below the start; 1.5 nats of drop
  // in 60 steps is a bound with margin (runs with this seed reach about 2 nats of drop).
  CHECK(std::abs(records.front().loss - std::log(512.0)) < 0.3);
  double tail = 0;
  for (std::size_t i = records.size() - 5; i < records.size(); ++i)
    tail += records[i].loss / 5;
  CHECK(tail < records.front().loss - 1.5);
  for (const auto& r : records) {
    REQUIRE(std::isfinite(r.loss));
    REQUIRE(r.tokens_per_expert.size() == 2);
    // Every (token, slot) pair lands on one expert: top-2 of 8 * 64 tokens per layer.
    CHECK(std::accumulate(r.tokens_per_expert[0].begin(), r.tokens_per_expert[0].end(),
                          std::int64_t{0}) == 2 * 8 * 64);
  }
}

TEST_CASE("Resume continues bit-identically", "[executor][checkpoint]") {
  test::TempDir dir;
  const Plan plan = tiny_plan(32, 4, 2);
  TrainOptions straight;
  straight.steps = 20;
  Trainer a(plan, straight);
  std::vector<double> losses_a;
  a.run([&](const StepRecord& r) { losses_a.push_back(r.loss); });

  TrainOptions first = straight;
  first.steps = 10;
  first.checkpoint_dir = dir.path();
  std::vector<double> losses_b;
  {
    Trainer b(plan, first);
    b.run([&](const StepRecord& r) { losses_b.push_back(r.loss); });
  }
  TrainOptions second = first;
  second.steps = 20;
  second.resume = true;
  Trainer c(plan, second);
  REQUIRE(c.step() == 10);
  c.run([&](const StepRecord& r) { losses_b.push_back(r.loss); });
  REQUIRE(losses_b.size() == 20);
  for (std::size_t i = 0; i < 20; ++i)
    CHECK(losses_a[i] == losses_b[i]);  // bit-identical
  CHECK(a.params() == c.params());
}

TEST_CASE("A checkpoint resumes in another layout (re-sharded)", "[executor][checkpoint]") {
  // Micro-batches of 2 and of 4 train the same function without the load-balancing loss (see the
  // next test), so a run that changes its layout at a checkpoint follows the straight run.
  test::TempDir dir;
  Plan small_mb = tiny_plan(32, 4, 2), big_mb = tiny_plan(32, 4, 4);
  small_mb.train.moe.aux_loss_coef = big_mb.train.moe.aux_loss_coef = 0;
  TrainOptions straight;
  straight.steps = 6;
  std::vector<double> a, b;
  Trainer(small_mb, straight).run([&](const StepRecord& r) { a.push_back(r.loss); });
  TrainOptions first = straight;
  first.steps = 3;
  first.checkpoint_dir = dir.path();
  Trainer(small_mb, first).run([&](const StepRecord& r) { b.push_back(r.loss); });
  TrainOptions second = first;
  second.steps = 6;
  second.resume = true;
  Trainer resumed(big_mb, second);
  REQUIRE(resumed.step() == 3);
  resumed.run([&](const StepRecord& r) { b.push_back(r.loss); });
  REQUIRE(b.size() == a.size());
  for (std::size_t i = 0; i < a.size(); ++i)
    CHECK(std::abs(a[i] - b[i]) < 1e-5 * a[i]);
}

TEST_CASE("Gradient accumulation equals one big micro-batch", "[executor][training]") {
  TrainOptions options;
  options.steps = 3;
  // The load-balancing loss is a product of means over a micro-batch's tokens, so it differs
  // between one batch and its pieces by definition (as in Megatron and transformers); without it
  // the two runs optimise the same function.
  Plan whole_plan = tiny_plan(32, 8, 8), split_plan = tiny_plan(32, 8, 2);
  whole_plan.train.moe.aux_loss_coef = split_plan.train.moe.aux_loss_coef = 0;
  const auto whole = train(whole_plan, options);
  const auto split = train(split_plan, options);
  for (std::size_t i = 0; i < whole.size(); ++i) {
    // Same tokens, same updates; only the fp32 summation order of the gradients differs.
    CHECK(std::abs(whole[i].loss - split[i].loss) < 1e-5 * whole[i].loss);
    CHECK(std::abs(whole[i].grad_norm - split[i].grad_norm) < 1e-4 * whole[i].grad_norm);
  }
}

TEST_CASE("A capacity factor drops tokens beyond each expert's capacity", "[executor][moe]") {
  Plan plan = tiny_plan(32, 4, 4);
  plan.train.moe.capacity_factor = 0.5;
  TrainOptions options;
  options.steps = 1;
  const auto records = train(plan, options);
  // Capacity ceil(128 * 2 / 4 * 0.5) = 32 rows per expert of 256 slots per layer: at most 128 of
  // 256 kept in each of the 2 layers.
  CHECK(records[0].dropped_tokens >= 2 * 128);
}

TEST_CASE("Sinkhorn routing trains too", "[executor][moe]") {
  Plan plan = tiny_plan(32, 4, 4);
  plan.train.moe.load_balancing = LoadBalancing::Sinkhorn;
  TrainOptions options;
  options.steps = 5;
  const auto records = train(plan, options);
  CHECK(records.back().loss < records.front().loss);
  CHECK(records.back().aux_loss == 0.0);
}

TEST_CASE("The executor refuses what it cannot run", "[executor][errors]") {
  TrainOptions options;
  options.steps = 1;
  SECTION("pipeline stages") {
    Plan plan = tiny_plan(32, 4, 2);
    plan.layout.pp = 2;
    plan.cluster.devices_per_node = 2;
    REQUIRE_THROWS_WITH(Trainer(plan, options), Catch::Contains("pp = 1"));
  }
  SECTION("a GPU plan") {
    Plan plan = tiny_plan(32, 4, 2);
    plan.cluster = load_cluster("p4d.24xlarge", 1, 1);
    plan.train.precision = Precision::Bf16;
    REQUIRE_THROWS_AS(Trainer(plan, options), InputError);
  }
  SECTION("a token file for another vocabulary") {
    test::TempDir dir;
    std::vector<std::uint32_t> tokens(1000, 7);
    write_token_file(dir / "data.bin", tokens, 1000);
    options.data = dir / "data.bin";
    REQUIRE_THROWS_WITH(Trainer(tiny_plan(32, 4, 2), options),
                        Catch::Contains("vocabulary 1000") && Catch::Contains("512"));
  }
  SECTION("a corrupted checkpoint") {
    test::TempDir dir;
    TrainOptions save = options;
    save.checkpoint_dir = dir.path();
    Trainer(tiny_plan(32, 4, 2), save).run();
    const auto ckpt = *latest_checkpoint(dir.path());
    {
      std::fstream f(ckpt / kCheckpointTensors, std::ios::in | std::ios::out | std::ios::binary);
      f.seekp(-3, std::ios::end);
      f.put('\x5a');
    }
    TrainOptions resume = save;
    resume.steps = 2;
    resume.resume = true;
    REQUIRE_THROWS_WITH(Trainer(tiny_plan(32, 4, 2), resume), Catch::Contains("checksum"));
  }
  SECTION("a checkpoint of another training setup") {
    test::TempDir dir;
    TrainOptions save = options;
    save.checkpoint_dir = dir.path();
    Trainer(tiny_plan(32, 4, 2), save).run();
    TrainOptions resume = save;
    resume.steps = 2;
    resume.resume = true;
    Plan other = tiny_plan(32, 4, 2);
    other.train.optimizer.lr *= 2;
    REQUIRE_THROWS_WITH(Trainer(other, resume), Catch::Contains("another model or training setup"));
  }
}

}  // namespace
