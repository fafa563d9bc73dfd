// Parameter layout and initialisation.
#include "executor/parameters.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.hpp"
#include "executor/io/synth.hpp"
#include "kernels/cpu/parallel.hpp"

namespace moetune::executor {

namespace {

// Box-Muller; u1 in (0, 1] so the log is finite.
double normal(Xoshiro256& rng) {
  const double u1 = 1.0 - rng.uniform();
  const double u2 = rng.uniform();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

}  // namespace

std::int64_t ParameterLayout::add(std::string name, std::vector<std::int64_t> full_shape,
                                  bool expert, bool norm, TpSplit split) {
  ParamTensor t;
  t.name = std::move(name);
  t.full_shape = full_shape;
  t.shape = std::move(full_shape);
  if (split == TpSplit::Rows) t.shape[0] /= tp_;
  if (split == TpSplit::Cols) t.shape[1] /= tp_;
  t.numel = 1;
  for (std::int64_t d : t.shape)
    t.numel *= d;
  t.offset = numel_;
  t.is_expert = expert;
  t.is_norm = norm;
  t.split = split;
  numel_ += t.numel;
  tensors_.push_back(std::move(t));
  return tensors_.back().offset;
}

void ParameterLayout::take_block(const ParamTensor& t, const float* full, float* out) const {
  if (t.split == TpSplit::None) {
    std::copy(full, full + t.numel, out);
  } else if (t.split == TpSplit::Rows) {
    const std::int64_t row = t.shape.size() > 1 ? t.shape[1] : 1;
    std::copy(full + tp_rank_ * t.shape[0] * row, full + (tp_rank_ + 1) * t.shape[0] * row, out);
  } else {
    const std::int64_t rows = t.shape[0], cols = t.shape[1], full_cols = t.full_shape[1];
    for (std::int64_t r = 0; r < rows; ++r) {
      std::copy(full + r * full_cols + tp_rank_ * cols,
                full + r * full_cols + (tp_rank_ + 1) * cols, out + r * cols);
    }
  }
}

ParameterLayout::ParameterLayout(const ModelSpec& m, std::int64_t first_expert,
                                 std::int64_t experts, std::int64_t tp, std::int64_t tp_rank)
    : first_expert_(first_expert),
      local_experts_(experts < 0 ? m.num_local_experts : experts),
      tp_(tp),
      tp_rank_(tp_rank) {
  MOETUNE_CHECK(m.family == ModelFamily::Mixtral, "the executor trains Mixtral-family models");
  MOETUNE_CHECK(first_expert_ >= 0 && first_expert_ + local_experts_ <= m.num_local_experts,
                "expert range outside the model's experts");
  const std::int64_t d = m.hidden_size;
  using S = TpSplit;
  embedding_ = add("model.embed_tokens.weight", {m.vocab_size, d}, false, false, S::Rows);
  for (std::int64_t i = 0; i < m.num_hidden_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    LayerOffsets l{};
    l.input_norm = add(p + "input_layernorm.weight", {d}, false, true);
    l.q = add(p + "self_attn.q_proj.weight", {m.q_dim(), d}, false, false, S::Rows);
    l.k = add(p + "self_attn.k_proj.weight", {m.kv_dim(), d}, false, false, S::Rows);
    l.v = add(p + "self_attn.v_proj.weight", {m.kv_dim(), d}, false, false, S::Rows);
    l.o = add(p + "self_attn.o_proj.weight", {d, m.q_dim()}, false, false, S::Cols);
    l.post_norm = add(p + "post_attention_layernorm.weight", {d}, false, true);
    l.gate = add(p + "block_sparse_moe.gate.weight", {m.num_local_experts, d}, false, false);
    // All experts' w1 side by side, then all w2, then all w3: the grouped expert GEMMs read
    // w1[E,F,D], w2[E,D,F] and w3[E,F,D] as one block each.
    const std::int64_t f = m.moe_intermediate_size;
    auto expert = [&](std::int64_t e, const char* w) {
      return p + "block_sparse_moe.experts." + std::to_string(e) + "." + w + ".weight";
    };
    const std::int64_t e_end = first_expert_ + local_experts_;
    for (std::int64_t e = first_expert_; e < e_end; ++e) {
      l.w1.push_back(add(expert(e, "w1"), {f, d}, true, false, S::Rows));
    }
    for (std::int64_t e = first_expert_; e < e_end; ++e) {
      l.w2.push_back(add(expert(e, "w2"), {d, f}, true, false, S::Cols));
    }
    for (std::int64_t e = first_expert_; e < e_end; ++e) {
      l.w3.push_back(add(expert(e, "w3"), {f, d}, true, false, S::Rows));
    }
    layers_.push_back(std::move(l));
  }
  final_norm_ = add("model.norm.weight", {d}, false, true);
  lm_head_ = add("lm_head.weight", {m.vocab_size, d}, false, false, S::Rows);
}

const ParamTensor& ParameterLayout::find(const std::string& name) const {
  for (const auto& t : tensors_) {
    if (t.name == name) return t;
  }
  throw InputError("no parameter named " + name);
}

namespace {

void initialise_tensor(const ParameterLayout& layout, const ParamTensor& t, float* params,
                       std::uint64_t seed, double std) {
  // One stream per tensor, keyed by its name (FNV-1a), so every layout draws the same values.
  std::uint64_t key = 0xcbf29ce484222325ULL;
  for (unsigned char ch : t.name)
    key = (key ^ ch) * 0x100000001b3ULL;
  Xoshiro256 rng(seed ^ key);
  // Draw the whole tensor, then keep this rank's block: every tp degree starts alike.
  std::int64_t full = 1;
  for (std::int64_t d : t.full_shape)
    full *= d;
  std::vector<float> values(static_cast<std::size_t>(full));
  for (float& v : values)
    v = t.is_norm ? 1.0f : static_cast<float>(std * normal(rng));
  layout.take_block(t, values.data(), params + t.offset);
}

}  // namespace

void initialise_parameters(const ParameterLayout& layout, float* params, std::uint64_t seed,
                           double std) {
  // Tensors draw from their own streams, so they can be drawn in parallel (billions of
  // parameters for a full-size layer) with the same values.
  const std::vector<ParamTensor>& tensors = layout.tensors();
  kernels::cpu::parallel_for(
      static_cast<std::int64_t>(tensors.size()), 1, [&](std::int64_t begin, std::int64_t end) {
        for (std::int64_t i = begin; i < end; ++i) {
          initialise_tensor(layout, tensors[static_cast<std::size_t>(i)], params, seed, std);
        }
      });
}

}  // namespace moetune::executor
