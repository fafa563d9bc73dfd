// The MoE router (Megatron's TopKRouter): logits = h Wg^T in fp32 over the whole sequence (every
// tensor-parallel rank routes all tokens, redundantly), then softmax + top-k with Mixtral's
// renormalised weights, or Sinkhorn-balanced top-k; it returns the routing (probabilities,
// top-k indices and weights) and accumulates the load-balancing statistics and the z-loss.
#pragma once

#include <cstdint>

#include "executor/backend.hpp"
#include "executor/model_context.hpp"

namespace moetune::executor {

// What the router keeps for its backward and for the dispatcher.
struct RouterActs {
  Buffer logits;    // [n, e] fp32, kept only with a z-loss (its backward needs them)
  Buffer probs;     // [n, e] fp32: softmax, or Sinkhorn's scores
  Buffer topk_w;    // [n, kk] fp32
  Buffer topk_idx;  // [n, kk] int32
  void allocate(ModelContext& c);
  std::int64_t bytes() const;
};

// One micro-batch's routing statistics over all layers (the load-balancing loss pools every
// layer's tokens, as Hugging Face's load_balancing_loss_func does) and its z-loss.
struct RoutingStats {
  Buffer counts;    // [e] int64: routed slots per expert
  Buffer prob_sum;  // [e] fp64: summed probabilities per expert
  Buffer z_sum;     // [1] fp64: z-loss summed over layers
  void allocate(ModelContext& c);
  void clear(Backend& be);
};

// Backward scratch: d(logits) and d(probabilities) [n, e] fp32, and d(logits) in act for the
// gate's GEMMs (the fp32 buffer itself on a backend whose act is fp32).
struct RouterGrads {
  float* dlogits = nullptr;
  float* dprobs = nullptr;
  void* dlogits_act = nullptr;
};

class Router {
 public:
  explicit Router(ModelContext& c);

  // h [n, d] (whole sequence), gate [e, d] working weights. `stats` is null when a backward
  // recomputes the layer (its statistics were counted by the forward pass).
  void forward(RouterActs& a, const void* h, const void* gate, RoutingStats* stats);
  // From d(top-k weights) [n, kk] and the load-balancing and z losses (scaled by loss_scale):
  // gate_grad (fp32) += d(logits)^T h and dh [n, d] += d(logits) Wg / tp (each tp rank routed
  // the whole sequence, so the reduce-scatter that follows sums this share once).
  void backward(const RouterActs& a, const float* dtopk_w, const void* h, const void* gate,
                float* gate_grad, void* dh, const RouterGrads& g, const RoutingStats& stats,
                double loss_scale);
  // Bytes of the shared forward scratch (the logits when they are not kept).
  std::int64_t scratch_bytes() const { return static_cast<std::int64_t>(logits_.bytes()); }

 private:
  float* logits(RouterActs& a) { return a.logits.empty() ? logits_.f32() : a.logits.f32(); }
  ModelContext& c_;
  Buffer logits_;  // [n, e] fp32 when there is no z-loss
};

}  // namespace moetune::executor
