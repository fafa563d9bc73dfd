// `moetune train`: trains the Mixtral model of a plan (or of --model on this machine's CPU) and
// writes run.jsonl, checkpoints and, on request, a Hugging Face model folder.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <thread>

#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "core/error.hpp"
#include "executor/backend.hpp"
#include "executor/batches.hpp"
#include "executor/comm/inproc_communicator.hpp"
#include "executor/trainer.hpp"
#include "kernels/cpu/parallel.hpp"
#ifdef MOETUNE_HAVE_MPI
#include "executor/comm/mpi_communicator.hpp"
#endif

namespace moetune::cli {

namespace {

struct TrainCmdOptions {
  std::string plan;
  SetupOptions setup;
  LayoutOptions layout;
  std::int64_t steps = 100;
  std::string data, checkpoint_dir, metrics, init_from, export_hf;
  std::int64_t checkpoint_every = 0;
  bool resume = false;
  bool quiet = false;
  bool in_process = false;  // the plan's ranks as threads of this process
  std::string backend;      // cpu or cuda; empty: cuda for a GPU plan, else cpu
};

std::string clock_text(double seconds) {
  const auto s = static_cast<long long>(std::max(0.0, seconds));
  char buf[32];
  std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", s / 3600, (s / 60) % 60, s % 60);
  return buf;
}

Plan plan_from_flags(const TrainCmdOptions& o) {
  SetupOptions setup = o.setup;
  if (setup.cluster.empty()) setup.cluster = "cpu-local";
  if (!setup.nodes) setup.nodes = 1;
  if (!setup.devices_per_node && setup.cluster == "cpu-local") setup.devices_per_node = 1;
  const Setup s = load_setup(setup);
  Plan plan;
  plan.model = s.model;
  plan.cluster = s.cluster;
  plan.train = s.train;
  plan.layout = to_layout(o.layout, s.cluster);
  if (!o.layout.micro_batch) {
    // No accumulation: each data-parallel rank takes its share of the global batch at once.
    const std::int64_t dp = plan.layout.dp();
    if (s.train.global_batch % dp != 0) {
      throw InputError("the global batch of " + std::to_string(s.train.global_batch) +
                       " sequences does not split over " + std::to_string(dp) +
                       " data-parallel ranks; give --global-batch a multiple of " +
                       std::to_string(dp) + " or set --micro-batch");
    }
    plan.layout.micro_batch = s.train.global_batch / dp;
  }
  return plan;
}

// With --plan, the optimizer flags adjust the plan's schedule; everything else comes from the plan.
Plan plan_from_file(const TrainCmdOptions& o, const CLI::App& cmd) {
  for (const char* flag : {"--cluster",
                           "--nodes",
                           "--devices-per-node",
                           "--seq",
                           "--global-batch",
                           "--precision",
                           "--load-balancing",
                           "--aux-loss-coef",
                           "--z-loss-coef",
                           "--capacity-factor",
                           "--dispatcher",
                           "--seed",
                           "--tp",
                           "--pp",
                           "--vpp",
                           "--ep",
                           "--hs",
                           "--order",
                           "--micro-batch",
                           "--recompute",
                           "--optimizer-offload",
                           "--activation-offload",
                           "--distributed-optimizer",
                           "--first-stage-layers",
                           "--last-stage-layers"}) {
    if (cmd.count(flag) > 0) {
      throw InputError(std::string("train --plan takes the model, cluster, batch and layout from "
                                   "the plan; leave out ") +
                       flag + " or plan again");
    }
  }
  Plan plan = read_plan_file(o.plan);
  apply_optimizer_flags(o.setup, plan.train.optimizer, false);
  return plan;
}

// The progress line while training and the summary line after it, for either backend.
class Progress {
 public:
  Progress(const TrainCmdOptions& o, std::int64_t first_step, bool show)
      : steps_(o.steps), first_step_(first_step), show_(show) {}

