// `moetune calibrate`, `profile` and `tune` end to end on one CPU rank: calibrate a real run and
// use the written profile with --cluster; refuse a foreign run log; tune stops on its budget and
// still writes the best plan it has, and without a budget squeeze measures and picks a winner.
#include <catch2/catch.hpp>

#include "cli_support.hpp"
#include "core/plan.hpp"
#include "core/presets.hpp"

using namespace moetune;
using moetune::test::TempDir;

namespace {

TEST_CASE("cli: calibrate fits a real run and writes a profile --cluster accepts",
          "[cli][calibrate]") {
  TempDir dir;
  const std::string metrics = (dir / "run.jsonl").string();
  REQUIRE(run_moetune({"train", "--model", "tiny", "--seq", "16", "--global-batch", "4", "--steps",
                       "4", "--quiet", "--metrics", metrics})
              .status == 0);
  const std::string profile = (dir / "calibrated.json").string();
  const Result cal = run_moetune({"calibrate", "--runs", metrics, "--out", profile});
  INFO("stderr: " << cal.err);
  REQUIRE(cal.status == 0);
  CHECK_THAT(cal.out, Catch::Contains("device.gemm_efficiency"));
  CHECK_THAT(cal.out, Catch::Contains("expert skew"));
  const ClusterSpec c = load_cluster(profile, std::nullopt, std::nullopt);
  REQUIRE(c.calibration.has_value());
  CHECK(c.calibration->runs == std::vector<std::string>{metrics});
  CHECK(c.calibration->expert_skew.has_value());
  const Result sim = run_moetune({"simulate", "--model", "tiny", "--cluster", profile, "--nodes",
                                  "1", "--seq", "16", "--global-batch", "4", "--micro-batch", "4"});
  INFO("stderr: " << sim.err);
  CHECK(sim.status == 0);
}

TEST_CASE("cli: calibrate refuses a foreign or corrupted run log", "[cli][calibrate][errors]") {
  TempDir dir;
  const std::string plan = (dir / "plan.json").string();
  REQUIRE(run_moetune({"plan", "--model", "tiny", "--cluster", "cpu-local", "--nodes", "1", "--seq",
                       "16", "--global-batch", "4", "--out", plan})
              .status == 0);
  check_one_error_line(run_moetune({"calibrate", "--runs", plan}), "run log");
  const auto broken = dir.write("broken.jsonl", "{\"type\": \"header\", \"schema_version\": 1}\n");
  check_one_error_line(run_moetune({"calibrate", "--runs", broken.string()}), "broken.jsonl:1");
  // The GPU profile replaces a GPU cluster's device figures: a CPU base is refused (anywhere,
  // with or without a GPU).
  check_one_error_line(run_moetune({"profile", "--backend", "cuda", "--base", "cpu-local"}),
                       "needs --base a GPU cluster");
}

const std::vector<std::string> kTune = {
    "tune", "--model", "tiny", "--cluster",      "cpu-local", "--nodes", "1", "--devices-per-node",
    "1",    "--seq",   "16",   "--global-batch", "4",         "--steps", "3"};

TEST_CASE("cli: tune stops on its budget and still writes the best plan", "[cli][tune]") {
  TempDir dir;
  // A 1.2 s budget and a first trial of 20,000 steps (about a minute): the trial is stopped at
  // the deadline, nothing is measured, and the plan is the simulator's top pick.
  std::vector<std::string> args = kTune;
  args.back() = "20000";  // --steps
  const Result r =
      run_moetune(with(args, {"--budget-minutes", "0.02", "--out", dir.path().string()}));
  INFO("stdout: " << r.out << "\nstderr: " << r.err);
  REQUIRE(r.status == 0);
  CHECK_THAT(r.out, Catch::Contains("budget is spent"));
  const Plan plan = read_plan_file(dir / "plan.json");
  CHECK(plan.model.name == "tiny");
  const Json report = read_json_file(dir / "report.json");
  CHECK(report["stopped"] == "budget");
  CHECK(report["winner_measured"] == false);
  REQUIRE(report["trials"].size() == 1);
  CHECK(report["trials"][0]["failure"] == "stopped by the budget");
  // Not a timing threshold: a guard that the trial was really stopped rather than run to its end.
  CHECK(report["elapsed_s"].get<double>() < 30.0);
}

TEST_CASE("cli: tune measures, calibrates, re-ranks and picks a measured winner", "[cli][tune]") {
  TempDir dir;
  const Result r = run_moetune(with(kTune, {"--trials", "2", "--rounds", "2", "--budget-minutes",
                                            "5", "--out", dir.path().string()}));
  INFO("stdout: " << r.out << "\nstderr: " << r.err);
  REQUIRE(r.status == 0);
  const Json report = read_json_file(dir / "report.json");
  CHECK(report["winner_measured"] == true);
  REQUIRE(report["trials"].size() >= 2);
  for (const auto& t : report["trials"]) {
    CHECK(t["measured_step_time_s"].get<double>() > 0);
    // Each trial says how busy other processes kept the machine during the run it counts, and
    // how many runs it took (a disturbed run is repeated up to --attempts, default 2).
    CHECK(t["other_cores_busy"].get<double>() >= 0);
    CHECK(t["runs"].get<std::int64_t>() >= 1);
    CHECK(t["runs"].get<std::int64_t>() <= 2);
  }
  CHECK(report.contains("kendall_tau_final"));
  const Plan plan = read_plan_file(dir / "plan.json");
  REQUIRE(plan.cluster.calibration.has_value());  // planned on the calibrated profile
  CHECK(read_plan_file(dir / "plan.json").layout.world_size() == 1);
}

}  // namespace

