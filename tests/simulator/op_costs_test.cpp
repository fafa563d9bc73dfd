// Per-op costs of the step-time model (Simulator::stage_costs): the fixed cost per kernel, and the
// roofline that makes a small GEMM wait on its weights. References need no model of their own:
// the kernels each op launches are counted by hand below, and a GEMM's time can never be less
// than its bytes over the achievable memory bandwidth.
#include <catch2/catch.hpp>

#include "core/constraints.hpp"
#include "core/presets.hpp"
#include "simulator/simulator.hpp"

using namespace moetune;
using simulator::Simulator;

namespace {

Simulator on(const std::string& model, double kernel_overhead_us, Precision precision,
             std::int64_t seq = 4096) {
  TrainSpec t;
  t.seq_len = seq;
  t.global_batch = 64;
  t.precision = precision;
  t.moe.force_balanced = true;
  ClusterSpec c = load_cluster("dgx-h100", 1, std::nullopt);
  c.device.kernel_overhead_us = kernel_overhead_us;
  return Simulator(load_model(model), c, t);
}

Layout ep(std::int64_t degree) {
  Layout l;
  l.ep = degree;
  l.rep = 8 / degree;
  return l;
}

}  // namespace

TEST_CASE("every kernel an op launches pays the profile's fixed cost") {
  // Mixtral 8x7B with ep 8: one local expert on each rank.
  const Layout l = ep(8);
  const Mesh mesh(l, 8);
  const auto base = on("mixtral-8x7b", 0, Precision::Bf16).stage_costs(l, mesh, 0).layer;
  const auto more = on("mixtral-8x7b", 10, Precision::Bf16).stage_costs(l, mesh, 0).layer;
  const double us = 1e-6;
  // Attention: QKV and output GEMMs, the attention core, five elementwise kernels.
  CHECK(more.attention - base.attention == Approx(8 * 10 * us).epsilon(1e-9));
  // Router: norm, gate GEMM and four softmax / top-k / statistics kernels.
  CHECK(more.router - base.router == Approx(6 * 10 * us).epsilon(1e-9));
  CHECK(more.permute - base.permute == Approx(4 * 10 * us).epsilon(1e-9));
  // Experts: two GEMMs per local expert and the SwiGLU.
  CHECK(more.experts - base.experts == Approx(3 * 10 * us).epsilon(1e-9));
  // Qwen3-30B-A3B with ep 8 holds 16 of its 128 experts: 33 kernels; fp8 adds a quantization
  // kernel in front of every GEMM.
  const auto q0 = on("qwen3-30b-a3b", 0, Precision::Fp8).stage_costs(l, mesh, 0).layer;
  const auto q1 = on("qwen3-30b-a3b", 10, Precision::Fp8).stage_costs(l, mesh, 0).layer;
  CHECK(q1.experts - q0.experts == Approx((16 * 4 + 1) * 10 * us).epsilon(1e-9));
}

TEST_CASE("a GEMM is never faster than reading its operands") {
  // Qwen3-30B-A3B at a short sequence: 256 tokens x top-8 over 16 local experts is 128 rows per
  // expert, far too few to amortise each expert's 2048 x 1536 and 768 x 2048 weights.
  const Simulator sim = on("qwen3-30b-a3b", 0, Precision::Bf16, 256);
  const Layout l = ep(8);
  const auto c = sim.stage_costs(l, Mesh(l, 8), 0).layer;
  const HardwareProfile& d = sim.cluster().device;
  const double mem_rate = d.memory_bandwidth_GBps * 1e9 * d.memory_bound_efficiency;
  const double weights = 16.0 * 2.0 * 3.0 * 2048.0 * 768.0;  // bf16 bytes of 16 local experts
  const double flops = 2.0 * 3.0 * 2048.0 * 768.0 * 256.0 * 8.0 * sim.expert_load_factor(l);
  const double compute = flops / (d.peak_flops(Precision::Bf16) * d.gemm_efficiency);
  REQUIRE(weights / mem_rate > compute);  // the case is memory bound
  CHECK(c.experts > weights / mem_rate);
}

