// The communicator interface the executor trains through: the collectives of one process group
// (all-gather, reduce-scatter, all-reduce, all-to-all with per-peer counts, broadcast, barrier,
// point-to-point) over typed buffers, with time and bytes recorded per collective kind for
// run.jsonl. Implementations: `local` (one rank, no communication), `mpi` (host memory, CPU
// ranks), `nccl` (device memory, one GPU per rank) and `inproc` (W ranks as threads of one
// process, over whatever memory their backends compute in). The groups come from core's Mesh, so
// the executor and the simulator agree on who talks to whom.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/mesh.hpp"
#include "core/run_log.hpp"
#include "executor/comm/dtype.hpp"

namespace moetune::executor {

// The memory a backend computes in, as a communicator that moves data itself (in-process) reads
// and writes it: host memory for the CPU backend; for CUDA, device memory with copies and sums
// enqueued on that rank's stream. Backends implement it.
class DeviceMemory {
 public:
  virtual ~DeviceMemory() = default;
  virtual bool on_device() const = 0;
  // Enqueued in order after everything this rank enqueued before (device to device).
  virtual void copy(void* dst, const void* src, std::size_t bytes) = 0;
  // dst[i] += src[i], i < count (F32, F64, I32, I64; BF16 sums in fp32 and rounds once).
  virtual void accumulate(void* dst, const void* src, std::int64_t count, DType type) = 0;
  // Host <-> this memory; both wait until the copy is done.
  virtual void copy_to_host(void* host, const void* src, std::size_t bytes) = 0;
  virtual void copy_from_host(void* dst, const void* host, std::size_t bytes) = 0;
  // Everything enqueued so far has finished.
  virtual void synchronize() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;  // within this group
  virtual int size() const = 0;
  virtual std::string backend() const = 0;
  // Where the buffers of the collectives below live: false for host memory (local, mpi, inproc
  // over the CPU backend), true for a device's (nccl, inproc over the CUDA backend).
  virtual bool device_memory() const { return false; }

  // Send and receive buffers do not overlap, except all_gather's in place (send at
  // recv + rank * count).
  // recv[size * count] = every rank's send[count], in rank order.
  void all_gather(const void* send, void* recv, std::int64_t count, DType type) {
    do_all_gather(send, recv, count, type);
  }
  // recv[count] = the sum over ranks of their send[rank * count .. (rank + 1) * count).
  void reduce_scatter(const void* send, void* recv, std::int64_t count, DType type) {
    do_reduce_scatter(send, recv, count, type);
  }
  // data[count] = the sum over ranks, in place.
  void all_reduce(void* data, std::int64_t count, DType type) { do_all_reduce(data, count, type); }
  // Rank r sends send_counts[p] elements to peer p (contiguous blocks in peer order) and
  // receives recv_counts[p] from peer p (contiguous, peer order). Counts must agree pairwise.
  void all_to_all(const void* send, std::span<const std::int64_t> send_counts, void* recv,
                  std::span<const std::int64_t> recv_counts, DType type) {
    do_all_to_all(send, send_counts, recv, recv_counts, type);
  }
  void broadcast(void* data, std::int64_t count, DType type, int root) {
    do_broadcast(data, count, type, root);
  }
  void barrier() { do_barrier(); }
  void send(const void* data, std::int64_t count, DType type, int peer) {
    do_send(data, count, type, peer);
  }
  void recv(void* data, std::int64_t count, DType type, int peer) {
    do_recv(data, count, type, peer);
  }

  // Typed forms of the above.
  template <typename T>
  void all_gather(const T* send, T* recv, std::int64_t count) {
    do_all_gather(send, recv, count, dtype_of<T>());
  }
  template <typename T>
  void reduce_scatter(const T* send, T* recv, std::int64_t count) {
    do_reduce_scatter(send, recv, count, dtype_of<T>());
  }
  template <typename T>
  void all_reduce(T* data, std::int64_t count) {
    do_all_reduce(data, count, dtype_of<T>());
  }
  template <typename T>
  void all_to_all(const T* send, std::span<const std::int64_t> send_counts, T* recv,
                  std::span<const std::int64_t> recv_counts) {
    do_all_to_all(send, send_counts, recv, recv_counts, dtype_of<T>());
  }
  template <typename T>
  void broadcast(T* data, std::int64_t count, int root) {
    do_broadcast(data, count, dtype_of<T>(), root);
  }
  template <typename T>
  void send(const T* data, std::int64_t count, int peer) {
    do_send(data, count, dtype_of<T>(), peer);
  }
  template <typename T>
  void recv(T* data, std::int64_t count, int peer) {
    do_recv(data, count, dtype_of<T>(), peer);
  }

