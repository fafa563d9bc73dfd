// `moetune tune`: plan, run the best K candidates for a few steps each through `moetune launch`,
// calibrate the profile on every measurement so far, re-rank, and repeat until the top of the
// ranking is all measured (stable) or the budget is spent. Writes the winning plan, the calibrated
// profile and a report (every trial's predicted vs measured step time and memory, how the ranking
// moved, Kendall's tau).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>

#include "cli/calibrate_report.hpp"
#include "cli/child_process.hpp"
#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "core/error.hpp"
#include "core/host_load.hpp"
#include "executor/trainer.hpp"
#include "simulator/calibration.hpp"
#include "simulator/simulator.hpp"

namespace moetune::cli {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

struct TuneOptions {
  SetupOptions setup;
  LayoutOptions layout;
  std::int64_t trials = 4;  // candidates run per round
  std::int64_t steps = 5;   // steps per trial; the first is warm-up
  std::int64_t rounds = 3;  // at most
  double budget_minutes = 10;
  // Runs per trial at most: a run during which other processes kept kQuietCores or more cores
  // busy is repeated (time allowing), and the quietest run counts.
  std::int64_t attempts = 2;
  std::string out;
  std::string objective = "throughput";
};

struct Trial {
  std::int64_t round = 0;
  std::int64_t index = 0;
  Layout layout;
  fs::path dir;
  double predicted_initial_s = 0;  // on the starting profile
  double predicted_at_run_s = 0;   // on the profile of the round that chose it
  std::int64_t initial_rank = 0;   // 1-based on the starting profile
  std::optional<simulator::Measurement> measured;
  std::string failure;      // why it has no measurement
  double other_cores = -1;  // cores other processes kept busy during the counted run
  std::int64_t runs = 0;
};

// Layouts that differ only in mesh order are one candidate on one node: keep the best order.
std::string layout_key(const Layout& l) {
  Layout k = l;
  k.order = kDefaultOrder;
  return describe(k);
}

// The runnable, fitting candidates of a search, best first, one per layout key.
std::vector<planner::Candidate> runnable(const planner::SearchResult& result, const Setup& setup) {
  std::vector<planner::Candidate> out;
  std::vector<std::string> seen;
  for (const planner::Candidate& c : result.ranked) {
    if (!c.fits) continue;
    const std::string key = layout_key(c.layout);
    if (std::find(seen.begin(), seen.end(), key) != seen.end()) continue;
    Plan plan{setup.model, setup.cluster, setup.train, c.layout, std::nullopt};
    try {
      const char* backend = setup.cluster.device.kind == DeviceKind::Gpu ? "cuda" : "cpu";
      executor::check_runnable(plan, backend, c.layout.world_size());
    } catch (const InputError&) {
      continue;
    }
    seen.push_back(key);
    out.push_back(c);
  }
  return out;
}

std::string clock_text(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%d:%02d", static_cast<int>(s) / 60, static_cast<int>(s) % 60);
  return buf;
}

std::string ms_text(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", s * 1e3);
  return buf;
}

void run(const TuneOptions& o) {
  const auto start = Clock::now();
  const double budget_s = o.budget_minutes * 60.0;
  auto elapsed = [&] { return std::chrono::duration<double>(Clock::now() - start).count(); };
  if (o.out.empty()) throw InputError("tune needs --out DIR for the plan and report");
  Setup setup = load_setup(o.setup);
  if (setup.cluster.nodes != 1) {
    throw InputError(
        "tune runs its trials on this machine (moetune launch --launcher local), "
        "one node; the cluster has " +
        std::to_string(setup.cluster.nodes) + " nodes");
  }
#ifndef MOETUNE_HAVE_CUDA
  if (setup.cluster.device.kind != DeviceKind::Cpu) {
    throw InputError(
        "tune runs its trials through moetune train, and this moetune was built without the "
        "CUDA backend; " +
        setup.cluster.name + " is a GPU cluster (try cpu-local)");
  }
#endif
  fs::create_directories(fs::path(o.out) / "trials");
  planner::SearchOptions search;
  search.objective = planner::parse_objective(o.objective);
  search.pins = to_pins(o.layout);

  const ClusterSpec initial_profile = setup.cluster;
  ClusterSpec profile = initial_profile;
  std::vector<planner::Candidate> ranking =
      runnable(planner::search(setup.model, profile, setup.train, search), setup);
  if (ranking.empty()) {
    throw InputError("no layout of " + setup.model.name + " fits " + setup.cluster.name +
                     " and runs on this machine's executor (CPU ranks, or GPUs); see moetune "
                     "explain");
  }
  const std::vector<planner::Candidate> initial_ranking = ranking;
  std::fprintf(stderr,
               "[tune 0:00] %zu runnable layouts; budget %s; %lld trials per round, %lld "
               "steps each\n",
               ranking.size(), clock_text(budget_s).c_str(), static_cast<long long>(o.trials),
               static_cast<long long>(o.steps));

  std::vector<Trial> trials;
  std::vector<simulator::Measurement> measurements;
  std::vector<std::vector<std::string>> ranking_history;  // top-K keys per round
  std::string stopped = "rounds";                         // why the loop ended
  std::optional<simulator::FitResult> fit;
  auto measured_key = [&](const std::string& key) {
    for (const Trial& t : trials)
      if (layout_key(t.layout) == key) return true;
    return false;
  };
  auto initial_rank_of = [&](const Layout& l) {
    for (std::size_t i = 0; i < initial_ranking.size(); ++i)
      if (layout_key(initial_ranking[i].layout) == layout_key(l))
        return static_cast<std::int64_t>(i + 1);
    return std::int64_t{0};
  };
  const std::vector<std::string> env = {"MOETUNE_NUM_THREADS=1", "OPENBLAS_NUM_THREADS=1"};

  for (std::int64_t round = 1; round <= o.rounds; ++round) {
    std::vector<std::string> top;
    for (std::size_t i = 0; i < ranking.size() && static_cast<std::int64_t>(i) < o.trials; ++i)
      top.push_back(layout_key(ranking[i].layout));
    ranking_history.push_back(top);
    std::vector<planner::Candidate> to_run;
    for (const planner::Candidate& c : ranking) {
      if (static_cast<std::int64_t>(to_run.size()) >= o.trials) break;
      if (std::find(top.begin(), top.end(), layout_key(c.layout)) == top.end()) break;
      if (!measured_key(layout_key(c.layout))) to_run.push_back(c);
    }
    if (to_run.empty()) {
      stopped = "stable";
      std::fprintf(stderr, "[tune %s] round %lld: the top %zu are all measured; ranking stable\n",
                   clock_text(elapsed()).c_str(), static_cast<long long>(round), top.size());
      break;
    }
    bool out_of_time = false;
    for (std::size_t i = 0; i < to_run.size(); ++i) {
      const double left = budget_s - elapsed();
      if (left <= 0) {
        out_of_time = true;
        break;
      }
      Trial t;
      t.round = round;
      t.index = static_cast<std::int64_t>(trials.size()) + 1;
      t.layout = to_run[i].layout;
      t.initial_rank = initial_rank_of(t.layout);
      char name[32];
      std::snprintf(name, sizeof name, "%02lld", static_cast<long long>(t.index));
      t.dir = fs::path(o.out) / "trials" / name;
      fs::create_directories(t.dir);
      const Plan plan = planner::make_plan(setup.model, profile, setup.train, t.layout);
      t.predicted_at_run_s = plan.prediction->step_time_s;
      t.predicted_initial_s = simulator::Simulator(setup.model, initial_profile, setup.train)
                                  .predict(t.layout)
                                  .step_time_s;
      write_plan_file(t.dir / "plan.json", plan);
      const fs::path metrics = t.dir / "run.jsonl";
      std::fprintf(stderr, "[tune %s] round %lld trial %lld (%zu/%zu): %s, predicted %s ms ...\n",
                   clock_text(elapsed()).c_str(), static_cast<long long>(round),
                   static_cast<long long>(t.index), i + 1, to_run.size(),
                   short_layout(t.layout).c_str(), ms_text(t.predicted_at_run_s).c_str());
      for (std::int64_t attempt = 1; attempt <= o.attempts; ++attempt) {
        const double time_left = budget_s - elapsed();
        if (time_left <= 0) {
          if (!t.measured) t.failure = "stopped by the budget";
          out_of_time = true;
          break;
        }
        fs::remove(metrics);
        for (std::int64_t r = 1; r < t.layout.world_size(); ++r)
          fs::remove(metrics.string() + ".rank" + std::to_string(r));
        const CpuSample before = cpu_sample();
        const ChildResult r = run_child(
            {self_executable(), "launch", "--plan", (t.dir / "plan.json").string(), "--", "--steps",
             std::to_string(o.steps), "--metrics", metrics.string(), "--quiet"},
            env, (t.dir / "log.txt").string(), time_left);
        const double other = other_cores(before, cpu_sample());
        ++t.runs;
        if (r.timed_out) {
          if (!t.measured) t.failure = "stopped by the budget";
          out_of_time = true;
          break;
        }
        if (r.exit_status != 0) {
          t.failure = "exit status " + std::to_string(r.exit_status) + " (see " +
                      (t.dir / "log.txt").string() + ")";
          break;  // a failing layout fails again
        }
        try {
          simulator::Measurement m = simulator::load_measurements({metrics}).front();
          if (!t.measured || other < t.other_cores) {
            t.measured = m;
            t.other_cores = other;
          }
        } catch (const InputError& e) {
          t.failure = e.what();
          break;
        }
        if (other < kQuietCores) break;
        if (attempt < o.attempts) {
          std::fprintf(stderr,
                       "[tune %s]   other processes kept %.2f cores busy during the run "
                       "(%s ms): repeating it\n",
                       clock_text(elapsed()).c_str(), other,
                       ms_text(t.measured->step_time_s).c_str());
        }
      }
      if (t.measured) measurements.push_back(*t.measured);
      if (t.measured) {
        const std::string disturbed =
            t.other_cores >= kQuietCores
                ? format_text("; other processes kept %.2f cores busy", t.other_cores)
                : std::string();
        std::fprintf(stderr, "[tune %s]   measured %s ms (%.0f%% off), %.0f tokens/s%s\n",
                     clock_text(elapsed()).c_str(), ms_text(t.measured->step_time_s).c_str(),
                     100.0 * (t.predicted_at_run_s / t.measured->step_time_s - 1.0),
                     static_cast<double>(setup.train.tokens_per_step()) / t.measured->step_time_s,
                     disturbed.c_str());
      } else {
        std::fprintf(stderr, "[tune %s]   no measurement: %s\n", clock_text(elapsed()).c_str(),
                     t.failure.c_str());
      }
      trials.push_back(t);
      if (out_of_time) break;
    }
    if (!measurements.empty()) {
      simulator::FitOptions fo;
      fit = simulator::calibrate(initial_profile, measurements, fo);
      profile = fit->profile;
      profile.nodes = setup.cluster.nodes;
      profile.devices_per_node = setup.cluster.devices_per_node;
      ranking = runnable(planner::search(setup.model, profile, setup.train, search), setup);
      std::fprintf(stderr,
                   "[tune %s] calibrated on %zu run(s): step-time error %.1f%% -> %.1f%%; "
                   "re-ranked\n",
                   clock_text(elapsed()).c_str(), measurements.size(),
                   100.0 * fit->profile.calibration->step_time_error_before,
                   100.0 * fit->profile.calibration->step_time_error_after);
    }
    if (out_of_time) {
      stopped = "budget";
      break;
    }
  }

  // The winner: the fastest measured trial; the simulator's top pick when nothing was measured.
  const Trial* best = nullptr;
  for (const Trial& t : trials) {
    if (t.measured && (best == nullptr || t.measured->step_time_s < best->measured->step_time_s))
      best = &t;
  }
  const Layout winner = best != nullptr ? best->layout : ranking.front().layout;
  const Plan plan = planner::make_plan(setup.model, profile, setup.train, winner);
  write_plan_file(fs::path(o.out) / "plan.json", plan);
  write_file_atomically(fs::path(o.out) / "profile.json", to_json(profile).dump(2) + "\n");

  // Report: per trial, predicted (start, at its round, final profile) vs measured; ranks.
  std::vector<double> pred_initial, pred_final, meas;
  Json rows = Json::array();
  std::vector<std::string> final_keys;
  for (const planner::Candidate& c : ranking)
    final_keys.push_back(layout_key(c.layout));
  const simulator::Simulator final_sim(setup.model, profile, setup.train);
  std::printf("\n%-3s %-5s %-36s %5s %5s %10s %10s %10s %10s %9s %9s\n", "#", "round", "layout",
              "rank0", "rank", "pred0 ms", "pred ms", "final ms", "meas ms", "pred MiB",
              "meas MiB");
  for (const Trial& t : trials) {
    const Prediction fp = final_sim.predict(t.layout);
    const auto it = std::find(final_keys.begin(), final_keys.end(), layout_key(t.layout));
    const std::int64_t final_rank =
        it == final_keys.end() ? 0 : static_cast<std::int64_t>(it - final_keys.begin()) + 1;
    Json row;
    row["trial"] = t.index;
    row["round"] = t.round;
    row["layout"] = short_layout(t.layout);
    row["initial_rank"] = t.initial_rank;
    row["final_rank"] = final_rank;
    row["predicted_initial_step_time_s"] = t.predicted_initial_s;
    row["predicted_at_run_step_time_s"] = t.predicted_at_run_s;
    row["predicted_final_step_time_s"] = fp.step_time_s;
    // The executor counts what it allocates (model state, activations), not the communication
    // staging, runtime reserve and allocator slack the simulator adds on top: like with like.
    const double tracked = fp.memory.tracked();
    row["predicted_peak_memory_bytes"] = fp.peak_memory_bytes;
    row["predicted_tracked_memory_bytes"] = tracked;
    char meas_ms[32] = "-", meas_mib[32] = "-";
    if (t.measured) {
      row["measured_step_time_s"] = t.measured->step_time_s;
      row["other_cores_busy"] = t.other_cores;  // other processes, during the counted run
      row["runs"] = t.runs;
      row["measured_peak_memory_bytes"] = t.measured->peak_memory_bytes;
      std::snprintf(meas_ms, sizeof meas_ms, "%.2f", t.measured->step_time_s * 1e3);
      std::snprintf(meas_mib, sizeof meas_mib, "%.1f", t.measured->peak_memory_bytes / 1048576.0);
      pred_initial.push_back(t.predicted_initial_s);
      pred_final.push_back(fp.step_time_s);
      meas.push_back(t.measured->step_time_s);
    } else {
      row["failure"] = t.failure;
    }
    rows.push_back(row);
    std::printf("%-3lld %-5lld %-36s %5lld %5lld %10s %10s %10s %10s %9.1f %9s%s\n",
                static_cast<long long>(t.index), static_cast<long long>(t.round),
                short_layout(t.layout).c_str(), static_cast<long long>(t.initial_rank),
                static_cast<long long>(final_rank), ms_text(t.predicted_initial_s).c_str(),
                ms_text(t.predicted_at_run_s).c_str(), ms_text(fp.step_time_s).c_str(), meas_ms,
                tracked / 1048576.0, meas_mib, t.measured ? "" : ("  " + t.failure).c_str());
  }
  Json report;
  report["model"] = setup.model.name;
  report["cluster"] = setup.cluster.name;
  report["devices"] = setup.cluster.world_size();
  report["stopped"] = stopped;
  report["elapsed_s"] = elapsed();
  report["budget_s"] = budget_s;
  report["trials"] = rows;
  Json history = Json::array();
  for (const auto& top : ranking_history)
    history.push_back(top);
  report["top_per_round"] = history;
  report["winner"] = short_layout(winner);
  report["winner_measured"] = best != nullptr;
  if (meas.size() >= 2) {
    report["kendall_tau_initial"] = simulator::kendall_tau(pred_initial, meas);
    report["kendall_tau_final"] = simulator::kendall_tau(pred_final, meas);
  }
  if (fit) {
    Json params = Json::array();
    for (const auto& p : fit->parameters) {
      if (!p.identified) continue;
      Json row = {{"name", p.name}, {"initial", p.initial}, {"value", p.value}};
      if (std::isfinite(p.stderr_value)) row["stderr"] = p.stderr_value;  // absent: no dof left
      params.push_back(row);
    }
    report["calibration"] = params;
    if (fit->expert_skew) report["expert_skew"] = *fit->expert_skew;
  }
  write_file_atomically(fs::path(o.out) / "report.json", report.dump(2) + "\n");

  std::printf("\nstopped: %s after %s (budget %s)\n",
              stopped == "stable"   ? "the top of the ranking is measured (stable)"
              : stopped == "budget" ? "the budget is spent"
                                    : "the round limit",
              clock_text(elapsed()).c_str(), clock_text(budget_s).c_str());
  if (meas.size() >= 2) {
    std::printf(
        "Kendall's tau, predicted vs measured step time over %zu trials: %.2f on the "
        "starting profile, %.2f calibrated\n",
        meas.size(), simulator::kendall_tau(pred_initial, meas),
        simulator::kendall_tau(pred_final, meas));
  }
  if (best != nullptr) {
    std::printf("winner: %s, measured %s ms/step (%.0f tokens/s), predicted %s ms calibrated\n",
                short_layout(winner).c_str(), ms_text(best->measured->step_time_s).c_str(),
                static_cast<double>(setup.train.tokens_per_step()) / best->measured->step_time_s,
                ms_text(plan.prediction->step_time_s).c_str());
  } else {
    std::printf("winner: %s, the simulator's top pick (no trial finished within the budget)\n",
                short_layout(winner).c_str());
  }
  std::printf("wrote %s/plan.json, %s/profile.json, %s/report.json\n", o.out.c_str(), o.out.c_str(),
              o.out.c_str());
}

}  // namespace

