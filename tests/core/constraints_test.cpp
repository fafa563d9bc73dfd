// Layout rules: for every RejectCode a layout that breaks that rule and no other (two pairs of
// rules cannot be separated; see their cases), so check_layout must name it whatever order it
// checks in; and the sentence explain() writes for it, which must say what would be valid.
#include <catch2/catch.hpp>

#include <functional>
#include <set>
#include <string>
#include <vector>

#include "core/constraints.hpp"
#include "core/presets.hpp"

using namespace moetune;

namespace {

struct Setup {
  ModelSpec model;
  ClusterSpec cluster;
  TrainSpec train;
  Layout layout;
};

// Mixtral 8x7B on `nodes` p4d.24xlarge (8 A100 each), bf16, seq 2048, batch 128, all hs.
Setup mixtral(std::int64_t nodes) {
  Setup s{load_model("mixtral-8x7b"), load_cluster("p4d.24xlarge", nodes, std::nullopt), {}, {}};
  s.train.seq_len = 2048;
  s.train.global_batch = 128;
  s.layout.hs = 8 * nodes;
  return s;
}

// tiny (4 heads, 2 KV heads, 4 experts, 2 layers, 256 positions) on cpu-local, fp32, seq 64.
Setup tiny(std::int64_t devices) {
  Setup s{load_model("tiny"), load_cluster("cpu-local", 1, devices), {}, {}};
  s.train.seq_len = 64;
  s.train.global_batch = 8;
  s.train.precision = Precision::Fp32;
  s.layout.hs = devices;
  return s;
}

struct Case {
  std::string name;
  RejectCode code;
  std::function<Setup()> make;
  std::vector<std::string> hints;  // substrings explain() must contain
};

const std::vector<Case>& cases() {
  static const std::vector<Case> all = {
      {"tp not innermost",
       RejectCode::TpNotInnermost,
       [] {
         Setup s = mixtral(1);
         s.layout.order = {Axis::Hs, Axis::Tp, Axis::Ep, Axis::Rep, Axis::Pp};
         return s;
       },
       {"must start with tp", "hs,tp,ep,rep,pp"}},
      {"degrees do not multiply to the world",
       RejectCode::WorldSize,
       [] {
         Setup s = mixtral(1);
         s.layout.ep = 2;
         s.layout.hs = 2;  // 1*1*2*2*1 = 4 of 8
         return s;
       },
       {"= 4 but the cluster has 8 devices", "1 nodes x 8"}},
      {"tp larger than a node",
       RejectCode::TpNode,
       [] {
         // 2 nodes of 12: tp = 8 divides Mixtral's heads (32), KV heads (8), FFN, vocabulary
         // and sequence, but not the 12 devices of a node. 8 x hs 3 = 24 ranks; batch 96.
         Setup s{load_model("mixtral-8x7b"), load_cluster("p4d.24xlarge", 2, 12), {}, {}};
         s.train.seq_len = 2048;
         s.train.global_batch = 96;
         s.layout.tp = 8;
         s.layout.hs = 3;
         return s;
       },
       {"tp=8 does not divide 12 devices per node", "try tp in {1, 2, 3, 4, 6, 12}"}},
      {"tp does not divide the heads",
       RejectCode::TpHeads,
       [] {
         // KV heads divide the heads, so this breaks the KV-head rule too; heads come first.
         Setup s = tiny(8);
         s.layout.tp = 8;
         s.layout.hs = 1;
         return s;
       },
       {"tp=8 does not divide 4 attention heads", "try tp in {1, 2, 4}"}},
      {"tp does not divide the KV heads",
       RejectCode::TpKvHeads,
       [] {
         Setup s = tiny(8);
         s.layout.tp = 4;
         s.layout.hs = 2;
         return s;
       },
       {"tp=4 does not divide 2 key/value heads", "try tp in {1, 2}"}},
      {"tp does not divide the expert FFN",
       RejectCode::TpFfn,
       [] {
         Setup s = tiny(2);
         s.model.moe_intermediate_size = 97;
         s.layout.tp = 2;
         s.layout.hs = 1;
         return s;
       },
       {"tp=2 does not divide the FFN width", "expert 97"}},
      {"tp does not divide the vocabulary",
       RejectCode::TpVocab,
       [] {
         Setup s = tiny(2);
         s.model.vocab_size = 511;
         s.layout.tp = 2;
         s.layout.hs = 1;
         return s;
       },
       {"vocabulary of 511"}},
      {"tp does not divide the sequence",
       RejectCode::TpSequence,
       [] {
         Setup s = tiny(2);
         s.train.seq_len = 63;
         s.layout.tp = 2;
         s.layout.hs = 1;
         return s;
       },
       {"tp=2 does not divide seq_len 63", "sequence parallel"}},
      {"pp does not divide the layers",
       RejectCode::PpLayers,
       [] {
         // 24 devices; 32 layers. With vpp = 1 the pp*vpp rule breaks too; pp comes first.
         Setup s = mixtral(3);
         s.layout.pp = 3;
         s.layout.hs = 8;
         return s;
       },
       {"pp=3 does not divide 32 layers", "try pp in {1, 2, 4, 8, 16, 32}",
        "--first-stage-layers 11 --last-stage-layers 10"}},
      {"uneven stages that do not add up",
       RejectCode::StageSplit,
       [] {
         // 32 layers over pp = 3 as 12 + 8 + 12 add up, but with vpp = 3 the middle stage's 8
         // layers are no whole number of virtual stages.
         Setup s = mixtral(3);
         s.layout.pp = 3;
         s.layout.hs = 8;
         s.layout.vpp = 3;
         s.layout.first_stage_layers = 12;
         s.layout.last_stage_layers = 12;
         return s;
       },
       {"uneven stages (first 12, last 12 layers) do not split 32 layers over pp=3",
        "multiple of vpp=3"}},
      {"vpp without pp",
       RejectCode::VppWithoutPp,
       [] {
         Setup s = tiny(2);
         s.layout.vpp = 2;
         return s;
       },
       {"vpp=2 needs pipeline parallelism"}},
      {"pp * vpp does not divide the layers",
       RejectCode::VppLayers,
       [] {
         Setup s = tiny(2);  // 2 layers
         s.layout.pp = 2;
         s.layout.vpp = 2;
         s.layout.hs = 1;
         return s;
       },
       {"pp*vpp = 4 does not divide 2 layers", "try vpp in {1}"}},
      {"ep does not divide the experts",
       RejectCode::EpExperts,
       [] {
         Setup s = mixtral(3);       // 24 devices = ep 3 x hs 8
         s.train.global_batch = 96;  // a multiple of dp 24: only the expert rule breaks
         s.layout.ep = 3;
         s.layout.hs = 8;
         return s;
       },
       {"ep=3 does not divide 8 experts; try ep in {1, 2, 4, 8}"}},
      {"batch does not split",
       RejectCode::BatchSplit,
       [] {
         Setup s = mixtral(1);
         s.train.global_batch = 12;  // dp 8 x micro-batch 1 does not divide 12
         return s;
       },
       {"global batch 12 is not a multiple of micro-batch 1 x data-parallel width 8"}},
      {"pipeline not filled",
       RejectCode::PipelineUnfilled,
       [] {
         Setup s = tiny(2);
         s.train.global_batch = 4;
         s.layout.pp = 2;
         s.layout.hs = 1;
         s.layout.micro_batch = 4;  // 4 / (4 x dp 1) = 1 micro-batch for 2 stages
         return s;
       },
       {"pp=2 needs at least 2 micro-batches per step, got 1"}},
      {"interleaving needs a multiple of pp micro-batches",
       RejectCode::InterleaveBatches,
       [] {
         Setup s{load_model("mini"), load_cluster("cpu-local", 1, 2), {}, {}};  // 4 layers
         s.train.seq_len = 64;
         s.train.global_batch = 3;  // 3 micro-batches, not a multiple of pp = 2
         s.train.precision = Precision::Fp32;
         s.layout.pp = 2;
         s.layout.vpp = 2;
         return s;
       },
       {"vpp=2", "micro-batch count 3 to be a multiple of pp=2"}},
      {"sequence longer than the model's positions",
       RejectCode::SeqTooLong,
       [] {
         Setup s = tiny(2);
         s.train.seq_len = 512;
         return s;
       },
       {"seq_len 512 exceeds the model's max_position_embeddings 256"}},
      {"fp8 on a GPU without fp8",
       RejectCode::NoFp8,
       [] {
         Setup s = mixtral(1);
         s.train.precision = Precision::Fp8;
         return s;
       },
       {"a100-40gb has no fp8 tensor cores", "--precision bf16"}},
      {"bf16 on CPU ranks",
       RejectCode::CpuPrecision,
       [] {
         Setup s = tiny(2);
         s.train.precision = Precision::Bf16;
         return s;
       },
       {"CPU devices (cpu-zen4) train in fp32", "--precision fp32"}},
  };
  return all;
}

}  // namespace

