// The step schedule: one training step as a DAG of ops on streams (a compute stream, a
// communication stream, and any further resources a builder adds, such as separate intra- and
// inter-node comm streams or the host link), list-scheduled event by event. The step time is the
// schedule's makespan, not a sum; the schedule also reports time per phase label, how much of each
// communication label hid behind compute, and the critical path.
//
// Built for the planner's inner loop: a builder fills a reusable `StepGraph` (clear() and refill,
// or keep the structure and set_duration()), and one `Scheduler` schedules it many times, reusing
// its buffers, so a steady-state run does not allocate.
#pragma once

#include <boost/graph/adjacency_list.hpp>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace moetune::simulator {

// The two resources every StepGraph starts with; further ones come from StepGraph::add_resource.
enum class Stream : std::uint32_t { Compute = 0, Comm = 1 };

// What a resource does, which decides how its time is accounted: communication time is split into
// the part that ran while some compute resource was busy (overlapped) and the rest (exposed).
enum class ResourceKind { Compute, Comm };

// A resource (stream) of a StepGraph, by index. Converts from `Stream` for the two built-in ones.
struct Resource {
  constexpr Resource(Stream s) : index(static_cast<std::uint32_t>(s)) {}  // NOLINT: implicit
  constexpr explicit Resource(std::uint32_t i) : index(i) {}
  std::uint32_t index;
  friend constexpr bool operator==(Resource, Resource) = default;
};

using OpId = std::uint32_t;     // vertex index in the StepGraph, in insertion order
using LabelId = std::uint32_t;  // index into StepGraph::label_names()

inline constexpr std::int32_t kNoIndex = -1;  // op not tied to a layer / micro-batch

// Everything about an op except its edges.
struct OpSpec {
  LabelId label = 0;  // phase, from StepGraph::label("attention")
  double duration_s = 0;
  Resource resource = Stream::Compute;
  std::int32_t layer = kNoIndex;
  std::int32_t micro_batch = kNoIndex;
  // Among ops of one resource that became ready at the same instant, the lower priority runs
  // first. Unset: the op's insertion index, so "issued earlier" wins ties.
  std::optional<std::int64_t> priority = std::nullopt;
};

// The bundled vertex property of the Boost graph.
struct OpNode {
  double duration_s = 0;
  std::uint32_t resource = 0;
  LabelId label = 0;
  std::int32_t layer = kNoIndex;
  std::int32_t micro_batch = kNoIndex;
  std::int64_t priority = 0;
};

// Edge list as a vector too (7th parameter): bidirectionalS otherwise keeps a std::list node per
// edge, one allocation each.
using OpGraph = boost::adjacency_list<boost::vecS, boost::vecS, boost::bidirectionalS, OpNode,
                                      boost::no_property, boost::no_property, boost::vecS>;

// A step's op DAG. Edges mean "after": an op may start only once all its predecessors finished.
class StepGraph {
 public:
  // Starts with resources "compute" (Stream::Compute) and "comm" (Stream::Comm), and no labels.
  StepGraph();

  Resource add_resource(std::string name, ResourceKind kind);
  // Interns a phase name: the same name gives the same id for the life of the graph.
  LabelId label(std::string_view name);

  OpId add_op(const OpSpec& spec, std::initializer_list<OpId> after = {});
  void add_dependency(OpId before, OpId after);
  // Re-costs an op in place: a builder that keeps one structure per layout shape and only changes
  // durations rebuilds nothing (clear() + refill frees and reallocates each op's edge lists).
  void set_duration(OpId op, double duration_s);
  void reserve(std::size_t ops, std::size_t edges);
  // Drops ops and edges; keeps resources and labels, so ids a builder cached stay valid.
  void clear();

  std::size_t op_count() const { return boost::num_vertices(graph_); }
  const OpNode& op(OpId id) const { return graph_[id]; }
  const OpGraph& graph() const { return graph_; }
  std::size_t resource_count() const { return resource_names_.size(); }
  const std::string& resource_name(Resource r) const { return resource_names_.at(r.index); }
  ResourceKind resource_kind(Resource r) const { return resource_kinds_.at(r.index); }
  const std::vector<std::string>& label_names() const { return label_names_; }

