// The planner: enumerates every layout of a model on a cluster (tp, pp with vpp, ep, hs, rep, every
// distinct mesh order, micro-batch, recompute, optimizer offload; the distributed optimizer
// wherever there are replicas), rejects the invalid ones with a reason, simulates the rest, ranks
// them by an objective and marks the Pareto front of throughput vs memory.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "core/constraints.hpp"
#include "core/plan.hpp"

namespace moetune::planner {

enum class Objective { Throughput, Cost, Memory };
std::string to_string(Objective objective);
Objective parse_objective(const std::string& text);

// Choices the user fixed; the planner searches the rest.
struct Pins {
  std::optional<std::int64_t> tp, pp, vpp, ep, hs, micro_batch;
  std::optional<MeshOrder> order;
  std::optional<Recompute> recompute;
  std::optional<bool> optimizer_offload;
  std::optional<bool> activation_offload;  // searched only when pinned to true
  // Distributed optimizer wherever a layout has replicas, unless pinned off: it never needs more
  // memory or time than plain replicas (reduce-scatter + all-gather move the bytes of one
  // all-reduce, the gather in the working precision and hidden behind the next forward).
  std::optional<bool> distributed_optimizer;
  // Uneven pipeline stages as given (the planner otherwise splits evenly where pp divides the
  // layers, and picks a balanced uneven split where it does not).
  std::optional<StageSplit> stage_split;
};

struct SearchOptions {
  Objective objective = Objective::Throughput;
  Pins pins;
  bool keep_rejected = false;  // keep every rejected layout (for `explain`), not only counts
};

// One simulated layout: the figures the ranking needs. Full predictions are made again for the
// few layouts that are shown (Simulator::predict is cheap and deterministic).
struct Candidate {
  Layout layout;
  bool fits = false;
  bool pareto = false;  // on the throughput-vs-memory front of the fitting layouts
  double peak_memory_bytes = 0;
  double step_time_s = 0;
  double tokens_per_s = 0;
  double mfu = 0;
  double cost_per_billion_tokens_usd = 0;
};

struct RejectedLayout {
  Layout layout;  // the order is irrelevant to these rules: every order is rejected alike
  Rejection rejection;
};

struct SearchResult {
  std::vector<Candidate> ranked;  // fitting layouts first, each group best first
  std::vector<RejectedLayout> rejected;
  std::int64_t considered = 0;  // layouts looked at, valid or not
  std::int64_t simulated = 0;   // layouts that passed the rules and were simulated
  std::int64_t fitting = 0;
  std::array<std::int64_t, 32> rejected_by_code{};  // indexed by RejectCode
};

SearchResult search(const ModelSpec& model, const ClusterSpec& cluster, const TrainSpec& train,
                    const SearchOptions& options);

// A full plan (with its prediction) for one candidate.
Plan make_plan(const ModelSpec& model, const ClusterSpec& cluster, const TrainSpec& train,
               const Layout& layout);

}  // namespace moetune::planner
