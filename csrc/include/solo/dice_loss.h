// Dice loss: per-instance formula and the coefficients of its derivative, shared by CPU and CUDA kernels.
//
// For one instance with prediction p (flattened) and target t:
//   a = sum p t,  b = sum p^2,  c = sum t^2,  d = (b + eps) + (c + eps)
//   L = 1 - 2 a / d                                  (SOLO: eps = 1e-3 added to each sum)
//   dL/dp_k = 4 a p_k / d^2 - 2 t_k / d  =  cp * p_k + ct * t_k
// Plain SOLO:       p = sigmoid(x),               dp/dx = p (1 - p)
// Decoupled SOLO:   p = sigmoid(x) sigmoid(y),    dp/dx = sx (1 - sx) sy,  dp/dy = sy (1 - sy) sx
#pragma once

#include "solo/macros.h"

namespace solo {
namespace math {

// sigmoid(x) given e = exp(-|x|) (the CPU kernels compute e with solo/fast_math.h).
template <typename T>
SOLO_HOST_DEVICE T sigmoid_from_exp(T x, T e) {
  const T r = T(1) / (T(1) + e);
  return x >= T(0) ? r : e * r;
}

template <typename T>
SOLO_HOST_DEVICE T sigmoid(T x) {
  // exp of a non-positive argument only: never overflows.
  if (x >= T(0)) {
    return T(1) / (T(1) + exp_(-x));
  }
  const T e = exp_(x);
  return e / (T(1) + e);
}

template <typename T>
SOLO_HOST_DEVICE T dice_loss_from_sums(T a, T b, T c, T eps) {
  return T(1) - T(2) * a / ((b + eps) + (c + eps));
}

// g is the incoming gradient of this instance's loss.
template <typename T>
SOLO_HOST_DEVICE void dice_grad_coeffs(T a, T b, T c, T eps, T g, T* cp, T* ct) {
  const T d = (b + eps) + (c + eps);
  *cp = T(4) * a * g / (d * d);
  *ct = T(-2) * g / d;
}

}  // namespace math
}  // namespace solo
