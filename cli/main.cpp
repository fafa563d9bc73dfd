// moetune: plan, simulate, explain and export parallel layouts for MoE training.
#include <CLI/CLI.hpp>

#include <iostream>

#include "cli/commands.hpp"
#include "core/error.hpp"

int main(int argc, char** argv) {
  CLI::App app{"moetune: plans and runs parallel layouts for training Mixture-of-Experts models"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "moetune 0.1.0");
  moetune::cli::register_plan(app);
  moetune::cli::register_simulate(app);
  moetune::cli::register_explain(app);
  moetune::cli::register_export(app);
  moetune::cli::register_info(app);
  moetune::cli::register_train(app);
  moetune::cli::register_data(app);
  moetune::cli::register_launch(app);
  moetune::cli::register_calibrate(app);
  moetune::cli::register_profile(app);
  moetune::cli::register_tune(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "moetune: error: " << e.what() << " (see moetune --help)\n";
    return 2;
  } catch (const moetune::InputError& e) {
    std::cerr << "moetune: error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "moetune: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
