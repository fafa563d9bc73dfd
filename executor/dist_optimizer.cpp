// The distributed optimizer: chunks of each unit over its replicate group.
#include "executor/dist_optimizer.hpp"

#include <algorithm>

namespace moetune::executor {

DistributedOptimizer::DistributedOptimizer(const std::vector<ShardUnit>& units, bool sharded,
                                           Communicator& dense, Communicator& expert) {
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
  send_.resize(static_cast<std::size_t>(staging));
  recv_.resize(static_cast<std::size_t>(staging));
}

void DistributedOptimizer::reduce_scatter(float* grads) {
  for (std::size_t i = 0; i < pieces_.size(); ++i) {
    const Piece& p = pieces_[i];
    const Owned& o = owned_[i];
    if (p.group->size() == 1) continue;
    const std::int64_t padded = p.chunk * p.group->size();
    std::copy(grads + p.base, grads + p.base + p.count, send_.begin());
    std::fill(send_.begin() + p.count, send_.begin() + padded, 0.0f);
    p.group->reduce_scatter(send_.data(), recv_.data(), p.chunk);
    std::copy(recv_.begin(), recv_.begin() + o.count, grads + o.at);
  }
}

void DistributedOptimizer::all_gather(float* params) {
  for (std::size_t i = 0; i < pieces_.size(); ++i) {
    const Piece& p = pieces_[i];
    const Owned& o = owned_[i];
    if (p.group->size() == 1) continue;
    std::copy(params + o.at, params + o.at + o.count, send_.begin());
    std::fill(send_.begin() + o.count, send_.begin() + p.chunk, 0.0f);
    p.group->all_gather(send_.data(), recv_.data(), p.chunk);
    std::copy(recv_.begin(), recv_.begin() + p.count, params + p.base);
  }
}

void DistributedOptimizer::gather_state(const float* owned_state, float* whole) {
  for (std::size_t i = 0; i < pieces_.size(); ++i) {
    const Piece& p = pieces_[i];
    const Owned& o = owned_[i];
    p.group->all_gather(owned_state + o.state, recv_.data(), p.chunk);
    std::copy(recv_.begin(), recv_.begin() + p.count, whole + p.base);
  }
}

void DistributedOptimizer::take_state(const float* whole, float* owned_state) const {
  for (std::size_t i = 0; i < pieces_.size(); ++i) {
    const Owned& o = owned_[i];
    float* out = owned_state + o.state;
    std::fill(out, out + pieces_[i].chunk, 0.0f);
    std::copy(whole + o.at, whole + o.at + o.count, out);
  }
}

}  // namespace moetune::executor
