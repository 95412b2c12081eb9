// CUDA kernels of the sigmoid focal loss (see focal_loss.cuh for the contract).
//
// One pass over the logits computes loss and gradient per element (memory bound: read x, write grad and
// optionally loss). The flat [n * c] range is walked with a grid-stride loop over 16-byte vectors; the row of each
// element (hence its label) is tracked incrementally instead of dividing per element. For the sum, every block
// writes one partial sum and a single-block kernel adds the partials in a fixed order: deterministic, and no host
// round trip.
#include "focal_loss.cuh"

#include "solo/focal_loss.h"

namespace solo {
namespace cuda {
namespace {

constexpr int kThreads = 256;
// A few blocks per SM keep enough loads in flight to saturate memory bandwidth; more only adds partial sums.
constexpr int kBlocksPerSm = 4;
// Below this many elements per thread a block is not worth launching (tiny inputs get a single block).
constexpr int64_t kMinElementsPerThread = 8;

int64_t num_blocks(int64_t total) {
  const int64_t by_work = ceil_div(total, int64_t(kThreads) * kMinElementsPerThread);
  const int64_t by_device = int64_t(kBlocksPerSm) * sm_count();
  const int64_t blocks = by_work < by_device ? by_work : by_device;
  return blocks > 0 ? blocks : 1;
}

// Loss and gradient of one element in the accumulation type. label < 0: ignored (0, 0).
template <int kGamma, typename A>
__device__ __forceinline__ void element(A x, int64_t label, int64_t col, A alpha, A gamma, A* loss, A* grad) {
  if (label < 0) {
    *loss = A(0);
    *grad = A(0);
    return;
  }
  const A e = math::exp_(x < A(0) ? x : -x);  // exp(-|x|) in (0, 1]: never overflows
  const math::FocalTerm<A> r = math::focal_loss_from_exp<kGamma>(x, label == col, e, math::log1p_(e), alpha, gamma);
  *loss = r.loss;
  *grad = r.grad;
}

// VEC elements per vector access (VEC = 1: scalar fallback for unaligned pointers). kGamma = 2 specialises the
// SOLO default gamma (a square instead of pow), -1 handles any gamma. loss_out / grad_out / partial may be null.
template <typename T, int VEC, int kGamma>
__global__ void __launch_bounds__(kThreads)
    focal_fwd_kernel(const T* __restrict__ logits, const int64_t* __restrict__ labels, int64_t C, int64_t total,
                     acc_t<T> alpha, acc_t<T> gamma, acc_t<T>* __restrict__ loss_out, T* __restrict__ grad_out,
                     acc_t<T>* __restrict__ partial) {
  using A = acc_t<T>;
  const int64_t num_vec = total / VEC;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;

  // (row, col) of the first element of this thread's vector; one grid-stride step moves it by a constant number
  // of rows and columns, so the loop needs no 64-bit division.
  int64_t row = (tid * VEC) / C;
  int64_t col = tid * VEC - row * C;
  const int64_t step_rows = (stride * VEC) / C;
  const int64_t step_cols = stride * VEC - step_rows * C;

  A sum = A(0);
  for (int64_t v = tid; v < num_vec; v += stride) {
    const Vec<T, VEC> xv = load_vec<T, VEC>(logits, v);
    Vec<A, VEC> lv;
    Vec<T, VEC> gv;
    int64_t r = row;
    int64_t c = col;
    int64_t label = __ldg(labels + r);
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      if (j > 0 && c == C) {  // the vector crosses into the next row (possibly several times when C < VEC)
        c = 0;
        ++r;
        label = __ldg(labels + r);
      }
      A l, g;
      element<kGamma>(to_acc(xv.v[j]), label, c, alpha, gamma, &l, &g);
      lv.v[j] = l;
      gv.v[j] = from_acc<T>(g);
      sum += l;
      ++c;
    }
    if (loss_out != nullptr) store_vec<A, VEC>(loss_out, v, lv);
    if (grad_out != nullptr) store_vec<T, VEC>(grad_out, v, gv);
    row += step_rows;
    col += step_cols;
    if (col >= C) {
      col -= C;
      ++row;
    }
  }

  // The < VEC elements after the last whole vector, one per thread.
  const int64_t i = num_vec * VEC + tid;
  if (VEC > 1 && i < total) {
    const int64_t r = i / C;
    A l, g;
    element<kGamma>(to_acc(logits[i]), __ldg(labels + r), i - r * C, alpha, gamma, &l, &g);
    if (loss_out != nullptr) loss_out[i] = l;
    if (grad_out != nullptr) grad_out[i] = from_acc<T>(g);
    sum += l;
  }

