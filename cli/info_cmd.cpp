// `moetune info`: a model's parameter counts and training FLOPs per token under both attention
// conventions.
#include <cstdio>
#include <iostream>
#include <memory>

#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "core/presets.hpp"

namespace moetune::cli {

namespace {

struct InfoOptions {
  std::string model;
  std::int64_t seq_len = 4096;
  bool json = false;
};

void run(const InfoOptions& o) {
  const ModelSpec m = load_model(o.model);
  const ParamCounts c = param_counts(m);
  const TokenFlops causal = flops_per_token(m, o.seq_len, AttentionFlops::Causal);
  const TokenFlops full = flops_per_token(m, o.seq_len, AttentionFlops::Full);
  if (o.json) {
    Json j;
    j["model"] = m.name;
    j["total_params"] = c.total;
    j["active_params"] = c.active;
    j["dense_params"] = c.dense;
    j["expert_params"] = c.expert;
    j["embedding_params"] = c.embedding;
    j["lm_head_params"] = c.lm_head;
    j["seq_len"] = o.seq_len;
    j["training_flops_per_token_causal"] = causal.training();
    j["training_flops_per_token_full"] = full.training();
    std::cout << j.dump(2) << "\n";
    return;
  }
  std::printf("%s (%s)\n", m.name.c_str(), m.source.c_str());
  std::printf("  parameters: %s total, %s active per token\n", format_count(c.total).c_str(),
              format_count(c.active).c_str());
  std::printf("  dense %s (embedding %s, LM head %s, attention %s, routers %s), experts %s\n",
              format_count(c.dense).c_str(), format_count(c.embedding).c_str(),
              format_count(c.lm_head).c_str(), format_count(c.attention).c_str(),
              format_count(c.router).c_str(), format_count(c.expert).c_str());
  std::printf(
      "  training FLOPs per token at seq %lld: %.3g (causal attention), %.3g (full "
      "attention); GEMMs alone %.3g\n",
      static_cast<long long>(o.seq_len), causal.training(), full.training(), 3 * causal.gemm);
}

}  // namespace

void register_info(CLI::App& app) {
  auto o = std::make_shared<InfoOptions>();
  CLI::App* cmd = app.add_subcommand("info", "parameter counts and FLOPs per token of a model");
  cmd->add_option("--model", o->model, "model preset name or JSON/config.json path")->required();
  cmd->add_option("--seq", o->seq_len, "sequence length")
      ->check(at_least_one())
      ->capture_default_str();
  cmd->add_flag("--json", o->json, "print JSON");
  cmd->callback([o] { run(*o); });
}

}  // namespace moetune::cli
