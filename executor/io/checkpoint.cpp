// Checkpoints: atomic save into a temporary folder renamed into place, verified load, and the
// step-numbered folders a trainer resumes from.
#include "executor/io/checkpoint.hpp"

#include <stdlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>

#include "core/error.hpp"
#include "executor/io/binary_io.hpp"

namespace moetune::executor {

namespace fs = std::filesystem;

namespace {

constexpr const char* kFormat = "moetune-checkpoint";
constexpr std::int64_t kMaxBytes = std::int64_t{1} << 50;

// A new empty folder next to `dir` named DIR<suffix>XXXXXX.
fs::path make_sibling_dir(const fs::path& dir, const std::string& suffix) {
  std::string pattern = dir.string() + suffix + "XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) {
    throw InputError(dir.string() + ": cannot create a folder beside it: " + std::strerror(errno));
  }
  return fs::path(pattern);
}

fs::path parent_of(const fs::path& dir) {
  return dir.has_parent_path() ? dir.parent_path() : fs::path(".");
}

// "step-00000020" -> 20; anything else (including step-00000020.tmp-XXXXXX) -> nullopt.
std::optional<std::int64_t> parse_step_name(const std::string& name) {
  constexpr std::string_view kPrefix = "step-";
  if (!name.starts_with(kPrefix) || name.size() == kPrefix.size() || name.size() > 23) {
    return std::nullopt;
  }
  std::int64_t step = 0;
  for (std::size_t i = kPrefix.size(); i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return std::nullopt;
    step = step * 10 + (name[i] - '0');
  }
  return step;
}

std::vector<std::pair<std::int64_t, fs::path>> step_dirs(const fs::path& parent) {
  std::vector<std::pair<std::int64_t, fs::path>> found;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(parent, ec)) {
    const auto step = parse_step_name(entry.path().filename().string());
    if (step && fs::is_regular_file(entry.path() / kCheckpointManifest, ec)) {
      found.emplace_back(*step, entry.path());
    }
  }
  std::sort(found.begin(), found.end());
  return found;
}

void check_file_name(const std::string& file, const std::string& where) {
  if (file.empty() || file.find('/') != std::string::npos || file == "." || file == "..") {
    throw InputError(where + ": \"" + file + "\" is not a file name inside the checkpoint");
  }
}

}  // namespace

bool Checkpoint::has(const std::string& name) const {
  return std::any_of(tensors.begin(), tensors.end(),
                     [&](const CheckpointTensor& t) { return t.name == name; });
}

const CheckpointTensor& Checkpoint::tensor(const std::string& name) const {
  for (const CheckpointTensor& t : tensors) {
    if (t.name == name) return t;
  }
  throw InputError(dir.string() + ": missing tensor " + name + " (the checkpoint has " +
                   std::to_string(tensors.size()) + " tensors)");
}

void Checkpoint::copy_to(const std::string& name, float* out,
                         std::span<const std::int64_t> shape) const {
  const CheckpointTensor& t = tensor(name);
  if (!std::equal(t.shape.begin(), t.shape.end(), shape.begin(), shape.end())) {
    throw InputError(dir.string() + ": " + name + ": expected shape " + shape_to_string(shape) +
                     ", the checkpoint has " + shape_to_string(t.shape));
  }
  std::copy(t.data.begin(), t.data.end(), out);
}

