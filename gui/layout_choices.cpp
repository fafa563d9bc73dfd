// Valid values for the layout controls and the nearest valid layout after a change.
#include "gui/layout_choices.hpp"

#include <algorithm>
#include <set>

namespace moetune::gui {

std::string field_value(const Layout& l, LayoutField field) {
  switch (field) {
    case LayoutField::Tp:
      return std::to_string(l.tp);
    case LayoutField::Pp:
      return std::to_string(l.pp);
    case LayoutField::Vpp:
      return std::to_string(l.vpp);
    case LayoutField::Ep:
      return std::to_string(l.ep);
    case LayoutField::Hs:
      return std::to_string(l.hs);
    case LayoutField::MicroBatch:
      return std::to_string(l.micro_batch);
    case LayoutField::Recompute:
      return to_string(l.recompute);
    case LayoutField::OptimizerOffload:
      return l.optimizer_offload ? "on" : "off";
    case LayoutField::Order:
      return order_to_string(l.order);
  }
  return {};
}

namespace {

bool numeric(LayoutField f) {
  return f == LayoutField::Tp || f == LayoutField::Pp || f == LayoutField::Vpp ||
         f == LayoutField::Ep || f == LayoutField::Hs || f == LayoutField::MicroBatch;
}

// How much keeping a field matters when another one changes.
int weight(LayoutField f) {
  if (numeric(f) && f != LayoutField::MicroBatch) return 8;
  if (f == LayoutField::Order) return 1;
  return 2;
}

bool same_except_order(const Layout& a, const Layout& b) {
  Layout x = a;
  x.order = b.order;
  return x == b;
}

}  // namespace

std::vector<std::string> field_choices(const std::vector<planner::Candidate>& valid,
                                       LayoutField field, const Layout& current) {
  std::vector<std::string> out;
  if (field == LayoutField::Order) {
    std::set<std::string> seen;
    for (const auto& c : valid) {
      if (!same_except_order(c.layout, current)) continue;
      const std::string v = order_to_string(c.layout.order);
      if (seen.insert(v).second) out.push_back(v);
    }
    std::sort(out.begin(), out.end());
    return out;
  }
  if (numeric(field)) {
    std::set<std::int64_t> values;
    for (const auto& c : valid)
      values.insert(std::stoll(field_value(c.layout, field)));
    for (std::int64_t v : values)
      out.push_back(std::to_string(v));
    return out;
  }
  std::set<std::string> values;
  for (const auto& c : valid)
    values.insert(field_value(c.layout, field));
  out.assign(values.begin(), values.end());
  return out;
}

std::optional<Layout> nearest_layout(const std::vector<planner::Candidate>& valid,
                                     const Layout& current, LayoutField field,
                                     const std::string& value) {
  const planner::Candidate* best = nullptr;
  int best_score = -1;
  for (const auto& c : valid) {
    if (field_value(c.layout, field) != value) continue;
    int score = 0;
    for (LayoutField other : kLayoutFields) {
      if (other != field && field_value(c.layout, other) == field_value(current, other)) {
        score += weight(other);
      }
    }
    if (score > best_score) {  // `valid` is ranked: the first of equals is the planner's best
      best = &c;
      best_score = score;
    }
  }
  if (best == nullptr) return std::nullopt;
  return best->layout;
}

int find_candidate(const std::vector<planner::Candidate>& valid, const Layout& layout) {
  for (std::size_t i = 0; i < valid.size(); ++i) {
    if (valid[i].layout == layout) return static_cast<int>(i);
  }
  return -1;
}

}  // namespace moetune::gui
