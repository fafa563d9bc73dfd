// The MPI communicator on real ranks (run under mpirun, label `mpi`): every collective against
// values each rank can compute by itself (typed and untyped forms, the host forms), and the groups
// against core's Mesh.
// This file brings its own main, which starts MPI around the Catch session.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <mpi.h>

#include <numeric>

#include "executor/comm/mpi_communicator.hpp"

namespace {

using namespace moetune;
using namespace moetune::executor;

int world_size() {
  int s = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &s);
  return s;
}

int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

// A layout using every rank: ep=2 and hs=W/2 (W = 2 or 4).
Layout layout_for_world() {
  Layout l;
  l.ep = 2;
  l.hs = world_size() / 2;
  return l;
}

TEST_CASE("MPI groups match the mesh", "[mpi]") {
  const Layout l = layout_for_world();
  ProcessGroups g = make_mpi_groups(l, world_size());
  const Mesh mesh(l, world_size());
  for (Group kind : kAllGroups) {
    const auto members = mesh.group_ranks(kind, world_rank());
    INFO(to_string(kind));
    CHECK(g[kind].size() == static_cast<int>(members.size()));
    // The group's rank order is the mesh's: all-gather the world ranks and compare.
    std::vector<float> mine = {static_cast<float>(world_rank())};
    std::vector<float> all(members.size());
    g[kind].all_gather(mine.data(), all.data(), 1);
    for (std::size_t i = 0; i < members.size(); ++i)
      CHECK(all[i] == static_cast<float>(members[i]));
  }
}

TEST_CASE("MPI collectives give the values each rank expects", "[mpi]") {
  ProcessGroups g = make_mpi_groups(layout_for_world(), world_size());
  Communicator& world = *g.world;
  const int n = world.size(), r = world.rank();
  SECTION("reduce-scatter sums each rank's slice") {
    // Rank q sends value q + 10 * i at position i; slice r of the sum is sum_q (q + 10 i).
    const std::int64_t count = 3;
    std::vector<float> send(static_cast<std::size_t>(n * count)), recv(count);
    for (std::size_t i = 0; i < send.size(); ++i)
      send[i] = static_cast<float>(r + 10 * static_cast<int>(i));
    world.reduce_scatter(send.data(), recv.data(), count);
    const float ranks = static_cast<float>(n * (n - 1) / 2);
    for (std::int64_t j = 0; j < count; ++j) {
      CHECK(recv[j] == ranks + static_cast<float>(n * 10 * (r * count + j)));
    }
  }
  SECTION("all-reduce in float, double and int64") {
    float f = static_cast<float>(r + 1);
    double d = r + 0.5;
    std::int64_t i = r * 3;
    world.all_reduce(&f, 1);
    world.all_reduce(&d, 1);
    world.all_reduce(&i, 1);
    CHECK(f == static_cast<float>(n * (n + 1) / 2));
    CHECK(d == n * (n - 1) / 2.0 + 0.5 * n);
    CHECK(i == 3 * n * (n - 1) / 2);
  }
  SECTION("all-to-all with different counts per peer") {
    // Rank r sends (r + p + 1) values to peer p, each equal to 100 r + p.
    std::vector<std::int64_t> send_counts(n), recv_counts(n);
    std::vector<float> send;
    for (int p = 0; p < n; ++p) {
      send_counts[p] = r + p + 1;
      recv_counts[p] = p + r + 1;
      for (int k = 0; k < r + p + 1; ++k)
        send.push_back(static_cast<float>(100 * r + p));
    }
    std::vector<float> recv(static_cast<std::size_t>(
        std::accumulate(recv_counts.begin(), recv_counts.end(), std::int64_t{0})));
    world.all_to_all(send.data(), send_counts, recv.data(), recv_counts);
    std::size_t at = 0;
    for (int p = 0; p < n; ++p) {
      for (int k = 0; k < p + r + 1; ++k)
        CHECK(recv[at++] == static_cast<float>(100 * p + r));
    }
    CHECK(world.stats().at("all_to_all").calls == 1);
  }
  SECTION("untyped forms and the host forms") {
    // int32 all_gather through the DType form; bf16 moves as 16-bit words.
    const std::int32_t id = 100 + r;
    std::vector<std::int32_t> ids(static_cast<std::size_t>(n));
    world.all_gather(&id, ids.data(), 1, DType::I32);
    for (int p = 0; p < n; ++p)
      CHECK(ids[static_cast<std::size_t>(p)] == 100 + p);
    const std::uint16_t word = static_cast<std::uint16_t>(0x3f80 + r);
    std::vector<std::uint16_t> words(static_cast<std::size_t>(n));
    world.all_gather(&word, words.data(), 1, DType::BF16);
    for (int p = 0; p < n; ++p)
      CHECK(words[static_cast<std::size_t>(p)] == 0x3f80 + p);
    double sums[2] = {r + 0.5, -1.0};
    world.all_reduce_host(sums, 2);
    CHECK(sums[0] == n * (n - 1) / 2.0 + 0.5 * n);
    CHECK(sums[1] == -n);
    std::vector<float> all(static_cast<std::size_t>(n));
    const float mine = static_cast<float>(r);
    world.all_gather_host(&mine, all.data(), 1);
    for (int p = 0; p < n; ++p)
      CHECK(all[static_cast<std::size_t>(p)] == static_cast<float>(p));
    // Rank r sends p + 1 counts equal to 10 r + p to peer p.
    std::vector<std::int64_t> send, send_counts, recv_counts;
    for (int p = 0; p < n; ++p) {
      send_counts.push_back(p + 1);
      recv_counts.push_back(r + 1);
      for (int k = 0; k <= p; ++k)
        send.push_back(10 * r + p);
    }
    std::vector<std::int64_t> recv(static_cast<std::size_t>(n * (r + 1)));
    world.all_to_all_host(send.data(), send_counts, recv.data(), recv_counts);
    for (int p = 0; p < n; ++p) {
      for (int k = 0; k <= r; ++k)
        CHECK(recv[static_cast<std::size_t>(p * (r + 1) + k)] == 10 * p + r);
    }
  }
  SECTION("broadcast and point-to-point") {
    float v = r == 0 ? 42.0f : 0.0f;
    world.broadcast(&v, 1, 0);
    CHECK(v == 42.0f);
    float token = static_cast<float>(r);
    if (r % 2 == 0 && r + 1 < n) {
      world.send(&token, 1, r + 1);
    } else if (r % 2 == 1) {
      world.recv(&token, 1, r - 1);
      CHECK(token == static_cast<float>(r - 1));
    }
    world.barrier();
  }
}

}  // namespace

int main(int argc, char** argv) {
  moetune::executor::MpiRuntime mpi(&argc, &argv);
  return Catch::Session().run(argc, argv);
}
