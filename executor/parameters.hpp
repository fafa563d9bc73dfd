// The Mixtral model's parameters in one flat fp32 buffer, each tensor named and shaped as in
// Hugging Face's MixtralForCausalLM (so safetensors files map one to one), plus deterministic
// initialisation.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/model_spec.hpp"

namespace moetune::executor {

// How tensor parallelism splits a tensor: by rows (column-parallel linear: q, k, v, w1, w3, the
// vocabulary of the embedding and LM head), by columns (row-parallel linear: o, w2), or not at all
// (norms, router), in which case every tp rank holds it whole.
enum class TpSplit : std::uint8_t { None, Rows, Cols };

struct ParamTensor {
  std::string name;  // Hugging Face name, e.g. "model.layers.0.self_attn.q_proj.weight"
  std::vector<std::int64_t> shape;       // this rank's part
  std::vector<std::int64_t> full_shape;  // the whole tensor
  std::int64_t offset = 0;               // in floats, into the flat buffer
  std::int64_t numel = 0;
  bool is_expert = false;  // routed expert weight (sharded over ep in distributed runs)
  bool is_norm = false;
  TpSplit split = TpSplit::None;
};

// Offsets of one layer's tensors in the flat buffer.
struct LayerOffsets {
  std::int64_t input_norm, q, k, v, o, post_norm, gate;
  std::vector<std::int64_t> w1, w2, w3;  // per expert
};

class ParameterLayout {
 public:
  // All experts, or (expert parallelism) only experts [first_expert, first_expert + experts) of
  // every layer; tensor names keep the global expert index.
  // With tensor parallelism (tp > 1), this rank (tp_rank) holds block tp_rank of every split
  // tensor.
  explicit ParameterLayout(const ModelSpec& model, std::int64_t first_expert = 0,
                           std::int64_t experts = -1, std::int64_t tp = 1,
                           std::int64_t tp_rank = 0);

  std::int64_t tp() const { return tp_; }
  std::int64_t tp_rank() const { return tp_rank_; }
  // Copies this rank's block of a whole tensor (full_shape, row-major) into `out`.
  void take_block(const ParamTensor& t, const float* full, float* out) const;

  std::int64_t first_expert() const { return first_expert_; }
  std::int64_t local_experts() const { return local_experts_; }

  const std::vector<ParamTensor>& tensors() const { return tensors_; }
  std::int64_t numel() const { return numel_; }
  const ParamTensor& find(const std::string& name) const;
  std::int64_t embedding() const { return embedding_; }
  std::int64_t final_norm() const { return final_norm_; }
  std::int64_t lm_head() const { return lm_head_; }
  const LayerOffsets& layer(std::int64_t i) const { return layers_[static_cast<std::size_t>(i)]; }

 private:
  std::int64_t add(std::string name, std::vector<std::int64_t> full_shape, bool expert, bool norm,
                   TpSplit split = TpSplit::None);

  std::vector<ParamTensor> tensors_;
  std::vector<LayerOffsets> layers_;
  std::int64_t numel_ = 0;
  std::int64_t embedding_ = 0, final_norm_ = 0, lm_head_ = 0;
  std::int64_t first_expert_ = 0, local_experts_ = 0;
  std::int64_t tp_ = 1, tp_rank_ = 0;
};

// Norm weights 1, everything else normal(0, std) from xoshiro256** (executor/io/synth.hpp), seeded
// per tensor by its name: the values do not depend on the platform's standard library, nor on
// which tensors a rank holds (every layout starts from the same model).
void initialise_parameters(const ParameterLayout& layout, float* params, std::uint64_t seed,
                           double std = 0.02);

}  // namespace moetune::executor
