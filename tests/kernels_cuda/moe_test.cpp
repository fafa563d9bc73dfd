// CUDA ops of the MoE layer against their kernels/cpu twins: routing (softmax top-k, Sinkhorn),
// the aux and z losses, the dispatch plan, permute / combine, and the grouped SwiGLU experts.
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/cpu/moe_losses.hpp"
#include "kernels/cpu/permute.hpp"
#include "kernels/cpu/router.hpp"
#include "kernels/cpu/softmax.hpp"
#include "kernels/cpu/swiglu.hpp"
#include "kernels/cuda/moe_losses.cuh"
#include "kernels/cuda/permute.cuh"
#include "kernels/cuda/router.cuh"
#include "kernels/cuda/swiglu.cuh"
#include "support.hpp"

namespace {

namespace cpu = moetune::kernels::cpu;
namespace gpu = moetune::kernels::cuda;
using namespace moetune::kernels::cuda_test;

// Top-k choices may differ only where two candidates tie to within fp32 rounding (the GPU's probs
// come from expf, the reference's from exp in double).
void check_topk(const std::vector<std::int32_t>& got, const std::vector<std::int32_t>& want,
                const Vec& scores, std::int64_t e, std::int64_t k) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); i++) {
    if (got[i] == want[i]) continue;
    const std::size_t t = i / static_cast<std::size_t>(k);
    const double a = scores[t * static_cast<std::size_t>(e) + static_cast<std::size_t>(got[i])];
    const double b = scores[t * static_cast<std::size_t>(e) + static_cast<std::size_t>(want[i])];
    INFO("token " << t << " slot " << i % static_cast<std::size_t>(k));
    CHECK(std::abs(a - b) <= 1e-6 * std::max(std::abs(a), std::abs(b)));
  }
}

std::vector<std::int32_t> random_topk(std::mt19937_64& rng, std::int64_t n, std::int64_t e,
                                      std::int64_t k) {
  std::vector<std::int32_t> idx;
  std::vector<std::int32_t> experts(static_cast<std::size_t>(e));
  std::iota(experts.begin(), experts.end(), 0);
  for (std::int64_t t = 0; t < n; t++) {
    std::shuffle(experts.begin(), experts.end(), rng);
    idx.insert(idx.end(), experts.begin(), experts.begin() + k);
  }
  return idx;
}

TEST_CASE("Mixtral routing forward and backward match the CPU twin", "[cuda][router]") {
  std::mt19937_64 rng(11);
  for (const bool normalize : {true, false}) {
    const std::int64_t n = 500, e = 8, k = 2;
    const auto ne = static_cast<std::size_t>(n * e), nk = static_cast<std::size_t>(n * k);
    const Vec logits = random_values(rng, ne, -3, 3), dw = random_values(rng, nk);
    const Vec dprobs = random_values(rng, ne, -0.1, 0.1);
    Vec probs(ne), weight(nk), dlogits(ne);
    std::vector<std::int32_t> idx(nk);
    cpu::router_forward<double>(probs.data(), idx.data(), weight.data(), logits.data(), n, e, k,
                                normalize);
    cpu::router_backward<double>(dlogits.data(), dw.data(), dprobs.data(), probs.data(), idx.data(),
                                 n, e, k, normalize);
    DeviceBuffer<float> glogits(ne), gprobs(ne), gweight(nk), gdw(nk), gdprobs(ne), gdlogits(ne);
    DeviceBuffer<std::int32_t> gidx(nk);
    upload_float(glogits, logits);
    upload_float(gdw, dw);
    upload_float(gdprobs, dprobs);
    gpu::router_forward(gprobs.get(), gidx.get(), gweight.get(), glogits.get(), n, e, k, normalize,
                        nullptr);
    const std::vector<std::int32_t> got_idx = gidx.download();
    check_topk(got_idx, idx, probs, e, k);
    // The backward is checked on the reference's routing so that both use the same idx.
    gidx.upload(idx);
    gpu::router_backward(gdlogits.get(), gdw.get(), gdprobs.get(), gprobs.get(), gidx.get(), n, e,
                         k, normalize, nullptr);
    CHECK(normalized_error(download_float(gprobs), probs) < 1e-5);  // fp32 softmax
    CHECK(normalized_error(download_float(gweight), weight) < 1e-5);
    CHECK(normalized_error(download_float(gdlogits), dlogits) < 1e-5);
  }
}