  if (partial != nullptr) {
    __shared__ A shared[32];
    A v[1] = {sum};
    block_sum<1>(v, shared);
    if (threadIdx.x == 0) partial[blockIdx.x] = v[0];
  }
}

// out[0] = sum of partial[0 .. n), in a fixed order (strided per-thread sums, then the fixed block tree).
template <typename A>
__global__ void __launch_bounds__(kThreads) sum_partials_kernel(const A* __restrict__ partial, int64_t n, A* out) {
  __shared__ A shared[32];
  A v[1] = {A(0)};
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) v[0] += partial[i];
  block_sum<1>(v, shared);
  if (threadIdx.x == 0) *out = v[0];
}

template <typename T, int VEC>
void launch_fwd(int64_t blocks, cudaStream_t stream, bool gamma2, const T* logits, const int64_t* labels, int64_t C,
                int64_t total, acc_t<T> alpha, acc_t<T> gamma, acc_t<T>* loss_out, T* grad_out, acc_t<T>* partial) {
  if (gamma2) {
    focal_fwd_kernel<T, VEC, 2><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        logits, labels, C, total, alpha, gamma, loss_out, grad_out, partial);
  } else {
    focal_fwd_kernel<T, VEC, -1><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        logits, labels, C, total, alpha, gamma, loss_out, grad_out, partial);
  }
}

}  // namespace

template <typename scalar_t>
size_t focal_loss_scratch_bytes(int64_t n, int64_t c, int reduction) {
  if (reduction != 1 || n <= 0 || c <= 0) return 0;
  return static_cast<size_t>(num_blocks(n * c)) * sizeof(acc_t<scalar_t>);
}

template <typename scalar_t>
cudaError_t launch_sigmoid_focal_loss_fwd(const scalar_t* logits, const int64_t* labels, int64_t n, int64_t c,
                                          acc_t<scalar_t> alpha, acc_t<scalar_t> gamma, int reduction,
                                          acc_t<scalar_t>* loss, scalar_t* grad, void* scratch, size_t scratch_bytes,
                                          cudaStream_t stream) {
  using A = acc_t<scalar_t>;
  if ((reduction != 0 && reduction != 1) || n < 0 || c < 0) return cudaErrorInvalidValue;
  const int64_t total = n * c;
  if (total == 0) {
    // Nothing to launch; the sum of no elements is 0 (all-zero bits are 0.0 for float and double).
    return reduction == 1 ? cudaMemsetAsync(loss, 0, sizeof(A), stream) : cudaSuccess;
  }
  const int64_t blocks = num_blocks(total);
  A* partial = nullptr;
  if (reduction == 1) {
    if (scratch == nullptr || scratch_bytes < static_cast<size_t>(blocks) * sizeof(A)) return cudaErrorInvalidValue;
    partial = static_cast<A*>(scratch);
  }
  A* loss_out = reduction == 0 ? loss : nullptr;
  const bool gamma2 = gamma == A(2);

  constexpr int VEC = 16 / sizeof(scalar_t);  // one 16-byte load of logits per vector
  const bool vectorise = is_aligned(logits, sizeof(Vec<scalar_t, VEC>)) &&
                         is_aligned(grad, sizeof(Vec<scalar_t, VEC>)) && is_aligned(loss_out, sizeof(Vec<A, VEC>));
  if (vectorise) {
    launch_fwd<scalar_t, VEC>(blocks, stream, gamma2, logits, labels, c, total, alpha, gamma, loss_out, grad, partial);
  } else {
    launch_fwd<scalar_t, 1>(blocks, stream, gamma2, logits, labels, c, total, alpha, gamma, loss_out, grad, partial);
  }
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess || reduction == 0) return err;
  sum_partials_kernel<A><<<1, kThreads, 0, stream>>>(partial, blocks, loss);
  return cudaGetLastError();
}

#define SOLO_INSTANTIATE_FOCAL(T)                                                                                    \
  template size_t focal_loss_scratch_bytes<T>(int64_t, int64_t, int);                                               \
  template cudaError_t launch_sigmoid_focal_loss_fwd<T>(const T*, const int64_t*, int64_t, int64_t, acc_t<T>,        \
                                                        acc_t<T>, int, acc_t<T>*, T*, void*, size_t, cudaStream_t);

SOLO_INSTANTIATE_FOCAL(float)
SOLO_INSTANTIATE_FOCAL(double)
SOLO_INSTANTIATE_FOCAL(__half)
SOLO_INSTANTIATE_FOCAL(__nv_bfloat16)

#undef SOLO_INSTANTIATE_FOCAL

}  // namespace cuda
}  // namespace solo
