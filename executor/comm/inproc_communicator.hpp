// The in-process communicator: W ranks as W threads of one process, each with its own backend
// (the CPU backend, or on a machine with one GPU a CUDA backend with its own stream). Ranks
// exchange pointers through a shared InprocWorld and move the bytes themselves with their
// backend's DeviceMemory (copies and sums enqueued on their own stream), so the executor's
// multi-rank paths run in one test process, without MPI or several GPUs.
//
// Every group of a rank is made by make_inproc_groups from core's Mesh, in the same member order
// as make_mpi_groups and make_nccl_groups. Collectives are matched by call order within a group,
// as MPI's are: every member must call the same collectives in the same order.
//
// Faults: a rank that throws must not leave its peers waiting. run_inproc_ranks aborts the world
// when a body throws (every wait then ends with InternalError) and when a body returns while
// peers still wait for it in a collective; it joins every thread and rethrows the first error.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

#include "core/layout.hpp"
#include "executor/comm/communicator.hpp"

namespace moetune::executor {

// The state W in-process ranks share: the groups being formed, and the abort and finished flags
// that end every wait. Outlives every communicator made from it. Once aborted it stays aborted.
class InprocWorld {
 public:
  explicit InprocWorld(int world_size);
  ~InprocWorld();
  InprocWorld(const InprocWorld&) = delete;
  InprocWorld& operator=(const InprocWorld&) = delete;

  int world_size() const;
  // Wakes every rank waiting in a collective of this world with InternalError ("another rank
  // failed"), and makes every later collective throw the same. Safe from any thread, idempotent.
  void abort();
  bool aborted() const;
  // Says that `rank` will call no more collectives (its body returned): a peer that waits for it
  // in a collective throws instead of waiting forever. run_inproc_ranks calls it.
  void mark_finished(int rank);

  struct State;  // defined in inproc_communicator.cpp

 private:
  friend ProcessGroups make_inproc_groups(InprocWorld& world, const Layout& layout,
                                          std::int64_t devices_per_node, int world_rank,
                                          DeviceMemory* memory);
  std::unique_ptr<State> state_;
};

// The world communicator and every group of kAllGroups for `world_rank`, members in the Mesh's
// order. Like MPI_Comm_split it is collective: every rank of the world calls it, the same number
// of times, and the n-th call of each rank forms one set of groups. `memory` is the rank's
// backend (null: host memory); the host forms (*_host) always use host memory.
ProcessGroups make_inproc_groups(InprocWorld& world, const Layout& layout,
                                 std::int64_t devices_per_node, int world_rank,
                                 DeviceMemory* memory);

// Runs body(rank) for every rank of `world` on its own thread. When a body throws, the world is
// aborted so the others stop waiting; when every thread has been joined, the first exception (the
// root cause, not the "another rank failed" it caused) is rethrown.
void run_inproc_ranks(InprocWorld& world, const std::function<void(int rank)>& body);

}  // namespace moetune::executor
