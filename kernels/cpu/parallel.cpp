// parallel_for on std::thread.
#include "kernels/cpu/parallel.hpp"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace moetune::kernels::cpu {

namespace {

std::atomic<int> g_threads{0};
// True on a thread that is already running a parallel_for body: nested loops then run inline
// instead of multiplying threads.
thread_local bool t_in_parallel = false;

struct ParallelScope {
  bool saved = t_in_parallel;
  ParallelScope() { t_in_parallel = true; }
  ~ParallelScope() { t_in_parallel = saved; }
};

int default_threads() {
  if (const char* env = std::getenv("MOETUNE_NUM_THREADS"); env != nullptr) {
    const int n = std::atoi(env);
    if (n > 0) return n;
  }
  return std::max(1u, std::thread::hardware_concurrency());
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
  const std::int64_t chunks =
      t_in_parallel ? std::min<std::int64_t>(1, n) : parallel_chunks(n, min_chunk);
  if (chunks <= 0) return;
  if (chunks == 1) {
    body(0, 0, n);
    return;
  }
  std::exception_ptr error;
  std::mutex error_mutex;
  auto run = [&](std::int64_t c) {
    const ParallelScope scope;
    try {
      body(c, c * n / chunks, (c + 1) * n / chunks);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
    }
  };
  std::vector<std::thread> workers;
  workers.reserve(static_cast<std::size_t>(chunks - 1));
  for (std::int64_t c = 1; c < chunks; ++c)
    workers.emplace_back(run, c);
  run(0);
  for (auto& w : workers)
    w.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace moetune::kernels::cpu
