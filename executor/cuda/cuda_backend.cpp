// The CUDA backend: each Backend call is one or a few launches of kernels/cuda or
// executor/cuda/backend_kernels on the backend's stream, with its scratch drawn from the same
// stream-ordered pool as the model's buffers.
#include "executor/cuda/cuda_backend.hpp"

#include <algorithm>
#include <string>

#include "core/error.hpp"
#include "executor/cuda/backend_kernels.cuh"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/casts.cuh"
#include "kernels/cuda/moe_losses.cuh"
#include "kernels/cuda/optimizer.cuh"
#include "kernels/cuda/permute.cuh"
#include "kernels/cuda/rmsnorm.cuh"
#include "kernels/cuda/rope.cuh"
#include "kernels/cuda/router.cuh"
#include "kernels/cuda/swiglu.cuh"

namespace moetune::executor {

namespace gpu {

namespace {

namespace kc = moetune::kernels::cuda;

bf16* B(void* p) {
  return static_cast<bf16*>(p);
}
const bf16* B(const void* p) {
  return static_cast<const bf16*>(p);
}

// Scratch regions are cut at 256-byte multiples, the pool's own granularity for alignment.
std::size_t round_up(std::size_t bytes) {
  return (bytes + 255) / 256 * 256;
}

int select_gpu(int device) {
  if (device < 0) {
    throw InputError("the CUDA backend needs a GPU index >= 0, got " + std::to_string(device));
  }
  require_gpu(device);
  return device;
}

}  // namespace

CudaBackend::Stream::Stream() {
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
}

CudaBackend::Stream::~Stream() {
  // Destructors do not throw: at process exit the context may already be gone.
  cudaStreamSynchronize(stream_);
  cudaStreamDestroy(stream_);
}

void* CudaBackend::Scratch::get(DeviceAllocator& alloc, std::size_t bytes) {
  if (bytes > bytes_) {
    release(alloc);
    const std::size_t want = round_up(bytes);
    ptr_ = alloc.allocate(want);
    bytes_ = want;
  }
  return ptr_;
}

void CudaBackend::Scratch::release(DeviceAllocator& alloc) {
  if (ptr_ != nullptr) alloc.release(ptr_, bytes_);
  ptr_ = nullptr;
  bytes_ = 0;
}

CudaBackend::Pinned::~Pinned() {
  if (ptr_ != nullptr) cudaFreeHost(ptr_);
}

void* CudaBackend::Pinned::get(std::size_t bytes) {
  if (bytes > bytes_) {
    if (ptr_ != nullptr) CUDA_CHECK(cudaFreeHost(ptr_));
    ptr_ = nullptr;
    bytes_ = 0;
    CUDA_CHECK(cudaMallocHost(&ptr_, round_up(bytes)));
    bytes_ = round_up(bytes);
  }
  return ptr_;
}

CudaBackend::CudaBackend(int device)
    : device_(select_gpu(device)),
      stream_(),
      alloc_(stream_.get()),
      blas_(std::make_unique<kc::Blas>(stream_.get())),
      timer_(stream_.get()) {}

CudaBackend::~CudaBackend() {
  cudaSetDevice(device_);
  cudaStreamSynchronize(stream_.get());
  for (Scratch* s : {&attention_scratch_, &plan_scratch_, &sinkhorn_scratch_, &square_chunks_,
                     &square_partial_, &square_sums_})
    s->release(alloc_);
}

cudaStream_t CudaBackend::bind() const {
  int current = -1;
  CUDA_CHECK(cudaGetDevice(&current));
  if (current != device_) CUDA_CHECK(cudaSetDevice(device_));
  return stream_.get();
}

void CudaBackend::check_supported(const ModelSpec& model, const MoeOptions& moe) const {
  check_cuda_supported(model, moe);
}

void check_cuda_supported(const ModelSpec& model, const MoeOptions& moe) {
  const std::int64_t e = model.num_local_experts, k = model.num_experts_per_tok;
  if (e > kc::kMaxExperts || k > kc::kMaxTopK) {
    throw InputError("the CUDA router takes at most " + std::to_string(kc::kMaxExperts) +
                     " experts and top-" + std::to_string(kc::kMaxTopK) + "; " + model.name +
                     " has " + std::to_string(e) + " experts and top-" + std::to_string(k));
  }
  if (moe.load_balancing == LoadBalancing::Sinkhorn && e > kc::kMaxSinkhornExperts) {
    throw InputError("the CUDA Sinkhorn router takes at most " +
                     std::to_string(kc::kMaxSinkhornExperts) + " experts; " + model.name + " has " +
                     std::to_string(e) + " (use --load-balancing aux_loss)");
  }
  if (model.head_dim % 2 != 0) {
    throw InputError("the CUDA RoPE kernel needs an even head_dim; " + model.name + " has " +
                     std::to_string(model.head_dim));
  }
}

// --- DeviceMemory.

void CudaBackend::copy(void* dst, const void* src, std::size_t bytes) {
  if (dst == src || bytes == 0) return;
  // Default: unified addressing finds the direction, so a peer GPU's buffer works as well.
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, bind()));
}

