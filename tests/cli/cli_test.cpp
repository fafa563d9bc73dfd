// The moetune binary end to end: bad input of every kind gives exit status 2 and exactly one line
// on stderr starting "moetune: error:"; a good `plan --json` run is valid JSON with the documented
// keys; plan --out, simulate --plan and export --plan agree with each other.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "cli_support.hpp"
#include "core/json_reader.hpp"

using namespace moetune;
using moetune::test::TempDir;

namespace {

const std::vector<std::string> kTinyCpu = {"--model",        "tiny", "--cluster", "cpu-local",
                                           "--nodes",        "1",    "--seq",     "16",
                                           "--global-batch", "8"};

}  // namespace

TEST_CASE("cli: an unknown model", "[cli][errors]") {
  check_one_error_line(
      run_moetune({"plan", "--model", "mixtral-8x9b", "--cluster", "cpu-local", "--nodes", "1"}),
      "unknown model \"mixtral-8x9b\"");
}

TEST_CASE("cli: a malformed JSON model file", "[cli][errors]") {
  TempDir dir;
  const auto file = dir.write("broken.json", "{\n  \"schema_version\": 1,\n  \"name\": \n}\n");
  check_one_error_line(run_moetune({"info", "--model", file.string()}), "malformed JSON");
}

TEST_CASE("cli: an unknown key in a model JSON", "[cli][errors]") {
  TempDir dir;
  Json model = read_json_file(moetune::test::source_dir() / "profiles" / "models" / "tiny.json");
  model["hidden_sise"] = 64;
  const auto file = dir.write("tiny-typo.json", model.dump(2));
  check_one_error_line(run_moetune({"info", "--model", file.string()}), "hidden_sise: unknown key");
}

TEST_CASE("cli: --ep 3 for Mixtral's 8 experts on simulate", "[cli][errors]") {
  SECTION("on 8 GPUs ep=3 does not even divide the world") {
    check_one_error_line(run_moetune({"simulate", "--model", "mixtral-8x7b", "--cluster",
                                      "p4d.24xlarge", "--nodes", "1", "--ep", "3"}),
                         "does not divide");
  }
  SECTION("on 24 GPUs the expert rule speaks") {
    check_one_error_line(run_moetune({"simulate", "--model", "mixtral-8x7b", "--cluster",
                                      "p4d.24xlarge", "--nodes", "3", "--ep", "3"}),
                         "ep=3 does not divide 8 experts; try ep in {1, 2, 4, 8}");
  }
}

TEST_CASE("cli: --nodes 0", "[cli][errors]") {
  check_one_error_line(
      run_moetune({"plan", "--model", "tiny", "--cluster", "cpu-local", "--nodes", "0"}),
      "--nodes must be at least 1");
}

TEST_CASE("cli: an unknown flag of a subcommand", "[cli][errors]") {
  check_one_error_line(run_moetune(with({"plan"}, with(kTinyCpu, {"--bogus-flag"}))),
                       "--bogus-flag");
}

TEST_CASE("cli: more bad input", "[cli][errors]") {
  SECTION("no subcommand") {
    check_one_error_line(run_moetune({}));
  }
  SECTION("unknown subcommand") {
    check_one_error_line(run_moetune({"tune-everything"}));
  }
  SECTION("a bad mesh order") {
    check_one_error_line(run_moetune(with({"simulate"}, with(kTinyCpu, {"--order", "ep,tp"}))),
                         "must start with tp");
  }
  SECTION("a plan file that does not exist") {
    check_one_error_line(run_moetune({"simulate", "--plan", "/nonexistent/plan.json"}),
                         "cannot open file");
  }
  SECTION("a degree of 0") {
    check_one_error_line(run_moetune(with({"plan"}, with(kTinyCpu, {"--tp", "0"}))), "--tp");
  }
  SECTION("a precision outside its set") {
    check_one_error_line(run_moetune(with({"plan"}, with(kTinyCpu, {"--precision", "fp16"}))),
                         "fp16");
  }
  SECTION("an export format outside its set") {
    check_one_error_line(
        run_moetune({"export", "--plan", "/nonexistent/plan.json", "--format", "deepspeed"}),
        "deepspeed");
  }
  SECTION("bf16 on CPU ranks") {
    check_one_error_line(run_moetune(with({"simulate"}, with(kTinyCpu, {"--precision", "bf16"}))),
                         "train in fp32");
  }
}

