// The training loop of the CUDA backend on one GPU: micro-batches with gradient accumulation,
// global grad-norm clipping, AdamW with warmup + cosine (executor/schedule.hpp, as the CPU
// trainer), a StepRecord per step with CUDA-event phase times and the measured peak memory.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "core/plan.hpp"
#include "core/run_log.hpp"
#include "executor/cuda/gpu_model.hpp"

namespace moetune::executor::gpu {

struct GpuTrainOptions {
  std::int64_t steps = 10;
  // Micro-batch `micro` of step `step` (from 0): ids[B*S], targets[B*S]. Unset: seeded random
  // tokens (a throughput run; the loss then stays near log V).
  std::function<void(std::int64_t step, std::int64_t micro, std::int32_t* ids,
                     std::int32_t* targets)>
      batch_source;
  // Initialise on the device (GpuMixtral::initialise_random) instead of the CPU trainer's seeded
  // host initialisation: for models of billions of parameters.
  bool device_init = false;
};

// Refuses what the one-GPU backend cannot run, with the reason: a world size above 1, pp > 1, a
// family other than Mixtral.
void check_runnable_on_gpu(const Plan& plan);

class GpuTrainer {
 public:
  // Starts from `initial` parameters (layout().numel() floats) when given, else the same seeded
  // initialisation as the CPU trainer (initialise_parameters with plan.train.seed), or cuRAND's
  // with options.device_init.
  GpuTrainer(const Plan& plan, GpuTrainOptions options,
             const std::vector<float>* initial = nullptr);
  ~GpuTrainer();

  StepRecord train_step();
  void run(const std::function<void(const StepRecord&)>& on_step = {});
  GpuMixtral& model() { return *model_; }
  std::int64_t step() const { return step_; }
  std::int64_t grad_accum() const { return accum_; }
  // Device bytes in use at the high-water mark: the allocator pool's reserved peak plus the
  // cuBLAS workspace (what this process asked of the GPU, without the CUDA context).
  double measured_peak_bytes() const;

 private:
  void fill_micro_batch(std::int64_t step, std::int64_t micro);

  Plan plan_;
  GpuTrainOptions options_;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<DeviceAllocator> alloc_;
  std::unique_ptr<GpuMixtral> model_;
  std::unique_ptr<EventTimer> timer_;
  std::int64_t accum_ = 1, step_ = 0;
  std::vector<std::int32_t> ids_, targets_;
};

}  // namespace moetune::executor::gpu
