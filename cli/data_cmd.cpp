// `moetune data synth` and `moetune data prepare`: make a token file from the synthetic corpus or
// from a text file, and print one line saying what was written.
#include <cmath>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "core/error.hpp"
#include "core/presets.hpp"
#include "executor/io/synth.hpp"
#include "executor/io/token_file.hpp"
#include "executor/io/tokenize.hpp"

namespace moetune::cli {

namespace {

struct SynthOptions {
  std::optional<std::int64_t> vocab;
  std::string model;
  std::int64_t tokens = 0;
  std::uint64_t seed = 1234;
  std::string out;
};

struct PrepareOptions {
  std::string input;
  std::string tokenizer;
  std::string model;
  std::string out;
};

void run_synth(const SynthOptions& o) {
  if (o.vocab.has_value() == !o.model.empty()) {
    throw InputError("data synth: give exactly one of --vocab N and --model M");
  }
  const std::int64_t vocab = o.vocab ? *o.vocab : load_model(o.model).vocab_size;
  if (vocab < 2 || vocab > (std::int64_t{1} << 32)) {
    throw InputError("data synth: --vocab " + std::to_string(vocab) +
                     " is out of range; use 2 to 4294967296");
  }
  if (o.tokens < 1) {
    throw InputError("data synth: --tokens " + std::to_string(o.tokens) + " must be at least 1");
  }
  const auto v = static_cast<std::uint64_t>(vocab);
  const auto tokens = executor::synth_corpus(v, static_cast<std::uint64_t>(o.tokens), o.seed);
  executor::write_token_file(o.out, tokens, v);
  std::printf(
      "wrote %lld tokens (vocabulary %lld, %u-byte ids, seed %llu) to %s; Markov-step "
      "entropy %.2f nats vs ln V = %.2f\n",
      static_cast<long long>(tokens.size()), static_cast<long long>(vocab),
      executor::bytes_per_token_for(v), static_cast<unsigned long long>(o.seed), o.out.c_str(),
      executor::synth_markov_entropy_nats(v), std::log(static_cast<double>(vocab)));
}

void run_prepare(const PrepareOptions& o) {
  std::optional<std::uint64_t> vocab;
  if (!o.model.empty()) vocab = static_cast<std::uint64_t>(load_model(o.model).vocab_size);
  const executor::PrepareResult r = executor::prepare_tokens(o.input, o.tokenizer, o.out, vocab);
  std::printf("wrote %llu tokens from %llu document%s (tokenizer %s, vocabulary %llu) to %s\n",
              static_cast<unsigned long long>(r.num_tokens),
              static_cast<unsigned long long>(r.documents), r.documents == 1 ? "" : "s",
              o.tokenizer.c_str(), static_cast<unsigned long long>(r.vocab_size), o.out.c_str());
}

}  // namespace

void register_data(CLI::App& app) {
  CLI::App* data = app.add_subcommand("data", "make token files for training");
  data->require_subcommand(1);

  auto s = std::make_shared<SynthOptions>();
  CLI::App* synth = data->add_subcommand(
      "synth", "a deterministic synthetic corpus a small model can learn (nothing downloaded)");
  auto* vocab = synth->add_option("--vocab", s->vocab, "vocabulary size");
  auto* model = synth->add_option("--model", s->model,
                                  "take the vocabulary size of this model (preset or JSON path)");
  vocab->excludes(model);
  synth->add_option("--tokens", s->tokens, "number of tokens")->required();
  synth->add_option("--seed", s->seed, "seed of the corpus")->capture_default_str();
  synth->add_option("--out", s->out, "token file to write")->required();
  synth->callback([s] { run_synth(*s); });

  auto p = std::make_shared<PrepareOptions>();
  CLI::App* prepare = data->add_subcommand("prepare", "tokenize a text file into a token file");
  prepare
      ->add_option("--input", p->input,
                   "text file (UTF-8; one document per line for "
                   "SentencePiece)")
      ->required();
  prepare->add_option("--tokenizer", p->tokenizer, "bytes, or sentencepiece:MODEL_FILE")
      ->required();
  prepare->add_option("--model", p->model,
                      "write the file for this model's vocabulary (must hold the tokenizer's)");
  prepare->add_option("--out", p->out, "token file to write")->required();
  prepare->callback([p] { run_prepare(*p); });
}

}  // namespace moetune::cli
