// Round trips of every JSON form moetune writes: each shipped preset (models, devices, clusters)
// and a whole plan with its prediction must read back equal (operator==) and dump to identical
// text. No tolerance anywhere: plan.json is a contract that "round-trips exactly" (DESIGN.md), and
// nlohmann/json writes doubles in their shortest form that parses back to the same bits.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "core/constraints.hpp"
#include "core/error.hpp"
#include "core/hardware.hpp"
#include "core/json_reader.hpp"
#include "core/plan.hpp"
#include "core/presets.hpp"
#include "test_support.hpp"

using namespace moetune;

namespace {

HardwareProfile no_device_lookup(const std::string& name) {
  throw InputError("a written cluster carries its device inline, not the name " + name);
}

}  // namespace

TEST_CASE("every preset folder is found and not empty", "[core][json][presets]") {
  // The counts of shipped files; a new preset must be added here on purpose, so a folder that
  // silently fails to list (wrong profiles_dir) cannot pass as "every preset loads".
  CHECK(preset_names("models").size() == 8);
  CHECK(preset_names("gpus").size() == 7);
  CHECK(preset_names("clusters").size() == 8);
}

TEST_CASE("every model preset loads and round-trips", "[core][json][presets]") {
  for (const std::string& name : preset_names("models")) {
    CAPTURE(name);
    const ModelSpec model = load_model(name);
    CHECK(model.name == name);
    const Json written = to_json(model);
    const ModelSpec back = model_from_json(JsonObjectReader(written, "model"));
    CHECK(back == model);
    CHECK(to_json(back).dump() == written.dump());
    // Through text, as a file would carry it.
    const ModelSpec reparsed =
        model_from_json(JsonObjectReader(parse_json_text(written.dump(2), name), "model"));
    CHECK(reparsed == model);
  }
}

TEST_CASE("every device preset loads and round-trips", "[core][json][presets]") {
  for (const std::string& name : preset_names("gpus")) {
    CAPTURE(name);
    const HardwareProfile device = load_device(name);
    CHECK(device.name == name);
    const Json written = to_json(device);
    const HardwareProfile back = hardware_from_json(JsonObjectReader(written, "device"));
    CHECK(back == device);
    CHECK(to_json(back).dump() == written.dump());
  }
}

TEST_CASE("node_contention round-trips and defaults to 0 when absent", "[core][json]") {
  HardwareProfile device = load_device("cpu-zen4");
  device.node_contention = 0.37;
  const Json written = to_json(device);
  CHECK(hardware_from_json(JsonObjectReader(written, "device")) == device);
  // Profiles written before the field existed read as devices that do not slow each other.
  Json old = written;
  old.erase("node_contention");
  CHECK(hardware_from_json(JsonObjectReader(old, "device")).node_contention == 0.0);
  Json negative = written;
  negative["node_contention"] = -0.5;
  CHECK_THROWS_WITH(hardware_from_json(JsonObjectReader(negative, "device")),
                    Catch::Contains("device.node_contention"));
}

TEST_CASE("optimizer_efficiency round-trips and defaults to the memory-bound efficiency",
          "[core][json]") {
  HardwareProfile device = load_device("cpu-zen4");
  device.optimizer_efficiency = 0.21;
  const Json written = to_json(device);
  const HardwareProfile back = hardware_from_json(JsonObjectReader(written, "device"));
  CHECK(back == device);
  CHECK(back.effective_optimizer_efficiency() == 0.21);
  // Absent (profiles written before it existed, every GPU preset): the optimizer update is as
  // efficient as the other memory-bound kernels.
  Json old = written;
  old.erase("optimizer_efficiency");
  const HardwareProfile unset = hardware_from_json(JsonObjectReader(old, "device"));
  CHECK(unset.optimizer_efficiency == 0.0);
  CHECK(unset.effective_optimizer_efficiency() == unset.memory_bound_efficiency);
}

TEST_CASE("every cluster preset loads and round-trips with its device inline",
          "[core][json][presets]") {
  for (const std::string& name : preset_names("clusters")) {
    CAPTURE(name);
    const ClusterSpec cluster = load_cluster(name, std::nullopt, std::nullopt);
    CHECK(cluster.name == name);
    CHECK(cluster.world_size() == cluster.nodes * cluster.devices_per_node);
    const Json written = to_json(cluster);
    // The written form holds the whole device profile, so it must read back without a lookup.
    const ClusterSpec back =
        cluster_from_json(JsonObjectReader(written, "cluster"), &no_device_lookup);
    CHECK(back == cluster);
    CHECK(to_json(back).dump() == written.dump());
  }
}

TEST_CASE("load_cluster overrides nodes and devices per node", "[core][json][presets]") {
  const ClusterSpec c = load_cluster("p4d.24xlarge", 3, 4);
  CHECK(c.nodes == 3);
  CHECK(c.devices_per_node == 4);
  CHECK(c.world_size() == 12);
  CHECK_THROWS_WITH(load_cluster("p4d.24xlarge", 0, std::nullopt),
                    Catch::Contains("--nodes must be at least 1"));
  CHECK_THROWS_WITH(load_cluster("p4d.24xlarge", 1, 0),
                    Catch::Contains("--devices-per-node must be at least 1"));
}

