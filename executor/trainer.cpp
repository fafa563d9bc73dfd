// The CPU training loop.
#include "executor/trainer.hpp"

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "core/constraints.hpp"
#include "core/error.hpp"
#include "executor/io/checkpoint.hpp"
#include "executor/io/safetensors.hpp"
#include "executor/schedule.hpp"
#include "kernels/cpu/optimizer.hpp"

namespace moetune::executor {

namespace k = moetune::kernels::cpu;

void check_runnable_on_cpu(const Plan& plan, std::int64_t ranks) {
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
  if (plan.cluster.device.kind != DeviceKind::Cpu || plan.train.precision != Precision::Fp32) {
    throw InputError("this plan is for " + plan.cluster.device.name + " in " +
                     to_string(plan.train.precision) +
                     "; the CPU backend trains fp32 plans for a cpu cluster such as cpu-local");
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
                                 : " processes run it"));
  }
  if (auto r = check_layout(plan.model, plan.cluster, plan.train, plan.layout)) {
    throw InputError("layout " + describe(l) +
                     " is not valid: " + explain(*r, plan.model, plan.cluster, plan.train, l));
  }
}

Trainer::Trainer(const Plan& plan, const TrainOptions& options, ProcessGroups* groups)
    : plan_(plan), options_(options), groups_(groups) {
  const std::int64_t ranks = groups_ != nullptr ? groups_->world->size() : 1;
  check_runnable_on_cpu(plan_, ranks);
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
  if (dp_size_ > 1) parallel.dp = &(*groups_)[Group::DataParallel];
  model_ = std::make_unique<MixtralModel>(plan_.model, plan_.train.moe, plan_.layout.micro_batch,
                                          plan_.train.seq_len, parallel,
                                          plan_.layout.recompute == Recompute::Full);
  const auto n = static_cast<std::size_t>(model_->layout().numel());
  params_.assign(n, 0.0f);
  grads_.assign(n, 0.0f);
  adam_m_.assign(n, 0.0f);
  adam_v_.assign(n, 0.0f);
  initialise_parameters(model_->layout(), params_.data(), plan_.train.seed);
  if (!options_.init_from.empty()) {
    SafetensorsReader reader(options_.init_from);
    for (const ParamTensor& t : model_->layout().tensors()) {
      std::int64_t full = 1;
      for (std::int64_t d : t.full_shape)
        full *= d;
      std::vector<float> values(static_cast<std::size_t>(full));
      reader.read(t.name, values.data(), t.full_shape);
      model_->layout().take_block(t, values.data(), params_.data() + t.offset);
    }
  }
  if (groups_ != nullptr && plan_.layout.hs > 1) {
    hs_size_ = (*groups_)[Group::Hs].size();
    hs_rank_ = (*groups_)[Group::Hs].rank();
    shard_parameters();
  }
  units_ = sharded_ ? sharded_->units() : shard_units(model_->layout(), plan_.model, 1);
  if (groups_ != nullptr && plan_.layout.distributed_optimizer) {
    Communicator& dense = (*groups_)[Group::DenseReplicate];
    Communicator& expert = (*groups_)[Group::ExpertReplicate];
    if (dense.size() > 1 || expert.size() > 1) {
      dist_opt_ =
          std::make_unique<DistributedOptimizer>(units_, sharded_ != nullptr, dense, expert);
      adam_m_.assign(static_cast<std::size_t>(dist_opt_->owned_floats()), 0.0f);
      adam_v_.assign(static_cast<std::size_t>(dist_opt_->owned_floats()), 0.0f);
    }
  }
  const bool resumed = options_.resume && resume();
  if (!options_.batch_source) load_data();
  const std::int64_t tokens = plan_.layout.micro_batch * plan_.train.seq_len;
  ids_.assign(static_cast<std::size_t>(tokens), 0);
  targets_.assign(static_cast<std::size_t>(tokens), 0);
  if (!options_.metrics.empty()) {
    const int rank = groups_ != nullptr ? groups_->world->rank() : 0;
    const RunHeader header = run_header_here(plan_, "cpu", rank, ranks, 1);
    // Rank 0 writes the file named; every other rank a copy tagged with its rank.
    std::filesystem::path file = options_.metrics;
    if (rank > 0) file += ".rank" + std::to_string(rank);
    log_ = std::make_unique<RunLogWriter>(file, header, resumed);
  }
}

Trainer::~Trainer() = default;

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

