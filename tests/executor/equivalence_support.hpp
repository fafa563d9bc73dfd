// Parallel equivalence, shared by the MPI test (ranks are processes) and the in-process test
// (ranks are threads): the tiny Mixtral trained 5 steps with every layout of a world size —
// tp in {1, 2}, ep, hs and rep, every distinct mesh order, the distributed optimizer wherever
// there are replicas, full recompute, and the all-gather token dispatcher wherever ep > 1 —
// gives the single-rank losses and weights, and holds exactly the model state the simulator
// predicts. train_rank runs one rank and records what it saw (no Catch assertions: threads
// must not assert); check_rank compares it, on the test's own thread.
#pragma once

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/presets.hpp"
#include "executor/trainer.hpp"
#include "simulator/simulator.hpp"

namespace moetune::test {

using namespace moetune::executor;

inline Plan tiny_plan(std::int64_t devices, std::int64_t micro_batch) {
  Plan plan;
  plan.model = load_model("tiny");
  plan.cluster = load_cluster("cpu-local", 1, devices);
  plan.train.seq_len = 16;
  plan.train.global_batch = 8;
  plan.train.precision = Precision::Fp32;
  plan.train.moe.aux_loss_coef = 0.02;
  plan.train.moe.z_loss_coef = 0.001;
  plan.train.optimizer.lr = 3e-3;
  plan.train.optimizer.min_lr = 3e-4;
  plan.train.optimizer.warmup_steps = 2;
  plan.train.optimizer.decay_steps = 5;
  plan.layout.micro_batch = micro_batch;
  return plan;
}

// What one rank saw in a 5-step run.
struct RankRun {
  std::vector<double> losses, aux;
  std::map<std::string, std::vector<float>> weights;  // this rank's part of each tensor
  std::unique_ptr<ParameterLayout> layout;
  Trainer::StateBytes held;
  MemoryBreakdown predicted;
  double activations = 0;
};

inline RankRun train_rank(const Plan& plan, ProcessGroups* groups, Backend* backend = nullptr) {
  TrainOptions options;
  options.steps = 5;
  Trainer trainer(plan, options, groups, backend);
  RankRun run;
  run.held = trainer.state_bytes();
  run.predicted =
      simulator::Simulator(plan.model, plan.cluster, plan.train).memory(plan.layout, nullptr);
  trainer.run([&](const StepRecord& r) {
    run.losses.push_back(r.loss);
    run.aux.push_back(r.aux_loss);
    if (r.memory) run.activations = r.memory->activations_bytes;
  });
  run.layout = std::make_unique<ParameterLayout>(trainer.layout());
  const std::vector<float> params = trainer.whole_params();
  for (const ParamTensor& t : trainer.layout().tensors()) {
    run.weights[t.name].assign(params.begin() + t.offset, params.begin() + t.offset + t.numel);
  }
  return run;
}

// Every distinct mesh order of the axes with degree > 1 (tp and pp are 1 here).
inline std::vector<MeshOrder> orders_of(const Layout& l) {
  std::vector<Axis> moving;
  for (Axis a : {Axis::Ep, Axis::Hs, Axis::Rep}) {
    if (l.degree(a) > 1) moving.push_back(a);
  }
  std::vector<MeshOrder> out;
  do {
    std::string text = "tp";
    for (Axis a : moving)
      text += "," + to_string(a);
    out.push_back(parse_order(text));
  } while (std::next_permutation(moving.begin(), moving.end()));
  return out;
}

// The plans of world size w to compare, each with the micro-batch of its reference: every rank
// reads micro-batches of 4 / dp sequences, 8 sequences a step.
inline std::vector<Plan> equivalence_plans(std::int64_t w) {
  const std::int64_t experts = load_model("tiny").num_local_experts;
  std::vector<Plan> plans;
  for (std::int64_t tp = 1; tp <= 2; ++tp) {
    for (std::int64_t ep = 1; ep * tp <= w; ep *= 2) {
      for (std::int64_t hs = 1; tp * ep * hs <= w; hs *= 2) {
        if (experts % ep != 0 || w % (tp * ep * hs) != 0) continue;
        Plan plan = tiny_plan(w, 4 / (w / tp));
        plan.layout.tp = tp;
        plan.layout.ep = ep;
        plan.layout.hs = hs;
        plan.layout.rep = w / (tp * ep * hs);
        // Plain replicas, and the distributed optimizer wherever there are replicas; in the
        // first order, full activation recompute (its forward again, with its collectives, in
        // the backward) and, with ep > 1, the all-gather dispatcher.
        const std::size_t first = plans.size();
        for (const MeshOrder& order : orders_of(plan.layout)) {
          Plan p = plan;
          p.layout.order = order;
          plans.push_back(p);
          if (p.layout.dense_replicas() > 1) {
            p.layout.distributed_optimizer = true;
            plans.push_back(p);
          }
        }
        Plan recomputed = plans[first];
        recomputed.layout.recompute = Recompute::Full;
        plans.push_back(recomputed);
        if (ep > 1) {
          Plan gathered = plans[first];
          gathered.train.moe.dispatcher = Dispatcher::AllGather;
          plans.push_back(gathered);
        }
      }
    }
  }
  return plans;
}

inline std::string describe_plan(const Plan& plan) {
  return describe(plan.layout) + (plan.layout.distributed_optimizer ? " dopt" : "") +
         (plan.layout.recompute == Recompute::Full ? " recompute" : "") +
         (plan.train.moe.dispatcher == Dispatcher::AllGather ? " allgather" : " alltoall");
}

// The single-rank runs with each micro-batch size, trained once each.
class References {
 public:
  const RankRun& get(std::int64_t micro_batch) {
    auto it = runs_.find(micro_batch);
    if (it == runs_.end()) {
      it = runs_.emplace(micro_batch, train_rank(tiny_plan(1, micro_batch), nullptr)).first;
    }
    return it->second;
  }

