// The simulator against the published MoE training runs in profiles/validation/published.json
// (the same evaluation bench/sim_accuracy prints): the median absolute error in tokens/s per GPU
// over the entries moetune can express stays within 15%, the target of issue #3.
#include <catch2/catch.hpp>

#include "core/presets.hpp"
#include "simulator/validation.hpp"

using namespace moetune;

TEST_CASE("published MoE runs: median absolute throughput error within 15%",
          "[simulator][validation]") {
  const auto outcomes = simulator::evaluate_published(
      read_json_file(profiles_dir() / "validation" / "published.json"));
  REQUIRE(outcomes.size() >= 6);  // the issue asks for at least 6 published measurements
  for (const simulator::PublishedOutcome& o : outcomes) {
    INFO(o.id << (o.note.empty() ? "" : " skipped: " + o.note));
    if (o.note.empty()) {
      CHECK(o.measured > 0);
      CHECK(o.predicted > 0);
    }
  }
  const simulator::ErrorSummary s = simulator::summarise(outcomes);
  // Mixtral 8x7B on H100 (two Megatron releases) and on B200 (NeMo), and Qwen3-30B-A3B on H100
  // and B200 must all be compared, so the median cannot come from a convenient subset.
  REQUIRE(s.compared >= 5);
  INFO("median " << 100.0 * s.median << "%, mean " << 100.0 * s.mean << "% over " << s.compared);
  CHECK(s.median <= 0.15);
}
