// CUDA kernels of the grid target assignment (see assign_grid_targets.cuh for the contract).
//
// Mask moments: a 1-D grid of (instance, band of rows) blocks, each streaming its band (contiguous bytes) in 16-byte
// vectors per thread (4 or 1 byte where the row length or alignment does not allow 16, so that no vector straddles
// two rows). Four bytes are one 32-bit word: the nonzero bytes become 0x01 (skipped for bool masks), __dp4a against
// 0x01010101 counts them and against the in-vector byte offsets weights them: two dot products per word, plus the
// vector's column times its count and its row times its count. Block sums go to the output with 64-bit integer
// atomics (exact, order-independent). Grid: enough bands per instance for kMassBlocksPerSm blocks per SM.
//
// Cells, pass 1: one thread per (instance, level) computes the region (grid_targets.h) and marks its <= 9 cells:
//   atomicMax(winner, instance) (the last instance in index order wins the cell) and atomicAdd(count, 1); then one
//   block scans the per-cell positive counts (SOLO: winner >= 0, SOLOv2: count) into exclusive offsets and P.
// Cells, pass 2: SOLOv2 first writes each (instance, cell) pair into its cell's segment at a slot taken by
//   atomicSub on the count; then one thread per cell writes the label, the SOLO positive, or sorts its SOLOv2
//   segment by instance (segments hold the few instances overlapping one cell). The output is deterministic.
#include "assign_grid_targets.cuh"

