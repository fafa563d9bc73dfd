// Op cases of the dense part of the model: memory and typed sums, GEMMs, elementwise ops and
// casts, RMSNorm, RoPE, attention, the vocabulary-parallel embedding and cross-entropy, AdamW and
// the segmented sum of squares. Shapes are small but uneven (odd rows, padded leading dimensions,
// vocabulary ranges that hold some targets and not others) so that edge paths run too.
#include <cmath>
#include <string>

#include "op_runner.hpp"

namespace moetune::executor::ops_test {

namespace {

using I = std::int64_t;

std::string shape(std::initializer_list<I> dims) {
  std::string s;
  for (I d : dims)
    s += (s.empty() ? "" : "x") + std::to_string(d);
  return s;
}

void add_memory_cases(std::vector<OpCase>& cases) {
  cases.push_back({"copy + zero 1000 fp32", kExact, "bytes moved, not computed", [](Runner& r) {
                     std::mt19937_64 rng(1);
                     const I n = 1000;
                     float* x = r.f32_in(f32_values(rng, n));
                     float* y = r.f32_out(n);
                     r.be.copy(y, x, n * sizeof(float));
                     r.be.zero(x + 100, 37 * sizeof(float));
                     return Outputs{r.out("y", y, n, DType::F32), r.out("x", x, n, DType::F32)};
                   }});
  for (DType type : {DType::F32, DType::F64, DType::I32, DType::I64, DType::BF16}) {
    cases.push_back(
        {"accumulate 777 " + to_string(type), kExact,
         "one IEEE add per element (bf16: in fp32, rounded once to nearest even) on both",
         [type](Runner& r) {
           std::mt19937_64 rng(2);
           const I n = 777;
           const bool integer = type == DType::I32 || type == DType::I64;
           const Values a = integer ? int_values(rng, n, -1000, 1000) : bf16_values(rng, n, -4, 4);
           const Values b = integer ? int_values(rng, n, -1000, 1000) : f32_values(rng, n, -4, 4);
           void* dst = r.put(a, type);
           void* src = r.put(b, type);
           r.be.accumulate(dst, src, n, type);
           return Outputs{r.out("dst", dst, n, type)};
         }});
  }
}

// C[m,n] = alpha op(A) op(B) + beta C with A, B act and C in `c_type` (act when act_c).
void add_gemm_case(std::vector<OpCase>& cases, bool ta, bool tb, I m, I n, I k, I pad, float alpha,
                   float beta, bool act_c) {
  const std::string name = std::string("gemm ") + (ta ? "T" : "N") + (tb ? "T" : "N") + " " +
                           shape({m, n, k}) + (pad > 0 ? " ld+" + std::to_string(pad) : "") +
                           (act_c ? " act" : " fp32") + (beta != 0 ? " beta" : "");
  const double tol = act_c ? kOneRounding : kFp32;
  const char* why = act_c ? "exact bf16 products summed in fp32, the result rounded once to bf16"
                          : "exact bf16 products summed in fp32 in different orders";
  cases.push_back({name, tol, why, [=](Runner& r) {
                     std::mt19937_64 rng(3);
                     const I a_rows = ta ? k : m, a_cols = ta ? m : k;
                     const I b_rows = tb ? n : k, b_cols = tb ? k : n;
                     const I lda = a_cols + pad, ldb = b_cols + pad, ldc = n + pad;
                     const DType c_type = act_c ? r.act() : DType::F32;
                     void* a = r.act_in(bf16_values(rng, std::size_t(a_rows * lda)));
                     void* b = r.act_in(bf16_values(rng, std::size_t(b_rows * ldb)));
                     const Values c0 = beta != 0 ? bf16_values(rng, std::size_t(m * ldc))
                                                 : Values(std::size_t(m * ldc), 0.0);
                     void* c = r.put(c0, c_type);
                     r.be.gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, c_type, ldc);
                     return Outputs{r.out("c", c, m * ldc, c_type)};
                   }});
}

void add_elementwise_cases(std::vector<OpCase>& cases) {
  cases.push_back(
      {"add 1001 in place", kOneRounding, "an fp32 sum rounded once to bf16", [](Runner& r) {
         std::mt19937_64 rng(4);
         const I n = 1001;
         void* a = r.act_in(bf16_values(rng, n));
         void* b = r.act_in(bf16_values(rng, n));
         void* out = r.act_out(n);
         r.be.add(out, a, b, n);
         r.be.add(a, a, b, n);  // out aliasing an input
         return Outputs{r.act_result("out", out, n), r.act_result("a", a, n)};
       }});
  cases.push_back(
      {"scale 999 fp32", kFp32, "x * s in fp32 or double, rounded to fp32", [](Runner& r) {
         std::mt19937_64 rng(5);
         const I n = 999;
         float* x = r.f32_in(f32_values(rng, n, -3, 3));
         r.be.scale(x, n, 0.3712);
         return Outputs{r.out("x", x, n, DType::F32)};
       }});
  cases.push_back({"cast fp32 -> act -> fp32 513", kOneRounding,
                   "the act type rounds to bf16 on CUDA (identity on the CPU)", [](Runner& r) {
                     std::mt19937_64 rng(6);
                     const I n = 513;
                     float* x = r.f32_in(f32_values(rng, n, -8, 8));
                     void* a = r.act_out(n);
                     float* y = r.f32_out(n);
                     r.be.cast(a, r.act(), x, DType::F32, n);
                     r.be.cast(y, DType::F32, a, r.act(), n);
                     return Outputs{r.out("y", y, n, DType::F32)};
                   }});
  cases.push_back(
      {"cast fp32 <-> bf16 513", kExact,
       "round to nearest even on both (kernels/cpu/casts is the reference)", [](Runner& r) {
         std::mt19937_64 rng(7);
         const I n = 513;
         float* x = r.f32_in(f32_values(rng, n, -8, 8));
         void* h = r.alloc(n, DType::BF16);
         float* y = r.f32_out(n);
         r.be.cast(h, DType::BF16, x, DType::F32, n);
         r.be.cast(y, DType::F32, h, DType::BF16, n);
         return Outputs{r.out("bf16", h, n, DType::BF16), r.out("back", y, n, DType::F32)};
       }});
}

// rstd of each row of x[N,D] as the forward would keep it (fp32).
Values host_rstd(const Values& x, I n, I d, double eps) {
  Values rstd(static_cast<std::size_t>(n));
  for (I i = 0; i < n; i++) {
    double sum = 0;
    for (I j = 0; j < d; j++)
      sum += x[std::size_t(i * d + j)] * x[std::size_t(i * d + j)];
    rstd[std::size_t(i)] = double(float(1.0 / std::sqrt(sum / double(d) + eps)));
  }
  return rstd;
}

void add_norm_rope_cases(std::vector<OpCase>& cases) {
  for (I d : {64, 200}) {
    cases.push_back({"rmsnorm_forward 37x" + std::to_string(d), kTwoRoundings,
                     "HF rounds x * rstd to bf16 before the weight, then the product",
                     [d](Runner& r) {
                       std::mt19937_64 rng(8);
                       const I n = 37;
                       void* in = r.act_in(bf16_values(rng, std::size_t(n * d), -2, 2));
                       void* w = r.act_in(bf16_values(rng, std::size_t(d), 0.5, 1.5));
                       void* out = r.act_out(n * d);
                       float* rstd = r.f32_out(n);
                       r.be.rmsnorm_forward(out, rstd, in, w, n, d, 1e-5);
                       return Outputs{r.act_result("out", out, n * d),
                                      r.out("rstd", rstd, n, DType::F32, kFp32)};
                     }});
    cases.push_back({"rmsnorm_backward 37x" + std::to_string(d), kOneRounding,
                     "din computed in fp32 and rounded once; dweight accumulates in fp32",
                     [d](Runner& r) {
                       std::mt19937_64 rng(9);
                       const I n = 37;
                       const Values x = bf16_values(rng, std::size_t(n * d), -2, 2);
                       void* in = r.act_in(x);
                       void* w = r.act_in(bf16_values(rng, std::size_t(d), 0.5, 1.5));
                       void* dout = r.act_in(bf16_values(rng, std::size_t(n * d)));
                       float* rstd = r.f32_in(host_rstd(x, n, d, 1e-5));
                       float* dw = r.f32_in(f32_values(rng, std::size_t(d)));
                       void* din = r.act_out(n * d);
                       r.be.rmsnorm_backward(din, dw, dout, in, w, rstd, n, d);
                       return Outputs{r.act_result("din", din, n * d),
                                      r.out("dweight", dw, d, DType::F32, kFp32)};
                     }});
  }
  cases.push_back(
      {"rope_table 24x16", kFp32, "angles in double, cos/sin rounded to fp32", [](Runner& r) {
         const I p = 24, dh = 16;
         float* c = r.f32_out(p * dh / 2);
         float* s = r.f32_out(p * dh / 2);
         r.be.rope_table(c, s, p, dh, 10000.0);
         return Outputs{r.out("cos", c, p * dh / 2, DType::F32),
                        r.out("sin", s, p * dh / 2, DType::F32)};
       }});
  for (bool backward : {false, true}) {
    cases.push_back(
        {std::string(backward ? "rope_backward" : "rope_forward") + " 2x8x3x16 from position 5",
         kOneRounding, "a rotation in fp32, rounded once to bf16", [backward](Runner& r) {
           std::mt19937_64 rng(10);
           const I b = 2, s = 8, h = 3, dh = 16, start = 5, p = start + s;
           Values cos_t(static_cast<std::size_t>(p * dh / 2)), sin_t(cos_t.size());
           for (I pos = 0; pos < p; pos++) {
             for (I i = 0; i < dh / 2; i++) {
               const double angle = double(pos) * std::pow(10000.0, -double(2 * i) / double(dh));
               cos_t[std::size_t(pos * dh / 2 + i)] = double(float(std::cos(angle)));
               sin_t[std::size_t(pos * dh / 2 + i)] = double(float(std::sin(angle)));
             }
           }
           const float* c = r.f32_in(cos_t);
           const float* sn = r.f32_in(sin_t);
           void* x = r.act_in(bf16_values(rng, std::size_t(b * s * h * dh)));
           if (backward) {
             r.be.rope_backward(x, c, sn, start, b, s, h, dh);
           } else {
             r.be.rope_forward(x, c, sn, start, b, s, h, dh);
           }
           return Outputs{r.act_result("x", x, b * s * h * dh)};
         }});
  }
}

void add_attention_case(std::vector<OpCase>& cases, I b, I s, I hq, I hkv, I dh, I window) {
  const std::string name = "attention " + shape({b, s, hq, hkv, dh}) +
                           (window > 0 ? " window " + std::to_string(window) : " causal");
  cases.push_back({name, kFewRoundings,
                   "bf16 probabilities feed the output GEMM; the backward's bf16 d(scores) "
                   "feed dq and dk",
                   [=](Runner& r) {
                     std::mt19937_64 rng(11);
                     const I nq = b * s * hq * dh, nkv = b * s * hkv * dh;
                     void* q = r.act_in(bf16_values(rng, std::size_t(nq), -2, 2));
                     void* k = r.act_in(bf16_values(rng, std::size_t(nkv), -2, 2));
                     void* v = r.act_in(bf16_values(rng, std::size_t(nkv)));
                     void* dout = r.act_in(bf16_values(rng, std::size_t(nq)));
                     void* out = r.act_out(nq);
                     void* saved = r.bytes_out(r.be.attention_saved_bytes(b, s, hq, dh));
                     void* dq = r.act_out(nq);
                     void* dk = r.act_out(nkv);
                     void* dv = r.act_out(nkv);
                     r.be.attention_forward(out, saved, q, k, v, b, s, hq, hkv, dh, window);
                     r.be.attention_backward(dq, dk, dv, dout, q, k, v, out, saved, b, s, hq, hkv,
                                             dh, window);
                     return Outputs{r.act_result("out", out, nq), r.act_result("dq", dq, nq),
                                    r.act_result("dk", dk, nkv), r.act_result("dv", dv, nkv)};
                   }});
}

void add_vocab_cases(std::vector<OpCase>& cases) {
  // This rank holds vocabulary rows [first, first + rows) of 40; ids fall on both sides.
  const I n = 29, d = 24, first = 12, rows = 10, vocab = 40;
  cases.push_back({"embedding_forward 29 ids, rows [12, 22) of 40", kExact, "a row copy or zeros",
                   [=](Runner& r) {
                     std::mt19937_64 rng(12);
                     void* table = r.act_in(bf16_values(rng, std::size_t(rows * d)));
                     const std::int32_t* ids = r.i32_in(int_values(rng, n, 0, vocab - 1));
                     void* out = r.act_in(bf16_values(rng, std::size_t(n * d)));  // overwritten
                     r.be.embedding_forward(out, table, ids, n, first, rows, d);
                     return Outputs{r.act_result("out", out, n * d)};
                   }});
  cases.push_back({"embedding_backward 29 ids, rows [12, 22) of 40", kFp32,
                   "fp32 sums of repeated ids in a different order (GPU atomics)", [=](Runner& r) {
                     std::mt19937_64 rng(13);
                     float* dtable = r.f32_in(f32_values(rng, std::size_t(rows * d)));
                     void* dout = r.act_in(bf16_values(rng, std::size_t(n * d)));
                     // Few distinct ids, so that rows repeat.
                     const std::int32_t* ids = r.i32_in(int_values(rng, n, 10, 16));
                     r.be.embedding_backward(dtable, dout, ids, n, first, rows, d);
                     return Outputs{r.out("dtable", dtable, rows * d, DType::F32)};
                   }});
}

// Targets over a vocabulary of 100 with this rank's columns [first, first + vl): some inside,
// some outside, some ignored (-100).
Values ce_targets(std::mt19937_64& rng, I n) {
  Values t = int_values(rng, std::size_t(n), 0, 99);
  for (I i = 0; i < n; i += 5)
    t[std::size_t(i)] = -100;
  return t;
}

void add_cross_entropy_cases(std::vector<OpCase>& cases) {
  const I n = 23, vl = 40, first = 30;
  cases.push_back({"cross_entropy_partial 23x40 columns [30, 70)", kFp32,
                   "fp32 log-sum-exp of identical logits (bf16 values)", [=](Runner& r) {
                     std::mt19937_64 rng(14);
                     void* logits = r.act_in(bf16_values(rng, std::size_t(n * vl), -6, 6));
                     const std::int32_t* targets = r.i32_in(ce_targets(rng, n));
                     float* lse = r.f32_out(n);
                     float* tl = r.f32_in(Values(std::size_t(n), 9.0));  // overwritten
                     r.be.cross_entropy_partial(lse, tl, logits, targets, n, vl, first);
                     return Outputs{r.out("lse_part", lse, n, DType::F32),
                                    r.out("target_logit", tl, n, DType::F32)};
                   }});
  for (I parts : {1, 3}) {
    cases.push_back(
        {"cross_entropy_combine 23 rows, " + std::to_string(parts) + " parts", kFp32,
         "log-sum-exp of the parts in double, rounded to fp32", [=](Runner& r) {
           std::mt19937_64 rng(15);
           const float* parts_in = r.f32_in(f32_values(rng, std::size_t(parts * n), 1, 6));
           const float* tl = r.f32_in(f32_values(rng, std::size_t(n), -3, 3));
           const std::int32_t* targets = r.i32_in(ce_targets(rng, n));
           float* lse = r.f32_out(n);
           float* losses = r.f32_out(n);
           r.be.cross_entropy_combine(lse, losses, parts_in, tl, targets, n, parts);
           return Outputs{r.out("lse", lse, n, DType::F32), r.out("losses", losses, n, DType::F32)};
         }});
  }
  for (bool in_place : {false, true}) {
    cases.push_back(
        {std::string("cross_entropy_backward 23x40 columns [30, 70)") +
             (in_place ? " in place" : ""),
         kOneRounding, "softmax minus one-hot in fp32, rounded once to bf16", [=](Runner& r) {
           std::mt19937_64 rng(16);
           const Values x = bf16_values(rng, std::size_t(n * vl), -6, 6);
           // The whole vocabulary's log-sum-exp exceeds this range's: add log 2 to each row's.
           Values lse(static_cast<std::size_t>(n));
           for (I i = 0; i < n; i++) {
             double sum = 0;
             for (I j = 0; j < vl; j++)
               sum += std::exp(x[std::size_t(i * vl + j)]);
             lse[std::size_t(i)] = double(float(std::log(sum) + std::log(2.0)));
           }
           void* logits = r.act_in(x);
           const float* lse_d = r.f32_in(lse);
           const std::int32_t* targets = r.i32_in(ce_targets(rng, n));
           void* dlogits = in_place ? logits : r.act_out(n * vl);
           r.be.cross_entropy_backward(dlogits, logits, lse_d, targets, n, vl, first, 0.25);
           return Outputs{r.act_result("dlogits", dlogits, n * vl)};
         }});
  }
}

void add_optimizer_cases(std::vector<OpCase>& cases) {
  cases.push_back(
      {"adamw_step 1500 step 3", kFp32,
       "per element in double (CPU and CUDA alike), rounded to fp32", [](Runner& r) {
         std::mt19937_64 rng(17);
         const I n = 1500;
         float* p = r.f32_in(f32_values(rng, n));
         float* m = r.f32_in(f32_values(rng, n, -0.1, 0.1));
         float* v = r.f32_in(f32_values(rng, n, 0, 0.01));
         const float* g = r.f32_in(f32_values(rng, n));
         // The CPU computes with the fp32 master itself (no working copy).
         void* working = r.cuda() ? r.act_out(n) : nullptr;
         const AdamWHyper hp{1e-2, 0.9, 0.95, 1e-8, 0.1};
         r.be.adamw_step(p, m, v, g, working, n, hp, 3, 0.5);
         return Outputs{r.out("param", p, n, DType::F32), r.out("m", m, n, DType::F32),
                        r.out("v", v, n, DType::F32),
                        r.act_result("working", working != nullptr ? working : p, n, kOneRounding)};
       }});
  cases.push_back(
      {"sum_of_squares 200000 in 5 segments, 3 classes", kFp32, "double sums in different orders",
       [](Runner& r) {
         std::mt19937_64 rng(18);
         const I n = 200000;
         const float* x = r.f32_in(f32_values(rng, n));
         // Segments across chunk boundaries, an empty one, a class with none.
         const SquareSegment segs[] = {
             {0, 70000, 0}, {70000, 5, 1}, {70005, 100000, 0}, {170005, 0, 3}, {170005, 29995, 1}};
         Values sums(4);
         double host[4] = {-1, -1, -1, -1};
         r.be.sum_of_squares(x, segs, host, 4);
         for (int c = 0; c < 4; c++)
           sums[std::size_t(c)] = host[c];
         return Outputs{{"sums", sums}};
       }});
}

}  // namespace

