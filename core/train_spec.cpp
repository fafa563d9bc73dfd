// JSON form of TrainSpec.
#include "core/train_spec.hpp"

#include "core/error.hpp"

namespace moetune {

std::string to_string(LoadBalancing lb) {
  switch (lb) {
    case LoadBalancing::AuxLoss:
      return "aux_loss";
    case LoadBalancing::Sinkhorn:
      return "sinkhorn";
    case LoadBalancing::None:
      return "none";
  }
  return "aux_loss";
}

LoadBalancing parse_load_balancing(const std::string& text) {
  if (text == "aux_loss") return LoadBalancing::AuxLoss;
  if (text == "sinkhorn") return LoadBalancing::Sinkhorn;
  if (text == "none") return LoadBalancing::None;
  throw InputError("load balancing \"" + text + "\" is not one of {aux_loss, sinkhorn, none}");
}

std::string to_string(Dispatcher d) {
  return d == Dispatcher::AllToAll ? "alltoall" : "allgather";
}

Dispatcher parse_dispatcher(const std::string& text) {
  if (text == "alltoall") return Dispatcher::AllToAll;
  if (text == "allgather") return Dispatcher::AllGather;
  throw InputError("dispatcher \"" + text + "\" is not one of {alltoall, allgather}");
}

Json to_json(const TrainSpec& t) {
  Json j;
  j["schema_version"] = kSchemaVersion;
  j["seq_len"] = t.seq_len;
  j["global_batch"] = t.global_batch;
  j["precision"] = to_string(t.precision);
  const OptimizerSpec& o = t.optimizer;
  j["optimizer"] = {{"lr", o.lr},
                    {"min_lr", o.min_lr},
                    {"beta1", o.beta1},
                    {"beta2", o.beta2},
                    {"eps", o.eps},
                    {"weight_decay", o.weight_decay},
                    {"warmup_steps", o.warmup_steps},
                    {"decay_steps", o.decay_steps},
                    {"grad_clip", o.grad_clip}};
  const MoeOptions& m = t.moe;
  j["moe"] = {{"load_balancing", to_string(m.load_balancing)},
              {"aux_loss_coef", m.aux_loss_coef},
              {"z_loss_coef", m.z_loss_coef},
              {"capacity_factor", m.capacity_factor},
              {"dispatcher", to_string(m.dispatcher)},
              {"expert_skew", m.expert_skew},
              {"force_balanced", m.force_balanced}};
  j["seed"] = t.seed;
  return j;
}

TrainSpec train_from_json(JsonObjectReader r) {
  r.expect_schema_version();
  TrainSpec t;
  t.seq_len = r.get_int("seq_len", 1, std::int64_t{1} << 30);
  t.global_batch = r.get_int("global_batch", 1, std::int64_t{1} << 30);
  t.precision = parse_precision(r.get_enum("precision", {"fp32", "bf16", "fp8"}));
  {
    JsonObjectReader o = r.get_object("optimizer");
    t.optimizer.lr = o.get_double("lr", 0, 10);
    t.optimizer.min_lr = o.get_double("min_lr", 0, 10);
    t.optimizer.beta1 = o.get_double("beta1", 0, 0.999999);
    t.optimizer.beta2 = o.get_double("beta2", 0, 0.999999999);
    t.optimizer.eps = o.get_double("eps", 0, 1);
    t.optimizer.weight_decay = o.get_double("weight_decay", 0, 10);
    t.optimizer.warmup_steps = o.get_int("warmup_steps", 0, std::int64_t{1} << 40);
    t.optimizer.decay_steps = o.get_int("decay_steps", 1, std::int64_t{1} << 40);
    t.optimizer.grad_clip = o.get_double("grad_clip", 0, 1e12);
    o.finish();
  }
  {
    JsonObjectReader m = r.get_object("moe");
    t.moe.load_balancing =
        parse_load_balancing(m.get_enum("load_balancing", {"aux_loss", "sinkhorn", "none"}));
    t.moe.aux_loss_coef = m.get_double("aux_loss_coef", 0, 1e6);
    t.moe.z_loss_coef = m.get_double("z_loss_coef", 0, 1e6);
    t.moe.capacity_factor = m.get_double("capacity_factor", 0, 1e6);
    t.moe.dispatcher = parse_dispatcher(m.get_enum("dispatcher", {"alltoall", "allgather"}));
    t.moe.expert_skew = m.get_double("expert_skew", 0, 100);
    t.moe.force_balanced = m.get_bool("force_balanced");
    m.finish();
  }
  const Json& seed = r.get_raw("seed");
  if (!seed.is_number_unsigned() && !(seed.is_number_integer() && seed.get<std::int64_t>() >= 0)) {
    r.fail("seed", "expected a non-negative integer");
  }
  t.seed = seed.get<std::uint64_t>();
  r.finish();
  return t;
}

}  // namespace moetune
