// The Mixtral model, written once against the backend (executor/backend.hpp), with explicit
// forward and backward (no autograd):
//   embedding -> L x (AttentionBlock -> residual -> MoeLayer -> residual) -> RMSNorm -> LM head
//   -> cross-entropy.
// The parts live in their own units: attention_block.hpp, moe/ (router -> token dispatcher ->
// grouped experts -> combine), and the embedding, final norm, LM head and vocabulary-parallel
// loss here. Every activation a backward needs is kept in buffers sized once for a micro-batch
// of b sequences of s tokens (under full recompute: each layer's input, and one layer's buffers
// while its backward runs).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/model_spec.hpp"
#include "core/train_spec.hpp"
#include "executor/attention_block.hpp"
#include "executor/backend.hpp"
#include "executor/model_context.hpp"
#include "executor/moe/moe_layer.hpp"
#include "executor/param_access.hpp"
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

class MixtralModel {
 public:
  // `recompute`: full activation recompute — forward keeps only each layer's input, and
  // backward runs each layer's forward again before its backward (the same numbers, less
  // memory).
  MixtralModel(Backend& backend, const ModelSpec& model, const MoeOptions& moe, std::int64_t batch,
               std::int64_t seq_len, ModelParallel parallel = {}, bool recompute = false);
  MixtralModel(const MixtralModel&) = delete;
  MixtralModel& operator=(const MixtralModel&) = delete;

  Backend& backend() { return c_.be; }
  const ModelSpec& spec() const { return c_.model; }
  const ParameterLayout& layout() const { return layout_; }
  std::int64_t batch() const { return c_.dims.b; }
  std::int64_t seq_len() const { return c_.dims.s; }
  const char* dispatcher() const { return moe_.dispatcher().name(); }
  // Phase times (collected from the backend) are recorded while this is on.
  void set_timing(bool on) { c_.timing = on; }

  // Forward pass over ids[B,S]; targets[B,S] are the next tokens (kIgnoreIndex to skip); both
  // host arrays. Keeps every activation for backward().
  MicroBatchLoss forward(ParameterAccess& access, const std::int32_t* ids,
                         const std::int32_t* targets);
  // Adds loss_scale * d(total loss)/d(params) into the gradients, for the last forward(). With
  // data parallelism loss_scale carries the 1/dp of the mean over ranks; the load-balancing
  // loss is this micro-batch's own (per micro-batch, as Megatron), scaled alike.
  void backward(ParameterAccess& access, double loss_scale);
  // The same over whole working weights (the backend's memory; on the CPU the fp32 parameters).
  MicroBatchLoss forward(const void* working, const std::int32_t* ids, const std::int32_t* targets);
  void backward(const void* working, float* grads, double loss_scale);

  // The logits [B*S, V/tp] of the last forward, as fp32 on the host.
  std::vector<float> logits_host() const;
  // Routed (token, slot) pairs per expert in each layer for the last forward(): [layer][expert].
  std::vector<std::vector<std::int64_t>> tokens_per_expert() const;
  std::int64_t dropped_slots() const { return dropped_; }
  // Bytes of every activation and scratch buffer this model holds, as the simulator's memory
  // model counts them (communication staging is not included: the simulator counts it as
  // communication buffers).
  std::int64_t activation_bytes() const;

 private:
  struct LayerActs {
    Buffer x_in;   // [nl, d] the layer's input (not kept under recompute: saved_inputs_ is)
    Buffer x_mid;  // [nl, d] after the attention residual
    AttentionActs attention;
    MoeActs moe;
  };
  LayerActs& layer_acts(std::int64_t layer);
  void* layer_input(std::int64_t layer);
  void layer_forward(std::int64_t layer, void* x_out, ParameterAccess& access, bool count);
  void embed_forward(ParameterAccess& access);
  void head_forward(ParameterAccess& access, MicroBatchLoss& loss);
  void head_backward(ParameterAccess& access, double loss_scale);
  void embed_backward(ParameterAccess& access);

  ModelContext c_;
  bool recompute_;
  ParameterLayout layout_;
  AttentionBlock attention_;
  MoeLayer moe_;
  std::int64_t capacity_ = 0;  // rows per expert kept (0: all)
  std::vector<std::int32_t> ids_host_, targets_host_;
  Buffer ids_, targets_;  // [n] int32
  std::vector<LayerActs> acts_;
  // Full recompute: each layer's input [nl, d] and its tokens per expert from the forward.
  std::vector<Buffer> saved_inputs_;
  std::vector<std::vector<std::int64_t>> saved_counts_;
  // The head: final norm input and 1/rms, its output, logits [n, vl] (the loss gradient is
  // written over them), and the loss statistics: each row's log-sum-exp (this rank's columns,
  // then the whole vocabulary), its target logit then loss, and with tp > 1 every rank's parts.
  Buffer x_final_, rstd_f_, hf_, logits_;
  Buffer lse_, target_loss_, lse_parts_;
  std::vector<float> losses_host_;
  RoutingStats stats_;
  std::vector<std::int64_t> stats_counts_host_;
  std::vector<double> stats_prob_sum_host_;
  std::int64_t dropped_ = 0;
  // Backward: the residual stream's gradients dx_, dx_mid_, dtmp_ [nl, d] and dh_ [n, d] live
  // through a layer's backward; the attention half's gradients and the MoE half's never live at
  // the same time and share one arena.
  Buffer dx_, dx_mid_, dtmp_, dh_, arena_;
  AttentionGrads attention_grads_;
  MoeGrads moe_grads_;
};

}  // namespace moetune::executor
