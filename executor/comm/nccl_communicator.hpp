// The NCCL communicator: the Communicator interface over device memory, one GPU per rank. Every
// collective is enqueued on the compute stream given at construction (the backend's stream), so
// the model's kernels and its collectives are ordered by that stream alone, without host waits.
// A pair of CUDA events around each call gives its time; settle() (called by stats()) waits for
// the last one and folds the times into the records. The host forms stage through a small device
// scratch the communicator owns (copy in, collective, copy out) and wait for the result.
// Bootstrap: one rank (ncclCommInitAll on the current device), or several ranks through MPI (rank
// 0's ncclUniqueId broadcast over MPI_COMM_WORLD, then one ncclCommSplit per group of the Layout,
// with the same colours and keys as the MPI communicator's splits).
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include <deque>
#include <memory>
#include <vector>

#include "core/layout.hpp"
#include "executor/comm/communicator.hpp"

namespace moetune::executor {

void check_nccl(ncclResult_t result, const char* expr, const char* file, int line);
#define NCCL_CHECK(expr) ::moetune::executor::check_nccl((expr), #expr, __FILE__, __LINE__)

class NcclCommunicator final : public Communicator {
 public:
  // Takes ownership of `comm` (destroyed with the communicator). Enqueues on `stream`, which it
  // does not own: the stream must outlive the communicator.
  NcclCommunicator(ncclComm_t comm, cudaStream_t stream);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "nccl"; }
  bool device_memory() const override { return true; }
  ncclComm_t comm() const { return comm_; }
  cudaStream_t stream() const { return stream_; }

  // A new communicator of the ranks passing the same colour, ordered by key (ncclCommSplit), on
  // the same stream. Collective over this communicator's ranks.
  std::unique_ptr<NcclCommunicator> split(int color, int key);

 protected:
  void do_all_gather(const void* send, void* recv, std::int64_t count, DType type) override;
  void do_reduce_scatter(const void* send, void* recv, std::int64_t count, DType type) override;
  void do_all_reduce(void* data, std::int64_t count, DType type) override;
  void do_all_to_all(const void* send, std::span<const std::int64_t> send_counts, void* recv,
                     std::span<const std::int64_t> recv_counts, DType type) override;
  void do_broadcast(void* data, std::int64_t count, DType type, int root) override;
  // An all-reduce of one word, waited for: a barrier for the host as well as the devices.
  void do_barrier() override;
  void do_send(const void* data, std::int64_t count, DType type, int peer) override;
  void do_recv(void* data, std::int64_t count, DType type, int peer) override;
  void do_all_reduce_host(void* data, std::int64_t count, DType type) override;
  void do_all_gather_host(const void* send, void* recv, std::int64_t count, DType type) override;
  void do_all_to_all_host(const std::int64_t* send, std::span<const std::int64_t> send_counts,
                          std::int64_t* recv, std::span<const std::int64_t> recv_counts) override;
  void settle() override;

 private:
  // One enqueued call whose time is not yet in the records.
  struct Pending {
    const char* kind;
    double bytes;
    cudaEvent_t start, stop;
  };
  // Records events around what `enqueue` puts on the stream.
  template <typename Enqueue>
  void timed(const char* kind, double bytes, Enqueue&& enqueue);
  // Folds finished calls into the records, oldest first; with `wait`, waits for all of them.
  void fold(bool wait);
  cudaEvent_t take_event();
  // Device scratch of at least `bytes` for the host forms and the barrier; idle whenever it is
  // asked for, because every user of it waits for the stream before returning.
  void* scratch(std::size_t bytes);
  void all_to_all_on_stream(const void* send, std::span<const std::int64_t> send_counts, void* recv,
                            std::span<const std::int64_t> recv_counts, DType type);

  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  int rank_ = 0, size_ = 1;
  std::deque<Pending> pending_;
  std::vector<cudaEvent_t> free_events_;
  void* scratch_ = nullptr;
  std::size_t scratch_bytes_ = 0;
};

// One rank on the current CUDA device, enqueuing on `stream`: every group is a one-rank
// communicator of its own.
ProcessGroups make_nccl_local_groups(cudaStream_t stream);

#ifdef MOETUNE_HAVE_MPI
// Every group of `layout` for this MPI rank, over NCCL, on CUDA device `device` (usually the
// node-local rank), enqueuing on `stream` (the backend's, on that device). MPI must be
// initialised; the world size must equal the layout's.
ProcessGroups make_nccl_groups(const Layout& layout, std::int64_t devices_per_node, int device,
                               cudaStream_t stream);
#endif

}  // namespace moetune::executor
