// Which values the layout controls may offer, and which valid layout a change leads to. Only
// layouts the planner found valid (they passed every rule and were simulated) are ever offered,
// so an invalid layout cannot be entered. Plain C++ over the planner's candidates; no Qt.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "planner/planner.hpp"

namespace moetune::gui {

enum class LayoutField { Tp, Pp, Vpp, Ep, Hs, MicroBatch, Recompute, OptimizerOffload, Order };
inline constexpr LayoutField kLayoutFields[] = {
    LayoutField::Tp,        LayoutField::Pp,
    LayoutField::Vpp,       LayoutField::Ep,
    LayoutField::Hs,        LayoutField::MicroBatch,
    LayoutField::Recompute, LayoutField::OptimizerOffload,
    LayoutField::Order};

// The field's value as the controls show it: "4", "full", "on", "tp,ep,hs,rep,pp".
std::string field_value(const Layout& layout, LayoutField field);

// Values of `field` that some valid layout has, numbers ascending. For the mesh order: the orders
// valid for `current`'s degrees and settings (the order only means something for given degrees).
std::vector<std::string> field_choices(const std::vector<planner::Candidate>& valid,
                                       LayoutField field, const Layout& current);

// The valid layout with `field` = `value` that keeps most of `current` (degrees first, then
// micro-batch and settings, then order); among equals the planner's best. Nothing when no valid
// layout has that value.
std::optional<Layout> nearest_layout(const std::vector<planner::Candidate>& valid,
                                     const Layout& current, LayoutField field,
                                     const std::string& value);

// Index of the candidate with exactly this layout, or -1.
int find_candidate(const std::vector<planner::Candidate>& valid, const Layout& layout);

}  // namespace moetune::gui