 private:
  OpGraph graph_;
  std::vector<std::string> resource_names_;
  std::vector<ResourceKind> resource_kinds_;
  std::vector<std::string> label_names_;
};

// Time per phase label (indexed by LabelId). For ops on Comm resources, comm_s splits into
// exposed_s, the label's share of the time communication adds to the step (exposed_comm_s), and
// overlapped_s, the rest (hidden behind compute, or behind another comm op already exposed).
struct LabelTime {
  std::uint32_t op_count = 0;
  double total_s = 0;  // sum of the label's op durations
  double comm_s = 0;   // the part of total_s on Comm resources
  double overlapped_s = 0;
  double exposed_s = 0;  // comm_s - overlapped_s; the labels' sum is exposed_comm_s
};

// Why an op started when it did: a predecessor's end, the previous op on its resource, or t = 0.
enum class StartCause : std::uint8_t { None, Dependency, Resource };

struct Schedule {
  std::vector<double> start_s;  // [op]
  std::vector<double> end_s;    // [op]
  double makespan_s = 0;
  std::vector<double> resource_busy_s;  // [resource] sum of durations run there
  std::vector<LabelTime> labels;        // [label]
  // Wall time during which some Comm resource ran and no Compute resource did: the step time that
  // communication adds, shared among the labels' exposed_s.
  double exposed_comm_s = 0;
  // Ops from t = 0 to the last-finishing op, each starting when the one before it ended; their
  // durations sum to the makespan.
  std::vector<OpId> critical_path;
  std::vector<StartCause> critical_cause;  // [position in critical_path] why that op started then
};

// Event-driven list scheduler. Each resource runs one op at a time; whenever it is free it takes,
// among its ready ops (all predecessors finished), the one that became ready first, ties broken by
// lower priority, then lower id. So an op starts at max(its resource free, its predecessors done).
// Keep one Scheduler per thread and call run() repeatedly: buffers are reused.
class Scheduler {
 public:
  // The returned schedule lives in this Scheduler and is overwritten by the next run().
  // Throws std::invalid_argument if the graph has a cycle.
  const Schedule& run(const StepGraph& graph);

 private:
  struct ReadyOp {
    double ready_s;
    std::int64_t priority;
    OpId op;
  };
  struct Event {
    double time_s;
    OpId op;
  };
  struct Interval {
    double begin_s;
    double end_s;
  };

  void simulate(const StepGraph& graph);
  void account(const StepGraph& graph);
  void trace_critical_path();

  Schedule result_;
  std::vector<std::uint32_t> pending_;       // [op] predecessors not yet finished
  std::vector<double> ready_s_;              // [op] latest predecessor end so far
  std::vector<OpId> dependency_cause_;       // [op] predecessor that ended last
  std::vector<OpId> resource_cause_;         // [op] op that ran before it on its resource
  std::vector<StartCause> cause_;            // [op]
  std::vector<std::vector<ReadyOp>> ready_;  // [resource] min-heap
  std::vector<OpId> running_;                // [resource] op running, or kIdle
  std::vector<OpId> last_run_;               // [resource] op that ran last, or kIdle
  std::vector<OpId> order_;                  // ops in the order they started (start_s ascending)
  std::vector<std::uint8_t> is_comm_;        // [resource] ResourceKind::Comm
  OpId last_op_ = 0;                         // the op that ends the step
  std::vector<Event> events_;                // min-heap of op ends
  std::vector<Interval> compute_busy_;       // merged union of compute intervals
  std::vector<Interval> comm_busy_;          // merged union of comm intervals
};

// Makespan of n identical periodic units (layers) from schedules of k and k + 1 of them, once the
// schedule has reached its steady state by unit k: each further unit adds the same increment,
// makespan_{k+1} - makespan_k. Exact when every unit after the k-th contributes identically (e.g. a
// chain of identical layers with the next layer's all-gather prefetched: k = 1 suffices).
// Requires 0 <= k <= n.
double extrapolate_periodic(double makespan_k, double makespan_k_plus_1, std::int64_t k,
                            std::int64_t n);

}  // namespace moetune::simulator
