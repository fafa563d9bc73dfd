// Mixtral forward and backward on the CPU kernels. Shapes: N = B*S tokens, D hidden, Hq/Hkv heads,
// Dh head size, E experts, K experts per token, F expert FFN width, V vocabulary, R permuted rows.
#include "executor/mixtral.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "core/error.hpp"
#include "kernels/cpu/attention.hpp"
#include "kernels/cpu/cross_entropy.hpp"
#include "kernels/cpu/embedding.hpp"
#include "kernels/cpu/gemm.hpp"
#include "kernels/cpu/moe_losses.hpp"
#include "kernels/cpu/permute.hpp"
#include "kernels/cpu/rmsnorm.hpp"
#include "kernels/cpu/rope.hpp"
#include "kernels/cpu/router.hpp"
#include "kernels/cpu/swiglu.hpp"

namespace moetune::executor {

namespace k = moetune::kernels::cpu;

namespace {

// Sinkhorn stops when the column scaling moves by less than this on average (Megatron's 1e-4).
constexpr double kSinkhornTol = 1e-4;
constexpr std::int64_t kSinkhornMaxIters = 1000;

class PhaseTimer {
 public:
  PhaseTimer(PhaseTimes* times, const char* phase)
      : times_(times), phase_(phase), start_(std::chrono::steady_clock::now()) {}
  ~PhaseTimer() {
    if (times_ != nullptr) {
      (*times_)[phase_] +=
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    }
  }
  PhaseTimer(const PhaseTimer&) = delete;
  PhaseTimer& operator=(const PhaseTimer&) = delete;

 private:
  PhaseTimes* times_;
  const char* phase_;
  std::chrono::steady_clock::time_point start_;
};

// y[N,Dout] = x[N,Din] W^T with W[Dout,Din] (Hugging Face's Linear layout).
void linear_forward(float* y, const float* x, const float* w, std::int64_t n, std::int64_t din,
                    std::int64_t dout) {
  k::gemm<float>(false, true, n, dout, din, 1.0f, x, din, w, din, 0.0f, y, dout);
}

// dW[Dout,Din] += dy^T x; dx[N,Din] = dy W (beta 0) or += (beta 1).
void linear_backward(float* dx, float* dw, const float* dy, const float* x, const float* w,
                     std::int64_t n, std::int64_t din, std::int64_t dout, float dx_beta) {
  k::gemm<float>(true, false, dout, din, n, 1.0f, dy, dout, x, din, 1.0f, dw, din);
  if (dx != nullptr)
    k::gemm<float>(false, false, n, din, dout, 1.0f, dy, dout, w, din, dx_beta, dx, din);
}

void add_into(float* dst, const float* src, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i)
    dst[i] += src[i];
}

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

}  // namespace

