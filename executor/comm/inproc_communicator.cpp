// The in-process communicator's collectives, group construction and rank runner.
//
// Protocol of every collective (pull, two barriers): each member synchronises its own memory so
// its send data is ready, publishes its buffers in its slot, and waits at the first barrier;
// then each member reads its peers' buffers into its own receive buffer with its own memory,
// synchronises (its reads are done) and waits at the last barrier, after which peers may reuse
// their send buffers and slots. all_reduce, being in place, adds a middle phase: member c sums
// chunk c of every member's data, in rank order, into member 0's buffer; after a barrier every
// other member copies member 0's result. So sums run in rank order and every member ends with
// the same bits.
#include "executor/comm/inproc_communicator.hpp"

#include <bit>
#include <chrono>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>

#include "core/mesh.hpp"
#include "executor/comm/inproc_world.hpp"

namespace moetune::executor {

struct InprocWorld::State : inproc::WorldState {
  using WorldState::WorldState;
};

namespace {

using inproc::Op;
using inproc::Slot;

float float_from_bf16(std::uint16_t b) {
  return std::bit_cast<float>(static_cast<std::uint32_t>(b) << 16);
}

// Round to nearest even, as the backends' casts do; NaN stays a (quiet) NaN.
std::uint16_t bf16_from_float(float f) {
  std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>(u >> 16);
}

template <typename T>
void add_into(void* dst, const void* src, std::int64_t count) {
  T* d = static_cast<T*>(dst);
  const T* s = static_cast<const T*>(src);
  for (std::int64_t i = 0; i < count; ++i)
    d[i] += s[i];
}

// Host memory as a DeviceMemory: what ranks without a backend and every host form use.
// Stateless, so one instance serves every thread.
class HostMemory final : public DeviceMemory {
 public:
  bool on_device() const override { return false; }
  void copy(void* dst, const void* src, std::size_t bytes) override {
    if (dst != src && bytes > 0) std::memcpy(dst, src, bytes);
  }
  void accumulate(void* dst, const void* src, std::int64_t count, DType type) override {
    switch (type) {
      case DType::F32:
        return add_into<float>(dst, src, count);
      case DType::F64:
        return add_into<double>(dst, src, count);
      case DType::I32:
        return add_into<std::int32_t>(dst, src, count);
      case DType::I64:
        return add_into<std::int64_t>(dst, src, count);
      case DType::BF16: {
        auto* d = static_cast<std::uint16_t*>(dst);
        const auto* s = static_cast<const std::uint16_t*>(src);
        for (std::int64_t i = 0; i < count; ++i)
          d[i] = bf16_from_float(float_from_bf16(d[i]) + float_from_bf16(s[i]));
        return;
      }
    }
  }
  void copy_to_host(void* host, const void* src, std::size_t bytes) override {
    copy(host, src, bytes);
  }
  void copy_from_host(void* dst, const void* host, std::size_t bytes) override {
    copy(dst, host, bytes);
  }
  void synchronize() override {}
};

HostMemory& host_memory() {
  static HostMemory memory;
  return memory;
}

Slot slot(Op op, DType type, std::int64_t count) {
  Slot s;
  s.op = op;
  s.type = type;
  s.count = count;
  return s;
}

bool overlap(const void* a, std::size_t a_bytes, const void* b, std::size_t b_bytes) {
  if (a_bytes == 0 || b_bytes == 0) return false;
  const auto x = reinterpret_cast<std::uintptr_t>(a), y = reinterpret_cast<std::uintptr_t>(b);
  return x < y + b_bytes && y < x + a_bytes;
}

const char* at(const void* p, std::size_t bytes) {
  return static_cast<const char*>(p) + bytes;
}
char* at(void* p, std::size_t bytes) {
  return static_cast<char*>(p) + bytes;
}

class Timer {
 public:
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

class InprocCommunicator final : public Communicator {
 public:
  InprocCommunicator(std::shared_ptr<inproc::GroupState> group, int rank, DeviceMemory* memory)
      : group_(std::move(group)), rank_(rank), memory_(memory) {}
  int rank() const override { return rank_; }
  int size() const override { return group_->size(); }
  std::string backend() const override { return "inproc"; }
  bool device_memory() const override { return memory_ != nullptr && memory_->on_device(); }

