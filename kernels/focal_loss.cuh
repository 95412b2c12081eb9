// Sigmoid focal loss on CUDA: forward fused with the gradient, torch-free launcher API.
//
// Semantics are those of the `solo::sigmoid_focal_loss_fwd` schema (csrc/ops.cpp):
//   logits [n, c] contiguous, labels [n] int64 contiguous. Element (i, j) is positive iff labels[i] == j;
//   labels[i] >= c makes row i all negative (background); labels[i] < 0 ignores the row (loss 0, grad 0).
//   reduction 0: loss [n, c] (acc type);  reduction 1: loss is one scalar, the sum over all elements.
//   grad (optional, may be nullptr): d(elementwise loss)/d(logits), [n, c] in the logits type.
// The per-element math is solo::math::focal_loss_from_exp (csrc/include/solo/focal_loss.h).
#pragma once

#include "common.cuh"

namespace solo {
namespace cuda {

// Bytes of scratch launch_sigmoid_focal_loss_fwd needs: one partial sum per block for reduction == 1, none
// otherwise. The grid depends on the device's SM count, so call it with the launching device current.
template <typename scalar_t>
size_t focal_loss_scratch_bytes(int64_t n, int64_t c, int reduction);

// Deterministic: for a given device and input alignment, the summed loss is bit-identical from run to run (fixed
// per-block partial sums, then a single block adds them in a fixed order; no floating-point atomics, no host
// synchronisation). Returns the first CUDA error of the launches (cudaErrorInvalidValue for a bad reduction or
// a scratch buffer smaller than focal_loss_scratch_bytes).
template <typename scalar_t>
cudaError_t launch_sigmoid_focal_loss_fwd(const scalar_t* logits, const int64_t* labels, int64_t n, int64_t c,
                                          acc_t<scalar_t> alpha, acc_t<scalar_t> gamma, int reduction,
                                          acc_t<scalar_t>* loss, scalar_t* grad, void* scratch, size_t scratch_bytes,
                                          cudaStream_t stream);

}  // namespace cuda
}  // namespace solo
