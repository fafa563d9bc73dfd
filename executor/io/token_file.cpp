// Token files: writing (atomic) and strict reading.
#include "executor/io/token_file.hpp"

#include <algorithm>
#include <cstring>
#include <string>

#include "core/error.hpp"
#include "executor/io/binary_io.hpp"

namespace moetune::executor {

namespace fs = std::filesystem;

namespace {

constexpr std::uint64_t kMaxVocab = std::uint64_t{1} << 32;  // ids are stored as at most uint32

// Header from the first bytes of a file of `file_size` bytes; every field checked.
TokenFileHeader parse_header(const fs::path& file, std::string_view head, std::uint64_t file_size) {
  const std::string name = file.string();
  if (file_size < kTokenFileHeaderBytes || head.size() < kTokenFileHeaderBytes) {
    throw InputError(name + ": not a moetune token file (only " + std::to_string(file_size) +
                     " bytes, shorter than the 32-byte header)");
  }
  if (std::memcmp(head.data(), kTokenFileMagic, sizeof kTokenFileMagic) != 0) {
    throw InputError(name +
                     ": not a moetune token file (bad magic; expected \"MOETOKEN\"); make "
                     "one with `moetune data prepare` or `moetune data synth`");
  }
  TokenFileHeader h;
  h.version = load_le<std::uint32_t>(head, 8);
  h.bytes_per_token = load_le<std::uint32_t>(head, 12);
  h.vocab_size = load_le<std::uint64_t>(head, 16);
  h.num_tokens = load_le<std::uint64_t>(head, 24);
  if (h.version != kTokenFileVersion) {
    throw InputError(name + ": token file version " + std::to_string(h.version) +
                     " is not supported (this moetune reads version 1)");
  }
  if (h.bytes_per_token != 2 && h.bytes_per_token != 4) {
    throw InputError(name + ": bytes_per_token is " + std::to_string(h.bytes_per_token) +
                     "; must be 2 or 4");
  }
  if (h.vocab_size == 0 || h.vocab_size > kMaxVocab) {
    throw InputError(name + ": vocabulary size " + std::to_string(h.vocab_size) +
                     " is out of range [1, 2^32]");
  }
  if (h.bytes_per_token == 2 && h.vocab_size > 65536) {
    throw InputError(name + ": 2-byte ids cannot hold a vocabulary of " +
                     std::to_string(h.vocab_size));
  }
  const std::uint64_t payload = file_size - kTokenFileHeaderBytes;
  if (h.num_tokens > payload / h.bytes_per_token || payload != h.num_tokens * h.bytes_per_token) {
    throw InputError(name + ": header says " + std::to_string(h.num_tokens) + " tokens of " +
                     std::to_string(h.bytes_per_token) + " bytes but the file holds " +
                     std::to_string(payload) + " bytes after the header (truncated or corrupted)");
  }
  return h;
}

}  // namespace

std::uint32_t bytes_per_token_for(std::uint64_t vocab_size) {
  return vocab_size <= 65536 ? 2 : 4;
}

void write_token_file(const fs::path& file, std::span<const std::uint32_t> tokens,
                      std::uint64_t vocab_size) {
  if (vocab_size == 0 || vocab_size > kMaxVocab) {
    throw InputError(file.string() + ": vocabulary size " + std::to_string(vocab_size) +
                     " is out of range [1, 2^32]");
  }
  const std::uint32_t width = bytes_per_token_for(vocab_size);
  std::string header;
  header.append(kTokenFileMagic, sizeof kTokenFileMagic);
  append_le<std::uint32_t>(header, kTokenFileVersion);
  append_le<std::uint32_t>(header, width);
  append_le<std::uint64_t>(header, vocab_size);
  append_le<std::uint64_t>(header, tokens.size());

  AtomicFileWriter out(file);
  out.write(header);
  // Converted and written in blocks so a large corpus needs no second full-size buffer.
  constexpr std::size_t kBlock = std::size_t{1} << 16;
  std::string block;
  block.reserve(kBlock * width);
  for (std::size_t begin = 0; begin < tokens.size(); begin += kBlock) {
    block.clear();
    const std::size_t end = std::min(tokens.size(), begin + kBlock);
    for (std::size_t i = begin; i < end; ++i) {
      if (tokens[i] >= vocab_size) {
        throw InputError(file.string() + ": token " + std::to_string(i) + " has id " +
                         std::to_string(tokens[i]) + ", not below the vocabulary size " +
                         std::to_string(vocab_size));
      }
      if (width == 2) {
        append_le<std::uint16_t>(block, static_cast<std::uint16_t>(tokens[i]));
      } else {
        append_le<std::uint32_t>(block, tokens[i]);
      }
    }
    out.write(block);
  }
  out.commit();
}

TokenFileHeader read_token_file_header(const fs::path& file) {
  std::error_code ec;
  if (!fs::is_regular_file(file, ec)) throw InputError(file.string() + ": no such token file");
  const std::uint64_t size = fs::file_size(file, ec);
  if (ec) throw InputError(file.string() + ": cannot read its size: " + ec.message());
  std::string head(kTokenFileHeaderBytes, '\0');
  if (size >= kTokenFileHeaderBytes) read_file_range(file, 0, kTokenFileHeaderBytes, head.data());
  return parse_header(file, head, size);
}

TokenFile read_token_file(const fs::path& file, std::optional<std::uint64_t> expected_vocab) {
  const std::string bytes = read_file_bytes(file);
  TokenFile result;
  result.header = parse_header(file, bytes, bytes.size());
  const TokenFileHeader& h = result.header;
  if (expected_vocab && *expected_vocab != h.vocab_size) {
    throw InputError(file.string() + ": written for vocabulary " + std::to_string(h.vocab_size) +
                     " but the model has " + std::to_string(*expected_vocab) +
                     "; prepare the data with the model's tokenizer");
  }
  result.tokens.resize(h.num_tokens);
  const std::string_view payload = std::string_view(bytes).substr(kTokenFileHeaderBytes);
  for (std::uint64_t i = 0; i < h.num_tokens; ++i) {
    const std::uint32_t id = h.bytes_per_token == 2 ? load_le<std::uint16_t>(payload, i * 2)
                                                    : load_le<std::uint32_t>(payload, i * 4);
    if (id >= h.vocab_size) {
      throw InputError(file.string() + ": token " + std::to_string(i) + " has id " +
                       std::to_string(id) + ", not below the vocabulary size " +
                       std::to_string(h.vocab_size) + " (corrupted file)");
    }
    result.tokens[i] = id;
  }
  return result;
}

}  // namespace moetune::executor
