// Safetensors: round trips, dtype conversion, sharded folders, strict header checks, and the golden
// Hugging Face files of tests/data/golden/tiny_mixtral (written by scripts/make_golden.py).
#include <catch2/catch.hpp>

#include <cstring>
#include <fstream>

#include "core/error.hpp"
#include "core/model_spec.hpp"
#include "executor/io/binary_io.hpp"
#include "executor/io/safetensors.hpp"
#include "test_support.hpp"

using namespace moetune;
using namespace moetune::executor;
using Catch::Matchers::Contains;
using Shape = std::vector<std::int64_t>;

namespace {

// A safetensors file from a header written by hand and raw data bytes.
std::filesystem::path write_raw(const test::TempDir& dir, const std::string& name,
                                const std::string& header, const std::string& data) {
  std::string bytes;
  append_le<std::uint64_t>(bytes, header.size());
  return dir.write(name, bytes + header + data);
}

std::string f32_bytes(std::initializer_list<float> values) {
  std::string out;
  for (float v : values)
    append_le<float>(out, v);
  return out;
}

std::filesystem::path golden_dir() {
  return test::source_dir() / "tests" / "data" / "golden" / "tiny_mixtral";
}

}  // namespace

TEST_CASE("safetensors round-trip F32 and F64 with metadata", "[safetensors]") {
  test::TempDir dir;
  const std::vector<float> a = {1.5F, -2.0F, 3.25F, 0.0F, -0.0F, 1e-40F};  // [2, 3]
  const std::vector<float> b = {42.0F};                                    // []
  const std::vector<NamedTensor> tensors = {{"layer.a", {2, 3}, a.data()}, {"b", {}, b.data()}};
  const auto entries = write_safetensors(dir / "x.safetensors", tensors, {{"format", "pt"}});
  REQUIRE(entries.size() == 2);
  CHECK(entries[0].offset % 8 == 0);  // data starts 8-byte aligned

  SafetensorsReader r(dir / "x.safetensors");
  CHECK(r.names() == std::vector<std::string>{"b", "layer.a"});
  CHECK(r.shape("layer.a") == Shape{2, 3});
  CHECK(r.shape("b").empty());
  CHECK(r.metadata().at("format") == "pt");
  std::vector<float> back(6);
  r.read("layer.a", back.data(), Shape{2, 3});
  CHECK(std::memcmp(back.data(), a.data(), sizeof(float) * 6) == 0);
  CHECK(r.read_f32("b") == b);
  CHECK(r.read_f64("layer.a")[2] == 3.25);

  const std::vector<double> c = {0.1, -1e300, 3.0};
  write_safetensors(dir / "y.safetensors", std::vector<NamedTensorF64>{{"c", {3}, c.data()}});
  SafetensorsReader r64(dir / "y.safetensors");
  CHECK(r64.entry("c").dtype == "F64");
  CHECK(r64.read_f64("c") == c);
  CHECK(r64.read_f32("c")[0] == 0.1F);

  // Writing refuses bad tensors and leaves nothing.
  CHECK_THROWS_WITH(
      write_safetensors(dir / "z.safetensors",
                        std::vector<NamedTensor>{{"a", {1}, b.data()}, {"a", {1}, b.data()}}),
      Contains("written twice"));
  CHECK_FALSE(std::filesystem::exists(dir / "z.safetensors"));
}

TEST_CASE("safetensors refuses a mis-shaped or missing tensor, naming it", "[safetensors]") {
  test::TempDir dir;
  const std::vector<float> w(64 * 32, 0.5F);
  const std::string name = "model.layers.0.self_attn.q_proj.weight";
  write_safetensors(dir / "model.safetensors",
                    std::vector<NamedTensor>{{name, {64, 32}, w.data()}});
  SafetensorsReader r(dir.path());  // a folder with model.safetensors
  std::vector<float> out(64 * 64);
  CHECK_THROWS_WITH(
      r.read(name, out.data(), Shape{64, 64}),
      Contains("model.safetensors: " + name + ": expected shape [64, 64], the file has [64, 32]"));
  CHECK_THROWS_WITH(r.read("model.layers.0.self_attn.k_proj.weight", out.data(), Shape{16, 64}),
                    Contains("missing tensor model.layers.0.self_attn.k_proj.weight"));
}

