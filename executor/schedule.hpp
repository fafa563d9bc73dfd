// Learning-rate schedule: linear warmup, then cosine decay to min_lr, then constant min_lr.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "core/train_spec.hpp"

namespace moetune::executor {

// `step` counts optimizer steps from 0. Warmup: lr * (step + 1) / warmup_steps. Afterwards
// min + (lr - min) * (1 + cos(pi * progress)) / 2 with progress = (step - warmup) / (decay -
// warmup) clamped to [0, 1]; the same recipe scripts/make_golden.py gives torch.
inline double learning_rate(const OptimizerSpec& o, std::int64_t step) {
  if (step < o.warmup_steps) {
    return o.lr * static_cast<double>(step + 1) / static_cast<double>(o.warmup_steps);
  }
  const double span =
      static_cast<double>(std::max<std::int64_t>(1, o.decay_steps - o.warmup_steps));
  const double progress = std::clamp(static_cast<double>(step - o.warmup_steps) / span, 0.0, 1.0);
  return o.min_lr + 0.5 * (o.lr - o.min_lr) * (1.0 + std::cos(M_PI * progress));
}

}  // namespace moetune::executor
