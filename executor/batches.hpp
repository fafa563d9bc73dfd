// The token stream a training run reads, shared by the CPU and CUDA trainers: the built-in
// synthetic corpus or a token file, cut into windows of seq + 1 tokens. Sequence g of the run
// (g = step * global_batch + index) starts at g * seq modulo the windows that fit, so every step
// reads fresh text until the corpus wraps, the same on every run and every layout.
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

namespace moetune::executor {

class TokenBatches {
 public:
  // `data` empty: the synthetic corpus for `vocab` and `seed`. Throws InputError when the tokens
  // do not fill one sequence or do not fit the vocabulary.
  TokenBatches(const std::filesystem::path& data, std::uint64_t vocab, std::int64_t seq,
               std::uint64_t seed);

  // Micro-batch `micro` of optimizer step `step` as data-parallel rank `dp_rank` of `dp_size`
  // reads it: `micro_batch` sequences into ids[B*S] and targets[B*S] (the next tokens).
  void fill(std::int64_t step, std::int64_t micro, std::int64_t dp_rank, std::int64_t dp_size,
            std::int64_t micro_batch, std::int64_t global_batch, std::int32_t* ids,
            std::int32_t* targets) const;

 private:
  std::vector<std::uint32_t> tokens_;
  std::int64_t seq_ = 0;
};

}  // namespace moetune::executor