void CudaBackend::accumulate(void* dst, const void* src, std::int64_t count, DType type) {
  cudaStream_t s = bind();
  switch (type) {
    case DType::F32:
      accumulate_f32(static_cast<float*>(dst), static_cast<const float*>(src), count, s);
      return;
    case DType::F64:
      accumulate_f64(static_cast<double*>(dst), static_cast<const double*>(src), count, s);
      return;
    case DType::I32:
      accumulate_i32(static_cast<std::int32_t*>(dst), static_cast<const std::int32_t*>(src), count,
                     s);
      return;
    case DType::I64:
      accumulate_i64(static_cast<std::int64_t*>(dst), static_cast<const std::int64_t*>(src), count,
                     s);
      return;
    case DType::BF16:
      accumulate_bf16(B(dst), B(src), count, s);
      return;
  }
  MOETUNE_CHECK(false, "accumulate: unknown dtype");
}

void CudaBackend::copy_to_host(void* host, const void* src, std::size_t bytes) {
  if (bytes == 0) return;
  cudaStream_t s = bind();
  CUDA_CHECK(cudaMemcpyAsync(host, src, bytes, cudaMemcpyDeviceToHost, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
}

void CudaBackend::copy_from_host(void* dst, const void* host, std::size_t bytes) {
  if (bytes == 0) return;
  cudaStream_t s = bind();
  CUDA_CHECK(cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, s));
  // The caller may reuse or free `host` as soon as this returns.
  CUDA_CHECK(cudaStreamSynchronize(s));
}

void CudaBackend::synchronize() {
  CUDA_CHECK(cudaStreamSynchronize(bind()));
}

// --- Memory.

void* CudaBackend::allocate(std::size_t bytes) {
  bind();
  // A zero-byte request still gets a distinct pointer from the pool, as operator new gives.
  return alloc_.allocate(std::max<std::size_t>(bytes, 1));
}

void CudaBackend::release(void* p, std::size_t bytes) {
  if (p == nullptr) return;
  // Buffers release from destructors, also while an exception unwinds: no throwing here, so
  // the device is selected without CUDA_CHECK (a failure shows up at the next checked call).
  int current = -1;
  if (cudaGetDevice(&current) == cudaSuccess && current != device_) cudaSetDevice(device_);
  alloc_.release(p, std::max<std::size_t>(bytes, 1));
}

void CudaBackend::zero(void* p, std::size_t bytes) {
  if (bytes == 0) return;
  CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, bind()));
}

// --- Timers.

void CudaBackend::phase_begin(const char* phase) {
  MOETUNE_CHECK(open_phase_ == nullptr, "a phase began while another was open");
  bind();
  timer_.begin(phase);
  open_phase_ = phase;
}

void CudaBackend::phase_end() {
  MOETUNE_CHECK(open_phase_ != nullptr, "a phase ended that never began");
  bind();
  timer_.end();
  open_phase_ = nullptr;
}

PhaseTimes CudaBackend::collect_phases() {
  synchronize();
  return timer_.collect();
}

// --- Dense algebra.

