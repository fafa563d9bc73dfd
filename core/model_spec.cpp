// ModelSpec: JSON forms (moetune's strict format and Hugging Face config.json), parameter counts
// and FLOPs per token.
#include "core/model_spec.hpp"

#include <algorithm>
#include <set>

#include "core/error.hpp"

namespace moetune {

namespace {

constexpr std::int64_t kMaxDim = std::int64_t{1} << 24;

}  // namespace

bool ModelSpec::is_moe_layer(std::int64_t layer) const {
  if (num_local_experts <= 0) return false;
  if (std::find(mlp_only_layers.begin(), mlp_only_layers.end(), layer) != mlp_only_layers.end()) {
    return false;
  }
  return (layer + 1) % decoder_sparse_step == 0;
}

std::int64_t ModelSpec::num_moe_layers() const {
  std::int64_t n = 0;
  for (std::int64_t l = 0; l < num_hidden_layers; ++l)
    n += is_moe_layer(l) ? 1 : 0;
  return n;
}

LayerParams layer_params(const ModelSpec& m, std::int64_t layer) {
  const std::int64_t h = m.hidden_size;
  LayerParams p;
  p.attention = h * m.q_dim() + 2 * h * m.kv_dim() + m.q_dim() * h;
  if (m.attention_bias) p.attention += m.q_dim() + 2 * m.kv_dim();
  if (m.qk_norm) p.attention += 2 * m.head_dim;
  p.norms = 2 * h;
  if (m.is_moe_layer(layer)) {
    p.router = h * m.num_local_experts;
    p.expert_each = 3 * h * m.moe_intermediate_size;
    p.experts = m.num_local_experts * p.expert_each;
    if (m.shared_expert_intermediate_size > 0) {
      p.shared_expert = 3 * h * m.shared_expert_intermediate_size + h;  // + its sigmoid gate
    }
  } else {
    p.dense_ffn = 3 * h * m.intermediate_size;
  }
  return p;
}

ParamCounts param_counts(const ModelSpec& m) {
  ParamCounts c;
  c.embedding = m.vocab_size * m.hidden_size;
  c.lm_head = m.tie_word_embeddings ? 0 : m.vocab_size * m.hidden_size;
  c.final_norm = m.hidden_size;
  std::int64_t inactive = 0;
  for (std::int64_t l = 0; l < m.num_hidden_layers; ++l) {
    LayerParams p = layer_params(m, l);
    c.attention += p.attention;
    c.norms += p.norms;
    c.router += p.router;
    c.experts += p.experts;
    c.shared_experts += p.shared_expert;
    c.dense_ffn += p.dense_ffn;
    if (p.experts > 0) inactive += (m.num_local_experts - m.num_experts_per_tok) * p.expert_each;
  }
  c.expert = c.experts;
  c.dense = c.embedding + c.lm_head + c.final_norm + c.attention + c.norms + c.router +
            c.shared_experts + c.dense_ffn;
  c.total = c.dense + c.expert;
  c.active = c.total - inactive;
  return c;
}

double mean_attended_keys(const ModelSpec& m, std::int64_t seq_len, AttentionFlops convention) {
  const std::int64_t window = m.sliding_window > 0 ? m.sliding_window : seq_len;
  if (convention == AttentionFlops::Full) return static_cast<double>(std::min(seq_len, window));
  // Query i (1-based) sees min(i, window) keys; mean over i = 1..s.
  const std::int64_t w = std::min(seq_len, window);
  const double full_part = static_cast<double>(w) * static_cast<double>(w + 1) / 2.0;
  const double window_part = static_cast<double>(seq_len - w) * static_cast<double>(w);
  return (full_part + window_part) / static_cast<double>(seq_len);
}

TokenFlops flops_per_token(const ModelSpec& m, std::int64_t seq_len, AttentionFlops convention) {
  TokenFlops f;
  const double keys = mean_attended_keys(m, seq_len, convention);
  for (std::int64_t l = 0; l < m.num_hidden_layers; ++l) {
    LayerParams p = layer_params(m, l);
    double gemm_params =
        static_cast<double>(m.hidden_size * m.q_dim() * 2 + m.hidden_size * m.kv_dim() * 2);
    gemm_params += static_cast<double>(p.router + p.shared_expert + p.dense_ffn);
    gemm_params += static_cast<double>(m.num_experts_per_tok * p.expert_each);
    f.gemm += 2.0 * gemm_params;
    // QK^T and AV: each costs q_dim multiply-adds per attended key.
    f.attention += 2.0 * 2.0 * static_cast<double>(m.q_dim()) * keys;
  }
  f.gemm += 2.0 * static_cast<double>(m.vocab_size * m.hidden_size);  // LM head
  return f;
}

std::string to_string(ModelFamily family) {
  switch (family) {
    case ModelFamily::Mixtral:
      return "mixtral";
    case ModelFamily::Qwen2Moe:
      return "qwen2_moe";
    case ModelFamily::Qwen3Moe:
      return "qwen3_moe";
  }
  return "mixtral";
}

ModelFamily parse_model_family(const std::string& text) {
  if (text == "mixtral") return ModelFamily::Mixtral;
  if (text == "qwen2_moe") return ModelFamily::Qwen2Moe;
  if (text == "qwen3_moe") return ModelFamily::Qwen3Moe;
  throw InputError("model family \"" + text + "\" is not one of {mixtral, qwen2_moe, qwen3_moe}");
}

Json to_json(const ModelSpec& m) {
  Json j;
  j["schema_version"] = kSchemaVersion;
  j["name"] = m.name;
  j["family"] = to_string(m.family);
  j["source"] = m.source;
  j["vocab_size"] = m.vocab_size;
  j["hidden_size"] = m.hidden_size;
  j["intermediate_size"] = m.intermediate_size;
  j["moe_intermediate_size"] = m.moe_intermediate_size;
  j["shared_expert_intermediate_size"] = m.shared_expert_intermediate_size;
  j["num_hidden_layers"] = m.num_hidden_layers;
  j["num_attention_heads"] = m.num_attention_heads;
  j["num_key_value_heads"] = m.num_key_value_heads;
  j["head_dim"] = m.head_dim;
  j["num_local_experts"] = m.num_local_experts;
  j["num_experts_per_tok"] = m.num_experts_per_tok;
  j["decoder_sparse_step"] = m.decoder_sparse_step;
  j["mlp_only_layers"] = m.mlp_only_layers;
  j["norm_topk_prob"] = m.norm_topk_prob;
  j["attention_bias"] = m.attention_bias;
  j["qk_norm"] = m.qk_norm;
  j["max_position_embeddings"] = m.max_position_embeddings;
  j["rope_theta"] = m.rope_theta;
  j["rms_norm_eps"] = m.rms_norm_eps;
  j["sliding_window"] = m.sliding_window;
  j["tie_word_embeddings"] = m.tie_word_embeddings;
  j["router_aux_loss_coef"] = m.router_aux_loss_coef;
  return j;
}

Json to_hf_config(const ModelSpec& m) {
  if (m.family != ModelFamily::Mixtral) {
    throw InputError(m.name + ": only Mixtral models are written as a Hugging Face config");
  }
  Json j;
  j["architectures"] = Json::array({"MixtralForCausalLM"});
  j["model_type"] = "mixtral";
  j["vocab_size"] = m.vocab_size;
  j["hidden_size"] = m.hidden_size;
  j["intermediate_size"] = m.moe_intermediate_size;
  j["num_hidden_layers"] = m.num_hidden_layers;
  j["num_attention_heads"] = m.num_attention_heads;
  j["num_key_value_heads"] = m.num_key_value_heads;
  j["head_dim"] = m.head_dim;
  j["num_local_experts"] = m.num_local_experts;
  j["num_experts_per_tok"] = m.num_experts_per_tok;
  j["max_position_embeddings"] = m.max_position_embeddings;
  j["rope_theta"] = m.rope_theta;
  j["rms_norm_eps"] = m.rms_norm_eps;
  j["sliding_window"] = m.sliding_window > 0 ? Json(m.sliding_window) : Json(nullptr);
  j["tie_word_embeddings"] = m.tie_word_embeddings;
  j["router_aux_loss_coef"] = m.router_aux_loss_coef;
  j["hidden_act"] = "silu";
  j["attention_dropout"] = 0.0;
  j["router_jitter_noise"] = 0.0;
  j["output_router_logits"] = false;
  j["torch_dtype"] = "float32";
  return j;
}

ModelSpec model_from_json(JsonObjectReader r) {
  r.expect_schema_version();
  ModelSpec m;
  m.name = r.get_string("name");
  m.family = parse_model_family(r.get_enum("family", {"mixtral", "qwen2_moe", "qwen3_moe"}));
  m.source = r.get_string("source");
  m.vocab_size = r.get_int("vocab_size", 1, kMaxDim);
  m.hidden_size = r.get_int("hidden_size", 1, kMaxDim);
  m.intermediate_size = r.get_int("intermediate_size", 1, kMaxDim);
  m.moe_intermediate_size = r.get_int("moe_intermediate_size", 1, kMaxDim);
  m.shared_expert_intermediate_size = r.get_int("shared_expert_intermediate_size", 0, kMaxDim);
  m.num_hidden_layers = r.get_int("num_hidden_layers", 1, 100000);
  m.num_attention_heads = r.get_int("num_attention_heads", 1, 100000);
  m.num_key_value_heads = r.get_int("num_key_value_heads", 1, 100000);
  m.head_dim = r.get_int("head_dim", 1, 100000);
  m.num_local_experts = r.get_int("num_local_experts", 1, 100000);
  m.num_experts_per_tok = r.get_int("num_experts_per_tok", 1, 100000);
  m.decoder_sparse_step = r.get_int("decoder_sparse_step", 1, 100000);
  m.mlp_only_layers = r.get_int_list("mlp_only_layers", 0, 100000);
  m.norm_topk_prob = r.get_bool("norm_topk_prob");
  m.attention_bias = r.get_bool("attention_bias");
  m.qk_norm = r.get_bool("qk_norm");
  m.max_position_embeddings = r.get_int("max_position_embeddings", 1, kMaxDim * 64);
  m.rope_theta = r.get_double("rope_theta", 1e-9, 1e300);
  m.rms_norm_eps = r.get_double("rms_norm_eps", 0, 1);
  m.sliding_window = r.get_int("sliding_window", 0, kMaxDim * 64);
  m.tie_word_embeddings = r.get_bool("tie_word_embeddings");
  m.router_aux_loss_coef = r.get_double("router_aux_loss_coef", 0, 1e6);
  r.finish();
  validate(m, r.path());
  return m;
}

void validate(const ModelSpec& m, const std::string& origin) {
  auto bad = [&](const std::string& what) { throw InputError(origin + ": " + what); };
  if (m.num_attention_heads % m.num_key_value_heads != 0) {
    bad("num_attention_heads=" + std::to_string(m.num_attention_heads) +
        " is not a multiple of num_key_value_heads=" + std::to_string(m.num_key_value_heads));
  }
  if (m.num_experts_per_tok > m.num_local_experts) {
    bad("num_experts_per_tok=" + std::to_string(m.num_experts_per_tok) + " exceeds " +
        std::to_string(m.num_local_experts) + " experts");
  }
  for (std::int64_t l : m.mlp_only_layers) {
    if (l >= m.num_hidden_layers) {
      bad("mlp_only_layers names layer " + std::to_string(l) + " of " +
          std::to_string(m.num_hidden_layers));
    }
  }
  if (m.num_moe_layers() == 0) bad("the model has no MoE layer; moetune plans MoE models");
}

namespace {

// Keys of published config.json files that do not change the architecture or the training cost.
const std::set<std::string>& hf_ignored_keys() {
  static const std::set<std::string> keys = {
      "_name_or_path",        "architectures",   "auto_map",
      "model_type",           "torch_dtype",     "dtype",
      "transformers_version", "use_cache",       "bos_token_id",
      "eos_token_id",         "pad_token_id",    "initializer_range",
      "attention_dropout",    "hidden_act",      "output_router_logits",
      "router_jitter_noise",  "rope_scaling",    "max_window_layers",
      "use_sliding_window",   "tokenizer_class", "quantization_config",
      "layer_types",          "rope_parameters"};
  return keys;
}

}  // namespace

ModelSpec model_from_hf_config(const Json& config, const std::string& name,
                               const std::string& origin) {
  JsonObjectReader r(config, origin);
  const std::string model_type = r.get_string("model_type");
  ModelSpec m;
  m.name = name;
  m.source = origin;
  if (model_type == "mixtral") {
    m.family = ModelFamily::Mixtral;
  } else if (model_type == "qwen2_moe") {
    m.family = ModelFamily::Qwen2Moe;
  } else if (model_type == "qwen3_moe") {
    m.family = ModelFamily::Qwen3Moe;
  } else {
    r.fail("model_type", "\"" + model_type +
                             "\" is not supported; moetune reads mixtral, qwen2_moe and qwen3_moe");
  }
  if (r.has("hidden_act") && r.get_string("hidden_act") != "silu") {
    r.fail("hidden_act", "only SwiGLU experts (silu) are supported");
  }
  auto optional_int = [&](const char* key, std::int64_t fallback) {
    if (!r.has(key) || r.get_raw(key).is_null()) {
      if (r.has(key)) (void)r.get_raw(key);
      return fallback;
    }
    return r.get_int(key, 0, kMaxDim * 64);
  };
  m.vocab_size = r.get_int("vocab_size", 1, kMaxDim);
  m.hidden_size = r.get_int("hidden_size", 1, kMaxDim);
  m.intermediate_size = r.get_int("intermediate_size", 1, kMaxDim);
  m.num_hidden_layers = r.get_int("num_hidden_layers", 1, 100000);
  m.num_attention_heads = r.get_int("num_attention_heads", 1, 100000);
  m.num_key_value_heads = optional_int("num_key_value_heads", m.num_attention_heads);
  if (m.hidden_size % m.num_attention_heads != 0 && !r.has("head_dim")) {
    r.fail("num_attention_heads", "does not divide hidden_size and no head_dim is given");
  }
  m.head_dim = optional_int("head_dim", m.hidden_size / m.num_attention_heads);
  m.num_experts_per_tok = r.get_int("num_experts_per_tok", 1, 100000);
  m.max_position_embeddings = r.get_int("max_position_embeddings", 1, kMaxDim * 64);
  m.rope_theta = r.has("rope_theta") ? r.get_double("rope_theta", 1e-9, 1e300) : 10000.0;
  // transformers 5 keeps the RoPE base under rope_parameters (rope_scaling before it).
  for (const char* key : {"rope_parameters", "rope_scaling"}) {
    if (!r.has(key)) continue;
    const Json& rope = r.get_raw(key);
    if (rope.is_object() && rope.contains("rope_theta") && rope["rope_theta"].is_number()) {
      m.rope_theta = rope["rope_theta"].get<double>();
    }
    if (rope.is_object() && rope.contains("rope_type") && rope["rope_type"] != "default") {
      r.fail(key, "RoPE scaling of type " + rope["rope_type"].dump() + " is not supported");
    }
  }
  m.rms_norm_eps = r.get_double("rms_norm_eps", 0, 1);
  m.tie_word_embeddings = r.has("tie_word_embeddings") ? r.get_bool("tie_word_embeddings") : false;
  m.router_aux_loss_coef =
      r.has("router_aux_loss_coef") ? r.get_double("router_aux_loss_coef", 0, 1e6) : 0.001;
  m.sliding_window = optional_int("sliding_window", 0);
  if (m.family == ModelFamily::Mixtral) {
    m.num_local_experts = r.get_int("num_local_experts", 1, 100000);
    m.moe_intermediate_size = m.intermediate_size;
    m.norm_topk_prob = true;  // Mixtral always renormalises its top-k weights
  } else {
    m.num_local_experts = r.get_int("num_experts", 1, 100000);
    m.moe_intermediate_size = r.get_int("moe_intermediate_size", 1, kMaxDim);
    m.decoder_sparse_step =
        r.has("decoder_sparse_step") ? r.get_int("decoder_sparse_step", 1, 100000) : 1;
    m.mlp_only_layers = r.has("mlp_only_layers") ? r.get_int_list("mlp_only_layers", 0, 100000)
                                                 : std::vector<std::int64_t>{};
    m.norm_topk_prob = r.has("norm_topk_prob") ? r.get_bool("norm_topk_prob") : false;
    // Qwen windows attention only when use_sliding_window is set; otherwise sliding_window is
    // unused.
    bool windowed = r.has("use_sliding_window") && r.get_bool("use_sliding_window");
    if (windowed) {
      r.fail("use_sliding_window", "per-layer sliding window (Qwen) is not supported");
    }
    m.sliding_window = 0;
  }
  if (m.family == ModelFamily::Qwen2Moe) {
    m.shared_expert_intermediate_size =
        r.has("shared_expert_intermediate_size")
            ? r.get_int("shared_expert_intermediate_size", 0, kMaxDim)
            : 0;
    m.attention_bias = true;  // Qwen2 has q, k and v biases
    m.qk_norm = false;
  } else if (m.family == ModelFamily::Qwen3Moe) {
    m.attention_bias = r.has("attention_bias") ? r.get_bool("attention_bias") : false;
    m.qk_norm = true;  // Qwen3 normalises q and k per head
  }
  // Everything left must be a key known not to matter.
  for (auto it = config.begin(); it != config.end(); ++it) {
    if (!r.has(it.key())) continue;
    if (hf_ignored_keys().count(it.key()) != 0) (void)r.get_raw(it.key());
  }
  r.finish();
  validate(m, origin);
  return m;
}

}  // namespace moetune
