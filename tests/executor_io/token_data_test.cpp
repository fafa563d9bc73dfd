// Token files (round trip and every refusal), the synthetic corpus (deterministic, learnable) and
// the tokenizers behind `moetune data prepare`.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>

#include "core/error.hpp"
#include "executor/io/binary_io.hpp"
#include "executor/io/synth.hpp"
#include "executor/io/token_file.hpp"
#include "executor/io/tokenize.hpp"
#include "test_support.hpp"

#ifdef MOETUNE_HAVE_SENTENCEPIECE_TRAIN
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>
#endif

using namespace moetune;
using namespace moetune::executor;
using Catch::Matchers::Contains;

namespace {

// Overwrites bytes of a file in place.
void patch_file(const std::filesystem::path& file, std::uint64_t offset, const void* data,
                std::size_t size) {
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
}

}  // namespace

TEST_CASE("token files round-trip with 2-byte and 4-byte ids", "[token_file]") {
  test::TempDir dir;
  for (std::uint64_t vocab : {std::uint64_t{512}, std::uint64_t{65536}, std::uint64_t{70000}}) {
    const std::vector<std::uint32_t> tokens = {0, 1, 7, static_cast<std::uint32_t>(vocab - 1), 42};
    const auto file = dir / ("t" + std::to_string(vocab) + ".bin");
    write_token_file(file, tokens, vocab);
    const std::uint32_t width = vocab <= 65536 ? 2 : 4;
    CHECK(std::filesystem::file_size(file) == 32 + tokens.size() * width);
    const TokenFile read = read_token_file(file, vocab);
    CHECK(read.tokens == tokens);
    CHECK(read.header.vocab_size == vocab);
    CHECK(read.header.bytes_per_token == width);
    CHECK(read_token_file_header(file).num_tokens == tokens.size());
    CHECK(read_token_file(file, std::nullopt).tokens == tokens);
  }
}

TEST_CASE("token files refuse bad input with the file and the problem named", "[token_file]") {
  test::TempDir dir;
  const auto file = dir / "data.bin";
  write_token_file(file, std::vector<std::uint32_t>{1, 2, 3, 4}, 512);

  SECTION("vocabulary of another model") {
    CHECK_THROWS_WITH(read_token_file(file, 32000),
                      Contains("data.bin: written for vocabulary 512 but the model has 32000"));
  }
  SECTION("bad magic") {
    patch_file(file, 0, "NOTTOKEN", 8);
    CHECK_THROWS_WITH(read_token_file(file, 512), Contains("data.bin: not a moetune token file"));
  }
  SECTION("unknown version") {
    const std::uint32_t version = 7;
    patch_file(file, 8, &version, 4);
    CHECK_THROWS_WITH(read_token_file(file, 512), Contains("version 7 is not supported"));
  }
  SECTION("truncated") {
    std::filesystem::resize_file(file, 32 + 7);
    CHECK_THROWS_WITH(read_token_file(file, 512), Contains("truncated"));
    CHECK_THROWS_AS(read_token_file_header(file), InputError);
    std::filesystem::resize_file(file, 20);
    CHECK_THROWS_WITH(read_token_file(file, 512), Contains("shorter than the 32-byte header"));
  }
  SECTION("id not below the vocabulary") {
    const std::uint16_t id = 600;
    patch_file(file, 32 + 2 * 2, &id, 2);
    CHECK_THROWS_WITH(read_token_file(file, 512),
                      Contains("token 2 has id 600, not below the vocabulary size 512"));
  }
  SECTION("missing file") {
    CHECK_THROWS_WITH(read_token_file(dir / "nope.bin", 512), Contains("nope.bin"));
  }
  SECTION("writing an id >= vocab is refused and leaves the old file untouched") {
    const std::string before = test::read_text(file);
    CHECK_THROWS_WITH(write_token_file(file, std::vector<std::uint32_t>{1, 512}, 512),
                      Contains("token 1 has id 512"));
    CHECK(test::read_text(file) == before);
    std::size_t entries = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir.path()))
      entries += e.exists();
    CHECK(entries == 1);  // no temporary file left behind
  }
}