MixtralModel::MixtralModel(const ModelSpec& model, const MoeOptions& moe, std::int64_t batch,
                           std::int64_t seq_len, ModelParallel parallel, bool recompute)
    : model_(model),
      moe_(moe),
      parallel_(parallel),
      recompute_(recompute),
      ep_size_(group_size(parallel.ep)),
      ep_rank_(group_rank(parallel.ep)),
      local_experts_(model.num_local_experts / group_size(parallel.ep)),
      dp_size_(group_size(parallel.dp)),
      tp_size_(group_size(parallel.tp)),
      tp_rank_(group_rank(parallel.tp)),
      layout_(model, group_rank(parallel.ep) * (model.num_local_experts / group_size(parallel.ep)),
              model.num_local_experts / group_size(parallel.ep), group_size(parallel.tp),
              group_rank(parallel.tp)),
      batch_(batch),
      seq_(seq_len),
      tokens_(batch * seq_len) {
  MOETUNE_CHECK(batch > 0 && seq_len > 0, "micro-batch and sequence must be positive");
  const ModelSpec& m = model_;
  const std::int64_t n = tokens_, d = m.hidden_size, q = m.q_dim(), kv = m.kv_dim();
  const std::int64_t e = m.num_local_experts, kk = m.num_experts_per_tok;
  const std::int64_t f = m.moe_intermediate_size / tp_size_, nk = n * kk;
  MOETUNE_CHECK(n % tp_size_ == 0 && m.num_attention_heads % tp_size_ == 0 &&
                    m.num_key_value_heads % tp_size_ == 0 && m.vocab_size % tp_size_ == 0 &&
                    m.moe_intermediate_size % tp_size_ == 0,
                "tensor parallelism must divide tokens, heads, FFN width and vocabulary");
  const std::int64_t nl = n / tp_size_;  // tokens of this rank's sequence-parallel chunk
  const std::int64_t ql = q / tp_size_, kvl = kv / tp_size_, vl = m.vocab_size / tp_size_;
  const std::int64_t heads = m.num_attention_heads / tp_size_;
  rope_cos_.resize(sz(seq_ * m.head_dim / 2));
  rope_sin_.resize(sz(seq_ * m.head_dim / 2));
  k::rope_table<float>(rope_cos_.data(), rope_sin_.data(), seq_, m.head_dim, m.rope_theta);
  ids_.resize(sz(n));
  targets_.resize(sz(n));
  // Full recompute keeps one set of layer buffers, used by each layer in turn, and every layer's
  // input; otherwise every layer keeps its own.
  acts_.resize(
      sz(recompute_ ? std::min<std::int64_t>(1, m.num_hidden_layers) : m.num_hidden_layers));
  if (recompute_) {
    saved_inputs_.assign(sz(m.num_hidden_layers), std::vector<float>(sz(nl * d)));
    saved_counts_.assign(sz(m.num_hidden_layers), std::vector<std::int64_t>(sz(e)));
  }
  for (LayerActs& a : acts_) {
    a.x_in.resize(sz(nl * d));
    a.rstd1.resize(sz(nl));
    // Norm outputs are kept for this rank's sequence chunk; with tp > 1 they are gathered over
    // the whole sequence (into gathered_) when a GEMM reads them, in forward and again in
    // backward, as Megatron's sequence parallelism does.
    a.h1n.resize(sz(nl * d));
    a.q.resize(sz(n * ql));
    a.k.resize(sz(n * kvl));
    a.v.resize(sz(n * kvl));
    a.att.resize(sz(batch_ * heads * seq_ * seq_));
    a.ctx.resize(sz(n * ql));
    a.x_mid.resize(sz(nl * d));
    a.rstd2.resize(sz(nl));
    a.h2n.resize(sz(nl * d));
    if (moe_.z_loss_coef > 0) a.router_logits.resize(sz(n * e));
    a.probs.resize(sz(n * e));
    a.topk_w.resize(sz(nk));
    a.topk_idx.resize(sz(nk));
    a.counts.resize(sz(e));
    a.offsets.resize(sz(e + 1));
    a.slot_row.resize(sz(nk));
    if (ep_size_ == 1) a.xp.resize(sz(nk * d));
    a.h1.resize(sz(nk * f));
    a.h3.resize(sz(nk * f));
    a.act.resize(sz(nk * f));
    a.yp.resize(sz(nk * d));
  }
  if (moe_.z_loss_coef <= 0) router_logits_.resize(sz(n * e));
  row_slot_.resize(sz(nk));
  if (ep_size_ > 1) xp_send_.resize(sz(nk * d));
  x_final_.resize(sz(nl * d));
  rstd_f_.resize(sz(nl));
  hf_.resize(sz(nl * d));
  logits_.resize(sz(n * vl));
  aux_counts_.resize(sz(e));
  aux_prob_sum_.resize(sz(e));
  dx_.resize(sz(nl * d));
  dx_mid_.resize(sz(nl * d));
  dtmp_.resize(sz(nl * d));
  dh_.resize(sz(n * d));
  if (tp_size_ > 1) {
    norm_local_.resize(sz(nl * d));
    partial_.resize(sz(n * d));
    gathered_.resize(sz(n * d));
    lse_.resize(sz(n));
  }
  const std::int64_t attention_grads = 2 * n * ql + 2 * n * kvl;
  const std::int64_t moe_grads = 2 * n * e + nk + 2 * nk * d + 2 * nk * f;
  backward_arena_.resize(sz(std::max(attention_grads, moe_grads)));
  float* next = backward_arena_.data();
  auto carve = [&next](std::int64_t count) {
    float* p = next;
    next += count;
    return p;
  };
  dq_ = carve(n * ql);
  dk_ = carve(n * kvl);
  dv_ = carve(n * kvl);
  dctx_ = carve(n * ql);
  next = backward_arena_.data();
  drouter_ = carve(n * e);
  dprobs_ = carve(n * e);
  dtopk_w_ = carve(nk);
  dxp_ = carve(nk * d);
  dyp_ = carve(nk * d);
  dh1_ = carve(nk * f);
  dh3_ = carve(nk * f);
}

MixtralModel::LayerActs& MixtralModel::layer_acts(std::int64_t layer) {
  return acts_[recompute_ ? 0 : sz(layer)];
}

float* MixtralModel::layer_input(std::int64_t layer) {
  return recompute_ ? saved_inputs_[sz(layer)].data() : acts_[sz(layer)].x_in.data();
}

float* MixtralModel::router_logits(LayerActs& a) {
  return a.router_logits.empty() ? router_logits_.data() : a.router_logits.data();
}

