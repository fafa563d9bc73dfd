// Builds and schedules the op graph of one micro-batch on a pipeline stage.
#include "simulator/step_builder.hpp"

#include <algorithm>
#include <optional>

namespace moetune::simulator {

namespace {

// Graph labels are the phases, interned in Phase order (so a label's id is its Phase).
enum LabelIndex {
  kAtt = kPhaseAttention,
  kRouterLabel = kPhaseRouter,
  kDispatch = kPhaseDispatch,
  kExpertsLabel = kPhaseExperts,
  kCombine = kPhaseCombine,
  kHeadLabel = kPhaseLmHead,
  kRecompute = kPhaseRecompute,
  kAg = kPhaseAllGather,
  kRs = kPhaseReduceScatter
};

}  // namespace

StepBuilder::Built& StepBuilder::graph_for(const StageCosts& costs, std::int64_t layers) {
  const LayerCosts& c = costs.layer;
  const Shape shape{c.moe,
                    c.tp_gather > 0 || c.tp_scatter > 0,
                    c.a2a > 0,
                    c.fsdp_gather > 0,
                    c.fsdp_scatter > 0,
                    costs.recompute,
                    costs.embedding > 0,
                    costs.head > 0,
                    layers};
  for (auto& b : built_) {
    if (b->shape == shape) return *b;
  }
  auto b = std::make_unique<Built>();
  b->shape = shape;
  build(*b, costs);
  built_.push_back(std::move(b));
  return *built_.back();
}

void StepBuilder::build(Built& b, const StageCosts& costs) {
  const Shape& sh = b.shape;
  StepGraph& g = b.graph;
  const Resource fsdp = Stream::Comm;
  const Resource critical = g.add_resource("critical_comm", ResourceKind::Comm);
  for (const char* name : kPhaseNames)
    g.label(name);
  const double bf = costs.backward_factor;
  std::optional<OpId> last;
  auto add = [&](Resource r, int label, Field field, double factor,
                 std::initializer_list<std::optional<OpId>> deps, bool backward,
                 std::int32_t layer) {
    OpSpec spec;
    spec.label = static_cast<LabelId>(label);
    spec.resource = r;
    spec.layer = layer;
    const OpId id = g.add_op(spec);
    for (const auto& d : deps) {
      if (d) g.add_dependency(*d, id);
    }
    b.duration.emplace_back(field, factor);
    b.backward.push_back(backward);
    return id;
  };
  // An op on the critical-path stream, present only when the shape has that collective.
  auto comm = [&](bool present, int label, Field field, std::optional<OpId> after, bool backward,
                  std::int32_t layer) -> std::optional<OpId> {
    if (!present) return after;
    return add(critical, label, field, 1.0, {after}, backward, layer);
  };
  // One layer's forward ops; a recompute pass labels its compute "recompute".
  auto forward_layer = [&](std::int32_t l, std::optional<OpId> x, std::optional<OpId> gather,
                           bool recompute, bool backward) -> std::optional<OpId> {
    auto lab = [&](int normal) { return recompute ? static_cast<int>(kRecompute) : normal; };
    x = comm(sh.tp, kAg, kTpGather, x, backward, l);
    x = add(Stream::Compute, lab(kAtt), kAttention, 1.0, {x, gather}, backward, l);
    x = comm(sh.tp, kRs, kTpScatter, x, backward, l);
    x = comm(sh.tp, kAg, kTpGather, x, backward, l);
    if (sh.moe) {
      x = add(Stream::Compute, lab(kRouterLabel), kRouter, 1.0, {x}, backward, l);
      x = add(Stream::Compute, lab(kDispatch), kPermute, 1.0, {x}, backward, l);
      x = comm(sh.a2a, kDispatch, kA2a, x, backward, l);
      x = add(Stream::Compute, lab(kExpertsLabel), kExperts, 1.0, {x, gather}, backward, l);
      x = comm(sh.a2a, kCombine, kA2a, x, backward, l);
      x = add(Stream::Compute, lab(kCombine), kPermute, 1.0, {x}, backward, l);
    } else {
      x = add(Stream::Compute, lab(kExpertsLabel), kExperts, 1.0, {x, gather}, backward, l);
    }
    return comm(sh.tp, kRs, kTpScatter, x, backward, l);
  };

  const std::int64_t layers = sh.layers;
  if (sh.embedding) {
    last = add(Stream::Compute, kHeadLabel, kEmbedding, 1.0 / (1.0 + bf), {}, false, -1);
  }
  // Forward. The gather of layer l may start once layer l - 2 is done with its buffer (one layer
  // prefetched ahead, two gathered at most).
  std::vector<OpId> forward_end(static_cast<std::size_t>(layers));
  for (std::int64_t l = 0; l < layers; ++l) {
    std::optional<OpId> gather;
    if (sh.fsdp_gather) {
      std::optional<OpId> freed;
      if (l >= 2) freed = forward_end[static_cast<std::size_t>(l - 2)];
      gather = add(fsdp, kAg, kFsdpGather, 1.0, {freed}, false, static_cast<std::int32_t>(l));
    }
    last = forward_layer(static_cast<std::int32_t>(l), last, gather, false, false);
    forward_end[static_cast<std::size_t>(l)] = *last;
  }
  b.forward_end = *last;
  if (sh.head) last = add(Stream::Compute, kHeadLabel, kHead, 1.0, {last}, true, -1);
  // Backward, last layer first: gathers again (prefetched), and reduce-scatters each layer's
  // gradients while the next layer's backward runs.
  std::vector<OpId> backward_end(static_cast<std::size_t>(layers));
  for (std::int64_t l = layers - 1; l >= 0; --l) {
    const auto li = static_cast<std::int32_t>(l);
    std::optional<OpId> gather;
    if (sh.fsdp_gather) {
      std::optional<OpId> freed = b.forward_end;
      if (l + 2 < layers) freed = backward_end[static_cast<std::size_t>(l + 2)];
      gather = add(fsdp, kAg, kFsdpGather, 1.0, {freed}, true, li);
    }
    std::optional<OpId> x = last;
    if (sh.recompute) x = forward_layer(li, x, gather, true, true);
    // Sequence parallelism keeps each norm output as this rank's chunk and all-gathers it again
    // for the weight gradients of the GEMMs that read it (the router, and q, k, v), as Megatron
    // does: on the overlapping stream, while the half's input-gradient compute runs.
    auto regather = [&](std::optional<OpId> after) -> std::optional<OpId> {
      if (!sh.tp) return std::nullopt;
      return add(fsdp, kAg, kTpGather, 1.0, {after}, true, li);
    };
    // The backward of a reduce-scatter is an all-gather and the other way round.
    x = comm(sh.tp, kAg, kTpScatter, x, true, li);
    const std::optional<OpId> router_input = regather(x);
    if (sh.moe) {
      x = add(Stream::Compute, kCombine, kPermute, 1.0, {x}, true, li);
      x = comm(sh.a2a, kCombine, kA2a, x, true, li);
      x = add(Stream::Compute, kExpertsLabel, kExperts, bf, {x, gather}, true, li);
      x = comm(sh.a2a, kDispatch, kA2a, x, true, li);
      x = add(Stream::Compute, kDispatch, kPermute, 1.0, {x}, true, li);
      x = add(Stream::Compute, kRouterLabel, kRouter, bf, {x}, true, li);
    } else {
      x = add(Stream::Compute, kExpertsLabel, kExperts, bf, {x, gather}, true, li);
    }
    if (sh.tp) x = add(critical, kRs, kTpGather, 1.0, {x, router_input}, true, li);
    x = comm(sh.tp, kAg, kTpScatter, x, true, li);
    const std::optional<OpId> qkv_input = regather(x);
    x = add(Stream::Compute, kAtt, kAttention, bf, {x, gather}, true, li);
    const OpId attention_done = *x;
    if (sh.tp) x = add(critical, kRs, kTpGather, 1.0, {x, qkv_input}, true, li);
    if (sh.fsdp_scatter) add(fsdp, kRs, kFsdpScatter, 1.0, {attention_done}, true, li);
    backward_end[static_cast<std::size_t>(l)] = *x;
    last = x;
  }
  if (sh.embedding) {
    add(Stream::Compute, kHeadLabel, kEmbedding, bf / (1.0 + bf), {last}, true, -1);
  }
}

MicroBatchSchedule StepBuilder::run(Built& b, const StageCosts& costs) {
  const LayerCosts& c = costs.layer;
  const double fields[kNumFields] = {c.attention,    c.router,        c.permute,    c.experts,
                                     c.a2a,          c.tp_gather,     c.tp_scatter, c.fsdp_gather,
                                     c.fsdp_scatter, costs.embedding, costs.head};
  for (OpId id = 0; id < b.duration.size(); ++id) {
    b.graph.set_duration(id, fields[b.duration[id].first] * b.duration[id].second);
  }
  const Schedule& s = scheduler_.run(b.graph);
  MicroBatchSchedule out;
  out.makespan_s = s.makespan_s;
  out.forward_s = s.end_s[b.forward_end];
  for (std::size_t i = 0; i < kNumPhases; ++i) {
    const LabelTime& t = s.labels[i];
    out.compute_s[i] = t.total_s - t.comm_s;
    out.exposed_s[i] = t.exposed_s;
    out.overlapped_s[i] = t.overlapped_s;
  }
  return out;
}

MicroBatchSchedule StepBuilder::micro_batch(const StageCosts& costs) {
  constexpr std::int64_t kPeriodicFrom = 3;
  if (costs.layers <= kPeriodicFrom + 1) return run(graph_for(costs, costs.layers), costs);
  const MicroBatchSchedule a = run(graph_for(costs, kPeriodicFrom), costs);
  MicroBatchSchedule out = run(graph_for(costs, kPeriodicFrom + 1), costs);
  auto extend = [&](double x, double y) {
    return extrapolate_periodic(x, y, kPeriodicFrom, costs.layers);
  };
  out.makespan_s = extend(a.makespan_s, out.makespan_s);
  out.forward_s = extend(a.forward_s, out.forward_s);
  for (std::size_t i = 0; i < kNumPhases; ++i) {
    out.compute_s[i] = extend(a.compute_s[i], out.compute_s[i]);
    out.exposed_s[i] = std::max(0.0, extend(a.exposed_s[i], out.exposed_s[i]));
    out.overlapped_s[i] = std::max(0.0, extend(a.overlapped_s[i], out.overlapped_s[i]));
  }
  return out;
}

std::vector<TimelineOp> StepBuilder::timeline(const StageCosts& costs) {
  Built& b = graph_for(costs, costs.layers);
  run(b, costs);
  const Schedule& s = scheduler_.run(b.graph);
  std::vector<TimelineOp> out;
  for (OpId id = 0; id < b.graph.op_count(); ++id) {
    const OpNode& op = b.graph.op(id);
    out.push_back({b.graph.label_names()[op.label], b.graph.resource_name(Resource(op.resource)),
                   op.layer, b.backward[id], s.start_s[id], s.end_s[id]});
  }
  std::sort(out.begin(), out.end(),
            [](const TimelineOp& x, const TimelineOp& y) { return x.start_s < y.start_s; });
  return out;
}

}  // namespace moetune::simulator