 private:
  std::map<std::int64_t, RankRun> runs_;
};

inline void check_rank(const Plan& plan, const RankRun& run, const RankRun& reference) {
  INFO(describe_plan(plan));
  // The executor's model state on this rank is what the simulator's memory model predicts for
  // it, byte for byte: both count parameters through the same layout rules, and with hs > 1 the
  // same padded shards and the same two gather slots and two gradient slots.
  CHECK(run.held.parameters == run.predicted.parameters);
  CHECK(run.held.gradients == run.predicted.gradients);
  CHECK(run.held.optimizer == run.predicted.optimizer);
  CHECK(run.held.gathered_parameters == run.predicted.gathered_parameters);
  if (plan.layout.ep == 1) {
    // Without expert parallelism every rank's experts see exactly top-k copies of its tokens:
    // its activations, too, are the bytes the simulator predicts, with tp's sequence and head
    // splits (hs and rep do not change them). With ep > 1 a rank holds what it received.
    CHECK(run.activations == run.predicted.activations);
  }
  // Same tokens, same model; only the fp32 summation order differs (gradients summed over
  // ranks): 1e-5 relative on the losses. Weights within 1e-4 absolute (they are 0.02 to 1
  // here): an AdamW step moves a weight by up to lr = 3e-3, and for gradients near Adam's eps
  // the summation order can tilt m / sqrt(v) by a few percent.
  REQUIRE(run.losses.size() == reference.losses.size());
  for (std::size_t s = 0; s < reference.losses.size(); ++s) {
    CHECK(std::abs(run.losses[s] - reference.losses[s]) <= 1e-5 * reference.losses[s]);
    CHECK(std::abs(run.aux[s] - reference.aux[s]) <= 1e-5 * reference.aux[s]);
  }
  for (const ParamTensor& t : run.layout->tensors()) {
    // The reference holds whole tensors: compare with this rank's block of each.
    const std::vector<float>& values = run.weights.at(t.name);
    std::vector<float> ref(values.size());
    run.layout->take_block(t, reference.weights.at(t.name).data(), ref.data());
    double diff = 0;
    for (std::size_t i = 0; i < values.size(); ++i)
      diff = std::max(diff, std::abs(static_cast<double>(values[i]) - ref[i]));
    INFO(t.name);
    CHECK(diff <= 1e-4);
  }
}

// How many plans of each kind equivalence_plans(w) gives, for the tests' own count checks.
// W = 2: tp1 with (ep,hs,rep) in {1,1,2}, {1,2,1}, {2,1,1}, and tp2 alone: 4 layouts. W = 4: 9
// with tp1 (every order), and 3 with tp2 ((ep,hs,rep) over the other 2 ranks). Those with
// ep x rep > 1 again with the distributed optimizer: 2 at W = 2; 8 + 2 at W = 4. One recompute
// per set of degrees (4 and 9), and one all-gather run per set of degrees with ep > 1 (1 and 4).
inline std::size_t expected_plans(std::int64_t w) {
  return w == 2 ? 4 + 2 + 4 + 1 : 12 + 10 + 9 + 4;
}

}  // namespace moetune::test
