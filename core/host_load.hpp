// How busy other processes keep this machine while a child runs: measurements of CPU-bound runs on
// a shared machine are only worth comparing when nothing else took the cores. Linux: /proc/stat and
// getrusage of waited-for children.
#pragma once

#include <chrono>

namespace moetune {

// A run counts as undisturbed when other processes kept fewer cores than this busy on average.
inline constexpr double kQuietCores = 0.2;

// CPU seconds the whole machine spent busy (steal included: another guest held the core), and
// those of this process's waited-for descendants, at one instant.
struct CpuSample {
  double machine_busy_s = 0;
  double children_s = 0;
  std::chrono::steady_clock::time_point at;
};

CpuSample cpu_sample();

// Mean number of cores that processes other than this one's waited-for children kept busy
// between two samples.
double other_cores(const CpuSample& before, const CpuSample& after);

}  // namespace moetune
