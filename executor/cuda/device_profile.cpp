// GPU micro-benchmarks: each op timed with CUDA events, best of several repetitions after a
// warm-up, on buffers large enough to leave the caches.
#include "executor/cuda/device_profile.hpp"

#include "executor/cuda/device.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <functional>

#include "core/error.hpp"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/gemm.cuh"
#include "kernels/cuda/optimizer.cuh"
#include "kernels/cuda/rmsnorm.cuh"

namespace moetune::executor::gpu {

namespace {

namespace kc = moetune::kernels::cuda;
using kc::bf16;

// A device buffer of n elements, freed on scope exit.
template <typename T>
class Buffer {
 public:
  explicit Buffer(std::int64_t n) : n_(n) {
    CUDA_CHECK(cudaMalloc(&ptr_, static_cast<std::size_t>(n) * sizeof(T)));
    CUDA_CHECK(cudaMemset(ptr_, 0, static_cast<std::size_t>(n) * sizeof(T)));
  }
  ~Buffer() { cudaFree(ptr_); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  T* get() const { return static_cast<T*>(ptr_); }
  std::int64_t size() const { return n_; }

 private:
  void* ptr_ = nullptr;
  std::int64_t n_ = 0;
};

// Fills a bf16 buffer with one small value: every byte 0x3C makes each element 0x3C3C, about
// 0.0098 (finite data of one value times the same as any other and keeps runs deterministic).
void fill(const Buffer<bf16>& b, cudaStream_t stream) {
  CUDA_CHECK(
      cudaMemsetAsync(b.get(), 0x3C, static_cast<std::size_t>(b.size()) * sizeof(bf16), stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
}

// Best seconds of `body` (work enqueued on `stream`) over `reps` timed runs after one warm-up.
double best_seconds(cudaStream_t stream, const std::function<void()>& body, int reps = 10) {
  cudaEvent_t start = nullptr, stop = nullptr;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));
  body();
  CUDA_CHECK(cudaStreamSynchronize(stream));
  double best = 1e300;
  for (int r = 0; r < reps; ++r) {
    CUDA_CHECK(cudaEventRecord(start, stream));
    body();
    CUDA_CHECK(cudaEventRecord(stop, stream));
    CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    best = std::min(best, static_cast<double>(ms) * 1e-3);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return best;
}

}  // namespace

DeviceRates measure_device(int device) {
  require_gpu(device);
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  DeviceRates out;
  out.name = prop.name;
  out.memory_GiB = static_cast<double>(prop.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0);
  cudaStream_t stream = nullptr;
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  kc::Blas blas(stream);

  // Square GEMMs from 512 to 8192, and one expert-shaped grouped call.
  for (std::int64_t n : {512, 1024, 2048, 4096, 8192}) {
    Buffer<bf16> a(n * n), b(n * n), c(n * n);
    fill(a, stream);
    fill(b, stream);
    const double t = best_seconds(stream, [&] {
      blas.gemm(false, false, n, n, n, 1.0f, a.get(), n, b.get(), n, 0.0f, c.get(), kc::DType::BF16,
                n);
    });
    out.gemm.push_back({n, n, n, 2.0 * static_cast<double>(n * n * n) / t});
  }
  {
    // 8 local experts of a Mixtral-like layer: 2048 rows each of hidden 4096 into w1|w3 (2 x
    // 14336).
    const std::int64_t experts = 8, rows = 2048, h = 4096, f2 = 2 * 14336;
    Buffer<bf16> x(experts * rows * h), w(experts * h * f2), y(experts * rows * f2);
    fill(x, stream);
    fill(w, stream);
    kc::GroupedGemm g;
    g.lda = h;
    g.ldb = f2;
    g.ldc = f2;
    for (std::int64_t e = 0; e < experts; ++e) {
      g.m.push_back(rows);
      g.n.push_back(f2);
      g.k.push_back(h);
      g.a.push_back(x.get() + e * rows * h);
      g.b.push_back(w.get() + e * h * f2);
      g.c.push_back(y.get() + e * rows * f2);
    }
    const double t = best_seconds(
        stream, [&] { blas.gemm_grouped(g); }, 5);
    out.grouped = {rows, f2, h, 2.0 * static_cast<double>(experts * rows * f2 * h) / t};
  }

  // Memory: a 1 GiB device-to-device copy, RMSNorm over [65536, 4096] bf16, AdamW over 64 Mi
  // parameters.
  {
    const std::int64_t n = std::int64_t{1} << 29;  // bf16 elements: 1 GiB
    Buffer<bf16> src(n), dst(n);
    const double t = best_seconds(stream, [&] {
      CUDA_CHECK(cudaMemcpyAsync(dst.get(), src.get(), static_cast<std::size_t>(n) * 2,
                                 cudaMemcpyDeviceToDevice, stream));
    });
    out.copy_bytes_per_s = 2.0 * 2.0 * static_cast<double>(n) / t;
  }
  {
    const std::int64_t rows = 65536, d = 4096;
    Buffer<bf16> in(rows * d), o(rows * d), wt(d);
    Buffer<float> rstd(rows);
    fill(in, stream);
    fill(wt, stream);
    const double t = best_seconds(stream, [&] {
      kc::rmsnorm_forward(o.get(), rstd.get(), in.get(), wt.get(), rows, d, 1e-5, stream);
    });
    out.rmsnorm_bytes_per_s = 2.0 * 2.0 * static_cast<double>(rows * d) / t;
  }
  {
    const std::int64_t n = std::int64_t{1} << 26;
    Buffer<float> p(n), m(n), v(n), g(n);
    Buffer<bf16> working(n);
    const kc::AdamWParams hp{1e-4, 0.9, 0.95, 1e-8, 0.1};
    const double t = best_seconds(
        stream,
        [&] {
          kc::adamw_step(p.get(), m.get(), v.get(), g.get(), working.get(), n, hp, 1, 1.0, stream);
        },
        5);
    out.optimizer_bytes_per_s = (7.0 * 4.0 + 2.0) * static_cast<double>(n) / t;
  }

  // The model's attention forward: batch 1, seq 4096, 32 query and 8 KV heads of 128 (Mixtral).
  {
    const std::int64_t b = 1, s = 4096, hq = 32, hkv = 8, dh = 128;
    Buffer<bf16> q(b * s * hq * dh), k(b * s * hkv * dh), v(b * s * hkv * dh), o(b * s * hq * dh),
        probs(b * hq * s * s);
    Buffer<unsigned char> scratch(
        static_cast<std::int64_t>(kc::attention_scratch_bytes(b, s, hq, dh)));
    fill(q, stream);
    fill(k, stream);
    fill(v, stream);
    const double t = best_seconds(
        stream,
        [&] {
          kc::attention_forward(blas, o.get(), probs.get(), q.get(), k.get(), v.get(), b, s, hq,
                                hkv, dh, 0, scratch.get());
        },
        5);
    // 4 x tokens x q_dim x mean attended keys, as the simulator counts causal attention.
    const double keys = (static_cast<double>(s) + 1.0) / 2.0;
    out.attention_flops_per_s = 4.0 * static_cast<double>(b * s * hq * dh) * keys / t;
  }

  // Kernel overhead: 2000 RMSNorms of one 64-wide row launched back to back, timed on the host
  // (launch cost included), per launch.
  {
    Buffer<bf16> in(64), o(64), wt(64);
    Buffer<float> rstd(1);
    constexpr int kLaunches = 2000;
    const double t = best_seconds(
        stream,
        [&] {
          for (int i = 0; i < kLaunches; ++i)
            kc::rmsnorm_forward(o.get(), rstd.get(), in.get(), wt.get(), 1, 64, 1e-5, stream);
        },
        3);
    out.kernel_overhead_s = t / kLaunches;
  }
  CUDA_CHECK(cudaStreamSynchronize(stream));
  cudaStreamDestroy(stream);
  return out;
}

}  // namespace moetune::executor::gpu
