// `moetune simulate`: the prediction for one layout, from a plan.json or from flags.
#include <cstdio>
#include <iostream>
#include <map>
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
  bool timeline = false;
};

// One micro-batch on the first pipeline stage, layer by layer: when each layer's forward and
// backward ran on the compute stream, and how long communication streams were busy for it.
void print_timeline(const std::vector<simulator::TimelineOp>& ops) {
  struct Row {
    double fwd_start = 1e300, fwd_end = 0, bwd_start = 1e300, bwd_end = 0, comm = 0;
  };
  std::map<std::int32_t, Row> rows;
  for (const auto& op : ops) {
    Row& r = rows[op.layer];
    if (op.stream == "compute") {
      if (op.backward) {
        r.bwd_start = std::min(r.bwd_start, op.start_s);
        r.bwd_end = std::max(r.bwd_end, op.end_s);
      } else {
        r.fwd_start = std::min(r.fwd_start, op.start_s);
        r.fwd_end = std::max(r.fwd_end, op.end_s);
      }
    } else {
      r.comm += op.end_s - op.start_s;
    }
  }
  std::printf("timeline of one micro-batch on stage 0 (ms; -1 = embedding and LM head):\n");
  std::printf("%6s %10s %10s %10s %10s %10s\n", "layer", "fwd start", "fwd end", "bwd start",
              "bwd end", "comm busy");
  for (const auto& [layer, r] : rows) {
    auto ms = [](double s) { return s >= 1e299 ? -1.0 : s * 1e3; };
    std::printf("%6d %10.2f %10.2f %10.2f %10.2f %10.2f\n", layer, ms(r.fwd_start), ms(r.fwd_end),
                ms(r.bwd_start), ms(r.bwd_end), r.comm * 1e3);
  }
}

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
  for (const std::string& name : time_phase_names()) {
    const double seconds = *phase_seconds(t, name);
    if (seconds > 0) std::printf("  %-22s %10s\n", name.c_str(), format_seconds(seconds).c_str());
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
    Json j = prediction_json(plan.layout, p);
    if (o.timeline) {
      Json ops = Json::array();
      const simulator::Simulator sim(plan.model, plan.cluster, plan.train);
      for (const auto& op : sim.timeline(plan.layout)) {
        ops.push_back({{"phase", op.phase},
                       {"stream", op.stream},
                       {"layer", op.layer},
                       {"backward", op.backward},
                       {"start_s", op.start_s},
                       {"end_s", op.end_s}});
      }
      j["timeline"] = ops;
    }
    std::cout << j.dump(2) << "\n";
  } else {
    std::printf("moetune simulate: %s\n",
                describe_setup({plan.model, plan.cluster, plan.train}).c_str());
    print_prediction(plan, p);
    if (o.timeline) {
      const simulator::Simulator sim(plan.model, plan.cluster, plan.train);
      print_timeline(sim.timeline(plan.layout));
    }
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
  cmd->add_flag("--timeline", o->timeline,
                "also print one micro-batch's schedule, layer by layer (every op with --json)");
  cmd->callback([o] { run(*o); });
}

}  // namespace moetune::cli
