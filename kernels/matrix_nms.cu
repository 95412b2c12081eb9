// CUDA kernels of Matrix NMS (see matrix_nms.cuh for the contract).
//
//   memset   inter [n, n] int32 = 0 (column j contiguous: inter[j * n + i] is the pair i < j)
//   pack     one block per mask: its bytes -> 32-bit words (bit k of word w = pixel 32 w + k), 16-byte loads where
//            the layout allows; the block also reduces the area (popcount) and the first / last nonzero word.
//   pairs    one block per (64 x 64 tile on or above the diagonal, word split). The block stages 32 words of its 64
//            row masks and 64 column masks in shared memory at a time and each thread accumulates AND + popcount for
//            4 x 4 pairs. Only the words inside the overlap of the tile's row and column word ranges are read (SOLO
//            masks are local: often a small part of the image). With several word splits per tile (few tiles, i.e.
//            small n) partial counts are added with integer atomics: exact, so still deterministic.
//   comp     one warp per column j: comp_j = max over the same-label i < j of IoU_ij (and 1 - comp_j).
//   decay    one warp per column j: out_j = scores_j * min(1, min over the same-label i < j of f(IoU_ij) / f(comp_i)).
// No host synchronisation; every size is known on the host from n and hw.
#include <climits>

#include "matrix_nms.cuh"
#include "solo/matrix_nms.h"

