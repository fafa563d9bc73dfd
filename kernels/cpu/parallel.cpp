// parallel_for on a persistent pool of worker threads. The caller posts a job (a chunk count and a
// function), wakes the workers, and takes chunks itself; every thread claims the next unclaimed
// chunk until none is left. Workers spin for a few tens of microseconds after a job (GEMMs and
// element-wise loops come back to back within a training step) and then sleep on a futex, so an
// idle pool costs nothing and never competes with a busy caller for long.
#include "kernels/cpu/parallel.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace moetune::kernels::cpu {

namespace {

std::atomic<int> g_threads{0};
// True on a thread that is running a parallel_for body (pool workers always): nested loops then
// run inline instead of posting a job from inside a job.
thread_local bool t_in_parallel = false;

struct ParallelScope {
  bool saved = t_in_parallel;
  ParallelScope() { t_in_parallel = true; }
  ~ParallelScope() { t_in_parallel = saved; }
  ParallelScope(const ParallelScope&) = delete;
  ParallelScope& operator=(const ParallelScope&) = delete;
};

int default_threads() {
  if (const char* env = std::getenv("MOETUNE_NUM_THREADS"); env != nullptr) {
    const int n = std::atoi(env);
    if (n > 0) return n;
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Waits until `value` no longer holds `old`: a short spin, then a futex wait. The spin bound is
// about the gap between two kernels of a step on the caller's side (a row loop, a dispatch), so a
// worker is still awake for the next GEMM but sleeps through the serial parts.
template <typename U>
U wait_for_change(const std::atomic<U>& value, U old) {
  constexpr auto kSpin = std::chrono::microseconds(50);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0;; i++) {
    const U now = value.load(std::memory_order_acquire);
    if (now != old) return now;
    cpu_relax();
    if ((i & 63) == 63 && std::chrono::steady_clock::now() - start > kSpin) break;
  }
  for (;;) {
    value.wait(old, std::memory_order_acquire);
    const U now = value.load(std::memory_order_acquire);
    if (now != old) return now;
  }
}

// Runs chunk `chunk` of the job whose context is `ctx`.
using ChunkFn = void (*)(const void* ctx, std::int64_t chunk);

// Every chunk on the calling thread, in order, inside a parallel scope. As on the pool, a chunk
// that throws does not stop the others, and the first exception is rethrown at the end.
void run_inline(std::int64_t chunks, ChunkFn fn, const void* ctx) {
  const ParallelScope scope;
  std::exception_ptr error;
  for (std::int64_t c = 0; c < chunks; c++) {
    try {
      fn(ctx, c);
    } catch (...) {
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
}

class ThreadPool {
 public:
  // Never destroyed: kernels may run from other static destructors, and workers asleep on a futex
  // need no joining at exit.
  static ThreadPool& instance() {
    static ThreadPool* pool = new ThreadPool();
    return *pool;
  }

  // Runs fn(ctx, c) for every c in [0, chunks) on the caller and `helpers` workers; runs them all
  // on the caller when another thread holds the pool. Rethrows the first exception.
  void run(std::int64_t chunks, std::int64_t helpers, ChunkFn fn, const void* ctx) {
    std::unique_lock<std::mutex> lock(submit_, std::try_to_lock);
    if (!lock.owns_lock() || chunks > kMaxChunks) {
      run_inline(chunks, fn, ctx);
      return;
    }
    const std::uint32_t gen = posted_.load(std::memory_order_relaxed) + 1;
    grow(static_cast<std::size_t>(helpers), gen - 1);
    fn_ = fn;
    ctx_ = ctx;
    helpers_.store(helpers, std::memory_order_relaxed);
    error_ = nullptr;
    done_.store(0, std::memory_order_relaxed);
    // The claim word carries the generation so that a worker waking late for an earlier job can
    // never claim a chunk of this one through a stale view.
    claim_.store(pack(gen, chunks, 0), std::memory_order_release);
    posted_.store(gen, std::memory_order_release);
    posted_.notify_all();
    {
      const ParallelScope scope;
      work_on(gen);
    }
    const auto total = static_cast<std::uint32_t>(chunks);
    for (std::uint32_t d = done_.load(std::memory_order_acquire); d != total;
         d = done_.load(std::memory_order_acquire))
      wait_for_change(done_, d);
    if (error_) {
      std::exception_ptr error = error_;
      error_ = nullptr;
      std::rethrow_exception(error);
    }
  }

 private:
  static constexpr std::int64_t kMaxChunks = 0xffff;

  // [generation:32][chunks:16][next chunk to claim:16]
  static std::uint64_t pack(std::uint32_t gen, std::int64_t chunks, std::int64_t next) {
    return (std::uint64_t(gen) << 32) | (std::uint64_t(chunks) << 16) | std::uint64_t(next);
  }

  // Called with submit_ held; `seen` is the generation before the job about to be posted, so a
  // new worker picks that job up however late it starts.
  void grow(std::size_t wanted, std::uint32_t seen) {
    while (workers_.size() < wanted) {
      const auto index = static_cast<std::int64_t>(workers_.size());
      workers_.emplace_back([this, seen, index] { worker_loop(seen, index); });
    }
  }

  // Worker `index` helps with a job only when the job asks for more than `index` helpers: the pool
  // keeps the workers of the largest thread count seen, and a later, smaller count leaves the
  // rest asleep.
  void worker_loop(std::uint32_t seen, std::int64_t index) {
    t_in_parallel = true;
    for (;;) {
      seen = wait_for_change(posted_, seen);
      if (index < helpers_.load(std::memory_order_relaxed)) work_on(seen);
    }
  }

  // Claims and runs chunks of job `gen` until none is left.
  void work_on(std::uint32_t gen) {
    std::uint64_t word = claim_.load(std::memory_order_acquire);
    for (;;) {
      const auto chunks = static_cast<std::int64_t>((word >> 16) & 0xffff);
      const auto next = static_cast<std::int64_t>(word & 0xffff);
      if (static_cast<std::uint32_t>(word >> 32) != gen || next >= chunks) return;
      if (!claim_.compare_exchange_weak(word, word + 1, std::memory_order_acq_rel,
                                        std::memory_order_acquire))
        continue;
      // Holding an unfinished chunk of `gen` keeps the caller waiting, so fn_ and ctx_ are still
      // this job's.
      try {
        fn_(ctx_, next);
      } catch (...) {
        const std::lock_guard<std::mutex> guard(error_mutex_);
        if (!error_) error_ = std::current_exception();
      }
      if (done_.fetch_add(1, std::memory_order_acq_rel) + 1 == static_cast<std::uint32_t>(chunks))
        done_.notify_all();
      word = claim_.load(std::memory_order_acquire);
    }
  }

  std::mutex submit_;  // one job at a time; held by the posting caller until the job ends
  std::vector<std::thread> workers_;
  std::atomic<std::uint32_t> posted_{0};  // generation of the latest job; workers wait on it
  std::atomic<std::uint64_t> claim_{0};
  std::atomic<std::uint32_t> done_{0};    // chunks of the current job that have ended
  std::atomic<std::int64_t> helpers_{0};  // workers the current job asks for
  ChunkFn fn_ = nullptr;
  const void* ctx_ = nullptr;
  std::mutex error_mutex_;
  std::exception_ptr error_;
};

struct ChunkJob {
  std::int64_t n;
  std::int64_t chunks;
  const std::function<void(std::int64_t, std::int64_t, std::int64_t)>* body;
};

void run_chunk(const void* ctx, std::int64_t c) {
  const auto& job = *static_cast<const ChunkJob*>(ctx);
  (*job.body)(c, c * job.n / job.chunks, (c + 1) * job.n / job.chunks);
}

}  // namespace

int kernel_threads() {
  const int set = g_threads.load();
  if (set > 0) return set;
  static const int fallback = default_threads();
  return fallback;
}

void set_kernel_threads(int threads) {
  g_threads.store(std::max(0, threads));
}

bool in_parallel_region() {
  return t_in_parallel;
}

std::int64_t parallel_chunks(std::int64_t n, std::int64_t min_chunk) {
  if (n <= 0) return 0;
  const std::int64_t by_size = std::max<std::int64_t>(1, n / std::max<std::int64_t>(1, min_chunk));
  return std::min<std::int64_t>(kernel_threads(), by_size);
}

void parallel_for(std::int64_t n, std::int64_t min_chunk,
                  const std::function<void(std::int64_t, std::int64_t)>& body) {
  parallel_for_chunks(
      n, min_chunk, [&](std::int64_t, std::int64_t begin, std::int64_t end) { body(begin, end); });
}

void parallel_for_chunks(
    std::int64_t n, std::int64_t min_chunk,
    const std::function<void(std::int64_t, std::int64_t, std::int64_t)>& body) {
  const std::int64_t chunks = parallel_chunks(n, min_chunk);
  if (chunks <= 0) return;
  if (chunks == 1) {
    body(0, 0, n);
    return;
  }
  const ChunkJob job{n, chunks, &body};
  if (t_in_parallel) {
    // Nested: the same chunks, one after another on this thread.
    run_inline(chunks, run_chunk, &job);
    return;
  }
  ThreadPool::instance().run(chunks, chunks - 1, run_chunk, &job);
}

void parallel_tasks(std::int64_t count, const std::function<void(std::int64_t)>& task) {
  if (count <= 0) return;
  if (count == 1) {
    // As parallel_for's single chunk: the task itself may still use the pool.
    task(0);
    return;
  }
  const std::int64_t threads = std::min<std::int64_t>(kernel_threads(), count);
  const ChunkFn run_task = [](const void* ctx, std::int64_t i) {
    (*static_cast<const std::function<void(std::int64_t)>*>(ctx))(i);
  };
  if (threads == 1 || t_in_parallel) {
    run_inline(count, run_task, &task);
    return;
  }
  ThreadPool::instance().run(count, threads - 1, run_task, &task);
}

}  // namespace moetune::kernels::cpu
