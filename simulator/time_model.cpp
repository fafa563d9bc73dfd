// The step-time model: per-op costs from a roofline (FLOPs and bytes per op, per-op-class
// efficiency from the profile) and from the collective model over the mesh, laid into the op graph
// of one micro-batch (simulator/step_builder) and scheduled on a compute stream and two
// communication streams. The step is the micro-batches of the busiest stage through the 1F1B
// pipeline (with its bubble), then the gradient all-reduce over the replicas and the optimizer.
#include <algorithm>

#include "core/constraints.hpp"
#include "simulator/collectives.hpp"
#include "simulator/simulator.hpp"
#include "simulator/step_builder.hpp"

namespace moetune::simulator {

namespace {

// One builder per thread: its graph and scheduler buffers are reused from layout to layout.
StepBuilder& builder() {
  thread_local StepBuilder b;
  return b;
}

// The collective cost lines of one mesh, looked up once per mesh: the planner evaluates many
// layouts (micro-batch, recompute, offload) on the same mesh in a row. Keyed by the simulator's
// unique id, not by the collective model's address: calibration builds simulator after simulator
// for slightly different profiles, and a new one may reuse a freed one's address.
struct MeshLines {
  std::uint64_t simulator = 0;
  std::array<std::int64_t, kNumAxes + kNumAxes> key{};  // degrees and order
  CollectiveCost ep_a2a, ep_gather, tp_gather, tp_scatter, hs_gather, hs_scatter, dense_ar,
      expert_ar, dense_rs, expert_rs, dense_ag, expert_ag;
  AlphaBeta p2p;
};

const MeshLines& mesh_lines(std::uint64_t simulator, const CollectiveModel& model, const Layout& l,
                            const Mesh& mesh) {
  thread_local MeshLines memo;
  std::array<std::int64_t, kNumAxes + kNumAxes> key{};
  for (int i = 0; i < kNumAxes; ++i) {
    key[static_cast<std::size_t>(i)] = l.degree(static_cast<Axis>(i));
    key[static_cast<std::size_t>(kNumAxes + i)] =
        static_cast<std::int64_t>(l.order[static_cast<std::size_t>(i)]);
  }
  if (memo.simulator == simulator && memo.key == key) return memo;
  memo.simulator = simulator;
  memo.key = key;
  memo.ep_a2a = model.cost(Collective::AllToAll, mesh, Group::Ep);
  memo.ep_gather = model.cost(Collective::AllGather, mesh, Group::Ep);
  memo.tp_gather = model.cost(Collective::AllGather, mesh, Group::Tp);
  memo.tp_scatter = model.cost(Collective::ReduceScatter, mesh, Group::Tp);
  memo.hs_gather = model.cost(Collective::AllGather, mesh, Group::Hs);
  memo.hs_scatter = model.cost(Collective::ReduceScatter, mesh, Group::Hs);
  memo.dense_ar = model.cost(Collective::AllReduce, mesh, Group::DenseReplicate);
  memo.expert_ar = model.cost(Collective::AllReduce, mesh, Group::ExpertReplicate);
  memo.dense_rs = model.cost(Collective::ReduceScatter, mesh, Group::DenseReplicate);
  memo.expert_rs = model.cost(Collective::ReduceScatter, mesh, Group::ExpertReplicate);
  memo.dense_ag = model.cost(Collective::AllGather, mesh, Group::DenseReplicate);
  memo.expert_ag = model.cost(Collective::AllGather, mesh, Group::ExpertReplicate);
  memo.p2p = model.p2p(mesh);
  return memo;
}

// Layouts that differ only in ways the op costs do not see (offloading, mesh orders whose
// collectives cost the same) schedule the same graph: remember the last schedules per thread.
struct CostsKey {
  StageCosts costs;
  bool operator==(const CostsKey& o) const {
    const LayerCosts& a = costs.layer;
    const LayerCosts& b = o.costs.layer;
    return a.attention == b.attention && a.router == b.router && a.permute == b.permute &&
           a.experts == b.experts && a.a2a == b.a2a && a.tp_gather == b.tp_gather &&
           a.tp_scatter == b.tp_scatter && a.fsdp_gather == b.fsdp_gather &&
           a.fsdp_scatter == b.fsdp_scatter && a.moe == b.moe && costs.layers == o.costs.layers &&
           costs.embedding == o.costs.embedding && costs.head == o.costs.head &&
           costs.backward_factor == o.costs.backward_factor && costs.recompute == o.costs.recompute;
  }
};

MicroBatchSchedule schedule_micro_batch(const StageCosts& costs) {
  constexpr std::size_t kRemembered = 16;
  thread_local std::vector<std::pair<CostsKey, MicroBatchSchedule>> memo;
  thread_local std::size_t next = 0;
  const CostsKey key{costs};
  for (const auto& [k, v] : memo) {
    if (k == key) return v;
  }
  MicroBatchSchedule s = builder().micro_batch(costs);
  if (memo.size() < kRemembered) {
    memo.emplace_back(key, s);
  } else {
    memo[next] = {key, s};
    next = (next + 1) % kRemembered;
  }
  return s;
}

}  // namespace

StageCosts Simulator::stage_costs(const Layout& l, const Mesh& mesh, std::int64_t stage) const {
  const ModelSpec& m = model_;
  const HardwareProfile& dev = cluster_.device;
  const double peak = dev.peak_flops(train_.precision);
  // Every rank of a node computes at once: each keeps node_share() of its speed alone.
  const double share = node_share();
  // fp8 runs the GEMMs at the fp8 rate; attention and everything else stay in bf16.
  const double gemm_rate = peak * dev.gemm_efficiency * share;
  const double attn_rate =
      dev.peak_flops(train_.precision == Precision::Fp8 ? Precision::Bf16 : train_.precision) *
      dev.attention_efficiency * share;
  const double mem_rate = dev.memory_bandwidth_GBps * 1e9 * dev.memory_bound_efficiency * share;
  const double a = train_.precision == Precision::Fp32 ? 4.0 : 2.0;
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
  const StageParams sp = stage_params(l, stage);
  const MeshLines& lines = mesh_lines(id_, collectives_, l, mesh);

  // Every op pays a fixed cost per kernel; a GEMM runs at the larger of its compute and memory
  // times (small GEMMs, such as fine-grained experts' at few tokens each, are bound by reading
  // their weights). fp8 GEMMs read fp8 operands and quantize their activation input first.
  const double t0 = dev.kernel_overhead_us * 1e-6 / share;
  const bool fp8 = train_.precision == Precision::Fp8;
  const double operand = fp8 ? 1.0 : a;
  auto gemm = [&](double m, double n, double kdim) {
    const double flops = 2.0 * m * n * kdim;
    const double bytes = operand * (m * kdim + kdim * n) + a * m * n;
    const double quantize = fp8 ? (a + 1.0) * m * kdim / mem_rate + t0 : 0.0;
    return std::max(flops / gemm_rate, bytes / mem_rate) + t0 + quantize;
  };
  auto memory_op = [&](double bytes, double kernels) { return bytes / mem_rate + kernels * t0; };

  StageCosts c;
  c.layers = sp.moe_layers + sp.dense_layers;
  c.recompute = l.recompute == Recompute::Full;
  LayerCosts& lc = c.layer;
  lc.moe = sp.moe_layers > 0;
  // QKV and output projections, the attention core, and norm, RoPE and residual traffic (five
  // elementwise kernels).
  lc.attention = gemm(T, (q + 2 * kv) / t, h) + gemm(T, h, q / t) +
                 4.0 * T * q * keys / t / attn_rate + t0 + memory_op(8.0 * a * T * h / t, 5);
  // Norm, gate GEMM, softmax, top-k and the routing statistics (five small kernels).
  lc.router = memory_op(2.0 * a * T * h, 1) + gemm(T, E, h) + memory_op(12.0 * T * E, 4);
  // Dispatch (and the same again to combine): read the tokens, write each routed copy in expert
  // order, then regroup the rows received by local expert (read and write once), with the index
  // bookkeeping (four kernels).
  lc.permute = memory_op(a * T * h + a * T * k * h + 2.0 * a * Tr * h, 4);
  const double shared_f = static_cast<double>(m.shared_expert_intermediate_size);
  const double shared = shared_f > 0 ? gemm(T, 2.0 * shared_f / t, h) + gemm(T, h, shared_f / t) +
                                           memory_op(3.0 * a * T * shared_f / t, 1)
                                     : 0.0;
  if (lc.moe) {
    // The busiest rank's local experts, one GEMM pair each (w1 and w3 fused, then w2), on their
    // share of the routed rows, and the SwiGLU between.
    const double local = E / static_cast<double>(l.ep);
    const double rows = Tr / local;
    lc.experts = local * (gemm(rows, 2.0 * f / t, h) + gemm(rows, h, f / t)) +
                 memory_op(3.0 * a * Tr * f / t, 1) + shared;
  } else {
    const double ffn = static_cast<double>(m.intermediate_size);
    lc.experts =
        gemm(T, 2.0 * ffn / t, h) + gemm(T, h, ffn / t) + memory_op(3.0 * a * T * ffn / t, 1);
  }
  if (lc.moe && l.ep > 1) {
    const double bytes = train_.moe.dispatcher == Dispatcher::AllToAll
                             ? a * T * k * h
                             : a * T * h * static_cast<double>(l.ep);  // all-gather dispatcher
    lc.a2a = train_.moe.dispatcher == Dispatcher::AllToAll ? lines.ep_a2a.seconds(bytes)
                                                           : lines.ep_gather.seconds(bytes);
  }
  if (l.tp > 1) {
    lc.tp_gather = lines.tp_gather.seconds(a * T * h);
    lc.tp_scatter = lines.tp_scatter.seconds(a * T * h);
  }
  if (l.hs > 1) {
    // Each layer's parameters (this rank's tp/ep share) are gathered in the working precision and
    // its gradients reduce-scattered in the same.
    const double unit_bytes = a * sp.largest_unit;
    lc.fsdp_gather = lines.hs_gather.seconds(unit_bytes);
    lc.fsdp_scatter = lines.hs_scatter.seconds(unit_bytes);
  }
  if (sp.first) c.embedding = 3.0 * memory_op(a * T * h / t, 1);
  // Final norm, LM head GEMM and the fused cross-entropy, forward and backward (x3).
  if (sp.last) {
    c.head = 3.0 * (memory_op(2.0 * a * T * h / t, 1) + gemm(T, V / t, h) +
                    memory_op(12.0 * T * V / t, 2));
  }
  return c;
}

double Simulator::node_share() const {
  const double others =
      static_cast<double>(std::max<std::int64_t>(0, cluster_.devices_per_node - 1));
  return 1.0 / (1.0 + cluster_.device.node_contention * others);
}

TimeBreakdown Simulator::time(const Layout& l, const Mesh& mesh) const {
  const MeshLines& lines = mesh_lines(id_, collectives_, l, mesh);
  const double a = train_.precision == Precision::Fp32 ? 4.0 : 2.0;
  const double accum = static_cast<double>(grad_accum_steps(train_, l));
  const double T = static_cast<double>(l.micro_batch * train_.seq_len);

  // The busiest stage sets the pace of the pipeline. Stages differ only by the embedding (first)
  // and the LM head (last), so the first, a middle and the last stage cover them all.
  MicroBatchSchedule mb;
  StageParams busiest{};
  std::int64_t stages[3] = {0, l.pp > 2 ? 1 : 0, l.pp - 1};
  for (std::int64_t i = 0; i < 3; ++i) {
    const std::int64_t stage = stages[i];
    if (i > 0 && stage == stages[i - 1]) continue;
    const MicroBatchSchedule s = schedule_micro_batch(stage_costs(l, mesh, stage));
    if (i == 0 || s.makespan_s > mb.makespan_s) {
      mb = s;
      busiest = stage_params(l, stage);
    }
  }
  TimeBreakdown out;
  auto get = [&](Phase phase, const std::array<double, kNumPhases>& v) { return accum * v[phase]; };
  out.attention = get(kPhaseAttention, mb.compute_s);
  out.router = get(kPhaseRouter, mb.compute_s);
  out.dispatch = get(kPhaseDispatch, mb.compute_s) + get(kPhaseDispatch, mb.exposed_s);
  out.experts = get(kPhaseExperts, mb.compute_s);
  out.combine = get(kPhaseCombine, mb.compute_s) + get(kPhaseCombine, mb.exposed_s);
  out.lm_head = get(kPhaseLmHead, mb.compute_s);
  out.recompute = get(kPhaseRecompute, mb.compute_s);
  out.all_gather = get(kPhaseAllGather, mb.exposed_s);
  out.reduce_scatter = get(kPhaseReduceScatter, mb.exposed_s);
  for (double v : mb.overlapped_s)
    out.overlapped_comm += accum * v;
  const double micro_batches = accum * mb.makespan_s;

  // Gradient all-reduce over the replicas once per step; it overlaps the last micro-batch's
  // backward pass as far as that lasts. The distributed optimizer reduce-scatters instead (hidden
  // the same way) and all-gathers the updated parameters in the working precision, which hides
  // behind the next step's first forward pass (Megatron's overlap_param_gather).
  const double local_dense = busiest.tp_split / l.tp + busiest.tp_replicated;
  const double local_expert = busiest.experts / (l.ep * l.tp);
  const double hs = static_cast<double>(l.hs);
  const double last_backward = mb.makespan_s - mb.forward_s;
  double replica_tail = 0;
  if (!l.distributed_optimizer) {
    const double all_reduce = lines.dense_ar.seconds(4.0 * local_dense / hs) +
                              lines.expert_ar.seconds(4.0 * local_expert / hs);
    const double ar_hidden = std::min(all_reduce, last_backward);
    out.all_reduce = all_reduce - ar_hidden;
    out.overlapped_comm += ar_hidden;
  } else {
    const double scatter = lines.dense_rs.seconds(4.0 * local_dense / hs) +
                           lines.expert_rs.seconds(4.0 * local_expert / hs);
    const double gather = lines.dense_ag.seconds(a * local_dense / hs) +
                          lines.expert_ag.seconds(a * local_expert / hs);
    const double scatter_hidden = std::min(scatter, last_backward);
    const double gather_hidden = std::min(gather, mb.forward_s);
    out.reduce_scatter += scatter - scatter_hidden;
    out.all_gather += gather - gather_hidden;
    out.overlapped_comm += scatter_hidden + gather_hidden;
    replica_tail = (scatter - scatter_hidden) + (gather - gather_hidden);
  }

  // 1F1B: (pp - 1) / vpp micro-batch slots of bubble, plus stage-to-stage activations.
  if (l.pp > 1) {
    const double bubble =
        static_cast<double>(l.pp - 1) / static_cast<double>(l.vpp) * mb.makespan_s;
    const double p2p = lines.p2p.seconds(a * T * static_cast<double>(model_.hidden_size) / l.tp);
    out.pipeline = bubble + 2.0 * accum * static_cast<double>(l.vpp) * p2p;
  }

  // Optimizer: AdamW reads master, gradient, m, v and writes master, m, v and the working copy.
  const HardwareProfile& dev = cluster_.device;
  const double optimizer_rate =
      dev.memory_bandwidth_GBps * 1e9 * dev.effective_optimizer_efficiency() * node_share();
  const double link_Bps = cluster_.host.link_bandwidth_GBps * 1e9;
  const double optimizer_params =
      l.distributed_optimizer ? busiest.owned : (local_dense + local_expert) / hs;
  if (!l.optimizer_offload) {
    out.optimizer = (4.0 * 4.0 + 3.0 * 4.0 + a) * optimizer_params / optimizer_rate;
  } else {
    // Gradients go down, updated working parameters come back up; the host-side update runs
    // while the transfers stream.
    out.offload = (4.0 + a) * optimizer_params / link_Bps;
  }
  if (l.activation_offload) {
    double host_bytes = 0, per_micro_batch = 0;
    (void)memory(l, &host_bytes, &per_micro_batch);
    // Every micro-batch's offloaded activations go down in forward and back up in backward,
    // hidden behind compute where that lasts long enough.
    const double transfer = 2.0 * per_micro_batch * accum / link_Bps;
    double compute = 0;
    for (double s : mb.compute_s)
      compute += accum * s;
    const double exposed = std::max(0.0, transfer - compute);
    out.offload += exposed;
    out.overlapped_comm += transfer - exposed;
  }
  out.step =
      micro_batches + out.all_reduce + replica_tail + out.pipeline + out.optimizer + out.offload;
  return out;
}

std::vector<TimelineOp> Simulator::timeline(const Layout& layout) const {
  StepBuilder b;
  return b.timeline(stage_costs(layout, Mesh(layout, cluster_.devices_per_node), 0));
}

}  // namespace moetune::simulator
