// bench/sim_vs_executor: the simulator against the CPU executor on this machine (cluster cpu-local,
// world sizes 1 and 2, several layouts and model sizes). Every run trains a few steps through
// `moetune launch`; calibration is fitted on half of the runs and predicts the other half. Prints
// per layout the step-time error before and after calibration, parameter / gradient / optimizer
// memory (must be exact) and activation memory, and Kendall's tau of the held-out rankings.
//
// Usage: sim_vs_executor [--moetune build/cli/moetune] [--profile FILE] [--steps 8]
//                        [--out DIR] [--reuse] [--max-world 2] [--attempts 3]
//   --profile: the starting cluster profile (default cpu-local; e.g. one from `moetune profile`)
//   --reuse:   keep run.jsonl files already in DIR (re-fit without re-running)
//   --max-world 1: only the one-rank cases (fit and held out)
//   --attempts: runs per case at most; a run during which other processes kept more than
//               kQuietCores cores busy is repeated, and the quietest attempt is kept
//
// Other processes on the machine slow the ranks down by however much they happen to run: the
// bench measures, per run, the CPU time the machine spent outside the run (/proc/stat minus the
// run's own, from getrusage) and prints it beside each run as "other" (cores).

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "core/host_load.hpp"
#include "core/presets.hpp"
#include "planner/planner.hpp"
#include "simulator/calibration.hpp"
#include "simulator/simulator.hpp"

using namespace moetune;
namespace fs = std::filesystem;

