// The attention half of a layer on the backend.
#include "executor/attention_block.hpp"

namespace moetune::executor {

void AttentionActs::allocate(ModelContext& c) {
  const ModelDims& m = c.dims;
  rstd.resize(c.be, m.nl, DType::F32);
  h.resize(c.be, m.nl * m.d, c.act);
  q.resize(c.be, m.n * m.ql, c.act);
  k.resize(c.be, m.n * m.kvl, c.act);
  v.resize(c.be, m.n * m.kvl, c.act);
  const std::size_t saved_bytes = c.be.attention_saved_bytes(m.b, m.s, m.heads, m.head_dim);
  const std::size_t elem = dtype_size(c.act);
  saved.resize(c.be, static_cast<std::int64_t>((saved_bytes + elem - 1) / elem), c.act);
  ctx.resize(c.be, m.n * m.ql, c.act);
}

std::int64_t AttentionActs::bytes() const {
  std::size_t total = 0;
  for (const Buffer* b : {&rstd, &h, &q, &k, &v, &saved, &ctx})
    total += b->bytes();
  return static_cast<std::int64_t>(total);
}

AttentionBlock::AttentionBlock(ModelContext& c) : c_(c) {
  const ModelDims& m = c.dims;
  rope_cos_.resize(c.be, m.s * m.head_dim / 2, DType::F32);
  rope_sin_.resize(c.be, m.s * m.head_dim / 2, DType::F32);
  c.be.rope_table(rope_cos_.f32(), rope_sin_.f32(), m.s, m.head_dim, c.model.rope_theta);
}

void AttentionBlock::forward(AttentionActs& a, const void* x_in, void* x_mid, const LayerOffsets& o,
                             ParameterAccess& p) {
  Backend& be = c_.be;
  const ModelDims& m = c_.dims;
  auto phase = c_.phase("attention");
  be.rmsnorm_forward(a.h.data(), a.rstd.f32(), x_in, p.param(o.input_norm), m.nl, m.d,
                     c_.model.rms_norm_eps);
  const void* h = c_.gather_sequence(a.h.data());  // [n, d]
  c_.linear_forward(a.q.data(), h, p.param(o.q), m.n, m.d, m.ql);
  c_.linear_forward(a.k.data(), h, p.param(o.k), m.n, m.d, m.kvl);
  c_.linear_forward(a.v.data(), h, p.param(o.v), m.n, m.d, m.kvl);
  be.rope_forward(a.q.data(), rope_cos_.f32(), rope_sin_.f32(), 0, m.b, m.s, m.heads, m.head_dim);
  be.rope_forward(a.k.data(), rope_cos_.f32(), rope_sin_.f32(), 0, m.b, m.s, m.kv_heads,
                  m.head_dim);
  be.attention_forward(a.ctx.data(), a.saved.data(), a.q.data(), a.k.data(), a.v.data(), m.b, m.s,
                       m.heads, m.kv_heads, m.head_dim, c_.model.sliding_window);
  // x_mid = x_in + ctx Wo^T (row-parallel: partial sums over tp, reduce-scattered).
  if (c_.tp_size == 1) {
    c_.linear_forward(x_mid, a.ctx.data(), p.param(o.o), m.n, m.ql, m.d);
  } else {
    c_.linear_forward(c_.partial(), a.ctx.data(), p.param(o.o), m.n, m.ql, m.d);
    c_.scatter_sequence(c_.partial(), x_mid);
  }
  be.add(x_mid, x_mid, x_in, m.nl * m.d);
}

void AttentionBlock::backward(const AttentionActs& a, const void* x_in, const void* dx_mid,
                              void* dx, const LayerOffsets& o, ParameterAccess& p,
                              const AttentionGrads& g, void* dh, void* dtmp) {
  Backend& be = c_.be;
  const ModelDims& m = c_.dims;
  auto phase = c_.phase("attention");
  const void* dmid = c_.gather_sequence(dx_mid);  // [n, d]
  c_.linear_backward(g.dctx, p.grad(o.o), dmid, a.ctx.data(), p.param(o.o), m.n, m.ql, m.d, 0.0f);
  be.attention_backward(g.dq, g.dk, g.dv, g.dctx, a.q.data(), a.k.data(), a.v.data(), a.ctx.data(),
                        a.saved.data(), m.b, m.s, m.heads, m.kv_heads, m.head_dim,
                        c_.model.sliding_window);
  be.rope_backward(g.dq, rope_cos_.f32(), rope_sin_.f32(), 0, m.b, m.s, m.heads, m.head_dim);
  be.rope_backward(g.dk, rope_cos_.f32(), rope_sin_.f32(), 0, m.b, m.s, m.kv_heads, m.head_dim);
  // The output projection is done with the gathered d(x_mid): the staging takes the norm output.
  const void* h = c_.gather_sequence(a.h.data());
  c_.linear_backward(dh, p.grad(o.q), g.dq, h, p.param(o.q), m.n, m.d, m.ql, 0.0f);
  c_.linear_backward(dh, p.grad(o.k), g.dk, h, p.param(o.k), m.n, m.d, m.kvl, 1.0f);
  c_.linear_backward(dh, p.grad(o.v), g.dv, h, p.param(o.v), m.n, m.d, m.kvl, 1.0f);
  be.rmsnorm_backward(dtmp, p.grad(o.input_norm), c_.to_local(dh), x_in, p.param(o.input_norm),
                      a.rstd.f32(), m.nl, m.d);
  // d/d(layer input) = the residual path plus the attention path.
  be.add(dx, dx_mid, dtmp, m.nl * m.d);
}

}  // namespace moetune::executor
