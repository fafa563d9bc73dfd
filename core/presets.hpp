// Named presets shipped in profiles/ (models, devices, clusters) and loading by name or path.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "core/hardware.hpp"
#include "core/model_spec.hpp"

namespace moetune {

// The profiles folder: $MOETUNE_PROFILES_DIR, else <prefix>/share/moetune/profiles next to the
// installed binary, else the source tree's profiles/.
std::filesystem::path profiles_dir();
// Preset names in profiles/<kind>/ ("models", "gpus", "clusters"), sorted.
std::vector<std::string> preset_names(const std::string& kind);

// `spec` is a preset name or a path to a JSON file: moetune's model format, or a Hugging Face
// config.json (recognised by its model_type).
ModelSpec load_model(const std::string& spec);
HardwareProfile load_device(const std::string& spec);
// `nodes` and `devices_per_node` override the file's values when given.
ClusterSpec load_cluster(const std::string& spec, std::optional<std::int64_t> nodes,
                         std::optional<std::int64_t> devices_per_node);

}  // namespace moetune
