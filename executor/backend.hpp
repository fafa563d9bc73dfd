// The backend the one Mixtral model and its trainer are written against (DESIGN.md, Executor):
// memory (an allocator, host <-> device copies, stream-ordered copies and sums), phase timers,
// and the op set the model needs. Two implementations: `cpu` (kernels/cpu + OpenBLAS, fp32
// throughout, executor/cpu_backend.hpp) and `cuda` (kernels/cuda + cuBLASLt, bf16 activations
// and working weights, executor/cuda/cuda_backend.hpp). Everything the model keeps lives in
// Buffers drawn from its backend.
//
// Types: "act" pointers (void*) hold act_type() elements — fp32 on the CPU, bf16 on CUDA: the
// activations, their gradients and the working copy of the weights the GEMMs read. float* are
// fp32 on every backend: master weights, gradients, Adam state, the router's logits and
// probabilities, norm statistics, losses. int32 holds token ids and top-k indices, int64 routing
// maps and counts. All pointers are the backend's memory unless a name ends in _host. Ops are
// enqueued in order; only the calls that return host values, copy_to_host and synchronize wait.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>

#include "core/layout.hpp"
#include "core/model_spec.hpp"
#include "core/train_spec.hpp"
#include "executor/comm/communicator.hpp"

namespace moetune::executor {

// Seconds spent per phase, named as the simulator names them.
using PhaseTimes = std::map<std::string, double>;

struct AdamWHyper {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.01;
};

// A range of an fp32 vector whose squares are summed into class `cls` (gradient-norm classes).
struct SquareSegment {
  std::int64_t offset = 0, count = 0;
  int cls = 0;
};

class Backend : public DeviceMemory {
 public:
  ~Backend() override = default;

  virtual std::string name() const = 0;  // "cpu" or "cuda"
  virtual DType act_type() const = 0;    // F32 (cpu) or BF16 (cuda)
  // Throws InputError, one line, when this backend cannot run the model with these options
  // (an op it lacks, a size beyond a kernel's limit).
  virtual void check_supported(const ModelSpec& model, const MoeOptions& moe) const = 0;

  // --- Memory. allocate gives uninitialised memory; zero fills with zero bytes (enqueued).
  virtual void* allocate(std::size_t bytes) = 0;
  virtual void release(void* p, std::size_t bytes) = 0;
  virtual void zero(void* p, std::size_t bytes) = 0;
  virtual std::size_t live_bytes() const = 0;
  virtual std::size_t peak_bytes() const = 0;  // high-water mark of live_bytes()

  // --- Phase timers (one open at a time). collect_phases synchronises and returns the seconds
  // per phase since the last collect.
  virtual void phase_begin(const char* phase) = 0;
  virtual void phase_end() = 0;
  virtual PhaseTimes collect_phases() = 0;

  // --- Dense algebra. C[m,n] = alpha op(A)[m,k] op(B)[k,n] + beta C, row-major; op(A) = A^T
  // when trans_a (A stored [k,m]). A and B are act; C is act or F32 (c_type). beta 0 overwrites.
  virtual void gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k,
                    float alpha, const void* a, std::int64_t lda, const void* b, std::int64_t ldb,
                    float beta, void* c, DType c_type, std::int64_t ldc) = 0;
  // out = a + b (act; out may alias a or b).
  virtual void add(void* out, const void* a, const void* b, std::int64_t n) = 0;
  // x *= s (fp32).
  virtual void scale(float* x, std::int64_t n, double s) = 0;
  // dst[n] (dst_type) = src[n] (src_type), F32 <-> act; the same type copies.
  virtual void cast(void* dst, DType dst_type, const void* src, DType src_type, std::int64_t n) = 0;

  // --- Experts: SwiGLU over `experts` groups of rows, counts_host[g] rows each, in order.
  // x[R,D] act; w1, w3 [E,F,D] and w2 [E,D,F] act (working weights); h1, h3, act_out [R,F] and
  // out [R,D] written. Backward: dx, dh1, dh3 written; dw1, dw3, dw2 (fp32) accumulated.
  virtual void swiglu_grouped_forward(void* out, void* h1, void* h3, void* act_out, const void* x,
                                      const void* w1, const void* w3, const void* w2,
                                      const std::int64_t* counts_host, std::int64_t experts,
                                      std::int64_t d, std::int64_t f) = 0;
  virtual void swiglu_grouped_backward(void* dx, float* dw1, float* dw3, float* dw2, void* dh1,
                                       void* dh3, const void* dout, const void* x, const void* h1,
                                       const void* h3, const void* act_in, const void* w1,
                                       const void* w3, const void* w2,
                                       const std::int64_t* counts_host, std::int64_t experts,
                                       std::int64_t d, std::int64_t f) = 0;

