// CUDA launch glue of solo::sigmoid_focal_loss_fwd: argument checks, device guard, current stream, outputs and
// scratch from torch's caching allocator. The kernels are torch-free, in kernels/focal_loss.cu.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../op_checks.h"
#include "cuda_types.h"
#include "focal_loss.cuh"

namespace solo {
namespace {

std::tuple<at::Tensor, at::Tensor> sigmoid_focal_loss_fwd_cuda(const at::Tensor& logits, const at::Tensor& labels,
                                                                double alpha, double gamma, int64_t reduction,
                                                                bool compute_grad) {
  TORCH_CHECK(logits.is_cuda(), "sigmoid_focal_loss: logits must be a CUDA tensor, got ", logits.device());
  checks::focal_loss_inputs(logits, labels, reduction, gamma);
  // Unlike the CPU kernel, labels > C are not rejected here: that check would need a device-to-host copy (a sync)
  // on every call. The kernel treats them like C (background: every class negative).

  c10::cuda::CUDAGuard guard(logits.device());
  const at::Tensor x = logits.contiguous();
  const at::Tensor y = labels.contiguous();
  const int64_t N = x.size(0);
  const int64_t C = x.size(1);
  const auto acc_dtype = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor loss = reduction == 0 ? at::empty({N, C}, x.options().dtype(acc_dtype))
                                   : at::empty({}, x.options().dtype(acc_dtype));
  at::Tensor grad = compute_grad ? at::empty({N, C}, x.options()) : at::empty({0}, x.options());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "sigmoid_focal_loss_fwd_cuda", [&] {
    using T = cuda_type_t<scalar_t>;
    using A = cuda::acc_t<T>;
    // The scratch (one partial sum per block) comes from the caching allocator; freeing it when this function
    // returns is safe because its next user is ordered after the kernel on the same stream.
    const size_t scratch_bytes = cuda::focal_loss_scratch_bytes<T>(N, C, static_cast<int>(reduction));
    at::Tensor scratch = at::empty({static_cast<int64_t>(scratch_bytes)}, x.options().dtype(at::kByte));
    const cudaError_t err = cuda::launch_sigmoid_focal_loss_fwd<T>(
        reinterpret_cast<const T*>(x.const_data_ptr<scalar_t>()), y.const_data_ptr<int64_t>(), N, C,
        static_cast<A>(alpha), static_cast<A>(gamma), static_cast<int>(reduction), loss.mutable_data_ptr<A>(),
        compute_grad ? reinterpret_cast<T*>(grad.mutable_data_ptr<scalar_t>()) : nullptr,
        scratch_bytes > 0 ? scratch.mutable_data_ptr() : nullptr, scratch_bytes, stream);
    C10_CUDA_CHECK(err);
  });
  return {loss, grad};
}

}  // namespace

TORCH_LIBRARY_IMPL(solo, CUDA, m) { m.impl("sigmoid_focal_loss_fwd", &sigmoid_focal_loss_fwd_cuda); }

}  // namespace solo
