// CPU kernels of solo::assign_grid_targets_mass and solo::assign_grid_targets_cells (SOLO grid targets).
//
// mass: one pass over the masks. Per row, the count of nonzero bytes and their column-weighted sum; the row count
//   times the row index gives sum y m. The masks are cut into (instance, band of rows) work items of ~64 KiB, each
//   adding into its own partial sums (integers: the result does not depend on the split). The AVX2 loop (chosen at
//   run time, see isa.h) does 32 bytes per step: min(v, 1) makes the bytes 0/1, psadbw counts them, pmaddubsw
//   weights them by their offset in the step. The portable loop does 8 bytes per step in a 64-bit word.
// cells: a few sequential passes over instances x levels and over cells; microseconds next to the mass pass.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

#include "../op_checks.h"
#include "isa.h"
#include "solo/grid_targets.h"

namespace solo {
namespace {

// Bytes of mask per work item of the mass pass: large enough to amortise the scheduling, small enough that M = 2
// masks still spread over every core.
constexpr int64_t kItemBytes = 64 * 1024;

// Portable loop: 8 bytes per step as one 64-bit word (SWAR). Masks are mostly zero, so zero words cost a test; a
// nonzero word has its nonzero bytes turned into 0x01, and two multiplies sum them: byte 7 of b * 0x0101..01 is the
// count, byte 7 of b * kByteOffsets is sum k b_k over the columns x + k, k = 0..7 (each byte of the products stays
// below 256, so no carries cross bytes).
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
constexpr uint64_t kByteOffsets = 0x0706050403020100ull;  // column x + k is the word's byte 7 - k
#else
constexpr uint64_t kByteOffsets = 0x0001020304050607ull;  // column x + k is the word's byte k
#endif

inline uint64_t nonzero_bytes64(uint64_t v) {
  return ((((v & 0x7F7F7F7F7F7F7F7Full) + 0x7F7F7F7F7F7F7F7Full) | v) >> 7) & 0x0101010101010101ull;
}

// Moments of rows [r0, r1) of one h x w mask (nonzero byte = 1), added to out[0..2] = (n, sum x, sum y).
void mass_rows_baseline(const uint8_t* mask, int64_t w, int64_t r0, int64_t r1, int64_t* out) {
  int64_t n = 0, sx = 0, sy = 0;
  const int64_t w8 = w & ~int64_t(7);
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* p = mask + r * w;
    int64_t rn = 0, rx = 0;
    for (int64_t x = 0; x < w8; x += 8) {
      uint64_t v;
      std::memcpy(&v, p + x, 8);
      if (v == 0) continue;
      const uint64_t b = nonzero_bytes64(v);
      const int64_t c = static_cast<int64_t>((b * 0x0101010101010101ull) >> 56);
      rn += c;
      rx += c * x + static_cast<int64_t>((b * kByteOffsets) >> 56);
    }
    for (int64_t x = w8; x < w; ++x) {
      const int64_t b = p[x] != 0;
      rn += b;
      rx += b * x;
    }
    n += rn;
    sx += rx;
    sy += r * rn;
  }
  out[0] += n;
  out[1] += sx;
  out[2] += sy;
}

#if SOLO_HAVE_AVX2_VARIANT
SOLO_BEGIN_AVX2
namespace avx2 {

inline int64_t hsum_epi64(__m256i v) {
  const __m128i s = _mm_add_epi64(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  return _mm_cvtsi128_si64(s) + _mm_extract_epi64(s, 1);
}

inline int64_t hsum_epi32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

void mass_rows(const uint8_t* mask, int64_t w, int64_t r0, int64_t r1, int64_t* out) {
  const __m256i zero = _mm256_setzero_si256();
  const __m256i one8 = _mm256_set1_epi8(1);
  const __m256i one16 = _mm256_set1_epi16(1);
  const __m256i offs = _mm256_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21,
                                        22, 23, 24, 25, 26, 27, 28, 29, 30, 31);
  const int64_t wv = w & ~int64_t(31);
  int64_t n = 0, sx = 0, sy = 0;
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* p = mask + r * w;
    __m256i cnt = zero;    // 4 x u64: nonzero bytes
    __m256i xbase = zero;  // 4 x u64: sum over steps of (step start column) * (count in the step)
    __m256i xoff = zero;   // 8 x i32: sum of the offsets inside their step (< 2^31 for w < 2^24)
    for (int64_t x = 0; x < wv; x += 32) {
      const __m256i b = _mm256_min_epu8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + x)), one8);
      const __m256i c = _mm256_sad_epu8(b, zero);
      cnt = _mm256_add_epi64(cnt, c);
      xbase = _mm256_add_epi64(xbase, _mm256_mul_epu32(c, _mm256_set1_epi64x(x)));
      xoff = _mm256_add_epi32(xoff, _mm256_madd_epi16(_mm256_maddubs_epi16(b, offs), one16));
    }
    int64_t rn = hsum_epi64(cnt);
    int64_t rx = hsum_epi64(xbase) + hsum_epi32(xoff);
    for (int64_t x = wv; x < w; ++x) {
      const int64_t b = p[x] != 0;
      rn += b;
      rx += b * x;
    }
    n += rn;
    sx += rx;
    sy += r * rn;
  }
  out[0] += n;
  out[1] += sx;
  out[2] += sy;
}

}  // namespace avx2
SOLO_END_AVX2
#endif

