// run.jsonl reading and writing.
#include "core/run_log.hpp"

#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <fstream>

#include "core/error.hpp"

namespace moetune {

void add_tokens_per_expert(StepRecord& step, const std::vector<std::vector<std::int64_t>>& counts) {
  if (step.tokens_per_expert.empty()) {
    step.tokens_per_expert = counts;
    return;
  }
  for (std::size_t l = 0; l < counts.size(); ++l) {
    for (std::size_t e = 0; e < counts[l].size(); ++e)
      step.tokens_per_expert[l][e] += counts[l][e];
  }
}

Json to_json(const RunHeader& h) {
  Json j;
  j["type"] = "header";
  j["schema_version"] = kSchemaVersion;
  j["plan"] = to_json(h.plan);
  j["host"] = h.host;
  j["backend"] = h.backend;
  j["rank"] = h.rank;
  j["world_size"] = h.world_size;
  j["threads"] = h.threads;
  j["started_at"] = h.started_at;
  return j;
}

Json to_json(const StepRecord& s) {
  Json j;
  j["type"] = "step";
  j["step"] = s.step;
  j["loss"] = s.loss;
  j["aux_loss"] = s.aux_loss;
  j["z_loss"] = s.z_loss;
  j["grad_norm"] = s.grad_norm;
  j["lr"] = s.lr;
  j["tokens"] = s.tokens;
  j["step_time_s"] = s.step_time_s;
  j["tokens_per_s"] = s.tokens_per_s;
  Json phases = Json::object();
  for (const auto& [k, v] : s.phases_s)
    phases[k] = v;
  j["phases_s"] = phases;
  Json coll = Json::object();
  for (const auto& [k, v] : s.collectives) {
    coll[k] = {{"calls", v.calls}, {"bytes", v.bytes}, {"seconds", v.seconds}};
  }
  j["collectives"] = coll;
  j["peak_memory_bytes"] = s.peak_memory_bytes;
  if (s.memory) {
    j["memory"] = {{"parameters_bytes", s.memory->parameters_bytes},
                   {"gradients_bytes", s.memory->gradients_bytes},
                   {"optimizer_bytes", s.memory->optimizer_bytes},
                   {"gathered_parameters_bytes", s.memory->gathered_parameters_bytes},
                   {"activations_bytes", s.memory->activations_bytes}};
  }
  j["tokens_per_expert"] = s.tokens_per_expert;
  j["dropped_tokens"] = s.dropped_tokens;
  return j;
}

RunHeader run_header_from_json(const Json& json, const std::string& origin) {
  JsonObjectReader r(json, origin);
  if (r.get_string("type") != "header") r.fail("type", "expected \"header\" on the first line");
  r.expect_schema_version();
  RunHeader h;
  h.plan = plan_from_json(r.get_raw("plan"), origin + ".plan");
  h.host = r.get_string("host");
  h.backend = r.get_enum("backend", {"cpu", "cuda"});
  h.rank = r.get_int("rank", 0, 1 << 24);
  h.world_size = r.get_int("world_size", 1, 1 << 24);
  h.threads = r.get_int("threads", 1, 1 << 16);
  h.started_at = r.get_string("started_at");
  r.finish();
  if (h.rank >= h.world_size) r.fail("rank", "must be below world_size");
  return h;
}

StepRecord step_record_from_json(const Json& json, const std::string& origin) {
  JsonObjectReader r(json, origin);
  if (r.get_string("type") != "step") r.fail("type", "expected \"step\"");
  StepRecord s;
  s.step = r.get_int("step", 1, std::int64_t{1} << 40);
  s.loss = r.get_double("loss", 0, 1e9);
  s.aux_loss = r.get_double("aux_loss", 0, 1e9);
  s.z_loss = r.get_double("z_loss", 0, 1e9);
  s.grad_norm = r.get_double("grad_norm", 0, 1e300);
  s.lr = r.get_double("lr", 0, 1e3);
  s.tokens = r.get_int("tokens", 0, std::int64_t{1} << 50);
  s.step_time_s = r.get_double("step_time_s", 0, 1e9);
  s.tokens_per_s = r.get_double("tokens_per_s", 0, 1e15);
  {
    JsonObjectReader phases = r.get_object("phases_s");
    for (auto it = json["phases_s"].begin(); it != json["phases_s"].end(); ++it) {
      s.phases_s[it.key()] = phases.get_double(it.key(), 0, 1e9);
    }
    phases.finish();
  }
  {
    JsonObjectReader coll = r.get_object("collectives");
    for (auto it = json["collectives"].begin(); it != json["collectives"].end(); ++it) {
      JsonObjectReader c = coll.get_object(it.key());
      CollectiveRecord rec;
      rec.calls = c.get_int("calls", 0, std::int64_t{1} << 50);
      rec.bytes = c.get_double("bytes", 0, 1e300);
      rec.seconds = c.get_double("seconds", 0, 1e9);
      c.finish();
      s.collectives[it.key()] = rec;
    }
    coll.finish();
  }
  s.peak_memory_bytes = r.get_double("peak_memory_bytes", 0, 1e300);
  if (r.has("memory")) {
    JsonObjectReader m = r.get_object("memory");
    StepMemory mem;
    mem.parameters_bytes = m.get_double("parameters_bytes", 0, 1e300);
    mem.gradients_bytes = m.get_double("gradients_bytes", 0, 1e300);
    mem.optimizer_bytes = m.get_double("optimizer_bytes", 0, 1e300);
    mem.gathered_parameters_bytes = m.get_double("gathered_parameters_bytes", 0, 1e300);
    mem.activations_bytes = m.get_double("activations_bytes", 0, 1e300);
    m.finish();
    s.memory = mem;
  }
  const Json& tpe = r.get_raw("tokens_per_expert");
  if (!tpe.is_array()) r.fail("tokens_per_expert", "expected [layer][expert] counts");
  for (const auto& layer : tpe) {
    if (!layer.is_array()) r.fail("tokens_per_expert", "expected [layer][expert] counts");
    std::vector<std::int64_t> counts;
    for (const auto& c : layer) {
      if (!c.is_number_integer() || c.get<std::int64_t>() < 0) {
        r.fail("tokens_per_expert", "counts must be non-negative integers");
      }
      counts.push_back(c.get<std::int64_t>());
    }
    s.tokens_per_expert.push_back(std::move(counts));
  }
  s.dropped_tokens = r.get_int("dropped_tokens", 0, std::int64_t{1} << 50);
  r.finish();
  return s;
}

RunLog read_run_log(const std::filesystem::path& file) {
  std::ifstream in(file);
  if (!in) throw InputError(file.string() + ": cannot open run log");
  RunLog log;
  std::string line;
  std::int64_t n = 0;
  bool have_header = false;
  while (std::getline(in, line)) {
    ++n;
    if (line.empty()) continue;
    const std::string where = file.string() + ":" + std::to_string(n);
    Json j;
    try {
      j = parse_json_text(line, where);
    } catch (const InputError& e) {
      // A first line that is no JSON record is some other file (a plan.json, a binary).
      if (!have_header) {
        throw InputError(where + ": not a moetune run log (its first line is no JSON header)");
      }
      throw;
    }
    if (!have_header) {
      if (!j.is_object() || !j.contains("type") || j["type"] != "header") {
        throw InputError(where + ": not a moetune run log (the first line must be its header)");
      }
      log.header = run_header_from_json(j, where);
      have_header = true;
    } else {
      log.steps.push_back(step_record_from_json(j, where));
    }
  }
  if (!have_header) throw InputError(file.string() + ": empty run log");
  return log;
}

RunLogWriter::RunLogWriter(const std::filesystem::path& file, const RunHeader& header, bool append)
    : path_(file.string()) {
  file_ = std::fopen(path_.c_str(), append ? "a" : "w");
  if (file_ == nullptr) throw InputError(path_ + ": cannot open for writing");
  const std::string text = to_json(header).dump() + "\n";
  if (std::fputs(text.c_str(), file_) < 0 || std::fflush(file_) != 0) {
    throw InputError(path_ + ": write failed");
  }
}

RunLogWriter::~RunLogWriter() {
  if (file_ != nullptr) std::fclose(file_);
}

void RunLogWriter::write(const StepRecord& step) {
  const std::string text = to_json(step).dump() + "\n";
  if (std::fputs(text.c_str(), file_) < 0 || std::fflush(file_) != 0) {
    throw InputError(path_ + ": write failed");
  }
}

RunHeader run_header_here(const Plan& plan, const std::string& backend, std::int64_t rank,
                          std::int64_t world_size, std::int64_t threads) {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) std::snprintf(host, sizeof host, "unknown");
  char started[32] = {};
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  std::strftime(started, sizeof started, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return RunHeader{plan, host, backend, rank, world_size, threads, started};
}

}  // namespace moetune
