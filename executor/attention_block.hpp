// The attention half of a Mixtral layer, forward and backward side by side:
//   x_mid = x_in + o_proj(attention(rope(q, k), v)),  q, k, v = proj(rmsnorm(x_in))
// Grouped-query attention, causal (sliding window when the model sets one), RoPE. With tensor
// parallelism (Megatron, sequence parallel) the norm runs on this rank's [nl, d] chunk, its
// output is gathered over the whole sequence for the column-parallel q/k/v projections (this
// rank's heads), and the row-parallel output projection's partial sums are reduce-scattered
// back into the chunk.
#pragma once

#include <cstdint>

#include "executor/backend.hpp"
#include "executor/model_context.hpp"
#include "executor/param_access.hpp"
#include "executor/parameters.hpp"

namespace moetune::executor {

// What the attention half keeps for its backward.
struct AttentionActs {
  Buffer rstd;   // [nl] fp32, the norm's 1/rms
  Buffer h;      // [nl, d] the norm output (this rank's chunk; gathered again in backward)
  Buffer q;      // [n, ql] after RoPE
  Buffer k, v;   // [n, kvl] (k after RoPE)
  Buffer saved;  // what the backend's attention keeps (CPU: probabilities [b, heads, s, s])
  Buffer ctx;    // [n, ql] attention output, the output projection's input
  void allocate(ModelContext& c);
  std::int64_t bytes() const;
};

// Backward scratch of the attention half: dq [n, ql], dk, dv [n, kvl], dctx [n, ql] (act).
struct AttentionGrads {
  void *dq = nullptr, *dk = nullptr, *dv = nullptr, *dctx = nullptr;
};

class AttentionBlock {
 public:
  explicit AttentionBlock(ModelContext& c);

  // x_mid[nl, d] = x_in + the attention path.
  void forward(AttentionActs& a, const void* x_in, void* x_mid, const LayerOffsets& o,
               ParameterAccess& p);
  // dx[nl, d] = dx_mid + d/d(x_in) of the attention path, where dx_mid [nl, d] is d/d(x_mid).
  // dh [n, d] and dtmp [nl, d] are scratch.
  void backward(const AttentionActs& a, const void* x_in, const void* dx_mid, void* dx,
                const LayerOffsets& o, ParameterAccess& p, const AttentionGrads& g, void* dh,
                void* dtmp);
  // RoPE's cos and sin tables [s, head_dim / 2] (fp32), shared by every layer.
  std::int64_t table_bytes() const {
    return static_cast<std::int64_t>(rope_cos_.bytes() + rope_sin_.bytes());
  }

 private:
  ModelContext& c_;
  Buffer rope_cos_, rope_sin_;
};

}  // namespace moetune::executor
