// NCCL implementation of the communicator interface, and its bootstrap.
#include "executor/comm/nccl_communicator.hpp"

#include <climits>
#include <string>
#include <vector>

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

std::size_t elem_bytes(ncclDataType_t type) {
  switch (type) {
    case ncclInt8:
    case ncclUint8:
      return 1;
    case ncclFloat16:
    case ncclBfloat16:
      return 2;
    case ncclInt32:
    case ncclUint32:
    case ncclFloat32:
      return 4;
    default:
      return 8;
  }
}

}  // namespace

void check_nccl(ncclResult_t result, const char* expr, const char* file, int line) {
  if (result == ncclSuccess) return;
  throw std::runtime_error(std::string(file) + ":" + std::to_string(line) + ": " + expr +
                           " failed: " + ncclGetErrorString(result) + " (" +
                           std::to_string(int(result)) + ")");
}

NcclCommunicator::NcclCommunicator(ncclComm_t comm) : comm_(comm) {
  NCCL_CHECK(ncclCommUserRank(comm_, &rank_));
  NCCL_CHECK(ncclCommCount(comm_, &size_));
  COMM_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  COMM_CUDA_CHECK(cudaEventCreate(&start_));
  COMM_CUDA_CHECK(cudaEventCreate(&stop_));
  COMM_CUDA_CHECK(cudaMalloc(&barrier_word_, sizeof(float)));
}

NcclCommunicator::~NcclCommunicator() {
  // No throwing from a destructor: failures at teardown are ignored.
  cudaStreamSynchronize(stream_);
  ncclCommDestroy(comm_);
  cudaFree(barrier_word_);
  cudaEventDestroy(start_);
  cudaEventDestroy(stop_);
  cudaStreamDestroy(stream_);
}

void NcclCommunicator::finish(const char* kind, double bytes, cudaEvent_t start) {
  COMM_CUDA_CHECK(cudaEventRecord(stop_, stream_));
  COMM_CUDA_CHECK(cudaEventSynchronize(stop_));
  float ms = 0;
  COMM_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop_));
  record(kind, bytes, double(ms) / 1e3);
}

void NcclCommunicator::all_gather(const float* send, float* recv, std::int64_t count) {
  COMM_CUDA_CHECK(cudaEventRecord(start_, stream_));
  all_gather_async(send, recv, count, ncclFloat32, stream_);
  finish("all_gather", 4.0 * double(count * size_), start_);
}

void NcclCommunicator::reduce_scatter(const float* send, float* recv, std::int64_t count) {
  COMM_CUDA_CHECK(cudaEventRecord(start_, stream_));
  reduce_scatter_async(send, recv, count, ncclFloat32, stream_);
  finish("reduce_scatter", 4.0 * double(count * size_), start_);
}

void NcclCommunicator::all_reduce(float* data, std::int64_t count) {
  COMM_CUDA_CHECK(cudaEventRecord(start_, stream_));
  all_reduce_async(data, count, ncclFloat32, stream_);
  finish("all_reduce", 4.0 * double(count), start_);
}

void NcclCommunicator::all_reduce(double* data, std::int64_t count) {
  COMM_CUDA_CHECK(cudaEventRecord(start_, stream_));
  all_reduce_async(data, count, ncclFloat64, stream_);
  finish("all_reduce", 8.0 * double(count), start_);
}

void NcclCommunicator::all_reduce(std::int64_t* data, std::int64_t count) {
  COMM_CUDA_CHECK(cudaEventRecord(start_, stream_));
  all_reduce_async(data, count, ncclInt64, stream_);
  finish("all_reduce", 8.0 * double(count), start_);
}

void NcclCommunicator::all_gather_async(const void* send, void* recv, std::int64_t count,
                                        ncclDataType_t type, cudaStream_t stream) {
  MOETUNE_CHECK(count >= 0, "all_gather: negative count");
  NCCL_CHECK(ncclAllGather(send, recv, std::size_t(count), type, comm_, stream));
}

void NcclCommunicator::reduce_scatter_async(const void* send, void* recv, std::int64_t count,
                                            ncclDataType_t type, cudaStream_t stream) {
  MOETUNE_CHECK(count >= 0, "reduce_scatter: negative count");
  NCCL_CHECK(ncclReduceScatter(send, recv, std::size_t(count), type, ncclSum, comm_, stream));
}

void NcclCommunicator::all_reduce_async(void* data, std::int64_t count, ncclDataType_t type,
                                        cudaStream_t stream) {
  MOETUNE_CHECK(count >= 0, "all_reduce: negative count");
  NCCL_CHECK(ncclAllReduce(data, data, std::size_t(count), type, ncclSum, comm_, stream));
}