TEST_CASE("Sinkhorn routing matches the CPU twin", "[cuda][sinkhorn]") {
  std::mt19937_64 rng(12);
  for (const std::int64_t k : {1, 2}) {
    const std::int64_t n = 700, e = 8;
    const auto ne = static_cast<std::size_t>(n * e), nk = static_cast<std::size_t>(n * k);
    const Vec logits = random_values(rng, ne, -2, 2), dw = random_values(rng, nk);
    Vec balanced(ne), scores(ne), weight(nk), dlogits(ne);
    std::vector<std::int32_t> idx(nk);
    const std::int64_t iters =
        cpu::sinkhorn<double>(balanced.data(), logits.data(), n, e, 1e-4, 1000);
    cpu::router_sinkhorn_forward<double>(scores.data(), idx.data(), weight.data(), logits.data(), n,
                                         e, k, 1e-4, 1000);
    cpu::router_sinkhorn_backward<double>(dlogits.data(), dw.data(), scores.data(), idx.data(), n,
                                          e, k);
    DeviceBuffer<float> glogits(ne), gbalanced(ne), gscores(ne), gweight(nk), gdw(nk), gdlogits(ne);
    DeviceBuffer<std::int32_t> gidx(nk);
    DeviceBuffer<double> d0(static_cast<std::size_t>(n));
    DeviceBuffer<std::int64_t> giters(1);
    upload_float(glogits, logits);
    upload_float(gdw, dw);
    gpu::sinkhorn(gbalanced.get(), glogits.get(), n, e, 1e-4, 1000, d0.get(), giters.get(),
                  nullptr);
    // Both in double from the same fp32 logits: the same rounds (a different summation order
    // could only move the stopping round where the error sits on the tolerance).
    CHECK(std::abs(giters.download()[0] - iters) <= 1);
    CHECK(normalized_error(download_float(gbalanced), balanced) < 1e-5);
    gpu::router_sinkhorn_forward(gscores.get(), gidx.get(), gweight.get(), glogits.get(), n, e, k,
                                 1e-4, 1000, d0.get(), nullptr, nullptr);
    check_topk(gidx.download(), idx, balanced, e, k);
    gidx.upload(idx);  // the backward on the reference's routing
    gpu::router_sinkhorn_backward(gdlogits.get(), gdw.get(), gscores.get(), gidx.get(), n, e, k,
                                  nullptr);
    CHECK(normalized_error(download_float(gscores), scores) < 1e-5);
    CHECK(normalized_error(download_float(gdlogits), dlogits) < 1e-5);
  }
}

TEST_CASE("aux-loss statistics and gradient, z-loss match the CPU twins", "[cuda][moe_losses]") {
  std::mt19937_64 rng(13);
  const std::int64_t n = 1000, e = 8, k = 2;
  const auto ne = static_cast<std::size_t>(n * e);
  const Vec logits = random_values(rng, ne, -3, 3);
  Vec probs(ne);
  cpu::softmax_forward<double>(probs.data(), logits.data(), n, e);
  const std::vector<std::int32_t> idx = random_topk(rng, n, e, k);
  std::vector<std::int64_t> counts(static_cast<std::size_t>(e), 0);
  Vec prob_sum(static_cast<std::size_t>(e), 0.0), dprobs(ne, 0.0), dz(ne, 0.0);
  cpu::aux_loss_accumulate<double>(counts.data(), prob_sum.data(), probs.data(), idx.data(), n, e,
                                   k);
  cpu::aux_loss_backward<double>(dprobs.data(), counts.data(), 3 * n, n, e, 0.7);
  const double z = cpu::z_loss_forward<double>(logits.data(), n, e);
  cpu::z_loss_backward<double>(dz.data(), logits.data(), n, e, 0.3);
  DeviceBuffer<float> gprobs(ne), glogits(ne), gdprobs(ne), gdz(ne);
  DeviceBuffer<std::int32_t> gidx(idx.size());
  DeviceBuffer<std::int64_t> gcounts(static_cast<std::size_t>(e));
  DeviceBuffer<double> gsum(static_cast<std::size_t>(e)), gz(1);
  upload_float(gprobs, probs);
  upload_float(glogits, logits);
  gidx.upload(idx);
  gcounts.fill_zero();
  gsum.fill_zero();
  gz.fill_zero();
  gdprobs.fill_zero();
  gdz.fill_zero();
  gpu::aux_loss_accumulate(gcounts.get(), gsum.get(), gprobs.get(), gidx.get(), n, e, k, nullptr);
  gpu::aux_loss_backward(gdprobs.get(), gcounts.get(), 3 * n, n, e, 0.7, nullptr);
  gpu::z_loss_forward(gz.get(), glogits.get(), n, e, nullptr);
  gpu::z_loss_backward(gdz.get(), glogits.get(), n, e, 0.3, nullptr);
  CHECK(gcounts.download() == counts);
  // probs were rounded to fp32 for the device: sums of n fp32 values.
  CHECK(normalized_error(gsum.download(), prob_sum) < 1e-6);
  CHECK(normalized_error(download_float(gdprobs), dprobs) < 1e-6);
  CHECK(std::abs(gz.download()[0] - z) / z < 1e-5);  // fp32 log-sum-exp per row
  CHECK(normalized_error(download_float(gdz), dz) < 1e-5);
}