MicroBatchLoss MixtralModel::forward(const float* params, const std::int32_t* ids,
                                     const std::int32_t* targets, PhaseTimes* times) {
  FlatParameters flat(params, nullptr);
  return forward(flat, ids, targets, times);
}

void MixtralModel::backward(const float* params, float* grads, double loss_scale,
                            PhaseTimes* times) {
  FlatParameters flat(params, grads);
  backward(flat, loss_scale, times);
}

// One layer's forward: reads a.x_in, keeps what its backward needs in `a`, writes the layer's
// output to x_out. `loss` is null when a backward recomputes the layer: the routing statistics,
// the z-loss and the dropped slots were counted by the forward pass.
void MixtralModel::layer_forward(std::int64_t li, LayerActs& a, float* x_out,
                                 ParameterAccess& access, PhaseTimes* times, MicroBatchLoss* loss,
                                 std::int64_t capacity) {
  auto P = [&](std::int64_t offset) { return access.param(offset); };
  const ModelSpec& m = model_;
  const auto [n, d, nl, ql, kvl, heads, kv_heads, e, kk, f, v, vl] = dims();
  (void)v;
  (void)vl;
  const LayerOffsets& o = layout_.layer(li);
  const float* h2n = nullptr;  // the post-attention norm output, whole sequence
  {
    PhaseTimer t(times, "attention");
    k::rmsnorm_forward<float>(a.h1n.data(), a.rstd1.data(), a.x_in.data(), P(o.input_norm), nl, d,
                              m.rms_norm_eps);
    const float* h1n = gather_sequence(a.h1n);
    linear_forward(a.q.data(), h1n, P(o.q), n, d, ql);
    linear_forward(a.k.data(), h1n, P(o.k), n, d, kvl);
    linear_forward(a.v.data(), h1n, P(o.v), n, d, kvl);
    k::rope_forward<float>(a.q.data(), a.q.data(), rope_cos_.data(), rope_sin_.data(), seq_,
                           nullptr, 0, batch_, seq_, heads, m.head_dim);
    k::rope_forward<float>(a.k.data(), a.k.data(), rope_cos_.data(), rope_sin_.data(), seq_,
                           nullptr, 0, batch_, seq_, kv_heads, m.head_dim);
    k::attention_forward<float>(a.ctx.data(), a.att.data(), a.q.data(), a.k.data(), a.v.data(),
                                batch_, seq_, heads, kv_heads, m.head_dim, m.sliding_window);
    // x_mid = x_in + ctx Wo^T (row-parallel: partial sums over tp, reduce-scattered)
    if (tp_size_ == 1) {
      linear_forward(a.x_mid.data(), a.ctx.data(), P(o.o), n, ql, d);
    } else {
      linear_forward(partial_.data(), a.ctx.data(), P(o.o), n, ql, d);
      tp_scatter(partial_.data(), a.x_mid.data());
    }
    add_into(a.x_mid.data(), a.x_in.data(), nl * d);
  }
  {
    PhaseTimer t(times, "router");
    k::rmsnorm_forward<float>(a.h2n.data(), a.rstd2.data(), a.x_mid.data(), P(o.post_norm), nl, d,
                              m.rms_norm_eps);
    // Every tp rank routes the whole sequence (the same result on each).
    h2n = gather_sequence(a.h2n);
    float* logits = router_logits(a);
    linear_forward(logits, h2n, P(o.gate), n, d, e);
    if (moe_.load_balancing == LoadBalancing::Sinkhorn) {
      k::router_sinkhorn_forward<float>(a.probs.data(), a.topk_idx.data(), a.topk_w.data(), logits,
                                        n, e, kk, kSinkhornTol, kSinkhornMaxIters);
    } else {
      k::router_forward<float>(a.probs.data(), a.topk_idx.data(), a.topk_w.data(), logits, n, e, kk,
                               m.norm_topk_prob);
      if (loss != nullptr) {
        k::aux_loss_accumulate<float>(aux_counts_.data(), aux_prob_sum_.data(), a.probs.data(),
                                      a.topk_idx.data(), n, e, kk);
      }
    }
    if (moe_.z_loss_coef > 0 && loss != nullptr) loss->z += k::z_loss_forward<float>(logits, n, e);
  }
  {
    PhaseTimer t(times, "dispatch");
    const std::int64_t dropped =
        k::dispatch_plan(a.counts.data(), a.offsets.data(), a.slot_row.data(), row_slot_.data(),
                         a.topk_idx.data(), n, e, kk, capacity);
    if (loss != nullptr) dropped_ += dropped;
    a.rows = a.offsets[sz(e)];
    // One rank keeps the permuted rows as its experts' input; with ep > 1 they are only sent.
    float* permuted = ep_size_ == 1 ? a.xp.data() : xp_send_.data();
    k::permute_forward<float>(permuted, h2n, row_slot_.data(), a.rows, kk, d);
  }
  if (ep_size_ > 1) {
    experts_forward(a, o, access, times);
  } else {
    PhaseTimer t(times, "experts");
    k::swiglu_grouped_forward<float>(a.yp.data(), a.h1.data(), a.h3.data(), a.act.data(),
                                     a.xp.data(), P(o.w1[0]), P(o.w3[0]), P(o.w2[0]),
                                     a.counts.data(), e, d, f);
  }
  {
    PhaseTimer t(times, "combine");
    // The experts' w2 is row-parallel: each tp rank holds a partial sum of every output.
    float* combined = tp_size_ == 1 ? x_out : partial_.data();
    k::unpermute_combine_forward<float>(combined, a.yp.data(), a.topk_w.data(), a.slot_row.data(),
                                        n, kk, d);
    if (tp_size_ > 1) tp_scatter(partial_.data(), x_out);
    add_into(x_out, a.x_mid.data(), nl * d);
  }
}

