// The all-to-all token dispatcher (Megatron's MoEAlltoAllTokenDispatcher) for ep > 1: this
// rank's routed rows, permuted by global expert, go to the ranks owning the experts with a
// variable all-to-all (the row counts are exchanged first), arrive peer-major and are regrouped
// expert-major ([local expert][source rank][rows]) for the grouped GEMMs; the outputs travel
// back the same way.
#include <vector>

#include "executor/moe/dispatcher.hpp"

namespace moetune::executor {

namespace {

class AllToAllDispatcher final : public TokenDispatcher {
 public:
  explicit AllToAllDispatcher(ModelContext& c)
      : TokenDispatcher(c),
        peers_(c.ep_size),
        send_volume_(static_cast<std::size_t>(c.ep_size)),
        recv_volume_(static_cast<std::size_t>(c.ep_size)),
        per_peer_(static_cast<std::size_t>(c.ep_size), local_experts_),
        peer_major_(static_cast<std::size_t>(c.dims.e)),
        expert_major_(static_cast<std::size_t>(c.dims.e)) {
    if (c.ep_size > 1) send_.resize(c.be, c.dims.n * c.dims.kk * c.dims.d, c.act);
  }
  const char* name() const override { return "alltoall"; }

 protected:
  void allocate_remote(DispatchActs& a) override {
    const ModelDims& m = c_.dims;
    // The expert outputs come back into this rank's dispatch order.
    a.yp.resize(c_.be, m.n * m.kk * m.d, c_.act);
    a.xp.resize(c_.be, 0, c_.act);
    a.recv_counts.assign(static_cast<std::size_t>(m.e), 0);
  }

  void dispatch_preprocess(DispatchActs& a, const RouterActs&, const void* h) override {
    const ModelDims& m = c_.dims;
    c_.be.permute_forward(send_.data(), h, row_slot_.i64(), a.rows, m.kk, m.d);
    // Rows per (peer, local expert) pair: this rank's counts per global expert, exchanged.
    c_.parallel.ep->all_to_all_host(a.counts_host.data(), per_peer_, a.recv_counts.data(),
                                    per_peer_);
    a.expert_rows = 0;
    for (std::int64_t j = 0; j < local_experts_; ++j) {
      std::int64_t rows = 0;
      for (std::int64_t p = 0; p < peers_; ++p)
        rows += a.recv_counts[static_cast<std::size_t>(p * local_experts_ + j)];
      a.local_counts[static_cast<std::size_t>(j)] = rows;
      a.expert_rows += rows;
    }
  }
  void token_dispatch(DispatchActs& a, const RouterActs&) override {
    volumes(a);
    recv_.resize(c_.be, a.expert_rows * c_.dims.d, c_.act);
    c_.parallel.ep->all_to_all(send_.data(), send_volume_, recv_.data(), recv_volume_, c_.act);
  }
  void dispatch_postprocess(DispatchActs& a) override {
    a.xp.resize(c_.be, a.expert_rows * c_.dims.d, c_.act);
    regroup(a, a.xp.data(), recv_.data(), true);
  }
  void* remote_expert_output(DispatchActs& a) override {
    y_.resize(c_.be, a.expert_rows * c_.dims.d, c_.act);
    return y_.data();
  }
  void combine_preprocess(DispatchActs& a) override {
    recv_.resize(c_.be, a.expert_rows * c_.dims.d, c_.act);
    regroup(a, recv_.data(), y_.data(), false);
  }
  void token_combine(DispatchActs& a, void*) override {
    volumes(a);
    c_.parallel.ep->all_to_all(recv_.data(), recv_volume_, a.yp.data(), send_volume_, c_.act);
  }
  void combine_postprocess(DispatchActs& a, const RouterActs& r, void* out) override {
    const ModelDims& m = c_.dims;
    c_.be.unpermute_combine_forward(out, a.yp.data(), r.topk_w.f32(), a.slot_row.i64(), m.n, m.kk,
                                    m.d);
  }

