// Where the model reads its working weights and writes its gradients. The model walks the
// parameter groups in order (0 the embedding, 1 + l layer l, L + 1 the final norm and LM head):
// forward 0..L+1, backward L+1..0, and asks for each group before it touches it and lets it go
// after. Whole local buffers (FlatParameters) need none of that; hybrid sharding
// (ShardedParameters, executor/sharding.hpp) gathers a group when it is asked for, prefetches the
// next one, frees it on release, and reduce-scatters a group's gradients once its backward is
// done. Weights are in the backend's act type (the fp32 master itself on the CPU, its bf16 copy
// on CUDA); gradients are fp32. Offsets count elements of ParameterLayout's flat layout.
#pragma once

#include <cstdint>

#include "executor/comm/dtype.hpp"

namespace moetune::executor {

class ParameterAccess {
 public:
  virtual ~ParameterAccess() = default;
  virtual void acquire(std::int64_t group, bool backward) = 0;
  virtual void release(std::int64_t group, bool backward) = 0;
  // The pass is over: finish pending gradient reductions (backward).
  virtual void end_pass(bool backward) = 0;
  // The working weights of the tensor that starts at `offset` (its group acquired).
  virtual const void* param(std::int64_t offset) = 0;
  // Its fp32 gradient accumulator (backward, its group acquired); the model adds into it.
  virtual float* grad(std::int64_t offset) = 0;
};

// Whole local working weights and gradients in two flat buffers of the backend's memory.
class FlatParameters final : public ParameterAccess {
 public:
  FlatParameters(const void* working, DType working_type, float* grads)
      : working_(static_cast<const char*>(working)),
        elem_(dtype_size(working_type)),
        grads_(grads) {}
  void acquire(std::int64_t, bool) override {}
  void release(std::int64_t, bool) override {}
  void end_pass(bool) override {}
  const void* param(std::int64_t offset) override {
    return working_ + static_cast<std::size_t>(offset) * elem_;
  }
  float* grad(std::int64_t offset) override { return grads_ + offset; }

 private:
  const char* working_;
  std::size_t elem_;
  float* grads_;
};

}  // namespace moetune::executor
