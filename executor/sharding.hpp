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
#include "executor/backend.hpp"
#include "executor/comm/communicator.hpp"
#include "executor/param_access.hpp"
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

// Hybrid sharding (FSDP style) of one rank's parameters over its hs group, in the backend's
// memory. The rank holds only its shards: fp32 master parameters, fp32 gradient accumulators
// and (when the backend computes in another type) the working copy of its shards. The model
// reads a parameter group (the embedding, a layer's dense part and experts, the final norm and
// head) from one of two gather slots: acquiring group g all-gathers its working shards unless
// it was prefetched, then prefetches the next group of the pass into the other slot; releasing
// frees the slot. In backward a group's gradients go to one of two fp32 gradient slots; a
// released group's slot is reduce-scattered into the shard accumulators when the next group is
// released (the order in which a GPU overlaps that reduce-scatter with the next layer's
// backward), or at the end of the pass. So a rank holds, per parameter group, shards plus at
// most two gathered groups and two groups of gradients, exactly what the simulator's memory
// model counts. (Communication is blocking, so the prefetch sets the order and memory of the
// real schedule but hides no time.)
class ShardedParameters final : public ParameterAccess {
 public:
  // `tp` (may be null) sums norm gradients over tensor-parallel ranks before the reduce-scatter.
  ShardedParameters(Backend& be, const ParameterLayout& layout, const ModelSpec& model,
                    Communicator& hs, Communicator* tp);

  const std::vector<ShardUnit>& units() const { return units_; }
  float* master() { return master_.f32(); }
  float* grad_shard() { return grad_shard_.f32(); }
  // The working copy of this rank's shards: the master itself when the backend computes in
  // fp32, else its own buffer (refreshed by the optimizer).
  void* working() { return working_.empty() ? master_.data() : working_.data(); }
  bool separate_working() const { return !working_.empty(); }
  std::int64_t shard_floats() const { return master_.count(); }
  // Floats of one gather slot (the largest group, each unit padded to whole shards).
  std::int64_t slot_floats() const { return slot_floats_; }
  // Bytes held: gathered parameter slots, and gradient slots.
  double gathered_bytes() const;
  double gradient_slot_bytes() const;

  void zero_grad();
  // The whole local fp32 parameters on the host (a collective over hs: every rank of the group
  // calls it).
  std::vector<float> gather_all();

  void acquire(std::int64_t group, bool backward) override;
  void release(std::int64_t group, bool backward) override;
  void end_pass(bool backward) override;
  const void* param(std::int64_t offset) override;
  float* grad(std::int64_t offset) override;

 private:
  struct Range {
    std::int64_t offset, numel;
  };
  std::int64_t unit_of(std::int64_t offset) const;
  std::int64_t group_of(std::int64_t unit) const;
  void gather(std::int64_t group, int slot);
  void reduce_scatter(int grad_slot);
  int grad_slot_of(std::int64_t group) const;
  // Where offset lands in a slot of this group's layout.
  std::int64_t slot_index(std::int64_t offset) const;

  Backend& be_;
  const ParameterLayout& layout_;
  Communicator& hs_;
  Communicator* tp_;
  DType act_;
  std::vector<ShardUnit> units_;
  std::vector<std::int64_t> unit_begins_;          // units_[i].begin, for lookups
  std::vector<std::int64_t> unit_group_;           // the group each unit belongs to
  std::vector<std::int64_t> unit_slot_offset_;     // unit's place in its group's slot
  std::vector<std::vector<std::int64_t>> groups_;  // units of each group
  std::vector<std::vector<Range>> group_norms_;    // norm tensors of each group
  Buffer master_, grad_shard_, working_;
  std::int64_t slot_floats_ = 0;
  Buffer slots_[2], grad_slots_[2];
  std::int64_t slot_group_[2] = {-1, -1};       // group gathered in each slot, -1: free
  std::int64_t grad_slot_group_[2] = {-1, -1};  // group whose gradients each slot holds
  int pending_ = -1;                            // gradient slot waiting for its reduce-scatter
};

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
