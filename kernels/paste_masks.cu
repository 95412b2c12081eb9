// CUDA kernel of mask pasting (see paste_masks.cuh for the contract).
//
// One kernel. A block owns a tile of kTileY x kTileX output pixels and walks over masks (blockIdx.z, + gridDim.z,
// ...), so the tile's taps are computed once and reused for every mask it pastes:
//   1. prologue: threads 0..127 compute the composite taps (4 source indices + weights, solo/bilinear.h, in double)
//      of the tile's columns, threads 128..159 those of its rows, into shared memory; each thread then keeps the taps
//      of its own 4 output columns in registers.
//   2. per mask, vertical pass: V[r][c] = sum_a wy_a(r) probs[ry_a(r), c_lo + c] for the tile's rows and the one
//      contiguous span of source columns its taps touch (taps are monotone in x; c_lo = the first column's first
//      tap). Coalesced row reads through L1/L2 (the 4 source rows of neighbouring output rows mostly coincide).
//   3. if no V value exceeds the threshold, the tile is all False (outputs are convex combinations of V): zeros are
//      stored and step 4 is skipped (__syncthreads_or). SOLO's masks cover a small part of the image.
//   4. horizontal pass: each thread evaluates its 4 columns (4 taps each, from shared memory) for kTileY / 8 rows and
//      stores the 4 result bytes: one uchar4 store when rows are 4-byte aligned (out_w % 4 == 0), else lane-strided
//      byte stores so that every warp store instruction still writes 32 consecutive bytes.
// A tile whose source span does not fit the buffer (strong downscaling) reads its 16 taps per pixel directly.
#include "paste_masks.cuh"

#include <limits>

#include "solo/bilinear.h"

namespace solo {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kColsPerThread = 4;
constexpr int kTileX = 32 * kColsPerThread;  // a warp covers one tile row
constexpr int kTileY = 32;
constexpr int kRowsPerWarp = kTileY / kWarps;
constexpr int kVBufBytes = 32 * 1024;
// Aim for this many blocks per SM in total: each block then pastes ceil(n / gridDim.z) masks with one set of taps.
constexpr int kBlocksPerSm = 16;

template <typename A>
constexpr int max_span() {
  return kVBufBytes / (kTileY * static_cast<int>(sizeof(A)));
}

__device__ __forceinline__ float load_acc(const float* p) { return __ldg(p); }
__device__ __forceinline__ double load_acc(const double* p) { return __ldg(p); }
__device__ __forceinline__ float load_acc(const __half* p) { return __half2float(__ldg(p)); }
__device__ __forceinline__ float load_acc(const __nv_bfloat16* p) { return __bfloat162float(__ldg(p)); }

// Output column of tile-local thread column j: contiguous groups of 4 (vector stores) or lane-strided.
template <bool kVec>
__device__ __forceinline__ int local_col(int lane, int j) {
  return kVec ? lane * kColsPerThread + j : lane + 32 * j;
}

template <bool kVec>
__device__ __forceinline__ void store_row(uint8_t* row, int lane, int cols_in, const uint8_t (&res)[kColsPerThread]) {
  if (kVec) {
    // cols_in is a multiple of 4 here (out_w % 4 == 0), so a group is entirely inside or outside the tile.
    if (lane * kColsPerThread < cols_in) {
      *reinterpret_cast<uchar4*>(row + lane * kColsPerThread) = make_uchar4(res[0], res[1], res[2], res[3]);
    }
  } else {
#pragma unroll
    for (int j = 0; j < kColsPerThread; ++j) {
      const int c = lane + 32 * j;
      if (c < cols_in) row[c] = res[j];
    }
  }
}

template <typename T, bool kVec>
__global__ void __launch_bounds__(kThreads)
    paste_masks_kernel(const T* __restrict__ probs, int64_t n, int h, int w, int canvas_h, int canvas_w, int valid_h,
                       int valid_w, int out_h, int out_w, acc_t<T> thr, uint8_t* __restrict__ out) {
  using A = acc_t<T>;
  constexpr int kSpan = max_span<A>();
  __shared__ int32_t row_idx[4][kTileY];
  __shared__ A row_w[4][kTileY];
  __shared__ int32_t col_idx[4][kTileX];
  __shared__ A col_w[4][kTileX];
  __shared__ A vbuf[kTileY * kSpan];

  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int x0 = blockIdx.x * kTileX;
  const int y0 = blockIdx.y * kTileY;
  const int cols_in = min(kTileX, out_w - x0);
  const int rows_in = min(kTileY, out_h - y0);

  // 1. Taps. Columns / rows past the edge repeat the last one: valid indices, results never stored.
  if (tid < kTileX + kTileY) {
    const bool is_col = tid < kTileX;
    const int k_local = is_col ? tid : tid - kTileX;
    int32_t idx[4];
    double wd[4];
    if (is_col) {
      math::paste_taps(min(x0 + k_local, out_w - 1), w, canvas_w, valid_w, out_w, idx, wd);
    } else {
      math::paste_taps(min(y0 + k_local, out_h - 1), h, canvas_h, valid_h, out_h, idx, wd);
    }
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      if (is_col) {
        col_idx[k][k_local] = idx[k];
        col_w[k][k_local] = static_cast<A>(wd[k]);
      } else {
        row_idx[k][k_local] = idx[k];
        row_w[k][k_local] = static_cast<A>(wd[k]);
      }
    }
  }
  __syncthreads();

