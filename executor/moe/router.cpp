// The MoE router on the backend.
#include "executor/moe/router.hpp"

namespace moetune::executor {

namespace {

// Sinkhorn stops when the column scaling moves by less than this on average (Megatron's 1e-4).
constexpr double kSinkhornTol = 1e-4;
constexpr std::int64_t kSinkhornMaxIters = 1000;

}  // namespace

void RouterActs::allocate(ModelContext& c) {
  const ModelDims& m = c.dims;
  if (c.moe.z_loss_coef > 0) logits.resize(c.be, m.n * m.e, DType::F32);
  probs.resize(c.be, m.n * m.e, DType::F32);
  topk_w.resize(c.be, m.n * m.kk, DType::F32);
  topk_idx.resize(c.be, m.n * m.kk, DType::I32);
}

std::int64_t RouterActs::bytes() const {
  return static_cast<std::int64_t>(logits.bytes() + probs.bytes() + topk_w.bytes() +
                                   topk_idx.bytes());
}

void RoutingStats::allocate(ModelContext& c) {
  counts.resize(c.be, c.dims.e, DType::I64);
  prob_sum.resize(c.be, c.dims.e, DType::F64);
  z_sum.resize(c.be, 1, DType::F64);
}

void RoutingStats::clear(Backend& be) {
  be.zero(counts.data(), counts.bytes());
  be.zero(prob_sum.data(), prob_sum.bytes());
  be.zero(z_sum.data(), z_sum.bytes());
}

Router::Router(ModelContext& c) : c_(c) {
  if (c.moe.z_loss_coef <= 0) logits_.resize(c.be, c.dims.n * c.dims.e, DType::F32);
}

void Router::forward(RouterActs& a, const void* h, const void* gate, RoutingStats* stats) {
  Backend& be = c_.be;
  const ModelDims& m = c_.dims;
  float* z = logits(a);
  // fp32 logits, as Hugging Face and Megatron compute the routing in fp32.
  be.gemm(false, true, m.n, m.e, m.d, 1.0f, h, m.d, gate, m.d, 0.0f, z, DType::F32, m.e);
  if (c_.moe.load_balancing == LoadBalancing::Sinkhorn) {
    be.sinkhorn_forward(a.probs.f32(), a.topk_idx.i32(), a.topk_w.f32(), z, m.n, m.e, m.kk,
                        kSinkhornTol, kSinkhornMaxIters);
  } else {
    be.router_forward(a.probs.f32(), a.topk_idx.i32(), a.topk_w.f32(), z, m.n, m.e, m.kk,
                      c_.model.norm_topk_prob);
    if (stats != nullptr) {
      be.aux_loss_accumulate(stats->counts.i64(), stats->prob_sum.f64(), a.probs.f32(),
                             a.topk_idx.i32(), m.n, m.e, m.kk);
    }
  }
  if (c_.moe.z_loss_coef > 0 && stats != nullptr)
    be.z_loss_forward(stats->z_sum.f64(), z, m.n, m.e);
}

void Router::backward(const RouterActs& a, const float* dtopk_w, const void* h, const void* gate,
                      float* gate_grad, void* dh, const RouterGrads& g, const RoutingStats& stats,
                      double loss_scale) {
  Backend& be = c_.be;
  const ModelDims& m = c_.dims;
  const MoeOptions& moe = c_.moe;
  if (moe.load_balancing == LoadBalancing::Sinkhorn) {
    be.sinkhorn_backward(g.dlogits, dtopk_w, a.probs.f32(), a.topk_idx.i32(), m.n, m.e, m.kk);
  } else {
    const float* dprobs = nullptr;
    if (moe.load_balancing == LoadBalancing::AuxLoss && moe.aux_loss_coef > 0) {
      // The loss of this micro-batch pools every layer's tokens: n * layers of them.
      be.zero(g.dprobs, static_cast<std::size_t>(m.n * m.e) * sizeof(float));
      be.aux_loss_backward(g.dprobs, stats.counts.i64(), m.n * c_.model.num_hidden_layers, m.n, m.e,
                           loss_scale * moe.aux_loss_coef);
      dprobs = g.dprobs;
    }
    be.router_backward(g.dlogits, dtopk_w, dprobs, a.probs.f32(), a.topk_idx.i32(), m.n, m.e, m.kk,
                       c_.model.norm_topk_prob);
  }
  if (moe.z_loss_coef > 0) {
    be.z_loss_backward(g.dlogits, a.logits.f32(), m.n, m.e, loss_scale * moe.z_loss_coef);
  }
  const void* dz = g.dlogits;
  if (c_.act != DType::F32) {
    be.cast(g.dlogits_act, c_.act, g.dlogits, DType::F32, m.n * m.e);
    dz = g.dlogits_act;
  }
  be.gemm(true, false, m.e, m.d, m.n, 1.0f, dz, m.e, h, m.d, 1.0f, gate_grad, DType::F32, m.d);
  be.gemm(false, false, m.n, m.d, m.e, 1.0f / static_cast<float>(c_.tp_size), dz, m.e, gate, m.d,
          1.0f, dh, c_.act, m.d);
}

}  // namespace moetune::executor
