// Layout: axis names, mesh orders and JSON.
#include "core/layout.hpp"

#include <algorithm>
#include <sstream>

#include "core/error.hpp"

namespace moetune {

std::int64_t Layout::degree(Axis axis) const {
  switch (axis) {
    case Axis::Tp:
      return tp;
    case Axis::Ep:
      return ep;
    case Axis::Hs:
      return hs;
    case Axis::Rep:
      return rep;
    case Axis::Pp:
      return pp;
  }
  return 1;
}

std::string to_string(Axis axis) {
  switch (axis) {
    case Axis::Tp:
      return "tp";
    case Axis::Ep:
      return "ep";
    case Axis::Hs:
      return "hs";
    case Axis::Rep:
      return "rep";
    case Axis::Pp:
      return "pp";
  }
  return "tp";
}

Axis parse_axis(const std::string& text) {
  for (Axis a : kDefaultOrder) {
    if (to_string(a) == text) return a;
  }
  throw InputError("mesh axis \"" + text + "\" is not one of {tp, ep, hs, rep, pp}");
}

std::string to_string(Recompute r) {
  return r == Recompute::None ? "none" : "full";
}

Recompute parse_recompute(const std::string& text) {
  if (text == "none") return Recompute::None;
  if (text == "full") return Recompute::Full;
  throw InputError("recompute \"" + text + "\" is not one of {none, full}");
}

std::string order_to_string(const MeshOrder& order) {
  std::string out;
  for (Axis a : order)
    out += (out.empty() ? "" : ",") + to_string(a);
  return out;
}

MeshOrder parse_order(const std::string& text) {
  std::vector<Axis> seen;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    Axis a = parse_axis(item);
    if (std::find(seen.begin(), seen.end(), a) != seen.end()) {
      throw InputError("mesh order \"" + text + "\" names " + item + " twice");
    }
    seen.push_back(a);
  }
  if (seen.empty()) throw InputError("mesh order is empty; e.g. tp,ep,hs,rep,pp");
  if (seen.front() != Axis::Tp) {
    throw InputError("mesh order \"" + text +
                     "\" must start with tp: tensor-parallel ranks are innermost so they share a "
                     "node");
  }
  for (Axis a : kDefaultOrder) {
    if (std::find(seen.begin(), seen.end(), a) == seen.end()) seen.push_back(a);
  }
  MeshOrder order;
  std::copy(seen.begin(), seen.end(), order.begin());
  return order;
}

MeshOrder canonical_order(const Layout& layout) {
  MeshOrder out;
  int n = 0;
  out[n++] = Axis::Tp;
  for (Axis a : layout.order) {
    if (a != Axis::Tp && layout.degree(a) > 1) out[n++] = a;
  }
  for (Axis a : kDefaultOrder) {
    if (a != Axis::Tp && layout.degree(a) == 1) out[n++] = a;
  }
  return out;
}

std::string describe(const Layout& l) {
  std::ostringstream s;
  s << "tp" << l.tp << " pp" << l.pp;
  if (l.vpp > 1) s << "x" << l.vpp;
  if (l.uneven_stages()) {
    s << "(first " << l.first_stage_layers << ", last " << l.last_stage_layers << " layers)";
  }
  s << " ep" << l.ep << " hs" << l.hs << " rep" << l.rep << " [" << order_to_string(l.order)
    << "] mb" << l.micro_batch << " recompute=" << to_string(l.recompute);
  if (l.optimizer_offload) s << " +opt-offload";
  if (l.activation_offload) s << " +act-offload";
  if (l.distributed_optimizer) s << " +dist-opt";
  return s.str();
}

Json to_json(const Layout& l) {
  Json j;
  j["tp"] = l.tp;
  j["pp"] = l.pp;
  j["vpp"] = l.vpp;
  j["first_stage_layers"] = l.first_stage_layers;
  j["last_stage_layers"] = l.last_stage_layers;
  j["ep"] = l.ep;
  j["hs"] = l.hs;
  j["rep"] = l.rep;
  Json order = Json::array();
  for (Axis a : l.order)
    order.push_back(to_string(a));
  j["order"] = order;
  j["micro_batch"] = l.micro_batch;
  j["recompute"] = to_string(l.recompute);
  j["optimizer_offload"] = l.optimizer_offload;
  j["activation_offload"] = l.activation_offload;
  j["distributed_optimizer"] = l.distributed_optimizer;
  return j;
}

