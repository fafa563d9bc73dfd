// `moetune export`: a plan as Megatron-LM arguments or an SMP v2 configuration.
#include <cstdio>
#include <iostream>
#include <memory>

#include "cli/commands.hpp"
#include "core/json_reader.hpp"
#include "core/plan.hpp"
#include "planner/export.hpp"

namespace moetune::cli {

namespace {

struct ExportOptions {
  std::string plan;
  std::string format;
  std::string out;
};

void run(const ExportOptions& o) {
  const Plan plan = read_plan_file(o.plan);
  const planner::Export e =
      o.format == "megatron" ? planner::export_megatron(plan) : planner::export_smp(plan);
  for (const auto& note : e.notes)
    std::cerr << "moetune: note: " << note << "\n";
  if (o.out.empty()) {
    std::cout << e.text;
  } else {
    write_file_atomically(o.out, e.text);
  }
}

}  // namespace

void register_export(CLI::App& app) {
  auto o = std::make_shared<ExportOptions>();
  CLI::App* cmd =
      app.add_subcommand("export", "write a plan as Megatron-LM arguments or SMP v2 JSON");
  cmd->add_option("--plan", o->plan, "plan.json")->required();
  cmd->add_option("--format", o->format, "megatron or smp")
      ->required()
      ->check(CLI::IsMember({"megatron", "smp"}));
  cmd->add_option("--out", o->out, "write to this file instead of standard output");
  cmd->callback([o] { run(*o); });
}

}  // namespace moetune::cli
