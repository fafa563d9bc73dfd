// The Mixtral model on a backend: the layer loop, recompute, the embedding and the head.
#include "executor/mixtral.hpp"

#include <algorithm>
#include <string>

#include "core/error.hpp"
#include "kernels/cpu/cross_entropy.hpp"
#include "kernels/cpu/moe_losses.hpp"
#include "kernels/cpu/permute.hpp"

namespace moetune::executor {

namespace k = moetune::kernels::cpu;

namespace {

template <class T>
std::size_t sz(T n) {
  return static_cast<std::size_t>(n);
}

int group_size(const Communicator* c) {
  return c != nullptr ? c->size() : 1;
}
int group_rank(const Communicator* c) {
  return c != nullptr ? c->rank() : 0;
}

// Carves typed pieces out of one byte arena. Pieces start at multiples of `align` (a backend on
// a device aligns for its vector loads; the CPU packs them).
class Carver {
 public:
  Carver(void* base, std::size_t align) : base_(static_cast<char*>(base)), align_(align) {}
  void* take(std::size_t bytes) {
    void* p = base_ == nullptr ? nullptr : base_ + used_;
    used_ += (bytes + align_ - 1) / align_ * align_;
    return p;
  }
  std::size_t used() const { return used_; }

 private:
  char* base_;
  std::size_t align_;
  std::size_t used_ = 0;
};

}  // namespace

MixtralModel::MixtralModel(Backend& backend, const ModelSpec& model, const MoeOptions& moe,
                           std::int64_t batch, std::int64_t seq_len, ModelParallel parallel,
                           bool recompute)
    : c_(backend, model, moe, batch, seq_len, parallel),
      recompute_(recompute),
      layout_(model, group_rank(parallel.ep) * (model.num_local_experts / group_size(parallel.ep)),
              model.num_local_experts / group_size(parallel.ep), group_size(parallel.tp),
              group_rank(parallel.tp)),
      attention_(c_),
      moe_(c_) {
  backend.check_supported(model, moe);
  Backend& be = backend;
  const ModelDims& m = c_.dims;
  const std::int64_t layers = model.num_hidden_layers;
  if (moe.capacity_factor > 0) capacity_ = k::expert_capacity(m.n, m.e, m.kk, moe.capacity_factor);
  ids_host_.resize(sz(m.n));
  targets_host_.resize(sz(m.n));
  ids_.resize(be, m.n, DType::I32);
  targets_.resize(be, m.n, DType::I32);
  // Full recompute keeps one set of layer buffers, used by each layer in turn, and every
  // layer's input; otherwise every layer keeps its own.
  acts_.resize(sz(recompute_ ? std::min<std::int64_t>(1, layers) : layers));
  if (recompute_) {
    for (std::int64_t l = 0; l < layers; ++l)
      saved_inputs_.emplace_back(be, m.nl * m.d, c_.act);
    saved_counts_.assign(sz(layers), std::vector<std::int64_t>(sz(m.e)));
  }
  for (LayerActs& a : acts_) {
    if (!recompute_) a.x_in.resize(be, m.nl * m.d, c_.act);
    a.x_mid.resize(be, m.nl * m.d, c_.act);
    a.attention.allocate(c_);
    moe_.allocate(a.moe);
  }
  x_final_.resize(be, m.nl * m.d, c_.act);
  rstd_f_.resize(be, m.nl, DType::F32);
  hf_.resize(be, m.nl * m.d, c_.act);
  logits_.resize(be, m.n * m.vl, c_.act);
  lse_.resize(be, m.n, DType::F32);
  target_loss_.resize(be, m.n, DType::F32);
  if (c_.tp_size > 1) lse_parts_.resize(be, c_.tp_size * m.n, DType::F32);
  losses_host_.resize(sz(m.n));
  stats_.allocate(c_);
  stats_counts_host_.resize(sz(m.e));
  stats_prob_sum_host_.resize(sz(m.e));
  dx_.resize(be, m.nl * m.d, c_.act);
  dx_mid_.resize(be, m.nl * m.d, c_.act);
  dtmp_.resize(be, m.nl * m.d, c_.act);
  dh_.resize(be, m.n * m.d, c_.act);
  // The backward arena: the attention half's gradients, or the MoE half's.
  const std::size_t align = be.on_device() ? 256 : 4;
  const std::int64_t nk = m.n * m.kk;
  auto carve_attention = [&](Carver& c) {
    attention_grads_.dq = c.take(c_.act_bytes(m.n * m.ql));
    attention_grads_.dk = c.take(c_.act_bytes(m.n * m.kvl));
    attention_grads_.dv = c.take(c_.act_bytes(m.n * m.kvl));
    attention_grads_.dctx = c.take(c_.act_bytes(m.n * m.ql));
  };
  auto carve_moe = [&](Carver& c) {
    moe_grads_.router.dlogits = static_cast<float*>(c.take(sz(m.n * m.e) * sizeof(float)));
    moe_grads_.router.dprobs = static_cast<float*>(c.take(sz(m.n * m.e) * sizeof(float)));
    moe_grads_.dtopk_w = static_cast<float*>(c.take(sz(nk) * sizeof(float)));
    moe_grads_.dxp = c.take(c_.act_bytes(nk * m.d));
    moe_grads_.dyp = c.take(c_.act_bytes(nk * m.d));
    moe_grads_.dh1 = c.take(c_.act_bytes(nk * m.f));
    moe_grads_.dh3 = c.take(c_.act_bytes(nk * m.f));
    moe_grads_.router.dlogits_act =
        c_.act == DType::F32 ? moe_grads_.router.dlogits : c.take(c_.act_bytes(m.n * m.e));
  };
  Carver size_a(nullptr, align), size_m(nullptr, align);
  carve_attention(size_a);
  carve_moe(size_m);
  const std::size_t arena_bytes = std::max(size_a.used(), size_m.used());
  arena_.resize(be, static_cast<std::int64_t>(arena_bytes / dtype_size(c_.act)), c_.act);
  Carver a(arena_.data(), align), b(arena_.data(), align);
  carve_attention(a);
  carve_moe(b);
}

MixtralModel::LayerActs& MixtralModel::layer_acts(std::int64_t layer) {
  return acts_[recompute_ ? 0 : sz(layer)];
}

void* MixtralModel::layer_input(std::int64_t layer) {
  return recompute_ ? saved_inputs_[sz(layer)].data() : acts_[sz(layer)].x_in.data();
}

MicroBatchLoss MixtralModel::forward(const void* working, const std::int32_t* ids,
                                     const std::int32_t* targets) {
  FlatParameters flat(working, c_.act, nullptr);
  return forward(flat, ids, targets);
}

void MixtralModel::backward(const void* working, float* grads, double loss_scale) {
  FlatParameters flat(working, c_.act, grads);
  backward(flat, loss_scale);
}

// One layer's forward from its input to x_out. `count`: false when a backward recomputes the
// layer (the routing statistics, the z-loss and the dropped slots were counted by the forward).
void MixtralModel::layer_forward(std::int64_t li, void* x_out, ParameterAccess& access,
                                 bool count) {
  LayerActs& a = layer_acts(li);
  const LayerOffsets& o = layout_.layer(li);
  attention_.forward(a.attention, layer_input(li), a.x_mid.data(), o, access);
  moe_.forward(a.moe, a.x_mid.data(), x_out, o, access, count ? &stats_ : nullptr, capacity_);
  if (!count) return;
  dropped_ += c_.dims.n * c_.dims.kk - a.moe.dispatch.rows;
  if (recompute_) saved_counts_[sz(li)] = a.moe.dispatch.counts_host;
}

MicroBatchLoss MixtralModel::forward(ParameterAccess& access, const std::int32_t* ids,
                                     const std::int32_t* targets) {
  Backend& be = c_.be;
  const ModelDims& m = c_.dims;
  const std::int64_t layers = c_.model.num_hidden_layers;
  for (std::int64_t i = 0; i < m.n; ++i) {
    if (ids[i] < 0 || ids[i] >= m.v) {
      throw InputError("token id " + std::to_string(ids[i]) + " is outside the vocabulary of " +
                       std::to_string(m.v));
    }
    if (targets[i] != k::kIgnoreIndex && (targets[i] < 0 || targets[i] >= m.v)) {
      throw InputError("target " + std::to_string(targets[i]) + " is outside the vocabulary of " +
                       std::to_string(m.v));
    }
  }
  std::copy(ids, ids + m.n, ids_host_.begin());
  std::copy(targets, targets + m.n, targets_host_.begin());
  be.copy_from_host(ids_.data(), ids, ids_.bytes());
  be.copy_from_host(targets_.data(), targets, targets_.bytes());
  stats_.clear(be);
  dropped_ = 0;
  MicroBatchLoss loss;

  access.acquire(0, false);
  embed_forward(access);
  access.release(0, false);
  for (std::int64_t li = 0; li < layers; ++li) {
    access.acquire(1 + li, false);
    layer_forward(li, li + 1 < layers ? layer_input(li + 1) : x_final_.data(), access, true);
    access.release(1 + li, false);
  }
  access.acquire(layers + 1, false);
  head_forward(access, loss);
  access.release(layers + 1, false);
  access.end_pass(false);
  double z = 0;
  be.copy_to_host(&z, stats_.z_sum.data(), sizeof z);
  loss.z = z;
  if (c_.moe.load_balancing != LoadBalancing::Sinkhorn) {
    // Hugging Face's load-balancing loss over the tokens of all layers together, for this
    // micro-batch (per micro-batch, as Megatron: the statistics are this rank's own).
    be.copy_to_host(stats_counts_host_.data(), stats_.counts.data(), stats_.counts.bytes());
    be.copy_to_host(stats_prob_sum_host_.data(), stats_.prob_sum.data(), stats_.prob_sum.bytes());
    loss.aux = k::aux_loss_from_stats(stats_counts_host_.data(), stats_prob_sum_host_.data(),
                                      m.n * layers, m.e);
  }
  return loss;
}

void MixtralModel::backward(ParameterAccess& access, double loss_scale) {
  const std::int64_t layers = c_.model.num_hidden_layers;
  access.acquire(layers + 1, true);
  head_backward(access, loss_scale);
  access.release(layers + 1, true);
  for (std::int64_t li = layers - 1; li >= 0; --li) {
    LayerActs& a = layer_acts(li);
    const LayerOffsets& o = layout_.layer(li);
    access.acquire(1 + li, true);
    if (recompute_) {
      // Full recompute: the layer's forward again from its saved input, into the one set of
      // layer buffers; its output is not needed (dtmp_ is free until the norm backward).
      c_.override_phase = "recompute";
      layer_forward(li, dtmp_.data(), access, false);
      c_.override_phase = nullptr;
    }
    moe_.backward(a.moe, a.x_mid.data(), dx_.data(), dx_mid_.data(), o, access, moe_grads_,
                  dh_.data(), dtmp_.data(), stats_, loss_scale);
    attention_.backward(a.attention, layer_input(li), dx_mid_.data(), dx_.data(), o, access,
                        attention_grads_, dh_.data(), dtmp_.data());
    access.release(1 + li, true);
  }
  access.acquire(0, true);
  embed_backward(access);
  access.release(0, true);
  access.end_pass(true);
}

void MixtralModel::embed_forward(ParameterAccess& access) {
  const ModelDims& m = c_.dims;
  auto phase = c_.phase("lm_head");
  void* x0 = c_.model.num_hidden_layers == 0 ? x_final_.data() : layer_input(0);
  if (c_.tp_size == 1) {
    c_.be.embedding_forward(x0, access.param(layout_.embedding()), ids_.i32(), m.n, 0, m.v, m.d);
  } else {
    // Vocabulary-parallel: this rank's rows, zero elsewhere, summed over tp.
    c_.be.embedding_forward(c_.partial(), access.param(layout_.embedding()), ids_.i32(), m.n,
                            c_.tp_rank * m.vl, m.vl, m.d);
    c_.scatter_sequence(c_.partial(), x0);
  }
}

void MixtralModel::embed_backward(ParameterAccess& access) {
  const ModelDims& m = c_.dims;
  auto phase = c_.phase("lm_head");
  // This rank's vocabulary rows get the gradient of the tokens that use them.
  const void* dx = c_.gather_sequence(dx_.data());
  c_.be.embedding_backward(access.grad(layout_.embedding()), dx, ids_.i32(), m.n, c_.tp_rank * m.vl,
                           m.vl, m.d);
}

void MixtralModel::head_forward(ParameterAccess& access, MicroBatchLoss& loss) {
  Backend& be = c_.be;
  const ModelDims& m = c_.dims;
  auto phase = c_.phase("lm_head");
  be.rmsnorm_forward(hf_.data(), rstd_f_.f32(), x_final_.data(), access.param(layout_.final_norm()),
                     m.nl, m.d, c_.model.rms_norm_eps);
  c_.linear_forward(logits_.data(), c_.gather_sequence(hf_.data()), access.param(layout_.lm_head()),
                    m.n, m.d, m.vl);
  // Cross-entropy over the vocabulary split over tp: each rank's log-sum-exp of its columns,
  // combined over the ranks; the target's logit comes from the rank that holds it.
  be.cross_entropy_partial(lse_.f32(), target_loss_.f32(), logits_.data(), targets_.i32(), m.n,
                           m.vl, c_.tp_rank * m.vl);
  const float* parts = lse_.f32();
  if (c_.tp_size > 1) {
    c_.parallel.tp->all_gather(lse_.data(), lse_parts_.data(), m.n, DType::F32);
    c_.parallel.tp->all_reduce(target_loss_.data(), m.n, DType::F32);
    parts = lse_parts_.f32();
  }
  be.cross_entropy_combine(lse_.f32(), target_loss_.f32(), parts, target_loss_.f32(),
                           targets_.i32(), m.n, c_.tp_size);
  be.copy_to_host(losses_host_.data(), target_loss_.data(), target_loss_.bytes());
  double sum = 0;
  for (float l : losses_host_)
    sum += double(l);
  loss.targets = k::count_targets(targets_host_.data(), m.n);
  loss.ce = loss.targets > 0 ? sum / double(loss.targets) : 0.0;
}

void MixtralModel::head_backward(ParameterAccess& access, double loss_scale) {
  Backend& be = c_.be;
  const ModelDims& m = c_.dims;
  auto phase = c_.phase("lm_head");
  const std::int64_t count = k::count_targets(targets_host_.data(), m.n);
  const double scale = count > 0 ? loss_scale / double(count) : 0.0;
  // The logits buffer becomes d(loss)/d(logits) in place.
  be.cross_entropy_backward(logits_.data(), logits_.data(), lse_.f32(), targets_.i32(), m.n, m.vl,
                            c_.tp_rank * m.vl, scale);
  c_.linear_backward(dh_.data(), access.grad(layout_.lm_head()), logits_.data(),
                     c_.gather_sequence(hf_.data()), access.param(layout_.lm_head()), m.n, m.d,
                     m.vl, 0.0f);
  be.rmsnorm_backward(dx_.data(), access.grad(layout_.final_norm()), c_.to_local(dh_.data()),
                      x_final_.data(), access.param(layout_.final_norm()), rstd_f_.f32(), m.nl,
                      m.d);
}

std::vector<float> MixtralModel::logits_host() const {
  std::vector<float> out(sz(logits_.count()));
  if (c_.act == DType::F32) {
    c_.be.copy_to_host(out.data(), logits_.data(), logits_.bytes());
  } else {
    Buffer f32(c_.be, logits_.count(), DType::F32);
    c_.be.cast(f32.data(), DType::F32, logits_.data(), c_.act, logits_.count());
    c_.be.copy_to_host(out.data(), f32.data(), f32.bytes());
  }
  return out;
}

std::vector<std::vector<std::int64_t>> MixtralModel::tokens_per_expert() const {
  if (recompute_) return saved_counts_;
  std::vector<std::vector<std::int64_t>> out;
  for (const LayerActs& a : acts_)
    out.push_back(a.moe.dispatch.counts_host);
  return out;
}

std::int64_t MixtralModel::activation_bytes() const {
  std::size_t bytes = 0;
  for (const LayerActs& a : acts_) {
    bytes += a.x_in.bytes() + a.x_mid.bytes() + static_cast<std::size_t>(a.attention.bytes()) +
             static_cast<std::size_t>(a.moe.bytes());
  }
  // Full recompute: every layer's input, and its expert counts for the statistics.
  for (const Buffer& x : saved_inputs_)
    bytes += x.bytes();
  for (const auto& counts : saved_counts_)
    bytes += counts.size() * sizeof(std::int64_t);
  bytes += static_cast<std::size_t>(moe_.scratch_bytes() + attention_.table_bytes());
  for (const Buffer* b : {&x_final_, &rstd_f_, &hf_, &logits_, &lse_, &target_loss_, &lse_parts_,
                          &dx_, &dx_mid_, &dtmp_, &dh_, &arena_}) {
    bytes += b->bytes();
  }
  return static_cast<std::int64_t>(bytes);
}

}  // namespace moetune::executor
