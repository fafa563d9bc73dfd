// The memory model against hand-computed cases on the `tiny` model (V 512, h 64, 2 layers, 4 heads
// and 2 KV heads of 16, 4 experts of ffn 96, top-2).
//
// tiny's parameters, as the simulator splits them (see stage_params):
//   per layer: attention q, o 64*64*2 + k, v 64*32*2 = 12,288 (split by tp)
//              norms 2*64 = 128 and router 64*4 = 256 (whole on every tp rank)
//              experts 4 * 3 * 64 * 96 = 73,728
//   embedding 512*64 = 32,768 and LM head 32,768 (split by tp); final norm 64 (whole)
//   tp_split = 2*12,288 + 2*32,768 = 90,112; tp_replicated = 2*384 + 64 = 832;
//   experts = 2*73,728 = 147,456; P = 90,112 + 832 + 147,456 = 238,400.
//
// Every byte count below is a sum of products of small integers, far below 2^53, so the doubles
// the model computes are exact and are compared with ==. Only the fragmentation allowance (a
// fraction such as 0.05, not exact in binary) is compared with a relative tolerance.
#include <catch2/catch.hpp>

#include <cmath>

#include "core/constraints.hpp"
#include "core/presets.hpp"
#include "core/units.hpp"
#include "simulator/simulator.hpp"

using namespace moetune;
using simulator::Simulator;

namespace {

constexpr double kP = 238'400;  // all parameters of tiny

// tiny on `devices` CPU ranks of one node, fp32, seq 16, global batch 8.
Simulator cpu(std::int64_t devices, ModelSpec model = load_model("tiny")) {
  TrainSpec t;
  t.seq_len = 16;
  t.global_batch = 8;
  t.precision = Precision::Fp32;
  return Simulator(model, load_cluster("cpu-local", 1, devices), t);
}

// tiny on `devices` A100s of one p4d node, bf16, seq 16, global batch 8.
Simulator gpu(std::int64_t devices) {
  TrainSpec t;
  t.seq_len = 16;
  t.global_batch = 8;
  t.precision = Precision::Bf16;
  return Simulator(load_model("tiny"), load_cluster("p4d.24xlarge", 1, devices), t);
}

Layout layout(std::int64_t tp, std::int64_t ep, std::int64_t hs, std::int64_t pp = 1) {
  Layout l;
  l.tp = tp;
  l.ep = ep;
  l.hs = hs;
  l.pp = pp;
  return l;
}

void require_valid(const Simulator& sim, const Layout& l) {
  const auto r = check_layout(sim.model(), sim.cluster(), sim.train(), l);
  INFO((r ? explain(*r, sim.model(), sim.cluster(), sim.train(), l) : std::string("valid")));
  REQUIRE_FALSE(r.has_value());
}

}  // namespace

