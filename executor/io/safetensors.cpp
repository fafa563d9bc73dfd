// Safetensors reading (single file or sharded folder, strict header checks) and writing.
#include "executor/io/safetensors.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <set>

#include "core/error.hpp"
#include "executor/io/binary_io.hpp"

namespace moetune::executor {

namespace fs = std::filesystem;

namespace {

// transformers' and the safetensors crate's limit; a larger "header" is a corrupt length.
constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;
constexpr const char* kIndexName = "model.safetensors.index.json";

// Bytes per element of every dtype the format defines (so offsets can be checked even for tensors
// that are never converted); 0 for an unknown name.
std::uint64_t dtype_bytes(const std::string& dtype) {
  static const std::map<std::string, std::uint64_t> sizes = {
      {"F64", 8}, {"F32", 4}, {"F16", 2},  {"BF16", 2},    {"I64", 8},
      {"U64", 8}, {"I32", 4}, {"U32", 4},  {"I16", 2},     {"U16", 2},
      {"I8", 1},  {"U8", 1},  {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1}};
  const auto it = sizes.find(dtype);
  return it == sizes.end() ? 0 : it->second;
}

float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000U) << 16;
  const std::uint32_t exponent = (h >> 10) & 0x1FU;
  const std::uint32_t mantissa = h & 0x3FFU;
  std::uint32_t bits;
  if (exponent == 0) {
    if (mantissa == 0) {
      bits = sign;
    } else {  // subnormal: mantissa * 2^-24
      const float magnitude = static_cast<float>(mantissa) * 0x1.0p-24F;
      std::memcpy(&bits, &magnitude, 4);
      bits |= sign;
    }
  } else if (exponent == 31) {
    bits = sign | 0x7F800000U | (mantissa << 13);
  } else {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

float bf16_to_float(std::uint16_t b) {
  const std::uint32_t bits = static_cast<std::uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

std::string entry_context(const fs::path& file, const std::string& name) {
  return file.filename().string() + ": " + name;
}

template <typename T>
std::vector<SafetensorsEntry> write_typed(const fs::path& file, std::span<const T> tensors,
                                          const std::map<std::string, std::string>& metadata,
                                          const char* dtype) {
  using Value = std::remove_cv_t<std::remove_pointer_t<decltype(T::data)>>;
  Json header = Json::object();
  if (!metadata.empty()) {
    Json meta = Json::object();
    for (const auto& [key, value] : metadata)
      meta[key] = value;
    header["__metadata__"] = meta;
  }
  std::set<std::string> seen;
  std::vector<SafetensorsEntry> entries;
  std::uint64_t offset = 0;
  for (const T& t : tensors) {
    const std::string where = file.string() + ": tensor \"" + t.name + "\"";
    if (t.name.empty() || t.name == "__metadata__") throw InputError(where + ": invalid name");
    if (!seen.insert(t.name).second) throw InputError(where + ": written twice");
    for (std::int64_t d : t.shape) {
      if (d < 0) throw InputError(where + ": negative dimension in " + shape_to_string(t.shape));
    }
    const std::uint64_t bytes = static_cast<std::uint64_t>(shape_numel(t.shape)) * sizeof(Value);
    if (t.data == nullptr && bytes > 0) throw InputError(where + ": no data");
    header[t.name] = {
        {"dtype", dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    entries.push_back({t.name, dtype, t.shape, file, offset, bytes});
    offset += bytes;
  }
  std::string json = header.dump();
  // Pad with spaces so the data starts 8-byte aligned, as the safetensors crate does.
  json.append((8 - json.size() % 8) % 8, ' ');
  std::string prefix;
  append_le<std::uint64_t>(prefix, json.size());
  prefix += json;
  for (SafetensorsEntry& e : entries)
    e.offset += prefix.size();

  AtomicFileWriter out(file);
  out.write(prefix);
  for (const T& t : tensors) {
    out.write(t.data, static_cast<std::size_t>(shape_numel(t.shape)) * sizeof(Value));
  }
  out.commit();
  return entries;
}

}  // namespace

std::string shape_to_string(std::span<const std::int64_t> shape) {
  std::string text = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    text += (i == 0 ? "" : ", ") + std::to_string(shape[i]);
  }
  return text + "]";
}

std::int64_t shape_numel(std::span<const std::int64_t> shape) {
  std::int64_t n = 1;
  for (std::int64_t d : shape)
    n *= d;
  return n;
}

SafetensorsReader::SafetensorsReader(const fs::path& path_or_dir) {
  open(path_or_dir);
}

void SafetensorsReader::open(const fs::path& path_or_dir) {
  entries_.clear();
  metadata_.clear();
  origin_ = path_or_dir;
  std::error_code ec;
  fs::path index;
  if (fs::is_directory(path_or_dir, ec)) {
    if (fs::is_regular_file(path_or_dir / kIndexName, ec)) {
      index = path_or_dir / kIndexName;
    } else if (fs::is_regular_file(path_or_dir / "model.safetensors", ec)) {
      add_file(path_or_dir / "model.safetensors", "");
      return;
    } else {
      throw InputError(path_or_dir.string() + ": holds neither " + kIndexName +
                       " nor model.safetensors");
    }
  } else if (path_or_dir.filename().string().ends_with(".index.json")) {
    index = path_or_dir;
  } else {
    add_file(path_or_dir, "");
    return;
  }
  const Json json = read_json_file(index);
  if (!json.is_object() || !json.contains("weight_map") || !json["weight_map"].is_object()) {
    throw InputError(index.string() + ": no \"weight_map\" object");
  }
  // weight_map: tensor -> file. Each file is read once; it must hold the tensors mapped to it.
  std::map<std::string, std::vector<std::string>> by_file;
  for (auto it = json["weight_map"].begin(); it != json["weight_map"].end(); ++it) {
    if (!it.value().is_string()) {
      throw InputError(index.string() + ": weight_map." + it.key() + " is not a file name");
    }
    const std::string shard = it.value().get<std::string>();
    if (shard.empty() || shard.find('/') != std::string::npos || shard == "..") {
      throw InputError(index.string() + ": weight_map." + it.key() + ": \"" + shard +
                       "\" is not a file name in the same folder");
    }
    by_file[shard].push_back(it.key());
  }
  for (const auto& [shard, names] : by_file) {
    add_file(index.parent_path() / shard, index.filename().string());
    for (const std::string& name : names) {
      const auto found = entries_.find(name);
      if (found == entries_.end() || found->second.file.filename() != shard) {
        throw InputError(index.string() + ": weight_map puts " + name + " in " + shard +
                         ", which does not hold it");
      }
    }
  }
}

void SafetensorsReader::add_file(const fs::path& file, const std::string& only_from_index) {
  std::error_code ec;
  if (!fs::is_regular_file(file, ec)) {
    throw InputError(file.string() + ": no such file" +
                     (only_from_index.empty() ? "" : " (named in " + only_from_index + ")"));
  }
  const std::uint64_t file_size = fs::file_size(file, ec);
  const std::string name = file.string();
  if (ec || file_size < 8)
    throw InputError(name + ": not a safetensors file (shorter than 8 bytes)");
  std::uint64_t header_size = 0;
  read_file_range(file, 0, 8, &header_size);
  if (header_size > kMaxHeaderBytes || header_size > file_size - 8) {
    throw InputError(name + ": header length " + std::to_string(header_size) +
                     " does not fit in the file of " + std::to_string(file_size) +
                     " bytes (not a safetensors file, or truncated)");
  }
  std::string text(header_size, '\0');
  read_file_range(file, 8, header_size, text.data());
  Json header;
  try {
    header = Json::parse(text);
  } catch (const Json::parse_error& e) {
    throw InputError(name + ": header is not valid JSON (" + e.what() + ")");
  }
  if (!header.is_object()) throw InputError(name + ": header is not a JSON object");
  const std::uint64_t data_start = 8 + header_size;
  const std::uint64_t data_size = file_size - data_start;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;  // [begin, end) of each tensor
  std::vector<std::string> range_names;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& key = it.key();
    const Json& value = it.value();
    if (key == "__metadata__") {
      if (!value.is_object()) throw InputError(name + ": __metadata__ is not an object");
      for (auto m = value.begin(); m != value.end(); ++m) {
        if (!m.value().is_string()) {
          throw InputError(name + ": __metadata__." + m.key() + " is not a string");
        }
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = entry_context(file, key);
    if (entries_.count(key) != 0) {
      throw InputError(where + ": also in " + entries_.at(key).file.string());
    }
    if (!value.is_object() || value.size() != 3 || !value.contains("dtype") ||
        !value.contains("shape") || !value.contains("data_offsets")) {
      throw InputError(where + ": header entry must have exactly dtype, shape and data_offsets");
    }
    SafetensorsEntry e;
    e.name = key;
    e.file = file;
    if (!value["dtype"].is_string()) throw InputError(where + ": dtype is not a string");
    e.dtype = value["dtype"].get<std::string>();
    const std::uint64_t element = dtype_bytes(e.dtype);
    if (element == 0) throw InputError(where + ": unknown dtype \"" + e.dtype + "\"");
    if (!value["shape"].is_array()) throw InputError(where + ": shape is not a list");
    std::uint64_t numel = 1;
    for (const Json& d : value["shape"]) {
      if (!d.is_number_unsigned() || d.get<std::uint64_t>() > (std::uint64_t{1} << 40)) {
        throw InputError(where + ": shape " + value["shape"].dump() + " is not a list of sizes");
      }
      const std::uint64_t size = d.get<std::uint64_t>();
      if (size != 0 && numel > file_size / size) {
        throw InputError(where + ": shape " + value["shape"].dump() + " is larger than the file");
      }
      numel *= size;
      e.shape.push_back(static_cast<std::int64_t>(size));
    }
    const Json& offsets = value["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
        !offsets[1].is_number_unsigned()) {
      throw InputError(where + ": data_offsets must be [begin, end]");
    }
    const std::uint64_t begin = offsets[0].get<std::uint64_t>();
    const std::uint64_t end = offsets[1].get<std::uint64_t>();
    if (begin > end || end > data_size) {
      throw InputError(where + ": data_offsets [" + std::to_string(begin) + ", " +
                       std::to_string(end) + "] lie outside the " + std::to_string(data_size) +
                       " data bytes (truncated or corrupted file)");
    }
    if (end - begin != numel * element) {
      throw InputError(where + ": data_offsets span " + std::to_string(end - begin) +
                       " bytes but " + e.dtype + " " + shape_to_string(e.shape) + " needs " +
                       std::to_string(numel * element));
    }
    e.offset = data_start + begin;
    e.bytes = end - begin;
    ranges.emplace_back(begin, end);
    range_names.push_back(key);
    entries_.emplace(key, std::move(e));
  }
  std::vector<std::size_t> order(ranges.size());
  for (std::size_t i = 0; i < order.size(); ++i)
    order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](std::size_t a, std::size_t b) { return ranges[a] < ranges[b]; });
  for (std::size_t i = 1; i < order.size(); ++i) {
    const auto& prev = ranges[order[i - 1]];
    const auto& cur = ranges[order[i]];
    if (cur.first < prev.second && cur.first != cur.second) {
      throw InputError(name + ": tensors " + range_names[order[i - 1]] + " and " +
                       range_names[order[i]] + " overlap in the data");
    }
  }
}

bool SafetensorsReader::has(const std::string& name) const {
  return entries_.count(name) != 0;
}

std::vector<std::string> SafetensorsReader::names() const {
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (const auto& [name, e] : entries_)
    out.push_back(name);
  return out;
}

const SafetensorsEntry& SafetensorsReader::require(const std::string& name) const {
  const auto it = entries_.find(name);
  if (it == entries_.end()) {
    throw InputError(origin_.string() + ": missing tensor " + name + " (the file has " +
                     std::to_string(entries_.size()) + " tensors)");
  }
  return it->second;
}

const SafetensorsEntry& SafetensorsReader::entry(const std::string& name) const {
  return require(name);
}

const std::vector<std::int64_t>& SafetensorsReader::shape(const std::string& name) const {
  return require(name).shape;
}

template <typename T>
void SafetensorsReader::read_as(const SafetensorsEntry& e, T* out) const {
  const std::size_t n = static_cast<std::size_t>(shape_numel(e.shape));
  if (e.dtype == "F32" && sizeof(T) == 4) {
    read_file_range(e.file, e.offset, e.bytes, out);
    return;
  }
  if (e.dtype == "F64" && sizeof(T) == 8) {
    read_file_range(e.file, e.offset, e.bytes, out);
    return;
  }
  std::string raw(e.bytes, '\0');
  read_file_range(e.file, e.offset, e.bytes, raw.data());
  const std::string_view bytes(raw);
  if (e.dtype == "F32") {
    for (std::size_t i = 0; i < n; ++i)
      out[i] = static_cast<T>(load_le<float>(bytes, i * 4));
  } else if (e.dtype == "F64") {
    for (std::size_t i = 0; i < n; ++i)
      out[i] = static_cast<T>(load_le<double>(bytes, i * 8));
  } else if (e.dtype == "F16") {
    for (std::size_t i = 0; i < n; ++i)
      out[i] = half_to_float(load_le<std::uint16_t>(bytes, i * 2));
  } else if (e.dtype == "BF16") {
    for (std::size_t i = 0; i < n; ++i)
      out[i] = bf16_to_float(load_le<std::uint16_t>(bytes, i * 2));
  } else {
    throw InputError(entry_context(e.file, e.name) + ": dtype " + e.dtype +
                     " cannot be read as floating point (F64, F32, F16 and BF16 can)");
  }
}

void SafetensorsReader::read(const std::string& name, float* out,
                             std::span<const std::int64_t> expected_shape) const {
  const SafetensorsEntry& e = require(name);
  if (!std::equal(e.shape.begin(), e.shape.end(), expected_shape.begin(), expected_shape.end())) {
    throw InputError(entry_context(e.file, name) + ": expected shape " +
                     shape_to_string(expected_shape) + ", the file has " +
                     shape_to_string(e.shape));
  }
  read_as(e, out);
}

void SafetensorsReader::read(const std::string& name, double* out,
                             std::span<const std::int64_t> expected_shape) const {
  const SafetensorsEntry& e = require(name);
  if (!std::equal(e.shape.begin(), e.shape.end(), expected_shape.begin(), expected_shape.end())) {
    throw InputError(entry_context(e.file, name) + ": expected shape " +
                     shape_to_string(expected_shape) + ", the file has " +
                     shape_to_string(e.shape));
  }
  read_as(e, out);
}

std::vector<float> SafetensorsReader::read_f32(const std::string& name) const {
  const SafetensorsEntry& e = require(name);
  std::vector<float> out(static_cast<std::size_t>(shape_numel(e.shape)));
  read_as(e, out.data());
  return out;
}

std::vector<double> SafetensorsReader::read_f64(const std::string& name) const {
  const SafetensorsEntry& e = require(name);
  std::vector<double> out(static_cast<std::size_t>(shape_numel(e.shape)));
  read_as(e, out.data());
  return out;
}

std::vector<SafetensorsEntry> write_safetensors(
    const fs::path& file, std::span<const NamedTensor> tensors,
    const std::map<std::string, std::string>& metadata) {
  return write_typed(file, tensors, metadata, "F32");
}

std::vector<SafetensorsEntry> write_safetensors(
    const fs::path& file, std::span<const NamedTensorF64> tensors,
    const std::map<std::string, std::string>& metadata) {
  return write_typed(file, tensors, metadata, "F64");
}

}  // namespace moetune::executor
