// Layout rules and their explanations.
#include "core/constraints.hpp"

#include <sstream>
#include <vector>

namespace moetune {

namespace {

std::vector<std::int64_t> divisors(std::int64_t n) {
  std::vector<std::int64_t> out;
  for (std::int64_t d = 1; d <= n; ++d) {
    if (n % d == 0) out.push_back(d);
  }
  return out;
}

std::string set_of(const std::vector<std::int64_t>& values) {
  std::string out = "{";
  for (std::size_t i = 0; i < values.size(); ++i) {
    out += (i ? ", " : "") + std::to_string(values[i]);
  }
  return out + "}";
}

// Divisors of n that also divide every value in `also`.
std::string valid_divisors(std::int64_t n, std::initializer_list<std::int64_t> also = {}) {
  std::vector<std::int64_t> out;
  for (std::int64_t d : divisors(n)) {
    bool ok = true;
    for (std::int64_t a : also)
      ok = ok && a % d == 0;
    if (ok) out.push_back(d);
  }
  return set_of(out);
}

}  // namespace

std::int64_t grad_accum_steps(const TrainSpec& train, const Layout& layout) {
  const std::int64_t per_step = layout.micro_batch * layout.dp();
  return per_step > 0 ? train.global_batch / per_step : 0;
}

std::optional<Rejection> check_layout(const ModelSpec& m, const ClusterSpec& c, const TrainSpec& t,
                                      const Layout& l) {
  auto reject = [](RejectCode code) { return std::optional<Rejection>(Rejection{code}); };
  if (l.order[0] != Axis::Tp) return reject(RejectCode::TpNotInnermost);
  if (c.devices_per_node % l.tp != 0) return reject(RejectCode::TpNode);
  if (m.num_attention_heads % l.tp != 0) return reject(RejectCode::TpHeads);
  if (m.num_key_value_heads % l.tp != 0) return reject(RejectCode::TpKvHeads);
  if (m.moe_intermediate_size % l.tp != 0 || m.intermediate_size % l.tp != 0 ||
      m.shared_expert_intermediate_size % l.tp != 0) {
    return reject(RejectCode::TpFfn);
  }
  if (m.vocab_size % l.tp != 0) return reject(RejectCode::TpVocab);
  if (t.seq_len % l.tp != 0) return reject(RejectCode::TpSequence);
  if (l.vpp > 1 && l.pp == 1) return reject(RejectCode::VppWithoutPp);
  if (!l.uneven_stages()) {
    if (m.num_hidden_layers % l.pp != 0) return reject(RejectCode::PpLayers);
    if (m.num_hidden_layers % (l.pp * l.vpp) != 0) return reject(RejectCode::VppLayers);
  } else {
    // First and last stages as given, the middle ones equal, every stage whole virtual stages.
    const std::int64_t first = l.first_stage_layers, last = l.last_stage_layers;
    const std::int64_t rest = m.num_hidden_layers - first - last;
    const bool adds_up = l.pp >= 2 && first >= 1 && last >= 1 &&
                         (l.pp == 2 ? rest == 0 : rest >= l.pp - 2 && rest % (l.pp - 2) == 0);
    if (!adds_up || first % l.vpp != 0 || last % l.vpp != 0 ||
        (l.pp > 2 && (rest / (l.pp - 2)) % l.vpp != 0)) {
      return reject(RejectCode::StageSplit);
    }
  }
  if (m.num_local_experts % l.ep != 0) return reject(RejectCode::EpExperts);
  if (l.world_size() != c.world_size()) return reject(RejectCode::WorldSize);
  if (t.global_batch % (l.micro_batch * l.dp()) != 0) return reject(RejectCode::BatchSplit);
  const std::int64_t accum = grad_accum_steps(t, l);
  if (l.pp > 1 && accum < l.pp) return reject(RejectCode::PipelineUnfilled);
  if (l.vpp > 1 && accum % l.pp != 0) return reject(RejectCode::InterleaveBatches);
  if (t.seq_len > m.max_position_embeddings) return reject(RejectCode::SeqTooLong);
  if (t.precision == Precision::Fp8 && c.device.peak_tflops_fp8 <= 0) {
    return reject(RejectCode::NoFp8);
  }
  if (c.device.kind == DeviceKind::Cpu && t.precision != Precision::Fp32) {
    return reject(RejectCode::CpuPrecision);
  }
  return std::nullopt;
}

std::string explain(Rejection rejection, const ModelSpec& m, const ClusterSpec& c,
                    const TrainSpec& t, const Layout& l) {
  std::ostringstream s;
  switch (rejection.code) {
    case RejectCode::WorldSize:
      s << "tp*pp*ep*hs*rep = " << l.tp << "*" << l.pp << "*" << l.ep << "*" << l.hs << "*" << l.rep
        << " = " << l.world_size() << " but the cluster has " << c.world_size() << " devices ("
        << c.nodes << " nodes x " << c.devices_per_node << ")";
      break;
    case RejectCode::TpNode:
      s << "tp=" << l.tp << " does not divide " << c.devices_per_node
        << " devices per node (tensor parallel stays inside a node); try tp in "
        << valid_divisors(c.devices_per_node);
      break;
    case RejectCode::TpHeads:
      s << "tp=" << l.tp << " does not divide " << m.num_attention_heads
        << " attention heads; try tp in "
        << valid_divisors(c.devices_per_node, {m.num_attention_heads});
      break;
    case RejectCode::TpKvHeads:
      s << "tp=" << l.tp << " does not divide " << m.num_key_value_heads
        << " key/value heads; try tp in "
        << valid_divisors(c.devices_per_node, {m.num_key_value_heads});
      break;
    case RejectCode::TpFfn:
      s << "tp=" << l.tp << " does not divide the FFN width (expert " << m.moe_intermediate_size
        << ", dense " << m.intermediate_size << ")";
      break;
    case RejectCode::TpVocab:
      s << "tp=" << l.tp << " does not divide the vocabulary of " << m.vocab_size
        << " (vocab-parallel embedding and LM head)";
      break;
    case RejectCode::TpSequence:
      s << "tp=" << l.tp << " does not divide seq_len " << t.seq_len
        << " (sequence parallel splits the sequence over tp)";
      break;
    case RejectCode::PpLayers:
      s << "pp=" << l.pp << " does not divide " << m.num_hidden_layers << " layers; try pp in "
        << valid_divisors(m.num_hidden_layers);
      if (const auto split = uneven_split(m.num_hidden_layers, l.pp, l.vpp)) {
        s << ", or uneven stages: --first-stage-layers " << split->first << " --last-stage-layers "
          << split->last;
      }
      break;
    case RejectCode::StageSplit: {
      s << "uneven stages (first " << l.first_stage_layers << ", last " << l.last_stage_layers
        << " layers) do not split " << m.num_hidden_layers << " layers over pp=" << l.pp
        << " with the middle stages equal";
      if (l.vpp > 1) s << " and every stage a multiple of vpp=" << l.vpp;
      if (const auto split = uneven_split(m.num_hidden_layers, l.pp, l.vpp)) {
        s << "; try --first-stage-layers " << split->first << " --last-stage-layers "
          << split->last;
      }
      break;
    }
    case RejectCode::VppWithoutPp:
      s << "vpp=" << l.vpp << " needs pipeline parallelism (pp > 1)";
      break;
    case RejectCode::VppLayers:
      s << "pp*vpp = " << l.pp * l.vpp << " does not divide " << m.num_hidden_layers
        << " layers; try vpp in " << valid_divisors(m.num_hidden_layers / l.pp);
      break;
    case RejectCode::EpExperts:
      s << "ep=" << l.ep << " does not divide " << m.num_local_experts << " experts; try ep in "
        << valid_divisors(m.num_local_experts);
      break;
    case RejectCode::BatchSplit:
      s << "global batch " << t.global_batch << " is not a multiple of micro-batch "
        << l.micro_batch << " x data-parallel width " << l.dp() << " (ep*hs*rep)";
      break;
    case RejectCode::PipelineUnfilled:
      s << "pp=" << l.pp << " needs at least " << l.pp << " micro-batches per step, got "
        << grad_accum_steps(t, l) << " (global batch " << t.global_batch << " / (micro-batch "
        << l.micro_batch << " x dp " << l.dp() << "))";
      break;
    case RejectCode::InterleaveBatches:
      s << "interleaved pipeline (vpp=" << l.vpp << ") needs the micro-batch count "
        << grad_accum_steps(t, l) << " to be a multiple of pp=" << l.pp;
      break;
    case RejectCode::SeqTooLong:
      s << "seq_len " << t.seq_len << " exceeds the model's max_position_embeddings "
        << m.max_position_embeddings;
      break;
    case RejectCode::NoFp8:
      s << c.device.name << " has no fp8 tensor cores; use --precision bf16";
      break;
    case RejectCode::CpuPrecision:
      s << "CPU devices (" << c.device.name << ") train in fp32; use --precision fp32";
      break;
    case RejectCode::TpNotInnermost:
      s << "the mesh order " << order_to_string(l.order)
        << " must start with tp (tensor-parallel ranks are neighbours inside a node)";
      break;
  }
  return s.str();
}

std::string to_string(RejectCode code) {
  switch (code) {
    case RejectCode::WorldSize:
      return "world_size";
    case RejectCode::TpNode:
      return "tp_node";
    case RejectCode::TpHeads:
      return "tp_heads";
    case RejectCode::TpKvHeads:
      return "tp_kv_heads";
    case RejectCode::TpFfn:
      return "tp_ffn";
    case RejectCode::TpVocab:
      return "tp_vocab";
    case RejectCode::TpSequence:
      return "tp_sequence";
    case RejectCode::PpLayers:
      return "pp_layers";
    case RejectCode::StageSplit:
      return "stage_split";
    case RejectCode::VppWithoutPp:
      return "vpp_without_pp";
    case RejectCode::VppLayers:
      return "vpp_layers";
    case RejectCode::EpExperts:
      return "ep_experts";
    case RejectCode::BatchSplit:
      return "batch_split";
    case RejectCode::PipelineUnfilled:
      return "pipeline_unfilled";
    case RejectCode::InterleaveBatches:
      return "interleave_batches";
    case RejectCode::SeqTooLong:
      return "seq_too_long";
    case RejectCode::NoFp8:
      return "no_fp8";
    case RejectCode::CpuPrecision:
      return "cpu_precision";
    case RejectCode::TpNotInnermost:
      return "tp_not_innermost";
  }
  return "unknown";
}

}  // namespace moetune
