// Exports of a plan to other tools: Megatron-LM command-line arguments and a SageMaker model
// parallelism (SMP v2) configuration. What the target cannot express is refused with a reason, or,
// where the run is still right but laid out differently, returned as a note.
#pragma once

#include <string>
#include <vector>

#include "core/plan.hpp"

namespace moetune::planner {

struct Export {
  std::string text;                // what to hand to the tool
  std::vector<std::string> notes;  // differences a user should know about
};

Export export_megatron(const Plan& plan);
// Throws InputError for what SMP v2 cannot do (pipeline parallelism, expert parallelism together
// with tensor parallelism, optimizer offloading).
Export export_smp(const Plan& plan);

}  // namespace moetune::planner
