// The dispatchers' shared part: the plan over this rank's tokens, and the local path (ep = 1).
#include "executor/moe/dispatcher.hpp"

#include <numeric>

#include "core/error.hpp"

namespace moetune::executor {

std::unique_ptr<TokenDispatcher> make_alltoall_dispatcher(ModelContext& c);
std::unique_ptr<TokenDispatcher> make_allgather_dispatcher(ModelContext& c);

std::unique_ptr<TokenDispatcher> make_token_dispatcher(Dispatcher kind, ModelContext& c) {
  switch (kind) {
    case Dispatcher::AllToAll:
      return make_alltoall_dispatcher(c);
    case Dispatcher::AllGather:
      return make_allgather_dispatcher(c);
  }
  throw InputError("unknown token dispatcher");
}

std::int64_t DispatchActs::bytes() const {
  std::size_t total = 0;
  for (const Buffer* b : {&counts, &offsets, &slot_row, &xp, &yp, &gathered_w, &gathered_slot_row})
    total += b->bytes();
  return static_cast<std::int64_t>(total);
}

TokenDispatcher::TokenDispatcher(ModelContext& c) : c_(c), local_experts_(c.dims.e / c.ep_size) {
  row_slot_.resize(c.be, c.dims.n * c.dims.kk, DType::I64);
}

void TokenDispatcher::allocate(DispatchActs& a) {
  const ModelDims& m = c_.dims;
  a.counts.resize(c_.be, m.e, DType::I64);
  a.offsets.resize(c_.be, m.e + 1, DType::I64);
  a.slot_row.resize(c_.be, m.n * m.kk, DType::I64);
  a.counts_host.assign(static_cast<std::size_t>(m.e), 0);
  a.local_counts.assign(static_cast<std::size_t>(local_experts_), 0);
  if (c_.ep_size == 1) {
    // Every routed row stays here: room for all n * kk of them, in dispatch order.
    a.xp.resize(c_.be, m.n * m.kk * m.d, c_.act);
    a.yp.resize(c_.be, m.n * m.kk * m.d, c_.act);
  } else {
    allocate_remote(a);
  }
}

void TokenDispatcher::dispatch(DispatchActs& a, const RouterActs& r, const void* h,
                               std::int64_t capacity) {
  Backend& be = c_.be;
  const ModelDims& m = c_.dims;
  be.dispatch_plan(a.counts.i64(), a.offsets.i64(), a.slot_row.i64(), row_slot_.i64(),
                   r.topk_idx.i32(), m.n, m.e, m.kk, capacity);
  be.copy_to_host(a.counts_host.data(), a.counts.data(), a.counts.bytes());
  a.rows = std::accumulate(a.counts_host.begin(), a.counts_host.end(), std::int64_t{0});
  if (c_.ep_size == 1) {
    be.permute_forward(a.xp.data(), h, row_slot_.i64(), a.rows, m.kk, m.d);
    a.local_counts = a.counts_host;
    a.expert_rows = a.rows;
    return;
  }
  dispatch_preprocess(a, r, h);
  token_dispatch(a, r);
  dispatch_postprocess(a);
}

void* TokenDispatcher::expert_output(DispatchActs& a) {
  return c_.ep_size == 1 ? a.yp.data() : remote_expert_output(a);
}

void TokenDispatcher::combine(DispatchActs& a, const RouterActs& r, void* out) {
  if (c_.ep_size == 1) {
    const ModelDims& m = c_.dims;
    c_.be.unpermute_combine_forward(out, a.yp.data(), r.topk_w.f32(), a.slot_row.i64(), m.n, m.kk,
                                    m.d);
    return;
  }
  combine_preprocess(a);
  token_combine(a, out);
  combine_postprocess(a, r, out);
}

const void* TokenDispatcher::combine_backward(DispatchActs& a, const RouterActs& r,
                                              const void* dout, float* dtopk_w, void* dyp) {
  if (c_.ep_size == 1) {
    const ModelDims& m = c_.dims;
    c_.be.unpermute_combine_backward(dyp, dtopk_w, dout, a.yp.data(), r.topk_w.f32(),
                                     a.slot_row.i64(), m.n, m.kk, m.d);
    return dyp;
  }
  return remote_combine_backward(a, r, dout, dtopk_w, dyp);
}

void TokenDispatcher::dispatch_backward(DispatchActs& a, const void* dx, void* dh, void* dxp) {
  if (c_.ep_size == 1) {
    const ModelDims& m = c_.dims;
    c_.be.permute_backward(dh, dx, a.slot_row.i64(), m.n, m.kk, m.d);
    return;
  }
  remote_dispatch_backward(a, dx, dh, dxp);
}

}  // namespace moetune::executor
