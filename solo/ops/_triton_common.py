"""Helpers shared by the Triton loss kernels (solo/ops/_triton_*.py)."""

import contextlib
import struct

import torch
import triton
import triton.language as tl


@triton.jit
def to_acc(x, FP64: tl.constexpr):
    # Accumulation dtype: float64 for float64 inputs, float32 otherwise (fp16/bf16/uint8 are upcast on load).
    if FP64:
        r = x.to(tl.float64)
    else:
        r = x.to(tl.float32)
    return r


def split_f32(v: float) -> tuple[float, float]:
    """Triton passes Python floats as fp32; float64 kernels rebuild the value as hi + lo."""
    hi = struct.unpack("f", struct.pack("f", v))[0]
    return hi, float(v - hi)


def device_ctx(t: torch.Tensor):
    """Triton launches on the current CUDA device: make it the tensor's device."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()
