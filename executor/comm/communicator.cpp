// The local (single-rank) communicator and shared bookkeeping.
#include "executor/comm/communicator.hpp"

#include <cstring>

#include "core/error.hpp"

namespace moetune::executor {

void Communicator::record(const char* kind, double bytes, double seconds) {
  CollectiveRecord& r = stats_[kind];
  r.calls += 1;
  r.bytes += bytes;
  r.seconds += seconds;
}

namespace {

class LocalCommunicator final : public Communicator {
 public:
  explicit LocalCommunicator(DeviceMemory* memory) : memory_(memory) {}
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend() const override { return "local"; }
  bool device_memory() const override { return memory_ != nullptr && memory_->on_device(); }

 protected:
  void do_all_gather(const void* send, void* recv, std::int64_t count, DType type) override {
    copy(recv, send, count, type);
  }
  void do_reduce_scatter(const void* send, void* recv, std::int64_t count, DType type) override {
    copy(recv, send, count, type);
  }
  void do_all_reduce(void*, std::int64_t, DType) override {}
  void do_all_to_all(const void* send, std::span<const std::int64_t> send_counts, void* recv,
                     std::span<const std::int64_t> recv_counts, DType type) override {
    MOETUNE_CHECK(
        send_counts.size() == 1 && recv_counts.size() == 1 && send_counts[0] == recv_counts[0],
        "local all_to_all: one peer with matching counts");
    copy(recv, send, send_counts[0], type);
  }
  void do_broadcast(void*, std::int64_t, DType, int root) override {
    MOETUNE_CHECK(root == 0, "local broadcast: root must be 0");
  }
  void do_barrier() override {}
  void do_send(const void*, std::int64_t, DType, int) override {
    MOETUNE_CHECK(false, "local communicator has no peer to send to");
  }
  void do_recv(void*, std::int64_t, DType, int) override {
    MOETUNE_CHECK(false, "local communicator has no peer to receive from");
  }
  void do_all_reduce_host(void*, std::int64_t, DType) override {}
  void do_all_gather_host(const void* send, void* recv, std::int64_t count, DType type) override {
    if (send != recv) std::memcpy(recv, send, static_cast<std::size_t>(count) * dtype_size(type));
  }
  void do_all_to_all_host(const std::int64_t* send, std::span<const std::int64_t> send_counts,
                          std::int64_t* recv, std::span<const std::int64_t> recv_counts) override {
    MOETUNE_CHECK(
        send_counts.size() == 1 && recv_counts.size() == 1 && send_counts[0] == recv_counts[0],
        "local all_to_all: one peer with matching counts");
    if (send != recv) std::memcpy(recv, send, static_cast<std::size_t>(send_counts[0]) * 8);
  }

 private:
  void copy(void* dst, const void* src, std::int64_t count, DType type) {
    if (dst == src || count <= 0) return;
    const std::size_t bytes = static_cast<std::size_t>(count) * dtype_size(type);
    if (memory_ != nullptr) {
      memory_->copy(dst, src, bytes);
    } else {
      std::memcpy(dst, src, bytes);
    }
  }
  DeviceMemory* memory_;
};

}  // namespace

std::unique_ptr<Communicator> make_local_communicator(DeviceMemory* memory) {
  return std::make_unique<LocalCommunicator>(memory);
}

ProcessGroups make_local_groups(DeviceMemory* memory) {
  ProcessGroups g;
  g.world = make_local_communicator(memory);
  for (Group kind : kAllGroups)
    g.groups[kind] = make_local_communicator(memory);
  return g;
}

}  // namespace moetune::executor