TEST_CASE("random generators give the published reference values", "[synth]") {
  // splitmix64 with state 0: first output 0xE220A8397B1DCDAF (Vigna's reference implementation).
  SplitMix64 sm(0);
  CHECK(sm.next() == 0xE220A8397B1DCDAFULL);
  Xoshiro256 rng(1);
  bool in_range = true;
  std::vector<int> counts(7, 0);
  for (int i = 0; i < 7000; ++i) {
    const std::uint64_t k = rng.below(7);
    const double u = rng.uniform();
    in_range = in_range && k < 7 && u >= 0.0 && u < 1.0;
    if (k < 7) ++counts[k];
  }
  CHECK(in_range);
  CHECK(*std::min_element(counts.begin(), counts.end()) > 850);  // 1000 expected, sd about 30
}

TEST_CASE("the synthetic corpus is deterministic per seed and learnable", "[synth]") {
  const std::uint64_t vocab = 64;
  const auto a = synth_corpus(vocab, 200000, 7);
  CHECK(a.size() == 200000);
  CHECK(a == synth_corpus(vocab, 200000, 7));
  CHECK(a != synth_corpus(vocab, 200000, 8));
  // A prefix is the same corpus, cut: the length only decides where to stop.
  const auto prefix = synth_corpus(vocab, 1000, 7);
  CHECK(std::equal(prefix.begin(), prefix.end(), a.begin()));
  CHECK(std::all_of(a.begin(), a.end(), [&](std::uint32_t t) { return t < vocab; }));

  // Pinned values: any change to the generator changes every corpus, so it must be deliberate.
  const auto pinned = synth_corpus(512, 8, 1234);
  std::string text;
  for (std::uint32_t t : pinned)
    text += std::to_string(t) + " ";
  CHECK(text == "48 188 416 199 190 79 232 298 ");

  // Empirical conditional entropy H(next | previous) from bigram counts: far below ln V, close
  // to the Markov step's entropy (motif tokens, unpredictable from one token back, add a little).
  std::map<std::pair<std::uint32_t, std::uint32_t>, double> pairs;
  std::vector<double> firsts(vocab, 0.0);
  for (std::size_t i = 0; i + 1 < a.size(); ++i) {
    pairs[{a[i], a[i + 1]}] += 1;
    firsts[a[i]] += 1;
  }
  double h = 0;
  const double n = static_cast<double>(a.size() - 1);
  for (const auto& [pair, count] : pairs)
    h -= count / n * std::log(count / firsts[pair.first]);
  const double markov = synth_markov_entropy_nats(vocab);
  INFO("empirical bigram entropy " << h << " nats, Markov step " << markov << ", ln V "
                                   << std::log(64.0));
  CHECK(h < 0.6 * std::log(64.0));
  CHECK(h > markov - 0.1);

  // The documented figure: 1.875 + 0.0625 log2 V bits, 1.69 nats for V = 512.
  CHECK(synth_markov_entropy_nats(512) == Approx(1.6855).margin(1e-4));
  CHECK_THROWS_AS(synth_corpus(1, 10, 0), InputError);
}

