// `moetune explain`: every layout the planner rejected, with the reason, and those that do not fit.
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>

#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "planner/planner.hpp"
#include "simulator/simulator.hpp"

namespace moetune::cli {

namespace {

struct ExplainOptions {
  SetupOptions setup;
  LayoutOptions layout;
  bool json = false;
};

void run(const ExplainOptions& o) {
  const Setup s = load_setup(o.setup);
  planner::SearchOptions so;
  so.pins = to_pins(o.layout);
  so.keep_rejected = true;
  const planner::SearchResult r = planner::search(s.model, s.cluster, s.train, so);
  std::vector<const planner::Candidate*> too_big;
  for (const auto& c : r.ranked) {
    if (!c.fits) too_big.push_back(&c);
  }
  if (o.json) {
    Json rows = Json::array();
    for (const auto& rej : r.rejected) {
      Json row = to_json(rej.layout);
      row["rule"] = to_string(rej.rejection.code);
      row["reason"] = explain(rej.rejection, s.model, s.cluster, s.train, rej.layout);
      rows.push_back(row);
    }
    const simulator::Simulator sim(s.model, s.cluster, s.train);
    for (const auto* c : too_big) {
      Json row = to_json(c->layout);
      row["rule"] = "does_not_fit";
      row["reason"] = sim.predict(c->layout).reason;
      rows.push_back(row);
    }
    Json j;
    j["considered"] = r.considered;
    j["simulated"] = r.simulated;
    j["fitting"] = r.fitting;
    j["rejected"] = rows;
    std::cout << j.dump(2) << "\n";
    return;
  }
  std::printf("moetune explain: %s\n", describe_setup(s).c_str());
  std::printf("%lld layouts considered, %lld simulated, %lld fit\n\n",
              static_cast<long long>(r.considered), static_cast<long long>(r.simulated),
              static_cast<long long>(r.fitting));
  std::map<std::string, std::int64_t> by_rule;
  for (const auto& rej : r.rejected)
    ++by_rule[to_string(rej.rejection.code)];
  if (!too_big.empty()) by_rule["does_not_fit"] = static_cast<std::int64_t>(too_big.size());
  std::printf("rejections by rule:\n");
  for (const auto& [rule, n] : by_rule)
    std::printf("  %-20s %lld\n", rule.c_str(), static_cast<long long>(n));
  std::printf("\nbroke a rule (every mesh order, recompute and offload choice alike):\n");
  for (const auto& rej : r.rejected) {
    std::printf("  %s: %s\n", describe(rej.layout).c_str(),
                explain(rej.rejection, s.model, s.cluster, s.train, rej.layout).c_str());
  }
  if (!too_big.empty()) {
    const simulator::Simulator sim(s.model, s.cluster, s.train);
    std::printf("\ndoes not fit:\n");
    for (const auto* c : too_big) {
      std::printf("  %s: %s\n", describe(c->layout).c_str(), sim.predict(c->layout).reason.c_str());
    }
  }
}

}  // namespace

void register_explain(CLI::App& app) {
  auto o = std::make_shared<ExplainOptions>();
  CLI::App* cmd = app.add_subcommand("explain", "list every rejected layout with its reason");
  add_setup_options(*cmd, o->setup, true);
  add_layout_options(*cmd, o->layout);
  cmd->add_flag("--json", o->json, "print JSON");
  cmd->callback([o] { run(*o); });
}

}  // namespace moetune::cli