TEST_CASE("a plan with a prediction round-trips through plan.json", "[core][json][plan]") {
  Plan plan;
  plan.model = load_model("mixtral-8x7b");
  plan.cluster = load_cluster("p4d.24xlarge", 2, std::nullopt);
  plan.train.seq_len = 2048;
  plan.train.global_batch = 128;
  plan.train.seed = 987654321;
  plan.train.moe.load_balancing = LoadBalancing::Sinkhorn;
  plan.train.moe.capacity_factor = 1.25;
  plan.layout.ep = 2;
  plan.layout.hs = 8;
  plan.layout.order = parse_order("tp,hs,ep");
  plan.layout.micro_batch = 2;
  plan.layout.recompute = Recompute::Full;
  plan.layout.optimizer_offload = true;
  plan.layout.distributed_optimizer = true;
  REQUIRE_FALSE(check_layout(plan.model, plan.cluster, plan.train, plan.layout).has_value());
  // A prediction filled by hand with values that have no short decimal form (thirds, sevenths),
  // so an inexact double writer would show up. The simulator's own predictions round-trip in
  // tests/planner (make_plan), which keeps this test inside core.
  Prediction p;
  p.fits = true;
  p.peak_memory_bytes = 38.0e9 / 3.0;
  p.device_memory_bytes = 40.0 * 1024 * 1024 * 1024;
  p.host_memory_bytes_per_node = 1.0e12 / 7.0;
  p.memory.parameters = 1.0 / 3.0;
  p.memory.activations = 2.0 / 7.0;
  p.memory.fragmentation = 1e-300;
  p.time.experts = 0.1;
  p.time.step = 1.0 / 3.0;
  p.time.overlapped_comm = 5e-7;
  p.step_time_s = 1.0 / 3.0;
  p.tokens_per_s = 262144.0 * 3.0;
  p.tokens_per_s_per_device = p.tokens_per_s / 16.0;
  p.tflops_per_device = 123.456789012345;
  p.mfu = 0.39568;
  p.cost_per_step_usd = 2.0 / 3.0;
  p.cost_per_billion_tokens_usd = 1234.5;
  plan.prediction = p;

  moetune::test::TempDir dir;
  const auto file = dir / "plan.json";
  write_plan_file(file, plan);
  const Plan back = read_plan_file(file);
  CHECK(back.model == plan.model);
  CHECK(back.cluster == plan.cluster);
  CHECK(back.train == plan.train);
  CHECK(back.layout == plan.layout);
  CHECK(back.prediction == plan.prediction);
  CHECK(back == plan);
  CHECK(to_json(back).dump(2) == to_json(plan).dump(2));
  // Written atomically: no temporary file is left beside it.
  std::size_t files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) {
    (void)entry;
    ++files;
  }
  CHECK(files == 1);
}

TEST_CASE("a plan without a prediction round-trips with prediction null", "[core][json][plan]") {
  Plan plan;
  plan.model = load_model("tiny");
  plan.cluster = load_cluster("cpu-local", std::nullopt, std::nullopt);
  plan.train.seq_len = 64;
  plan.train.global_batch = 4;
  plan.train.precision = Precision::Fp32;
  plan.layout.hs = 2;
  const Json written = to_json(plan);
  CHECK(written.at("prediction").is_null());
  const Plan back = plan_from_json(parse_json_text(written.dump(), "plan"), "plan");
  CHECK_FALSE(back.prediction.has_value());
  CHECK(back == plan);
}

TEST_CASE("uncommon values round-trip: lists, windows, extreme seeds, interleaving",
          "[core][json][plan]") {
  Plan plan;
  plan.model = load_model("mini");  // 4 layers, 8 experts
  plan.model.decoder_sparse_step = 2;
  plan.model.mlp_only_layers = {3};
  plan.model.sliding_window = 128;
  plan.model.tie_word_embeddings = true;
  plan.model.rms_norm_eps = 1.0 / 3.0 * 1e-5;
  plan.cluster = load_cluster("cpu-local", 2, 4);
  plan.train.seq_len = 64;
  plan.train.global_batch = 8;
  plan.train.precision = Precision::Fp32;
  plan.train.seed = 18'446'744'073'709'551'615ULL;  // 2^64 - 1: beyond a signed 64-bit integer
  plan.train.moe.dispatcher = Dispatcher::AllGather;
  plan.train.moe.z_loss_coef = 1e-3;
  plan.layout.pp = 2;
  plan.layout.vpp = 2;
  plan.layout.hs = 4;
  plan.layout.order = parse_order("tp,pp,hs");
  plan.layout.activation_offload = true;
  REQUIRE_FALSE(check_layout(plan.model, plan.cluster, plan.train, plan.layout).has_value());
  const Json written = to_json(plan);
  const Plan back = plan_from_json(parse_json_text(written.dump(2), "plan"), "plan");
  CHECK(back.model.mlp_only_layers == std::vector<std::int64_t>{3});
  CHECK(back.train.seed == plan.train.seed);
  CHECK(back == plan);
  CHECK(to_json(back).dump() == written.dump());
}

TEST_CASE("uneven pipeline stages round-trip through plan.json", "[core][json]") {
  Plan plan;
  plan.model = load_model("qwen3-235b-a22b");
  plan.cluster = load_cluster("dgx-b200", 8, std::nullopt);
  plan.train.seq_len = 4096;
  plan.train.global_batch = 1024;
  plan.layout.pp = 8;
  plan.layout.vpp = 2;
  plan.layout.ep = 8;
  plan.layout.first_stage_layers = 12;
  plan.layout.last_stage_layers = 10;
  REQUIRE_FALSE(check_layout(plan.model, plan.cluster, plan.train, plan.layout).has_value());
  const Plan back = plan_from_json(to_json(plan), "plan");
  CHECK(back == plan);
  // Plans from before uneven stages existed read as even stages: this one then breaks the rules,
  // and the reason names the split that would be valid.
  Json old = to_json(plan);
  old["layout"].erase("first_stage_layers");
  old["layout"].erase("last_stage_layers");
  CHECK_THROWS_WITH(plan_from_json(old, "plan"),
                    Catch::Contains("pp=8 does not divide 94 layers") &&
                        Catch::Contains("--first-stage-layers 12 --last-stage-layers 10"));
}
