// The NCCL communicator on one GPU (label `gpu`): a one-rank group where every collective must be
// a copy, in every dtype, enqueued on the caller's stream; the host forms staged through the
// device; and the per-kind stats resolved from CUDA events. Several ranks need several GPUs and
// MPI; that check is not part of this single-GPU suite.
#include <catch2/catch.hpp>

#include <cstring>
#include <vector>

#include "executor/comm/nccl_communicator.hpp"

namespace {

using namespace moetune;
using namespace moetune::executor;

// A stream owned by the test; the communicators enqueue on it.
struct Stream {
  Stream() { REQUIRE(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess); }
  ~Stream() { cudaStreamDestroy(s); }
  cudaStream_t s = nullptr;
};

template <typename T>
T* device_copy(const std::vector<T>& host, cudaStream_t stream) {
  T* p = nullptr;
  REQUIRE(cudaMalloc(&p, host.size() * sizeof(T)) == cudaSuccess);
  REQUIRE(cudaMemcpyAsync(p, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice,
                          stream) == cudaSuccess);
  return p;
}

// Waits for the stream: the collectives before it are enqueued, not finished.
template <typename T>
std::vector<T> host_copy(const T* p, std::size_t n, cudaStream_t stream) {
  std::vector<T> host(n);
  REQUIRE(cudaMemcpyAsync(host.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost, stream) ==
          cudaSuccess);
  REQUIRE(cudaStreamSynchronize(stream) == cudaSuccess);
  return host;
}

TEST_CASE("NCCL communicator on one rank: collectives are copies", "[gpu][nccl]") {
  Stream stream;
  ProcessGroups groups = make_nccl_local_groups(stream.s);
  Communicator& c = *groups.world;
  REQUIRE(c.size() == 1);
  REQUIRE(c.rank() == 0);
  REQUIRE(c.backend() == "nccl");
  REQUIRE(c.device_memory());
  const std::vector<float> x = {1.5f, -2.f, 3.25f, 0.f, 7.f};
  float* send = device_copy(x, stream.s);
  float* recv = device_copy(std::vector<float>(x.size(), 0.f), stream.s);
  c.all_gather(send, recv, 5);
  CHECK(host_copy(recv, 5, stream.s) == x);
  c.reduce_scatter(send, recv, 5);
  CHECK(host_copy(recv, 5, stream.s) == x);
  c.all_reduce(recv, 5);
  CHECK(host_copy(recv, 5, stream.s) == x);
  const std::vector<std::int64_t> counts = {3};
  c.all_to_all(send, counts, recv, counts);
  CHECK(host_copy(recv, 3, stream.s) == std::vector<float>(x.begin(), x.begin() + 3));
  c.broadcast(recv, 5, 0);
  c.barrier();
  std::int64_t* ints = device_copy(std::vector<std::int64_t>{4, 5}, stream.s);
  c.all_reduce(ints, 2);
  CHECK(host_copy(ints, 2, stream.s) == std::vector<std::int64_t>{4, 5});
  double* doubles = device_copy(std::vector<double>{0.25}, stream.s);
  c.all_reduce(doubles, 1);
  CHECK(host_copy(doubles, 1, stream.s)[0] == 0.25);
  std::int32_t* ids = device_copy(std::vector<std::int32_t>{7, -1}, stream.s);
  std::int32_t* ids_out = device_copy(std::vector<std::int32_t>{0, 0}, stream.s);
  c.all_gather(ids, ids_out, 2);
  CHECK(host_copy(ids_out, 2, stream.s) == std::vector<std::int32_t>{7, -1});
  // bf16 travels as its 16-bit pattern (1.0 = 0x3f80, -2.5 = 0xc020).
  std::uint16_t* half = device_copy(std::vector<std::uint16_t>{0x3f80, 0xc020}, stream.s);
  c.all_reduce(half, 2, DType::BF16);
  CHECK(host_copy(half, 2, stream.s) == std::vector<std::uint16_t>{0x3f80, 0xc020});

  // stats() waits for the events of everything enqueued so far.
  const auto& stats = c.stats();
  CHECK(stats.at("all_reduce").calls == 4);
  CHECK(stats.at("all_reduce").bytes == 20.0 + 16.0 + 8.0 + 4.0);
  CHECK(stats.at("all_gather").calls == 2);
  CHECK(stats.at("all_gather").bytes == 20.0 + 8.0);
  CHECK(stats.at("all_to_all").bytes == 0.0);  // nothing to another rank
  CHECK(stats.at("all_reduce").seconds >= 0.0);

  // A split of the one rank is again a working one-rank communicator on the same stream.
  auto& nccl = dynamic_cast<NcclCommunicator&>(c);
  auto sub = nccl.split(0, 0);
  REQUIRE(sub->size() == 1);
  CHECK(sub->stream() == stream.s);
  sub->all_reduce(recv, 5);
  CHECK(host_copy(recv, 5, stream.s) == x);
  cudaFree(send);
  cudaFree(recv);
  cudaFree(ints);
  cudaFree(doubles);
  cudaFree(ids);
  cudaFree(ids_out);
  cudaFree(half);
}

TEST_CASE("NCCL communicator on one rank: host forms stage through the device", "[gpu][nccl]") {
  Stream stream;
  ProcessGroups groups = make_nccl_local_groups(stream.s);
  Communicator& c = groups[Group::DataParallel];
  double sums[2] = {1.5, -4.0};
  c.all_reduce_host(sums, 2);
  CHECK(sums[0] == 1.5);
  CHECK(sums[1] == -4.0);
  const float mine[3] = {1.f, 2.f, 3.f};
  float all[3] = {};
  c.all_gather_host(mine, all, 3);
  CHECK(std::memcmp(all, mine, sizeof mine) == 0);
  const std::int64_t counts_out[4] = {9, 8, 7, 6};
  std::int64_t counts_in[4] = {};
  const std::vector<std::int64_t> n = {4};
  c.all_to_all_host(counts_out, n, counts_in, n);
  CHECK(std::vector<std::int64_t>(counts_in, counts_in + 4) ==
        std::vector<std::int64_t>{9, 8, 7, 6});
  // A larger call grows the scratch.
  std::vector<std::int64_t> big(100000, 3);
  c.all_reduce_host(big.data(), static_cast<std::int64_t>(big.size()));
  CHECK(big.front() == 3);
  CHECK(big.back() == 3);
  CHECK(c.stats().at("all_reduce").calls == 2);
}

}  // namespace