  void on_step(const StepRecord& r) {
    if (first_loss_ < 0) first_loss_ = r.loss;
    last_loss_ = r.loss;
    elapsed_ += r.step_time_s;
    rates_.push_back(r.tokens_per_s);
    if (show_) {
      const double per_step = elapsed_ / static_cast<double>(r.step - first_step_);
      std::fprintf(stderr, "\rstep %lld/%lld  loss %.4f  aux %.3f  %.0f tokens/s  ETA %s   ",
                   static_cast<long long>(r.step), static_cast<long long>(steps_), r.loss,
                   r.aux_loss, r.tokens_per_s,
                   clock_text(per_step * static_cast<double>(steps_ - r.step)).c_str());
    }
  }

  void summary(const Plan& plan, std::int64_t last_step, const char* where) {
    if (show_) std::fprintf(stderr, "\n");
    if (rates_.empty()) {
      std::printf("nothing to do: the checkpoint is already at step %lld of %lld\n",
                  static_cast<long long>(last_step), static_cast<long long>(steps_));
      return;
    }
    std::sort(rates_.begin(), rates_.end());
    std::printf(
        "trained %s (%s, %s) for steps %lld-%lld: loss %.4f -> %.4f, median %.0f tokens/s\n",
        plan.model.name.c_str(), describe(plan.layout).c_str(), where,
        static_cast<long long>(first_step_ + 1), static_cast<long long>(last_step), first_loss_,
        last_loss_, rates_[rates_.size() / 2]);
  }

 private:
  std::int64_t steps_, first_step_;
  bool show_;
  double first_loss_ = -1, last_loss_ = 0, elapsed_ = 0;
  std::vector<double> rates_;
};

executor::TrainOptions train_options(const TrainCmdOptions& o) {
  executor::TrainOptions t;
  t.steps = o.steps;
  t.data = o.data;
  t.checkpoint_dir = o.checkpoint_dir;
  t.checkpoint_every = o.checkpoint_every;
  t.resume = o.resume;
  t.metrics = o.metrics;
  t.init_from = o.init_from;
  t.export_hf = o.export_hf;
  return t;
}

// The GPU of this rank on its node: the launcher's node-local rank (mpirun or srun).
int local_device() {
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID"}) {
    if (const char* v = std::getenv(var); v != nullptr) return std::atoi(v);
  }
  return 0;
}

std::string where_text(const Plan& plan, const std::string& backend, bool in_process) {
  const std::int64_t ranks = plan.layout.world_size();
  std::string where = std::to_string(ranks) + (ranks == 1 ? " rank" : " ranks");
  if (in_process && ranks > 1) where += " in one process";
  if (backend == "cuda") where += ranks == 1 || in_process ? " on 1 GPU" : " on GPUs";
  return where;
}

// --in-process: the plan's W ranks as W threads of this process, each with its own backend (on
// the CUDA backend all on GPU 0, each with its own stream), talking through the in-process
// communicator: a multi-rank plan on one machine without MPI, or on one GPU.
void run_in_process(const TrainCmdOptions& o, const Plan& plan, const std::string& backend_name,
                    const executor::TrainOptions& t) {
  const int w = static_cast<int>(plan.layout.world_size());
  if (backend_name == "cpu") {
    // The ranks share this machine's cores.
    const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    kernels::cpu::set_kernel_threads(std::max(1, cores / w));
  }
  executor::InprocWorld world(w);
  std::optional<Progress> progress;
  std::int64_t last_step = 0;
  executor::run_inproc_ranks(world, [&](int rank) {
    const std::unique_ptr<executor::Backend> backend = executor::make_backend(backend_name, 0);
    executor::ProcessGroups groups = executor::make_inproc_groups(
        world, plan.layout, plan.cluster.devices_per_node, rank, backend.get());
    executor::Trainer trainer(plan, t, &groups, backend.get());
    if (rank != 0) {
      trainer.run();
      return;
    }
    progress.emplace(o, trainer.step(), !o.quiet && ::isatty(STDERR_FILENO) != 0);
    trainer.run([&](const StepRecord& r) { progress->on_step(r); });
    last_step = trainer.step();
  });
  progress->summary(plan, last_step, where_text(plan, backend_name, true).c_str());
}

void run(const TrainCmdOptions& o, const CLI::App& cmd) {
  if (o.plan.empty() == o.setup.model.empty()) {
    throw InputError("train needs either --plan FILE or --model M");
  }
  const Plan plan = o.plan.empty() ? plan_from_flags(o) : plan_from_file(o, cmd);
  const bool gpu_plan = plan.cluster.device.kind == DeviceKind::Gpu;
  const std::string backend_name = !o.backend.empty() ? o.backend : (gpu_plan ? "cuda" : "cpu");
  const executor::TrainOptions t = train_options(o);
  if (o.in_process) {
    run_in_process(o, plan, backend_name, t);
    return;
  }
  // A plan for several ranks trains under MPI: `mpirun -np W moetune train --plan plan.json`,
  // each rank on its own backend (CPU ranks over MPI; one GPU per rank over NCCL).
  int rank = 0;
#ifdef MOETUNE_HAVE_MPI
  std::unique_ptr<executor::MpiRuntime> mpi;  // finalises MPI after the groups below are freed
  const bool several = executor::MpiRuntime::launched_with_several_ranks();
#else
  const bool several = false;
#endif
  const int device = backend_name == "cuda" ? local_device() : 0;
  std::unique_ptr<executor::Backend> backend = executor::make_backend(backend_name, device);
  executor::ProcessGroups groups;
  executor::ProcessGroups* group_ptr = nullptr;
  if (several) {
#ifdef MOETUNE_HAVE_MPI
    mpi = std::make_unique<executor::MpiRuntime>(nullptr, nullptr);
    if (backend_name == "cpu") {
      groups = executor::make_mpi_groups(plan.layout, plan.cluster.devices_per_node);
    } else {
      groups = executor::make_device_groups(*backend, plan.layout, plan.cluster.devices_per_node);
    }
    group_ptr = &groups;
    rank = groups.world->rank();
#endif
  }
  executor::Trainer trainer(plan, t, group_ptr, backend.get());
  Progress progress(o, trainer.step(), rank == 0 && !o.quiet && ::isatty(STDERR_FILENO) != 0);
  trainer.run([&](const StepRecord& r) { progress.on_step(r); });
  if (rank != 0) return;
  progress.summary(plan, trainer.step(), where_text(plan, backend_name, false).c_str());
}

}  // namespace

