// `moetune simulate`: the prediction for one layout, from a plan.json or from flags.
#include <cstdio>
#include <iostream>
#include <memory>

#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "core/constraints.hpp"
#include "core/error.hpp"
#include "simulator/simulator.hpp"

namespace moetune::cli {

namespace {

struct SimulateOptions {
  std::string plan;
  SetupOptions setup;
  LayoutOptions layout;
  bool json = false;
};

void print_prediction(const Plan& plan, const Prediction& p) {
  const MemoryBreakdown& m = p.memory;
  std::printf("layout: %s\n", describe(plan.layout).c_str());
  std::printf("memory per device: %s GiB of %s GiB — %s\n", format_gib(p.peak_memory_bytes).c_str(),
              format_gib(p.device_memory_bytes).c_str(),
              p.fits ? "fits" : ("does not fit: " + p.reason).c_str());
  const std::pair<const char*, double> mem_rows[] = {
      {"parameters", m.parameters},   {"gradients", m.gradients},
      {"optimizer", m.optimizer},     {"gathered parameters", m.gathered_parameters},
      {"activations", m.activations}, {"communication buffers", m.communication_buffers},
      {"workspace", m.workspace},     {"fragmentation", m.fragmentation}};
  for (const auto& [name, bytes] : mem_rows) {
    std::printf("  %-22s %8s GiB\n", name, format_gib(bytes).c_str());
  }
  if (p.host_memory_bytes_per_node > 0) {
    std::printf("  host memory per node   %8s GiB (offloaded)\n",
                format_gib(p.host_memory_bytes_per_node).c_str());
  }
  const TimeBreakdown& t = p.time;
  std::printf("step time: %s\n", format_seconds(p.step_time_s).c_str());
  const std::pair<const char*, double> time_rows[] = {{"attention", t.attention},
                                                      {"router", t.router},
                                                      {"dispatch", t.dispatch},
                                                      {"experts", t.experts},
                                                      {"combine", t.combine},
                                                      {"lm_head", t.lm_head},
                                                      {"recompute", t.recompute},
                                                      {"all_gather", t.all_gather},
                                                      {"reduce_scatter", t.reduce_scatter},
                                                      {"all_reduce", t.all_reduce},
                                                      {"pipeline", t.pipeline},
                                                      {"optimizer", t.optimizer},
                                                      {"offload", t.offload}};
  for (const auto& [name, seconds] : time_rows) {
    if (seconds > 0) std::printf("  %-22s %10s\n", name, format_seconds(seconds).c_str());
  }
  std::printf("  %-22s %10s (hidden behind compute)\n", "overlapped comm",
              format_seconds(t.overlapped_comm).c_str());
  std::printf("throughput: %s tokens/s (%s per device), %.1f TFLOPS per device, MFU %.1f%%\n",
              format_rate(p.tokens_per_s).c_str(), format_rate(p.tokens_per_s_per_device).c_str(),
              p.tflops_per_device, 100.0 * p.mfu);
  std::printf("cost: $%.4f per step, $%.0f per billion tokens\n", p.cost_per_step_usd,
              p.cost_per_billion_tokens_usd);
}

void run(const SimulateOptions& o) {
  Plan plan;
  if (!o.plan.empty()) {
    plan = read_plan_file(o.plan);
  } else {
    if (o.setup.model.empty() || o.setup.cluster.empty() || !o.setup.nodes) {
      throw InputError("simulate needs --plan FILE, or --model, --cluster and --nodes");
    }
    const Setup s = load_setup(o.setup);
    plan.model = s.model;
    plan.cluster = s.cluster;
    plan.train = s.train;
    plan.layout = to_layout(o.layout, s.cluster);
    if (auto r = check_layout(plan.model, plan.cluster, plan.train, plan.layout)) {
      throw InputError("layout " + describe(plan.layout) + " is not valid: " +
                       explain(*r, plan.model, plan.cluster, plan.train, plan.layout));
    }
  }
  const Prediction p = simulator::simulate(plan);
  if (o.json) {
    std::cout << prediction_json(plan.layout, p).dump(2) << "\n";
  } else {
    std::printf("moetune simulate: %s\n",
                describe_setup({plan.model, plan.cluster, plan.train}).c_str());
    print_prediction(plan, p);
  }
}

}  // namespace

void register_simulate(CLI::App& app) {
  auto o = std::make_shared<SimulateOptions>();
  CLI::App* cmd =
      app.add_subcommand("simulate", "predict memory, step time, MFU and cost of one layout");
  cmd->add_option("--plan", o->plan, "a plan.json to simulate");
  add_setup_options(*cmd, o->setup, false);
  add_layout_options(*cmd, o->layout);
  cmd->add_flag("--json", o->json, "print JSON");
  cmd->callback([o] { run(*o); });
}

}  // namespace moetune::cli
