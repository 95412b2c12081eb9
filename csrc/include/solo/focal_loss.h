// Sigmoid focal loss: the per-element term and its derivative, shared by CPU and CUDA kernels.
//
//   p = sigmoid(x)
//   positive (label == class):  L = -alpha (1-p)^gamma log(p)       = alpha (1-p)^gamma softplus(-x)
//   negative:                   L = -(1-alpha) p^gamma log(1-p)     = (1-alpha) p^gamma softplus(x)
//
//   dL/dx (positive) = -alpha (1-p)^gamma [gamma p softplus(-x) + (1-p)]
//   dL/dx (negative) = (1-alpha) p^gamma [gamma (1-p) softplus(x) + p]
//
// Numerics: log(p) and log(1-p) are taken as -softplus(-x) and -softplus(x), built from one exp(-|x|) and
// one log1p, so neither underflows to log(0) for large |x| (the naive form gives inf/NaN at |x| > ~17 in fp32
// and > ~88 for the exp). p and 1-p are computed separately from the same exp so that 1-p keeps its relative
// precision when p -> 1 (1 - sigmoid(x) rounds to 0 in fp32 for x > ~17).
#pragma once

#include "solo/macros.h"

namespace solo {
namespace math {

// gamma == 2 is the SOLO default: a multiply instead of powf is ~10x cheaper and exact.
template <typename T>
SOLO_HOST_DEVICE T focal_pow(T base, T gamma) {
  if (gamma == T(2)) return base * base;
  if (gamma == T(1)) return base;
  if (gamma == T(0)) return T(1);
  return pow_(base, gamma);
}

// Loss and derivative of one logit. `positive` is true when the element's class is the row's label.
template <typename T>
SOLO_HOST_DEVICE void focal_loss_element(T x, bool positive, T alpha, T gamma, T* loss, T* grad) {
  const T ax = x < T(0) ? -x : x;
  const T e = exp_(-ax);          // in (0, 1]
  const T l1p = log1p_(e);        // log(1 + exp(-|x|))
  const T inv = T(1) / (T(1) + e);
  const T p = x >= T(0) ? inv : e * inv;      // sigmoid(x)
  const T q = x >= T(0) ? e * inv : inv;      // 1 - sigmoid(x), without cancellation
  if (positive) {
    const T sp = (x < T(0) ? -x : T(0)) + l1p;  // softplus(-x) = -log(p)
    const T w = focal_pow(q, gamma);
    *loss = alpha * w * sp;
    *grad = -alpha * w * (gamma * p * sp + q);
  } else {
    const T sp = (x > T(0) ? x : T(0)) + l1p;   // softplus(x) = -log(1-p)
    const T w = focal_pow(p, gamma);
    *loss = (T(1) - alpha) * w * sp;
    *grad = (T(1) - alpha) * w * (gamma * q * sp + p);
  }
}

}  // namespace math
}  // namespace solo
