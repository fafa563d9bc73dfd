// Tokenizers for `moetune data prepare`: "bytes" (vocabulary 256, one token per byte) and
// "sentencepiece:PATH" (a SentencePiece model such as Mixtral's tokenizer.model, through Debian's
// libsentencepiece; a build without it refuses with a message saying so).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace moetune::executor {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // "bytes" or "sentencepiece:PATH".
  virtual std::string name() const = 0;
  virtual std::uint64_t vocab_size() const = 0;
  // Ids of one document. SentencePiece appends its end-of-sequence id when the model has one, so
  // documents stay apart in the token stream; bytes append nothing.
  virtual std::vector<std::uint32_t> encode_document(std::string_view text) const = 0;
};

// InputError for an unknown spec or a model file that cannot be loaded.
std::unique_ptr<Tokenizer> make_tokenizer(const std::string& spec);
// Whether this build can read SentencePiece models.
bool have_sentencepiece();

struct PrepareResult {
  std::uint64_t num_tokens = 0;
  std::uint64_t vocab_size = 0;  // as written into the token file
  std::uint64_t documents = 0;
};

// Tokenizes a text file into a token file (written atomically). With bytes the whole file is one
// document, byte for byte (newlines included). With SentencePiece every non-empty line is one
// document (the usual one-document-per-line corpus layout). `vocab_size` widens the file's
// vocabulary to a model's, which must be at least the tokenizer's ("bytes" for a model of 512).
PrepareResult prepare_tokens(const std::filesystem::path& input_text_file,
                             const std::string& tokenizer_spec, const std::filesystem::path& out,
                             std::optional<std::uint64_t> vocab_size = std::nullopt);

}  // namespace moetune::executor
