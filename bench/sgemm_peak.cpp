// bench/sgemm_peak: this machine's fp32 GEMM rate, the denominator of bench/train_cpu_compare.py's
// "fraction of sgemm peak". A large square sgemm (default 2048^3) through the same OpenBLAS the
// CPU backend links, on T threads in two ways: OpenBLAS's own threads (cblas_sgemm after
// openblas_set_num_threads(T)) and moetune's gemm() (OpenBLAS single-threaded, split over the
// kernel thread pool). Each way runs `--reps` times; the best run of the better way is the peak, so
// a noisy machine can only lower the figure, never raise it. Prints one JSON line.
//
// Usage: sgemm_peak [--threads T] [--n N] [--reps R]
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "kernels/cpu/gemm.hpp"
#include "kernels/cpu/parallel.hpp"

namespace {

// Best GFLOP/s over `reps` runs of `multiply` (one n^3 product each), after one warm-up run.
template <typename F>
double best_gflops(std::int64_t n, int reps, F multiply) {
  multiply();
  double best = 0;
  for (int r = 0; r < reps; ++r) {
    const auto start = std::chrono::steady_clock::now();
    multiply();
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best = std::max(best, 2.0 * double(n) * double(n) * double(n) / s / 1e9);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  namespace k = moetune::kernels::cpu;
  int threads = k::kernel_threads();
  std::int64_t n = 2048;
  int reps = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const char* value = argv[i + 1];
    if (flag == "--threads") {
      threads = std::atoi(value);
    } else if (flag == "--n") {
      n = std::atoll(value);
    } else if (flag == "--reps") {
      reps = std::atoi(value);
    } else {
      std::fprintf(stderr, "sgemm_peak: unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  if (threads < 1 || n < 1 || reps < 1) {
    std::fprintf(stderr, "sgemm_peak: --threads, --n and --reps must be >= 1\n");
    return 2;
  }
  const auto size = static_cast<std::size_t>(n * n);
  std::vector<float> a(size), b(size), c(size);
  for (std::size_t i = 0; i < size; ++i) {
    a[i] = float(i % 7) * 0.25f - 0.75f;
    b[i] = float(i % 5) * 0.5f - 1.0f;
  }
  const int ni = static_cast<int>(n);
  // OpenBLAS's threads first: moetune's gemm() pins OpenBLAS to one thread on its first call.
  openblas_set_num_threads(threads);
  const double openblas = best_gflops(n, reps, [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, ni, ni, ni, 1.0f, a.data(), ni, b.data(),
                ni, 0.0f, c.data(), ni);
  });
  k::set_kernel_threads(threads);
  const double pool = best_gflops(n, reps, [&] {
    k::gemm<float>(false, false, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
  });
  std::printf(
      "{\"bench\": \"sgemm_peak\", \"threads\": %d, \"n\": %lld, \"openblas_threads_gflops\": "
      "%.1f, "
      "\"moetune_pool_gflops\": %.1f, \"peak_gflops\": %.1f}\n",
      threads, static_cast<long long>(n), openblas, pool, std::max(openblas, pool));
  return 0;
}
