// The all-gather token dispatcher (Megatron's MoEAllGatherTokenDispatcher) for ep > 1: every EP
// rank all-gathers the group's tokens [ep * n, d], their top-k weights and their routing (slots
// dropped by capacity at their source marked as such), plans the gathered slots onto its own
// experts (the rest go to a sink group that is never computed), and runs its experts on them.
// Combine weights each output by its router weight into [ep * n, d] partial sums (zero where
// another rank's experts did the work) and reduce-scatters them back to the tokens' ranks. It
// moves every token to every EP rank: more bytes than all-to-all, but only collectives of fixed
// size and no count exchange.
#include <numeric>
#include <vector>

#include "executor/moe/dispatcher.hpp"

namespace moetune::executor {

namespace {

class AllGatherDispatcher final : public TokenDispatcher {
 public:
  explicit AllGatherDispatcher(ModelContext& c)
      : TokenDispatcher(c), counts_host_(static_cast<std::size_t>(local_experts_ + 1)) {
    if (c.ep_size == 1) return;
    const ModelDims& m = c.dims;
    const std::int64_t slots = c.ep_size * m.n * m.kk;
    masked_.resize(c.be, m.n * m.kk, DType::I32);
    tokens_.resize(c.be, c.ep_size * m.n * m.d, c.act);
    idx_.resize(c.be, slots, DType::I32);
    local_idx_.resize(c.be, slots, DType::I32);
    counts_.resize(c.be, local_experts_ + 1, DType::I64);
    offsets_.resize(c.be, local_experts_ + 2, DType::I64);
    row_slot_g_.resize(c.be, slots, DType::I64);
    dw_.resize(c.be, slots, DType::F32);
  }
  const char* name() const override { return "allgather"; }

 protected:
  void allocate_remote(DispatchActs& a) override {
    const ModelDims& m = c_.dims;
    const std::int64_t slots = c_.ep_size * m.n * m.kk;
    a.gathered_w.resize(c_.be, slots, DType::F32);
    a.gathered_slot_row.resize(c_.be, slots, DType::I64);
    a.xp.resize(c_.be, 0, c_.act);
    a.yp.resize(c_.be, 0, c_.act);
  }

  void dispatch_preprocess(DispatchActs& a, const RouterActs& r, const void* h) override {
    const ModelDims& m = c_.dims;
    // This rank's routing as the group will see it: dropped slots point at no expert (e).
    c_.be.localize_routing(masked_.i32(), r.topk_idx.i32(), a.slot_row.i64(), m.n * m.kk, 0, m.e);
    pending_tokens_ = h;
  }
  void token_dispatch(DispatchActs& a, const RouterActs& r) override {
    const ModelDims& m = c_.dims;
    Communicator& ep = *c_.parallel.ep;
    ep.all_gather(pending_tokens_, tokens_.data(), m.n * m.d, c_.act);
    ep.all_gather(masked_.data(), idx_.data(), m.n * m.kk, DType::I32);
    ep.all_gather(r.topk_w.data(), a.gathered_w.data(), m.n * m.kk, DType::F32);
  }
  void dispatch_postprocess(DispatchActs& a) override {
    Backend& be = c_.be;
    const ModelDims& m = c_.dims;
    const std::int64_t tokens = c_.ep_size * m.n, slots = tokens * m.kk;
    be.localize_routing(local_idx_.i32(), idx_.i32(), nullptr, slots, c_.ep_rank * local_experts_,
                        local_experts_);
    // The sink group (index local_experts_) comes last, so this rank's rows are the first ones.
    be.dispatch_plan(counts_.i64(), offsets_.i64(), a.gathered_slot_row.i64(), row_slot_g_.i64(),
                     local_idx_.i32(), tokens, local_experts_ + 1, m.kk, 0);
    be.copy_to_host(counts_host_.data(), counts_.data(), counts_.bytes());
    std::copy(counts_host_.begin(), counts_host_.end() - 1, a.local_counts.begin());
    a.expert_rows = std::accumulate(a.local_counts.begin(), a.local_counts.end(), std::int64_t{0});
    be.drop_rows_from(a.gathered_slot_row.i64(), slots, a.expert_rows);
    a.xp.resize(be, a.expert_rows * m.d, c_.act);
    be.permute_forward(a.xp.data(), tokens_.data(), row_slot_g_.i64(), a.expert_rows, m.kk, m.d);
  }
  void* remote_expert_output(DispatchActs& a) override {
    a.yp.resize(c_.be, a.expert_rows * c_.dims.d, c_.act);
    return a.yp.data();
  }
  void combine_preprocess(DispatchActs& a) override {
    const ModelDims& m = c_.dims;
    c_.be.unpermute_combine_forward(tokens_.data(), a.yp.data(), a.gathered_w.f32(),
                                    a.gathered_slot_row.i64(), c_.ep_size * m.n, m.kk, m.d);
  }
  void token_combine(DispatchActs&, void* out) override {
    c_.parallel.ep->reduce_scatter(tokens_.data(), out, c_.dims.n * c_.dims.d, c_.act);
  }
  void combine_postprocess(DispatchActs&, const RouterActs&, void*) override {}

  // The backward of the reduce-scatter is an all-gather of the output gradients; each slot's
  // weight gradient lives on the rank that ran its expert and is reduce-scattered home.
  const void* remote_combine_backward(DispatchActs& a, const RouterActs&, const void* dout,
                                      float* dtopk_w, void*) override {
    const ModelDims& m = c_.dims;
    Communicator& ep = *c_.parallel.ep;
    ep.all_gather(dout, tokens_.data(), m.n * m.d, c_.act);
    dy_.resize(c_.be, a.expert_rows * m.d, c_.act);
    c_.be.unpermute_combine_backward(dy_.data(), dw_.f32(), tokens_.data(), a.yp.data(),
                                     a.gathered_w.f32(), a.gathered_slot_row.i64(),
                                     c_.ep_size * m.n, m.kk, m.d);
    ep.reduce_scatter(dw_.data(), dtopk_w, m.n * m.kk, DType::F32);
    return dy_.data();
  }
  // The backward of the all-gather of tokens: input gradients reduce-scattered home.
  void remote_dispatch_backward(DispatchActs& a, const void* dx, void* dh, void*) override {
    const ModelDims& m = c_.dims;
    c_.be.permute_backward(tokens_.data(), dx, a.gathered_slot_row.i64(), c_.ep_size * m.n, m.kk,
                           m.d);
    c_.parallel.ep->reduce_scatter(tokens_.data(), dh, m.n * m.d, c_.act);
  }

 private:
  std::vector<std::int64_t> counts_host_;  // [e / ep + 1] rows per local expert, then the sink
  const void* pending_tokens_ = nullptr;
  Buffer masked_;      // [n * kk] int32 this rank's routing, dropped slots marked
  Buffer tokens_;      // [ep * n, d] gathered tokens; combined outputs; their gradients
  Buffer idx_;         // [ep * n * kk] int32 the group's routing
  Buffer local_idx_;   // [ep * n * kk] int32 the same onto this rank's experts and the sink
  Buffer counts_;      // [e / ep + 1] int64
  Buffer offsets_;     // [e / ep + 2] int64
  Buffer row_slot_g_;  // [ep * n * kk] int64
  Buffer dw_;          // [ep * n * kk] fp32 the weights' gradient of every gathered slot
  Buffer dy_;          // [expert_rows, d] the gradient of the expert outputs
};

}  // namespace

std::unique_ptr<TokenDispatcher> make_allgather_dispatcher(ModelContext& c) {
  return std::make_unique<AllGatherDispatcher>(c);
}

}  // namespace moetune::executor
