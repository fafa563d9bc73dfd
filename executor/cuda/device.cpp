// The caching allocator over CUDA's stream-ordered pool, and the event timers.
#include "executor/cuda/device.hpp"

#include <limits>
#include <string>

#include "core/error.hpp"

namespace moetune::executor::gpu {

void require_gpu(int device) {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess || count <= device) {
    const std::string why = status != cudaSuccess ? cudaGetErrorString(status)
                                                  : std::to_string(count) + " GPU(s) found";
    cudaGetLastError();  // clear the sticky error of a machine without a driver
    throw InputError("the CUDA backend needs GPU " + std::to_string(device) +
                     " and there is none here (" + why + ")");
  }
  CUDA_CHECK(cudaSetDevice(device));
}

DeviceAllocator::DeviceAllocator(cudaStream_t stream) : stream_(stream) {
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool_, device));
  std::uint64_t keep = std::numeric_limits<std::uint64_t>::max();
  CUDA_CHECK(cudaMemPoolSetAttribute(pool_, cudaMemPoolAttrReleaseThreshold, &keep));
  // The high-water mark counts from this allocator's start (setting it to 0 resets it).
  std::uint64_t zero = 0;
  CUDA_CHECK(cudaMemPoolSetAttribute(pool_, cudaMemPoolAttrReservedMemHigh, &zero));
}

void* DeviceAllocator::allocate(std::size_t bytes) {
  void* p = nullptr;
  CUDA_CHECK(cudaMallocAsync(&p, bytes, stream_));
  live_ += bytes;
  if (live_ > peak_) peak_ = live_;
  return p;
}

void DeviceAllocator::release(void* p, std::size_t bytes) {
  // Called from destructors: an error here (context torn down at exit) is not worth a throw.
  cudaFreeAsync(p, stream_);
  live_ -= bytes;
}

std::size_t DeviceAllocator::pool_reserved_high() const {
  std::uint64_t high = 0;
  CUDA_CHECK(cudaMemPoolGetAttribute(pool_, cudaMemPoolAttrReservedMemHigh, &high));
  return std::size_t(high);
}

EventTimer::~EventTimer() {
  for (cudaEvent_t e : events_)
    cudaEventDestroy(e);
}

cudaEvent_t EventTimer::next_event() {
  if (used_ == events_.size()) {
    cudaEvent_t e = nullptr;
    CUDA_CHECK(cudaEventCreate(&e));
    events_.push_back(e);
  }
  return events_[used_++];
}

void EventTimer::begin(const char* phase) {
  kernels::cuda::check_sizes(open_ == nullptr, "EventTimer", "phases may not nest");
  open_ = phase;
  open_start_ = next_event();
  CUDA_CHECK(cudaEventRecord(open_start_, stream_));
}

void EventTimer::end() {
  if (open_ == nullptr) return;
  cudaEvent_t stop = next_event();
  CUDA_CHECK(cudaEventRecord(stop, stream_));
  spans_.push_back({open_, {open_start_, stop}});
  open_ = nullptr;
}

std::map<std::string, double> EventTimer::collect() {
  std::map<std::string, double> out;
  for (const auto& [phase, span] : spans_) {
    CUDA_CHECK(cudaEventSynchronize(span.second));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, span.first, span.second));
    out[phase] += double(ms) / 1e3;
  }
  spans_.clear();
  used_ = 0;
  return out;
}

}  // namespace moetune::executor::gpu