void mass_rows_isa(bool avx2, const uint8_t* mask, int64_t w, int64_t r0, int64_t r1, int64_t* out) {
#if SOLO_HAVE_AVX2_VARIANT
  // The AVX2 loop's 32-bit offset sums need w < 2^24 (always true for an image).
  if (avx2 && w < (int64_t(1) << 24)) return avx2::mass_rows(mask, w, r0, r1, out);
#endif
  mass_rows_baseline(mask, w, r0, r1, out);
}

at::Tensor assign_grid_targets_mass_cpu(const at::Tensor& masks) {
  TORCH_CHECK(masks.device().is_cpu(), "assign_grid_targets_mass: masks must be a CPU tensor, got ", masks.device());
  checks::grid_mass_inputs(masks);
  const at::Tensor mk = masks.contiguous();
  const int64_t M = mk.size(0), H = mk.size(1), W = mk.size(2);
  at::Tensor out = at::zeros({M, 3}, mk.options().dtype(at::kLong));
  if (M == 0 || H == 0 || W == 0) return out;
  const uint8_t* base = static_cast<const uint8_t*>(mk.const_data_ptr());
  const int64_t rows = std::max<int64_t>(1, std::min<int64_t>(H, kItemBytes / W));
  const int64_t bands = (H + rows - 1) / rows;
  std::vector<int64_t> partial(static_cast<size_t>(M * bands * 3), 0);
  const bool avx2 = cpu::use_avx2();
  at::parallel_for(0, M * bands, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t m = item / bands;
      const int64_t r0 = (item % bands) * rows;
      mass_rows_isa(avx2, base + m * H * W, W, r0, std::min(H, r0 + rows), partial.data() + 3 * item);
    }
  });
  int64_t* o = out.mutable_data_ptr<int64_t>();
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t b = 0; b < bands; ++b) {
      for (int k = 0; k < 3; ++k) o[3 * m + k] += partial[3 * (m * bands + b) + k];
    }
  }
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> assign_grid_targets_cells_cpu(
    const at::Tensor& mass, const at::Tensor& boxes, const at::Tensor& labels, const at::Tensor& image_ids,
    int64_t batch_size, int64_t height, int64_t width, at::IntArrayRef num_grids, at::ArrayRef<double> scale_ranges,
    double sigma, int64_t num_classes, int64_t mode) {
  constexpr const char* fn = "assign_grid_targets";
  TORCH_CHECK(mass.device().is_cpu(), fn, ": mass must be a CPU tensor, got ", mass.device());
  const grid::GridConfig cfg = checks::grid_cells_inputs(fn, mass, boxes, labels, image_ids, batch_size, height, width,
                                                         num_grids, scale_ranges, sigma, num_classes, mode);
  const int64_t M = mass.size(0);
  const int64_t L = cfg.num_levels;
  const int64_t N = batch_size * cfg.cells_per_image;

  const at::Tensor ms = mass.contiguous();
  const at::Tensor bx = boxes.to(at::kDouble).contiguous();
  const at::Tensor lb = labels.contiguous();
  const at::Tensor im = image_ids.contiguous();
  const int64_t* mp = ms.const_data_ptr<int64_t>();
  const double* bp = bx.const_data_ptr<double>();
  const int64_t* lp = lb.const_data_ptr<int64_t>();
  const int64_t* ip = im.const_data_ptr<int64_t>();
  for (int64_t m = 0; m < M; ++m) {
    TORCH_CHECK(lp[m] >= 0 && lp[m] < num_classes, fn, ": labels must be in [0, ", num_classes, "), but labels[", m,
                "] = ", lp[m]);
    TORCH_CHECK(ip[m] >= 0 && ip[m] < batch_size, fn, ": image_ids must be in [0, ", batch_size, "), but image_ids[",
                m, "] = ", ip[m]);
  }

  // Pass 1: region of every (instance, level); instances in index order, so the last to cover a cell wins it.
  std::vector<grid::Rect> rects(static_cast<size_t>(M * L));
  std::vector<uint8_t> active(static_cast<size_t>(M * L), 0);
  std::vector<int64_t> winner(static_cast<size_t>(N), -1);
  std::vector<int64_t> count(static_cast<size_t>(N), 0);
  for (int64_t m = 0; m < M; ++m) {
    const int64_t* s = mp + 3 * m;
    const double* b = bp + 4 * m;
    for (int l = 0; l < L; ++l) {
      grid::Rect r;
      if (!grid::level_region(s[0], s[1], s[2], b[0], b[1], b[2], b[3], cfg, l, &r)) continue;
      rects[m * L + l] = r;
      active[m * L + l] = 1;
      for (int i = r.top; i <= r.down; ++i) {
        for (int j = r.left; j <= r.right; ++j) {
          const int64_t cell = grid::flat_cell(cfg, ip[m], l, i, j);
          winner[cell] = m;
          ++count[cell];
        }
      }
    }
  }

  // Pass 2: labels, and the offset of each cell's positives.
  at::Tensor out_labels = at::empty({batch_size, cfg.cells_per_image}, lb.options());
  int64_t* ol = out_labels.mutable_data_ptr<int64_t>();
  std::vector<int64_t> offset(static_cast<size_t>(N), 0);
  int64_t P = 0;
  for (int64_t c = 0; c < N; ++c) {
    ol[c] = winner[c] >= 0 ? lp[winner[c]] : num_classes;
    offset[c] = P;
    P += mode == 0 ? (winner[c] >= 0 ? 1 : 0) : count[c];
  }

  // Pass 3: positives, in cell order; within a cell (SOLOv2) in instance order, the order instances are visited.
  at::Tensor pos_cells = at::empty({P}, lb.options());
  at::Tensor pos_instances = at::empty({P}, lb.options());
  int64_t* pc = pos_cells.mutable_data_ptr<int64_t>();
  int64_t* pi = pos_instances.mutable_data_ptr<int64_t>();
  if (mode == 0) {
    for (int64_t c = 0; c < N; ++c) {
      if (winner[c] >= 0) {
        pc[offset[c]] = c;
        pi[offset[c]] = winner[c];
      }
    }
  } else {
    for (int64_t m = 0; m < M; ++m) {
      for (int l = 0; l < L; ++l) {
        if (!active[m * L + l]) continue;
        const grid::Rect r = rects[m * L + l];
        for (int i = r.top; i <= r.down; ++i) {
          for (int j = r.left; j <= r.right; ++j) {
            const int64_t cell = grid::flat_cell(cfg, ip[m], l, i, j);
            const int64_t at = offset[cell]++;
            pc[at] = cell;
            pi[at] = m;
          }
        }
      }
    }
  }
  return {out_labels, pos_cells, pos_instances};
}

}  // namespace

TORCH_LIBRARY_IMPL(solo, CPU, m) {
  m.impl("assign_grid_targets_mass", &assign_grid_targets_mass_cpu);
  m.impl("assign_grid_targets_cells", &assign_grid_targets_cells_cpu);
}

}  // namespace solo
