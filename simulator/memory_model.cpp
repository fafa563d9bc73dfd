// The memory model: bytes on the worst rank, by kind, for any layout.
//
// Notation used in the comments: T = micro_batch * seq_len tokens per micro-batch, t = tp, h =
// hidden, a = bytes of an activation element (2 for bf16/fp8, 4 for fp32), k = experts per token,
// Tr = tokens the busiest EP rank receives = T * k * load factor.
#include <algorithm>
#include <array>
#include <cmath>

#include "core/constraints.hpp"
#include "core/units.hpp"
#include "simulator/simulator.hpp"

namespace moetune::simulator {

namespace {

double activation_bytes(Precision p) {
  return p == Precision::Fp32 ? 4.0 : 2.0;
}

// Inverse of the standard normal CDF (Abramowitz and Stegun 26.2.23, error below 4.5e-4).
double normal_quantile(double p) {
  const bool upper = p > 0.5;
  const double q = upper ? 1.0 - p : p;
  const double t = std::sqrt(-2.0 * std::log(q));
  const double z = t - (2.515517 + 0.802853 * t + 0.010328 * t * t) /
                           (1.0 + 1.432788 * t + 0.189269 * t * t + 0.001308 * t * t * t);
  return upper ? z : -z;
}

}  // namespace

double expected_max_of_normals(std::int64_t n) {
  if (n <= 1) return 0.0;
  const double x = static_cast<double>(n);
  return normal_quantile((x - 0.375) / (x + 0.25));
}

StageParams Simulator::stage_params(const Layout& l, std::int64_t stage) const {
  // Everything stage parameters depend on: the degrees that split and shard them, the stage and
  // its layers, and the distributed optimizer's replicas.
  using Key = std::array<std::int64_t, 10>;
  const Key key = {static_cast<std::int64_t>(id_),
                   l.tp,
                   l.ep,
                   l.hs,
                   l.rep,
                   l.pp,
                   stage,
                   l.first_stage_layers,
                   l.last_stage_layers,
                   l.distributed_optimizer ? 1 : 0};
  constexpr std::size_t kRemembered = 8;
  thread_local std::array<std::pair<Key, StageParams>, kRemembered> memo{};
  thread_local std::size_t next = 0;
  for (const auto& [k, v] : memo) {
    if (k == key) return v;
  }
  const StageParams sp = compute_stage_params(l, stage);
  memo[next] = {key, sp};
  next = (next + 1) % kRemembered;
  return sp;
}

StageParams Simulator::compute_stage_params(const Layout& l, std::int64_t stage) const {
  const ModelSpec& m = model_;
  StageParams sp;
  const LayerRange layers = stage_layers(m.num_hidden_layers, l, stage);
  sp.first = stage == 0;
  sp.last = stage == l.pp - 1;
  // Hybrid sharding splits each unit (the embedding, a layer's dense part, a layer's experts, the
  // final norm with the head) into hs equal shards, the last one padded; a gather group (the
  // embedding, a layer, the final norm and head) is gathered whole, its units padded.
  const std::int64_t hs = l.hs;
  auto shard = [hs](double unit) {
    return static_cast<double>((static_cast<std::int64_t>(unit) + hs - 1) / hs);
  };
  // The distributed optimizer splits each unit's shard again over the unit's replicas (dense:
  // ep x rep, experts: rep), padded to whole chunks.
  const std::int64_t dense_r = l.distributed_optimizer ? l.dense_replicas() : 1;
  const std::int64_t expert_r = l.distributed_optimizer ? l.expert_replicas() : 1;
  auto chunk = [](double s, std::int64_t r) {
    return static_cast<double>((static_cast<std::int64_t>(s) + r - 1) / r);
  };
  double largest_group = 0, sharded = 0, owned = 0;
  auto add_group = [&](double a, double b) {
    sharded += shard(a) + shard(b);
    owned += chunk(shard(a), dense_r) + chunk(shard(b), expert_r);
    largest_group = std::max(largest_group, static_cast<double>(hs) * (shard(a) + shard(b)));
  };
  for (std::int64_t layer = layers.begin; layer < layers.end; ++layer) {
    const LayerParams& p = layer_params_[static_cast<std::size_t>(layer)];
    // Split by tp: q, k, v, o (and their biases), shared expert, dense FFN. Whole on every tp rank:
    // the two norms, the router, the q/k norms.
    const double qk_norm = m.qk_norm ? 2.0 * static_cast<double>(m.head_dim) : 0.0;
    const double split = static_cast<double>(p.attention) - qk_norm +
                         static_cast<double>(p.shared_expert + p.dense_ffn);
    const double replicated = static_cast<double>(p.norms + p.router) + qk_norm;
    sp.tp_split += split;
    sp.tp_replicated += replicated;
    sp.experts += static_cast<double>(p.experts);
    if (p.experts > 0) {
      ++sp.moe_layers;
    } else {
      ++sp.dense_layers;
    }
    add_group(split / l.tp + replicated, static_cast<double>(p.experts) / (l.ep * l.tp));
  }
  const double vocab_h = static_cast<double>(m.vocab_size * m.hidden_size);
  if (sp.first) {
    sp.tp_split += vocab_h;  // vocab-parallel embedding
    add_group(vocab_h / l.tp, 0);
  }
  if (sp.last) {
    const double final_norm = static_cast<double>(m.hidden_size);
    sp.tp_replicated += final_norm;
    double head = 0;
    if (!m.tie_word_embeddings || !sp.first) {
      // An untied head, or a tied one on another stage than the embedding (kept as a copy whose
      // gradient is all-reduced with the embedding's, as Megatron does).
      sp.tp_split += vocab_h;
      head = vocab_h / l.tp;
    }
    add_group(final_norm + head, 0);
  }
  sp.largest_unit = largest_group;
  sp.sharded = sharded;
  sp.owned = owned;
  return sp;
}

double Simulator::expert_load_factor(const Layout& l) const {
  if (train_.moe.capacity_factor > 0) return train_.moe.capacity_factor;
  if (l.ep <= 1) return 1.0;
  // A rank's load is the sum of its m = E / ep experts' loads. Two sources spread it:
  // - popularity skew: expert shares with coefficient of variation c, m of E drawn without
  //   replacement, give a rank share with relative variance c^2 (E - m) / (m (E - 1));
  // - sampling: the rank receives Binomial(ep * n, 1/ep) of the n = T * k copies a rank sends,
  //   relative variance (1 - 1/ep) / n.
  // The busiest of ep ranks then sits z(ep) standard deviations above the mean, z from Blom's
  // approximation of the expected maximum of ep normal variables.
  const bool balanced =
      train_.moe.force_balanced || train_.moe.load_balancing == LoadBalancing::Sinkhorn;
  const double c = balanced ? 0.0 : expert_skew();
  const double E = static_cast<double>(model_.num_local_experts);
  const double ep = static_cast<double>(l.ep);
  const double m = E / ep;
  const double skew_var = E > 1 ? c * c * (E - m) / (m * (E - 1)) : 0.0;
  const double n = static_cast<double>(l.micro_batch * train_.seq_len * model_.num_experts_per_tok);
  const double sampling_var = (1.0 - 1.0 / ep) / n;
  return 1.0 + expected_max_of_normals(l.ep) * std::sqrt(skew_var + sampling_var);
}

double Simulator::expert_skew() const {
  // A calibrated profile carries the skew measured on this system's runs.
  if (cluster_.calibration && cluster_.calibration->expert_skew) {
    return *cluster_.calibration->expert_skew;
  }
  return train_.moe.expert_skew;
}

LayerActivations Simulator::layer_activations(const Layout& l) const {
  const ModelSpec& m = model_;
  const double a = activation_bytes(train_.precision);
  const double t = static_cast<double>(l.tp);
  const double T = static_cast<double>(l.micro_batch * train_.seq_len);
  const double h = static_cast<double>(m.hidden_size);
  const double q = static_cast<double>(m.q_dim());
  const double kv = static_cast<double>(m.kv_dim());
  const double k = static_cast<double>(m.num_experts_per_tok);
  const double Tr = T * k * expert_load_factor(l);
  LayerActivations act;
  act.input = a * T * h / t;
  // RMSNorm keeps its input (the residual stream) and 1/rms in fp32; sequence parallel splits both.
  const double norm = a * T * h / t + 4.0 * T / t;
  act.attention = norm + a * T * h / t  // norm output, the QKV GEMM input (gathered again in bwd)
                  + a * T * (q + 2 * kv) / t  // q, k, v after RoPE
                  + a * T * q / t;            // attention output, the out-projection input
  if (m.qk_norm) act.attention += a * T * (q + kv) / t;  // q/k norm inputs
  const double heads = static_cast<double>(m.num_attention_heads) / t;
  const double b = static_cast<double>(l.micro_batch);
  const double s = static_cast<double>(train_.seq_len);
  if (cluster_.device.flash_attention) {
    act.attention += 4.0 * b * heads * s;  // log-sum-exp per query row, fp32
  } else {
    act.attention += a * b * heads * s * s;  // softmax probabilities
  }
  const double f = static_cast<double>(m.moe_intermediate_size);
  const double E = static_cast<double>(m.num_local_experts);
  // The router runs in fp32 on all T tokens on every tp rank; its logits are kept only for the
  // z-loss's backward (softmax's backward needs its output alone).
  const double router_logits = 4.0 * T * E;
  const bool z_loss = train_.moe.z_loss_coef > 0;
  act.moe = norm + a * T * h / t;  // norm output (router and dispatch input)
  act.moe += 4.0 * T * E + (z_loss ? router_logits : 0.0);  // router probabilities (and logits)
  act.moe += 8.0 * T * k;                                   // top-k indices (int32) and weights
  // The permuted row of each routed copy (int64), to unpermute; rows per expert and offsets.
  act.moe += 8.0 * T * k + 8.0 * (2.0 * E + 1.0);
  // The experts' inputs, on the rank that runs them; w1 and w3 outputs and the SwiGLU output.
  act.moe += Tr * (a * h + a * 3.0 * f / t);
  // The expert outputs back in dispatch order, for the routing weights' gradient.
  act.moe += a * T * k * h;
  if (m.shared_expert_intermediate_size > 0) {
    act.moe += a * T * 3.0 * static_cast<double>(m.shared_expert_intermediate_size) / t;
  }
  const double ffn = static_cast<double>(m.intermediate_size);
  act.dense_ffn = norm + a * T * h / t + a * T * 3.0 * ffn / t;

  // Router logits when they are not kept, and the slot of each permuted row (int64).
  act.forward_scratch = (z_loss ? 0.0 : router_logits) + 8.0 * T * k;
  // Backward: the gradients of the layer output, of the attention output's residual and of a
  // norm's input (this rank's chunk), and of a norm output over the whole sequence.
  const double residual = 3.0 * a * T * h / t + a * T * h;
  const double attention_grads = a * T * 2.0 * (q + kv) / t;  // dq, dk, dv, d(attention output)
  // d(router logits) and d(probabilities) in fp32, d(top-k weights), the gradients of the routed
  // copies' outputs and inputs, and of w1's and w3's outputs.
  const double moe_grads =
      2.0 * 4.0 * T * E + 4.0 * T * k + a * 2.0 * T * k * h + a * 2.0 * Tr * f / t +
      (m.shared_expert_intermediate_size > 0
           ? a * 2.0 * T * static_cast<double>(m.shared_expert_intermediate_size) / t
           : 0.0);
  const double dense_grads = a * 2.0 * T * ffn / t;
  act.backward_moe = residual + std::max(attention_grads, moe_grads);
  act.backward_dense = residual + std::max(attention_grads, dense_grads);
  return act;
}

MemoryBreakdown Simulator::memory(const Layout& l, double* host_bytes_per_node,
                                  double* offloaded_activation_bytes_per_micro_batch) const {
  const ModelSpec& m = model_;
  const bool fp32 = train_.precision == Precision::Fp32;
  const double working = fp32 ? 4.0 : 2.0;  // bytes of a parameter as the GEMMs read it
  const double a = activation_bytes(train_.precision);
  const LayerActivations act = layer_activations(l);
  const double T = static_cast<double>(l.micro_batch * train_.seq_len);
  const double h = static_cast<double>(m.hidden_size);
  const double k = static_cast<double>(m.num_experts_per_tok);
  const double Tr = T * k * expert_load_factor(l);
  const double accum = static_cast<double>(grad_accum_steps(train_, l));

  MemoryBreakdown worst;
  double worst_host = 0;
  double worst_offload_traffic = 0;
  for (std::int64_t stage = 0; stage < l.pp; ++stage) {
    const StageParams sp = stage_params(l, stage);
    const double local = sp.tp_split / l.tp + sp.tp_replicated + sp.experts / (l.ep * l.tp);
    const double shard = l.hs > 1 ? sp.sharded : local;
    MemoryBreakdown mem;
    double host = 0;  // per rank

    // Model state: fp32 master 4 + fp32 gradient accumulator 4 + Adam m, v 8 bytes per parameter,
    // all sharded over hs. Without sharding the GEMMs' working copy is resident (bf16: 2 bytes;
    // fp32: the master is the working copy). With sharding, layers are gathered on demand.
    // The distributed optimizer keeps master and Adam state only for the owned part; the working
    // copy of the whole shard stays (fp32: the master of the rest of it, refreshed by the
    // all-gather after each step; bf16: a copy to compute with or to gather layers from).
    const double owned = l.distributed_optimizer ? sp.owned : shard;
    if (!l.optimizer_offload) {
      if (!l.distributed_optimizer) {
        mem.parameters = 4.0 * shard + ((!fp32 && l.hs == 1) ? working * local : 0.0);
      } else {
        mem.parameters = fp32 ? 4.0 * shard : 4.0 * owned + working * shard;
      }
      mem.optimizer = 8.0 * owned;
    } else {
      // Master and Adam state live in host memory with a staging copy of the gradient shard; the
      // device keeps the working copy (whole without sharding, its shard with sharding).
      mem.parameters = working * (l.hs == 1 ? local : shard);
      host += (4.0 + 8.0 + 4.0) * owned;
    }
    mem.gradients = 4.0 * shard;
    if (l.hs > 1) {
      // The layer in use and the one prefetched; and in backward the unsharded gradients of the
      // layer being reduce-scattered while the next one is computed.
      mem.gathered_parameters = 2.0 * working * sp.largest_unit;
      mem.gradients += 2.0 * working * sp.largest_unit;
    }

    // Activations. 1F1B: stage i holds pp - i micro-batches; interleaving adds (pp-1)/(pp*vpp) of
    // that (Korthikanti et al. 2022). Never more micro-batches than the step has.
    double in_flight = static_cast<double>(l.pp - stage);
    if (l.vpp > 1)
      in_flight *= 1.0 + static_cast<double>(l.pp - 1) / static_cast<double>(l.pp * l.vpp);
    in_flight = std::min(in_flight, accum);
    const double moe_layers = static_cast<double>(sp.moe_layers);
    const double dense_layers = static_cast<double>(sp.dense_layers);
    const double full_moe = act.attention + act.moe;
    const double full_dense = act.attention + act.dense_ffn;
    const double layers = moe_layers + dense_layers;
    double per_layer_saved = 0;  // what one layer keeps per micro-batch
    double stage_saved = 0;      // what the stage keeps per micro-batch
    // One layer's forward scratch and backward gradients; with recompute also that layer's full
    // activations during its backward.
    double working_set = act.forward_scratch + (sp.moe_layers > 0 ? act.backward_moe : 0.0);
    if (sp.dense_layers > 0)
      working_set = std::max(working_set, act.forward_scratch + act.backward_dense);
    if (l.recompute == Recompute::None) {
      stage_saved = moe_layers * full_moe + dense_layers * full_dense;
      per_layer_saved = sp.moe_layers > 0 ? full_moe : full_dense;
    } else {
      // Each layer's input, and each MoE layer's tokens per expert (the routing statistics the
      // step reports; the routing itself is recomputed).
      const double counts = 8.0 * static_cast<double>(m.num_local_experts);
      stage_saved = layers * act.input + moe_layers * counts;
      per_layer_saved = act.input + (sp.moe_layers > 0 ? counts : 0.0);
      // The layer being recomputed reads its saved input in place.
      working_set += (sp.moe_layers > 0 ? full_moe : full_dense) - act.input;
    }
    double saved = in_flight * stage_saved;
    if (l.activation_offload) {
      // Only the layer in use and the one being fetched back stay on the device.
      const double on_device = std::min(saved, 2.0 * per_layer_saved);
      host += saved - on_device;
      saved = on_device;
      worst_offload_traffic =
          std::max(worst_offload_traffic, std::max(0.0, stage_saved - 2.0 * per_layer_saved));
    }
    mem.activations = saved + working_set;
    if (sp.last) {
      // Final norm input, its 1/rms (fp32) and output (the LM head's input), and fp32 logits for
      // the loss (vocab-parallel: V/t per rank); the loss gradient is written over the logits in
      // place.
      mem.activations += 2.0 * a * T * h / l.tp + 4.0 * T / l.tp +
                         4.0 * T * static_cast<double>(m.vocab_size) / static_cast<double>(l.tp);
      // The loss: each token's log-sum-exp and its target logit (then its loss), fp32; with a
      // vocabulary split over tp also every rank's partial log-sum-exp.
      mem.activations += 8.0 * T + (l.tp > 1 ? 4.0 * static_cast<double>(l.tp) * T : 0.0);
    }
    // RoPE's cos and sin tables [seq, head_dim / 2] each, shared by every layer.
    mem.activations += a * static_cast<double>(train_.seq_len * m.head_dim);

    // Communication buffers of one MoE layer at a time: tokens out and in.
    if (sp.moe_layers > 0) {
      if (train_.moe.dispatcher == Dispatcher::AllToAll) {
        mem.communication_buffers = a * h * (T * k + Tr);
      } else {  // all-gather dispatcher: every EP rank receives all tokens of its EP group
        mem.communication_buffers = a * h * (T * static_cast<double>(l.ep) + Tr);
      }
    }
    if (l.tp > 1) mem.communication_buffers += a * T * h;  // sequence gathered over tp

    mem.workspace = cluster_.device.runtime_reserved_GiB * kGiB;
    mem.fragmentation = cluster_.device.fragmentation_fraction *
                        (mem.activations + mem.communication_buffers + mem.gathered_parameters);
    if (mem.total() > worst.total()) worst = mem;
    worst_host = std::max(worst_host, host);
  }
  if (offloaded_activation_bytes_per_micro_batch != nullptr) {
    *offloaded_activation_bytes_per_micro_batch = worst_offload_traffic;
  }
  if (host_bytes_per_node != nullptr) {
    *host_bytes_per_node = worst_host * static_cast<double>(cluster_.devices_per_node);
  }
  return worst;
}

}  // namespace moetune::simulator
