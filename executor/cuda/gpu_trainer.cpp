// The one-GPU training loop.
#include "executor/cuda/gpu_trainer.hpp"

#include <chrono>
#include <random>

#include "core/error.hpp"
#include "executor/parameters.hpp"
#include "executor/schedule.hpp"
#include "kernels/cpu/optimizer.hpp"

namespace moetune::executor::gpu {

namespace cpu = moetune::kernels::cpu;

void check_runnable_on_gpu(const Plan& plan) {
  const Layout& l = plan.layout;
  if (l.world_size() != 1) {
    throw InputError("the CUDA backend trains on one GPU so far; this plan has world size " +
                     std::to_string(l.world_size()) + ": plan for 1 device");
  }
  if (plan.model.family != ModelFamily::Mixtral) {
    throw InputError("the CUDA backend trains Mixtral models; " + plan.model.name + " is " +
                     to_string(plan.model.family));
  }
  // What this backend does not do is refused, never silently trained another way.
  if (l.recompute != Recompute::None) {
    throw InputError(
        "the CUDA backend keeps every activation and does not recompute yet; this "
        "plan has recompute=" +
        to_string(l.recompute) + ": plan again with --recompute none");
  }
  if (l.optimizer_offload || l.activation_offload) {
    throw InputError(
        "the CUDA backend does not offload to host memory yet: plan again with "
        "--optimizer-offload off --activation-offload off");
  }
  if (plan.train.precision != Precision::Bf16) {
    throw InputError("the CUDA backend trains in bf16; this plan is " +
                     to_string(plan.train.precision) + ": plan again with --precision bf16");
  }
  if (plan.train.moe.force_balanced) {
    throw InputError(
        "this plan forces balanced routing, a benchmark setting only the simulator "
        "models (plan again without --force-balanced)");
  }
  if (plan.train.global_batch % l.micro_batch != 0) {
    throw InputError("micro-batch " + std::to_string(l.micro_batch) +
                     " does not divide the global batch " +
                     std::to_string(plan.train.global_batch));
  }
}

GpuTrainer::GpuTrainer(const Plan& plan, GpuTrainOptions options, const std::vector<float>* initial)
    : plan_(plan), options_(std::move(options)) {
  check_runnable_on_gpu(plan_);
  require_gpu(0);
  accum_ = plan_.train.global_batch / plan_.layout.micro_batch;
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  alloc_ = std::make_unique<DeviceAllocator>(stream_);
  model_ = std::make_unique<GpuMixtral>(plan_.model, plan_.train.moe, plan_.layout.micro_batch,
                                        plan_.train.seq_len, *alloc_);
  timer_ = std::make_unique<EventTimer>(stream_);
  if (initial != nullptr) {
    model_->set_parameters(*initial);
  } else if (options_.device_init) {
    model_->initialise_random(plan_.train.seed);
  } else {
    std::vector<float> params(std::size_t(model_->layout().numel()));
    initialise_parameters(model_->layout(), params.data(), plan_.train.seed);
    model_->set_parameters(params);
  }
  const auto n = std::size_t(plan_.layout.micro_batch * plan_.train.seq_len);
  ids_.resize(n);
  targets_.resize(n);
}

GpuTrainer::~GpuTrainer() {
  // Buffers go back to the pool in stream order before the stream is destroyed.
  timer_.reset();
  model_.reset();
  if (stream_ != nullptr) {
    cudaStreamSynchronize(stream_);
    cudaStreamDestroy(stream_);
  }
}

void GpuTrainer::fill_micro_batch(std::int64_t step, std::int64_t micro) {
  if (options_.batch_source) {
    options_.batch_source(step, micro, ids_.data(), targets_.data());
    return;
  }
  std::mt19937_64 rng(plan_.train.seed + std::uint64_t(step) * 1000003u + std::uint64_t(micro));
  std::uniform_int_distribution<std::int32_t> token(0, std::int32_t(plan_.model.vocab_size - 1));
  const std::int64_t s = plan_.train.seq_len;
  for (std::size_t i = 0; i < ids_.size(); i++)
    ids_[i] = token(rng);
  // Next-token targets within each sequence; the last position of a sequence has none.
  for (std::size_t i = 0; i < ids_.size(); i++) {
    const bool last = (std::int64_t(i) + 1) % s == 0;
    targets_[i] = last ? -100 : ids_[i + 1];
  }
}

StepRecord GpuTrainer::train_step() {
  const auto start = std::chrono::steady_clock::now();
  StepRecord rec;
  model_->zero_gradients();
  const double scale = 1.0 / double(accum_);
  for (std::int64_t micro = 0; micro < accum_; ++micro) {
    fill_micro_batch(step_, micro);
    const MicroBatchLoss loss = model_->forward(ids_.data(), targets_.data(), timer_.get());
    model_->backward(scale, timer_.get());
    rec.loss += loss.ce * scale;
    rec.aux_loss += loss.aux * scale;
    rec.z_loss += loss.z * scale;
    rec.dropped_tokens += model_->dropped_slots();
    add_tokens_per_expert(rec, model_->tokens_per_expert());
  }
  const OptimizerSpec& o = plan_.train.optimizer;
  {
    PhaseScope t(timer_.get(), "optimizer");
    rec.grad_norm = model_->gradient_norm();
    const double clip = cpu::clip_scale(rec.grad_norm, o.grad_clip);
    rec.lr = learning_rate(o, step_);
    model_->adamw_step({rec.lr, o.beta1, o.beta2, o.eps, o.weight_decay}, step_ + 1, clip);
  }
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  ++step_;
  rec.step = step_;
  rec.tokens = plan_.train.tokens_per_step();
  rec.step_time_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  rec.tokens_per_s = double(rec.tokens) / rec.step_time_s;
  rec.phases_s = timer_->collect();
  rec.peak_memory_bytes = measured_peak_bytes();
  return rec;
}

void GpuTrainer::run(const std::function<void(const StepRecord&)>& on_step) {
  while (step_ < options_.steps) {
    const StepRecord rec = train_step();
    if (on_step) on_step(rec);
  }
}

double GpuTrainer::measured_peak_bytes() const {
  constexpr double kBlasWorkspace = double(std::size_t{32} << 20);  // Blas's default workspace
  return double(alloc_->pool_reserved_high()) + kBlasWorkspace;
}

}  // namespace moetune::executor::gpu