namespace {

TEST_CASE("cli: profile measures this machine into a cluster profile", "[cli][profile]") {
  TempDir dir;
  const std::string out = (dir / "profile.json").string();
  const Result r = run_moetune({"profile", "--out", out});
  INFO("stdout: " << r.out << "\nstderr: " << r.err);
  REQUIRE(r.status == 0);
  CHECK_THAT(r.out, Catch::Contains("all_to_all"));
  const ClusterSpec c = load_cluster(out, std::nullopt, std::nullopt);
  const ClusterSpec preset = load_cluster("cpu-local", std::nullopt, std::nullopt);
  CHECK(c.name == preset.name);
  CHECK(c.device.gemm_efficiency > 0);
  CHECK(c.device.memory_bandwidth_GBps > 0);
  CHECK(c.device.node_contention >= 0);
  CHECK(c.device.optimizer_efficiency > 0);
  CHECK_THAT(c.device.sources.at("optimizer_efficiency"), Catch::Contains("AdamW"));
  CHECK_THAT(c.device.sources.at("node_contention"), Catch::Contains("threads at once"));
  CHECK_THAT(c.device.sources.at("memory_bandwidth_GBps"), Catch::Contains("moetune profile"));
  CHECK_THAT(c.sources.at("intra_node.latency_us"), Catch::Contains("MPI ranks"));
  CHECK(c.intra_node.bandwidth_GBps > 0);
}

TEST_CASE("cli: calibrate reads every rank of a two-rank run once", "[cli][calibrate]") {
  TempDir dir;
  const std::string plan = (dir / "plan.json").string();
  REQUIRE(run_moetune({"plan", "--model", "tiny", "--cluster", "cpu-local", "--nodes", "1", "--seq",
                       "16", "--global-batch", "4", "--ep", "2", "--hs", "1", "--micro-batch", "2",
                       "--out", plan})
              .status == 0);
  const std::string metrics = (dir / "run.jsonl").string();
  const Result run = run_moetune(
      {"launch", "--plan", plan, "--", "--steps", "4", "--quiet", "--metrics", metrics});
  INFO("stderr: " << run.err);
  REQUIRE(run.status == 0);
  // Naming the rank file too must not count the run twice.
  const Result cal = run_moetune({"calibrate", "--runs", metrics, metrics + ".rank1"});
  INFO("stdout: " << cal.out << "\nstderr: " << cal.err);
  REQUIRE(cal.status == 0);
  CHECK_THAT(cal.out, Catch::Contains("on 1 run(s)"));
  CHECK_THAT(cal.out, Catch::Contains("2 rank(s) (2 log(s) read)"));
}

}  // namespace
