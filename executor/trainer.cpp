// The training loop: set-up, one optimizer step, gradient reduction and the optimizer.
#include "executor/trainer.hpp"

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "core/constraints.hpp"
#include "core/error.hpp"
#include "executor/io/safetensors.hpp"
#include "executor/schedule.hpp"
#include "kernels/cpu/optimizer.hpp"

namespace moetune::executor {

namespace k = moetune::kernels::cpu;

void check_runnable(const Plan& plan, const std::string& backend, std::int64_t ranks) {
  const Layout& l = plan.layout;
  if (l.pp > 1) {
    throw InputError("the executor runs pp = 1 (no pipeline stages yet); this plan has pp=" +
                     std::to_string(l.pp) + ": plan again with --pp 1");
  }
  if (plan.model.family != ModelFamily::Mixtral) {
    throw InputError("the executor trains Mixtral models; " + plan.model.name + " is " +
                     to_string(plan.model.family));
  }
  if (plan.model.tie_word_embeddings) {
    throw InputError(
        "the executor needs an untied LM head (tie_word_embeddings false), as Mixtral");
  }
  if (backend == "cpu" &&
      (plan.cluster.device.kind != DeviceKind::Cpu || plan.train.precision != Precision::Fp32)) {
    throw InputError("this plan is for " + plan.cluster.device.name + " in " +
                     to_string(plan.train.precision) +
                     "; the CPU backend trains fp32 plans for a cpu cluster such as cpu-local");
  }
  if (backend == "cuda" && plan.train.precision != Precision::Bf16) {
    throw InputError("the CUDA backend trains in bf16; this plan is " +
                     to_string(plan.train.precision) + ": plan again with --precision bf16");
  }
  if (l.optimizer_offload || l.activation_offload) {
    throw InputError("the executor does not offload to host memory yet; this plan offloads the " +
                     std::string(l.optimizer_offload ? "optimizer" : "activations") +
                     ": plan again without offloading");
  }
  if (plan.train.moe.force_balanced) {
    throw InputError(
        "this plan forces balanced routing, a benchmark setting only the simulator models; the "
        "executor trains real routing (plan again without --force-balanced)");
  }
  if (l.world_size() != ranks) {
    throw InputError("this plan has " + std::to_string(l.world_size()) + " ranks but " +
                     std::to_string(ranks) +
                     (ranks == 1 ? " process runs it; start it with `mpirun -np " +
                                       std::to_string(l.world_size()) + " moetune train ...`"
                                 : " ranks run it"));
  }
  if (auto r = check_layout(plan.model, plan.cluster, plan.train, plan.layout)) {
    throw InputError("layout " + describe(l) +
                     " is not valid: " + explain(*r, plan.model, plan.cluster, plan.train, l));
  }
}

Trainer::Trainer(const Plan& plan, const TrainOptions& options, ProcessGroups* groups,
                 Backend* backend)
    : plan_(plan), options_(options), groups_(groups) {
  if (backend == nullptr) {
    own_backend_ = make_cpu_backend();
    backend = own_backend_.get();
  }
  be_ = backend;
  const std::int64_t ranks = groups_ != nullptr ? groups_->world->size() : 1;
  check_runnable(plan_, be_->name(), ranks);
  if (ranks > 1 && !options_.export_hf.empty()) {
    throw InputError("--export-hf writes the whole model from one process; each of the " +
                     std::to_string(ranks) +
                     " ranks holds only its part (train on one rank or "
                     "export from a checkpoint)");
  }
  if (groups_ != nullptr) {
    dp_rank_ = (*groups_)[Group::DataParallel].rank();
    dp_size_ = (*groups_)[Group::DataParallel].size();
  }
  if (options_.steps < 1) throw InputError("--steps must be at least 1");
  if (options_.resume && options_.checkpoint_dir.empty()) {
    throw InputError("--resume needs --checkpoint-dir");
  }
  accum_ = grad_accum_steps(plan_.train, plan_.layout);
  ModelParallel parallel;
  if (groups_ != nullptr && plan_.layout.tp > 1) parallel.tp = &(*groups_)[Group::Tp];
  if (groups_ != nullptr && plan_.layout.ep > 1) parallel.ep = &(*groups_)[Group::Ep];
  model_ = std::make_unique<MixtralModel>(*be_, plan_.model, plan_.train.moe,
                                          plan_.layout.micro_batch, plan_.train.seq_len, parallel,
                                          plan_.layout.recompute == Recompute::Full);
  initialise();
  const bool resumed = options_.resume && resume();
  if (!options_.batch_source) load_data();
  const std::int64_t tokens = plan_.layout.micro_batch * plan_.train.seq_len;
  ids_.assign(static_cast<std::size_t>(tokens), 0);
  targets_.assign(static_cast<std::size_t>(tokens), 0);
  if (!options_.metrics.empty()) {
    const int rank = groups_ != nullptr ? groups_->world->rank() : 0;
    const RunHeader header = run_header_here(plan_, be_->name(), rank, ranks, 1);
    // Rank 0 writes the file named; every other rank a copy tagged with its rank.
    std::filesystem::path file = options_.metrics;
    if (rank > 0) file += ".rank" + std::to_string(rank);
    log_ = std::make_unique<RunLogWriter>(file, header, resumed);
  }
}

Trainer::~Trainer() = default;

// The parameters start as the seeded initialisation (or a Hugging Face checkpoint) on the host,
// the same for every layout; each rank keeps its block (and with hs > 1 only its shards).
void Trainer::initialise() {
  Backend& be = *be_;
  const ParameterLayout& layout = model_->layout();
  const DType act = be.act_type();
  std::vector<float> host(static_cast<std::size_t>(layout.numel()));
  initialise_parameters(layout, host.data(), plan_.train.seed);
  if (!options_.init_from.empty()) {
    SafetensorsReader reader(options_.init_from);
    for (const ParamTensor& t : layout.tensors()) {
      std::int64_t full = 1;
      for (std::int64_t d : t.full_shape)
        full *= d;
      std::vector<float> values(static_cast<std::size_t>(full));
      reader.read(t.name, values.data(), t.full_shape);
      layout.take_block(t, values.data(), host.data() + t.offset);
    }
  }
  if (groups_ != nullptr && plan_.layout.hs > 1) {
    hs_size_ = (*groups_)[Group::Hs].size();
    hs_rank_ = (*groups_)[Group::Hs].rank();
    Communicator* tp = plan_.layout.tp > 1 ? &(*groups_)[Group::Tp] : nullptr;
    sharded_ =
        std::make_unique<ShardedParameters>(be, layout, plan_.model, (*groups_)[Group::Hs], tp);
    units_ = sharded_->units();
  } else {
    units_ = shard_units(layout, plan_.model, 1);
    master_.resize(be, layout.numel(), DType::F32);
    if (act != DType::F32) working_.resize(be, layout.numel(), act);
    grads_.resize(be, layout.numel(), DType::F32);
    be.zero(grads_.data(), grads_.bytes());
  }
  std::int64_t adam_floats = state_floats();
  if (groups_ != nullptr && plan_.layout.distributed_optimizer) {
    Communicator& dense = (*groups_)[Group::DenseReplicate];
    Communicator& expert = (*groups_)[Group::ExpertReplicate];
    if (dense.size() > 1 || expert.size() > 1) {
      dist_opt_ =
          std::make_unique<DistributedOptimizer>(be, units_, sharded_ != nullptr, dense, expert);
      adam_floats = dist_opt_->owned_floats();
    }
  }
  adam_m_.resize(be, adam_floats, DType::F32);
  adam_v_.resize(be, adam_floats, DType::F32);
  if (sharded_) {
    std::vector<float> shards(static_cast<std::size_t>(state_floats()));
    take_shards(units_, hs_rank_, host.data(), shards.data());
    host.swap(shards);
  }
  be.copy_from_host(state_params(), host.data(), host.size() * sizeof(float));
  if (void* working = state_working(); working != nullptr) {
    be.cast(working, act, state_params(), DType::F32, state_floats());
  }
  be.zero(adam_m_.data(), adam_m_.bytes());
  be.zero(adam_v_.data(), adam_v_.bytes());

  // Segments of the gradient norm: elements [index, index + count) of unit u's part of the
  // state vector, found at `at`, split by the tensors they overlap.
  auto add = [&](const ShardUnit& u, std::int64_t at, std::int64_t index, std::int64_t count) {
    const std::int64_t from = u.begin + hs_rank_ * u.shard + index;
    const std::int64_t to = std::min(u.end, from + count);
    for (const ParamTensor& t : layout.tensors()) {
      const std::int64_t lo = std::max(from, t.offset), hi = std::min(to, t.offset + t.numel);
      if (lo >= hi) continue;
      const int cls = t.is_expert ? 2 : (t.split == TpSplit::None ? 0 : 1);
      norm_segments_.push_back({at + (lo - from), hi - lo, cls});
    }
  };
  if (dist_opt_) {
    for (const DistributedOptimizer::Owned& c : dist_opt_->owned())
      add(units_[static_cast<std::size_t>(c.unit)], c.at, c.index, c.count);
  } else {
    for (const ShardUnit& u : units_)
      add(u, sharded_ ? u.shard_offset : u.begin, 0, u.shard);
  }
}

void Trainer::load_data() {
  batches_ = std::make_unique<TokenBatches>(options_.data,
                                            static_cast<std::uint64_t>(plan_.model.vocab_size),
                                            plan_.train.seq_len, plan_.train.seed);
}

void Trainer::fill_micro_batch(std::int64_t step, std::int64_t micro) {
  if (options_.batch_source) {
    options_.batch_source(step, micro, ids_.data(), targets_.data());
    return;
  }
  batches_->fill(step, micro, dp_rank_, dp_size_, plan_.layout.micro_batch,
                 plan_.train.global_batch, ids_.data(), targets_.data());
}

float* Trainer::state_params() {
  return sharded_ ? sharded_->master() : master_.f32();
}

void* Trainer::state_working() {
  if (sharded_) return sharded_->separate_working() ? sharded_->working() : nullptr;
  return working_.empty() ? nullptr : working_.data();
}

float* Trainer::state_grads() {
  return sharded_ ? sharded_->grad_shard() : grads_.f32();
}

std::int64_t Trainer::state_floats() const {
  return sharded_ ? sharded_->shard_floats() : master_.count();
}

StepRecord Trainer::train_step() {
  Backend& be = *be_;
  const auto start = std::chrono::steady_clock::now();
  StepRecord rec;
  if (sharded_) {
    sharded_->zero_grad();
  } else {
    be.zero(grads_.data(), grads_.bytes());
  }
  FlatParameters flat(working_.empty() ? master_.data() : working_.data(), be.act_type(),
                      grads_.f32());
  ParameterAccess& access = sharded_ ? static_cast<ParameterAccess&>(*sharded_) : flat;
  // The loss is the mean over micro-batches and data-parallel ranks; so is the load-balancing
  // loss, each micro-batch's own.
  const double scale = 1.0 / static_cast<double>(accum_ * dp_size_);
  model_->set_timing(true);
  for (std::int64_t micro = 0; micro < accum_; ++micro) {
    fill_micro_batch(step_, micro);
    const MicroBatchLoss loss = model_->forward(access, ids_.data(), targets_.data());
    model_->backward(access, scale);
    rec.loss += loss.ce * scale;
    rec.aux_loss += loss.aux * scale;
    rec.z_loss += loss.z * scale;
    rec.dropped_tokens += model_->dropped_slots();
    add_tokens_per_expert(rec, model_->tokens_per_expert());
  }
  if (dp_size_ > 1) {
    double sums[3] = {rec.loss, rec.aux_loss, rec.z_loss};
    (*groups_)[Group::DataParallel].all_reduce_host(sums, 3);
    rec.loss = sums[0];
    rec.aux_loss = sums[1];
    rec.z_loss = sums[2];
  }
  reduce_gradients();
  {
    Phase phase(&be, "optimizer");
    rec.grad_norm = global_grad_norm();
    if (!std::isfinite(rec.grad_norm)) {
      throw InputError("step " + std::to_string(step_ + 1) +
                       ": the gradient norm is not finite (loss " + std::to_string(rec.loss) +
                       "); lower the learning rate or check the data");
    }
    const double clip = k::clip_scale(rec.grad_norm, plan_.train.optimizer.grad_clip);
    rec.lr = learning_rate(plan_.train.optimizer, step_);
    optimizer_step(rec.lr, clip);
  }
  be.synchronize();
  ++step_;
  rec.step = step_;
  rec.tokens = plan_.train.tokens_per_step();
  rec.step_time_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  rec.tokens_per_s = static_cast<double>(rec.tokens) / rec.step_time_s;
  rec.phases_s = be.collect_phases();
  if (groups_ != nullptr) {
    // Time and bytes per collective kind over every group this rank talks in, for this step.
    auto collect = [&](Communicator& c, const std::string& group) {
      for (const auto& [kind, r] : c.stats()) {
        CollectiveRecord& out = rec.collectives[group + "." + kind];
        out.calls += r.calls;
        out.bytes += r.bytes;
        out.seconds += r.seconds;
      }
      c.reset_stats();
    };
    collect(*groups_->world, "world");
    for (auto& [kind, comm] : groups_->groups)
      collect(*comm, to_string(kind));
  }
  const StateBytes state = state_bytes();
  const auto activations = static_cast<double>(model_->activation_bytes());
  rec.peak_memory_bytes = state.parameters + state.gradients + state.optimizer +
                          state.gathered_parameters + activations;
  rec.memory = StepMemory{state.parameters, state.gradients, state.optimizer,
                          state.gathered_parameters, activations};
  return rec;
}

Trainer::StateBytes Trainer::state_bytes() const {
  StateBytes b;
  b.optimizer = static_cast<double>(adam_m_.bytes() + adam_v_.bytes());
  if (sharded_) {
    const double floats = static_cast<double>(sharded_->shard_floats());
    b.parameters = 4.0 * floats;
    if (sharded_->separate_working()) {
      b.parameters += floats * static_cast<double>(dtype_size(be_->act_type()));
    }
    b.gradients = 4.0 * floats + sharded_->gradient_slot_bytes();
    b.gathered_parameters = sharded_->gathered_bytes();
  } else {
    b.parameters = static_cast<double>(master_.bytes() + working_.bytes());
    b.gradients = static_cast<double>(grads_.bytes());
  }
  return b;
}

std::vector<float> Trainer::params() const {
  MOETUNE_CHECK(!sharded_, "params() holds whole parameters only without sharding");
  std::vector<float> out(static_cast<std::size_t>(master_.count()));
  be_->copy_to_host(out.data(), master_.data(), master_.bytes());
  return out;
}

std::vector<float> Trainer::whole_params() {
  return sharded_ ? sharded_->gather_all() : params();
}

// Dense gradients are summed over the dense replicate group (ep x rep), expert gradients over
// the expert replicate group (rep): afterwards every replica holds the gradient of the whole
// batch. (The distributed optimizer reduce-scatters instead: each replica holds the sum of its
// chunks.)
void Trainer::reduce_gradients() {
  if (groups_ == nullptr) return;
  // Norm weights see only this rank's sequence chunk under tensor (sequence) parallelism: sum
  // their gradients over tp first.
  Communicator& tp = (*groups_)[Group::Tp];
  if (tp.size() > 1 && !sharded_) {
    for (const ParamTensor& t : model_->layout().tensors()) {
      if (t.is_norm) tp.all_reduce(grads_.f32() + t.offset, t.numel);
    }
  }
  if (dist_opt_) {
    dist_opt_->reduce_scatter(state_grads());
    return;
  }
  // With sharding the gradients were reduce-scattered over hs layer by layer during backward;
  // each unit's (shard) is summed over the replicas of that unit.
  Communicator& dense = (*groups_)[Group::DenseReplicate];
  Communicator& expert = (*groups_)[Group::ExpertReplicate];
  for (const ShardUnit& u : units_) {
    Communicator& replicas = u.experts ? expert : dense;
    if (replicas.size() == 1) continue;
    if (sharded_) {
      replicas.all_reduce(sharded_->grad_shard() + u.shard_offset, u.shard);
    } else {
      replicas.all_reduce(grads_.f32() + u.begin, u.end - u.begin);
    }
  }
}

// The global gradient norm with every parameter counted once. After the reductions, tensors
// that every tp rank holds whole (norms, routers) are the same on all of them; tensors split by
// tp, and experts split by ep, differ; shards differ over hs, and the distributed optimizer's
// chunks over the replicas. So the squares are summed per class and each class over the groups
// where it differs.
double Trainer::global_grad_norm() {
  double sums[3] = {0, 0, 0};  // tp-whole dense, tp-split dense, experts
  be_->sum_of_squares(state_grads(), norm_segments_, sums, 3);
  if (groups_ != nullptr) {
    if (dist_opt_) {
      (*groups_)[Group::DenseReplicate].all_reduce_host(sums, 2);
      (*groups_)[Group::ExpertReplicate].all_reduce_host(&sums[2], 1);
    }
    if (hs_size_ > 1) (*groups_)[Group::Hs].all_reduce_host(sums, 3);
    if ((*groups_)[Group::Tp].size() > 1) (*groups_)[Group::Tp].all_reduce_host(&sums[1], 2);
    if ((*groups_)[Group::Ep].size() > 1) (*groups_)[Group::Ep].all_reduce_host(&sums[2], 1);
  }
  return std::sqrt(sums[0] + sums[1] + sums[2]);
}

// AdamW on the state vector (or, with the distributed optimizer, on this rank's chunks, then
// the all-gather); the working copy follows the master.
void Trainer::optimizer_step(double lr, double clip) {
  Backend& be = *be_;
  const OptimizerSpec& o = plan_.train.optimizer;
  const AdamWHyper hp{lr, o.beta1, o.beta2, o.eps, o.weight_decay};
  float* params = state_params();
  float* grads = state_grads();
  void* working = state_working();
  const std::size_t elem = dtype_size(be.act_type());
  if (!dist_opt_) {
    be.adamw_step(params, adam_m_.f32(), adam_v_.f32(), grads, working, state_floats(), hp,
                  step_ + 1, clip);
    return;
  }
  for (const DistributedOptimizer::Owned& c : dist_opt_->owned()) {
    if (c.count == 0) continue;
    void* w = working == nullptr
                  ? nullptr
                  : static_cast<char*>(working) + static_cast<std::size_t>(c.at) * elem;
    be.adamw_step(params + c.at, adam_m_.f32() + c.state, adam_v_.f32() + c.state, grads + c.at, w,
                  c.count, hp, step_ + 1, clip);
  }
  dist_opt_->all_gather(params);
  if (working != nullptr) be.cast(working, be.act_type(), params, DType::F32, state_floats());
}

namespace {

// Fault injection for tests of failure handling: MOETUNE_FAULT_KILL="RANK:STEP" makes world rank
// RANK kill itself (SIGKILL, no clean-up) when it starts optimizer step STEP + 1.
void maybe_inject_fault(std::int64_t rank, std::int64_t step) {
  const char* spec = std::getenv("MOETUNE_FAULT_KILL");
  if (spec == nullptr) return;
  long long r = -1, s = -1;
  if (std::sscanf(spec, "%lld:%lld", &r, &s) == 2 && r == rank && s == step) {
    std::fflush(nullptr);
    ::kill(::getpid(), SIGKILL);
  }
}

}  // namespace

void Trainer::run(const std::function<void(const StepRecord&)>& on_step) {
  const std::int64_t rank = groups_ != nullptr ? groups_->world->rank() : 0;
  while (step_ < options_.steps) {
    maybe_inject_fault(rank, step_);
    const StepRecord rec = train_step();
    if (log_) log_->write(rec);
    if (on_step) on_step(rec);
    const bool last = step_ == options_.steps;
    if (!options_.checkpoint_dir.empty() &&
        (last || (options_.checkpoint_every > 0 && step_ % options_.checkpoint_every == 0))) {
      save_checkpoint_now();
      // Every rank's part of the step is on disk before any rank goes on: a resume started right
      // after this run must see the whole step.
      if (groups_ != nullptr) groups_->world->barrier();
    }
  }
  if (!options_.export_hf.empty()) export_hf();
}

}  // namespace moetune::executor
