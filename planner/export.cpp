// Megatron-LM and SMP v2 exports.
#include "planner/export.hpp"

#include <charconv>
#include <sstream>

#include "core/constraints.hpp"
#include "core/error.hpp"

namespace moetune::planner {

namespace {

// Whole numbers print without an exponent (Megatron parses --rotary-base as an integer); others in
// the shortest form that reads back to the same double.
std::string number(double v) {
  if (v == static_cast<double>(static_cast<long long>(v)) && v < 1e15 && v > -1e15) {
    return std::to_string(static_cast<long long>(v));
  }
  char buf[64];
  const auto result = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, result.ptr);
}

}  // namespace

Export export_megatron(const Plan& plan) {
  const ModelSpec& m = plan.model;
  const TrainSpec& t = plan.train;
  const Layout& l = plan.layout;
  std::vector<std::pair<std::string, std::string>> args;  // flag, value ("" for a switch)
  auto add = [&](const std::string& flag, const std::string& value = "") {
    args.emplace_back(flag, value);
  };
  Export out;
  // Model.
  add("--num-layers", std::to_string(m.num_hidden_layers));
  add("--hidden-size", std::to_string(m.hidden_size));
  add("--ffn-hidden-size", std::to_string(m.intermediate_size));
  add("--num-attention-heads", std::to_string(m.num_attention_heads));
  add("--group-query-attention");
  add("--num-query-groups", std::to_string(m.num_key_value_heads));
  if (m.head_dim * m.num_attention_heads != m.hidden_size) {
    add("--kv-channels", std::to_string(m.head_dim));
  }
  add("--seq-length", std::to_string(t.seq_len));
  add("--max-position-embeddings", std::to_string(m.max_position_embeddings));
  add("--position-embedding-type", "rope");
  add("--rotary-base", number(m.rope_theta));
  add("--normalization", "RMSNorm");
  add("--norm-epsilon", number(m.rms_norm_eps));
  add("--swiglu");
  add("--disable-bias-linear");
  if (m.attention_bias) add("--add-qkv-bias");
  if (m.qk_norm) add("--qk-layernorm");
  if (!m.tie_word_embeddings) add("--untie-embeddings-and-output-weights");
  add("--vocab-size", std::to_string(m.vocab_size));
  if (m.sliding_window > 0) add("--window-size", std::to_string(m.sliding_window) + ",0");
  // Experts and routing.
  add("--num-experts", std::to_string(m.num_local_experts));
  add("--moe-router-topk", std::to_string(m.num_experts_per_tok));
  add("--moe-ffn-hidden-size", std::to_string(m.moe_intermediate_size));
  if (!m.norm_topk_prob) add("--moe-router-pre-softmax");
  if (m.shared_expert_intermediate_size > 0) {
    add("--moe-shared-expert-intermediate-size", std::to_string(m.shared_expert_intermediate_size));
  }
  if (m.decoder_sparse_step != 1 || !m.mlp_only_layers.empty()) {
    std::string pattern = "([";
    for (std::int64_t i = 0; i < m.num_hidden_layers; ++i) {
      pattern += (i ? "," : "") + std::string(m.is_moe_layer(i) ? "1" : "0");
    }
    add("--moe-layer-freq", pattern + "])");
  }
  add("--moe-router-load-balancing-type", to_string(t.moe.load_balancing));
  if (t.moe.load_balancing == LoadBalancing::AuxLoss) {
    add("--moe-aux-loss-coeff", number(t.moe.aux_loss_coef));
  }
  if (t.moe.z_loss_coef > 0) add("--moe-z-loss-coeff", number(t.moe.z_loss_coef));
  add("--moe-token-dispatcher-type", to_string(t.moe.dispatcher));
  if (t.moe.capacity_factor > 0) {
    add("--moe-expert-capacity-factor", number(t.moe.capacity_factor));
  }
  add("--moe-grouped-gemm");
  // Parallelism.
  add("--tensor-model-parallel-size", std::to_string(l.tp));
  if (l.tp > 1) add("--sequence-parallel");
  add("--pipeline-model-parallel-size", std::to_string(l.pp));
  if (l.uneven_stages()) {
    add("--decoder-first-pipeline-num-layers", std::to_string(l.first_stage_layers));
    add("--decoder-last-pipeline-num-layers", std::to_string(l.last_stage_layers));
    // Stages of different sizes have no one layer count per virtual stage.
    if (l.vpp > 1) add("--num-virtual-stages-per-pipeline-rank", std::to_string(l.vpp));
  } else if (l.vpp > 1) {
    add("--num-layers-per-virtual-pipeline-stage",
        std::to_string(m.num_hidden_layers / (l.pp * l.vpp)));
  }
  add("--expert-model-parallel-size", std::to_string(l.ep));
  add("--expert-tensor-parallel-size", std::to_string(l.tp));
  if (l.hs > 1 || l.distributed_optimizer) {
    add("--use-distributed-optimizer");
    // Without moetune's distributed optimizer the replicas keep whole optimizer copies: one
    // Megatron optimizer instance per replica, each sharded over its hs ranks.
    const std::int64_t instances = l.distributed_optimizer ? 1 : l.dp() / l.hs;
    if (instances > 1) add("--num-distributed-optimizer-instances", std::to_string(instances));
  }
  if (l.hs > 1) {
    out.notes.push_back(
        "Megatron's distributed optimizer shards optimizer state and gradients over the hs=" +
        std::to_string(l.hs) +
        " ranks but keeps bf16 parameters replicated; moetune's plan also shards parameters "
        "(FSDP), so Megatron needs more memory than predicted");
  }
  if (l.optimizer_offload) {
    add("--optimizer-cpu-offload");
    add("--optimizer-offload-fraction", "1.0");
  }
  if (l.activation_offload) {
    out.notes.push_back("activation offloading has no Megatron-LM flag; it is left out");
  }
  if (l.recompute == Recompute::Full) {
    add("--recompute-granularity", "full");
    add("--recompute-method", "uniform");
    add("--recompute-num-layers", "1");
  }
  // Megatron places ranks tp, (cp), ep, dp, pp from the inside out.
  const MeshOrder megatron = {Axis::Tp, Axis::Ep, Axis::Hs, Axis::Rep, Axis::Pp};
  Layout as_megatron = l;
  as_megatron.order = megatron;
  if (canonical_order(l) != canonical_order(as_megatron)) {
    out.notes.push_back("mesh order " + order_to_string(canonical_order(l)) +
                        " has no Megatron-LM flag; Megatron places ranks tp-ep-dp-pp");
  }
  // Batch, precision, optimizer.
  add("--micro-batch-size", std::to_string(l.micro_batch));
  add("--global-batch-size", std::to_string(t.global_batch));
  if (t.precision == Precision::Bf16 || t.precision == Precision::Fp8) add("--bf16");
  if (t.precision == Precision::Fp8) add("--fp8-format", "hybrid");
  const OptimizerSpec& o = t.optimizer;
  add("--optimizer", "adam");
  add("--lr", number(o.lr));
  add("--min-lr", number(o.min_lr));
  add("--lr-decay-style", "cosine");
  add("--lr-warmup-iters", std::to_string(o.warmup_steps));
  add("--lr-decay-iters", std::to_string(o.decay_steps));
  add("--adam-beta1", number(o.beta1));
  add("--adam-beta2", number(o.beta2));
  add("--adam-eps", number(o.eps));
  add("--weight-decay", number(o.weight_decay));
  add("--clip-grad", number(o.grad_clip));
  add("--seed", std::to_string(t.seed));

  std::ostringstream s;
  for (std::size_t i = 0; i < args.size(); ++i) {
    s << args[i].first;
    if (!args[i].second.empty()) s << " " << args[i].second;
    s << (i + 1 < args.size() ? " \\\n" : "\n");
  }
  out.text = s.str();
  return out;
}

