// MPI implementation of the communicator interface.
#include "executor/comm/mpi_communicator.hpp"

#include <mpi.h>

#include <chrono>
#include <climits>
#include <cstdlib>
#include <vector>

#include "core/error.hpp"

namespace moetune::executor {

namespace {

int to_int(std::int64_t n, const char* what) {
  MOETUNE_CHECK(n >= 0 && n <= INT_MAX, std::string(what) + ": count beyond MPI's int range");
  return static_cast<int>(n);
}

void check(int rc, const char* what) {
  if (rc != MPI_SUCCESS) {
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, text, &len);
    throw InternalError(std::string(what) +
                        " failed: " + std::string(text, static_cast<std::size_t>(len)));
  }
}

// Moving data needs only the element size; bf16 travels as 16-bit words.
MPI_Datatype mpi_type(DType type) {
  switch (type) {
    case DType::F32:
      return MPI_FLOAT;
    case DType::F64:
      return MPI_DOUBLE;
    case DType::I32:
      return MPI_INT32_T;
    case DType::I64:
      return MPI_INT64_T;
    case DType::BF16:
      return MPI_UINT16_T;
  }
  return MPI_BYTE;
}

// Sums need an arithmetic type: MPI has none for bf16 (the CPU backend computes in fp32).
MPI_Datatype sum_type(DType type) {
  MOETUNE_CHECK(type != DType::BF16, "the MPI communicator cannot sum bf16 buffers");
  return mpi_type(type);
}

class Timer {
 public:
  Timer() : start_(std::chrono::steady_clock::now()) {}
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  std::chrono::steady_clock::time_point start_;
};

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(MPI_Comm comm) : comm_(comm) {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }
  ~MpiCommunicator() override {
    if (comm_ != MPI_COMM_WORLD && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "mpi"; }

 protected:
  void do_all_gather(const void* send, void* recv, std::int64_t count, DType type) override {
    Timer t;
    const int n = to_int(count, "all_gather");
    check(MPI_Allgather(send, n, mpi_type(type), recv, n, mpi_type(type), comm_), "MPI_Allgather");
    record("all_gather", bytes(count * size_, type), t.seconds());
  }
  void do_reduce_scatter(const void* send, void* recv, std::int64_t count, DType type) override {
    Timer t;
    check(MPI_Reduce_scatter_block(send, recv, to_int(count, "reduce_scatter"), sum_type(type),
                                   MPI_SUM, comm_),
          "MPI_Reduce_scatter_block");
    record("reduce_scatter", bytes(count * size_, type), t.seconds());
  }
  void do_all_reduce(void* data, std::int64_t count, DType type) override {
    Timer t;
    check(MPI_Allreduce(MPI_IN_PLACE, data, to_int(count, "all_reduce"), sum_type(type), MPI_SUM,
                        comm_),
          "MPI_Allreduce");
    record("all_reduce", bytes(count, type), t.seconds());
  }
  void do_all_to_all(const void* send, std::span<const std::int64_t> send_counts, void* recv,
                     std::span<const std::int64_t> recv_counts, DType type) override {
    Timer t;
    const double sent = alltoallv(send, send_counts, recv, recv_counts, mpi_type(type));
    record("all_to_all", sent * static_cast<double>(dtype_size(type)), t.seconds());
  }
  void do_broadcast(void* data, std::int64_t count, DType type, int root) override {
    Timer t;
    check(MPI_Bcast(data, to_int(count, "broadcast"), mpi_type(type), root, comm_), "MPI_Bcast");
    record("broadcast", bytes(count, type), t.seconds());
  }
  void do_barrier() override { check(MPI_Barrier(comm_), "MPI_Barrier"); }
  void do_send(const void* data, std::int64_t count, DType type, int peer) override {
    Timer t;
    check(MPI_Send(data, to_int(count, "send"), mpi_type(type), peer, 0, comm_), "MPI_Send");
    record("p2p", bytes(count, type), t.seconds());
  }
  void do_recv(void* data, std::int64_t count, DType type, int peer) override {
    Timer t;
    check(MPI_Recv(data, to_int(count, "recv"), mpi_type(type), peer, 0, comm_, MPI_STATUS_IGNORE),
          "MPI_Recv");
    record("p2p", 0.0, t.seconds());
  }

 private:
  static double bytes(std::int64_t count, DType type) {
    return static_cast<double>(count) * static_cast<double>(dtype_size(type));
  }
  // Elements sent to other ranks.
  double alltoallv(const void* send, std::span<const std::int64_t> send_counts, void* recv,
                   std::span<const std::int64_t> recv_counts, MPI_Datatype type) {
    MOETUNE_CHECK(send_counts.size() == static_cast<std::size_t>(size_) &&
                      recv_counts.size() == static_cast<std::size_t>(size_),
                  "all_to_all: one count per peer");
    std::vector<int> sc(static_cast<std::size_t>(size_)), rc(sc.size()), sd(sc.size()),
        rd(sc.size());
    std::int64_t so = 0, ro = 0, sent = 0;
    for (std::size_t p = 0; p < sc.size(); ++p) {
      sc[p] = to_int(send_counts[p], "all_to_all");
      rc[p] = to_int(recv_counts[p], "all_to_all");
      sd[p] = to_int(so, "all_to_all");
      rd[p] = to_int(ro, "all_to_all");
      so += send_counts[p];
      ro += recv_counts[p];
      if (static_cast<int>(p) != rank_) sent += send_counts[p];
    }
    check(MPI_Alltoallv(send, sc.data(), sd.data(), type, recv, rc.data(), rd.data(), type, comm_),
          "MPI_Alltoallv");
    return static_cast<double>(sent);
  }

  MPI_Comm comm_;
  int rank_ = 0;
  int size_ = 1;
};

}  // namespace

MpiRuntime::MpiRuntime(int* argc, char*** argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
  }
}

MpiRuntime::~MpiRuntime() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

int MpiRuntime::world_rank() const {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

int MpiRuntime::world_size() const {
  int s = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &s);
  return s;
}

bool MpiRuntime::launched_with_several_ranks() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS"}) {
    if (const char* v = std::getenv(var); v != nullptr && std::atoi(v) > 1) return true;
  }
  return false;
}

ProcessGroups make_mpi_groups(const Layout& layout, std::int64_t devices_per_node) {
  int world_size = 0, world_rank = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  if (world_size != layout.world_size()) {
    throw InputError("the plan needs " + std::to_string(layout.world_size()) +
                     " ranks but MPI started " + std::to_string(world_size));
  }
  const Mesh mesh(layout, devices_per_node);
  ProcessGroups g;
  MPI_Comm world_dup = MPI_COMM_NULL;
  MPI_Comm_dup(MPI_COMM_WORLD, &world_dup);
  g.world = std::make_unique<MpiCommunicator>(world_dup);
  for (Group kind : kAllGroups) {
    const std::vector<std::int64_t> members = mesh.group_ranks(kind, world_rank);
    // Every member computes the same colour (the group's first rank) and key (its position), so
    // MPI_Comm_split orders each group exactly as Mesh::group_ranks lists it.
    int key = 0;
    for (std::size_t i = 0; i < members.size(); ++i) {
      if (members[i] == world_rank) key = static_cast<int>(i);
    }
    MPI_Comm comm = MPI_COMM_NULL;
    check(MPI_Comm_split(MPI_COMM_WORLD, static_cast<int>(members.front()), key, &comm),
          "MPI_Comm_split");
    g.groups[kind] = std::make_unique<MpiCommunicator>(comm);
  }
  return g;
}

}  // namespace moetune::executor
