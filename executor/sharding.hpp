// Hybrid-sharding units and checkpoint re-sharding. A unit is a contiguous range of a rank's flat
// parameter buffer (a layer's dense part, its experts, the embedding, the final norm and head),
// split into hs equal (padded) shards. Re-sharding reads the per-rank checkpoints of any layout
// and rebuilds whole tensors, from which any other layout takes its blocks.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "core/plan.hpp"
#include "executor/parameters.hpp"

namespace moetune::executor {

struct ShardUnit {
  std::int64_t begin = 0, end = 0;  // range in the flat parameter buffer
  bool experts = false;
  std::int64_t shard = 0;         // floats per rank (padded)
  std::int64_t shard_offset = 0;  // into a rank's concatenated shards
};

std::vector<ShardUnit> shard_units(const ParameterLayout& layout, const ModelSpec& model,
                                   std::int64_t hs);
// Floats in a rank's concatenated shards.
std::int64_t shard_floats(const std::vector<ShardUnit>& units);
// Copies rank `hs_rank`'s shards out of a whole local flat buffer, and back in.
void take_shards(const std::vector<ShardUnit>& units, std::int64_t hs_rank, const float* flat,
                 float* shards);
void put_shards(const std::vector<ShardUnit>& units, std::int64_t hs_rank, const float* shards,
                float* flat);

// Whole tensors (parameters and Adam moments) of a step's checkpoint written by `saved` (any
// world size and layout) under `checkpoint_dir`.
struct WholeTensor {
  std::vector<float> param, exp_avg, exp_avg_sq;  // [product(full_shape)]
};
std::map<std::string, WholeTensor> load_whole_model(const std::filesystem::path& checkpoint_dir,
                                                    std::int64_t step, const Plan& saved);

// The folder of one rank's checkpoint of a step: D/step-N for one rank, D/rank-RRRRR/step-N else.
std::filesystem::path rank_checkpoint_root(const std::filesystem::path& checkpoint_dir,
                                           std::int64_t rank, std::int64_t world_size);

}  // namespace moetune::executor
