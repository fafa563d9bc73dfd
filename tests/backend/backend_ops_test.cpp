// The op registry (label `gpu`, ggml's test-backend-ops): every case of dense_cases.cpp and
// moe_cases.cpp runs on the CUDA backend and on the CPU backend from the same inputs, and each
// output must agree within the case's tolerance as a normalised error (max |cuda - cpu| over
// max |cpu|). Plus the CUDA backend's own contract: what it refuses, its memory counts and its
// phase timers. Needs a GPU: without one every test here fails with make_cuda_backend's reason.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <memory>
#include <string>

#include <catch2/catch.hpp>

#include "core/error.hpp"
#include "core/model_spec.hpp"
#include "core/train_spec.hpp"
#include "executor/backend.hpp"
#include "op_runner.hpp"

namespace moetune::executor::ops_test {

namespace {

// max |got - want| / max |want|; the plain max difference when want is all zeros.
double normalized_error(const Values& got, const Values& want) {
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < want.size(); i++) {
    const double d = std::abs(got[i] - want[i]);
    diff = std::isnan(d) ? INFINITY : std::max(diff, d);
    scale = std::max(scale, std::abs(want[i]));
  }
  return scale > 0 ? diff / scale : diff;
}

std::unique_ptr<Backend> cuda_backend() {
  try {
    return make_cuda_backend(0);
  } catch (const InputError& e) {
    FAIL("these tests compare the CUDA backend with the CPU backend and need a GPU: " << e.what());
  }
  return nullptr;
}

// A small Mixtral-shaped model for check_supported.
ModelSpec small_model(std::int64_t experts, std::int64_t top_k, std::int64_t head_dim) {
  ModelSpec m;
  m.name = "test-moe";
  m.vocab_size = 128;
  m.hidden_size = 64;
  m.moe_intermediate_size = 96;
  m.intermediate_size = 96;
  m.num_hidden_layers = 2;
  m.num_attention_heads = 4;
  m.num_key_value_heads = 2;
  m.head_dim = head_dim;
  m.num_local_experts = experts;
  m.num_experts_per_tok = top_k;
  m.max_position_embeddings = 64;
  return m;
}

}  // namespace

TEST_CASE("every backend op on CUDA matches the CPU backend", "[gpu]") {
  std::unique_ptr<Backend> cuda = cuda_backend();
  std::unique_ptr<Backend> cpu = make_cpu_backend();
  std::vector<OpCase> cases = dense_op_cases();
  for (OpCase& c : moe_op_cases())
    cases.push_back(std::move(c));
  std::printf("%-72s %-12s %10s %10s\n", "op case", "output", "error", "tolerance");
  for (const OpCase& c : cases) {
    INFO("op case: " << c.name << " (tolerance " << c.tolerance << ": " << c.reason << ")");
    Outputs want, got;
    {
      Runner r(*cpu);
      want = c.run(r);
    }
    try {
      Runner r(*cuda);
      got = c.run(r);
    } catch (const std::exception& e) {
      FAIL_CHECK("the CUDA backend threw: " << e.what());
      continue;
    }
    REQUIRE(got.size() == want.size());
    for (std::size_t i = 0; i < want.size(); i++) {
      const Output& w = want[i];
      const Output& g = got[i];
      REQUIRE(g.name == w.name);
      REQUIRE(g.values.size() == w.values.size());
      const double tol = w.exact ? 0.0 : w.tolerance >= 0 ? w.tolerance : c.tolerance;
      const double err = normalized_error(g.values, w.values);
      std::printf("%-72s %-12s %10.3g %10.3g%s\n", c.name.c_str(), w.name.c_str(), err, tol,
                  err <= tol ? "" : "  FAILED");
      INFO("output " << w.name << ": normalised error " << err << ", tolerance " << tol);
      CHECK(err <= tol);
    }
  }
}

TEST_CASE("the CUDA backend refuses, with one line, models beyond its kernels", "[gpu]") {
  std::unique_ptr<Backend> cuda = cuda_backend();
  MoeOptions aux;
  MoeOptions sinkhorn;
  sinkhorn.load_balancing = LoadBalancing::Sinkhorn;
  CHECK_NOTHROW(cuda->check_supported(small_model(8, 2, 16), aux));
  CHECK_NOTHROW(cuda->check_supported(small_model(64, 2, 16), sinkhorn));
  CHECK_THROWS_AS(cuda->check_supported(small_model(512, 2, 16), aux), InputError);
  CHECK_THROWS_AS(cuda->check_supported(small_model(8, 32, 16), aux), InputError);
  CHECK_THROWS_AS(cuda->check_supported(small_model(128, 2, 16), sinkhorn), InputError);
  CHECK_THROWS_AS(cuda->check_supported(small_model(8, 2, 15), aux), InputError);
  try {
    cuda->check_supported(small_model(512, 2, 16), aux);
  } catch (const InputError& e) {
    const std::string what = e.what();
    CHECK(what.find('\n') == std::string::npos);
    CHECK(what.find("512") != std::string::npos);
  }
}

TEST_CASE("the CUDA backend counts its memory and times its phases", "[gpu]") {
  std::unique_ptr<Backend> cuda = cuda_backend();
  CHECK(cuda->name() == "cuda");
  CHECK(cuda->act_type() == DType::BF16);
  CHECK(cuda->on_device());
  const std::size_t before = cuda->live_bytes();
  {
    Buffer a(*cuda, 1 << 20, DType::F32);
    Buffer b(*cuda, 1 << 18, DType::BF16);
    CHECK(cuda->live_bytes() == before + (std::size_t{4} << 20) + (std::size_t{2} << 18));
    CHECK(cuda->peak_bytes() >= cuda->live_bytes());
    // A timed phase around real work: one GEMM-sized fill.
    cuda->phase_begin("attention");
    cuda->zero(a.data(), a.bytes());
    cuda->phase_end();
    cuda->phase_begin("experts");
    cuda->cast(b.data(), DType::BF16, a.data(), DType::F32, b.count());
    cuda->phase_end();
    cuda->phase_begin("attention");
    cuda->phase_end();
    CHECK_THROWS(cuda->phase_end());
    cuda->phase_begin("optimizer");
    CHECK_THROWS(cuda->phase_begin("optimizer"));
    cuda->phase_end();
    const PhaseTimes times = cuda->collect_phases();
    REQUIRE(times.size() == 3);
    for (const auto& [phase, seconds] : times) {
      INFO(phase);
      CHECK(seconds >= 0.0);
      CHECK(seconds < 10.0);
    }
    CHECK(cuda->collect_phases().empty());  // the next collect starts afresh
  }
  CHECK(cuda->live_bytes() == before);
  // Host round trip through the stream.
  std::vector<float> host = {1.5f, -2.f, 3.25f};
  Buffer d(*cuda, 3, DType::F32);
  cuda->copy_from_host(d.data(), host.data(), 3 * sizeof(float));
  cuda->scale(d.f32(), 3, 2.0);
  std::vector<float> back(3);
  cuda->copy_to_host(back.data(), d.data(), 3 * sizeof(float));
  CHECK(back == std::vector<float>{3.f, -4.f, 6.5f});
}

}  // namespace moetune::executor::ops_test
