// Out-of-line part of the invariant checks.
#include "core/error.hpp"

namespace moetune {

void fail_check(const char* expr, const char* file, int line, const std::string& what) {
  throw InternalError(std::string("internal error: ") + what + " (" + expr + " failed at " + file +
                      ":" + std::to_string(line) + ")");
}

}  // namespace moetune