  // The smallest and largest source column of the tile (first column's first tap, last column's last tap).
  const int c_lo = col_idx[0][0];
  const int span = col_idx[3][cols_in - 1] - c_lo + 1;
  const bool separable = span <= kSpan;  // block-uniform
  int32_t ti[kColsPerThread][4];
  A tw[kColsPerThread][4];
#pragma unroll
  for (int j = 0; j < kColsPerThread; ++j) {
    const int c = min(local_col<kVec>(lane, j), kTileX - 1);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      ti[j][k] = col_idx[k][c] - (separable ? c_lo : 0);  // offsets into V on the separable path
      tw[j][k] = col_w[k][c];
    }
  }

  for (int64_t m = blockIdx.z; m < n; m += gridDim.z) {
    const T* pm = probs + m * static_cast<int64_t>(h) * w;
    uint8_t* om = out + (m * out_h + y0) * static_cast<int64_t>(out_w) + x0;
    if (separable) {
      __syncthreads();  // the previous mask's horizontal pass is done reading vbuf
      // 2. Vertical pass.
      bool any = false;
      for (int r = warp; r < rows_in; r += kWarps) {
        const T* p0 = pm + static_cast<int64_t>(row_idx[0][r]) * w + c_lo;
        const T* p1 = pm + static_cast<int64_t>(row_idx[1][r]) * w + c_lo;
        const T* p2 = pm + static_cast<int64_t>(row_idx[2][r]) * w + c_lo;
        const T* p3 = pm + static_cast<int64_t>(row_idx[3][r]) * w + c_lo;
        const A w0 = row_w[0][r], w1 = row_w[1][r], w2 = row_w[2][r], w3 = row_w[3][r];
        A* vr = vbuf + r * span;
        for (int c = lane; c < span; c += 32) {
          const A v = w0 * load_acc(p0 + c) + w1 * load_acc(p1 + c) + w2 * load_acc(p2 + c) + w3 * load_acc(p3 + c);
          vr[c] = v;
          any |= v > thr;
        }
      }
      // 3. Nothing above the threshold: the whole tile is False.
      if (!__syncthreads_or(any)) {
        const uint8_t zero[kColsPerThread] = {0, 0, 0, 0};
        for (int r = warp; r < rows_in; r += kWarps) store_row<kVec>(om + static_cast<int64_t>(r) * out_w, lane, cols_in, zero);
        continue;
      }
      // 4. Horizontal pass.
#pragma unroll
      for (int k = 0; k < kRowsPerWarp; ++k) {
        const int r = warp + k * kWarps;
        if (r >= rows_in) break;
        const A* vr = vbuf + r * span;
        uint8_t res[kColsPerThread];
#pragma unroll
        for (int j = 0; j < kColsPerThread; ++j) {
          const A v = tw[j][0] * vr[ti[j][0]] + tw[j][1] * vr[ti[j][1]] + tw[j][2] * vr[ti[j][2]] +
                      tw[j][3] * vr[ti[j][3]];
          res[j] = v > thr;
        }
        store_row<kVec>(om + static_cast<int64_t>(r) * out_w, lane, cols_in, res);
      }
    } else {
      // Direct path: 4 x 4 taps per pixel, read through L1/L2.
      for (int k = 0; k < kRowsPerWarp; ++k) {
        const int r = warp + k * kWarps;
        if (r >= rows_in) break;
        const T* p0 = pm + static_cast<int64_t>(row_idx[0][r]) * w;
        const T* p1 = pm + static_cast<int64_t>(row_idx[1][r]) * w;
        const T* p2 = pm + static_cast<int64_t>(row_idx[2][r]) * w;
        const T* p3 = pm + static_cast<int64_t>(row_idx[3][r]) * w;
        const A w0 = row_w[0][r], w1 = row_w[1][r], w2 = row_w[2][r], w3 = row_w[3][r];
        uint8_t res[kColsPerThread];
#pragma unroll
        for (int j = 0; j < kColsPerThread; ++j) {
          A v = A(0);
#pragma unroll
          for (int b = 0; b < 4; ++b) {
            const int c = ti[j][b];
            v += tw[j][b] * (w0 * load_acc(p0 + c) + w1 * load_acc(p1 + c) + w2 * load_acc(p2 + c) +
                             w3 * load_acc(p3 + c));
          }
          res[j] = v > thr;
        }
        store_row<kVec>(om + static_cast<int64_t>(r) * out_w, lane, cols_in, res);
      }
    }
  }
}

}  // namespace

