// The experts of one MoE layer on this rank (Megatron's GroupedMLP): SwiGLU
//   y = (silu(x w1^T) * (x w3^T)) w2^T
// over the rows the dispatcher delivered, grouped by local expert (rows of expert 0 first), as
// one grouped GEMM per weight. With tensor parallelism w1 and w3 are split by rows (this rank's
// share of the FFN width) and w2 by columns, so the outputs are partial sums over tp.
#pragma once

#include <cstdint>
#include <span>

#include "executor/backend.hpp"
#include "executor/model_context.hpp"
#include "executor/param_access.hpp"
#include "executor/parameters.hpp"

namespace moetune::executor {

// What the experts keep for their backward: w1's and w3's outputs and the SwiGLU output,
// [rows, f] each.
struct ExpertActs {
  Buffer h1, h3, act;
  // Sized for `rows` routed rows (grow-only: expert parallelism varies the rows step to step).
  void resize(ModelContext& c, std::int64_t rows);
  std::int64_t bytes() const;
};

class GroupedExperts {
 public:
  explicit GroupedExperts(ModelContext& c) : c_(c) {}

  // y[rows, d] from x[rows, d]; counts[j] rows for local expert j (host).
  void forward(ExpertActs& a, const void* x, void* y, std::span<const std::int64_t> counts,
               const LayerOffsets& o, ParameterAccess& p);
  // dx[rows, d] from dy[rows, d]; the experts' weight gradients accumulate. dh1, dh3 [rows, f]
  // are scratch.
  void backward(const ExpertActs& a, const void* x, const void* dy, void* dx, void* dh1, void* dh3,
                std::span<const std::int64_t> counts, const LayerOffsets& o, ParameterAccess& p);

 private:
  ModelContext& c_;
};

}  // namespace moetune::executor
