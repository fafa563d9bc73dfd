// Mesh: the mixed-radix rank map, the rank lists of every group, and where groups sit on nodes.
// References: small cases listed by hand from DESIGN.md's rules, the DESIGN example of 16 GPUs on
// 2 nodes, and (for placement) the rank-by-rank enumeration checked against the closed form over
// many random layouts, non-power-of-two degrees included.
#include <catch2/catch.hpp>

#include <algorithm>
#include <random>
#include <set>
#include <vector>

#include "core/layout.hpp"
#include "core/mesh.hpp"

using namespace moetune;
using Ranks = std::vector<std::int64_t>;

namespace {

Layout make_layout(std::int64_t tp, std::int64_t ep, std::int64_t hs, std::int64_t rep,
                   std::int64_t pp, const std::string& order) {
  Layout l;
  l.tp = tp;
  l.ep = ep;
  l.hs = hs;
  l.rep = rep;
  l.pp = pp;
  l.order = parse_order(order);
  return l;
}

std::vector<std::int64_t> divisors(std::int64_t n) {
  std::vector<std::int64_t> out;
  for (std::int64_t d = 1; d <= n; ++d) {
    if (n % d == 0) out.push_back(d);
  }
  return out;
}

}  // namespace

TEST_CASE("rank and coordinates are inverse for every order", "[core][mesh]") {
  // 2 * 3 * 2 * 2 * 1 = 24 ranks; every distinct order of the four outer axes.
  std::vector<Axis> outer = {Axis::Ep, Axis::Hs, Axis::Rep, Axis::Pp};
  std::sort(outer.begin(), outer.end());
  int orders = 0;
  do {
    Layout l = make_layout(2, 3, 2, 2, 1, "tp");
    l.order = {Axis::Tp, outer[0], outer[1], outer[2], outer[3]};
    const Mesh mesh(l, 6);
    CAPTURE(order_to_string(l.order));
    REQUIRE(mesh.world_size() == 24);
    std::set<Coords> seen;
    for (std::int64_t r = 0; r < mesh.world_size(); ++r) {
      const Coords c = mesh.coords(r);
      CHECK(mesh.rank(c) == r);
      seen.insert(c);
      for (Axis a : kDefaultOrder) {
        CHECK(c[static_cast<std::size_t>(a)] < l.degree(a));
      }
    }
    CHECK(seen.size() == 24);  // a bijection
    // tp is innermost: neighbouring ranks differ in tp first.
    CHECK(mesh.coords(1)[static_cast<std::size_t>(Axis::Tp)] == 1);
    ++orders;
  } while (std::next_permutation(outer.begin(), outer.end()));
  CHECK(orders == 24);
}

TEST_CASE("mixed radix: innermost axis first", "[core][mesh]") {
  // tp=2, ep=3, hs=2 in order tp, hs, ep: strides tp 1, hs 2, ep 4.
  // Rank 11 = 1*1 + 1*2 + 2*4 -> tp 1, hs 1, ep 2.
  const Mesh mesh(make_layout(2, 3, 2, 1, 1, "tp,hs,ep"), 4);
  const Coords c = mesh.coords(11);
  CHECK(c[static_cast<std::size_t>(Axis::Tp)] == 1);
  CHECK(c[static_cast<std::size_t>(Axis::Hs)] == 1);
  CHECK(c[static_cast<std::size_t>(Axis::Ep)] == 2);
  CHECK(c[static_cast<std::size_t>(Axis::Rep)] == 0);
  CHECK(mesh.node_of(11) == 2);  // 11 / 4
}

