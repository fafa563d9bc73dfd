// JSON form of Plan.
#include "core/plan.hpp"

#include "core/constraints.hpp"
#include "core/error.hpp"

namespace moetune {

Json to_json(const Plan& p) {
  Json j;
  j["schema_version"] = kSchemaVersion;
  j["model"] = to_json(p.model);
  j["cluster"] = to_json(p.cluster);
  j["train"] = to_json(p.train);
  j["layout"] = to_json(p.layout);
  j["prediction"] = p.prediction ? to_json(*p.prediction) : Json(nullptr);
  return j;
}

Plan plan_from_json(const Json& json, const std::string& origin) {
  JsonObjectReader r(json, origin);
  r.expect_schema_version();
  Plan p;
  p.model = model_from_json(r.get_object("model"));
  p.cluster = cluster_from_json(r.get_object("cluster"), nullptr);
  p.train = train_from_json(r.get_object("train"));
  p.layout = layout_from_json(r.get_object("layout"));
  const Json& prediction = r.get_raw("prediction");
  if (!prediction.is_null()) {
    p.prediction = prediction_from_json(JsonObjectReader(prediction, origin + ".prediction"));
  }
  r.finish();
  if (auto rejection = check_layout(p.model, p.cluster, p.train, p.layout)) {
    throw InputError(origin + ": layout " + describe(p.layout) + " is not valid: " +
                     explain(*rejection, p.model, p.cluster, p.train, p.layout));
  }
  return p;
}

Plan read_plan_file(const std::filesystem::path& file) {
  return plan_from_json(read_json_file(file), file.string());
}

void write_plan_file(const std::filesystem::path& file, const Plan& plan) {
  write_file_atomically(file, to_json(plan).dump(2) + "\n");
}

}  // namespace moetune
