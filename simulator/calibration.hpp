// Calibration: fits a cluster profile's hardware parameters (efficiencies, bandwidths, latencies)
// to measured run.jsonl files by robust nonlinear least squares through the simulator, and measures
// the expert-popularity skew from the runs' expert-load histograms.
//
// The fitted parameters come from a small registry (name, accessors on ClusterSpec, bounds, log or
// linear space): adding a parameter is one entry. The simulator is a black box to the fit: the
// Jacobian is taken by central differences, Levenberg-Marquardt steps with a Huber loss on the log
// ratio predicted / measured (so a 10% error counts alike on a 1 ms and a 1 s phase), and each
// value's standard error comes from the Jacobian at the solution.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/plan.hpp"
#include "core/run_log.hpp"

namespace moetune::simulator {

struct Measurement;

struct CalibrationParameter {
  std::string name;  // "device.gemm_efficiency"
  std::string unit;  // "", "GB/s", "us"
  std::function<double(const ClusterSpec&)> get;
  std::function<void(ClusterSpec&, double)> set;
  double lower = 0, upper = 0;
  bool log_space = true;  // fitted as log(value): for positive scale-like quantities
  // Set for a parameter that acts as a multiplier on the others' effect unless the runs differ in
  // this quantity (the busy devices per node, for node contention): fitted only when at least two
  // runs differ in it, otherwise it would only trade off against the efficiencies.
  std::function<double(const Measurement&)> varies_with = {};
};

// Every parameter calibration may fit, in a fixed order.
const std::vector<CalibrationParameter>& calibration_parameters();
// The entry named `name`; an unknown name is an InputError listing the known ones.
const CalibrationParameter& calibration_parameter(const std::string& name);

// The phases run.jsonl and the simulator both report, compared one by one (a subset of
// time_phase_names(); phase_seconds in core/prediction.hpp reads them).
const std::vector<std::string>& compared_phases();

// One training run summarised for the fit: its fastest step after the warm-up (the slowest rank
// of that step: the simulator predicts the busiest rank) with that step's phases.
struct Measurement {
  std::string source;  // the rank-0 file's name
  Plan plan;
  std::int64_t ranks_read = 0;
  std::int64_t steps_used = 0;
  double step_time_s = 0;         // the fastest step
  double median_step_time_s = 0;  // for reference: the median step
  std::map<std::string, double> phases_s;
  double peak_memory_bytes = 0;
  std::optional<StepMemory> memory;  // the executor's breakdown, busiest rank
  // Expert-popularity coefficient of variation over (step, layer) samples, with the multinomial
  // sampling noise of the finite token count taken out; absent for runs without experts.
  std::optional<double> expert_skew;
  double expert_skew_stderr = 0;
  std::int64_t expert_skew_samples = 0;
};

// Summarises one run from its rank logs (rank 0 first). Skips the first `skip_steps` steps; refuses
// logs with nothing left, or rank logs that disagree on the plan.
Measurement summarise_run(const std::vector<RunLog>& ranks, const std::string& source,
                          std::int64_t skip_steps = 1);
// Reads run.jsonl files; each run's rank files (FILE.rank1, ...) are read with FILE. A rank file
// named on its own beside its rank-0 file is not counted twice.
std::vector<Measurement> load_measurements(const std::vector<std::filesystem::path>& files,
                                           std::int64_t skip_steps = 1);

// The cluster a run is predicted on: `profile` with the run's node count and devices per node.
ClusterSpec cluster_for_run(const ClusterSpec& profile, const Measurement& run);
// The run's plan predicted on `profile` (its calibration's expert skew included).
Prediction predict_run(const ClusterSpec& profile, const Measurement& run);

struct FitOptions {
  // Parameters to fit; empty: every registry entry that these runs can identify.
  std::vector<std::string> parameters;
  double huber_delta = 0.1;   // log-ratio beyond which a residual counts linearly (~10%)
  double phase_weight = 0.5;  // weight of each phase residual relative to the step time's
  int max_iterations = 100;
  bool fit_expert_skew = true;  // measure it from the histograms
};

struct FittedParameter {
  std::string name;
  std::string unit;
  double initial = 0;
  double value = 0;
  double stderr_value = 0;  // NaN when the runs leave no degrees of freedom
  bool identified = true;   // false: the runs do not depend on it; left at its initial value
  bool at_bound = false;
};

struct FitResult {
  ClusterSpec profile;  // the base with the fitted values and its calibration record
  std::vector<FittedParameter> parameters;
  std::optional<double> expert_skew;
  double expert_skew_stderr = 0;
  double cost_before = 0, cost_after = 0;  // robust cost, sum over residuals
  std::int64_t residuals = 0;
  int iterations = 0;
  bool converged = false;
};

// Fits `base` to the runs. `run_names` go into the calibration record (empty: the sources).
FitResult calibrate(const ClusterSpec& base, const std::vector<Measurement>& runs,
                    const FitOptions& options);

// Median over runs of |predicted / measured - 1| for the step time.
double median_step_time_error(const ClusterSpec& profile, const std::vector<Measurement>& runs);

// Kendall's tau-b between two score lists of equal length (1: same order, -1: reversed).
double kendall_tau(const std::vector<double>& a, const std::vector<double>& b);

}  // namespace moetune::simulator
