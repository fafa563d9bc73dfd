// Machine load from /proc/stat and the children's rusage.
#include "core/host_load.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <string>

namespace moetune {

CpuSample cpu_sample() {
  CpuSample s;
  s.at = std::chrono::steady_clock::now();
  std::ifstream stat("/proc/stat");
  std::string cpu;
  double user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
  stat >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal;
  const double tick = static_cast<double>(::sysconf(_SC_CLK_TCK));
  s.machine_busy_s = (user + nice + system + irq + softirq + steal) / tick;
  rusage r{};
  ::getrusage(RUSAGE_CHILDREN, &r);
  auto seconds = [](const timeval& t) {
    return static_cast<double>(t.tv_sec) + 1e-6 * static_cast<double>(t.tv_usec);
  };
  s.children_s = seconds(r.ru_utime) + seconds(r.ru_stime);
  return s;
}

double other_cores(const CpuSample& before, const CpuSample& after) {
  const double wall = std::chrono::duration<double>(after.at - before.at).count();
  const double other =
      (after.machine_busy_s - before.machine_busy_s) - (after.children_s - before.children_s);
  return wall > 0 ? std::max(0.0, other / wall) : 0.0;
}

}  // namespace moetune