MicroBatchLoss MixtralModel::forward(ParameterAccess& access, const std::int32_t* ids,
                                     const std::int32_t* targets, PhaseTimes* times) {
  auto P = [&](std::int64_t offset) { return access.param(offset); };
  const std::int64_t head_group = model_.num_hidden_layers + 1;
  const ModelSpec& m = model_;
  const auto [n, d, nl, ql, kvl, heads, kv_heads, e, kk, f, v, vl] = dims();
  for (std::int64_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= v) {
      throw InputError("token id " + std::to_string(ids[i]) + " is outside the vocabulary of " +
                       std::to_string(v));
    }
  }
  std::copy(ids, ids + n, ids_.begin());
  std::copy(targets, targets + n, targets_.begin());
  std::fill(aux_counts_.begin(), aux_counts_.end(), 0);
  std::fill(aux_prob_sum_.begin(), aux_prob_sum_.end(), 0.0);
  dropped_ = 0;
  const std::int64_t capacity =
      moe_.capacity_factor > 0 ? k::expert_capacity(n, e, kk, moe_.capacity_factor) : 0;
  MicroBatchLoss loss;

  access.acquire(0, false);
  {
    PhaseTimer t(times, "lm_head");
    float* x0 = m.num_hidden_layers == 0 ? x_final_.data() : layer_input(0);
    if (tp_size_ == 1) {
      k::embedding_forward<float>(x0, P(layout_.embedding()), ids_.data(), n, v, d);
    } else {
      // Vocab-parallel embedding: this rank's rows, zero elsewhere, summed over tp.
      const float* table = P(layout_.embedding());
      const std::int64_t first = tp_rank_ * vl;
      for (std::int64_t i = 0; i < n; ++i) {
        const std::int64_t row = ids_[sz(i)] - first;
        float* out = partial_.data() + i * d;
        if (row >= 0 && row < vl) {
          std::copy(table + row * d, table + (row + 1) * d, out);
        } else {
          std::fill(out, out + d, 0.0f);
        }
      }
      tp_scatter(partial_.data(), x0);
    }
  }
  access.release(0, false);
  for (std::int64_t li = 0; li < m.num_hidden_layers; ++li) {
    access.acquire(1 + li, false);
    LayerActs& a = layer_acts(li);
    if (recompute_)
      std::copy(saved_inputs_[sz(li)].begin(), saved_inputs_[sz(li)].end(), a.x_in.begin());
    float* x_out = li + 1 < m.num_hidden_layers ? layer_input(li + 1) : x_final_.data();
    layer_forward(li, a, x_out, access, times, &loss, capacity);
    if (recompute_) saved_counts_[sz(li)] = a.counts;
    access.release(1 + li, false);
  }
  access.acquire(head_group, false);
  {
    PhaseTimer t(times, "lm_head");
    k::rmsnorm_forward<float>(hf_.data(), rstd_f_.data(), x_final_.data(), P(layout_.final_norm()),
                              nl, d, m.rms_norm_eps);
    linear_forward(logits_.data(), gather_sequence(hf_), P(layout_.lm_head()), n, d, vl);
    loss.ce = tp_size_ == 1
                  ? k::cross_entropy_forward<float>(nullptr, logits_.data(), targets_.data(), n, v)
                  : vocab_parallel_loss();
    loss.targets = k::count_targets(targets_.data(), n);
  }
  access.release(head_group, false);
  access.end_pass(false);
  if (moe_.load_balancing != LoadBalancing::Sinkhorn) {
    // Hugging Face averages the routing statistics over the tokens of all layers together; with
    // data parallelism over the tokens of every rank too, so the loss is that of the whole batch.
    if (dp_size_ > 1) {
      parallel_.dp->all_reduce(aux_counts_.data(), e);
      parallel_.dp->all_reduce(aux_prob_sum_.data(), e);
    }
    loss.aux = k::aux_loss_from_stats(aux_counts_.data(), aux_prob_sum_.data(),
                                      n * m.num_hidden_layers * dp_size_, e);
  }
  return loss;
}

