// The NCCL communicator: the Communicator interface over device memory (every pointer passed to
// it is a device pointer). Each call enqueues on the communicator's stream and waits for it, so
// the interface keeps the MPI communicator's synchronous meaning and its per-kind time and bytes;
// the *_async calls let a GPU model overlap collectives with compute on its own streams (the caller
// orders them with events). Bootstrap: one rank (ncclCommInitAll on the current device), or several
// ranks through MPI (rank 0's ncclUniqueId broadcast over MPI_COMM_WORLD, then one ncclCommSplit
// per group of the Layout, as the MPI communicator splits).
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include <memory>
#include <stdexcept>

#include "core/layout.hpp"
#include "executor/comm/communicator.hpp"

namespace moetune::executor {

void check_nccl(ncclResult_t result, const char* expr, const char* file, int line);
#define NCCL_CHECK(expr) ::moetune::executor::check_nccl((expr), #expr, __FILE__, __LINE__)

class NcclCommunicator final : public Communicator {
 public:
  // Takes ownership of `comm` (destroyed with the communicator); creates its own stream.
  explicit NcclCommunicator(ncclComm_t comm);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "nccl"; }
  ncclComm_t comm() const { return comm_; }
  cudaStream_t stream() const { return stream_; }

  void all_gather(const float* send, float* recv, std::int64_t count) override;
  void reduce_scatter(const float* send, float* recv, std::int64_t count) override;
  void all_reduce(float* data, std::int64_t count) override;
  void all_reduce(double* data, std::int64_t count) override;
  void all_reduce(std::int64_t* data, std::int64_t count) override;
  void all_to_all(const float* send, std::span<const std::int64_t> send_counts, float* recv,
                  std::span<const std::int64_t> recv_counts) override;
  void all_to_all(const std::int64_t* send, std::span<const std::int64_t> send_counts,
                  std::int64_t* recv, std::span<const std::int64_t> recv_counts) override;
  void broadcast(float* data, std::int64_t count, int root) override;
  void barrier() override;
  void send(const float* data, std::int64_t count, int peer) override;
  void recv(float* data, std::int64_t count, int peer) override;

  // Enqueued on `stream` without waiting (any NCCL type; counts in elements). Not recorded in
  // stats(): the caller times them with events.
  void all_gather_async(const void* send, void* recv, std::int64_t count, ncclDataType_t type,
                        cudaStream_t stream);
  void reduce_scatter_async(const void* send, void* recv, std::int64_t count, ncclDataType_t type,
                            cudaStream_t stream);
  void all_reduce_async(void* data, std::int64_t count, ncclDataType_t type, cudaStream_t stream);

  // A new communicator of the ranks passing the same colour, ordered by key (ncclCommSplit).
  std::unique_ptr<NcclCommunicator> split(int color, int key);

 private:
  template <typename T>
  void all_to_all_impl(const T* send, std::span<const std::int64_t> send_counts, T* recv,
                       std::span<const std::int64_t> recv_counts, ncclDataType_t type);
  void finish(const char* kind, double bytes, cudaEvent_t start);

  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
  int rank_ = 0, size_ = 1;
  float* barrier_word_ = nullptr;  // one device float for barrier()
};

// One rank on the current CUDA device: every group is this same single-rank communicator kind.
ProcessGroups make_nccl_local_groups();

#ifdef MOETUNE_HAVE_MPI
// Every group of `layout` for this MPI rank, over NCCL, on CUDA device `device` (usually the
// node-local rank). MPI must be initialised; world size must equal the layout's.
ProcessGroups make_nccl_groups(const Layout& layout, std::int64_t devices_per_node, int device);
#endif

}  // namespace moetune::executor
