// The `moetune` subcommands; each registers itself on the app and runs when chosen.
#pragma once

#include <CLI/CLI.hpp>

namespace moetune::cli {

void register_plan(CLI::App& app);
void register_simulate(CLI::App& app);
void register_explain(CLI::App& app);
void register_export(CLI::App& app);
void register_info(CLI::App& app);
void register_train(CLI::App& app);
void register_data(CLI::App& app);
void register_launch(CLI::App& app);
void register_calibrate(CLI::App& app);
void register_profile(CLI::App& app);
void register_tune(CLI::App& app);

}  // namespace moetune::cli