void CudaBackend::gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k,
                       float alpha, const void* a, std::int64_t lda, const void* b,
                       std::int64_t ldb, float beta, void* c, DType c_type, std::int64_t ldc) {
  MOETUNE_CHECK(c_type == DType::BF16 || c_type == DType::F32,
                "the CUDA gemm writes bf16 or fp32, not " + to_string(c_type));
  bind();
  blas_->gemm(trans_a, trans_b, m, n, k, alpha, B(a), lda, B(b), ldb, beta, c,
              c_type == DType::F32 ? kc::DType::F32 : kc::DType::BF16, ldc);
}

void CudaBackend::add(void* out, const void* a, const void* b, std::int64_t n) {
  kc::add_bf16(B(out), B(a), B(b), n, bind());
}

void CudaBackend::scale(float* x, std::int64_t n, double s) {
  kc::scale_inplace(x, n, s, bind());
}

void CudaBackend::cast(void* dst, DType dst_type, const void* src, DType src_type, std::int64_t n) {
  MOETUNE_CHECK(n >= 0, "cast: negative count");
  if (dst_type == src_type) {
    copy(dst, src, static_cast<std::size_t>(n) * dtype_size(dst_type));
  } else if (dst_type == DType::BF16 && src_type == DType::F32) {
    kc::cast_float_to_bf16(B(dst), static_cast<const float*>(src), n, bind());
  } else if (dst_type == DType::F32 && src_type == DType::BF16) {
    kc::cast_bf16_to_float(static_cast<float*>(dst), B(src), n, bind());
  } else {
    MOETUNE_CHECK(false, "cast from " + to_string(src_type) + " to " + to_string(dst_type));
  }
}

// --- Experts.

void CudaBackend::swiglu_grouped_forward(void* out, void* h1, void* h3, void* act_out,
                                         const void* x, const void* w1, const void* w3,
                                         const void* w2, const std::int64_t* counts_host,
                                         std::int64_t experts, std::int64_t d, std::int64_t f) {
  bind();
  kc::swiglu_grouped_forward(*blas_, B(out), B(h1), B(h3), B(act_out), B(x), B(w1), B(w3), B(w2),
                             counts_host, experts, d, f);
}

void CudaBackend::swiglu_grouped_backward(void* dx, float* dw1, float* dw3, float* dw2, void* dh1,
                                          void* dh3, const void* dout, const void* x,
                                          const void* h1, const void* h3, const void* act_in,
                                          const void* w1, const void* w3, const void* w2,
                                          const std::int64_t* counts_host, std::int64_t experts,
                                          std::int64_t d, std::int64_t f) {
  bind();
  kc::swiglu_grouped_backward(*blas_, B(dx), dw1, dw3, dw2, B(dh1), B(dh3), B(dout), B(x), B(h1),
                              B(h3), B(act_in), B(w1), B(w3), B(w2), counts_host, experts, d, f);
}

// --- Norms and RoPE.

void CudaBackend::rmsnorm_forward(void* out, float* rstd, const void* in, const void* weight,
                                  std::int64_t n, std::int64_t d, double eps) {
  kc::rmsnorm_forward(B(out), rstd, B(in), B(weight), n, d, eps, bind());
}

void CudaBackend::rmsnorm_backward(void* din, float* dweight, const void* dout, const void* in,
                                   const void* weight, const float* rstd, std::int64_t n,
                                   std::int64_t d) {
  kc::rmsnorm_backward(B(din), dweight, B(dout), B(in), B(weight), rstd, n, d, bind());
}

void CudaBackend::rope_table(float* cos_table, float* sin_table, std::int64_t positions,
                             std::int64_t head_dim, double theta) {
  kc::rope_table(cos_table, sin_table, positions, head_dim, theta, bind());
}

// The interface does not pass the table's length: as the CPU backend, the table is taken to
// reach the last position used (start_pos + s).
void CudaBackend::rope_forward(void* x, const float* cos_table, const float* sin_table,
                               std::int64_t start_pos, std::int64_t b, std::int64_t s,
                               std::int64_t h, std::int64_t head_dim) {
  kc::rope_forward(B(x), B(x), cos_table, sin_table, start_pos + s, start_pos, b, s, h, head_dim,
                   bind());
}