namespace solo {
namespace cuda {
namespace {

constexpr int kMassThreads = 256;
constexpr int kMassBlocksPerSm = 8;
constexpr int64_t kMinBandBytes = 16 * 1024;  // a block streams at least this much (or a whole mask)
constexpr int kRegionThreads = 128;
constexpr int kScanThreads = 1024;
constexpr int kScanItems = 4;
constexpr int kCellThreads = 256;

// 0x01 in every nonzero byte of v, 0x00 elsewhere: (low 7 bits + 0x7F) carries into bit 7 iff they are nonzero.
__device__ __forceinline__ uint32_t nonzero_bytes(uint32_t v) {
  return ((((v & 0x7F7F7F7Fu) + 0x7F7F7F7Fu) | v) >> 7) & 0x01010101u;
}

template <bool kBinary>
__device__ __forceinline__ uint32_t as_bits(uint32_t v) {
  return kBinary ? v : nonzero_bytes(v);
}

// Count of the nonzero bytes of vector v (bytes [v * VEC, (v + 1) * VEC) of p) and the sum of their offsets
// inside the vector.
template <int VEC, bool kBinary>
__device__ __forceinline__ void vector_moments(const uint8_t* __restrict__ p, int64_t v, uint32_t& count,
                                               uint32_t& offsets) {
  if constexpr (VEC == 16) {
    const uint4 q = reinterpret_cast<const uint4*>(p)[v];
    const uint32_t b0 = as_bits<kBinary>(q.x), b1 = as_bits<kBinary>(q.y), b2 = as_bits<kBinary>(q.z),
                   b3 = as_bits<kBinary>(q.w);
    count = __dp4a(b3, 0x01010101u, __dp4a(b2, 0x01010101u, __dp4a(b1, 0x01010101u, __dp4a(b0, 0x01010101u, 0u))));
    offsets = __dp4a(b3, 0x0F0E0D0Cu, __dp4a(b2, 0x0B0A0908u, __dp4a(b1, 0x07060504u, __dp4a(b0, 0x03020100u, 0u))));
  } else if constexpr (VEC == 4) {
    const uint32_t b = as_bits<kBinary>(reinterpret_cast<const uint32_t*>(p)[v]);
    count = __dp4a(b, 0x01010101u, 0u);
    offsets = __dp4a(b, 0x03020100u, 0u);
  } else {
    count = p[v] != 0;
    offsets = 0;
  }
}

// blockIdx.x = instance * splits + split; the split covers rows [split * rows, (split + 1) * rows), which are
// contiguous in memory: the block streams them as one flat range of vectors, thread t taking vectors t, t + 256,
// ..., with its (row, column) advanced incrementally (no division per vector).
template <int VEC, bool kBinary>
__global__ void __launch_bounds__(kMassThreads)
    mask_moments_kernel(const uint8_t* __restrict__ masks, int64_t h, int64_t w, int64_t splits, int64_t rows,
                        unsigned long long* __restrict__ out) {
  __shared__ unsigned long long shared[3 * 32];
  const int64_t inst = blockIdx.x / splits;
  const int64_t r0 = (blockIdx.x % splits) * rows;
  const int64_t r1 = r0 + rows < h ? r0 + rows : h;
  const int64_t per_row = w / VEC;  // VEC divides w on the vector paths
  const uint8_t* band = masks + (inst * h + r0) * w;
  const int64_t total = (r1 - r0) * per_row;
  const int64_t step_rows = kMassThreads / per_row;
  const int64_t step_cols = kMassThreads % per_row;
  int64_t row = r0 + threadIdx.x / per_row;
  int64_t col = threadIdx.x % per_row;  // in vectors
  unsigned long long s[3] = {0ull, 0ull, 0ull};  // sum b, sum x b, sum y b
#pragma unroll 4
  for (int64_t q = threadIdx.x; q < total; q += kMassThreads) {
    uint32_t c, o;
    vector_moments<VEC, kBinary>(band, q, c, o);
    s[0] += c;
    s[1] += static_cast<unsigned long long>(col * VEC) * c + o;
    s[2] += static_cast<unsigned long long>(row) * c;
    row += step_rows;
    col += step_cols;
    if (col >= per_row) {
      col -= per_row;
      ++row;
    }
  }
  block_sum<3>(s, shared);
  if (threadIdx.x == 0) {
    for (int k = 0; k < 3; ++k) {
      if (s[k] != 0) atomicAdd(out + 3 * inst + k, s[k]);
    }
  }
}

template <int VEC>
cudaError_t launch_moments_vec(const uint8_t* masks, int64_t m, int64_t h, int64_t w, bool binary,
                               unsigned long long* out, cudaStream_t stream) {
  int64_t splits = ceil_div(int64_t(kMassBlocksPerSm) * sm_count(), m);
  int64_t max_splits = ceil_div(h * w, kMinBandBytes);
  if (max_splits > h) max_splits = h;
  if (splits > max_splits) splits = max_splits;
  if (splits < 1) splits = 1;
  const int64_t rows = ceil_div(h, splits);
  splits = ceil_div(h, rows);
  const int64_t blocks = m * splits;
  if (blocks > 0x7FFFFFFF) return cudaErrorInvalidConfiguration;
  if (binary) {
    mask_moments_kernel<VEC, true><<<static_cast<unsigned>(blocks), kMassThreads, 0, stream>>>(masks, h, w, splits,
                                                                                                rows, out);
  } else {
    mask_moments_kernel<VEC, false><<<static_cast<unsigned>(blocks), kMassThreads, 0, stream>>>(masks, h, w, splits,
                                                                                                 rows, out);
  }
  return cudaGetLastError();
}

// --- cells ------------------------------------------------------------------------------------------------------

struct Scratch {
  int4* rects;       // [m * levels]: (top, down, left, right); empty (top > down) when not a target
  int* winner;       // [cells]: the largest instance covering the cell, -1 for none
  int* count;        // [cells]: instances covering the cell (pass 2, SOLOv2: counted down to hand out slots)
  int64_t* offsets;  // [cells + 1]: exclusive offsets of each cell's positives; offsets[cells] = P
};

constexpr size_t align256(size_t b) { return (b + 255) / 256 * 256; }

Scratch carve(void* base, int64_t m, int levels, int64_t cells) {
  char* p = static_cast<char*>(base);
  Scratch s;
  s.rects = reinterpret_cast<int4*>(p);
  p += align256(sizeof(int4) * static_cast<size_t>(m) * levels);
  s.winner = reinterpret_cast<int*>(p);
  p += align256(sizeof(int) * static_cast<size_t>(cells));
  s.count = reinterpret_cast<int*>(p);
  p += align256(sizeof(int) * static_cast<size_t>(cells));
  s.offsets = reinterpret_cast<int64_t*>(p);
  return s;
}

// One thread per (instance, level).
__global__ void __launch_bounds__(kRegionThreads)
    regions_kernel(const int64_t* __restrict__ mass, const double* __restrict__ boxes,
                   const int64_t* __restrict__ image_ids, int64_t m, int64_t batch_size, grid::GridConfig cfg,
                   int4* __restrict__ rects, int* __restrict__ winner, int* __restrict__ count) {
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= m * cfg.num_levels) return;
  const int64_t inst = t / cfg.num_levels;
  const int level = static_cast<int>(t % cfg.num_levels);
  const int64_t image = image_ids[inst];
  grid::Rect r;
  const int64_t* s = mass + 3 * inst;
  const double* b = boxes + 4 * inst;
  const bool active = image >= 0 && image < batch_size &&
                      grid::level_region(s[0], s[1], s[2], b[0], b[1], b[2], b[3], cfg, level, &r);
  if (!active) {
    rects[t] = make_int4(1, 0, 1, 0);
    return;
  }
  rects[t] = make_int4(r.top, r.down, r.left, r.right);
  for (int i = r.top; i <= r.down; ++i) {
    for (int j = r.left; j <= r.right; ++j) {
      const int64_t cell = grid::flat_cell(cfg, image, level, i, j);
      atomicMax(winner + cell, static_cast<int>(inst));
      atomicAdd(count + cell, 1);
    }
  }
}

__device__ __forceinline__ int64_t positives_of(const int* winner, const int* count, int64_t c, int mode) {
  return mode == 0 ? (winner[c] >= 0 ? 1 : 0) : count[c];
}

// One block of kScanThreads: exclusive offsets of the per-cell positives in tiles of kScanThreads * kScanItems
// cells, a running carry between tiles; offsets[cells] = P.
__global__ void __launch_bounds__(kScanThreads)
    scan_kernel(const int* __restrict__ winner, const int* __restrict__ count, int64_t cells, int mode,
                int64_t* __restrict__ offsets) {
  __shared__ int64_t warp_sums[32];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int warps = blockDim.x >> 5;
  int64_t carry = 0;
  for (int64_t tile = 0; tile < cells; tile += int64_t(blockDim.x) * kScanItems) {
    const int64_t first = tile + int64_t(threadIdx.x) * kScanItems;
    int64_t v[kScanItems];
    int64_t local = 0;
#pragma unroll
    for (int k = 0; k < kScanItems; ++k) {
      v[k] = first + k < cells ? positives_of(winner, count, first + k, mode) : 0;
      local += v[k];
    }
    int64_t x = local;  // inclusive scan over the warp
#pragma unroll
    for (int d = 1; d < 32; d <<= 1) {
      const int64_t y = __shfl_up_sync(0xffffffffu, x, d);
      if (lane >= d) x += y;
    }
    if (lane == 31) warp_sums[warp] = x;
    __syncthreads();
    if (warp == 0) {
      int64_t ws = lane < warps ? warp_sums[lane] : 0;
#pragma unroll
      for (int d = 1; d < 32; d <<= 1) {
        const int64_t y = __shfl_up_sync(0xffffffffu, ws, d);
        if (lane >= d) ws += y;
      }
      if (lane < warps) warp_sums[lane] = ws;
    }
    __syncthreads();
    int64_t prefix = carry + (warp > 0 ? warp_sums[warp - 1] : 0) + x - local;
#pragma unroll
    for (int k = 0; k < kScanItems; ++k) {
      if (first + k < cells) offsets[first + k] = prefix;
      prefix += v[k];
    }
    carry += warp_sums[warps - 1];
    __syncthreads();  // warp_sums is rewritten by the next tile
  }
  if (threadIdx.x == 0) offsets[cells] = carry;
}

// SOLOv2, one thread per (instance, level): write each of its cells' pairs at a free slot of the cell's segment.
__global__ void __launch_bounds__(kRegionThreads)
    pairs_kernel(const int4* __restrict__ rects, const int64_t* __restrict__ image_ids, int64_t m,
                 grid::GridConfig cfg, const int64_t* __restrict__ offsets, int* __restrict__ count,
                 int64_t* __restrict__ pos_cells, int64_t* __restrict__ pos_instances) {
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= m * cfg.num_levels) return;
  const int4 r = rects[t];
  if (r.x > r.y || r.z > r.w) return;
  const int64_t inst = t / cfg.num_levels;
  const int level = static_cast<int>(t % cfg.num_levels);
  const int64_t image = image_ids[inst];
  for (int i = r.x; i <= r.y; ++i) {
    for (int j = r.z; j <= r.w; ++j) {
      const int64_t cell = grid::flat_cell(cfg, image, level, i, j);
      const int64_t at = offsets[cell] + (atomicSub(count + cell, 1) - 1);
      pos_cells[at] = cell;
      pos_instances[at] = inst;
    }
  }
}

// One thread per cell (grid-stride): label; SOLO: the cell's positive; SOLOv2: sort the cell's segment by instance.
__global__ void __launch_bounds__(kCellThreads)
    cells_kernel(const int* __restrict__ winner, const int64_t* __restrict__ labels, const int64_t* __restrict__ offsets,
                 int64_t cells, int64_t num_classes, int mode, int64_t* __restrict__ out_labels,
                 int64_t* __restrict__ pos_cells, int64_t* __restrict__ pos_instances) {
  for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < cells; c += int64_t(gridDim.x) * blockDim.x) {
    const int w = winner[c];
    out_labels[c] = w >= 0 ? labels[w] : num_classes;
    if (mode == 0) {
      if (w >= 0) {
        pos_cells[offsets[c]] = c;
        pos_instances[offsets[c]] = w;
      }
    } else {
      const int64_t begin = offsets[c], end = offsets[c + 1];
      for (int64_t a = begin + 1; a < end; ++a) {  // insertion sort: segments are a few entries long
        const int64_t v = pos_instances[a];
        int64_t b = a - 1;
        while (b >= begin && pos_instances[b] > v) {
          pos_instances[b + 1] = pos_instances[b];
          --b;
        }
        pos_instances[b + 1] = v;
      }
    }
  }
}