template <typename scalar_t>
cudaError_t launch_paste_masks(const scalar_t* probs, int64_t n, int64_t h, int64_t w, int64_t canvas_h,
                               int64_t canvas_w, int64_t valid_h, int64_t valid_w, int64_t out_h, int64_t out_w,
                               double threshold, uint8_t* out, cudaStream_t stream) {
  constexpr int64_t kMax = int64_t(1) << 31;
  const int64_t sizes[] = {h, w, canvas_h, canvas_w, valid_h, valid_w, out_h, out_w};
  for (const int64_t s : sizes) {
    if (s <= 0 || s >= kMax) return cudaErrorInvalidValue;
  }
  if (n < 0 || valid_h > canvas_h || valid_w > canvas_w) return cudaErrorInvalidValue;
  const int64_t tiles_x = ceil_div(out_w, kTileX);
  const int64_t tiles_y = ceil_div(out_h, kTileY);
  if (tiles_y > kMaxGridY) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  if (probs == nullptr || out == nullptr) return cudaErrorInvalidValue;
  int64_t gz = ceil_div(int64_t(kBlocksPerSm) * sm_count(), tiles_x * tiles_y);
  gz = gz < n ? gz : n;
  gz = gz < kMaxGridY ? gz : kMaxGridY;
  const dim3 grid(static_cast<unsigned>(tiles_x), static_cast<unsigned>(tiles_y), static_cast<unsigned>(gz));
  using A = acc_t<scalar_t>;
  // Compared in the compute type, as the eager reference does; beyond the float range that is +-inf (spelled out:
  // an out-of-range conversion is undefined behaviour).
  const double lim = static_cast<double>(std::numeric_limits<A>::max());
  const A thr = threshold > lim ? std::numeric_limits<A>::infinity()
                                : (threshold < -lim ? -std::numeric_limits<A>::infinity() : static_cast<A>(threshold));
  const bool vec = out_w % 4 == 0 && is_aligned(out, 4);
  if (vec) {
    paste_masks_kernel<scalar_t, true><<<grid, kThreads, 0, stream>>>(
        probs, n, static_cast<int>(h), static_cast<int>(w), static_cast<int>(canvas_h), static_cast<int>(canvas_w),
        static_cast<int>(valid_h), static_cast<int>(valid_w), static_cast<int>(out_h), static_cast<int>(out_w), thr,
        out);
  } else {
    paste_masks_kernel<scalar_t, false><<<grid, kThreads, 0, stream>>>(
        probs, n, static_cast<int>(h), static_cast<int>(w), static_cast<int>(canvas_h), static_cast<int>(canvas_w),
        static_cast<int>(valid_h), static_cast<int>(valid_w), static_cast<int>(out_h), static_cast<int>(out_w), thr,
        out);
  }
  return cudaGetLastError();
}

#define SOLO_INSTANTIATE_PASTE(T)                                                                                    \
  template cudaError_t launch_paste_masks<T>(const T*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, \
                                             int64_t, int64_t, double, uint8_t*, cudaStream_t);

SOLO_INSTANTIATE_PASTE(float)
SOLO_INSTANTIATE_PASTE(double)
SOLO_INSTANTIATE_PASTE(__half)
SOLO_INSTANTIATE_PASTE(__nv_bfloat16)

#undef SOLO_INSTANTIATE_PASTE

}  // namespace cuda
}  // namespace solo
