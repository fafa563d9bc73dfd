// bench/sim_accuracy: the simulator against published MoE training measurements
// (profiles/validation/published.json). For every entry whose layout moetune can express, predicts
// tokens/s per GPU and prints it beside the measurement, with the error and the median absolute
// error over all entries. Entries moetune cannot express (context parallelism, expert parallelism
// wider than data parallelism, a cluster without a preset) are listed with the reason.
//
// Usage: sim_accuracy [published.json]
#include <cstdio>
#include <string>

#include "core/presets.hpp"
#include "simulator/validation.hpp"

using namespace moetune;

int main(int argc, char** argv) {
  const std::string file =
      argc > 1 ? argv[1] : (profiles_dir() / "validation" / "published.json").string();
  const auto outcomes = simulator::evaluate_published(read_json_file(file));
  std::printf("%-56s %12s %12s %8s\n", "entry", "measured", "predicted", "error");
  for (const simulator::PublishedOutcome& o : outcomes) {
    if (!o.note.empty()) {
      std::printf("%-56s skipped: %s\n", o.id.c_str(), o.note.c_str());
      continue;
    }
    std::printf("%-56s %12.0f %12.0f %+7.1f%%\n", o.id.c_str(), o.measured, o.predicted,
                100.0 * o.error());
  }
  const simulator::ErrorSummary s = simulator::summarise(outcomes);
  if (s.compared == 0) return 0;
  std::printf(
      "\n%zu entries compared (tokens/s per GPU): median absolute error %.1f%%, mean %.1f%%\n",
      s.compared, 100.0 * s.median, 100.0 * s.mean);
  return 0;
}