TEST_CASE("stage parameters of tiny", "[simulator][memory]") {
  const Simulator sim = cpu(1);
  const simulator::StageParams sp = sim.stage_params(layout(1, 1, 1), 0);
  CHECK(sp.tp_split == 90'112);
  CHECK(sp.tp_replicated == 832);
  CHECK(sp.experts == 147'456);
  CHECK(sp.tp_split + sp.tp_replicated + sp.experts == kP);
  CHECK(sp.moe_layers == 2);
  CHECK(sp.dense_layers == 0);
  CHECK(sp.first);
  CHECK(sp.last);
  // Largest all-gather unit: a layer, 12,288 + 384 + 73,728 = 86,400 > the 32,768 embedding.
  CHECK(sp.largest_unit == 86'400);
  CHECK(static_cast<double>(param_counts(sim.model()).total) == kP);
}

TEST_CASE("(a) no parallelism: 16 bytes per parameter plus the bf16 working copy",
          "[simulator][memory]") {
  SECTION("CPU, fp32: the master is the working copy") {
    const Simulator sim = cpu(1);
    const MemoryBreakdown m = sim.memory(layout(1, 1, 1), nullptr);
    CHECK(m.parameters == 4 * kP);  // 953,600
    CHECK(m.gradients == 4 * kP);
    CHECK(m.optimizer == 8 * kP);
    CHECK(m.gathered_parameters == 0);
  }
  SECTION("GPU, bf16: fp32 master plus a resident bf16 copy") {
    const Simulator sim = gpu(1);
    const MemoryBreakdown m = sim.memory(layout(1, 1, 1), nullptr);
    CHECK(m.parameters == 4 * kP + 2 * kP);  // 1,430,400
    CHECK(m.gradients == 4 * kP);
    CHECK(m.optimizer == 8 * kP);
    CHECK(m.gathered_parameters == 0);
  }
}

TEST_CASE("(b) hs=2 shards model state and gathers one layer ahead", "[simulator][memory]") {
  // Shard = P / 2 = 119,200; largest unit 86,400 (a whole layer at tp = ep = 1).
  SECTION("fp32") {
    const Simulator sim = cpu(2);
    const Layout l = layout(1, 1, 2);
    require_valid(sim, l);
    const MemoryBreakdown m = sim.memory(l, nullptr);
    CHECK(m.parameters == 4 * kP / 2);  // 476,800
    CHECK(m.optimizer == 8 * kP / 2);   // 953,600
    // Layer in use + layer prefetched: 2 * 4 bytes * 86,400 = 691,200.
    CHECK(m.gathered_parameters == 2 * 4 * 86'400.0);
    // Sharded fp32 accumulators + the unsharded gradients of two layers in flight.
    CHECK(m.gradients == 4 * kP / 2 + 2 * 4 * 86'400.0);  // 1,168,000
  }
  SECTION("bf16: no resident working copy, gathered layers in bf16") {
    const Simulator sim = gpu(2);
    const MemoryBreakdown m = sim.memory(layout(1, 1, 2), nullptr);
    CHECK(m.parameters == 4 * kP / 2);
    CHECK(m.gathered_parameters == 2 * 2 * 86'400.0);  // 345,600
  }
}

TEST_CASE("(c) ep=2 halves the expert parameters only", "[simulator][memory]") {
  const Simulator sim = cpu(2);
  const Layout l = layout(1, 2, 1);
  require_valid(sim, l);
  // local = 90,112 + 832 + 147,456 / 2 = 164,672.
  const MemoryBreakdown m = sim.memory(l, nullptr);
  CHECK(m.parameters == 4 * 164'672.0);
  CHECK(m.gradients == 4 * 164'672.0);
  CHECK(m.optimizer == 8 * 164'672.0);
}

TEST_CASE("(d) tp=2 halves tp_split, keeps tp_replicated whole", "[simulator][memory]") {
  const Simulator sim = cpu(2);
  const Layout l = layout(2, 1, 1);
  require_valid(sim, l);
  // local = 90,112 / 2 + 832 + 147,456 / 2 = 45,056 + 832 + 73,728 = 119,616.
  const MemoryBreakdown m = sim.memory(l, nullptr);
  CHECK(m.parameters == 4 * 119'616.0);
  CHECK(m.optimizer == 8 * 119'616.0);
  // Not P / 2 = 119,200: the 832 replicated weights are not split.
  CHECK(m.parameters != 4 * kP / 2);
}

TEST_CASE("(e) optimizer offload moves master and Adam state to the host", "[simulator][memory]") {
  SECTION("hs=8 on 8 A100s, bf16") {
    const Simulator sim = gpu(8);
    Layout l = layout(1, 1, 8);
    l.optimizer_offload = true;
    require_valid(sim, l);
    double host_per_node = -1;
    const MemoryBreakdown m = sim.memory(l, &host_per_node);
    // Shard = 238,400 / 8 = 29,800.
    CHECK(m.optimizer == 0);
    CHECK(m.parameters == 2 * 29'800.0);  // the bf16 working shard
    CHECK(m.gradients == 4 * 29'800.0 + 2 * 2 * 86'400.0);
    // Host: master 4 + Adam 8 + gradient staging 4 = 16 bytes per shard parameter, for each of
    // the 8 devices of the node: 8 * 16 * 29,800 = 3,814,400.
    CHECK(host_per_node == 8 * 16 * 29'800.0);
    const Prediction p = sim.predict(l);
    CHECK(p.host_memory_bytes_per_node == 3'814'400.0);
  }
  SECTION("no sharding: the whole working copy stays on the device") {
    const Simulator sim = gpu(1);
    Layout l = layout(1, 1, 1);
    l.optimizer_offload = true;
    double host_per_node = -1;
    const MemoryBreakdown m = sim.memory(l, &host_per_node);
    CHECK(m.parameters == 2 * kP);
    CHECK(m.optimizer == 0);
    CHECK(host_per_node == 16 * kP);
  }
  SECTION("without offload nothing is on the host") {
    double host_per_node = -1;
    (void)gpu(8).memory(layout(1, 1, 8), &host_per_node);
    CHECK(host_per_node == 0);
  }
}

TEST_CASE("(g) layer activations of tiny: micro-batch 1, seq 16, tp 1, fp32, no flash attention",
          "[simulator][memory]") {
  // a = 4 bytes, T = 16 tokens, h = 64, q = 64, kv = 32, 4 heads, k = 2, E = 4, f = 96,
  // Tr = T * k * 1 (ep = 1: no imbalance) = 32. cpu-zen4 has flash_attention = false.
  const Simulator sim = cpu(1);
  REQUIRE_FALSE(sim.cluster().device.flash_attention);
  const Layout l = layout(1, 1, 1);
  CHECK(sim.expert_load_factor(l) == 1.0);
  const simulator::LayerActivations act = sim.layer_activations(l);
  // Layer input: a*T*h = 4*16*64 = 4,096.
  CHECK(act.input == 4'096);
  // RMSNorm: input 4,096 + fp32 1/rms 4*16 = 64 -> 4,160.
  // Attention: norm 4,160 + norm output 4,096 + q, k, v 4*16*(64 + 2*32) = 8,192
  //            + attention output 4*16*64 = 4,096 + softmax probabilities a*b*heads*s*s
  //            = 4*1*4*16*16 = 4,096 -> 24,640.
  CHECK(act.attention == 24'640);
  // MoE: norm 4,160 + norm output 4,096 + router probabilities 4*T*E = 4*16*4 = 256 (no z-loss:
  //      the logits are not kept) + top-k indices and weights 8*T*k = 8*16*2 = 256
  //      + the permuted row of each copy 8*T*k = 256 + rows per expert and offsets 8*(2E+1) = 72
  //      + Tr * (expert inputs a*h + w1/w3/SwiGLU outputs a*3*f) = 32 * (256 + 1,152) = 45,056
  //      + expert outputs in dispatch order a*T*k*h = 8,192 -> 62,344.
  CHECK(act.moe == 62'344);
  // Dense FFN (unused by tiny, computed anyway): norm 4,160 + 4,096 + a*T*3*ffn = 4*16*288
  // = 18,432 -> 26,688.
  CHECK(act.dense_ffn == 26'688);
  // Forward scratch of one layer: router logits 4*T*E = 256 + the row-to-slot map 8*T*k = 256.
  CHECK(act.forward_scratch == 512);
  // Backward of one MoE layer: residual-stream gradients 3*a*T*h + a*T*h = 16,384, plus the
  // larger of the attention half's a*T*2*(q + kv) = 12,288 and the MoE half's: router 2*4*T*E
  // = 512 + top-k weights 4*T*k = 128 + routed outputs and inputs a*2*T*k*h = 16,384 + w1/w3
  // outputs a*2*Tr*f = 24,576 -> 41,600; 16,384 + 41,600 = 57,984.
  CHECK(act.backward_moe == 57'984);
  // Dense: the FFN half a*2*T*ffn = 4*2*16*96 = 12,288, as large as the attention half.
  CHECK(act.backward_dense == 16'384 + 12'288);

  // The whole model on one rank, no recompute: 2 layers of (24,640 + 62,344) = 173,968, one
  // layer's scratch and backward gradients 512 + 57,984 = 58,496, on the last stage the final
  // norm's input and output 2*a*T*h = 8,192, its 1/rms 4*T = 64, fp32 logits 4*T*V = 4*16*512
  // = 32,768 and the loss's log-sum-exp and target logit per token 8*T = 128, and RoPE's tables
  // a*S*head_dim = 4*16*16 = 1,024.
  const MemoryBreakdown m = sim.memory(l, nullptr);
  CHECK(m.activations == 173'968 + 58'496 + 8'192 + 64 + 32'768 + 128 + 1'024);
  // All-to-all buffers of one MoE layer: a*h*(T*k + Tr) = 4*64*(32 + 32) = 16,384.
  CHECK(m.communication_buffers == 16'384);
  CHECK(m.workspace == 0.25 * kGiB);
  // 0.05 is not exact in binary: allow a few ulps for the order of the sum.
  CHECK(m.fragmentation == Approx(0.05 * (m.activations + m.communication_buffers)).epsilon(1e-12));
  CHECK(m.total() == m.parameters + m.gradients + m.optimizer + m.gathered_parameters +
                         m.activations + m.communication_buffers + m.workspace + m.fragmentation);
}

TEST_CASE("(g') flash attention keeps one fp32 log-sum-exp per query row", "[simulator][memory]") {
  // Same as above on an A100 (flash attention) in bf16: a = 2.
  // Attention: norm 2*16*64 + 4*16 = 2,112; + 2,048 + 2*16*128 = 4,096 + 2,048
  //            + 4*b*heads*s = 4*1*4*16 = 256 -> 10,560.
  const Simulator sim = gpu(1);
  REQUIRE(sim.cluster().device.flash_attention);
  CHECK(sim.layer_activations(layout(1, 1, 1)).attention == 10'560);
}

TEST_CASE("(f) recompute and activation offload lower device activations", "[simulator][memory]") {
  // tiny stretched to 8 layers so that offloading has layers to move.
  ModelSpec deep = load_model("tiny");
  deep.num_hidden_layers = 8;
  const Simulator sim = cpu(1, deep);
  const double per_layer = 24'640 + 62'344;  // 86,984, as in (g)
  const double working = 512 + 57'984;       // one layer's scratch and backward gradients
  // The final norm's input, output and 1/rms; logits; the loss's log-sum-exp and target logit.
  const double last_stage = 8'192 + 64 + 32'768 + 128;
  const double rope = 1'024;
  Layout none = layout(1, 1, 1);
  const MemoryBreakdown kept = sim.memory(none, nullptr);
  CHECK(kept.activations == 8 * per_layer + working + last_stage + rope);

  SECTION("full recompute keeps only each layer's input plus one layer's working set") {
    Layout full = none;
    full.recompute = Recompute::Full;
    const MemoryBreakdown m = sim.memory(full, nullptr);
    // Per layer: its input (4,096 bytes) and its 4 experts' token counts (8 bytes each); the
    // layer being recomputed reads its saved input in place.
    CHECK(m.activations == 8 * (4'096 + 32) + per_layer - 4'096 + working + last_stage + rope);
    CHECK(m.activations < kept.activations);
  }
  SECTION("activation offload keeps two layers on the device, the rest on the host") {
    Layout off = none;
    off.activation_offload = true;
    double host = -1;
    const MemoryBreakdown m = sim.memory(off, &host);
    CHECK(m.activations == 2 * per_layer + working + last_stage + rope);
    CHECK(m.activations < kept.activations);
    CHECK(host == 6 * per_layer);  // one device per node here
  }
}

TEST_CASE("(h) pp=2: stage 0 holds 2 micro-batches in flight", "[simulator][memory]") {
  const Simulator sim = cpu(2);
  const Layout l = layout(1, 1, 1, 2);
  require_valid(sim, l);
  REQUIRE(grad_accum_steps(sim.train(), l) == 8);  // 8 / (1 x dp 1) >= 2
  // Stage 0: layer 0 + embedding = 12,288 + 384 + 73,728 + 32,768 = 119,168 parameters;
  // stage 1: layer 1 + LM head + final norm = 119,232.
  const simulator::StageParams s0 = sim.stage_params(l, 0);
  const simulator::StageParams s1 = sim.stage_params(l, 1);
  CHECK(s0.tp_split + s0.tp_replicated + s0.experts == 119'168);
  CHECK(s1.tp_split + s1.tp_replicated + s1.experts == 119'232);
  CHECK((s0.first && !s0.last && !s1.first && s1.last));
  // 1F1B: stage 0 keeps pp - 0 = 2 micro-batches of its one layer: 2 * 86,984 = 173,968 bytes;
  // stage 1 keeps 1 * 86,984 + 40,960 (final norm and logits) = 127,944. Both add one layer's
  // scratch and backward gradients (58,496) and RoPE's tables (1,024). Stage 0 is the worst rank:
  // its activations outweigh stage 1's 64 extra parameters (1,024 bytes of state).
  const MemoryBreakdown m = sim.memory(l, nullptr);
  CHECK(m.activations == 2 * (24'640 + 62'344) + 512 + 57'984 + 1'024);
  CHECK(m.parameters == 4 * 119'168.0);

  SECTION("never more micro-batches than the step has") {
    TrainSpec one = sim.train();
    one.global_batch = 1;  // a single micro-batch (the planner rejects this; the model caps it)
    const Simulator capped(sim.model(), sim.cluster(), one);
    CHECK(capped.memory(l, nullptr).activations < m.activations);
  }
}

TEST_CASE("predict: fits, reasons and derived figures", "[simulator][predict]") {
  SECTION("tiny fits one CPU rank") {
    const Simulator sim = cpu(1);
    const Prediction p = sim.predict(layout(1, 1, 1));
    CHECK(p.fits);
    CHECK(p.reason.empty());
    CHECK(p.peak_memory_bytes == p.memory.total());
    CHECK(p.device_memory_bytes == 12 * kGiB);
    CHECK(p.step_time_s > 0);
    // tokens per step 16 * 8 = 128.
    CHECK(p.tokens_per_s == Approx(128.0 / p.step_time_s).epsilon(1e-12));
    CHECK(p.tokens_per_s_per_device == Approx(p.tokens_per_s).epsilon(1e-12));
    // MFU = model FLOPs rate / peak fp32 rate of the CPU (0.1 TFLOPS).
    CHECK(p.mfu == Approx(p.tflops_per_device / 0.1).epsilon(1e-12));
    CHECK(p.cost_per_step_usd == 0);  // cpu-local has no price
  }
  SECTION("Mixtral 8x7B does not fit one A100 and says why") {
    TrainSpec t;
    t.seq_len = 2048;
    t.global_batch = 8;
    const Simulator sim(load_model("mixtral-8x7b"), load_cluster("p4d.24xlarge", 1, 1), t);
    const Prediction p = sim.predict(layout(1, 1, 1));
    CHECK_FALSE(p.fits);
    CHECK_THAT(p.reason,
               Catch::Contains("of 40.0 GiB per device") && Catch::Contains("model state"));
    CHECK(p.peak_memory_bytes > 16 * 46.7e9);  // 16 bytes per parameter alone
  }
}

TEST_CASE("expert load factor: skew raises the busiest rank, balanced routing does not") {
  // Mixtral 8x7B on 8 H100s, micro-batch 1 of 4,096 tokens: n = 8,192 copies per rank.
  auto sim_with = [](LoadBalancing lb, double skew, bool forced) {
    TrainSpec t;
    t.seq_len = 4096;
    t.global_batch = 8;
    t.moe.load_balancing = lb;
    t.moe.expert_skew = skew;
    t.moe.force_balanced = forced;
    return Simulator(load_model("mixtral-8x7b"), load_cluster("dgx-h100", 1, 8), t);
  };
  const Layout l = layout(1, 8, 1);
  const double z8 = simulator::expected_max_of_normals(8);
  // Tabulated expected maxima: 8 normals 1.4236, 2 normals 1/sqrt(pi); Blom is within 1% and 5%.
  CHECK(z8 == Approx(1.4236).epsilon(0.01));
  CHECK(simulator::expected_max_of_normals(2) == Approx(0.5642).epsilon(0.05));
  const double sampling = std::sqrt((1.0 - 1.0 / 8.0) / 8192.0);
  // One expert per rank: the rank share's spread is the expert skew itself.
  const double skewed = sim_with(LoadBalancing::AuxLoss, 0.2, false).expert_load_factor(l);
  CHECK(skewed == Approx(1.0 + z8 * std::sqrt(0.04 + sampling * sampling)).epsilon(1e-12));
  const double sinkhorn = sim_with(LoadBalancing::Sinkhorn, 0.2, false).expert_load_factor(l);
  const double forced = sim_with(LoadBalancing::AuxLoss, 0.2, true).expert_load_factor(l);
  CHECK(sinkhorn == Approx(1.0 + z8 * sampling).epsilon(1e-12));
  CHECK(forced == sinkhorn);
  CHECK(skewed > sinkhorn);
  // ep = 1 holds every expert: no imbalance between ranks.
  CHECK(sim_with(LoadBalancing::AuxLoss, 0.2, false).expert_load_factor(layout(1, 1, 8)) == 1.0);
  // Two experts per rank (ep 4) average out part of the skew: c^2 (E - m) / (m (E - 1)).
  const double z4 = simulator::expected_max_of_normals(4);
  const double s4 = (1.0 - 0.25) / 8192.0;
  CHECK(sim_with(LoadBalancing::AuxLoss, 0.2, false).expert_load_factor(layout(1, 4, 2)) ==
        Approx(1.0 + z4 * std::sqrt(0.04 * 6.0 / 14.0 + s4)).epsilon(1e-12));
}

TEST_CASE("(i) the distributed optimizer splits master and Adam state over the replicas",
          "[simulator][memory]") {
  // Each unit (the embedding, a layer's dense part, its experts, the final norm with the head) is
  // split into chunks over its replicas: dense units over ep x rep, expert units over rep.
  SECTION("rep = 4, fp32: Adam state / 4, the master (the working copy) stays whole") {
    const Simulator sim = cpu(4);
    Layout l = layout(1, 1, 1);
    l.rep = 4;
    l.distributed_optimizer = true;
    require_valid(sim, l);
    // Units: embedding 32,768; per layer dense 12,288 + 384 = 12,672 and experts 73,728; final
    // norm + head 32,832. Each divides by 4: owned = kP / 4 = 59,600.
    const MemoryBreakdown m = sim.memory(l, nullptr);
    CHECK(sim.stage_params(l, 0).owned == kP / 4);
    CHECK(m.parameters == 4 * kP);
    CHECK(m.gradients == 4 * kP);
    CHECK(m.optimizer == 8 * kP / 4);
  }
  SECTION("ep = 2, bf16: dense state over the 2 ep ranks, experts have no replica") {
    const Simulator sim = gpu(2);
    Layout l = layout(1, 2, 1);
    l.distributed_optimizer = true;
    require_valid(sim, l);
    // local = 164,672: dense 90,944 owned / 2 = 45,472, experts 73,728 whole.
    const double owned = 90'944 / 2 + 73'728;
    const MemoryBreakdown m = sim.memory(l, nullptr);
    CHECK(sim.stage_params(l, 0).owned == owned);
    CHECK(m.parameters == 4 * owned + 2 * 164'672.0);  // fp32 master of the chunks, bf16 copy
    CHECK(m.optimizer == 8 * owned);
    CHECK(m.gradients == 4 * 164'672.0);
  }
  SECTION("uneven units are padded to whole chunks") {
    const Simulator sim = cpu(3);
    Layout l = layout(1, 1, 1);
    l.rep = 3;
    l.distributed_optimizer = true;
    // ceil(32,768 / 3) + 2 * (ceil(12,672 / 3) + ceil(73,728 / 3)) + ceil(32,832 / 3)
    // = 10,923 + 2 * (4,224 + 24,576) + 10,944 = 79,467.
    CHECK(sim.stage_params(l, 0).owned == 79'467);
    CHECK(sim.memory(l, nullptr).optimizer == 8 * 79'467.0);
  }
}

TEST_CASE("(j) uneven pipeline stages: each stage counts its own layers", "[simulator][memory]") {
  // tiny with 5 layers on 2 stages: 3 + 2, the embedding on the first and the head on the last.
  ModelSpec five = load_model("tiny");
  five.num_hidden_layers = 5;
  const Simulator sim = cpu(2, five);
  Layout l = layout(1, 1, 1, 2);
  l.first_stage_layers = 3;
  l.last_stage_layers = 2;
  require_valid(sim, l);
  const simulator::StageParams first = sim.stage_params(l, 0);
  const simulator::StageParams last = sim.stage_params(l, 1);
  CHECK(first.moe_layers == 3);
  CHECK(last.moe_layers == 2);
  CHECK(first.experts == 3 * 73'728.0);
  CHECK(last.experts == 2 * 73'728.0);
  // Dense: 12,288 attention per layer, plus the embedding (first) or the head (last).
  CHECK(first.tp_split == 3 * 12'288.0 + 32'768);
  CHECK(last.tp_split == 2 * 12'288.0 + 32'768);
  // The first stage, with one layer more and 2 micro-batches in flight, is the worst.
  const MemoryBreakdown m = sim.memory(l, nullptr);
  CHECK(m.parameters == 4 * (first.tp_split + first.tp_replicated + first.experts));
}