void MixtralModel::backward(ParameterAccess& access, double loss_scale, PhaseTimes* times) {
  auto P = [&](std::int64_t offset) { return access.param(offset); };
  auto G = [&](std::int64_t offset) { return access.grad(offset); };
  const std::int64_t head_group = model_.num_hidden_layers + 1;
  const ModelSpec& m = model_;
  const auto [n, d, nl, ql, kvl, heads, kv_heads, e, kk, f, v, vl] = dims();
  const bool aux_on = moe_.load_balancing == LoadBalancing::AuxLoss && moe_.aux_loss_coef > 0;
  // d/d(local chunk) of a partial [N, D] gradient: reduce-scattered over tp (a copy with tp = 1).
  auto to_local = [&](const float* full_partial, float* local) {
    if (tp_size_ == 1) {
      if (full_partial != local) std::copy(full_partial, full_partial + n * d, local);
    } else {
      tp_scatter(full_partial, local);
    }
  };
  access.acquire(head_group, true);
  {
    PhaseTimer t(times, "lm_head");
    // The logits buffer becomes d(loss)/d(logits) in place.
    if (tp_size_ == 1) {
      k::cross_entropy_backward<float>(logits_.data(), logits_.data(), targets_.data(), n, v,
                                       loss_scale);
    } else {
      vocab_parallel_loss_backward(loss_scale);
    }
    linear_backward(dh_.data(), G(layout_.lm_head()), logits_.data(), gather_sequence(hf_),
                    P(layout_.lm_head()), n, d, vl, 0.0f);
    float* dh_local = tp_size_ == 1 ? dh_.data() : norm_local_.data();
    to_local(dh_.data(), dh_local);
    k::rmsnorm_backward<float>(dx_.data(), G(layout_.final_norm()), dh_local, x_final_.data(),
                               P(layout_.final_norm()), rstd_f_.data(), nl, d);
  }
  access.release(head_group, true);
  const std::int64_t capacity =
      moe_.capacity_factor > 0 ? k::expert_capacity(n, e, kk, moe_.capacity_factor) : 0;
  for (std::int64_t li = m.num_hidden_layers - 1; li >= 0; --li) {
    LayerActs& a = layer_acts(li);
    const LayerOffsets& o = layout_.layer(li);
    access.acquire(1 + li, true);
    if (recompute_) {
      // Full recompute: the layer's forward again from its saved input, into the one set of
      // layer buffers; its output is not needed (dtmp_ is free until the norm backward below).
      std::copy(saved_inputs_[sz(li)].begin(), saved_inputs_[sz(li)].end(), a.x_in.begin());
      PhaseTimes redo;
      layer_forward(li, a, dtmp_.data(), access, times != nullptr ? &redo : nullptr, nullptr,
                    capacity);
      for (const auto& [phase, seconds] : redo)
        (*times)["recompute"] += seconds;
    }
    // dx_ holds d/d(layer output) for this rank's chunk; the residual passes it to x_mid.
    std::copy(dx_.begin(), dx_.end(), dx_mid_.begin());
    const float* dy = dx_.data();  // d/d(combined expert output), whole sequence
    if (tp_size_ > 1) {
      parallel_.tp->all_gather(dx_.data(), gathered_.data(), nl * d);
      dy = gathered_.data();
    }
    {
      PhaseTimer t(times, "combine");
      k::unpermute_combine_backward<float>(dyp_, dtopk_w_, dy, a.yp.data(), a.topk_w.data(),
                                           a.slot_row.data(), n, kk, d);
      // Each tp rank's expert outputs are partial sums: so is its weight gradient.
      if (tp_size_ > 1) parallel_.tp->all_reduce(dtopk_w_, n * kk);
    }
    if (ep_size_ > 1) {
      experts_backward(a, o, access, times);
    } else {
      PhaseTimer t(times, "experts");
      k::swiglu_grouped_backward<float>(
          dxp_, G(o.w1[0]), G(o.w3[0]), G(o.w2[0]), dh1_, dh3_, dyp_, a.xp.data(), a.h1.data(),
          a.h3.data(), a.act.data(), P(o.w1[0]), P(o.w3[0]), P(o.w2[0]), a.counts.data(), e, d, f);
    }
    {
      PhaseTimer t(times, "dispatch");
      k::permute_backward<float>(dh_.data(), dxp_, a.slot_row.data(), n, kk, d);
    }
    {
      PhaseTimer t(times, "router");
      if (moe_.load_balancing == LoadBalancing::Sinkhorn) {
        k::router_sinkhorn_backward<float>(drouter_, dtopk_w_, a.probs.data(), a.topk_idx.data(), n,
                                           e, kk);
      } else {
        const float* dprobs = nullptr;
        if (aux_on) {
          std::fill(dprobs_, dprobs_ + n * e, 0.0f);
          k::aux_loss_backward<float>(
              dprobs_, aux_counts_.data(), n * m.num_hidden_layers * dp_size_, n, e,
              loss_scale * static_cast<double>(dp_size_) * moe_.aux_loss_coef);
          dprobs = dprobs_;
        }
        k::router_backward<float>(drouter_, dtopk_w_, dprobs, a.probs.data(), a.topk_idx.data(), n,
                                  e, kk, m.norm_topk_prob);
      }
      if (moe_.z_loss_coef > 0) {
        k::z_loss_backward<float>(drouter_, a.router_logits.data(), n, e,
                                  loss_scale * moe_.z_loss_coef);
      }
      // Every tp rank routed the whole sequence: the gate's gradient is whole on each, and its
      // share of d(input) is 1/tp of the total so the reduce-scatter below sums it once.
      // The combine's gradient no longer needs gathered_: the norm output is gathered into it.
      k::gemm<float>(true, false, e, d, n, 1.0f, drouter_, e, gather_sequence(a.h2n), d, 1.0f,
                     G(o.gate), d);
      k::gemm<float>(false, false, n, d, e, 1.0f / static_cast<float>(tp_size_), drouter_, e,
                     P(o.gate), d, 1.0f, dh_.data(), d);
      float* dh_local = tp_size_ == 1 ? dh_.data() : norm_local_.data();
      to_local(dh_.data(), dh_local);
      k::rmsnorm_backward<float>(dtmp_.data(), G(o.post_norm), dh_local, a.x_mid.data(),
                                 P(o.post_norm), a.rstd2.data(), nl, d);
      add_into(dx_mid_.data(), dtmp_.data(), nl * d);
    }
    {
      PhaseTimer t(times, "attention");
      const float* dmid = dx_mid_.data();
      if (tp_size_ > 1) {
        parallel_.tp->all_gather(dx_mid_.data(), gathered_.data(), nl * d);
        dmid = gathered_.data();
      }
      linear_backward(dctx_, G(o.o), dmid, a.ctx.data(), P(o.o), n, ql, d, 0.0f);
      k::attention_backward<float>(dq_, dk_, dv_, dctx_, a.q.data(), a.k.data(), a.v.data(),
                                   a.att.data(), batch_, seq_, heads, kv_heads, m.head_dim);
      k::rope_backward<float>(dq_, dq_, rope_cos_.data(), rope_sin_.data(), seq_, nullptr, 0,
                              batch_, seq_, heads, m.head_dim);
      k::rope_backward<float>(dk_, dk_, rope_cos_.data(), rope_sin_.data(), seq_, nullptr, 0,
                              batch_, seq_, kv_heads, m.head_dim);
      // The output projection is done with the gathered d(x_mid): gathered_ takes the norm output.
      const float* h1n = gather_sequence(a.h1n);
      linear_backward(dh_.data(), G(o.q), dq_, h1n, P(o.q), n, d, ql, 0.0f);
      linear_backward(dh_.data(), G(o.k), dk_, h1n, P(o.k), n, d, kvl, 1.0f);
      linear_backward(dh_.data(), G(o.v), dv_, h1n, P(o.v), n, d, kvl, 1.0f);
      float* dh_local = tp_size_ == 1 ? dh_.data() : norm_local_.data();
      to_local(dh_.data(), dh_local);
      k::rmsnorm_backward<float>(dtmp_.data(), G(o.input_norm), dh_local, a.x_in.data(),
                                 P(o.input_norm), a.rstd1.data(), nl, d);
      // d/d(layer input) = the residual path plus the attention path.
      for (std::int64_t i = 0; i < nl * d; ++i)
        dx_[sz(i)] = dx_mid_[sz(i)] + dtmp_[sz(i)];
    }
    access.release(1 + li, true);
  }
  access.acquire(0, true);
  {
    PhaseTimer t(times, "lm_head");
    if (tp_size_ == 1) {
      k::embedding_backward<float>(G(layout_.embedding()), dx_.data(), ids_.data(), n, v, d);
    } else {
      // This rank's vocabulary rows get the gradient of the tokens that use them.
      parallel_.tp->all_gather(dx_.data(), gathered_.data(), nl * d);
      float* table = G(layout_.embedding());
      const std::int64_t first = tp_rank_ * vl;
      for (std::int64_t i = 0; i < n; ++i) {
        const std::int64_t row = ids_[sz(i)] - first;
        if (row < 0 || row >= vl) continue;
        const float* g = gathered_.data() + i * d;
        for (std::int64_t j = 0; j < d; ++j)
          table[row * d + j] += g[j];
      }
    }
  }
  access.release(0, true);
  access.end_pass(true);
}