bool valid_config(const grid::GridConfig& cfg) { return cfg.num_levels >= 1 && cfg.num_levels <= grid::kMaxLevels; }

}  // namespace

cudaError_t launch_mask_moments(const uint8_t* masks, int64_t m, int64_t h, int64_t w, bool binary, int64_t* out,
                                cudaStream_t stream) {
  if (m < 0 || h < 0 || w < 0) return cudaErrorInvalidValue;
  if (m == 0) return cudaSuccess;
  cudaError_t err = cudaMemsetAsync(out, 0, sizeof(int64_t) * 3 * static_cast<size_t>(m), stream);
  if (err != cudaSuccess || h == 0 || w == 0) return err;
  auto* o = reinterpret_cast<unsigned long long*>(out);
  // Every row starts aligned when the base is aligned and w is a multiple of the vector width.
  if (w % 16 == 0 && is_aligned(masks, 16)) return launch_moments_vec<16>(masks, m, h, w, binary, o, stream);
  if (w % 4 == 0 && is_aligned(masks, 4)) return launch_moments_vec<4>(masks, m, h, w, binary, o, stream);
  return launch_moments_vec<1>(masks, m, h, w, binary, o, stream);
}

size_t grid_targets_scratch_bytes(int64_t m, int levels, int64_t cells) {
  return align256(sizeof(int4) * static_cast<size_t>(m) * levels) + 2 * align256(sizeof(int) * cells) +
         sizeof(int64_t) * static_cast<size_t>(cells + 1);
}

