// Hugging Face safetensors, read and written: u64 little-endian header length, a JSON header
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {string: string}}, then the
// data (offsets relative to its start). Reading takes one file or a sharded checkpoint folder with
// model.safetensors.index.json ("weight_map": {tensor: file}); F64, F32, F16 and BF16 convert to
// float or double. Writing makes F32 or F64 files, atomically. Every error names the file and the
// tensor.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "core/json_reader.hpp"

namespace moetune::executor {

// A tensor the caller owns, for writing: `data` holds product(shape) values, row-major.
struct NamedTensor {
  std::string name;
  std::vector<std::int64_t> shape;
  const float* data = nullptr;
};
struct NamedTensorF64 {
  std::string name;
  std::vector<std::int64_t> shape;
  const double* data = nullptr;
};

// Where one tensor lives: `offset` is absolute in `file`.
struct SafetensorsEntry {
  std::string name;
  std::string dtype;  // as in the header: "F32", "BF16", ...
  std::vector<std::int64_t> shape;
  std::filesystem::path file;
  std::uint64_t offset = 0;
  std::uint64_t bytes = 0;
};

// "[64, 32]".
std::string shape_to_string(std::span<const std::int64_t> shape);
std::int64_t shape_numel(std::span<const std::int64_t> shape);

class SafetensorsReader {
 public:
  SafetensorsReader() = default;
  // A .safetensors file, a model.safetensors.index.json, or a folder with either
  // model.safetensors.index.json or model.safetensors. Headers are read and checked here; data is
  // read on demand.
  explicit SafetensorsReader(const std::filesystem::path& path_or_dir);
  void open(const std::filesystem::path& path_or_dir);

  bool has(const std::string& name) const;
  std::vector<std::string> names() const;  // sorted
  const SafetensorsEntry& entry(const std::string& name) const;
  const std::vector<std::int64_t>& shape(const std::string& name) const;
  // The "__metadata__" of a single file; of every file, merged, for a sharded checkpoint.
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // What was opened, for messages.
  const std::filesystem::path& origin() const { return origin_; }

  // Reads a tensor into `out` (product(expected_shape) values), converting from its dtype.
  // InputError "model.safetensors: model.layers.0.self_attn.q_proj.weight: expected shape [64, 64],
  // the file has [64, 32]" or "...: missing tensor NAME".
  void read(const std::string& name, float* out,
            std::span<const std::int64_t> expected_shape) const;
  void read(const std::string& name, double* out,
            std::span<const std::int64_t> expected_shape) const;
  // The whole tensor, whatever its shape.
  std::vector<float> read_f32(const std::string& name) const;
  std::vector<double> read_f64(const std::string& name) const;

 private:
  void add_file(const std::filesystem::path& file, const std::string& only_from_index);
  const SafetensorsEntry& require(const std::string& name) const;
  template <typename T>
  void read_as(const SafetensorsEntry& e, T* out) const;

  std::filesystem::path origin_;
  std::map<std::string, SafetensorsEntry> entries_;
  std::map<std::string, std::string> metadata_;
};

// Writes one safetensors file atomically, tensors in the order given, and returns where each
// landed (offsets absolute in the file). InputError for duplicate or empty names, a null pointer or
// a negative dimension; nothing is written then.
std::vector<SafetensorsEntry> write_safetensors(
    const std::filesystem::path& file, std::span<const NamedTensor> tensors,
    const std::map<std::string, std::string>& metadata = {});
std::vector<SafetensorsEntry> write_safetensors(
    const std::filesystem::path& file, std::span<const NamedTensorF64> tensors,
    const std::map<std::string, std::string>& metadata = {});

}  // namespace moetune::executor
