// AdamW over a flat parameter array (PyTorch torch.optim.AdamW semantics, decoupled weight decay),
// and the pieces of global gradient-norm clipping: a sum of squares per shard (summed across
// shards by the caller), the clip factor, and an in-place scale.
#pragma once

#include <cstdint>

namespace moetune::kernels::cpu {

struct AdamWParams {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.01;
};

// One step over param[N], m[N], v[N] (updated in place) with grad[N] * grad_scale (the clip factor;
// 1 for none). step counts from 1 (bias correction). In order:
//   p -= lr * wd * p
//   m = b1 m + (1 - b1) g ;  v = b2 v + (1 - b2) g^2
//   p -= lr * (m / (1 - b1^step)) / (sqrt(v / (1 - b2^step)) + eps)
template <typename T>
void adamw_step(T* param, T* m, T* v, const T* grad, std::int64_t n, const AdamWParams& hp,
                std::int64_t step, double grad_scale);

// sum_i x[i]^2 accumulated in double; the global norm is sqrt of the sum over all shards.
template <typename T>
double sum_of_squares(const T* x, std::int64_t n);

// torch.nn.utils.clip_grad_norm_'s factor: min(1, max_norm / (total_norm + 1e-6)); 1 when
// max_norm <= 0 (clipping off).
double clip_scale(double total_norm, double max_norm);

// x[N] *= s.
template <typename T>
void scale_inplace(T* x, std::int64_t n, double s);

}  // namespace moetune::kernels::cpu
