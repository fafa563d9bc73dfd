// The MPI communicator (OpenMPI): one MPI communicator per process group, split from the world by
// core's Mesh, so every rank agrees on the members of its tp, ep, hs, ... groups.
#pragma once

#include <memory>

#include "core/layout.hpp"
#include "executor/comm/communicator.hpp"

namespace moetune::executor {

// MPI_Init on construction (with MPI_THREAD_FUNNELED), MPI_Finalize on destruction; one per
// process.
class MpiRuntime {
 public:
  MpiRuntime(int* argc, char*** argv);
  ~MpiRuntime();
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;
  int world_rank() const;
  int world_size() const;
  // True when this process was started by mpirun/srun with more than one rank.
  static bool launched_with_several_ranks();
};

// The world communicator and every group of `layout` for this rank. The world size must equal the
// layout's world size.
ProcessGroups make_mpi_groups(const Layout& layout, std::int64_t devices_per_node);

}  // namespace moetune::executor
