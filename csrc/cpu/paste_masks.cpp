// CPU kernel of solo::paste_masks: bilinear resize of mask probabilities to the padded canvas, crop, bilinear resize
// to the output size and threshold, in one pass with no canvas-sized (or output-sized float) intermediate.
//
// Both resizes are separable, and each axis composes into at most 4 taps into the probs (solo/bilinear.h), so
//   out(y, x) = sum_a sum_b wy_a(y) wx_b(x) probs[ry_a(y), rx_b(x)] > threshold.
// The per-axis tap tables are built once per call. Per mask and output row: a vertical pass combines the row's 4
// source rows into a buffer of w values, then a horizontal 4-tap gather per output pixel gives the value.
//
// Skipping (exact, not a heuristic): the weights are >= 0 and add up to 1, so every output of a row is a convex
// combination of its row buffer. A row whose buffer never exceeds the threshold is all false; in any other row only
// the output columns whose taps reach the buffer's span above the threshold need computing (taps are monotone in x,
// so that is one interval, found by binary search). SOLO's masks cover a small part of the image, so most of the
// output is written by memset. Rounding can only matter for values within a few ulp of the threshold, far inside
// the 1e-5 band the contract allows.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "../op_checks.h"
#include "solo/bilinear.h"

// `omp simd` with a max reduction (macros.h only has the sum).
#if defined(_OPENMP) || defined(__clang__) || defined(__GNUC__)
#define PASTE_SIMD_MAX(v) SOLO_PRAGMA(omp simd reduction(max : v))
#else
#define PASTE_SIMD_MAX(v)
#endif

namespace solo {
namespace {

// Output rows per work item: large enough to amortise the scheduling, small enough that a few large masks still
// spread over every thread.
constexpr int64_t kRowsPerTask = 8;

// Tap tables of one axis, structure of arrays (idx[k][d], w[k][d]) so the horizontal loop reads them with unit stride.
template <typename acc_t>
struct AxisTaps {
  std::vector<int32_t> idx[4];
  std::vector<acc_t> w[4];

