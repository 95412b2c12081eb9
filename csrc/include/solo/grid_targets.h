// Grid target assignment (SOLO_SPEC.md §7): the per-instance geometry of solo::assign_grid_targets_cells, shared by
// the CPU and CUDA kernels. The Python reference (solo/ops/reference.py) and the Triton kernel repeat the same
// float64 operations in the same order, so every backend produces bit-identical cells.
//
// For one instance with mask moments (n = sum m, sx = sum x m, sy = sum y m; x, y = 0-based column / row) and box
// (x1, y1, x2, y2), on a level with grid S and inclusive scale range [lower, upper], on an H x W canvas:
//   scale  s  = sqrt((x2 - x1) * (y2 - y1))          NaN for a negative area: never in a range
//   target    = n > 0 and lower <= s <= upper
//   centre    c_x = sx / n, c_y = sy / n             exact integer sums, one rounding each (sums < 2^53)
//   cell      j_c = floor((c_x / W) * S), i_c = floor((c_y / H) * S), clamped to [0, S - 1] (a no-op for real
//             canvases: c_x <= W - 1)
//   half size h_w = (0.5 * (x2 - x1)) * sigma, h_h = (0.5 * (y2 - y1)) * sigma
//   region    top = max(0, floor(((c_y - h_h) / H) * S)), down = min(S - 1, floor(((c_y + h_h) / H) * S)), left /
//             right likewise with c_x, h_w, W; then top >= i_c - 1, down <= i_c + 1, left >= j_c - 1,
//             right <= j_c + 1 (the 3 x 3 cells around the centre cell). Empty when top > down or left > right
//             (only possible for a box with x2 < x1 and y2 < y1).
// The original computes the cell as the float floor division (c / W) // (1 / S); we use floor((c / W) * S), which can
// differ from it only where c * S / W lies within a few ulp of an integer.
//
// Numerics: everything in float64. The products feeding an addition (c_y - h_h) are rounded on their own
// (mul_rn): a fused multiply-add would round once instead of twice and could move a region bound by one cell at
// an exact boundary. GCC contracts a * b + c across statements even in ISO mode, and nvcc does by default.
#pragma once

#include <stdint.h>

#include "solo/macros.h"

namespace solo {
namespace grid {

// Levels per call. SOLO uses 5; the CUDA kernels take the configuration by value.
constexpr int kMaxLevels = 16;

// The grid configuration of one call (the schema's arguments, laid out for the kernels).
struct GridConfig {
  int num_levels;
  int grids[kMaxLevels];         // S per level
  double lower[kMaxLevels];      // inclusive scale range per level
  double upper[kMaxLevels];
  int64_t offsets[kMaxLevels];   // first cell of each level among an image's cells (sum of the earlier S^2)
  int64_t cells_per_image;       // sum over levels of S^2
  double height, width, sigma;   // canvas size (the masks' H, W) and the centre-region scale
};

// Inclusive cell rectangle; empty when top > down or left > right.
struct Rect {
  int top, down, left, right;
};

// a * b rounded to double on its own, never contracted with a following addition into a fused multiply-add.
SOLO_HOST_DEVICE double mul_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#elif defined(__CUDACC__)
  // Host side of an nvcc translation unit: the front end need not know GCC's builtin.
  volatile double r = a * b;
  return r;
#elif defined(__has_builtin)
#if __has_builtin(__builtin_assoc_barrier)
  return __builtin_assoc_barrier(a * b);
#else
  volatile double r = a * b;
  return r;
#endif
#else
  volatile double r = a * b;
  return r;
#endif
}

SOLO_HOST_DEVICE double box_scale(double x1, double y1, double x2, double y2) {
  return ::sqrt((x2 - x1) * (y2 - y1));
}

SOLO_HOST_DEVICE bool in_scale_range(double scale, double lower, double upper) {
  return lower <= scale && scale <= upper;  // false for NaN
}

// (0.5 * (hi - lo)) * sigma: half the box side times sigma (SOLO: the centre region is 20 % of the box).
SOLO_HOST_DEVICE double half_size(double lo, double hi, double sigma) { return mul_rn(mul_rn(0.5, hi - lo), sigma); }

// floor(v) as an int clamped to [-1, S] (enough for the clamps that follow); NaN and -inf give -1, +inf gives S.
SOLO_HOST_DEVICE int floor_cell(double v, int S) {
  if (!(v > -1.0)) return -1;
  if (v >= static_cast<double>(S)) return S;
  return static_cast<int>(::floor(v));
}

// floor((pos / extent) * S): the grid cell of a canvas position.
SOLO_HOST_DEVICE int grid_cell(double pos, double extent, int S) {
  return floor_cell(mul_rn(pos / extent, static_cast<double>(S)), S);
}

SOLO_HOST_DEVICE int imax(int a, int b) { return a > b ? a : b; }
SOLO_HOST_DEVICE int imin(int a, int b) { return a < b ? a : b; }

// Centre of mass from the exact moments (n > 0): sum / n in one rounding.
SOLO_HOST_DEVICE double centre(int64_t sum, int64_t n) { return static_cast<double>(sum) / static_cast<double>(n); }

// The positive cells of an instance with centre (cx, cy) and half sizes (hw, hh) on an S x S grid over H x W.
SOLO_HOST_DEVICE Rect centre_region(double cx, double cy, double hw, double hh, double H, double W, int S) {
  const int ic = imin(imax(grid_cell(cy, H, S), 0), S - 1);
  const int jc = imin(imax(grid_cell(cx, W, S), 0), S - 1);
  Rect r;
  r.top = imax(imax(0, grid_cell(cy - hh, H, S)), ic - 1);
  r.down = imin(imin(S - 1, grid_cell(cy + hh, H, S)), ic + 1);
  r.left = imax(imax(0, grid_cell(cx - hw, W, S)), jc - 1);
  r.right = imin(imin(S - 1, grid_cell(cx + hw, W, S)), jc + 1);
  return r;
}

// Whether the instance is a target on level `level` of `cfg`, and if so its region in *r.
SOLO_HOST_DEVICE bool level_region(int64_t n, int64_t sx, int64_t sy, double x1, double y1, double x2, double y2,
                                   const GridConfig& cfg, int level, Rect* r) {
  if (n <= 0) return false;
  if (!in_scale_range(box_scale(x1, y1, x2, y2), cfg.lower[level], cfg.upper[level])) return false;
  *r = centre_region(centre(sx, n), centre(sy, n), half_size(x1, x2, cfg.sigma), half_size(y1, y2, cfg.sigma),
                     cfg.height, cfg.width, cfg.grids[level]);
  return r->top <= r->down && r->left <= r->right;
}

// Flat index of cell (i, j) of `level` of image `image` in the [batch, cells_per_image] label tensor.
SOLO_HOST_DEVICE int64_t flat_cell(const GridConfig& cfg, int64_t image, int level, int i, int j) {
  return image * cfg.cells_per_image + cfg.offsets[level] + static_cast<int64_t>(i) * cfg.grids[level] + j;
}

}  // namespace grid
}  // namespace solo
