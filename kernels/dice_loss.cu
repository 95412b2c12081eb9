// CUDA kernels of the Dice loss (see dice_loss.cuh for the contract).
//
// Forward: a 2-D grid of (split, row) blocks. Each block reduces the three sums of one slice of one row (16-byte
// vector loads where the layout allows), writes them to scratch [p, splits, 3], and a finalize kernel adds each
// row's splits in a fixed order and applies the loss formula. Splitting rows keeps the GPU busy when there are few
// instances (SOLO often has tens, each with ~10^4-10^5 mask pixels); the fixed-order second pass keeps the result
// bit-reproducible without floating-point atomics or a host synchronisation.
// Backward: elementwise over the same (chunk, row) grid; each block computes its row's two coefficients once.
#include "dice_loss.cuh"

#include "solo/dice_loss.h"

namespace solo {
namespace cuda {
namespace {

constexpr int kMaxThreads = 256;
// Aim for this many resident blocks per SM in total (>= 2x the SM count even for a handful of rows).
constexpr int kBlocksPerSm = 4;
// A row is not split into slices shorter than this: below it the per-block overhead dominates.
constexpr int64_t kMinSliceElements = 1024;
// Backward slices are at most this long, so long rows still spread over many blocks.
constexpr int64_t kMaxBwdSliceElements = 8192;
// Slice boundaries are multiples of this, which is a multiple of every vector width used, so vectors never
// straddle two slices.
constexpr int64_t kSliceAlign = 16;

struct Slicing {
  int64_t num;  // slices per row (gridDim.x)
  int64_t len;  // elements per slice (the last one may be shorter)
};

// `min_slices`: lower bound on the number of slices (from kMaxBwdSliceElements), 1 for the forward.
Slicing slice_rows(int64_t rows, int64_t len, int64_t min_slices) {
  if (rows <= 0 || len <= 0) return {0, 0};
  int64_t num = ceil_div(int64_t(kBlocksPerSm) * sm_count(), rows);  // enough blocks for small `rows`
  const int64_t by_work = ceil_div(len, kMinSliceElements);
  if (num > by_work) num = by_work;
  if (num < min_slices) num = min_slices;
  if (num < 1) num = 1;
  const int64_t slice = round_up(ceil_div(len, num), kSliceAlign);
  return {ceil_div(len, slice), slice};  // recount: rounding up the slice length can leave trailing slices empty
}

// Threads per block: one per vector of the slice, rounded to whole warps, at most kMaxThreads.
unsigned block_threads(int64_t slice_len, int vec) {
  int64_t t = round_up(ceil_div(slice_len, vec), 32);
  if (t > kMaxThreads) t = kMaxThreads;
  return static_cast<unsigned>(t);
}

dim3 grid_of(const Slicing& s, int64_t rows) {
  return dim3(static_cast<unsigned>(s.num), static_cast<unsigned>(rows < kMaxGridY ? rows : kMaxGridY));
}

// sigmoid(x) from e = exp(-|x|): one exp, no overflow (the shared formula of solo/dice_loss.h).
template <typename A>
__device__ __forceinline__ A sigmoid(A x) {
  return math::sigmoid_from_exp(x, math::exp_(x < A(0) ? x : -x));
}

// Rows are walked with a stride of gridDim.y (at most 65535 rows per launch); blockIdx.x is the slice. On the vector
// path (VEC > 1) the row length is a multiple of VEC and the pointers are aligned, so every row starts aligned.
template <typename T, typename TT, int VEC>
__global__ void __launch_bounds__(kMaxThreads)
    dice_fwd_partial_kernel(const T* __restrict__ x, const TT* __restrict__ t, const T* __restrict__ y, int64_t rows,
                            int64_t len, int64_t slice_len, acc_t<T>* __restrict__ partial) {
  using A = acc_t<T>;
  __shared__ A shared[3 * 32];
  const bool decoupled = y != nullptr;
  const int64_t begin = int64_t(blockIdx.x) * slice_len;
  const int64_t end = begin + slice_len < len ? begin + slice_len : len;
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    const T* xr = x + row * len;
    const TT* tr = t + row * len;
    const T* yr = decoupled ? y + row * len : nullptr;
    A s[3] = {A(0), A(0), A(0)};  // sum pred*t, sum pred^2, sum t^2
    for (int64_t v = begin / VEC + threadIdx.x; v < end / VEC; v += blockDim.x) {
      const Vec<T, VEC> xv = load_vec<T, VEC>(xr, v);
      const Vec<TT, VEC> tv = load_vec<TT, VEC>(tr, v);
      Vec<T, VEC> yv;
      if (decoupled) yv = load_vec<T, VEC>(yr, v);
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        A pred = sigmoid(to_acc(xv.v[j]));
        if (decoupled) pred *= sigmoid(to_acc(yv.v[j]));
        const A tgt = to_acc(tv.v[j]);
        s[0] += pred * tgt;
        s[1] += pred * pred;
        s[2] += tgt * tgt;
      }
    }
    block_sum<3>(s, shared);
    if (threadIdx.x == 0) {
      A* out = partial + (row * gridDim.x + blockIdx.x) * 3;
      out[0] = s[0];
      out[1] = s[1];
      out[2] = s[2];
    }
  }
}

// One thread per row: add the row's slices in order, write sums [rows, 3] and loss [rows].
template <typename A>
__global__ void dice_fwd_finalize_kernel(const A* __restrict__ partial, int64_t rows, int64_t slices, A eps,
                                         A* __restrict__ sums, A* __restrict__ loss) {
  for (int64_t row = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; row < rows;
       row += int64_t(gridDim.x) * blockDim.x) {
    A a = A(0), b = A(0), c = A(0);
    const A* pr = partial + row * slices * 3;
    for (int64_t k = 0; k < slices; ++k) {
      a += pr[3 * k];
      b += pr[3 * k + 1];
      c += pr[3 * k + 2];
    }
    sums[3 * row] = a;
    sums[3 * row + 1] = b;
    sums[3 * row + 2] = c;
    loss[row] = math::dice_loss_from_sums(a, b, c, eps);
  }
}

template <typename T, typename TT, int VEC>
__global__ void __launch_bounds__(kMaxThreads)
    dice_bwd_kernel(const acc_t<T>* __restrict__ grad_loss, const T* __restrict__ x, const TT* __restrict__ t,
                    const T* __restrict__ y, const acc_t<T>* __restrict__ sums, int64_t rows, int64_t len,
                    int64_t slice_len, acc_t<T> eps, T* __restrict__ gx, T* __restrict__ gy) {
  using A = acc_t<T>;
  __shared__ A coeffs[2];
  const bool decoupled = y != nullptr;
  const int64_t begin = int64_t(blockIdx.x) * slice_len;
  const int64_t end = begin + slice_len < len ? begin + slice_len : len;
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    if (threadIdx.x == 0) {
      A cp, ct;
      math::dice_grad_coeffs(sums[3 * row], sums[3 * row + 1], sums[3 * row + 2], eps, grad_loss[row], &cp, &ct);
      coeffs[0] = cp;
      coeffs[1] = ct;
    }
    __syncthreads();
    const A cp = coeffs[0];
    const A ct = coeffs[1];
    const T* xr = x + row * len;
    const TT* tr = t + row * len;
    const T* yr = decoupled ? y + row * len : nullptr;
    T* gxr = gx + row * len;
    T* gyr = decoupled ? gy + row * len : nullptr;
    for (int64_t v = begin / VEC + threadIdx.x; v < end / VEC; v += blockDim.x) {
      const Vec<T, VEC> xv = load_vec<T, VEC>(xr, v);
      const Vec<TT, VEC> tv = load_vec<TT, VEC>(tr, v);
      Vec<T, VEC> gxv;
      if (decoupled) {
        const Vec<T, VEC> yv = load_vec<T, VEC>(yr, v);
        Vec<T, VEC> gyv;
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          const A sx = sigmoid(to_acc(xv.v[j]));
          const A sy = sigmoid(to_acc(yv.v[j]));
          const A gp = cp * (sx * sy) + ct * to_acc(tv.v[j]);  // dL/dpred
          gxv.v[j] = from_acc<T>(gp * sx * (A(1) - sx) * sy);
          gyv.v[j] = from_acc<T>(gp * sy * (A(1) - sy) * sx);
        }
        store_vec<T, VEC>(gyr, v, gyv);
      } else {
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          const A sx = sigmoid(to_acc(xv.v[j]));
          const A gp = cp * sx + ct * to_acc(tv.v[j]);
          gxv.v[j] = from_acc<T>(gp * sx * (A(1) - sx));
        }
      }
      store_vec<T, VEC>(gxr, v, gxv);
    }
    __syncthreads();  // every thread has read coeffs before thread 0 overwrites them for the next row
  }
}

