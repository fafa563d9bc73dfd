// `moetune train` and `moetune data` end to end: a short run writes run.jsonl and a checkpoint;
// bad plans, data and checkpoints give one line and exit status 2 and leave earlier files alone.
#include <catch2/catch.hpp>

#include <stdlib.h>

#include <fstream>

#include "cli_support.hpp"
#include "core/run_log.hpp"

using namespace moetune;
using moetune::test::TempDir;

namespace {

const std::vector<std::string> kTinyTrain = {"train", "--model",        "tiny", "--seq",
                                             "16",    "--global-batch", "4",    "--quiet"};

TEST_CASE("cli: train writes run.jsonl, checkpoints and resumes", "[cli][train]") {
  TempDir dir;
  const std::string metrics = (dir / "run.jsonl").string();
  const std::string ckpt = (dir / "ckpt").string();
  const Result first = run_moetune(
      with(kTinyTrain, {"--steps", "3", "--metrics", metrics, "--checkpoint-dir", ckpt}));
  INFO("stderr: " << first.err);
  REQUIRE(first.status == 0);
  CHECK_THAT(first.out, Catch::Contains("trained tiny"));
  const RunLog log = read_run_log(metrics);
  CHECK(log.steps.size() == 3);
  CHECK(log.header.backend == "cpu");
  CHECK(log.steps.back().phases_s.count("experts") == 1);
  const Result resumed = run_moetune(with(
      kTinyTrain, {"--steps", "5", "--metrics", metrics, "--checkpoint-dir", ckpt, "--resume"}));
  REQUIRE(resumed.status == 0);
  CHECK_THAT(resumed.out, Catch::Contains("steps 4-5"));
}

TEST_CASE("cli: train refuses bad plans and data with one line", "[cli][train][errors]") {
  TempDir dir;
  SECTION("a plan with pipeline stages") {
    const std::string plan = (dir / "plan.json").string();
    REQUIRE(run_moetune({"plan", "--model", "tiny", "--cluster", "cpu-local", "--nodes", "1",
                         "--devices-per-node", "2", "--seq", "16", "--global-batch", "8", "--pp",
                         "2", "--out", plan})
                .status == 0);
    const std::string metrics = (dir / "run.jsonl").string();
    dir.write("run.jsonl", "keep me\n");
    check_one_error_line(run_moetune({"train", "--plan", plan, "--metrics", metrics}), "pp = 1");
    CHECK(test::read_text(metrics) == "keep me\n");  // nothing overwritten
  }
  SECTION("the CUDA backend refuses, before looking for a GPU, what it does not do") {
    const std::string plan = (dir / "plan.json").string();
    REQUIRE(run_moetune({"plan", "--model", "tiny", "--cluster", "cpu-local", "--nodes", "1",
                         "--devices-per-node", "1", "--seq", "16", "--global-batch", "8", "--out",
                         plan})
                .status == 0);
    // Checkpoints are CPU-only so far, and a cpu-local plan is an fp32 plan (a build without the
    // CUDA backend says that instead; each is one line naming the CUDA backend).
    check_one_error_line(run_moetune({"train", "--plan", plan, "--steps", "1", "--backend", "cuda",
                                      "--checkpoint-dir", (dir / "ckpt").string()}),
                         "CUDA backend");
    check_one_error_line(
        run_moetune({"train", "--plan", plan, "--steps", "1", "--backend", "cuda"}),
        "CUDA backend");
  }
  SECTION("a plan with forced balanced routing, which only the simulator models") {
    const std::string plan = (dir / "plan.json").string();
    REQUIRE(run_moetune({"plan", "--model", "tiny", "--cluster", "cpu-local", "--nodes", "1",
                         "--devices-per-node", "1", "--seq", "16", "--global-batch", "8",
                         "--force-balanced", "--out", plan})
                .status == 0);
    check_one_error_line(run_moetune({"train", "--plan", plan, "--steps", "1"}),
                         "forces balanced routing");
  }
  SECTION("a token file for another vocabulary") {
    const std::string data = (dir / "data.bin").string();
    REQUIRE(run_moetune({"data", "synth", "--vocab", "1000", "--tokens", "5000", "--out", data})
                .status == 0);
    check_one_error_line(run_moetune(with(kTinyTrain, {"--data", data})), "vocabulary 1000");
  }
  SECTION("a file that is not a token file") {
    const auto data = dir.write("data.bin", "definitely not tokens");
    check_one_error_line(run_moetune(with(kTinyTrain, {"--data", data.string()})));
  }
  SECTION("a corrupted checkpoint") {
    const std::string ckpt = (dir / "ckpt").string();
    REQUIRE(run_moetune(with(kTinyTrain, {"--steps", "1", "--checkpoint-dir", ckpt})).status == 0);
    const auto tensors = dir / "ckpt" / "step-00000001" / "tensors.safetensors";
    {
      std::fstream f(tensors, std::ios::in | std::ios::out | std::ios::binary);
      f.seekp(-5, std::ios::end);
      f.put('\x7f');
    }
    check_one_error_line(
        run_moetune(with(kTinyTrain, {"--steps", "2", "--checkpoint-dir", ckpt, "--resume"})),
        "checksum");
  }
  SECTION("neither a plan nor a model") {
    check_one_error_line(run_moetune({"train", "--steps", "1"}), "--plan");
  }
}

}  // namespace

