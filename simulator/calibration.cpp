// Calibration: the parameter registry, run summaries, and the robust Levenberg-Marquardt fit.
#include "simulator/calibration.hpp"

#include <algorithm>
#include <cmath>

#include "core/error.hpp"
#include "simulator/simulator.hpp"

namespace moetune::simulator {

namespace {

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace

const std::vector<CalibrationParameter>& calibration_parameters() {
  // Peak rates and raw bandwidths are not here: only their products with the efficiencies reach
  // the time model, so they are measured (`moetune profile`) rather than fitted.
  static const std::vector<CalibrationParameter> registry = {
      {"device.gemm_efficiency", "", [](const ClusterSpec& c) { return c.device.gemm_efficiency; },
       [](ClusterSpec& c, double v) { c.device.gemm_efficiency = v; }, 1e-3, 1.0, true},
      {"device.attention_efficiency", "",
       [](const ClusterSpec& c) { return c.device.attention_efficiency; },
       [](ClusterSpec& c, double v) { c.device.attention_efficiency = v; }, 1e-3, 1.0, true},
      {"device.memory_bound_efficiency", "",
       [](const ClusterSpec& c) { return c.device.memory_bound_efficiency; },
       [](ClusterSpec& c, double v) { c.device.memory_bound_efficiency = v; }, 1e-3, 1.0, true},
      // Starts from the efficiency the time model uses (memory_bound_efficiency when unset).
      {"device.optimizer_efficiency", "",
       [](const ClusterSpec& c) { return c.device.effective_optimizer_efficiency(); },
       [](ClusterSpec& c, double v) { c.device.optimizer_efficiency = v; }, 1e-3, 1.0, true},
      {"device.kernel_overhead_us", "us",
       [](const ClusterSpec& c) { return c.device.kernel_overhead_us; },
       [](ClusterSpec& c, double v) { c.device.kernel_overhead_us = v; }, 1e-3, 1e4, true},
      // Linear: 0, devices that do not slow each other, is the default and a valid value.
      {"device.node_contention", "", [](const ClusterSpec& c) { return c.device.node_contention; },
       [](ClusterSpec& c, double v) { c.device.node_contention = v; }, 0.0, 10.0, false,
       [](const Measurement& m) { return static_cast<double>(m.plan.cluster.devices_per_node); }},
      {"intra_node.bandwidth_GBps", "GB/s",
       [](const ClusterSpec& c) { return c.intra_node.bandwidth_GBps; },
       [](ClusterSpec& c, double v) { c.intra_node.bandwidth_GBps = v; }, 1e-3, 1e5, true},
      {"intra_node.latency_us", "us", [](const ClusterSpec& c) { return c.intra_node.latency_us; },
       [](ClusterSpec& c, double v) { c.intra_node.latency_us = v; }, 1e-2, 1e5, true},
      {"inter_node.efficiency", "", [](const ClusterSpec& c) { return c.inter_node.efficiency; },
       [](ClusterSpec& c, double v) { c.inter_node.efficiency = v; }, 1e-3, 1.0, true},
      {"inter_node.latency_us", "us", [](const ClusterSpec& c) { return c.inter_node.latency_us; },
       [](ClusterSpec& c, double v) { c.inter_node.latency_us = v; }, 1e-2, 1e5, true},
  };
  return registry;
}

const CalibrationParameter& calibration_parameter(const std::string& name) {
  std::string known;
  for (const CalibrationParameter& p : calibration_parameters()) {
    if (p.name == name) return p;
    known += (known.empty() ? "" : ", ") + p.name;
  }
  throw InputError("unknown calibration parameter \"" + name + "\"; known: " + known);
}

const std::vector<std::string>& compared_phases() {
  static const std::vector<std::string> phases = {"attention", "router",  "dispatch", "experts",
                                                  "combine",   "lm_head", "optimizer"};
  return phases;
}

// ---- Run summaries -------------------------------------------------------------------------

Measurement summarise_run(const std::vector<RunLog>& ranks, const std::string& source,
                          std::int64_t skip_steps) {
  if (ranks.empty()) throw InputError(source + ": no run log to read");
  const RunLog& first = ranks.front();
  for (const RunLog& r : ranks) {
    if (!(r.header.plan == first.header.plan)) {
      throw InputError(source + ": rank " + std::to_string(r.header.rank) +
                       "'s log belongs to another plan than rank " +
                       std::to_string(first.header.rank) + "'s");
    }
  }
  Measurement m;
  m.source = source;
  m.plan = first.header.plan;
  m.ranks_read = static_cast<std::int64_t>(ranks.size());
  // Steps every rank recorded, after the warm-up.
  std::size_t steps = first.steps.size();
  for (const RunLog& r : ranks)
    steps = std::min(steps, r.steps.size());
  if (steps <= static_cast<std::size_t>(skip_steps)) {
    throw InputError(source + ": has " + std::to_string(steps) +
                     " step(s); calibration skips the first " + std::to_string(skip_steps) +
                     " (warm-up) and needs at least one more (train with --steps " +
                     std::to_string(skip_steps + 3) + " or more)");
  }
  std::vector<double> step_times, peaks;
  std::map<std::string, std::vector<double>> phases;
  std::vector<double> skew_samples;
  const std::int64_t experts = m.plan.model.num_local_experts;
  for (std::size_t s = static_cast<std::size_t>(skip_steps); s < steps; ++s) {
    double step_time = 0, peak = 0;
    std::map<std::string, double> step_phases;
    std::vector<std::vector<double>> counts;  // [layer][expert], summed over ranks
    for (const RunLog& r : ranks) {
      const StepRecord& rec = r.steps[s];
      step_time = std::max(step_time, rec.step_time_s);
      peak = std::max(peak, rec.peak_memory_bytes);
      for (const auto& [name, seconds] : rec.phases_s)
        step_phases[name] = std::max(step_phases[name], seconds);
      if (rec.memory && (!m.memory || rec.memory->parameters_bytes + rec.memory->optimizer_bytes >
                                          m.memory->parameters_bytes + m.memory->optimizer_bytes)) {
        m.memory = rec.memory;
      }
      if (counts.size() < rec.tokens_per_expert.size()) counts.resize(rec.tokens_per_expert.size());
      for (std::size_t l = 0; l < rec.tokens_per_expert.size(); ++l) {
        const auto& layer = rec.tokens_per_expert[l];
        if (static_cast<std::int64_t>(layer.size()) != experts) {
          throw InputError(source + ": step " + std::to_string(rec.step) +
                           " has tokens_per_expert rows of " + std::to_string(layer.size()) +
                           " experts, but the plan's model has " + std::to_string(experts));
        }
        counts[l].resize(layer.size());
        for (std::size_t e = 0; e < layer.size(); ++e)
          counts[l][e] += static_cast<double>(layer[e]);
      }
    }
    step_times.push_back(step_time);
    peaks.push_back(peak);
    for (const auto& [name, seconds] : step_phases)
      phases[name].push_back(seconds);
    for (const auto& layer : counts) {
      // Observed CV^2 of counts = popularity CV^2 + multinomial noise (E - 1) / N.
      const double E = static_cast<double>(layer.size());
      double total = 0;
      for (double c : layer)
        total += c;
      if (E < 2 || total <= 0) continue;
      const double mean = total / E;
      double var = 0;
      for (double c : layer)
        var += (c - mean) * (c - mean);
      var /= E;
      // tp ranks route the same tokens: each token is counted tp times.
      const double tokens = total / static_cast<double>(m.plan.layout.tp);
      skew_samples.push_back(std::max(0.0, var / (mean * mean) - (E - 1.0) / tokens));
    }
  }
  m.steps_used = static_cast<std::int64_t>(step_times.size());
  // The fastest step: other processes on a shared machine only ever slow a step down, so it is
  // the best estimate of what the hardware does; its phases come with it.
  const std::size_t fastest = static_cast<std::size_t>(
      std::min_element(step_times.begin(), step_times.end()) - step_times.begin());
  m.step_time_s = step_times[fastest];
  m.median_step_time_s = median(step_times);
  for (const auto& [name, values] : phases) {
    if (values.size() == step_times.size()) m.phases_s[name] = values[fastest];
  }
  m.peak_memory_bytes = *std::max_element(peaks.begin(), peaks.end());
  if (!skew_samples.empty()) {
    double mean_sq = 0;
    for (double v : skew_samples)
      mean_sq += v;
    mean_sq /= static_cast<double>(skew_samples.size());
    double spread = 0;
    for (double v : skew_samples)
      spread += (v - mean_sq) * (v - mean_sq);
    const double n = static_cast<double>(skew_samples.size());
    const double mean_sq_stderr = n > 1 ? std::sqrt(spread / (n - 1) / n) : 0.0;
    m.expert_skew = std::sqrt(mean_sq);
    // d sqrt(x) = dx / (2 sqrt(x))
    m.expert_skew_stderr = *m.expert_skew > 0 ? mean_sq_stderr / (2.0 * *m.expert_skew) : 0.0;
    m.expert_skew_samples = static_cast<std::int64_t>(skew_samples.size());
  }
  return m;
}

std::vector<Measurement> load_measurements(const std::vector<std::filesystem::path>& files,
                                           std::int64_t skip_steps) {
  namespace fs = std::filesystem;
  // A rank file is FILE.rankN; group by FILE.
  auto base_of = [](const fs::path& p) {
    const std::string s = p.string();
    const std::size_t dot = s.rfind(".rank");
    if (dot != std::string::npos && dot + 5 < s.size() &&
        s.find_first_not_of("0123456789", dot + 5) == std::string::npos) {
      return s.substr(0, dot);
    }
    return s;
  };
  std::vector<std::string> bases;
  for (const fs::path& f : files) {
    const std::string b = fs::exists(f) && base_of(f) != f.string() && fs::exists(base_of(f))
                              ? base_of(f)
                              : f.string();
    if (std::find(bases.begin(), bases.end(), b) == bases.end()) bases.push_back(b);
  }
  std::vector<Measurement> out;
  for (const std::string& b : bases) {
    std::vector<RunLog> ranks;
    ranks.push_back(read_run_log(b));
    const RunHeader& h = ranks.front().header;
    if (h.rank == 0) {
      for (std::int64_t r = 1; r < h.world_size; ++r) {
        const fs::path rank_file = b + ".rank" + std::to_string(r);
        if (!fs::exists(rank_file)) continue;  // rank 0 alone still measures the step
        ranks.push_back(read_run_log(rank_file));
        if (ranks.back().header.rank != r) {
          throw InputError(rank_file.string() + ": its header says rank " +
                           std::to_string(ranks.back().header.rank) + ", expected " +
                           std::to_string(r));
        }
      }
    }
    out.push_back(summarise_run(ranks, b, skip_steps));
  }
  return out;
}

// ---- Prediction -------------------------------------------------------------------------------

ClusterSpec cluster_for_run(const ClusterSpec& profile, const Measurement& run) {
  ClusterSpec c = profile;
  c.nodes = run.plan.cluster.nodes;
  c.devices_per_node = run.plan.cluster.devices_per_node;
  return c;
}

Prediction predict_run(const ClusterSpec& profile, const Measurement& run) {
  return Simulator(run.plan.model, cluster_for_run(profile, run), run.plan.train)
      .predict(run.plan.layout);
}

double median_step_time_error(const ClusterSpec& profile, const std::vector<Measurement>& runs) {
  std::vector<double> errors;
  for (const Measurement& m : runs) {
    errors.push_back(std::abs(predict_run(profile, m).step_time_s / m.step_time_s - 1.0));
  }
  return median(errors);
}

double kendall_tau(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) throw std::invalid_argument("kendall_tau: lists differ in length");
  double concordant = 0, discordant = 0, ties_a = 0, ties_b = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    for (std::size_t j = i + 1; j < a.size(); ++j) {
      const double da = a[i] - a[j], db = b[i] - b[j];
      if (da == 0 && db == 0) continue;
      if (da == 0) {
        ties_a += 1;
      } else if (db == 0) {
        ties_b += 1;
      } else if ((da > 0) == (db > 0)) {
        concordant += 1;
      } else {
        discordant += 1;
      }
    }
  }
  const double denom =
      std::sqrt((concordant + discordant + ties_a) * (concordant + discordant + ties_b));
  return denom > 0 ? (concordant - discordant) / denom : 0.0;
}

}  // namespace moetune::simulator
