// The MoE layer on the backend.
#include "executor/moe/moe_layer.hpp"

namespace moetune::executor {

std::int64_t MoeActs::bytes() const {
  return static_cast<std::int64_t>(rstd.bytes() + h.bytes()) + router.bytes() + dispatch.bytes() +
         experts.bytes();
}

MoeLayer::MoeLayer(ModelContext& c)
    : c_(c), router_(c), dispatcher_(make_token_dispatcher(c.moe.dispatcher, c)), experts_(c) {}

void MoeLayer::allocate(MoeActs& a) {
  const ModelDims& m = c_.dims;
  a.rstd.resize(c_.be, m.nl, DType::F32);
  a.h.resize(c_.be, m.nl * m.d, c_.act);
  a.router.allocate(c_);
  dispatcher_->allocate(a.dispatch);
  // Room for every routed row when they all stay here; expert parallelism resizes per step.
  a.experts.resize(c_, m.n * m.kk);
}

void MoeLayer::forward(MoeActs& a, const void* x_mid, void* x_out, const LayerOffsets& o,
                       ParameterAccess& p, RoutingStats* stats, std::int64_t capacity) {
  Backend& be = c_.be;
  const ModelDims& m = c_.dims;
  const void* h = nullptr;  // the norm output over the whole sequence
  {
    auto phase = c_.phase("router");
    be.rmsnorm_forward(a.h.data(), a.rstd.f32(), x_mid, p.param(o.post_norm), m.nl, m.d,
                       c_.model.rms_norm_eps);
    h = c_.gather_sequence(a.h.data());
    router_.forward(a.router, h, p.param(o.gate), stats);
  }
  {
    auto phase = c_.phase("dispatch");
    dispatcher_->dispatch(a.dispatch, a.router, h, capacity);
  }
  {
    auto phase = c_.phase("experts");
    if (c_.ep_size > 1) a.experts.resize(c_, a.dispatch.expert_rows);
    experts_.forward(a.experts, a.dispatch.xp.data(), dispatcher_->expert_output(a.dispatch),
                     a.dispatch.local_counts, o, p);
  }
  {
    auto phase = c_.phase("combine");
    // The experts' w2 is row-parallel: each tp rank holds a partial sum of every output.
    void* combined = c_.tp_size == 1 ? x_out : c_.partial();
    dispatcher_->combine(a.dispatch, a.router, combined);
    if (c_.tp_size > 1) c_.scatter_sequence(c_.partial(), x_out);
    be.add(x_out, x_out, x_mid, m.nl * m.d);
  }
}

void MoeLayer::backward(MoeActs& a, const void* x_mid, const void* dx, void* dx_mid,
                        const LayerOffsets& o, ParameterAccess& p, const MoeGrads& g, void* dh,
                        void* dtmp, const RoutingStats& stats, double loss_scale) {
  Backend& be = c_.be;
  const ModelDims& m = c_.dims;
  // dx holds d/d(layer output) for this rank's chunk; the residual passes it to x_mid.
  be.copy(dx_mid, dx, c_.act_bytes(m.nl * m.d));
  const void* dy = c_.gather_sequence(dx);  // d/d(combined output), whole sequence
  const void* dy_experts = nullptr;
  {
    auto phase = c_.phase("combine");
    dy_experts = dispatcher_->combine_backward(a.dispatch, a.router, dy, g.dtopk_w, g.dyp);
    // Each tp rank's expert outputs are partial sums: so is its weights' gradient.
    if (c_.tp_size > 1) c_.parallel.tp->all_reduce(g.dtopk_w, m.n * m.kk, DType::F32);
  }
  void* dx_experts = g.dxp;
  void *dh1 = g.dh1, *dh3 = g.dh3;
  {
    auto phase = c_.phase("experts");
    if (c_.ep_size > 1) {
      const std::int64_t rows = a.dispatch.expert_rows;
      dx_e_.resize(be, rows * m.d, c_.act);
      dh1_e_.resize(be, rows * m.f, c_.act);
      dh3_e_.resize(be, rows * m.f, c_.act);
      dx_experts = dx_e_.data();
      dh1 = dh1_e_.data();
      dh3 = dh3_e_.data();
    }
    experts_.backward(a.experts, a.dispatch.xp.data(), dy_experts, dx_experts, dh1, dh3,
                      a.dispatch.local_counts, o, p);
  }
  {
    auto phase = c_.phase("dispatch");
    dispatcher_->dispatch_backward(a.dispatch, dx_experts, dh, g.dxp);
  }
  {
    auto phase = c_.phase("router");
    // The combine's gradient no longer needs the gathered staging: the norm output takes it.
    const void* h = c_.gather_sequence(a.h.data());
    router_.backward(a.router, g.dtopk_w, h, p.param(o.gate), p.grad(o.gate), dh, g.router, stats,
                     loss_scale);
    be.rmsnorm_backward(dtmp, p.grad(o.post_norm), c_.to_local(dh), x_mid, p.param(o.post_norm),
                        a.rstd.f32(), m.nl, m.d);
    be.add(dx_mid, dx_mid, dtmp, m.nl * m.d);
  }
}

}  // namespace moetune::executor
