// Mask downsampling (SOLO's mask targets): OpenCV INTER_LINEAR resize of a 0/1 mask by 1/s, for an integer s.
//
// For an integer factor the bilinear source coordinate of output pixel i is s*i + (s - 1)/2 (align_corners=False:
// (i + 0.5) s - 0.5). For odd s that is one input pixel, so the output is that pixel. For even s it lies half-way
// between the pixels c0 = s*i + s/2 - 1 and c0 + 1 along both axes, so every weight is 1/2 and the output is the mean
// of the 2x2 pixels; OpenCV rounds its fixed-point result half up, so a mean of 2/4 gives 1. Hence: 1 iff at least 2
// of the 4 pixels are nonzero. Only those 2 rows x 2 columns of each s x s block are ever read.
//
// Shared by the CPU kernel (csrc/cpu/downsample_masks.cpp), the CUDA kernel (kernels/downsample_masks.cu) and the
// C++ unit test (tests/cpp/test_math_downsample_masks.cpp). Plain integer arithmetic: no float anywhere.
#pragma once

#include <stdint.h>

#include "solo/macros.h"

namespace solo {
namespace math {

// Offset, inside an s x s block, of the first of the pixels an output pixel reads along one axis: (s - 1)/2 for odd
// s (the one pixel), s/2 - 1 for even s (the first of two) - both are (s - 1) / 2 in integer division.
SOLO_HOST_DEVICE int64_t downsample_offset(int64_t s) { return (s - 1) / 2; }

// 1 for a nonzero byte (masks may hold any nonzero value for "inside").
SOLO_HOST_DEVICE uint8_t mask_bit(uint8_t v) { return static_cast<uint8_t>(v != 0); }

// Even stride: the 2x2 vote, 1 iff at least 2 of the 4 bytes are nonzero.
SOLO_HOST_DEVICE uint8_t downsample_vote(uint8_t a0, uint8_t a1, uint8_t b0, uint8_t b1) {
  const int n = mask_bit(a0) + mask_bit(a1) + mask_bit(b0) + mask_bit(b1);
  return static_cast<uint8_t>(n >= 2);
}

// Byte k (0 = lowest address) of `n` little-endian 32-bit words (the layout of a vector load on every GPU and CPU
// solo targets).
SOLO_HOST_DEVICE uint8_t word_byte(const uint32_t* w, int k) {
  return static_cast<uint8_t>(w[k >> 2] >> (8 * (k & 3)));
}

// Four output bytes of one output row, packed little-endian into one word, from the 4*S input bytes each of the
// rows they read (S = stride; the bytes start at the first column of the output pixels' blocks) given as S words
// per row. `r1` is ignored for odd S (one row is read). Used for small strides where one vector load per row
// fetches exactly the blocks of four output pixels.
template <int S>
SOLO_HOST_DEVICE uint32_t downsample_pack4(const uint32_t* r0, const uint32_t* r1) {
  constexpr int c0 = (S - 1) / 2;
  uint32_t out = 0;
  // Constant trip count: fully unrolled by every compiler, so k is a constant and each byte a shift / mask.
  for (int j = 0; j < 4; ++j) {
    const int k = S * j + c0;
    uint32_t v;
    if constexpr (S % 2 == 1) {
      v = mask_bit(word_byte(r0, k));
    } else {
      v = downsample_vote(word_byte(r0, k), word_byte(r0, k + 1), word_byte(r1, k), word_byte(r1, k + 1));
    }
    out |= v << (8 * j);
  }
  return out;
}

}  // namespace math
}  // namespace solo
