// Token dispatch by expert on the GPU (CUDA twins of kernels/cpu/permute.hpp): the dispatch plan
// (stable in token order within each expert, optional capacity) and the row gathers/scatters.
// Maps are int64 as on the CPU; activations bf16, router weights fp32.
#pragma once

#include "kernels/cuda/common.cuh"

namespace moetune::kernels::cuda {

// Scratch the dispatch plan needs: per block of kPlanBlock slots, a count per expert.
inline constexpr std::int64_t kPlanBlock = 1024;
std::int64_t dispatch_plan_scratch_elems(std::int64_t slots, std::int64_t e);

// counts[E], offsets[E+1], slot_row[N*K] (-1 dropped), row_slot[N*K] (-1 past R), dropped[1] (the
// dropped slots, may be null): exactly what kernels/cpu dispatch_plan writes. scratch holds
// dispatch_plan_scratch_elems(N*K, E) int64. capacity 0 keeps everything. E <= 1024.
void dispatch_plan(std::int64_t* counts, std::int64_t* offsets, std::int64_t* slot_row,
                   std::int64_t* row_slot, std::int64_t* dropped, const std::int32_t* topk_idx,
                   std::int64_t n, std::int64_t e, std::int64_t k, std::int64_t capacity,
                   std::int64_t* scratch, cudaStream_t stream);

// out[r,D] = in[row_slot[r] / K] for r < max_rows with row_slot[r] >= 0 (other rows untouched),
// so the caller need not know R on the host; max_rows = N*K covers every row.
void permute_forward(bf16* out, const bf16* in, const std::int64_t* row_slot, std::int64_t max_rows,
                     std::int64_t k, std::int64_t d, cudaStream_t stream);

// din[N,D] (overwritten) = sum over the kept slots of each token of dout[slot_row].
void permute_backward(bf16* din, const bf16* dout, const std::int64_t* slot_row, std::int64_t n,
                      std::int64_t k, std::int64_t d, cudaStream_t stream);

// out[N,D] (overwritten) = sum over kept slots j of topk_weight[t,j] * expert_out[slot_row].
void unpermute_combine_forward(bf16* out, const bf16* expert_out, const float* topk_weight,
                               const std::int64_t* slot_row, std::int64_t n, std::int64_t k,
                               std::int64_t d, cudaStream_t stream);

// dexpert_out[row] = topk_weight[t,j] * dout[t] for kept slots (other rows untouched);
// dtopk_weight[N,K] (overwritten) = <dout[t], expert_out[row]>, 0 for dropped slots.
void unpermute_combine_backward(bf16* dexpert_out, float* dtopk_weight, const bf16* dout,
                                const bf16* expert_out, const float* topk_weight,
                                const std::int64_t* slot_row, std::int64_t n, std::int64_t k,
                                std::int64_t d, cudaStream_t stream);

}  // namespace moetune::kernels::cuda
