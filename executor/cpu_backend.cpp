// The CPU backend: fp32 throughout over kernels/cpu (OpenBLAS GEMMs, the kernels' own thread
// pool), host memory from a 64-byte-aligned allocator, wall-clock phase timers.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <new>
#include <vector>

#include "core/error.hpp"
#include "executor/backend.hpp"
#include "kernels/cpu/attention.hpp"
#include "kernels/cpu/casts.hpp"
#include "kernels/cpu/cross_entropy.hpp"
#include "kernels/cpu/embedding.hpp"
#include "kernels/cpu/gemm.hpp"
#include "kernels/cpu/moe_losses.hpp"
#include "kernels/cpu/optimizer.hpp"
#include "kernels/cpu/parallel.hpp"
#include "kernels/cpu/permute.hpp"
#include "kernels/cpu/rmsnorm.hpp"
#include "kernels/cpu/rope.hpp"
#include "kernels/cpu/router.hpp"
#include "kernels/cpu/swiglu.hpp"

namespace moetune::executor {

namespace {

namespace k = moetune::kernels::cpu;

constexpr std::align_val_t kAlign{64};

const float* F(const void* p) {
  return static_cast<const float*>(p);
}
float* F(void* p) {
  return static_cast<float*>(p);
}

class CpuBackend final : public Backend {
 public:
  std::string name() const override { return "cpu"; }
  DType act_type() const override { return DType::F32; }
  void check_supported(const ModelSpec&, const MoeOptions&) const override {}

  // --- DeviceMemory (host memory).
  bool on_device() const override { return false; }
  void copy(void* dst, const void* src, std::size_t bytes) override {
    if (dst != src && bytes > 0) std::memcpy(dst, src, bytes);
  }
  void accumulate(void* dst, const void* src, std::int64_t count, DType type) override {
    switch (type) {
      case DType::F32:
        add_typed(static_cast<float*>(dst), static_cast<const float*>(src), count);
        return;
      case DType::F64:
        add_typed(static_cast<double*>(dst), static_cast<const double*>(src), count);
        return;
      case DType::I64:
        add_typed(static_cast<std::int64_t*>(dst), static_cast<const std::int64_t*>(src), count);
        return;
      case DType::I32:
        add_typed(static_cast<std::int32_t*>(dst), static_cast<const std::int32_t*>(src), count);
        return;
      case DType::BF16: {
        auto* d = static_cast<std::uint16_t*>(dst);
        const auto* s = static_cast<const std::uint16_t*>(src);
        for (std::int64_t i = 0; i < count; ++i)
          d[i] = k::bf16_from_float(k::float_from_bf16(d[i]) + k::float_from_bf16(s[i]));
        return;
      }
    }
  }
  void copy_to_host(void* host, const void* src, std::size_t bytes) override {
    copy(host, src, bytes);
  }
  void copy_from_host(void* dst, const void* host, std::size_t bytes) override {
    copy(dst, host, bytes);
  }
  void synchronize() override {}

  // --- Memory.
  void* allocate(std::size_t bytes) override {
    void* p = ::operator new(bytes, kAlign);
    live_ += bytes;
    peak_ = std::max(peak_, live_);
    return p;
  }
  void release(void* p, std::size_t bytes) override {
    ::operator delete(p, kAlign);
    live_ -= bytes;
  }
  void zero(void* p, std::size_t bytes) override {
    if (bytes > 0) std::memset(p, 0, bytes);
  }
  std::size_t live_bytes() const override { return live_; }
  std::size_t peak_bytes() const override { return peak_; }

  // --- Timers.
  void phase_begin(const char* phase) override {
    MOETUNE_CHECK(open_ == nullptr, "a phase began while another was open");
    open_ = phase;
    start_ = std::chrono::steady_clock::now();
  }
  void phase_end() override {
    MOETUNE_CHECK(open_ != nullptr, "a phase ended that never began");
    phases_[open_] +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    open_ = nullptr;
  }
  PhaseTimes collect_phases() override {
    PhaseTimes out;
    out.swap(phases_);
    return out;
  }