TEST_CASE("valid layouts pass the rules", "[core][constraints]") {
  const Setup m = mixtral(2);
  CHECK_FALSE(check_layout(m.model, m.cluster, m.train, m.layout).has_value());
  const Setup t = tiny(2);
  CHECK_FALSE(check_layout(t.model, t.cluster, t.train, t.layout).has_value());
  Setup p = tiny(2);
  p.layout.pp = 2;
  p.layout.hs = 1;
  CHECK_FALSE(check_layout(p.model, p.cluster, p.train, p.layout).has_value());
  CHECK(grad_accum_steps(p.train, p.layout) == 8);  // 8 / (1 x dp 1)
}

TEST_CASE("each rule rejects with its own code and a useful sentence", "[core][constraints]") {
  std::set<RejectCode> covered;
  for (const Case& c : cases()) {
    CAPTURE(c.name);
    const Setup s = c.make();
    const auto rejection = check_layout(s.model, s.cluster, s.train, s.layout);
    REQUIRE(rejection.has_value());
    CHECK(to_string(rejection->code) == to_string(c.code));
    const std::string why = explain(*rejection, s.model, s.cluster, s.train, s.layout);
    CAPTURE(why);
    for (const std::string& hint : c.hints) {
      CHECK_THAT(why, Catch::Contains(hint));
    }
    covered.insert(c.code);
  }
  // Every code of the enum has a case: TpNotInnermost is the last of 19.
  CHECK(covered.size() == static_cast<std::size_t>(RejectCode::TpNotInnermost) + 1);
}