const int64_t* grid_targets_total(const void* scratch, int64_t m, int levels, int64_t cells) {
  return carve(const_cast<void*>(scratch), m, levels, cells).offsets + cells;
}

cudaError_t launch_grid_targets_count(const int64_t* mass, const double* boxes, const int64_t* image_ids, int64_t m,
                                      int64_t batch_size, const grid::GridConfig& cfg, int mode, void* scratch,
                                      size_t scratch_bytes, cudaStream_t stream) {
  const int64_t cells = batch_size * cfg.cells_per_image;
  if (m < 0 || batch_size < 0 || !valid_config(cfg) || (mode != 0 && mode != 1) || m > 0x7FFFFFFF ||
      cells > 0x7FFFFFFF || scratch == nullptr || scratch_bytes < grid_targets_scratch_bytes(m, cfg.num_levels, cells)) {
    return cudaErrorInvalidValue;
  }
  const Scratch s = carve(scratch, m, cfg.num_levels, cells);
  cudaError_t err = cudaMemsetAsync(s.winner, 0xFF, sizeof(int) * cells, stream);  // -1
  if (err == cudaSuccess) err = cudaMemsetAsync(s.count, 0, sizeof(int) * cells, stream);
  if (err != cudaSuccess) return err;
  const int64_t pairs = m * cfg.num_levels;
  if (pairs > 0 && cells > 0) {
    regions_kernel<<<static_cast<unsigned>(ceil_div(pairs, kRegionThreads)), kRegionThreads, 0, stream>>>(
        mass, boxes, image_ids, m, batch_size, cfg, s.rects, s.winner, s.count);
    err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  scan_kernel<<<1, kScanThreads, 0, stream>>>(s.winner, s.count, cells, mode, s.offsets);
  return cudaGetLastError();
}

cudaError_t launch_grid_targets_write(const int64_t* labels, const int64_t* image_ids, int64_t m, int64_t batch_size,
                                      const grid::GridConfig& cfg, int64_t num_classes, int mode, void* scratch,
                                      size_t scratch_bytes, int64_t* out_labels, int64_t* pos_cells,
                                      int64_t* pos_instances, cudaStream_t stream) {
  const int64_t cells = batch_size * cfg.cells_per_image;
  if (m < 0 || batch_size < 0 || !valid_config(cfg) || (mode != 0 && mode != 1) || m > 0x7FFFFFFF ||
      cells > 0x7FFFFFFF || scratch == nullptr || scratch_bytes < grid_targets_scratch_bytes(m, cfg.num_levels, cells)) {
    return cudaErrorInvalidValue;
  }
  if (cells == 0) return cudaSuccess;
  const Scratch s = carve(scratch, m, cfg.num_levels, cells);
  const int64_t pairs = m * cfg.num_levels;
  if (mode == 1 && pairs > 0) {
    pairs_kernel<<<static_cast<unsigned>(ceil_div(pairs, kRegionThreads)), kRegionThreads, 0, stream>>>(
        s.rects, image_ids, m, cfg, s.offsets, s.count, pos_cells, pos_instances);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  int64_t blocks = ceil_div(cells, kCellThreads);
  const int64_t max_blocks = int64_t(32) * sm_count();
  if (blocks > max_blocks) blocks = max_blocks;
  cells_kernel<<<static_cast<unsigned>(blocks), kCellThreads, 0, stream>>>(
      s.winner, labels, s.offsets, cells, num_classes, mode, out_labels, pos_cells, pos_instances);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace solo