  // --- Ops.
  void gemm(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t kk, float alpha,
            const void* a, std::int64_t lda, const void* b, std::int64_t ldb, float beta, void* c,
            DType c_type, std::int64_t ldc) override {
    MOETUNE_CHECK(c_type == DType::F32, "the CPU backend computes in fp32");
    k::gemm<float>(ta, tb, m, n, kk, alpha, F(a), lda, F(b), ldb, beta, F(c), ldc);
  }
  void add(void* out, const void* a, const void* b, std::int64_t n) override {
    float* o = F(out);
    const float* x = F(a);
    const float* y = F(b);
    for (std::int64_t i = 0; i < n; ++i)
      o[i] = x[i] + y[i];
  }
  void scale(float* x, std::int64_t n, double s) override { k::scale_inplace<float>(x, n, s); }
  void cast(void* dst, DType dst_type, const void* src, DType src_type, std::int64_t n) override {
    if (dst_type == src_type) {
      copy(dst, src, static_cast<std::size_t>(n) * dtype_size(dst_type));
    } else if (dst_type == DType::BF16 && src_type == DType::F32) {
      k::cast_float_to_bf16(static_cast<std::uint16_t*>(dst), F(src), n);
    } else if (dst_type == DType::F32 && src_type == DType::BF16) {
      k::cast_bf16_to_float(F(dst), static_cast<const std::uint16_t*>(src), n);
    } else {
      MOETUNE_CHECK(false, "cast from " + to_string(src_type) + " to " + to_string(dst_type));
    }
  }

  void swiglu_grouped_forward(void* out, void* h1, void* h3, void* act_out, const void* x,
                              const void* w1, const void* w3, const void* w2,
                              const std::int64_t* counts_host, std::int64_t experts, std::int64_t d,
                              std::int64_t f) override {
    k::swiglu_grouped_forward<float>(F(out), F(h1), F(h3), F(act_out), F(x), F(w1), F(w3), F(w2),
                                     counts_host, experts, d, f);
  }
  void swiglu_grouped_backward(void* dx, float* dw1, float* dw3, float* dw2, void* dh1, void* dh3,
                               const void* dout, const void* x, const void* h1, const void* h3,
                               const void* act_in, const void* w1, const void* w3, const void* w2,
                               const std::int64_t* counts_host, std::int64_t experts,
                               std::int64_t d, std::int64_t f) override {
    k::swiglu_grouped_backward<float>(F(dx), dw1, dw3, dw2, F(dh1), F(dh3), F(dout), F(x), F(h1),
                                      F(h3), F(act_in), F(w1), F(w3), F(w2), counts_host, experts,
                                      d, f);
  }

  void rmsnorm_forward(void* out, float* rstd, const void* in, const void* weight, std::int64_t n,
                       std::int64_t d, double eps) override {
    k::rmsnorm_forward<float>(F(out), rstd, F(in), F(weight), n, d, eps);
  }
  void rmsnorm_backward(void* din, float* dweight, const void* dout, const void* in,
                        const void* weight, const float* rstd, std::int64_t n,
                        std::int64_t d) override {
    k::rmsnorm_backward<float>(F(din), dweight, F(dout), F(in), F(weight), rstd, n, d);
  }

  void rope_table(float* cos_table, float* sin_table, std::int64_t positions, std::int64_t head_dim,
                  double theta) override {
    k::rope_table<float>(cos_table, sin_table, positions, head_dim, theta);
  }
  void rope_forward(void* x, const float* cos_table, const float* sin_table, std::int64_t start_pos,
                    std::int64_t b, std::int64_t s, std::int64_t h,
                    std::int64_t head_dim) override {
    k::rope_forward<float>(F(x), F(x), cos_table, sin_table, start_pos + s, nullptr, start_pos, b,
                           s, h, head_dim);
  }
  void rope_backward(void* dx, const float* cos_table, const float* sin_table,
                     std::int64_t start_pos, std::int64_t b, std::int64_t s, std::int64_t h,
                     std::int64_t head_dim) override {
    k::rope_backward<float>(F(dx), F(dx), cos_table, sin_table, start_pos + s, nullptr, start_pos,
                            b, s, h, head_dim);
  }

