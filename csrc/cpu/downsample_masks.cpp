// CPU kernel of solo::downsample_masks (OpenCV INTER_LINEAR resize of 0/1 masks by 1/stride; the rule is in
// csrc/include/solo/downsample_masks.h).
//
// Parallel over output rows (mask, i). An output row reads one input row (odd stride) or two adjacent input rows
// (even stride), and of those only the one or two bytes per output pixel it needs: rows of the input that no output
// pixel samples are never touched, and nothing is copied (non-contiguous masks are read through their strides, bool
// and uint8 alike as bytes). Strides 2 and 4 load 16-byte chunks of the two rows and combine the needed bytes with
// SSE2 (16 outputs per step); larger even strides read each output's two bytes per row as one 16-bit load (only
// 2 of every s bytes are needed, and the rows are memory-bound by then); odd strides gather one byte per output.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstdint>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "../op_checks.h"
#include "solo/downsample_masks.h"

namespace solo {
namespace {

// Scalar tail / fallback of an even stride s with a unit column step: a and b point at the first needed byte (column
// s/2 - 1) of the two rows. The two adjacent bytes of a row are read as one 16-bit load; which byte is which does not
// matter (the vote is symmetric), so byte order does not either.
void row_even_pairs(const uint8_t* __restrict a, const uint8_t* __restrict b, uint8_t* __restrict out, int64_t j,
                    int64_t n, int64_t s) {
  for (; j < n; ++j) {
    uint16_t x, y;
    std::memcpy(&x, a + s * j, 2);
    std::memcpy(&y, b + s * j, 2);
    out[j] = math::downsample_vote(static_cast<uint8_t>(x), static_cast<uint8_t>(x >> 8), static_cast<uint8_t>(y),
                                   static_cast<uint8_t>(y >> 8));
  }
}

#if defined(__SSE2__)
// Strides 2 and 4 need a large share of each input row (half or a quarter of its bytes), so whole 16-byte chunks
// are loaded and the needed bytes combined in registers: 16 output bytes per iteration. SSE2 is the x86-64
// baseline (the compiler's own vectorisation of the byte gathers above is 2-4x slower on cached data).
//   t = min(a, 1) + min(b, 1): per byte, the nonzero count of the two rows (0..2; uint8 masks may hold any value);
//   then the two needed bytes of each block are added in wider lanes, compared with >= 2 and packed to bytes.

// Stride 2: block = 2 bytes = one 16-bit lane; a, b point at the row starts (column 0 = s/2 - 1).
int64_t row_s2_sse2(const uint8_t* a, const uint8_t* b, uint8_t* out, int64_t n) {
  const __m128i one8 = _mm_set1_epi8(1);
  const __m128i low16 = _mm_set1_epi16(0xff);
  const __m128i one16 = _mm_set1_epi16(1);
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    __m128i v[2];
    for (int h = 0; h < 2; ++h) {
      const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a + 2 * j + 16 * h));
      const __m128i y = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 2 * j + 16 * h));
      const __m128i t = _mm_add_epi8(_mm_min_epu8(x, one8), _mm_min_epu8(y, one8));
      const __m128i c = _mm_add_epi16(_mm_and_si128(t, low16), _mm_srli_epi16(t, 8));  // 0..4 per block
      v[h] = _mm_and_si128(_mm_cmpgt_epi16(c, one16), one16);
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + j), _mm_packus_epi16(v[0], v[1]));
  }
  return j;
}

// Stride 4: block = 4 bytes = one 32-bit lane, needed bytes 1 and 2; a, b point at the row starts (column 0).
int64_t row_s4_sse2(const uint8_t* a, const uint8_t* b, uint8_t* out, int64_t n) {
  const __m128i one8 = _mm_set1_epi8(1);
  const __m128i low32 = _mm_set1_epi32(0xff);
  const __m128i one32 = _mm_set1_epi32(1);
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    __m128i v[4];
    for (int h = 0; h < 4; ++h) {
      const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a + 4 * j + 16 * h));
      const __m128i y = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 4 * j + 16 * h));
      const __m128i t = _mm_srli_epi32(_mm_add_epi8(_mm_min_epu8(x, one8), _mm_min_epu8(y, one8)), 8);
      const __m128i c = _mm_add_epi32(_mm_and_si128(t, low32), _mm_and_si128(_mm_srli_epi32(t, 8), low32));
      v[h] = _mm_and_si128(_mm_cmpgt_epi32(c, one32), one32);
    }
    // 0/1 values: the saturating packs are exact.
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + j),
                     _mm_packus_epi16(_mm_packs_epi32(v[0], v[1]), _mm_packs_epi32(v[2], v[3])));
  }
  return j;
}
#endif

