// The distributed optimizer (ZeRO-1 over the replicas, Megatron's --use-distributed-optimizer).
// Every unit of a rank's state vector (a layer's dense part, its experts, the embedding, the final
// norm and head: the hs shards with sharding, the whole units without) is split again into equal
// chunks over the unit's replicate group (dense: ep x rep, experts: rep). Rank r of that group
// owns chunk r: it alone keeps Adam state for it and updates it. Gradients are reduce-scattered
// over the group (each rank receives the sum of its chunk) instead of all-reduced, and after the
// update the chunks are all-gathered, so every replica again holds the whole (shard of the)
// parameters. Checkpoints keep the whole-vector format: the Adam state is gathered to write it and
// a rank takes its chunks back when it reads it, so any layout can resume from any other.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "executor/backend.hpp"
#include "executor/comm/communicator.hpp"
#include "executor/sharding.hpp"

namespace moetune::executor {

class DistributedOptimizer {
 public:
  // `units` index the state vector: by shard_offset when `sharded` (the concatenated hs shards),
  // else by begin (the whole local flat buffer). Each unit's chunk count is its size (u.shard).
  DistributedOptimizer(Backend& be, const std::vector<ShardUnit>& units, bool sharded,
                       Communicator& dense, Communicator& expert);

  // Floats of Adam state (per moment) this rank keeps: a whole chunk per unit, padded.
  std::int64_t owned_floats() const { return owned_floats_; }

  struct Owned {
    std::int64_t unit = 0;   // index into the units
    std::int64_t index = 0;  // first owned element within the unit (0 .. u.shard)
    std::int64_t at = 0;     // the same element in the state vector
    std::int64_t count = 0;  // owned elements that exist (the last chunks may be short or empty)
    std::int64_t state = 0;  // offset of this chunk in the owned Adam state
  };
  const std::vector<Owned>& owned() const { return owned_; }

  // Vectors live in the backend's memory. grads: afterwards each owned range holds the sum over
  // the unit's replicas (the rest of the vector is left as it was and must not be used).
  void reduce_scatter(float* grads);
  // params: every rank's owned ranges, updated, gathered back into the whole vector.
  void all_gather(float* params);
  // The whole vector of a per-element state (Adam m or v) from every rank's owned chunks.
  void gather_state(const float* owned_state, float* whole);
  // This rank's chunks of a whole per-element state vector.
  void take_state(const float* whole, float* owned_state) const;

 private:
  struct Piece {
    std::int64_t base = 0, count = 0, chunk = 0;
    Communicator* group = nullptr;
  };
  std::vector<Piece> pieces_;
  std::vector<Owned> owned_;
  std::int64_t owned_floats_ = 0;
  Backend& be_;
  Buffer send_, recv_;  // staging, one padded unit
};

}  // namespace moetune::executor
