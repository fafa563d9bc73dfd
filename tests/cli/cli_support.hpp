// Running the moetune binary from tests: spawn it without a shell, capture stdout, stderr and the
// exit status, and check the one-line error contract.
#pragma once

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>

#include <string>
#include <vector>

#include "test_support.hpp"

#ifndef MOETUNE_BINARY
#error "MOETUNE_BINARY must be defined by tests/CMakeLists.txt"
#endif

extern char** environ;

namespace moetune::test {

struct Result {
  int status = -1;  // exit status, or -1 when killed by a signal
  std::string out;
  std::string err;
};

// Runs the binary with `args` (no shell), stdout and stderr captured through files.
inline Result run_moetune(const std::vector<std::string>& args) {
  TempDir dir;
  const std::string out_file = (dir / "stdout").string();
  const std::string err_file = (dir / "stderr").string();
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, out_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0644);
  posix_spawn_file_actions_addopen(&actions, 2, err_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0644);
  std::vector<std::string> argv_text = {MOETUNE_BINARY};
  argv_text.insert(argv_text.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : argv_text)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, MOETUNE_BINARY, &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  Result r;
  if (rc != 0) return r;
  int wstatus = 0;
  if (waitpid(pid, &wstatus, 0) != pid) return r;
  r.status = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1;
  r.out = moetune::test::read_text(out_file);
  r.err = moetune::test::read_text(err_file);
  return r;
}

// Exit status 2 and one line "moetune: error: ...\n" on stderr, nothing on stdout.
inline void check_one_error_line(const Result& r, const std::string& must_contain = "") {
  INFO("stderr: " << r.err);
  CHECK(r.status == 2);
  CHECK(r.err.rfind("moetune: error: ", 0) == 0);
  REQUIRE_FALSE(r.err.empty());
  CHECK(r.err.back() == '\n');
  CHECK(r.err.find('\n') == r.err.size() - 1);  // exactly one line
  CHECK(r.out.empty());
  if (!must_contain.empty()) CHECK_THAT(r.err, Catch::Contains(must_contain));
}

inline std::vector<std::string> with(std::vector<std::string> head,
                                     const std::vector<std::string>& tail) {
  head.insert(head.end(), tail.begin(), tail.end());
  return head;
}

}  // namespace moetune::test

using moetune::test::check_one_error_line;
using moetune::test::Result;
using moetune::test::run_moetune;
using moetune::test::with;