// Odd stride s, unit column step: a points at the sampled byte (column (s - 1)/2) of the one row.
void row_odd(const uint8_t* __restrict a, uint8_t* __restrict out, int64_t n, int64_t s) {
  if (s == 1) {
    SOLO_SIMD
    for (int64_t j = 0; j < n; ++j) out[j] = math::mask_bit(a[j]);
  } else {
    for (int64_t j = 0; j < n; ++j) out[j] = math::mask_bit(a[s * j]);
  }
}

// Any stride, any column step (sw elements between columns, e.g. a transposed view).
void row_generic(const uint8_t* a, const uint8_t* b, uint8_t* out, int64_t n, int64_t s, int64_t sw) {
  const int64_t step = s * sw;
  if (s % 2 == 1) {
    for (int64_t j = 0; j < n; ++j) out[j] = math::mask_bit(a[j * step]);
  } else {
    for (int64_t j = 0; j < n; ++j) {
      const int64_t k = j * step;
      out[j] = math::downsample_vote(a[k], a[k + sw], b[k], b[k + sw]);
    }
  }
}

// One output row of n pixels. a / b: the first needed byte (row and column offset (s - 1)/2 inside the first block)
// of the one or two input rows it reads (b is unused for odd s).
void downsample_row(const uint8_t* a, const uint8_t* b, uint8_t* out, int64_t n, int64_t s, int64_t sw) {
  if (sw != 1) return row_generic(a, b, out, n, s, sw);
  if (s % 2 == 1) return row_odd(a, out, n, s);
  int64_t j = 0;
#if defined(__SSE2__)
  // Column offset s/2 - 1 is 0 for s = 2 and 1 for s = 4: step back to the block start for the chunked loads.
  if (s == 2) j = row_s2_sse2(a, b, out, n);
  if (s == 4) j = row_s4_sse2(a - 1, b - 1, out, n);
#endif
  row_even_pairs(a, b, out, j, n, s);
}

at::Tensor downsample_masks_cpu(const at::Tensor& masks, int64_t stride) {
  TORCH_CHECK(masks.device().is_cpu(), "downsample_masks: masks must be a CPU tensor, got ", masks.device());
  checks::downsample_masks_inputs(masks, stride);
  const int64_t M = masks.size(0);
  const int64_t H = masks.size(1);
  const int64_t W = masks.size(2);
  const int64_t Ho = H / stride;
  const int64_t Wo = W / stride;
  at::Tensor out = at::empty({M, Ho, Wo}, masks.options().dtype(at::kByte));
  if (out.numel() == 0) return out;

  // bool and uint8 are both one byte; a bool holds 0 or 1, a uint8 mask any value (nonzero = 1).
  const uint8_t* in = static_cast<const uint8_t*>(masks.const_data_ptr());
  uint8_t* op = out.mutable_data_ptr<uint8_t>();
  const int64_t sm = masks.stride(0);
  const int64_t sh = masks.stride(1);
  const int64_t sw = masks.stride(2);
  const int64_t c0 = math::downsample_offset(stride);
  const int64_t rows = M * Ho;
  // About 32K output bytes per task: an output row of a SOLO canvas (Wo = 76..1216) is too little work to be worth
  // a task on its own.
  const int64_t grain = std::max<int64_t>(1, 32768 / Wo);
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t m = r / Ho;
      const int64_t i = r - m * Ho;
      const uint8_t* a = in + m * sm + (stride * i + c0) * sh + c0 * sw;
      downsample_row(a, stride % 2 == 0 ? a + sh : nullptr, op + r * Wo, Wo, stride, sw);
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(solo, CPU, m) { m.impl("downsample_masks", &downsample_masks_cpu); }

}  // namespace solo