StepRecord Trainer::train_step() {
  const auto start = std::chrono::steady_clock::now();
  PhaseTimes phases;
  StepRecord rec;
  std::fill(grads_.begin(), grads_.end(), 0.0f);
  if (sharded_) sharded_->zero_grad();
  FlatParameters flat(params_.data(), grads_.data());
  ParameterAccess& access = sharded_ ? static_cast<ParameterAccess&>(*sharded_) : flat;
  // The loss is the mean over micro-batches and data-parallel ranks.
  const double scale = 1.0 / static_cast<double>(accum_ * dp_size_);
  for (std::int64_t micro = 0; micro < accum_; ++micro) {
    fill_micro_batch(step_, micro);
    const MicroBatchLoss loss = model_->forward(access, ids_.data(), targets_.data(), &phases);
    model_->backward(access, scale, &phases);
    rec.loss += loss.ce * scale;
    rec.aux_loss += loss.aux / static_cast<double>(accum_);  // already global over dp
    rec.z_loss += loss.z * scale;
    rec.dropped_tokens += model_->dropped_slots();
    add_tokens_per_expert(rec, model_->tokens_per_expert());
  }
  if (dp_size_ > 1) {
    double sums[2] = {rec.loss, rec.z_loss};
    (*groups_)[Group::DataParallel].all_reduce(sums, 2);
    rec.loss = sums[0];
    rec.z_loss = sums[1];
  }
  reduce_gradients();
  {
    const auto opt_start = std::chrono::steady_clock::now();
    const std::int64_t n = static_cast<std::int64_t>(params_.size());
    rec.grad_norm = global_grad_norm();
    const double clip = k::clip_scale(rec.grad_norm, plan_.train.optimizer.grad_clip);
    const OptimizerSpec& o = plan_.train.optimizer;
    rec.lr = learning_rate(o, step_);
    if (dist_opt_) {
      distributed_optimizer_step(rec.lr, clip);
    } else if (sharded_) {
      sharded_optimizer_step(rec.lr, clip);
    } else {
      k::AdamWParams hp{rec.lr, o.beta1, o.beta2, o.eps, o.weight_decay};
      k::adamw_step<float>(params_.data(), adam_m_.data(), adam_v_.data(), grads_.data(), n, hp,
                           step_ + 1, clip);
    }
    phases["optimizer"] +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - opt_start).count();
  }
  ++step_;
  rec.step = step_;
  rec.tokens = plan_.train.tokens_per_step();
  rec.step_time_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  rec.tokens_per_s = static_cast<double>(rec.tokens) / rec.step_time_s;
  rec.phases_s = phases;
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
  rec.peak_memory_bytes = state.parameters + state.gradients + state.optimizer +
                          state.gathered_parameters +
                          static_cast<double>(model_->activation_bytes());
  rec.memory =
      StepMemory{state.parameters, state.gradients, state.optimizer, state.gathered_parameters,
                 static_cast<double>(model_->activation_bytes())};
  return rec;
}

Trainer::StateBytes Trainer::state_bytes() const {
  StateBytes b;
  b.optimizer = 4.0 * static_cast<double>(adam_m_.size() + adam_v_.size());
  if (sharded_) {
    b.parameters = 4.0 * static_cast<double>(sharded_->master().size());
    b.gradients =
        4.0 * static_cast<double>(sharded_->grad_shard().size()) + sharded_->gradient_slot_bytes();
    b.gathered_parameters = sharded_->gathered_bytes();
  } else {
    b.parameters = 4.0 * static_cast<double>(params_.size());
    b.gradients = 4.0 * static_cast<double>(grads_.size());
  }
  return b;
}

std::vector<float> Trainer::whole_params() {
  return sharded_ ? sharded_->gather_all() : params_;
}

// The whole local parameters, initialised (or loaded) in params_, become this rank's shards;
// from here on only shards are held.
void Trainer::shard_parameters() {
  Communicator* tp = plan_.layout.tp > 1 ? &(*groups_)[Group::Tp] : nullptr;
  sharded_ =
      std::make_unique<ShardedParameters>(model_->layout(), plan_.model, (*groups_)[Group::Hs], tp);
  take_shards(sharded_->units(), hs_rank_, params_.data(), sharded_->master().data());
  // Adam state lives in shards only.
  adam_m_.assign(sharded_->master().size(), 0.0f);
  adam_v_.assign(sharded_->master().size(), 0.0f);
  std::vector<float>().swap(params_);
  std::vector<float>().swap(grads_);
}