  AxisTaps(int64_t src, int64_t canvas, int64_t valid, int64_t out) {
    for (int k = 0; k < 4; ++k) {
      idx[k].resize(out);
      w[k].resize(out);
    }
    for (int64_t d = 0; d < out; ++d) {
      int32_t i[4];
      double wd[4];
      math::paste_taps(d, src, canvas, valid, out, i, wd);
      for (int k = 0; k < 4; ++k) {
        idx[k][d] = i[k];
        w[k][d] = static_cast<acc_t>(wd[k]);  // the only rounding of the weights
      }
    }
  }
};

// One output row of one mask: vertical pass into `buf`, then the horizontal pass over the columns that can be true.
template <typename scalar_t, typename acc_t>
void paste_row(const scalar_t* __restrict p, int32_t w, const AxisTaps<acc_t>& rows, const AxisTaps<acc_t>& cols,
               int64_t y, int32_t out_w, acc_t thr, acc_t* __restrict buf, uint8_t* __restrict o) {
  const scalar_t* __restrict r0 = p + static_cast<int64_t>(rows.idx[0][y]) * w;
  const scalar_t* __restrict r1 = p + static_cast<int64_t>(rows.idx[1][y]) * w;
  const scalar_t* __restrict r2 = p + static_cast<int64_t>(rows.idx[2][y]) * w;
  const scalar_t* __restrict r3 = p + static_cast<int64_t>(rows.idx[3][y]) * w;
  const acc_t w0 = rows.w[0][y], w1 = rows.w[1][y], w2 = rows.w[2][y], w3 = rows.w[3][y];
  acc_t mx = -INFINITY;
  PASTE_SIMD_MAX(mx)
  for (int32_t c = 0; c < w; ++c) {
    const acc_t v = w0 * static_cast<acc_t>(r0[c]) + w1 * static_cast<acc_t>(r1[c]) +
                    w2 * static_cast<acc_t>(r2[c]) + w3 * static_cast<acc_t>(r3[c]);
    buf[c] = v;
    mx = v > mx ? v : mx;
  }
  if (!(mx > thr)) {  // every output is a convex combination of values <= thr (NaN probs compare false, as > does)
    std::memset(o, 0, static_cast<size_t>(out_w));
    return;
  }
  // Source columns [c_lo, c_hi] hold every buffer value above the threshold.
  int32_t c_lo = 0;
  while (!(buf[c_lo] > thr)) ++c_lo;
  int32_t c_hi = w - 1;
  while (!(buf[c_hi] > thr)) --c_hi;
  // Output x can be true only if its largest tap reaches c_lo and its smallest tap does not pass c_hi. Both are
  // non-decreasing in x, so the candidates form [x0, x1).
  const int32_t* i0 = cols.idx[0].data();
  const int32_t* i1 = cols.idx[1].data();
  const int32_t* i2 = cols.idx[2].data();
  const int32_t* i3 = cols.idx[3].data();
  const int32_t x0 = static_cast<int32_t>(std::lower_bound(i3, i3 + out_w, c_lo) - i3);
  const int32_t x1 = static_cast<int32_t>(std::upper_bound(i0, i0 + out_w, c_hi) - i0);
  if (x0 >= x1) {
    std::memset(o, 0, static_cast<size_t>(out_w));
    return;
  }
  std::memset(o, 0, static_cast<size_t>(x0));
  std::memset(o + x1, 0, static_cast<size_t>(out_w - x1));
  const acc_t* __restrict cw0 = cols.w[0].data();
  const acc_t* __restrict cw1 = cols.w[1].data();
  const acc_t* __restrict cw2 = cols.w[2].data();
  const acc_t* __restrict cw3 = cols.w[3].data();
  SOLO_SIMD
  for (int32_t x = x0; x < x1; ++x) {
    const acc_t v = cw0[x] * buf[i0[x]] + cw1[x] * buf[i1[x]] + cw2[x] * buf[i2[x]] + cw3[x] * buf[i3[x]];
    o[x] = v > thr;
  }
}

template <typename acc_t>
acc_t to_compute_type(double v) {
  const double lim = static_cast<double>(std::numeric_limits<acc_t>::max());
  return v > lim ? std::numeric_limits<acc_t>::infinity()
                 : (v < -lim ? -std::numeric_limits<acc_t>::infinity() : static_cast<acc_t>(v));
}

at::Tensor paste_masks_cpu(const at::Tensor& probs, at::IntArrayRef canvas_size, at::IntArrayRef valid_size,
                           at::IntArrayRef out_size, double threshold) {
  checks::paste_masks_inputs(probs, canvas_size, valid_size, out_size, threshold);
  const int64_t N = probs.size(0);
  const int64_t h = probs.size(1);
  const int64_t w = probs.size(2);
  const int64_t out_h = out_size[0];
  const int64_t out_w = out_size[1];
  at::Tensor out = at::empty({N, out_h, out_w}, probs.options().dtype(at::kBool));
  if (N == 0 || out.numel() == 0) return out;
  const at::Tensor p = probs.contiguous();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.scalar_type(), "paste_masks_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;  // float, or double for double probs
    const AxisTaps<acc_t> rows(h, canvas_size[0], valid_size[0], out_h);
    const AxisTaps<acc_t> cols(w, canvas_size[1], valid_size[1], out_w);
    // The threshold in the compute type, as the eager reference compares (`tensor > python_float`); beyond the
    // float range that is +-inf (an out-of-range conversion is undefined behaviour in C++, so it is spelled out).
    const acc_t thr = to_compute_type<acc_t>(threshold);
    const scalar_t* pp = p.const_data_ptr<scalar_t>();
    uint8_t* op = reinterpret_cast<uint8_t*>(out.mutable_data_ptr<bool>());
    const int64_t blocks = (out_h + kRowsPerTask - 1) / kRowsPerTask;
    const int64_t tasks = N * blocks;
    // Dynamic scheduling: one parallel_for index per thread, each taking (mask, row block) items from a shared
    // counter until none are left. Masks differ widely in cost (empty rows are a memset), so a static split of the
    // items over the threads would leave some idle.
    std::atomic<int64_t> next{0};
    const int64_t workers = std::min<int64_t>(at::get_num_threads(), tasks);
    at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
      std::vector<acc_t> buf(static_cast<size_t>(w));
      for (int64_t t = next.fetch_add(1, std::memory_order_relaxed); t < tasks;
           t = next.fetch_add(1, std::memory_order_relaxed)) {
        const int64_t n = t / blocks;
        const int64_t y0 = (t % blocks) * kRowsPerTask;
        const int64_t y1 = std::min(out_h, y0 + kRowsPerTask);
        const scalar_t* pn = pp + n * h * w;
        for (int64_t y = y0; y < y1; ++y) {
          paste_row<scalar_t, acc_t>(pn, static_cast<int32_t>(w), rows, cols, y, static_cast<int32_t>(out_w), thr,
                                     buf.data(), op + (n * out_h + y) * out_w);
        }
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(solo, CPU, m) { m.impl("paste_masks", &paste_masks_cpu); }

}  // namespace solo
