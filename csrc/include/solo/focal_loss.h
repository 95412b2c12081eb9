// Sigmoid focal loss: the per-element term and its derivative, shared by CPU and CUDA kernels.
//
//   p = sigmoid(x)
//   positive (label == class):  L = -alpha (1-p)^gamma log(p)       = alpha (1-p)^gamma softplus(-x)
//   negative:                   L = -(1-alpha) p^gamma log(1-p)     = (1-alpha) p^gamma softplus(x)
//
// Both cases are one formula in z = -x (positive) or z = x (negative), with a_t = alpha or 1 - alpha:
//   L     = a_t sigmoid(z)^gamma softplus(z)
//   dL/dz = a_t sigmoid(z)^gamma [gamma (1 - sigmoid(z)) softplus(z) + sigmoid(z)],   dL/dx = +-dL/dz
//
// Numerics: log(p) and log(1-p) are taken as -softplus(-x) and -softplus(x), built from one e = exp(-|x|) and
// one log1p(e), so neither becomes log(0) for large |x| (the naive form gives inf/NaN for |x| > ~17 in fp32).
// sigmoid(z) and 1 - sigmoid(z) are both computed from the same e, so 1 - p keeps its relative precision when
// p -> 1. The branch on the label is a select, not a jump, so CPU loops vectorise.
#pragma once

#include "solo/macros.h"

namespace solo {
namespace math {

// kGamma = 2 (the SOLO default) squares instead of calling pow: exact and ~10x cheaper. kGamma = -1: any gamma.
template <int kGamma, typename T>
SOLO_HOST_DEVICE T focal_pow(T base, T gamma) {
  if (kGamma == 2) return base * base;
  if (gamma == T(2)) return base * base;
  if (gamma == T(1)) return base;
  if (gamma == T(0)) return T(1);
  return pow_(base, gamma);
}

template <typename T>
struct FocalTerm {
  T loss;
  T grad;
};

// Loss and derivative of one logit given e = exp(-|x|) and l1p = log1p(e); the transcendental functions are
// left to the caller so the CPU kernel can use its vectorisable versions (solo/fast_math.h). Returns a value
// (no output pointers) so that vectorised CPU loops keep everything in registers.
template <int kGamma, typename T>
SOLO_HOST_DEVICE FocalTerm<T> focal_loss_from_exp(T x, bool positive, T e, T l1p, T alpha, T gamma) {
  const T z = positive ? -x : x;
  const T a_t = positive ? alpha : T(1) - alpha;
  const T r = T(1) / (T(1) + e);
  const T s = z >= T(0) ? r : e * r;       // sigmoid(z)
  const T s1 = z >= T(0) ? e * r : r;      // 1 - sigmoid(z), without cancellation
  const T sp = (z > T(0) ? z : T(0)) + l1p;  // softplus(z)
  const T w = focal_pow<kGamma>(s, gamma);
  const T gz = a_t * w * (gamma * s1 * sp + s);
  return {a_t * w * sp, positive ? -gz : gz};
}

// Loss and derivative of one logit. `positive` is true when the element's class is the row's label.
template <typename T>
SOLO_HOST_DEVICE void focal_loss_element(T x, bool positive, T alpha, T gamma, T* loss, T* grad) {
  const T e = exp_(x < T(0) ? x : -x);
  const FocalTerm<T> r = focal_loss_from_exp<-1>(x, positive, e, log1p_(e), alpha, gamma);
  *loss = r.loss;
  *grad = r.grad;
}

}  // namespace math
}  // namespace solo
