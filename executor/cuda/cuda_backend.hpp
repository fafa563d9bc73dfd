// The CUDA backend (executor/backend.hpp) on one GPU: bf16 activations and working weights, fp32
// master weights, gradients, Adam state and router, over kernels/cuda (cuBLASLt GEMMs, our own
// kernels) and executor/cuda/backend_kernels. Everything is enqueued on the backend's own
// non-blocking stream; only copy_to_host, copy_from_host, sum_of_squares, collect_phases and
// synchronize wait. Memory comes from a stream-ordered pool (DeviceAllocator).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "executor/backend.hpp"
#include "executor/cuda/device.hpp"
#include "kernels/cuda/gemm.cuh"

namespace moetune::executor::gpu {

// What CudaBackend::check_supported refuses, without a GPU: kernel limits on experts, top-k,
// Sinkhorn and head_dim (InputError, one line).
void check_cuda_supported(const ModelSpec& model, const MoeOptions& moe);

class CudaBackend final : public Backend {
 public:
  // Selects GPU `device` (InputError, one line, when there is none) and creates the stream, the
  // allocator and the cuBLAS handles on it.
  explicit CudaBackend(int device);
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  int device() const { return device_; }
  cudaStream_t stream() const { return stream_.get(); }
  kernels::cuda::Blas& blas() { return *blas_; }

  std::string name() const override { return "cuda"; }
  DType act_type() const override { return DType::BF16; }
  void check_supported(const ModelSpec& model, const MoeOptions& moe) const override;

  // --- DeviceMemory.
  bool on_device() const override { return true; }
  void copy(void* dst, const void* src, std::size_t bytes) override;
  void accumulate(void* dst, const void* src, std::int64_t count, DType type) override;
  void copy_to_host(void* host, const void* src, std::size_t bytes) override;
  void copy_from_host(void* dst, const void* host, std::size_t bytes) override;
  void synchronize() override;

  // --- Memory. live and peak count every byte drawn from the pool, the backend's own scratch
  // (attention, dispatch plan, Sinkhorn, norm sums) included: it is device memory the step needs.
  void* allocate(std::size_t bytes) override;
  void release(void* p, std::size_t bytes) override;
  void zero(void* p, std::size_t bytes) override;
  std::size_t live_bytes() const override { return alloc_.live_bytes(); }
  std::size_t peak_bytes() const override { return alloc_.peak_bytes(); }

  // --- Phase timers: CUDA events on the stream.
  void phase_begin(const char* phase) override;
  void phase_end() override;
  PhaseTimes collect_phases() override;

  // --- Ops (see executor/backend.hpp).
  void gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
            const void* a, std::int64_t lda, const void* b, std::int64_t ldb, float beta, void* c,
            DType c_type, std::int64_t ldc) override;
  void add(void* out, const void* a, const void* b, std::int64_t n) override;
  void scale(float* x, std::int64_t n, double s) override;
  void cast(void* dst, DType dst_type, const void* src, DType src_type, std::int64_t n) override;

  void swiglu_grouped_forward(void* out, void* h1, void* h3, void* act_out, const void* x,
                              const void* w1, const void* w3, const void* w2,
                              const std::int64_t* counts_host, std::int64_t experts, std::int64_t d,
                              std::int64_t f) override;
  void swiglu_grouped_backward(void* dx, float* dw1, float* dw3, float* dw2, void* dh1, void* dh3,
                               const void* dout, const void* x, const void* h1, const void* h3,
                               const void* act_in, const void* w1, const void* w3, const void* w2,
                               const std::int64_t* counts_host, std::int64_t experts,
                               std::int64_t d, std::int64_t f) override;

  void rmsnorm_forward(void* out, float* rstd, const void* in, const void* weight, std::int64_t n,
                       std::int64_t d, double eps) override;
  void rmsnorm_backward(void* din, float* dweight, const void* dout, const void* in,
                        const void* weight, const float* rstd, std::int64_t n,
                        std::int64_t d) override;

  void rope_table(float* cos_table, float* sin_table, std::int64_t positions, std::int64_t head_dim,
                  double theta) override;
  void rope_forward(void* x, const float* cos_table, const float* sin_table, std::int64_t start_pos,
                    std::int64_t b, std::int64_t s, std::int64_t h, std::int64_t head_dim) override;
  void rope_backward(void* dx, const float* cos_table, const float* sin_table,
                     std::int64_t start_pos, std::int64_t b, std::int64_t s, std::int64_t h,
                     std::int64_t head_dim) override;

  // The materialised-probabilities attention (kernels/cuda/attention.cuh): saved holds the bf16
  // probabilities [B,Hq,S,S]; its fp32 scores and gradient scratch belong to the backend.
  std::size_t attention_saved_bytes(std::int64_t b, std::int64_t s, std::int64_t hq,
                                    std::int64_t dh) const override;
  void attention_forward(void* out, void* saved, const void* q, const void* k, const void* v,
                         std::int64_t b, std::int64_t s, std::int64_t hq, std::int64_t hkv,
                         std::int64_t dh, std::int64_t window) override;
  void attention_backward(void* dq, void* dk, void* dv, const void* dout, const void* q,
                          const void* k, const void* v, const void* out, const void* saved,
                          std::int64_t b, std::int64_t s, std::int64_t hq, std::int64_t hkv,
                          std::int64_t dh, std::int64_t window) override;

