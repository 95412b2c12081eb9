// Unit tests of csrc/include/solo/matrix_nms.h, the Matrix NMS math shared by the CPU and CUDA kernels. Plain C++17,
// exits non-zero on any failure (registered with ctest by CMakeLists.txt).
//
// Oracles are independent of the code under test: the textbook formulas of SPEC §9.3 in long double, the full
// N x N matrix form (min over *all* rows, as in the original code) against the header's shortcut
// min(1, min over same-label rows i < j), and naive byte loops for the bit packing.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "matrix_nms_oracle.h"
#include "solo/matrix_nms.h"
#include "test_util.h"

namespace {

using namespace solo_test;
using LD = long double;
using solo::math::MaskIoU;

bool close(LD got, LD want, LD rtol, LD atol) {
  if (std::isinf(want)) return got == want;
  return std::isfinite(got) && std::fabs(got - want) <= rtol * std::fabs(want) + atol;
}

// --- IoU --------------------------------------------------------------------------------------------------------

void test_mask_iou(std::mt19937& rng) {
  std::uniform_int_distribution<int64_t> area(0, 70000);
  int bad_float = 0, bad_double = 0, bad_complement = 0;
  for (int t = 0; t < 200000; ++t) {
    const int64_t ai = area(rng), aj = area(rng);
    const int64_t inter = std::uniform_int_distribution<int64_t>(0, std::min(ai, aj))(rng);
    const LD want = iou_ld(inter, ai, aj);
    const MaskIoU<float> f = solo::math::mask_iou<float, int64_t>(inter, ai, aj);
    const MaskIoU<double> d = solo::math::mask_iou<double, int64_t>(inter, ai, aj);
    bad_float += !close(f.iou, want, 1.2e-7L, 0);
    bad_double += !close(d.iou, want, 3e-16L, 0);
    // 1 - IoU keeps its relative precision even next to 1 (one rounding of exact integers).
    bad_complement += !close(f.one_minus, 1 - want, 1.2e-7L, 0);
  }
  report(bad_float == 0, fmt("mask_iou<float>: %d of 200000 off by more than 1 ulp", bad_float));
  report(bad_double == 0, fmt("mask_iou<double>: %d of 200000 off by more than 1 ulp", bad_double));
  report(bad_complement == 0, fmt("mask_iou<float>.one_minus: %d of 200000 off by more than 1 ulp", bad_complement));

  // Near-duplicates: one pixel differs between two 60,000-pixel masks.
  const MaskIoU<float> nd = solo::math::mask_iou<float, int64_t>(59999, 60000, 59999);
  report(close(nd.one_minus, 1.0L / 60000, 1.2e-7L, 0), fmt("near-duplicate 1 - IoU = %.9g", nd.one_minus));
  // Empty masks and other non-positive unions: IoU 0.
  const MaskIoU<float> e = solo::math::mask_iou<float, int64_t>(0, 0, 0);
  report(e.iou == 0 && e.one_minus == 1, "two empty masks: IoU 0");
  const MaskIoU<float> e2 = solo::math::mask_iou<float, float>(0.f, -3.f, 1.f);
  report(e2.iou == 0 && e2.one_minus == 1, "negative union (given areas): IoU 0");
  const MaskIoU<float> same = solo::math::mask_iou<float, int64_t>(40, 40, 40);
  report(same.iou == 1 && same.one_minus == 0, "identical masks: IoU exactly 1, complement exactly 0");
  // Given (float) areas.
  const MaskIoU<float> g = solo::math::mask_iou<float, float>(12.f, 30.5f, 20.25f);
  report(close(g.iou, 12.0L / (30.5L + 20.25L - 12), 1.2e-7L, 0), "mask_iou with float areas");
}

// --- bit packing ------------------------------------------------------------------------------------------------

void test_packing(std::mt19937& rng) {
  // Every single-byte value in every position, then random words with random zero bytes.
  int bad = 0;
  for (int pos = 0; pos < 8; ++pos) {
    for (int v = 0; v < 256; ++v) {
      const uint64_t x = static_cast<uint64_t>(v) << (8 * pos);
      bad += solo::math::nonzero_bytes_to_bits(x) != (v ? 1u << pos : 0u);
      if (pos < 4) bad += solo::math::nonzero_bytes_to_bits(static_cast<uint32_t>(x)) != (v ? 1u << pos : 0u);
    }
  }
  std::uniform_int_distribution<int> byte(0, 255), coin(0, 2);
  for (int t = 0; t < 100000; ++t) {
    uint64_t x = 0;
    uint32_t want = 0;
    for (int k = 0; k < 8; ++k) {
      const int b = coin(rng) == 0 ? 0 : byte(rng);
      x |= static_cast<uint64_t>(b) << (8 * k);
      want |= (b != 0 ? 1u : 0u) << k;
    }
    bad += solo::math::nonzero_bytes_to_bits(x) != want;
    bad += solo::math::nonzero_bytes_to_bits(static_cast<uint32_t>(x)) != (want & 0xfu);
  }
  report(bad == 0, fmt("nonzero_bytes_to_bits: %d mismatches", bad));
}

// --- decay ------------------------------------------------------------------------------------------------------

void test_decay_ratio(std::mt19937& rng) {
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  const float sigmas[] = {0.f, 0.5f, 2.f, 7.5f};
  int bad_g = 0, bad_l = 0;
  for (int t = 0; t < 100000; ++t) {
    const int64_t a = 1000 + static_cast<int64_t>(unit(rng) * 50000);
    const int64_t inter_d = static_cast<int64_t>(unit(rng) * a), inter_c = static_cast<int64_t>(unit(rng) * a);
    const MaskIoU<float> d = solo::math::mask_iou<float, int64_t>(inter_d, a, a);
    const MaskIoU<float> c = solo::math::mask_iou<float, int64_t>(inter_c, a, a);
    const LD dl = iou_ld(inter_d, a, a), cl = iou_ld(inter_c, a, a);
    const float sigma = sigmas[t % 4];
    const LD g = std::exp(-sigma * dl * dl) / std::exp(-sigma * cl * cl);
    bad_g += !close(solo::math::decay_ratio(solo::math::kMatrixNmsGaussian, d, c, sigma), g, 2e-6L, 0);
    const LD l = (1 - dl) / (1 - cl);
    bad_l += !close(solo::math::decay_ratio(solo::math::kMatrixNmsLinear, d, c, sigma), l, 4e-7L, 0);
  }
  report(bad_g == 0, fmt("gaussian decay_ratio: %d of 100000 mismatches", bad_g));
  report(bad_l == 0, fmt("linear decay_ratio: %d of 100000 mismatches", bad_l));

  // The reference's nan_to_num rules when comp = 1 (mask i duplicates a better one).
  MaskIoU<float> one;
  one.iou = 1.f;
  one.one_minus = 0.f;
  MaskIoU<float> half;
  half.iou = 0.5f;
  half.one_minus = 0.5f;
  MaskIoU<float> over;  // IoU > 1 (only with given areas smaller than the pixel counts)
  over.iou = 1.5f;
  over.one_minus = -0.5f;
  const int lin = solo::math::kMatrixNmsLinear;
  report(solo::math::decay_ratio(lin, one, one, 2.f) == 0.f, "linear 0/0 -> 0");
  report(std::isinf(solo::math::decay_ratio(lin, half, one, 2.f)), "linear x/0 -> +inf");
  report(solo::math::decay_ratio(lin, over, one, 2.f) == -std::numeric_limits<float>::max(), "linear -x/0 -> lowest");
  report(solo::math::decay_update(0.5f, std::nanf("")) == 0.5f, "decay_update ignores NaN");
}

// Full matrix form of SPEC §9.3 in long double, min over all rows, against the header's column shortcut.
void test_shortcut_equals_matrix_form(std::mt19937& rng) {
  int bad = 0;
  for (int t = 0; t < 300; ++t) {
    const int n = 1 + t % 40;
    const int hw = 1 + (t * 7) % 90;
    std::bernoulli_distribution on(0.1 + 0.8 * ((t % 5) / 4.0));
    std::uniform_int_distribution<int> lab(0, t % 3);
    std::vector<std::vector<uint8_t>> m(n, std::vector<uint8_t>(hw));
    std::vector<int64_t> labels(n), area(n, 0);
    for (int i = 0; i < n; ++i) {
      if (i > 0 && t % 4 == 0 && i % 3 == 0) {
        m[i] = m[i - 1];  // duplicates
      } else {
        for (auto& b : m[i]) b = on(rng) ? 1 : 0;
      }
      labels[i] = lab(rng);
      for (uint8_t b : m[i]) area[i] += b;
    }
    auto inter = [&](int i, int j) {
      int64_t s = 0;
      for (int k = 0; k < hw; ++k) s += m[i][k] & m[j][k];
      return s;
    };
    const int kernel = t % 2;
    const float sigma = 2.f;
    // Matrix form.
    std::vector<LD> D(n * n, 0);
    for (int i = 0; i < n; ++i)
      for (int j = i + 1; j < n; ++j)
        if (labels[i] == labels[j]) D[i * n + j] = iou_ld(inter(i, j), area[i], area[j]);
    const std::vector<LD> comp = column_max(D, n);
    // Header form.
    std::vector<MaskIoU<float>> hc(n, solo::math::comp_init<float>());
    for (int j = 0; j < n; ++j)
      for (int i = 0; i < j; ++i)
        if (labels[i] == labels[j])
          solo::math::comp_update(&hc[j], solo::math::mask_iou<float, int64_t>(inter(i, j), area[i], area[j]));
    for (int j = 0; j < n; ++j) {
      const LD want = matrix_decay(D, comp, n, j, kernel, sigma);
      float got = 1.f;
      for (int i = 0; i < j; ++i) {
        if (labels[i] != labels[j]) continue;
        const MaskIoU<float> d = solo::math::mask_iou<float, int64_t>(inter(i, j), area[i], area[j]);
        got = solo::math::decay_update(got, solo::math::decay_ratio(kernel, d, hc[i], sigma));
      }
      if (!close(got, want, 1e-6L, 1e-7L)) {
        ++bad;
        if (bad <= 5) {
          std::fprintf(stderr, "  t=%d n=%d j=%d kernel=%d: got %.9g want %.9Lg\n", t, n, j, kernel, got, want);
        }
      }
    }
  }
  report(bad == 0, fmt("column shortcut vs matrix form: %d mismatches", bad));
}

}  // namespace

int main() {
  std::mt19937 rng(20260411);
  test_mask_iou(rng);
  test_packing(rng);
  test_decay_ratio(rng);
  test_shortcut_equals_matrix_form(rng);
  return finish("test_math_matrix_nms");
}
