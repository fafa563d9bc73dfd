// Shard units and re-sharding of checkpoints.
#include "executor/sharding.hpp"

#include <algorithm>
#include <cstdio>

#include "core/error.hpp"
#include "core/mesh.hpp"
#include "executor/io/checkpoint.hpp"

namespace moetune::executor {

std::vector<ShardUnit> shard_units(const ParameterLayout& layout, const ModelSpec& model,
                                   std::int64_t hs) {
  std::vector<std::pair<std::int64_t, bool>> starts;  // unit starts in the flat buffer
  starts.emplace_back(layout.embedding(), false);
  for (std::int64_t l = 0; l < model.num_hidden_layers; ++l) {
    starts.emplace_back(layout.layer(l).input_norm, false);
    starts.emplace_back(layout.layer(l).w1[0], true);
  }
  starts.emplace_back(layout.final_norm(), false);
  std::vector<ShardUnit> units;
  std::int64_t offset = 0;
  for (std::size_t i = 0; i < starts.size(); ++i) {
    ShardUnit u;
    u.begin = starts[i].first;
    u.end = i + 1 < starts.size() ? starts[i + 1].first : layout.numel();
    u.experts = starts[i].second;
    u.shard = (u.end - u.begin + hs - 1) / hs;
    u.shard_offset = offset;
    offset += u.shard;
    units.push_back(u);
  }
  return units;
}

std::int64_t shard_floats(const std::vector<ShardUnit>& units) {
  return units.empty() ? 0 : units.back().shard_offset + units.back().shard;
}

void take_shards(const std::vector<ShardUnit>& units, std::int64_t hs_rank, const float* flat,
                 float* shards) {
  for (const ShardUnit& u : units) {
    const std::int64_t from = u.begin + hs_rank * u.shard;
    const std::int64_t to = std::min(u.end, from + u.shard);
    std::fill(shards + u.shard_offset, shards + u.shard_offset + u.shard, 0.0f);
    if (from < to) std::copy(flat + from, flat + to, shards + u.shard_offset);
  }
}

void put_shards(const std::vector<ShardUnit>& units, std::int64_t hs_rank, const float* shards,
                float* flat) {
  for (const ShardUnit& u : units) {
    const std::int64_t from = u.begin + hs_rank * u.shard;
    const std::int64_t to = std::min(u.end, from + u.shard);
    if (from < to)
      std::copy(shards + u.shard_offset, shards + u.shard_offset + (to - from), flat + from);
  }
}

ShardedParameters::ShardedParameters(Backend& be, const ParameterLayout& layout,
                                     const ModelSpec& model, Communicator& hs, Communicator* tp)
    : be_(be),
      layout_(layout),
      hs_(hs),
      tp_(tp != nullptr && tp->size() > 1 ? tp : nullptr),
      act_(be.act_type()) {
  const std::int64_t size = hs_.size();
  units_ = shard_units(layout, model, size);
  // shard_units lists the embedding, each layer's dense part and experts, then the final norm
  // and head: group 0, groups 1 + l (two units each), group L + 1.
  const std::int64_t layers = model.num_hidden_layers;
  MOETUNE_CHECK(static_cast<std::int64_t>(units_.size()) == 2 * layers + 2,
                "shard units are the embedding, two per layer, and the head");
  groups_.resize(static_cast<std::size_t>(layers + 2));
  for (std::size_t u = 0; u < units_.size(); ++u) {
    const std::int64_t g = u == 0 ? 0 : (u + 1 == units_.size() ? layers + 1 : 1 + (u - 1) / 2);
    groups_[static_cast<std::size_t>(g)].push_back(static_cast<std::int64_t>(u));
    unit_group_.push_back(g);
    unit_begins_.push_back(units_[u].begin);
  }
  unit_slot_offset_.resize(units_.size());
  for (const auto& group : groups_) {
    std::int64_t at = 0;
    for (std::int64_t u : group) {
      unit_slot_offset_[static_cast<std::size_t>(u)] = at;
      at += units_[static_cast<std::size_t>(u)].shard * size;
    }
    slot_floats_ = std::max(slot_floats_, at);
  }
  group_norms_.resize(groups_.size());
  for (const ParamTensor& t : layout.tensors()) {
    if (!t.is_norm) continue;
    const std::int64_t g = group_of(unit_of(t.offset));
    group_norms_[static_cast<std::size_t>(g)].push_back({t.offset, t.numel});
  }
  const std::int64_t floats = executor::shard_floats(units_);
  master_.resize(be, floats, DType::F32);
  grad_shard_.resize(be, floats, DType::F32);
  be.zero(master_.data(), master_.bytes());
  be.zero(grad_shard_.data(), grad_shard_.bytes());
  if (act_ != DType::F32) {
    working_.resize(be, floats, act_);
    be.zero(working_.data(), working_.bytes());
  }
  for (int s = 0; s < 2; ++s) {
    slots_[s].resize(be, slot_floats_, act_);
    grad_slots_[s].resize(be, slot_floats_, DType::F32);
    be.zero(slots_[s].data(), slots_[s].bytes());
    be.zero(grad_slots_[s].data(), grad_slots_[s].bytes());
  }
}

double ShardedParameters::gathered_bytes() const {
  return static_cast<double>(slots_[0].bytes() + slots_[1].bytes());
}

double ShardedParameters::gradient_slot_bytes() const {
  return static_cast<double>(grad_slots_[0].bytes() + grad_slots_[1].bytes());
}

void ShardedParameters::zero_grad() {
  be_.zero(grad_shard_.data(), grad_shard_.bytes());
}

std::vector<float> ShardedParameters::gather_all() {
  std::vector<float> whole(static_cast<std::size_t>(layout_.numel()));
  Buffer staging;
  for (const ShardUnit& u : units_) {
    staging.resize(be_, u.shard * hs_.size(), DType::F32);
    hs_.all_gather(master_.f32() + u.shard_offset, staging.f32(), u.shard);
    be_.copy_to_host(whole.data() + u.begin, staging.data(),
                     static_cast<std::size_t>(u.end - u.begin) * sizeof(float));
  }
  return whole;
}

std::int64_t ShardedParameters::unit_of(std::int64_t offset) const {
  const auto it = std::upper_bound(unit_begins_.begin(), unit_begins_.end(), offset);
  MOETUNE_CHECK(it != unit_begins_.begin(), "offset before the first unit");
  return static_cast<std::int64_t>(it - unit_begins_.begin()) - 1;
}

std::int64_t ShardedParameters::group_of(std::int64_t unit) const {
  return unit_group_[static_cast<std::size_t>(unit)];
}

std::int64_t ShardedParameters::slot_index(std::int64_t offset) const {
  const std::int64_t u = unit_of(offset);
  return unit_slot_offset_[static_cast<std::size_t>(u)] +
         (offset - units_[static_cast<std::size_t>(u)].begin);
}

void ShardedParameters::gather(std::int64_t group, int slot) {
  const std::size_t elem = dtype_size(act_);
  auto* shards = static_cast<const char*>(working());
  auto* out = static_cast<char*>(slots_[slot].data());
  for (std::int64_t u : groups_[static_cast<std::size_t>(group)]) {
    const ShardUnit& unit = units_[static_cast<std::size_t>(u)];
    hs_.all_gather(
        shards + static_cast<std::size_t>(unit.shard_offset) * elem,
        out + static_cast<std::size_t>(unit_slot_offset_[static_cast<std::size_t>(u)]) * elem,
        unit.shard, act_);
  }
  slot_group_[slot] = group;
}

void ShardedParameters::acquire(std::int64_t group, bool backward) {
  int slot = slot_group_[0] == group ? 0 : (slot_group_[1] == group ? 1 : -1);
  if (slot < 0) {
    slot = slot_group_[0] < 0 ? 0 : 1;
    MOETUNE_CHECK(slot_group_[slot] < 0, "a parameter group acquired before the last was released");
    gather(group, slot);
  }
  // Prefetch the pass's next group into the other slot.
  const std::int64_t next = backward ? group - 1 : group + 1;
  const int other = 1 - slot;
  if (next >= 0 && next < static_cast<std::int64_t>(groups_.size()) && slot_group_[other] < 0) {
    gather(next, other);
  }
  if (backward) {
    const int g = grad_slot_group_[0] < 0 ? 0 : 1;
    MOETUNE_CHECK(grad_slot_group_[g] < 0, "both gradient slots in use");
    be_.zero(grad_slots_[g].data(), grad_slots_[g].bytes());
    grad_slot_group_[g] = group;
  }
}

void ShardedParameters::release(std::int64_t group, bool backward) {
  for (int s = 0; s < 2; ++s) {
    if (slot_group_[s] == group) slot_group_[s] = -1;
  }
  if (!backward) return;
  const int g = grad_slot_of(group);
  // The previous group's gradients are reduced now, while this one's wait for the next release.
  if (pending_ >= 0) reduce_scatter(pending_);
  pending_ = g;
}

void ShardedParameters::end_pass(bool backward) {
  if (backward && pending_ >= 0) reduce_scatter(pending_);
  pending_ = -1;
  slot_group_[0] = slot_group_[1] = -1;
}

void ShardedParameters::reduce_scatter(int grad_slot) {
  const std::int64_t group = grad_slot_group_[grad_slot];
  float* slot = grad_slots_[grad_slot].f32();
  // Norm weights see only this rank's sequence chunk under sequence parallelism: their gradients
  // are summed over tp first.
  if (tp_ != nullptr) {
    for (const Range& r : group_norms_[static_cast<std::size_t>(group)])
      tp_->all_reduce(slot + slot_index(r.offset), r.numel);
  }
  // Each unit is reduce-scattered into this rank's shard accumulator. The accumulator joins the
  // sum through this rank's own segment, so no second buffer is needed.
  const std::int64_t rank = hs_.rank();
  for (std::int64_t u : groups_[static_cast<std::size_t>(group)]) {
    const ShardUnit& unit = units_[static_cast<std::size_t>(u)];
    float* segment = slot + unit_slot_offset_[static_cast<std::size_t>(u)];
    float* acc = grad_shard_.f32() + unit.shard_offset;
    be_.accumulate(segment + rank * unit.shard, acc, unit.shard, DType::F32);
    hs_.reduce_scatter(segment, acc, unit.shard);
  }
  grad_slot_group_[grad_slot] = -1;
}

int ShardedParameters::grad_slot_of(std::int64_t group) const {
  for (int s = 0; s < 2; ++s) {
    if (grad_slot_group_[s] == group && pending_ != s) return s;
  }
  MOETUNE_CHECK(false, "a gradient written while its group is not acquired for backward");
  return -1;
}

const void* ShardedParameters::param(std::int64_t offset) {
  const std::int64_t group = group_of(unit_of(offset));
  const int slot = slot_group_[0] == group ? 0 : (slot_group_[1] == group ? 1 : -1);
  MOETUNE_CHECK(slot >= 0, "a parameter read while its group is not acquired");
  return static_cast<const char*>(slots_[slot].data()) +
         static_cast<std::size_t>(slot_index(offset)) * dtype_size(act_);
}

float* ShardedParameters::grad(std::int64_t offset) {
  const std::int64_t group = group_of(unit_of(offset));
  return grad_slots_[grad_slot_of(group)].f32() + slot_index(offset);
}

std::filesystem::path rank_checkpoint_root(const std::filesystem::path& checkpoint_dir,
                                           std::int64_t rank, std::int64_t world_size) {
  if (world_size == 1) return checkpoint_dir;
  char name[32];
  std::snprintf(name, sizeof name, "rank-%05lld", static_cast<long long>(rank));
  return checkpoint_dir / name;
}

namespace {

// The inverse of ParameterLayout::take_block: writes a rank's block into the whole tensor.
void put_block(const ParamTensor& t, std::int64_t tp_rank, const float* block, float* whole) {
  if (t.split == TpSplit::None) {
    std::copy(block, block + t.numel, whole);
  } else if (t.split == TpSplit::Rows) {
    const std::int64_t row = t.shape.size() > 1 ? t.shape[1] : 1;
    std::copy(block, block + t.numel, whole + tp_rank * t.shape[0] * row);
  } else {
    const std::int64_t rows = t.shape[0], cols = t.shape[1], full_cols = t.full_shape[1];
    for (std::int64_t r = 0; r < rows; ++r) {
      std::copy(block + r * cols, block + (r + 1) * cols, whole + r * full_cols + tp_rank * cols);
    }
  }
}

}  // namespace

std::map<std::string, WholeTensor> load_whole_model(const std::filesystem::path& checkpoint_dir,
                                                    std::int64_t step, const Plan& saved) {
  const Layout& l = saved.layout;
  const std::int64_t world = l.world_size();
  const Mesh mesh(l, saved.cluster.devices_per_node);
  const std::int64_t local_experts = saved.model.num_local_experts / l.ep;
  std::map<std::string, WholeTensor> whole;
  for (std::int64_t rank = 0; rank < world; ++rank) {
    const Coords c = mesh.coords(rank);
    if (c[static_cast<std::size_t>(Axis::Rep)] != 0) continue;  // replicas hold the same state
    const std::int64_t tp_rank = c[static_cast<std::size_t>(Axis::Tp)];
    const std::int64_t ep_rank = c[static_cast<std::size_t>(Axis::Ep)];
    const std::int64_t hs_rank = c[static_cast<std::size_t>(Axis::Hs)];
    const ParameterLayout layout(saved.model, ep_rank * local_experts, local_experts, l.tp,
                                 tp_rank);
    const Checkpoint ckpt = load_checkpoint(
        step_checkpoint_dir(rank_checkpoint_root(checkpoint_dir, rank, world), step));
    // This rank's whole local buffers (every tensor of its tp/ep share).
    std::vector<float> param(static_cast<std::size_t>(layout.numel())), m(param.size()),
        v(param.size());
    std::vector<char> valid;  // hs > 1: which elements of the local buffers this rank holds
    if (l.hs > 1) {
      const auto units = shard_units(layout, saved.model, l.hs);
      valid.assign(param.size(), 0);
      for (const ShardUnit& u : units) {
        const std::int64_t from = u.begin + hs_rank * u.shard;
        const std::int64_t to = std::min(u.end, from + u.shard);
        for (std::int64_t i = from; i < to; ++i)
          valid[static_cast<std::size_t>(i)] = 1;
      }
      const std::vector<std::int64_t> shape = {shard_floats(units)};
      std::vector<float> shard(static_cast<std::size_t>(shape[0]));
      ckpt.copy_to("shard.master", shard.data(), shape);
      put_shards(units, hs_rank, shard.data(), param.data());
      ckpt.copy_to("shard.exp_avg", shard.data(), shape);
      put_shards(units, hs_rank, shard.data(), m.data());
      ckpt.copy_to("shard.exp_avg_sq", shard.data(), shape);
      put_shards(units, hs_rank, shard.data(), v.data());
    } else {
      for (const ParamTensor& t : layout.tensors()) {
        ckpt.copy_to(t.name, param.data() + t.offset, t.shape);
        ckpt.copy_to("optimizer.exp_avg." + t.name, m.data() + t.offset, t.shape);
        ckpt.copy_to("optimizer.exp_avg_sq." + t.name, v.data() + t.offset, t.shape);
      }
    }
    for (const ParamTensor& t : layout.tensors()) {
      std::int64_t full = 1;
      for (std::int64_t d : t.full_shape)
        full *= d;
      WholeTensor& w = whole[t.name];
      if (w.param.empty()) {
        w.param.assign(static_cast<std::size_t>(full), 0.0f);
        w.exp_avg.assign(w.param.size(), 0.0f);
        w.exp_avg_sq.assign(w.param.size(), 0.0f);
      }
      if (l.hs > 1) {
        // Only this rank's shard ranges hold data: copy those elements to their place in the
        // whole tensor (replicas over ep write the same values; other hs ranks the other ranges).
        const std::int64_t cols = t.shape.size() > 1 ? t.shape[1] : 1;
        const std::int64_t full_cols = t.full_shape.size() > 1 ? t.full_shape[1] : 1;
        for (std::int64_t i = 0; i < t.numel; ++i) {
          if (valid[static_cast<std::size_t>(t.offset + i)] == 0) continue;
          std::int64_t at = i;  // TpSplit::None
          if (t.split == TpSplit::Rows) at = tp_rank * t.numel + i;
          if (t.split == TpSplit::Cols) at = (i / cols) * full_cols + tp_rank * cols + i % cols;
          const auto from = static_cast<std::size_t>(t.offset + i),
                     to = static_cast<std::size_t>(at);
          w.param[to] = param[from];
          w.exp_avg[to] = m[from];
          w.exp_avg_sq[to] = v[from];
        }
      } else {
        put_block(t, tp_rank, param.data() + t.offset, w.param.data());
        put_block(t, tp_rank, m.data() + t.offset, w.exp_avg.data());
        put_block(t, tp_rank, v.data() + t.offset, w.exp_avg_sq.data());
      }
    }
  }
  return whole;
}

}  // namespace moetune::executor