TEST_CASE("dispatch plan, permute and combine match the CPU twins", "[cuda][permute]") {
  std::mt19937_64 rng(14);
  // 3000 tokens x 2 slots spans several plan blocks of 1024 slots.
  for (const double capacity_factor : {0.0, 1.0}) {
    const std::int64_t n = 3000, e = 8, k = 2, d = 40;
    const auto nk = static_cast<std::size_t>(n * k), nd = static_cast<std::size_t>(n * d);
    INFO("capacity factor " << capacity_factor);
    // Skewed routing so that a capacity drops slots: expert 0 is picked far more often.
    std::vector<std::int32_t> idx = random_topk(rng, n, e, k);
    for (std::size_t i = 0; i < nk; i += 3) {
      if (idx[i] != 0 && idx[i ^ 1] != 0) idx[i] = 0;
    }
    const std::int64_t capacity =
        capacity_factor > 0 ? cpu::expert_capacity(n, e, k, capacity_factor) : 0;
    std::vector<std::int64_t> counts(static_cast<std::size_t>(e)),
        offsets(static_cast<std::size_t>(e + 1)), slot_row(nk), row_slot(nk);
    const std::int64_t dropped = cpu::dispatch_plan(counts.data(), offsets.data(), slot_row.data(),
                                                    row_slot.data(), idx.data(), n, e, k, capacity);
    if (capacity > 0) CHECK(dropped > 0);
    const std::int64_t rows = offsets[static_cast<std::size_t>(e)];
    DeviceBuffer<std::int32_t> gidx(nk);
    DeviceBuffer<std::int64_t> gcounts(static_cast<std::size_t>(e)),
        goffsets(static_cast<std::size_t>(e + 1)), gslot_row(nk), grow_slot(nk), gdropped(1),
        scratch(static_cast<std::size_t>(gpu::dispatch_plan_scratch_elems(std::int64_t(nk), e)));
    gidx.upload(idx);
    gpu::dispatch_plan(gcounts.get(), goffsets.get(), gslot_row.get(), grow_slot.get(),
                       gdropped.get(), gidx.get(), n, e, k, capacity, scratch.get(), nullptr);
    REQUIRE(gcounts.download() == counts);
    REQUIRE(goffsets.download() == offsets);
    REQUIRE(gslot_row.download() == slot_row);
    REQUIRE(grow_slot.download() == row_slot);
    REQUIRE(gdropped.download()[0] == dropped);

    const Vec x = random_bf16_values(rng, nd), expert_out = random_bf16_values(rng, nk * d);
    const Vec dy = random_bf16_values(rng, nd), dperm = random_bf16_values(rng, nk * d);
    const Vec w = random_values(rng, nk, 0, 1);
    Vec xp(nk * static_cast<std::size_t>(d), 0.0), dx(nd), y(nd),
        dexp(nk * static_cast<std::size_t>(d), 0.0), dw(nk);
    cpu::permute_forward<double>(xp.data(), x.data(), row_slot.data(), rows, k, d);
    cpu::permute_backward<double>(dx.data(), dperm.data(), slot_row.data(), n, k, d);
    cpu::unpermute_combine_forward<double>(y.data(), expert_out.data(), w.data(), slot_row.data(),
                                           n, k, d);
    cpu::unpermute_combine_backward<double>(dexp.data(), dw.data(), dy.data(), expert_out.data(),
                                            w.data(), slot_row.data(), n, k, d);
    DeviceBuffer<bf16> gx(nd), gxp(xp.size()), gdperm(dperm.size()), gdx(nd),
        gexp(expert_out.size()), gy(nd), gdy(nd), gdexp(dexp.size());
    DeviceBuffer<float> gw(nk), gdw(nk);
    upload_bf16(gx, x);
    upload_bf16(gdperm, dperm);
    upload_bf16(gexp, expert_out);
    upload_bf16(gdy, dy);
    upload_bf16(gxp, Vec(xp.size(), 0.0));  // rows past R stay as they were: 0 here and there
    upload_bf16(gdexp, Vec(dexp.size(), 0.0));
    upload_float(gw, w);
    gpu::permute_forward(gxp.get(), gx.get(), grow_slot.get(), std::int64_t(nk), k, d, nullptr);
    gpu::permute_backward(gdx.get(), gdperm.get(), gslot_row.get(), n, k, d, nullptr);
    gpu::unpermute_combine_forward(gy.get(), gexp.get(), gw.get(), gslot_row.get(), n, k, d,
                                   nullptr);
    gpu::unpermute_combine_backward(gdexp.get(), gdw.get(), gdy.get(), gexp.get(), gw.get(),
                                    gslot_row.get(), n, k, d, nullptr);
    CHECK(download_bf16(gxp) == xp);  // copies
    CHECK(normalized_error(download_bf16(gdx), dx) < kOneRounding);
    CHECK(normalized_error(download_bf16(gy), y) < kOneRounding);
    CHECK(normalized_error(download_bf16(gdexp), dexp) < kOneRounding);
    CHECK(normalized_error(download_float(gdw), dw) < kFp32);  // fp32 dot of d exact products
  }
}

