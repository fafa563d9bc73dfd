// JSON form of Prediction.
#include "core/prediction.hpp"

#include <iterator>

namespace moetune {

namespace {

// One table of (key, member) per struct keeps writing and reading in step.
template <class T>
struct Field {
  const char* key;
  double T::*member;
};

constexpr Field<MemoryBreakdown> kMemoryFields[] = {
    {"parameters", &MemoryBreakdown::parameters},
    {"gradients", &MemoryBreakdown::gradients},
    {"optimizer", &MemoryBreakdown::optimizer},
    {"gathered_parameters", &MemoryBreakdown::gathered_parameters},
    {"activations", &MemoryBreakdown::activations},
    {"communication_buffers", &MemoryBreakdown::communication_buffers},
    {"workspace", &MemoryBreakdown::workspace},
    {"fragmentation", &MemoryBreakdown::fragmentation},
};

constexpr Field<TimeBreakdown> kTimeFields[] = {
    {"attention", &TimeBreakdown::attention},
    {"router", &TimeBreakdown::router},
    {"dispatch", &TimeBreakdown::dispatch},
    {"experts", &TimeBreakdown::experts},
    {"combine", &TimeBreakdown::combine},
    {"lm_head", &TimeBreakdown::lm_head},
    {"recompute", &TimeBreakdown::recompute},
    {"all_gather", &TimeBreakdown::all_gather},
    {"reduce_scatter", &TimeBreakdown::reduce_scatter},
    {"all_reduce", &TimeBreakdown::all_reduce},
    {"pipeline", &TimeBreakdown::pipeline},
    {"optimizer", &TimeBreakdown::optimizer},
    {"offload", &TimeBreakdown::offload},
    {"overlapped_comm", &TimeBreakdown::overlapped_comm},
    {"step", &TimeBreakdown::step},
};

template <class T, std::size_t N>
Json write_fields(const T& value, const Field<T> (&fields)[N]) {
  Json j;
  for (const auto& f : fields)
    j[f.key] = value.*(f.member);
  return j;
}

template <class T, std::size_t N>
T read_fields(JsonObjectReader r, const Field<T> (&fields)[N]) {
  T value;
  for (const auto& f : fields)
    value.*(f.member) = r.get_double(f.key, 0, 1e300);
  r.finish();
  return value;
}

}  // namespace

Json to_json(const MemoryBreakdown& m) {
  return write_fields(m, kMemoryFields);
}
Json to_json(const TimeBreakdown& t) {
  return write_fields(t, kTimeFields);
}

namespace {
// kTimeFields lists the step's phases first, then overlapped_comm and step.
constexpr std::size_t kTimePhases = std::size(kTimeFields) - 2;
}  // namespace

const std::vector<std::string>& time_phase_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (std::size_t i = 0; i < kTimePhases; ++i)
      v.emplace_back(kTimeFields[i].key);
    return v;
  }();
  return names;
}

std::optional<double> phase_seconds(const TimeBreakdown& t, std::string_view name) {
  for (std::size_t i = 0; i < kTimePhases; ++i) {
    if (name == kTimeFields[i].key) return t.*(kTimeFields[i].member);
  }
  return std::nullopt;
}

Json to_json(const Prediction& p) {
  Json j;
  j["fits"] = p.fits;
  j["reason"] = p.reason;
  j["peak_memory_bytes"] = p.peak_memory_bytes;
  j["device_memory_bytes"] = p.device_memory_bytes;
  j["host_memory_bytes_per_node"] = p.host_memory_bytes_per_node;
  j["memory"] = to_json(p.memory);
  j["time"] = to_json(p.time);
  j["step_time_s"] = p.step_time_s;
  j["tokens_per_s"] = p.tokens_per_s;
  j["tokens_per_s_per_device"] = p.tokens_per_s_per_device;
  j["tflops_per_device"] = p.tflops_per_device;
  j["mfu"] = p.mfu;
  j["cost_per_step_usd"] = p.cost_per_step_usd;
  j["cost_per_billion_tokens_usd"] = p.cost_per_billion_tokens_usd;
  return j;
}

Prediction prediction_from_json(JsonObjectReader r) {
  Prediction p;
  p.fits = r.get_bool("fits");
  p.reason = r.get_string("reason");
  p.peak_memory_bytes = r.get_double("peak_memory_bytes", 0, 1e300);
  p.device_memory_bytes = r.get_double("device_memory_bytes", 0, 1e300);
  p.host_memory_bytes_per_node = r.get_double("host_memory_bytes_per_node", 0, 1e300);
  p.memory = read_fields(r.get_object("memory"), kMemoryFields);
  p.time = read_fields(r.get_object("time"), kTimeFields);
  p.step_time_s = r.get_double("step_time_s", 0, 1e300);
  p.tokens_per_s = r.get_double("tokens_per_s", 0, 1e300);
  p.tokens_per_s_per_device = r.get_double("tokens_per_s_per_device", 0, 1e300);
  p.tflops_per_device = r.get_double("tflops_per_device", 0, 1e300);
  p.mfu = r.get_double("mfu", 0, 1e300);
  p.cost_per_step_usd = r.get_double("cost_per_step_usd", 0, 1e300);
  p.cost_per_billion_tokens_usd = r.get_double("cost_per_billion_tokens_usd", 0, 1e300);
  r.finish();
  return p;
}

}  // namespace moetune
