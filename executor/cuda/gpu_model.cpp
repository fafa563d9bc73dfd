// Mixtral forward and backward on the CUDA kernels. Shapes as in executor/mixtral.cpp: N = B*S
// tokens, D hidden, Q = Hq*Dh, KV = Hkv*Dh, E experts, K per token, F expert FFN width, V vocab.
#include "executor/cuda/gpu_model.hpp"

#include <curand.h>

#include <cmath>
#include <string>

#include "core/error.hpp"
#include "kernels/cpu/cross_entropy.hpp"
#include "kernels/cpu/moe_losses.hpp"
#include "kernels/cpu/permute.hpp"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/casts.cuh"
#include "kernels/cuda/cross_entropy.cuh"
#include "kernels/cuda/embedding.cuh"
#include "kernels/cuda/moe_losses.cuh"
#include "kernels/cuda/permute.cuh"
#include "kernels/cuda/rmsnorm.cuh"
#include "kernels/cuda/rope.cuh"
#include "kernels/cuda/router.cuh"
#include "kernels/cuda/swiglu.cuh"

namespace moetune::executor::gpu {

namespace kc = moetune::kernels::cuda;
namespace cpu = moetune::kernels::cpu;
using kc::DType;

namespace {

// Megatron's Sinkhorn tolerance, and a bound on its rounds (as the CPU model).
constexpr double kSinkhornTol = 1e-4;
constexpr std::int64_t kSinkhornMaxIters = 1000;

void check_model(const ModelSpec& m, const MoeOptions& moe) {
  if (m.tie_word_embeddings) {
    throw InputError("the CUDA backend needs an untied LM head (tie_word_embeddings false)");
  }
  if (m.num_local_experts > kc::kMaxExperts || m.num_experts_per_tok > kc::kMaxTopK) {
    throw InputError("the CUDA router takes at most " + std::to_string(kc::kMaxExperts) +
                     " experts and top-" + std::to_string(kc::kMaxTopK) + "; " + m.name + " has " +
                     std::to_string(m.num_local_experts) + " and top-" +
                     std::to_string(m.num_experts_per_tok));
  }
  if (moe.load_balancing == LoadBalancing::Sinkhorn &&
      m.num_local_experts > kc::kMaxSinkhornExperts) {
    throw InputError("the CUDA Sinkhorn router takes at most " +
                     std::to_string(kc::kMaxSinkhornExperts) + " experts");
  }
}

}  // namespace

struct GpuMixtral::LayerActs {
  DeviceArray<bf16> x_in, h1n, q, k, v, att, ctx, x_mid, h2n, xp, h1, h3, act, yp;
  DeviceArray<float> rstd1, rstd2, router_logits, probs, topk_w;
  DeviceArray<std::int32_t> topk_idx;
  DeviceArray<std::int64_t> counts, offsets, slot_row, row_slot, dropped;
};

GpuMixtral::GpuMixtral(const ModelSpec& model, const MoeOptions& moe, std::int64_t batch,
                       std::int64_t seq_len, DeviceAllocator& alloc)
    : model_(model),
      moe_(moe),
      layout_(model),
      batch_(batch),
      seq_(seq_len),
      tokens_(batch * seq_len),
      alloc_(alloc),
      stream_(alloc.stream()) {
  MOETUNE_CHECK(batch > 0 && seq_len > 0, "micro-batch and sequence must be positive");
  check_model(model_, moe_);
  blas_ = std::make_unique<kc::Blas>(stream_);
  const ModelSpec& m = model_;
  const std::int64_t n = tokens_, d = m.hidden_size, q = m.q_dim(), kv = m.kv_dim();
  const std::int64_t e = m.num_local_experts, kk = m.num_experts_per_tok;
  const std::int64_t f = m.moe_intermediate_size, nk = n * kk, v = m.vocab_size;
  // The grouped experts read each layer's w1, w3, w2 as [E, F, D] / [E, D, F] blocks.
  for (std::int64_t li = 0; li < m.num_hidden_layers; li++) {
    const LayerOffsets& o = layout_.layer(li);
    for (std::int64_t x = 0; x < e; x++) {
      MOETUNE_CHECK(o.w1[std::size_t(x)] == o.w1[0] + x * f * d &&
                        o.w3[std::size_t(x)] == o.w3[0] + x * f * d &&
                        o.w2[std::size_t(x)] == o.w2[0] + x * d * f,
                    "expert weights of a layer are not contiguous in the parameter layout");
    }
  }
  const std::int64_t p = layout_.numel();
  master_.reset(alloc, p);
  grads_.reset(alloc, p);
  adam_m_.reset(alloc, p);
  adam_v_.reset(alloc, p);
  working_.reset(alloc, p);
  rope_cos_.reset(alloc, seq_ * m.head_dim / 2);
  rope_sin_.reset(alloc, seq_ * m.head_dim / 2);
  kc::rope_table(rope_cos_.get(), rope_sin_.get(), seq_, m.head_dim, m.rope_theta, stream_);
  ids_.reset(alloc, n);
  targets_.reset(alloc, n);
  for (std::int64_t li = 0; li < m.num_hidden_layers; li++) {
    auto a = std::make_unique<LayerActs>();
    a->x_in.reset(alloc, n * d);
    a->rstd1.reset(alloc, n);
    a->h1n.reset(alloc, n * d);
    a->q.reset(alloc, n * q);
    a->k.reset(alloc, n * kv);
    a->v.reset(alloc, n * kv);
    a->att.reset(alloc, batch_ * m.num_attention_heads * seq_ * seq_);
    a->ctx.reset(alloc, n * q);
    a->x_mid.reset(alloc, n * d);
    a->rstd2.reset(alloc, n);
    a->h2n.reset(alloc, n * d);
    a->router_logits.reset(alloc, n * e);
    a->probs.reset(alloc, n * e);
    a->topk_w.reset(alloc, nk);
    a->topk_idx.reset(alloc, nk);
    a->counts.reset(alloc, e);
    a->offsets.reset(alloc, e + 1);
    a->slot_row.reset(alloc, nk);
    a->row_slot.reset(alloc, nk);
    a->dropped.reset(alloc, 1);
    a->xp.reset(alloc, nk * d);
    a->h1.reset(alloc, nk * f);
    a->h3.reset(alloc, nk * f);
    a->act.reset(alloc, nk * f);
    a->yp.reset(alloc, nk * d);
    acts_.push_back(std::move(a));
  }
  counts_host_.assign(std::size_t(m.num_hidden_layers), std::vector<std::int64_t>(std::size_t(e)));
  x_final_.reset(alloc, n * d);
  rstd_f_.reset(alloc, n);
  hf_.reset(alloc, n * d);
  logits_.reset(alloc, n * v);
  losses_.reset(alloc, n);
  aux_counts_.reset(alloc, e);
  aux_prob_sum_.reset(alloc, e);
  z_sum_.reset(alloc, 1);
  sinkhorn_d0_.reset(alloc, n);
  plan_scratch_.reset(alloc, kc::dispatch_plan_scratch_elems(nk, e));
  norm_partial_.reset(alloc, kc::kSumOfSquaresBlocks);
  norm_total_.reset(alloc, 1);
  attention_scratch_.reset(alloc, std::int64_t(kc::attention_scratch_bytes(
                                      batch_, seq_, m.num_attention_heads, m.head_dim)));
  for (DeviceArray<bf16>* buf : {&dx_, &dx_mid_, &dtmp_, &dh_})
    buf->reset(alloc, n * d);
  dq_.reset(alloc, n * q);
  dctx_.reset(alloc, n * q);
  dk_.reset(alloc, n * kv);
  dv_.reset(alloc, n * kv);
  dxp_.reset(alloc, nk * d);
  dyp_.reset(alloc, nk * d);
  dh1_.reset(alloc, nk * f);
  dh3_.reset(alloc, nk * f);
  drouter_.reset(alloc, n * e);
  drouter_bf16_.reset(alloc, n * e);
  dprobs_.reset(alloc, n * e);
  dtopk_w_.reset(alloc, nk);
  // Rows of the permuted buffers past R are never written by the permute: keep them defined.
  for (const auto& a : acts_) {
    CUDA_CHECK(cudaMemsetAsync(a->xp.get(), 0, a->xp.bytes(), stream_));
  }
  CUDA_CHECK(cudaMemsetAsync(dyp_.get(), 0, dyp_.bytes(), stream_));
  zero_gradients();
}

GpuMixtral::~GpuMixtral() = default;

void GpuMixtral::set_parameters(const std::vector<float>& host) {
  MOETUNE_CHECK(std::int64_t(host.size()) == layout_.numel(), "set_parameters: wrong size");
  CUDA_CHECK(cudaMemcpyAsync(master_.get(), host.data(), master_.bytes(), cudaMemcpyHostToDevice,
                             stream_));
  kc::cast_float_to_bf16(working_.get(), master_.get(), master_.size(), stream_);
  CUDA_CHECK(cudaMemsetAsync(adam_m_.get(), 0, adam_m_.bytes(), stream_));
  CUDA_CHECK(cudaMemsetAsync(adam_v_.get(), 0, adam_v_.bytes(), stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void GpuMixtral::initialise_random(std::uint64_t seed, double std) {
  curandGenerator_t gen = nullptr;
  auto check = [](curandStatus_t st, const char* what) {
    kc::check_sizes(st == CURAND_STATUS_SUCCESS, what, "cuRAND error " + std::to_string(int(st)));
  };
  check(curandCreateGenerator(&gen, CURAND_RNG_PSEUDO_PHILOX4_32_10), "curandCreateGenerator");
  check(curandSetStream(gen, stream_), "curandSetStream");
  check(curandSetPseudoRandomGeneratorSeed(gen, seed), "curandSetPseudoRandomGeneratorSeed");
  // cuRAND's normal generator fills an even count; an odd last element starts at 0.
  const std::int64_t even = master_.size() / 2 * 2;
  CUDA_CHECK(cudaMemsetAsync(master_.get(), 0, master_.bytes(), stream_));
  check(curandGenerateNormal(gen, master_.get(), std::size_t(even), 0.f, float(std)),
        "curandGenerateNormal");
  for (const ParamTensor& t : layout_.tensors()) {
    if (!t.is_norm) continue;
    const std::vector<float> ones(std::size_t(t.numel), 1.f);
    CUDA_CHECK(cudaMemcpyAsync(master_.get() + t.offset, ones.data(), sizeof(float) * ones.size(),
                               cudaMemcpyHostToDevice, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));  // `ones` is pageable and goes out of scope
  }
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  curandDestroyGenerator(gen);
  kc::cast_float_to_bf16(working_.get(), master_.get(), master_.size(), stream_);
  CUDA_CHECK(cudaMemsetAsync(adam_m_.get(), 0, adam_m_.bytes(), stream_));
  CUDA_CHECK(cudaMemsetAsync(adam_v_.get(), 0, adam_v_.bytes(), stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

std::vector<float> GpuMixtral::parameters() const {
  std::vector<float> out(std::size_t(master_.size()));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  CUDA_CHECK(cudaMemcpy(out.data(), master_.get(), master_.bytes(), cudaMemcpyDeviceToHost));
  return out;
}

std::vector<float> GpuMixtral::gradients() const {
  std::vector<float> out(std::size_t(grads_.size()));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  CUDA_CHECK(cudaMemcpy(out.data(), grads_.get(), grads_.bytes(), cudaMemcpyDeviceToHost));
  return out;
}

void GpuMixtral::zero_gradients() {
  CUDA_CHECK(cudaMemsetAsync(grads_.get(), 0, grads_.bytes(), stream_));
}

std::vector<float> GpuMixtral::logits() const {
  DeviceArray<float> tmp(alloc_, logits_.size());
  kc::cast_bf16_to_float(tmp.get(), logits_.get(), logits_.size(), stream_);
  std::vector<float> out(std::size_t(logits_.size()));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  CUDA_CHECK(cudaMemcpy(out.data(), tmp.get(), tmp.bytes(), cudaMemcpyDeviceToHost));
  return out;
}

std::int64_t GpuMixtral::state_bytes() const {
  return std::int64_t(master_.bytes() + grads_.bytes() + adam_m_.bytes() + adam_v_.bytes() +
                      working_.bytes());
}

void GpuMixtral::linear(bf16* y, const bf16* x, std::int64_t w, std::int64_t n, std::int64_t din,
                        std::int64_t dout) {
  blas_->gemm(false, true, n, dout, din, 1.f, x, din, wt(w), din, 0.f, y, DType::BF16, dout);
}

void GpuMixtral::linear_backward(bf16* dx, const bf16* dy, const bf16* x, std::int64_t w,
                                 std::int64_t n, std::int64_t din, std::int64_t dout,
                                 float dx_beta) {
  // dW[Dout,Din] += dy^T x, accumulated in fp32 by the GEMM itself.
  blas_->gemm(true, false, dout, din, n, 1.f, dy, dout, x, din, 1.f, grad(w), DType::F32, din);
  if (dx != nullptr) {
    blas_->gemm(false, false, n, din, dout, 1.f, dy, dout, wt(w), din, dx_beta, dx, DType::BF16,
                din);
  }
}

MicroBatchLoss GpuMixtral::forward(const std::int32_t* ids, const std::int32_t* targets,
                                   EventTimer* timer) {
  const ModelSpec& m = model_;
  const std::int64_t n = tokens_, d = m.hidden_size, v = m.vocab_size;
  const std::int64_t e = m.num_local_experts;
  for (std::int64_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= v) {
      throw InputError("token id " + std::to_string(ids[i]) + " is outside the vocabulary of " +
                       std::to_string(v));
    }
    if (targets[i] != cpu::kIgnoreIndex && (targets[i] < 0 || targets[i] >= v)) {
      throw InputError("target " + std::to_string(targets[i]) + " is outside the vocabulary of " +
                       std::to_string(v));
    }
  }
  targets_host_.assign(targets, targets + n);
  CUDA_CHECK(cudaMemcpyAsync(ids_.get(), ids, sizeof(std::int32_t) * std::size_t(n),
                             cudaMemcpyHostToDevice, stream_));
  CUDA_CHECK(cudaMemcpyAsync(targets_.get(), targets, sizeof(std::int32_t) * std::size_t(n),
                             cudaMemcpyHostToDevice, stream_));
  CUDA_CHECK(cudaMemsetAsync(aux_counts_.get(), 0, aux_counts_.bytes(), stream_));
  CUDA_CHECK(cudaMemsetAsync(aux_prob_sum_.get(), 0, aux_prob_sum_.bytes(), stream_));
  CUDA_CHECK(cudaMemsetAsync(z_sum_.get(), 0, z_sum_.bytes(), stream_));
  dropped_ = 0;
  {
    PhaseScope t(timer, "lm_head");
    bf16* x0 = acts_.empty() ? x_final_.get() : acts_[0]->x_in.get();
    kc::embedding_forward(x0, wt(layout_.embedding()), ids_.get(), n, v, d, stream_);
  }
  for (std::int64_t li = 0; li < m.num_hidden_layers; ++li)
    layer_forward(li, timer);
  {
    PhaseScope t(timer, "lm_head");
    kc::rmsnorm_forward(hf_.get(), rstd_f_.get(), x_final_.get(), wt(layout_.final_norm()), n, d,
                        m.rms_norm_eps, stream_);
    linear(logits_.get(), hf_.get(), layout_.lm_head(), n, d, v);
    kc::cross_entropy_fused(losses_.get(), nullptr, logits_.get(), targets_.get(), n, v, 0.f,
                            stream_);
  }
  MicroBatchLoss loss;
  std::vector<float> losses(static_cast<std::size_t>(n));
  std::vector<std::int64_t> counts(static_cast<std::size_t>(e));
  std::vector<double> prob_sum(static_cast<std::size_t>(e));
  double z = 0;
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  CUDA_CHECK(cudaMemcpy(losses.data(), losses_.get(), losses_.bytes(), cudaMemcpyDeviceToHost));
  CUDA_CHECK(
      cudaMemcpy(counts.data(), aux_counts_.get(), aux_counts_.bytes(), cudaMemcpyDeviceToHost));
  CUDA_CHECK(cudaMemcpy(prob_sum.data(), aux_prob_sum_.get(), aux_prob_sum_.bytes(),
                        cudaMemcpyDeviceToHost));
  CUDA_CHECK(cudaMemcpy(&z, z_sum_.get(), sizeof z, cudaMemcpyDeviceToHost));
  double sum = 0;
  for (float l : losses)
    sum += double(l);
  loss.targets = cpu::count_targets(targets_host_.data(), n);
  loss.ce = loss.targets > 0 ? sum / double(loss.targets) : 0.0;
  if (moe_.load_balancing != LoadBalancing::Sinkhorn) {
    loss.aux = cpu::aux_loss_from_stats(counts.data(), prob_sum.data(), n * m.num_hidden_layers, e);
  }
  loss.z = z;
  return loss;
}

void GpuMixtral::layer_forward(std::int64_t li, EventTimer* timer) {
  const ModelSpec& m = model_;
  const std::int64_t n = tokens_, d = m.hidden_size, q = m.q_dim(), kv = m.kv_dim();
  const std::int64_t e = m.num_local_experts, kk = m.num_experts_per_tok;
  const std::int64_t f = m.moe_intermediate_size;
  LayerActs& a = *acts_[std::size_t(li)];
  const LayerOffsets& o = layout_.layer(li);
  {
    PhaseScope t(timer, "attention");
    kc::rmsnorm_forward(a.h1n.get(), a.rstd1.get(), a.x_in.get(), wt(o.input_norm), n, d,
                        m.rms_norm_eps, stream_);
    linear(a.q.get(), a.h1n.get(), o.q, n, d, q);
    linear(a.k.get(), a.h1n.get(), o.k, n, d, kv);
    linear(a.v.get(), a.h1n.get(), o.v, n, d, kv);
    kc::rope_forward(a.q.get(), a.q.get(), rope_cos_.get(), rope_sin_.get(), seq_, 0, batch_, seq_,
                     m.num_attention_heads, m.head_dim, stream_);
    kc::rope_forward(a.k.get(), a.k.get(), rope_cos_.get(), rope_sin_.get(), seq_, 0, batch_, seq_,
                     m.num_key_value_heads, m.head_dim, stream_);
    kc::attention_forward(*blas_, a.ctx.get(), a.att.get(), a.q.get(), a.k.get(), a.v.get(), batch_,
                          seq_, m.num_attention_heads, m.num_key_value_heads, m.head_dim,
                          m.sliding_window, attention_scratch_.get());
    linear(a.x_mid.get(), a.ctx.get(), o.o, n, q, d);
    kc::add_bf16(a.x_mid.get(), a.x_mid.get(), a.x_in.get(), n * d, stream_);
  }
  {
    PhaseScope t(timer, "router");
    kc::rmsnorm_forward(a.h2n.get(), a.rstd2.get(), a.x_mid.get(), wt(o.post_norm), n, d,
                        m.rms_norm_eps, stream_);
    // fp32 router logits, as Hugging Face and Megatron compute the routing in fp32.
    blas_->gemm(false, true, n, e, d, 1.f, a.h2n.get(), d, wt(o.gate), d, 0.f,
                a.router_logits.get(), DType::F32, e);
    if (moe_.load_balancing == LoadBalancing::Sinkhorn) {
      kc::router_sinkhorn_forward(a.probs.get(), a.topk_idx.get(), a.topk_w.get(),
                                  a.router_logits.get(), n, e, kk, kSinkhornTol, kSinkhornMaxIters,
                                  sinkhorn_d0_.get(), nullptr, stream_);
    } else {
      kc::router_forward(a.probs.get(), a.topk_idx.get(), a.topk_w.get(), a.router_logits.get(), n,
                         e, kk, m.norm_topk_prob, stream_);
      kc::aux_loss_accumulate(aux_counts_.get(), aux_prob_sum_.get(), a.probs.get(),
                              a.topk_idx.get(), n, e, kk, stream_);
    }
    if (moe_.z_loss_coef > 0)
      kc::z_loss_forward(z_sum_.get(), a.router_logits.get(), n, e, stream_);
  }
  {
    PhaseScope t(timer, "dispatch");
    const std::int64_t capacity =
        moe_.capacity_factor > 0 ? cpu::expert_capacity(n, e, kk, moe_.capacity_factor) : 0;
    kc::dispatch_plan(a.counts.get(), a.offsets.get(), a.slot_row.get(), a.row_slot.get(),
                      a.dropped.get(), a.topk_idx.get(), n, e, kk, capacity, plan_scratch_.get(),
                      stream_);
    kc::permute_forward(a.xp.get(), a.h2n.get(), a.row_slot.get(), n * kk, kk, d, stream_);
  }
  // The grouped GEMM takes each expert's row count on the host: wait for this layer's plan.
  std::vector<std::int64_t>& counts = counts_host_[std::size_t(li)];
  std::int64_t dropped = 0;
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  CUDA_CHECK(cudaMemcpy(counts.data(), a.counts.get(), a.counts.bytes(), cudaMemcpyDeviceToHost));
  CUDA_CHECK(cudaMemcpy(&dropped, a.dropped.get(), sizeof dropped, cudaMemcpyDeviceToHost));
  dropped_ += dropped;
  {
    PhaseScope t(timer, "experts");
    kc::swiglu_grouped_forward(*blas_, a.yp.get(), a.h1.get(), a.h3.get(), a.act.get(), a.xp.get(),
                               wt(o.w1[0]), wt(o.w3[0]), wt(o.w2[0]), counts.data(), e, d, f);
  }
  {
    PhaseScope t(timer, "combine");
    bf16* x_out =
        li + 1 < m.num_hidden_layers ? acts_[std::size_t(li + 1)]->x_in.get() : x_final_.get();
    kc::unpermute_combine_forward(x_out, a.yp.get(), a.topk_w.get(), a.slot_row.get(), n, kk, d,
                                  stream_);
    kc::add_bf16(x_out, x_out, a.x_mid.get(), n * d, stream_);
  }
}

void GpuMixtral::backward(double loss_scale, EventTimer* timer) {
  const ModelSpec& m = model_;
  const std::int64_t n = tokens_, d = m.hidden_size, v = m.vocab_size;
  {
    PhaseScope t(timer, "lm_head");
    const std::int64_t count = cpu::count_targets(targets_host_.data(), n);
    const double scale = count > 0 ? loss_scale / double(count) : 0.0;
    // The logits buffer becomes d(loss)/d(logits) in place.
    kc::cross_entropy_fused(losses_.get(), logits_.get(), logits_.get(), targets_.get(), n, v,
                            float(scale), stream_);
    linear_backward(dh_.get(), logits_.get(), hf_.get(), layout_.lm_head(), n, d, v, 0.f);
    kc::rmsnorm_backward(dx_.get(), grad(layout_.final_norm()), dh_.get(), x_final_.get(),
                         wt(layout_.final_norm()), rstd_f_.get(), n, d, stream_);
  }
  for (std::int64_t li = m.num_hidden_layers - 1; li >= 0; --li)
    layer_backward(li, loss_scale, timer);
  {
    PhaseScope t(timer, "lm_head");
    kc::embedding_backward(grad(layout_.embedding()), dx_.get(), ids_.get(), n, v, d, stream_);
  }
}

void GpuMixtral::layer_backward(std::int64_t li, double loss_scale, EventTimer* timer) {
  const ModelSpec& m = model_;
  const std::int64_t n = tokens_, d = m.hidden_size, q = m.q_dim(), kv = m.kv_dim();
  const std::int64_t e = m.num_local_experts, kk = m.num_experts_per_tok;
  const std::int64_t f = m.moe_intermediate_size;
  LayerActs& a = *acts_[std::size_t(li)];
  const LayerOffsets& o = layout_.layer(li);
  const bool aux_on = moe_.load_balancing == LoadBalancing::AuxLoss && moe_.aux_loss_coef > 0;
  // dx_ holds d/d(layer output); the residual passes it on to x_mid.
  CUDA_CHECK(
      cudaMemcpyAsync(dx_mid_.get(), dx_.get(), dx_.bytes(), cudaMemcpyDeviceToDevice, stream_));
  {
    PhaseScope t(timer, "combine");
    kc::unpermute_combine_backward(dyp_.get(), dtopk_w_.get(), dx_.get(), a.yp.get(),
                                   a.topk_w.get(), a.slot_row.get(), n, kk, d, stream_);
  }
  {
    PhaseScope t(timer, "experts");
    kc::swiglu_grouped_backward(*blas_, dxp_.get(), grad(o.w1[0]), grad(o.w3[0]), grad(o.w2[0]),
                                dh1_.get(), dh3_.get(), dyp_.get(), a.xp.get(), a.h1.get(),
                                a.h3.get(), a.act.get(), wt(o.w1[0]), wt(o.w3[0]), wt(o.w2[0]),
                                counts_host_[std::size_t(li)].data(), e, d, f);
  }
  {
    PhaseScope t(timer, "dispatch");
    kc::permute_backward(dh_.get(), dxp_.get(), a.slot_row.get(), n, kk, d, stream_);
  }
  {
    PhaseScope t(timer, "router");
    if (moe_.load_balancing == LoadBalancing::Sinkhorn) {
      kc::router_sinkhorn_backward(drouter_.get(), dtopk_w_.get(), a.probs.get(), a.topk_idx.get(),
                                   n, e, kk, stream_);
    } else {
      const float* dprobs = nullptr;
      if (aux_on) {
        CUDA_CHECK(cudaMemsetAsync(dprobs_.get(), 0, dprobs_.bytes(), stream_));
        kc::aux_loss_backward(dprobs_.get(), aux_counts_.get(), n * m.num_hidden_layers, n, e,
                              loss_scale * moe_.aux_loss_coef, stream_);
        dprobs = dprobs_.get();
      }
      kc::router_backward(drouter_.get(), dtopk_w_.get(), dprobs, a.probs.get(), a.topk_idx.get(),
                          n, e, kk, m.norm_topk_prob, stream_);
    }
    if (moe_.z_loss_coef > 0) {
      kc::z_loss_backward(drouter_.get(), a.router_logits.get(), n, e,
                          loss_scale * moe_.z_loss_coef, stream_);
    }
    kc::cast_float_to_bf16(drouter_bf16_.get(), drouter_.get(), n * e, stream_);
    blas_->gemm(true, false, e, d, n, 1.f, drouter_bf16_.get(), e, a.h2n.get(), d, 1.f,
                grad(o.gate), DType::F32, d);
    blas_->gemm(false, false, n, d, e, 1.f, drouter_bf16_.get(), e, wt(o.gate), d, 1.f, dh_.get(),
                DType::BF16, d);
    kc::rmsnorm_backward(dtmp_.get(), grad(o.post_norm), dh_.get(), a.x_mid.get(), wt(o.post_norm),
                         a.rstd2.get(), n, d, stream_);
    kc::add_bf16(dx_mid_.get(), dx_mid_.get(), dtmp_.get(), n * d, stream_);
  }
  {
    PhaseScope t(timer, "attention");
    linear_backward(dctx_.get(), dx_mid_.get(), a.ctx.get(), o.o, n, q, d, 0.f);
    kc::attention_backward(*blas_, dq_.get(), dk_.get(), dv_.get(), dctx_.get(), a.q.get(),
                           a.k.get(), a.v.get(), a.att.get(), batch_, seq_, m.num_attention_heads,
                           m.num_key_value_heads, m.head_dim, attention_scratch_.get());
    kc::rope_backward(dq_.get(), dq_.get(), rope_cos_.get(), rope_sin_.get(), seq_, 0, batch_, seq_,
                      m.num_attention_heads, m.head_dim, stream_);
    kc::rope_backward(dk_.get(), dk_.get(), rope_cos_.get(), rope_sin_.get(), seq_, 0, batch_, seq_,
                      m.num_key_value_heads, m.head_dim, stream_);
    linear_backward(dh_.get(), dq_.get(), a.h1n.get(), o.q, n, d, q, 0.f);
    linear_backward(dh_.get(), dk_.get(), a.h1n.get(), o.k, n, d, kv, 1.f);
    linear_backward(dh_.get(), dv_.get(), a.h1n.get(), o.v, n, d, kv, 1.f);
    kc::rmsnorm_backward(dtmp_.get(), grad(o.input_norm), dh_.get(), a.x_in.get(), wt(o.input_norm),
                         a.rstd1.get(), n, d, stream_);
    // d/d(layer input) = the residual path plus the attention path.
    kc::add_bf16(dx_.get(), dx_mid_.get(), dtmp_.get(), n * d, stream_);
  }
}

double GpuMixtral::gradient_norm() {
  kc::sum_of_squares(norm_total_.get(), grads_.get(), grads_.size(), norm_partial_.get(), stream_);
  double total = 0;
  CUDA_CHECK(
      cudaMemcpyAsync(&total, norm_total_.get(), sizeof total, cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  return std::sqrt(total);
}

void GpuMixtral::adamw_step(const kc::AdamWParams& hp, std::int64_t step, double grad_scale) {
  kc::adamw_step(master_.get(), adam_m_.get(), adam_v_.get(), grads_.get(), working_.get(),
                 master_.size(), hp, step, grad_scale, stream_);
}

}  // namespace moetune::executor::gpu
