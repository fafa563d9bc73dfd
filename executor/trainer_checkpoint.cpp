// The trainer's state on the host: checkpoints (per rank, whole-vector Adam state whatever the
// optimizer keeps), exact resume under the same layout or re-sharding from any other, and the
// Hugging Face export.
#include <optional>

#include "core/error.hpp"
#include "executor/io/checkpoint.hpp"
#include "executor/io/safetensors.hpp"
#include "executor/trainer.hpp"

namespace moetune::executor {

std::vector<float> Trainer::host_state_params() {
  std::vector<float> out(static_cast<std::size_t>(state_floats()));
  be_->copy_to_host(out.data(), state_params(), out.size() * sizeof(float));
  return out;
}

void Trainer::host_adam_state(std::vector<float>& m, std::vector<float>& v) {
  const auto floats = static_cast<std::size_t>(state_floats());
  m.assign(floats, 0.0f);
  v.assign(floats, 0.0f);
  if (!dist_opt_) {
    be_->copy_to_host(m.data(), adam_m_.data(), adam_m_.bytes());
    be_->copy_to_host(v.data(), adam_v_.data(), adam_v_.bytes());
    return;
  }
  Buffer whole(*be_, state_floats(), DType::F32);
  dist_opt_->gather_state(adam_m_.f32(), whole.f32());
  be_->copy_to_host(m.data(), whole.data(), whole.bytes());
  dist_opt_->gather_state(adam_v_.f32(), whole.f32());
  be_->copy_to_host(v.data(), whole.data(), whole.bytes());
}

void Trainer::set_state(const std::vector<float>& params, const std::vector<float>& m,
                        const std::vector<float>& v) {
  Backend& be = *be_;
  const std::int64_t floats = state_floats();
  MOETUNE_CHECK(static_cast<std::int64_t>(params.size()) == floats &&
                    static_cast<std::int64_t>(m.size()) == floats &&
                    static_cast<std::int64_t>(v.size()) == floats,
                "set_state: vectors of the wrong size");
  be.copy_from_host(state_params(), params.data(), params.size() * sizeof(float));
  if (void* working = state_working(); working != nullptr) {
    be.cast(working, be.act_type(), state_params(), DType::F32, floats);
  }
  if (!dist_opt_) {
    be.copy_from_host(adam_m_.data(), m.data(), adam_m_.bytes());
    be.copy_from_host(adam_v_.data(), v.data(), adam_v_.bytes());
    return;
  }
  // A rank takes its chunks of the whole-vector state.
  Buffer whole(be, floats, DType::F32);
  be.copy_from_host(whole.data(), m.data(), whole.bytes());
  dist_opt_->take_state(whole.f32(), adam_m_.f32());
  be.copy_from_host(whole.data(), v.data(), whole.bytes());
  dist_opt_->take_state(whole.f32(), adam_v_.f32());
  be.synchronize();
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
    const auto floats = static_cast<std::size_t>(state_floats());
    std::vector<float> ps(floats), ms(floats), vs(floats);
    take_shards(units_, hs_rank_, p.data(), ps.data());
    take_shards(units_, hs_rank_, m.data(), ms.data());
    take_shards(units_, hs_rank_, v.data(), vs.data());
    set_state(ps, ms, vs);
  } else {
    set_state(p, m, v);
  }
  step_ = step;
}

void Trainer::save_checkpoint_now() {
  std::vector<NamedTensor> tensors;
  // Whole-vector Adam state whatever the optimizer keeps, so the format does not depend on it.
  const std::vector<float> params = host_state_params();
  std::vector<float> m, v;
  host_adam_state(m, v);
  if (sharded_) {
    const std::vector<std::int64_t> shape = {static_cast<std::int64_t>(params.size())};
    tensors.push_back({"shard.master", shape, params.data()});
    tensors.push_back({"shard.exp_avg", shape, m.data()});
    tensors.push_back({"shard.exp_avg_sq", shape, v.data()});
  } else {
    for (const ParamTensor& t : model_->layout().tensors()) {
      tensors.push_back({t.name, t.shape, params.data() + t.offset});
    }
    for (const ParamTensor& t : model_->layout().tensors()) {
      tensors.push_back({"optimizer.exp_avg." + t.name, t.shape, m.data() + t.offset});
      tensors.push_back({"optimizer.exp_avg_sq." + t.name, t.shape, v.data() + t.offset});
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
  state["backend"] = be_->name();
  save_step_checkpoint(checkpoint_root(), step_, state, tensors, options_.keep_checkpoints);
}

void Trainer::restore(const std::filesystem::path& dir) {
  const Checkpoint ckpt = load_checkpoint(dir);
  const auto floats = static_cast<std::size_t>(state_floats());
  std::vector<float> p(floats), m(floats), v(floats);
  if (sharded_) {
    const std::vector<std::int64_t> shape = {static_cast<std::int64_t>(floats)};
    ckpt.copy_to("shard.master", p.data(), shape);
    ckpt.copy_to("shard.exp_avg", m.data(), shape);
    ckpt.copy_to("shard.exp_avg_sq", v.data(), shape);
  } else {
    for (const ParamTensor& t : model_->layout().tensors()) {
      ckpt.copy_to(t.name, p.data() + t.offset, t.shape);
      ckpt.copy_to("optimizer.exp_avg." + t.name, m.data() + t.offset, t.shape);
      ckpt.copy_to("optimizer.exp_avg_sq." + t.name, v.data() + t.offset, t.shape);
    }
  }
  set_state(p, m, v);
  step_ = ckpt.step;
}

void Trainer::export_hf() {
  std::filesystem::create_directories(options_.export_hf);
  write_file_atomically(options_.export_hf / "config.json",
                        to_hf_config(plan_.model).dump(2) + "\n");
  const std::vector<float> p = params();
  std::vector<NamedTensor> tensors;
  for (const ParamTensor& t : model_->layout().tensors()) {
    tensors.push_back({t.name, t.shape, p.data() + t.offset});
  }
  write_safetensors(options_.export_hf / "model.safetensors", tensors, {{"format", "pt"}});
}

}  // namespace moetune::executor
