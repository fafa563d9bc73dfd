// Validation of the simulator against published MoE training measurements
// (profiles/validation/published.json): every entry whose layout moetune can express is predicted
// and compared in tokens/s per GPU; the others carry the reason they are skipped. Used by
// bench/sim_accuracy (prints the table) and by the accuracy test (asserts the median error).
#pragma once

#include <string>
#include <vector>

#include "core/json_reader.hpp"

namespace moetune::simulator {

struct PublishedOutcome {
  std::string id;
  std::string note;  // why skipped, empty when compared
  double measured = 0, predicted = 0;
  double error() const { return (predicted - measured) / measured; }
};

// One outcome per entry of a published.json document, in order.
std::vector<PublishedOutcome> evaluate_published(const Json& doc);

// Median and mean absolute relative error over the compared outcomes (0 when none).
struct ErrorSummary {
  std::size_t compared = 0;
  double median = 0, mean = 0;
};
ErrorSummary summarise(const std::vector<PublishedOutcome>& outcomes);

}  // namespace moetune::simulator
