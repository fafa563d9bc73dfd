// Strict reading: unknown, missing and mistyped keys, wrong schema versions, malformed text and
// unsupported Hugging Face configs are refused with InputError, and the message names the key's
// full path (JsonObjectReader joins the object path and the key with '.', e.g.
// "plan.model.hidden_sise: unknown key; known keys: ...").
#include <catch2/catch.hpp>

#include <string>

#include "core/error.hpp"
#include "core/json_reader.hpp"
#include "core/plan.hpp"
#include "core/presets.hpp"
#include "test_support.hpp"

using namespace moetune;
using Catch::Contains;

namespace {

// A valid plan for the tiny model on the 2-rank CPU cluster, as JSON to break key by key.
Json tiny_plan_json() {
  Plan plan;
  plan.model = load_model("tiny");
  plan.cluster = load_cluster("cpu-local", std::nullopt, std::nullopt);
  plan.train.seq_len = 64;
  plan.train.global_batch = 4;
  plan.train.precision = Precision::Fp32;
  plan.layout.hs = 2;
  return to_json(plan);
}

Plan read(const Json& json) {
  return plan_from_json(json, "plan");
}

Json hf_mixtral() {
  return read_json_file(moetune::test::hf_config("mixtral-8x7b"));
}

}  // namespace

TEST_CASE("the unmodified plan reads back", "[core][json][strict]") {
  CHECK_NOTHROW(read(tiny_plan_json()));
}

TEST_CASE("an unknown key is refused with its full path", "[core][json][strict]") {
  SECTION("inside the model") {
    Json j = tiny_plan_json();
    j["model"]["hidden_sise"] = 64;
    CHECK_THROWS_AS(read(j), InputError);
    CHECK_THROWS_WITH(read(j), Contains("plan.model.hidden_sise: unknown key") &&
                                   Contains("known keys:") && Contains("hidden_size"));
  }
  SECTION("two objects deep") {
    Json j = tiny_plan_json();
    j["cluster"]["intra_node"]["bandwidth_GBs"] = 5;
    CHECK_THROWS_WITH(read(j), Contains("plan.cluster.intra_node.bandwidth_GBs: unknown key"));
  }
  SECTION("inside the inline device of a cluster") {
    Json j = tiny_plan_json();
    j["cluster"]["device"]["hbm_GiB"] = 5;
    CHECK_THROWS_WITH(read(j), Contains("plan.cluster.device.hbm_GiB: unknown key"));
  }
  SECTION("at the top level") {
    Json j = tiny_plan_json();
    j["comment"] = "hello";
    CHECK_THROWS_WITH(read(j), Contains("plan.comment: unknown key"));
  }
}

TEST_CASE("a missing key is refused with its path", "[core][json][strict]") {
  Json j = tiny_plan_json();
  SECTION("model") {
    j["model"].erase("hidden_size");
    CHECK_THROWS_WITH(read(j), Contains("plan.model.hidden_size: missing key"));
  }
  SECTION("train optimizer") {
    j["train"]["optimizer"].erase("beta2");
    CHECK_THROWS_WITH(read(j), Contains("plan.train.optimizer.beta2: missing key"));
  }
  SECTION("layout") {
    j["layout"].erase("hs");
    CHECK_THROWS_WITH(read(j), Contains("plan.layout.hs: missing key"));
  }
  SECTION("prediction (null is allowed, absence is not)") {
    j.erase("prediction");
    CHECK_THROWS_WITH(read(j), Contains("plan.prediction: missing key"));
  }
}

TEST_CASE("a value of the wrong type or range is refused", "[core][json][strict]") {
  Json j = tiny_plan_json();
  SECTION("string for an integer") {
    j["model"]["hidden_size"] = "64";
    CHECK_THROWS_WITH(read(j), Contains("plan.model.hidden_size: expected an integer"));
  }
  SECTION("fraction for an integer") {
    j["model"]["hidden_size"] = 64.5;
    CHECK_THROWS_WITH(read(j), Contains("plan.model.hidden_size: expected an integer"));
  }
  SECTION("integer out of range") {
    j["model"]["hidden_size"] = 0;
    CHECK_THROWS_WITH(read(j), Contains("plan.model.hidden_size: must be in [1,"));
  }
  SECTION("string for a boolean") {
    j["layout"]["optimizer_offload"] = "false";
    CHECK_THROWS_WITH(read(j), Contains("plan.layout.optimizer_offload: expected true or false"));
  }
  SECTION("enum value outside its set") {
    j["train"]["precision"] = "fp16";
    CHECK_THROWS_WITH(
        read(j), Contains("plan.train.precision") && Contains("is not one of {fp32, bf16, fp8}"));
  }
  SECTION("model family outside its set") {
    j["model"]["family"] = "llama";
    CHECK_THROWS_WITH(read(j), Contains("plan.model.family") && Contains("mixtral, qwen2_moe"));
  }
  SECTION("negative seed") {
    j["train"]["seed"] = -1;
    CHECK_THROWS_WITH(read(j), Contains("plan.train.seed: expected a non-negative integer"));
  }
  SECTION("order not starting with tp") {
    j["layout"]["order"] = Json::array({"ep", "tp", "hs", "rep", "pp"});
    CHECK_THROWS_WITH(read(j), Contains("plan.layout.order") && Contains("must start with tp"));
  }
  SECTION("an object that is not an object") {
    j["train"]["moe"] = 3;
    CHECK_THROWS_WITH(read(j), Contains("plan.train.moe: expected a JSON object"));
  }
}

