// Calibration: recovers known hardware parameters from synthetic measurements that the simulator
// itself produced (with noise and one outlier), measures expert skew from histograms of known
// popularity, refuses corrupted or foreign run.jsonl files, and round-trips the calibration block.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include "core/error.hpp"
#include "core/presets.hpp"
#include "simulator/calibration.hpp"
#include "simulator/simulator.hpp"

using namespace moetune;
namespace fs = std::filesystem;

namespace {

Plan cpu_plan(const std::string& model, std::int64_t devices, std::int64_t ep, std::int64_t hs,
              std::int64_t micro_batch, std::int64_t seq, Recompute recompute = Recompute::None) {
  Plan p;
  p.model = load_model(model);
  p.cluster = load_cluster("cpu-local", 1, devices);
  p.train.seq_len = seq;
  p.train.global_batch = 8;
  p.train.precision = Precision::Fp32;
  p.layout.ep = ep;
  p.layout.hs = hs;
  p.layout.rep = devices / (ep * hs);
  p.layout.micro_batch = micro_batch;
  p.layout.recompute = recompute;
  return p;
}

// Runs of several models, layouts and sizes, "measured" on `truth` with multiplicative noise of
// about `noise` (log-normal, fixed seed).
std::vector<simulator::Measurement> synthetic_runs(const ClusterSpec& truth, double noise) {
  std::vector<Plan> plans;
  for (const std::string model : {"tiny", "mini"}) {
    for (std::int64_t seq : {8, 32, 128}) {
      plans.push_back(cpu_plan(model, 1, 1, 1, 2, seq));
      plans.push_back(cpu_plan(model, 1, 1, 1, 8, seq, Recompute::Full));
      plans.push_back(cpu_plan(model, 2, 2, 1, 4, seq));
      plans.push_back(cpu_plan(model, 2, 1, 2, 2, seq));
      plans.push_back(cpu_plan(model, 2, 1, 1, 4, seq));
    }
  }
  std::mt19937 rng(7);
  std::normal_distribution<double> z(0.0, noise);
  std::vector<simulator::Measurement> runs;
  for (const Plan& plan : plans) {
    simulator::Measurement m;
    m.source = "synthetic-" + std::to_string(runs.size()) + ".jsonl";
    m.plan = plan;
    const Prediction p = simulator::predict_run(truth, m);
    m.step_time_s = p.step_time_s * std::exp(z(rng));
    for (const std::string& phase : simulator::compared_phases()) {
      const double s = phase_seconds(p.time, phase).value_or(0.0);
      if (s > 0) m.phases_s[phase] = s * std::exp(z(rng));
    }
    m.steps_used = 4;
    runs.push_back(m);
  }
  return runs;
}

const simulator::FittedParameter& fitted(const simulator::FitResult& r, const std::string& name) {
  for (const auto& p : r.parameters)
    if (p.name == name) return p;
  FAIL("no parameter " << name);
  throw std::logic_error("unreachable");
}

fs::path temp_file(const std::string& name) {
  return fs::temp_directory_path() / ("moetune-calibration-test-" + name);
}

}  // namespace

TEST_CASE("calibration recovers the parameters that generated the measurements", "[calibration]") {
  const ClusterSpec start = load_cluster("cpu-local", 1, 2);
  ClusterSpec truth = start;
  truth.device.gemm_efficiency = 0.31;
  truth.device.attention_efficiency = 0.07;
  truth.device.memory_bound_efficiency = 0.45;
  truth.intra_node.bandwidth_GBps = 2.5;
  truth.intra_node.latency_us = 9.0;
  // The runs have one and two busy ranks per node, so the slowdown two ranks cause each other is
  // seen apart from the efficiencies.
  truth.device.node_contention = 0.6;
  truth.device.optimizer_efficiency = 0.25;

  // 2% noise: each value must come back within 4 standard errors, and the standard errors must
  // be small enough (under 15% of the value, 25% for what only two-rank runs see) for that to
  // mean something.
  std::vector<simulator::Measurement> runs = synthetic_runs(truth, 0.02);
  // One wild run (a node hiccup: 3x slower) that the Huber loss must shrug off.
  runs[3].step_time_s *= 3.0;
  for (auto& [phase, s] : runs[3].phases_s)
    s *= 3.0;

  const simulator::FitResult r = simulator::calibrate(start, runs, {});
  CHECK(r.converged);
  CHECK(r.cost_after < r.cost_before);
  for (const auto& p : r.parameters) {
    const auto& reg = simulator::calibration_parameter(p.name);
    if (p.name.rfind("inter_node.", 0) == 0) {
      // One node: nothing crosses the network, so these cannot be seen and stay as they were.
      CHECK_FALSE(p.identified);
      CHECK(p.value == reg.get(start));
      continue;
    }
    INFO(p.name << ": fitted " << p.value << " ± " << p.stderr_value << ", truth "
                << reg.get(truth));
    REQUIRE(p.identified);
    REQUIRE(std::isfinite(p.stderr_value));
    CHECK(p.stderr_value > 0);
    // The intra-node fabric and node contention are seen only through the two-rank runs, where
    // they trade off against each other: their errors are larger.
    const bool two_rank_only =
        p.name.rfind("intra_node.", 0) == 0 || p.name == "device.node_contention";
    CHECK(p.stderr_value < (two_rank_only ? 0.25 : 0.15) * p.value);
    CHECK(std::abs(p.value - reg.get(truth)) < 4.0 * p.stderr_value);
  }
  // The written profile predicts the clean runs closely.
  const std::vector<simulator::Measurement> clean = synthetic_runs(truth, 0.0);
  CHECK(simulator::median_step_time_error(r.profile, clean) < 0.03);
  REQUIRE(r.profile.calibration.has_value());
  CHECK(r.profile.calibration->runs.size() == runs.size());
}

