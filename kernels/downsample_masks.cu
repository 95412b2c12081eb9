// CUDA kernel of the mask downsampling (see downsample_masks.cuh for the contract, csrc/include/solo/downsample_masks.h
// for the rule).
//
// One launch. A thread produces 4 consecutive output bytes of one output row and reads, of the one (odd stride) or two
// (even stride) input rows they depend on, only the bytes they need: rows no output pixel samples are never read.
// Block = (up to 128 threads along the output columns) x (rows), 256 threads; output rows (mask, i) are walked with
// a grid stride along y. Consecutive threads read consecutive blocks of the input rows (coalesced), and write one
// aligned 4-byte word each when the output row length allows it.
// Strides 1, 2 and 4 with aligned rows read the 4*s bytes of the thread's four input blocks with one 4-, 8- or 16-byte
// load per row and pick the sampled bytes out in registers (math::downsample_pack4); larger strides read single bytes
// (the two sampled bytes per block per row are all that is needed, and a 32-byte sector holds at most a few of them).
#include "downsample_masks.cuh"

#include <algorithm>

#include "solo/downsample_masks.h"

namespace solo {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxThreadsX = 128;
constexpr int kOutPerThread = 4;

struct DownsampleParams {
  const uint8_t* in;
  int64_t ho, wo, rows;  // output height and width; rows = m * ho
  int64_t sm, sh, sw;    // input element strides
  int64_t s;             // the downsampling stride
  uint8_t* out;
  bool vec_in;   // stride 1/2/4, unit column step, every input row aligned to 4 * s bytes
  bool vec_out;  // wo % 4 == 0 and out aligned to 4 bytes: one 32-bit store per thread
};

// The 4 * S bytes at p (aligned to 4 * S bytes) as S little-endian words: one load through the read-only cache.
template <int S>
__device__ __forceinline__ void load_words(const uint8_t* p, uint32_t (&w)[S]) {
  if constexpr (S == 1) {
    w[0] = __ldg(reinterpret_cast<const unsigned int*>(p));
  } else if constexpr (S == 2) {
    const uint2 v = __ldg(reinterpret_cast<const uint2*>(p));
    w[0] = v.x;
    w[1] = v.y;
  } else {
    static_assert(S == 4, "vector loads are used for strides 1, 2 and 4 only");
    const uint4 v = __ldg(reinterpret_cast<const uint4*>(p));
    w[0] = v.x;
    w[1] = v.y;
    w[2] = v.z;
    w[3] = v.w;
  }
}

// S > 0: the stride as a compile-time constant (equal to p.s); S == 0: any stride, read from p.s.
template <int S>
__global__ void __launch_bounds__(kThreads) downsample_masks_kernel(const DownsampleParams p) {
  constexpr bool kVecStride = S == 1 || S == 2 || S == 4;
  const int64_t s = S > 0 ? S : p.s;
  const int64_t c0 = math::downsample_offset(s);  // first sampled row / column inside a block
  const bool even = s % 2 == 0;
  const int64_t j0 = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) * kOutPerThread;
  if (j0 >= p.wo) return;  // no barrier below: early exit is safe
  const bool full = j0 + kOutPerThread <= p.wo;
  const int64_t row_step = int64_t(gridDim.y) * blockDim.y;
  for (int64_t r = int64_t(blockIdx.y) * blockDim.y + threadIdx.y; r < p.rows; r += row_step) {
    const int64_t mask = r / p.ho;
    const int64_t i = r - mask * p.ho;
    // The (first) sampled input row of output row i, at column 0.
    const uint8_t* a = p.in + mask * p.sm + (s * i + c0) * p.sh;
    uint8_t* o = p.out + r * p.wo + j0;
    if constexpr (kVecStride) {
      if (p.vec_in && full) {
        // Columns S * j0 .. S * (j0 + 4) - 1: the four blocks of this thread's outputs, 4 * S-byte aligned.
        uint32_t w0[S];
        uint32_t w1[S] = {};
        load_words<S>(a + S * j0, w0);
        if constexpr (S % 2 == 0) load_words<S>(a + p.sh + S * j0, w1);
        const uint32_t packed = math::downsample_pack4<S>(w0, w1);
        if (p.vec_out) {
          *reinterpret_cast<uint32_t*>(o) = packed;
        } else {
#pragma unroll
          for (int k = 0; k < kOutPerThread; ++k) o[k] = static_cast<uint8_t>(packed >> (8 * k));
        }
        continue;
      }
    }
    uint8_t v[kOutPerThread];
#pragma unroll
    for (int k = 0; k < kOutPerThread; ++k) {
      v[k] = 0;
      if (j0 + k < p.wo) {
        const uint8_t* q = a + (s * (j0 + k) + c0) * p.sw;
        v[k] = even ? math::downsample_vote(__ldg(q), __ldg(q + p.sw), __ldg(q + p.sh), __ldg(q + p.sh + p.sw))
                    : math::mask_bit(__ldg(q));
      }
    }
    if (p.vec_out && full) {
      *reinterpret_cast<uint32_t*>(o) =
          uint32_t(v[0]) | (uint32_t(v[1]) << 8) | (uint32_t(v[2]) << 16) | (uint32_t(v[3]) << 24);
    } else {
#pragma unroll
      for (int k = 0; k < kOutPerThread; ++k) {
        if (j0 + k < p.wo) o[k] = v[k];
      }
    }
  }
}