const float* MixtralModel::gather_sequence(const std::vector<float>& local) {
  if (tp_size_ == 1) return local.data();
  parallel_.tp->all_gather(local.data(), gathered_.data(), tokens_ / tp_size_ * model_.hidden_size);
  return gathered_.data();
}

void MixtralModel::tp_scatter(const float* partial, float* local) {
  parallel_.tp->reduce_scatter(partial, local, tokens_ / tp_size_ * model_.hidden_size);
}

// Cross-entropy over a vocabulary split over tp: each rank holds logits[N, V/tp]. The log-sum-exp
// of every row combines the ranks' partial ones; the target's logit comes from the rank that
// holds it.
double MixtralModel::vocab_parallel_loss() {
  const std::int64_t n = tokens_, vl = model_.vocab_size / tp_size_, first = tp_rank_ * vl;
  std::vector<double> partial(sz(tp_size_ * n), 0.0), target(sz(n), 0.0);
  for (std::int64_t i = 0; i < n; ++i) {
    const float* x = logits_.data() + i * vl;
    const double max_x = *std::max_element(x, x + vl);
    double sum = 0;
    for (std::int64_t j = 0; j < vl; ++j)
      sum += std::exp(static_cast<double>(x[j]) - max_x);
    partial[sz(tp_rank_ * n + i)] = max_x + std::log(sum);
    const std::int64_t t = targets_[sz(i)] - first;
    if (targets_[sz(i)] != k::kIgnoreIndex && t >= 0 && t < vl) target[sz(i)] = x[t];
  }
  parallel_.tp->all_reduce(partial.data(), tp_size_ * n);  // gathers every rank's row lse
  parallel_.tp->all_reduce(target.data(), n);
  double loss = 0;
  std::int64_t count = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    double max_l = partial[sz(i)];
    for (std::int64_t r = 1; r < tp_size_; ++r)
      max_l = std::max(max_l, partial[sz(r * n + i)]);
    double sum = 0;
    for (std::int64_t r = 0; r < tp_size_; ++r)
      sum += std::exp(partial[sz(r * n + i)] - max_l);
    lse_[sz(i)] = max_l + std::log(sum);
    if (targets_[sz(i)] == k::kIgnoreIndex) continue;
    loss += lse_[sz(i)] - target[sz(i)];
    ++count;
  }
  return count > 0 ? loss / static_cast<double>(count) : 0.0;
}