void register_train(CLI::App& app) {
  auto o = std::make_shared<TrainCmdOptions>();
  CLI::App* cmd = app.add_subcommand("train", "train the Mixtral model of a plan on this machine");
  cmd->add_option("--plan", o->plan, "plan.json to train");
  add_setup_options(*cmd, o->setup, false);
  add_layout_options(*cmd, o->layout);
  cmd->add_option("--steps", o->steps, "optimizer steps to reach")
      ->check(at_least_one())
      ->capture_default_str();
  cmd->add_option("--data", o->data, "token file (default: the synthetic corpus)");
  cmd->add_option("--checkpoint-dir", o->checkpoint_dir, "folder for step-NNNNNNNN checkpoints");
  cmd->add_option("--checkpoint-every", o->checkpoint_every,
                  "steps between checkpoints (0: at the end)");
  cmd->add_flag("--resume", o->resume, "continue from the newest checkpoint in --checkpoint-dir");
  cmd->add_option("--metrics", o->metrics, "write run.jsonl here");
  cmd->add_option("--init-from", o->init_from,
                  "Hugging Face safetensors (file or folder) to start from");
  cmd->add_option("--export-hf", o->export_hf,
                  "write config.json + model.safetensors here at the end");
  cmd->add_flag("--quiet", o->quiet, "no progress line");
  cmd->add_flag("--in-process", o->in_process,
                "run the plan's ranks as threads of this process (CPU, or all on GPU 0)");
  cmd->add_option(
         "--backend", o->backend,
         "cpu or cuda (one GPU per rank); default: cuda for a plan on a GPU cluster, else cpu")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  cmd->callback([o, cmd] { run(*o, *cmd); });
}

}  // namespace moetune::cli