// AdamW on this rank's shards; the layers are gathered from them as the next step needs them.
void Trainer::sharded_optimizer_step(double lr, double clip) {
  const OptimizerSpec& o = plan_.train.optimizer;
  k::AdamWParams hp{lr, o.beta1, o.beta2, o.eps, o.weight_decay};
  std::vector<float>& master = sharded_->master();
  k::adamw_step<float>(master.data(), adam_m_.data(), adam_v_.data(), sharded_->grad_shard().data(),
                       static_cast<std::int64_t>(master.size()), hp, step_ + 1, clip);
}

void Trainer::distributed_optimizer_step(double lr, double clip) {
  const OptimizerSpec& o = plan_.train.optimizer;
  k::AdamWParams hp{lr, o.beta1, o.beta2, o.eps, o.weight_decay};
  float* params = state_params();
  float* grads = state_grads();
  for (const DistributedOptimizer::Owned& c : dist_opt_->owned()) {
    if (c.count == 0) continue;
    k::adamw_step<float>(params + c.at, adam_m_.data() + c.state, adam_v_.data() + c.state,
                         grads + c.at, c.count, hp, step_ + 1, clip);
  }
  dist_opt_->all_gather(params);
}

std::int64_t Trainer::state_floats() const {
  return static_cast<std::int64_t>(sharded_ ? sharded_->master().size() : params_.size());
}

void Trainer::gather_adam_state(std::vector<float>& m, std::vector<float>& v) {
  m.assign(static_cast<std::size_t>(state_floats()), 0.0f);
  v.assign(m.size(), 0.0f);
  dist_opt_->gather_state(adam_m_.data(), m.data());
  dist_opt_->gather_state(adam_v_.data(), v.data());
}

void Trainer::set_adam_state(std::vector<float> m, std::vector<float> v) {
  if (!dist_opt_) {
    adam_m_ = std::move(m);
    adam_v_ = std::move(v);
    return;
  }
  dist_opt_->take_state(m.data(), adam_m_.data());
  dist_opt_->take_state(v.data(), adam_v_.data());
}

// Dense gradients are summed over the dense replicate group (ep x rep), expert gradients over the
// expert replicate group (rep): afterwards every replica holds the gradient of the whole batch.
// (The distributed optimizer reduce-scatters instead: each replica holds the sum of its chunks.)
void Trainer::reduce_gradients() {
  if (groups_ == nullptr) return;
  // Norm weights see only this rank's sequence chunk under tensor (sequence) parallelism: sum
  // their gradients over tp first.
  Communicator& tp = (*groups_)[Group::Tp];
  if (tp.size() > 1 && !sharded_) {
    for (const ParamTensor& t : model_->layout().tensors()) {
      if (t.is_norm) tp.all_reduce(grads_.data() + t.offset, t.numel);
    }
  }
  if (dist_opt_) {
    // The distributed optimizer: each rank receives the sum of the chunks it owns.
    dist_opt_->reduce_scatter(state_grads());
    return;
  }
  if (sharded_) {
    // The gradients were reduce-scattered over hs layer by layer during backward (norms summed
    // over tp first); sum each unit's shard over the replicas of that unit.
    Communicator& dense = (*groups_)[Group::DenseReplicate];
    Communicator& expert = (*groups_)[Group::ExpertReplicate];
    for (const ShardUnit& u : sharded_->units()) {
      Communicator& replicas = u.experts ? expert : dense;
      if (replicas.size() > 1)
        replicas.all_reduce(sharded_->grad_shard().data() + u.shard_offset, u.shard);
    }
    return;
  }
  Communicator& dense = (*groups_)[Group::DenseReplicate];
  Communicator& expert = (*groups_)[Group::ExpertReplicate];
  for (const ParamTensor& t : model_->layout().tensors()) {
    Communicator& c = t.is_expert ? expert : dense;
    if (c.size() > 1) c.all_reduce(grads_.data() + t.offset, t.numel);
  }
}