void MixtralModel::vocab_parallel_loss_backward(double loss_scale) {
  const std::int64_t n = tokens_, vl = model_.vocab_size / tp_size_, first = tp_rank_ * vl;
  const std::int64_t count = k::count_targets(targets_.data(), n);
  const double scale = count > 0 ? loss_scale / static_cast<double>(count) : 0.0;
  for (std::int64_t i = 0; i < n; ++i) {
    float* x = logits_.data() + i * vl;
    if (targets_[sz(i)] == k::kIgnoreIndex) {
      std::fill(x, x + vl, 0.0f);
      continue;
    }
    for (std::int64_t j = 0; j < vl; ++j) {
      x[j] = static_cast<float>(scale * std::exp(static_cast<double>(x[j]) - lse_[sz(i)]));
    }
    const std::int64_t t = targets_[sz(i)] - first;
    if (t >= 0 && t < vl) x[t] -= static_cast<float>(scale);
  }
}

void MixtralModel::experts_forward(LayerActs& a, const LayerOffsets& o, ParameterAccess& access,
                                   PhaseTimes* times) {
  auto P = [&](std::int64_t offset) { return access.param(offset); };
  const std::int64_t d = model_.hidden_size, f = model_.moe_intermediate_size / tp_size_;
  Communicator& ep = *parallel_.ep;
  {
    PhaseTimer t(times, "dispatch");
    a.exchange.plan(ep, a.counts.data(), model_.num_local_experts);
    a.exchange.dispatch(ep, xp_send_.data(), d, a.xg, exchange_);
  }
  {
    PhaseTimer t(times, "experts");
    const auto rows = static_cast<std::size_t>(a.exchange.recv_rows);
    a.h1.resize(rows * static_cast<std::size_t>(f));
    a.h3.resize(a.h1.size());
    a.act.resize(a.h1.size());
    exchange2_.resize(rows * static_cast<std::size_t>(d));
    k::swiglu_grouped_forward<float>(exchange2_.data(), a.h1.data(), a.h3.data(), a.act.data(),
                                     a.xg.data(), P(o.w1[0]), P(o.w3[0]), P(o.w2[0]),
                                     a.exchange.local_counts.data(), local_experts_, d, f);
  }
  {
    PhaseTimer t(times, "combine");
    a.exchange.combine(ep, exchange2_.data(), d, a.yp.data(), exchange_);
  }
}