TEST_CASE("grouped SwiGLU experts match the CPU twin, native grouped GEMM and per-expert loop",
          "[cuda][swiglu]") {
  std::mt19937_64 rng(15);
  const std::int64_t e = 4, d = 64, f = 96;
  // Expert 2 gets no rows: the grouped GEMM must skip it and its weight gradient stay untouched.
  const std::vector<std::int64_t> counts = {50, 17, 0, 33};
  const std::int64_t r = std::accumulate(counts.begin(), counts.end(), std::int64_t{0});
  const auto rd = static_cast<std::size_t>(r * d), rf = static_cast<std::size_t>(r * f),
             w_size = static_cast<std::size_t>(e * f * d);
  const Vec x = random_bf16_values(rng, rd), dy = random_bf16_values(rng, rd);
  const Vec w1 = random_bf16_values(rng, w_size, -0.2, 0.2),
            w3 = random_bf16_values(rng, w_size, -0.2, 0.2),
            w2 = random_bf16_values(rng, w_size, -0.2, 0.2);
  Vec out(rd), h1(rf), h3(rf), act(rf), dx(rd), dh1(rf), dh3(rf), dw1(w_size, 0.0),
      dw3(w_size, 0.0), dw2(w_size, 0.0);
  cpu::swiglu_grouped_forward<double>(out.data(), h1.data(), h3.data(), act.data(), x.data(),
                                      w1.data(), w3.data(), w2.data(), counts.data(), e, d, f);
  cpu::swiglu_grouped_backward<double>(
      dx.data(), dw1.data(), dw3.data(), dw2.data(), dh1.data(), dh3.data(), dy.data(), x.data(),
      h1.data(), h3.data(), act.data(), w1.data(), w3.data(), w2.data(), counts.data(), e, d, f);
  cudaStream_t stream;
  CUDA_CHECK(cudaStreamCreate(&stream));
  for (const bool native : {true, false}) {
    INFO((native ? "cublasGemmGroupedBatchedEx" : "one GEMM per expert"));
    gpu::Blas blas(stream);
    blas.set_grouped_native(native);
    DeviceBuffer<bf16> gx(rd), gdy(rd), gw1(w_size), gw3(w_size), gw2(w_size), gout(rd), gh1(rf),
        gh3(rf), gact(rf), gdx(rd), gdh1(rf), gdh3(rf);
    DeviceBuffer<float> gdw1(w_size), gdw3(w_size), gdw2(w_size);
    upload_bf16(gx, x);
    upload_bf16(gdy, dy);
    upload_bf16(gw1, w1);
    upload_bf16(gw3, w3);
    upload_bf16(gw2, w2);
    gdw1.fill_zero();
    gdw3.fill_zero();
    gdw2.fill_zero();
    gpu::swiglu_grouped_forward(blas, gout.get(), gh1.get(), gh3.get(), gact.get(), gx.get(),
                                gw1.get(), gw3.get(), gw2.get(), counts.data(), e, d, f);
    gpu::swiglu_grouped_backward(blas, gdx.get(), gdw1.get(), gdw3.get(), gdw2.get(), gdh1.get(),
                                 gdh3.get(), gdy.get(), gx.get(), gh1.get(), gh3.get(), gact.get(),
                                 gw1.get(), gw3.get(), gw2.get(), counts.data(), e, d, f);
    CUDA_CHECK(cudaStreamSynchronize(stream));
    // h1, h3 one rounding; act and out a chain of roundings (h1, h3 -> act -> out).
    CHECK(normalized_error(download_bf16(gh1), h1) < kOneRounding);
    CHECK(normalized_error(download_bf16(gh3), h3) < kOneRounding);
    CHECK(normalized_error(download_bf16(gact), act) < kFewRoundings);
    CHECK(normalized_error(download_bf16(gout), out) < kFewRoundings);
    CHECK(normalized_error(download_bf16(gdx), dx) < kFewRoundings);
    CHECK(normalized_error(download_float(gdw1), dw1) < kFewRoundings);
    CHECK(normalized_error(download_float(gdw3), dw3) < kFewRoundings);
    CHECK(normalized_error(download_float(gdw2), dw2) < kFewRoundings);
    if (native) INFO("grouped GEMM native after the run: " << blas.grouped_native());
  }
  CUDA_CHECK(cudaStreamDestroy(stream));
}

}  // namespace
