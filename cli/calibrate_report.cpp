// Calibration report printing.
#include "cli/calibrate_report.hpp"

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "cli/common.hpp"

namespace moetune::cli {

namespace {

std::string ms(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", s * 1e3);
  return buf;
}

std::string value_text(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, std::abs(v) >= 100 ? "%.1f" : "%.4g", v);
  return buf;
}

}  // namespace

std::string short_layout(const Layout& l) {
  char buf[128];
  std::snprintf(
      buf, sizeof buf, "tp=%lld ep=%lld hs=%lld rep=%lld mb=%lld%s%s", static_cast<long long>(l.tp),
      static_cast<long long>(l.ep), static_cast<long long>(l.hs), static_cast<long long>(l.rep),
      static_cast<long long>(l.micro_batch), l.recompute == Recompute::Full ? " recompute" : "",
      l.distributed_optimizer ? " dopt" : "");
  return buf;
}

void print_calibration(const ClusterSpec& base, const std::vector<simulator::Measurement>& runs,
                       const simulator::FitResult& result, bool per_run) {
  std::printf(
      "calibrated %s on %zu run(s), %lld residuals: robust cost %.4g -> %.4g in %d "
      "iteration(s)%s\n",
      base.name.c_str(), runs.size(), static_cast<long long>(result.residuals), result.cost_before,
      result.cost_after, result.iterations, result.converged ? "" : " (iteration limit reached)");
  if (result.expert_skew) {
    std::int64_t samples = 0;
    for (const auto& m : runs)
      samples += m.expert_skew_samples;
    std::printf(
        "expert skew (CV of expert popularity): %.3f ± %.3f from %lld (step, layer) "
        "histograms\n",
        *result.expert_skew, result.expert_skew_stderr, static_cast<long long>(samples));
  }
  std::printf("\n%-32s %12s %12s %12s\n", "parameter", "before", "after", "± stderr");
  for (const auto& p : result.parameters) {
    const std::string name = p.name + (p.unit.empty() ? "" : " (" + p.unit + ")");
    if (!p.identified) {
      std::printf("%-32s %12s %12s   not seen by these runs; kept\n", name.c_str(),
                  value_text(p.initial).c_str(), value_text(p.value).c_str());
      continue;
    }
    std::printf("%-32s %12s %12s %12s%s\n", name.c_str(), value_text(p.initial).c_str(),
                value_text(p.value).c_str(),
                std::isfinite(p.stderr_value) ? value_text(p.stderr_value).c_str() : "n/a",
                p.at_bound ? "  (at its bound)" : "");
  }
  const double before = simulator::median_step_time_error(base, runs);
  const double after = simulator::median_step_time_error(result.profile, runs);
  std::printf(
      "\nstep time, median |predicted/measured - 1| over the runs: %.1f%% before, %.1f%% "
      "after\n",
      100.0 * before, 100.0 * after);
  if (!per_run) return;
  for (const auto& m : runs) {
    const Prediction pb = simulator::predict_run(base, m);
    const Prediction pa = simulator::predict_run(result.profile, m);
    std::printf("\n%s: %s, %lld rank(s) (%lld log(s) read), %lld step(s) used\n", m.source.c_str(),
                short_layout(m.plan.layout).c_str(),
                static_cast<long long>(m.plan.layout.world_size()),
                static_cast<long long>(m.ranks_read), static_cast<long long>(m.steps_used));
    std::printf("  %-10s %10s %10s %10s\n", "ms", "measured", "before", "after");
    std::printf("  %-10s %10s %10s %10s\n", "step", ms(m.step_time_s).c_str(),
                ms(pb.step_time_s).c_str(), ms(pa.step_time_s).c_str());
    for (const std::string& phase : simulator::compared_phases()) {
      const auto it = m.phases_s.find(phase);
      const double measured = it == m.phases_s.end() ? 0.0 : it->second;
      const double b = phase_seconds(pb.time, phase).value_or(0.0);
      const double a = phase_seconds(pa.time, phase).value_or(0.0);
      if (measured == 0 && b == 0 && a == 0) continue;
      std::printf("  %-10s %10s %10s %10s\n", phase.c_str(), ms(measured).c_str(), ms(b).c_str(),
                  ms(a).c_str());
    }
  }
}

void print_comparison(const ClusterSpec& profile, const std::vector<simulator::Measurement>& runs) {
  for (const auto& m : runs) {
    const Prediction p = simulator::predict_run(profile, m);
    std::printf("%s: %s, %lld rank(s), fastest of %lld step(s) after warm-up\n", m.source.c_str(),
                short_layout(m.plan.layout).c_str(),
                static_cast<long long>(m.plan.layout.world_size()),
                static_cast<long long>(m.steps_used));
    std::printf("  %-10s %10s %10s %8s\n", "ms", "measured", "predicted", "error");
    auto row = [](const std::string& name, double measured, double predicted) {
      std::printf("  %-10s %10s %10s %+7.1f%%\n", name.c_str(), ms(measured).c_str(),
                  ms(predicted).c_str(), measured > 0 ? 100.0 * (predicted / measured - 1.0) : 0.0);
    };
    row("step", m.step_time_s, p.step_time_s);
    for (const std::string& phase : simulator::compared_phases()) {
      const auto it = m.phases_s.find(phase);
      const double measured = it == m.phases_s.end() ? 0.0 : it->second;
      const double predicted = phase_seconds(p.time, phase).value_or(0.0);
      if (measured > 0 || predicted > 0) row(phase, measured, predicted);
    }
    std::printf("  median step %s ms; predicted %.0f tokens/s, measured %.0f (fastest step)\n",
                ms(m.median_step_time_s).c_str(), p.tokens_per_s,
                static_cast<double>(m.plan.train.tokens_per_step()) / m.step_time_s);
  }
}

}  // namespace moetune::cli
