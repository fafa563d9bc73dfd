// run.jsonl: the measurements a training run writes and calibration and the GUI read. One JSON
// object per line: first a header (the plan, host, backend, rank), then one line per optimizer
// step. Phase names are the simulator's (attention, router, dispatch, experts, combine, lm_head,
// optimizer, ...), so predicted and measured time line up phase by phase.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/json_reader.hpp"
#include "core/plan.hpp"

namespace moetune {

struct RunHeader {
  Plan plan;
  std::string host;
  std::string backend;  // "cpu", "cuda"
  std::int64_t rank = 0;
  std::int64_t world_size = 1;
  std::int64_t threads = 1;  // compute threads per rank
  std::string started_at;    // ISO 8601, UTC
  bool operator==(const RunHeader&) const = default;
};

// The header of a run on this machine: its host name and the current UTC time filled in.
RunHeader run_header_here(const Plan& plan, const std::string& backend, std::int64_t rank,
                          std::int64_t world_size, std::int64_t threads);

struct CollectiveRecord {
  std::int64_t calls = 0;
  double bytes = 0;
  double seconds = 0;
  bool operator==(const CollectiveRecord&) const = default;
};

// This rank's memory by kind, as the executor holds it (bytes), for comparison with the
// simulator's memory model.
struct StepMemory {
  double parameters_bytes = 0;
  double gradients_bytes = 0;
  double optimizer_bytes = 0;
  double gathered_parameters_bytes = 0;  // hs > 1: the working copy of gathered layers
  double activations_bytes = 0;  // saved for backward, largest over the step's micro-batches
  bool operator==(const StepMemory&) const = default;
};

struct StepRecord {
  std::int64_t step = 0;  // 1-based optimizer step
  double loss = 0;        // mean cross-entropy over the step's tokens
  double aux_loss = 0;    // load-balancing loss (before its coefficient)
  double z_loss = 0;
  double grad_norm = 0;  // global, before clipping
  double lr = 0;
  std::int64_t tokens = 0;  // tokens in the step (all ranks)
  double step_time_s = 0;
  double tokens_per_s = 0;
  std::map<std::string, double> phases_s;               // measured seconds per phase on this rank
  std::map<std::string, CollectiveRecord> collectives;  // per collective kind
  double peak_memory_bytes = 0;
  std::optional<StepMemory> memory;                          // optional in the file
  std::vector<std::vector<std::int64_t>> tokens_per_expert;  // [layer][expert], this rank's tokens
  std::int64_t dropped_tokens = 0;
  bool operator==(const StepRecord&) const = default;
};

// Adds one micro-batch's routed counts [layer][expert] into the step's tokens_per_expert.
void add_tokens_per_expert(StepRecord& step, const std::vector<std::vector<std::int64_t>>& counts);

Json to_json(const RunHeader& header);
Json to_json(const StepRecord& step);
RunHeader run_header_from_json(const Json& json, const std::string& origin);
StepRecord step_record_from_json(const Json& json, const std::string& origin);

struct RunLog {
  RunHeader header;
  std::vector<StepRecord> steps;
};

// Reads and validates a whole run.jsonl; a line that is not a moetune record, or a file whose first
// line is no header, is refused with the file and line number.
RunLog read_run_log(const std::filesystem::path& file);

// Appends records line by line, flushing each, so a crashed run keeps what it measured.
class RunLogWriter {
 public:
  RunLogWriter(const std::filesystem::path& file, const RunHeader& header, bool append);
  ~RunLogWriter();
  RunLogWriter(const RunLogWriter&) = delete;
  RunLogWriter& operator=(const RunLogWriter&) = delete;
  void write(const StepRecord& step);

 private:
  std::FILE* file_ = nullptr;
  std::string path_;
};

}  // namespace moetune
