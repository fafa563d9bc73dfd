// The shared state behind the in-process communicator (internal to executor/comm): one
// GroupState per process group — its members, a reusable barrier, the slots where members publish
// their buffers for the collective in progress, and the mailboxes of point-to-point messages —
// and the world's registry of groups being formed, its abort flag and its finished ranks. Every
// wait here ends when the world is aborted or when a rank it waits for has finished.
//
// A rank that fails must not free its buffers while a peer still reads or writes them. Between
// two barriers of a collective (a "phase") members touch each other's buffers; a barrier that
// opens a phase marks every member as touching, and a member stops touching when it arrives at
// the next barrier (its own memory synchronised first) or leaves on an exception. A member that
// leaves on an exception waits until no peer is touching before its error travels on; a sender
// whose message is being copied waits for the copy the same way.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include "core/error.hpp"
#include "core/layout.hpp"
#include "executor/comm/dtype.hpp"

namespace moetune::executor::inproc {

// Thrown at the ranks woken by an abort, so run_inproc_ranks can tell them from the root cause.
class Aborted : public InternalError {
 public:
  using InternalError::InternalError;
};

enum class Op : std::uint8_t { Barrier, AllGather, ReduceScatter, AllReduce, AllToAll, Broadcast };
const char* op_name(Op op);

// What one member publishes for a collective. Its peers read it between the collective's first
// and last barrier, so it stays valid until the member passes the last one.
struct Slot {
  Op op = Op::Barrier;
  DType type = DType::F32;
  std::int64_t count = 0;
  int root = 0;
  const void* send = nullptr;
  void* recv = nullptr;
  std::span<const std::int64_t> send_counts, recv_counts;
  // The byte ranges this member's buffers cover: the peers' must not overlap them.
  const void* read_begin = nullptr;
  std::size_t read_bytes = 0;
  const void* write_begin = nullptr;
  std::size_t write_bytes = 0;
};

// A message from one member to another. The sender waits until the receiver has copied it, so
// there is at most one per (sender, receiver) pair.
struct Mailbox {
  const void* data = nullptr;
  std::int64_t count = 0;
  DType type = DType::F32;
  bool posted = false;
  bool copying = false;  // the receiver is reading the sender's buffer
  std::uint64_t posts = 0, takes = 0;
};

class GroupState;

struct WorldState {
  explicit WorldState(int size);

  // A group joins under its key: (the rank's call of make_inproc_groups, the group kind or -1
  // for the world, the group's first member).
  using Key = std::tuple<int, int, std::int64_t>;
  std::shared_ptr<GroupState> join(const Key& key, const std::vector<std::int64_t>& members);
  // Which call of make_inproc_groups this is for `rank`; checks that every rank's n-th call
  // passes the same layout.
  int begin_groups(int rank, const Layout& layout, std::int64_t devices_per_node);
  // Sets the abort flag and wakes every waiter of every group.
  void abort();
  void wake_all();

  const int size;
  std::atomic<bool> aborted{false};
  std::unique_ptr<std::atomic<bool>[]> finished;  // [size]

 private:
  struct Forming {
    std::shared_ptr<GroupState> group;
    std::size_t joined = 0;
  };
  struct Call {
    Layout layout;
    std::int64_t devices_per_node = 0;
    int joined = 0;
  };
  std::mutex mutex_;  // guards the members below
  std::vector<int> calls_;
  std::map<int, Call> call_layouts_;
  std::map<Key, Forming> forming_;
  std::vector<std::weak_ptr<GroupState>> groups_;  // every group made: abort wakes them all
};

class GroupState {
 public:
  GroupState(WorldState& world, std::vector<std::int64_t> members);
  int size() const { return static_cast<int>(members_.size()); }
  const std::vector<std::int64_t>& members() const { return members_; }
  WorldState& world() { return world_; }

  // Waits until every member has arrived; throws Aborted when the world is aborted and
  // InternalError when a member this barrier waits for has finished. `member` stops touching its
  // peers' buffers on arrival; when `opens_phase`, every member touches them again once all
  // have arrived.
  void barrier(int member, const char* what, bool opens_phase);
  // `member` leaves a collective on an exception: it touches nothing any more, and returns once
  // no peer touches anything either (so its buffers may be freed).
  void leave(int member);
  Slot& slot(int rank) { return slots_[static_cast<std::size_t>(rank)]; }
  const std::vector<Slot>& slots() const { return slots_; }

  // Point to point. post_and_wait returns once `to` has taken the message; take waits for the
  // message from `from`, hands it to `consume` (outside the lock) and then releases the sender.
  void post_and_wait(int from, int to, const void* data, std::int64_t count, DType type);
  template <typename Consume>
  void take(int from, int to, Consume&& consume);

  // Wakes every waiter so it re-checks the world's flags.
  void wake();

 private:
  Mailbox& box(int from, int to) { return boxes_[static_cast<std::size_t>(from * size() + to)]; }
  // Throws when the world is aborted or `member` (a group rank) has finished; `what` names the
  // wait for the message.
  void throw_if_stuck(const std::string& what, int member) const;
  bool stuck(int member) const;
  int finished_member() const;  // a member that has finished, or -1

  WorldState& world_;
  const std::vector<std::int64_t> members_;  // world ranks, in group-rank order
  std::mutex mutex_;
  std::condition_variable cv_;
  int arrived_ = 0;
  std::uint64_t generation_ = 0;
  std::vector<Slot> slots_;     // [size]
  std::vector<char> touching_;  // [size]: in a phase
  std::vector<Mailbox> boxes_;  // [size * size], sender-major
};

template <typename Consume>
void GroupState::take(int from, int to, Consume&& consume) {
  Mailbox& b = box(from, to);
  const std::string what = "recv from group rank " + std::to_string(from);
  Mailbox message;
  {
    std::unique_lock lock(mutex_);
    throw_if_stuck(what, -1);
    cv_.wait(lock, [&] { return b.posted || stuck(from); });
    // After an abort a posted message may come from a sender that has given up: never take it.
    if (world_.aborted.load() || !b.posted) throw_if_stuck(what, from);
    message = b;
    b.copying = true;
  }
  // The sender waits while copying is set, so its buffer stays valid while it is read.
  try {
    consume(message);
  } catch (...) {
    {
      std::lock_guard lock(mutex_);
      b.copying = false;
    }
    cv_.notify_all();
    throw;
  }
  {
    std::lock_guard lock(mutex_);
    b.posted = false;
    b.copying = false;
    b.takes += 1;
  }
  cv_.notify_all();
}

}  // namespace moetune::executor::inproc
