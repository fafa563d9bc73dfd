// The layout rules, checked in one place. The planner uses them to prune the search (cheaply: a
// rejection is a code, its sentence is written only when someone asks), and the executor re-checks
// a plan it is given with the same function, so both refuse a layout for the same reason.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "core/hardware.hpp"
#include "core/layout.hpp"
#include "core/model_spec.hpp"
#include "core/train_spec.hpp"

namespace moetune {

enum class RejectCode : std::uint8_t {
  WorldSize,          // tp * pp * ep * hs * rep != devices
  TpNode,             // tp does not divide devices per node
  TpHeads,            // tp does not divide attention heads
  TpKvHeads,          // tp does not divide KV heads
  TpFfn,              // tp does not divide an FFN width
  TpVocab,            // tp does not divide the vocabulary (vocab-parallel embedding and head)
  TpSequence,         // tp does not divide seq_len (sequence parallel)
  PpLayers,           // pp does not divide the layers (even stages)
  StageSplit,         // uneven stages that do not add up, or not whole virtual stages
  VppWithoutPp,       // vpp > 1 needs pp > 1
  VppLayers,          // pp * vpp does not divide the layers
  EpExperts,          // ep does not divide the experts
  BatchSplit,         // global batch is not micro_batch * dp * a whole number
  PipelineUnfilled,   // fewer micro-batches than pipeline stages
  InterleaveBatches,  // interleaved 1F1B needs micro-batches to be a multiple of pp
  SeqTooLong,         // seq_len beyond max_position_embeddings
  NoFp8,              // fp8 on a device without fp8 tensor cores
  CpuPrecision,       // CPU devices train in fp32
  TpNotInnermost,     // the mesh order does not start with tp
};

struct Rejection {
  RejectCode code;
};

// First rule the layout breaks, or nothing when it is valid. Cheap: no allocation.
std::optional<Rejection> check_layout(const ModelSpec& model, const ClusterSpec& cluster,
                                      const TrainSpec& train, const Layout& layout);
// The sentence for a rejection: what is wrong and what would be valid.
std::string explain(Rejection rejection, const ModelSpec& model, const ClusterSpec& cluster,
                    const TrainSpec& train, const Layout& layout);
// Short stable name of a rule ("ep_experts"), for JSON and tests.
std::string to_string(RejectCode code);

// Number of micro-batches per optimizer step on each data-parallel rank.
std::int64_t grad_accum_steps(const TrainSpec& train, const Layout& layout);

}  // namespace moetune
