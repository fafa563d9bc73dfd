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