void CudaBackend::rope_backward(void* dx, const float* cos_table, const float* sin_table,
                                std::int64_t start_pos, std::int64_t b, std::int64_t s,
                                std::int64_t h, std::int64_t head_dim) {
  kc::rope_backward(B(dx), B(dx), cos_table, sin_table, start_pos + s, start_pos, b, s, h, head_dim,
                    bind());
}

// --- Attention.

std::size_t CudaBackend::attention_saved_bytes(std::int64_t b, std::int64_t s, std::int64_t hq,
                                               std::int64_t) const {
  return static_cast<std::size_t>(b * hq) * static_cast<std::size_t>(s) *
         static_cast<std::size_t>(s) * sizeof(bf16);  // the bf16 probabilities
}

void CudaBackend::attention_forward(void* out, void* saved, const void* q, const void* k,
                                    const void* v, std::int64_t b, std::int64_t s, std::int64_t hq,
                                    std::int64_t hkv, std::int64_t dh, std::int64_t window) {
  bind();
  void* scratch = attention_scratch_.get(alloc_, kc::attention_scratch_bytes(b, s, hq, dh));
  kc::attention_forward(*blas_, B(out), B(saved), B(q), B(k), B(v), b, s, hq, hkv, dh, window,
                        scratch);
}

// The saved probabilities already carry the causal / sliding-window mask (0 where masked), so
// the backward needs neither `out` nor `window`.
void CudaBackend::attention_backward(void* dq, void* dk, void* dv, const void* dout, const void* q,
                                     const void* k, const void* v, const void*, const void* saved,
                                     std::int64_t b, std::int64_t s, std::int64_t hq,
                                     std::int64_t hkv, std::int64_t dh, std::int64_t) {
  bind();
  void* scratch = attention_scratch_.get(alloc_, kc::attention_scratch_bytes(b, s, hq, dh));
  kc::attention_backward(*blas_, B(dq), B(dk), B(dv), B(dout), B(q), B(k), B(v), B(saved), b, s, hq,
                         hkv, dh, scratch);
}

// --- Router and its losses.

void CudaBackend::router_forward(float* probs, std::int32_t* topk_idx, float* topk_w,
                                 const float* logits, std::int64_t n, std::int64_t e,
                                 std::int64_t k, bool normalize) {
  kc::router_forward(probs, topk_idx, topk_w, logits, n, e, k, normalize, bind());
}

void CudaBackend::router_backward(float* dlogits, const float* dtopk_w, const float* dprobs,
                                  const float* probs, const std::int32_t* topk_idx, std::int64_t n,
                                  std::int64_t e, std::int64_t k, bool normalize) {
  kc::router_backward(dlogits, dtopk_w, dprobs, probs, topk_idx, n, e, k, normalize, bind());
}

void CudaBackend::sinkhorn_forward(float* scores, std::int32_t* topk_idx, float* topk_w,
                                   const float* logits, std::int64_t n, std::int64_t e,
                                   std::int64_t k, double tol, std::int64_t max_iters) {
  cudaStream_t s = bind();
  auto* d0 = static_cast<double*>(sinkhorn_scratch_.get(
      alloc_, static_cast<std::size_t>(std::max<std::int64_t>(n, 1)) * sizeof(double)));
  kc::router_sinkhorn_forward(scores, topk_idx, topk_w, logits, n, e, k, tol, max_iters, d0,
                              nullptr, s);
}

void CudaBackend::sinkhorn_backward(float* dlogits, const float* dtopk_w, const float* scores,
                                    const std::int32_t* topk_idx, std::int64_t n, std::int64_t e,
                                    std::int64_t k) {
  kc::router_sinkhorn_backward(dlogits, dtopk_w, scores, topk_idx, n, e, k, bind());
}

void CudaBackend::aux_loss_accumulate(std::int64_t* counts, double* prob_sum, const float* probs,
                                      const std::int32_t* topk_idx, std::int64_t n, std::int64_t e,
                                      std::int64_t k) {
  kc::aux_loss_accumulate(counts, prob_sum, probs, topk_idx, n, e, k, bind());
}

