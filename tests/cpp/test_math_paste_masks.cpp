// Unit tests of csrc/include/solo/bilinear.h, the tap math of paste_masks shared by the CPU and CUDA kernels.
// Plain C++17, exits non-zero on any failure; registered with ctest by CMakeLists.txt.
//
// Oracle: the two resizes done directly, one after the other, in long double: each stage is written out as its
// dense weight matrix from the align_corners=False formula (with the exact floor, not ATen's float-rounded one;
// for the sizes here the two differ by < 1e-15), the crop keeps the first `valid` canvas samples, and the composite
// is the product M2 (out x valid) * M1[:valid] (valid x src). The tap tables must reproduce it to 1e-12, and satisfy
// the structural properties the kernels rely on (index order, monotonicity, convexity, the span bound).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "solo/bilinear.h"
#include "test_util.h"

namespace {

using namespace solo_test;
using LD = long double;

// Dense [out x in] weights of one align_corners=False linear resize, straight from the formula.
std::vector<LD> resize_matrix(int64_t in, int64_t out) {
  std::vector<LD> m(static_cast<size_t>(in * out), 0.0L);
  for (int64_t d = 0; d < out; ++d) {
    LD s = static_cast<LD>(in) / static_cast<LD>(out) * (static_cast<LD>(d) + 0.5L) - 0.5L;
    if (s < 0) s = 0;
    int64_t i0 = static_cast<int64_t>(std::floor(s));
    if (i0 > in - 1) i0 = in - 1;
    const int64_t i1 = i0 + 1 < in ? i0 + 1 : in - 1;
    LD l = s - static_cast<LD>(i0);
    if (l > 1) l = 1;
    m[d * in + i0] += 1 - l;
    m[d * in + i1] += l;
  }
  return m;
}

struct Case {
  int64_t src, canvas, valid, out;
};

std::string name(const Case& c) {
  return fmt("[src %lld canvas %lld valid %lld out %lld]", static_cast<long long>(c.src),
             static_cast<long long>(c.canvas), static_cast<long long>(c.valid), static_cast<long long>(c.out));
}

void check_case(const Case& c, bool dense) {
  const std::string ctx = name(c);
  std::vector<int32_t> idx(static_cast<size_t>(4 * c.out));
  std::vector<double> wt(static_cast<size_t>(4 * c.out));
  for (int64_t d = 0; d < c.out; ++d) solo::math::paste_taps(d, c.src, c.canvas, c.valid, c.out, &idx[4 * d], &wt[4 * d]);

  // Structure: indices in range, idx[0] the smallest and idx[3] the largest; both non-decreasing in d;
  // weights >= 0 adding up to 1.
  bool in_range = true, order = true, monotone = true, convex = true;
  for (int64_t d = 0; d < c.out; ++d) {
    const int32_t* i = &idx[4 * d];
    const double* w = &wt[4 * d];
    double sum = 0;
    for (int k = 0; k < 4; ++k) {
      in_range &= i[k] >= 0 && i[k] < c.src;
      order &= i[0] <= i[k] && i[k] <= i[3];
      convex &= w[k] >= 0;
      sum += w[k];
    }
    convex &= std::fabs(sum - 1.0) <= 1e-14;
    if (d > 0) monotone &= idx[4 * (d - 1)] <= i[0] && idx[4 * (d - 1) + 3] <= i[3];
  }
  report(in_range, "tap index out of range " + ctx);
  report(order, "idx[0] / idx[3] not the smallest / largest tap " + ctx);
  report(monotone, "first / last tap not monotone in the output index " + ctx);
  report(convex, "weights not >= 0 with sum 1 " + ctx);

  // The span bound the kernels size their buffers with.
  for (const int64_t count : {int64_t(1), int64_t(7), int64_t(16), int64_t(32), int64_t(128)}) {
    const int64_t bound = solo::math::paste_span_bound(count, c.src, c.canvas, c.valid, c.out);
    int64_t worst = 0;
    for (int64_t d = 0; d < c.out; ++d) {
      const int64_t last = d + count - 1 < c.out ? d + count - 1 : c.out - 1;
      const int64_t span = idx[4 * last + 3] - idx[4 * d] + 1;
      worst = span > worst ? span : worst;
    }
    report(worst <= bound, fmt("span %lld of %lld outputs exceeds the bound %lld ", static_cast<long long>(worst),
                               static_cast<long long>(count), static_cast<long long>(bound)) +
                               ctx);
  }

  // Values: the taps applied to a random signal equal the two resizes done one after the other.
  std::mt19937 rng(static_cast<uint32_t>(c.src * 7919 + c.canvas * 104729 + c.valid * 31 + c.out));
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  std::vector<LD> f(static_cast<size_t>(c.src));
  for (auto& v : f) v = u(rng);
  // Stage 1 (src -> canvas, only the first `valid` samples are kept), stage 2 (valid -> out), each directly.
  const std::vector<LD> m1 = resize_matrix(c.src, c.canvas);
  const std::vector<LD> m2 = resize_matrix(c.valid, c.out);
  std::vector<LD> g(static_cast<size_t>(c.valid), 0.0L);
  for (int64_t j = 0; j < c.valid; ++j) {
    for (int64_t i = 0; i < c.src; ++i) g[j] += m1[j * c.src + i] * f[i];
  }
  LD worst = 0;
  for (int64_t d = 0; d < c.out; ++d) {
    LD direct = 0;
    for (int64_t j = 0; j < c.valid; ++j) direct += m2[d * c.valid + j] * g[j];
    LD taps = 0;
    for (int k = 0; k < 4; ++k) taps += static_cast<LD>(wt[4 * d + k]) * f[idx[4 * d + k]];
    worst = std::fabs(taps - direct) > worst ? std::fabs(taps - direct) : worst;
  }
  report(worst <= 1e-12L, fmt("taps applied to a signal differ from the two resizes by %.3Lg ", worst) + ctx);

  if (!dense) return;
  // Composite weights: the tap table scattered to a dense row equals the row of M2 * M1[:valid].
  LD worst_w = 0;
  std::vector<LD> row(static_cast<size_t>(c.src));
  for (int64_t d = 0; d < c.out; ++d) {
    std::fill(row.begin(), row.end(), 0.0L);
    for (int k = 0; k < 4; ++k) row[idx[4 * d + k]] += wt[4 * d + k];
    for (int64_t i = 0; i < c.src; ++i) {
      LD want = 0;
      for (int64_t j = 0; j < c.valid; ++j) want += m2[d * c.valid + j] * m1[j * c.src + i];
      worst_w = std::fabs(row[i] - want) > worst_w ? std::fabs(row[i] - want) : worst_w;
    }
  }
  report(worst_w <= 1e-12L, fmt("composite weights differ from M2 * M1 by %.3Lg ", worst_w) + ctx);
}

// linear_taps against hand-computed values, including ATen's corner cases.
void check_linear_taps() {
  int64_t i0, i1;
  double l;
  // Upscale x4: d = 0 -> s = -0.375 clamped to 0; d = 5 -> s = 0.875.
  solo::math::linear_taps(0, 3, 12, &i0, &i1, &l);
  report(i0 == 0 && i1 == 1 && l == 0.0, "linear_taps(0, 3 -> 12)");
  solo::math::linear_taps(5, 3, 12, &i0, &i1, &l);
  report(i0 == 0 && i1 == 1 && l == 0.875, fmt("linear_taps(5, 3 -> 12): %lld %lld %g", static_cast<long long>(i0),
                                              static_cast<long long>(i1), l));
  // Last output of an upscale: s = 2.375 -> i0 = 2, i1 clamped to 2.
  solo::math::linear_taps(11, 3, 12, &i0, &i1, &l);
  report(i0 == 2 && i1 == 2 && l == 0.375, "linear_taps(11, 3 -> 12)");
  // Same size: a copy.
  solo::math::linear_taps(4, 9, 9, &i0, &i1, &l);
  report(i0 == 4 && i1 == 4 && l == 0.0, "linear_taps(4, 9 -> 9)");
  // Downscale by 2: s = 2 d + 0.5.
  solo::math::linear_taps(3, 10, 5, &i0, &i1, &l);
  report(i0 == 6 && i1 == 7 && l == 0.5, "linear_taps(3, 10 -> 5)");
  // One input sample: both taps on it.
  solo::math::linear_taps(2, 1, 5, &i0, &i1, &l);
  report(i0 == 0 && i1 == 0, "linear_taps(2, 1 -> 5)");
  // An s that is an integer up to double rounding (3/7 * 3.5 - 0.5 = 1): either side of the floor is fine as
  // long as the weight then sits on index 1.
  solo::math::linear_taps(3, 3, 7, &i0, &i1, &l);
  report((i0 == 1 && l <= 1e-15) || (i0 == 0 && l >= 1 - 1e-15), "linear_taps(3, 3 -> 7) at an integer s");
}

}  // namespace

