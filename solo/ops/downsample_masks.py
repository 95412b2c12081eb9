"""Mask downsampling for SOLO's mask targets: OpenCV ``INTER_LINEAR`` resize of 0/1 masks by ``1/stride``, computed
exactly with bytes (no float copy), reading only the input pixels the bilinear weights touch."""

from __future__ import annotations

import numbers

import torch
from torch import Tensor

from solo.ops import _registry, _validate, reference
from solo.ops._backend import resolve_backend

__all__ = ["downsample_masks"]

_FN = "downsample_masks"


def _check_stride(stride) -> int:
    # bool is an int subclass but never a meaningful stride; floats (even 4.0) are refused rather than truncated.
    if isinstance(stride, bool) or not isinstance(stride, (numbers.Integral, torch.SymInt)):
        msg = f"{_FN}: stride must be a positive integer, got {stride!r} ({type(stride).__name__})"
        raise ValueError(msg)  # noqa: TRY004 (every bad argument of the solo ops raises ValueError)
    if stride <= 0:
        raise ValueError(f"{_FN}: stride must be a positive integer, got {stride!r}")
    return stride if isinstance(stride, torch.SymInt) else int(stride)


def downsample_masks(masks: Tensor, stride: int, backend: str | None = None) -> Tensor:
    """Downsample 0/1 instance masks by an integer factor exactly as ``cv2.resize(..., INTER_LINEAR)`` does.

    This is how SOLO builds its mask targets (``mmcv.imrescale`` of the uint8 mask by ``1/stride``). With
    ``s = stride``:

    * even ``s``: output pixel ``(i, j)`` is 1 iff at least 2 of the 4 input pixels at rows
      ``{s*i + s/2 - 1, s*i + s/2}`` and columns ``{s*j + s/2 - 1, s*j + s/2}`` are nonzero (the bilinear mean of
      the 2x2 pixels, rounded half up as OpenCV's fixed point does);
    * odd ``s``: output pixel ``(i, j)`` is input pixel ``(s*i + (s-1)/2, s*j + (s-1)/2)`` (``s = 1``: a copy).

    Nonzero input values count as 1. The cpu, cuda and triton backends read only the sampled rows and columns (each
    input byte at most once, non-contiguous masks through their strides) and never make a float copy of the masks.

    Args:
        masks (Tensor[M, H, W], bool/uint8): instance masks, any strides, any device the backend supports.
        stride (int): positive integer dividing both H and W.
        backend: see ``solo.ops.available_backends()``.

    Returns:
        Tensor[M, H / stride, W / stride], uint8 with values 0/1, contiguous, on the device of ``masks``.
    """
    _validate.tensor(_FN, "masks", masks)
    if masks.dim() != 3:
        raise ValueError(f"{_FN}: masks must be 3-D [M, H, W], got shape {tuple(masks.shape)}")
    if masks.dtype not in (torch.bool, torch.uint8):
        raise ValueError(f"{_FN}: masks must be bool or uint8, got {masks.dtype}")
    stride = _check_stride(stride)
    m, h, w = masks.shape
    if h % stride != 0:
        raise ValueError(
            f"{_FN}: stride {stride} does not divide the mask height H = {h} (masks shape {tuple(masks.shape)})"
        )
    if w % stride != 0:
        raise ValueError(
            f"{_FN}: stride {stride} does not divide the mask width W = {w} (masks shape {tuple(masks.shape)})"
        )
    name = resolve_backend(backend, masks.device)
    if m == 0:
        return masks.new_empty((0, h // stride, w // stride), dtype=torch.uint8)
    if name == "reference":
        # The reference's even-stride result keeps the layout of a non-contiguous input; the op promises contiguous.
        return reference.downsample_masks(masks, stride).contiguous()
    return getattr(torch.ops, _registry.op_namespace(name)).downsample_masks(masks, stride)


# --- fake kernels for solo:: and solo_triton:: ----------------------------------------------------------------


def _fake(masks: Tensor, stride: int) -> Tensor:
    torch._check(masks.dim() == 3, lambda: f"{_FN}: masks must be 3-D [M, H, W]")
    torch._check(stride > 0, lambda: f"{_FN}: stride must be positive")
    m, h, w = masks.shape
    torch._check(h % stride == 0, lambda: f"{_FN}: stride must divide the mask height")
    torch._check(w % stride == 0, lambda: f"{_FN}: stride must divide the mask width")
    return masks.new_empty((m, h // stride, w // stride), dtype=torch.uint8)


for _ns in _registry.namespaces():
    torch.library.register_fake(f"{_ns}::downsample_masks")(_fake)
