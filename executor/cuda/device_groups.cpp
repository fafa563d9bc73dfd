// make_device_groups for the CUDA backend: every group of the layout over NCCL, bootstrapped
// through MPI (rank 0's unique id broadcast, one ncclCommSplit per group), each communicator
// enqueuing on the backend's stream so collectives and the model's kernels stay in order
// without host waits.
#include "core/error.hpp"
#include "executor/backend.hpp"
#include "executor/comm/nccl_communicator.hpp"
#include "executor/cuda/cuda_backend.hpp"

namespace moetune::executor {

ProcessGroups make_device_groups(Backend& backend, const Layout& layout,
                                 std::int64_t devices_per_node) {
  auto* cuda = dynamic_cast<gpu::CudaBackend*>(&backend);
  if (cuda == nullptr) {
    throw InputError("several " + backend.name() +
                     " ranks train over MPI (make_mpi_groups), not over NCCL");
  }
  return make_nccl_groups(layout, devices_per_node, cuda->device(), cuda->stream());
}

}  // namespace moetune::executor