TEST_CASE("the bytes tokenizer maps each byte to its value", "[tokenize]") {
  test::TempDir dir;
  const std::string text = "h\xc3\xa9llo\nworld\n";
  const auto input = dir.write("in.txt", text);
  const PrepareResult r = prepare_tokens(input, "bytes", dir / "out.bin");
  CHECK(r.num_tokens == text.size());
  CHECK(r.vocab_size == 256);
  const TokenFile tf = read_token_file(dir / "out.bin", 256);
  REQUIRE(tf.tokens.size() == text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    CHECK(tf.tokens[i] == static_cast<unsigned char>(text[i]));
  }
  // Widened to a model's vocabulary; refused when the model's is smaller.
  CHECK(prepare_tokens(input, "bytes", dir / "wide.bin", 512).vocab_size == 512);
  CHECK(read_token_file(dir / "wide.bin", 512).tokens == tf.tokens);
  CHECK_THROWS_WITH(prepare_tokens(input, "bytes", dir / "x.bin", 100),
                    Contains("more than the model's vocabulary of 100"));
  CHECK_FALSE(std::filesystem::exists(dir / "x.bin"));
  // Empty input, unknown tokenizers, missing models: one clear error, nothing written.
  const auto empty = dir.write("empty.txt", "");
  CHECK_THROWS_WITH(prepare_tokens(empty, "bytes", dir / "e.bin"), Contains("no text"));
  CHECK_FALSE(std::filesystem::exists(dir / "e.bin"));
  CHECK_THROWS_WITH(make_tokenizer("gpt2"), Contains("unknown tokenizer \"gpt2\""));
  CHECK_THROWS_AS(make_tokenizer("sentencepiece:" + (dir / "none.model").string()), InputError);
  CHECK_THROWS_AS(make_tokenizer("sentencepiece:"), InputError);
}

#ifdef MOETUNE_HAVE_SENTENCEPIECE_TRAIN
TEST_CASE("SentencePiece tokenizes with a model trained here", "[tokenize][sentencepiece]") {
  test::TempDir dir;
  std::string corpus;
  const std::vector<std::string> lines = {"the quick brown fox jumps over the lazy dog",
                                          "a mixture of experts routes each token to two experts",
                                          "the router picks the experts with the highest scores",
                                          "experts run in parallel on different devices"};
  for (int repeat = 0; repeat < 20; ++repeat) {
    for (const auto& line : lines)
      corpus += line + "\n";
  }
  const auto train_text = dir.write("train.txt", corpus);
  const std::string prefix = (dir / "sp").string();
  const auto status = sentencepiece::SentencePieceTrainer::Train(
      "--input=" + train_text.string() + " --model_prefix=" + prefix +
      " --vocab_size=60 --model_type=bpe --character_coverage=1.0 --minloglevel=2");
  REQUIRE(status.ok());
  const std::string spec = "sentencepiece:" + prefix + ".model";
  const auto tokenizer = make_tokenizer(spec);
  CHECK(tokenizer->vocab_size() == 60);

  const auto input = dir.write("in.txt", lines[0] + "\n\n" + lines[1] + "\r\n");
  const PrepareResult r = prepare_tokens(input, spec, dir / "out.bin");
  CHECK(r.documents == 2);
  CHECK(r.vocab_size == 60);
  const TokenFile tf = read_token_file(dir / "out.bin", 60);
  CHECK(tf.tokens.size() == r.num_tokens);

  // Each document decodes back to its line and ends with the model's end-of-sequence id.
  sentencepiece::SentencePieceProcessor sp;
  REQUIRE(sp.Load(prefix + ".model").ok());
  std::vector<int> ids(tf.tokens.begin(), tf.tokens.end());
  std::vector<std::string> docs;
  std::vector<int> current;
  for (int id : ids) {
    if (id == sp.eos_id()) {
      std::string text;
      REQUIRE(sp.Decode(current, &text).ok());
      docs.push_back(text);
      current.clear();
    } else {
      current.push_back(id);
    }
  }
  CHECK(current.empty());
  CHECK(docs == std::vector<std::string>{lines[0], lines[1]});
  CHECK_THROWS_WITH(make_tokenizer("sentencepiece:" + train_text.string()),
                    Contains("not a SentencePiece model"));
}
#else
TEST_CASE("SentencePiece tokenizes with a model trained here", "[tokenize][sentencepiece]") {
  // Built without libsentencepiece-dev's trainer library: nothing to train a model with here.
  WARN("skipped: built without SentencePiece's trainer library");
}
#endif
