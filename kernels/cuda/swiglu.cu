// SwiGLU gate kernels and the grouped expert FFN on Blas.
#include <string>

#include "kernels/cuda/swiglu.cuh"

namespace moetune::kernels::cuda {

namespace {

constexpr int kThreads = 256;

__device__ inline float sigmoid(float z) {
  return 1.f / (1.f + expf(-z));
}

__global__ void act_forward_kernel(bf16* act, const bf16* h1, const bf16* h3, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    const float a = __bfloat162float(h1[i]);
    act[i] = __float2bfloat16_rn(a * sigmoid(a) * __bfloat162float(h3[i]));
  }
}

// silu'(a) = s (1 + a (1 - s)).
__global__ void act_backward_kernel(bf16* dh1, bf16* dh3, const bf16* dact, const bf16* h1,
                                    const bf16* h3, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    const float a = __bfloat162float(h1[i]);
    const float s = sigmoid(a);
    const float g = __bfloat162float(dact[i]);  // read before dh1 (which may be dact) is written
    dh1[i] = __float2bfloat16_rn(g * __bfloat162float(h3[i]) * s * (1.f + a * (1.f - s)));
    dh3[i] = __float2bfloat16_rn(g * a * s);
  }
}

// One problem per expert: rows[x] = counts[x], row offsets accumulated.
GroupedGemm expert_problems(const std::int64_t* counts, std::int64_t e, bool trans_a, bool trans_b,
                            std::int64_t n_cols, std::int64_t inner, float beta) {
  GroupedGemm g;
  g.trans_a = trans_a;
  g.trans_b = trans_b;
  g.beta = beta;
  for (std::int64_t x = 0; x < e; x++) {
    check_sizes(counts[x] >= 0, "swiglu_grouped", "negative count for expert " + std::to_string(x));
    g.m.push_back(counts[x]);
    g.n.push_back(n_cols);
    g.k.push_back(inner);
  }
  return g;
}

}  // namespace

void swiglu_act_forward(bf16* act, const bf16* h1, const bf16* h3, std::int64_t n,
                        cudaStream_t stream) {
  check_sizes(n >= 0, "swiglu_act_forward", "negative n");
  if (n == 0) return;
  act_forward_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(act, h1, h3, n);
  CUDA_CHECK_LAUNCH();
}

void swiglu_act_backward(bf16* dh1, bf16* dh3, const bf16* dact, const bf16* h1, const bf16* h3,
                         std::int64_t n, cudaStream_t stream) {
  check_sizes(n >= 0, "swiglu_act_backward", "negative n");
  if (n == 0) return;
  act_backward_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(dh1, dh3, dact, h1, h3, n);
  CUDA_CHECK_LAUNCH();
}

void swiglu_grouped_forward(Blas& blas, bf16* out, bf16* h1, bf16* h3, bf16* act, const bf16* x,
                            const bf16* w1, const bf16* w3, const bf16* w2,
                            const std::int64_t* counts, std::int64_t e, std::int64_t d,
                            std::int64_t f) {
  check_sizes(e > 0 && d > 0 && f > 0 && counts != nullptr, "swiglu_grouped_forward",
              "need e, d, f > 0 and counts");
  // h1 = x w1^T and h3 = x w3^T per expert: [rows, D] x [F, D]^T.
  GroupedGemm g1 = expert_problems(counts, e, false, true, f, d, 0.f);
  g1.lda = d;
  g1.ldb = d;
  g1.ldc = f;
  GroupedGemm g3 = g1;
  GroupedGemm g2 = expert_problems(counts, e, false, true, d, f, 0.f);  // out = act w2^T
  g2.lda = f;
  g2.ldb = f;
  g2.ldc = d;
  std::int64_t rows = 0;
  for (std::int64_t xe = 0; xe < e; xe++) {
    g1.a.push_back(x + rows * d);
    g1.b.push_back(w1 + xe * f * d);
    g1.c.push_back(h1 + rows * f);
    g3.a.push_back(x + rows * d);
    g3.b.push_back(w3 + xe * f * d);
    g3.c.push_back(h3 + rows * f);
    g2.a.push_back(act + rows * f);
    g2.b.push_back(w2 + xe * d * f);
    g2.c.push_back(out + rows * d);
    rows += counts[xe];
  }
  blas.gemm_grouped(g1);
  blas.gemm_grouped(g3);
  swiglu_act_forward(act, h1, h3, rows * f, blas.stream());
  blas.gemm_grouped(g2);
}

void swiglu_grouped_backward(Blas& blas, bf16* dx, float* dw1, float* dw3, float* dw2, bf16* dh1,
                             bf16* dh3, const bf16* dout, const bf16* x, const bf16* h1,
                             const bf16* h3, const bf16* act, const bf16* w1, const bf16* w3,
                             const bf16* w2, const std::int64_t* counts, std::int64_t e,
                             std::int64_t d, std::int64_t f) {
  check_sizes(e > 0 && d > 0 && f > 0 && counts != nullptr, "swiglu_grouped_backward",
              "need e, d, f > 0 and counts");
  // dact = dout w2: [rows, D] x [D, F].
  GroupedGemm gd = expert_problems(counts, e, false, false, f, d, 0.f);
  gd.lda = d;
  gd.ldb = f;
  gd.ldc = f;
  // dx = dh1 w1 (+ dh3 w3): [rows, F] x [F, D].
  GroupedGemm gx1 = expert_problems(counts, e, false, false, d, f, 0.f);
  gx1.lda = f;
  gx1.ldb = d;
  gx1.ldc = d;
  GroupedGemm gx3 = gx1;
  gx3.beta = 1.f;
  std::int64_t rows = 0;
  for (std::int64_t xe = 0; xe < e; xe++) {
    gd.a.push_back(dout + rows * d);
    gd.b.push_back(w2 + xe * d * f);
    gd.c.push_back(dh1 + rows * f);
    gx1.a.push_back(dh1 + rows * f);
    gx1.b.push_back(w1 + xe * f * d);
    gx1.c.push_back(dx + rows * d);
    gx3.a.push_back(dh3 + rows * f);
    gx3.b.push_back(w3 + xe * f * d);
    gx3.c.push_back(dx + rows * d);
    rows += counts[xe];
  }
  blas.gemm_grouped(gd);
  swiglu_act_backward(dh1, dh3, dh1, h1, h3, rows * f, blas.stream());
  // Weight gradients, fp32 accumulation per expert: dw2 += dout^T act, dw1 += dh1^T x, dw3 += dh3^T
  // x.
  rows = 0;
  for (std::int64_t xe = 0; xe < e; xe++) {
    const std::int64_t m = counts[xe];
    if (m > 0) {
      blas.gemm(true, false, d, f, m, 1.f, dout + rows * d, d, act + rows * f, f, 1.f,
                dw2 + xe * d * f, DType::F32, f);
      blas.gemm(true, false, f, d, m, 1.f, dh1 + rows * f, f, x + rows * d, d, 1.f,
                dw1 + xe * f * d, DType::F32, d);
      blas.gemm(true, false, f, d, m, 1.f, dh3 + rows * f, f, x + rows * d, d, 1.f,
                dw3 + xe * f * d, DType::F32, d);
    }
    rows += m;
  }
  blas.gemm_grouped(gx1);
  blas.gemm_grouped(gx3);
}

}  // namespace moetune::kernels::cuda
