// Prediction: what the simulator says about one plan — per-rank memory with its breakdown, step
// time with its phases, throughput, MFU and cost. It lives in core because plan.json carries it.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/json_reader.hpp"

namespace moetune {

// Bytes on the busiest device (worst rank).
struct MemoryBreakdown {
  double parameters = 0;             // resident parameter copies (fp32 master / bf16 working)
  double gradients = 0;              // fp32 gradient accumulators (+ unsharded layer gradients)
  double optimizer = 0;              // Adam m and v
  double gathered_parameters = 0;    // layers all-gathered over hs (current + prefetched)
  double activations = 0;            // saved for backward, all micro-batches in flight
  double communication_buffers = 0;  // all-to-all send/receive, TP gather buffers
  double workspace = 0;              // runtime context, library workspaces, logits scratch
  double fragmentation = 0;          // allocator slack
  double total() const {
    return parameters + gradients + optimizer + gathered_parameters + activations +
           communication_buffers + workspace + fragmentation;
  }
  // What an executor counts as it allocates (run.jsonl's peak_memory_bytes): model state, gathered
  // layers and activations, without communication staging, the runtime reserve and allocator
  // slack.
  double tracked() const {
    return parameters + gradients + optimizer + gathered_parameters + activations;
  }
  bool operator==(const MemoryBreakdown&) const = default;
};

// Seconds per optimizer step. Compute phases are named after the executor's phases.
struct TimeBreakdown {
  double attention = 0;  // QKV/out projections, RoPE, attention core, norms of the block
  double router = 0;
  double dispatch = 0;  // permute + all-to-all out (exposed part)
  double experts = 0;   // expert GEMMs on the busiest EP rank
  double combine = 0;   // all-to-all back + unpermute (exposed part)
  double lm_head = 0;   // embedding, final norm, LM head, loss
  double recompute = 0;
  double all_gather = 0;      // exposed parameter/activation gathers
  double reduce_scatter = 0;  // exposed gradient/activation reduce-scatters
  double all_reduce = 0;      // exposed gradient all-reduce over the replicate groups
  double pipeline = 0;        // 1F1B bubble and stage-to-stage transfers
  double optimizer = 0;
  double offload = 0;          // host link traffic and host-side update
  double overlapped_comm = 0;  // communication hidden behind compute (not part of the step)
  double step = 0;
  bool operator==(const TimeBreakdown&) const = default;
};

struct Prediction {
  bool fits = false;
  std::string reason;  // why it does not fit, empty when it fits
  double peak_memory_bytes = 0;
  double device_memory_bytes = 0;
  double host_memory_bytes_per_node = 0;  // offloaded state on the busiest node
  MemoryBreakdown memory;
  TimeBreakdown time;
  double step_time_s = 0;
  double tokens_per_s = 0;
  double tokens_per_s_per_device = 0;
  double tflops_per_device = 0;  // model FLOPs (causal attention), no recompute
  double mfu = 0;
  double cost_per_step_usd = 0;
  double cost_per_billion_tokens_usd = 0;
  bool operator==(const Prediction&) const = default;
};

Json to_json(const MemoryBreakdown& m);
Json to_json(const TimeBreakdown& t);

// The phases a step's time splits into, in display order, named as run.jsonl and the JSON name
// them: attention ... offload. They add up to `step`; overlapped_comm is not one of them.
const std::vector<std::string>& time_phase_names();
// Seconds of the phase `name` (one of time_phase_names()); nullopt for any other name.
std::optional<double> phase_seconds(const TimeBreakdown& t, std::string_view name);
Json to_json(const Prediction& p);
Prediction prediction_from_json(JsonObjectReader reader);

}  // namespace moetune