 protected:
  void do_all_gather(const void* send, void* recv, std::int64_t count, DType type) override {
    guarded([&] { all_gather(mem(), send, recv, count, type); });
  }
  void do_reduce_scatter(const void* send, void* recv, std::int64_t count, DType type) override {
    guarded([&] { reduce_scatter(mem(), send, recv, count, type); });
  }
  void do_all_reduce(void* data, std::int64_t count, DType type) override {
    guarded([&] { all_reduce(mem(), data, count, type); });
  }
  void do_all_to_all(const void* send, std::span<const std::int64_t> send_counts, void* recv,
                     std::span<const std::int64_t> recv_counts, DType type) override {
    guarded([&] { all_to_all(mem(), send, send_counts, recv, recv_counts, type); });
  }
  void do_broadcast(void* data, std::int64_t count, DType type, int root) override {
    guarded([&] { broadcast(mem(), data, count, type, root); });
  }
  void do_barrier() override {
    guarded([&] {
      begin(mem(), slot(Op::Barrier, DType::F32, 0));
      end(mem(), Op::Barrier);
    });
  }
  void do_send(const void* data, std::int64_t count, DType type, int peer) override {
    guarded([&] { send_to(mem(), data, count, type, peer); });
  }
  void do_recv(void* data, std::int64_t count, DType type, int peer) override {
    guarded([&] { recv_from(mem(), data, count, type, peer); });
  }
  void do_all_reduce_host(void* data, std::int64_t count, DType type) override {
    guarded([&] { all_reduce(host_memory(), data, count, type); });
  }
  void do_all_gather_host(const void* send, void* recv, std::int64_t count, DType type) override {
    guarded([&] { all_gather(host_memory(), send, recv, count, type); });
  }
  void do_all_to_all_host(const std::int64_t* send, std::span<const std::int64_t> send_counts,
                          std::int64_t* recv, std::span<const std::int64_t> recv_counts) override {
    guarded([&] { all_to_all(host_memory(), send, send_counts, recv, recv_counts, DType::I64); });
  }

 private:
  DeviceMemory& mem() { return memory_ != nullptr ? *memory_ : host_memory(); }

  // Any failure inside a collective leaves the group mid-protocol: abort the world so the peers
  // stop waiting, wait until none of them touches this rank's buffers any more, then let the
  // error travel on (and the caller free its buffers).
  template <typename F>
  void guarded(F&& f) {
    try {
      f();
    } catch (...) {
      group_->world().abort();
      group_->leave(rank_);
      throw;
    }
  }

  // Publishes this member's slot once its own enqueued work is done, waits for every peer's and
  // checks that all called the same collective with buffers that do not overlap.
  void begin(DeviceMemory& m, const Slot& mine) {
    m.synchronize();
    group_->slot(rank_) = mine;
    group_->barrier(rank_, inproc::op_name(mine.op), /*opens_phase=*/true);
    check_peers(mine.op);
  }
  // Waits until this member's reads and writes are done and every peer's are.
  void end(DeviceMemory& m, Op op) {
    m.synchronize();
    group_->barrier(rank_, inproc::op_name(op), /*opens_phase=*/false);
  }

  // Every member evaluates the same slots, so all of them throw or none does.
  void check_peers(Op op) const {
    const std::vector<Slot>& s = group_->slots();
    const Slot& first = s.front();
    const std::string name = std::string("inproc ") + inproc::op_name(op) + ": group rank ";
    // First that everyone called this collective: only then are the slots' fields comparable
    // (a peer in another collective has, say, no all_to_all counts).
    for (std::size_t p = 0; p < s.size(); ++p) {
      if (s[p].op != op) {
        throw InternalError(name + std::to_string(p) + " called " + inproc::op_name(s[p].op) +
                            " (ranks called different collectives)");
      }
    }
    for (std::size_t p = 0; p < s.size(); ++p) {
      const std::string who = name + std::to_string(p);
      if (s[p].type != first.type) throw InternalError(who + " passed another dtype");
      if (op != Op::AllToAll && s[p].count != first.count) {
        throw InternalError(who + " passed count " + std::to_string(s[p].count) + ", rank 0 " +
                            std::to_string(first.count));
      }
      if (s[p].root != first.root) throw InternalError(who + " named another root");
      for (std::size_t q = 0; q < s.size(); ++q) {
        if (p == q) continue;
        if (overlap(s[p].write_begin, s[p].write_bytes, s[q].write_begin, s[q].write_bytes) ||
            overlap(s[p].write_begin, s[p].write_bytes, s[q].read_begin, s[q].read_bytes)) {
          throw InternalError(who + " writes into a buffer of group rank " + std::to_string(q));
        }
        // Counts must agree pairwise: what p sends to q is what q expects from p.
        if (op == Op::AllToAll && s[p].send_counts[q] != s[q].recv_counts[p]) {
          throw InternalError(who + " sends " + std::to_string(s[p].send_counts[q]) +
                              " elements to group rank " + std::to_string(q) + ", which expects " +
                              std::to_string(s[q].recv_counts[p]));
        }
      }
    }
  }