TEST_CASE("a wrong schema_version is refused at every level", "[core][json][strict]") {
  Json j = tiny_plan_json();
  SECTION("plan") {
    j["schema_version"] = 2;
    CHECK_THROWS_WITH(read(j), Contains("plan.schema_version: version 2 is not supported") &&
                                   Contains("reads 1"));
  }
  SECTION("model inside the plan") {
    j["model"]["schema_version"] = 0;
    CHECK_THROWS_WITH(read(j), Contains("plan.model.schema_version: version 0 is not supported"));
  }
  SECTION("missing") {
    j["cluster"].erase("schema_version");
    CHECK_THROWS_WITH(read(j), Contains("plan.cluster.schema_version: missing key"));
  }
}

TEST_CASE("a plan whose layout breaks a rule is refused with the rule's reason",
          "[core][json][strict]") {
  Json j = tiny_plan_json();
  j["layout"]["micro_batch"] = 3;  // global batch 4 is not 3 x dp 2 x a whole number
  CHECK_THROWS_WITH(read(j), Contains("is not valid") &&
                                 Contains("global batch 4 is not a multiple of micro-batch 3"));
}

TEST_CASE("malformed JSON text names the origin, line and column", "[core][json][strict]") {
  // The trailing comma makes the '}' on line 3, column 1 the offending token.
  const std::string text = "{\n  \"a\": 1,\n}\n";
  CHECK_THROWS_AS(parse_json_text(text, "bad.json"), InputError);
  CHECK_THROWS_WITH(parse_json_text(text, "bad.json"),
                    Contains("bad.json: malformed JSON") && Contains("line 3, column 1"));
  // The same through a file: the file name is the origin.
  moetune::test::TempDir dir;
  const auto file = dir.write("broken.json", text);
  CHECK_THROWS_WITH(read_json_file(file),
                    Contains(file.string() + ": malformed JSON") && Contains("line 3, column 1"));
  CHECK_THROWS_WITH(read_json_file(dir / "absent.json"), Contains("cannot open file"));
}

TEST_CASE("an unknown preset name lists the presets", "[core][json][strict]") {
  CHECK_THROWS_AS(load_model("mixtral-8x9b"), InputError);
  CHECK_THROWS_WITH(load_model("mixtral-8x9b"), Contains("unknown model \"mixtral-8x9b\"") &&
                                                    Contains("mixtral-8x7b") && Contains("tiny"));
  CHECK_THROWS_WITH(load_cluster("p9", std::nullopt, std::nullopt),
                    Contains("unknown cluster \"p9\"") && Contains("p4d.24xlarge"));
  CHECK_THROWS_WITH(load_device("/no/such/device.json"), Contains("does not exist"));
}

TEST_CASE("Hugging Face configs that moetune cannot honour are refused", "[core][json][hf]") {
  Json config = hf_mixtral();
  REQUIRE_NOTHROW(model_from_hf_config(config, "m", "config.json"));
  SECTION("a dense llama") {
    config["model_type"] = "llama";
    CHECK_THROWS_AS(model_from_hf_config(config, "m", "config.json"), InputError);
    CHECK_THROWS_WITH(model_from_hf_config(config, "m", "config.json"),
                      Contains("config.json.model_type: \"llama\" is not supported") &&
                          Contains("mixtral, qwen2_moe and qwen3_moe"));
  }
  SECTION("a llama through load_model(path)") {
    config["model_type"] = "llama";
    moetune::test::TempDir dir;
    const auto file = dir.write("llama.config.json", config.dump(2));
    CHECK_THROWS_WITH(load_model(file.string()), Contains("\"llama\" is not supported"));
  }
  SECTION("an activation other than SwiGLU") {
    config["hidden_act"] = "gelu";
    CHECK_THROWS_WITH(model_from_hf_config(config, "m", "config.json"),
                      Contains("config.json.hidden_act: only SwiGLU"));
  }
  SECTION("a key that changes the architecture") {
    config["num_shared_experts"] = 2;
    CHECK_THROWS_WITH(model_from_hf_config(config, "m", "config.json"),
                      Contains("config.json.num_shared_experts: unknown key"));
  }
  SECTION("a missing size") {
    config.erase("num_local_experts");
    CHECK_THROWS_WITH(model_from_hf_config(config, "m", "config.json"),
                      Contains("config.json.num_local_experts: missing key"));
  }
  SECTION("Qwen per-layer sliding window") {
    Json qwen = read_json_file(moetune::test::hf_config("qwen2-57b-a14b"));
    qwen["use_sliding_window"] = true;
    CHECK_THROWS_WITH(model_from_hf_config(qwen, "q", "config.json"),
                      Contains("config.json.use_sliding_window"));
  }
  SECTION("more experts per token than experts") {
    config["num_experts_per_tok"] = 9;
    CHECK_THROWS_WITH(model_from_hf_config(config, "m", "config.json"),
                      Contains("num_experts_per_tok=9 exceeds 8 experts"));
  }
}

TEST_CASE("a plan written before the distributed optimizer existed reads as plain replicas",
          "[core][json]") {
  Json j = tiny_plan_json();
  CHECK(j["layout"]["distributed_optimizer"] == false);
  j["layout"].erase("distributed_optimizer");
  CHECK_FALSE(read(j).layout.distributed_optimizer);
  j["layout"]["distributed_optimizer"] = "yes";
  CHECK_THROWS_WITH(read(j), Contains("plan.layout.distributed_optimizer: expected true or false"));
}