TEST_CASE("safetensors converts F16 and BF16", "[safetensors]") {
  test::TempDir dir;
  // F16: 1.0, -2.5, 65504 (largest), 2^-24 (smallest subnormal), -0, inf.
  const std::vector<std::uint16_t> half = {0x3C00, 0xC100, 0x7BFF, 0x0001, 0x8000, 0x7C00};
  // BF16: 1.0, -3.0, 2^-128 (a float subnormal), 3.140625.
  const std::vector<std::uint16_t> bf16 = {0x3F80, 0xC040, 0x0020, 0x4049};
  std::string data;
  for (auto h : half)
    append_le<std::uint16_t>(data, h);
  for (auto h : bf16)
    append_le<std::uint16_t>(data, h);
  const auto file = write_raw(dir, "h.safetensors",
                              R"({"h":{"dtype":"F16","shape":[6],"data_offsets":[0,12]},)"
                              R"("b":{"dtype":"BF16","shape":[2,2],"data_offsets":[12,20]}})",
                              data);
  SafetensorsReader r(file);
  const std::vector<float> h = r.read_f32("h");
  CHECK(h[0] == 1.0F);
  CHECK(h[1] == -2.5F);
  CHECK(h[2] == 65504.0F);
  CHECK(h[3] == 0x1.0p-24F);
  CHECK((h[4] == 0.0F && std::signbit(h[4])));
  CHECK(std::isinf(h[5]));
  const std::vector<double> b = r.read_f64("b");
  CHECK(b == std::vector<double>{1.0, -3.0, 0x1.0p-128, 3.140625});
}

TEST_CASE("safetensors refuses bad headers", "[safetensors]") {
  test::TempDir dir;
  const std::string data = f32_bytes({1, 2, 3, 4});
  auto fails = [&](const std::string& header, const std::string& what) {
    const auto file = write_raw(dir, "bad.safetensors", header, data);
    CHECK_THROWS_WITH(SafetensorsReader(file), Contains("bad.safetensors") && Contains(what));
  };
  fails(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,12]}})", "needs 8");
  fails(R"({"a":{"dtype":"F32","shape":[8],"data_offsets":[0,32]}})", "outside the 16 data bytes");
  fails(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
        R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
        "overlap");
  fails(R"({"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", "unknown dtype");
  fails(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", "not a list of sizes");
  fails(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"extra":1}})", "exactly dtype");
  fails(R"({"a": [1, 2)", "not valid JSON");
  fails(R"([1, 2])", "not a JSON object");

  // A header length larger than the file, and a file shorter than the length field.
  std::string bytes;
  append_le<std::uint64_t>(bytes, 1000);
  const auto file = dir.write("long.safetensors", bytes + "{}");
  CHECK_THROWS_WITH(SafetensorsReader(file), Contains("header length 1000 does not fit"));
  CHECK_THROWS_WITH(SafetensorsReader(dir.write("tiny.safetensors", "abc")),
                    Contains("shorter than 8 bytes"));
  CHECK_THROWS_WITH(SafetensorsReader(dir / "none.safetensors"), Contains("no such file"));
}