void CudaBackend::aux_loss_backward(float* dprobs, const std::int64_t* counts,
                                    std::int64_t n_tokens, std::int64_t n, std::int64_t e,
                                    double dloss) {
  kc::aux_loss_backward(dprobs, counts, n_tokens, n, e, dloss, bind());
}

void CudaBackend::z_loss_forward(double* sum, const float* logits, std::int64_t n, std::int64_t e) {
  kc::z_loss_forward(sum, logits, n, e, bind());
}

void CudaBackend::z_loss_backward(float* dlogits, const float* logits, std::int64_t n,
                                  std::int64_t e, double dloss) {
  kc::z_loss_backward(dlogits, logits, n, e, dloss, bind());
}

// --- Token permutation.

void CudaBackend::dispatch_plan(std::int64_t* counts, std::int64_t* offsets, std::int64_t* slot_row,
                                std::int64_t* row_slot, const std::int32_t* topk_idx,
                                std::int64_t n, std::int64_t e, std::int64_t k,
                                std::int64_t capacity) {
  cudaStream_t s = bind();
  MOETUNE_CHECK(n >= 0 && e > 0 && k > 0, "dispatch_plan: need n >= 0, e > 0, k > 0");
  const std::int64_t elems = std::max<std::int64_t>(kc::dispatch_plan_scratch_elems(n * k, e), 1);
  auto* scratch = static_cast<std::int64_t*>(
      plan_scratch_.get(alloc_, static_cast<std::size_t>(elems) * sizeof(std::int64_t)));
  kc::dispatch_plan(counts, offsets, slot_row, row_slot, nullptr, topk_idx, n, e, k, capacity,
                    scratch, s);
}

void CudaBackend::localize_routing(std::int32_t* out, const std::int32_t* idx,
                                   const std::int64_t* kept, std::int64_t count, std::int64_t first,
                                   std::int64_t local) {
  gpu::localize_routing(out, idx, kept, count, first, local, bind());
}

void CudaBackend::drop_rows_from(std::int64_t* slot_row, std::int64_t count, std::int64_t rows) {
  gpu::drop_rows_from(slot_row, count, rows, bind());
}

void CudaBackend::permute_forward(void* out, const void* in, const std::int64_t* row_slot,
                                  std::int64_t rows, std::int64_t k, std::int64_t d) {
  kc::permute_forward(B(out), B(in), row_slot, rows, k, d, bind());
}

void CudaBackend::permute_backward(void* din, const void* dout, const std::int64_t* slot_row,
                                   std::int64_t n, std::int64_t k, std::int64_t d) {
  kc::permute_backward(B(din), B(dout), slot_row, n, k, d, bind());
}

void CudaBackend::unpermute_combine_forward(void* out, const void* expert_out, const float* topk_w,
                                            const std::int64_t* slot_row, std::int64_t n,
                                            std::int64_t k, std::int64_t d) {
  kc::unpermute_combine_forward(B(out), B(expert_out), topk_w, slot_row, n, k, d, bind());
}

void CudaBackend::unpermute_combine_backward(void* dexpert_out, float* dtopk_w, const void* dout,
                                             const void* expert_out, const float* topk_w,
                                             const std::int64_t* slot_row, std::int64_t n,
                                             std::int64_t k, std::int64_t d) {
  kc::unpermute_combine_backward(B(dexpert_out), dtopk_w, B(dout), B(expert_out), topk_w, slot_row,
                                 n, k, d, bind());
}

// --- Embedding and loss.

void CudaBackend::embedding_forward(void* out, const void* table, const std::int32_t* ids,
                                    std::int64_t n, std::int64_t first, std::int64_t rows,
                                    std::int64_t d) {
  vocab_embedding_forward(B(out), B(table), ids, n, first, rows, d, bind());
}

void CudaBackend::embedding_backward(float* dtable, const void* dout, const std::int32_t* ids,
                                     std::int64_t n, std::int64_t first, std::int64_t rows,
                                     std::int64_t d) {
  vocab_embedding_backward(dtable, B(dout), ids, n, first, rows, d, bind());
}

