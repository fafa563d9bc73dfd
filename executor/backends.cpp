// Choosing a backend by name, in the one library that knows which backends this build has.
#include "core/error.hpp"
#include "executor/backend.hpp"
#ifdef MOETUNE_HAVE_CUDA_BACKEND
#include "executor/cuda/cuda_backend.hpp"
#endif

namespace moetune::executor {

#ifndef MOETUNE_HAVE_CUDA_BACKEND
std::unique_ptr<Backend> make_cuda_backend(int) {
  throw InputError(
      "--backend cuda: this moetune was built without the CUDA backend (configure with "
      "-DMOETUNE_CUDA=ON where the CUDA toolkit is installed)");
}
#endif

bool device_groups_available() {
#ifdef MOETUNE_HAVE_DEVICE_GROUPS
  return true;
#else
  return false;
#endif
}

#ifndef MOETUNE_HAVE_DEVICE_GROUPS
ProcessGroups make_device_groups(Backend& backend, const Layout&, std::int64_t) {
  throw InputError("several " + backend.name() +
                   " ranks need the device's collectives (NCCL), which this moetune was built "
                   "without");
}
#endif

void check_backend_supports(const std::string& name, const ModelSpec& model,
                            const MoeOptions& moe) {
  if (name == "cpu") return;
  if (name != "cuda") throw InputError("unknown backend '" + name + "'; valid: cpu, cuda");
#ifdef MOETUNE_HAVE_CUDA_BACKEND
  gpu::check_cuda_supported(model, moe);
#else
  (void)model;
  (void)moe;
  make_cuda_backend(0);  // says that this build has none
#endif
}

std::unique_ptr<Backend> make_backend(const std::string& name, int device) {
  if (name == "cpu") return make_cpu_backend();
  if (name == "cuda") return make_cuda_backend(device);
  throw InputError("unknown backend '" + name + "'; valid: cpu, cuda");
}

}  // namespace moetune::executor