  // The same collectives over HOST memory whatever device_memory() says: small control data
  // (expert counts, loss and norm sums). A device communicator stages them through the device.
  template <typename T>
  void all_reduce_host(T* data, std::int64_t count) {
    do_all_reduce_host(data, count, dtype_of<T>());
  }
  template <typename T>
  void all_gather_host(const T* send, T* recv, std::int64_t count) {
    do_all_gather_host(send, recv, count, dtype_of<T>());
  }
  void all_to_all_host(const std::int64_t* send, std::span<const std::int64_t> send_counts,
                       std::int64_t* recv, std::span<const std::int64_t> recv_counts) {
    do_all_to_all_host(send, send_counts, recv, recv_counts);
  }

  // Calls, bytes (this rank's send volume, nccl-tests size convention) and seconds per kind:
  // "all_gather", "reduce_scatter", "all_reduce", "all_to_all", "broadcast", "p2p". A
  // communicator that enqueues without waiting resolves its timings here.
  const std::map<std::string, CollectiveRecord>& stats() {
    settle();
    return stats_;
  }
  void reset_stats() {
    settle();
    stats_.clear();
  }

 protected:
  virtual void do_all_gather(const void* send, void* recv, std::int64_t count, DType type) = 0;
  virtual void do_reduce_scatter(const void* send, void* recv, std::int64_t count,
                                 DType type) = 0;
  virtual void do_all_reduce(void* data, std::int64_t count, DType type) = 0;
  virtual void do_all_to_all(const void* send, std::span<const std::int64_t> send_counts,
                             void* recv, std::span<const std::int64_t> recv_counts,
                             DType type) = 0;
  virtual void do_broadcast(void* data, std::int64_t count, DType type, int root) = 0;
  virtual void do_barrier() = 0;
  virtual void do_send(const void* data, std::int64_t count, DType type, int peer) = 0;
  virtual void do_recv(void* data, std::int64_t count, DType type, int peer) = 0;
  // Host-memory forms; the defaults are right for host-memory communicators.
  virtual void do_all_reduce_host(void* data, std::int64_t count, DType type) {
    do_all_reduce(data, count, type);
  }
  virtual void do_all_gather_host(const void* send, void* recv, std::int64_t count, DType type) {
    do_all_gather(send, recv, count, type);
  }
  virtual void do_all_to_all_host(const std::int64_t* send,
                                  std::span<const std::int64_t> send_counts, std::int64_t* recv,
                                  std::span<const std::int64_t> recv_counts) {
    do_all_to_all(send, send_counts, recv, recv_counts, DType::I64);
  }
  // Folds the timings of collectives still in flight into the records (NCCL: CUDA events).
  virtual void settle() {}
  void record(const char* kind, double bytes, double seconds);

 private:
  std::map<std::string, CollectiveRecord> stats_;
};

// One rank, no peers: every collective is a copy (or nothing). `memory` (may be null: host
// memory) copies device buffers where send and receive differ.
std::unique_ptr<Communicator> make_local_communicator(DeviceMemory* memory = nullptr);

// Every group a rank takes part in, per DESIGN.md: tp, ep, hs, pp, the dense replicate group
// (ep x rep), the expert replicate group (rep) and the data-parallel group (ep x hs x rep).
struct ProcessGroups {
  std::unique_ptr<Communicator> world;
  std::map<Group, std::unique_ptr<Communicator>> groups;
  Communicator& operator[](Group g) const { return *groups.at(g); }
};

// For a single-process run: every group is the local communicator.
ProcessGroups make_local_groups(DeviceMemory* memory = nullptr);

}  // namespace moetune::executor