  void all_gather(DeviceMemory& m, const void* send, void* recv, std::int64_t count, DType type) {
    Timer t;
    MOETUNE_CHECK(count >= 0, "all_gather: negative count");
    const std::size_t block = static_cast<std::size_t>(count) * dtype_size(type);
    const std::size_t n = static_cast<std::size_t>(size());
    // In place means send is this rank's own block of recv (as NCCL and MPI_IN_PLACE have it).
    const bool in_place = send == at(recv, static_cast<std::size_t>(rank_) * block);
    MOETUNE_CHECK(in_place || !overlap(send, block, recv, n * block),
                  "all_gather: send overlaps recv other than at this rank's block");
    Slot mine = slot(Op::AllGather, type, count);
    mine.send = send;
    mine.recv = recv;
    mine.read_begin = send;
    mine.read_bytes = block;
    mine.write_begin = recv;
    mine.write_bytes = n * block;
    begin(m, mine);
    for (std::size_t p = 0; p < n; ++p) {
      const void* src = group_->slots()[p].send;
      void* dst = at(recv, p * block);
      if (block > 0 && dst != src) m.copy(dst, src, block);
    }
    end(m, Op::AllGather);
    record("all_gather", static_cast<double>(n * block), t.seconds());
  }

  void reduce_scatter(DeviceMemory& m, const void* send, void* recv, std::int64_t count,
                      DType type) {
    Timer t;
    MOETUNE_CHECK(count >= 0, "reduce_scatter: negative count");
    const std::size_t block = static_cast<std::size_t>(count) * dtype_size(type);
    const std::size_t n = static_cast<std::size_t>(size());
    // As MPI_Reduce_scatter_block: the receive buffer must not alias the send buffer.
    MOETUNE_CHECK(!overlap(send, n * block, recv, block), "reduce_scatter: recv overlaps send");
    Slot mine = slot(Op::ReduceScatter, type, count);
    mine.send = send;
    mine.recv = recv;
    mine.read_begin = send;
    mine.read_bytes = n * block;
    mine.write_begin = recv;
    mine.write_bytes = block;
    begin(m, mine);
    if (block > 0) {
      // recv = send_0[r] + send_1[r] + ... in rank order.
      const std::size_t offset = static_cast<std::size_t>(rank_) * block;
      m.copy(recv, at(group_->slots()[0].send, offset), block);
      for (std::size_t p = 1; p < n; ++p)
        m.accumulate(recv, at(group_->slots()[p].send, offset), count, type);
    }
    end(m, Op::ReduceScatter);
    record("reduce_scatter", static_cast<double>(n * block), t.seconds());
  }

  void all_reduce(DeviceMemory& m, void* data, std::int64_t count, DType type) {
    Timer t;
    MOETUNE_CHECK(count >= 0, "all_reduce: negative count");
    const std::size_t es = dtype_size(type);
    const std::int64_t n = size();
    Slot mine = slot(Op::AllReduce, type, count);
    mine.recv = data;
    mine.write_begin = data;
    mine.write_bytes = static_cast<std::size_t>(count) * es;
    begin(m, mine);
    // Phase 1: chunk c of member 0's data becomes the sum over members, in rank order, summed by
    // member c. Only member c touches chunk c of anyone's data in this phase.
    const std::vector<Slot>& s = group_->slots();
    const std::int64_t lo = count * rank_ / n, hi = count * (rank_ + 1) / n;
    if (hi > lo) {
      void* acc = at(s[0].recv, static_cast<std::size_t>(lo) * es);
      for (std::size_t p = 1; p < s.size(); ++p)
        m.accumulate(acc, at(s[p].recv, static_cast<std::size_t>(lo) * es), hi - lo, type);
    }
    m.synchronize();
    group_->barrier(rank_, "all_reduce", /*opens_phase=*/true);
    // Phase 2: every other member copies the result; member 0 keeps it until the last barrier.
    if (rank_ != 0 && count > 0) m.copy(data, s[0].recv, static_cast<std::size_t>(count) * es);
    end(m, Op::AllReduce);
    record("all_reduce", static_cast<double>(static_cast<std::size_t>(count) * es), t.seconds());
  }

