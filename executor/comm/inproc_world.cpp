// The shared state of in-process ranks: group formation, the barrier, point-to-point mailboxes,
// and the abort and finished flags that end every wait.
#include "executor/comm/inproc_world.hpp"

#include <algorithm>
#include <utility>

namespace moetune::executor::inproc {

const char* op_name(Op op) {
  switch (op) {
    case Op::Barrier:
      return "barrier";
    case Op::AllGather:
      return "all_gather";
    case Op::ReduceScatter:
      return "reduce_scatter";
    case Op::AllReduce:
      return "all_reduce";
    case Op::AllToAll:
      return "all_to_all";
    case Op::Broadcast:
      return "broadcast";
  }
  return "?";
}

WorldState::WorldState(int world_size)
    : size(world_size),
      finished(std::make_unique<std::atomic<bool>[]>(static_cast<std::size_t>(world_size))),
      calls_(static_cast<std::size_t>(world_size), 0) {}

int WorldState::begin_groups(int rank, const Layout& layout, std::int64_t devices_per_node) {
  std::lock_guard lock(mutex_);
  const int call = calls_[static_cast<std::size_t>(rank)]++;
  auto [it, first] = call_layouts_.try_emplace(call, Call{layout, devices_per_node, 0});
  // Ranks that built their groups from different layouts would wait for each other in groups
  // the others never join: refuse before any collective.
  if (!first && (it->second.layout != layout || it->second.devices_per_node != devices_per_node)) {
    throw InternalError("make_inproc_groups: rank " + std::to_string(rank) +
                        " passed a different layout or devices per node than its peers (call " +
                        std::to_string(call) + ")");
  }
  if (++it->second.joined == size) call_layouts_.erase(it);
  return call;
}

std::shared_ptr<GroupState> WorldState::join(const Key& key,
                                             const std::vector<std::int64_t>& members) {
  std::lock_guard lock(mutex_);
  auto it = forming_.find(key);
  if (it == forming_.end()) {
    auto group = std::make_shared<GroupState>(*this, members);
    // Forget groups whose communicators are gone, so the list stays as long as the live ones.
    std::erase_if(groups_, [](const std::weak_ptr<GroupState>& g) { return g.expired(); });
    groups_.push_back(group);
    it = forming_.emplace(key, Forming{std::move(group), 0}).first;
  }
  MOETUNE_CHECK(it->second.group->members() == members,
                "make_inproc_groups: ranks disagree on the members of a group");
  std::shared_ptr<GroupState> group = it->second.group;
  // Once every member holds it, the key may be formed again by a later call.
  if (++it->second.joined == members.size()) forming_.erase(it);
  return group;
}

void WorldState::abort() {
  aborted.store(true);
  wake_all();
}

void WorldState::wake_all() {
  std::vector<std::shared_ptr<GroupState>> live;
  {
    std::lock_guard lock(mutex_);
    for (const auto& g : groups_) {
      if (auto p = g.lock()) live.push_back(std::move(p));
    }
  }
  for (const auto& g : live)
    g->wake();
}

GroupState::GroupState(WorldState& world, std::vector<std::int64_t> members)
    : world_(world),
      members_(std::move(members)),
      slots_(members_.size()),
      touching_(members_.size(), 0),
      boxes_(members_.size() * members_.size()) {}

void GroupState::wake() {
  // Taking the lock orders the flag the waker set before any waiter's next check of it: a waiter
  // either sees the flag or is already blocked and gets this notification.
  { std::lock_guard lock(mutex_); }
  cv_.notify_all();
}

int GroupState::finished_member() const {
  for (std::size_t i = 0; i < members_.size(); ++i) {
    if (world_.finished[static_cast<std::size_t>(members_[i])].load()) return static_cast<int>(i);
  }
  return -1;
}

bool GroupState::stuck(int member) const {
  return world_.aborted.load() ||
         world_.finished[static_cast<std::size_t>(members_[static_cast<std::size_t>(member)])]
             .load();
}

void GroupState::throw_if_stuck(const std::string& what, int member) const {
  if (world_.aborted.load()) throw Aborted("inproc " + what + ": another rank failed");
  if (member >= 0 && stuck(member)) {
    throw InternalError("inproc " + what + ": world rank " +
                        std::to_string(members_[static_cast<std::size_t>(member)]) +
                        " finished while its peers wait for it (ranks called different "
                        "collectives)");
  }
}

void GroupState::barrier(int member, const char* what, bool opens_phase) {
  std::unique_lock lock(mutex_);
  touching_[static_cast<std::size_t>(member)] = 0;
  throw_if_stuck(what, -1);
  const std::uint64_t generation = generation_;
  if (++arrived_ == size()) {
    arrived_ = 0;
    generation_ += 1;
    // Marked here, not by each member as it wakes: a member that fails in the phase must see
    // every peer that may still read its buffers, including one that has not woken yet.
    std::fill(touching_.begin(), touching_.end(), opens_phase ? 1 : 0);
    lock.unlock();
    cv_.notify_all();
    return;
  }
  // A member that has finished while this generation is open has not arrived (arriving blocks
  // until the generation closes), so it never will.
  cv_.wait(lock, [&] {
    return generation_ != generation || world_.aborted.load() || finished_member() >= 0;
  });
  if (generation_ != generation) return;
  throw_if_stuck(what, finished_member());
}

void GroupState::leave(int member) {
  std::unique_lock lock(mutex_);
  touching_[static_cast<std::size_t>(member)] = 0;
  cv_.notify_all();
  // Peers in a phase either reach their next barrier or fail; both clear their mark.
  cv_.wait(lock, [&] {
    return std::none_of(touching_.begin(), touching_.end(), [](char t) { return t != 0; });
  });
}

void GroupState::post_and_wait(int from, int to, const void* data, std::int64_t count, DType type) {
  Mailbox& b = box(from, to);
  const std::string what = "send to group rank " + std::to_string(to);
  std::unique_lock lock(mutex_);
  throw_if_stuck(what, -1);
  MOETUNE_CHECK(!b.posted, "inproc send: a message to this peer is already waiting");
  b.data = data;
  b.count = count;
  b.type = type;
  b.posted = true;
  const std::uint64_t post = ++b.posts;
  cv_.notify_all();
  cv_.wait(lock, [&] { return b.takes >= post || stuck(to); });
  if (b.takes >= post) return;
  // Giving up: first let a receiver that is reading this buffer finish, and withdraw the
  // message so nobody reads it after this rank has moved on.
  cv_.wait(lock, [&] { return !b.copying; });
  b.posted = false;
  throw_if_stuck(what, to);
}

}  // namespace moetune::executor::inproc
