// Buffers drawn from a backend, and the choice of backend by name.
#include <algorithm>

#include "core/error.hpp"
#include "executor/backend.hpp"

namespace moetune::executor {

void Buffer::resize(Backend& backend, std::int64_t count, DType type) {
  MOETUNE_CHECK(count >= 0, "a buffer cannot hold a negative count");
  const std::size_t need = static_cast<std::size_t>(count) * dtype_size(type);
  if (backend_ != &backend || need > capacity_bytes_) {
    clear();
    backend_ = &backend;
    if (need > 0) {
      ptr_ = backend.allocate(need);
      // Fresh memory starts as zeros, as std::vector's does: rows a kernel never writes (past the
      // routed rows of a permuted buffer) hold zeros, not whatever the pool held before.
      backend.zero(ptr_, need);
    }
    capacity_bytes_ = need;
  }
  count_ = count;
  type_ = type;
}

void Buffer::clear() {
  if (ptr_ != nullptr) backend_->release(ptr_, capacity_bytes_);
  ptr_ = nullptr;
  count_ = 0;
  capacity_bytes_ = 0;
}

void Buffer::swap(Buffer& o) noexcept {
  std::swap(backend_, o.backend_);
  std::swap(ptr_, o.ptr_);
  std::swap(count_, o.count_);
  std::swap(capacity_bytes_, o.capacity_bytes_);
  std::swap(type_, o.type_);
}

namespace {
template <typename T>
T* typed(void* p, DType have, DType want) {
  MOETUNE_CHECK(have == want, "a " + to_string(have) + " buffer read as " + to_string(want));
  return static_cast<T*>(p);
}
}  // namespace

float* Buffer::f32() const {
  return typed<float>(ptr_, type_, DType::F32);
}
double* Buffer::f64() const {
  return typed<double>(ptr_, type_, DType::F64);
}
std::int32_t* Buffer::i32() const {
  return typed<std::int32_t>(ptr_, type_, DType::I32);
}
std::int64_t* Buffer::i64() const {
  return typed<std::int64_t>(ptr_, type_, DType::I64);
}

}  // namespace moetune::executor
