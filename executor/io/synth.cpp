// The synthetic corpus: a sparse Markov chain with repeated motifs (see synth.hpp for the process).
#include "executor/io/synth.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <string>

#include "core/error.hpp"

namespace moetune::executor {

namespace {

constexpr double kNoise = 1.0 / 16.0;  // probability of a uniformly random next token
constexpr std::array<double, 4> kWeights = {8, 4, 2, 1};  // successor weights, normalised over k
constexpr std::uint64_t kNumMotifs = 16;
constexpr std::uint64_t kMinMotifLength = 8;
constexpr std::uint64_t kMaxMotifLength = 15;
constexpr double kMotifProbability = 1.0 / 32.0;  // chance that a position starts a motif

constexpr std::uint64_t rotl(std::uint64_t x, int k) {
  return (x << k) | (x >> (64 - k));
}

std::size_t successor_count(std::uint64_t vocab_size) {
  return static_cast<std::size_t>(std::min<std::uint64_t>(kWeights.size(), vocab_size));
}

// Probabilities of successors 0..k-1 from the Markov part alone (without the uniform noise).
std::array<double, 4> successor_probabilities(std::size_t k) {
  double total = 0;
  for (std::size_t j = 0; j < k; ++j)
    total += kWeights[j];
  std::array<double, 4> p{};
  for (std::size_t j = 0; j < k; ++j)
    p[j] = (1.0 - kNoise) * kWeights[j] / total;
  return p;
}

}  // namespace

std::uint64_t SplitMix64::next() {
  std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

Xoshiro256::Xoshiro256(std::uint64_t seed) {
  SplitMix64 sm(seed);
  for (std::uint64_t& s : s_)
    s = sm.next();
}

std::uint64_t Xoshiro256::next() {
  const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const std::uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

std::uint64_t Xoshiro256::below(std::uint64_t n) {
  MOETUNE_CHECK(n > 0, "below(0)");
  // Values under `threshold` would make some results one more likely than others.
  const std::uint64_t threshold = (0 - n) % n;
  for (;;) {
    const std::uint64_t x = next();
    if (x >= threshold) return x % n;
  }
}

double Xoshiro256::uniform() {
  return static_cast<double>(next() >> 11) * 0x1.0p-53;
}

std::vector<std::uint32_t> synth_corpus(std::uint64_t vocab_size, std::uint64_t num_tokens,
                                        std::uint64_t seed) {
  if (vocab_size < 2 || vocab_size > (std::uint64_t{1} << 32)) {
    throw InputError("synthetic corpus: vocabulary size " + std::to_string(vocab_size) +
                     " is out of range [2, 2^32]");
  }
  Xoshiro256 rng(seed);
  const std::size_t k = successor_count(vocab_size);
  const std::array<double, 4> p = successor_probabilities(k);

  // successors[a * k + j]: the j-th likely successor of token a, distinct for each a.  [V, k]
  std::vector<std::uint32_t> successors(vocab_size * k);
  for (std::uint64_t a = 0; a < vocab_size; ++a) {
    std::uint32_t* row = successors.data() + a * k;
    for (std::size_t j = 0; j < k; ++j) {
      std::uint32_t s;
      do {
        s = static_cast<std::uint32_t>(rng.below(vocab_size));
      } while (std::find(row, row + j, s) != row + j);
      row[j] = s;
    }
  }
  std::vector<std::vector<std::uint32_t>> motifs(kNumMotifs);
  for (auto& motif : motifs) {
    motif.resize(kMinMotifLength + rng.below(kMaxMotifLength - kMinMotifLength + 1));
    for (auto& token : motif)
      token = static_cast<std::uint32_t>(rng.below(vocab_size));
  }

  std::vector<std::uint32_t> tokens;
  tokens.reserve(num_tokens);
  std::uint32_t current = static_cast<std::uint32_t>(rng.below(vocab_size));
  while (tokens.size() < num_tokens) {
    if (rng.uniform() < kMotifProbability) {
      const auto& motif = motifs[rng.below(kNumMotifs)];
      for (std::uint32_t token : motif) {
        if (tokens.size() == num_tokens) break;
        tokens.push_back(token);
      }
      current = tokens.back();
      continue;
    }
    double u = rng.uniform();
    std::uint32_t next = 0;
    bool chosen = false;
    for (std::size_t j = 0; j < k && !chosen; ++j) {
      if (u < p[j]) {
        next = successors[current * k + j];
        chosen = true;
      }
      u -= p[j];
    }
    if (!chosen) next = static_cast<std::uint32_t>(rng.below(vocab_size));
    tokens.push_back(next);
    current = next;
  }
  return tokens;
}

double synth_markov_entropy_nats(std::uint64_t vocab_size) {
  if (vocab_size < 2) return 0;
  const std::size_t k = successor_count(vocab_size);
  const std::array<double, 4> p = successor_probabilities(k);
  const double v = static_cast<double>(vocab_size);
  const double noise_each = kNoise / v;  // every token also gets this much from the noise
  double h = 0;
  for (std::size_t j = 0; j < k; ++j) {
    const double q = p[j] + noise_each;
    h -= q * std::log(q);
  }
  h -= (v - static_cast<double>(k)) * noise_each * std::log(noise_each);
  return h;
}

}  // namespace moetune::executor
