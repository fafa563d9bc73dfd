// The distributed optimizer: chunks of each unit over its replicate group.
#include "executor/dist_optimizer.hpp"

#include <algorithm>

namespace moetune::executor {

namespace {
std::size_t bytes(std::int64_t floats) {
  return static_cast<std::size_t>(floats) * sizeof(float);
}
}  // namespace

DistributedOptimizer::DistributedOptimizer(Backend& be, const std::vector<ShardUnit>& units,
                                           bool sharded, Communicator& dense, Communicator& expert)
    : be_(be) {
  std::int64_t staging = 0;
  for (std::size_t i = 0; i < units.size(); ++i) {
    const ShardUnit& u = units[i];
    Piece p;
    p.base = sharded ? u.shard_offset : u.begin;
    p.count = u.shard;
    p.group = u.experts ? &expert : &dense;
    const std::int64_t r = p.group->size();
    p.chunk = (p.count + r - 1) / r;
    pieces_.push_back(p);
    Owned o;
    o.unit = static_cast<std::int64_t>(i);
    o.index = std::min(p.count, p.group->rank() * p.chunk);
    o.at = p.base + o.index;
    o.count = std::min(p.count, o.index + p.chunk) - o.index;
    o.state = owned_floats_;
    owned_.push_back(o);
    owned_floats_ += p.chunk;
    staging = std::max(staging, p.chunk * r);
  }
  send_.resize(be, staging, DType::F32);
  recv_.resize(be, staging, DType::F32);
}

void DistributedOptimizer::reduce_scatter(float* grads) {
  for (std::size_t i = 0; i < pieces_.size(); ++i) {
    const Piece& p = pieces_[i];
    const Owned& o = owned_[i];
    if (p.group->size() == 1) continue;
    const std::int64_t padded = p.chunk * p.group->size();
    be_.copy(send_.f32(), grads + p.base, bytes(p.count));
    be_.zero(send_.f32() + p.count, bytes(padded - p.count));
    p.group->reduce_scatter(send_.f32(), recv_.f32(), p.chunk);
    be_.copy(grads + o.at, recv_.f32(), bytes(o.count));
  }
}

void DistributedOptimizer::all_gather(float* params) {
  for (std::size_t i = 0; i < pieces_.size(); ++i) {
    const Piece& p = pieces_[i];
    const Owned& o = owned_[i];
    if (p.group->size() == 1) continue;
    be_.copy(send_.f32(), params + o.at, bytes(o.count));
    be_.zero(send_.f32() + o.count, bytes(p.chunk - o.count));
    p.group->all_gather(send_.f32(), recv_.f32(), p.chunk);
    be_.copy(params + p.base, recv_.f32(), bytes(p.count));
  }
}

void DistributedOptimizer::gather_state(const float* owned_state, float* whole) {
  for (std::size_t i = 0; i < pieces_.size(); ++i) {
    const Piece& p = pieces_[i];
    const Owned& o = owned_[i];
    p.group->all_gather(owned_state + o.state, recv_.f32(), p.chunk);
    be_.copy(whole + p.base, recv_.f32(), bytes(p.count));
  }
}

void DistributedOptimizer::take_state(const float* whole, float* owned_state) const {
  for (std::size_t i = 0; i < pieces_.size(); ++i) {
    const Owned& o = owned_[i];
    float* out = owned_state + o.state;
    be_.zero(out, bytes(pieces_[i].chunk));
    be_.copy(out, whole + o.at, bytes(o.count));
  }
}

}  // namespace moetune::executor
