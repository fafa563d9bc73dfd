// The communicator interface the executor trains through: the collectives of one process group
// (all-gather, reduce-scatter, all-reduce, all-to-all with per-peer counts, broadcast, barrier,
// point-to-point), with time and bytes recorded per collective kind for run.jsonl. Implementations:
// `local` (one rank, no communication), `mpi` (OpenMPI), and `nccl` for GPUs later. The groups come
// from core's Mesh, so the executor and the simulator agree on who talks to whom.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/mesh.hpp"
#include "core/run_log.hpp"

namespace moetune::executor {

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;  // within this group
  virtual int size() const = 0;
  virtual std::string backend() const = 0;

  // recv[size * count] = every rank's send[count], in rank order.
  virtual void all_gather(const float* send, float* recv, std::int64_t count) = 0;
  // recv[count] = the sum over ranks of their send[rank * count .. (rank + 1) * count).
  virtual void reduce_scatter(const float* send, float* recv, std::int64_t count) = 0;
  // data[count] = the sum over ranks, in place.
  virtual void all_reduce(float* data, std::int64_t count) = 0;
  virtual void all_reduce(double* data, std::int64_t count) = 0;
  virtual void all_reduce(std::int64_t* data, std::int64_t count) = 0;
  // Rank r sends send_counts[p] floats to peer p (contiguous blocks in peer order) and receives
  // recv_counts[p] floats from peer p (contiguous, peer order). Counts must agree pairwise.
  virtual void all_to_all(const float* send, std::span<const std::int64_t> send_counts, float* recv,
                          std::span<const std::int64_t> recv_counts) = 0;
  virtual void all_to_all(const std::int64_t* send, std::span<const std::int64_t> send_counts,
                          std::int64_t* recv, std::span<const std::int64_t> recv_counts) = 0;
  virtual void broadcast(float* data, std::int64_t count, int root) = 0;
  virtual void barrier() = 0;
  virtual void send(const float* data, std::int64_t count, int peer) = 0;
  virtual void recv(float* data, std::int64_t count, int peer) = 0;

  // Calls, bytes (this rank's send volume, nccl-tests size convention) and seconds per kind:
  // "all_gather", "reduce_scatter", "all_reduce", "all_to_all", "broadcast", "p2p".
  const std::map<std::string, CollectiveRecord>& stats() const { return stats_; }
  void reset_stats() { stats_.clear(); }

 protected:
  void record(const char* kind, double bytes, double seconds);

 private:
  std::map<std::string, CollectiveRecord> stats_;
};

// One rank, no peers: every collective is a copy (or nothing).
std::unique_ptr<Communicator> make_local_communicator();

// Every group a rank takes part in, per DESIGN.md: tp, ep, hs, pp, the dense replicate group
// (ep x rep), the expert replicate group (rep) and the data-parallel group (ep x hs x rep).
struct ProcessGroups {
  std::unique_ptr<Communicator> world;
  std::map<Group, std::unique_ptr<Communicator>> groups;
  Communicator& operator[](Group g) const { return *groups.at(g); }
};

// For a single-process run: every group is the local communicator.
ProcessGroups make_local_groups();

}  // namespace moetune::executor
