// A minimal parallel-for for the CPU kernels' loops that BLAS does not cover (AdamW, softmax rows,
// attention heads). Work is split into contiguous chunks, one per thread, in a fixed way for a
// given thread count, so results are reproducible run to run.
#pragma once

#include <cstdint>
#include <functional>

namespace moetune::kernels::cpu {

// Threads the kernels use: $MOETUNE_NUM_THREADS when set (launchers set 1 per MPI rank), else the
// machine's hardware threads.
int kernel_threads();
// Overrides kernel_threads() (0 restores the default).
void set_kernel_threads(int threads);

// Calls body(begin, end) over [0, n) split into at most kernel_threads() contiguous chunks of at
// least `min_chunk` items; runs inline when one chunk suffices. Chunk c covers
// [c * n / chunks, (c + 1) * n / chunks).
void parallel_for(std::int64_t n, std::int64_t min_chunk,
                  const std::function<void(std::int64_t, std::int64_t)>& body);

// The same, telling the body its chunk index: body(chunk, begin, end).
void parallel_for_chunks(std::int64_t n, std::int64_t min_chunk,
                         const std::function<void(std::int64_t, std::int64_t, std::int64_t)>& body);

// The number of chunks parallel_for(n, min_chunk, ...) uses; chunk-indexed partial results (sums)
// can be combined in chunk order for a fixed thread count.
std::int64_t parallel_chunks(std::int64_t n, std::int64_t min_chunk);

}  // namespace moetune::kernels::cpu
