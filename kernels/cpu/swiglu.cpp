// SwiGLU expert FFN forward/backward on gemm(), single expert and grouped over experts.
#include "kernels/cpu/swiglu.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "kernels/cpu/gemm.hpp"
#include "kernels/cpu/parallel.hpp"
#include "kernels/cpu/vec_math.hpp"

namespace moetune::kernels::cpu {

namespace {

// In T: vec_math's exp for float (within 2 ulp, and the loop vectorises, where libm's expf is a
// call per element), libm's exp for the double-precision gradient checks.
template <typename T>
T sigmoid(T z) {
  return T(1) / (T(1) + vec::exp_t(-z));
}

// Elementwise loops run on the kernel threads in chunks of at least this many values.
constexpr std::int64_t kMinElementwise = 1 << 14;

void check_swiglu_sizes(std::int64_t m, std::int64_t d, std::int64_t f, const char* op) {
  MOETUNE_CHECK(m >= 0 && d > 0 && f > 0, std::string(op) + ": need m >= 0, d > 0, f > 0");
}

}  // namespace

template <typename T>
void swiglu_forward(T* out, T* h1, T* h3, T* act, const T* x, const T* w1, const T* w3, const T* w2,
                    std::int64_t m, std::int64_t d, std::int64_t f) {
  check_swiglu_sizes(m, d, f, "swiglu_forward");
  if (m == 0) return;
  MOETUNE_CHECK(out && h1 && h3 && act && x && w1 && w3 && w2, "swiglu_forward: null buffer");
  gemm<T>(false, true, m, f, d, T(1), x, d, w1, d, T(0), h1, f);  // h1[M,F] = x w1^T
  gemm<T>(false, true, m, f, d, T(1), x, d, w3, d, T(0), h3, f);  // h3[M,F] = x w3^T
  parallel_for(m * f, kMinElementwise, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; i++) {
      const T a = h1[i];
      act[i] = a * sigmoid(a) * h3[i];
    }
  });
  gemm<T>(false, true, m, d, f, T(1), act, f, w2, f, T(0), out, d);  // out[M,D] = act w2^T
}

// silu(a) = a s(a), silu'(a) = s(a) (1 + a (1 - s(a))).
template <typename T>
void swiglu_backward(T* dx, T* dw1, T* dw3, T* dw2, T* dh1, T* dh3, const T* dout, const T* x,
                     const T* h1, const T* h3, const T* act, const T* w1, const T* w3, const T* w2,
                     std::int64_t m, std::int64_t d, std::int64_t f) {
  check_swiglu_sizes(m, d, f, "swiglu_backward");
  if (m == 0) return;
  MOETUNE_CHECK(
      dx && dw1 && dw3 && dw2 && dh1 && dh3 && dout && x && h1 && h3 && act && w1 && w3 && w2,
      "swiglu_backward: null buffer");
  gemm<T>(true, false, d, f, m, T(1), dout, d, act, f, T(1), dw2, f);  // dw2[D,F] += dout^T act
  gemm<T>(false, false, m, f, d, T(1), dout, d, w2, f, T(0), dh1, f);  // dact[M,F] = dout w2
  parallel_for(m * f, kMinElementwise, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; i++) {
      const T a = h1[i];
      const T s = sigmoid(a);
      const T dact = dh1[i];
      dh1[i] = dact * h3[i] * s * (T(1) + a * (T(1) - s));
      dh3[i] = dact * a * s;
    }
  });
  gemm<T>(true, false, f, d, m, T(1), dh1, f, x, d, T(1), dw1, d);   // dw1[F,D] += dh1^T x
  gemm<T>(true, false, f, d, m, T(1), dh3, f, x, d, T(1), dw3, d);   // dw3[F,D] += dh3^T x
  gemm<T>(false, false, m, d, f, T(1), dh1, f, w1, d, T(0), dx, d);  // dx[M,D] = dh1 w1
  gemm<T>(false, false, m, d, f, T(1), dh3, f, w3, d, T(1), dx, d);  //        + dh3 w3
}

