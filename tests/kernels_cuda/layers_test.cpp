// CUDA ops of the dense layers against their kernels/cpu twins: casts, RMSNorm, RoPE, softmax,
// embedding, cross-entropy, AdamW and the grad-norm sum, and the cuBLASLt GEMM wrapper.
#include <cstdint>
#include <random>
#include <vector>

#include "kernels/cpu/cross_entropy.hpp"
#include "kernels/cpu/embedding.hpp"
#include "kernels/cpu/gemm.hpp"
#include "kernels/cpu/optimizer.hpp"
#include "kernels/cpu/rmsnorm.hpp"
#include "kernels/cpu/rope.hpp"
#include "kernels/cpu/softmax.hpp"
#include "kernels/cuda/casts.cuh"
#include "kernels/cuda/cross_entropy.cuh"
#include "kernels/cuda/embedding.cuh"
#include "kernels/cuda/gemm.cuh"
#include "kernels/cuda/optimizer.cuh"
#include "kernels/cuda/rmsnorm.cuh"
#include "kernels/cuda/rope.cuh"
#include "kernels/cuda/softmax.cuh"
#include "support.hpp"

namespace {

namespace cpu = moetune::kernels::cpu;
namespace gpu = moetune::kernels::cuda;
using namespace moetune::kernels::cuda_test;

TEST_CASE("bf16 casts round exactly as the CPU casts", "[cuda][casts]") {
  std::mt19937_64 rng(1);
  Vec x = random_values(rng, 4099, -1e3, 1e3);
  x[0] = 0.0;
  x[1] = -0.0;
  x[2] = 1e-40;  // subnormal
  x[3] = 3.0e38;
  const std::vector<float> xf = to_float(x);
  DeviceBuffer<float> in(x.size()), back(x.size());
  DeviceBuffer<bf16> out(x.size());
  in.upload(xf);
  gpu::cast_float_to_bf16(out.get(), in.get(), std::int64_t(x.size()), nullptr);
  gpu::cast_bf16_to_float(back.get(), out.get(), std::int64_t(x.size()), nullptr);
  const std::vector<bf16> got = out.download();
  const std::vector<float> round_trip = back.download();
  // Round to nearest even on both sides: bit-identical.
  for (std::size_t i = 0; i < x.size(); i++) {
    const std::uint16_t bits = __nv_bfloat16_raw(got[i]).x;
    REQUIRE(bits == cpu::bf16_from_float(xf[i]));
    REQUIRE(round_trip[i] == cpu::float_from_bf16(bits));
  }
}

TEST_CASE("add and accumulate helpers", "[cuda][casts]") {
  std::mt19937_64 rng(2);
  const std::size_t n = 1000;
  const Vec a = random_bf16_values(rng, n), b = random_bf16_values(rng, n);
  const Vec acc0 = random_values(rng, n);
  DeviceBuffer<bf16> da(n), db(n);
  DeviceBuffer<float> acc(n);
  upload_bf16(da, a);
  upload_bf16(db, b);
  upload_float(acc, acc0);
  gpu::accumulate_bf16(acc.get(), db.get(), std::int64_t(n), nullptr);
  gpu::add_bf16(da.get(), da.get(), db.get(), std::int64_t(n), nullptr);  // in place
  Vec sum(n), acc_ref(n);
  for (std::size_t i = 0; i < n; i++) {
    sum[i] = a[i] + b[i];
    acc_ref[i] = acc0[i] + b[i];
  }
  CHECK(normalized_error(download_bf16(da), sum) < kOneRounding);
  CHECK(normalized_error(download_float(acc), acc_ref) < 1e-6);  // one fp32 add
}

TEST_CASE("RMSNorm forward and backward match the CPU twin", "[cuda][rmsnorm]") {
  std::mt19937_64 rng(3);
  for (const auto& [n, d] : {std::pair<std::int64_t, std::int64_t>{37, 36}, {300, 1024}}) {
    INFO("n=" << n << " d=" << d);
    const auto nd = static_cast<std::size_t>(n * d);
    const Vec x = random_bf16_values(rng, nd, -2, 2),
              w = random_bf16_values(rng, static_cast<std::size_t>(d));
    const Vec dy = random_bf16_values(rng, nd);
    Vec out(nd), rstd(static_cast<std::size_t>(n)), din(nd), dw(static_cast<std::size_t>(d), 0.0);
    cpu::rmsnorm_forward<double>(out.data(), rstd.data(), x.data(), w.data(), n, d, 1e-5);
    cpu::rmsnorm_backward<double>(din.data(), dw.data(), dy.data(), x.data(), w.data(), rstd.data(),
                                  n, d);
    DeviceBuffer<bf16> gx(nd), gw(static_cast<std::size_t>(d)), gout(nd), gdy(nd), gdin(nd);
    DeviceBuffer<float> grstd(static_cast<std::size_t>(n)), gdw(static_cast<std::size_t>(d));
    upload_bf16(gx, x);
    upload_bf16(gw, w);
    upload_bf16(gdy, dy);
    gdw.fill_zero();
    gpu::rmsnorm_forward(gout.get(), grstd.get(), gx.get(), gw.get(), n, d, 1e-5, nullptr);
    gpu::rmsnorm_backward(gdin.get(), gdw.get(), gdy.get(), gx.get(), gw.get(), grstd.get(), n, d,
                          nullptr);
    // Two bf16 roundings in the forward (HF rounds the normalised x before the weight).
    CHECK(normalized_error(download_bf16(gout), out) < 2 * kOneRounding);
    CHECK(normalized_error(download_float(grstd), rstd) < 1e-5);  // fp32 sum of D squares
    CHECK(normalized_error(download_bf16(gdin), din) < kOneRounding);
    // fp32 sums over n rows of exact bf16 products times an fp32 rstd.
    CHECK(normalized_error(download_float(gdw), dw) < kFp32);
  }
}

TEST_CASE("RoPE forward and backward match the CPU twin", "[cuda][rope]") {
  std::mt19937_64 rng(4);
  const std::int64_t b = 2, s = 33, h = 3, dh = 6, positions = 64, start = 5;
  const auto n = static_cast<std::size_t>(b * s * h * dh);
  const Vec x = random_bf16_values(rng, n);
  Vec cos_t(static_cast<std::size_t>(positions * dh / 2)), sin_t(cos_t.size()), y(n), dx(n);
  cpu::rope_table<double>(cos_t.data(), sin_t.data(), positions, dh, 10000.0);
  cpu::rope_forward<double>(y.data(), x.data(), cos_t.data(), sin_t.data(), positions, nullptr,
                            start, b, s, h, dh);
  cpu::rope_backward<double>(dx.data(), x.data(), cos_t.data(), sin_t.data(), positions, nullptr,
                             start, b, s, h, dh);
  DeviceBuffer<float> gcos(cos_t.size()), gsin(sin_t.size());
  DeviceBuffer<bf16> gx(n), gy(n), gdx(n);
  upload_bf16(gx, x);
  gpu::rope_table(gcos.get(), gsin.get(), positions, dh, 10000.0, nullptr);
  CHECK(normalized_error(download_float(gcos), cos_t) < 1e-6);  // double angles, fp32 storage
  CHECK(normalized_error(download_float(gsin), sin_t) < 1e-6);
  gpu::rope_forward(gy.get(), gx.get(), gcos.get(), gsin.get(), positions, start, b, s, h, dh,
                    nullptr);
  gpu::rope_backward(gdx.get(), gx.get(), gcos.get(), gsin.get(), positions, start, b, s, h, dh,
                     nullptr);
  CHECK(normalized_error(download_bf16(gy), y) < kOneRounding);
  CHECK(normalized_error(download_bf16(gdx), dx) < kOneRounding);
  // In place gives the same.
  gpu::rope_forward(gx.get(), gx.get(), gcos.get(), gsin.get(), positions, start, b, s, h, dh,
                    nullptr);
  CHECK(normalized_error(download_bf16(gx), y) < kOneRounding);
  CHECK_THROWS(gpu::rope_forward(gy.get(), gx.get(), gcos.get(), gsin.get(), positions, 40, b, s, h,
                                 dh, nullptr));  // positions 40..72 exceed the table of 64
}

TEST_CASE("softmax forward and backward match the CPU twin", "[cuda][softmax]") {
  std::mt19937_64 rng(5);
  const std::int64_t n = 77, c = 45;
  const auto nc = static_cast<std::size_t>(n * c);
  const Vec x = random_values(rng, nc, -5, 5), dy = random_values(rng, nc);
  Vec p(nc), dx(nc);
  cpu::softmax_forward<double>(p.data(), x.data(), n, c);
  cpu::softmax_backward<double>(dx.data(), dy.data(), p.data(), n, c);
  DeviceBuffer<float> gx(nc), gp(nc), gdy(nc), gdx(nc);
  upload_float(gx, x);
  upload_float(gdy, dy);
  gpu::softmax_forward(gp.get(), gx.get(), n, c, nullptr);
  gpu::softmax_backward(gdx.get(), gdy.get(), gp.get(), n, c, nullptr);
  CHECK(normalized_error(download_float(gp), p) < 1e-5);  // fp32 expf and sums
  CHECK(normalized_error(download_float(gdx), dx) < 1e-5);
}

TEST_CASE("embedding gather and scatter-add match the CPU twin", "[cuda][embedding]") {
  std::mt19937_64 rng(6);
  const std::int64_t n = 500, v = 61, d = 36;
  const Vec table = random_bf16_values(rng, static_cast<std::size_t>(v * d));
  const Vec dy = random_bf16_values(rng, static_cast<std::size_t>(n * d));
  std::vector<std::int32_t> tokens(static_cast<std::size_t>(n));
  std::uniform_int_distribution<std::int32_t> pick(0, std::int32_t(v - 1));
  for (auto& t : tokens)
    t = pick(rng);
  Vec out(static_cast<std::size_t>(n * d)), dtable(static_cast<std::size_t>(v * d), 0.0);
  cpu::embedding_forward<double>(out.data(), table.data(), tokens.data(), n, v, d);
  cpu::embedding_backward<double>(dtable.data(), dy.data(), tokens.data(), n, v, d);
  DeviceBuffer<bf16> gtable(table.size()), gout(out.size()), gdy(dy.size());
  DeviceBuffer<float> gdtable(dtable.size());
  DeviceBuffer<std::int32_t> gtok(tokens.size());
  upload_bf16(gtable, table);
  upload_bf16(gdy, dy);
  gtok.upload(tokens);
  gdtable.fill_zero();
  gpu::embedding_forward(gout.get(), gtable.get(), gtok.get(), n, v, d, nullptr);
  gpu::embedding_backward(gdtable.get(), gdy.get(), gtok.get(), n, v, d, nullptr);
  CHECK(download_bf16(gout) == out);                                // a copy
  CHECK(normalized_error(download_float(gdtable), dtable) < 1e-6);  // fp32 sums of ~8 values
}

TEST_CASE("fused cross-entropy matches the CPU forward and backward", "[cuda][cross_entropy]") {
  std::mt19937_64 rng(7);
  const std::int64_t n = 64, v = 1000;
  const Vec logits = random_bf16_values(rng, static_cast<std::size_t>(n * v), -4, 4);
  std::vector<std::int32_t> targets(static_cast<std::size_t>(n));
  std::uniform_int_distribution<std::int32_t> pick(0, std::int32_t(v - 1));
  for (auto& t : targets)
    t = pick(rng);
  targets[3] = cpu::kIgnoreIndex;
  targets[40] = cpu::kIgnoreIndex;
  Vec losses(static_cast<std::size_t>(n)), dlogits(logits.size());
  const double mean =
      cpu::cross_entropy_forward<double>(losses.data(), logits.data(), targets.data(), n, v);
  cpu::cross_entropy_backward<double>(dlogits.data(), logits.data(), targets.data(), n, v, 1.0);
  const auto count = cpu::count_targets(targets.data(), n);
  DeviceBuffer<bf16> glogits(logits.size());
  DeviceBuffer<float> glosses(losses.size());
  DeviceBuffer<std::int32_t> gtargets(targets.size());
  upload_bf16(glogits, logits);
  gtargets.upload(targets);
  // In place, as the model runs it.
  gpu::cross_entropy_fused(glosses.get(), glogits.get(), glogits.get(), gtargets.get(), n, v,
                           float(1.0 / double(count)), nullptr);
  const Vec got_losses = download_float(glosses);
  CHECK(normalized_error(got_losses, losses) < 1e-5);  // fp32 log-sum-exp of exact inputs
  double got_mean = 0;
  for (double l : got_losses)
    got_mean += l;
  CHECK(std::abs(got_mean / double(count) - mean) / mean < 1e-5);
  CHECK(normalized_error(download_bf16(glogits), dlogits) < kOneRounding);
  CHECK(got_losses[3] == 0.0);
}

TEST_CASE("AdamW step and the grad-norm sum match the CPU twin", "[cuda][optimizer]") {
  std::mt19937_64 rng(8);
  const std::int64_t n = 100003;
  const Vec p0 = random_values(rng, static_cast<std::size_t>(n)),
            g = random_values(rng, static_cast<std::size_t>(n), -1e-2, 1e-2);
  Vec m0 = random_values(rng, static_cast<std::size_t>(n), -1e-3, 1e-3),
      v0(static_cast<std::size_t>(n));
  for (auto& x : v0)
    x = double(float(std::abs(std::uniform_real_distribution<double>(0, 1e-5)(rng))));
  const cpu::AdamWParams hp{3e-4, 0.9, 0.95, 1e-8, 0.1};
  std::vector<float> p = to_float(p0), m = to_float(m0), v = to_float(v0), gf = to_float(g);
  cpu::adamw_step<float>(p.data(), m.data(), v.data(), gf.data(), n, hp, 7, 0.5);
  const double sum_sq = cpu::sum_of_squares<float>(gf.data(), n);
  DeviceBuffer<float> gp(static_cast<std::size_t>(n)), gm(static_cast<std::size_t>(n)),
      gv(static_cast<std::size_t>(n)), gg(static_cast<std::size_t>(n));
  DeviceBuffer<bf16> working(static_cast<std::size_t>(n));
  DeviceBuffer<double> partial(gpu::kSumOfSquaresBlocks), total(1);
  upload_float(gp, p0);
  upload_float(gm, m0);
  upload_float(gv, v0);
  upload_float(gg, g);
  gpu::adamw_step(gp.get(), gm.get(), gv.get(), gg.get(), working.get(), n, hp, 7, 0.5, nullptr);
  gpu::sum_of_squares(total.get(), gg.get(), n, partial.get(), nullptr);
  // Both update in double per element and store fp32: equal up to the last fp32 bit.
  CHECK(normalized_error(download_float(gp), to_double(p)) < 1e-6);
  CHECK(normalized_error(download_float(gm), to_double(m)) < 1e-6);
  CHECK(normalized_error(download_float(gv), to_double(v)) < 1e-6);
  const Vec w = download_bf16(working);
  const std::vector<float> gpu_p = gp.download();
  for (std::size_t i = 0; i < w.size(); i += 997)
    REQUIRE(w[i] == double(cpu::float_from_bf16(cpu::bf16_from_float(gpu_p[i]))));
  CHECK(std::abs(total.download()[0] - sum_sq) / sum_sq < 1e-12);  // double sums, other order
  gpu::scale_inplace(gg.get(), n, 0.25, nullptr);
  CHECK(normalized_error(download_float(gg), [&] {
          Vec s = g;
          for (auto& x : s)
            x *= 0.25;
          return s;
        }()) == 0.0);
}

// Row-major reference in double on the same bf16 values.
Vec reference_gemm(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, double alpha,
                   const Vec& a, std::int64_t lda, const Vec& b, std::int64_t ldb, double beta,
                   Vec c, std::int64_t ldc) {
  cpu::gemm<double>(ta, tb, m, n, k, alpha, a.data(), lda, b.data(), ldb, beta, c.data(), ldc);
  return c;
}

TEST_CASE("cuBLASLt GEMM wrapper matches a double GEMM in every transpose", "[cuda][gemm]") {
  std::mt19937_64 rng(9);
  cudaStream_t stream;
  CUDA_CHECK(cudaStreamCreate(&stream));
  {
    gpu::Blas blas(stream);
    // Odd sizes (unaligned rows) and a multiple-of-8 case.
    for (const auto& [m, n, k] :
         {std::tuple<std::int64_t, std::int64_t, std::int64_t>{37, 61, 36}, {256, 512, 384}}) {
      for (int t = 0; t < 4; t++) {
        const bool ta = t & 1, tb = t & 2;
        INFO("m=" << m << " n=" << n << " k=" << k << " ta=" << ta << " tb=" << tb);
        const std::int64_t lda = ta ? m : k, ldb = tb ? k : n;
        const Vec a = random_bf16_values(rng, static_cast<std::size_t>(m * k));
        const Vec b = random_bf16_values(rng, static_cast<std::size_t>(k * n));
        const Vec c0 = random_values(rng, static_cast<std::size_t>(m * n));
        DeviceBuffer<bf16> ga(a.size()), gb(b.size()), gc16(c0.size());
        DeviceBuffer<float> gc32(c0.size());
        upload_bf16(ga, a);
        upload_bf16(gb, b);
        upload_float(gc32, c0);
        // fp32 output accumulating into C (beta 1), as the weight gradients use it.
        blas.gemm(ta, tb, m, n, k, 0.5f, ga.get(), lda, gb.get(), ldb, 1.f, gc32.get(),
                  gpu::DType::F32, n);
        blas.gemm(ta, tb, m, n, k, 1.f, ga.get(), lda, gb.get(), ldb, 0.f, gc16.get(),
                  gpu::DType::BF16, n);
        CUDA_CHECK(cudaStreamSynchronize(stream));
        const Vec ref32 = reference_gemm(ta, tb, m, n, k, 0.5, a, lda, b, ldb, 1.0, c0, n);
        const Vec ref16 = reference_gemm(ta, tb, m, n, k, 1.0, a, lda, b, ldb, 0.0, c0, n);
        // fp32 accumulation of k exact products: ~k * 2^-24 relative at worst.
        CHECK(normalized_error(download_float(gc32), ref32) < kFp32);
        CHECK(normalized_error(download_bf16(gc16), ref16) < kOneRounding);
      }
    }
  }
  CUDA_CHECK(cudaStreamDestroy(stream));
}

}  // namespace
