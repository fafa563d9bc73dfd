// Simulator: ties the memory and time models into a Prediction.
#include "simulator/simulator.hpp"

#include <atomic>
#include <cstdio>

#include "core/units.hpp"

namespace moetune::simulator {

namespace {

// Host memory a training job may take for offloaded state; the rest is left to the OS, the data
// loader and pinned staging buffers.
constexpr double kHostUsableFraction = 0.9;

std::string gib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f GiB", bytes / kGiB);
  return buf;
}

}  // namespace

Simulator::Simulator(const ModelSpec& model, const ClusterSpec& cluster, const TrainSpec& train)
    : model_(model), cluster_(cluster), train_(train), collectives_(cluster) {
  static std::atomic<std::uint64_t> next_id{1};
  id_ = next_id.fetch_add(1, std::memory_order_relaxed);
  for (std::int64_t l = 0; l < model_.num_hidden_layers; ++l) {
    layer_params_.push_back(layer_params(model_, l));
  }
  model_flops_per_token_ =
      flops_per_token(model_, train_.seq_len, AttentionFlops::Causal).training();
}

Prediction Simulator::predict(const Layout& layout) const {
  return predict(layout, Mesh(layout, cluster_.devices_per_node));
}

Prediction Simulator::predict(const Layout& layout, const Mesh& mesh) const {
  return predict(layout, mesh, true);
}

Prediction Simulator::predict(const Layout& layout, const Mesh& mesh, bool with_reason) const {
  Prediction p;
  p.memory = memory(layout, &p.host_memory_bytes_per_node);
  p.peak_memory_bytes = p.memory.total();
  p.device_memory_bytes = cluster_.device.memory_bytes();
  const double host_limit = cluster_.host.memory_GiB * kGiB * kHostUsableFraction;
  if (p.peak_memory_bytes > p.device_memory_bytes) {
    p.fits = false;
    const MemoryBreakdown& m = p.memory;
    if (with_reason)
      p.reason = "needs " + gib(p.peak_memory_bytes) + " of " + gib(p.device_memory_bytes) +
                 " per device (model state " + gib(m.parameters + m.gradients + m.optimizer) +
                 ", activations " + gib(m.activations) + ")";
  } else if (p.host_memory_bytes_per_node > host_limit) {
    p.fits = false;
    if (with_reason)
      p.reason = "offloaded state needs " + gib(p.host_memory_bytes_per_node) +
                 " of host memory per node, " + gib(host_limit) + " usable";
  } else {
    p.fits = true;
  }
  p.time = time(layout, mesh);
  p.step_time_s = p.time.step;
  const double tokens = static_cast<double>(train_.tokens_per_step());
  const double devices = static_cast<double>(cluster_.world_size());
  p.tokens_per_s = tokens / p.step_time_s;
  p.tokens_per_s_per_device = p.tokens_per_s / devices;
  p.tflops_per_device = model_flops_per_token_ * p.tokens_per_s_per_device / 1e12;
  p.mfu = p.tflops_per_device * 1e12 / cluster_.device.peak_flops(train_.precision);
  p.cost_per_step_usd = static_cast<double>(cluster_.nodes) * cluster_.price_per_node_hour_usd *
                        p.step_time_s / 3600.0;
  p.cost_per_billion_tokens_usd = p.cost_per_step_usd / tokens * 1e9;
  return p;
}

Prediction simulate(const Plan& plan) {
  return Simulator(plan.model, plan.cluster, plan.train).predict(plan.layout);
}

}  // namespace moetune::simulator