// The experts of a group are tasks on the kernel threads, each expert's GEMMs one unsplit BLAS call
// on its thread: splitting every GEMM instead makes each thread pack the whole of the other operand
// again, which costs more than the uneven expert sizes do. Tasks start largest first, so the last
// ones to finish are the smallest. Every expert writes its own rows and its own weight gradients,
// so the result does not depend on which thread ran it.
namespace {

// Row offsets of the experts ([E + 1]) and their order, largest first (ties by index), in buffers
// kept per thread so a step allocates nothing.
void plan_experts(const std::int64_t* counts, std::int64_t e, const char* op,
                  std::vector<std::int64_t>& offsets, std::vector<std::int64_t>& order) {
  offsets.resize(static_cast<std::size_t>(e + 1));
  order.resize(static_cast<std::size_t>(e));
  offsets[0] = 0;
  for (std::int64_t x = 0; x < e; x++) {
    MOETUNE_CHECK(counts[x] >= 0,
                  std::string(op) + ": negative count for expert " + std::to_string(x));
    offsets[static_cast<std::size_t>(x + 1)] = offsets[static_cast<std::size_t>(x)] + counts[x];
    order[static_cast<std::size_t>(x)] = x;
  }
  std::stable_sort(order.begin(), order.end(),
                   [&](std::int64_t a, std::int64_t b) { return counts[a] > counts[b]; });
}

}  // namespace

template <typename T>
void swiglu_grouped_forward(T* out, T* h1, T* h3, T* act, const T* x, const T* w1, const T* w3,
                            const T* w2, const std::int64_t* counts, std::int64_t e, std::int64_t d,
                            std::int64_t f) {
  MOETUNE_CHECK(e > 0 && counts, "swiglu_grouped_forward: need e > 0 and counts");
  thread_local std::vector<std::int64_t> offsets, order;
  plan_experts(counts, e, "swiglu_grouped_forward", offsets, order);
  // Plain pointers: a thread_local named inside the task would be the worker's own, empty one.
  const std::int64_t* row_of = offsets.data();
  const std::int64_t* expert_at = order.data();
  parallel_tasks(e, [&](std::int64_t task) {
    const std::int64_t x_id = expert_at[task];
    const std::int64_t m = counts[x_id], row = row_of[x_id];
    if (m == 0) return;
    swiglu_forward(out + row * d, h1 + row * f, h3 + row * f, act + row * f, x + row * d,
                   w1 + x_id * f * d, w3 + x_id * f * d, w2 + x_id * d * f, m, d, f);
  });
}

template <typename T>
void swiglu_grouped_backward(T* dx, T* dw1, T* dw3, T* dw2, T* dh1, T* dh3, const T* dout,
                             const T* x, const T* h1, const T* h3, const T* act, const T* w1,
                             const T* w3, const T* w2, const std::int64_t* counts, std::int64_t e,
                             std::int64_t d, std::int64_t f) {
  MOETUNE_CHECK(e > 0 && counts, "swiglu_grouped_backward: need e > 0 and counts");
  thread_local std::vector<std::int64_t> offsets, order;
  plan_experts(counts, e, "swiglu_grouped_backward", offsets, order);
  // Plain pointers: a thread_local named inside the task would be the worker's own, empty one.
  const std::int64_t* row_of = offsets.data();
  const std::int64_t* expert_at = order.data();
  parallel_tasks(e, [&](std::int64_t task) {
    const std::int64_t x_id = expert_at[task];
    const std::int64_t m = counts[x_id], row = row_of[x_id];
    if (m == 0) return;
    const std::int64_t w_off = x_id * f * d;
    swiglu_backward(dx + row * d, dw1 + w_off, dw3 + w_off, dw2 + w_off, dh1 + row * f,
                    dh3 + row * f, dout + row * d, x + row * d, h1 + row * f, h3 + row * f,
                    act + row * f, w1 + w_off, w3 + w_off, w2 + w_off, m, d, f);
  });
}

#define MOETUNE_INSTANTIATE_SWIGLU(T)                                                              \
  template void swiglu_forward<T>(T*, T*, T*, T*, const T*, const T*, const T*, const T*,          \
                                  std::int64_t, std::int64_t, std::int64_t);                       \
  template void swiglu_backward<T>(T*, T*, T*, T*, T*, T*, const T*, const T*, const T*, const T*, \
                                   const T*, const T*, const T*, const T*, std::int64_t,           \
                                   std::int64_t, std::int64_t);                                    \
  template void swiglu_grouped_forward<T>(T*, T*, T*, T*, const T*, const T*, const T*, const T*,  \
                                          const std::int64_t*, std::int64_t, std::int64_t,         \
                                          std::int64_t);                                           \
  template void swiglu_grouped_backward<T>(                                                        \
      T*, T*, T*, T*, T*, T*, const T*, const T*, const T*, const T*, const T*, const T*,          \
      const T*, const T*, const std::int64_t*, std::int64_t, std::int64_t, std::int64_t);
MOETUNE_INSTANTIATE_SWIGLU(float)
MOETUNE_INSTANTIATE_SWIGLU(double)
#undef MOETUNE_INSTANTIATE_SWIGLU

}  // namespace moetune::kernels::cpu
