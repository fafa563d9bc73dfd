// Expert-parallel dispatch and combine over the EP group.
#include "executor/expert_exchange.hpp"

#include <algorithm>

#include "core/error.hpp"

namespace moetune::executor {

namespace {

// Copies rows between the [peer][local expert] layout all-to-all uses and the [local expert][peer]
// layout the grouped expert GEMMs need. counts[p * experts + j]: rows of peer p for expert j.
void regroup(float* dst, const float* src, const std::vector<std::int64_t>& counts,
             std::int64_t peers, std::int64_t experts, std::int64_t d, bool to_expert_major) {
  std::vector<std::int64_t> peer_major(counts.size()), expert_major(counts.size());
  std::int64_t at = 0;
  for (std::int64_t p = 0; p < peers; ++p) {
    for (std::int64_t j = 0; j < experts; ++j) {
      peer_major[static_cast<std::size_t>(p * experts + j)] = at;
      at += counts[static_cast<std::size_t>(p * experts + j)];
    }
  }
  at = 0;
  for (std::int64_t j = 0; j < experts; ++j) {
    for (std::int64_t p = 0; p < peers; ++p) {
      expert_major[static_cast<std::size_t>(p * experts + j)] = at;
      at += counts[static_cast<std::size_t>(p * experts + j)];
    }
  }
  for (std::size_t b = 0; b < counts.size(); ++b) {
    const std::int64_t from = to_expert_major ? peer_major[b] : expert_major[b];
    const std::int64_t to = to_expert_major ? expert_major[b] : peer_major[b];
    std::copy(src + from * d, src + (from + counts[b]) * d, dst + to * d);
  }
}

// Floats sent to and received from each peer.
void peer_volumes(const ExpertExchange& x, std::int64_t peers, std::int64_t d,
                  std::vector<std::int64_t>& send, std::vector<std::int64_t>& recv) {
  send.assign(static_cast<std::size_t>(peers), 0);
  recv.assign(static_cast<std::size_t>(peers), 0);
  const std::int64_t el = x.local_experts;
  for (std::int64_t p = 0; p < peers; ++p) {
    for (std::int64_t j = 0; j < el; ++j) {
      send[static_cast<std::size_t>(p)] += x.send_counts[static_cast<std::size_t>(p * el + j)] * d;
      recv[static_cast<std::size_t>(p)] += x.recv_counts[static_cast<std::size_t>(p * el + j)] * d;
    }
  }
}

}  // namespace

void ExpertExchange::plan(Communicator& ep, const std::int64_t* counts, std::int64_t num_experts) {
  const std::int64_t peers = ep.size();
  MOETUNE_CHECK(num_experts % peers == 0, "experts must split evenly over the EP group");
  local_experts = num_experts / peers;
  send_counts.assign(counts, counts + num_experts);
  recv_counts.assign(static_cast<std::size_t>(num_experts), 0);
  const std::vector<std::int64_t> per_peer(static_cast<std::size_t>(peers), local_experts);
  ep.all_to_all(send_counts.data(), per_peer, recv_counts.data(), per_peer);
  local_counts.assign(static_cast<std::size_t>(local_experts), 0);
  recv_rows = 0;
  for (std::int64_t p = 0; p < peers; ++p) {
    for (std::int64_t j = 0; j < local_experts; ++j) {
      const std::int64_t c = recv_counts[static_cast<std::size_t>(p * local_experts + j)];
      local_counts[static_cast<std::size_t>(j)] += c;
      recv_rows += c;
    }
  }
}

void ExpertExchange::dispatch(Communicator& ep, const float* rows, std::int64_t d,
                              std::vector<float>& out, std::vector<float>& staging) const {
  std::vector<std::int64_t> send, recv;
  peer_volumes(*this, ep.size(), d, send, recv);
  staging.resize(static_cast<std::size_t>(recv_rows * d));
  ep.all_to_all(rows, send, staging.data(), recv);
  out.resize(staging.size());
  regroup(out.data(), staging.data(), recv_counts, ep.size(), local_experts, d, true);
}

void ExpertExchange::combine(Communicator& ep, const float* in, std::int64_t d, float* rows,
                             std::vector<float>& staging) const {
  std::vector<std::int64_t> send, recv;
  peer_volumes(*this, ep.size(), d, send, recv);
  staging.resize(static_cast<std::size_t>(recv_rows * d));
  regroup(staging.data(), in, recv_counts, ep.size(), local_experts, d, false);
  ep.all_to_all(staging.data(), recv, rows, send);
}

}  // namespace moetune::executor
