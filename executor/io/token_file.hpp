// Token files: the training data the executor reads. Binary, little-endian:
//   magic "MOETOKEN" (8 bytes) | u32 version = 1 | u32 bytes_per_token (2 or 4)
//   | u64 vocab_size | u64 num_tokens | num_tokens ids of bytes_per_token each.
// Ids are uint16 when the vocabulary has at most 65536 entries, else uint32. Every id is below
// vocab_size, and a file is only read for a model with exactly that vocabulary.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <vector>

namespace moetune::executor {

inline constexpr char kTokenFileMagic[8] = {'M', 'O', 'E', 'T', 'O', 'K', 'E', 'N'};
inline constexpr std::uint32_t kTokenFileVersion = 1;
inline constexpr std::uint64_t kTokenFileHeaderBytes = 32;

struct TokenFileHeader {
  std::uint32_t version = kTokenFileVersion;
  std::uint32_t bytes_per_token = 0;
  std::uint64_t vocab_size = 0;
  std::uint64_t num_tokens = 0;
};

struct TokenFile {
  TokenFileHeader header;
  std::vector<std::uint32_t> tokens;  // [num_tokens]
};

// The id width a vocabulary gets: 2 bytes up to 65536 entries, else 4.
std::uint32_t bytes_per_token_for(std::uint64_t vocab_size);

// Writes atomically (temporary file in the same folder, fsync, rename). InputError when an id is
// not below `vocab_size` or the vocabulary does not fit uint32 ids.
void write_token_file(const std::filesystem::path& file, std::span<const std::uint32_t> tokens,
                      std::uint64_t vocab_size);

// Reads and checks only the header (magic, version, id width, length of the file).
TokenFileHeader read_token_file_header(const std::filesystem::path& file);

// Reads and validates the whole file: magic, version, id width, file length, every id below the
// vocabulary, and, when `expected_vocab` is given, that the file was written for that vocabulary
// ("data.bin: written for vocabulary 32000 but the model has 512"). Errors are InputError.
TokenFile read_token_file(const std::filesystem::path& file,
                          std::optional<std::uint64_t> expected_vocab);

}  // namespace moetune::executor
