// Checkpoints: bit-exact round trip, corruption detected by checksum, atomic replacement, and
// interrupted saves that leave the previous checkpoint loadable. Also CRC-32C itself.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>

#include "core/error.hpp"
#include "executor/io/binary_io.hpp"
#include "executor/io/checkpoint.hpp"
#include "test_support.hpp"

using namespace moetune;
using namespace moetune::executor;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

struct Model {
  std::vector<float> w1 = std::vector<float>(6 * 5);  // [6, 5]
  std::vector<float> norm = std::vector<float>(5);    // [5]
  std::vector<NamedTensor> views() const {
    return {{"model.layers.0.mlp.w1", {6, 5}, w1.data()}, {"model.norm.weight", {5}, norm.data()}};
  }
};

Model make_model(float scale) {
  Model m;
  for (std::size_t i = 0; i < m.w1.size(); ++i)
    m.w1[i] = scale * std::sin(1.0F + static_cast<float>(i));
  m.norm = {1.0F, -0.0F, std::numeric_limits<float>::denorm_min(),
            std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN()};
  return m;
}

void flip_byte(const fs::path& file, std::uint64_t offset) {
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ 0x01);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(&c, 1);
}

std::vector<std::string> folder_names(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir))
    names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

TEST_CASE("CRC-32C gives the standard check value", "[checkpoint]") {
  CHECK(crc32c("123456789", 9) == 0xE3069283U);
  CHECK(crc32c("", 0) == 0U);
  // The 8-byte fast path and the byte loop agree: any split of the input gives the same CRC.
  std::string text;
  for (int i = 0; i < 1000; ++i)
    text += static_cast<char>(i * 37 + 11);
  const std::uint32_t whole = crc32c(text.data(), text.size());
  for (std::size_t split : {1U, 7U, 8U, 13U, 999U}) {
    CHECK(crc32c(text.data() + split, text.size() - split, crc32c(text.data(), split)) == whole);
  }
  CHECK(crc32c_hex(0xE3069283U) == "0xe3069283");
}

TEST_CASE("checkpoints round-trip bit-exactly", "[checkpoint]") {
  test::TempDir dir;
  const Model m = make_model(0.5F);
  const Json state = {{"data_position", 12345}, {"rng", {1, 2, 3, 4}}, {"plan", {{"ep", 2}}}};
  save_checkpoint(dir / "ckpt", 20, state, m.views());
  CHECK(folder_names(dir.path()) == std::vector<std::string>{"ckpt"});  // no temporary left

  const Checkpoint c = load_checkpoint(dir / "ckpt");
  CHECK(c.step == 20);
  CHECK(c.state == state);
  REQUIRE(c.tensors.size() == 2);
  CHECK(c.tensors[0].name == "model.layers.0.mlp.w1");
  CHECK(c.tensors[0].shape == std::vector<std::int64_t>{6, 5});
  CHECK(std::memcmp(c.tensor("model.layers.0.mlp.w1").data.data(), m.w1.data(), 30 * 4) == 0);
  CHECK(std::memcmp(c.tensor("model.norm.weight").data.data(), m.norm.data(), 5 * 4) == 0);

  std::vector<float> out(5);
  c.copy_to("model.norm.weight", out.data(), std::vector<std::int64_t>{5});
  CHECK(std::memcmp(out.data(), m.norm.data(), 5 * 4) == 0);
  CHECK_THROWS_WITH(c.copy_to("model.norm.weight", out.data(), std::vector<std::int64_t>{4}),
                    Contains("model.norm.weight: expected shape [4], the checkpoint has [5]"));
  CHECK_THROWS_WITH(c.tensor("lm_head.weight"), Contains("missing tensor lm_head.weight"));

  // The tensors file is an ordinary safetensors file with the same names.
  SafetensorsReader st(dir / "ckpt" / kCheckpointTensors);
  CHECK(st.read_f32("model.layers.0.mlp.w1") == m.w1);
}