void save_checkpoint(const fs::path& dir, std::int64_t step, const Json& state,
                     std::span<const NamedTensor> tensors) {
  if (step < 0) throw InputError(dir.string() + ": step " + std::to_string(step) + " is negative");
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_empty(dir, ec) &&
      !fs::is_regular_file(dir / kCheckpointManifest, ec)) {
    throw InputError(dir.string() +
                     ": exists and is not a moetune checkpoint; refusing to replace "
                     "it (choose another folder)");
  }
  fs::create_directories(parent_of(dir), ec);
  if (ec) throw InputError(parent_of(dir).string() + ": cannot create folder: " + ec.message());

  const fs::path temp = make_sibling_dir(dir, ".tmp-");
  try {
    const fs::path tensors_file = temp / kCheckpointTensors;
    const std::vector<SafetensorsEntry> entries = write_safetensors(
        tensors_file, tensors, {{"format", "pt"}, {"moetune_step", std::to_string(step)}});
    const std::uint64_t file_bytes = fs::file_size(tensors_file);
    std::uint64_t data_bytes = 0;
    for (const SafetensorsEntry& e : entries)
      data_bytes += e.bytes;
    const std::uint64_t header_bytes = file_bytes - data_bytes;
    std::string header(header_bytes, '\0');
    read_file_range(tensors_file, 0, header_bytes, header.data());

    Json manifest;
    manifest["schema_version"] = kSchemaVersion;
    manifest["format"] = kFormat;
    manifest["step"] = step;
    manifest["checksum"] = "crc32c";
    manifest["state"] = state;
    manifest["files"] =
        Json::array({Json{{"file", kCheckpointTensors},
                          {"bytes", file_bytes},
                          {"header_bytes", header_bytes},
                          {"header_crc32c", crc32c_hex(crc32c(header.data(), header.size()))}}});
    Json list = Json::array();
    for (std::size_t i = 0; i < entries.size(); ++i) {
      const SafetensorsEntry& e = entries[i];
      list.push_back({{"name", e.name},
                      {"dtype", e.dtype},
                      {"shape", e.shape},
                      {"file", kCheckpointTensors},
                      {"offset", e.offset},
                      {"bytes", e.bytes},
                      {"crc32c", crc32c_hex(crc32c(tensors[i].data, e.bytes))}});
    }
    manifest["tensors"] = list;
    write_file_synced(temp / kCheckpointManifest, manifest.dump(1) + "\n");
    fsync_directory(temp);
  } catch (...) {
    fs::remove_all(temp, ec);
    throw;
  }

  // Swap into place. Between the two renames no DIR exists; load_checkpoint then points at the
  // DIR.old-XXXXXX folder that still holds the previous checkpoint.
  fs::path old;
  if (fs::exists(dir, ec)) {
    old = make_sibling_dir(dir, ".old-");
    fs::rename(dir, old, ec);
    if (ec) {
      fs::remove_all(temp, ec);
      fs::remove(old, ec);
      throw InputError(dir.string() + ": cannot move the previous checkpoint aside");
    }
  }
  fs::rename(temp, dir, ec);
  if (ec) {
    const std::string why = ec.message();
    if (!old.empty()) fs::rename(old, dir, ec);
    fs::remove_all(temp, ec);
    throw InputError(dir.string() + ": cannot move the new checkpoint into place: " + why);
  }
  fsync_directory(parent_of(dir));
  if (!old.empty()) fs::remove_all(old, ec);
}

