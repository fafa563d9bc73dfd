// bench/train_gpu: tokens/s and MFU of moetune's one trainer on the CUDA backend, one GPU, for a
// Mixtral-shaped model sized to fill the card, beside the simulator's prediction (step time, MFU,
// peak memory) for the same plan. Default shape: Mixtral 8x7B's layer (hidden 4096, 32 heads of
// 128 with 8 kv heads, 8 experts top-2 of FFN 14336, vocabulary 32000), seq 4096, micro-batch 1 x
// 4 accumulation steps; the layer count is the most that fits in 85% of the free memory: the
// model's buffers measured by building 1- and 2-layer models, plus 18 bytes of state per
// parameter (fp32 master, gradient, Adam m and v; bf16 working copy).
// Prints one JSON line (and writes the model as a moetune model JSON for bench/train_gpu_hf.py).
//
// Usage: train_gpu [--layers L] [--hidden D] [--ffn F] [--heads H] [--kv-heads H] [--head-dim Dh]
//                  [--experts E] [--topk K] [--vocab V] [--seq S] [--micro-batch B] [--accum A]
//                  [--steps N] [--warmup W] [--memory-fraction X] [--model-json PATH]
//                  [--metrics run.jsonl]
// --metrics writes run.jsonl (header + one StepRecord per step, CUDA-event phase times) as the
// CPU trainer does, for calibration.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "core/json_reader.hpp"
#include "core/presets.hpp"
#include "executor/backend.hpp"
#include "executor/cuda/cuda_backend.hpp"
#include "executor/trainer.hpp"
#ifdef MOETUNE_BENCH_SIMULATOR
#include "simulator/simulator.hpp"
#endif

