// Valid values for the layout controls and the nearest valid layout after a change. Runs over
// every valid layout on each change (hundreds of thousands on big clusters), so fields are
// compared as numbers, not as text.
#include "gui/layout_choices.hpp"

#include <algorithm>
#include <set>

namespace moetune::gui {

namespace {

bool numeric(LayoutField f) {
  return f == LayoutField::Tp || f == LayoutField::Pp || f == LayoutField::Vpp ||
         f == LayoutField::Ep || f == LayoutField::Hs || f == LayoutField::MicroBatch;
}

std::int64_t number(const Layout& l, LayoutField f) {
  switch (f) {
    case LayoutField::Tp:
      return l.tp;
    case LayoutField::Pp:
      return l.pp;
    case LayoutField::Vpp:
      return l.vpp;
    case LayoutField::Ep:
      return l.ep;
    case LayoutField::Hs:
      return l.hs;
    case LayoutField::MicroBatch:
      return l.micro_batch;
    default:
      return 0;
  }
}

bool same(const Layout& a, const Layout& b, LayoutField f) {
  switch (f) {
    case LayoutField::Recompute:
      return a.recompute == b.recompute;
    case LayoutField::OptimizerOffload:
      return a.optimizer_offload == b.optimizer_offload;
    case LayoutField::Order:
      return a.order == b.order;
    default:
      return number(a, f) == number(b, f);
  }
}

// `layout` with `field` set to the text `value`; false when the text is no such value.
bool set_field(Layout& l, LayoutField f, const std::string& value) {
  try {
    switch (f) {
      case LayoutField::Recompute:
        l.recompute = parse_recompute(value);
        return true;
      case LayoutField::OptimizerOffload:
        if (value != "on" && value != "off") return false;
        l.optimizer_offload = value == "on";
        return true;
      case LayoutField::Order:
        l.order = parse_order(value);
        return true;
      default:
        break;
    }
    std::size_t used = 0;
    const std::int64_t n = std::stoll(value, &used);
    if (used != value.size()) return false;
    switch (f) {
      case LayoutField::Tp:
        l.tp = n;
        break;
      case LayoutField::Pp:
        l.pp = n;
        break;
      case LayoutField::Vpp:
        l.vpp = n;
        break;
      case LayoutField::Ep:
        l.ep = n;
        break;
      case LayoutField::Hs:
        l.hs = n;
        break;
      case LayoutField::MicroBatch:
        l.micro_batch = n;
        break;
      default:
        return false;
    }
    return true;
  } catch (const std::exception&) {
    return false;
  }
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

std::string field_value(const Layout& l, LayoutField field) {
  switch (field) {
    case LayoutField::Recompute:
      return to_string(l.recompute);
    case LayoutField::OptimizerOffload:
      return l.optimizer_offload ? "on" : "off";
    case LayoutField::Order:
      return order_to_string(l.order);
    default:
      return std::to_string(number(l, field));
  }
}

std::vector<std::string> field_choices(const std::vector<planner::Candidate>& valid,
                                       LayoutField field, const Layout& current) {
  std::vector<std::string> out;
  if (field == LayoutField::Order) {
    std::set<MeshOrder> orders;
    for (const auto& c : valid) {
      if (same_except_order(c.layout, current)) orders.insert(c.layout.order);
    }
    for (const MeshOrder& o : orders)
      out.push_back(order_to_string(o));
    std::sort(out.begin(), out.end());
    return out;
  }
  if (numeric(field)) {
    std::set<std::int64_t> values;
    for (const auto& c : valid)
      values.insert(number(c.layout, field));
    for (std::int64_t v : values)
      out.push_back(std::to_string(v));
    return out;
  }
  std::set<std::string> values;
  bool seen[2] = {};  // recompute none/full, or offload off/on
  for (const auto& c : valid) {
    const int v = field == LayoutField::Recompute ? static_cast<int>(c.layout.recompute)
                                                  : (c.layout.optimizer_offload ? 1 : 0);
    if (!seen[v]) {
      seen[v] = true;
      values.insert(field_value(c.layout, field));
    }
  }
  out.assign(values.begin(), values.end());
  return out;
}

std::optional<Layout> nearest_layout(const std::vector<planner::Candidate>& valid,
                                     const Layout& current, LayoutField field,
                                     const std::string& value) {
  Layout wanted = current;
  if (!set_field(wanted, field, value)) return std::nullopt;
  const planner::Candidate* best = nullptr;
  int best_score = -1;
  for (const auto& c : valid) {
    if (!same(c.layout, wanted, field)) continue;
    int score = 0;
    for (LayoutField other : kLayoutFields) {
      if (other != field && same(c.layout, current, other)) score += weight(other);
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
