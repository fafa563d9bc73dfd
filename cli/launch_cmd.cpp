// `moetune launch`: runs a plan's training on all its ranks through a real launcher — mpirun on
// this machine (`local`) or on a hostfile (`mpirun`), or an sbatch script for Slurm (`slurm`).
// Arguments after `--` go to every rank's `moetune train`. Commands are run without a shell;
// scripts quote every argument, and nothing from the plan becomes shell text.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "core/error.hpp"
#include "core/json_reader.hpp"
#include "executor/backend.hpp"
#include "executor/trainer.hpp"

namespace moetune::cli {

namespace {

namespace fs = std::filesystem;

struct LaunchOptions {
  std::string plan;
  std::string launcher = "local";
  std::string hostfile;
  std::string script;
  bool dry_run = false;
  std::vector<std::string> train_args;
};

std::string shell_quote(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                        "0123456789_-+=./:,@%") == std::string::npos) {
    return s;
  }
  std::string out = "'";
  for (char c : s)
    out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string join_quoted(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& a : argv)
    out += (out.empty() ? "" : " ") + shell_quote(a);
  return out;
}

std::string self_path() {
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string("moetune") : exe.string();
}

bool on_path(const std::string& program) {
  const char* path = std::getenv("PATH");
  if (path == nullptr) return false;
  std::string dirs = path;
  std::size_t start = 0;
  while (start <= dirs.size()) {
    const std::size_t end = dirs.find(':', start);
    const fs::path candidate =
        fs::path(dirs.substr(start, end == std::string::npos ? std::string::npos : end - start)) /
        program;
    if (::access(candidate.c_str(), X_OK) == 0) return true;
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return false;
}

// Replaces this process with the command (no shell); returns only if exec fails.
[[noreturn]] void exec(const std::vector<std::string>& argv) {
  std::fflush(stdout);
  std::vector<char*> raw;
  for (const auto& a : argv)
    raw.push_back(const_cast<char*>(a.c_str()));
  raw.push_back(nullptr);
  ::execvp(raw[0], raw.data());
  throw InputError("cannot start " + argv[0] + ": " + std::strerror(errno));
}

std::vector<std::string> train_command(const LaunchOptions& o, const std::string& plan_path,
                                       const std::string& backend) {
  std::vector<std::string> argv = {self_path(), "train", "--plan", plan_path, "--backend", backend};
  argv.insert(argv.end(), o.train_args.begin(), o.train_args.end());
  return argv;
}

void run(const LaunchOptions& o) {
  const Plan plan = read_plan_file(o.plan);  // validated: a bad plan stops here
  const std::string plan_path = fs::absolute(o.plan).string();
  const std::int64_t world = plan.layout.world_size();
  const std::int64_t per_node = plan.cluster.devices_per_node;
  // What the executor cannot run is refused here, before a script is written or a rank starts:
  // every rank would stop with the same line.
  const bool gpu = plan.cluster.device.kind == DeviceKind::Gpu;
  const std::string backend = gpu ? "cuda" : "cpu";
  executor::check_runnable(plan, backend, world);
  executor::check_backend_supports(backend, plan.model, plan.train.moe);
  if (gpu && world > 1 && !executor::device_groups_available()) {
    throw InputError("a plan of " + std::to_string(world) +
                     " GPUs trains over NCCL, which this moetune was built without");
  }
  std::vector<std::string> argv;
  if (o.launcher == "local") {
    if (plan.cluster.nodes != 1) {
      throw InputError("--launcher local runs one node, but the plan has " +
                       std::to_string(plan.cluster.nodes) +
                       " nodes; use --launcher mpirun --hostfile FILE or --launcher slurm");
    }
    if (world > 1 && !gpu) {
      const auto cores =
          static_cast<std::int64_t>(std::max(1u, std::thread::hardware_concurrency()));
      const std::int64_t threads = std::max<std::int64_t>(1, cores / world);
      argv = {"mpirun", "-np", std::to_string(world)};
      if (::geteuid() == 0) argv.push_back("--allow-run-as-root");
      if (world > cores) argv.push_back("--oversubscribe");
      for (const std::string& env : {"MOETUNE_NUM_THREADS=" + std::to_string(threads),
                                     "OPENBLAS_NUM_THREADS=" + std::to_string(threads)}) {
        argv.push_back("-x");
        argv.push_back(env);
      }
    } else if (world > 1) {
      // One rank per GPU of this node; each rank takes GPU OMPI_COMM_WORLD_LOCAL_RANK.
      argv = {"mpirun", "-np", std::to_string(world)};
      if (::geteuid() == 0) argv.push_back("--allow-run-as-root");
    }
    const auto train = train_command(o, plan_path, backend);
    argv.insert(argv.end(), train.begin(), train.end());
  } else if (o.launcher == "mpirun") {
    if (o.hostfile.empty()) {
      throw InputError("--launcher mpirun needs --hostfile FILE listing the plan's " +
                       std::to_string(plan.cluster.nodes) + " nodes");
    }
    argv = {"mpirun",
            "-np",
            std::to_string(world),
            "--hostfile",
            o.hostfile,
            "--map-by",
            "ppr:" + std::to_string(per_node) + ":node"};
    const auto train = train_command(o, plan_path, backend);
    argv.insert(argv.end(), train.begin(), train.end());
  } else {  // slurm
    const std::string script =
        o.script.empty() ? "moetune-" + plan.model.name + ".sbatch" : o.script;
    const std::string job = "moetune-" + plan.model.name;
    std::string text = "#!/bin/bash\n";
    text += "# Written by moetune launch for " + plan_path + "\n";
    text += "# " + plan.model.name + ", " + describe(plan.layout) + ", on " +
            std::to_string(plan.cluster.nodes) + " x " + std::to_string(per_node) + " " +
            plan.cluster.device.name + " (" + plan.cluster.name + "), " + backend + " backend\n";
    text += "#SBATCH --job-name=" + shell_quote(job) + "\n";
    text += "#SBATCH --nodes=" + std::to_string(plan.cluster.nodes) + "\n";
    text += "#SBATCH --ntasks-per-node=" + std::to_string(per_node) + "\n";
    if (gpu) text += "#SBATCH --gpus-per-node=" + std::to_string(per_node) + "\n";
    text += "#SBATCH --exclusive\n";
    text += "#SBATCH --output=" + shell_quote(job + "-%j.out") + "\n";
    text += "set -euo pipefail\n";
    if (gpu) {
      text +=
          "# One rank per GPU: each takes GPU $SLURM_LOCALID; NCCL is bootstrapped through MPI,\n";
      text += "# which srun starts with PMIx.\n";
    }
    text += "srun --mpi=pmix " + join_quoted(train_command(o, plan_path, backend)) + "\n";
    write_file_atomically(script, text);
    fs::permissions(script, fs::perms::owner_exec | fs::perms::group_exec | fs::perms::others_exec,
                    fs::perm_options::add);
    if (o.dry_run || !on_path("sbatch")) {
      std::printf("wrote %s%s\n", script.c_str(),
                  o.dry_run ? "" : " (sbatch is not on PATH: submit it where Slurm runs)");
      return;
    }
    argv = {"sbatch", script};
  }
  if (o.dry_run) {
    std::printf("%s\n", join_quoted(argv).c_str());
    return;
  }
  exec(argv);
}

}  // namespace

void register_launch(CLI::App& app) {
  auto o = std::make_shared<LaunchOptions>();
  CLI::App* cmd = app.add_subcommand(
      "launch",
      "train a plan on all its ranks with mpirun or Slurm (arguments after -- go to train)");
  cmd->add_option("--plan", o->plan, "plan.json")->required();
  cmd->add_option("--launcher", o->launcher, "local, mpirun or slurm")
      ->check(CLI::IsMember({"local", "mpirun", "slurm"}))
      ->capture_default_str();
  cmd->add_option("--hostfile", o->hostfile, "MPI hostfile (launcher mpirun)");
  cmd->add_option("--script", o->script, "sbatch script to write (launcher slurm)");
  cmd->add_flag("--dry-run", o->dry_run, "print the command (or write the script) without running");
  cmd->add_option("train_args", o->train_args, "arguments for every rank's `moetune train`");
  cmd->callback([o] { run(*o); });
}

}  // namespace moetune::cli