namespace {

using namespace moetune;

// The cluster preset whose device is this GPU, so the simulator predicts for the same card.
std::string cluster_for(const std::string& gpu_name) {
  if (gpu_name.find("H200") != std::string::npos) return "p5e.48xlarge";
  if (gpu_name.find("H100") != std::string::npos) return "p5.48xlarge";
  if (gpu_name.find("A100") != std::string::npos) return "p4de.24xlarge";
  return "p5.48xlarge";
}

ModelSpec mixtral_shape(std::int64_t layers, std::int64_t hidden, std::int64_t ffn,
                        std::int64_t heads, std::int64_t kv_heads, std::int64_t head_dim,
                        std::int64_t experts, std::int64_t topk, std::int64_t vocab,
                        std::int64_t seq) {
  ModelSpec m;
  m.name = "bench-mixtral-" + std::to_string(layers) + "l-" + std::to_string(hidden);
  m.family = ModelFamily::Mixtral;
  m.source = "bench/train_gpu";
  m.vocab_size = vocab;
  m.hidden_size = hidden;
  m.intermediate_size = ffn;
  m.moe_intermediate_size = ffn;
  m.num_hidden_layers = layers;
  m.num_attention_heads = heads;
  m.num_key_value_heads = kv_heads;
  m.head_dim = head_dim;
  m.num_local_experts = experts;
  m.num_experts_per_tok = topk;
  m.max_position_embeddings = std::max<std::int64_t>(seq, 4096);
  m.rope_theta = 1e6;
  m.rms_norm_eps = 1e-5;
  m.sliding_window = 0;
  m.tie_word_embeddings = false;
  m.router_aux_loss_coef = 0.02;
  return m;
}

// Device bytes a model of `layers` layers needs: its buffers (built, never run) and its state.
double model_bytes(const ModelSpec& m, const MoeOptions& moe, std::int64_t batch,
                   std::int64_t seq) {
  const std::unique_ptr<executor::Backend> be = executor::make_cuda_backend(0);
  double bytes = 0;
  {
    executor::MixtralModel model(*be, m, moe, batch, seq);
    bytes = double(be->live_bytes()) + 18.0 * double(model.layout().numel());
  }
  be->synchronize();
  return bytes;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) try {
  std::int64_t layers = 0, hidden = 4096, ffn = 14336, heads = 32, kv_heads = 8, head_dim = 128;
  std::int64_t experts = 8, topk = 2, vocab = 32000, seq = 4096, micro = 1, accum = 4;
  std::int64_t steps = 4, warmup = 2;
  double fraction = 0.85;
  std::string model_json, metrics;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    std::int64_t* target = nullptr;
    if (flag == "--layers")
      target = &layers;
    else if (flag == "--hidden")
      target = &hidden;
    else if (flag == "--ffn")
      target = &ffn;
    else if (flag == "--heads")
      target = &heads;
    else if (flag == "--kv-heads")
      target = &kv_heads;
    else if (flag == "--head-dim")
      target = &head_dim;
    else if (flag == "--experts")
      target = &experts;
    else if (flag == "--topk")
      target = &topk;
    else if (flag == "--vocab")
      target = &vocab;
    else if (flag == "--seq")
      target = &seq;
    else if (flag == "--micro-batch")
      target = &micro;
    else if (flag == "--accum")
      target = &accum;
    else if (flag == "--steps")
      target = &steps;
    else if (flag == "--warmup")
      target = &warmup;
    if (target != nullptr) {
      *target = std::atoll(value.c_str());
    } else if (flag == "--memory-fraction") {
      fraction = std::atof(value.c_str());
    } else if (flag == "--model-json") {
      model_json = value;
    } else if (flag == "--metrics") {
      metrics = value;
    } else {
      std::fprintf(stderr, "train_gpu: unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  const std::string gpu_name = prop.name;
  MoeOptions moe;
  moe.aux_loss_coef = 0.02;
  if (layers <= 0) {
    std::size_t free_bytes = 0, total_bytes = 0;
    CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    const double one = model_bytes(
        mixtral_shape(1, hidden, ffn, heads, kv_heads, head_dim, experts, topk, vocab, seq), moe,
        micro, seq);
    const double two = model_bytes(
        mixtral_shape(2, hidden, ffn, heads, kv_heads, head_dim, experts, topk, vocab, seq), moe,
        micro, seq);
    const double per_layer = two - one, fixed = one - per_layer;
    layers = std::int64_t((fraction * double(free_bytes) - fixed) / per_layer);
    layers = std::clamp<std::int64_t>(layers, 1, 64);
    std::fprintf(stderr,
                 "train_gpu: %s, %.1f GiB free; %.2f GiB per layer + %.2f GiB -> %lld layers\n",
                 gpu_name.c_str(), double(free_bytes) / 1073741824.0, per_layer / 1073741824.0,
                 fixed / 1073741824.0, static_cast<long long>(layers));
  }
  Plan plan;
  plan.model =
      mixtral_shape(layers, hidden, ffn, heads, kv_heads, head_dim, experts, topk, vocab, seq);
  plan.cluster = load_cluster(cluster_for(gpu_name), 1, 1);
  plan.train.seq_len = seq;
  plan.train.global_batch = micro * accum;
  plan.train.precision = Precision::Bf16;
  plan.train.moe = moe;
  plan.layout.micro_batch = micro;
  if (!model_json.empty()) {
    std::ofstream out(model_json);
    out << to_json(plan.model).dump(2) << "\n";
  }
  executor::TrainOptions options;
  options.steps = warmup + steps;
  options.metrics = metrics;
  const std::unique_ptr<executor::Backend> backend = executor::make_cuda_backend(0);
  executor::Trainer trainer(plan, options, nullptr, backend.get());
  std::vector<double> step_s;
  std::map<std::string, double> phases;
  double loss = 0;
  trainer.run([&](const StepRecord& r) {
    std::fprintf(stderr, "train_gpu: step %lld  loss %.4f  %.3f s  %.0f tokens/s\n",
                 static_cast<long long>(r.step), r.loss, r.step_time_s, r.tokens_per_s);
    if (r.step > warmup) {
      step_s.push_back(r.step_time_s);
      for (const auto& [k, v] : r.phases_s)
        phases[k] += v / double(steps);
    }
    loss = r.loss;
  });
  const double step_median = median(step_s);
  const double tokens = double(plan.train.tokens_per_step());
  const double tokens_per_s = tokens / step_median;
  const double training_flops = flops_per_token(plan.model, seq, AttentionFlops::Causal).training();
  const double peak = plan.cluster.device.peak_tflops_bf16 * 1e12;
  const double mfu = tokens_per_s * training_flops / peak;
  Json out = {{"backend", "moetune-cuda"},
              {"gpu", gpu_name},
              {"model", to_json(plan.model)},
              {"seq", seq},
              {"micro_batch", micro},
              {"grad_accum", accum},
              {"tokens_per_step", tokens},
              {"step_s", step_s},
              {"step_s_median", step_median},
              {"tokens_per_s", tokens_per_s},
              {"model_tflops_per_s", tokens_per_s * training_flops / 1e12},
              {"peak_tflops_bf16", plan.cluster.device.peak_tflops_bf16},
              {"mfu", mfu},
              {"phases_s", phases},
              {"final_loss", loss},
              {"grouped_gemm_native",
               dynamic_cast<executor::gpu::CudaBackend&>(*backend).blas().grouped_native()},
              {"measured_peak_memory_bytes", double(backend->peak_bytes())}};
  std::size_t free_bytes = 0, total_bytes = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  out["device_used_bytes_incl_context"] = double(total_bytes - free_bytes);
#ifdef MOETUNE_BENCH_SIMULATOR
  const Prediction p = simulator::simulate(plan);
  out["predicted"] = {{"fits", p.fits},
                      {"peak_memory_bytes", p.peak_memory_bytes},
                      {"step_time_s", p.step_time_s},
                      {"tokens_per_s", p.tokens_per_s},
                      {"mfu", p.mfu},
                      {"memory", to_json(p.memory)},
                      {"time", to_json(p.time)}};
#else
  out["predicted"] = nullptr;  // built without the simulator (no Boost headers)
#endif
  std::printf("%s\n", out.dump().c_str());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "train_gpu: %s\n", e.what());
  return 1;
}
