// `moetune profile`: micro-benchmarks on this machine written as a cluster profile — GEMM and
// grouped-GEMM efficiency over sizes, streaming memory bandwidth, memory-bound kernel efficiency,
// attention efficiency, and the collectives over message sizes (MPI ranks on this machine, the
// command running itself under mpirun) fitted to the intra-node latency and bandwidth.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <memory>
#include <thread>
#include <vector>

#include "cli/child_process.hpp"
#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "core/error.hpp"
#include "core/presets.hpp"
#include "kernels/cpu/attention.hpp"
#include "kernels/cpu/gemm.hpp"
#include "kernels/cpu/optimizer.hpp"
#include "kernels/cpu/parallel.hpp"
#include "kernels/cpu/rmsnorm.hpp"
#include "simulator/collectives.hpp"
#ifdef MOETUNE_HAVE_MPI
#include "executor/comm/mpi_communicator.hpp"
#endif
#ifdef MOETUNE_HAVE_CUDA
#include "executor/cuda/device_profile.hpp"
#endif

namespace moetune::cli {

namespace {

namespace k = kernels::cpu;
namespace fs = std::filesystem;

struct ProfileOptions {
  std::string backend = "cpu";
  std::string base = "cpu-local";
  std::string out;
  std::vector<std::int64_t> ranks = {2};  // group sizes timed, one mpirun each
  bool skip_collectives = false;
  std::string collectives_worker;  // internal: run the collective timings as an MPI rank
};

using Clock = std::chrono::steady_clock;

// Best time of `body` over repetitions lasting about `budget_s` in all (at least 3).
template <typename F>
double best_time(F&& body, double budget_s = 0.15) {
  body();  // warm-up: first touch, BLAS buffers
  double best = 1e300, total = 0;
  for (int rep = 0; rep < 3 || (total < budget_s && rep < 1000); ++rep) {
    const auto t0 = Clock::now();
    body();
    const double t = std::chrono::duration<double>(Clock::now() - t0).count();
    best = std::min(best, t);
    total += t;
  }
  return best;
}

std::string utc_date() {
  const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d", &tm);
  return buf;
}

std::string host_name() {
  char buf[256] = {};
  ::gethostname(buf, sizeof buf - 1);
  return buf;
}

struct GemmPoint {
  std::int64_t m, n, k;
  double flops_per_s;
};

// Square GEMMs and the expert shape of a small MoE (grouped: one GEMM per expert).
std::vector<GemmPoint> profile_gemm() {
  std::vector<GemmPoint> out;
  for (std::int64_t n : {64, 128, 256, 512, 1024}) {
    std::vector<float> a(n * n, 0.5f), b(n * n, 0.25f), c(n * n, 0.0f);
    const double t = best_time([&] {
      k::gemm<float>(false, false, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    });
    out.push_back({n, n, n, 2.0 * n * n * n / t});
  }
  return out;
}

// 8 experts, 512 routed rows of hidden 128 over them, SwiGLU width 256: the mini model's experts.
double profile_grouped_gemm() {
  const std::int64_t experts = 8, rows = 64, h = 128, f = 256;
  std::vector<float> x(experts * rows * h, 0.5f), w(experts * h * f, 0.1f),
      y(experts * rows * f, 0.0f);
  const double t = best_time([&] {
    for (std::int64_t e = 0; e < experts; ++e) {
      k::gemm<float>(false, false, rows, f, h, 1.0f, x.data() + e * rows * h, h,
                     w.data() + e * h * f, f, 0.0f, y.data() + e * rows * f, f);
    }
  });
  return 2.0 * static_cast<double>(experts * rows * h * f) / t;
}

// STREAM triad a = b + s c over arrays far larger than the caches.
double profile_bandwidth() {
  const std::size_t n = std::size_t{8} << 20;  // 32 MiB per array
  std::vector<float> a(n, 0.0f), b(n, 1.0f), c(n, 2.0f);
  const double t = best_time(
      [&] {
        float* pa = a.data();
        const float* pb = b.data();
        const float* pc = c.data();
        for (std::size_t i = 0; i < n; ++i)
          pa[i] = pb[i] + 0.5f * pc[i];
      },
      0.3);
  return 3.0 * 4.0 * static_cast<double>(n) / t;
}

// The executor's RMSNorm forward on a [4096, 512] activation: bytes read and written per second.
double profile_memory_bound() {
  const std::int64_t rows = 4096, d = 512;
  std::vector<float> in(rows * d, 0.5f), out(rows * d), rstd(rows), w(d, 1.0f);
  const double t = best_time([&] {
    k::rmsnorm_forward<float>(out.data(), rstd.data(), in.data(), w.data(), rows, d, 1e-5f);
  });
  return 2.0 * 4.0 * static_cast<double>(rows * d) / t;
}

// The executor's optimizer phase on 4 Mi fp32 parameters: the global gradient norm, then AdamW.
// Bytes per second as the simulator counts them: master, gradient, m and v read, master, m and v
// written, and the working copy (the fp32 master itself here): 32 bytes per parameter.
double profile_optimizer() {
  const std::int64_t n = std::int64_t{4} << 20;
  std::vector<float> param(n, 0.5f), m(n, 0.0f), v(n, 0.0f), grad(n, 1e-3f);
  const k::AdamWParams hp{1e-3, 0.9, 0.95, 1e-8, 0.1};
  std::int64_t step = 0;
  const double t = best_time([&] {
    const double norm = std::sqrt(k::sum_of_squares<float>(grad.data(), n));
    k::adamw_step<float>(param.data(), m.data(), v.data(), grad.data(), n, hp, ++step,
                         k::clip_scale(norm, 1.0));
  });
  return 32.0 * static_cast<double>(n) / t;
}

// Causal attention forward of the mini model's shape; FLOPs counted as the simulator counts them
// (4 x tokens x q_dim x mean attended keys).
double profile_attention() {
  const std::int64_t b = 1, s = 256, hq = 8, hkv = 2, dh = 16;
  std::vector<float> q(b * s * hq * dh, 0.1f), kk(b * s * hkv * dh, 0.2f),
      v(b * s * hkv * dh, 0.3f), out(b * s * hq * dh), att(b * hq * s * s);
  const double t = best_time([&] {
    k::attention_forward<float>(out.data(), att.data(), q.data(), kk.data(), v.data(), b, s, hq,
                                hkv, dh, 0);
  });
  const double keys = (static_cast<double>(s) + 1.0) / 2.0;
  return 4.0 * static_cast<double>(b * s * hq * dh) * keys / t;
}

// The fixed cost of one kernel call: an 8 x 8 x 8 sgemm and an RMSNorm of one 64-wide row, whose
// arithmetic takes nanoseconds, averaged over many calls.
double profile_kernel_overhead() {
  std::vector<float> a(64, 0.5f), b(64, 0.25f), c(64), rstd(1), w(64, 1.0f);
  constexpr int kCalls = 2000;
  const double t = best_time([&] {
    for (int i = 0; i < kCalls; ++i) {
      k::gemm<float>(false, false, 8, 8, 8, 1.0f, a.data(), 8, b.data(), 8, 0.0f, c.data(), 8);
      k::rmsnorm_forward<float>(c.data(), rstd.data(), a.data(), w.data(), 1, 64, 1e-5f);
    }
  });
  return t / (2.0 * kCalls);
}

// How much `devices` busy cores slow each other: the mini model's grouped expert GEMMs and an
// RMSNorm over [4096 x 512] (compute and memory traffic, as a training step mixes them), run a
// fixed number of times on one thread alone, then on `devices` threads at once. Returns the
// profile's node_contention, (time together / time alone - 1) / (devices - 1), at least 0.
double profile_node_contention(std::int64_t devices) {
  if (devices < 2) return 0.0;
  constexpr int kReps = 40;
  auto work = [] {
    const std::int64_t experts = 8, rows = 64, h = 128, f = 256, norm_rows = 4096, d = 512;
    std::vector<float> x(experts * rows * h, 0.5f), w(experts * h * f, 0.1f),
        y(experts * rows * f, 0.0f), in(norm_rows * d, 0.5f), out(norm_rows * d), rstd(norm_rows),
        g(d, 1.0f);
    const auto t0 = Clock::now();
    for (int rep = 0; rep < kReps; ++rep) {
      for (std::int64_t e = 0; e < experts; ++e) {
        k::gemm<float>(false, false, rows, f, h, 1.0f, x.data() + e * rows * h, h,
                       w.data() + e * h * f, f, 0.0f, y.data() + e * rows * f, f);
      }
      k::rmsnorm_forward<float>(out.data(), rstd.data(), in.data(), g.data(), norm_rows, d, 1e-5f);
    }
    return std::chrono::duration<double>(Clock::now() - t0).count();
  };
  work();  // warm-up: first touch, BLAS buffers
  const double alone = work();
  std::vector<double> together(static_cast<std::size_t>(devices), 0.0);
  {
    std::vector<std::thread> threads;
    for (std::int64_t i = 0; i < devices; ++i)
      threads.emplace_back([&, i] { together[static_cast<std::size_t>(i)] = work(); });
    for (std::thread& t : threads)
      t.join();
  }
  double mean = 0;
  for (double t : together)
    mean += t / static_cast<double>(devices);
  return std::max(0.0, (mean / alone - 1.0) / static_cast<double>(devices - 1));
}

struct CollectivePoint {
  std::int64_t ranks = 2;  // group size
  std::string kind;
  double bytes = 0;  // nccl-tests size convention
  double seconds = 0;
};

const std::vector<std::int64_t> kMessageBytes = {4096, 32768, 262144, 2097152, 16777216};

#ifdef MOETUNE_HAVE_MPI
// One MPI rank of the collective timings; rank 0 writes the results.
void collectives_worker(const std::string& out_file) {
  executor::MpiRuntime mpi(nullptr, nullptr);
  Layout layout;
  layout.hs = mpi.world_size();
  executor::ProcessGroups groups = executor::make_mpi_groups(layout, mpi.world_size());
  executor::Communicator& c = *groups.world;
  const auto n = static_cast<std::int64_t>(c.size());
  Json results = Json::array();
  for (std::int64_t bytes : kMessageBytes) {
    const std::int64_t floats = bytes / 4;
    std::vector<float> send(static_cast<std::size_t>(floats), 1.0f),
        recv(static_cast<std::size_t>(floats * n), 0.0f);
    const std::vector<std::int64_t> counts(static_cast<std::size_t>(n), floats / n);
    auto time = [&](const char* kind, double size, auto&& body) {
      double best = 1e300;
      for (int rep = 0; rep < 12; ++rep) {
        c.barrier();
        const auto t0 = Clock::now();
        body();
        double t = std::chrono::duration<double>(Clock::now() - t0).count();
        c.all_reduce(&t, 1);  // the mean over ranks
        best = std::min(best, t / static_cast<double>(n));
      }
      results.push_back({{"kind", kind}, {"bytes", size}, {"seconds", best}});
    };
    // all-gather: `bytes` is the whole gathered buffer; each rank contributes bytes / n.
    time("all_gather", static_cast<double>(bytes),
         [&] { c.all_gather(send.data(), recv.data(), floats / n); });
    time("reduce_scatter", static_cast<double>(bytes),
         [&] { c.reduce_scatter(send.data(), recv.data(), floats / n); });
    time("all_reduce", static_cast<double>(bytes), [&] { c.all_reduce(send.data(), floats); });
    time("all_to_all", static_cast<double>(bytes),
         [&] { c.all_to_all(send.data(), counts, recv.data(), counts); });
  }
  if (c.rank() == 0) {
    Json j;
    j["ranks"] = n;
    j["results"] = results;
    write_file_atomically(out_file, j.dump() + "\n");
  }
}
#endif

// Runs this command under mpirun with `ranks` ranks and reads rank 0's results.
std::vector<CollectivePoint> profile_collectives(std::int64_t ranks) {
  const fs::path tmp =
      fs::temp_directory_path() / ("moetune-profile-" + std::to_string(::getpid()) + ".json");
  std::vector<std::string> argv = {"mpirun", "-np", std::to_string(ranks), "--oversubscribe"};
  if (::geteuid() == 0) argv.push_back("--allow-run-as-root");
  for (const char* env : {"MOETUNE_NUM_THREADS=1", "OPENBLAS_NUM_THREADS=1"}) {
    argv.push_back("-x");
    argv.push_back(env);
  }
  argv.insert(argv.end(), {self_executable(), "profile", "--collectives-worker", tmp.string()});
  const ChildResult r = run_child(argv, {}, "", 120.0);
  if (r.exit_status != 0 || !fs::exists(tmp)) {
    throw InputError("the collective timings under mpirun failed (exit " +
                     std::to_string(r.exit_status) + (r.timed_out ? ", timed out" : "") +
                     "); run with --skip-collectives to profile only the device");
  }
  const Json j = read_json_file(tmp);
  fs::remove(tmp);
  std::vector<CollectivePoint> out;
  for (const Json& e : j["results"]) {
    out.push_back({ranks, e["kind"].get<std::string>(), e["bytes"].get<double>(),
                   e["seconds"].get<double>()});
  }
  return out;
}

simulator::Collective collective_of(const std::string& kind) {
  if (kind == "all_gather") return simulator::Collective::AllGather;
  if (kind == "reduce_scatter") return simulator::Collective::ReduceScatter;
  if (kind == "all_reduce") return simulator::Collective::AllReduce;
  return simulator::Collective::AllToAll;
}

// The simulator's time for one measured collective on `cluster`: the ranks form one group.
double predicted_collective(const ClusterSpec& cluster, const CollectivePoint& p) {
  const std::int64_t ranks = p.ranks;
  ClusterSpec c = cluster;
  c.nodes = 1;
  c.devices_per_node = ranks;
  const simulator::CollectiveModel model(c);
  Layout l;
  Group g = Group::Hs;
  if (p.kind == "all_to_all") {
    l.ep = ranks;
    g = Group::Ep;
  } else if (p.kind == "all_reduce") {
    l.rep = ranks;
    g = Group::ExpertReplicate;
  } else {
    l.hs = ranks;
  }
  return model.seconds(collective_of(p.kind), Mesh(l, ranks), g, p.bytes);
}

// The simulator's collective times are latency x a + bytes x b / bandwidth: linear in latency and
// in 1 / bandwidth. Least squares on the relative error gives both.
void fit_intra_node(ClusterSpec& cluster, const std::vector<CollectivePoint>& points) {
  ClusterSpec unit_latency = cluster, unit_bandwidth = cluster;
  unit_latency.intra_node.latency_us = 1.0;
  unit_latency.intra_node.bandwidth_GBps = 1e9;  // bytes cost ~nothing
  unit_bandwidth.intra_node.latency_us = 0.0;
  unit_bandwidth.intra_node.bandwidth_GBps = 1.0;
  double s11 = 0, s12 = 0, s22 = 0, r1 = 0, r2 = 0;
  for (const CollectivePoint& p : points) {
    const double a = predicted_collective(unit_latency, p) / p.seconds;
    const double b = predicted_collective(unit_bandwidth, p) / p.seconds;
    s11 += a * a;
    s12 += a * b;
    s22 += b * b;
    r1 += a;
    r2 += b;
  }
  const double det = s11 * s22 - s12 * s12;
  double latency = (r1 * s22 - r2 * s12) / det;
  double inv_bw = (s11 * r2 - s12 * r1) / det;
  if (!(latency > 0)) latency = 0.01;
  if (!(inv_bw > 0)) inv_bw = 1e-3;
  cluster.intra_node.latency_us = latency;
  cluster.intra_node.bandwidth_GBps = 1.0 / inv_bw;
}

// --backend cuda: one GPU measured with the CUDA backend's kernels into the base GPU cluster's
// device profile. Collectives need several GPUs (NCCL) and keep the base profile's figures.
void run_cuda(const ProfileOptions& o) {
#ifndef MOETUNE_HAVE_CUDA
  (void)o;
  throw InputError(
      "--backend cuda: this moetune was built without the CUDA backend (configure with "
      "-DMOETUNE_CUDA=ON where the CUDA toolkit is installed)");
#else
  ClusterSpec cluster = load_cluster(o.base, std::nullopt, std::nullopt);
  if (cluster.device.kind != DeviceKind::Gpu) {
    throw InputError(
        "--backend cuda needs --base a GPU cluster (e.g. p5.48xlarge or dgx-h100) "
        "whose device profile the measurements replace; " +
        o.base + " is a CPU cluster");
  }
  HardwareProfile& d = cluster.device;
  const executor::gpu::DeviceRates r = executor::gpu::measure_device(0);
  const std::string where = "[V] measured by `moetune profile --backend cuda` on " + r.name + " (" +
                            host_name() + ") on " + utc_date();
  std::printf("profiling GPU 0: %s, %.0f GiB (profile device %s, %.0f GiB)\n", r.name.c_str(),
              r.memory_GiB, d.name.c_str(), d.memory_GiB);
  const double peak = d.peak_flops(Precision::Bf16);
  std::printf("\nbf16 GEMM (cuBLASLt), fraction of %.0f TFLOP/s peak:\n", peak / 1e12);
  std::string curve;
  double large = 0;
  for (const executor::gpu::GemmRate& g : r.gemm) {
    std::printf("  %5lld x %5lld x %5lld  %7.1f TFLOP/s  %.2f\n", static_cast<long long>(g.m),
                static_cast<long long>(g.n), static_cast<long long>(g.k), g.flops_per_s / 1e12,
                g.flops_per_s / peak);
    curve +=
        format_text("%.0f:", static_cast<double>(g.m)) + format_text("%.2f ", g.flops_per_s / peak);
    if (g.m >= 2048) large = std::max(large, g.flops_per_s);
  }
  std::printf("  grouped 8 x (%lld x %lld x %lld)  %7.1f TFLOP/s  %.2f\n",
              static_cast<long long>(r.grouped.m), static_cast<long long>(r.grouped.n),
              static_cast<long long>(r.grouped.k), r.grouped.flops_per_s / 1e12,
              r.grouped.flops_per_s / peak);
  d.gemm_efficiency = std::clamp(large / peak, 1e-3, 1.0);
  d.sources["gemm_efficiency"] =
      where + ": best bf16 GEMM from 2048^3 up over the bf16 peak; by size (n:eff) " + curve +
      format_text("; grouped expert GEMM %.2f", r.grouped.flops_per_s / peak);
  const double bandwidth = d.memory_bandwidth_GBps * 1e9;
  d.memory_bound_efficiency = std::clamp(r.rmsnorm_bytes_per_s / bandwidth, 1e-3, 1.0);
  d.sources["memory_bound_efficiency"] =
      where + format_text(
                  ": RMSNorm forward [65536 x 4096] bf16 moves %.0f GB/s over the %.0f GB/s of "
                  "the profile (a 1 GiB device copy: %.0f GB/s)",
                  r.rmsnorm_bytes_per_s / 1e9, d.memory_bandwidth_GBps, r.copy_bytes_per_s / 1e9);
  d.optimizer_efficiency = std::clamp(r.optimizer_bytes_per_s / bandwidth, 1e-3, 1.0);
  d.sources["optimizer_efficiency"] =
      where + format_text(": AdamW over 64 Mi fp32 parameters moves %.0f GB/s",
                          r.optimizer_bytes_per_s / 1e9);
  d.attention_efficiency = std::clamp(r.attention_flops_per_s / peak, 1e-3, 1.0);
  d.sources["attention_efficiency"] =
      where + format_text(
                  ": causal attention forward (seq 4096, 32 heads of 128, batched cuBLAS) at %.0f "
                  "TFLOP/s",
                  r.attention_flops_per_s / 1e12);
  d.kernel_overhead_us = r.kernel_overhead_s * 1e6;
  d.sources["kernel_overhead_us"] =
      where + ": 2000 one-row RMSNorms launched back to back, per launch";
  std::printf("\nmemory: device copy %.0f GB/s; RMSNorm %.0f GB/s (efficiency %.2f of %.0f)\n",
              r.copy_bytes_per_s / 1e9, r.rmsnorm_bytes_per_s / 1e9, d.memory_bound_efficiency,
              d.memory_bandwidth_GBps);
  std::printf("optimizer: %.0f GB/s (efficiency %.2f)\n", r.optimizer_bytes_per_s / 1e9,
              d.optimizer_efficiency);
  std::printf("attention forward: %.0f TFLOP/s (efficiency %.2f)\n", r.attention_flops_per_s / 1e12,
              d.attention_efficiency);
  std::printf("kernel overhead: %.2f us per launch\n", d.kernel_overhead_us);
  std::printf(
      "collectives: not measured (NCCL timings need several GPUs); the base profile's intra- and "
      "inter-node figures are kept\n");
  cluster.calibration.reset();
  if (!o.out.empty()) {
    write_file_atomically(o.out, to_json(cluster).dump(2) + "\n");
    std::printf("\nwrote %s (use it with --cluster %s, or as calibrate --base)\n", o.out.c_str(),
                o.out.c_str());
  }
#endif
}

void run(const ProfileOptions& o) {
#ifdef MOETUNE_HAVE_MPI
  if (!o.collectives_worker.empty()) {
    collectives_worker(o.collectives_worker);
    return;
  }
#endif
  if (o.backend == "cuda") {
    run_cuda(o);
    return;
  }
  ClusterSpec cluster = load_cluster(o.base, std::nullopt, std::nullopt);
  if (cluster.device.kind != DeviceKind::Cpu) {
    throw InputError("--base " + o.base +
                     " describes a GPU; --backend cpu profiles a CPU cluster "
                     "such as cpu-local");
  }
  const std::string where =
      "[V] measured by `moetune profile` on " + host_name() + " on " + utc_date() + ", one thread";
  // One device is one core: one kernel thread, single-threaded BLAS.
  k::set_kernel_threads(1);
  k::SingleThreadedBlas single_blas;
  HardwareProfile& d = cluster.device;
  std::printf("profiling %s (%s), one core per device\n", cluster.name.c_str(), d.name.c_str());

  const std::vector<GemmPoint> gemm = profile_gemm();
  double best_gemm = 0;
  for (const GemmPoint& g : gemm)
    best_gemm = std::max(best_gemm, g.flops_per_s);
  const double peak = d.peak_flops(Precision::Fp32);
  if (best_gemm > peak) {
    // The theoretical peak was an estimate: a measured rate above it proves it low.
    d.peak_tflops_fp32 = d.peak_tflops_bf16 = best_gemm / 1e12;
    d.sources["peak_tflops_fp32"] = where + ": raised to the best sgemm rate, above the estimate";
  }
  const double peak_now = d.peak_flops(Precision::Fp32);
  std::printf("\nsgemm (OpenBLAS), fraction of %.1f GFLOP/s peak:\n", peak_now / 1e9);
  std::string curve;
  for (const GemmPoint& g : gemm) {
    std::printf("  %5lld x %5lld x %5lld  %7.1f GFLOP/s  %.2f\n", static_cast<long long>(g.m),
                static_cast<long long>(g.n), static_cast<long long>(g.k), g.flops_per_s / 1e9,
                g.flops_per_s / peak_now);
    curve += format_text("%.0f:", static_cast<double>(g.m)) +
             format_text("%.2f ", g.flops_per_s / peak_now);
  }
  const double grouped = profile_grouped_gemm();
  std::printf("  grouped 8 x (64 x 256 x 128)  %7.1f GFLOP/s  %.2f\n", grouped / 1e9,
              grouped / peak_now);
  // Large GEMMs: the best of the sizes from 256 up (one slow size on a busy machine is noise).
  double large = 0;
  for (const GemmPoint& g : gemm)
    if (g.m >= 256) large = std::max(large, g.flops_per_s);
  d.gemm_efficiency = std::clamp(large / peak_now, 1e-3, 1.0);
  d.sources["gemm_efficiency"] =
      where + ": best sgemm from 256^3 up over peak; by size (n:eff) " + curve +
      format_text(
          "; grouped expert GEMM 8x(64x256x128) %.2f. Small GEMMs reach less; calibration fits "
          "the model's mix.",
          grouped / peak_now);

  const double bandwidth = profile_bandwidth();
  d.memory_bandwidth_GBps = bandwidth / 1e9;
  d.sources["memory_bandwidth_GBps"] = where + ": STREAM-style triad over 3 x 32 MiB arrays";
  const double norm = profile_memory_bound();
  d.memory_bound_efficiency = std::clamp(norm / bandwidth, 1e-3, 1.0);
  d.sources["memory_bound_efficiency"] =
      where +
      format_text(": RMSNorm forward [4096 x 512] moves %.1f GB/s, over the triad's", norm / 1e9);
  std::printf("\nmemory: triad %.1f GB/s; RMSNorm %.1f GB/s (efficiency %.2f)\n", bandwidth / 1e9,
              norm / 1e9, d.memory_bound_efficiency);

  const double optimizer = profile_optimizer();
  d.optimizer_efficiency = std::clamp(optimizer / bandwidth, 1e-3, 1.0);
  d.sources["optimizer_efficiency"] =
      where + format_text(
                  ": gradient norm and AdamW over 4 Mi fp32 parameters move %.1f GB/s (32 bytes "
                  "per parameter), over the triad's",
                  optimizer / 1e9);
  std::printf("optimizer: %.1f GB/s (efficiency %.2f)\n", optimizer / 1e9, d.optimizer_efficiency);

  const double attention = profile_attention();
  d.attention_efficiency = std::clamp(attention / peak_now, 1e-3, 1.0);
  d.sources["attention_efficiency"] =
      where + format_text(": causal attention forward (s 256, 8 heads of 16) at %.1f GFLOP/s",
                          attention / 1e9);
  std::printf("attention forward: %.1f GFLOP/s (efficiency %.2f)\n", attention / 1e9,
              d.attention_efficiency);

  const double overhead = profile_kernel_overhead();
  d.kernel_overhead_us = overhead * 1e6;
  d.sources["kernel_overhead_us"] =
      where + ": mean time of an 8x8x8 sgemm and a one-row RMSNorm, whose arithmetic is negligible";
  std::printf("kernel overhead: %.2f us per call\n", d.kernel_overhead_us);

  d.node_contention = profile_node_contention(cluster.devices_per_node);
  d.sources["node_contention"] =
      where + format_text(
                  " alone, then %.0f threads at once: grouped expert GEMMs and an RMSNorm; "
                  "(time together / alone - 1) / (threads - 1)",
                  static_cast<double>(cluster.devices_per_node));
  std::printf(
      "node contention: %.2f (%lld busy cores each at %.0f%% of one alone)\n", d.node_contention,
      static_cast<long long>(cluster.devices_per_node),
      100.0 / (1.0 + d.node_contention * static_cast<double>(cluster.devices_per_node - 1)));

  if (!o.skip_collectives) {
    std::vector<CollectivePoint> points;
    std::string sizes;
    for (std::int64_t n : o.ranks) {
      const std::vector<CollectivePoint> some = profile_collectives(n);
      points.insert(points.end(), some.begin(), some.end());
      sizes += (sizes.empty() ? "" : ", ") + std::to_string(n);
    }
    fit_intra_node(cluster, points);
    std::printf("\ncollectives over MPI ranks of this machine (size: nccl-tests convention):\n");
    std::printf("  %5s %-15s %10s %12s %12s\n", "ranks", "collective", "bytes", "measured us",
                "fitted us");
    for (const CollectivePoint& p : points) {
      std::printf("  %5lld %-15s %10.0f %12.1f %12.1f\n", static_cast<long long>(p.ranks),
                  p.kind.c_str(), p.bytes, p.seconds * 1e6, predicted_collective(cluster, p) * 1e6);
    }
    std::printf("fitted intra-node latency %.2f us, bandwidth %.2f GB/s\n",
                cluster.intra_node.latency_us, cluster.intra_node.bandwidth_GBps);
    const std::string how = where +
                            ": fitted to all-gather, reduce-scatter, all-reduce and "
                            "all-to-all over " +
                            sizes + " MPI ranks, 4 KiB to 16 MiB";
    cluster.sources["intra_node.latency_us"] = how;
    cluster.sources["intra_node.bandwidth_GBps"] = how;
  }
  cluster.calibration.reset();
  if (!o.out.empty()) {
    write_file_atomically(o.out, to_json(cluster).dump(2) + "\n");
    std::printf("\nwrote %s (use it with --cluster %s, or as calibrate --base)\n", o.out.c_str(),
                o.out.c_str());
  }
}

}  // namespace

void register_profile(CLI::App& app) {
  auto o = std::make_shared<ProfileOptions>();
  CLI::App* cmd = app.add_subcommand(
      "profile",
      "measure this machine (GEMM, memory, attention, collectives) as a cluster profile");
  cmd->add_option("--backend", o->backend, "cpu or cuda")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  cmd->add_option("--base", o->base, "cluster profile whose figures are replaced")
      ->capture_default_str();
  cmd->add_option("--out", o->out, "write the measured cluster profile (JSON) here");
  cmd->add_option("--ranks", o->ranks,
                  "group sizes for the collective timings, e.g. 2,4 (ranks beyond the cores are "
                  "oversubscribed)")
      ->delimiter(',')
      ->check(CLI::Range(std::int64_t{2}, std::int64_t{64}))
      ->capture_default_str();
  cmd->add_flag("--skip-collectives", o->skip_collectives, "do not run the MPI timings");
  cmd->add_option("--collectives-worker", o->collectives_worker)->group("");
  cmd->callback([o] { run(*o); });
}

}  // namespace moetune::cli
