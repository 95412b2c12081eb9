// Unit tests of the mask downsampling rule in csrc/include/solo/downsample_masks.h (the functions the CPU and CUDA
// kernels call). Plain C++17, no framework; exits non-zero on any failure. Registered with ctest by CMakeLists.txt.
//
// Oracle: OpenCV's INTER_LINEAR formula for 8-bit images written out independently - source coordinate
// (j + 0.5) s - 0.5, interpolation weights quantised to 11 bits (INTER_RESIZE_COEF_BITS), the 22-bit weighted sum
// rounded half up - evaluated on random masks for strides 1..33. The "2 of 4" vote must reproduce it exactly.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "solo/downsample_masks.h"
#include "test_util.h"

namespace {

using namespace solo_test;

// OpenCV-style fixed-point bilinear resize of a 0/1 (or any byte) image by 1/s at output pixel (i, j).
int opencv_linear(const std::vector<uint8_t>& img, int h, int w, int s, int i, int j) {
  auto axis = [s](int o, int n, int* p0, int* p1, int* w0, int* w1) {
    const double f = (o + 0.5) * s - 0.5;
    int x = static_cast<int>(std::floor(f));
    double frac = f - x;
    if (x < 0) {
      x = 0;
      frac = 0;
    }
    *p0 = x;
    *p1 = x + 1 < n ? x + 1 : n - 1;
    *w1 = static_cast<int>(std::lround(frac * 2048));
    *w0 = 2048 - *w1;
  };
  int y0, y1, wy0, wy1, x0, x1, wx0, wx1;
  axis(i, h, &y0, &y1, &wy0, &wy1);
  axis(j, w, &x0, &x1, &wx0, &wx1);
  auto px = [&](int y, int x) { return static_cast<int64_t>(img[static_cast<size_t>(y) * w + x] != 0); };
  const int64_t acc = int64_t(wy0) * (wx0 * px(y0, x0) + wx1 * px(y0, x1)) +
                      int64_t(wy1) * (wx0 * px(y1, x0) + wx1 * px(y1, x1));
  return static_cast<int>((acc + (int64_t(1) << 21)) >> 22);
}

// The kernels' rule, through the shared functions.
int rule(const std::vector<uint8_t>& img, int w, int s, int i, int j) {
  const int64_t c0 = solo::math::downsample_offset(s);
  const auto at = [&](int64_t y, int64_t x) { return img[static_cast<size_t>(y * w + x)]; };
  const int64_t y = int64_t(s) * i + c0;
  const int64_t x = int64_t(s) * j + c0;
  if (s % 2 == 1) return solo::math::mask_bit(at(y, x));
  return solo::math::downsample_vote(at(y, x), at(y, x + 1), at(y + 1, x), at(y + 1, x + 1));
}

void test_offset() {
  for (int s = 1; s <= 64; ++s) {
    const int64_t want = s % 2 == 1 ? (s - 1) / 2 : s / 2 - 1;
    report(solo::math::downsample_offset(s) == want, "downsample_offset(" + std::to_string(s) + ")");
  }
}

void test_vote() {
  const uint8_t vals[] = {0, 1, 2, 127, 128, 255};
  for (uint8_t a : vals)
    for (uint8_t b : vals)
      for (uint8_t c : vals)
        for (uint8_t d : vals) {
          const int n = (a != 0) + (b != 0) + (c != 0) + (d != 0);
          report(solo::math::downsample_vote(a, b, c, d) == (n >= 2 ? 1 : 0),
                 "vote(" + std::to_string(a) + "," + std::to_string(b) + "," + std::to_string(c) + "," +
                     std::to_string(d) + ")");
        }
  for (int v = 0; v < 256; ++v) report(solo::math::mask_bit(static_cast<uint8_t>(v)) == (v != 0), "mask_bit");
}

void test_against_opencv_formula(std::mt19937& rng) {
  for (int s = 1; s <= 33; ++s) {
    for (int trial = 0; trial < 6; ++trial) {
      const int ho = 1 + trial % 4;
      const int wo = 1 + (trial * 5) % 9;
      const int h = ho * s;
      const int w = wo * s;
      const double density = (trial % 3 + 1) * 0.25;
      std::bernoulli_distribution on(density);
      std::uniform_int_distribution<int> val(1, 255);
      std::vector<uint8_t> img(static_cast<size_t>(h) * w);
      for (auto& v : img) v = on(rng) ? static_cast<uint8_t>(val(rng)) : 0;
      for (int i = 0; i < ho; ++i)
        for (int j = 0; j < wo; ++j) {
          const int want = opencv_linear(img, h, w, s, i, j);
          const int got = rule(img, w, s, i, j);
          report(got == want, "stride " + std::to_string(s) + " pixel (" + std::to_string(i) + ", " +
                                  std::to_string(j) + "): rule " + std::to_string(got) + ", OpenCV formula " +
                                  std::to_string(want));
        }
    }
  }
}

// downsample_pack4<S>: 4 output bytes from the 4*S bytes of each row given as little-endian words.
template <int S>
void test_pack4(std::mt19937& rng) {
  std::uniform_int_distribution<int> byte(0, 3);
  for (int trial = 0; trial < 2000; ++trial) {
    uint8_t r0[4 * S], r1[4 * S];
    for (int k = 0; k < 4 * S; ++k) {
      const int b0 = byte(rng), b1 = byte(rng);
      r0[k] = static_cast<uint8_t>(b0 == 3 ? 200 : b0 == 2 ? 0 : b0);
      r1[k] = static_cast<uint8_t>(b1 == 3 ? 255 : b1 == 2 ? 0 : b1);
    }
    uint32_t w0[S], w1[S];
    for (int q = 0; q < S; ++q) {
      w0[q] = uint32_t(r0[4 * q]) | uint32_t(r0[4 * q + 1]) << 8 | uint32_t(r0[4 * q + 2]) << 16 |
              uint32_t(r0[4 * q + 3]) << 24;
      w1[q] = uint32_t(r1[4 * q]) | uint32_t(r1[4 * q + 1]) << 8 | uint32_t(r1[4 * q + 2]) << 16 |
              uint32_t(r1[4 * q + 3]) << 24;
    }
    const uint32_t got = solo::math::downsample_pack4<S>(w0, w1);
    const int c0 = (S - 1) / 2;
    for (int j = 0; j < 4; ++j) {
      const int k = S * j + c0;
      int want;
      if (S % 2 == 1) {
        want = r0[k] != 0;
      } else {
        want = ((r0[k] != 0) + (r0[k + 1] != 0) + (r1[k] != 0) + (r1[k + 1] != 0)) >= 2;
      }
      report(((got >> (8 * j)) & 0xffu) == static_cast<uint32_t>(want),
             "pack4<" + std::to_string(S) + "> output " + std::to_string(j));
    }
  }
}

}  // namespace

int main() {
  std::mt19937 rng(20240531);
  test_offset();
  test_vote();
  test_against_opencv_formula(rng);
  test_pack4<1>(rng);
  test_pack4<2>(rng);
  test_pack4<3>(rng);
  test_pack4<4>(rng);
  return finish("test_math_downsample_masks");
}
