// Attention against the CPU twin, both the batched-GEMM version and the fused (flash-style) one:
// GQA, causal, with and without a sliding window, an odd head size (per-item GEMMs) and an
// aligned one (device pointer arrays).
#include <cstdint>
#include <random>
#include <vector>

#include "kernels/cpu/attention.hpp"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/flash_attention.cuh"
#include "support.hpp"

namespace {

namespace cpu = moetune::kernels::cpu;
namespace gpu = moetune::kernels::cuda;
using namespace moetune::kernels::cuda_test;

struct Shape {
  std::int64_t b, s, hq, hkv, dh, window;
};

TEST_CASE("attention forward and backward match the CPU twin", "[cuda][attention]") {
  std::mt19937_64 rng(21);
  cudaStream_t stream;
  CUDA_CHECK(cudaStreamCreate(&stream));
  for (const Shape& sh :
       {Shape{2, 7, 6, 2, 6, 0}, Shape{2, 130, 8, 2, 64, 0}, Shape{1, 100, 4, 4, 32, 17}}) {
    INFO("b=" << sh.b << " s=" << sh.s << " hq=" << sh.hq << " hkv=" << sh.hkv << " dh=" << sh.dh
              << " window=" << sh.window);
    gpu::Blas blas(stream);
    const auto nq = static_cast<std::size_t>(sh.b * sh.s * sh.hq * sh.dh);
    const auto nkv = static_cast<std::size_t>(sh.b * sh.s * sh.hkv * sh.dh);
    const auto natt = static_cast<std::size_t>(sh.b * sh.hq * sh.s * sh.s);
    const Vec q = random_bf16_values(rng, nq, -2, 2), k = random_bf16_values(rng, nkv, -2, 2);
    const Vec v = random_bf16_values(rng, nkv), dout = random_bf16_values(rng, nq);
    Vec out(nq), att(natt), dq(nq), dk(nkv), dv(nkv);
    cpu::attention_forward<double>(out.data(), att.data(), q.data(), k.data(), v.data(), sh.b, sh.s,
                                   sh.hq, sh.hkv, sh.dh, sh.window);
    cpu::attention_backward<double>(dq.data(), dk.data(), dv.data(), dout.data(), q.data(),
                                    k.data(), v.data(), att.data(), sh.b, sh.s, sh.hq, sh.hkv,
                                    sh.dh);
    DeviceBuffer<bf16> gq(nq), gk(nkv), gv(nkv), gout(nq), gatt(natt), gdout(nq), gdq(nq), gdk(nkv),
        gdv(nkv);
    DeviceBuffer<char> scratch(gpu::attention_scratch_bytes(sh.b, sh.s, sh.hq, sh.dh));
    upload_bf16(gq, q);
    upload_bf16(gk, k);
    upload_bf16(gv, v);
    upload_bf16(gdout, dout);
    gpu::attention_forward(blas, gout.get(), gatt.get(), gq.get(), gk.get(), gv.get(), sh.b, sh.s,
                           sh.hq, sh.hkv, sh.dh, sh.window, scratch.get());
    gpu::attention_backward(blas, gdq.get(), gdk.get(), gdv.get(), gdout.get(), gq.get(), gk.get(),
                            gv.get(), gatt.get(), sh.b, sh.s, sh.hq, sh.hkv, sh.dh, scratch.get());
    CUDA_CHECK(cudaStreamSynchronize(stream));
    // Probabilities: fp32 scores and softmax, one bf16 rounding; masked entries exactly 0.
    const Vec got_att = download_bf16(gatt);
    CHECK(normalized_error(got_att, att) < kOneRounding);
    for (std::size_t i = 0; i < natt; i++) {
      if (att[i] == 0.0) REQUIRE(got_att[i] == 0.0);
    }
    // Outputs pass through the bf16 probabilities and one more rounding; gradients through a
    // chain of bf16 stages (dscores, then dq / dk).
    CHECK(normalized_error(download_bf16(gout), out) < kFewRoundings);
    CHECK(normalized_error(download_bf16(gdv), dv) < kFewRoundings);
    CHECK(normalized_error(download_bf16(gdq), dq) < kFewRoundings);
    CHECK(normalized_error(download_bf16(gdk), dk) < kFewRoundings);

    // The fused kernel: probabilities stay in fp32, so one rounding at the output; the backward
    // accumulates in fp32 from D = dout . out (out in bf16), so one rounding plus that of D.
    DeviceBuffer<float> lse(static_cast<std::size_t>(sh.b * sh.hq * sh.s));
    DeviceBuffer<char> flash_scratch(gpu::flash_attention_scratch_bytes(sh.b, sh.s, sh.hkv, sh.dh));
    gpu::flash_attention_forward(gout.get(), lse.get(), gq.get(), gk.get(), gv.get(), sh.b, sh.s,
                                 sh.hq, sh.hkv, sh.dh, sh.window, stream);
    gpu::flash_attention_backward(gdq.get(), gdk.get(), gdv.get(), gdout.get(), gq.get(), gk.get(),
                                  gv.get(), gout.get(), lse.get(), sh.b, sh.s, sh.hq, sh.hkv, sh.dh,
                                  sh.window, flash_scratch.get(), stream);
    CUDA_CHECK(cudaStreamSynchronize(stream));
    CHECK(normalized_error(download_bf16(gout), out) < kOneRounding);
    CHECK(normalized_error(download_bf16(gdv), dv) < 2 * kOneRounding);
    CHECK(normalized_error(download_bf16(gdq), dq) < 2 * kOneRounding);
    CHECK(normalized_error(download_bf16(gdk), dk) < 2 * kOneRounding);
  }
  CUDA_CHECK(cudaStreamDestroy(stream));
}

}  // namespace