int main() {
  check_linear_taps();
  // Dense checks on small and odd sizes: up- and downscaling in either stage, valid == canvas, 1-sample axes,
  // canvas == src (stage-1 copy), out == valid (stage-2 copy).
  const Case small[] = {{25, 100, 100, 67},  {25, 100, 98, 125}, {17, 61, 55, 40},   {13, 29, 27, 53},
                        {11, 31, 30, 71},    {40, 30, 29, 11},   {60, 30, 30, 15},   {90, 40, 40, 13},
                        {20, 80, 80, 50},    {9, 36, 30, 1},     {7, 28, 25, 1},     {10, 40, 37, 37},
                        {16, 16, 12, 30},    {1, 4, 4, 5},       {9, 36, 30, 40},    {1, 1, 1, 1},
                        {5, 5, 5, 5},        {3, 7, 7, 3},       {50, 200, 199, 107}, {38, 152, 150, 167},
                        {200, 13, 13, 150},  {2, 3, 2, 9}};
  for (const Case& c : small) check_case(c, true);
  // SOLO's sizes (stride-4 map of an 800 x 1216 canvas, COCO output sizes), signal check only.
  const Case solo_sizes[] = {{200, 800, 800, 427}, {304, 1216, 1199, 640}, {200, 800, 800, 800},
                             {304, 1216, 1199, 1333}, {192, 768, 750, 480}, {304, 1216, 1216, 1216}};
  for (const Case& c : solo_sizes) check_case(c, false);
  // Random sizes.
  std::mt19937 rng(20240611);
  std::uniform_int_distribution<int64_t> sz(1, 120);
  for (int t = 0; t < 300; ++t) {
    Case c;
    c.src = sz(rng);
    c.canvas = sz(rng) * (t % 3 == 0 ? 4 : 1);
    c.valid = 1 + static_cast<int64_t>(std::uniform_int_distribution<int64_t>(0, c.canvas - 1)(rng));
    c.out = sz(rng) * (t % 5 == 0 ? 3 : 1);
    check_case(c, true);
  }
  return finish("test_math_paste_masks");
}
