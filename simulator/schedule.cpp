// Step DAG storage and the event-driven list scheduler (see schedule.hpp).
#include "simulator/schedule.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>

namespace moetune::simulator {

namespace {

constexpr OpId kNoOp = std::numeric_limits<OpId>::max();

void check_duration(double duration_s, std::size_t op) {
  if (!std::isfinite(duration_s) || duration_s < 0) {
    throw std::invalid_argument("op " + std::to_string(op) + " has duration " +
                                std::to_string(duration_s) +
                                " s; durations must be finite and >= 0");
  }
}

// Appends [begin, end) to a union of intervals whose begins arrive in ascending order.
template <class Interval>
void merge_into(std::vector<Interval>& merged, double begin_s, double end_s) {
  if (!merged.empty() && begin_s <= merged.back().end_s) {
    merged.back().end_s = std::max(merged.back().end_s, end_s);
  } else {
    merged.push_back({begin_s, end_s});
  }
}

}  // namespace

StepGraph::StepGraph()
    : resource_names_{"compute", "comm"},
      resource_kinds_{ResourceKind::Compute, ResourceKind::Comm} {}

Resource StepGraph::add_resource(std::string name, ResourceKind kind) {
  resource_names_.push_back(std::move(name));
  resource_kinds_.push_back(kind);
  return Resource(static_cast<std::uint32_t>(resource_names_.size() - 1));
}

LabelId StepGraph::label(std::string_view name) {
  // A step has a dozen phases or so: a linear scan beats hashing here.
  for (std::size_t i = 0; i < label_names_.size(); ++i) {
    if (label_names_[i] == name) return static_cast<LabelId>(i);
  }
  label_names_.emplace_back(name);
  return static_cast<LabelId>(label_names_.size() - 1);
}

OpId StepGraph::add_op(const OpSpec& spec, std::initializer_list<OpId> after) {
  const std::size_t id = op_count();
  check_duration(spec.duration_s, id);
  if (spec.resource.index >= resource_names_.size()) {
    throw std::invalid_argument("op " + std::to_string(id) + " uses resource " +
                                std::to_string(spec.resource.index) + " but the graph has " +
                                std::to_string(resource_names_.size()) +
                                "; add it first with StepGraph::add_resource");
  }
  if (spec.label >= label_names_.size()) {
    throw std::invalid_argument("op " + std::to_string(id) + " has label id " +
                                std::to_string(spec.label) +
                                " that was never interned; get ids from StepGraph::label(name)");
  }
  if (id >= std::numeric_limits<OpId>::max()) throw std::length_error("step graph is full");
  OpNode node;
  node.duration_s = spec.duration_s;
  node.resource = spec.resource.index;
  node.label = spec.label;
  node.layer = spec.layer;
  node.micro_batch = spec.micro_batch;
  node.priority = spec.priority.value_or(static_cast<std::int64_t>(id));
  const auto v = static_cast<OpId>(boost::add_vertex(node, graph_));
  for (OpId before : after)
    add_dependency(before, v);
  return v;
}

void StepGraph::add_dependency(OpId before, OpId after) {
  const std::size_t n = op_count();
  if (before >= n || after >= n) {
    throw std::invalid_argument("dependency " + std::to_string(before) + " -> " +
                                std::to_string(after) + " names an op that does not exist (" +
                                std::to_string(n) + " ops)");
  }
  if (before == after) {
    throw std::invalid_argument("op " + std::to_string(before) + " cannot depend on itself");
  }
  boost::add_edge(before, after, graph_);
}

void StepGraph::set_duration(OpId op, double duration_s) {
  if (op >= op_count()) {
    throw std::invalid_argument("set_duration: op " + std::to_string(op) + " does not exist");
  }
  check_duration(duration_s, op);
  graph_[op].duration_s = duration_s;
}

void StepGraph::reserve(std::size_t ops, std::size_t edges) {
  // adjacency_list has no reserve(); its two containers are public members.
  graph_.m_vertices.reserve(ops);
  graph_.m_edges.reserve(edges);
}

void StepGraph::clear() {
  graph_.clear();
}

const Schedule& Scheduler::run(const StepGraph& graph) {
  simulate(graph);
  account(graph);
  trace_critical_path();
  return result_;
}

void Scheduler::simulate(const StepGraph& graph) {
  const OpGraph& g = graph.graph();
  const std::size_t n = graph.op_count();
  const std::size_t resources = graph.resource_count();

  result_.start_s.assign(n, 0.0);
  result_.end_s.assign(n, 0.0);
  pending_.resize(n);
  ready_s_.assign(n, 0.0);
  dependency_cause_.assign(n, kNoOp);
  resource_cause_.assign(n, kNoOp);
  cause_.assign(n, StartCause::None);
  if (ready_.size() < resources) ready_.resize(resources);
  for (auto& queue : ready_)
    queue.clear();
  running_.assign(resources, kNoOp);
  last_run_.assign(resources, kNoOp);
  events_.clear();
  order_.clear();
  order_.reserve(n);

  // Min-heaps through std::*_heap, which keep the greatest element on top.
  const auto later_ready = [](const ReadyOp& a, const ReadyOp& b) {
    if (a.ready_s != b.ready_s) return a.ready_s > b.ready_s;
    if (a.priority != b.priority) return a.priority > b.priority;
    return a.op > b.op;
  };
  const auto later_event = [](const Event& a, const Event& b) { return a.time_s > b.time_s; };

  const auto make_ready = [&](OpId v) {
    auto& queue = ready_[g[v].resource];
    queue.push_back({ready_s_[v], g[v].priority, v});
    std::push_heap(queue.begin(), queue.end(), later_ready);
  };

  for (OpId v = 0; v < n; ++v) {
    pending_[v] = static_cast<std::uint32_t>(boost::in_degree(v, g));
    if (pending_[v] == 0) make_ready(v);
  }

  std::size_t finished = 0;
  double now = 0;
  while (true) {
    // Start an op on every idle resource that has one ready. Every op in a queue became ready at
    // or before `now`, so the heap's top is the one that became ready first.
    for (std::size_t r = 0; r < resources; ++r) {
      auto& queue = ready_[r];
      if (running_[r] != kNoOp || queue.empty()) continue;
      std::pop_heap(queue.begin(), queue.end(), later_ready);
      const ReadyOp next = queue.back();
      queue.pop_back();
      const OpId v = next.op;
      result_.start_s[v] = now;
      result_.end_s[v] = now + g[v].duration_s;
      if (next.ready_s == now && dependency_cause_[v] != kNoOp) {
        cause_[v] = StartCause::Dependency;
      } else if (next.ready_s < now) {
        // It waited, so the resource only freed up now: the op that ran before it ended now.
        cause_[v] = StartCause::Resource;
        resource_cause_[v] = last_run_[r];
      }
      running_[r] = v;
      order_.push_back(v);
      events_.push_back({result_.end_s[v], v});
      std::push_heap(events_.begin(), events_.end(), later_event);
    }
    if (events_.empty()) break;

    // Retire every op that ends at the next event time before dispatching again, so ops that
    // become ready at the same instant compete by priority, not by event order.
    now = events_.front().time_s;
    while (!events_.empty() && events_.front().time_s == now) {
      std::pop_heap(events_.begin(), events_.end(), later_event);
      const OpId u = events_.back().op;
      events_.pop_back();
      ++finished;
      running_[g[u].resource] = kNoOp;
      last_run_[g[u].resource] = u;
      for (const auto& e : boost::make_iterator_range(boost::out_edges(u, g))) {
        const auto w = static_cast<OpId>(boost::target(e, g));
        // Events retire in time order, so `now` is the latest predecessor end so far.
        if (dependency_cause_[w] == kNoOp || now > ready_s_[w]) {
          ready_s_[w] = now;
          dependency_cause_[w] = u;
        }
        if (--pending_[w] == 0) make_ready(w);
      }
    }
  }

  if (finished != n) {
    OpId stuck = 0;
    while (stuck < n && pending_[stuck] == 0)
      ++stuck;
    throw std::invalid_argument(
        "step graph has a dependency cycle: " + std::to_string(n - finished) + " of " +
        std::to_string(n) + " ops can never start (e.g. op " + std::to_string(stuck) + ", '" +
        graph.label_names()[g[stuck].label] + "'); check the edges the builder added");
  }
}

void Scheduler::account(const StepGraph& graph) {
  const OpGraph& g = graph.graph();
  const std::size_t resources = graph.resource_count();
  result_.resource_busy_s.assign(resources, 0.0);
  result_.labels.assign(graph.label_names().size(), LabelTime{});
  result_.makespan_s = 0;
  compute_busy_.clear();
  comm_busy_.clear();
  is_comm_.resize(resources);
  for (std::size_t r = 0; r < resources; ++r) {
    is_comm_[r] =
        graph.resource_kind(Resource(static_cast<std::uint32_t>(r))) == ResourceKind::Comm;
  }

  // order_ is in start order, so each resource kind's intervals arrive sorted by begin.
  last_op_ = 0;
  for (const OpId v : order_) {
    const OpNode& node = g[v];
    const double begin = result_.start_s[v];
    const double end = result_.end_s[v];
    // The last-finishing op; among ties the last inserted, usually the step's final op.
    if (end > result_.makespan_s || (end == result_.makespan_s && v > last_op_)) {
      result_.makespan_s = end;
      last_op_ = v;
    }
    result_.resource_busy_s[node.resource] += node.duration_s;
    LabelTime& label = result_.labels[node.label];
    ++label.op_count;
    label.total_s += node.duration_s;
    if (node.duration_s <= 0) continue;
    const bool comm = is_comm_[node.resource] != 0;
    merge_into(comm ? comm_busy_ : compute_busy_, begin, end);
    if (comm) label.comm_s += node.duration_s;
  }

  // Overlap of each comm op with the compute union; comm ops come in ascending start, so the
  // first compute interval that can still overlap only moves forward.
  std::size_t first = 0;
  for (const OpId v : order_) {
    const OpNode& node = g[v];
    if (node.duration_s <= 0 || is_comm_[node.resource] == 0) continue;
    const double begin = result_.start_s[v];
    const double end = result_.end_s[v];
    while (first < compute_busy_.size() && compute_busy_[first].end_s <= begin)
      ++first;
    double overlapped = 0;
    for (std::size_t i = first; i < compute_busy_.size() && compute_busy_[i].begin_s < end; ++i) {
      overlapped +=
          std::min(end, compute_busy_[i].end_s) - std::max(begin, compute_busy_[i].begin_s);
    }
    result_.labels[node.label].overlapped_s += std::min(overlapped, node.duration_s);
  }
  // |comm union| - |comm union ∩ compute union|, by a sweep over the two sorted unions.
  double exposed = 0;
  std::size_t c = 0;
  for (const Interval& m : comm_busy_) {
    double covered = 0;
    while (c < compute_busy_.size() && compute_busy_[c].end_s <= m.begin_s)
      ++c;
    for (std::size_t i = c; i < compute_busy_.size() && compute_busy_[i].begin_s < m.end_s; ++i) {
      covered +=
          std::min(m.end_s, compute_busy_[i].end_s) - std::max(m.begin_s, compute_busy_[i].begin_s);
    }
    exposed += std::max(0.0, (m.end_s - m.begin_s) - covered);
  }
  result_.exposed_comm_s = exposed;

  // Each label's exposed time is its comm time outside compute. Two comm streams can both wait
  // out the same idle compute, so those per-op figures may add up to more than the exposed union;
  // the union is what the step loses, so it is shared among the labels in proportion to their own
  // exposure, and the rest of each label's time counts as hidden. Phases then add up to the
  // makespan.
  double per_op_exposed = 0;
  for (const LabelTime& label : result_.labels)
    per_op_exposed += label.comm_s - label.overlapped_s;
  const double share = per_op_exposed > exposed ? exposed / per_op_exposed : 1.0;
  for (LabelTime& label : result_.labels) {
    label.exposed_s = (label.comm_s - label.overlapped_s) * share;
    label.overlapped_s = label.comm_s - label.exposed_s;
  }
}

void Scheduler::trace_critical_path() {
  result_.critical_path.clear();
  result_.critical_cause.clear();
  if (order_.empty()) return;
  OpId v = last_op_;
  while (true) {
    result_.critical_path.push_back(v);
    result_.critical_cause.push_back(cause_[v]);
    if (cause_[v] == StartCause::Dependency) {
      v = dependency_cause_[v];
    } else if (cause_[v] == StartCause::Resource) {
      v = resource_cause_[v];
    } else {
      break;
    }
  }
  std::reverse(result_.critical_path.begin(), result_.critical_path.end());
  std::reverse(result_.critical_cause.begin(), result_.critical_cause.end());
}

double extrapolate_periodic(double makespan_k, double makespan_k_plus_1, std::int64_t k,
                            std::int64_t n) {
  if (k < 0 || n < k) {
    throw std::invalid_argument("extrapolate_periodic needs 0 <= k <= n, got k=" +
                                std::to_string(k) + ", n=" + std::to_string(n));
  }
  return makespan_k + static_cast<double>(n - k) * (makespan_k_plus_1 - makespan_k);
}

}  // namespace moetune::simulator
