// The grouped SwiGLU experts on the backend.
#include "executor/moe/experts.hpp"

namespace moetune::executor {

void ExpertActs::resize(ModelContext& c, std::int64_t rows) {
  const std::int64_t count = rows * c.dims.f;
  for (Buffer* b : {&h1, &h3, &act})
    b->resize(c.be, count, c.act);
}

std::int64_t ExpertActs::bytes() const {
  return static_cast<std::int64_t>(h1.bytes() + h3.bytes() + act.bytes());
}

void GroupedExperts::forward(ExpertActs& a, const void* x, void* y,
                             std::span<const std::int64_t> counts, const LayerOffsets& o,
                             ParameterAccess& p) {
  // The local experts' w1, w3 [E_l, f, d] and w2 [E_l, d, f] are each one block of the layout.
  c_.be.swiglu_grouped_forward(y, a.h1.data(), a.h3.data(), a.act.data(), x, p.param(o.w1[0]),
                               p.param(o.w3[0]), p.param(o.w2[0]), counts.data(),
                               static_cast<std::int64_t>(counts.size()), c_.dims.d, c_.dims.f);
}

void GroupedExperts::backward(const ExpertActs& a, const void* x, const void* dy, void* dx,
                              void* dh1, void* dh3, std::span<const std::int64_t> counts,
                              const LayerOffsets& o, ParameterAccess& p) {
  c_.be.swiglu_grouped_backward(dx, p.grad(o.w1[0]), p.grad(o.w3[0]), p.grad(o.w2[0]), dh1, dh3, dy,
                                x, a.h1.data(), a.h3.data(), a.act.data(), p.param(o.w1[0]),
                                p.param(o.w3[0]), p.param(o.w2[0]), counts.data(),
                                static_cast<std::int64_t>(counts.size()), c_.dims.d, c_.dims.f);
}

}  // namespace moetune::executor
