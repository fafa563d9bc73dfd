// `moetune calibrate`: fits a cluster profile's efficiencies, bandwidths and latencies, and the
// expert-popularity skew, to measured run.jsonl files; prints predicted vs measured per phase
// before and after and the fitted values with their standard errors; writes the profile.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "cli/calibrate_report.hpp"
#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "core/error.hpp"
#include "core/presets.hpp"
#include "simulator/calibration.hpp"

namespace moetune::cli {

namespace {

struct CalibrateOptions {
  std::vector<std::string> runs;
  std::string base;
  std::string out;
  std::vector<std::string> params;
  std::int64_t skip_steps = 1;
  double huber_delta = 0.1;
  double phase_weight = 0.5;
  bool quiet = false;
  bool check = false;
};

void run(const CalibrateOptions& o) {
  std::vector<std::filesystem::path> files(o.runs.begin(), o.runs.end());
  const std::vector<simulator::Measurement> runs =
      simulator::load_measurements(files, o.skip_steps);
  ClusterSpec base;
  if (!o.base.empty()) {
    base = load_cluster(o.base, std::nullopt, std::nullopt);
  } else {
    base = runs.front().plan.cluster;
  }
  for (const auto& m : runs) {
    if (m.plan.cluster.device.kind != base.device.kind) {
      throw InputError(m.source + ": ran on a " + to_string(m.plan.cluster.device.kind) +
                       " cluster, but the profile describes a " + to_string(base.device.kind) +
                       " device; calibrate runs of one machine kind together");
    }
  }
  if (o.check) {
    print_comparison(base, runs);
    return;
  }
  simulator::FitOptions fit;
  fit.parameters = o.params;
  fit.huber_delta = o.huber_delta;
  fit.phase_weight = o.phase_weight;
  const simulator::FitResult result = simulator::calibrate(base, runs, fit);
  print_calibration(base, runs, result, !o.quiet);
  if (!o.out.empty()) {
    ClusterSpec out = result.profile;
    out.sources["calibration"] = "Fitted by `moetune calibrate` to " + std::to_string(runs.size()) +
                                 " run(s); see the "
                                 "calibration block for values, standard errors and runs.";
    write_file_atomically(o.out, to_json(out).dump(2) + "\n");
    std::printf("wrote %s (use it with --cluster %s)\n", o.out.c_str(), o.out.c_str());
  }
}

}  // namespace

void register_calibrate(CLI::App& app) {
  auto o = std::make_shared<CalibrateOptions>();
  CLI::App* cmd = app.add_subcommand(
      "calibrate", "fit a cluster profile to measured run.jsonl files (moetune train --metrics)");
  cmd->add_option("--runs", o->runs, "run.jsonl files (rank files FILE.rankN are read with FILE)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--base", o->base,
                  "cluster profile to start from (preset or JSON; default: the first run's)");
  cmd->add_option("--out", o->out, "write the calibrated cluster profile (JSON) here");
  cmd->add_option("--params", o->params, "parameters to fit (default: every one the runs identify)")
      ->delimiter(',');
  cmd->add_option("--skip-steps", o->skip_steps, "warm-up steps left out of each run")
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{1} << 30))
      ->capture_default_str();
  cmd->add_option("--huber", o->huber_delta,
                  "log-ratio beyond which a residual is an outlier (Huber loss)")
      ->check(CLI::Range(1e-4, 10.0))
      ->capture_default_str();
  cmd->add_option("--phase-weight", o->phase_weight,
                  "weight of each phase's residual relative to the step time's (0: step time only)")
      ->check(CLI::Range(0.0, 100.0))
      ->capture_default_str();
  cmd->add_flag("--quiet", o->quiet, "only the fitted values, no per-run tables");
  cmd->add_flag("--check", o->check,
                "fit nothing: print the profile's predictions beside the measurements");
  cmd->callback([o] { run(*o); });
}

}  // namespace moetune::cli
