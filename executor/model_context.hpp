// What every part of the Mixtral model shares: the backend, the model's sizes on this rank, its
// parallel groups, the sequence-parallel staging, and phase timing. The parts (attention block,
// MoE layer, head) are written against this and the backend only.
//
// Sizes of one micro-batch on this rank: n tokens (b sequences of s), nl = n / tp of them in
// this rank's sequence-parallel chunk; hidden d; q and kv widths ql, kvl and heads split over
// tp; e experts, kk per token; f the expert FFN width split over tp; vocabulary v, vl per tp
// rank.
#pragma once

#include <cstdint>

#include "core/model_spec.hpp"
#include "core/train_spec.hpp"
#include "executor/backend.hpp"
#include "executor/comm/communicator.hpp"

namespace moetune::executor {

// The groups a model needs when it runs on several ranks (null: one rank).
struct ModelParallel {
  // Tensor parallel with sequence parallelism: heads, FFN width and vocabulary split over tp;
  // the residual stream, norms and their inputs split over the sequence (N / tp tokens a rank).
  Communicator* tp = nullptr;
  Communicator* ep = nullptr;  // expert parallel: this rank holds E / ep experts of every layer
};

struct ModelDims {
  std::int64_t b, s, n, nl, d, ql, kvl, heads, kv_heads, head_dim, e, kk, f, v, vl;
};

class ModelContext {
 public:
  ModelContext(Backend& backend, const ModelSpec& model, const MoeOptions& moe, std::int64_t batch,
               std::int64_t seq_len, ModelParallel parallel);

  Backend& be;
  const ModelSpec model;
  const MoeOptions moe;
  const ModelParallel parallel;
  const std::int64_t tp_size, tp_rank, ep_size, ep_rank;
  const DType act;  // the backend's activation type
  const ModelDims dims;

  // Timing: phases are recorded when `timing` is on; under recompute every phase is recorded as
  // `override_phase`.
  bool timing = false;
  const char* override_phase = nullptr;
  Phase phase(const char* name) {
    return Phase(timing ? &be : nullptr, override_phase != nullptr ? override_phase : name);
  }

  // A pointer `elems` act elements past p.
  void* act_at(void* p, std::int64_t elems) const {
    return static_cast<char*>(p) + static_cast<std::size_t>(elems) * dtype_size(act);
  }
  const void* act_at(const void* p, std::int64_t elems) const {
    return static_cast<const char*>(p) + static_cast<std::size_t>(elems) * dtype_size(act);
  }
  std::size_t act_bytes(std::int64_t elems) const {
    return static_cast<std::size_t>(elems) * dtype_size(act);
  }

  // y[n, dout] = x[n, din] W^T with W [dout, din] (Hugging Face's Linear layout), act.
  void linear_forward(void* y, const void* x, const void* w, std::int64_t n, std::int64_t din,
                      std::int64_t dout);
  // dW[dout, din] (fp32) += dy^T x; dx[n, din] = dy W (dx_beta 0) or += (1); dx may be null.
  void linear_backward(void* dx, float* dw, const void* dy, const void* x, const void* w,
                       std::int64_t n, std::int64_t din, std::int64_t dout, float dx_beta);

  // Sequence parallelism. gather_sequence: this rank's chunk [nl, d] over the whole sequence
  // [n, d]: the chunk itself with tp = 1, else all-gathered into a staging buffer that stays
  // valid until the next gather. scatter_sequence: partial sums [n, d] reduce-scattered into
  // this rank's chunk (a copy with tp = 1).
  const void* gather_sequence(const void* local);
  void scatter_sequence(const void* partial, void* local);
  // Partial [n, d] gradients of a norm output, as this rank's [nl, d] chunk: themselves with
  // tp = 1, else reduce-scattered into norm_local().
  const void* to_local(const void* full_partial);
  // The staging buffer for partial sums [n, d] (tp > 1) that scatter_sequence reads.
  void* partial() { return partial_.data(); }
  // [nl, d] staging for a norm input's gradient reduce-scattered from [n, d] partial sums
  // (tp > 1).
  void* norm_local() { return norm_local_.data(); }

 private:
  Buffer gathered_, partial_, norm_local_;
};

}  // namespace moetune::executor