TEST_CASE("safetensors reads a sharded checkpoint folder", "[safetensors]") {
  test::TempDir dir;
  const std::vector<float> a = {1, 2}, b = {3, 4, 5};
  write_safetensors(dir / "model-00001-of-00002.safetensors",
                    std::vector<NamedTensor>{{"a", {2}, a.data()}});
  write_safetensors(dir / "model-00002-of-00002.safetensors",
                    std::vector<NamedTensor>{{"b", {3}, b.data()}});
  dir.write("model.safetensors.index.json",
            R"({"metadata":{"total_size":20},"weight_map":{"a":"model-00001-of-00002.safetensors",)"
            R"("b":"model-00002-of-00002.safetensors"}})");
  SafetensorsReader r(dir.path());
  CHECK(r.names() == std::vector<std::string>{"a", "b"});
  CHECK(r.read_f32("b") == b);
  CHECK(r.entry("a").file.filename() == "model-00001-of-00002.safetensors");

  dir.write("model.safetensors.index.json",
            R"({"weight_map":{"a":"model-00002-of-00002.safetensors"}})");
  CHECK_THROWS_WITH(SafetensorsReader(dir.path()), Contains("which does not hold it"));
  dir.write("model.safetensors.index.json", R"({"weight_map":{"a":"missing.safetensors"}})");
  CHECK_THROWS_WITH(SafetensorsReader(dir.path()),
                    Contains("missing.safetensors: no such file (named in "
                             "model.safetensors.index.json)"));
}

TEST_CASE("the golden Hugging Face files open with Mixtral's tensor names",
          "[safetensors][golden]") {
  const SafetensorsReader weights(golden_dir() / "model.safetensors");
  // vocab 61, hidden 36, 6 heads x head_dim 6, 2 KV heads, FFN 37, 4 experts, 2 layers.
  CHECK(weights.names().size() == 3 + 2 * (2 + 4 + 1 + 3 * 4));
  CHECK(weights.shape("model.embed_tokens.weight") == Shape{61, 36});
  CHECK(weights.shape("lm_head.weight") == Shape{61, 36});
  CHECK(weights.shape("model.norm.weight") == Shape{36});
  CHECK(weights.shape("model.layers.1.self_attn.q_proj.weight") == Shape{36, 36});
  CHECK(weights.shape("model.layers.1.self_attn.k_proj.weight") == Shape{12, 36});
  CHECK(weights.shape("model.layers.0.block_sparse_moe.gate.weight") == Shape{4, 36});
  CHECK(weights.shape("model.layers.0.block_sparse_moe.experts.3.w1.weight") == Shape{37, 36});
  CHECK(weights.shape("model.layers.0.block_sparse_moe.experts.3.w2.weight") == Shape{36, 37});
  CHECK(weights.entry("model.embed_tokens.weight").dtype == "F32");

  const SafetensorsReader outputs(golden_dir() / "outputs.safetensors");
  CHECK(outputs.shape("logits") == Shape{2, 7, 61});
  CHECK(outputs.entry("logits").dtype == "F64");
  const double loss = outputs.read_f64("loss").at(0);
  const double ce = outputs.read_f64("ce_loss").at(0);
  const double aux = outputs.read_f64("aux_loss").at(0);
  CHECK(loss == Approx(ce + 0.02 * aux).epsilon(1e-14));  // loss = CE + router_aux_loss_coef * aux
  CHECK(ce == Approx(std::log(61.0)).epsilon(0.1));       // a random model is near uniform
  for (const std::string& name : weights.names()) {
    INFO(name);
    REQUIRE(outputs.has("grad." + name));
    CHECK(outputs.shape("grad." + name) == weights.shape(name));
  }

  const ModelSpec model =
      model_from_hf_config(read_json_file(golden_dir() / "config.json"), "golden", "config.json");
  CHECK(model.vocab_size == 61);
  CHECK(model.head_dim == 6);
  CHECK(model.num_key_value_heads == 2);
  CHECK(model.intermediate_size == 37);
  CHECK(model.router_aux_loss_coef == 0.02);

  const Json curve = read_json_file(golden_dir() / "curve.json");
  CHECK(curve["losses"].size() == 10);
  CHECK(curve["batches"].size() == 10);
  CHECK(curve["recipe"]["weight_decay"] == 0.1);
}