namespace {

struct Case {
  std::string model;
  std::int64_t seq = 64;
  std::int64_t world = 1;
  std::int64_t ep = 1, hs = 1;
  std::int64_t micro_batch = 8;
  Recompute recompute = Recompute::None;
};

std::string name_of(const Case& c) {
  char buf[128];
  std::snprintf(buf, sizeof buf, "%s-s%lld-w%lld-ep%lld-hs%lld-mb%lld%s", c.model.c_str(),
                static_cast<long long>(c.seq), static_cast<long long>(c.world),
                static_cast<long long>(c.ep), static_cast<long long>(c.hs),
                static_cast<long long>(c.micro_batch), c.recompute == Recompute::Full ? "-rc" : "");
  return buf;
}

// Two models, two sequence lengths, W = 1 and 2 with ep, hs and plain replicas, micro-batches and
// full recompute:
// listed so that alternating runs fall into the fit and held-out halves with both models and both
// world sizes in each.
std::vector<Case> cases() {
  std::vector<Case> out;
  for (const std::string model : {"tiny", "mini"}) {
    for (std::int64_t seq : {64, 128}) {
      // even positions are fitted, odd ones held out: each half has W = 1 and W = 2
      out.push_back({model, seq, 1, 1, 1, 8, Recompute::None});
      out.push_back({model, seq, 2, 2, 1, 4, Recompute::None});
      out.push_back({model, seq, 2, 1, 2, 4, Recompute::None});
      out.push_back({model, seq, 1, 1, 1, 2, Recompute::None});
      // Full recompute, fitted on one rank and held out on two.
      out.push_back({model, seq, 1, 1, 1, 4, Recompute::Full});
      out.push_back({model, seq, 2, 1, 1, 2, Recompute::Full});
    }
  }
  return out;
}

double rel(double predicted, double measured) {
  return measured > 0 ? predicted / measured - 1.0 : 0.0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string moetune = "build/cli/moetune", profile_spec = "cpu-local",
              out = "build/sim_vs_executor";
  std::int64_t steps = 8;
  bool reuse = false;
  std::int64_t max_world = 2;
  int attempts = 3;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "sim_vs_executor: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--moetune") {
      moetune = next();
    } else if (a == "--profile") {
      profile_spec = next();
    } else if (a == "--steps") {
      steps = std::stoll(next());
    } else if (a == "--out") {
      out = next();
    } else if (a == "--max-world") {
      max_world = std::stoll(next());
    } else if (a == "--reuse") {
      reuse = true;
    } else if (a == "--attempts") {
      attempts = std::max(1, std::stoi(next()));
    } else {
      std::fprintf(stderr,
                   "usage: sim_vs_executor [--moetune BIN] [--profile FILE] [--steps N] "
                   "[--out DIR] [--reuse] [--max-world 1|2] [--attempts N]\n");
      return 2;
    }
  }
  try {
    fs::create_directories(out);
    const ClusterSpec profile = load_cluster(profile_spec, 1, std::nullopt);
    std::vector<simulator::Measurement> fit_runs, held_out;
    std::vector<Case> fit_cases, held_cases;
    std::vector<double> fit_other, held_other;  // cores other processes kept busy, per run
    const std::vector<Case> all = cases();
    for (std::size_t i = 0; i < all.size(); ++i) {
      const Case& c = all[i];
      if (c.world > max_world) continue;
      const fs::path dir = fs::path(out) / name_of(c);
      fs::create_directories(dir);
      const fs::path metrics = dir / "run.jsonl";
      const fs::path other_file = dir / "other_cores.txt";
      if (!reuse || !fs::exists(metrics)) {
        TrainSpec train;
        train.seq_len = c.seq;
        train.global_batch = 8;
        train.precision = Precision::Fp32;
        train.moe.aux_loss_coef = 0.02;
        ClusterSpec cluster = profile;
        cluster.devices_per_node = c.world;
        cluster.calibration.reset();
        Layout l;
        l.ep = c.ep;
        l.hs = c.hs;
        l.rep = c.world / (c.ep * c.hs);
        l.micro_batch = c.micro_batch;
        l.recompute = c.recompute;
        write_plan_file(dir / "plan.json",
                        planner::make_plan(load_model(c.model), cluster, train, l));
        double quietest = 1e300;
        for (int attempt = 1; attempt <= attempts && quietest >= kQuietCores; ++attempt) {
          const fs::path try_dir = dir / ("attempt" + std::to_string(attempt));
          fs::create_directories(try_dir);
          const fs::path try_metrics = try_dir / "run.jsonl";
          fs::remove(try_metrics);
          fs::remove(try_metrics.string() + ".rank1");
          const std::string cmd = "MOETUNE_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 '" + moetune +
                                  "' launch --plan '" + (dir / "plan.json").string() +
                                  "' -- --quiet --steps " + std::to_string(steps) + " --metrics '" +
                                  try_metrics.string() + "' > '" + (try_dir / "log.txt").string() +
                                  "' 2>&1";
          const CpuSample before = cpu_sample();
          const int status = std::system(cmd.c_str());
          const double other = other_cores(before, cpu_sample());
          std::fprintf(stderr, "running %s (attempt %d): other processes kept %.2f cores busy\n",
                       name_of(c).c_str(), attempt, other);
          if (status != 0) {
            std::fprintf(stderr, "sim_vs_executor: %s failed; see %s\n", name_of(c).c_str(),
                         (try_dir / "log.txt").c_str());
            return 1;
          }
          if (other < quietest) {
            quietest = other;
            for (const std::string suffix : {"", ".rank1"}) {
              fs::remove(metrics.string() + suffix);
              if (fs::exists(try_metrics.string() + suffix)) {
                fs::copy_file(try_metrics.string() + suffix, metrics.string() + suffix);
              }
            }
            std::ofstream(other_file) << other << "\n";
          }
        }
      }
      double other = -1;  // unknown: a run kept from before the bench measured it
      if (std::ifstream in(other_file); in) in >> other;
      (i % 2 == 0 ? fit_other : held_other).push_back(other);
      simulator::Measurement m = simulator::load_measurements({metrics}).front();
      (i % 2 == 0 ? fit_runs : held_out).push_back(m);
      (i % 2 == 0 ? fit_cases : held_cases).push_back(c);
    }
    ClusterSpec base = profile;
    base.calibration.reset();
    const simulator::FitResult fit = simulator::calibrate(base, fit_runs, {});
    std::printf("calibrated on %zu runs (every other case), %zu held out; profile %s\n",
                fit_runs.size(), held_out.size(), profile_spec.c_str());
    for (const auto& p : fit.parameters) {
      if (p.identified) {
        std::printf("  %-30s %.4g -> %.4g ± %.2g\n", p.name.c_str(), p.initial, p.value,
                    p.stderr_value);
      }
    }
    if (fit.expert_skew)
      std::printf("  expert skew %.3f ± %.3f\n", *fit.expert_skew, fit.expert_skew_stderr);

    auto table = [&](const char* title, const std::vector<simulator::Measurement>& runs,
                     const std::vector<Case>& cs, const std::vector<double>& others,
                     std::vector<double>* errors_after) {
      std::printf("\n%s\n%-28s %9s %9s %9s %7s %7s  %-5s %10s %10s %6s %6s\n", title, "layout",
                  "meas ms", "before", "after", "err0", "err", "state", "act pred", "act meas",
                  "err", "other");
      for (std::size_t i = 0; i < runs.size(); ++i) {
        const simulator::Measurement& m = runs[i];
        const Prediction b = simulator::predict_run(base, m);
        const Prediction a = simulator::predict_run(fit.profile, m);
        std::string state = "n/a";
        double act_pred = a.memory.activations, act_meas = 0;
        if (m.memory) {
          const bool exact = a.memory.parameters == m.memory->parameters_bytes &&
                             a.memory.gradients == m.memory->gradients_bytes &&
                             a.memory.optimizer == m.memory->optimizer_bytes &&
                             a.memory.gathered_parameters == m.memory->gathered_parameters_bytes;
          state = exact ? "exact" : "DIFF";
          act_meas = m.memory->activations_bytes;
        }
        const double err = rel(a.step_time_s, m.step_time_s);
        if (errors_after != nullptr) errors_after->push_back(std::abs(err));
        char other[16] = "n/a";
        if (others[i] >= 0) std::snprintf(other, sizeof other, "%.2f", others[i]);
        std::printf("%-28s %9.2f %9.2f %9.2f %+6.1f%% %+6.1f%%  %-5s %9.2fM %9.2fM %+5.1f%% %6s\n",
                    name_of(cs[i]).c_str(), m.step_time_s * 1e3, b.step_time_s * 1e3,
                    a.step_time_s * 1e3, 100 * rel(b.step_time_s, m.step_time_s), 100 * err,
                    state.c_str(), act_pred / 1e6, act_meas / 1e6, 100 * rel(act_pred, act_meas),
                    other);
      }
    };
    std::vector<double> fit_err, held_err;
    table("fitted runs", fit_runs, fit_cases, fit_other, &fit_err);
    table("held-out runs (not used by the fit)", held_out, held_cases, held_other, &held_err);
    auto median = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return v.empty() ? 0.0 : v[v.size() / 2];
    };
    auto worst = [](const std::vector<double>& v) {
      double w = 0;
      for (double x : v)
        w = std::max(w, x);
      return w;
    };
    std::vector<double> pred_b, pred_a, meas;
    for (const auto& m : held_out) {
      pred_b.push_back(simulator::predict_run(base, m).step_time_s);
      pred_a.push_back(simulator::predict_run(fit.profile, m).step_time_s);
      meas.push_back(m.step_time_s);
    }
    std::printf(
        "\nheld-out step time |error|: median %.1f%%, worst %.1f%% (before calibration: "
        "median %.1f%%)\n",
        100 * median(held_err), 100 * worst(held_err),
        100 * simulator::median_step_time_error(base, held_out));
    for (std::int64_t world : {1, 2}) {
      std::vector<double> e;
      for (std::size_t i = 0; i < held_out.size(); ++i)
        if (held_cases[i].world == world) e.push_back(held_err[i]);
      std::printf("  world size %lld: median %.1f%%, worst %.1f%% over %zu held-out runs\n",
                  static_cast<long long>(world), 100 * median(e), 100 * worst(e), e.size());
    }
    // The same over the held-out runs that other processes left alone (a run kept from before the
    // bench measured this is not counted).
    for (std::int64_t world : {1, 2}) {
      std::vector<double> e;
      for (std::size_t i = 0; i < held_out.size(); ++i) {
        if (held_cases[i].world == world && held_other[i] >= 0 && held_other[i] < kQuietCores) {
          e.push_back(held_err[i]);
        }
      }
      std::printf(
          "  world size %lld, runs with other processes under %.1f cores: median %.1f%%, worst "
          "%.1f%% over %zu held-out runs\n",
          static_cast<long long>(world), kQuietCores, 100 * median(e), 100 * worst(e), e.size());
    }
    std::printf(
        "Kendall's tau (held-out, predicted vs measured step time): %.2f before, %.2f "
        "after calibration\n",
        simulator::kendall_tau(pred_b, meas), simulator::kendall_tau(pred_a, meas));
    // Ranking within each (model, seq) group, as tune ranks layouts of one setup.
    double tau_sum = 0;
    int groups = 0;
    std::vector<simulator::Measurement> everything = fit_runs;
    everything.insert(everything.end(), held_out.begin(), held_out.end());
    std::vector<Case> every_case = fit_cases;
    every_case.insert(every_case.end(), held_cases.begin(), held_cases.end());
    for (const std::string model : {"tiny", "mini"}) {
      for (std::int64_t seq : {64, 128}) {
        std::vector<double> p, q;
        for (std::size_t i = 0; i < everything.size(); ++i) {
          if (every_case[i].model != model || every_case[i].seq != seq) continue;
          p.push_back(simulator::predict_run(fit.profile, everything[i]).step_time_s);
          q.push_back(everything[i].step_time_s);
        }
        const double tau = simulator::kendall_tau(p, q);
        std::printf("Kendall's tau within %s seq %lld (%zu layouts): %.2f\n", model.c_str(),
                    static_cast<long long>(seq), p.size(), tau);
        tau_sum += tau;
        ++groups;
      }
    }
    std::printf("mean within-setup Kendall's tau: %.2f\n", tau_sum / groups);
  } catch (const InputError& e) {
    std::fprintf(stderr, "sim_vs_executor: %s\n", e.what());
    return 2;
  }
  return 0;
}
