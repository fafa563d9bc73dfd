// Op cases of the MoE layer: the grouped SwiGLU experts, the router (softmax and Sinkhorn top-k)
// and its losses, the dispatch plan, the all-gather dispatcher's routing helpers, and the
// permutation and weighted combine. Routing inputs are built so that no rounding difference can
// change a discrete choice (well separated logits), and the maps the permutation ops read come
// from kernels/cpu's dispatch plan on the host, so each case tests one op.
#include <cmath>
#include <string>

#include "kernels/cpu/permute.hpp"
#include "op_runner.hpp"

namespace moetune::executor::ops_test {

namespace {

using I = std::int64_t;

// Row softmax of logits[N,E] in double, rounded to fp32 (what a router forward keeps).
Values host_softmax(const Values& logits, I n, I e) {
  Values p(logits.size());
  for (I t = 0; t < n; t++) {
    double m = logits[std::size_t(t * e)];
    for (I c = 1; c < e; c++)
      m = std::max(m, logits[std::size_t(t * e + c)]);
    double sum = 0;
    for (I c = 0; c < e; c++)
      sum += std::exp(logits[std::size_t(t * e + c)] - m);
    for (I c = 0; c < e; c++)
      p[std::size_t(t * e + c)] = double(float(std::exp(logits[std::size_t(t * e + c)] - m) / sum));
  }
  return p;
}

// The K largest of each row, largest first, ties to the lower index.
Values host_topk(const Values& scores, I n, I e, I k) {
  Values idx;
  for (I t = 0; t < n; t++) {
    std::vector<bool> taken(std::size_t(e), false);
    for (I j = 0; j < k; j++) {
      I best = -1;
      for (I c = 0; c < e; c++) {
        if (taken[std::size_t(c)]) continue;
        if (best < 0 || scores[std::size_t(t * e + c)] > scores[std::size_t(t * e + best)])
          best = c;
      }
      taken[std::size_t(best)] = true;
      idx.push_back(double(best));
    }
  }
  return idx;
}

// kernels/cpu's dispatch plan of topk_idx[N,K] over E experts, as doubles for Runner::put.
struct HostPlan {
  Values counts, offsets, slot_row, row_slot;
  I rows = 0;
};
HostPlan host_plan(const Values& topk, I n, I e, I k, I capacity) {
  std::vector<std::int32_t> idx(topk.begin(), topk.end());
  const auto slots = static_cast<std::size_t>(n * k);
  std::vector<std::int64_t> counts(static_cast<std::size_t>(e)),
      offsets(static_cast<std::size_t>(e + 1)), slot_row(slots), row_slot(slots);
  kernels::cpu::dispatch_plan(counts.data(), offsets.data(), slot_row.data(), row_slot.data(),
                              idx.data(), n, e, k, capacity);
  HostPlan p;
  p.counts.assign(counts.begin(), counts.end());
  p.offsets.assign(offsets.begin(), offsets.end());
  p.slot_row.assign(slot_row.begin(), slot_row.end());
  p.row_slot.assign(row_slot.begin(), row_slot.end());
  p.rows = offsets[std::size_t(e)];
  return p;
}

void add_expert_cases(std::vector<OpCase>& cases) {
  // Four experts with 5, 0, 9 and 3 rows: an empty expert is skipped by the grouped GEMM.
  const std::vector<std::int64_t> counts = {5, 0, 9, 3};
  const I e = 4, rows = 17, d = 32, f = 48;
  cases.push_back(
      {"swiglu_grouped forward + backward, 4 experts (5, 0, 9, 3 rows), D 32, F 48", kFewRoundings,
       "bf16 h1, h3 and act feed the next GEMM; bf16 dh1, dh3 feed fp32 weight gradients",
       [=](Runner& r) {
         std::mt19937_64 rng(20);
         void* x = r.act_in(bf16_values(rng, std::size_t(rows * d)));
         void* w1 = r.act_in(bf16_values(rng, std::size_t(e * f * d), -0.3, 0.3));
         void* w3 = r.act_in(bf16_values(rng, std::size_t(e * f * d), -0.3, 0.3));
         void* w2 = r.act_in(bf16_values(rng, std::size_t(e * d * f), -0.3, 0.3));
         void* dout = r.act_in(bf16_values(rng, std::size_t(rows * d)));
         float* dw1 = r.f32_in(f32_values(rng, std::size_t(e * f * d)));  // accumulated into
         float* dw3 = r.f32_in(f32_values(rng, std::size_t(e * f * d)));
         float* dw2 = r.f32_in(f32_values(rng, std::size_t(e * d * f)));
         void* out = r.act_out(rows * d);
         void* h1 = r.act_out(rows * f);
         void* h3 = r.act_out(rows * f);
         void* act = r.act_out(rows * f);
         void* dx = r.act_out(rows * d);
         void* dh1 = r.act_out(rows * f);
         void* dh3 = r.act_out(rows * f);
         r.be.swiglu_grouped_forward(out, h1, h3, act, x, w1, w3, w2, counts.data(), e, d, f);
         r.be.swiglu_grouped_backward(dx, dw1, dw3, dw2, dh1, dh3, dout, x, h1, h3, act, w1, w3, w2,
                                      counts.data(), e, d, f);
         return Outputs{
             r.act_result("out", out, rows * d),       r.act_result("h1", h1, rows * f),
             r.act_result("act", act, rows * f),       r.act_result("dx", dx, rows * d),
             r.act_result("dh1", dh1, rows * f),       r.act_result("dh3", dh3, rows * f),
             r.out("dw1", dw1, e * f * d, DType::F32), r.out("dw3", dw3, e * f * d, DType::F32),
             r.out("dw2", dw2, e * d * f, DType::F32)};
       }});
}

void add_router_cases(std::vector<OpCase>& cases) {
  const I n = 45, e = 8;
  for (bool normalize : {true, false}) {
    const std::string norm = normalize ? " renormalised" : " raw";
    cases.push_back({"router_forward 45x8 top-2" + norm, kFp32,
                     "fp32 softmax of identical logits; separated logits fix the top-k",
                     [=](Runner& r) {
                       std::mt19937_64 rng(21);
                       const float* logits = r.f32_in(separated_logits(rng, n, e));
                       float* probs = r.f32_out(n * e);
                       std::int32_t* idx = static_cast<std::int32_t*>(r.alloc(n * 2, DType::I32));
                       float* w = r.f32_out(n * 2);
                       r.be.router_forward(probs, idx, w, logits, n, e, 2, normalize);
                       return Outputs{r.out("probs", probs, n * e, DType::F32),
                                      r.out("topk_idx", idx, n * 2, DType::I32),
                                      r.out("topk_w", w, n * 2, DType::F32)};
                     }});
    for (bool with_dprobs : {false, true}) {
      cases.push_back({"router_backward 45x8 top-2" + norm + (with_dprobs ? " + dprobs" : ""),
                       kFp32, "fp32 arithmetic on identical inputs", [=](Runner& r) {
                         std::mt19937_64 rng(22);
                         const Values probs = host_softmax(separated_logits(rng, n, e), n, e);
                         const float* p = r.f32_in(probs);
                         const std::int32_t* idx = r.i32_in(host_topk(probs, n, e, 2));
                         const float* dw = r.f32_in(f32_values(rng, std::size_t(n * 2)));
                         const float* dprobs =
                             with_dprobs ? r.f32_in(f32_values(rng, std::size_t(n * e), -0.2, 0.2))
                                         : nullptr;
                         float* dlogits = r.f32_in(Values(std::size_t(n * e), 5.0));  // overwritten
                         r.be.router_backward(dlogits, dw, dprobs, p, idx, n, e, 2, normalize);
                         return Outputs{r.out("dlogits", dlogits, n * e, DType::F32)};
                       }});
    }
  }
  for (I k : {1, 2}) {
    cases.push_back(
        {"sinkhorn_forward 64x8 top-" + std::to_string(k), kFp32,
         "Sinkhorn in double on both; scores an fp32 softmax or sigmoid", [=](Runner& r) {
           std::mt19937_64 rng(23);
           const I rows = 64;
           const float* logits = r.f32_in(separated_logits(rng, rows, e));
           float* scores = r.f32_out(rows * e);
           std::int32_t* idx = static_cast<std::int32_t*>(r.alloc(rows * k, DType::I32));
           float* w = r.f32_out(rows * k);
           r.be.sinkhorn_forward(scores, idx, w, logits, rows, e, k, 1e-4, 200);
           return Outputs{r.out("scores", scores, rows * e, DType::F32),
                          r.out("topk_idx", idx, rows * k, DType::I32),
                          r.out("topk_w", w, rows * k, DType::F32)};
         }});
    cases.push_back({"sinkhorn_backward 45x8 top-" + std::to_string(k), kFp32,
                     "fp32 arithmetic on identical inputs", [=](Runner& r) {
                       std::mt19937_64 rng(24);
                       const Values logits = separated_logits(rng, n, e);
                       Values scores = host_softmax(logits, n, e);
                       if (k == 1) {
                         for (std::size_t i = 0; i < scores.size(); i++)
                           scores[i] = double(float(1.0 / (1.0 + std::exp(-logits[i]))));
                       }
                       const float* s = r.f32_in(scores);
                       const std::int32_t* idx = r.i32_in(distinct_experts(rng, n, e, k));
                       const float* dw = r.f32_in(f32_values(rng, std::size_t(n * k)));
                       float* dlogits = r.f32_in(Values(std::size_t(n * e), 5.0));
                       r.be.sinkhorn_backward(dlogits, dw, s, idx, n, e, k);
                       return Outputs{r.out("dlogits", dlogits, n * e, DType::F32)};
                     }});
  }
}

void add_loss_cases(std::vector<OpCase>& cases) {
  const I n = 300, e = 8, k = 2;
  cases.push_back({"aux_loss_accumulate 300x8 top-2", kFp32,
                   "counts exact; fp32 probabilities summed in double in different orders",
                   [=](Runner& r) {
                     std::mt19937_64 rng(25);
                     std::int64_t* counts = r.i64_in(int_values(rng, std::size_t(e), 0, 50));
                     double* prob_sum = r.f64_in(f32_values(rng, std::size_t(e), 0, 3));
                     const float* probs =
                         r.f32_in(host_softmax(f32_values(rng, std::size_t(n * e), -2, 2), n, e));
                     const std::int32_t* idx = r.i32_in(distinct_experts(rng, n, e, k));
                     r.be.aux_loss_accumulate(counts, prob_sum, probs, idx, n, e, k);
                     return Outputs{r.out("counts", counts, e, DType::I64),
                                    r.out("prob_sum", prob_sum, e, DType::F64)};
                   }});
  cases.push_back({"aux_loss_backward 300x8 of 900 tokens", kFp32,
                   "one fp32 add per element of a double-computed term", [=](Runner& r) {
                     std::mt19937_64 rng(26);
                     float* dprobs = r.f32_in(f32_values(rng, std::size_t(n * e), -0.01, 0.01));
                     const std::int64_t* counts =
                         r.i64_in(int_values(rng, std::size_t(e), 40, 120));
                     r.be.aux_loss_backward(dprobs, counts, 3 * n, n, e, 0.7);
                     return Outputs{r.out("dprobs", dprobs, n * e, DType::F32)};
                   }});
  cases.push_back({"z_loss_forward 300x8", kFp32,
                   "fp32 log-sum-exp per row, squares summed in double", [=](Runner& r) {
                     std::mt19937_64 rng(27);
                     double* sum = r.f64_in({0.5});
                     const float* logits = r.f32_in(f32_values(rng, std::size_t(n * e), -3, 3));
                     r.be.z_loss_forward(sum, logits, n, e);
                     return Outputs{r.out("sum", sum, 1, DType::F64)};
                   }});
  cases.push_back(
      {"z_loss_backward 300x8", kFp32, "fp32 arithmetic on identical inputs", [=](Runner& r) {
         std::mt19937_64 rng(28);
         float* dlogits = r.f32_in(f32_values(rng, std::size_t(n * e), -0.1, 0.1));
         const float* logits = r.f32_in(f32_values(rng, std::size_t(n * e), -3, 3));
         r.be.z_loss_backward(dlogits, logits, n, e, 0.3);
         return Outputs{r.out("dlogits", dlogits, n * e, DType::F32)};
       }});
}

void add_dispatch_cases(std::vector<OpCase>& cases) {
  // 700 tokens x top-2 = 1400 slots: more than one of the GPU plan's 1024-slot blocks.
  for (I capacity : {0, 150}) {
    cases.push_back({"dispatch_plan 700x8 top-2 capacity " + std::to_string(capacity), kExact,
                     "an integer map: stable token order within each expert", [=](Runner& r) {
                       std::mt19937_64 rng(29);
                       const I n = 700, e = 8, k = 2;
                       const std::int32_t* idx = r.i32_in(distinct_experts(rng, n, e, k));
                       auto* counts = static_cast<std::int64_t*>(r.alloc(e, DType::I64));
                       auto* offsets = static_cast<std::int64_t*>(r.alloc(e + 1, DType::I64));
                       auto* slot_row = static_cast<std::int64_t*>(r.alloc(n * k, DType::I64));
                       auto* row_slot = static_cast<std::int64_t*>(r.alloc(n * k, DType::I64));
                       r.be.dispatch_plan(counts, offsets, slot_row, row_slot, idx, n, e, k,
                                          capacity);
                       return Outputs{r.out("counts", counts, e, DType::I64),
                                      r.out("offsets", offsets, e + 1, DType::I64),
                                      r.out("slot_row", slot_row, n * k, DType::I64),
                                      r.out("row_slot", row_slot, n * k, DType::I64)};
                     }});
  }
  for (bool with_kept : {false, true}) {
    cases.push_back({std::string("localize_routing 333 slots, experts [4, 10) of 16") +
                         (with_kept ? " + kept" : ""),
                     kExact, "an integer map", [=](Runner& r) {
                       std::mt19937_64 rng(30);
                       const I count = 333;
                       const std::int32_t* idx = r.i32_in(int_values(rng, count, 0, 15));
                       const std::int64_t* kept =
                           with_kept ? r.i64_in(int_values(rng, count, -1, 3)) : nullptr;
                       auto* out = static_cast<std::int32_t*>(r.alloc(count, DType::I32));
                       r.be.localize_routing(out, idx, kept, count, 4, 6);
                       return Outputs{r.out("out", out, count, DType::I32)};
                     }});
  }
  cases.push_back({"drop_rows_from 333 slots, rows 30", kExact, "an integer map", [](Runner& r) {
                     std::mt19937_64 rng(31);
                     const I count = 333;
                     auto* slot_row = r.i64_in(int_values(rng, count, -1, 49));
                     r.be.drop_rows_from(slot_row, count, 30);
                     return Outputs{r.out("slot_row", slot_row, count, DType::I64)};
                   }});
}

void add_permute_cases(std::vector<OpCase>& cases) {
  const I n = 90, e = 6, k = 2, d = 40;
  for (I capacity : {0, 25}) {
    const std::string tail = " 90x6 top-2 D 40 capacity " + std::to_string(capacity);
    cases.push_back({"permute_forward" + tail, kExact, "a row gather", [=](Runner& r) {
                       std::mt19937_64 rng(32);
                       const HostPlan plan =
                           host_plan(distinct_experts(rng, n, e, k), n, e, k, capacity);
                       void* in = r.act_in(bf16_values(rng, std::size_t(n * d)));
                       const std::int64_t* row_slot = r.i64_in(plan.row_slot);
                       void* out = r.act_out(plan.rows * d);
                       r.be.permute_forward(out, in, row_slot, plan.rows, k, d);
                       return Outputs{r.act_result("out", out, plan.rows * d)};
                     }});
    cases.push_back({"permute_backward" + tail, kOneRounding,
                     "the K slots of a token summed in fp32, rounded once", [=](Runner& r) {
                       std::mt19937_64 rng(33);
                       const HostPlan plan =
                           host_plan(distinct_experts(rng, n, e, k), n, e, k, capacity);
                       void* dout = r.act_in(bf16_values(rng, std::size_t(plan.rows * d)));
                       const std::int64_t* slot_row = r.i64_in(plan.slot_row);
                       void* din = r.act_out(n * d);
                       r.be.permute_backward(din, dout, slot_row, n, k, d);
                       return Outputs{r.act_result("din", din, n * d)};
                     }});
    cases.push_back({"unpermute_combine_forward" + tail, kOneRounding,
                     "a weighted sum in fp32, rounded once", [=](Runner& r) {
                       std::mt19937_64 rng(34);
                       const HostPlan plan =
                           host_plan(distinct_experts(rng, n, e, k), n, e, k, capacity);
                       void* y = r.act_in(bf16_values(rng, std::size_t(plan.rows * d)));
                       const float* w = r.f32_in(f32_values(rng, std::size_t(n * k), 0, 1));
                       const std::int64_t* slot_row = r.i64_in(plan.slot_row);
                       void* out = r.act_out(n * d);
                       r.be.unpermute_combine_forward(out, y, w, slot_row, n, k, d);
                       return Outputs{r.act_result("out", out, n * d)};
                     }});
    cases.push_back(
        {"unpermute_combine_backward" + tail, kOneRounding,
         "dexpert_out a product rounded once to bf16; dtopk_w an fp32 dot product", [=](Runner& r) {
           std::mt19937_64 rng(35);
           const HostPlan plan = host_plan(distinct_experts(rng, n, e, k), n, e, k, capacity);
           void* y = r.act_in(bf16_values(rng, std::size_t(plan.rows * d)));
           void* dout = r.act_in(bf16_values(rng, std::size_t(n * d)));
           const float* w = r.f32_in(f32_values(rng, std::size_t(n * k), 0, 1));
           const std::int64_t* slot_row = r.i64_in(plan.slot_row);
           void* dy = r.act_out(plan.rows * d);
           float* dw = r.f32_in(Values(std::size_t(n * k), 5.0));  // overwritten
           r.be.unpermute_combine_backward(dy, dw, dout, y, w, slot_row, n, k, d);
           return Outputs{r.act_result("dexpert_out", dy, plan.rows * d),
                          r.out("dtopk_w", dw, n * k, DType::F32, kFp32)};
         }});
  }
}

}  // namespace

std::vector<OpCase> moe_op_cases() {
  std::vector<OpCase> cases;
  add_expert_cases(cases);
  add_router_cases(cases);
  add_loss_cases(cases);
  add_dispatch_cases(cases);
  add_permute_cases(cases);
  return cases;
}

}  // namespace moetune::executor::ops_test
