// `moetune plan`: search every layout, rank, print the table (or JSON), write the best plan.
#include <cstdio>
#include <iostream>
#include <memory>

#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "core/error.hpp"
#include "planner/planner.hpp"
#include "simulator/simulator.hpp"

namespace moetune::cli {

namespace {

struct PlanOptions {
  SetupOptions setup;
  LayoutOptions layout;
  std::string objective = "throughput";
  int top = 10;
  bool json = false;
  std::string out;
};

void print_table(const Setup& s, const planner::SearchResult& r, int top) {
  std::printf("%-3s %3s %4s %3s %4s %4s  %-17s %3s %-7s %-7s %-4s %9s %10s %9s %6s %9s %s\n", "#",
              "tp", "pp", "ep", "hs", "rep", "order", "mb", "recomp", "offload", "dopt", "mem GiB",
              "step", "tokens/s", "MFU", "$/Btok", "");
  int shown = 0;
  for (const planner::Candidate& c : r.ranked) {
    if (shown == top) break;
    const Layout& l = c.layout;
    // "~": uneven stages (their sizes are in the plan and in `simulate`'s layout line).
    std::string pp = std::to_string(l.pp) + (l.vpp > 1 ? "x" + std::to_string(l.vpp) : "") +
                     (l.uneven_stages() ? "~" : "");
    MeshOrder canonical = canonical_order(l);
    std::string order;
    for (Axis a : canonical) {
      if (a == Axis::Tp || l.degree(a) > 1) order += (order.empty() ? "" : ",") + to_string(a);
    }
    std::string offload = l.optimizer_offload ? "opt" : "-";
    if (l.activation_offload) offload += "+act";
    std::string mem = format_gib(c.peak_memory_bytes) + (c.fits ? "" : "!");
    std::printf(
        "%-3d %3lld %4s %3lld %4lld %4lld  %-17s %3lld %-7s %-7s %-4s %9s %10s %9s %5.1f%% %9.0f "
        "%s\n",
        ++shown, static_cast<long long>(l.tp), pp.c_str(), static_cast<long long>(l.ep),
        static_cast<long long>(l.hs), static_cast<long long>(l.rep), order.c_str(),
        static_cast<long long>(l.micro_batch), to_string(l.recompute).c_str(), offload.c_str(),
        l.distributed_optimizer ? "on" : "-", mem.c_str(), format_seconds(c.step_time_s).c_str(),
        format_rate(c.tokens_per_s).c_str(), 100.0 * c.mfu, c.cost_per_billion_tokens_usd,
        c.pareto ? "*" : "");
  }
  (void)s;
}

// When nothing fits without offloading, say so plainly and show what would.
void print_fit_advice(const Setup& s, const PlanOptions& o, const planner::SearchResult& r) {
  const planner::Candidate* best_plain = nullptr;  // smallest memory without optimizer offload
  std::int64_t offload_fitting = 0;
  bool plain_fits = false;
  for (const auto& c : r.ranked) {
    if (c.layout.optimizer_offload) {
      offload_fitting += c.fits ? 1 : 0;
      continue;
    }
    plain_fits = plain_fits || c.fits;
    if (best_plain == nullptr || c.peak_memory_bytes < best_plain->peak_memory_bytes)
      best_plain = &c;
  }
  if (plain_fits || best_plain == nullptr) return;
  const double capacity = s.cluster.device.memory_bytes();
  std::printf(
      "\nWithout optimizer offload nothing fits: the leanest layout (%s) needs %s GiB of "
      "%s GiB per device.\n",
      describe(best_plain->layout).c_str(), format_gib(best_plain->peak_memory_bytes).c_str(),
      format_gib(capacity).c_str());
  if (offload_fitting > 0) {
    std::printf("With optimizer offload to host memory, %lld layouts fit (marked opt above).\n",
                static_cast<long long>(offload_fitting));
  }
  // Smallest node count where a layout fits without offloading.
  for (std::int64_t nodes = s.cluster.nodes + 1; nodes <= s.cluster.nodes * 16; ++nodes) {
    ClusterSpec bigger = s.cluster;
    bigger.nodes = nodes;
    planner::SearchOptions so;
    so.pins = to_pins(o.layout);
    so.pins.optimizer_offload = false;
    planner::SearchResult more = planner::search(s.model, bigger, s.train, so);
    if (!more.ranked.empty() && more.ranked.front().fits) {
      const auto& c = more.ranked.front();
      std::printf(
          "Without offloading, the first node count that fits is %lld nodes (%lld "
          "devices): best %s at %s GiB, %s tokens/s.\n",
          static_cast<long long>(nodes), static_cast<long long>(bigger.world_size()),
          describe(c.layout).c_str(), format_gib(c.peak_memory_bytes).c_str(),
          format_rate(c.tokens_per_s).c_str());
      return;
    }
  }
  std::printf("Without offloading, nothing fits up to %lld nodes either.\n",
              static_cast<long long>(s.cluster.nodes * 16));
}

void run(const PlanOptions& o) {
  const Setup s = load_setup(o.setup);
  planner::SearchOptions so;
  so.objective = planner::parse_objective(o.objective);
  so.pins = to_pins(o.layout);
  const planner::SearchResult r = planner::search(s.model, s.cluster, s.train, so);
  if (o.json) {
    Json j;
    j["model"] = s.model.name;
    j["cluster"] = s.cluster.name;
    j["nodes"] = s.cluster.nodes;
    j["devices"] = s.cluster.world_size();
    j["objective"] = o.objective;
    j["considered"] = r.considered;
    j["simulated"] = r.simulated;
    j["fitting"] = r.fitting;
    Json layouts = Json::array();
    int rank = 0;
    for (const auto& c : r.ranked) {
      if (rank == o.top) break;
      const Plan plan = planner::make_plan(s.model, s.cluster, s.train, c.layout);
      Json row = prediction_json(c.layout, *plan.prediction);
      row["rank"] = ++rank;
      row["pareto"] = c.pareto;
      layouts.push_back(row);
    }
    j["layouts"] = layouts;
    std::cout << j.dump(2) << "\n";
  } else {
    std::printf("moetune plan: %s\n", describe_setup(s).c_str());
    std::printf(
        "%lld layouts considered: %lld broke a rule, %lld simulated, %lld fit "
        "(objective: %s; * = Pareto front of throughput vs memory; ! = does not fit)\n\n",
        static_cast<long long>(r.considered), static_cast<long long>(r.considered - r.simulated),
        static_cast<long long>(r.simulated), static_cast<long long>(r.fitting),
        o.objective.c_str());
    if (r.ranked.empty()) {
      std::printf("No layout passes the rules; run `moetune explain` with the same options.\n");
    } else {
      print_table(s, r, o.top);
      print_fit_advice(s, o, r);
    }
  }
  if (!o.out.empty()) {
    if (r.ranked.empty() || !r.ranked.front().fits) {
      throw InputError("no layout fits, so no plan was written to " + o.out);
    }
    write_plan_file(o.out,
                    planner::make_plan(s.model, s.cluster, s.train, r.ranked.front().layout));
    if (!o.json) std::printf("\nwrote the best plan to %s\n", o.out.c_str());
  }
}

}  // namespace

void register_plan(CLI::App& app) {
  auto o = std::make_shared<PlanOptions>();
  CLI::App* cmd = app.add_subcommand("plan", "search every layout and rank them");
  add_setup_options(*cmd, o->setup, true);
  add_layout_options(*cmd, o->layout);
  cmd->add_option("--objective", o->objective, "throughput, cost or memory")
      ->check(CLI::IsMember({"throughput", "cost", "memory"}))
      ->capture_default_str();
  cmd->add_option("--top", o->top, "layouts to show")->check(at_least_one())->capture_default_str();
  cmd->add_flag("--json", o->json, "print JSON instead of a table");
  cmd->add_option("--out", o->out, "write the best plan to this plan.json");
  cmd->callback([o] { run(*o); });
}

}  // namespace moetune::cli
