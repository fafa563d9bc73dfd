// ModelSpec: parameter counts and FLOPs per token against sums written out by hand from each
// model's published config.json (so a reader can redo them), and the Hugging Face configs in
// tests/data/hf_configs read to the same architecture as the presets. Counts are integers and are
// compared exactly; FLOPs are doubles built from integers below 2^53, so they are exact too.
#include <catch2/catch.hpp>

#include <cmath>
#include <string>

#include "core/error.hpp"
#include "core/model_spec.hpp"
#include "core/presets.hpp"
#include "test_support.hpp"

using namespace moetune;

TEST_CASE("Mixtral 8x7B parameter counts", "[core][model]") {
  const ModelSpec m = load_model("mixtral-8x7b");
  const ParamCounts c = param_counts(m);
  // h = 4096, 32 layers, 32 query heads and 8 KV heads of 128, 8 experts of ffn 14336, V = 32000.
  // Per layer:
  //   attention  q, o: 4096*4096*2 = 33,554,432; k, v: 4096*1024*2 = 8,388,608   -> 41,943,040
  //   experts    8 * 3 * 4096 * 14336                                          -> 1,409,286,144
  //   router     4096 * 8                                                      -> 32,768
  //   norms      2 * 4096                                                      -> 8,192
  //   layer total                                                              -> 1,451,270,144
  // x 32 layers = 46,440,644,608; + embedding 32000*4096 = 131,072,000; + untied LM head
  // 131,072,000; + final norm 4096 = 46,702,792,704.
  CHECK(c.attention == 32LL * 41'943'040);
  CHECK(c.experts == 32LL * 1'409'286'144);
  CHECK(c.router == 32LL * 32'768);
  CHECK(c.norms == 32LL * 8'192);
  CHECK(c.embedding == 131'072'000);
  CHECK(c.lm_head == 131'072'000);
  CHECK(c.final_norm == 4'096);
  CHECK(c.total == 46'702'792'704);
  // Active per token: 2 of 8 experts, so 6 * 3 * 4096 * 14336 = 1,056,964,608 per layer sit idle;
  // x 32 = 33,822,867,456; 46,702,792,704 - 33,822,867,456 = 12,879,925,248 (12.88 B).
  CHECK(c.active == 12'879'925'248);
  CHECK(c.expert == c.experts);
  CHECK(c.dense + c.expert == c.total);
  CHECK(c.dense == 46'702'792'704 - 32LL * 1'409'286'144);
}

TEST_CASE("Mixtral 8x22B parameter counts", "[core][model]") {
  const ParamCounts c = param_counts(load_model("mixtral-8x22b"));
  // h = 6144, 56 layers, 48 query heads and 8 KV heads of 128, 8 experts of ffn 16384, V = 32000.
  //   attention  6144*6144*2 + 6144*1024*2 = 75,497,472 + 12,582,912 = 88,080,384
  //   experts    8 * 3 * 6144 * 16384 = 2,415,919,104; router 6144*8 = 49,152; norms 12,288
  //   layer total 2,504,060,928; x 56 = 140,227,411,968
  //   + embedding and LM head 2 * 32000*6144 = 393,216,000 + final norm 6144 = 140,620,634,112
  //   idle experts 6 * 3 * 6144 * 16384 * 56 = 101,468,602,368 -> active 39,152,031,744
  CHECK(c.total == 140'620'634'112);
  CHECK(c.active == 39'152'031'744);
  // Mistral publishes "141B total, 39B active", rounded to whole billions: within half a billion.
  CHECK(std::abs(static_cast<double>(c.total) - 141e9) <= 0.5e9);
  CHECK(std::abs(static_cast<double>(c.active) - 39e9) <= 0.5e9);
}

TEST_CASE("Qwen3-30B-A3B parameter counts", "[core][model]") {
  const ParamCounts c = param_counts(load_model("qwen3-30b-a3b"));
  // h = 2048, 48 layers, 32 query heads and 4 KV heads of 128 (q_dim 4096, kv_dim 512),
  // 128 experts of ffn 768, top-8, V = 151936, q/k RMSNorm of head_dim each.
  //   attention  2048*4096*2 + 2048*512*2 + 2*128 = 16,777,216 + 2,097,152 + 256 = 18,874,624
  //   experts    128 * 3 * 2048 * 768 = 603,979,776; router 2048*128 = 262,144; norms 4,096
  //   layer total 623,120,640; x 48 = 29,909,790,720
  //   + embedding and LM head 2 * 151936*2048 = 622,329,856 + final norm 2048 = 30,532,122,624
  //   idle experts 120 * 3 * 2048 * 768 * 48 = 27,179,089,920 -> active 3,353,032,704
  CHECK(c.total == 30'532'122'624);
  CHECK(c.active == 3'353'032'704);
}

TEST_CASE("Qwen2-57B-A14B parameter counts", "[core][model]") {
  const ParamCounts c = param_counts(load_model("qwen2-57b-a14b"));
  // h = 3584, 28 layers, 28 query heads and 4 KV heads of 128 (q_dim 3584, kv_dim 512) with q, k,
  // v biases, 64 experts of ffn 2560, top-8, a shared expert of ffn 20480 with a 1-wide gate.
  //   attention  3584*3584*2 + 3584*512*2 + (3584 + 2*512) = 29,360,128 + 4,608 = 29,364,736
  //   experts    64 * 3 * 3584 * 2560 = 1,761,607,680; router 3584*64 = 229,376; norms 7,168
  //   shared     3 * 3584 * 20480 + 3584 = 220,204,544
  //   layer total 2,011,413,504; x 28 = 56,319,578,112
  //   + embedding and LM head 2 * 151936*3584 = 1,089,077,248 + final norm 3584 = 57,408,658,944
  //   idle experts 56 * 3 * 3584 * 2560 * 28 = 43,159,388,160 -> active 14,249,270,784
  CHECK(c.shared_experts == 28LL * 220'204'544);
  CHECK(c.total == 57'408'658'944);
  CHECK(c.active == 14'249'270'784);
}

TEST_CASE("published Hugging Face configs read to the same models as the presets",
          "[core][model][hf]") {
  for (const std::string name : {"mixtral-8x7b", "qwen2-57b-a14b", "qwen3-30b-a3b"}) {
    CAPTURE(name);
    const ModelSpec preset = load_model(name);
    ModelSpec hf = load_model(moetune::test::hf_config(name).string());
    CHECK(hf.name == name);  // "<name>.config.json" -> "<name>"
    const ParamCounts a = param_counts(preset);
    const ParamCounts b = param_counts(hf);
    CHECK(b.total == a.total);
    CHECK(b.active == a.active);
    CHECK(b.dense == a.dense);
    CHECK(b.expert == a.expert);
    CHECK(flops_per_token(hf, 4096, AttentionFlops::Causal).training() ==
          flops_per_token(preset, 4096, AttentionFlops::Causal).training());
    // Every architectural field agrees; only where the numbers come from differs.
    hf.source = preset.source;
    CHECK(hf == preset);
  }
}

TEST_CASE("FLOPs per token of Mixtral 8x7B", "[core][model][flops]") {
  const ModelSpec m = load_model("mixtral-8x7b");
  const ParamCounts c = param_counts(m);
  const std::int64_t seq = 4096;
  const TokenFlops causal = flops_per_token(m, seq, AttentionFlops::Causal);
  const TokenFlops full = flops_per_token(m, seq, AttentionFlops::Full);
  // GEMMs: 2 FLOPs per multiply-add over every active weight that is a matrix. The untied LM head
  // is a GEMM; the embedding lookup is not, and neither are the RMSNorm weights (elementwise):
  //   12,879,925,248 active - 131,072,000 embedding - 32*8192 layer norms - 4096 final norm
  //   = 12,748,587,008 -> x 2 = 25,497,174,016.
  const std::int64_t gemm_weights = c.active - c.embedding - c.norms - c.final_norm;
  CHECK(gemm_weights == 12'748'587'008);
  CHECK(causal.gemm == 2.0 * static_cast<double>(gemm_weights));
  CHECK(full.gemm == causal.gemm);
  // Attention scores: QK^T and AV each cost q_dim multiply-adds per attended key.
  //   Full:   4 * q_dim * seq per layer = 4 * 4096 * 4096 = 67,108,864; x 32 = 2,147,483,648.
  //   Causal: 4 * q_dim * (seq+1)/2 per layer = 2 * 4096 * 4097 = 33,562,624; x 32 = 1,074,003,968.
  CHECK(full.attention == 32.0 * 4.0 * 4096.0 * 4096.0);
  CHECK(full.attention == 2'147'483'648.0);
  CHECK(causal.attention == 32.0 * 4.0 * 4096.0 * (4096.0 + 1.0) / 2.0);
  CHECK(causal.attention == 1'074'003'968.0);
  // Training = forward + backward (twice the forward).
  CHECK(causal.training() == 3.0 * (causal.gemm + causal.attention));
  CHECK(full.training() == 3.0 * (full.gemm + full.attention));
}

TEST_CASE("a tied LM head is one matrix fewer but still a GEMM", "[core][model][flops]") {
  ModelSpec untied = load_model("tiny");
  ModelSpec tied = untied;
  tied.tie_word_embeddings = true;
  // tiny: V = 512, h = 64: the head is 32,768 weights.
  CHECK(param_counts(untied).total - param_counts(tied).total == 32'768);
  CHECK(param_counts(tied).lm_head == 0);
  CHECK(flops_per_token(tied, 16, AttentionFlops::Causal).gemm ==
        flops_per_token(untied, 16, AttentionFlops::Causal).gemm);
}

TEST_CASE("mean attended keys with and without a sliding window", "[core][model][flops]") {
  ModelSpec m = load_model("tiny");
  // No window, seq 10: causal mean (1 + 2 + ... + 10) / 10 = 55 / 10 = 5.5; full 10.
  CHECK(mean_attended_keys(m, 10, AttentionFlops::Causal) == 5.5);
  CHECK(mean_attended_keys(m, 10, AttentionFlops::Full) == 10.0);
  // Window 4, seq 10: queries 1..4 see 1, 2, 3, 4 keys, queries 5..10 see 4 each:
  // (1 + 2 + 3 + 4 + 4*6) / 10 = 34 / 10 = 3.4. Both sides are the one correctly rounded double
  // 34.0 / 10.0, so == is exact.
  m.sliding_window = 4;
  CHECK(mean_attended_keys(m, 10, AttentionFlops::Causal) == 34.0 / 10.0);
  CHECK(mean_attended_keys(m, 10, AttentionFlops::Full) == 4.0);
  // A window wider than the sequence changes nothing.
  m.sliding_window = 100;
  CHECK(mean_attended_keys(m, 10, AttentionFlops::Causal) == 5.5);
  CHECK(mean_attended_keys(m, 10, AttentionFlops::Full) == 10.0);
  // The attention FLOPs follow the mean: tiny has 2 layers of q_dim 64.
  m.sliding_window = 4;
  CHECK(flops_per_token(m, 10, AttentionFlops::Causal).attention == 2.0 * 4.0 * 64.0 * 3.4);
}

TEST_CASE("MoE layer pattern: decoder_sparse_step and mlp_only_layers", "[core][model]") {
  ModelSpec m = load_model("tiny");
  m.num_hidden_layers = 4;
  m.decoder_sparse_step = 2;  // layers 1 and 3 (0-based) have experts
  CHECK_FALSE(m.is_moe_layer(0));
  CHECK(m.is_moe_layer(1));
  CHECK_FALSE(m.is_moe_layer(2));
  CHECK(m.is_moe_layer(3));
  m.mlp_only_layers = {3};
  CHECK_FALSE(m.is_moe_layer(3));
  CHECK(m.num_moe_layers() == 1);
  const ParamCounts c = param_counts(m);
  // 3 dense layers of SwiGLU 3 * 64 * 96 = 18,432; 1 MoE layer of 4 experts of 18,432.
  CHECK(c.dense_ffn == 3 * 18'432);
  CHECK(c.experts == 4 * 18'432);
  CHECK(c.router == 64 * 4);
  // Active: 2 of the 4 experts idle in the one MoE layer.
  CHECK(c.total - c.active == 2 * 18'432);
  m.mlp_only_layers = {1, 3};
  CHECK_THROWS_WITH(validate(m, "m"), Catch::Contains("no MoE layer"));
}

TEST_CASE("validate refuses sizes that do not fit together", "[core][model]") {
  ModelSpec m = load_model("tiny");
  m.num_key_value_heads = 3;
  CHECK_THROWS_AS(validate(m, "m.json"), InputError);
  CHECK_THROWS_WITH(validate(m, "m.json"),
                    Catch::Contains("num_attention_heads=4 is not a multiple of "
                                    "num_key_value_heads=3"));
  m = load_model("tiny");
  m.mlp_only_layers = {7};
  CHECK_THROWS_WITH(validate(m, "m.json"), Catch::Contains("names layer 7 of 2"));
}
