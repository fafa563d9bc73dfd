// The MoE half of a Mixtral layer as one unit (Megatron's MoELayer), forward and backward side by
// side:
//   x_out = x_mid + combine(experts(dispatch(norm(x_mid), router(norm(x_mid)))))
// It holds one router, one token dispatcher (the plan's kind) and one set of grouped experts,
// and runs them on each layer's saved state. With tensor parallelism the norm runs on this
// rank's [nl, d] chunk, its output is gathered over the sequence for the router and dispatcher,
// and the experts' partial sums are reduce-scattered back into the chunk after combine.
#pragma once

#include <cstdint>
#include <memory>

#include "executor/backend.hpp"
#include "executor/model_context.hpp"
#include "executor/moe/dispatcher.hpp"
#include "executor/moe/experts.hpp"
#include "executor/moe/router.hpp"
#include "executor/param_access.hpp"
#include "executor/parameters.hpp"

namespace moetune::executor {

// What one layer's MoE half keeps for its backward.
struct MoeActs {
  Buffer rstd;  // [nl] fp32, the norm's 1/rms
  Buffer h;     // [nl, d] the norm output (router and dispatch input; gathered again in backward)
  RouterActs router;
  DispatchActs dispatch;
  ExpertActs experts;
  std::int64_t bytes() const;
};

// Backward scratch of the MoE half (act unless noted): the router's gradients, d(top-k weights)
// [n * kk] fp32, the gradients of the routed copies' inputs and outputs [n * kk, d] and of w1's
// and w3's outputs [n * kk, f].
struct MoeGrads {
  RouterGrads router;
  float* dtopk_w = nullptr;
  void *dxp = nullptr, *dyp = nullptr, *dh1 = nullptr, *dh3 = nullptr;
};

class MoeLayer {
 public:
  explicit MoeLayer(ModelContext& c);

  void allocate(MoeActs& a);
  // x_out [nl, d] = x_mid + the MoE path. `stats` is null when a backward recomputes the layer.
  void forward(MoeActs& a, const void* x_mid, void* x_out, const LayerOffsets& o,
               ParameterAccess& p, RoutingStats* stats, std::int64_t capacity);
  // dx_mid [nl, d] = dx + d/d(x_mid) of the MoE path, where dx [nl, d] is d/d(x_out). dh [n, d]
  // and dtmp [nl, d] are scratch.
  void backward(MoeActs& a, const void* x_mid, const void* dx, void* dx_mid, const LayerOffsets& o,
                ParameterAccess& p, const MoeGrads& g, void* dh, void* dtmp,
                const RoutingStats& stats, double loss_scale);

  const TokenDispatcher& dispatcher() const { return *dispatcher_; }
  // The shared forward scratch of the router and dispatcher.
  std::int64_t scratch_bytes() const {
    return router_.scratch_bytes() + dispatcher_->scratch_bytes();
  }

 private:
  ModelContext& c_;
  Router router_;
  std::unique_ptr<TokenDispatcher> dispatcher_;
  GroupedExperts experts_;
  // Expert parallelism: the experts' input gradient and w1/w3 output gradients for the rows
  // this rank received (grow-only; with ep = 1 the backward scratch holds them).
  Buffer dx_e_, dh1_e_, dh3_e_;
};

}  // namespace moetune::executor
