// Printing a calibration: fitted values with their standard errors, and per run the measured step
// time and phases beside the predictions before and after. Shared by calibrate and tune.
#pragma once

#include <vector>

#include "simulator/calibration.hpp"

namespace moetune::cli {

void print_calibration(const ClusterSpec& base, const std::vector<simulator::Measurement>& runs,
                       const simulator::FitResult& result, bool per_run);

// The profile's predictions beside the measurements, per run and phase, without fitting.
void print_comparison(const ClusterSpec& profile, const std::vector<simulator::Measurement>& runs);

// "ep=2 hs=1 mb=4 none" style short layout name.
std::string short_layout(const Layout& layout);

}  // namespace moetune::cli
