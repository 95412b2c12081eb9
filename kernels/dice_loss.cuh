// Dice loss on CUDA (SOLO and Decoupled SOLO mask loss), torch-free launcher API.
//
// Semantics are those of the `solo::dice_loss_fwd` / `solo::dice_loss_bwd` schemas (csrc/ops.cpp):
//   logits [p, l], targets [p, l], y_logits [p, l] or nullptr, all contiguous. The prediction is
//   sigmoid(logits), or sigmoid(logits) * sigmoid(y_logits) when y_logits is given (Decoupled SOLO).
//   forward:  sums [p, 3] = (sum pred*t, sum pred^2, sum t^2) per row, loss [p] = dice_loss_from_sums(...).
//   backward: grad_loss [p], sums [p, 3] -> grad_logits [p, l] (and grad_y_logits when y_logits is given).
// Target element types: uint8_t (bool and uint8 masks), __half, __nv_bfloat16, float, double.
// The per-element math is in csrc/include/solo/dice_loss.h.
#pragma once

#include "common.cuh"

namespace solo {
namespace cuda {

// Bytes of scratch launch_dice_loss_fwd needs: per-(row, split) partial sums. The number of splits per row depends
// on the device's SM count, so call it with the launching device current.
template <typename scalar_t>
size_t dice_loss_scratch_bytes(int64_t p, int64_t l);

// Deterministic: each (row, split) block writes its three partial sums, and a finalize kernel adds a row's splits in
// a fixed order (no floating-point atomics, no host synchronisation). Returns the first CUDA error of the launches
// (cudaErrorInvalidValue for a scratch buffer smaller than dice_loss_scratch_bytes or negative sizes).
template <typename scalar_t, typename target_t>
cudaError_t launch_dice_loss_fwd(const scalar_t* logits, const target_t* targets, const scalar_t* y_logits, int64_t p,
                                 int64_t l, acc_t<scalar_t> eps, acc_t<scalar_t>* sums, acc_t<scalar_t>* loss,
                                 void* scratch, size_t scratch_bytes, cudaStream_t stream);

// Elementwise: grad_pred = cp * pred + ct * t with (cp, ct) = dice_grad_coeffs(sums[row], eps, grad_loss[row]),
// times d pred / d logits (and d pred / d y_logits). grad_y_logits must be non-null iff y_logits is.
template <typename scalar_t, typename target_t>
cudaError_t launch_dice_loss_bwd(const acc_t<scalar_t>* grad_loss, const scalar_t* logits, const target_t* targets,
                                 const scalar_t* y_logits, const acc_t<scalar_t>* sums, int64_t p, int64_t l,
                                 acc_t<scalar_t> eps, scalar_t* grad_logits, scalar_t* grad_y_logits,
                                 cudaStream_t stream);

}  // namespace cuda
}  // namespace solo