// Vector width for logits of type T: one 16-byte load. It is used only when every row starts aligned.
template <typename T>
constexpr int vec_width() {
  return static_cast<int>(16 / sizeof(T));
}

template <typename T, typename TT>
bool can_vectorise(int64_t len, const T* x, const TT* t, const T* y, const T* gx, const T* gy) {
  constexpr int VEC = vec_width<T>();
  const size_t vb = sizeof(Vec<T, VEC>);
  return len % VEC == 0 && is_aligned(x, vb) && is_aligned(y, vb) && is_aligned(gx, vb) && is_aligned(gy, vb) &&
         is_aligned(t, sizeof(Vec<TT, VEC>));
}

}  // namespace

template <typename scalar_t>
size_t dice_loss_scratch_bytes(int64_t p, int64_t l) {
  const Slicing s = slice_rows(p, l, 1);
  return static_cast<size_t>(p > 0 ? p : 0) * static_cast<size_t>(s.num) * 3 * sizeof(acc_t<scalar_t>);
}

template <typename scalar_t, typename target_t>
cudaError_t launch_dice_loss_fwd(const scalar_t* logits, const target_t* targets, const scalar_t* y_logits, int64_t p,
                                 int64_t l, acc_t<scalar_t> eps, acc_t<scalar_t>* sums, acc_t<scalar_t>* loss,
                                 void* scratch, size_t scratch_bytes, cudaStream_t stream) {
  using A = acc_t<scalar_t>;
  if (p < 0 || l < 0) return cudaErrorInvalidValue;
  if (p == 0) return cudaSuccess;
  const Slicing s = slice_rows(p, l, 1);  // l == 0: no slices, the finalize kernel writes zero sums
  A* partial = static_cast<A*>(scratch);
  if (s.num > 0) {
    if (partial == nullptr || scratch_bytes < static_cast<size_t>(p) * s.num * 3 * sizeof(A)) {
      return cudaErrorInvalidValue;
    }
    constexpr int VEC = vec_width<scalar_t>();
    if (can_vectorise<scalar_t, target_t>(l, logits, targets, y_logits, nullptr, nullptr)) {
      dice_fwd_partial_kernel<scalar_t, target_t, VEC><<<grid_of(s, p), block_threads(s.len, VEC), 0, stream>>>(
          logits, targets, y_logits, p, l, s.len, partial);
    } else {
      dice_fwd_partial_kernel<scalar_t, target_t, 1><<<grid_of(s, p), block_threads(s.len, 1), 0, stream>>>(
          logits, targets, y_logits, p, l, s.len, partial);
    }
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  constexpr int kFinalizeThreads = 128;
  int64_t blocks = ceil_div(p, kFinalizeThreads);
  const int64_t max_blocks = int64_t(kBlocksPerSm) * sm_count();
  if (blocks > max_blocks) blocks = max_blocks;
  dice_fwd_finalize_kernel<A><<<static_cast<unsigned>(blocks), kFinalizeThreads, 0, stream>>>(partial, p, s.num, eps,
                                                                                              sums, loss);
  return cudaGetLastError();
}

template <typename scalar_t, typename target_t>
cudaError_t launch_dice_loss_bwd(const acc_t<scalar_t>* grad_loss, const scalar_t* logits, const target_t* targets,
                                 const scalar_t* y_logits, const acc_t<scalar_t>* sums, int64_t p, int64_t l,
                                 acc_t<scalar_t> eps, scalar_t* grad_logits, scalar_t* grad_y_logits,
                                 cudaStream_t stream) {
  if (p < 0 || l < 0 || (y_logits == nullptr) != (grad_y_logits == nullptr)) return cudaErrorInvalidValue;
  if (p == 0 || l == 0) return cudaSuccess;
  const Slicing s = slice_rows(p, l, ceil_div(l, kMaxBwdSliceElements));
  constexpr int VEC = vec_width<scalar_t>();
  if (can_vectorise<scalar_t, target_t>(l, logits, targets, y_logits, grad_logits, grad_y_logits)) {
    dice_bwd_kernel<scalar_t, target_t, VEC><<<grid_of(s, p), block_threads(s.len, VEC), 0, stream>>>(
        grad_loss, logits, targets, y_logits, sums, p, l, s.len, eps, grad_logits, grad_y_logits);
  } else {
    dice_bwd_kernel<scalar_t, target_t, 1><<<grid_of(s, p), block_threads(s.len, 1), 0, stream>>>(
        grad_loss, logits, targets, y_logits, sums, p, l, s.len, eps, grad_logits, grad_y_logits);
  }
  return cudaGetLastError();
}

#define SOLO_INSTANTIATE_DICE(T, TT)                                                                                  \
  template cudaError_t launch_dice_loss_fwd<T, TT>(const T*, const TT*, const T*, int64_t, int64_t, acc_t<T>,         \
                                                   acc_t<T>*, acc_t<T>*, void*, size_t, cudaStream_t);                \
  template cudaError_t launch_dice_loss_bwd<T, TT>(const acc_t<T>*, const T*, const TT*, const T*, const acc_t<T>*,   \
                                                   int64_t, int64_t, acc_t<T>, T*, T*, cudaStream_t);

#define SOLO_INSTANTIATE_DICE_ALL_TARGETS(T)                  \
  template size_t dice_loss_scratch_bytes<T>(int64_t, int64_t); \
  SOLO_INSTANTIATE_DICE(T, uint8_t)                             \
  SOLO_INSTANTIATE_DICE(T, __half)                              \
  SOLO_INSTANTIATE_DICE(T, __nv_bfloat16)                       \
  SOLO_INSTANTIATE_DICE(T, float)                               \
  SOLO_INSTANTIATE_DICE(T, double)

SOLO_INSTANTIATE_DICE_ALL_TARGETS(float)
SOLO_INSTANTIATE_DICE_ALL_TARGETS(double)
SOLO_INSTANTIATE_DICE_ALL_TARGETS(__half)
SOLO_INSTANTIATE_DICE_ALL_TARGETS(__nv_bfloat16)

#undef SOLO_INSTANTIATE_DICE_ALL_TARGETS
#undef SOLO_INSTANTIATE_DICE

}  // namespace cuda
}  // namespace solo
