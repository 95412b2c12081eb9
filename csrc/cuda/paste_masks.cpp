// CUDA launch glue of solo::paste_masks: argument checks (csrc/op_checks.h, shared with the CPU kernel
// csrc/cpu/paste_masks.cpp), device guard, current stream, output from torch's caching allocator. The kernel is
// torch-free, in kernels/paste_masks.cu.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cmath>
#include <utility>

#include "../op_checks.h"
#include "cuda_types.h"
#include "paste_masks.cuh"

namespace solo {
namespace {

void check_paste_args(const at::Tensor& probs, at::IntArrayRef canvas_size, at::IntArrayRef valid_size,
                      at::IntArrayRef out_size, double threshold) {
  TORCH_CHECK(probs.is_cuda(), "paste_masks: probs must be a CUDA tensor, got ", probs.device());
  checks::paste_masks_inputs(probs, canvas_size, valid_size, out_size, threshold);
  TORCH_CHECK(out_size[0] <= int64_t(32) * 65535, "paste_masks: out_size height must be at most ", 32 * 65535,
              " on CUDA, got ", out_size[0]);
}

at::Tensor paste_masks_cuda(const at::Tensor& probs, at::IntArrayRef canvas_size, at::IntArrayRef valid_size,
                            at::IntArrayRef out_size, double threshold) {
  check_paste_args(probs, canvas_size, valid_size, out_size, threshold);
  c10::cuda::CUDAGuard guard(probs.device());
  const int64_t N = probs.size(0);
  at::Tensor out = at::empty({N, out_size[0], out_size[1]}, probs.options().dtype(at::kBool));
  if (N == 0) return out;
  const at::Tensor p = probs.contiguous();
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.scalar_type(), "paste_masks_cuda", [&] {
    using T = cuda_type_t<scalar_t>;
    const cudaError_t err = cuda::launch_paste_masks<T>(
        reinterpret_cast<const T*>(p.const_data_ptr<scalar_t>()), N, p.size(1), p.size(2), canvas_size[0],
        canvas_size[1], valid_size[0], valid_size[1], out_size[0], out_size[1], threshold,
        reinterpret_cast<uint8_t*>(out.mutable_data_ptr<bool>()), stream);
    C10_CUDA_CHECK(err);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(solo, CUDA, m) { m.impl("paste_masks", &paste_masks_cuda); }

}  // namespace solo