Checkpoint load_checkpoint(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    std::string hint;
    for (const auto& entry : fs::directory_iterator(parent_of(dir), ec)) {
      const std::string name = entry.path().filename().string();
      if (name.starts_with(dir.filename().string() + ".old-")) {
        hint = "; an interrupted save left the previous checkpoint in " + entry.path().string() +
               ": rename it to " + dir.string();
      }
    }
    throw InputError(dir.string() + ": no such checkpoint folder" + hint);
  }
  const fs::path manifest_file = dir / kCheckpointManifest;
  const Json manifest = read_json_file(manifest_file);
  Checkpoint ckpt;
  ckpt.dir = dir;
  JsonObjectReader r(manifest, manifest_file.string());
  r.expect_schema_version();
  if (r.get_string("format") != kFormat) r.fail("format", "must be \"moetune-checkpoint\"");
  ckpt.step = r.get_int("step", 0, std::int64_t{1} << 53);
  (void)r.get_enum("checksum", {"crc32c"});
  ckpt.state = r.get_raw("state");

  std::map<std::string, std::uint64_t> file_sizes;
  const Json& files = r.get_raw("files");
  if (!files.is_array()) r.fail("files", "must be a list");
  for (std::size_t i = 0; i < files.size(); ++i) {
    JsonObjectReader f(files[i], manifest_file.string() + ": files[" + std::to_string(i) + "]");
    const std::string file = f.get_string("file");
    check_file_name(file, f.path());
    const auto bytes = static_cast<std::uint64_t>(f.get_int("bytes", 0, kMaxBytes));
    const auto header_bytes = static_cast<std::uint64_t>(f.get_int("header_bytes", 0, kMaxBytes));
    const std::string header_crc = f.get_string("header_crc32c");
    f.finish();
    const fs::path path = dir / file;
    if (!fs::is_regular_file(path, ec))
      throw InputError(path.string() + ": missing from checkpoint");
    if (fs::file_size(path, ec) != bytes || header_bytes > bytes) {
      throw InputError(path.string() + ": " + std::to_string(fs::file_size(path, ec)) +
                       " bytes, the manifest says " + std::to_string(bytes) +
                       " (checkpoint truncated or corrupted)");
    }
    std::string header(header_bytes, '\0');
    read_file_range(path, 0, header_bytes, header.data());
    if (crc32c_hex(crc32c(header.data(), header.size())) != header_crc) {
      throw InputError(path.string() +
                       ": checksum mismatch in the safetensors header "
                       "(checkpoint corrupted)");
    }
    file_sizes[file] = bytes;
  }

  const Json& list = r.get_raw("tensors");
  if (!list.is_array()) r.fail("tensors", "must be a list");
  for (std::size_t i = 0; i < list.size(); ++i) {
    JsonObjectReader t(list[i], manifest_file.string() + ": tensors[" + std::to_string(i) + "]");
    CheckpointTensor tensor;
    tensor.name = t.get_string("name");
    (void)t.get_enum("dtype", {"F32"});
    tensor.shape = t.get_int_list("shape", 0, kMaxBytes);
    const std::string file = t.get_string("file");
    const auto offset = static_cast<std::uint64_t>(t.get_int("offset", 0, kMaxBytes));
    const auto bytes = static_cast<std::uint64_t>(t.get_int("bytes", 0, kMaxBytes));
    const std::string crc = t.get_string("crc32c");
    t.finish();
    const auto size = file_sizes.find(file);
    if (size == file_sizes.end()) t.fail("file", "\"" + file + "\" is not listed under files");
    if (bytes != static_cast<std::uint64_t>(shape_numel(tensor.shape)) * 4 ||
        offset > size->second || bytes > size->second - offset) {
      throw InputError(t.path() + ": " + tensor.name + " does not fit its shape " +
                       shape_to_string(tensor.shape) + " or its file (manifest corrupted)");
    }
    tensor.data.resize(bytes / 4);
    const fs::path path = dir / file;
    read_file_range(path, offset, bytes, tensor.data.data());
    if (crc32c_hex(crc32c(tensor.data.data(), bytes)) != crc) {
      throw InputError(path.string() + ": checksum mismatch for " + tensor.name +
                       " (checkpoint corrupted)");
    }
    ckpt.tensors.push_back(std::move(tensor));
  }
  r.finish();
  return ckpt;
}

fs::path step_checkpoint_dir(const fs::path& parent, std::int64_t step) {
  char name[32];
  std::snprintf(name, sizeof name, "step-%08lld", static_cast<long long>(step));
  return parent / name;
}

std::optional<fs::path> latest_checkpoint(const fs::path& parent) {
  const auto found = step_dirs(parent);
  if (found.empty()) return std::nullopt;
  return found.back().second;
}

fs::path save_step_checkpoint(const fs::path& parent, std::int64_t step, const Json& state,
                              std::span<const NamedTensor> tensors, int keep_last) {
  const fs::path dir = step_checkpoint_dir(parent, step);
  save_checkpoint(dir, step, state, tensors);
  if (keep_last > 0) {
    const auto found = step_dirs(parent);
    std::error_code ec;
    for (std::size_t i = 0; i + static_cast<std::size_t>(keep_last) < found.size(); ++i) {
      fs::remove_all(found[i].second, ec);
    }
  }
  return dir;
}

}  // namespace moetune::executor
