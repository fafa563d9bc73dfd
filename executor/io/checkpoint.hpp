// Training checkpoints: a folder holding manifest.json and tensors.safetensors.
//
// manifest.json: {"schema_version": 1, "format": "moetune-checkpoint", "step": N, "checksum":
// "crc32c", "state": {anything the trainer supplies: data position, RNG state, the plan, ...},
// "files": [{"file", "bytes", "header_bytes", "header_crc32c"}], "tensors": [{"name", "dtype":
// "F32", "shape", "file", "offset", "bytes", "crc32c"}]}; offsets absolute in the file, CRC-32C
// (Castagnoli) of each tensor's bytes and of the safetensors header. tensors.safetensors is an
// ordinary safetensors file, so the weights open in transformers / safetensors too.
//
// Saving is atomic: everything is written into DIR.tmp-XXXXXX, each file and the folder fsynced,
// then renamed to DIR (an existing DIR is first renamed to DIR.old-XXXXXX and removed after). A
// crash leaves either the old checkpoint or the new one, plus a stray .tmp-/.old- folder that
// loading ignores. For resuming, a trainer keeps one folder per step under a parent:
// parent/step-00000020, found again with latest_checkpoint(parent).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/json_reader.hpp"
#include "executor/io/safetensors.hpp"

namespace moetune::executor {

inline constexpr const char* kCheckpointManifest = "manifest.json";
inline constexpr const char* kCheckpointTensors = "tensors.safetensors";

struct CheckpointTensor {
  std::string name;
  std::vector<std::int64_t> shape;
  std::vector<float> data;  // [product(shape)]
};

struct Checkpoint {
  std::filesystem::path dir;
  std::int64_t step = 0;
  Json state;
  std::vector<CheckpointTensor> tensors;  // in the order they were saved

  bool has(const std::string& name) const;
  const CheckpointTensor& tensor(const std::string& name) const;  // InputError when missing
  // Copies a tensor into `out` after checking its shape; InputError naming the checkpoint and
  // tensor otherwise ("ckpt: model.norm.weight: expected shape [64], the checkpoint has [32]").
  void copy_to(const std::string& name, float* out, std::span<const std::int64_t> shape) const;
};

// Writes a checkpoint atomically into `dir` (created with its parents; an existing checkpoint there
// is replaced). `state` is stored as given. Tensors must have distinct, non-empty names.
void save_checkpoint(const std::filesystem::path& dir, std::int64_t step, const Json& state,
                     std::span<const NamedTensor> tensors);

// Reads and verifies a checkpoint: manifest schema, file sizes, every tensor's shape and checksum.
// A flipped byte gives InputError "ckpt/tensors.safetensors: checksum mismatch for NAME (checkpoint
// corrupted)".
Checkpoint load_checkpoint(const std::filesystem::path& dir);

// parent/step-00000020: the folder a step's checkpoint goes to.
std::filesystem::path step_checkpoint_dir(const std::filesystem::path& parent, std::int64_t step);
// The step-NNNNNNNN folder with the highest step that holds a manifest, if any; temporary and old
// folders of interrupted saves are ignored.
std::optional<std::filesystem::path> latest_checkpoint(const std::filesystem::path& parent);
// Saves into step_checkpoint_dir(parent, step) and then removes all but the newest `keep_last`
// step folders (0 keeps all). Returns the folder written.
std::filesystem::path save_step_checkpoint(const std::filesystem::path& parent, std::int64_t step,
                                           const Json& state, std::span<const NamedTensor> tensors,
                                           int keep_last = 0);

}  // namespace moetune::executor
