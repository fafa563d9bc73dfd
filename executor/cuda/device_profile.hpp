// Micro-benchmarks of one GPU for `moetune profile --backend cuda`: the rates the simulator's
// device profile describes, measured with the CUDA backend's own kernels (cuBLASLt GEMMs and
// grouped GEMMs, RMSNorm, the model's attention, the fused AdamW) and CUDA events.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moetune::executor::gpu {

struct GemmRate {
  std::int64_t m = 0, n = 0, k = 0;
  double flops_per_s = 0;
};

struct DeviceRates {
  std::string name;                  // as the driver reports it
  double memory_GiB = 0;             // total device memory
  std::vector<GemmRate> gemm;        // bf16 in, fp32 accumulate, bf16 out
  GemmRate grouped;                  // one grouped call: experts x (rows x 2f x h)
  double copy_bytes_per_s = 0;       // device-to-device copy, bytes read + written
  double rmsnorm_bytes_per_s = 0;    // bf16 RMSNorm forward, bytes read + written
  double optimizer_bytes_per_s = 0;  // AdamW over fp32 state: 4 reads + 3 writes of 4 bytes and
                                     // a bf16 working copy per parameter
  double attention_flops_per_s = 0;  // causal attention forward, FLOPs as the simulator counts
  double kernel_overhead_s = 0;      // per launch of a tiny kernel, launched back to back
};

// Measures GPU `device`. Throws moetune::InputError when there is no usable GPU.
DeviceRates measure_device(int device);

}  // namespace moetune::executor::gpu
