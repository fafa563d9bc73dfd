// First step-time model: roofline compute per op class, alpha-beta collectives over the mesh
// placement, FSDP gathers hidden behind each layer's compute where they fit, all-to-all and
// tensor-parallel collectives on the critical path, the 1F1B bubble. The event-driven schedule of
// the next issue replaces the overlap rules here.
#include <algorithm>

#include "core/constraints.hpp"
#include "simulator/collectives.hpp"
#include "simulator/simulator.hpp"

namespace moetune::simulator {

namespace {

const GroupPlacement& of(const std::array<GroupPlacement, kNumGroups>& p, Group g) {
  return p[static_cast<std::size_t>(g)];
}

}  // namespace

TimeBreakdown Simulator::time(const Layout& l,
                              const std::array<GroupPlacement, kNumGroups>& placements) const {
  const ModelSpec& m = model_;
  const HardwareProfile& dev = cluster_.device;
  const double peak = dev.peak_flops(train_.precision);
  const double gemm_rate = peak * dev.gemm_efficiency;
  const double attn_rate = peak * dev.attention_efficiency;
  const double mem_rate = dev.memory_bandwidth_GBps * 1e9 * dev.memory_bound_efficiency;
  const double a = train_.precision == Precision::Fp32 ? 4.0 : 2.0;
  const double working = a;
  const double t = static_cast<double>(l.tp);
  const double T = static_cast<double>(l.micro_batch * train_.seq_len);
  const double h = static_cast<double>(m.hidden_size);
  const double q = static_cast<double>(m.q_dim());
  const double kv = static_cast<double>(m.kv_dim());
  const double k = static_cast<double>(m.num_experts_per_tok);
  const double E = static_cast<double>(m.num_local_experts);
  const double f = static_cast<double>(m.moe_intermediate_size);
  const double V = static_cast<double>(m.vocab_size);
  const double Tr = T * k * expert_load_factor(l);
  const double keys = mean_attended_keys(m, train_.seq_len, AttentionFlops::Causal);
  const double accum = static_cast<double>(grad_accum_steps(train_, l));

  // Forward seconds of one layer for one micro-batch, by phase; backward costs twice the forward.
  const double attention_fwd = 2.0 * T * (2 * h * q + 2 * h * kv) / t / gemm_rate +
                               4.0 * T * q * keys / t / attn_rate +
                               8.0 * a * T * h / t / mem_rate;  // norm, RoPE, residual traffic
  const double router_fwd = 2.0 * T * h * E / gemm_rate + 12.0 * T * E / mem_rate;
  const double experts_fwd =
      2.0 * Tr * 3.0 * h * f / t / gemm_rate + 3.0 * a * Tr * f / t / mem_rate;
  const double shared_fwd =
      2.0 * T * 3.0 * h * static_cast<double>(m.shared_expert_intermediate_size) / t / gemm_rate;
  const double dense_ffn_fwd =
      2.0 * T * 3.0 * h * static_cast<double>(m.intermediate_size) / t / gemm_rate;
  const double permute_fwd = 2.0 * a * T * k * h / mem_rate;  // gather rows into expert order
  const double a2a =
      collective_seconds(Collective::AllToAll, a * T * k * h, of(placements, Group::Ep), cluster_);
  // Sequence parallel: gather before and reduce-scatter after each of the two blocks.
  const double tp_ag =
      collective_seconds(Collective::AllGather, a * T * h, of(placements, Group::Tp), cluster_);
  const double tp_rs =
      collective_seconds(Collective::ReduceScatter, a * T * h, of(placements, Group::Tp), cluster_);
  const double lm_head_fwd = 2.0 * T * h * V / t / gemm_rate + 12.0 * T * V / t / mem_rate;

  TimeBreakdown out;
  double step_compute = 0;  // all compute of a step on the busiest stage
  double exposed_comm = 0;
  double per_mb_compute = 0;  // fwd + bwd compute of one micro-batch on the stage
  double fsdp_exposed = 0, fsdp_hidden = 0, fsdp_ag = 0, fsdp_rs = 0;
  double dense_grad_bytes = 0, expert_grad_bytes = 0;  // fp32 shards reduced over replicas
  double optimizer_params = 0;

  // The busiest stage sets the pace.
  double best = -1;
  for (std::int64_t stage = 0; stage < l.pp; ++stage) {
    const StageParams sp = stage_params(l, stage);
    const double moe = static_cast<double>(sp.moe_layers);
    const double dense = static_cast<double>(sp.dense_layers);
    const double layers = moe + dense;
    const double mult = l.recompute == Recompute::Full ? 4.0 : 3.0;  // fwd + 2x bwd (+ fwd again)
    TimeBreakdown tb;
    tb.attention = 3.0 * layers * attention_fwd;
    tb.router = 3.0 * moe * router_fwd;
    tb.experts = 3.0 * (moe * (experts_fwd + shared_fwd) + dense * dense_ffn_fwd);
    tb.dispatch = 3.0 * moe * permute_fwd / 2.0;
    tb.combine = tb.dispatch;
    tb.lm_head = sp.last ? 3.0 * lm_head_fwd : 0.0;
    const double fwd_compute = layers * attention_fwd +
                               moe * (router_fwd + experts_fwd + shared_fwd + permute_fwd) +
                               dense * dense_ffn_fwd;
    tb.recompute = l.recompute == Recompute::Full ? fwd_compute : 0.0;
    const double mb_compute = tb.attention + tb.router + tb.experts + tb.dispatch + tb.combine +
                              tb.lm_head + tb.recompute;
    // Exposed per micro-batch: all-to-all out and back in forward and backward (and the recompute
    // forward), the sequence-parallel collectives.
    const double passes = mult - 1.0;  // forward passes of collectives: 2 (fwd, bwd) or 3
    const double a2a_mb = passes * moe * 2.0 * a2a;
    const double tp_mb = passes * layers * 2.0 * (tp_ag + tp_rs);
    // FSDP: each layer gathered for forward and again for backward, its gradients reduce-scattered;
    // prefetch hides a layer's gathers behind the compute of the layer before it.
    double ag_mb = 0, rs_mb = 0, fsdp_exposed_mb = 0;
    if (l.hs > 1) {
      const double unit_bytes = working * sp.largest_unit;
      const double ag = collective_seconds(Collective::AllGather, unit_bytes,
                                           of(placements, Group::Hs), cluster_);
      const double rs = collective_seconds(Collective::ReduceScatter, unit_bytes,
                                           of(placements, Group::Hs), cluster_);
      ag_mb = layers * 2.0 * ag;
      rs_mb = layers * rs;
      const double per_layer_compute = layers > 0 ? mb_compute / layers : mb_compute;
      const double per_layer_comm = 2.0 * ag + rs;
      fsdp_exposed_mb = layers * std::max(0.0, per_layer_comm - per_layer_compute) + ag;
      fsdp_exposed_mb = std::min(fsdp_exposed_mb, ag_mb + rs_mb);
    }
    const double stage_time = accum * (mb_compute + a2a_mb + tp_mb + fsdp_exposed_mb);
    if (stage_time > best) {
      best = stage_time;
      out = tb;
      per_mb_compute = mb_compute;
      step_compute = accum * mb_compute;
      exposed_comm = accum * (a2a_mb + tp_mb);
      out.dispatch = accum * (tb.dispatch + a2a_mb / 2.0);
      out.combine = accum * (tb.combine + a2a_mb / 2.0);
      out.attention = accum * tb.attention;
      out.router = accum * tb.router;
      out.experts = accum * tb.experts;
      out.lm_head = accum * tb.lm_head;
      out.recompute = accum * tb.recompute;
      fsdp_ag = accum * ag_mb;
      fsdp_rs = accum * rs_mb;
      fsdp_exposed = accum * fsdp_exposed_mb;
      fsdp_hidden = fsdp_ag + fsdp_rs - fsdp_exposed;
      const double local_dense = sp.tp_split / l.tp + sp.tp_replicated;
      const double local_expert = sp.experts / (l.ep * l.tp);
      dense_grad_bytes = 4.0 * local_dense / static_cast<double>(l.hs);
      expert_grad_bytes = 4.0 * local_expert / static_cast<double>(l.hs);
      optimizer_params = (local_dense + local_expert) / static_cast<double>(l.hs);
      // Sequence-parallel collectives count as all-gather / reduce-scatter time.
      out.all_gather = accum * (tp_mb / 2.0);
      out.reduce_scatter = accum * (tp_mb / 2.0);
    }
  }
  // Split the exposed FSDP time between gathers and reduce-scatters in proportion.
  if (fsdp_ag + fsdp_rs > 0) {
    out.all_gather += fsdp_exposed * fsdp_ag / (fsdp_ag + fsdp_rs);
    out.reduce_scatter += fsdp_exposed * fsdp_rs / (fsdp_ag + fsdp_rs);
  }
  exposed_comm += fsdp_exposed;

  // Gradient all-reduce over the replicas, once per step; it overlaps the last micro-batch's
  // backward pass as far as that lasts.
  const double all_reduce = collective_seconds(Collective::AllReduce, dense_grad_bytes,
                                               of(placements, Group::DenseReplicate), cluster_) +
                            collective_seconds(Collective::AllReduce, expert_grad_bytes,
                                               of(placements, Group::ExpertReplicate), cluster_);
  const double ar_hidden = std::min(all_reduce, per_mb_compute * 2.0 / 3.0);
  out.all_reduce = all_reduce - ar_hidden;

  // Pipeline: (pp - 1) / vpp micro-batch slots of bubble, and stage-to-stage activations.
  if (l.pp > 1) {
    const double bubble = static_cast<double>(l.pp - 1) / static_cast<double>(l.vpp) *
                          (per_mb_compute + (exposed_comm / std::max(accum, 1.0)));
    const double p2p =
        p2p_seconds(a * T * h / t, !of(placements, Group::Pp).within_node(), cluster_);
    out.pipeline = bubble + 2.0 * accum * static_cast<double>(l.vpp) * p2p;
  }

  // Optimizer: AdamW reads master, gradient, m, v and writes master, m, v and the working copy.
  const double link_Bps = cluster_.host.link_bandwidth_GBps * 1e9;
  if (!l.optimizer_offload) {
    out.optimizer = (4.0 * 4.0 + 3.0 * 4.0 + working) * optimizer_params / mem_rate;
  } else {
    // Gradients go down, updated working parameters come back up; the host-side update runs
    // while the transfers stream.
    out.offload = (4.0 + working) * optimizer_params / link_Bps;
  }
  double act_offload = 0;
  if (l.activation_offload) {
    double host_bytes = 0, per_micro_batch = 0;
    (void)memory(l, &host_bytes, &per_micro_batch);
    // Every micro-batch's offloaded activations go down in forward and back up in backward,
    // hidden behind compute where that lasts long enough.
    const double transfer = 2.0 * per_micro_batch * accum / link_Bps;
    act_offload = std::max(0.0, transfer - step_compute);
    out.offload += act_offload;
    out.overlapped_comm += transfer - act_offload;
  }
  out.overlapped_comm += fsdp_hidden + ar_hidden;
  out.step =
      step_compute + exposed_comm + out.all_reduce + out.pipeline + out.optimizer + out.offload;
  return out;
}

}  // namespace moetune::simulator