std::vector<OpCase> dense_op_cases() {
  std::vector<OpCase> cases;
  add_memory_cases(cases);
  add_gemm_case(cases, false, false, 32, 48, 64, 0, 1.f, 0.f, true);
  add_gemm_case(cases, false, true, 24, 40, 32, 0, 1.f, 0.f, true);   // a linear layer
  add_gemm_case(cases, true, false, 40, 32, 24, 0, 1.f, 1.f, false);  // a weight gradient
  add_gemm_case(cases, false, true, 24, 40, 32, 0, 1.f, 1.f, false);  // fp32 router logits
  add_gemm_case(cases, true, true, 16, 24, 40, 8, 0.5f, 0.f, true);
  add_gemm_case(cases, false, true, 5, 7, 3, 1, 0.75f, 1.f, true);  // unaligned: cuBLAS fallback
  add_elementwise_cases(cases);
  add_norm_rope_cases(cases);
  add_attention_case(cases, 2, 16, 4, 2, 16, 0);
  add_attention_case(cases, 1, 24, 4, 1, 32, 7);
  add_attention_case(cases, 1, 9, 2, 2, 8, 0);
  add_vocab_cases(cases);
  add_cross_entropy_cases(cases);
  add_optimizer_cases(cases);
  return cases;
}

}  // namespace moetune::executor::ops_test