  void all_to_all(DeviceMemory& m, const void* send, std::span<const std::int64_t> send_counts,
                  void* recv, std::span<const std::int64_t> recv_counts, DType type) {
    Timer t;
    const std::size_t n = static_cast<std::size_t>(size());
    MOETUNE_CHECK(send_counts.size() == n && recv_counts.size() == n,
                  "all_to_all: one count per peer");
    const std::size_t es = dtype_size(type);
    std::int64_t send_total = 0, recv_total = 0, sent = 0;
    for (std::size_t p = 0; p < n; ++p) {
      MOETUNE_CHECK(send_counts[p] >= 0 && recv_counts[p] >= 0, "all_to_all: negative count");
      send_total += send_counts[p];
      recv_total += recv_counts[p];
      if (p != static_cast<std::size_t>(rank_)) sent += send_counts[p];
    }
    Slot mine = slot(Op::AllToAll, type, 0);
    mine.send = send;
    mine.recv = recv;
    mine.send_counts = send_counts;
    mine.recv_counts = recv_counts;
    mine.read_begin = send;
    mine.read_bytes = static_cast<std::size_t>(send_total) * es;
    mine.write_begin = recv;
    mine.write_bytes = static_cast<std::size_t>(recv_total) * es;
    MOETUNE_CHECK(!overlap(mine.read_begin, mine.read_bytes, recv, mine.write_bytes),
                  "all_to_all: recv overlaps send");
    begin(m, mine);
    std::size_t dst_offset = 0;
    for (std::size_t p = 0; p < n; ++p) {
      // Peer p's block for this rank starts after what it sends to lower ranks.
      const Slot& peer = group_->slots()[p];
      std::size_t src_offset = 0;
      for (int q = 0; q < rank_; ++q)
        src_offset += static_cast<std::size_t>(peer.send_counts[static_cast<std::size_t>(q)]) * es;
      const std::size_t bytes = static_cast<std::size_t>(recv_counts[p]) * es;
      if (bytes > 0) m.copy(at(recv, dst_offset), at(peer.send, src_offset), bytes);
      dst_offset += bytes;
    }
    end(m, Op::AllToAll);
    record("all_to_all", static_cast<double>(sent) * static_cast<double>(es), t.seconds());
  }

  void broadcast(DeviceMemory& m, void* data, std::int64_t count, DType type, int root) {
    Timer t;
    MOETUNE_CHECK(count >= 0 && root >= 0 && root < size(), "broadcast: bad count or root");
    const std::size_t bytes = static_cast<std::size_t>(count) * dtype_size(type);
    Slot mine = slot(Op::Broadcast, type, count);
    mine.root = root;
    mine.recv = data;
    (rank_ == root ? mine.read_begin : mine.write_begin) = data;
    (rank_ == root ? mine.read_bytes : mine.write_bytes) = bytes;
    begin(m, mine);
    if (rank_ != root && bytes > 0)
      m.copy(data, group_->slots()[static_cast<std::size_t>(root)].recv, bytes);
    end(m, Op::Broadcast);
    record("broadcast", static_cast<double>(bytes), t.seconds());
  }

  void send_to(DeviceMemory& m, const void* data, std::int64_t count, DType type, int peer) {
    Timer t;
    MOETUNE_CHECK(count >= 0 && peer >= 0 && peer < size() && peer != rank_,
                  "send: bad count or peer");
    m.synchronize();  // the data is ready before the peer reads it
    group_->post_and_wait(rank_, peer, data, count, type);
    record("p2p", static_cast<double>(count) * static_cast<double>(dtype_size(type)), t.seconds());
  }

