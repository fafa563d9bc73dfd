// Parallel equivalence on in-process ranks (label `unit`): every layout of 2 and 4 ranks, each
// rank a thread of this process with its own CPU backend, trains the tiny Mixtral 5 steps and
// gives the single-rank losses and weights (tests/executor/equivalence_support.hpp) — the same
// set the MPI test runs, without MPI. The threads only record; the comparisons run here.
#include <catch2/catch.hpp>

#include <memory>
#include <vector>

#include "equivalence_support.hpp"
#include "executor/comm/inproc_communicator.hpp"
#include "kernels/cpu/parallel.hpp"

namespace {

using namespace moetune;
using namespace moetune::executor;
using namespace moetune::test;

// The W ranks of one plan, each its own backend and groups, on W threads.
std::vector<RankRun> train_in_process(const Plan& plan) {
  const int w = static_cast<int>(plan.layout.world_size());
  std::vector<RankRun> runs(static_cast<std::size_t>(w));
  InprocWorld world(w);
  run_inproc_ranks(world, [&](int rank) {
    const std::unique_ptr<Backend> backend = make_cpu_backend();
    ProcessGroups groups =
        make_inproc_groups(world, plan.layout, plan.cluster.devices_per_node, rank, backend.get());
    runs[static_cast<std::size_t>(rank)] = train_rank(plan, &groups, backend.get());
  });
  return runs;
}

TEST_CASE("every layout on in-process ranks gives the single-rank run", "[executor][inproc]") {
  // One kernel thread per rank: the ranks share this machine's cores.
  kernels::cpu::set_kernel_threads(1);
  References references;
  for (const std::int64_t w : {2, 4}) {
    const std::vector<Plan> plans = equivalence_plans(w);
    CHECK(plans.size() == expected_plans(w));
    for (const Plan& plan : plans) {
      const std::vector<RankRun> runs = train_in_process(plan);
      const RankRun& reference = references.get(plan.layout.micro_batch);
      for (std::size_t rank = 0; rank < runs.size(); ++rank) {
        INFO("rank " << rank);
        check_rank(plan, runs[rank], reference);
      }
    }
  }
  kernels::cpu::set_kernel_threads(0);
}

TEST_CASE("a rank that fails stops every in-process rank with its error", "[executor][inproc]") {
  // Rank 1 reads a token file that does not exist; rank 0 must not wait for it forever.
  Plan plan = tiny_plan(2, 2);
  plan.layout.ep = 2;
  InprocWorld world(2);
  REQUIRE_THROWS_WITH(run_inproc_ranks(world,
                                       [&](int rank) {
                                         const std::unique_ptr<Backend> backend =
                                             make_cpu_backend();
                                         ProcessGroups groups = make_inproc_groups(
                                             world, plan.layout, 2, rank, backend.get());
                                         TrainOptions options;
                                         options.steps = 2;
                                         if (rank == 1) options.data = "/nonexistent/tokens.bin";
                                         Trainer(plan, options, &groups, backend.get()).run();
                                       }),
                      Catch::Contains("nonexistent"));
}

}  // namespace