  // --- RMSNorm over rows of D: out = in * rstd * weight, rstd[N] kept. Backward: din written,
  // dweight (fp32) accumulated.
  virtual void rmsnorm_forward(void* out, float* rstd, const void* in, const void* weight,
                               std::int64_t n, std::int64_t d, double eps) = 0;
  virtual void rmsnorm_backward(void* din, float* dweight, const void* dout, const void* in,
                                const void* weight, const float* rstd, std::int64_t n,
                                std::int64_t d) = 0;

  // --- RoPE (Hugging Face's rotate_half convention) on x[B,S,H,Dh] in place; tables [S', Dh/2]
  // for positions 0..S'-1, sequence position p of x uses table row start_pos + p.
  virtual void rope_table(float* cos_table, float* sin_table, std::int64_t positions,
                          std::int64_t head_dim, double theta) = 0;
  virtual void rope_forward(void* x, const float* cos_table, const float* sin_table,
                            std::int64_t start_pos, std::int64_t b, std::int64_t s, std::int64_t h,
                            std::int64_t head_dim) = 0;
  virtual void rope_backward(void* dx, const float* cos_table, const float* sin_table,
                             std::int64_t start_pos, std::int64_t b, std::int64_t s, std::int64_t h,
                             std::int64_t head_dim) = 0;

  // --- Causal grouped-query attention (sliding window when window > 0): q[B,S,Hq,Dh],
  // k, v [B,S,Hkv,Dh], out [B,S,Hq,Dh]. `saved` (attention_saved_bytes) is what the forward
  // keeps for the backward besides q, k, v and out: the CPU keeps the probabilities.
  virtual std::size_t attention_saved_bytes(std::int64_t b, std::int64_t s, std::int64_t hq,
                                            std::int64_t dh) const = 0;
  virtual void attention_forward(void* out, void* saved, const void* q, const void* k,
                                 const void* v, std::int64_t b, std::int64_t s, std::int64_t hq,
                                 std::int64_t hkv, std::int64_t dh, std::int64_t window) = 0;
  // dq, dk, dv written.
  virtual void attention_backward(void* dq, void* dk, void* dv, const void* dout, const void* q,
                                  const void* k, const void* v, const void* out, const void* saved,
                                  std::int64_t b, std::int64_t s, std::int64_t hq, std::int64_t hkv,
                                  std::int64_t dh, std::int64_t window) = 0;

  // --- Router (fp32). Softmax over E, top-k (indices int32), Mixtral's renormalised top-k
  // weights when `normalize`. Backward writes dlogits; dprobs (may be null) is the gradient
  // reaching the probabilities from the load-balancing loss.
  virtual void router_forward(float* probs, std::int32_t* topk_idx, float* topk_w,
                              const float* logits, std::int64_t n, std::int64_t e, std::int64_t k,
                              bool normalize) = 0;
  virtual void router_backward(float* dlogits, const float* dtopk_w, const float* dprobs,
                               const float* probs, const std::int32_t* topk_idx, std::int64_t n,
                               std::int64_t e, std::int64_t k, bool normalize) = 0;
  // Sinkhorn-balanced top-k (Megatron's): scores [N,E] kept for the backward.
  virtual void sinkhorn_forward(float* scores, std::int32_t* topk_idx, float* topk_w,
                                const float* logits, std::int64_t n, std::int64_t e, std::int64_t k,
                                double tol, std::int64_t max_iters) = 0;
  virtual void sinkhorn_backward(float* dlogits, const float* dtopk_w, const float* scores,
                                 const std::int32_t* topk_idx, std::int64_t n, std::int64_t e,
                                 std::int64_t k) = 0;
  // Load-balancing statistics, accumulated: counts[E] (routed slots) and prob_sum[E].
  virtual void aux_loss_accumulate(std::int64_t* counts, double* prob_sum, const float* probs,
                                   const std::int32_t* topk_idx, std::int64_t n, std::int64_t e,
                                   std::int64_t k) = 0;
  // dprobs[N,E] += the gradient of E * sum_e f_e P_e over n_tokens tokens, times dloss.
  virtual void aux_loss_backward(float* dprobs, const std::int64_t* counts, std::int64_t n_tokens,
                                 std::int64_t n, std::int64_t e, double dloss) = 0;
  // z-loss: sum[0] += mean over rows of logsumexp^2; backward dlogits += dloss * its gradient.
  virtual void z_loss_forward(double* sum, const float* logits, std::int64_t n, std::int64_t e) = 0;
  virtual void z_loss_backward(float* dlogits, const float* logits, std::int64_t n, std::int64_t e,
                               double dloss) = 0;

