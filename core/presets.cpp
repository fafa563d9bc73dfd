// Preset lookup and loading.
#include "core/presets.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>

#include "core/error.hpp"

#ifndef MOETUNE_SOURCE_PROFILES_DIR
#define MOETUNE_SOURCE_PROFILES_DIR "profiles"
#endif

namespace moetune {

namespace fs = std::filesystem;

fs::path profiles_dir() {
  if (const char* env = std::getenv("MOETUNE_PROFILES_DIR"); env != nullptr && *env != '\0') {
    return fs::path(env);
  }
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    fs::path installed = exe.parent_path().parent_path() / "share" / "moetune" / "profiles";
    if (fs::is_directory(installed, ec)) return installed;
  }
  return fs::path(MOETUNE_SOURCE_PROFILES_DIR);
}

std::vector<std::string> preset_names(const std::string& kind) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(profiles_dir() / kind, ec)) {
    if (entry.path().extension() == ".json") names.push_back(entry.path().stem().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

namespace {

bool looks_like_path(const std::string& spec) {
  return spec.find('/') != std::string::npos ||
         (spec.size() > 5 && spec.compare(spec.size() - 5, 5, ".json") == 0);
}

// Resolves a preset name or path to a file, or fails with the list of presets.
fs::path find_preset(const std::string& kind, const std::string& what, const std::string& spec) {
  if (looks_like_path(spec)) {
    if (!fs::is_regular_file(spec)) throw InputError(what + " file " + spec + " does not exist");
    return fs::path(spec);
  }
  fs::path file = profiles_dir() / kind / (spec + ".json");
  if (!fs::is_regular_file(file)) {
    std::string list;
    for (const auto& n : preset_names(kind))
      list += (list.empty() ? "" : ", ") + n;
    throw InputError("unknown " + what + " \"" + spec + "\"; presets: " + list +
                     " (or a path to a JSON file)");
  }
  return file;
}

HardwareProfile resolve_device(const std::string& name) {
  return load_device(name);
}

}  // namespace

ModelSpec load_model(const std::string& spec) {
  fs::path file = find_preset("models", "model", spec);
  Json json = read_json_file(file);
  if (json.is_object() && json.contains("model_type") && !json.contains("schema_version")) {
    std::string name = file.parent_path().filename().string();
    if (file.filename() != "config.json" || name.empty()) {
      name = file.stem().string();  // "mixtral-8x7b.config.json" -> "mixtral-8x7b"
      if (name.size() > 7 && name.compare(name.size() - 7, 7, ".config") == 0) {
        name.resize(name.size() - 7);
      }
    }
    return model_from_hf_config(json, name, file.string());
  }
  return model_from_json(JsonObjectReader(json, file.string()));
}

HardwareProfile load_device(const std::string& spec) {
  fs::path file = find_preset("gpus", "device", spec);
  return hardware_from_json(JsonObjectReader(read_json_file(file), file.string()));
}

ClusterSpec load_cluster(const std::string& spec, std::optional<std::int64_t> nodes,
                         std::optional<std::int64_t> devices_per_node) {
  fs::path file = find_preset("clusters", "cluster", spec);
  ClusterSpec c =
      cluster_from_json(JsonObjectReader(read_json_file(file), file.string()), &resolve_device);
  if (nodes) {
    if (*nodes < 1) throw InputError("--nodes must be at least 1, got " + std::to_string(*nodes));
    c.nodes = *nodes;
  }
  if (devices_per_node) {
    if (*devices_per_node < 1) {
      throw InputError("--devices-per-node must be at least 1, got " +
                       std::to_string(*devices_per_node));
    }
    c.devices_per_node = *devices_per_node;
  }
  return c;
}

}  // namespace moetune
