// Matrix NMS (SOLOv2): the per-pair and per-column math shared by the CPU and CUDA kernels, plus the bit tricks
// that pack 0/1 mask bytes into bit words.
//
// With masks sorted by score (index 0 = highest) and D_ij = IoU_ij for i < j of the same label (0 otherwise):
//   comp_i  = max_k D_ki                                   (compensation: i's largest IoU with a better mask)
//   decay_j = min_i f(D_ij) / f(comp_i),   f(d) = exp(-sigma d^2) (gaussian) or 1 - d (linear)
// Every row i that is not a same-label row i < j has D_ij = 0 and contributes 1 / f(comp_i) >= 1, and row 0 (or
// column 0 itself) always contributes a value <= 1, so
//   decay_j = min(1, min over same-label i < j of f(D_ij) / f(comp_i))
// which needs intersections of same-label pairs i < j only. This holds for sigma >= 0 and IoUs in [0, 1] (areas
// counted from the masks, or given areas at least the masks' pixel counts).
//
// Numerics: the linear kernel divides 1 - D by 1 - comp; both are small for near-duplicates (IoU 0.99998 between two
// 60,000-pixel masks), where 1 - IoU formed from a rounded IoU would lose most of its digits. So the complement is
// formed as (union - inter) / union, from exact integer counts when the areas are counted: every quantity is then
// correctly rounded and the ratio is good to a few ulp. The gaussian exponent is -sigma (D - c)(D + c), accurate
// to a few ulp of D in absolute terms. Matches solo.ops.reference.matrix_nms, including its two departures from the
// original (an empty mask has IoU 0; in the linear kernel 0/0 is 0, x/0 is +inf).
#pragma once

#include <float.h>
#include <stdint.h>

#include "solo/macros.h"

namespace solo {
namespace math {

// Values of the `kernel` argument of solo::matrix_nms.
constexpr int kMatrixNmsGaussian = 0;
constexpr int kMatrixNmsLinear = 1;

template <typename T>
struct MaskIoU {
  T iou;        // D = inter / union (0 when union <= 0, e.g. two empty masks)
  T one_minus;  // 1 - D, formed without cancellation
};

// IoU of two masks from their intersection and areas. Union and union - inter are formed in the area type A
// (int64_t for counted areas: exact; float for given areas), then divided in T.
template <typename T, typename A>
SOLO_HOST_DEVICE MaskIoU<T> mask_iou(A inter, A area_i, A area_j) {
  const A uni = area_i + area_j - inter;
  MaskIoU<T> r;
  if (!(uni > A(0))) {
    r.iou = T(0);
    r.one_minus = T(1);
    return r;
  }
  const T u = static_cast<T>(uni);
  r.iou = static_cast<T>(inter) / u;
  r.one_minus = static_cast<T>(uni - inter) / u;
  return r;
}

// Compensation of one mask: the largest IoU with a better same-label mask (comp) and 1 - that IoU (one_minus),
// folded one pair at a time from the start value {0, 1}.
template <typename T>
SOLO_HOST_DEVICE MaskIoU<T> comp_init() {
  MaskIoU<T> c;
  c.iou = T(0);
  c.one_minus = T(1);
  return c;
}

template <typename T>
SOLO_HOST_DEVICE void comp_update(MaskIoU<T>* comp, MaskIoU<T> d) {
  comp->iou = d.iou > comp->iou ? d.iou : comp->iou;
  comp->one_minus = d.one_minus < comp->one_minus ? d.one_minus : comp->one_minus;
}

// f(D_ij) / f(comp_i) for a same-label pair i < j.
//   gaussian: exp(-sigma (D^2 - c^2)) = exp(-sigma (D - c)(D + c))
//   linear:   (1 - D) / (1 - c); when 1 - c == 0 (i duplicates a better mask) the reference's nan_to_num rules:
//             0/0 -> 0, x/0 -> +inf (x > 0), -inf -> lowest finite (x < 0, only with inconsistent given areas).
template <typename T>
SOLO_HOST_DEVICE T decay_ratio(int kernel, MaskIoU<T> d, MaskIoU<T> comp, T sigma) {
  if (kernel == kMatrixNmsGaussian) {
    return exp_(-sigma * ((d.iou - comp.iou) * (d.iou + comp.iou)));
  }
  if (comp.one_minus == T(0)) {
    if (d.one_minus == T(0)) return T(0);
    return d.one_minus > T(0) ? static_cast<T>(INFINITY) : (sizeof(T) == sizeof(float) ? T(-FLT_MAX) : T(-DBL_MAX));
  }
  return d.one_minus / comp.one_minus;
}

// Running minimum of the ratios of one column, starting from 1 (the contribution of the rows that are not
// same-label rows i < j). NaN ratios are ignored.
template <typename T>
SOLO_HOST_DEVICE T decay_update(T decay, T ratio) {
  return ratio < decay ? ratio : decay;
}

// ---------------------------------------------------------------------------------------------------------------
// Bit packing: mask bytes (bool or uint8, nonzero = inside) to bits, byte k of the input -> bit k of the output.

// 0x80 in each byte of x that is nonzero, 0 elsewhere. No carry crosses a byte: (b & 0x7f) + 0x7f <= 0xfe.
SOLO_HOST_DEVICE uint64_t nonzero_byte_high_bits(uint64_t x) {
  const uint64_t low7 = 0x7f7f7f7f7f7f7f7fULL;
  return (((x & low7) + low7) | x) & ~low7;
}

SOLO_HOST_DEVICE uint32_t nonzero_byte_high_bits(uint32_t x) {
  const uint32_t low7 = 0x7f7f7f7fu;
  return (((x & low7) + low7) | x) & ~low7;
}

// The 8 bytes of x (little endian) to 8 bits. After >> 7 byte k holds its flag at bit 8k; the multiplier has bit
// 7l + 7 set for l = 0..7, which moves flag k to bit 56 + k (l = 7 - k). All other products land on distinct bits
// below 56 or at 64 and above, so no sum carries into bits 56..63.
SOLO_HOST_DEVICE uint32_t nonzero_bytes_to_bits(uint64_t x) {
  return static_cast<uint32_t>(((nonzero_byte_high_bits(x) >> 7) * 0x0102040810204080ULL) >> 56);
}

// The 4 bytes of x to 4 bits: the multiplier 2^28 + 2^21 + 2^14 + 2^7 moves flag k (bit 8k) to bit 28 + k; the other
// products land on distinct bits below 28 or at 32 and above.
SOLO_HOST_DEVICE uint32_t nonzero_bytes_to_bits(uint32_t x) {
  return ((nonzero_byte_high_bits(x) >> 7) * 0x10204080u) >> 28;
}

}  // namespace math
}  // namespace solo
