"""Mask pasting, SOLO's last inference step (SOLO_SPEC.md §9.2 step 10), fused: the stride-4 mask probabilities are
resized to the padded canvas, cropped, resized to the original image and thresholded in one pass, with no canvas-
or output-sized float intermediate."""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Sequence

import torch
from torch import Tensor

from solo.ops import _registry, _validate, reference
from solo.ops._backend import resolve_backend

__all__ = ["paste_masks"]

_FN = "paste_masks"


def _as_int(v) -> int | None:
    """An integer (Python or numpy, not bool), else None."""
    if isinstance(v, bool):
        return None
    try:
        return operator.index(v)
    except TypeError:
        return None


def _size_pair(name: str, value) -> tuple[int, int]:
    """(h, w) from a pair of positive integers (tuple, list or torch.Size); bools and floats are rejected."""
    ints = None
    if not isinstance(value, (str, bytes)) and isinstance(value, Sequence) and len(value) == 2:
        ints = [_as_int(v) for v in value]
    if ints is None or any(i is None or i <= 0 or i >= 2**31 for i in ints):
        raise ValueError(f"{_FN}: {name} must be a pair of positive integers (h, w) below 2^31, got {value!r}")
    return ints[0], ints[1]


def paste_masks(
    probs: Tensor,
    canvas_size: Sequence[int],
    valid_size: Sequence[int],
    out_size: Sequence[int],
    threshold: float = 0.5,
    backend: str | None = None,
) -> Tensor:
    """Paste soft masks back onto the original image: SOLO's ``get_seg_single`` resize, fused.

    Equal to the two-step reference (``solo.ops.reference.paste_masks``): bilinear (``align_corners=False``) resize
    of ``probs`` to ``canvas_size``, crop to ``[:valid_h, :valid_w]``, bilinear resize to ``out_size``, then
    ``> threshold``. The fused backends read each output's at most 4 x 4 source probabilities directly (the two
    resizes compose into 4 taps per axis) and never build the canvas; they compute in float32 (float64 for float64
    probs) with the tap positions and weights in float64. Pixels whose float64 reference value lies within 1e-5 of
    the threshold may differ from the reference; no others do.

    Args:
        probs (Tensor[N, h, w], float16/bfloat16/float32/float64): mask probabilities (SOLO: at stride 4 of the
            padded canvas), any strides; h, w > 0.
        canvas_size: (H, W) of the padded input canvas the probabilities cover (SOLO: 4h x 4w).
        valid_size: (h', w') of the resized image inside the canvas, ``<= canvas_size`` in both dims.
        out_size: (h'', w'') of the original image.
        threshold: finite number; an output pixel is True when its resized probability is ``> threshold``.
        backend: ``None``/``"auto"``, ``"reference"``, ``"cpu"``, ``"cuda"`` or ``"triton"`` (see
            ``solo.ops.available_backends()``); ``$SOLO_BACKEND`` sets the default.

    Returns:
        Tensor[N, out_h, out_w], bool, on the device of ``probs``.
    """
    _validate.tensor(_FN, "probs", probs)
    _validate.floating(_FN, "probs", probs)
    if probs.dim() != 3:
        raise ValueError(f"{_FN}: probs must be 3-D [N, h, w], got shape {tuple(probs.shape)}")
    if probs.shape[1] <= 0 or probs.shape[2] <= 0:
        raise ValueError(f"{_FN}: probs must have h, w > 0, got shape {tuple(probs.shape)}")
    canvas = _size_pair("canvas_size", canvas_size)
    valid = _size_pair("valid_size", valid_size)
    out = _size_pair("out_size", out_size)
    if valid[0] > canvas[0] or valid[1] > canvas[1]:
        raise ValueError(f"{_FN}: valid_size {valid} must fit inside canvas_size {canvas}")
    thr = math.nan
    if not isinstance(threshold, bool) and isinstance(threshold, numbers.Real):
        try:
            thr = float(threshold)
        except OverflowError:  # an int beyond the float range
            pass
    if not math.isfinite(thr):
        raise ValueError(f"{_FN}: threshold must be a finite number, got {threshold!r}")
    threshold = thr

    name = resolve_backend(backend, probs.device)
    if probs.shape[0] == 0:
        return torch.zeros((0, *out), dtype=torch.bool, device=probs.device)
    if name == "reference":
        return reference.paste_masks(probs, canvas, valid, out, threshold)
    op = getattr(torch.ops, _registry.op_namespace(name)).paste_masks
    return op(probs, list(canvas), list(valid), list(out), threshold)


# --- fake kernels for solo:: and solo_triton:: --------------------------------------------------------------


def _fake(probs: Tensor, canvas_size, valid_size, out_size, threshold: float) -> Tensor:
    torch._check(probs.dim() == 3, lambda: f"{_FN}: probs must be 3-D [N, h, w]")
    return probs.new_empty((probs.shape[0], out_size[0], out_size[1]), dtype=torch.bool)


for _ns in _registry.namespaces():
    torch.library.register_fake(f"{_ns}::paste_masks")(_fake)