void MixtralModel::experts_backward(LayerActs& a, const LayerOffsets& o, ParameterAccess& access,
                                    PhaseTimes* times) {
  auto P = [&](std::int64_t offset) { return access.param(offset); };
  auto G = [&](std::int64_t offset) { return access.grad(offset); };
  const std::int64_t d = model_.hidden_size, f = model_.moe_intermediate_size / tp_size_;
  Communicator& ep = *parallel_.ep;
  const auto rows = static_cast<std::size_t>(a.exchange.recv_rows);
  {
    PhaseTimer t(times, "combine");
    // The backward of combine: output gradients go to the ranks that computed the outputs.
    a.exchange.dispatch(ep, dyp_, d, exchange2_, exchange_);
  }
  {
    PhaseTimer t(times, "experts");
    std::vector<float> dx(rows * static_cast<std::size_t>(d)),
        dh1(rows * static_cast<std::size_t>(f)), dh3(dh1.size());
    k::swiglu_grouped_backward<float>(dx.data(), G(o.w1[0]), G(o.w3[0]), G(o.w2[0]), dh1.data(),
                                      dh3.data(), exchange2_.data(), a.xg.data(), a.h1.data(),
                                      a.h3.data(), a.act.data(), P(o.w1[0]), P(o.w3[0]), P(o.w2[0]),
                                      a.exchange.local_counts.data(), local_experts_, d, f);
    exchange2_.swap(dx);
  }
  {
    PhaseTimer t(times, "dispatch");
    // The backward of dispatch: input gradients go back to the ranks that sent the rows.
    a.exchange.combine(ep, exchange2_.data(), d, dxp_, exchange_);
  }
}

MixtralModel::Dims MixtralModel::dims() const {
  const ModelSpec& m = model_;
  const std::int64_t t = tp_size_;
  return {tokens_,
          m.hidden_size,
          tokens_ / t,
          m.q_dim() / t,
          m.kv_dim() / t,
          m.num_attention_heads / t,
          m.num_key_value_heads / t,
          m.num_local_experts,
          m.num_experts_per_tok,
          m.moe_intermediate_size / t,
          m.vocab_size,
          m.vocab_size / t};
}

std::vector<std::vector<std::int64_t>> MixtralModel::tokens_per_expert() const {
  if (recompute_) return saved_counts_;
  std::vector<std::vector<std::int64_t>> out;
  for (const LayerActs& a : acts_)
    out.push_back(a.counts);
  return out;
}

std::int64_t MixtralModel::activation_bytes() const {
  std::int64_t floats = 0, others = 0;
  auto f = [&](const std::vector<float>& x) { floats += static_cast<std::int64_t>(x.size()); };
  for (const LayerActs& a : acts_) {
    for (const auto* x : {&a.x_in,  &a.rstd1,  &a.h1n,   &a.q,     &a.k,   &a.v,
                          &a.att,   &a.ctx,    &a.x_mid, &a.rstd2, &a.h2n, &a.router_logits,
                          &a.probs, &a.topk_w, &a.xp,    &a.xg,    &a.h1,  &a.h3,
                          &a.act,   &a.yp}) {
      f(*x);
    }
    others += static_cast<std::int64_t>(
        a.topk_idx.size() * 4 + (a.counts.size() + a.offsets.size() + a.slot_row.size()) * 8);
  }
  // Not counted: the ep > 1 send buffer xp_send_ and the exchange's staging, and tp > 1's
  // staging (norm_local_, gathered_, partial_): communication buffers, which the simulator counts
  // as such.
  others += static_cast<std::int64_t>(row_slot_.size() * 8 + lse_.size() * 8);
  // Full recompute: every layer's input, and its expert counts for the statistics.
  for (const auto& x : saved_inputs_)
    f(x);
  for (const auto& c : saved_counts_)
    others += static_cast<std::int64_t>(c.size() * 8);
  for (const auto* x : {&router_logits_, &x_final_, &rstd_f_, &hf_, &logits_, &dx_, &dx_mid_,
                        &dtmp_, &dh_, &backward_arena_, &rope_cos_, &rope_sin_}) {
    f(*x);
  }
  return floats * 4 + others;
}

}  // namespace moetune::executor