TEST_CASE("a prediction's phases add up to its step time") {
  // The step is the micro-batches' schedule (compute plus the communication it exposes), the
  // gradient all-reduce, the pipeline bubble, the optimizer and offload traffic; the phases name
  // every part once, whatever overlaps what.
  TrainSpec t;
  t.seq_len = 4096;
  t.global_batch = 256;
  const Simulator sim(load_model("mixtral-8x7b"), load_cluster("p4d.24xlarge", 2, std::nullopt), t);
  auto layout = [](std::int64_t tp, std::int64_t pp, std::int64_t ep, std::int64_t hs, bool offload,
                   Recompute recompute) {
    Layout l;
    l.tp = tp;
    l.pp = pp;
    l.ep = ep;
    l.hs = hs;
    l.rep = 16 / (tp * pp * ep * hs);
    l.optimizer_offload = offload;
    l.recompute = recompute;
    l.order = parse_order("tp,ep,hs,pp,rep");
    return l;
  };
  for (Layout l :
       {layout(2, 2, 2, 2, true, Recompute::None), layout(1, 1, 8, 2, false, Recompute::Full),
        layout(2, 1, 2, 4, false, Recompute::None), layout(1, 2, 4, 1, false, Recompute::None)}) {
    l.distributed_optimizer = GENERATE(false, true);
    INFO(describe(l));
    const TimeBreakdown b = sim.predict(l).time;
    const double phases = b.attention + b.router + b.dispatch + b.experts + b.combine + b.lm_head +
                          b.recompute + b.all_gather + b.reduce_scatter + b.all_reduce +
                          b.pipeline + b.optimizer + b.offload;
    CHECK(phases == Approx(b.step).epsilon(1e-9));
  }
}

TEST_CASE("the distributed optimizer never costs more time than plain replicas") {
  // Reduce-scatter plus all-gather move what one all-reduce moves (the gather in the working
  // precision), the scatter hides in the last backward like the all-reduce did, the gather behind
  // the first forward, and the optimizer updates a 1 / replicas share.
  TrainSpec t;
  t.seq_len = 4096;
  t.global_batch = 512;
  for (const char* model : {"mixtral-8x7b", "qwen3-30b-a3b"}) {
    const Simulator sim(load_model(model), load_cluster("p5.48xlarge", 4, std::nullopt), t);
    for (std::int64_t ep : {1, 2, 8}) {
      for (std::int64_t hs : {1, 2}) {
        Layout l;
        l.ep = ep;
        l.hs = hs;
        l.rep = 32 / (ep * hs);
        l.micro_batch = 1;
        l.recompute = Recompute::Full;
        const Prediction plain = sim.predict(l);
        l.distributed_optimizer = true;
        const Prediction distributed = sim.predict(l);
        INFO(model << " " << describe(l));
        CHECK(distributed.step_time_s <= plain.step_time_s);
        CHECK(distributed.time.optimizer < plain.time.optimizer);
        CHECK(distributed.time.all_reduce == 0);
        CHECK(distributed.peak_memory_bytes < plain.peak_memory_bytes);
      }
    }
  }
}

TEST_CASE("each simulator uses its own collective costs, whatever address it lands at") {
  // Calibration builds simulator after simulator for profiles that differ in one figure; each
  // one lives where the previous one did. Per-thread memos must not hand one the other's costs.
  TrainSpec t;
  t.seq_len = 64;
  t.global_batch = 8;
  t.precision = Precision::Fp32;
  Layout l;
  l.hs = 2;
  l.micro_batch = 4;
  std::vector<double> comm;
  for (double bandwidth : {5.0, 0.05}) {
    ClusterSpec cluster = load_cluster("cpu-local", 1, 2);
    cluster.intra_node.bandwidth_GBps = bandwidth;
    const Simulator sim(load_model("tiny"), cluster, t);
    const TimeBreakdown b = sim.predict(l).time;
    comm.push_back(b.all_gather + b.reduce_scatter + b.overlapped_comm);
  }
  // A hundred times less bandwidth: the gathers and reduce-scatters take far longer.
  CHECK(comm[1] > 10 * comm[0]);
}