void CudaBackend::cross_entropy_partial(float* lse_part, float* target_logit, const void* logits,
                                        const std::int32_t* targets, std::int64_t n,
                                        std::int64_t vl, std::int64_t first) {
  gpu::cross_entropy_partial(lse_part, target_logit, B(logits), targets, n, vl, first, bind());
}

void CudaBackend::cross_entropy_combine(float* lse, float* losses, const float* lse_parts,
                                        const float* target_logit, const std::int32_t* targets,
                                        std::int64_t n, std::int64_t parts) {
  gpu::cross_entropy_combine(lse, losses, lse_parts, target_logit, targets, n, parts, bind());
}

void CudaBackend::cross_entropy_backward(void* dlogits, const void* logits, const float* lse,
                                         const std::int32_t* targets, std::int64_t n,
                                         std::int64_t vl, std::int64_t first, double scale) {
  gpu::cross_entropy_backward(B(dlogits), B(logits), lse, targets, n, vl, first,
                              static_cast<float>(scale), bind());
}

// --- Optimizer.

void CudaBackend::adamw_step(float* param, float* m, float* v, const float* grad, void* working,
                             std::int64_t n, const AdamWHyper& hp, std::int64_t step,
                             double grad_scale) {
  const kc::AdamWParams params{hp.lr, hp.beta1, hp.beta2, hp.eps, hp.weight_decay};
  kc::adamw_step(param, m, v, grad, B(working), n, params, step, grad_scale, bind());
}

void CudaBackend::sum_of_squares(const float* x, std::span<const SquareSegment> segments,
                                 double* sums_host, int classes) {
  MOETUNE_CHECK(classes >= 0, "sum_of_squares: negative class count");
  cudaStream_t s = bind();
  // Cut the segments into chunks of at most kSquareChunk elements (host), stage them (pinned,
  // free to reuse: the previous call ended with a synchronisation) and send them with the sums.
  std::int64_t chunk_count = 0;
  for (const SquareSegment& seg : segments) {
    MOETUNE_CHECK(seg.cls >= 0 && seg.cls < classes, "sum_of_squares: class out of range");
    MOETUNE_CHECK(seg.offset >= 0 && seg.count >= 0, "sum_of_squares: negative segment");
    chunk_count += (seg.count + kSquareChunk - 1) / kSquareChunk;
  }
  if (classes == 0) {
    synchronize();
    return;
  }
  const std::size_t chunk_bytes =
      static_cast<std::size_t>(std::max<std::int64_t>(chunk_count, 1)) * sizeof(SquareChunk);
  auto* staged = static_cast<SquareChunk*>(square_chunks_host_.get(chunk_bytes));
  std::int64_t c = 0;
  for (const SquareSegment& seg : segments) {
    for (std::int64_t at = 0; at < seg.count; at += kSquareChunk)
      staged[c++] = {seg.offset + at, std::min(kSquareChunk, seg.count - at), seg.cls};
  }
  auto* chunks = static_cast<SquareChunk*>(square_chunks_.get(alloc_, chunk_bytes));
  auto* partial = static_cast<double*>(square_partial_.get(
      alloc_, static_cast<std::size_t>(std::max<std::int64_t>(chunk_count, 1)) * sizeof(double)));
  const std::size_t sum_bytes = static_cast<std::size_t>(classes) * sizeof(double);
  auto* sums = static_cast<double*>(square_sums_.get(alloc_, sum_bytes));
  auto* sums_staged = static_cast<double*>(square_sums_host_.get(sum_bytes));
  if (chunk_count > 0) {
    CUDA_CHECK(cudaMemcpyAsync(chunks, staged,
                               static_cast<std::size_t>(chunk_count) * sizeof(SquareChunk),
                               cudaMemcpyHostToDevice, s));
  }
  segmented_sum_of_squares(sums, partial, x, chunks, chunk_count, classes, s);
  CUDA_CHECK(cudaMemcpyAsync(sums_staged, sums, sum_bytes, cudaMemcpyDeviceToHost, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
  std::copy(sums_staged, sums_staged + classes, sums_host);
}

}  // namespace gpu

std::unique_ptr<Backend> make_cuda_backend(int device) {
  return std::make_unique<gpu::CudaBackend>(device);
}

}  // namespace moetune::executor
