// Helpers for the in-process communicator tests: a DeviceMemory that behaves like a CUDA stream
// (copies and sums wait in a queue until synchronize, so a communicator that forgets to
// synchronise reads stale data), typed buffers of every DType, a per-rank expectation log (Catch2
// v2 assertions are not thread-safe, so rank threads only log and the main thread checks), and a
// deadline that turns a hang into a failure.
#pragma once

#include <catch2/catch.hpp>

#include <bit>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "executor/comm/inproc_communicator.hpp"

namespace moetune::test {

using executor::DeviceMemory;
using executor::DType;
using executor::dtype_size;

// bf16 written independently of the library: the upper half of an fp32, rounded to nearest even.
inline float bf16_to_float(std::uint16_t b) {
  return std::bit_cast<float>(static_cast<std::uint32_t>(b) << 16);
}
inline std::uint16_t float_to_bf16(float f) {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  return static_cast<std::uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// n elements of one DType, set and read as doubles. The test values are small integers, exact in
// every type (bf16 holds integers up to 256 exactly), so expected results compare with ==.
class Values {
 public:
  Values(DType type, std::size_t n) : type_(type), n_(n), bytes_(n * dtype_size(type)) {}
  void set(std::size_t i, double v) {
    void* p = bytes_.data() + i * dtype_size(type_);
    switch (type_) {
      case DType::F32:
        return store(p, static_cast<float>(v));
      case DType::F64:
        return store(p, v);
      case DType::I32:
        return store(p, static_cast<std::int32_t>(v));
      case DType::I64:
        return store(p, static_cast<std::int64_t>(v));
      case DType::BF16: {
        const std::uint16_t b = float_to_bf16(static_cast<float>(v));
        if (bf16_to_float(b) != v) throw std::logic_error("test value not exact in bf16");
        return store(p, b);
      }
    }
  }
  double get(std::size_t i) const {
    const void* p = bytes_.data() + i * dtype_size(type_);
    switch (type_) {
      case DType::F32:
        return load<float>(p);
      case DType::F64:
        return load<double>(p);
      case DType::I32:
        return static_cast<double>(load<std::int32_t>(p));
      case DType::I64:
        return static_cast<double>(load<std::int64_t>(p));
      case DType::BF16:
        return bf16_to_float(load<std::uint16_t>(p));
    }
    return 0;
  }
  void fill(double v) {
    for (std::size_t i = 0; i < n_; ++i)
      set(i, v);
  }
  void* data() { return bytes_.data(); }
  std::size_t size() const { return n_; }
  std::size_t bytes() const { return bytes_.size(); }

 private:
  template <typename T>
  static void store(void* p, T v) {
    std::memcpy(p, &v, sizeof v);
  }
  template <typename T>
  static T load(const void* p) {
    T v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
  DType type_;
  std::size_t n_;
  std::vector<std::byte> bytes_;
};

// Host memory that acts like one CUDA stream: copy and accumulate are queued and run, in order,
// only at synchronize (or a host copy, which waits). Counts what it is asked to do.
class QueuedMemory : public DeviceMemory {
 public:
  bool on_device() const override { return true; }
  void copy(void* dst, const void* src, std::size_t bytes) override {
    ++ops;
    queue_.push_back([=] { std::memmove(dst, src, bytes); });
  }
  void accumulate(void* dst, const void* src, std::int64_t count, DType type) override {
    ++ops;
    queue_.push_back([=, this] { add(dst, src, count, type); });
  }
  void copy_to_host(void* host, const void* src, std::size_t bytes) override {
    synchronize();
    std::memcpy(host, src, bytes);
  }
  void copy_from_host(void* dst, const void* host, std::size_t bytes) override {
    synchronize();
    std::memcpy(dst, host, bytes);
  }
  // A failing operation drops the ones behind it, as a failed stream does.
  void synchronize() override {
    ++syncs;
    std::vector<std::function<void()>> pending;
    pending.swap(queue_);
    for (auto& op : pending)
      op();
  }
  int ops = 0, syncs = 0;

 protected:
  virtual void add(void* dst, const void* src, std::int64_t count, DType type) {
    const std::size_t es = dtype_size(type);
    for (std::int64_t i = 0; i < count; ++i) {
      char* d = static_cast<char*>(dst) + static_cast<std::size_t>(i) * es;
      const char* s = static_cast<const char*>(src) + static_cast<std::size_t>(i) * es;
      switch (type) {
        case DType::F32:
          add_one<float>(d, s);
          break;
        case DType::F64:
          add_one<double>(d, s);
          break;
        case DType::I32:
          add_one<std::int32_t>(d, s);
          break;
        case DType::I64:
          add_one<std::int64_t>(d, s);
          break;
        case DType::BF16: {
          std::uint16_t a, b;
          std::memcpy(&a, d, 2);
          std::memcpy(&b, s, 2);
          const std::uint16_t sum = float_to_bf16(bf16_to_float(a) + bf16_to_float(b));
          std::memcpy(d, &sum, 2);
          break;
        }
      }
    }
  }

 private:
  template <typename T>
  static void add_one(char* d, const char* s) {
    T a, b;
    std::memcpy(&a, d, sizeof a);
    std::memcpy(&b, s, sizeof b);
    a += b;
    std::memcpy(d, &a, sizeof a);
  }
  std::vector<std::function<void()>> queue_;
};

// What rank threads found, checked on the main thread.
class RankLog {
 public:
  explicit RankLog(int ranks) : errors_(static_cast<std::size_t>(ranks)), checks_(errors_.size()) {}
  void expect(int rank, bool ok, const std::string& what) {
    checks_[static_cast<std::size_t>(rank)] += 1;
    if (!ok) errors_[static_cast<std::size_t>(rank)].push_back(what);
  }
  // Every rank checked something, and nothing failed.
  void check() const {
    for (std::size_t r = 0; r < errors_.size(); ++r) {
      INFO("rank " << r);
      CHECK(checks_[r] > 0);
      for (std::size_t i = 0; i < errors_[r].size() && i < 10; ++i)
        FAIL_CHECK(errors_[r][i]);
      CHECK(errors_[r].empty());
    }
  }

 private:
  std::vector<std::vector<std::string>> errors_;
  std::vector<std::int64_t> checks_;
};

// Runs f; a run longer than `limit` is a hang, and the test binary aborts rather than wait.
template <typename F>
void with_deadline(std::chrono::seconds limit, F&& f) {
  std::mutex mutex;
  std::condition_variable cv;
  bool done = false;
  std::thread watchdog([&] {
    std::unique_lock lock(mutex);
    if (!cv.wait_for(lock, limit, [&] { return done; })) {
      std::fprintf(stderr, "in-process ranks still running after %lld s: a hang\n",
                   static_cast<long long>(limit.count()));
      std::abort();
    }
  });
  auto stop = [&] {
    {
      std::lock_guard lock(mutex);
      done = true;
    }
    cv.notify_all();
    watchdog.join();
  };
  try {
    f();
  } catch (...) {
    stop();
    throw;
  }
  stop();
}

}  // namespace moetune::test