  void router_forward(float* probs, std::int32_t* topk_idx, float* topk_w, const float* logits,
                      std::int64_t n, std::int64_t e, std::int64_t k, bool normalize) override;
  void router_backward(float* dlogits, const float* dtopk_w, const float* dprobs,
                       const float* probs, const std::int32_t* topk_idx, std::int64_t n,
                       std::int64_t e, std::int64_t k, bool normalize) override;
  void sinkhorn_forward(float* scores, std::int32_t* topk_idx, float* topk_w, const float* logits,
                        std::int64_t n, std::int64_t e, std::int64_t k, double tol,
                        std::int64_t max_iters) override;
  void sinkhorn_backward(float* dlogits, const float* dtopk_w, const float* scores,
                         const std::int32_t* topk_idx, std::int64_t n, std::int64_t e,
                         std::int64_t k) override;
  void aux_loss_accumulate(std::int64_t* counts, double* prob_sum, const float* probs,
                           const std::int32_t* topk_idx, std::int64_t n, std::int64_t e,
                           std::int64_t k) override;
  void aux_loss_backward(float* dprobs, const std::int64_t* counts, std::int64_t n_tokens,
                         std::int64_t n, std::int64_t e, double dloss) override;
  void z_loss_forward(double* sum, const float* logits, std::int64_t n, std::int64_t e) override;
  void z_loss_backward(float* dlogits, const float* logits, std::int64_t n, std::int64_t e,
                       double dloss) override;

  void dispatch_plan(std::int64_t* counts, std::int64_t* offsets, std::int64_t* slot_row,
                     std::int64_t* row_slot, const std::int32_t* topk_idx, std::int64_t n,
                     std::int64_t e, std::int64_t k, std::int64_t capacity) override;
  void localize_routing(std::int32_t* out, const std::int32_t* idx, const std::int64_t* kept,
                        std::int64_t count, std::int64_t first, std::int64_t local) override;
  void drop_rows_from(std::int64_t* slot_row, std::int64_t count, std::int64_t rows) override;
  void permute_forward(void* out, const void* in, const std::int64_t* row_slot, std::int64_t rows,
                       std::int64_t k, std::int64_t d) override;
  void permute_backward(void* din, const void* dout, const std::int64_t* slot_row, std::int64_t n,
                        std::int64_t k, std::int64_t d) override;
  void unpermute_combine_forward(void* out, const void* expert_out, const float* topk_w,
                                 const std::int64_t* slot_row, std::int64_t n, std::int64_t k,
                                 std::int64_t d) override;
  void unpermute_combine_backward(void* dexpert_out, float* dtopk_w, const void* dout,
                                  const void* expert_out, const float* topk_w,
                                  const std::int64_t* slot_row, std::int64_t n, std::int64_t k,
                                  std::int64_t d) override;

  void embedding_forward(void* out, const void* table, const std::int32_t* ids, std::int64_t n,
                         std::int64_t first, std::int64_t rows, std::int64_t d) override;
  void embedding_backward(float* dtable, const void* dout, const std::int32_t* ids, std::int64_t n,
                          std::int64_t first, std::int64_t rows, std::int64_t d) override;
  void cross_entropy_partial(float* lse_part, float* target_logit, const void* logits,
                             const std::int32_t* targets, std::int64_t n, std::int64_t vl,
                             std::int64_t first) override;
  void cross_entropy_combine(float* lse, float* losses, const float* lse_parts,
                             const float* target_logit, const std::int32_t* targets, std::int64_t n,
                             std::int64_t parts) override;
  void cross_entropy_backward(void* dlogits, const void* logits, const float* lse,
                              const std::int32_t* targets, std::int64_t n, std::int64_t vl,
                              std::int64_t first, double scale) override;

  void adamw_step(float* param, float* m, float* v, const float* grad, void* working,
                  std::int64_t n, const AdamWHyper& hp, std::int64_t step,
                  double grad_scale) override;
  void sum_of_squares(const float* x, std::span<const SquareSegment> segments, double* sums_host,
                      int classes) override;

 private:
  // Owns the stream; declared first so that it outlives everything enqueued on it.
  class Stream {
   public:
    Stream();
    ~Stream();
    Stream(const Stream&) = delete;
    Stream& operator=(const Stream&) = delete;
    cudaStream_t get() const { return stream_; }

   private:
    cudaStream_t stream_ = nullptr;
  };

  // Device scratch that only grows: one region per purpose, reused in stream order (every op
  // runs after the previous one on the stream, so one region serves every layer). Growing frees
  // the old region in stream order behind the ops that still read it.
  class Scratch {
   public:
    void* get(DeviceAllocator& alloc, std::size_t bytes);
    void release(DeviceAllocator& alloc);

   private:
    void* ptr_ = nullptr;
    std::size_t bytes_ = 0;
  };

  // Pinned host staging that only grows; reused only after the stream has been synchronised.
  class Pinned {
   public:
    Pinned() = default;
    ~Pinned();
    Pinned(const Pinned&) = delete;
    Pinned& operator=(const Pinned&) = delete;
    void* get(std::size_t bytes);

   private:
    void* ptr_ = nullptr;
    std::size_t bytes_ = 0;
  };

  // Makes this backend's GPU the calling thread's current device (in-process communicators run
  // ranks as threads), and returns the stream.
  cudaStream_t bind() const;

  int device_;
  Stream stream_;
  DeviceAllocator alloc_;
  std::unique_ptr<kernels::cuda::Blas> blas_;
  EventTimer timer_;
  const char* open_phase_ = nullptr;
  Scratch attention_scratch_, plan_scratch_, sinkhorn_scratch_;
  Scratch square_chunks_, square_partial_, square_sums_;
  Pinned square_chunks_host_, square_sums_host_;
};

}  // namespace moetune::executor::gpu
