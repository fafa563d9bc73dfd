// JSON forms of HardwareProfile and ClusterSpec.
#include "core/hardware.hpp"

#include "core/error.hpp"
#include "core/units.hpp"

namespace moetune {

double HardwareProfile::memory_bytes() const {
  return memory_GiB * kGiB;
}

double HardwareProfile::peak_flops(Precision precision) const {
  switch (precision) {
    case Precision::Fp32:
      // The CPU backend computes in fp32; on a GPU, fp32 training GEMMs would run as TF32.
      return (kind == DeviceKind::Cpu ? peak_tflops_fp32 : peak_tflops_tf32) * 1e12;
    case Precision::Bf16:
      return peak_tflops_bf16 * 1e12;
    case Precision::Fp8:
      return (peak_tflops_fp8 > 0 ? peak_tflops_fp8 : peak_tflops_bf16) * 1e12;
  }
  return peak_tflops_bf16 * 1e12;
}

std::string to_string(DeviceKind kind) {
  return kind == DeviceKind::Gpu ? "gpu" : "cpu";
}

std::string to_string(Precision precision) {
  switch (precision) {
    case Precision::Fp32:
      return "fp32";
    case Precision::Bf16:
      return "bf16";
    case Precision::Fp8:
      return "fp8";
  }
  return "bf16";
}

Precision parse_precision(const std::string& text) {
  if (text == "fp32") return Precision::Fp32;
  if (text == "bf16") return Precision::Bf16;
  if (text == "fp8") return Precision::Fp8;
  throw InputError("precision \"" + text + "\" is not one of {fp32, bf16, fp8}");
}

std::string to_string(Fabric fabric) {
  switch (fabric) {
    case Fabric::NvSwitch:
      return "nvswitch";
    case Fabric::Pcie:
      return "pcie";
    case Fabric::SharedMemory:
      return "shared_memory";
  }
  return "nvswitch";
}

namespace {

Fabric parse_fabric(const std::string& text) {
  if (text == "pcie") return Fabric::Pcie;
  if (text == "shared_memory") return Fabric::SharedMemory;
  return Fabric::NvSwitch;
}

std::map<std::string, std::string> read_sources(JsonObjectReader& r) {
  std::map<std::string, std::string> out;
  const Json& s = r.get_raw("sources");
  if (!s.is_object()) r.fail("sources", "expected an object of field -> source text");
  for (auto it = s.begin(); it != s.end(); ++it) {
    if (!it.value().is_string()) r.fail("sources." + it.key(), "expected a string");
    out[it.key()] = it.value().get<std::string>();
  }
  return out;
}

Json sources_json(const std::map<std::string, std::string>& sources) {
  Json j = Json::object();
  for (const auto& [k, v] : sources)
    j[k] = v;
  return j;
}

Json calibration_json(const CalibrationRecord& c) {
  Json params = Json::array();
  for (const CalibratedValue& v : c.parameters) {
    Json p = {{"name", v.name}, {"value", v.value}};
    if (v.stderr_value) p["stderr"] = *v.stderr_value;
    params.push_back(p);
  }
  Json j;
  j["parameters"] = params;
  j["runs"] = c.runs;
  if (c.expert_skew) j["expert_skew"] = *c.expert_skew;
  j["date"] = c.date;
  j["step_time_error_before"] = c.step_time_error_before;
  j["step_time_error_after"] = c.step_time_error_after;
  return j;
}

CalibrationRecord read_calibration(JsonObjectReader r) {
  CalibrationRecord c;
  const Json& params = r.get_raw("parameters");
  if (!params.is_array()) r.fail("parameters", "expected a list of {name, value, stderr}");
  for (std::size_t i = 0; i < params.size(); ++i) {
    JsonObjectReader p(params[i], r.path() + ".parameters[" + std::to_string(i) + "]");
    CalibratedValue v;
    v.name = p.get_string("name");
    v.value = p.get_double("value", -1e300, 1e300);
    if (p.has("stderr")) v.stderr_value = p.get_double("stderr", 0, 1e300);
    p.finish();
    c.parameters.push_back(v);
  }
  const Json& runs = r.get_raw("runs");
  if (!runs.is_array()) r.fail("runs", "expected a list of file names");
  for (const Json& run : runs) {
    if (!run.is_string()) r.fail("runs", "expected a list of file names");
    c.runs.push_back(run.get<std::string>());
  }
  if (r.has("expert_skew")) c.expert_skew = r.get_double("expert_skew", 0, 100);
  c.date = r.get_string("date");
  c.step_time_error_before = r.get_double("step_time_error_before", 0, 1e9);
  c.step_time_error_after = r.get_double("step_time_error_after", 0, 1e9);
  r.finish();
  return c;
}

}  // namespace

Json to_json(const HardwareProfile& p) {
  Json j;
  j["schema_version"] = kSchemaVersion;
  j["name"] = p.name;
  j["description"] = p.description;
  j["kind"] = to_string(p.kind);
  j["peak_tflops_fp32"] = p.peak_tflops_fp32;
  j["peak_tflops_tf32"] = p.peak_tflops_tf32;
  j["peak_tflops_bf16"] = p.peak_tflops_bf16;
  j["peak_tflops_fp8"] = p.peak_tflops_fp8;
  j["memory_GiB"] = p.memory_GiB;
  j["memory_bandwidth_GBps"] = p.memory_bandwidth_GBps;
  j["gemm_efficiency"] = p.gemm_efficiency;
  j["attention_efficiency"] = p.attention_efficiency;
  j["memory_bound_efficiency"] = p.memory_bound_efficiency;
  j["optimizer_efficiency"] = p.optimizer_efficiency;
  j["kernel_overhead_us"] = p.kernel_overhead_us;
  j["node_contention"] = p.node_contention;
  j["runtime_reserved_GiB"] = p.runtime_reserved_GiB;
  j["fragmentation_fraction"] = p.fragmentation_fraction;
  j["flash_attention"] = p.flash_attention;
  j["sources"] = sources_json(p.sources);
  return j;
}

HardwareProfile hardware_from_json(JsonObjectReader r) {
  r.expect_schema_version();
  HardwareProfile p;
  p.name = r.get_string("name");
  p.description = r.get_string("description");
  p.kind = r.get_enum("kind", {"gpu", "cpu"}) == "gpu" ? DeviceKind::Gpu : DeviceKind::Cpu;
  p.peak_tflops_fp32 = r.get_double("peak_tflops_fp32", 1e-6, 1e6);
  p.peak_tflops_tf32 = r.get_double("peak_tflops_tf32", 0, 1e6);
  p.peak_tflops_bf16 = r.get_double("peak_tflops_bf16", 1e-6, 1e6);
  p.peak_tflops_fp8 = r.get_double("peak_tflops_fp8", 0, 1e6);
  p.memory_GiB = r.get_double("memory_GiB", 1e-3, 1e6);
  p.memory_bandwidth_GBps = r.get_double("memory_bandwidth_GBps", 1e-3, 1e7);
  p.gemm_efficiency = r.get_double("gemm_efficiency", 1e-3, 1);
  p.attention_efficiency = r.get_double("attention_efficiency", 1e-3, 1);
  p.memory_bound_efficiency = r.get_double("memory_bound_efficiency", 1e-3, 1);
  // Optional (profiles written before it existed): 0, as efficient as other memory-bound kernels.
  if (r.has("optimizer_efficiency")) {
    p.optimizer_efficiency = r.get_double("optimizer_efficiency", 0, 1);
  }
  p.kernel_overhead_us = r.get_double("kernel_overhead_us", 0, 1e6);
  // Optional (profiles written before it existed): 0, devices that do not slow each other.
  if (r.has("node_contention")) p.node_contention = r.get_double("node_contention", 0, 100);
  p.runtime_reserved_GiB = r.get_double("runtime_reserved_GiB", 0, 1e6);
  p.fragmentation_fraction = r.get_double("fragmentation_fraction", 0, 1);
  p.flash_attention = r.get_bool("flash_attention");
  p.sources = read_sources(r);
  r.finish();
  return p;
}

Json to_json(const ClusterSpec& c) {
  Json j;
  j["schema_version"] = kSchemaVersion;
  j["name"] = c.name;
  j["description"] = c.description;
  j["nodes"] = c.nodes;
  j["devices_per_node"] = c.devices_per_node;
  j["device"] = to_json(c.device);
  j["intra_node"] = {{"fabric", to_string(c.intra_node.fabric)},
                     {"bandwidth_GBps", c.intra_node.bandwidth_GBps},
                     {"latency_us", c.intra_node.latency_us}};
  j["inter_node"] = {{"nics_per_node", c.inter_node.nics_per_node},
                     {"nic_bandwidth_GBps", c.inter_node.nic_bandwidth_GBps},
                     {"efficiency", c.inter_node.efficiency},
                     {"latency_us", c.inter_node.latency_us}};
  j["host"] = {{"memory_GiB", c.host.memory_GiB},
               {"link_bandwidth_GBps", c.host.link_bandwidth_GBps}};
  j["price_per_node_hour_usd"] = c.price_per_node_hour_usd;
  j["sources"] = sources_json(c.sources);
  if (c.calibration) j["calibration"] = calibration_json(*c.calibration);
  return j;
}

ClusterSpec cluster_from_json(JsonObjectReader r,
                              HardwareProfile (*resolve_device)(const std::string& name)) {
  r.expect_schema_version();
  ClusterSpec c;
  c.name = r.get_string("name");
  c.description = r.get_string("description");
  c.nodes = r.get_int("nodes", 1, 1 << 20);
  c.devices_per_node = r.get_int("devices_per_node", 1, 1 << 16);
  const Json& device = r.get_raw("device");
  if (device.is_string()) {
    if (resolve_device == nullptr) r.fail("device", "expected a device profile object");
    c.device = resolve_device(device.get<std::string>());
  } else {
    c.device = hardware_from_json(JsonObjectReader(device, r.path() + ".device"));
  }
  {
    JsonObjectReader intra = r.get_object("intra_node");
    c.intra_node.fabric =
        parse_fabric(intra.get_enum("fabric", {"nvswitch", "pcie", "shared_memory"}));
    c.intra_node.bandwidth_GBps = intra.get_double("bandwidth_GBps", 1e-6, 1e7);
    c.intra_node.latency_us = intra.get_double("latency_us", 0, 1e7);
    intra.finish();
  }
  {
    JsonObjectReader inter = r.get_object("inter_node");
    c.inter_node.nics_per_node = inter.get_int("nics_per_node", 1, 1 << 12);
    c.inter_node.nic_bandwidth_GBps = inter.get_double("nic_bandwidth_GBps", 1e-6, 1e7);
    c.inter_node.efficiency = inter.get_double("efficiency", 1e-3, 1);
    c.inter_node.latency_us = inter.get_double("latency_us", 0, 1e7);
    inter.finish();
  }
  {
    JsonObjectReader host = r.get_object("host");
    c.host.memory_GiB = host.get_double("memory_GiB", 1e-3, 1e9);
    c.host.link_bandwidth_GBps = host.get_double("link_bandwidth_GBps", 1e-6, 1e7);
    host.finish();
  }
  c.price_per_node_hour_usd = r.get_double("price_per_node_hour_usd", 0, 1e9);
  c.sources = read_sources(r);
  if (r.has("calibration")) c.calibration = read_calibration(r.get_object("calibration"));
  r.finish();
  return c;
}

}  // namespace moetune
