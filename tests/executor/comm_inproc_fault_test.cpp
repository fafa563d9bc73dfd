// Faults in the in-process communicator must end the run with the root cause, never a hang: a
// rank that throws between or in the middle of collectives, a rank that returns while its peers
// wait for it, ranks that call different collectives or disagree on counts, buffers or layout.
// Each run sits under a deadline that aborts the test binary if the threads do not come back,
// and counts its rank threads out, so "rethrown" also means "every thread joined".
#include <catch2/catch.hpp>

#include <atomic>
#include <stdexcept>

#include "core/error.hpp"
#include "executor/inproc_test_support.hpp"

namespace {

using namespace moetune;
using namespace moetune::executor;
using Catch::Matchers::Contains;
using moetune::test::QueuedMemory;

// A world of `w` host-memory ranks running body(rank, groups); `exited` counts the bodies that
// have ended, however they ended.
struct FaultRun {
  explicit FaultRun(int ranks) : w(ranks), world(ranks) { layout.ep = ranks; }
  void run(const std::function<void(int, ProcessGroups&)>& body,
           const std::vector<DeviceMemory*>& memories = {}) {
    test::with_deadline(std::chrono::seconds(30), [&] {
      run_inproc_ranks(world, [&](int rank) {
        struct CountOut {
          std::atomic<int>& n;
          ~CountOut() { n.fetch_add(1); }
        } count_out{exited};
        DeviceMemory* m = memories.empty() ? nullptr : memories[std::size_t(rank)];
        ProcessGroups g = make_inproc_groups(world, layout, w, rank, m);
        body(rank, g);
      });
    });
  }
  int w;
  Layout layout;
  InprocWorld world;
  std::atomic<int> exited{0};
};

TEST_CASE("inproc: a rank that throws between collectives ends the run with its error",
          "[executor][comm][inproc]") {
  FaultRun f(4);
  std::vector<std::string> seen(4);
  auto body = [&](int rank, ProcessGroups& g) {
    try {
      for (int i = 0; i < 5; ++i) {
        if (rank == 2 && i == 2) throw std::runtime_error("rank 2 broke");
        float x = 1.f;
        g.world->all_reduce(&x, 1);
      }
    } catch (const InternalError& e) {
      seen[std::size_t(rank)] = e.what();
      throw;
    }
  };
  REQUIRE_THROWS_WITH(f.run(body), "rank 2 broke");
  CHECK(f.exited.load() == 4);
  CHECK(f.world.aborted());
  // The others were waiting in the third all_reduce and were woken by the abort.
  for (int r : {0, 1, 3})
    CHECK_THAT(seen[std::size_t(r)], Contains("another rank failed"));
  // An aborted world stays aborted: a later collective throws at once.
  REQUIRE_THROWS_WITH(f.run([](int, ProcessGroups& g) { g.world->barrier(); }),
                      Contains("another rank failed"));
}

// Fails its sums on one rank: the failure surfaces at the synchronize inside a collective,
// between its barriers, as a device error would.
class FailingMemory final : public QueuedMemory {
 protected:
  void add(void*, const void*, std::int64_t, DType) override {
    throw std::runtime_error("accumulate failed on rank 1");
  }
};

TEST_CASE("inproc: a rank that fails inside a collective ends the run with its error",
          "[executor][comm][inproc]") {
  const std::string op = GENERATE("reduce_scatter", "all_reduce");
  CAPTURE(op);
  FaultRun f(3);
  QueuedMemory good0, good2;
  FailingMemory bad;
  const std::vector<DeviceMemory*> memories = {&good0, &bad, &good2};
  auto body = [&](int, ProcessGroups& g) {
    std::vector<float> send(9, 1.f), recv(3);
    if (op == "reduce_scatter") {
      g.world->reduce_scatter(send.data(), recv.data(), 3);
    } else {
      g.world->all_reduce(send.data(), 9);
    }
  };
  REQUIRE_THROWS_WITH(f.run(body, memories), "accumulate failed on rank 1");
  CHECK(f.exited.load() == 3);
}

TEST_CASE("inproc: a rank that returns while its peers wait is an error, not a hang",
          "[executor][comm][inproc]") {
  FaultRun f(3);
  const bool p2p = GENERATE(false, true);
  auto body = [&](int rank, ProcessGroups& g) {
    g.world->barrier();
    if (rank == 2) return;  // skips what the others do next
    if (p2p && rank == 0) {
      float x = 0;
      g.world->recv(&x, 1, 2);
    } else if (!p2p) {
      double d = 1;
      g.world->all_reduce(&d, 1);
    }
  };
  REQUIRE_THROWS_WITH(f.run(body), Contains("world rank 2 finished while its peers wait"));
  CHECK(f.exited.load() == 3);
}

TEST_CASE("inproc: ranks that call different collectives are told so", "[executor][comm][inproc]") {
  FaultRun f(3);
  SECTION("different counts") {
    auto body = [](int rank, ProcessGroups& g) {
      std::vector<float> x(4, 1.f);
      g.world->all_reduce(x.data(), rank == 0 ? 4 : 3);
    };
    REQUIRE_THROWS_WITH(f.run(body), Contains("passed count"));
  }
  SECTION("different collectives") {
    auto body = [](int rank, ProcessGroups& g) {
      std::vector<float> x(3, 1.f), y(3);
      if (rank == 1) {
        g.world->all_gather(x.data(), y.data(), 1);
      } else {
        g.world->all_reduce(x.data(), 3);
      }
    };
    REQUIRE_THROWS_WITH(f.run(body), Contains("ranks called different collectives"));
  }
  SECTION("all_to_all on two ranks, all_reduce on the third") {
    // Ranks 0 and 1 must not read rank 2's all_to_all counts: it has none.
    auto body = [](int rank, ProcessGroups& g) {
      std::vector<float> x(3, 1.f), y(3);
      const std::vector<std::int64_t> ones(3, 1);
      if (rank == 2) {
        g.world->all_reduce(x.data(), 3);
      } else {
        g.world->all_to_all(x.data(), ones, y.data(), ones);
      }
    };
    REQUIRE_THROWS_WITH(f.run(body), Contains("ranks called different collectives"));
  }
  SECTION("all_to_all counts that do not agree pairwise") {
    auto body = [](int rank, ProcessGroups& g) {
      std::vector<std::int64_t> sc(3, 1), rc(3, 1);
      if (rank == 1) sc[2] = 2;  // rank 2 expects one element from rank 1
      std::vector<float> send(4), recv(3);
      g.world->all_to_all(send.data(), sc, recv.data(), rc);
    };
    REQUIRE_THROWS_WITH(f.run(body), Contains("which expects 1"));
  }
  SECTION("a message of another size") {
    auto body = [](int rank, ProcessGroups& g) {
      std::vector<float> x(4, 1.f);
      if (rank == 0) g.world->send(x.data(), 4, 1);
      if (rank == 1) g.world->recv(x.data(), 3, 0);
    };
    REQUIRE_THROWS_WITH(f.run(body), Contains("sent 4 fp32 elements"));
  }
  CHECK(f.exited.load() == 3);
}

TEST_CASE("inproc: bad buffers and layouts are refused", "[executor][comm][inproc]") {
  FaultRun f(2);
  SECTION("two ranks summing into one buffer") {
    std::vector<double> shared(4, 1.0);
    auto body = [&](int, ProcessGroups& g) { g.world->all_reduce(shared.data(), 4); };
    REQUIRE_THROWS_WITH(f.run(body), Contains("writes into a buffer of group rank"));
  }
  SECTION("reduce_scatter into its own send buffer") {
    auto body = [](int, ProcessGroups& g) {
      std::vector<float> x(4, 1.f);
      g.world->reduce_scatter(x.data(), x.data() + 2, 2);
    };
    REQUIRE_THROWS_WITH(f.run(body), Contains("recv overlaps send"));
  }
  SECTION("a layout of another world size") {
    f.layout.ep = 4;
    REQUIRE_THROWS_AS(f.run([](int, ProcessGroups&) {}), InputError);
  }
  SECTION("ranks with different layouts") {
    auto body = [&](int rank, ProcessGroups&) {
      Layout other;
      other.hs = 2;
      if (rank == 1) make_inproc_groups(f.world, other, 2, rank, nullptr);
      if (rank == 0) make_inproc_groups(f.world, f.layout, 2, rank, nullptr);
    };
    REQUIRE_THROWS_WITH(f.run(body), Contains("different layout"));
  }
  CHECK(f.exited.load() == 2);
}

}  // namespace