TEST_CASE("rule names are distinct and stable", "[core][constraints]") {
  std::set<std::string> names;
  for (int i = 0; i <= static_cast<int>(RejectCode::TpNotInnermost); ++i) {
    names.insert(to_string(static_cast<RejectCode>(i)));
  }
  CHECK(names.size() == 19);
  CHECK(names.count("ep_experts") == 1);
  CHECK(names.count("unknown") == 0);
}

TEST_CASE("uneven pipeline stages: layer ranges and the planner's balanced split",
          "[core][constraints]") {
  // Qwen3-235B's 94 layers on 8 stages, as Megatron runs it: 11, six of 12, 11.
  const auto split = uneven_split(94, 8, 1);
  REQUIRE(split.has_value());
  CHECK(split->first == 11);
  CHECK(split->last == 11);
  Layout l;
  l.pp = 8;
  l.first_stage_layers = split->first;
  l.last_stage_layers = split->last;
  std::int64_t next = 0;
  for (std::int64_t stage = 0; stage < 8; ++stage) {
    const LayerRange r = stage_layers(94, l, stage);
    CHECK(r.begin == next);
    CHECK(r.count() == (stage == 0 || stage == 7 ? 11 : 12));
    next = r.end;
  }
  CHECK(next == 94);
  // Interleaved: every stage whole virtual stages, the last (LM head, loss) no bigger.
  const auto interleaved = uneven_split(94, 8, 2);
  REQUIRE(interleaved.has_value());
  CHECK(interleaved->first == 12);
  CHECK(interleaved->last == 10);
  CHECK_FALSE(uneven_split(94, 8, 3).has_value());
  // Two stages: halves, the larger first.
  CHECK(uneven_split(5, 2, 1)->first == 3);
  CHECK(uneven_split(5, 2, 1)->last == 2);
  CHECK_FALSE(uneven_split(5, 1, 1).has_value());
  // Even layouts keep layers / pp per stage.
  Layout even;
  even.pp = 4;
  CHECK(stage_layers(32, even, 2).begin == 16);
  CHECK(stage_layers(32, even, 2).count() == 8);
  // And the rules accept the split on a real model and cluster.
  ModelSpec qwen = load_model("qwen3-235b-a22b");
  ClusterSpec cluster = load_cluster("dgx-b200", 8, std::nullopt);
  TrainSpec t;
  t.seq_len = 4096;
  t.global_batch = 1024;
  l.ep = 8;
  CHECK_FALSE(check_layout(qwen, cluster, t, l).has_value());
}
