// Running moetune's own child processes (mpirun for profile's collectives, `moetune launch` for
// tune's trials) without a shell, with output to a file and a wall-clock limit.
#pragma once

#include <string>
#include <vector>

namespace moetune::cli {

struct ChildResult {
  int exit_status = 0;     // the child's exit status; 128 + signal when killed by one
  bool timed_out = false;  // killed because the limit passed
  double seconds = 0;
};

// Runs argv[0] (looked up on PATH) with `argv`, extra environment `env` ("NAME=value") added to
// this process's, stdout and stderr appended to `log_file` (empty: inherited). With
// `limit_s` > 0 the child's whole process group is killed when the limit passes.
ChildResult run_child(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                      const std::string& log_file, double limit_s);

// This executable's path (/proc/self/exe).
std::string self_executable();

}  // namespace moetune::cli
