// The local (single-rank) communicator and shared bookkeeping.
#include "executor/comm/communicator.hpp"

#include <algorithm>

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
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend() const override { return "local"; }
  void all_gather(const float* send, float* recv, std::int64_t count) override {
    if (send != recv) std::copy(send, send + count, recv);
  }
  void reduce_scatter(const float* send, float* recv, std::int64_t count) override {
    if (send != recv) std::copy(send, send + count, recv);
  }
  void all_reduce(float*, std::int64_t) override {}
  void all_reduce(double*, std::int64_t) override {}
  void all_reduce(std::int64_t*, std::int64_t) override {}
  void all_to_all(const float* send, std::span<const std::int64_t> send_counts, float* recv,
                  std::span<const std::int64_t> recv_counts) override {
    MOETUNE_CHECK(
        send_counts.size() == 1 && recv_counts.size() == 1 && send_counts[0] == recv_counts[0],
        "local all_to_all: one peer with matching counts");
    if (send != recv) std::copy(send, send + send_counts[0], recv);
  }
  void all_to_all(const std::int64_t* send, std::span<const std::int64_t> send_counts,
                  std::int64_t* recv, std::span<const std::int64_t> recv_counts) override {
    MOETUNE_CHECK(
        send_counts.size() == 1 && recv_counts.size() == 1 && send_counts[0] == recv_counts[0],
        "local all_to_all: one peer with matching counts");
    if (send != recv) std::copy(send, send + send_counts[0], recv);
  }
  void broadcast(float*, std::int64_t, int root) override {
    MOETUNE_CHECK(root == 0, "local broadcast: root must be 0");
  }
  void barrier() override {}
  void send(const float*, std::int64_t, int) override {
    MOETUNE_CHECK(false, "local communicator has no peer to send to");
  }
  void recv(float*, std::int64_t, int) override {
    MOETUNE_CHECK(false, "local communicator has no peer to receive from");
  }
};

}  // namespace

std::unique_ptr<Communicator> make_local_communicator() {
  return std::make_unique<LocalCommunicator>();
}

ProcessGroups make_local_groups() {
  ProcessGroups g;
  g.world = make_local_communicator();
  for (Group kind : kAllGroups)
    g.groups[kind] = make_local_communicator();
  return g;
}

}  // namespace moetune::executor