TEST_CASE("node contention is fitted only when the runs differ in busy devices per node",
          "[calibration]") {
  const ClusterSpec start = load_cluster("cpu-local", 1, 2);
  ClusterSpec truth = start;
  truth.device.node_contention = 0.8;
  std::vector<simulator::Measurement> all = synthetic_runs(truth, 0.0), two_ranks;
  for (const simulator::Measurement& m : all)
    if (m.plan.cluster.devices_per_node == 2) two_ranks.push_back(m);
  REQUIRE(two_ranks.size() < all.size());
  simulator::FitOptions o;
  o.parameters = {"device.gemm_efficiency", "device.attention_efficiency",
                  "device.memory_bound_efficiency", "device.node_contention"};
  // Runs of one and two ranks: the slowdown of two busy ranks comes back.
  CHECK(fitted(simulator::calibrate(start, all, o), "device.node_contention").value ==
        Approx(0.8).epsilon(1e-3));
  // Two-rank runs alone cannot tell contention from lower efficiencies: it is left as it was.
  const simulator::FittedParameter& kept =
      fitted(simulator::calibrate(start, two_ranks, o), "device.node_contention");
  CHECK_FALSE(kept.identified);
  CHECK(kept.value == start.device.node_contention);
}

TEST_CASE("node contention slows every rank of a busy node", "[calibration]") {
  const Plan plan = cpu_plan("mini", 2, 1, 1, 4, 32);
  ClusterSpec contended = plan.cluster;
  contended.device.node_contention = 1.0;  // two busy ranks: each at half its speed alone
  simulator::Measurement m;
  m.plan = plan;
  const Prediction alone = simulator::predict_run(plan.cluster, m);
  const Prediction shared = simulator::predict_run(contended, m);
  // Compute phases take twice as long; the collectives (fitted on their own) do not change.
  for (const std::string phase : {"attention", "experts", "lm_head", "optimizer"}) {
    INFO(phase);
    CHECK(phase_seconds(shared.time, phase).value() ==
          Approx(2.0 * phase_seconds(alone.time, phase).value()).epsilon(1e-9));
  }
  // One rank per node is never slowed.
  simulator::Measurement one;
  one.plan = cpu_plan("mini", 1, 1, 1, 4, 32);
  CHECK(simulator::predict_run(contended, one).step_time_s ==
        simulator::predict_run(plan.cluster, one).step_time_s);
}

TEST_CASE("calibration without noise lands on the truth", "[calibration]") {
  const ClusterSpec start = load_cluster("cpu-local", 1, 2);
  ClusterSpec truth = start;
  truth.device.gemm_efficiency = 0.2;
  truth.intra_node.latency_us = 20.0;
  simulator::FitOptions o;
  o.parameters = {"device.gemm_efficiency", "intra_node.latency_us"};
  const simulator::FitResult r = simulator::calibrate(start, synthetic_runs(truth, 0.0), o);
  CHECK(fitted(r, "device.gemm_efficiency").value == Approx(0.2).epsilon(1e-4));
  CHECK(fitted(r, "intra_node.latency_us").value == Approx(20.0).epsilon(1e-4));
}