TEST_CASE("group rank lists of a small mesh", "[core][mesh]") {
  // tp=2, ep=2, hs=2 (8 ranks), order tp, ep, hs: strides tp 1, ep 2, hs 4.
  const Mesh mesh(make_layout(2, 2, 2, 1, 1, "tp,ep,hs"), 8);
  CHECK(mesh.group_ranks(Group::Tp, 0) == Ranks{0, 1});
  CHECK(mesh.group_ranks(Group::Ep, 0) == Ranks{0, 2});
  CHECK(mesh.group_ranks(Group::Hs, 0) == Ranks{0, 4});
  CHECK(mesh.group_ranks(Group::DenseReplicate, 0) == Ranks{0, 2});  // ep x rep, rep = 1
  CHECK(mesh.group_ranks(Group::ExpertReplicate, 0) == Ranks{0});    // rep
  CHECK(mesh.group_ranks(Group::Pp, 0) == Ranks{0});
  CHECK(mesh.group_ranks(Group::DataParallel, 0) == Ranks{0, 2, 4, 6});
  // Rank 7 = tp 1, ep 1, hs 1.
  CHECK(mesh.group_ranks(Group::Tp, 7) == Ranks{6, 7});
  CHECK(mesh.group_ranks(Group::Ep, 7) == Ranks{5, 7});
  CHECK(mesh.group_ranks(Group::Hs, 7) == Ranks{3, 7});
  CHECK(mesh.group_ranks(Group::DataParallel, 7) == Ranks{1, 3, 5, 7});

  // Same degrees, order tp, hs, ep: strides tp 1, hs 2, ep 4, so EP and HS swap partners.
  const Mesh swapped(make_layout(2, 2, 2, 1, 1, "tp,hs,ep"), 8);
  CHECK(swapped.group_ranks(Group::Ep, 0) == Ranks{0, 4});
  CHECK(swapped.group_ranks(Group::Hs, 0) == Ranks{0, 2});
  // ep x rep with rep = 2 outermost: tp=1, ep=2, hs=2, rep=2, order tp, ep, hs, rep:
  // strides ep 1, hs 2, rep 4; the dense replicate group of rank 0 is ep x rep = {0, 1, 4, 5}.
  const Mesh with_rep(make_layout(1, 2, 2, 2, 1, "tp,ep,hs,rep"), 8);
  const Ranks dense = with_rep.group_ranks(Group::DenseReplicate, 0);
  CHECK(std::set<std::int64_t>(dense.begin(), dense.end()) == std::set<std::int64_t>{0, 1, 4, 5});
  CHECK(with_rep.group_ranks(Group::ExpertReplicate, 0) == Ranks{0, 4});
}

TEST_CASE("groups of each kind partition the world", "[core][mesh]") {
  const std::vector<std::pair<Layout, std::int64_t>> cases = {
      {make_layout(2, 2, 2, 1, 1, "tp,ep,hs"), 8},
      {make_layout(2, 3, 2, 2, 1, "tp,rep,hs,ep"), 6},
      {make_layout(1, 2, 2, 2, 2, "tp,pp,hs,rep,ep"), 4},
      {make_layout(4, 1, 3, 1, 2, "tp,hs,pp"), 12},
  };
  for (const auto& [layout, per_node] : cases) {
    const Mesh mesh(layout, per_node);
    CAPTURE(describe(layout));
    for (Group g : kAllGroups) {
      CAPTURE(to_string(g));
      std::vector<int> seen(static_cast<std::size_t>(mesh.world_size()), 0);
      const auto groups = mesh.groups(g);
      const GroupPlacement p = mesh.placement_by_enumeration(g);
      CHECK(static_cast<std::int64_t>(groups.size()) == p.count);
      for (const Ranks& members : groups) {
        CHECK(static_cast<std::int64_t>(members.size()) == p.size);
        for (std::int64_t r : members) {
          ++seen[static_cast<std::size_t>(r)];
          // Every member names the same group, in the same order.
          CHECK(mesh.group_ranks(g, r) == members);
        }
      }
      CHECK(std::all_of(seen.begin(), seen.end(), [](int n) { return n == 1; }));
      CHECK(p.size * p.count == mesh.world_size());
    }
  }
}

TEST_CASE("DESIGN example: 16 GPUs on 2 nodes with ep=2 and hs=8", "[core][mesh]") {
  SECTION("order tp, hs, ep: sharding inside each node, all-to-all across nodes") {
    const Mesh mesh(make_layout(1, 2, 8, 1, 1, "tp,hs,ep,rep,pp"), 8);
    const GroupPlacement hs = mesh.placement(Group::Hs);
    CHECK(hs.size == 8);
    CHECK(hs.nodes_spanned == 1);
    CHECK(hs.within_node());
    CHECK(hs.max_ranks_per_node == 8);
    const GroupPlacement ep = mesh.placement(Group::Ep);
    CHECK(ep.size == 2);
    CHECK(ep.nodes_spanned == 2);
    CHECK(ep.max_ranks_per_node == 1);
    CHECK(mesh.group_ranks(Group::Ep, 3) == Ranks{3, 11});
  }
  SECTION("order tp, ep, hs: all-to-all inside the node, all-gather across nodes") {
    const Mesh mesh(make_layout(1, 2, 8, 1, 1, "tp,ep,hs,rep,pp"), 8);
    const GroupPlacement ep = mesh.placement(Group::Ep);
    CHECK(ep.within_node());
    CHECK(ep.max_ranks_per_node == 2);
    const GroupPlacement hs = mesh.placement(Group::Hs);
    CHECK(hs.nodes_spanned == 2);
    CHECK(hs.max_ranks_per_node == 4);  // ranks 0, 2, 4, 6 on node 0 and 8, ..., 14 on node 1
    CHECK(hs.min_ranks_per_node == 4);
    CHECK(mesh.group_ranks(Group::Hs, 0) == Ranks{0, 2, 4, 6, 8, 10, 12, 14});
  }
}