TEST_CASE("a corrupted checkpoint is refused with the tensor named", "[checkpoint]") {
  test::TempDir dir;
  const Model m = make_model(1.0F);
  save_checkpoint(dir / "ckpt", 3, Json::object(), m.views());
  const fs::path file = dir / "ckpt" / kCheckpointTensors;
  const Json manifest = read_json_file(dir / "ckpt" / kCheckpointManifest);

  SECTION("a flipped byte in a tensor") {
    flip_byte(file, manifest["tensors"][0]["offset"].get<std::uint64_t>() + 17);
    CHECK_THROWS_WITH(load_checkpoint(dir / "ckpt"),
                      Contains("ckpt/tensors.safetensors: checksum mismatch for "
                               "model.layers.0.mlp.w1 (checkpoint corrupted)"));
  }
  SECTION("a flipped byte in the safetensors header") {
    flip_byte(file, 20);
    CHECK_THROWS_WITH(load_checkpoint(dir / "ckpt"),
                      Contains("checksum mismatch in the safetensors header"));
  }
  SECTION("a truncated tensors file") {
    fs::resize_file(file, fs::file_size(file) - 4);
    CHECK_THROWS_WITH(load_checkpoint(dir / "ckpt"), Contains("truncated or corrupted"));
  }
  SECTION("a manifest with an unknown key") {
    Json bad = manifest;
    bad["extra"] = 1;
    std::ofstream(dir / "ckpt" / kCheckpointManifest) << bad.dump();
    CHECK_THROWS_WITH(load_checkpoint(dir / "ckpt"), Contains("extra"));
  }
  SECTION("a missing folder") {
    CHECK_THROWS_WITH(load_checkpoint(dir / "other"), Contains("no such checkpoint folder"));
  }
}

TEST_CASE("saving replaces a checkpoint atomically and never a foreign folder", "[checkpoint]") {
  test::TempDir dir;
  save_checkpoint(dir / "ckpt", 1, Json::object(), make_model(1.0F).views());
  const Model second = make_model(2.0F);
  save_checkpoint(dir / "ckpt", 2, Json::object(), second.views());
  CHECK(folder_names(dir.path()) == std::vector<std::string>{"ckpt"});
  const Checkpoint c = load_checkpoint(dir / "ckpt");
  CHECK(c.step == 2);
  CHECK(c.tensor("model.layers.0.mlp.w1").data == second.w1);

  fs::create_directories(dir / "mine");
  dir.write("mine/notes.txt", "precious");
  CHECK_THROWS_WITH(save_checkpoint(dir / "mine", 1, Json::object(), second.views()),
                    Contains("is not a moetune checkpoint; refusing to replace it"));
  CHECK(test::read_text(dir / "mine" / "notes.txt") == "precious");
}

TEST_CASE("an interrupted save leaves the previous checkpoint loadable", "[checkpoint]") {
  test::TempDir dir;
  const fs::path parent = dir / "run";
  const Model m = make_model(1.0F);
  CHECK_FALSE(latest_checkpoint(parent).has_value());
  save_step_checkpoint(parent, 10, {{"data_position", 640}}, m.views());
  // What a crash in the middle of saving step 20 leaves: a temporary folder with part of a file.
  fs::create_directories(parent / "step-00000020.tmp-a1b2c3");
  std::ofstream(parent / "step-00000020.tmp-a1b2c3" / kCheckpointTensors) << "partial";
  std::ofstream(parent / "step-00000020.tmp-a1b2c3" / kCheckpointManifest) << "{\"schema_ver";

  const auto latest = latest_checkpoint(parent);
  REQUIRE(latest.has_value());
  CHECK(latest->filename() == "step-00000010");
  const Checkpoint c = load_checkpoint(*latest);
  CHECK(c.step == 10);
  CHECK(c.state["data_position"] == 640);
  CHECK(c.tensor("model.layers.0.mlp.w1").data == m.w1);

  // A crash between moving the old checkpoint aside and moving the new one in.
  save_checkpoint(dir / "ckpt", 1, Json::object(), m.views());
  fs::rename(dir / "ckpt", dir / "ckpt.old-x1y2z3");
  CHECK_THROWS_WITH(load_checkpoint(dir / "ckpt"), Contains("ckpt.old-x1y2z3: rename it to"));
}

TEST_CASE("step checkpoints are found newest first and pruned", "[checkpoint]") {
  test::TempDir dir;
  const Model m = make_model(1.0F);
  CHECK(step_checkpoint_dir(dir.path(), 20).filename() == "step-00000020");
  for (std::int64_t step : {5, 100, 20, 40}) {
    save_step_checkpoint(dir.path(), step, Json::object(), m.views(), 3);
  }
  CHECK(folder_names(dir.path()) ==
        std::vector<std::string>{"step-00000020", "step-00000040", "step-00000100"});
  CHECK(latest_checkpoint(dir.path())->filename() == "step-00000100");
}
