// The Mixtral model on the CPU backend, with explicit forward and backward (no autograd):
//   embedding -> L x (RMSNorm -> GQA attention with RoPE -> residual -> RMSNorm -> MoE -> residual)
//   -> RMSNorm -> LM head -> cross-entropy.
// The MoE layer is Megatron's decomposition: router -> dispatcher (permute by expert) -> experts
// (grouped SwiGLU) -> combine (unpermute, weighted sum). All activations a backward pass needs are
// kept in buffers sized once for a micro-batch of B sequences of S tokens.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/model_spec.hpp"
#include "core/train_spec.hpp"
#include "executor/comm/communicator.hpp"
#include "executor/expert_exchange.hpp"
#include "executor/parameters.hpp"

namespace moetune::executor {

struct MicroBatchLoss {
  double ce = 0;   // mean cross-entropy over the non-ignored targets
  double aux = 0;  // load-balancing loss over all layers' tokens, before its coefficient
  double z = 0;    // z-loss summed over layers, before its coefficient
  std::int64_t targets = 0;
  // What training minimises: ce + aux_coef * aux + z_coef * z.
  double total(const MoeOptions& moe) const {
    return ce + moe.aux_loss_coef * aux + moe.z_loss_coef * z;
  }
};

// Seconds spent per phase, named as the simulator names them.
using PhaseTimes = std::map<std::string, double>;

// The groups a model needs when it runs on several ranks (null: one rank).
struct ModelParallel {
  // Tensor parallel with sequence parallelism: heads, FFN width and vocabulary split over tp; the
  // residual stream, norms and their inputs split over the sequence (N / tp tokens per rank).
  Communicator* tp = nullptr;
  Communicator* ep = nullptr;  // expert parallel: this rank holds E / ep experts of every layer
  Communicator* dp = nullptr;  // data parallel: the load-balancing statistics are summed over it
};

// Where the model reads its parameters and writes its gradients. The model walks the parameter
// groups in order — 0 the embedding, 1 + l layer l, L + 1 the final norm and LM head — forward
// 0..L+1, backward L+1..0, and asks for each group before it touches it and lets it go after.
// A whole local flat buffer (FlatParameters) needs none of that; hybrid sharding
// (ShardedParameters, executor/sharding.hpp) gathers a group when it is asked for, prefetches the
// next one, frees it on release, and reduce-scatters a group's gradients once its backward is
// done.
class ParameterAccess {
 public:
  virtual ~ParameterAccess() = default;
  virtual void acquire(std::int64_t group, bool backward) = 0;
  virtual void release(std::int64_t group, bool backward) = 0;
  // The pass is over: finish pending gradient reductions (backward).
  virtual void end_pass(bool backward) = 0;
  // The tensor that starts at `offset` of the flat layout (its group acquired).
  virtual const float* param(std::int64_t offset) = 0;
  // Its gradient accumulator (backward, its group acquired); the model adds into it.
  virtual float* grad(std::int64_t offset) = 0;
};

// Whole local parameters and gradients in two flat buffers.
class FlatParameters final : public ParameterAccess {
 public:
  FlatParameters(const float* params, float* grads) : params_(params), grads_(grads) {}
  void acquire(std::int64_t, bool) override {}
  void release(std::int64_t, bool) override {}
  void end_pass(bool) override {}
  const float* param(std::int64_t offset) override { return params_ + offset; }
  float* grad(std::int64_t offset) override { return grads_ + offset; }

 private:
  const float* params_;
  float* grads_;
};

class MixtralModel {
 public:
  // `recompute`: full activation recompute — forward keeps only each layer's input, and backward
  // runs each layer's forward again before its backward (the same numbers, less memory).
  MixtralModel(const ModelSpec& model, const MoeOptions& moe, std::int64_t batch,
               std::int64_t seq_len, ModelParallel parallel = {}, bool recompute = false);
  // The backward scratch pointers point into the model's own arena.
  MixtralModel(const MixtralModel&) = delete;
  MixtralModel& operator=(const MixtralModel&) = delete;

  const ModelSpec& spec() const { return model_; }
  const ParameterLayout& layout() const { return layout_; }
  std::int64_t batch() const { return batch_; }
  std::int64_t seq_len() const { return seq_; }

  // Forward pass over ids[B,S]; targets[B,S] are the next tokens (kIgnoreIndex to skip). Keeps
  // every activation for backward() (under recompute, each layer's input only). logits() holds
  // [B*S, V] afterwards.
  MicroBatchLoss forward(const float* params, const std::int32_t* ids, const std::int32_t* targets,
                         PhaseTimes* times = nullptr);
  MicroBatchLoss forward(ParameterAccess& access, const std::int32_t* ids,
                         const std::int32_t* targets, PhaseTimes* times = nullptr);
  // Adds loss_scale * d(total loss)/d(params) into grads, for the last forward(). With data
  // parallelism, loss_scale carries the 1/dp of the mean over ranks; the load-balancing loss is
  // already global (statistics summed over the dp group), so its gradient is scaled by
  // loss_scale * dp.
  void backward(const float* params, float* grads, double loss_scale, PhaseTimes* times = nullptr);
  void backward(ParameterAccess& access, double loss_scale, PhaseTimes* times = nullptr);

  const std::vector<float>& logits() const { return logits_; }
  // Routed (token, slot) pairs per expert in each layer for the last forward(): [layer][expert].
  std::vector<std::vector<std::int64_t>> tokens_per_expert() const;
  std::int64_t dropped_slots() const { return dropped_; }
  // Bytes of every activation and scratch buffer this model holds (the expert-parallel exchange's
  // staging and the tensor-parallel staging are communication buffers, not counted here).
  std::int64_t activation_bytes() const;