  std::size_t attention_saved_bytes(std::int64_t b, std::int64_t s, std::int64_t hq,
                                    std::int64_t) const override {
    return static_cast<std::size_t>(b * hq * s * s) * sizeof(float);  // the probabilities
  }
  void attention_forward(void* out, void* saved, const void* q, const void* kk, const void* v,
                         std::int64_t b, std::int64_t s, std::int64_t hq, std::int64_t hkv,
                         std::int64_t dh, std::int64_t window) override {
    k::attention_forward<float>(F(out), F(saved), F(q), F(kk), F(v), b, s, hq, hkv, dh, window);
  }
  void attention_backward(void* dq, void* dk, void* dv, const void* dout, const void* q,
                          const void* kk, const void* v, const void*, const void* saved,
                          std::int64_t b, std::int64_t s, std::int64_t hq, std::int64_t hkv,
                          std::int64_t dh, std::int64_t) override {
    k::attention_backward<float>(F(dq), F(dk), F(dv), F(dout), F(q), F(kk), F(v), F(saved), b, s,
                                 hq, hkv, dh);
  }

  void router_forward(float* probs, std::int32_t* topk_idx, float* topk_w, const float* logits,
                      std::int64_t n, std::int64_t e, std::int64_t kk, bool normalize) override {
    k::router_forward<float>(probs, topk_idx, topk_w, logits, n, e, kk, normalize);
  }
  void router_backward(float* dlogits, const float* dtopk_w, const float* dprobs,
                       const float* probs, const std::int32_t* topk_idx, std::int64_t n,
                       std::int64_t e, std::int64_t kk, bool normalize) override {
    k::router_backward<float>(dlogits, dtopk_w, dprobs, probs, topk_idx, n, e, kk, normalize);
  }
  void sinkhorn_forward(float* scores, std::int32_t* topk_idx, float* topk_w, const float* logits,
                        std::int64_t n, std::int64_t e, std::int64_t kk, double tol,
                        std::int64_t max_iters) override {
    k::router_sinkhorn_forward<float>(scores, topk_idx, topk_w, logits, n, e, kk, tol, max_iters);
  }
  void sinkhorn_backward(float* dlogits, const float* dtopk_w, const float* scores,
                         const std::int32_t* topk_idx, std::int64_t n, std::int64_t e,
                         std::int64_t kk) override {
    k::router_sinkhorn_backward<float>(dlogits, dtopk_w, scores, topk_idx, n, e, kk);
  }
  void aux_loss_accumulate(std::int64_t* counts, double* prob_sum, const float* probs,
                           const std::int32_t* topk_idx, std::int64_t n, std::int64_t e,
                           std::int64_t kk) override {
    k::aux_loss_accumulate<float>(counts, prob_sum, probs, topk_idx, n, e, kk);
  }
  void aux_loss_backward(float* dprobs, const std::int64_t* counts, std::int64_t n_tokens,
                         std::int64_t n, std::int64_t e, double dloss) override {
    k::aux_loss_backward<float>(dprobs, counts, n_tokens, n, e, dloss);
  }
  void z_loss_forward(double* sum, const float* logits, std::int64_t n, std::int64_t e) override {
    *sum += k::z_loss_forward<float>(logits, n, e);
  }
  void z_loss_backward(float* dlogits, const float* logits, std::int64_t n, std::int64_t e,
                       double dloss) override {
    k::z_loss_backward<float>(dlogits, logits, n, e, dloss);
  }

  void dispatch_plan(std::int64_t* counts, std::int64_t* offsets, std::int64_t* slot_row,
                     std::int64_t* row_slot, const std::int32_t* topk_idx, std::int64_t n,
                     std::int64_t e, std::int64_t kk, std::int64_t capacity) override {
    k::dispatch_plan(counts, offsets, slot_row, row_slot, topk_idx, n, e, kk, capacity);
  }
  void localize_routing(std::int32_t* out, const std::int32_t* idx, const std::int64_t* kept,
                        std::int64_t count, std::int64_t first, std::int64_t local) override {
    for (std::int64_t s = 0; s < count; ++s) {
      const std::int64_t x = idx[s] - first;
      const bool here = x >= 0 && x < local && (kept == nullptr || kept[s] >= 0);
      out[s] = static_cast<std::int32_t>(here ? x : local);
    }
  }
  void drop_rows_from(std::int64_t* slot_row, std::int64_t count, std::int64_t rows) override {
    for (std::int64_t s = 0; s < count; ++s) {
      if (slot_row[s] >= rows) slot_row[s] = -1;
    }
  }
  void permute_forward(void* out, const void* in, const std::int64_t* row_slot, std::int64_t rows,
                       std::int64_t kk, std::int64_t d) override {
    k::permute_forward<float>(F(out), F(in), row_slot, rows, kk, d);
  }
  void permute_backward(void* din, const void* dout, const std::int64_t* slot_row, std::int64_t n,
                        std::int64_t kk, std::int64_t d) override {
    k::permute_backward<float>(F(din), F(dout), slot_row, n, kk, d);
  }
  void unpermute_combine_forward(void* out, const void* expert_out, const float* topk_w,
                                 const std::int64_t* slot_row, std::int64_t n, std::int64_t kk,
                                 std::int64_t d) override {
    k::unpermute_combine_forward<float>(F(out), F(expert_out), topk_w, slot_row, n, kk, d);
  }
  void unpermute_combine_backward(void* dexpert_out, float* dtopk_w, const void* dout,
                                  const void* expert_out, const float* topk_w,
                                  const std::int64_t* slot_row, std::int64_t n, std::int64_t kk,
                                  std::int64_t d) override {
    k::unpermute_combine_backward<float>(F(dexpert_out), dtopk_w, F(dout), F(expert_out), topk_w,
                                         slot_row, n, kk, d);
  }