  // --- Token permutation (kernels/cpu/permute.hpp's definitions): the dispatch plan (stable in
  // token order within each expert; capacity 0 keeps all) writes counts[E], offsets[E+1]
  // (offsets[E] = R, the rows kept), slot_row[N*K] (-1 dropped) and row_slot[N*K].
  virtual void dispatch_plan(std::int64_t* counts, std::int64_t* offsets, std::int64_t* slot_row,
                             std::int64_t* row_slot, const std::int32_t* topk_idx, std::int64_t n,
                             std::int64_t e, std::int64_t k, std::int64_t capacity) = 0;
  // The all-gather dispatcher's routing: out[s] = idx[s] - first where first <= idx[s] <
  // first + local and the slot was kept at its source (kept null, or kept[s] >= 0), else
  // `local`: a sink group after the local experts.
  virtual void localize_routing(std::int32_t* out, const std::int32_t* idx,
                                const std::int64_t* kept, std::int64_t count, std::int64_t first,
                                std::int64_t local) = 0;
  // slot_row[s] = -1 where slot_row[s] >= rows (the sink group's slots).
  virtual void drop_rows_from(std::int64_t* slot_row, std::int64_t count, std::int64_t rows) = 0;
  // out[r] = in[row_slot[r] / K] for r < rows.
  virtual void permute_forward(void* out, const void* in, const std::int64_t* row_slot,
                               std::int64_t rows, std::int64_t k, std::int64_t d) = 0;
  // din[N,D] = sum over each token's kept slots of dout[slot_row].
  virtual void permute_backward(void* din, const void* dout, const std::int64_t* slot_row,
                                std::int64_t n, std::int64_t k, std::int64_t d) = 0;
  // out[N,D] = sum over kept slots j of topk_w[t,j] * expert_out[slot_row[t,j]].
  virtual void unpermute_combine_forward(void* out, const void* expert_out, const float* topk_w,
                                         const std::int64_t* slot_row, std::int64_t n,
                                         std::int64_t k, std::int64_t d) = 0;
  // dexpert_out rows of kept slots written; dtopk_w[N,K] written (0 for dropped slots).
  virtual void unpermute_combine_backward(void* dexpert_out, float* dtopk_w, const void* dout,
                                          const void* expert_out, const float* topk_w,
                                          const std::int64_t* slot_row, std::int64_t n,
                                          std::int64_t k, std::int64_t d) = 0;

  // --- Vocabulary-parallel embedding and loss: this rank holds vocabulary rows
  // [first, first + rows). Embedding: out[N,D] = table[id - first] for ids it holds, else 0;
  // backward accumulates dout into those rows of dtable (fp32).
  virtual void embedding_forward(void* out, const void* table, const std::int32_t* ids,
                                 std::int64_t n, std::int64_t first, std::int64_t rows,
                                 std::int64_t d) = 0;
  virtual void embedding_backward(float* dtable, const void* dout, const std::int32_t* ids,
                                  std::int64_t n, std::int64_t first, std::int64_t rows,
                                  std::int64_t d) = 0;
  // Cross-entropy of logits[N, vl] (columns [first, first + vl) of the vocabulary) against
  // targets (kIgnoreIndex skips a row). Pass 1: each row's log-sum-exp over these columns and
  // the target's logit where this rank holds it (else 0).
  virtual void cross_entropy_partial(float* lse_part, float* target_logit, const void* logits,
                                     const std::int32_t* targets, std::int64_t n, std::int64_t vl,
                                     std::int64_t first) = 0;
  // Pass 2, over every rank's parts (lse_parts [parts, N], target_logit summed over ranks):
  // lse[N] of the whole vocabulary and losses[N] = lse - target logit (0 where ignored).
  virtual void cross_entropy_combine(float* lse, float* losses, const float* lse_parts,
                                     const float* target_logit, const std::int32_t* targets,
                                     std::int64_t n, std::int64_t parts) = 0;
  // dlogits (may alias logits) = scale * (softmax - one_hot(target)), 0 on ignored rows.
  virtual void cross_entropy_backward(void* dlogits, const void* logits, const float* lse,
                                      const std::int32_t* targets, std::int64_t n, std::int64_t vl,
                                      std::int64_t first, double scale) = 0;