template <int S>
void launch(const DownsampleParams& p, dim3 grid, dim3 block, cudaStream_t stream) {
  downsample_masks_kernel<S><<<grid, block, 0, stream>>>(p);
}

}  // namespace

cudaError_t launch_downsample_masks(const uint8_t* masks, int64_t m, int64_t h, int64_t w, int64_t stride_m,
                                    int64_t stride_h, int64_t stride_w, int64_t s, uint8_t* out, cudaStream_t stream) {
  if (m < 0 || h < 0 || w < 0 || s <= 0 || h % s != 0 || w % s != 0) return cudaErrorInvalidValue;
  DownsampleParams p;
  p.ho = h / s;
  p.wo = w / s;
  p.rows = m * p.ho;
  if (p.rows == 0 || p.wo == 0) return cudaSuccess;
  if (masks == nullptr || out == nullptr) return cudaErrorInvalidValue;
  p.in = masks;
  p.out = out;
  p.sm = stride_m;
  p.sh = stride_h;
  p.sw = stride_w;
  p.s = s;
  const int64_t vec_bytes = 4 * s;
  p.vec_in = (s == 1 || s == 2 || s == 4) && stride_w == 1 && is_aligned(masks, static_cast<size_t>(vec_bytes)) &&
             stride_m % vec_bytes == 0 && stride_h % vec_bytes == 0;
  p.vec_out = p.wo % kOutPerThread == 0 && is_aligned(out, 4);

  // Narrow outputs (e.g. 76 columns at stride 16) put several output rows in one block instead of idle threads.
  const int64_t groups = ceil_div(p.wo, kOutPerThread);
  const int64_t tx = std::min<int64_t>(kMaxThreadsX, round_up(groups, 32));
  const int64_t ty = kThreads / tx;
  const int64_t gx = ceil_div(groups, tx);
  const int64_t gy = std::min<int64_t>(ceil_div(p.rows, ty), kMaxGridY);
  if (gx > 0x7fffffff) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(gy));
  const dim3 block(static_cast<unsigned>(tx), static_cast<unsigned>(ty));
  switch (s) {
    case 1:
      launch<1>(p, grid, block, stream);
      break;
    case 2:
      launch<2>(p, grid, block, stream);
      break;
    case 4:
      launch<4>(p, grid, block, stream);
      break;
    case 8:
      launch<8>(p, grid, block, stream);
      break;
    case 16:
      launch<16>(p, grid, block, stream);
      break;
    default:
      launch<0>(p, grid, block, stream);
      break;
  }
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace solo