 private:
  // What one layer keeps from its forward for its backward, and nothing else: buffers only the
  // forward reads live once in the model (forward scratch below).
  struct LayerActs {
    std::vector<float> x_in, rstd1, h1n, q, k, v, att, ctx, x_mid, rstd2, h2n;
    std::vector<float> probs, topk_w;
    std::vector<float> router_logits;  // [N, E], kept only for the z-loss backward (else empty)
    std::vector<std::int32_t> topk_idx;
    std::vector<std::int64_t> counts, offsets, slot_row;
    std::int64_t rows = 0;  // permuted rows kept
    // The experts' input [R, D] (one rank; empty with ep > 1, where `xg` holds it), their
    // intermediate [R, F] values and their outputs [N*K, D] in dispatch order.
    std::vector<float> xp, h1, h3, act, yp;
    // Expert parallelism: the exchange's counts, and the received inputs regrouped expert-major
    // ([local expert][peer][rows]).
    ExpertExchange exchange;
    std::vector<float> xg;
  };

  // Expert parallelism: send each routed row to the rank owning its expert, run the local experts,
  // send the outputs back. `in` [rows, D] in dispatch order (expert-major over all experts).
  void experts_forward(LayerActs& a, const LayerOffsets& o, ParameterAccess& access,
                       PhaseTimes* times);
  void layer_forward(std::int64_t layer, LayerActs& a, float* x_out, ParameterAccess& access,
                     PhaseTimes* times, MicroBatchLoss* loss, std::int64_t capacity);
  // Layer l's buffers (the one shared set under recompute) and where its input lives.
  LayerActs& layer_acts(std::int64_t layer);
  float* layer_input(std::int64_t layer);
  void experts_backward(LayerActs& a, const LayerOffsets& o, ParameterAccess& access,
                        PhaseTimes* times);

  ModelSpec model_;
  MoeOptions moe_;
  ModelParallel parallel_;
  bool recompute_ = false;
  std::int64_t ep_size_ = 1, ep_rank_ = 0, local_experts_ = 0, dp_size_ = 1;
  std::int64_t tp_size_ = 1, tp_rank_ = 0;

  // Sizes of one micro-batch on this rank: tokens (all, and this rank's sequence chunk), hidden,
  // q and kv widths, query and kv heads, experts, top-k, expert FFN width, vocabulary (all, and
  // this rank's part).
  struct Dims {
    std::int64_t n, d, nl, ql, kvl, heads, kv_heads, e, kk, f, v, vl;
  };
  Dims dims() const;
  // Layer a's router logits [N, E]: its own with a z-loss, else the shared forward scratch.
  float* router_logits(LayerActs& a);
  // Sequence parallelism: partial [N, D] sums reduce-scattered into this rank's [N/tp, D] chunk.
  void tp_scatter(const float* partial, float* local);
  // This rank's [N/tp, D] chunk over the whole sequence [N, D]: itself with tp = 1, else
  // all-gathered into gathered_ (valid until the next use of gathered_).
  const float* gather_sequence(const std::vector<float>& local);
  double vocab_parallel_loss();  // tp > 1: cross-entropy over split vocabulary
  void vocab_parallel_loss_backward(double loss_scale);
  ParameterLayout layout_;
  std::int64_t batch_, seq_, tokens_;
  std::vector<float> rope_cos_, rope_sin_;
  std::vector<std::int32_t> ids_, targets_;
  std::vector<LayerActs> acts_;
  // Full recompute: each layer's input [N/tp, D] and its tokens per expert from the forward.
  std::vector<std::vector<float>> saved_inputs_;
  std::vector<std::vector<std::int64_t>> saved_counts_;
  std::vector<float> x_final_, rstd_f_, hf_, logits_;
  // Statistics of the load-balancing loss over all layers of the last forward.
  std::vector<std::int64_t> aux_counts_;
  std::vector<double> aux_prob_sum_;
  std::int64_t dropped_ = 0;
  // Forward scratch: what a layer's forward needs and its backward does not. Router logits
  // [N, E] when there is no z-loss; the slot of each permuted row [N*K]; with ep > 1 the
  // permuted rows [N*K, D] before they are sent.
  std::vector<float> router_logits_, xp_send_;
  std::vector<std::int64_t> row_slot_;
  // Backward scratch. The residual-stream gradients dx_, dx_mid_, dtmp_ [N/tp, D] and dh_ [N, D]
  // live through a layer's backward; the attention half's gradients (dq_, dk_, dv_, dctx_) and
  // the MoE half's (drouter_, dprobs_ [N, E], dtopk_w_ [N*K], dxp_, dyp_ [N*K, D], dh1_, dh3_
  // [N*K, F]) never live at the same time and share one arena.
  std::vector<float> dx_, dx_mid_, dtmp_, dh_, backward_arena_;
  float *dq_ = nullptr, *dk_ = nullptr, *dv_ = nullptr, *dctx_ = nullptr;
  float *drouter_ = nullptr, *dprobs_ = nullptr, *dtopk_w_ = nullptr;
  float *dxp_ = nullptr, *dyp_ = nullptr, *dh1_ = nullptr, *dh3_ = nullptr;
  std::vector<float> exchange_, exchange2_;             // expert-parallel staging, [rows, D]
  std::vector<float> norm_local_, gathered_, partial_;  // tensor-parallel staging, [N/tp or N, D]
  std::vector<double> lse_;                             // [N] log-sum-exp of the full vocabulary
};

}  // namespace moetune::executor
