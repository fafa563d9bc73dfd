// Token dispatchers (Megatron's MoE token dispatchers): move each routed (token, slot) row to the
// rank owning its expert and bring the expert outputs back, weighted by the router. Each
// direction is split as Megatron splits it — a preprocess that stays on this rank, the
// communication, a postprocess — so only the middle part touches the network:
//   dispatch: preprocess (the plan over this rank's tokens) -> token_dispatch -> postprocess
//             (the local experts' rows, expert-major)
//   combine:  preprocess -> token_combine -> postprocess (unpermute, weighted sum)
// The backward of dispatch moves gradients the way combine moves outputs, and the other way
// round. Two kinds, chosen by the plan (TrainSpec's dispatcher):
//   alltoall  — rows go to their expert's rank with a variable all-to-all over EP (counts
//               first), and come back the same way;
//   allgather — every EP rank gathers all the group's tokens and routing, picks the rows of its
//               own experts, and the combined outputs are reduce-scattered back.
// With ep = 1 both are the same local permute and unpermute.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/train_spec.hpp"
#include "executor/backend.hpp"
#include "executor/model_context.hpp"
#include "executor/moe/router.hpp"

namespace moetune::executor {

// What one layer's dispatch keeps for its combine and for the backward.
struct DispatchActs {
  // The plan over this rank's tokens and all e experts (capacity applied here, at the source):
  // rows per expert (also on the host), their offsets, and the permuted row of each slot.
  Buffer counts;                          // [e] int64
  Buffer offsets;                         // [e + 1] int64
  Buffer slot_row;                        // [n * kk] int64, -1 where dropped
  std::vector<std::int64_t> counts_host;  // [e]
  std::int64_t rows = 0;                  // slots kept on this rank (R)
  // The local experts' rows, expert-major, and how many each local expert has (host).
  Buffer xp;                               // [expert_rows, d] the experts' input
  std::vector<std::int64_t> local_counts;  // [e / ep]
  std::int64_t expert_rows = 0;
  // The expert outputs that the routing weights' gradient reads: [rows, d] in this rank's
  // dispatch order (alltoall), or [expert_rows, d] expert-major (allgather with ep > 1).
  Buffer yp;
  // alltoall, ep > 1: rows from each (peer, local expert) pair, [ep * e / ep].
  std::vector<std::int64_t> recv_counts;
  // allgather, ep > 1: the EP group's top-k weights [ep * n * kk] fp32 and the plan of the
  // gathered slots onto this rank's experts [ep * n * kk] int64 (-1 elsewhere).
  Buffer gathered_w, gathered_slot_row;
  std::int64_t bytes() const;
};

class TokenDispatcher {
 public:
  explicit TokenDispatcher(ModelContext& c);
  virtual ~TokenDispatcher() = default;
  virtual const char* name() const = 0;

  void allocate(DispatchActs& a);

  // Routed tokens h [n, d] (whole sequence) -> a.xp and a.local_counts.
  void dispatch(DispatchActs& a, const RouterActs& r, const void* h, std::int64_t capacity);
  // Where the experts write their outputs [expert_rows, d].
  void* expert_output(DispatchActs& a);
  // Expert outputs -> out [n, d] = sum over each token's kept slots of weight * output.
  void combine(DispatchActs& a, const RouterActs& r, void* out);
  // Backward of combine: dout [n, d] -> dtopk_w [n, kk] written, and the gradient of the expert
  // outputs [expert_rows, d] returned (in dyp [n * kk, d] when it fits there).
  const void* combine_backward(DispatchActs& a, const RouterActs& r, const void* dout,
                               float* dtopk_w, void* dyp);
  // Backward of dispatch: dx [expert_rows, d] (the experts' input gradient) -> dh [n, d]
  // (overwritten); dxp [n * kk, d] is scratch.
  void dispatch_backward(DispatchActs& a, const void* dx, void* dh, void* dxp);

  // Bytes of the forward scratch every layer shares (the slot of each permuted row).
  std::int64_t scratch_bytes() const { return static_cast<std::int64_t>(row_slot_.bytes()); }

 protected:
  // The ep > 1 parts, each kind its own.
  virtual void allocate_remote(DispatchActs& a) = 0;
  virtual void dispatch_preprocess(DispatchActs& a, const RouterActs& r, const void* h) = 0;
  virtual void token_dispatch(DispatchActs& a, const RouterActs& r) = 0;
  virtual void dispatch_postprocess(DispatchActs& a) = 0;
  virtual void* remote_expert_output(DispatchActs& a) = 0;
  virtual void combine_preprocess(DispatchActs& a) = 0;
  virtual void token_combine(DispatchActs& a, void* out) = 0;
  virtual void combine_postprocess(DispatchActs& a, const RouterActs& r, void* out) = 0;
  virtual const void* remote_combine_backward(DispatchActs& a, const RouterActs& r,
                                              const void* dout, float* dtopk_w, void* dyp) = 0;
  virtual void remote_dispatch_backward(DispatchActs& a, const void* dx, void* dh, void* dxp) = 0;

  ModelContext& c_;
  std::int64_t local_experts_;
  Buffer row_slot_;  // [n * kk] int64: the slot of each permuted row (forward scratch)
};

std::unique_ptr<TokenDispatcher> make_token_dispatcher(Dispatcher kind, ModelContext& c);

}  // namespace moetune::executor