template <typename T>
void NcclCommunicator::all_to_all_impl(const T* send, std::span<const std::int64_t> send_counts,
                                       T* recv, std::span<const std::int64_t> recv_counts,
                                       ncclDataType_t type) {
  MOETUNE_CHECK(
      send_counts.size() == std::size_t(size_) && recv_counts.size() == std::size_t(size_),
      "all_to_all: one count per peer");
  COMM_CUDA_CHECK(cudaEventRecord(start_, stream_));
  std::int64_t so = 0, ro = 0, sent = 0;
  NCCL_CHECK(ncclGroupStart());
  for (int p = 0; p < size_; ++p) {
    const std::int64_t sc = send_counts[std::size_t(p)], rc = recv_counts[std::size_t(p)];
    MOETUNE_CHECK(sc >= 0 && rc >= 0, "all_to_all: negative count");
    if (sc > 0) NCCL_CHECK(ncclSend(send + so, std::size_t(sc), type, p, comm_, stream_));
    if (rc > 0) NCCL_CHECK(ncclRecv(recv + ro, std::size_t(rc), type, p, comm_, stream_));
    so += sc;
    ro += rc;
    if (p != rank_) sent += sc;
  }
  NCCL_CHECK(ncclGroupEnd());
  finish("all_to_all", double(sent) * double(elem_bytes(type)), start_);
}

void NcclCommunicator::all_to_all(const float* send, std::span<const std::int64_t> send_counts,
                                  float* recv, std::span<const std::int64_t> recv_counts) {
  all_to_all_impl(send, send_counts, recv, recv_counts, ncclFloat32);
}

void NcclCommunicator::all_to_all(const std::int64_t* send,
                                  std::span<const std::int64_t> send_counts, std::int64_t* recv,
                                  std::span<const std::int64_t> recv_counts) {
  all_to_all_impl(send, send_counts, recv, recv_counts, ncclInt64);
}

void NcclCommunicator::broadcast(float* data, std::int64_t count, int root) {
  MOETUNE_CHECK(count >= 0 && root >= 0 && root < size_, "broadcast: bad count or root");
  COMM_CUDA_CHECK(cudaEventRecord(start_, stream_));
  NCCL_CHECK(ncclBroadcast(data, data, std::size_t(count), ncclFloat32, root, comm_, stream_));
  finish("broadcast", 4.0 * double(count), start_);
}

void NcclCommunicator::barrier() {
  // An all-reduce of one word is NCCL's barrier; waiting for it makes it one for the host too.
  NCCL_CHECK(ncclAllReduce(barrier_word_, barrier_word_, 1, ncclFloat32, ncclSum, comm_, stream_));
  COMM_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void NcclCommunicator::send(const float* data, std::int64_t count, int peer) {
  MOETUNE_CHECK(count >= 0 && peer >= 0 && peer < size_, "send: bad count or peer");
  COMM_CUDA_CHECK(cudaEventRecord(start_, stream_));
  NCCL_CHECK(ncclSend(data, std::size_t(count), ncclFloat32, peer, comm_, stream_));
  finish("p2p", 4.0 * double(count), start_);
}

void NcclCommunicator::recv(float* data, std::int64_t count, int peer) {
  MOETUNE_CHECK(count >= 0 && peer >= 0 && peer < size_, "recv: bad count or peer");
  COMM_CUDA_CHECK(cudaEventRecord(start_, stream_));
  NCCL_CHECK(ncclRecv(data, std::size_t(count), ncclFloat32, peer, comm_, stream_));
  finish("p2p", 0.0, start_);
}

std::unique_ptr<NcclCommunicator> NcclCommunicator::split(int color, int key) {
  ncclComm_t sub = nullptr;
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  NCCL_CHECK(ncclCommSplit(comm_, color, key, &sub, &config));
  MOETUNE_CHECK(sub != nullptr, "ncclCommSplit gave no communicator to a rank with a colour");
  return std::make_unique<NcclCommunicator>(sub);
}

ProcessGroups make_nccl_local_groups() {
  int device = 0;
  COMM_CUDA_CHECK(cudaGetDevice(&device));
  ProcessGroups g;
  auto make_one = [&] {
    ncclComm_t comm = nullptr;
    NCCL_CHECK(ncclCommInitAll(&comm, 1, &device));
    return std::make_unique<NcclCommunicator>(comm);
  };
  g.world = make_one();
  for (Group kind : kAllGroups)
    g.groups[kind] = make_one();
  return g;
}

#ifdef MOETUNE_HAVE_MPI
ProcessGroups make_nccl_groups(const Layout& layout, std::int64_t devices_per_node, int device) {
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
  if (MPI_Bcast(&id, int(sizeof id), MPI_BYTE, 0, MPI_COMM_WORLD) != MPI_SUCCESS) {
    throw std::runtime_error("MPI_Bcast of the NCCL unique id failed");
  }
  ncclComm_t world = nullptr;
  NCCL_CHECK(ncclCommInitRank(&world, world_size, id, world_rank));
  ProcessGroups g;
  auto world_comm = std::make_unique<NcclCommunicator>(world);
  const Mesh mesh(layout, devices_per_node);
  for (Group kind : kAllGroups) {
    const std::vector<std::int64_t> members = mesh.group_ranks(kind, world_rank);
    // The same colour (the group's first rank) and key (position) as the MPI split, so both order
    // each group as Mesh::group_ranks lists it. ncclCommSplit is collective over the world.
    int key = 0;
    for (std::size_t i = 0; i < members.size(); ++i) {
      if (members[i] == world_rank) key = int(i);
    }
    g.groups[kind] = world_comm->split(int(members.front()), key);
  }
  g.world = std::move(world_comm);
  return g;
}
#endif

}  // namespace moetune::executor
