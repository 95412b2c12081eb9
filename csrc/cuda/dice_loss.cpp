// CUDA launch glue of solo::dice_loss_fwd / solo::dice_loss_bwd: argument checks (the rules and messages of the
// CPU kernel, csrc/cpu/dice_loss.cpp), device guard, current stream, outputs and scratch from torch's caching
// allocator. The kernels are torch-free, in kernels/dice_loss.cu.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <optional>

#include "../op_checks.h"
#include "cuda_types.h"
#include "dice_loss.cuh"

namespace solo {
namespace {

void check_dice_inputs(const char* fn, const at::Tensor& logits, const at::Tensor& targets,
                       const std::optional<at::Tensor>& y_logits) {
  TORCH_CHECK(logits.is_cuda(), fn, ": logits must be a CUDA tensor, got ", logits.device());
  checks::dice_loss_inputs(fn, logits, targets, y_logits);
}

at::ScalarType acc_dtype_of(const at::Tensor& logits) {
  return logits.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

std::tuple<at::Tensor, at::Tensor> dice_loss_fwd_cuda(const at::Tensor& logits, const at::Tensor& targets,
                                                      const std::optional<at::Tensor>& y_logits, double eps) {
  check_dice_inputs("dice_loss", logits, targets, y_logits);
  c10::cuda::CUDAGuard guard(logits.device());
  const at::Tensor x = logits.contiguous();
  const at::Tensor t = targets.contiguous();
  const at::Tensor y = y_logits.has_value() ? y_logits->contiguous() : at::Tensor();
  const int64_t P = x.size(0);
  const int64_t L = x.size(1);
  at::Tensor sums = at::empty({P, 3}, x.options().dtype(acc_dtype_of(x)));
  at::Tensor loss = at::empty({P}, x.options().dtype(acc_dtype_of(x)));
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "dice_loss_fwd_cuda", [&] {
    using T = cuda_type_t<scalar_t>;
    using A = cuda::acc_t<T>;
    dispatch_cuda_target("dice_loss", t.scalar_type(), [&](auto tag) {
      using TT = typename decltype(tag)::type;
      // Per-(row, slice) partial sums; stream-ordered reuse by the caching allocator makes freeing it on return safe.
      const size_t scratch_bytes = cuda::dice_loss_scratch_bytes<T>(P, L);
      at::Tensor scratch = at::empty({static_cast<int64_t>(scratch_bytes)}, x.options().dtype(at::kByte));
      const cudaError_t err = cuda::launch_dice_loss_fwd<T, TT>(
          reinterpret_cast<const T*>(x.const_data_ptr<scalar_t>()), static_cast<const TT*>(t.const_data_ptr()),
          y.defined() ? reinterpret_cast<const T*>(y.const_data_ptr<scalar_t>()) : nullptr, P, L,
          static_cast<A>(eps), sums.mutable_data_ptr<A>(), loss.mutable_data_ptr<A>(),
          scratch_bytes > 0 ? scratch.mutable_data_ptr() : nullptr, scratch_bytes, stream);
      C10_CUDA_CHECK(err);
    });
  });
  return {loss, sums};
}

std::tuple<at::Tensor, at::Tensor> dice_loss_bwd_cuda(const at::Tensor& grad_loss, const at::Tensor& logits,
                                                      const at::Tensor& targets,
                                                      const std::optional<at::Tensor>& y_logits,
                                                      const at::Tensor& sums, double eps) {
  check_dice_inputs("dice_loss_backward", logits, targets, y_logits);
  const int64_t P = logits.size(0);
  const int64_t L = logits.size(1);
  checks::dice_loss_bwd_inputs(grad_loss, logits, sums);
  c10::cuda::CUDAGuard guard(logits.device());
  // grad_loss often arrives expanded (the backward of a sum or mean): materialise it in the acc dtype.
  const at::Tensor g = grad_loss.reshape({P}).to(acc_dtype_of(logits)).contiguous();
  const at::Tensor s = sums.to(acc_dtype_of(logits)).contiguous();
  const at::Tensor x = logits.contiguous();
  const at::Tensor t = targets.contiguous();
  const at::Tensor y = y_logits.has_value() ? y_logits->contiguous() : at::Tensor();
  at::Tensor gx = at::empty({P, L}, x.options());
  at::Tensor gy = y.defined() ? at::empty({P, L}, x.options()) : at::empty({0}, x.options());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "dice_loss_bwd_cuda", [&] {
    using T = cuda_type_t<scalar_t>;
    using A = cuda::acc_t<T>;
    dispatch_cuda_target("dice_loss_backward", t.scalar_type(), [&](auto tag) {
      using TT = typename decltype(tag)::type;
      const cudaError_t err = cuda::launch_dice_loss_bwd<T, TT>(
          g.const_data_ptr<A>(), reinterpret_cast<const T*>(x.const_data_ptr<scalar_t>()),
          static_cast<const TT*>(t.const_data_ptr()),
          y.defined() ? reinterpret_cast<const T*>(y.const_data_ptr<scalar_t>()) : nullptr, s.const_data_ptr<A>(), P,
          L, static_cast<A>(eps), reinterpret_cast<T*>(gx.mutable_data_ptr<scalar_t>()),
          y.defined() ? reinterpret_cast<T*>(gy.mutable_data_ptr<scalar_t>()) : nullptr, stream);
      C10_CUDA_CHECK(err);
    });
  });
  return {gx, gy};
}

}  // namespace

TORCH_LIBRARY_IMPL(solo, CUDA, m) {
  m.impl("dice_loss_fwd", &dice_loss_fwd_cuda);
  m.impl("dice_loss_bwd", &dice_loss_bwd_cuda);
}

}  // namespace solo