TEST_CASE("cli: plan --json lists layouts with the documented keys", "[cli][plan]") {
  const Result r = run_moetune(with({"plan"}, with(kTinyCpu, {"--json", "--top", "3"})));
  INFO("stderr: " << r.err);
  REQUIRE(r.status == 0);
  CHECK(r.err.empty());
  const Json j = parse_json_text(r.out, "plan --json");
  REQUIRE(j.contains("layouts"));
  REQUIRE(j.at("layouts").is_array());
  REQUIRE(j.at("layouts").size() == 3);
  const Json& first = j.at("layouts").at(0);
  for (const char* key :
       {"fits", "peak_memory_bytes", "memory", "step_time_s", "tokens_per_s",
        "tokens_per_s_per_device", "tflops_per_device", "mfu", "tp", "ep", "hs", "order"}) {
    CAPTURE(key);
    CHECK(first.contains(key));
  }
  CHECK(first.at("fits") == true);
  CHECK(first.at("order").size() == 5);
  CHECK(first.at("order").at(0) == "tp");
  CHECK(first.at("memory").contains("activations"));
  CHECK(j.at("layouts").at(0).at("tokens_per_s").get<double>() >=
        j.at("layouts").at(1).at("tokens_per_s").get<double>());
}

TEST_CASE("cli: plan --out, then simulate --plan and export --plan", "[cli][plan]") {
  TempDir dir;
  const std::string plan_file = (dir / "plan.json").string();
  const Result planned =
      run_moetune(with({"plan"}, with(kTinyCpu, {"--json", "--top", "1", "--out", plan_file})));
  INFO("plan stderr: " << planned.err);
  REQUIRE(planned.status == 0);
  const Json listing = parse_json_text(planned.out, "plan --json");
  const double planned_peak = listing.at("layouts").at(0).at("peak_memory_bytes").get<double>();

  const Result simulated = run_moetune({"simulate", "--plan", plan_file, "--json"});
  INFO("simulate stderr: " << simulated.err);
  REQUIRE(simulated.status == 0);
  const Json sim = parse_json_text(simulated.out, "simulate --json");
  // Same inputs through an exact JSON round trip: the same double, bit for bit.
  CHECK(sim.at("peak_memory_bytes").get<double>() == planned_peak);
  CHECK(sim.at("tp") == listing.at("layouts").at(0).at("tp"));
  CHECK(sim.at("order") == listing.at("layouts").at(0).at("order"));

  const Result exported = run_moetune({"export", "--plan", plan_file, "--format", "megatron"});
  INFO("export stderr: " << exported.err);
  CHECK(exported.status == 0);
  CHECK_THAT(exported.out, Catch::Contains("--expert-model-parallel-size"));
}

TEST_CASE("cli: plan --out writes nothing when nothing fits", "[cli][plan]") {
  // Mixtral 8x7B cannot fit 2 CPU ranks of 12 GiB: the error is one line and no file appears.
  TempDir dir;
  const auto plan_file = dir / "plan.json";
  const Result r = run_moetune({"plan", "--model", "mixtral-8x7b", "--cluster", "cpu-local",
                                "--nodes", "1", "--seq", "16", "--global-batch", "8", "--pp", "1",
                                "--json", "--out", plan_file.string()});
  INFO("stderr: " << r.err);
  CHECK(r.status == 2);
  CHECK(r.err.rfind("moetune: error: no layout fits", 0) == 0);
  CHECK_FALSE(std::filesystem::exists(plan_file));
}

TEST_CASE("cli: info --json gives Mixtral 8x7B's parameter counts", "[cli][info]") {
  const Result r = run_moetune({"info", "--model", "mixtral-8x7b", "--json"});
  REQUIRE(r.status == 0);
  const Json j = parse_json_text(r.out, "info --json");
  // Worked out by hand in tests/core/model_spec_test.cpp.
  CHECK(j.at("total_params") == 46'702'792'704LL);
  CHECK(j.at("active_params") == 12'879'925'248LL);
}

TEST_CASE("cli: explain --json lists the rejected layout with its rule", "[cli][explain]") {
  const Result r = run_moetune(with({"explain"}, with(kTinyCpu, {"--json"})));
  REQUIRE(r.status == 0);
  const Json j = parse_json_text(r.out, "explain --json");
  // As in tests/planner: 34 considered, 32 simulated, one layout (pp 2, micro-batch 8) rejected.
  CHECK(j.at("considered") == 34);
  CHECK(j.at("simulated") == 32);
  REQUIRE(j.at("rejected").size() == 1);
  CHECK(j.at("rejected").at(0).at("rule") == "pipeline_unfilled");
  CHECK_THAT(j.at("rejected").at(0).at("reason").get<std::string>(),
             Catch::Contains("pp=2 needs at least 2 micro-batches per step, got 1"));
}

// Regression: CLI11's PositiveNumber once answered "--tp 0" with a 350-character range that
// started at 0 and never said that a degree must be at least 1.
TEST_CASE("cli: --tp 0 gets a short line saying what is valid", "[cli][errors]") {
  const Result r = run_moetune(with({"plan"}, with(kTinyCpu, {"--tp", "0"})));
  INFO("stderr: " << r.err);
  CHECK(r.err.size() < 200);
  CHECK_THAT(r.err, Catch::Contains("at least 1"));
}
