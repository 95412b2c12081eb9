// Unit tests of the grid-target geometry in csrc/include/solo/grid_targets.h, the functions the CPU and CUDA kernels
// call. Plain C++17, no framework; exits non-zero on any failure. Registered with ctest by CMakeLists.txt.
//
// Oracles: exact rational arithmetic where the answer is an integer (cells of crafted centres), long double
// elsewhere, with cases within 1e-9 of a cell boundary skipped (there only the float64 rounding decides).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <string>

#include "solo/grid_targets.h"
#include "test_util.h"

namespace {

using namespace solo_test;
using solo::grid::GridConfig;
using solo::grid::Rect;
using LD = long double;

GridConfig solo_config(double h, double w) {
  GridConfig cfg{};
  const int grids[5] = {40, 36, 24, 16, 12};
  const double ranges[5][2] = {{1, 96}, {48, 192}, {96, 384}, {192, 768}, {384, 2048}};
  cfg.num_levels = 5;
  int64_t off = 0;
  for (int l = 0; l < 5; ++l) {
    cfg.grids[l] = grids[l];
    cfg.lower[l] = ranges[l][0];
    cfg.upper[l] = ranges[l][1];
    cfg.offsets[l] = off;
    off += int64_t(grids[l]) * grids[l];
  }
  cfg.cells_per_image = off;
  cfg.height = h;
  cfg.width = w;
  cfg.sigma = 0.2;
  return cfg;
}

void test_mul_rn_is_not_fused() {
  // a * b = 1 + 2^-29 + 2^-60: rounded alone the 2^-60 is lost; a fused multiply-subtract would keep it.
  volatile double a = 1.0 + std::ldexp(1.0, -30);
  volatile double c = 1.0;
  const double d = solo::grid::mul_rn(a, a) - c;
  report(d == std::ldexp(1.0, -29), fmt("mul_rn(a, a) - 1 = %.20g, want 2^-29 (no fused multiply-add)", d));
  volatile double w = 3.0, s = 0.1, base = 7.0;
  const double h = solo::grid::half_size(0.0, w, s);
  const double want = (0.5 * 3.0) * 0.1;  // constants: folded with separate roundings
  report(h == want && base - h == 7.0 - want, fmt("half_size(0, 3, 0.1) = %.20g, want %.20g", h, want));
}

void test_floor_cell() {
  const int S = 12;
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  const struct {
    double v;
    int want;
  } cases[] = {{nan, -1}, {-inf, -1}, {inf, S}, {-5.0, -1}, {-1.0, -1}, {-0.999, -1}, {-0.0, 0}, {0.0, 0},
               {0.999, 0}, {1.0, 1}, {11.999999, 11}, {12.0, S}, {1e300, S}};
  for (const auto& c : cases) {
    const int got = solo::grid::floor_cell(c.v, S);
    report(got == c.want, fmt("floor_cell(%g, %d) = %d, want %d", c.v, S, got, c.want));
  }
}

void test_grid_cell_exact() {
  // Centres whose cell boundary is exact in binary: pos / extent * S lands on an integer.
  for (int S : {12, 16, 24, 36, 40}) {
    for (int k = 0; k < S; ++k) {
      const double extent = 800.0 * S / 8.0;  // multiples make pos = k * extent / S exact
      const double pos = k * (extent / S);
      const int got = solo::grid::grid_cell(pos, extent, S);
      report(got == k, fmt("grid_cell(%g, %g, %d) = %d, want %d", pos, extent, S, got, k));
      if (k > 0) {
        // Within an ulp or two of the boundary the float64 rounding decides (the tolerance the op documents);
        // a relative 1e-12 below it is the cell before.
        const double below = pos * (1.0 - 1e-12);
        report(solo::grid::grid_cell(below, extent, S) == k - 1, fmt("grid_cell just below boundary %d of S=%d", k, S));
      }
    }
  }
}

void test_scale_ranges() {
  // Inclusive bounds: a 96 x 96 box has scale exactly 96, in (1, 96) and (48, 192).
  const double s = solo::grid::box_scale(10, 20, 106, 116);
  report(s == 96.0, fmt("box_scale of a 96 x 96 box = %.17g", s));
  report(solo::grid::in_scale_range(s, 1, 96) && solo::grid::in_scale_range(s, 48, 192) &&
             !solo::grid::in_scale_range(s, 96.0000001, 384),
         "inclusive scale ranges at 96");
  report(!solo::grid::in_scale_range(solo::grid::box_scale(0, 0, -3, 4), 0, 1e9), "negative area: no range");
  report(solo::grid::box_scale(5, 5, 2, 1) == std::sqrt(12.0), "both sides negative: positive area");
  report(!solo::grid::in_scale_range(std::numeric_limits<double>::quiet_NaN(), 0, 1e9), "NaN scale: no range");
  report(solo::grid::in_scale_range(std::numeric_limits<double>::infinity(), 0,
                                    std::numeric_limits<double>::infinity()),
         "inf scale in an open-ended range");
}

// Long-double oracle of centre_region; returns false when a bound lies within 1e-9 of a cell boundary.
bool region_ld(LD cx, LD cy, LD hw, LD hh, LD H, LD W, int S, Rect* r) {
  auto cell = [&](LD pos, LD extent, bool* near) {
    const LD v = pos / extent * S;
    if (std::fabs(v - std::round(v)) < 1e-9L) *near = true;
    return static_cast<int>(std::floor(v));
  };
  bool near = false;
  const int ic = std::min(std::max(cell(cy, H, &near), 0), S - 1);
  const int jc = std::min(std::max(cell(cx, W, &near), 0), S - 1);
  r->top = std::max({0, cell(cy - hh, H, &near), ic - 1});
  r->down = std::min({S - 1, cell(cy + hh, H, &near), ic + 1});
  r->left = std::max({0, cell(cx - hw, W, &near), jc - 1});
  r->right = std::min({S - 1, cell(cx + hw, W, &near), jc + 1});
  return !near;
}

void test_centre_region_random() {
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  int compared = 0;
  for (int t = 0; t < 20000; ++t) {
    const double H = 32 + std::floor(u(rng) * 1300), W = 32 + std::floor(u(rng) * 1300);
    const int S = 1 + static_cast<int>(u(rng) * 48);
    const double cx = u(rng) * (W - 1), cy = u(rng) * (H - 1);
    const double hw = u(rng) * W * 0.2, hh = u(rng) * H * 0.2;
    const Rect got = solo::grid::centre_region(cx, cy, hw, hh, H, W, S);
    Rect want;
    if (!region_ld(cx, cy, hw, hh, H, W, S, &want)) continue;
    ++compared;
    const bool ok = got.top == want.top && got.down == want.down && got.left == want.left && got.right == want.right;
    report(ok, fmt("centre_region(c=(%g, %g), h=(%g, %g), %gx%g, S=%d) = [%d..%d]x[%d..%d], want [%d..%d]x[%d..%d]", cx,
                   cy, hw, hh, H, W, S, got.top, got.down, got.left, got.right, want.top, want.down, want.left,
                   want.right));
    // Properties: 1 to 3 rows and columns, around the centre cell, inside the grid.
    const int ic = solo::grid::grid_cell(cy, H, S), jc = solo::grid::grid_cell(cx, W, S);
    report(got.top <= ic && ic <= got.down && got.left <= jc && jc <= got.right && got.down - got.top <= 2 &&
               got.right - got.left <= 2 && got.top >= 0 && got.left >= 0 && got.down < S && got.right < S,
           fmt("region properties, case %d", t));
  }
  report(compared > 19000, fmt("only %d of 20000 random regions away from cell boundaries", compared));
}

void test_edges_and_empty() {
  const GridConfig cfg = solo_config(800, 1216);
  Rect r{};
  // Empty mask: never a target.
  report(!solo::grid::level_region(0, 0, 0, 0, 0, 50, 50, cfg, 0, &r), "empty mask is no target");
  // A 1-pixel mask at the last pixel: centre (1215, 799), its box 1 x 1 -> scale 1 (level 0, inclusive).
  report(solo::grid::level_region(1, 1215, 799, 1215, 799, 1216, 800, cfg, 0, &r) && r.top == 39 && r.down == 39 &&
             r.left == 39 && r.right == 39,
         fmt("1-pixel mask in the corner: [%d..%d]x[%d..%d]", r.top, r.down, r.left, r.right));
  report(!solo::grid::level_region(1, 1215, 799, 1215, 799, 1216, 800, cfg, 1, &r), "scale 1 is not on level 1");
  // A 1-pixel mask in the top-left corner with a larger box: the region would start at cell -1; clamped to 0.
  report(solo::grid::level_region(1, 0, 0, 0, 0, 50, 50, cfg, 0, &r) && r.top == 0 && r.down == 0 && r.left == 0 &&
             r.right == 0,
         fmt("corner pixel on level 0: [%d..%d]x[%d..%d]", r.top, r.down, r.left, r.right));
  // A filled 600 x 400 rectangle at the origin (exact moments) on level 3 (S = 16): centre (299.5, 199.5).
  const int64_t n = 400 * 600;
  const int64_t sx = int64_t(400) * (599 * 600 / 2), sy = int64_t(600) * (399 * 400 / 2);
  report(solo::grid::level_region(n, sx, sy, 0, 0, 600, 400, cfg, 3, &r) && r.top == 3 && r.down == 4 &&
             r.left == 3 && r.right == 4,
         fmt("rectangle on level 3: [%d..%d]x[%d..%d], want [3..4]x[3..4]", r.top, r.down, r.left, r.right));
  // Boxes with x2 < x1 and y2 < y1: positive area, negative half sizes; the region may be empty.
  const bool empty = !solo::grid::level_region(1, 600, 400, 700, 500, 500, 300, cfg, 3, &r);
  report(empty, "inverted box: empty region");
}

void test_flat_cell() {
  const GridConfig cfg = solo_config(800, 1216);
  report(cfg.cells_per_image == 3872, "SOLO grids: 3872 cells per image");
  report(solo::grid::flat_cell(cfg, 2, 1, 3, 5) == 2 * 3872 + 1600 + 3 * 36 + 5, "flat cell index");
  report(solo::grid::flat_cell(cfg, 0, 4, 11, 11) == 3871, "last cell of an image");
}

}  // namespace

int main() {
  test_mul_rn_is_not_fused();
  test_floor_cell();
  test_grid_cell_exact();
  test_scale_ranges();
  test_centre_region_random();
  test_edges_and_empty();
  test_flat_cell();
  return finish("test_math_grid_targets");
}