namespace solo {
namespace cuda {
namespace {

constexpr int kPackThreads = 256;
constexpr int kTile = 64;            // masks per tile side
constexpr int kChunk = 32;           // 32-bit words staged in shared memory per step
constexpr int kPairThreads = 256;    // 16 x 16 threads, 4 x 4 pairs each
constexpr int kPairsPerThread = 4;   // per side
constexpr int kColWarps = 8;         // columns (one warp each) per block of the comp / decay kernels
constexpr int kBlocksPerSm = 4;      // target resident pair blocks per SM when choosing the word splits
constexpr size_t kAlign = 256;

static_assert(kPairThreads == (kTile / kPairsPerThread) * (kTile / kPairsPerThread), "thread layout");
static_assert(kPairThreads / kChunk * 8 == kTile, "loader layout: 8 rows per thread per step");

size_t align_up(size_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

int64_t words_of(int64_t hw) { return ceil_div(hw, 32); }

struct Layout {
  size_t bits, area, first, last, inter, comp, total;
};

Layout layout_of(int64_t n, int64_t hw) {
  Layout l;
  size_t off = 0;
  auto take = [&](size_t bytes) {
    const size_t at = off;
    off += align_up(bytes);
    return at;
  };
  l.bits = take(static_cast<size_t>(n) * static_cast<size_t>(words_of(hw)) * sizeof(uint32_t));
  l.area = take(static_cast<size_t>(n) * sizeof(int32_t));
  l.first = take(static_cast<size_t>(n) * sizeof(int32_t));
  l.last = take(static_cast<size_t>(n) * sizeof(int32_t));
  l.inter = take(static_cast<size_t>(n) * static_cast<size_t>(n) * sizeof(int32_t));
  l.comp = take(static_cast<size_t>(n) * sizeof(float2));
  l.total = off;
  return l;
}

// --- pack -------------------------------------------------------------------------------------------------------

__device__ __forceinline__ uint32_t pack16(uint4 v) {
  return math::nonzero_bytes_to_bits(v.x) | (math::nonzero_bytes_to_bits(v.y) << 4) |
         (math::nonzero_bytes_to_bits(v.z) << 8) | (math::nonzero_bytes_to_bits(v.w) << 12);
}

template <bool kVec>
__global__ void __launch_bounds__(kPackThreads)
    pack_kernel(const uint8_t* __restrict__ masks, int64_t hw, int64_t mask_stride, int64_t words,
                uint32_t* __restrict__ bits, int32_t* __restrict__ area, int32_t* __restrict__ first,
                int32_t* __restrict__ last) {
  __shared__ int s_red[3][32];
  const int64_t i = blockIdx.x;
  const uint8_t* m = masks + i * mask_stride;
  uint32_t* out = bits + i * words;
  const int64_t full = hw / 32;
  int count = 0, lo = INT_MAX, hi = -1;
  for (int64_t w = threadIdx.x; w < words; w += blockDim.x) {
    uint32_t word = 0;
    if (kVec && w < full) {
      const uint4* p = reinterpret_cast<const uint4*>(m + w * 32);
      word = pack16(p[0]) | (pack16(p[1]) << 16);
    } else {
      const int64_t base = w * 32;
      const int nb = hw - base < 32 ? static_cast<int>(hw - base) : 32;
      for (int k = 0; k < nb; ++k) word |= static_cast<uint32_t>(m[base + k] != 0) << k;
    }
    out[w] = word;
    count += __popc(word);
    if (word != 0) {
      lo = min(lo, static_cast<int>(w));
      hi = max(hi, static_cast<int>(w));
    }
  }
  // Block reduction of (count, lo, hi).
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    count += __shfl_xor_sync(0xffffffffu, count, off);
    lo = min(lo, __shfl_xor_sync(0xffffffffu, lo, off));
    hi = max(hi, __shfl_xor_sync(0xffffffffu, hi, off));
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  if (lane == 0) {
    s_red[0][warp] = count;
    s_red[1][warp] = lo;
    s_red[2][warp] = hi;
  }
  __syncthreads();
  if (warp == 0) {
    count = lane < nwarps ? s_red[0][lane] : 0;
    lo = lane < nwarps ? s_red[1][lane] : INT_MAX;
    hi = lane < nwarps ? s_red[2][lane] : -1;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
      count += __shfl_xor_sync(0xffffffffu, count, off);
      lo = min(lo, __shfl_xor_sync(0xffffffffu, lo, off));
      hi = max(hi, __shfl_xor_sync(0xffffffffu, hi, off));
    }
    if (lane == 0) {
      area[i] = count;
      first[i] = lo == INT_MAX ? static_cast<int32_t>(words) : lo;  // empty mask: [words, -1], overlaps nothing
      last[i] = hi;
    }
  }
}

// --- pairs ------------------------------------------------------------------------------------------------------

// Upper-triangular tile index t -> (bi, bj), bi <= bj; tile row bi starts at off(bi) = bi (2 nb - bi + 1) / 2.
__device__ __forceinline__ void tile_of(int64_t t, int64_t nb, int* bi, int* bj) {
  const double b = 2.0 * static_cast<double>(nb) + 1.0;
  int64_t r = static_cast<int64_t>((b - sqrt(b * b - 8.0 * static_cast<double>(t))) * 0.5);
  auto off = [nb](int64_t q) { return q * (2 * nb - q + 1) / 2; };
  while (r > 0 && off(r) > t) --r;  // the floating-point estimate may be off by one either way
  while (off(r + 1) <= t) ++r;
  *bi = static_cast<int>(r);
  *bj = static_cast<int>(r + (t - off(r)));
}

__global__ void __launch_bounds__(kPairThreads)
    pair_kernel(const uint32_t* __restrict__ bits, int64_t words, int n, int64_t nb, int64_t split_words,
                const int32_t* __restrict__ first, const int32_t* __restrict__ last, int32_t* __restrict__ inter) {
  // +1 column: the loader writes a column of each array per warp (32 different k, same mask) -> distinct banks.
  __shared__ uint32_t As[kChunk][kTile + 1];
  __shared__ uint32_t Bs[kChunk][kTile + 1];
  __shared__ int s_range[4];  // row tile [lo, hi], column tile [lo, hi] (word indices)
  int bi, bj;
  tile_of(blockIdx.x, nb, &bi, &bj);
  const int row0 = bi * kTile, col0 = bj * kTile;
  const int tid = threadIdx.x;
  if (tid < 4) s_range[tid] = (tid % 2 == 0) ? INT_MAX : -1;
  __syncthreads();
  if (tid < 2 * kTile) {
    const int side = tid / kTile;  // 0: rows, 1: columns
    const int r = (side == 0 ? row0 : col0) + (tid % kTile);
    if (r < n) {
      atomicMin(&s_range[2 * side], first[r]);
      atomicMax(&s_range[2 * side + 1], last[r]);
    }
  }
  __syncthreads();
  // Words where some row mask and some column mask of the tile can both be nonzero, within this block's split.
  const int64_t split0 = static_cast<int64_t>(blockIdx.y) * split_words;
  int64_t k_lo = max(s_range[0], s_range[2]);
  int64_t k_hi = static_cast<int64_t>(min(s_range[1], s_range[3])) + 1;  // exclusive
  k_lo = max(k_lo, split0);
  k_hi = min(k_hi, split0 + split_words);
  if (k_lo >= k_hi) return;  // uniform over the block; inter stays 0 from the memset

  const int ty = tid / (kTile / kPairsPerThread), tx = tid % (kTile / kPairsPerThread);
  const int lk = tid % kChunk, lr = tid / kChunk;  // loader: word lk of masks lr + 8 q
  int acc[kPairsPerThread][kPairsPerThread];
#pragma unroll
  for (int x = 0; x < kPairsPerThread; ++x)
#pragma unroll
    for (int y = 0; y < kPairsPerThread; ++y) acc[x][y] = 0;

  for (int64_t k0 = k_lo; k0 < k_hi; k0 += kChunk) {
    const int64_t k = k0 + lk;
    const bool kin = k < k_hi;
#pragma unroll
    for (int q = 0; q < 8; ++q) {
      const int r = lr + 8 * q;
      const int gi = row0 + r, gj = col0 + r;
      As[lk][r] = (kin && gi < n) ? bits[static_cast<int64_t>(gi) * words + k] : 0u;
      Bs[lk][r] = (kin && gj < n) ? bits[static_cast<int64_t>(gj) * words + k] : 0u;
    }
    __syncthreads();
#pragma unroll 8
    for (int kk = 0; kk < kChunk; ++kk) {
      uint32_t a[kPairsPerThread], b[kPairsPerThread];
#pragma unroll
      for (int x = 0; x < kPairsPerThread; ++x) a[x] = As[kk][ty + 16 * x];
#pragma unroll
      for (int y = 0; y < kPairsPerThread; ++y) b[y] = Bs[kk][tx + 16 * y];
#pragma unroll
      for (int x = 0; x < kPairsPerThread; ++x)
#pragma unroll
        for (int y = 0; y < kPairsPerThread; ++y) acc[x][y] += __popc(a[x] & b[y]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int x = 0; x < kPairsPerThread; ++x) {
#pragma unroll
    for (int y = 0; y < kPairsPerThread; ++y) {
      const int i = row0 + ty + 16 * x, j = col0 + tx + 16 * y;
      if (i < j && j < n && acc[x][y] != 0) atomicAdd(&inter[static_cast<int64_t>(j) * n + i], acc[x][y]);
    }
  }
}

// --- comp and decay ---------------------------------------------------------------------------------------------

__device__ __forceinline__ math::MaskIoU<float> pair_iou(int32_t inter, int64_t i, int64_t j,
                                                         const int32_t* __restrict__ area,
                                                         const float* __restrict__ given) {
  if (given != nullptr) return math::mask_iou<float, float>(static_cast<float>(inter), given[i], given[j]);
  return math::mask_iou<float, int64_t>(inter, area[i], area[j]);
}

__global__ void __launch_bounds__(kColWarps * 32)
    comp_kernel(const int32_t* __restrict__ inter, const int64_t* __restrict__ labels,
                const int32_t* __restrict__ area, const float* __restrict__ given, int n, float2* __restrict__ comp) {
  const int lane = threadIdx.x & 31;
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kColWarps + (threadIdx.x >> 5);
  if (j >= n) return;  // whole warps
  const int64_t lj = labels[j];
  const int32_t* col = inter + j * n;
  math::MaskIoU<float> c = math::comp_init<float>();
  for (int64_t i = lane; i < j; i += 32) {
    if (labels[i] != lj) continue;
    math::comp_update(&c, pair_iou(col[i], i, j, area, given));
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    math::MaskIoU<float> o;
    o.iou = __shfl_xor_sync(0xffffffffu, c.iou, off);
    o.one_minus = __shfl_xor_sync(0xffffffffu, c.one_minus, off);
    math::comp_update(&c, o);
  }
  if (lane == 0) comp[j] = make_float2(c.iou, c.one_minus);
}

__global__ void __launch_bounds__(kColWarps * 32)
    decay_kernel(const int32_t* __restrict__ inter, const int64_t* __restrict__ labels,
                 const int32_t* __restrict__ area, const float* __restrict__ given, const float2* __restrict__ comp,
                 const float* __restrict__ scores, int n, int kernel, float sigma, float* __restrict__ out) {
  const int lane = threadIdx.x & 31;
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kColWarps + (threadIdx.x >> 5);
  if (j >= n) return;
  const int64_t lj = labels[j];
  const int32_t* col = inter + j * n;
  float decay = 1.0f;
  for (int64_t i = lane; i < j; i += 32) {
    if (labels[i] != lj) continue;
    const float2 ci = comp[i];
    math::MaskIoU<float> c;
    c.iou = ci.x;
    c.one_minus = ci.y;
    decay = math::decay_update(decay, math::decay_ratio(kernel, pair_iou(col[i], i, j, area, given), c, sigma));
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) decay = math::decay_update(decay, __shfl_xor_sync(0xffffffffu, decay, off));
  if (lane == 0) out[j] = scores[j] * decay;
}

}  // namespace

size_t matrix_nms_scratch_bytes(int64_t n, int64_t hw) {
  if (n <= 0 || hw < 0) return 0;
  return layout_of(n, hw).total;
}

cudaError_t launch_matrix_nms(const uint8_t* masks, int64_t n, int64_t hw, int64_t mask_stride, const int64_t* labels,
                              const float* scores, const float* areas, int kernel, float sigma, float* out,
                              void* scratch, size_t scratch_bytes, cudaStream_t stream) {
  if (n < 0 || hw < 0 || n > INT_MAX || hw > INT_MAX || mask_stride < 0) return cudaErrorInvalidValue;
  if (kernel != math::kMatrixNmsGaussian && kernel != math::kMatrixNmsLinear) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  const Layout l = layout_of(n, hw);
  if (scratch == nullptr || scratch_bytes < l.total) return cudaErrorInvalidValue;
  char* base = static_cast<char*>(scratch);
  uint32_t* bits = reinterpret_cast<uint32_t*>(base + l.bits);
  int32_t* area = reinterpret_cast<int32_t*>(base + l.area);
  int32_t* first = reinterpret_cast<int32_t*>(base + l.first);
  int32_t* last = reinterpret_cast<int32_t*>(base + l.last);
  int32_t* inter = reinterpret_cast<int32_t*>(base + l.inter);
  float2* comp = reinterpret_cast<float2*>(base + l.comp);
  const int64_t words = words_of(hw);
  const int ni = static_cast<int>(n);

  const size_t inter_bytes = static_cast<size_t>(n) * static_cast<size_t>(n) * sizeof(int32_t);
  cudaError_t err = cudaMemsetAsync(inter, 0, inter_bytes, stream);
  if (err != cudaSuccess) return err;

  // Vector loads need every mask to start 16-byte aligned.
  const bool vec = is_aligned(masks, 16) && (n == 1 || mask_stride % 16 == 0);
  if (vec) {
    pack_kernel<true><<<static_cast<unsigned>(n), kPackThreads, 0, stream>>>(masks, hw, mask_stride, words, bits, area,
                                                                             first, last);
  } else {
    pack_kernel<false><<<static_cast<unsigned>(n), kPackThreads, 0, stream>>>(masks, hw, mask_stride, words, bits,
                                                                              area, first, last);
  }
  if ((err = cudaGetLastError()) != cudaSuccess) return err;

  if (words > 0) {
    const int64_t nb = ceil_div(n, kTile);
    const int64_t tiles = nb * (nb + 1) / 2;
    // Few tiles (small n): split the words so that every SM gets blocks.
    int64_t splits = ceil_div(int64_t(kBlocksPerSm) * sm_count(), tiles);
    const int64_t max_splits = ceil_div(words, kChunk);
    if (splits > max_splits) splits = max_splits;
    if (splits > kMaxGridY) splits = kMaxGridY;
    if (splits < 1) splits = 1;
    const int64_t split_words = round_up(ceil_div(words, splits), kChunk);
    splits = ceil_div(words, split_words);
    if (tiles > INT_MAX) return cudaErrorInvalidValue;
    const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(splits));
    pair_kernel<<<grid, kPairThreads, 0, stream>>>(bits, words, ni, nb, split_words, first, last, inter);
    if ((err = cudaGetLastError()) != cudaSuccess) return err;
  }

  const unsigned col_blocks = static_cast<unsigned>(ceil_div(n, kColWarps));
  comp_kernel<<<col_blocks, kColWarps * 32, 0, stream>>>(inter, labels, area, areas, ni, comp);
  if ((err = cudaGetLastError()) != cudaSuccess) return err;
  decay_kernel<<<col_blocks, kColWarps * 32, 0, stream>>>(inter, labels, area, areas, comp, scores, ni, kernel, sigma,
                                                          out);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace solo
