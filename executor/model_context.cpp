// The model's shared context: sizes, groups and sequence-parallel staging.
#include "executor/model_context.hpp"

#include "core/error.hpp"

namespace moetune::executor {

namespace {

int group_size(const Communicator* c) {
  return c != nullptr ? c->size() : 1;
}
int group_rank(const Communicator* c) {
  return c != nullptr ? c->rank() : 0;
}

ModelDims make_dims(const ModelSpec& m, std::int64_t b, std::int64_t s, std::int64_t tp) {
  const std::int64_t n = b * s;
  return {b,
          s,
          n,
          n / tp,
          m.hidden_size,
          m.q_dim() / tp,
          m.kv_dim() / tp,
          m.num_attention_heads / tp,
          m.num_key_value_heads / tp,
          m.head_dim,
          m.num_local_experts,
          m.num_experts_per_tok,
          m.moe_intermediate_size / tp,
          m.vocab_size,
          m.vocab_size / tp};
}

}  // namespace

ModelContext::ModelContext(Backend& backend, const ModelSpec& m, const MoeOptions& moe_options,
                           std::int64_t batch, std::int64_t seq_len, ModelParallel groups)
    : be(backend),
      model(m),
      moe(moe_options),
      parallel(groups),
      tp_size(group_size(groups.tp)),
      tp_rank(group_rank(groups.tp)),
      ep_size(group_size(groups.ep)),
      ep_rank(group_rank(groups.ep)),
      act(backend.act_type()),
      dims(make_dims(m, batch, seq_len, group_size(groups.tp))) {
  MOETUNE_CHECK(batch > 0 && seq_len > 0, "micro-batch and sequence must be positive");
  const std::int64_t n = batch * seq_len;
  MOETUNE_CHECK(n % tp_size == 0 && m.num_attention_heads % tp_size == 0 &&
                    m.num_key_value_heads % tp_size == 0 && m.vocab_size % tp_size == 0 &&
                    m.moe_intermediate_size % tp_size == 0,
                "tensor parallelism must divide tokens, heads, FFN width and vocabulary");
  MOETUNE_CHECK(m.num_local_experts % ep_size == 0, "expert parallelism must divide the experts");
  if (tp_size > 1) {
    gathered_.resize(be, n * m.hidden_size, act);
    partial_.resize(be, n * m.hidden_size, act);
    norm_local_.resize(be, n / tp_size * m.hidden_size, act);
  }
}

void ModelContext::linear_forward(void* y, const void* x, const void* w, std::int64_t n,
                                  std::int64_t din, std::int64_t dout) {
  be.gemm(false, true, n, dout, din, 1.0f, x, din, w, din, 0.0f, y, act, dout);
}

void ModelContext::linear_backward(void* dx, float* dw, const void* dy, const void* x,
                                   const void* w, std::int64_t n, std::int64_t din,
                                   std::int64_t dout, float dx_beta) {
  be.gemm(true, false, dout, din, n, 1.0f, dy, dout, x, din, 1.0f, dw, DType::F32, din);
  if (dx != nullptr)
    be.gemm(false, false, n, din, dout, 1.0f, dy, dout, w, din, dx_beta, dx, act, din);
}

const void* ModelContext::to_local(const void* full_partial) {
  if (tp_size == 1) return full_partial;
  parallel.tp->reduce_scatter(full_partial, norm_local_.data(), dims.nl * dims.d, act);
  return norm_local_.data();
}

const void* ModelContext::gather_sequence(const void* local) {
  if (tp_size == 1) return local;
  parallel.tp->all_gather(local, gathered_.data(), dims.nl * dims.d, act);
  return gathered_.data();
}

void ModelContext::scatter_sequence(const void* partial, void* local) {
  if (tp_size == 1) {
    if (partial != local) be.copy(local, partial, act_bytes(dims.n * dims.d));
    return;
  }
  parallel.tp->reduce_scatter(partial, local, dims.nl * dims.d, act);
}

}  // namespace moetune::executor
