// A deterministic synthetic corpus with structure a small model can learn, so moetune trains with
// nothing downloaded, and the small random-number generators it is built on.
//
// The process, with V = vocab_size:
//  - A sparse Markov chain: every token a has k = min(4, V) distinct successors s_0..s_{k-1}, drawn
//    once from the seed. The next token is s_j with probability (1 - eps) * w_j (w = 8:4:2:1,
//    normalised over the k successors), else (probability eps = 1/16) any token uniformly.
//  - Motifs: 16 fixed random sequences of 8-15 tokens. At every position, with probability 1/32, a
//    whole motif is emitted instead of a Markov step; the chain continues from its last token.
// Entropy: one Markov step has the entropy synth_markov_entropy_nats gives, close to
// 1.875 + 0.0625 log2 V bits: 1.69 nats for V = 512, against ln 512 = 6.24 nats for a uniform
// guess. About 73% of tokens are Markov steps and 27% lie in motifs, whose tokens after the first
// follow from context, so a model that learns both gets below that figure; an untrained one starts
// at ln V.
#pragma once

#include <cstdint>
#include <vector>

namespace moetune::executor {

// splitmix64 (Steele, Lea, Flood 2014): seeds other generators; every output of a 64-bit counter.
class SplitMix64 {
 public:
  explicit SplitMix64(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next();

 private:
  std::uint64_t state_;
};

// xoshiro256** (Blackman, Vigna 2018), seeded through splitmix64. The same sequence on every
// platform and standard library, unlike std::uniform_int_distribution.
class Xoshiro256 {
 public:
  explicit Xoshiro256(std::uint64_t seed);
  std::uint64_t next();
  // Uniform in [0, n), n > 0, without modulo bias (rejection of the short top range).
  std::uint64_t below(std::uint64_t n);
  // Uniform in [0, 1) with 53 random bits.
  double uniform();

 private:
  std::uint64_t s_[4];
};

// `num_tokens` ids in [0, vocab_size) from the process above; the same for the same arguments on
// every machine. InputError unless vocab_size >= 2.
std::vector<std::uint32_t> synth_corpus(std::uint64_t vocab_size, std::uint64_t num_tokens,
                                        std::uint64_t seed);

// Exact entropy, in nats, of one Markov step of synth_corpus's chain (the same for every token).
double synth_markov_entropy_nats(std::uint64_t vocab_size);

}  // namespace moetune::executor
