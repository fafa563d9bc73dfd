// The expert-parallel token exchange: rows routed to experts owned by other ranks go there with a
// variable all-to-all (counts first, then rows) and come back the same way. Dispatch delivers the
// rows this rank's experts must process, regrouped expert-major ([local expert][source rank]
// [rows]) for the grouped GEMMs; combine sends expert outputs back in the sender's dispatch order.
// The backward of dispatch is combine and the other way round: the same moves, reversed.
#pragma once

#include <cstdint>
#include <vector>

#include "executor/comm/communicator.hpp"

namespace moetune::executor {

struct ExpertExchange {
  std::int64_t local_experts = 0;          // experts per rank; rank p owns [p * E_l, (p+1) * E_l)
  std::vector<std::int64_t> send_counts;   // [E] rows this rank routes to each global expert
  std::vector<std::int64_t> recv_counts;   // [peers * E_l] rows from peer p for local expert j
  std::vector<std::int64_t> local_counts;  // [E_l] rows each local expert processes
  std::int64_t recv_rows = 0;

  // Exchanges the counts; `counts[E]` are the rows per global expert in dispatch order.
  void plan(Communicator& ep, const std::int64_t* counts, std::int64_t num_experts);
  // rows[sum(counts), D] in dispatch order -> out[recv_rows, D] expert-major.
  void dispatch(Communicator& ep, const float* rows, std::int64_t d, std::vector<float>& out,
                std::vector<float>& staging) const;
  // in[recv_rows, D] expert-major -> rows[sum(counts), D] in this rank's dispatch order.
  void combine(Communicator& ep, const float* in, std::int64_t d, float* rows,
               std::vector<float>& staging) const;
};

}  // namespace moetune::executor
