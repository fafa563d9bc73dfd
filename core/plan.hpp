// Plan: model + cluster + training setup + layout (+ the prediction that chose it). plan.json is
// the one contract between planner, GUI and executor; it carries a schema version and round-trips
// exactly.
#pragma once

#include <filesystem>
#include <optional>

#include "core/hardware.hpp"
#include "core/layout.hpp"
#include "core/model_spec.hpp"
#include "core/prediction.hpp"
#include "core/train_spec.hpp"

namespace moetune {

struct Plan {
  ModelSpec model;
  ClusterSpec cluster;
  TrainSpec train;
  Layout layout;
  std::optional<Prediction> prediction;
  bool operator==(const Plan&) const = default;
};

Json to_json(const Plan& plan);
// Reads and re-checks a plan: a layout that breaks a constraint is refused with its reason.
Plan plan_from_json(const Json& json, const std::string& origin);
Plan read_plan_file(const std::filesystem::path& file);
void write_plan_file(const std::filesystem::path& file, const Plan& plan);

}  // namespace moetune
