// Bilinear (align_corners=False) resize taps, shared by the CPU and CUDA kernels of solo::paste_masks.
//
// One axis of PyTorch's align_corners=False linear resize from `in` to `out` samples (ATen's
// area_pixel_compute_scale / area_pixel_compute_source_index / guard_index_and_lambda, the CPU kernel the float64
// oracle runs):
//   scale = in / out,  s = max(0, scale (d + 0.5) - 0.5),
//   i0 = min(floor(s), in - 1),  lambda = clamp(s - i0, 0, 1),  i1 = i0 + (i0 < in - 1),
//   value(d) = (1 - lambda) src[i0] + lambda src[i1];   in == out is a plain copy.
// ATen floors with floorf(s), i.e. it rounds the double s to float first: just below an integer k the index
// becomes k with lambda clamped to 0. We reproduce that, so our indices are the oracle's indices exactly.
//
// paste_masks composes two such resizes per axis: src (h) -> canvas (C), crop to the first `valid` canvas samples,
// valid -> out. Output index d reads canvas samples j0 <= j1 (weights 1 - l2, l2), and canvas sample j reads
// source samples (weights 1 - l1(j), l1(j)), so d reads at most 4 source samples:
//   idx = {a0, a1, b0, b1} = {i0(j0), i1(j0), i0(j1), i1(j1)},
//   w   = {(1 - l2)(1 - la), (1 - l2) la, l2 (1 - lb), l2 lb}.
// Taps may repeat an index (the weights then add up); they are never merged, so every kernel runs the same fixed
// 4-tap loop. Properties the kernels rely on (tests/cpp/test_math_paste_masks.cpp checks them):
//   * idx[0] is the smallest and idx[3] the largest of the four, all in [0, in - 1];
//   * idx[0] and idx[3] are non-decreasing in d (a tile of consecutive outputs reads one contiguous source span);
//   * the weights are >= 0 and add up to 1 (up to rounding): an output is a convex combination of its taps, so it
//     cannot exceed the largest of them (used to skip rows / tiles whose sources all lie at or below the threshold).
// All tap math is double precision, whatever the probs dtype: the tables are tiny and then agree with the float64
// oracle to the last bit of their index choice; the weights are rounded once to the compute type.
#pragma once

#include <stdint.h>

#include "solo/macros.h"

namespace solo {
namespace math {

// One align_corners=False linear tap pair: output index d of a resize in -> out reads i0, i1 with weights
// (1 - lambda, lambda). in, out >= 1, 0 <= d < out.
SOLO_HOST_DEVICE void linear_taps(int64_t d, int64_t in, int64_t out, int64_t* i0, int64_t* i1, double* lambda) {
  if (in == out) {  // ATen's scale-1 fast path: a copy
    *i0 = d;
    *i1 = d;
    *lambda = 0.0;
    return;
  }
  const double scale = static_cast<double>(in) / static_cast<double>(out);
  double s = scale * (static_cast<double>(d) + 0.5) - 0.5;
  s = s < 0.0 ? 0.0 : s;
  // floorf of the float-rounded s, as ATen does (see the header comment); s >= 0, so truncation is floor.
  int64_t i = static_cast<int64_t>(floorf(static_cast<float>(s)));
  i = i < in - 1 ? i : in - 1;
  double l = s - static_cast<double>(i);
  l = l < 0.0 ? 0.0 : (l > 1.0 ? 1.0 : l);
  *i0 = i;
  *i1 = i + (i < in - 1 ? 1 : 0);
  *lambda = l;
}

// The composite taps of output index d along one axis of paste_masks: src samples resized to `canvas`, cropped to
// the first `valid` (1 <= valid <= canvas), resized to `out`. Writes 4 source indices and their weights.
SOLO_HOST_DEVICE void paste_taps(int64_t d, int64_t src, int64_t canvas, int64_t valid, int64_t out, int32_t* idx,
                                 double* w) {
  int64_t j0, j1, a0, a1, b0, b1;
  double l2, la, lb;
  linear_taps(d, valid, out, &j0, &j1, &l2);
  linear_taps(j0, src, canvas, &a0, &a1, &la);
  linear_taps(j1, src, canvas, &b0, &b1, &lb);
  idx[0] = static_cast<int32_t>(a0);
  idx[1] = static_cast<int32_t>(a1);
  idx[2] = static_cast<int32_t>(b0);
  idx[3] = static_cast<int32_t>(b1);
  w[0] = (1.0 - l2) * (1.0 - la);
  w[1] = (1.0 - l2) * la;
  w[2] = l2 * (1.0 - lb);
  w[3] = l2 * lb;
}

// Upper bound on the source span (idx[3] of the last - idx[0] of the first, plus 1) of `count` consecutive outputs
// along one axis; used to size buffers. Each resize stage maps a step of one output sample to `in / out` input
// samples; the bound adds one sample per floor, per second tap and per floorf rounding at either end, and a margin.
SOLO_HOST_DEVICE int64_t paste_span_bound(int64_t count, int64_t src, int64_t canvas, int64_t valid, int64_t out) {
  const double r2 = static_cast<double>(valid) / static_cast<double>(out);
  const double r1 = static_cast<double>(src) / static_cast<double>(canvas);
  const double canvas_span = r2 * static_cast<double>(count - 1) + 4.0;
  const int64_t bound = static_cast<int64_t>(r1 * canvas_span) + 5;
  return bound < src ? bound : src;
}

}  // namespace math
}  // namespace solo
