// Token dispatch by expert (Megatron's permute / unpermute): group the (token, slot) pairs of the
// router's top-k so that expert 0's rows come first, then expert 1's, ..., each in token order; and
// combine the experts' outputs back into tokens with the router weights. An optional capacity drops
// the pairs beyond the first `capacity` of each expert (in token order); they contribute 0.
#pragma once

#include <cstdint>

namespace moetune::kernels::cpu {

// Megatron's get_capacity: ceil(n * k / e * capacity_factor), the most rows one expert keeps.
std::int64_t expert_capacity(std::int64_t n, std::int64_t e, std::int64_t k,
                             double capacity_factor);

// The routing map of one dispatch. Slot s = t*K + j is (token t, its j-th expert).
//   counts[E]       rows kept per expert
//   offsets[E+1]    first permuted row of each expert; offsets[E] = R, the rows kept in all
//   slot_row[N*K]   permuted row of each slot, -1 where dropped
//   row_slot[N*K]   slot of each permuted row r < R; -1 for r >= R
// capacity == 0 keeps everything. Returns the number of dropped slots (N*K - R).
std::int64_t dispatch_plan(std::int64_t* counts, std::int64_t* offsets, std::int64_t* slot_row,
                           std::int64_t* row_slot, const std::int32_t* topk_idx, std::int64_t n,
                           std::int64_t e, std::int64_t k, std::int64_t capacity);

// out[R,D]: row r is in[N,D] at token row_slot[r] / K. rows = R.
template <typename T>
void permute_forward(T* out, const T* in, const std::int64_t* row_slot, std::int64_t rows,
                     std::int64_t k, std::int64_t d);

// din[N,D] (overwritten) = sum over the kept slots of each token of dout[R,D] at that slot's row.
template <typename T>
void permute_backward(T* din, const T* dout, const std::int64_t* slot_row, std::int64_t n,
                      std::int64_t k, std::int64_t d);

// out[N,D] (overwritten) = sum over kept slots j of topk_weight[t,j] * expert_out[slot_row[t*K+j]].
// expert_out[R,D].
template <typename T>
void unpermute_combine_forward(T* out, const T* expert_out, const T* topk_weight,
                               const std::int64_t* slot_row, std::int64_t n, std::int64_t k,
                               std::int64_t d);

// dexpert_out[R,D] (overwritten, rows >= R untouched) = topk_weight[t,j] * dout[t];
// dtopk_weight[N,K] (overwritten) = <dout[t], expert_out[row]>, 0 for dropped slots.
template <typename T>
void unpermute_combine_backward(T* dexpert_out, T* dtopk_weight, const T* dout, const T* expert_out,
                                const T* topk_weight, const std::int64_t* slot_row, std::int64_t n,
                                std::int64_t k, std::int64_t d);

}  // namespace moetune::kernels::cpu
