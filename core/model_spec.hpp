// ModelSpec: the architecture of a GQA + SwiGLU-expert MoE transformer (Mixtral, Qwen2-MoE,
// Qwen3-MoE) with its parameter counts and FLOPs per token, computed here once for every library.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/json_reader.hpp"

namespace moetune {

enum class ModelFamily { Mixtral, Qwen2Moe, Qwen3Moe };

// How attention-score FLOPs are counted. Causal halves QK^T and AV (each query sees on average
// (s+1)/2 keys); Full counts s keys per query, the convention of Narayanan et al. 2021 and of many
// published MFU figures. moetune reports Causal by default and both where it matters.
enum class AttentionFlops { Causal, Full };

struct ModelSpec {
  std::string name;
  ModelFamily family = ModelFamily::Mixtral;
  std::string source;  // where the numbers come from (a config.json, a paper)

  std::int64_t vocab_size = 0;
  std::int64_t hidden_size = 0;
  std::int64_t intermediate_size = 0;                // dense FFN width (layers without experts)
  std::int64_t moe_intermediate_size = 0;            // one routed expert's FFN width
  std::int64_t shared_expert_intermediate_size = 0;  // Qwen2-MoE's gated shared expert; 0 = none
  std::int64_t num_hidden_layers = 0;
  std::int64_t num_attention_heads = 0;
  std::int64_t num_key_value_heads = 0;
  std::int64_t head_dim = 0;
  std::int64_t num_local_experts = 0;
  std::int64_t num_experts_per_tok = 0;
  std::int64_t decoder_sparse_step = 1;
  std::vector<std::int64_t> mlp_only_layers;
  bool norm_topk_prob = true;
  bool attention_bias = false;
  bool qk_norm = false;
  std::int64_t max_position_embeddings = 0;
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-5;
  std::int64_t sliding_window = 0;  // 0 = none
  bool tie_word_embeddings = false;
  double router_aux_loss_coef = 0.0;

  bool operator==(const ModelSpec&) const = default;

  bool is_moe_layer(std::int64_t layer) const;
  std::int64_t num_moe_layers() const;
  std::int64_t q_dim() const { return num_attention_heads * head_dim; }
  std::int64_t kv_dim() const { return num_key_value_heads * head_dim; }
};

// Parameters of one decoder layer, split the way sharding treats them.
struct LayerParams {
  std::int64_t attention = 0;      // q, k, v, o (+ bias, + q/k norms)
  std::int64_t norms = 0;          // the two RMSNorm weights
  std::int64_t router = 0;         // gate: hidden x experts
  std::int64_t expert_each = 0;    // one routed expert: w1, w3 (hidden x ffn) and w2 (ffn x hidden)
  std::int64_t experts = 0;        // all routed experts of the layer
  std::int64_t shared_expert = 0;  // shared expert and its gate
  std::int64_t dense_ffn = 0;      // SwiGLU FFN of a layer without experts
  std::int64_t dense() const { return attention + norms + router + shared_expert + dense_ffn; }
  std::int64_t total() const { return dense() + experts; }
};

struct ParamCounts {
  std::int64_t embedding = 0;
  std::int64_t lm_head = 0;  // 0 when tied to the embedding
  std::int64_t final_norm = 0;
  std::int64_t attention = 0;  // all layers
  std::int64_t norms = 0;      // all layers' norms, without the final norm
  std::int64_t router = 0;
  std::int64_t experts = 0;  // all routed experts of all layers
  std::int64_t shared_experts = 0;
  std::int64_t dense_ffn = 0;
  std::int64_t total = 0;
  std::int64_t active = 0;  // per token: everything but the routed experts not chosen
  std::int64_t dense = 0;   // everything that is not a routed expert
  std::int64_t expert = 0;  // == experts
};

LayerParams layer_params(const ModelSpec& model, std::int64_t layer);
ParamCounts param_counts(const ModelSpec& model);

// Forward FLOPs per token for a sequence of `seq_len` tokens: GEMMs (2 per multiply-add, with the
// active experts, router and LM head; the embedding lookup is not a GEMM) and attention scores.
struct TokenFlops {
  double gemm = 0;       // per token, forward
  double attention = 0;  // QK^T and AV per token, forward
  double forward() const { return gemm + attention; }
  double training() const { return 3 * forward(); }  // forward + backward (2x forward)
};
TokenFlops flops_per_token(const ModelSpec& model, std::int64_t seq_len, AttentionFlops convention);
// Mean number of keys a query attends to under a convention (causal, sliding window).
double mean_attended_keys(const ModelSpec& model, std::int64_t seq_len, AttentionFlops convention);

std::string to_string(ModelFamily family);
ModelFamily parse_model_family(const std::string& text);

// moetune's own strict format (profiles/models/*.json, the "model" of plan.json).
Json to_json(const ModelSpec& model);
ModelSpec model_from_json(JsonObjectReader reader);
// A Hugging Face config.json as published (MixtralConfig, Qwen2MoeConfig, Qwen3MoeConfig). Keys
// that do not change the architecture (torch_dtype, transformers_version, ...) are ignored; any key
// moetune cannot honour (e.g. a Qwen2-MoE with sliding window on a subset of layers) is refused.
ModelSpec model_from_hf_config(const Json& config, const std::string& name,
                               const std::string& origin);
// A Mixtral model as a Hugging Face config.json (MixtralConfig), so weights moetune writes open in
// transformers. Only for the Mixtral family.
Json to_hf_config(const ModelSpec& model);
// Checks the sizes fit together (heads divide, top-k <= experts, ...).
void validate(const ModelSpec& model, const std::string& origin);

}  // namespace moetune
