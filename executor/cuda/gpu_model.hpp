// The Mixtral model on one GPU (the CUDA backend), written like the CPU model
// (executor/mixtral.hpp) with explicit forward and backward, on bf16 activations and working
// weights with fp32 accumulation, fp32 master weights, fp32 gradients and AdamW state:
//   embedding -> L x (RMSNorm -> GQA attention with RoPE -> residual -> RMSNorm -> MoE -> residual)
//   -> RMSNorm -> LM head -> cross-entropy.
// The MoE layer: router (fp32 logits, softmax / Sinkhorn, top-k) -> dispatch plan + permute ->
// grouped SwiGLU experts -> combine. Parameters use the CPU model's flat layout (ParameterLayout),
// so safetensors, initialisation and golden files are shared. Phase times come from CUDA events
// on the compute stream, named as the simulator names them. tp = ep = 1: one GPU.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/model_spec.hpp"
#include "core/train_spec.hpp"
#include "executor/cuda/device.hpp"
#include "executor/mixtral.hpp"
#include "executor/parameters.hpp"
#include "kernels/cuda/gemm.cuh"
#include "kernels/cuda/optimizer.cuh"

namespace moetune::executor::gpu {

using kernels::cuda::bf16;

class GpuMixtral {
 public:
  // Buffers for micro-batches of `batch` sequences of `seq_len` tokens, drawn from `alloc` (whose
  // stream is the compute stream).
  GpuMixtral(const ModelSpec& model, const MoeOptions& moe, std::int64_t batch,
             std::int64_t seq_len, DeviceAllocator& alloc);
  ~GpuMixtral();
  GpuMixtral(const GpuMixtral&) = delete;
  GpuMixtral& operator=(const GpuMixtral&) = delete;

  const ParameterLayout& layout() const { return layout_; }
  const ModelSpec& spec() const { return model_; }
  cudaStream_t stream() const { return stream_; }
  kernels::cuda::Blas& blas() { return *blas_; }
  const kernels::cuda::Blas& blas() const { return *blas_; }

  // fp32 master <- host[layout().numel()], and the bf16 working copy from it; Adam state zeroed.
  void set_parameters(const std::vector<float>& host);
  // Initialisation on the device for models too large to initialise on the host quickly: norm
  // weights 1, everything else normal(0, std) from cuRAND's Philox generator (not the CPU
  // trainer's xoshiro values); Adam state zeroed.
  void initialise_random(std::uint64_t seed, double std = 0.02);
  std::vector<float> parameters() const;  // the fp32 master
  std::vector<float> gradients() const;   // the fp32 accumulators
  void zero_gradients();

  // Forward over ids[B,S], targets[B,S] (host arrays; kIgnoreIndex skips a target). Keeps every
  // activation for backward(). Synchronises once per layer (the grouped GEMM needs each expert's
  // row count on the host) and at the end (the losses).
  MicroBatchLoss forward(const std::int32_t* ids, const std::int32_t* targets,
                         EventTimer* timer = nullptr);
  // Adds loss_scale * d(total loss)/d(params) into the fp32 gradients, for the last forward().
  // Enqueued only (no synchronisation).
  void backward(double loss_scale, EventTimer* timer = nullptr);

  // Global gradient L2 norm (synchronises), then one AdamW step over every parameter with the
  // clip factor applied to the gradients; refreshes the bf16 working weights.
  double gradient_norm();
  void adamw_step(const kernels::cuda::AdamWParams& hp, std::int64_t step, double grad_scale);

  std::vector<float> logits() const;  // [B*S, V] of the last forward (fp32 copies of bf16)
  std::vector<std::vector<std::int64_t>> tokens_per_expert() const { return counts_host_; }
  std::int64_t dropped_slots() const { return dropped_; }
  // Bytes of parameters + gradients + optimizer state held on the device.
  std::int64_t state_bytes() const;

 private:
  struct LayerActs;
  void layer_forward(std::int64_t li, EventTimer* timer);
  void layer_backward(std::int64_t li, double loss_scale, EventTimer* timer);
  // y[N,Dout] = x[N,Din] W^T (W [Dout,Din] bf16 working weight at `w`).
  void linear(bf16* y, const bf16* x, std::int64_t w, std::int64_t n, std::int64_t din,
              std::int64_t dout);
  // grads[w] += dy^T x (fp32), and dx = dy W (dx_beta 0) or += (1); dx may be null.
  void linear_backward(bf16* dx, const bf16* dy, const bf16* x, std::int64_t w, std::int64_t n,
                       std::int64_t din, std::int64_t dout, float dx_beta);
  bf16* wt(std::int64_t offset) const { return working_.get() + offset; }
  float* grad(std::int64_t offset) const { return grads_.get() + offset; }

  ModelSpec model_;
  MoeOptions moe_;
  ParameterLayout layout_;
  std::int64_t batch_, seq_, tokens_;
  DeviceAllocator& alloc_;
  cudaStream_t stream_;
  std::unique_ptr<kernels::cuda::Blas> blas_;

  DeviceArray<float> master_, grads_, adam_m_, adam_v_;
  DeviceArray<bf16> working_;
  DeviceArray<float> rope_cos_, rope_sin_;
  DeviceArray<std::int32_t> ids_, targets_;
  std::vector<std::int32_t> targets_host_;
  std::vector<std::unique_ptr<LayerActs>> acts_;
  DeviceArray<bf16> x_final_, hf_, logits_;
  DeviceArray<float> rstd_f_, losses_;
  DeviceArray<std::int64_t> aux_counts_, plan_scratch_;
  DeviceArray<double> aux_prob_sum_, z_sum_, sinkhorn_d0_, norm_partial_, norm_total_;
  DeviceArray<char> attention_scratch_;
  std::vector<std::vector<std::int64_t>> counts_host_;  // [layer][expert] of the last forward
  std::int64_t dropped_ = 0;
  // Backward scratch.
  DeviceArray<bf16> dx_, dx_mid_, dtmp_, dh_, dq_, dk_, dv_, dctx_, dxp_, dyp_, dh1_, dh3_,
      drouter_bf16_;
  DeviceArray<float> drouter_, dprobs_, dtopk_w_;
};

}  // namespace moetune::executor::gpu
