// GEMMs on the GPU, row-major like kernels/cpu/gemm.hpp: bf16 operands, fp32 accumulation, a bf16
// or fp32 result. Single GEMMs go through cuBLASLt (heuristic algorithm cached per shape and
// alignment, cublasGemmEx where Lt offers none); batched GEMMs over device pointer arrays through
// cublasGemmBatchedEx (attention heads); grouped GEMMs (one problem per local expert, different
// row counts) through cublasGemmGroupedBatchedEx, falling back to one cublasGemmEx per problem
// where this cuBLAS or GPU refuses the grouped call or an operand is not 16-byte aligned.
#pragma once

#include <cublasLt.h>

#include <cstdint>
#include <map>
#include <tuple>
#include <vector>

#include "kernels/cuda/common.cuh"

namespace moetune::kernels::cuda {

enum class DType : std::uint8_t { BF16, F32 };

// One grouped call: problem p computes C_p[m_p, n_p] = alpha op(A_p) op(B_p) + beta C_p (row-major,
// the same transposes and leading dimensions for every problem). Problems with m or n == 0 are
// skipped; with k == 0, C_p is zeroed when beta == 0 and left alone otherwise.
struct GroupedGemm {
  bool trans_a = false, trans_b = false;
  float alpha = 1.f, beta = 0.f;
  std::int64_t lda = 0, ldb = 0, ldc = 0;
  DType c_type = DType::BF16;
  std::vector<std::int64_t> m, n, k;
  std::vector<const bf16*> a, b;
  std::vector<void*> c;
};

class Blas {
 public:
  explicit Blas(cudaStream_t stream, std::size_t workspace_bytes = std::size_t{32} << 20);
  ~Blas();
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;

  void set_stream(cudaStream_t stream);
  cudaStream_t stream() const { return stream_; }

  // C[m,n] = alpha op(A)[m,k] op(B)[k,n] + beta C, row-major; op(A) = A^T when trans_a (A stored
  // [k,m]), likewise B. beta == 0 overwrites C.
  void gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
            const bf16* a, std::int64_t lda, const bf16* b, std::int64_t ldb, float beta, void* c,
            DType c_type, std::int64_t ldc);

  // `count` GEMMs of one shape; a, b, c are DEVICE arrays of `count` pointers. Returns false,
  // having done nothing, where cuBLAS does not offer this batched call (types, GPU): the caller
  // then runs the GEMMs one by one.
  bool gemm_batched(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k,
                    float alpha, const bf16* const* a, std::int64_t lda, const bf16* const* b,
                    std::int64_t ldb, float beta, void* const* c, DType c_type, std::int64_t ldc,
                    std::int64_t count);

  // Grouped GEMM (host description; pointer arrays are staged to the device here).
  void gemm_grouped(const GroupedGemm& g);
  // Whether grouped calls use cublasGemmGroupedBatchedEx (true until cuBLAS refuses one).
  bool grouped_native() const { return grouped_native_; }
  void set_grouped_native(bool on) { grouped_native_ = on; }

 private:
  struct LtPlan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
    bool has_algo = false;
  };
  using LtKey = std::tuple<bool, bool, std::int64_t, std::int64_t, std::int64_t, std::int64_t,
                           std::int64_t, std::int64_t, int, int, int, int>;
  LtPlan& lt_plan(const LtKey& key);
  void gemm_ex(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k,
               float alpha, const bf16* a, std::int64_t lda, const bf16* b, std::int64_t ldb,
               float beta, void* c, DType c_type, std::int64_t ldc);
  void grouped_loop(const GroupedGemm& g, const std::vector<std::size_t>& live);

  cudaStream_t stream_;
  cublasHandle_t handle_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
  void* workspace_ = nullptr;
  std::size_t workspace_bytes_;
  std::map<LtKey, LtPlan> plans_;
  bool grouped_native_ = true;
  // Pinned staging for grouped pointer arrays: a ring, so an earlier call's host-to-device copy
  // can still be pending while a later call writes the next slot; an event per slot guards reuse.
  static constexpr int kGroupedSlots = 64;
  void* pinned_ = nullptr;
  void* device_ptrs_ = nullptr;
  std::size_t slot_bytes_ = 0;
  int next_slot_ = 0;
  std::vector<cudaEvent_t> slot_done_;
  void ensure_grouped_capacity(std::size_t problems);
};

}  // namespace moetune::kernels::cuda