Layout layout_from_json(JsonObjectReader r) {
  Layout l;
  constexpr std::int64_t kMax = std::int64_t{1} << 24;
  l.tp = r.get_int("tp", 1, kMax);
  l.pp = r.get_int("pp", 1, kMax);
  l.vpp = r.get_int("vpp", 1, kMax);
  // Optional: plans written before uneven stages existed split the layers evenly.
  if (r.has("first_stage_layers")) l.first_stage_layers = r.get_int("first_stage_layers", 0, kMax);
  if (r.has("last_stage_layers")) l.last_stage_layers = r.get_int("last_stage_layers", 0, kMax);
  l.ep = r.get_int("ep", 1, kMax);
  l.hs = r.get_int("hs", 1, kMax);
  l.rep = r.get_int("rep", 1, kMax);
  const Json& order = r.get_raw("order");
  if (!order.is_array() || order.size() != kNumAxes) {
    r.fail("order",
           "expected the five axes, innermost first, e.g. [\"tp\",\"ep\",\"hs\",\"rep\",\"pp\"]");
  }
  std::string text;
  for (const auto& a : order) {
    if (!a.is_string()) r.fail("order", "expected axis names");
    text += (text.empty() ? "" : ",") + a.get<std::string>();
  }
  try {
    l.order = parse_order(text);
  } catch (const InputError& e) {
    r.fail("order", e.what());
  }
  l.micro_batch = r.get_int("micro_batch", 1, kMax);
  try {
    l.recompute = parse_recompute(r.get_enum("recompute", {"none", "full"}));
  } catch (const InputError& e) {
    r.fail("recompute", e.what());
  }
  l.optimizer_offload = r.get_bool("optimizer_offload");
  l.activation_offload = r.get_bool("activation_offload");
  // Optional: plans written before the distributed optimizer existed have plain replicas.
  if (r.has("distributed_optimizer")) l.distributed_optimizer = r.get_bool("distributed_optimizer");
  r.finish();
  return l;
}

LayerRange stage_layers(std::int64_t num_layers, const Layout& l, std::int64_t stage) {
  if (!l.uneven_stages()) {
    const std::int64_t per = num_layers / l.pp;
    return {stage * per, (stage + 1) * per};
  }
  if (stage == 0) return {0, l.first_stage_layers};
  if (stage == l.pp - 1) return {num_layers - l.last_stage_layers, num_layers};
  const std::int64_t middle = (num_layers - l.first_stage_layers - l.last_stage_layers) /
                              std::max<std::int64_t>(1, l.pp - 2);
  const std::int64_t begin = l.first_stage_layers + (stage - 1) * middle;
  return {begin, begin + middle};
}

std::optional<StageSplit> uneven_split(std::int64_t num_layers, std::int64_t pp, std::int64_t vpp) {
  if (pp < 2 || vpp < 1) return std::nullopt;
  // The first stage takes the larger half of what the middle stages leave, rounded up to whole
  // virtual stages; the last the rest.
  auto halves = [vpp](std::int64_t rest) -> std::optional<StageSplit> {
    const std::int64_t first = ((rest + 1) / 2 + vpp - 1) / vpp * vpp;
    const std::int64_t last = rest - first;
    if (last < vpp || last % vpp != 0) return std::nullopt;
    return StageSplit{first, last};
  };
  if (pp == 2) return halves(num_layers);
  std::optional<StageSplit> best;
  std::int64_t best_max = 0;
  const std::int64_t ceil_per = (num_layers + pp - 1) / pp;
  for (std::int64_t middle : {ceil_per, num_layers / pp}) {
    if (middle < vpp || middle % vpp != 0) continue;
    const std::int64_t rest = num_layers - (pp - 2) * middle;
    const auto split = rest >= 2 ? halves(rest) : std::nullopt;
    if (!split) continue;
    const std::int64_t biggest = std::max({split->first, split->last, middle});
    if (!best || biggest < best_max) {
      best = split;
      best_max = biggest;
    }
  }
  return best;
}

}  // namespace moetune
