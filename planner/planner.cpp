// Layout enumeration, ranking and the Pareto front.
#include "planner/planner.hpp"

#include <algorithm>

#include "core/error.hpp"
#include "core/mesh.hpp"
#include "simulator/simulator.hpp"

namespace moetune::planner {

std::string to_string(Objective objective) {
  switch (objective) {
    case Objective::Throughput:
      return "throughput";
    case Objective::Cost:
      return "cost";
    case Objective::Memory:
      return "memory";
  }
  return "throughput";
}

Objective parse_objective(const std::string& text) {
  if (text == "throughput") return Objective::Throughput;
  if (text == "cost") return Objective::Cost;
  if (text == "memory") return Objective::Memory;
  throw InputError("objective \"" + text + "\" is not one of {throughput, cost, memory}");
}

namespace {

std::vector<std::int64_t> divisors(std::int64_t n) {
  std::vector<std::int64_t> out;
  for (std::int64_t d = 1; d <= n; ++d) {
    if (n % d == 0) out.push_back(d);
  }
  return out;
}

// The pinned value alone (checked by the rules like any other), or every divisor of `n`.
std::vector<std::int64_t> choices(const std::optional<std::int64_t>& pin, std::int64_t n) {
  if (pin) return {*pin};
  return divisors(n);
}

// Every distinct mesh order: tp first, then each permutation of the axes with degree > 1.
std::vector<MeshOrder> distinct_orders(const Layout& l, const std::optional<MeshOrder>& pin) {
  if (pin) {
    Layout pinned = l;
    pinned.order = *pin;
    return {canonical_order(pinned)};
  }
  std::vector<Axis> moving;
  for (Axis a : {Axis::Ep, Axis::Hs, Axis::Rep, Axis::Pp}) {
    if (l.degree(a) > 1) moving.push_back(a);
  }
  std::sort(moving.begin(), moving.end());
  std::vector<MeshOrder> out;
  do {
    MeshOrder order{};
    int n = 0;
    order[n++] = Axis::Tp;
    for (Axis a : moving)
      order[n++] = a;
    for (Axis a : kDefaultOrder) {
      if (a != Axis::Tp && l.degree(a) == 1) order[n++] = a;
    }
    out.push_back(order);
  } while (std::next_permutation(moving.begin(), moving.end()));
  return out;
}

bool better(const Candidate& a, const Candidate& b, Objective objective) {
  if (a.fits != b.fits) return a.fits;
  switch (objective) {
    case Objective::Throughput:
      if (a.tokens_per_s != b.tokens_per_s) return a.tokens_per_s > b.tokens_per_s;
      return a.peak_memory_bytes < b.peak_memory_bytes;
    case Objective::Cost:
      if (a.cost_per_billion_tokens_usd != b.cost_per_billion_tokens_usd) {
        return a.cost_per_billion_tokens_usd < b.cost_per_billion_tokens_usd;
      }
      return a.tokens_per_s > b.tokens_per_s;
    case Objective::Memory:
      if (a.peak_memory_bytes != b.peak_memory_bytes) {
        return a.peak_memory_bytes < b.peak_memory_bytes;
      }
      return a.tokens_per_s > b.tokens_per_s;
  }
  return false;
}

void mark_pareto(std::vector<Candidate>& candidates) {
  std::vector<Candidate*> fitting;
  for (auto& c : candidates) {
    if (c.fits) fitting.push_back(&c);
  }
  std::sort(fitting.begin(), fitting.end(), [](const Candidate* a, const Candidate* b) {
    if (a->peak_memory_bytes != b->peak_memory_bytes) {
      return a->peak_memory_bytes < b->peak_memory_bytes;
    }
    return a->tokens_per_s > b->tokens_per_s;
  });
  double best = -1;
  for (Candidate* c : fitting) {
    if (c->tokens_per_s > best) {
      c->pareto = true;
      best = c->tokens_per_s;
    }
  }
}

}  // namespace

SearchResult search(const ModelSpec& model, const ClusterSpec& cluster, const TrainSpec& train,
                    const SearchOptions& options) {
  const Pins& pins = options.pins;
  const std::int64_t world = cluster.world_size();
  simulator::Simulator sim(model, cluster, train);
  SearchResult result;
  auto reject = [&](const Layout& l, Rejection r) {
    ++result.rejected_by_code[static_cast<std::size_t>(r.code)];
    if (options.keep_rejected) result.rejected.push_back({l, r});
  };
  const std::vector<Recompute> recomputes =
      pins.recompute ? std::vector<Recompute>{*pins.recompute}
                     : std::vector<Recompute>{Recompute::None, Recompute::Full};
  // Offloading the optimizer to the host only makes sense where host and device memory differ.
  std::vector<bool> offloads = {false};
  if (pins.optimizer_offload) {
    offloads = {*pins.optimizer_offload};
  } else if (cluster.device.kind == DeviceKind::Gpu) {
    offloads = {false, true};
  }
  const bool activation_offload = pins.activation_offload.value_or(false);

  const std::int64_t layers = model.num_hidden_layers;
  // Pipeline depths: the divisors of the layer count (even stages), and any other depth up to
  // the layer count that divides the devices, with uneven first and last stages.
  std::vector<std::int64_t> pps;
  if (pins.pp) {
    pps = {*pins.pp};
  } else {
    for (std::int64_t pp = 1; pp <= layers; ++pp) {
      if (layers % pp == 0 || (world % pp == 0 && uneven_split(layers, pp, 1))) pps.push_back(pp);
    }
  }
  for (std::int64_t tp : choices(pins.tp, cluster.devices_per_node)) {
    for (std::int64_t pp : pps) {
      if (world % (tp * pp) != 0 && !pins.tp && !pins.pp) continue;
      const bool even = layers % pp == 0;
      const std::int64_t layers_per_stage = std::max<std::int64_t>(1, layers / pp);
      std::vector<std::int64_t> vpps;
      if (pins.vpp) {
        vpps = {*pins.vpp};
      } else if (pp == 1) {
        vpps = {1};
      } else if (even) {
        vpps = divisors(layers_per_stage);
      } else {
        for (std::int64_t v : divisors(layers_per_stage + 1)) {
          if (uneven_split(layers, pp, v)) vpps.push_back(v);
        }
        if (vpps.empty()) vpps = {1};  // rejected below with its reason
      }
      for (std::int64_t vpp : vpps) {
        StageSplit split;
        if (pins.stage_split) {
          split = *pins.stage_split;
        } else if (!even && pp > 1) {
          split = uneven_split(layers, pp, vpp).value_or(StageSplit{});
        }
        for (std::int64_t ep : choices(pins.ep, model.num_local_experts)) {
          const std::int64_t rest = world / std::max<std::int64_t>(1, tp * pp * ep);
          if (!pins.ep && world % (tp * pp * ep) != 0) continue;
          // When tp * pp * ep leaves no whole number of devices, one layout stands for all.
          const std::vector<std::int64_t> hss =
              world % (tp * pp * ep) == 0 ? choices(pins.hs, std::max<std::int64_t>(rest, 1))
                                          : std::vector<std::int64_t>{pins.hs.value_or(1)};
          for (std::int64_t hs : hss) {
            Layout l;
            l.tp = tp;
            l.pp = pp;
            l.vpp = vpp;
            l.first_stage_layers = split.first;
            l.last_stage_layers = split.last;
            l.ep = ep;
            l.hs = hs;
            const std::int64_t inner = tp * pp * ep * hs;
            l.rep = (inner > 0 && world % inner == 0) ? world / inner : 0;
            l.recompute = recomputes.front();
            l.optimizer_offload = offloads.front();
            l.activation_offload = activation_offload;
            l.distributed_optimizer =
                pins.distributed_optimizer.value_or(true) && l.dense_replicas() > 1;
            if (pins.order) l.order = *pins.order;
            const std::int64_t dp = l.dp();
            std::vector<std::int64_t> mbs;
            if (pins.micro_batch) {
              mbs = {*pins.micro_batch};
            } else if (dp > 0 && train.global_batch % dp == 0) {
              mbs = divisors(train.global_batch / dp);
            } else {
              mbs = {1};
            }
            bool orders_ready = false;
            std::vector<MeshOrder> orders;
            std::vector<Mesh> meshes;
            for (std::int64_t mb : mbs) {
              l.micro_batch = mb;
              const auto per_variant =
                  static_cast<std::int64_t>(recomputes.size() * offloads.size());
              if (auto r = check_layout(model, cluster, train, l)) {
                result.considered += per_variant;
                Layout shown = l;  // the rules ignore order, recompute and offloading
                shown.order = pins.order ? *pins.order : kDefaultOrder;
                shown.recompute = recomputes.front();
                shown.optimizer_offload = offloads.front();
                reject(shown, *r);
                continue;
              }
              if (!orders_ready) {
                orders = distinct_orders(l, pins.order);
                for (const MeshOrder& order : orders) {
                  Layout o = l;
                  o.order = order;
                  meshes.emplace_back(o, cluster.devices_per_node);
                }
                orders_ready = true;
              }
              for (std::size_t i = 0; i < orders.size(); ++i) {
                l.order = orders[i];
                for (Recompute rc : recomputes) {
                  l.recompute = rc;
                  for (bool offload : offloads) {
                    l.optimizer_offload = offload;
                    const Prediction p = sim.predict(l, meshes[i], false);
                    ++result.considered;
                    ++result.simulated;
                    Candidate c;
                    c.layout = l;
                    c.fits = p.fits;
                    c.peak_memory_bytes = p.peak_memory_bytes;
                    c.step_time_s = p.step_time_s;
                    c.tokens_per_s = p.tokens_per_s;
                    c.mfu = p.mfu;
                    c.cost_per_billion_tokens_usd = p.cost_per_billion_tokens_usd;
                    result.fitting += p.fits ? 1 : 0;
                    result.ranked.push_back(c);
                  }
                }
              }
            }
          }
        }
      }
    }
  }
  mark_pareto(result.ranked);
  Objective objective = options.objective;
  if (objective == Objective::Cost && cluster.price_per_node_hour_usd <= 0) {
    objective = Objective::Throughput;  // free hardware: cost ranks like throughput
  }
  std::sort(result.ranked.begin(), result.ranked.end(),
            [&](const Candidate& a, const Candidate& b) { return better(a, b, objective); });
  return result;
}

Plan make_plan(const ModelSpec& model, const ClusterSpec& cluster, const TrainSpec& train,
               const Layout& layout) {
  Plan plan{model, cluster, train, layout, std::nullopt};
  plan.prediction = simulator::simulate(plan);
  return plan;
}

}  // namespace moetune::planner
