// The bytes and SentencePiece tokenizers and `prepare_tokens`.
#include "executor/io/tokenize.hpp"

#include <fstream>

#include "core/error.hpp"
#include "executor/io/binary_io.hpp"
#include "executor/io/token_file.hpp"

#ifdef MOETUNE_HAVE_SENTENCEPIECE
#include <sentencepiece_processor.h>
#endif

namespace moetune::executor {

namespace fs = std::filesystem;

namespace {

constexpr std::string_view kSentencePiecePrefix = "sentencepiece:";

class BytesTokenizer final : public Tokenizer {
 public:
  std::string name() const override { return "bytes"; }
  std::uint64_t vocab_size() const override { return 256; }
  std::vector<std::uint32_t> encode_document(std::string_view text) const override {
    std::vector<std::uint32_t> ids(text.size());
    for (std::size_t i = 0; i < text.size(); ++i)
      ids[i] = static_cast<unsigned char>(text[i]);
    return ids;
  }
};

#ifdef MOETUNE_HAVE_SENTENCEPIECE
class SentencePieceTokenizer final : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(std::string model) : model_(std::move(model)) {
    std::error_code ec;
    if (!fs::is_regular_file(model_, ec)) {
      throw InputError("sentencepiece:" + model_ + ": no such model file");
    }
    const auto status = processor_.Load(model_);
    if (!status.ok()) {
      throw InputError("sentencepiece:" + model_ + ": not a SentencePiece model (" +
                       std::string(status.message()) + ")");
    }
  }
  std::string name() const override { return "sentencepiece:" + model_; }
  std::uint64_t vocab_size() const override {
    return static_cast<std::uint64_t>(processor_.GetPieceSize());
  }
  std::vector<std::uint32_t> encode_document(std::string_view text) const override {
    std::vector<int> pieces;
    const auto status = processor_.Encode(text, &pieces);
    if (!status.ok()) {
      throw InputError("sentencepiece:" + model_ + ": cannot encode text (" +
                       std::string(status.message()) + ")");
    }
    if (processor_.eos_id() >= 0) pieces.push_back(processor_.eos_id());
    return std::vector<std::uint32_t>(pieces.begin(), pieces.end());
  }

 private:
  std::string model_;
  sentencepiece::SentencePieceProcessor processor_;
};
#endif

}  // namespace

bool have_sentencepiece() {
#ifdef MOETUNE_HAVE_SENTENCEPIECE
  return true;
#else
  return false;
#endif
}

std::unique_ptr<Tokenizer> make_tokenizer(const std::string& spec) {
  if (spec == "bytes") return std::make_unique<BytesTokenizer>();
  if (spec.starts_with(kSentencePiecePrefix)) {
    const std::string model = spec.substr(kSentencePiecePrefix.size());
    if (model.empty())
      throw InputError("tokenizer \"" + spec + "\": give the model path after ':'");
#ifdef MOETUNE_HAVE_SENTENCEPIECE
    return std::make_unique<SentencePieceTokenizer>(model);
#else
    throw InputError("tokenizer \"" + spec +
                     "\": this moetune was built without SentencePiece "
                     "(install libsentencepiece-dev and rebuild), so only \"bytes\" is available");
#endif
  }
  throw InputError("unknown tokenizer \"" + spec + "\"; use bytes or sentencepiece:MODEL_FILE");
}

PrepareResult prepare_tokens(const fs::path& input_text_file, const std::string& tokenizer_spec,
                             const fs::path& out, std::optional<std::uint64_t> vocab_size) {
  const std::unique_ptr<Tokenizer> tokenizer = make_tokenizer(tokenizer_spec);
  PrepareResult result;
  result.vocab_size = tokenizer->vocab_size();
  if (vocab_size) {
    if (*vocab_size < tokenizer->vocab_size()) {
      throw InputError(
          "tokenizer " + tokenizer->name() + " has " + std::to_string(tokenizer->vocab_size()) +
          " tokens, more than the model's vocabulary of " + std::to_string(*vocab_size));
    }
    result.vocab_size = *vocab_size;
  }
  const std::string text = read_file_bytes(input_text_file);
  std::vector<std::uint32_t> tokens;
  if (tokenizer_spec == "bytes") {
    tokens = tokenizer->encode_document(text);
    result.documents = text.empty() ? 0 : 1;
  } else {
    std::size_t begin = 0;
    while (begin < text.size()) {
      std::size_t end = text.find('\n', begin);
      if (end == std::string::npos) end = text.size();
      std::string_view line(text.data() + begin, end - begin);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (!line.empty()) {
        const std::vector<std::uint32_t> ids = tokenizer->encode_document(line);
        tokens.insert(tokens.end(), ids.begin(), ids.end());
        ++result.documents;
      }
      begin = end + 1;
    }
  }
  if (tokens.empty()) {
    throw InputError(input_text_file.string() + ": no text to tokenize; " + out.string() +
                     " was not written");
  }
  write_token_file(out, tokens, result.vocab_size);
  result.num_tokens = tokens.size();
  return result;
}

}  // namespace moetune::executor