Export export_smp(const Plan& plan) {
  const Layout& l = plan.layout;
  if (l.pp > 1) {
    throw InputError("SMP v2 has no pipeline parallelism; this plan has pp=" +
                     std::to_string(l.pp) + " (plan again with --pp 1)");
  }
  if (l.ep > 1 && l.tp > 1) {
    throw InputError("SMP v2 cannot combine expert parallelism (ep=" + std::to_string(l.ep) +
                     ") with tensor parallelism (tp=" + std::to_string(l.tp) +
                     "); plan again with --tp 1 or --ep 1");
  }
  if (l.optimizer_offload) {
    throw InputError("SMP v2 has no optimizer offloading; plan again with --optimizer-offload off");
  }
  Export out;
  if (l.distributed_optimizer) {
    out.notes.push_back(
        "SMP v2 keeps whole optimizer state on every hybrid-shard replica; the plan's distributed "
        "optimizer cannot be requested, so SMP needs more memory than predicted");
  }
  Json j;
  j["hybrid_shard_degree"] = l.hs;
  j["sm_activation_offloading"] = l.activation_offload;
  j["activation_loading_horizon"] = 2;
  j["fsdp_cache_flush_warnings"] = true;
  j["allow_empty_shards"] = false;
  j["tensor_parallel_degree"] = l.tp;
  j["context_parallel_degree"] = 1;
  j["expert_parallel_degree"] = l.ep;
  j["random_seed"] = plan.train.seed;
  out.text = j.dump(2) + "\n";
  if (l.recompute == Recompute::Full) {
    out.notes.push_back(
        "full recompute is applied in the training script (activation checkpointing of every "
        "decoder layer), not in the SMP configuration");
  }
  Layout as_smp = l;
  as_smp.order = {Axis::Tp, Axis::Ep, Axis::Hs, Axis::Rep, Axis::Pp};
  if (canonical_order(l) != canonical_order(as_smp)) {
    out.notes.push_back("SMP v2 chooses its own rank placement; mesh order " +
                        order_to_string(canonical_order(l)) + " cannot be requested");
  }
  return out;
}

}  // namespace moetune::planner
