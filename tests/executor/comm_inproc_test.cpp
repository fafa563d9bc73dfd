// The in-process communicator's collectives on 2, 3 and 4 rank threads, over host memory and over
// a stream-like memory that runs copies only when synchronised: every collective and dtype
// against values each rank computes by itself, sums in rank order (bit for bit, on every rank),
// uneven all-to-all counts with zeros, the groups against core's Mesh, the host forms, in-place
// and empty calls, and many collectives back to back with send buffers overwritten at once.
#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>
#include <random>

#include "executor/inproc_test_support.hpp"

namespace {

using namespace moetune;
using namespace moetune::executor;
using moetune::test::QueuedMemory;
using moetune::test::RankLog;
using moetune::test::Values;

enum class MemoryKind { Host, Queued };

constexpr std::array<DType, 5> kAllTypes = {DType::F32, DType::BF16, DType::F64, DType::I32,
                                            DType::I64};

// Runs body(rank, groups, memory) on every rank of a fresh world built for `layout`; memory is
// null (host memory) or the rank's own QueuedMemory.
void run_world(const Layout& layout, MemoryKind kind,
               const std::function<void(int, ProcessGroups&, DeviceMemory*)>& body) {
  const int w = static_cast<int>(layout.world_size());
  InprocWorld world(w);
  std::vector<std::unique_ptr<QueuedMemory>> memories(static_cast<std::size_t>(w));
  if (kind == MemoryKind::Queued) {
    for (auto& m : memories)
      m = std::make_unique<QueuedMemory>();
  }
  test::with_deadline(std::chrono::seconds(60), [&] {
    run_inproc_ranks(world, [&](int rank) {
      DeviceMemory* memory = memories[static_cast<std::size_t>(rank)].get();
      ProcessGroups groups = make_inproc_groups(world, layout, w, rank, memory);
      body(rank, groups, memory);
    });
  });
}

Layout world_of(int w) {
  Layout l;
  l.ep = w;
  return l;
}

// Host values into a rank's buffer the way a backend uploads: enqueued behind earlier work, so
// the communicator has to synchronise before its peers read it.
void upload(DeviceMemory* m, Values& buffer, Values& host) {
  if (m != nullptr) {
    m->copy(buffer.data(), host.data(), host.bytes());
  } else {
    std::memcpy(buffer.data(), host.data(), host.bytes());
  }
}

Values download(DeviceMemory* m, Values& buffer) {
  Values host = buffer;
  if (m != nullptr) m->copy_to_host(host.data(), buffer.data(), buffer.bytes());
  return host;
}

// A buffer holding f(i) for i < n, uploaded through the rank's memory.
template <typename F>
Values staged(DeviceMemory* m, DType type, std::size_t n, Values& host, F f) {
  for (std::size_t i = 0; i < n; ++i)
    host.set(i, f(i));
  Values buffer(type, n);
  buffer.fill(-99);  // what a peer would read if the upload had not run yet
  upload(m, buffer, host);
  return buffer;
}

void expect_values(RankLog& log, int rank, const Values& got, const std::vector<double>& want,
                   const std::string& what) {
  bool ok = got.size() == want.size();
  std::string first;
  for (std::size_t i = 0; ok && i < want.size(); ++i) {
    if (got.get(i) != want[i]) {
      ok = false;
      first = " (element " + std::to_string(i) + ": " + std::to_string(got.get(i)) + ", want " +
              std::to_string(want[i]) + ")";
    }
  }
  log.expect(rank, ok, what + first);
}

// Every collective of `c` once, each against the values this rank can compute by itself.
void every_collective(Communicator& c, DeviceMemory* m, DType type, int world_rank, RankLog& log) {
  const int n = c.size(), r = c.rank();
  const std::size_t es = dtype_size(type);
  const std::string tag = to_string(type) + " ";

  // all_gather: rank q contributes 7q + i + 1 at i < 5.
  Values host(type, 5);
  Values send = staged(m, type, 5, host, [&](std::size_t i) { return 7.0 * r + double(i) + 1; });
  Values recv(type, 5 * std::size_t(n));
  c.all_gather(send.data(), recv.data(), 5, type);
  std::vector<double> want;
  for (int q = 0; q < n; ++q) {
    for (int i = 0; i < 5; ++i)
      want.push_back(7.0 * q + i + 1);
  }
  expect_values(log, world_rank, download(m, recv), want, tag + "all_gather");

  // reduce_scatter: rank q sends (q + 1) + (j % 4) at j < 3n; slice r sums over q.
  Values rs_host(type, 3 * std::size_t(n));
  Values rs_send = staged(m, type, 3 * std::size_t(n), rs_host,
                          [&](std::size_t j) { return r + 1.0 + double(j % 4); });
  Values rs_recv(type, 3);
  c.reduce_scatter(rs_send.data(), rs_recv.data(), 3, type);
  want.clear();
  for (int i = 0; i < 3; ++i)
    want.push_back(n * (n + 1) / 2.0 + n * double((3 * r + i) % 4));
  expect_values(log, world_rank, download(m, rs_recv), want, tag + "reduce_scatter");

  // all_reduce: rank q holds q (i + 1) - i at i < 7 (negative values too).
  Values ar_host(type, 7);
  Values data =
      staged(m, type, 7, ar_host, [&](std::size_t i) { return r * (i + 1.0) - double(i); });
  c.all_reduce(data.data(), 7, type);
  want.clear();
  for (int i = 0; i < 7; ++i)
    want.push_back((i + 1.0) * n * (n - 1) / 2.0 - double(n * i));
  expect_values(log, world_rank, download(m, data), want, tag + "all_reduce");

  // all_to_all: rank q sends (q + 2p) % 3 elements to p (zeros included), 10q + 3p + k.
  std::vector<std::int64_t> send_counts(static_cast<std::size_t>(n)), recv_counts(send_counts);
  std::vector<double> to_send;
  std::int64_t sent = 0;
  want.clear();
  for (int p = 0; p < n; ++p) {
    send_counts[std::size_t(p)] = (r + 2 * p) % 3;
    recv_counts[std::size_t(p)] = (p + 2 * r) % 3;
    for (int k = 0; k < (r + 2 * p) % 3; ++k)
      to_send.push_back(10.0 * r + 3 * p + k);
    for (int k = 0; k < (p + 2 * r) % 3; ++k)
      want.push_back(10.0 * p + 3 * r + k);
    if (p != r) sent += send_counts[std::size_t(p)];
  }
  Values a2a_host(type, to_send.size());
  Values a2a_send =
      staged(m, type, to_send.size(), a2a_host, [&](std::size_t i) { return to_send[i]; });
  Values a2a_recv(type, want.size());
  c.all_to_all(a2a_send.data(), send_counts, a2a_recv.data(), recv_counts, type);
  expect_values(log, world_rank, download(m, a2a_recv), want, tag + "all_to_all");

  // broadcast from the last rank: 2i + 1 at i < 4; the others start from garbage.
  Values b_host(type, 4);
  const int root = n - 1;
  Values b = staged(m, type, 4, b_host,
                    [&](std::size_t i) { return r == root ? 2.0 * double(i) + 1 : -5.0; });
  c.broadcast(b.data(), 4, type, root);
  expect_values(log, world_rank, download(m, b), {1, 3, 5, 7}, tag + "broadcast");

  // Point to point around the ring; even ranks send first so the rendezvous cannot deadlock.
  // The sender overwrites its buffer as soon as send returns and then sends a second message, so
  // a receiver that had not finished copying the first by then reads the overwritten values.
  Values p_host(type, 3);
  Values token = staged(m, type, 3, p_host, [&](std::size_t i) { return 4.0 * r + double(i); });
  Values got(type, 3), second(type, 1);
  const int next = (r + 1) % n, prev = (r + n - 1) % n;
  auto send_both = [&] {
    c.send(token.data(), 3, type, next);
    token.fill(-3);
    c.send(token.data(), 1, type, next);
  };
  auto recv_both = [&] {
    c.recv(got.data(), 3, type, prev);
    c.recv(second.data(), 1, type, prev);
  };
  if (r % 2 == 0) {
    send_both();
    recv_both();
  } else {
    recv_both();
    send_both();
  }
  expect_values(log, world_rank, download(m, got), {4.0 * prev, 4.0 * prev + 1, 4.0 * prev + 2},
                tag + "send/recv");
  expect_values(log, world_rank, download(m, second), {-3}, tag + "second send/recv");
  c.barrier();

  // Stats: calls and this rank's send volume in nccl-tests sizes, as the MPI communicator's.
  const auto& stats = c.stats();
  const auto bytes_of = [&](const char* kind) {
    return stats.count(kind) != 0 ? stats.at(kind).bytes : -1.0;
  };
  log.expect(world_rank, bytes_of("all_gather") == double(5 * n * es), tag + "all_gather bytes");
  log.expect(world_rank, bytes_of("reduce_scatter") == double(3 * n * es),
             tag + "reduce_scatter bytes");
  log.expect(world_rank, bytes_of("all_reduce") == double(7 * es), tag + "all_reduce bytes");
  log.expect(world_rank, bytes_of("all_to_all") == double(sent) * double(es),
             tag + "all_to_all bytes");
  log.expect(world_rank, bytes_of("broadcast") == double(4 * es), tag + "broadcast bytes");
  log.expect(world_rank, bytes_of("p2p") == double(4 * es) && stats.at("p2p").calls == 4,
             tag + "p2p stats");
}

TEST_CASE("inproc: every collective and dtype on 2, 3 and 4 ranks", "[executor][comm][inproc]") {
  const int w = GENERATE(2, 3, 4);
  const MemoryKind kind = GENERATE(MemoryKind::Host, MemoryKind::Queued);
  CAPTURE(w, kind == MemoryKind::Queued);
  RankLog log(w);
  run_world(world_of(w), kind, [&](int rank, ProcessGroups& g, DeviceMemory* m) {
    log.expect(rank, g.world->device_memory() == (m != nullptr), "device_memory()");
    log.expect(rank,
               g.world->backend() == "inproc" && g.world->size() == w && g.world->rank() == rank,
               "world rank and size");
    for (DType type : kAllTypes) {
      g.world->reset_stats();
      every_collective(*g.world, m, type, rank, log);
    }
  });
  log.check();
}

TEST_CASE("inproc: groups have the mesh's members in the mesh's order",
          "[executor][comm][inproc]") {
  struct Case {
    std::int64_t tp, ep, hs, rep, pp;
    const char* order;
    std::int64_t devices_per_node;
  };
  const Case c =
      GENERATE(Case{2, 2, 1, 1, 1, "tp,ep,hs,rep,pp", 4}, Case{1, 2, 2, 1, 1, "tp,hs,ep", 2},
               Case{1, 1, 2, 2, 1, "tp,rep,hs", 4}, Case{1, 2, 1, 2, 1, "tp,rep,ep", 2},
               Case{2, 2, 2, 1, 1, "tp,ep,hs", 4}, Case{2, 2, 2, 1, 1, "tp,hs,ep", 4},
               Case{1, 2, 2, 2, 1, "tp,rep,hs,ep", 8}, Case{2, 2, 1, 2, 1, "tp,rep,ep", 2},
               Case{2, 2, 1, 1, 2, "tp,pp,ep", 4});
  Layout layout;
  layout.tp = c.tp;
  layout.ep = c.ep;
  layout.hs = c.hs;
  layout.rep = c.rep;
  layout.pp = c.pp;
  layout.order = parse_order(c.order);
  CAPTURE(describe(layout));
  const Mesh mesh(layout, c.devices_per_node);
  const int w = static_cast<int>(layout.world_size());
  RankLog log(w);
  InprocWorld world(w);
  test::with_deadline(std::chrono::seconds(60), [&] {
    run_inproc_ranks(world, [&](int rank) {
      ProcessGroups g = make_inproc_groups(world, layout, c.devices_per_node, rank, nullptr);
      for (Group kind : kAllGroups) {
        const std::vector<std::int64_t> members = mesh.group_ranks(kind, rank);
        Communicator& comm = g[kind];
        const std::string name = to_string(kind);
        log.expect(rank, comm.size() == static_cast<int>(members.size()), name + " size");
        const auto at = std::find(members.begin(), members.end(), rank) - members.begin();
        log.expect(rank, comm.rank() == static_cast<int>(at), name + " rank");
        // The group's rank order is the mesh's: gather the world ranks and compare.
        const std::int64_t me = rank;
        std::vector<std::int64_t> all(members.size(), -1);
        comm.all_gather(&me, all.data(), 1);
        log.expect(rank, all == members, name + " members in order");
        std::int64_t sum = rank;
        comm.all_reduce(&sum, 1);
        log.expect(rank, sum == std::accumulate(members.begin(), members.end(), std::int64_t{0}),
                   name + " all_reduce stays in the group");
      }
    });
  });
  log.check();
}

// Random fp32 (or bf16) values over many exponents, so the order of a sum shows in its bits.
std::vector<float> random_values(int rank, std::size_t n) {
  std::mt19937 rng(1234u + static_cast<unsigned>(rank));
  std::uniform_real_distribution<float> mantissa(-1.f, 1.f);
  std::uniform_int_distribution<int> exponent(-12, 12);
  std::vector<float> v(n);
  for (float& x : v)
    x = std::ldexp(mantissa(rng), exponent(rng));
  return v;
}

TEST_CASE("inproc: sums run in rank order and give the same bits on every rank",
          "[executor][comm][inproc]") {
  const int w = 4;
  const std::size_t count = 1001;  // not a multiple of 4: all_reduce's chunks are uneven
  const DType type = GENERATE(DType::F32, DType::BF16);
  const MemoryKind kind = GENERATE(MemoryKind::Host, MemoryKind::Queued);
  CAPTURE(to_string(type), kind == MemoryKind::Queued);
  // Each rank's values, rounded to the type; expected sums ((x0 + x1) + x2) + x3, rounded to the
  // type after every addition as a backend's accumulate does.
  auto round = [&](float x) {
    return type == DType::BF16 ? test::bf16_to_float(test::float_to_bf16(x)) : x;
  };
  std::vector<std::vector<float>> inputs;
  for (int q = 0; q < w; ++q) {
    inputs.push_back(random_values(q, w * count));
    for (float& x : inputs.back())
      x = round(x);
  }
  std::vector<float> in_order(w * count), reversed(w * count);
  for (std::size_t i = 0; i < w * count; ++i) {
    in_order[i] = inputs[0][i];
    reversed[i] = inputs[w - 1][i];
    for (int q = 1; q < w; ++q) {
      in_order[i] = round(in_order[i] + inputs[q][i]);
      reversed[i] = round(reversed[i] + inputs[w - 1 - q][i]);
    }
  }
  // The data tells the orders apart, so a sum in another order would fail below.
  REQUIRE(in_order != reversed);

  RankLog log(w);
  run_world(world_of(w), kind, [&](int rank, ProcessGroups& g, DeviceMemory* m) {
    const auto& mine = inputs[std::size_t(rank)];
    // all_reduce over the first `count` values.
    Values host(type, count);
    Values data = staged(m, type, count, host, [&](std::size_t i) { return double(mine[i]); });
    g.world->all_reduce(data.data(), std::int64_t(count), type);
    std::vector<double> want(in_order.begin(), in_order.begin() + std::ptrdiff_t(count));
    expect_values(log, rank, download(m, data), want, "all_reduce in rank order");
    // reduce_scatter over all w * count values: this rank's slice.
    Values rs_host(type, w * count);
    Values send =
        staged(m, type, w * count, rs_host, [&](std::size_t i) { return double(mine[i]); });
    Values recv(type, count);
    g.world->reduce_scatter(send.data(), recv.data(), std::int64_t(count), type);
    want.assign(in_order.begin() + std::ptrdiff_t(rank * count),
                in_order.begin() + std::ptrdiff_t((rank + 1) * count));
    expect_values(log, rank, download(m, recv), want, "reduce_scatter in rank order");
  });
  log.check();
}

TEST_CASE("inproc: host forms use host memory whatever the backend's memory",
          "[executor][comm][inproc]") {
  const int w = 3;
  RankLog log(w);
  std::vector<int> ops(w), syncs(w);
  run_world(world_of(w), MemoryKind::Queued, [&](int rank, ProcessGroups& g, DeviceMemory* m) {
    auto& queued = static_cast<QueuedMemory&>(*m);
    const int before_ops = queued.ops, before_syncs = queued.syncs;
    Communicator& c = *g.world;
    log.expect(rank, c.device_memory(), "a queued memory is device memory");
    double sums[2] = {rank + 0.5, -2.0 * rank};
    c.all_reduce_host(sums, 2);
    log.expect(rank, sums[0] == 1.5 + 3 && sums[1] == -6.0, "all_reduce_host double");
    std::int64_t counts[3] = {rank, 10 * rank, 1};
    c.all_reduce_host(counts, 3);
    log.expect(rank, counts[0] == 3 && counts[1] == 30 && counts[2] == 3, "all_reduce_host int64");
    const float mine[2] = {float(rank), float(rank) + 0.25f};
    float all[6] = {};
    c.all_gather_host(mine, all, 2);
    log.expect(rank, all[0] == 0 && all[1] == 0.25f && all[4] == 2 && all[5] == 2.25f,
               "all_gather_host float");
    const std::int32_t id = 100 + rank;
    std::int32_t ids[3] = {};
    c.all_gather_host(&id, ids, 1);
    log.expect(rank, ids[0] == 100 && ids[1] == 101 && ids[2] == 102, "all_gather_host int32");
    // Rank q sends q + p elements (1000 q + p) to peer p: rank 0 sends nothing to itself.
    std::vector<std::int64_t> send, send_counts, recv_counts, want;
    for (int p = 0; p < w; ++p) {
      send_counts.push_back(rank + p);
      recv_counts.push_back(p + rank);
      for (int k = 0; k < rank + p; ++k) {
        send.push_back(1000 * rank + p);
        want.push_back(1000 * p + rank);
      }
    }
    std::vector<std::int64_t> recv(want.size(), -1);
    c.all_to_all_host(send.data(), send_counts, recv.data(), recv_counts);
    log.expect(rank, recv == want, "all_to_all_host");
    log.expect(rank, c.stats().at("all_reduce").calls == 2, "host forms are recorded");
    ops[std::size_t(rank)] = queued.ops - before_ops;
    syncs[std::size_t(rank)] = queued.syncs - before_syncs;
  });
  log.check();
  // Nothing went through the backend's memory, not even a synchronize.
  CHECK(ops == std::vector<int>(w, 0));
  CHECK(syncs == std::vector<int>(w, 0));
}

TEST_CASE("inproc: in place, tiny and empty collectives", "[executor][comm][inproc]") {
  const int w = 4;
  const MemoryKind kind = GENERATE(MemoryKind::Host, MemoryKind::Queued);
  RankLog log(w);
  run_world(world_of(w), kind, [&](int rank, ProcessGroups& g, DeviceMemory* m) {
    Communicator& c = *g.world;
    // all_gather in place: this rank's block of recv is its send.
    Values host(DType::F32, 8);
    Values buffer = staged(m, DType::F32, 8, host, [&](std::size_t i) {
      return i / 2 == std::size_t(rank) ? 10.0 * rank + double(i % 2) : -1.0;
    });
    c.all_gather(static_cast<const char*>(buffer.data()) + 8 * rank, buffer.data(), 2, DType::F32);
    expect_values(log, rank, download(m, buffer), {0, 1, 10, 11, 20, 21, 30, 31},
                  "all_gather in place");
    // all_reduce of fewer elements than ranks: some ranks sum an empty chunk.
    Values one_host(DType::I64, 1);
    Values one = staged(m, DType::I64, 1, one_host, [&](std::size_t) { return rank + 1.0; });
    c.all_reduce(one.data(), 1, DType::I64);
    expect_values(log, rank, download(m, one), {10}, "all_reduce of one element");
    // Empty calls move nothing and still match up.
    c.all_reduce(static_cast<float*>(nullptr), 0);
    c.all_gather(static_cast<const float*>(nullptr), static_cast<float*>(nullptr), 0);
    c.reduce_scatter(static_cast<const double*>(nullptr), static_cast<double*>(nullptr), 0);
    const std::vector<std::int64_t> zeros(w, 0);
    c.all_to_all(static_cast<const float*>(nullptr), zeros, static_cast<float*>(nullptr), zeros);
    c.broadcast(static_cast<float*>(nullptr), 0, 2);
    log.expect(rank, c.stats().at("all_to_all").bytes == 0, "empty all_to_all sends nothing");
  });
  log.check();
}

TEST_CASE("inproc: collectives back to back on several groups do not mix",
          "[executor][comm][inproc]") {
  Layout layout;
  layout.tp = 2;
  layout.ep = 2;
  const int w = 4, iterations = 200;
  const MemoryKind kind = GENERATE(MemoryKind::Host, MemoryKind::Queued);
  RankLog log(w);
  run_world(layout, kind, [&](int rank, ProcessGroups& g, DeviceMemory* m) {
    std::mt19937 rng(77u + unsigned(rank));
    Communicator& tp = g[Group::Tp];
    Communicator& ep = g[Group::Ep];
    for (int it = 0; it < iterations; ++it) {
      // Uneven timing: some ranks arrive late, so a fast rank is already in the next call.
      if (rng() % 8 == 0) std::this_thread::sleep_for(std::chrono::microseconds(rng() % 200));
      const std::string at = " at iteration " + std::to_string(it);
      // World all_gather; the send buffer is overwritten as soon as the call returns.
      Values host(DType::I64, 1);
      Values send = staged(m, DType::I64, 1, host, [&](std::size_t) { return 100.0 * it + rank; });
      Values recv(DType::I64, w);
      g.world->all_gather(send.data(), recv.data(), 1, DType::I64);
      host.set(0, -7);
      upload(m, send, host);
      expect_values(log, rank, download(m, recv),
                    {100.0 * it, 100.0 * it + 1, 100.0 * it + 2, 100.0 * it + 3},
                    "world all_gather" + at);
      // Tp all_reduce (ranks {0,1} and {2,3} at the same time).
      Values f_host(DType::F32, 2);
      Values f = staged(m, DType::F32, 2, f_host,
                        [&](std::size_t i) { return double(it + rank) + double(i); });
      tp.all_reduce(f.data(), 2, DType::F32);
      const double pair = rank < 2 ? 1.0 : 5.0;  // the sum of the two ranks of this Tp group
      expect_values(log, rank, download(m, f), {2.0 * it + pair, 2.0 * it + pair + 2},
                    "tp all_reduce" + at);
      // Ep all_to_all with counts that change every iteration; then a broadcast from a moving
      // root over the world.
      const int er = ep.rank();
      std::vector<std::int64_t> sc(2), rc(2);
      std::vector<double> out, want;
      for (int p = 0; p < 2; ++p) {
        sc[std::size_t(p)] = (it + er + 2 * p) % 3;
        rc[std::size_t(p)] = (it + p + 2 * er) % 3;
        for (int k = 0; k < sc[std::size_t(p)]; ++k)
          out.push_back(it % 50 + 10.0 * er + p + k);
        for (int k = 0; k < rc[std::size_t(p)]; ++k)
          want.push_back(it % 50 + 10.0 * p + er + k);
      }
      Values a_host(DType::F64, out.size());
      Values a = staged(m, DType::F64, out.size(), a_host, [&](std::size_t i) { return out[i]; });
      Values b(DType::F64, want.size());
      ep.all_to_all(a.data(), sc, b.data(), rc, DType::F64);
      expect_values(log, rank, download(m, b), want, "ep all_to_all" + at);
      Values c_host(DType::I32, 1);
      const int root = it % w;
      Values c = staged(m, DType::I32, 1, c_host,
                        [&](std::size_t) { return rank == root ? double(it) : -1.0; });
      g.world->broadcast(c.data(), 1, DType::I32, root);
      expect_values(log, rank, download(m, c), {double(it)}, "broadcast" + at);
    }
    log.expect(rank, g.world->stats().at("all_gather").calls == iterations, "calls counted");
  });
  log.check();
}

}  // namespace
