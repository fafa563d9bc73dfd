// The CUDA kernels the backend interface (executor/backend.hpp) needs beyond kernels/cuda: the
// vocabulary-parallel embedding and the two-pass cross-entropy (a rank holds a range of the
// vocabulary), the all-gather dispatcher's routing helpers, typed in-place sums for the
// communicators, and a segmented sum of squares per gradient-norm class. Their CPU twins are the
// loops of executor/cpu_backend.cpp; tests/backend/backend_ops_test.cpp compares the two.
// Launchers enqueue on `stream` and never synchronise.
#pragma once

#include <cstdint>

#include "kernels/cuda/common.cuh"

namespace moetune::executor::gpu {

using kernels::cuda::bf16;

// out[N,D] = table[id - first] where first <= id < first + rows, else zeros. table[rows, D].
void vocab_embedding_forward(bf16* out, const bf16* table, const std::int32_t* ids, std::int64_t n,
                             std::int64_t first, std::int64_t rows, std::int64_t d,
                             cudaStream_t stream);
// dtable[rows, D] (fp32) += dout[i] at row ids[i] - first for the ids this range holds (fp32
// atomics: repeated ids add up in an order that may vary run to run).
void vocab_embedding_backward(float* dtable, const bf16* dout, const std::int32_t* ids,
                              std::int64_t n, std::int64_t first, std::int64_t rows, std::int64_t d,
                              cudaStream_t stream);

// Pass 1 over logits[N, vl] (vocabulary columns [first, first + vl)): lse_part[N] = each row's
// log-sum-exp over these columns (every row, ignored or not); target_logit[N] = the target's logit
// where this range holds it and the row is not ignored, else 0. fp32 arithmetic.
void cross_entropy_partial(float* lse_part, float* target_logit, const bf16* logits,
                           const std::int32_t* targets, std::int64_t n, std::int64_t vl,
                           std::int64_t first, cudaStream_t stream);
// Pass 2: lse[N] = log-sum-exp over the parts of lse_parts[parts, N] (in double, as the CPU);
// losses[N] = lse - target_logit, 0 on ignored rows.
void cross_entropy_combine(float* lse, float* losses, const float* lse_parts,
                           const float* target_logit, const std::int32_t* targets, std::int64_t n,
                           std::int64_t parts, cudaStream_t stream);
// dlogits[N, vl] = scale * (exp(logit - lse) - one_hot(target - first)), 0 on ignored rows;
// dlogits may alias logits.
void cross_entropy_backward(bf16* dlogits, const bf16* logits, const float* lse,
                            const std::int32_t* targets, std::int64_t n, std::int64_t vl,
                            std::int64_t first, float scale, cudaStream_t stream);

// out[s] = idx[s] - first where first <= idx[s] < first + local and (kept null or kept[s] >= 0),
// else `local` (the sink group). out may alias idx.
void localize_routing(std::int32_t* out, const std::int32_t* idx, const std::int64_t* kept,
                      std::int64_t count, std::int64_t first, std::int64_t local,
                      cudaStream_t stream);
// slot_row[s] = -1 where slot_row[s] >= rows.
void drop_rows_from(std::int64_t* slot_row, std::int64_t count, std::int64_t rows,
                    cudaStream_t stream);

// dst[N] += src[N] per type; bf16 adds in fp32 and rounds once.
void accumulate_f32(float* dst, const float* src, std::int64_t n, cudaStream_t stream);
void accumulate_f64(double* dst, const double* src, std::int64_t n, cudaStream_t stream);
void accumulate_i32(std::int32_t* dst, const std::int32_t* src, std::int64_t n,
                    cudaStream_t stream);
void accumulate_i64(std::int64_t* dst, const std::int64_t* src, std::int64_t n,
                    cudaStream_t stream);
void accumulate_bf16(bf16* dst, const bf16* src, std::int64_t n, cudaStream_t stream);

// A piece of at most kSquareChunk elements of one segment of the sum of squares, and the class its
// segment sums into. The host cuts the segments into chunks so that every block has a bounded,
// fixed share of the work and the result does not depend on timing.
struct SquareChunk {
  std::int64_t offset = 0, count = 0;
  std::int32_t cls = 0;
};
inline constexpr std::int64_t kSquareChunk = std::int64_t{1} << 16;

// partial[c] = sum of x^2 over chunk c (double); class_sums[cls] = the sum of the partials of
// class cls in chunk order. Deterministic: a fixed block per chunk and fixed reduction trees.
// chunks: `chunk_count` device entries; partial: chunk_count doubles of scratch; class_sums:
// `classes` doubles.
void segmented_sum_of_squares(double* class_sums, double* partial, const float* x,
                              const SquareChunk* chunks, std::int64_t chunk_count, int classes,
                              cudaStream_t stream);

}  // namespace moetune::executor::gpu
