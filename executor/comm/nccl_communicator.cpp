// NCCL implementation of the communicator interface: calls enqueued on the compute stream, timed
// by event pairs folded in at settle(), host forms staged through a device scratch; and its
// bootstrap (one rank, or MPI + ncclCommSplit per group).
#include "executor/comm/nccl_communicator.hpp"

#include <stdexcept>
#include <string>

#include "core/error.hpp"
#include "core/mesh.hpp"

#ifdef MOETUNE_HAVE_MPI
#include <mpi.h>
#endif

namespace moetune::executor {

namespace {

void check_cuda_call(cudaError_t status, const char* expr, const char* file, int line) {
  if (status == cudaSuccess) return;
  throw std::runtime_error(std::string(file) + ":" + std::to_string(line) + ": " + expr +
                           " failed: " + cudaGetErrorName(status) + " (" +
                           cudaGetErrorString(status) + ")");
}
#define COMM_CUDA_CHECK(expr) check_cuda_call((expr), #expr, __FILE__, __LINE__)

ncclDataType_t nccl_type(DType type) {
  switch (type) {
    case DType::F32:
      return ncclFloat32;
    case DType::BF16:
      return ncclBfloat16;
    case DType::F64:
      return ncclFloat64;
    case DType::I32:
      return ncclInt32;
    case DType::I64:
      return ncclInt64;
  }
  return ncclFloat32;
}

double bytes_of(std::int64_t count, DType type) {
  return static_cast<double>(count) * static_cast<double>(dtype_size(type));
}

std::size_t size_of(std::int64_t count, DType type) {
  return static_cast<std::size_t>(count) * dtype_size(type);
}

const char* at(const void* p, std::size_t bytes) {
  return static_cast<const char*>(p) + bytes;
}
char* at(void* p, std::size_t bytes) {
  return static_cast<char*>(p) + bytes;
}

// Calls whose times wait unfolded before the oldest is waited for: enough for a whole step's
// collectives, few enough that the events stay a small pool.
constexpr std::size_t kMaxPending = 4096;

}  // namespace

void check_nccl(ncclResult_t result, const char* expr, const char* file, int line) {
  if (result == ncclSuccess) return;
  throw std::runtime_error(std::string(file) + ":" + std::to_string(line) + ": " + expr +
                           " failed: " + ncclGetErrorString(result) + " (" +
                           std::to_string(static_cast<int>(result)) + ")");
}

NcclCommunicator::NcclCommunicator(ncclComm_t comm, cudaStream_t stream)
    : comm_(comm), stream_(stream) {
  NCCL_CHECK(ncclCommUserRank(comm_, &rank_));
  NCCL_CHECK(ncclCommCount(comm_, &size_));
}

NcclCommunicator::~NcclCommunicator() {
  // No throwing from a destructor: failures at teardown are ignored. Waiting for the last event
  // (not the stream, which may be gone) finishes this communicator's own calls.
  if (!pending_.empty()) cudaEventSynchronize(pending_.back().stop);
  for (const Pending& p : pending_) {
    cudaEventDestroy(p.start);
    cudaEventDestroy(p.stop);
  }
  for (cudaEvent_t e : free_events_)
    cudaEventDestroy(e);
  cudaFree(scratch_);
  ncclCommDestroy(comm_);
}

cudaEvent_t NcclCommunicator::take_event() {
  if (!free_events_.empty()) {
    cudaEvent_t e = free_events_.back();
    free_events_.pop_back();
    return e;
  }
  cudaEvent_t e = nullptr;
  COMM_CUDA_CHECK(cudaEventCreate(&e));
  return e;
}

template <typename Enqueue>
void NcclCommunicator::timed(const char* kind, double bytes, Enqueue&& enqueue) {
  fold(false);
  if (pending_.size() >= kMaxPending) {
    COMM_CUDA_CHECK(cudaEventSynchronize(pending_.front().stop));
    fold(false);
  }
  cudaEvent_t start = take_event();
  cudaEvent_t stop = nullptr;
  try {
    stop = take_event();
    COMM_CUDA_CHECK(cudaEventRecord(start, stream_));
    enqueue();
    COMM_CUDA_CHECK(cudaEventRecord(stop, stream_));
  } catch (...) {
    free_events_.push_back(start);
    if (stop != nullptr) free_events_.push_back(stop);
    throw;
  }
  pending_.push_back({kind, bytes, start, stop});
}

void NcclCommunicator::fold(bool wait) {
  // Events on one stream complete in the order they were recorded.
  if (wait && !pending_.empty()) COMM_CUDA_CHECK(cudaEventSynchronize(pending_.back().stop));
  while (!pending_.empty()) {
    const Pending& p = pending_.front();
    const cudaError_t done = cudaEventQuery(p.stop);
    if (done == cudaErrorNotReady) break;
    COMM_CUDA_CHECK(done);
    float ms = 0;
    COMM_CUDA_CHECK(cudaEventElapsedTime(&ms, p.start, p.stop));
    record(p.kind, p.bytes, static_cast<double>(ms) / 1e3);
    free_events_.push_back(p.start);
    free_events_.push_back(p.stop);
    pending_.pop_front();
  }
}

void NcclCommunicator::settle() {
  fold(true);
}

void* NcclCommunicator::scratch(std::size_t bytes) {
  if (bytes > scratch_bytes_) {
    std::size_t grown = 256;
    while (grown < bytes)
      grown *= 2;
    COMM_CUDA_CHECK(cudaFree(scratch_));
    scratch_ = nullptr;
    scratch_bytes_ = 0;
    COMM_CUDA_CHECK(cudaMalloc(&scratch_, grown));
    scratch_bytes_ = grown;
  }
  return scratch_;
}

void NcclCommunicator::do_all_gather(const void* send, void* recv, std::int64_t count, DType type) {
  MOETUNE_CHECK(count >= 0, "all_gather: negative count");
  timed("all_gather", bytes_of(count * size_, type), [&] {
    NCCL_CHECK(ncclAllGather(send, recv, static_cast<std::size_t>(count), nccl_type(type), comm_,
                             stream_));
  });
}

void NcclCommunicator::do_reduce_scatter(const void* send, void* recv, std::int64_t count,
                                         DType type) {
  MOETUNE_CHECK(count >= 0, "reduce_scatter: negative count");
  timed("reduce_scatter", bytes_of(count * size_, type), [&] {
    NCCL_CHECK(ncclReduceScatter(send, recv, static_cast<std::size_t>(count), nccl_type(type),
                                 ncclSum, comm_, stream_));
  });
}

void NcclCommunicator::do_all_reduce(void* data, std::int64_t count, DType type) {
  MOETUNE_CHECK(count >= 0, "all_reduce: negative count");
  timed("all_reduce", bytes_of(count, type), [&] {
    NCCL_CHECK(ncclAllReduce(data, data, static_cast<std::size_t>(count), nccl_type(type), ncclSum,
                             comm_, stream_));
  });
}

void NcclCommunicator::all_to_all_on_stream(const void* send,
                                            std::span<const std::int64_t> send_counts, void* recv,
                                            std::span<const std::int64_t> recv_counts, DType type) {
  MOETUNE_CHECK(send_counts.size() == static_cast<std::size_t>(size_) &&
                    recv_counts.size() == static_cast<std::size_t>(size_),
                "all_to_all: one count per peer");
  std::int64_t sent = 0;
  for (int p = 0; p < size_; ++p) {
    const auto i = static_cast<std::size_t>(p);
    MOETUNE_CHECK(send_counts[i] >= 0 && recv_counts[i] >= 0, "all_to_all: negative count");
    if (p != rank_) sent += send_counts[i];
  }
  timed("all_to_all", bytes_of(sent, type), [&] {
    // One group of sends and receives: NCCL schedules them together, so no pair waits for
    // another.
    std::size_t send_offset = 0, recv_offset = 0;
    NCCL_CHECK(ncclGroupStart());
    for (int p = 0; p < size_; ++p) {
      const auto i = static_cast<std::size_t>(p);
      const auto sc = static_cast<std::size_t>(send_counts[i]);
      const auto rc = static_cast<std::size_t>(recv_counts[i]);
      if (sc > 0) {
        NCCL_CHECK(ncclSend(at(send, send_offset), sc, nccl_type(type), p, comm_, stream_));
      }
      if (rc > 0) {
        NCCL_CHECK(ncclRecv(at(recv, recv_offset), rc, nccl_type(type), p, comm_, stream_));
      }
      send_offset += sc * dtype_size(type);
      recv_offset += rc * dtype_size(type);
    }
    NCCL_CHECK(ncclGroupEnd());
  });
}

void NcclCommunicator::do_all_to_all(const void* send, std::span<const std::int64_t> send_counts,
                                     void* recv, std::span<const std::int64_t> recv_counts,
                                     DType type) {
  all_to_all_on_stream(send, send_counts, recv, recv_counts, type);
}

void NcclCommunicator::do_broadcast(void* data, std::int64_t count, DType type, int root) {
  MOETUNE_CHECK(count >= 0 && root >= 0 && root < size_, "broadcast: bad count or root");
  timed("broadcast", bytes_of(count, type), [&] {
    NCCL_CHECK(ncclBroadcast(data, data, static_cast<std::size_t>(count), nccl_type(type), root,
                             comm_, stream_));
  });
}

void NcclCommunicator::do_barrier() {
  void* word = scratch(sizeof(float));
  NCCL_CHECK(ncclAllReduce(word, word, 1, ncclFloat32, ncclSum, comm_, stream_));
  COMM_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void NcclCommunicator::do_send(const void* data, std::int64_t count, DType type, int peer) {
  MOETUNE_CHECK(count >= 0 && peer >= 0 && peer < size_ && peer != rank_,
                "send: bad count or peer");
  timed("p2p", bytes_of(count, type), [&] {
    NCCL_CHECK(
        ncclSend(data, static_cast<std::size_t>(count), nccl_type(type), peer, comm_, stream_));
  });
}

void NcclCommunicator::do_recv(void* data, std::int64_t count, DType type, int peer) {
  MOETUNE_CHECK(count >= 0 && peer >= 0 && peer < size_ && peer != rank_,
                "recv: bad count or peer");
  timed("p2p", 0.0, [&] {
    NCCL_CHECK(
        ncclRecv(data, static_cast<std::size_t>(count), nccl_type(type), peer, comm_, stream_));
  });
}

void NcclCommunicator::do_all_reduce_host(void* data, std::int64_t count, DType type) {
  MOETUNE_CHECK(count >= 0, "all_reduce_host: negative count");
  const std::size_t bytes = size_of(count, type);
  void* d = scratch(bytes);
  COMM_CUDA_CHECK(cudaMemcpyAsync(d, data, bytes, cudaMemcpyHostToDevice, stream_));
  do_all_reduce(d, count, type);
  COMM_CUDA_CHECK(cudaMemcpyAsync(data, d, bytes, cudaMemcpyDeviceToHost, stream_));
  COMM_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void NcclCommunicator::do_all_gather_host(const void* send, void* recv, std::int64_t count,
                                          DType type) {
  MOETUNE_CHECK(count >= 0, "all_gather_host: negative count");
  const std::size_t block = size_of(count, type);
  const std::size_t total = block * static_cast<std::size_t>(size_);
  // In place in the scratch: this rank's block is its send buffer.
  void* d = scratch(total);
  void* mine = at(d, block * static_cast<std::size_t>(rank_));
  COMM_CUDA_CHECK(cudaMemcpyAsync(mine, send, block, cudaMemcpyHostToDevice, stream_));
  do_all_gather(mine, d, count, type);
  COMM_CUDA_CHECK(cudaMemcpyAsync(recv, d, total, cudaMemcpyDeviceToHost, stream_));
  COMM_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void NcclCommunicator::do_all_to_all_host(const std::int64_t* send,
                                          std::span<const std::int64_t> send_counts,
                                          std::int64_t* recv,
                                          std::span<const std::int64_t> recv_counts) {
  std::int64_t send_total = 0, recv_total = 0;
  for (std::int64_t c : send_counts) {
    MOETUNE_CHECK(c >= 0, "all_to_all_host: negative count");
    send_total += c;
  }
  for (std::int64_t c : recv_counts) {
    MOETUNE_CHECK(c >= 0, "all_to_all_host: negative count");
    recv_total += c;
  }
  const std::size_t send_bytes = size_of(send_total, DType::I64);
  const std::size_t recv_bytes = size_of(recv_total, DType::I64);
  void* d = scratch(send_bytes + recv_bytes);
  void* d_recv = at(d, send_bytes);
  COMM_CUDA_CHECK(cudaMemcpyAsync(d, send, send_bytes, cudaMemcpyHostToDevice, stream_));
  all_to_all_on_stream(d, send_counts, d_recv, recv_counts, DType::I64);
  COMM_CUDA_CHECK(cudaMemcpyAsync(recv, d_recv, recv_bytes, cudaMemcpyDeviceToHost, stream_));
  COMM_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

std::unique_ptr<NcclCommunicator> NcclCommunicator::split(int color, int key) {
  ncclComm_t sub = nullptr;
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  NCCL_CHECK(ncclCommSplit(comm_, color, key, &sub, &config));
  MOETUNE_CHECK(sub != nullptr, "ncclCommSplit gave no communicator to a rank with a colour");
  return std::make_unique<NcclCommunicator>(sub, stream_);
}

ProcessGroups make_nccl_local_groups(cudaStream_t stream) {
  int device = 0;
  COMM_CUDA_CHECK(cudaGetDevice(&device));
  auto make_one = [&] {
    ncclComm_t comm = nullptr;
    NCCL_CHECK(ncclCommInitAll(&comm, 1, &device));
    return std::make_unique<NcclCommunicator>(comm, stream);
  };
  ProcessGroups g;
  g.world = make_one();
  for (Group kind : kAllGroups)
    g.groups[kind] = make_one();
  return g;
}

#ifdef MOETUNE_HAVE_MPI
ProcessGroups make_nccl_groups(const Layout& layout, std::int64_t devices_per_node, int device,
                               cudaStream_t stream) {
  int world_size = 0, world_rank = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  if (world_size != layout.world_size()) {
    throw InputError("the plan needs " + std::to_string(layout.world_size()) +
                     " ranks but MPI started " + std::to_string(world_size));
  }
  COMM_CUDA_CHECK(cudaSetDevice(device));
  ncclUniqueId id;
  if (world_rank == 0) NCCL_CHECK(ncclGetUniqueId(&id));
  if (MPI_Bcast(&id, static_cast<int>(sizeof id), MPI_BYTE, 0, MPI_COMM_WORLD) != MPI_SUCCESS) {
    throw std::runtime_error("MPI_Bcast of the NCCL unique id failed");
  }
  ncclComm_t world = nullptr;
  NCCL_CHECK(ncclCommInitRank(&world, world_size, id, world_rank));
  auto world_comm = std::make_unique<NcclCommunicator>(world, stream);
  const Mesh mesh(layout, devices_per_node);
  ProcessGroups g;
  for (Group kind : kAllGroups) {
    const std::vector<std::int64_t> members = mesh.group_ranks(kind, world_rank);
    // The same colour (the group's first rank) and key (position) as the MPI split, so both order
    // each group as Mesh::group_ranks lists it. ncclCommSplit is collective over the world.
    int key = 0;
    for (std::size_t i = 0; i < members.size(); ++i) {
      if (members[i] == world_rank) key = static_cast<int>(i);
    }
    g.groups[kind] = world_comm->split(static_cast<int>(members.front()), key);
  }
  g.world = std::move(world_comm);
  return g;
}
#endif

}  // namespace moetune::executor