  // The gradients of the expert outputs go to the ranks that computed them: combine's moves,
  // reversed.
  const void* remote_combine_backward(DispatchActs& a, const RouterActs& r, const void* dout,
                                      float* dtopk_w, void* dyp) override {
    const ModelDims& m = c_.dims;
    c_.be.unpermute_combine_backward(dyp, dtopk_w, dout, a.yp.data(), r.topk_w.f32(),
                                     a.slot_row.i64(), m.n, m.kk, m.d);
    volumes(a);
    recv_.resize(c_.be, a.expert_rows * m.d, c_.act);
    c_.parallel.ep->all_to_all(dyp, send_volume_, recv_.data(), recv_volume_, c_.act);
    y_.resize(c_.be, a.expert_rows * m.d, c_.act);
    regroup(a, y_.data(), recv_.data(), true);
    return y_.data();
  }
  // The gradients of the experts' inputs go back to the ranks that sent the rows.
  void remote_dispatch_backward(DispatchActs& a, const void* dx, void* dh, void* dxp) override {
    const ModelDims& m = c_.dims;
    volumes(a);
    recv_.resize(c_.be, a.expert_rows * m.d, c_.act);
    regroup(a, recv_.data(), dx, false);
    c_.parallel.ep->all_to_all(recv_.data(), recv_volume_, dxp, send_volume_, c_.act);
    c_.be.permute_backward(dh, dxp, a.slot_row.i64(), m.n, m.kk, m.d);
  }

 private:
  // Elements sent to and received from each peer for this layer's counts.
  void volumes(const DispatchActs& a) {
    const std::int64_t el = local_experts_, d = c_.dims.d;
    for (std::int64_t p = 0; p < peers_; ++p) {
      std::int64_t sent = 0, received = 0;
      for (std::int64_t j = 0; j < el; ++j) {
        sent += a.counts_host[static_cast<std::size_t>(p * el + j)];
        received += a.recv_counts[static_cast<std::size_t>(p * el + j)];
      }
      send_volume_[static_cast<std::size_t>(p)] = sent * d;
      recv_volume_[static_cast<std::size_t>(p)] = received * d;
    }
  }
  // Copies row blocks between the [peer][local expert] order all-to-all delivers and the
  // [local expert][peer] order the grouped GEMMs need.
  void regroup(const DispatchActs& a, void* dst, const void* src, bool to_expert_major) {
    const std::int64_t el = local_experts_;
    const std::vector<std::int64_t>& counts = a.recv_counts;
    std::int64_t at = 0;
    for (std::int64_t p = 0; p < peers_; ++p) {
      for (std::int64_t j = 0; j < el; ++j) {
        peer_major_[static_cast<std::size_t>(p * el + j)] = at;
        at += counts[static_cast<std::size_t>(p * el + j)];
      }
    }
    at = 0;
    for (std::int64_t j = 0; j < el; ++j) {
      for (std::int64_t p = 0; p < peers_; ++p) {
        expert_major_[static_cast<std::size_t>(p * el + j)] = at;
        at += counts[static_cast<std::size_t>(p * el + j)];
      }
    }
    for (std::size_t b = 0; b < counts.size(); ++b) {
      if (counts[b] == 0) continue;
      const std::int64_t from = to_expert_major ? peer_major_[b] : expert_major_[b];
      const std::int64_t to = to_expert_major ? expert_major_[b] : peer_major_[b];
      c_.be.copy(c_.act_at(dst, to * c_.dims.d), c_.act_at(src, from * c_.dims.d),
                 c_.act_bytes(counts[b] * c_.dims.d));
    }
  }

  std::int64_t peers_;
  std::vector<std::int64_t> send_volume_, recv_volume_, per_peer_, peer_major_, expert_major_;
  Buffer send_;  // [n * kk, d] this rank's permuted rows, before they are sent
  Buffer recv_;  // [expert_rows, d] rows as they arrive (peer-major), or leave
  Buffer y_;     // [expert_rows, d] the expert outputs, then the gradients that come back
};

}  // namespace

std::unique_ptr<TokenDispatcher> make_alltoall_dispatcher(ModelContext& c) {
  return std::make_unique<AllToAllDispatcher>(c);
}

}  // namespace moetune::executor