namespace {

// A plan for two CPU ranks: expert parallel over both.
std::string two_rank_plan(const TempDir& dir) {
  const std::string plan = (dir / "plan.json").string();
  REQUIRE(run_moetune({"plan", "--model", "tiny", "--cluster", "cpu-local", "--nodes", "1",
                       "--devices-per-node", "2", "--seq", "16", "--global-batch", "8", "--ep", "2",
                       "--hs", "1", "--out", plan})
              .status == 0);
  return plan;
}

TEST_CASE("cli: launch runs a plan on its ranks and writes quoted commands", "[cli][launch]") {
  TempDir dir;
  const std::string plan = two_rank_plan(dir);
  SECTION("local dry run names mpirun, the ranks and the train arguments") {
    const Result r = run_moetune(
        {"launch", "--plan", plan, "--dry-run", "--", "--steps", "3", "--metrics", "a b.jsonl"});
    REQUIRE(r.status == 0);
    CHECK_THAT(r.out, Catch::StartsWith("mpirun -np 2"));
    CHECK_THAT(r.out, Catch::Contains("train --plan"));
    CHECK_THAT(r.out, Catch::Contains("--steps 3 --metrics 'a b.jsonl'"));
  }
  SECTION("slurm writes an sbatch script with every argument quoted") {
    const std::string script = (dir / "job.sbatch").string();
    const Result r = run_moetune({"launch", "--plan", plan, "--launcher", "slurm", "--script",
                                  script, "--dry-run", "--", "--data", "it's; rm -rf x.bin"});
    REQUIRE(r.status == 0);
    const std::string text = test::read_text(script);
    CHECK_THAT(text, Catch::Contains("#SBATCH --nodes=1"));
    CHECK_THAT(text, Catch::Contains("#SBATCH --ntasks-per-node=2"));
    CHECK_THAT(text, Catch::Contains("--data 'it'\\''s; rm -rf x.bin'"));
  }
  SECTION("mpirun without a hostfile is refused") {
    check_one_error_line(run_moetune({"launch", "--plan", plan, "--launcher", "mpirun"}),
                         "--hostfile");
  }
  SECTION("a local launch trains on both ranks") {
    const Result r = run_moetune({"launch", "--plan", plan, "--", "--steps", "2", "--quiet"});
    INFO("stderr: " << r.err);
    REQUIRE(r.status == 0);
    CHECK_THAT(r.out, Catch::Contains("2 ranks"));
  }
}

}  // namespace

namespace {

std::vector<double> losses_of(const std::string& metrics) {
  std::vector<double> out;
  for (const StepRecord& s : read_run_log(metrics).steps)
    out.push_back(s.loss);
  return out;
}

TEST_CASE("cli: a rank killed mid-run stops the job, and resuming reproduces the losses",
          "[cli][launch][faults]") {
  TempDir dir;
  const std::string plan = two_rank_plan(dir);
  const std::string straight = (dir / "straight.jsonl").string();
  REQUIRE(run_moetune(
              {"launch", "--plan", plan, "--", "--steps", "10", "--quiet", "--metrics", straight})
              .status == 0);
  const std::string ckpt = (dir / "ckpt").string();
  // Rank 1 kills itself (SIGKILL) as it starts step 8, after the checkpoint of step 5.
  ::setenv("MOETUNE_FAULT_KILL", "1:7", 1);
  const Result killed = run_moetune({"launch", "--plan", plan, "--", "--steps", "10", "--quiet",
                                     "--checkpoint-dir", ckpt, "--checkpoint-every", "5"});
  ::unsetenv("MOETUNE_FAULT_KILL");
  INFO("stderr: " << killed.err);
  CHECK(killed.status != 0);  // returned at all: no hang (ctest's timeout would catch one)
  CHECK_THAT(killed.err, Catch::Contains("rank 1") && Catch::Contains("signal 9"));
  const std::string resumed = (dir / "resumed.jsonl").string();
  const Result again = run_moetune({"launch", "--plan", plan, "--", "--steps", "10", "--quiet",
                                    "--checkpoint-dir", ckpt, "--resume", "--metrics", resumed});
  REQUIRE(again.status == 0);
  CHECK_THAT(again.out, Catch::Contains("steps 6-10"));
  const std::vector<double> a = losses_of(straight), b = losses_of(resumed);
  REQUIRE(a.size() == 10);
  REQUIRE(b.size() == 5);
  for (std::size_t i = 0; i < 5; ++i)
    CHECK(b[i] == a[5 + i]);  // bit-identical
}

}  // namespace
