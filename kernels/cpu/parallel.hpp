// The CPU kernels' threads: one persistent pool that every parallel loop and every split GEMM runs
// on (OpenBLAS itself runs single-threaded, see gemm.cpp), so no two sets of threads compete for
// the cores. Work is split into contiguous chunks in a fixed way for a given thread count, so
// results are reproducible run to run.
#pragma once

#include <cstdint>
#include <functional>

namespace moetune::kernels::cpu {

// Threads the kernels use: $MOETUNE_NUM_THREADS when set (launchers set 1 per MPI rank), else the
// machine's hardware threads.
int kernel_threads();
// Overrides kernel_threads() (0 restores the default).
void set_kernel_threads(int threads);

// Calls body(begin, end) over [0, n) split into parallel_chunks(n, min_chunk) contiguous chunks;
// chunk c covers [c * n / chunks, (c + 1) * n / chunks). The chunks run on the pool's threads and
// the caller's, or one after another on the caller when one chunk suffices, when called from
// inside another parallel_for body (nested loops run inline) or while another thread holds the
// pool. The chunking is the same in every case, so chunk-indexed results do not depend on which
// thread ran what. A chunk that throws does not stop the others; the first exception is rethrown
// here once all chunks have ended.
void parallel_for(std::int64_t n, std::int64_t min_chunk,
                  const std::function<void(std::int64_t, std::int64_t)>& body);

// The same, telling the body its chunk index: body(chunk, begin, end).
void parallel_for_chunks(std::int64_t n, std::int64_t min_chunk,
                         const std::function<void(std::int64_t, std::int64_t, std::int64_t)>& body);

// The number of chunks parallel_for(n, min_chunk, ...) uses: at most kernel_threads(), each of at
// least `min_chunk` items; chunk-indexed partial results (sums) can be combined in chunk order for
// a fixed thread count.
std::int64_t parallel_chunks(std::int64_t n, std::int64_t min_chunk);

// Runs task(i) for every i in [0, count) on the pool: each thread claims the next unclaimed task,
// so tasks of uneven size balance over the threads. For tasks that write disjoint outputs, which
// makes the result independent of which thread ran which task. Inline, in order, with one thread,
// when nested, or while another thread holds the pool; a single task runs as parallel_for's single
// chunk does (outside a parallel region); exceptions as parallel_for.
void parallel_tasks(std::int64_t count, const std::function<void(std::int64_t)>& task);

// True on a thread that is running a parallel_for body: work started there runs inline, so a
// kernel can choose a single-threaded variant (one unsplit GEMM) instead of splitting for nothing.
bool in_parallel_region();

}  // namespace moetune::kernels::cpu