TEST_CASE("closed-form placement equals enumeration on random layouts", "[core][mesh][property]") {
  // Fixed seed: the test is deterministic; 400 layouts cover aligned and unaligned meshes.
  std::mt19937_64 rng(20240601);
  auto pick = [&](const std::vector<std::int64_t>& v) {
    return v[std::uniform_int_distribution<std::size_t>(0, v.size() - 1)(rng)];
  };
  const std::vector<std::int64_t> per_node_choices = {1, 2, 3, 4, 6, 8, 12, 16};
  const std::vector<std::int64_t> node_choices = {1, 2, 3, 4, 6};
  int unaligned_seen = 0;
  for (int trial = 0; trial < 400; ++trial) {
    const std::int64_t d = pick(per_node_choices);
    const std::int64_t nodes = pick(node_choices);
    const std::int64_t world = d * nodes;
    Layout l;
    l.tp = pick(divisors(d));
    std::int64_t rest = world / l.tp;
    l.pp = pick(divisors(rest));
    rest /= l.pp;
    l.ep = pick(divisors(rest));
    rest /= l.ep;
    l.hs = pick(divisors(rest));
    l.rep = rest / l.hs;
    std::vector<Axis> outer = {Axis::Ep, Axis::Hs, Axis::Rep, Axis::Pp};
    std::shuffle(outer.begin(), outer.end(), rng);
    l.order = {Axis::Tp, outer[0], outer[1], outer[2], outer[3]};
    REQUIRE(l.world_size() == world);
    const Mesh mesh(l, d);
    CAPTURE(d, nodes, describe(l));
    for (Group g : kAllGroups) {
      CAPTURE(to_string(g));
      const GroupPlacement closed = mesh.placement(g);
      const GroupPlacement counted = mesh.placement_by_enumeration(g);
      CHECK(closed.size == counted.size);
      CHECK(closed.count == counted.count);
      CHECK(closed.nodes_spanned == counted.nodes_spanned);
      CHECK(closed.max_ranks_per_node == counted.max_ranks_per_node);
      CHECK(closed.min_ranks_per_node == counted.min_ranks_per_node);
      if (counted.min_ranks_per_node != counted.max_ranks_per_node) ++unaligned_seen;
    }
  }
  // The random layouts must include groups spread unevenly over nodes, or the enumeration
  // fallback was never exercised.
  CHECK(unaligned_seen > 0);
}

TEST_CASE("placement of non-power-of-two degrees: 6 devices per node, degrees 3 and 2",
          "[core][mesh]") {
  // 12 ranks on 2 nodes of 6. tp=1, ep=3, hs=2, rep=2.
  SECTION("order tp, ep, hs, rep: ep and hs fill a node (3*2 = 6), rep crosses") {
    const Mesh mesh(make_layout(1, 3, 2, 2, 1, "tp,ep,hs,rep"), 6);
    CHECK(mesh.placement(Group::Ep).within_node());
    CHECK(mesh.placement(Group::Hs).within_node());
    CHECK(mesh.placement(Group::ExpertReplicate).nodes_spanned == 2);
    CHECK(mesh.group_ranks(Group::ExpertReplicate, 0) == Ranks{0, 6});
  }
  SECTION("order tp, hs, rep, ep: ep has stride 4, which no node boundary respects") {
    // EP group of rank 0 = {0, 4, 8}: nodes 0, 0, 1; of rank 2 = {2, 6, 10}: nodes 0, 1, 1.
    const Mesh mesh(make_layout(1, 3, 2, 2, 1, "tp,hs,rep,ep"), 6);
    CHECK(mesh.group_ranks(Group::Ep, 0) == Ranks{0, 4, 8});
    const GroupPlacement ep = mesh.placement(Group::Ep);
    CHECK(ep.nodes_spanned == 2);
    CHECK(ep.max_ranks_per_node == 2);
    CHECK(ep.min_ranks_per_node == 1);
  }
}