  // --- Optimizer. AdamW on fp32 param/m/v with grad * grad_scale; `working` (may be null, act)
  // receives the updated parameters in the working type.
  virtual void adamw_step(float* param, float* m, float* v, const float* grad, void* working,
                          std::int64_t n, const AdamWHyper& hp, std::int64_t step,
                          double grad_scale) = 0;
  // sums_host[c] = sum of squares of x over the segments of class c (c < classes); waits.
  virtual void sum_of_squares(const float* x, std::span<const SquareSegment> segments,
                              double* sums_host, int classes) = 0;
};

// The CPU backend (always built).
std::unique_ptr<Backend> make_cpu_backend();
// The CUDA backend on `device` when this build has it; otherwise, or without a usable GPU,
// throws InputError with the reason.
std::unique_ptr<Backend> make_cuda_backend(int device);
// "cpu" or "cuda".
std::unique_ptr<Backend> make_backend(const std::string& name, int device = 0);
// Refuses, with one line, a model the named backend cannot run (its kernels' limits), without
// needing the device itself: what `moetune launch` checks before it writes a script.
void check_backend_supports(const std::string& name, const ModelSpec& model, const MoeOptions& moe);
// Every group of `layout` for this MPI rank over the device's own collectives (NCCL for the CUDA
// backend, bootstrapped through MPI, ordered on the backend's stream). MPI must be initialised.
// Throws InputError where this build has no such collectives.
ProcessGroups make_device_groups(Backend& backend, const Layout& layout,
                                 std::int64_t devices_per_node);
// Whether this build has them (make_device_groups does not throw for that reason).
bool device_groups_available();

// n elements of one type from a backend, zero-filled when allocated, returned to it on
// destruction. A buffer that holds a varying number of rows (expert parallelism) keeps its
// largest allocation: resize() only reallocates when it grows, and count() is the size last
// asked for.
class Buffer {
 public:
  Buffer() = default;
  Buffer(Backend& backend, std::int64_t count, DType type) { resize(backend, count, type); }
  ~Buffer() { clear(); }
  Buffer(Buffer&& o) noexcept { swap(o); }
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) {
      clear();
      swap(o);
    }
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  void resize(Backend& backend, std::int64_t count, DType type);
  // Same backend and type, new count.
  void resize(std::int64_t count) { resize(*backend_, count, type_); }
  void clear();

  void* data() const { return ptr_; }
  // The element at index i (pointer arithmetic in the buffer's type).
  void* at(std::int64_t i) const {
    return static_cast<char*>(ptr_) + static_cast<std::size_t>(i) * dtype_size(type_);
  }
  float* f32() const;
  double* f64() const;
  std::int32_t* i32() const;
  std::int64_t* i64() const;
  std::int64_t count() const { return count_; }
  DType type() const { return type_; }
  std::size_t bytes() const { return static_cast<std::size_t>(count_) * dtype_size(type_); }
  bool empty() const { return count_ == 0; }

 private:
  void swap(Buffer& o) noexcept;
  Backend* backend_ = nullptr;
  void* ptr_ = nullptr;
  std::int64_t count_ = 0;
  std::size_t capacity_bytes_ = 0;
  DType type_ = DType::F32;
};

// Times a scope as `phase` on a backend's phase timer (null: not timed).
class Phase {
 public:
  Phase(Backend* backend, const char* phase) : backend_(backend) {
    if (backend_ != nullptr) backend_->phase_begin(phase);
  }
  ~Phase() {
    if (backend_ != nullptr) backend_->phase_end();
  }
  Phase(const Phase&) = delete;
  Phase& operator=(const Phase&) = delete;

 private:
  Backend* backend_;
};

}  // namespace moetune::executor
