// Errors shared by every library: InputError for anything a person or a file got wrong (front ends
// turn it into one line and exit status 2), and MOETUNE_CHECK for internal invariants that stay on
// in release builds.
#pragma once

#include <stdexcept>
#include <string>

namespace moetune {

// Bad input from a person or a file. The message says what is wrong, where, and what would be
// valid.
class InputError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A broken internal invariant: a bug in moetune, never the user's fault.
class InternalError : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

[[noreturn]] void fail_check(const char* expr, const char* file, int line, const std::string& what);

}  // namespace moetune

// Cheap invariant checks, kept in release builds.
#define MOETUNE_CHECK(cond, what)                                          \
  do {                                                                     \
    if (!(cond)) ::moetune::fail_check(#cond, __FILE__, __LINE__, (what)); \
  } while (0)