TEST_CASE("expert skew is measured from histograms of known popularity", "[calibration]") {
  // tiny's 4 experts with shares 1.4, 0.6, 1.4, 0.6 (popularity CV exactly 0.4), 200 steps of 2
  // layers, 4096 token copies per layer.
  const Plan plan = cpu_plan("tiny", 2, 2, 1, 4, 32);
  const std::int64_t E = plan.model.num_local_experts;
  std::vector<double> share;
  for (std::int64_t e = 0; e < E; ++e)
    share.push_back(e % 2 == 0 ? 1.4 : 0.6);
  std::mt19937 rng(11);
  std::discrete_distribution<int> pick(share.begin(), share.end());
  RunLog log;
  log.header.plan = plan;
  for (int step = 0; step < 201; ++step) {
    StepRecord s;
    s.step = step + 1;
    s.step_time_s = 0.01;
    for (std::int64_t layer = 0; layer < plan.model.num_hidden_layers; ++layer) {
      std::vector<std::int64_t> counts(static_cast<std::size_t>(E), 0);
      for (int i = 0; i < 4096; ++i)
        ++counts[static_cast<std::size_t>(pick(rng))];
      s.tokens_per_expert.push_back(counts);
    }
    log.steps.push_back(s);
  }
  const simulator::Measurement m = simulator::summarise_run({log}, "skew.jsonl");
  REQUIRE(m.expert_skew.has_value());
  INFO("measured " << *m.expert_skew << " ± " << m.expert_skew_stderr);
  CHECK(std::abs(*m.expert_skew - 0.4) < 4.0 * m.expert_skew_stderr + 0.01);
  CHECK(m.steps_used == 200);  // the warm-up step is left out
}

TEST_CASE("corrupted or foreign run.jsonl files are refused with a clear message",
          "[calibration]") {
  // A plan.json is JSON but not a run log.
  const fs::path foreign = temp_file("foreign.jsonl");
  {
    std::ofstream f(foreign);
    f << "{\"schema_version\": 1, \"model\": {}}\n";
  }
  CHECK_THROWS_WITH(simulator::load_measurements({foreign}),
                    Catch::Contains("not a moetune run log"));

  // A valid header followed by a truncated line.
  const fs::path truncated = temp_file("truncated.jsonl");
  RunHeader header;
  header.plan = cpu_plan("tiny", 1, 1, 1, 2, 32);
  header.host = "test";
  header.backend = "cpu";
  header.started_at = "2026-01-01T00:00:00Z";
  StepRecord step;
  step.step = 1;
  step.step_time_s = 0.01;
  {
    RunLogWriter w(truncated, header, false);
    w.write(step);
  }
  {
    std::ofstream f(truncated, std::ios::app);
    f << "{\"type\": \"step\", \"step\": 2, \"loss\": 1.0, \"aux_lo";
  }
  CHECK_THROWS_AS(simulator::load_measurements({truncated}), InputError);
  CHECK_THROWS_WITH(simulator::load_measurements({truncated}), Catch::Contains(":3"));

  // Only the warm-up step: nothing to fit.
  const fs::path short_run = temp_file("short.jsonl");
  {
    RunLogWriter w(short_run, header, false);
    w.write(step);
  }
  CHECK_THROWS_WITH(simulator::load_measurements({short_run}), Catch::Contains("warm-up"));

  // Binary garbage.
  const fs::path garbage = temp_file("garbage.jsonl");
  {
    std::ofstream f(garbage, std::ios::binary);
    f << std::string("\x89PNG\r\n\x1a\n\0\0", 10);
  }
  CHECK_THROWS_AS(simulator::load_measurements({garbage}), InputError);
  for (const auto& p : {foreign, truncated, short_run, garbage})
    fs::remove(p);
}

TEST_CASE("a calibrated cluster profile round-trips through JSON and stays strict",
          "[calibration]") {
  ClusterSpec c = load_cluster("cpu-local", 1, 2);
  CalibrationRecord rec;
  rec.parameters = {{"device.gemm_efficiency", 0.3, 0.01}, {"intra_node.latency_us", 4.0, {}}};
  rec.runs = {"a.jsonl", "b.jsonl"};
  rec.expert_skew = 0.25;
  rec.date = "2026-01-01T00:00:00Z";
  rec.step_time_error_before = 0.4;
  rec.step_time_error_after = 0.05;
  c.calibration = rec;
  const Json j = to_json(c);
  CHECK(cluster_from_json(JsonObjectReader(j, "c"), nullptr) == c);
  Json bad = j;
  bad["calibration"]["fitted_by"] = "someone";
  CHECK_THROWS_WITH(cluster_from_json(JsonObjectReader(bad, "c"), nullptr),
                    Catch::Contains("fitted_by"));
}

TEST_CASE("Kendall's tau", "[calibration]") {
  CHECK(simulator::kendall_tau({1, 2, 3, 4}, {10, 20, 30, 40}) == Approx(1.0));
  CHECK(simulator::kendall_tau({1, 2, 3, 4}, {4, 3, 2, 1}) == Approx(-1.0));
  CHECK(simulator::kendall_tau({1, 2, 3}, {1, 3, 2}) == Approx(1.0 / 3.0));
}
