// HardwareProfile (one device kind) and ClusterSpec (nodes of such devices, their fabrics and
// price). Every figure carries its public source in `sources`, keyed by the field's path.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/json_reader.hpp"

namespace moetune {

enum class DeviceKind { Gpu, Cpu };
enum class Precision { Fp32, Bf16, Fp8 };

struct HardwareProfile {
  std::string name;
  std::string description;
  DeviceKind kind = DeviceKind::Gpu;
  double peak_tflops_fp32 = 0;  // dense, non-tensor
  double peak_tflops_tf32 = 0;
  double peak_tflops_bf16 = 0;
  double peak_tflops_fp8 = 0;  // 0: no fp8 tensor cores
  double memory_GiB = 0;
  double memory_bandwidth_GBps = 0;
  double gemm_efficiency = 0;          // achievable fraction of peak for large GEMMs
  double attention_efficiency = 0;     // fraction of peak for fused attention
  double memory_bound_efficiency = 0;  // achievable fraction of memory bandwidth
  // Fraction of memory bandwidth the optimizer update reaches. 0 (the default, and what an
  // absent JSON key reads as): that of every memory-bound kernel, as a fused multi-tensor AdamW
  // on a GPU. The CPU backend's AdamW computes in double with a square root and divisions per
  // element, which on one core is slower than its memory traffic.
  double optimizer_efficiency = 0;
  // The optimizer's efficiency as the time model uses it.
  double effective_optimizer_efficiency() const {
    return optimizer_efficiency > 0 ? optimizer_efficiency : memory_bound_efficiency;
  }
  // Fixed cost of every kernel (launch, ramp-up and tail, the host's per-op work when the device
  // waits on it): what makes many small ops slower than their FLOPs and bytes say.
  double kernel_overhead_us = 0;
  // Slowdown of a device's compute, memory traffic and per-kernel cost for each other busy device
  // on its node, as a fraction of its speed alone: with n busy devices every rate divides by
  // 1 + node_contention * (n - 1). CPU cores of one socket share memory bandwidth and caches (and,
  // on a VM, physical cores with other guests and processes); GPUs have their own memory and SMs.
  // Optional in JSON; default 0 (devices independent), as for every GPU preset.
  double node_contention = 0;
  double runtime_reserved_GiB = 0;    // context, library workspaces, communicator buffers
  double fragmentation_fraction = 0;  // allocator slack, fraction of dynamic memory
  bool flash_attention = true;        // attention never stores the s x s scores
  std::map<std::string, std::string> sources;

  bool operator==(const HardwareProfile&) const = default;

  double memory_bytes() const;
  // Peak FLOP/s for GEMMs at `precision` (fp8 falls back to bf16 where the device has none).
  double peak_flops(Precision precision) const;
};

enum class Fabric { NvSwitch, Pcie, SharedMemory };

struct IntraNode {
  Fabric fabric = Fabric::NvSwitch;
  double bandwidth_GBps = 0;  // achievable bus bandwidth per device, one direction
  double latency_us = 0;
  bool operator==(const IntraNode&) const = default;
};

struct InterNode {
  std::int64_t nics_per_node = 0;
  double nic_bandwidth_GBps = 0;  // per NIC, one direction, line rate
  double efficiency = 0;          // achievable fraction of line rate
  double latency_us = 0;
  bool operator==(const InterNode&) const = default;
  // Achievable bytes/s a node can send (and receive) over the network.
  double node_bandwidth_Bps() const {
    return nics_per_node * nic_bandwidth_GBps * efficiency * 1e9;
  }
};

struct HostSpec {
  double memory_GiB = 0;           // per node
  double link_bandwidth_GBps = 0;  // host <-> device per device, one direction
  bool operator==(const HostSpec&) const = default;
};

// What `moetune calibrate` fitted into a cluster profile: each parameter's value and standard
// error, the runs it was fitted to, the expert-popularity skew measured from their expert-load
// histograms, and when. Optional in the JSON; the fitted values themselves live in their fields.
struct CalibratedValue {
  std::string name;  // registry name, e.g. "device.gemm_efficiency"
  double value = 0;
  // One standard error, same unit as value; absent when the runs left no degrees of freedom.
  std::optional<double> stderr_value;
  bool operator==(const CalibratedValue&) const = default;
};

struct CalibrationRecord {
  std::vector<CalibratedValue> parameters;
  std::vector<std::string> runs;      // run.jsonl files used, as named to calibrate
  std::optional<double> expert_skew;  // coefficient of variation of expert popularity
  std::string date;                   // ISO 8601, UTC
  double step_time_error_before = 0;  // median |predicted / measured - 1| over the runs
  double step_time_error_after = 0;
  bool operator==(const CalibrationRecord&) const = default;
};

struct ClusterSpec {
  std::string name;
  std::string description;
  std::int64_t nodes = 1;
  std::int64_t devices_per_node = 1;
  HardwareProfile device;
  IntraNode intra_node;
  InterNode inter_node;
  HostSpec host;
  double price_per_node_hour_usd = 0;
  std::map<std::string, std::string> sources;
  std::optional<CalibrationRecord> calibration;  // set by `moetune calibrate`

  bool operator==(const ClusterSpec&) const = default;

  std::int64_t world_size() const { return nodes * devices_per_node; }
};

std::string to_string(DeviceKind kind);
std::string to_string(Precision precision);
Precision parse_precision(const std::string& text);
std::string to_string(Fabric fabric);

Json to_json(const HardwareProfile& profile);
HardwareProfile hardware_from_json(JsonObjectReader reader);

// A cluster's `device` is either a whole profile (as plan.json writes it) or the name of a device
// preset, which `resolve_device` turns into a profile.
Json to_json(const ClusterSpec& cluster);
ClusterSpec cluster_from_json(JsonObjectReader reader,
                              HardwareProfile (*resolve_device)(const std::string& name));

}  // namespace moetune
