// Multi-rank training on one GPU (label `gpu`): 2 and 4 in-process ranks, each a thread with its
// own CUDA backend and stream on GPU 0, talking through the in-process communicator over device
// memory — tensor parallelism, expert parallelism with both token dispatchers, hybrid sharding,
// the distributed optimizer and full recompute — each against the one-rank CUDA run with the
// same micro-batches (tests/executor/equivalence_support.hpp's plans, in bf16).
//
// Tolerances: every layout sums in another order, and in bf16 (8-bit mantissa) that moves a loss
// by a few tenths of a percent per step; 2e-2 relative over 5 steps still catches a missing or
// doubled term (which moves it by O(1) or stalls learning). Weights: AdamW moves each by at most
// lr = 3e-3 a step whatever the gradient's size, so where bf16 flips the sign of a tiny gradient
// the layouts part by up to 2 lr per step on that element: the whole tensor's relative L2
// difference stays below 0.1, while a wrong gradient shifts every element.
#include <catch2/catch.hpp>

#include <cmath>
#include <map>
#include <memory>
#include <vector>

#include "executor/comm/inproc_communicator.hpp"
#include "executor/equivalence_support.hpp"

namespace {

using namespace moetune;
using namespace moetune::executor;
using namespace moetune::test;

Plan gpu_plan(std::int64_t w, std::int64_t tp, std::int64_t ep, std::int64_t hs) {
  Plan plan = tiny_plan(w, 4 / (w / tp));
  plan.train.precision = Precision::Bf16;
  plan.layout.tp = tp;
  plan.layout.ep = ep;
  plan.layout.hs = hs;
  plan.layout.rep = w / (tp * ep * hs);
  return plan;
}

std::vector<RankRun> train_on_one_gpu(const Plan& plan) {
  const int w = static_cast<int>(plan.layout.world_size());
  std::vector<RankRun> runs(static_cast<std::size_t>(w));
  InprocWorld world(w);
  run_inproc_ranks(world, [&](int rank) {
    const std::unique_ptr<Backend> backend = make_cuda_backend(0);
    ProcessGroups groups =
        make_inproc_groups(world, plan.layout, plan.cluster.devices_per_node, rank, backend.get());
    runs[static_cast<std::size_t>(rank)] = train_rank(plan, &groups, backend.get());
  });
  return runs;
}

TEST_CASE("2- and 4-rank layouts on one GPU give the one-rank run", "[gpu][inproc]") {
  std::vector<Plan> plans;
  plans.push_back(gpu_plan(2, 2, 1, 1));  // tensor (+ sequence) parallel
  plans.push_back(gpu_plan(2, 1, 2, 1));  // expert parallel, all-to-all
  plans.push_back(gpu_plan(2, 1, 1, 2));  // hybrid sharding
  Plan replicas = gpu_plan(2, 1, 1, 1);   // replicas with the distributed optimizer
  replicas.layout.distributed_optimizer = true;
  plans.push_back(replicas);
  Plan recompute = gpu_plan(2, 1, 2, 1);
  recompute.layout.recompute = Recompute::Full;
  plans.push_back(recompute);
  Plan gathered = gpu_plan(2, 1, 2, 1);
  gathered.train.moe.dispatcher = Dispatcher::AllGather;
  plans.push_back(gathered);
  plans.push_back(gpu_plan(4, 2, 2, 1));  // tp x ep
  Plan sharded = gpu_plan(4, 1, 2, 2);    // ep x hs with the distributed optimizer over ep
  sharded.layout.distributed_optimizer = true;
  plans.push_back(sharded);

  std::map<std::int64_t, std::vector<double>> reference_losses;
  std::map<std::int64_t, std::map<std::string, std::vector<float>>> reference_weights;
  for (const Plan& plan : plans) {
    const std::int64_t mb = plan.layout.micro_batch;
    if (reference_losses.count(mb) == 0) {
      Plan one = tiny_plan(1, mb);
      one.train.precision = Precision::Bf16;
      const std::unique_ptr<Backend> backend = make_cuda_backend(0);
      const RankRun run = train_rank(one, nullptr, backend.get());
      reference_losses[mb] = run.losses;
      reference_weights[mb] = run.weights;
    }
    const std::vector<RankRun> runs = train_on_one_gpu(plan);
    for (std::size_t rank = 0; rank < runs.size(); ++rank) {
      INFO(describe_plan(plan) << ", rank " << rank);
      const RankRun& run = runs[rank];
      REQUIRE(run.losses.size() == reference_losses[mb].size());
      for (std::size_t s = 0; s < run.losses.size(); ++s) {
        const double ref = reference_losses[mb][s];
        CHECK(std::abs(run.losses[s] - ref) <= 2e-2 * ref);
      }
      for (const ParamTensor& t : run.layout->tensors()) {
        const std::vector<float>& values = run.weights.at(t.name);
        std::vector<float> ref(values.size());
        run.layout->take_block(t, reference_weights[mb].at(t.name).data(), ref.data());
        double diff = 0, norm = 0;
        for (std::size_t i = 0; i < values.size(); ++i) {
          diff += (double(values[i]) - ref[i]) * (double(values[i]) - ref[i]);
          norm += double(ref[i]) * ref[i];
        }
        INFO(t.name);
        CHECK(std::sqrt(diff) <= 0.1 * std::sqrt(norm));
      }
    }
  }
}

}  // namespace
