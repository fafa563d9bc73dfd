// What the CUDA backend's model needs besides the kernels: a stream-ordered caching allocator
// (CUDA's own memory pool, never released back to the driver between steps, with our live and
// peak byte counts), typed device arrays drawn from it, and CUDA-event timers per phase.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "kernels/cuda/common.cuh"

namespace moetune::executor::gpu {

// cudaMallocAsync on the device's default pool with an unlimited release threshold: freed blocks
// stay cached in the pool for reuse in stream order, as PyTorch's caching allocator keeps them.
// Selects GPU `device`; throws moetune::InputError with the reason when there is none (no driver,
// or fewer GPUs), so a command on a machine without a GPU fails with one clear line.
void require_gpu(int device);

class DeviceAllocator {
 public:
  explicit DeviceAllocator(cudaStream_t stream);
  void* allocate(std::size_t bytes);
  void release(void* p, std::size_t bytes);
  cudaStream_t stream() const { return stream_; }
  std::size_t live_bytes() const { return live_; }
  std::size_t peak_bytes() const { return peak_; }
  // The pool's high-water mark of memory reserved from the driver.
  std::size_t pool_reserved_high() const;

 private:
  cudaStream_t stream_;
  cudaMemPool_t pool_ = nullptr;
  std::size_t live_ = 0, peak_ = 0;
};

// n elements of T from an allocator, returned to it on destruction (stream-ordered).
template <typename T>
class DeviceArray {
 public:
  DeviceArray() = default;
  DeviceArray(DeviceAllocator& alloc, std::int64_t n) { reset(alloc, n); }
  ~DeviceArray() { clear(); }
  DeviceArray(DeviceArray&& o) noexcept { *this = std::move(o); }
  DeviceArray& operator=(DeviceArray&& o) noexcept {
    if (this != &o) {
      clear();
      std::swap(alloc_, o.alloc_);
      std::swap(ptr_, o.ptr_);
      std::swap(n_, o.n_);
    }
    return *this;
  }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;

  void reset(DeviceAllocator& alloc, std::int64_t n) {
    clear();
    alloc_ = &alloc;
    n_ = n;
    ptr_ = n > 0 ? static_cast<T*>(alloc.allocate(std::size_t(n) * sizeof(T))) : nullptr;
  }
  void clear() {
    if (ptr_ != nullptr) alloc_->release(ptr_, std::size_t(n_) * sizeof(T));
    ptr_ = nullptr;
    n_ = 0;
  }
  T* get() const { return ptr_; }
  std::int64_t size() const { return n_; }
  std::size_t bytes() const { return std::size_t(n_) * sizeof(T); }

 private:
  DeviceAllocator* alloc_ = nullptr;
  T* ptr_ = nullptr;
  std::int64_t n_ = 0;
};

// Phase timers on one stream: begin(name) / end() record event pairs; collect() (after the stream
// has been synchronised) returns the seconds per phase and recycles the events.
class EventTimer {
 public:
  explicit EventTimer(cudaStream_t stream) : stream_(stream) {}
  ~EventTimer();
  EventTimer(const EventTimer&) = delete;
  EventTimer& operator=(const EventTimer&) = delete;
  void begin(const char* phase);
  void end();
  std::map<std::string, double> collect();

 private:
  cudaEvent_t next_event();
  cudaStream_t stream_;
  std::vector<cudaEvent_t> events_;
  std::size_t used_ = 0;
  std::vector<std::pair<std::string, std::pair<cudaEvent_t, cudaEvent_t>>> spans_;
  const char* open_ = nullptr;
  cudaEvent_t open_start_ = nullptr;
};

// RAII span: times a scope as `phase` when the timer is not null.
class PhaseScope {
 public:
  PhaseScope(EventTimer* timer, const char* phase) : timer_(timer) {
    if (timer_ != nullptr) timer_->begin(phase);
  }
  ~PhaseScope() {
    if (timer_ != nullptr) timer_->end();
  }
  PhaseScope(const PhaseScope&) = delete;
  PhaseScope& operator=(const PhaseScope&) = delete;

 private:
  EventTimer* timer_;
};

}  // namespace moetune::executor::gpu
