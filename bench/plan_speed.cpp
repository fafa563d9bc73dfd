// bench/plan_speed: how fast the planner searches the whole layout space of Mixtral 8x7B on
// 128 x p5.48xlarge (1,024 H100s). Prints layouts considered, layouts simulated per second and the
// time of one full search (median of several runs, so a noisy machine moves it less).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/presets.hpp"
#include "planner/planner.hpp"

int main(int argc, char** argv) {
  using namespace moetune;
  const int runs = argc > 1 ? std::max(1, std::atoi(argv[1])) : 5;
  const ModelSpec model = load_model("mixtral-8x7b");
  const ClusterSpec cluster = load_cluster("p5.48xlarge", 128, std::nullopt);
  TrainSpec train;
  train.seq_len = 4096;
  train.global_batch = 2048;  // 8M tokens per step
  planner::SearchOptions options;
  std::vector<double> seconds;
  planner::SearchResult result;
  for (int i = 0; i < runs; ++i) {
    const auto start = std::chrono::steady_clock::now();
    result = planner::search(model, cluster, train, options);
    const auto stop = std::chrono::steady_clock::now();
    seconds.push_back(std::chrono::duration<double>(stop - start).count());
  }
  std::sort(seconds.begin(), seconds.end());
  const double median = seconds[seconds.size() / 2];
  std::printf("plan_speed: %s on %lld x %s (%lld devices), seq %lld, global batch %lld\n",
              model.name.c_str(), static_cast<long long>(cluster.nodes), cluster.name.c_str(),
              static_cast<long long>(cluster.world_size()), static_cast<long long>(train.seq_len),
              static_cast<long long>(train.global_batch));
  std::printf("layouts considered   %lld\n", static_cast<long long>(result.considered));
  std::printf("layouts simulated    %lld\n", static_cast<long long>(result.simulated));
  std::printf("layouts that fit     %lld\n", static_cast<long long>(result.fitting));
  std::printf("full search          %.3f s (median of %d runs, min %.3f, max %.3f)\n", median, runs,
              seconds.front(), seconds.back());
  std::printf("simulated per second %.0f\n", static_cast<double>(result.simulated) / median);
  if (!result.ranked.empty()) {
    std::printf("best                 %s, %.0f tokens/s\n",
                describe(result.ranked.front().layout).c_str(), result.ranked.front().tokens_per_s);
  }
  return 0;
}