void register_tune(CLI::App& app) {
  auto o = std::make_shared<TuneOptions>();
  CLI::App* cmd = app.add_subcommand(
      "tune", "plan, run the best candidates, calibrate, re-rank; write the winning plan");
  add_setup_options(*cmd, o->setup, true);
  add_layout_options(*cmd, o->layout);
  cmd->add_option("--trials", o->trials, "candidates run per round")
      ->check(at_least_one())
      ->capture_default_str();
  cmd->add_option("--steps", o->steps, "training steps per trial (the first is warm-up)")
      ->check(CLI::Range(std::int64_t{2}, std::int64_t{1000000}))
      ->capture_default_str();
  cmd->add_option("--rounds", o->rounds, "at most this many measure-calibrate-rerank rounds")
      ->check(at_least_one())
      ->capture_default_str();
  cmd->add_option("--budget-minutes", o->budget_minutes, "wall-clock budget")
      ->check(CLI::Range(0.0, 1e6))
      ->capture_default_str();
  cmd->add_option("--attempts", o->attempts,
                  "runs per trial at most: a run during which other processes kept 0.2 cores or "
                  "more busy is repeated, and the quietest counts")
      ->check(at_least_one())
      ->capture_default_str();
  cmd->add_option("--objective", o->objective, "throughput, cost or memory")
      ->check(CLI::IsMember({"throughput", "cost", "memory"}))
      ->capture_default_str();
  cmd->add_option("--out", o->out, "folder for plan.json, profile.json, report.json, trials/")
      ->required();
  cmd->callback([o] { run(*o); });
}

}  // namespace moetune::cli