// The global gradient norm with every parameter counted once. After the reductions, tensors
// that every tp rank holds whole (norms, routers) are the same on all of them; tensors split by
// tp, and experts split by ep, differ; shards differ over hs, and the distributed optimizer's
// chunks over the replicas. So the squares are summed per class and each class over the groups
// where it differs.
double Trainer::global_grad_norm() const {
  double sums[3] = {0, 0, 0};  // tp-whole dense, tp-split dense, experts
  const float* grads = sharded_ ? sharded_->grad_shard().data() : grads_.data();
  // Elements [index, index + count) of unit u's part of the state vector, found at grads + at,
  // walked through the tensors they overlap.
  auto add = [&](const ShardUnit& u, std::int64_t at, std::int64_t index, std::int64_t count) {
    const std::int64_t from = u.begin + hs_rank_ * u.shard + index;
    const std::int64_t to = std::min(u.end, from + count);
    for (const ParamTensor& t : model_->layout().tensors()) {
      const std::int64_t lo = std::max(from, t.offset), hi = std::min(to, t.offset + t.numel);
      if (lo >= hi) continue;
      const int cls = t.is_expert ? 2 : (t.split == TpSplit::None ? 0 : 1);
      sums[cls] += k::sum_of_squares<float>(grads + at + (lo - from), hi - lo);
    }
  };
  if (dist_opt_) {
    for (const DistributedOptimizer::Owned& c : dist_opt_->owned())
      add(units_[static_cast<std::size_t>(c.unit)], c.at, c.index, c.count);
  } else {
    for (const ShardUnit& u : units_)
      add(u, sharded_ ? u.shard_offset : u.begin, 0, u.shard);
  }
  if (groups_ != nullptr) {
    if (dist_opt_) {
      (*groups_)[Group::DenseReplicate].all_reduce(sums, 2);
      (*groups_)[Group::ExpertReplicate].all_reduce(&sums[2], 1);
    }
    if (hs_size_ > 1) (*groups_)[Group::Hs].all_reduce(sums, 3);
    if ((*groups_)[Group::Tp].size() > 1) (*groups_)[Group::Tp].all_reduce(&sums[1], 2);
    if ((*groups_)[Group::Ep].size() > 1) (*groups_)[Group::Ep].all_reduce(&sums[2], 1);
  }
  return std::sqrt(sums[0] + sums[1] + sums[2]);
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
  if (!options_.export_hf.empty()) {
    std::filesystem::create_directories(options_.export_hf);
    write_file_atomically(options_.export_hf / "config.json",
                          to_hf_config(plan_.model).dump(2) + "\n");
    std::vector<NamedTensor> tensors;
    for (const ParamTensor& t : model_->layout().tensors()) {
      tensors.push_back({t.name, t.shape, params_.data() + t.offset});
    }
    write_safetensors(options_.export_hf / "model.safetensors", tensors, {{"format", "pt"}});
  }
}

// One process: D/step-N. Several ranks: D/rank-RRRRR/step-N, one checkpoint per rank holding
// what that rank owns (its experts; with sharding, its shards), each written atomically.
std::filesystem::path Trainer::checkpoint_root() const {
  const std::int64_t world = groups_ != nullptr ? groups_->world->size() : 1;
  return rank_checkpoint_root(options_.checkpoint_dir,
                              groups_ != nullptr ? groups_->world->rank() : 0, world);
}

bool Trainer::resume() {
  // The newest step of the run that wrote last: rank 0's folder of one-rank or many-rank runs.
  std::optional<std::filesystem::path> newest;
  for (const auto& root : {rank_checkpoint_root(options_.checkpoint_dir, 0, 1),
                           rank_checkpoint_root(options_.checkpoint_dir, 0, 2)}) {
    if (auto dir = latest_checkpoint(root)) {
      if (!newest || load_checkpoint(*dir).step > load_checkpoint(*newest).step) newest = dir;
    }
  }
  if (!newest) return false;
  const Checkpoint head = load_checkpoint(*newest);
  if (!head.state.is_object() || !head.state.contains("plan")) {
    throw InputError(newest->string() +
                     ": not a moetune training checkpoint (no plan in its state)");
  }
  const Plan saved =
      plan_from_json(head.state["plan"], newest->string() + "/manifest.json state.plan");
  if (saved.model != plan_.model || saved.train != plan_.train) {
    throw InputError(
        newest->string() +
        ": the checkpoint was written for another model or training setup; resume with "
        "the plan it was saved with");
  }
  // Every rank of the saved run must have finished that step.
  for (std::int64_t r = 0; r < saved.layout.world_size(); ++r) {
    const auto dir = step_checkpoint_dir(
        rank_checkpoint_root(options_.checkpoint_dir, r, saved.layout.world_size()), head.step);
    if (!std::filesystem::exists(dir / kCheckpointManifest)) {
      throw InputError(dir.string() + ": missing, so step " + std::to_string(head.step) +
                       " is incomplete; remove the step-" + std::to_string(head.step) +
                       " folders to resume from the one before");
    }
  }
  if (saved.layout == plan_.layout &&
      saved.cluster.devices_per_node == plan_.cluster.devices_per_node) {
    restore(step_checkpoint_dir(checkpoint_root(), head.step));
  } else {
    restore_resharded(saved, head.step);
  }
  return true;
}