  void embedding_forward(void* out, const void* table, const std::int32_t* ids, std::int64_t n,
                         std::int64_t first, std::int64_t rows, std::int64_t d) override {
    const float* t = F(table);
    float* o = F(out);
    for (std::int64_t i = 0; i < n; ++i) {
      const std::int64_t row = ids[i] - first;
      if (row >= 0 && row < rows) {
        std::memcpy(o + i * d, t + row * d, static_cast<std::size_t>(d) * sizeof(float));
      } else {
        std::fill(o + i * d, o + (i + 1) * d, 0.0f);
      }
    }
  }
  void embedding_backward(float* dtable, const void* dout, const std::int32_t* ids, std::int64_t n,
                          std::int64_t first, std::int64_t rows, std::int64_t d) override {
    const float* g = F(dout);
    for (std::int64_t i = 0; i < n; ++i) {
      const std::int64_t row = ids[i] - first;
      if (row < 0 || row >= rows) continue;
      float* dst = dtable + row * d;
      const float* src = g + i * d;
      for (std::int64_t j = 0; j < d; ++j)
        dst[j] += src[j];
    }
  }
  void cross_entropy_partial(float* lse_part, float* target_logit, const void* logits,
                             const std::int32_t* targets, std::int64_t n, std::int64_t vl,
                             std::int64_t first) override {
    k::vocab_parallel_ce_partial(lse_part, target_logit, F(logits), targets, n, vl, first);
  }
  void cross_entropy_combine(float* lse, float* losses, const float* lse_parts,
                             const float* target_logit, const std::int32_t* targets,
                             std::int64_t n, std::int64_t parts) override {
    k::vocab_parallel_ce_combine(lse, losses, lse_parts, target_logit, targets, n, parts);
  }
  void cross_entropy_backward(void* dlogits, const void* logits, const float* lse,
                              const std::int32_t* targets, std::int64_t n, std::int64_t vl,
                              std::int64_t first, double scale) override {
    k::vocab_parallel_ce_backward(F(dlogits), F(logits), lse, targets, n, vl, first, scale);
  }

  void adamw_step(float* param, float* m, float* v, const float* grad, void* working,
                  std::int64_t n, const AdamWHyper& hp, std::int64_t step,
                  double grad_scale) override {
    MOETUNE_CHECK(working == nullptr || working == param,
                  "the CPU backend computes with the fp32 master itself");
    k::adamw_step<float>(param, m, v, grad, n, {hp.lr, hp.beta1, hp.beta2, hp.eps, hp.weight_decay},
                         step, grad_scale);
  }
  void sum_of_squares(const float* x, std::span<const SquareSegment> segments, double* sums_host,
                      int classes) override {
    std::fill(sums_host, sums_host + classes, 0.0);
    for (const SquareSegment& s : segments) {
      MOETUNE_CHECK(s.cls >= 0 && s.cls < classes, "sum_of_squares: class out of range");
      sums_host[s.cls] += k::sum_of_squares<float>(x + s.offset, s.count);
    }
  }

 private:
  template <typename T>
  static void add_typed(T* dst, const T* src, std::int64_t n) {
    for (std::int64_t i = 0; i < n; ++i)
      dst[i] += src[i];
  }
  std::size_t live_ = 0, peak_ = 0;
  const char* open_ = nullptr;
  std::chrono::steady_clock::time_point start_;
  PhaseTimes phases_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() {
  return std::make_unique<CpuBackend>();
}

}  // namespace moetune::executor
