// Activation offloading in the step-time model. The host-link traffic it charges is recovered from
// a prediction as (offload + overlapped_comm) with activation offload on, minus the same without
// it: everything else in the step (compute, collectives, optimizer) is identical between the two.
// References that need no model of their own: every byte a micro-batch saves crosses the host link
// at most twice (down in forward, up in backward), and where the optimizer state lives does not
// change how many activation bytes move. Tolerance 1e-9 relative: the traffic is a difference of
// sums of seconds (about 1e2) that each carry rounding of a few ulps.
#include <catch2/catch.hpp>

#include "core/constraints.hpp"
#include "core/presets.hpp"
#include "simulator/simulator.hpp"

using namespace moetune;
using simulator::Simulator;

namespace {

// Mixtral 8x7B on 2 p4d nodes (16 A100s), seq 2048, batch 128.
Simulator mixtral_p4d() {
  TrainSpec t;
  t.seq_len = 2048;
  t.global_batch = 128;
  return Simulator(load_model("mixtral-8x7b"), load_cluster("p4d.24xlarge", 2, std::nullopt), t);
}

// Seconds of host-link traffic that turning on activation offload adds to `l`.
double activation_traffic_s(const Simulator& sim, Layout l) {
  l.activation_offload = false;
  const Prediction off = sim.predict(l);
  l.activation_offload = true;
  const Prediction on = sim.predict(l);
  return (on.time.offload + on.time.overlapped_comm) -
         (off.time.offload + off.time.overlapped_comm);
}

// Upper bound: 2 x (bytes one micro-batch saves on stage 0) x micro-batches / link bandwidth.
double traffic_bound_s(const Simulator& sim, const Layout& l) {
  const simulator::LayerActivations act = sim.layer_activations(l);
  const simulator::StageParams sp = sim.stage_params(l, 0);
  const double saved_per_micro_batch =
      static_cast<double>(sp.moe_layers) * (act.attention + act.moe) +
      static_cast<double>(sp.dense_layers) * (act.attention + act.dense_ffn);
  const double accum = static_cast<double>(grad_accum_steps(sim.train(), l));
  return 2.0 * saved_per_micro_batch * accum / (sim.cluster().host.link_bandwidth_GBps * 1e9);
}

Layout ep2_hs8() {
  Layout l;
  l.ep = 2;
  l.hs = 8;
  return l;
}

}  // namespace

TEST_CASE("activation offload traffic stays within its bound without pipelining",
          "[simulator][time][offload]") {
  const Simulator sim = mixtral_p4d();
  const Layout l = ep2_hs8();
  REQUIRE_FALSE(check_layout(sim.model(), sim.cluster(), sim.train(), l).has_value());
  const double traffic = activation_traffic_s(sim, l);
  CHECK(traffic > 0);  // 32 layers: 30 of them leave the device
  CHECK(traffic <= traffic_bound_s(sim, l) * (1 + 1e-9));
}

// Regression: the traffic was once taken from memory()'s host bytes per node, which also hold the
// offloaded optimizer state (16 bytes per sharded parameter), so with both offloads on the
// optimizer state was charged as activation traffic twice per micro-batch.
TEST_CASE("activation offload traffic does not depend on optimizer offload",
          "[simulator][time][offload]") {
  const Simulator sim = mixtral_p4d();
  Layout plain = ep2_hs8();
  Layout with_optimizer_offload = plain;
  with_optimizer_offload.optimizer_offload = true;
  CHECK(activation_traffic_s(sim, with_optimizer_offload) ==
        Approx(activation_traffic_s(sim, plain)).epsilon(1e-9));
}

// Regression: the traffic was once the peak host residency times the micro-batch count. With
// pp > 1, stage 0 holds pp micro-batches at its peak, so each one was counted pp times.
TEST_CASE("activation offload traffic stays within its bound with pp=4",
          "[simulator][time][offload]") {
  const Simulator sim = mixtral_p4d();
  Layout l;
  l.pp = 4;  // 8 layers per stage; stage 0 keeps 4 micro-batches in flight
  l.ep = 2;
  l.hs = 2;
  REQUIRE_FALSE(check_layout(sim.model(), sim.cluster(), sim.train(), l).has_value());
  CHECK(activation_traffic_s(sim, l) <= traffic_bound_s(sim, l) * (1 + 1e-9));
}
