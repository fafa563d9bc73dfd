// The NCCL communicator on one GPU (label `gpu`): a one-rank group where every collective must be
// a copy, and the per-kind stats recorded. Several ranks need several GPUs and MPI; that check is
// not part of this single-GPU suite.
#include <catch2/catch.hpp>

#include <vector>

#include "executor/comm/nccl_communicator.hpp"

namespace {

using namespace moetune::executor;

template <typename T>
T* device_copy(const std::vector<T>& host) {
  T* p = nullptr;
  REQUIRE(cudaMalloc(&p, host.size() * sizeof(T)) == cudaSuccess);
  REQUIRE(cudaMemcpy(p, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice) ==
          cudaSuccess);
  // The communicator's stream does not wait for the legacy stream: finish the copy first.
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  return p;
}

template <typename T>
std::vector<T> host_copy(const T* p, std::size_t n) {
  std::vector<T> host(n);
  REQUIRE(cudaMemcpy(host.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost) == cudaSuccess);
  return host;
}

TEST_CASE("NCCL communicator on one rank: collectives are copies", "[gpu][nccl]") {
  ProcessGroups groups = make_nccl_local_groups();
  Communicator& c = *groups.world;
  REQUIRE(c.size() == 1);
  REQUIRE(c.rank() == 0);
  REQUIRE(c.backend() == "nccl");
  const std::vector<float> x = {1.5f, -2.f, 3.25f, 0.f, 7.f};
  float* send = device_copy(x);
  float* recv = device_copy(std::vector<float>(x.size(), 0.f));
  c.all_gather(send, recv, 5);
  CHECK(host_copy(recv, 5) == x);
  c.reduce_scatter(send, recv, 5);
  CHECK(host_copy(recv, 5) == x);
  c.all_reduce(recv, 5);
  CHECK(host_copy(recv, 5) == x);
  const std::vector<std::int64_t> counts = {3};
  c.all_to_all(send, counts, recv, counts);
  CHECK(host_copy(recv, 3) == std::vector<float>(x.begin(), x.begin() + 3));
  c.broadcast(recv, 5, 0);
  c.barrier();
  std::int64_t* ints = device_copy(std::vector<std::int64_t>{4, 5});
  c.all_reduce(ints, 2);
  CHECK(host_copy(ints, 2) == std::vector<std::int64_t>{4, 5});
  double* doubles = device_copy(std::vector<double>{0.25});
  c.all_reduce(doubles, 1);
  CHECK(host_copy(doubles, 1)[0] == 0.25);
  CHECK(c.stats().at("all_reduce").calls == 3);
  CHECK(c.stats().at("all_gather").bytes == 20.0);
  // A split of the one rank is again a working one-rank communicator.
  auto& nccl = dynamic_cast<NcclCommunicator&>(c);
  auto sub = nccl.split(0, 0);
  REQUIRE(sub->size() == 1);
  sub->all_reduce(recv, 5);
  CHECK(host_copy(recv, 5) == x);
  cudaFree(send);
  cudaFree(recv);
  cudaFree(ints);
  cudaFree(doubles);
}

}  // namespace