// A checkpoint of another layout: whole tensors rebuilt from every saved rank, then this rank's
// blocks (and shards) taken from them.
void Trainer::restore_resharded(const Plan& saved, std::int64_t step) {
  const auto whole = load_whole_model(options_.checkpoint_dir, step, saved);
  const ParameterLayout& layout = model_->layout();
  const auto n = static_cast<std::size_t>(layout.numel());
  std::vector<float> p(n), m(n), v(n);
  for (const ParamTensor& t : layout.tensors()) {
    const auto it = whole.find(t.name);
    if (it == whole.end())
      throw InputError("checkpoint step " + std::to_string(step) + " has no " + t.name);
    layout.take_block(t, it->second.param.data(), p.data() + t.offset);
    layout.take_block(t, it->second.exp_avg.data(), m.data() + t.offset);
    layout.take_block(t, it->second.exp_avg_sq.data(), v.data() + t.offset);
  }
  if (sharded_) {
    const std::vector<ShardUnit>& units = sharded_->units();
    const auto floats = static_cast<std::size_t>(state_floats());
    std::vector<float> m_shards(floats), v_shards(floats);
    take_shards(units, hs_rank_, p.data(), sharded_->master().data());
    take_shards(units, hs_rank_, m.data(), m_shards.data());
    take_shards(units, hs_rank_, v.data(), v_shards.data());
    set_adam_state(std::move(m_shards), std::move(v_shards));
  } else {
    params_ = std::move(p);
    set_adam_state(std::move(m), std::move(v));
  }
  step_ = step;
}

void Trainer::save_checkpoint_now() {
  std::vector<NamedTensor> tensors;
  // Whole-vector Adam state whatever the optimizer keeps, so the format does not depend on it:
  // gathered from the owned chunks with the distributed optimizer, else the state itself.
  std::vector<float> gathered_m, gathered_v;
  const float* m = adam_m_.data();
  const float* v = adam_v_.data();
  if (dist_opt_) {
    gather_adam_state(gathered_m, gathered_v);
    m = gathered_m.data();
    v = gathered_v.data();
  }
  if (sharded_) {
    const std::vector<float>& master = sharded_->master();
    const std::vector<std::int64_t> shape = {static_cast<std::int64_t>(master.size())};
    tensors.push_back({"shard.master", shape, master.data()});
    tensors.push_back({"shard.exp_avg", shape, m});
    tensors.push_back({"shard.exp_avg_sq", shape, v});
  } else {
    for (const ParamTensor& t : model_->layout().tensors()) {
      tensors.push_back({t.name, t.shape, params_.data() + t.offset});
    }
    for (const ParamTensor& t : model_->layout().tensors()) {
      tensors.push_back({"optimizer.exp_avg." + t.name, t.shape, m + t.offset});
      tensors.push_back({"optimizer.exp_avg_sq." + t.name, t.shape, v + t.offset});
    }
  }
  Json state;
  state["plan"] = to_json(plan_);
  state["optimizer_step"] = step_;
  state["data"] = options_.batch_source   ? Json("batch_source")
                  : options_.data.empty() ? Json("synthetic")
                                          : Json(options_.data.string());
  state["rank"] = groups_ != nullptr ? groups_->world->rank() : 0;
  state["world_size"] = plan_.layout.world_size();
  save_step_checkpoint(checkpoint_root(), step_, state, tensors, options_.keep_checkpoints);
}

void Trainer::restore(const std::filesystem::path& dir) {
  const Checkpoint ckpt = load_checkpoint(dir);
  std::vector<float> m(static_cast<std::size_t>(state_floats())), v(m.size());
  if (sharded_) {
    std::vector<float>& master = sharded_->master();
    const std::vector<std::int64_t> shape = {static_cast<std::int64_t>(master.size())};
    ckpt.copy_to("shard.master", master.data(), shape);
    ckpt.copy_to("shard.exp_avg", m.data(), shape);
    ckpt.copy_to("shard.exp_avg_sq", v.data(), shape);
  } else {
    for (const ParamTensor& t : model_->layout().tensors()) {
      ckpt.copy_to(t.name, params_.data() + t.offset, t.shape);
      ckpt.copy_to("optimizer.exp_avg." + t.name, m.data() + t.offset, t.shape);
      ckpt.copy_to("optimizer.exp_avg_sq." + t.name, v.data() + t.offset, t.shape);
    }
  }
  set_adam_state(std::move(m), std::move(v));
  step_ = ckpt.step;
}

}  // namespace moetune::executor
