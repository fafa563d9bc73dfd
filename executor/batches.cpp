// Token windows for training.
#include "executor/batches.hpp"

#include "core/error.hpp"
#include "executor/io/synth.hpp"
#include "executor/io/token_file.hpp"

namespace moetune::executor {

namespace {

// Tokens of synthetic corpus made when no data is given: enough for many steps of small models
// without repeating a window often.
constexpr std::uint64_t kSynthTokens = std::uint64_t{1} << 21;

}  // namespace

TokenBatches::TokenBatches(const std::filesystem::path& data, std::uint64_t vocab, std::int64_t seq,
                           std::uint64_t seed)
    : seq_(seq) {
  tokens_ =
      data.empty() ? synth_corpus(vocab, kSynthTokens, seed) : read_token_file(data, vocab).tokens;
  if (tokens_.size() < static_cast<std::size_t>(seq + 1)) {
    throw InputError((data.empty() ? std::string("synthetic corpus") : data.string()) + ": " +
                     std::to_string(tokens_.size()) + " tokens, fewer than one sequence of " +
                     std::to_string(seq + 1));
  }
}

void TokenBatches::fill(std::int64_t step, std::int64_t micro, std::int64_t dp_rank,
                        std::int64_t dp_size, std::int64_t micro_batch, std::int64_t global_batch,
                        std::int32_t* ids, std::int32_t* targets) const {
  const auto windows = static_cast<std::int64_t>(tokens_.size()) - seq_;
  for (std::int64_t i = 0; i < micro_batch; ++i) {
    // Data-parallel rank d reads sequences [d * b, (d + 1) * b) of each micro-batch slot.
    const std::int64_t g = step * global_batch + (micro * dp_size + dp_rank) * micro_batch + i;
    const std::int64_t start = (g * seq_) % windows;
    for (std::int64_t s = 0; s < seq_; ++s) {
      const auto at = static_cast<std::size_t>(start + s);
      ids[i * seq_ + s] = static_cast<std::int32_t>(tokens_[at]);
      targets[i * seq_ + s] = static_cast<std::int32_t>(tokens_[at + 1]);
    }
  }
}

}  // namespace moetune::executor