  void recv_from(DeviceMemory& m, void* data, std::int64_t count, DType type, int peer) {
    Timer t;
    MOETUNE_CHECK(count >= 0 && peer >= 0 && peer < size() && peer != rank_,
                  "recv: bad count or peer");
    group_->take(peer, rank_, [&](const inproc::Mailbox& message) {
      if (message.count != count || message.type != type) {
        throw InternalError("inproc recv: group rank " + std::to_string(peer) + " sent " +
                            std::to_string(message.count) + " " + to_string(message.type) +
                            " elements, group rank " + std::to_string(rank_) + " expects " +
                            std::to_string(count) + " " + to_string(type));
      }
      const std::size_t bytes = static_cast<std::size_t>(count) * dtype_size(type);
      if (bytes > 0) m.copy(data, message.data, bytes);
      m.synchronize();  // the copy is done before the sender may reuse its buffer
    });
    record("p2p", 0.0, t.seconds());
  }

  std::shared_ptr<inproc::GroupState> group_;
  int rank_;
  DeviceMemory* memory_;
};

}  // namespace

InprocWorld::InprocWorld(int world_size) {
  if (world_size < 1) throw InputError("an in-process world needs at least one rank");
  state_ = std::make_unique<State>(world_size);
}

InprocWorld::~InprocWorld() = default;

int InprocWorld::world_size() const {
  return state_->size;
}

void InprocWorld::abort() {
  state_->abort();
}

bool InprocWorld::aborted() const {
  return state_->aborted.load();
}

void InprocWorld::mark_finished(int rank) {
  MOETUNE_CHECK(rank >= 0 && rank < state_->size, "mark_finished: rank out of range");
  state_->finished[static_cast<std::size_t>(rank)].store(true);
  state_->wake_all();
}

ProcessGroups make_inproc_groups(InprocWorld& world, const Layout& layout,
                                 std::int64_t devices_per_node, int world_rank,
                                 DeviceMemory* memory) {
  const int w = world.world_size();
  if (layout.world_size() != w) {
    throw InputError("the plan needs " + std::to_string(layout.world_size()) +
                     " ranks but the in-process world has " + std::to_string(w));
  }
  MOETUNE_CHECK(world_rank >= 0 && world_rank < w, "make_inproc_groups: rank out of range");
  const Mesh mesh(layout, devices_per_node);
  InprocWorld::State& state = *world.state_;
  const int call = state.begin_groups(world_rank, layout, devices_per_node);

  ProcessGroups g;
  std::vector<std::int64_t> everyone(static_cast<std::size_t>(w));
  for (int r = 0; r < w; ++r)
    everyone[static_cast<std::size_t>(r)] = r;
  g.world =
      std::make_unique<InprocCommunicator>(state.join({call, -1, 0}, everyone), world_rank, memory);
  for (Group kind : kAllGroups) {
    const std::vector<std::int64_t> members = mesh.group_ranks(kind, world_rank);
    int position = -1;
    for (std::size_t i = 0; i < members.size(); ++i) {
      if (members[i] == world_rank) position = static_cast<int>(i);
    }
    MOETUNE_CHECK(position >= 0, "a mesh group does not contain its own rank");
    // The group's first rank names it, as the colour of the MPI and NCCL splits does.
    auto group = state.join({call, static_cast<int>(kind), members.front()}, members);
    g.groups[kind] = std::make_unique<InprocCommunicator>(std::move(group), position, memory);
  }
  return g;
}

void run_inproc_ranks(InprocWorld& world, const std::function<void(int rank)>& body) {
  std::mutex mutex;
  std::exception_ptr root_cause, aborted;
  auto run = [&](int rank) {
    try {
      body(rank);
      world.mark_finished(rank);
      return;
    } catch (const inproc::Aborted&) {
      std::lock_guard lock(mutex);
      if (!aborted) aborted = std::current_exception();
    } catch (...) {
      std::lock_guard lock(mutex);
      if (!root_cause) root_cause = std::current_exception();
    }
    world.abort();
  };
  std::vector<std::thread> threads;
  threads.reserve(static_cast<std::size_t>(world.world_size()));
  try {
    for (int r = 0; r < world.world_size(); ++r)
      threads.emplace_back(run, r);
  } catch (...) {
    // A thread that could not start: the ones running must not wait for it.
    world.abort();
    for (std::thread& t : threads)
      t.join();
    throw;
  }
  for (std::thread& t : threads)
    t.join();
  if (root_cause) std::rethrow_exception(root_cause);
  if (aborted) std::rethrow_exception(aborted);
}

}  // namespace moetune::executor
