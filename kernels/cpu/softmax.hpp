// Softmax over the last axis of a row-major matrix, and its backward; the building block of
// attention, the router and the losses.
#pragma once

#include <cstdint>

namespace moetune::kernels::cpu {

// out[N,C] = softmax(in[N,C]) per row (max-subtracted). out may alias in.
template <typename T>
void softmax_forward(T* out, const T* in, std::int64_t n, std::int64_t c);

// din[N,C] = p * (dout - sum_j dout_j p_j) per row, from probs[N,C] = the forward's output.
// din is overwritten and may alias dout.
template <typename T>
void softmax_backward(T* din, const T* dout, const T* probs, std::int64_t n, std::int64_t c);

// out[N] = log(sum_j exp(in[N,C])) per row, in double.
template <typename T>
void logsumexp_rows(double* out, const T* in, std::int64_t n, std::int64_t c);

}  // namespace moetune::kernels::cpu
