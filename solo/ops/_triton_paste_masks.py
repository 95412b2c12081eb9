"""Triton backend of ``solo_triton::paste_masks`` (same schema and semantics as ``solo::paste_masks`` in
csrc/ops.cpp; tap math of csrc/include/solo/bilinear.h).

One launch, one program per (mask, tile of BY x BX output pixels). Each program computes the composite taps of its
rows and columns on the fly (4 source indices and weights per output row / column, in float64 like the C++ tables,
with ATen's float-rounded floor), then, on the separable path:
  1. vertical pass: V[BY, SPAN] = sum_a wy_a * probs[ry_a, c_lo + 0..SPAN-1], contiguous row loads of the source
     columns the tile reads (the taps are monotone in x, so they lie in one span starting at the first column's tap);
  2. horizontal pass: out = sum_b wx_b * V[:, rx_b - c_lo] with ``tl.gather`` along the span, then > threshold.
A tile whose V never exceeds the threshold is all False (outputs are convex combinations of V) and skips step 2.
SPAN is a power of two bounding the span of any BX consecutive columns (from the two scale ratios, computed on the
host); when it would be too large (strong downscaling) the program reads its 16 taps per pixel directly instead.

Only the op is registered here; its fake kernel is registered in solo/ops/paste_masks.py. Importing this module
raises ImportError when triton is not installed. On CPU tensors the kernel runs only when ``TRITON_INTERPRET=1`` was
set before triton was first imported.
"""

import math

import torch
import triton
import triton.language as tl

from solo.ops._triton_common import cpu_allowed, device_ctx, launch, split_f32

__all__ = ["paste_masks"]

_BY = 16
_BX = 128
_NUM_WARPS = 4
# Largest V span (columns) of the separable path; above it the direct path runs.
_MAX_SPAN = 256

_FLT_MAX = 3.4028234663852886e38
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@triton.jit
def _linear_taps(d, n_in, n_out):
    # ATen's align_corners=False source index (bilinear.h: linear_taps), in float64. `d` is an int32 tensor.
    fin = (d * 0 + n_in).to(tl.float64)
    fout = (d * 0 + n_out).to(tl.float64)
    s = (fin / fout) * (d.to(tl.float64) + 0.5) - 0.5
    s = tl.maximum(s, 0.0)
    # floorf of the float-rounded s (s >= 0, so the int conversion truncates = floors).
    i0 = s.to(tl.float32).to(tl.int32)
    i0 = tl.minimum(i0, n_in - 1)
    lam = s - i0.to(tl.float64)
    lam = tl.minimum(tl.maximum(lam, 0.0), 1.0)
    i1 = i0 + (i0 < n_in - 1).to(tl.int32)
    same = (d * 0 + n_in) == n_out  # ATen copies when the sizes match
    i0 = tl.where(same, d, i0)
    i1 = tl.where(same, d, i1)
    lam = tl.where(same, 0.0, lam)
    return i0, i1, lam


@triton.jit
def _paste_taps(d, n_src, n_canvas, n_valid, n_out):
    # Composite taps of one axis (bilinear.h: paste_taps): valid -> out, then src -> canvas at both canvas taps.
    j0, j1, l2 = _linear_taps(d, n_valid, n_out)
    a0, a1, la = _linear_taps(j0, n_src, n_canvas)
    b0, b1, lb = _linear_taps(j1, n_src, n_canvas)
    return a0, a1, b0, b1, (1.0 - l2) * (1.0 - la), (1.0 - l2) * la, l2 * (1.0 - lb), l2 * lb


@triton.jit
def _cast(x, FP64: tl.constexpr):
    if FP64:
        r = x.to(tl.float64)
    else:
        r = x.to(tl.float32)
    return r


@triton.jit
def _vrow(row_ptrs, wy, cols, cmask, FP64: tl.constexpr):
    # One vertical tap: wy[:, None] * probs[ry, cols] for a [BY] vector of row pointers.
    v = tl.load(row_ptrs[:, None] + cols[None, :], mask=cmask[None, :], other=0.0)
    return wy[:, None] * _cast(v, FP64)


@triton.jit
def _direct_col(base, ry0, ry1, ry2, ry3, wy0, wy1, wy2, wy3, rx, w, FP64: tl.constexpr):
    # sum_a wy_a * probs[ry_a, rx] for a [BY] x [BX] tile (rx: [BX] source columns).
    v = wy0[:, None] * _cast(tl.load(base + ry0[:, None] * w + rx[None, :]), FP64)
    v += wy1[:, None] * _cast(tl.load(base + ry1[:, None] * w + rx[None, :]), FP64)
    v += wy2[:, None] * _cast(tl.load(base + ry2[:, None] * w + rx[None, :]), FP64)
    v += wy3[:, None] * _cast(tl.load(base + ry3[:, None] * w + rx[None, :]), FP64)
    return v


@triton.jit
def _paste_kernel(
    p_ptr,
    out_ptr,
    h,
    w,
    canvas_h,
    canvas_w,
    valid_h,
    valid_w,
    out_h,
    out_w,
    tiles_x,
    tiles_per_mask,
    thr_hi,
    thr_lo,
    FP64: tl.constexpr,
    BY: tl.constexpr,
    BX: tl.constexpr,
    SPAN: tl.constexpr,
    DIRECT: tl.constexpr,
):
    pid = tl.program_id(0)
    n = pid // tiles_per_mask
    t = pid - n * tiles_per_mask
    ty = t // tiles_x
    tx = t - ty * tiles_x
    ys = ty * BY + tl.arange(0, BY)
    xs = tx * BX + tl.arange(0, BX)
    ymask = ys < out_h
    xmask = xs < out_w
    # Lanes past the edge take the last row/column's taps (valid indices); their results are not stored.
    ry0, ry1, ry2, ry3, wy0, wy1, wy2, wy3 = _paste_taps(tl.minimum(ys, out_h - 1), h, canvas_h, valid_h, out_h)
    rx0, rx1, rx2, rx3, wx0, wx1, wx2, wx3 = _paste_taps(tl.minimum(xs, out_w - 1), w, canvas_w, valid_w, out_w)
    wy0 = _cast(wy0, FP64)
    wy1 = _cast(wy1, FP64)
    wy2 = _cast(wy2, FP64)
    wy3 = _cast(wy3, FP64)
    wx0 = _cast(wx0, FP64)
    wx1 = _cast(wx1, FP64)
    wx2 = _cast(wx2, FP64)
    wx3 = _cast(wx3, FP64)
    if FP64:
        thr = tl.cast(thr_hi, tl.float64) + tl.cast(thr_lo, tl.float64)
    else:
        thr = thr_hi
    base = p_ptr + n.to(tl.int64) * h * w
    if DIRECT:
        v = wx0[None, :] * _direct_col(base, ry0, ry1, ry2, ry3, wy0, wy1, wy2, wy3, rx0, w, FP64)
        v += wx1[None, :] * _direct_col(base, ry0, ry1, ry2, ry3, wy0, wy1, wy2, wy3, rx1, w, FP64)
        v += wx2[None, :] * _direct_col(base, ry0, ry1, ry2, ry3, wy0, wy1, wy2, wy3, rx2, w, FP64)
        v += wx3[None, :] * _direct_col(base, ry0, ry1, ry2, ry3, wy0, wy1, wy2, wy3, rx3, w, FP64)
        res = v > thr
    else:
        c_lo = tl.min(rx0, axis=0)  # the smallest tap of the tile (rx0 is non-decreasing and the smallest tap)
        cols = c_lo + tl.arange(0, SPAN)
        cmask = cols < w
        vt = _vrow(base + ry0 * w, wy0, cols, cmask, FP64)
        vt += _vrow(base + ry1 * w, wy1, cols, cmask, FP64)
        vt += _vrow(base + ry2 * w, wy2, cols, cmask, FP64)
        vt += _vrow(base + ry3 * w, wy3, cols, cmask, FP64)
        if tl.max(tl.max(vt, axis=1), axis=0) > thr:
            # The shape is spelled [BY, BX] in each call: a list assigned to a variable becomes a tuple of tensors
            # when compiled, which tl.broadcast_to rejects (the interpreter accepts it; the compile gate does not).
            v = wx0[None, :] * tl.gather(vt, tl.broadcast_to((rx0 - c_lo)[None, :], [BY, BX]), axis=1)
            v += wx1[None, :] * tl.gather(vt, tl.broadcast_to((rx1 - c_lo)[None, :], [BY, BX]), axis=1)
            v += wx2[None, :] * tl.gather(vt, tl.broadcast_to((rx2 - c_lo)[None, :], [BY, BX]), axis=1)
            v += wx3[None, :] * tl.gather(vt, tl.broadcast_to((rx3 - c_lo)[None, :], [BY, BX]), axis=1)
            res = v > thr
        else:
            res = tl.zeros([BY, BX], dtype=tl.int1)
    offs = (n.to(tl.int64) * out_h + ys[:, None]) * out_w + xs[None, :]
    tl.store(out_ptr + offs, res.to(tl.uint8), mask=ymask[:, None] & xmask[None, :])


def _is_interpreted() -> bool:
    # TRITON_INTERPRET is read when @triton.jit runs, i.e. when this module was imported.
    return type(_paste_kernel).__name__ == "InterpretedFunction"


def _span_bound(count: int, src: int, canvas: int, valid: int, out: int) -> int:
    # bilinear.h: paste_span_bound (same arithmetic in Python floats = IEEE doubles).
    r2 = valid / out
    r1 = src / canvas
    return min(int(r1 * (r2 * (count - 1) + 4.0)) + 5, src)


def _check_inputs(probs: torch.Tensor, canvas_size, valid_size, out_size, threshold: float) -> None:
    name = "paste_masks"
    if probs.dim() != 3:
        raise RuntimeError(f"{name}: probs must be 3-D [N, h, w], got shape {tuple(probs.shape)}")
    if probs.dtype not in _FLOAT_DTYPES:
        raise RuntimeError(f"{name}: probs must be float16/bfloat16/float32/float64, got {probs.dtype}")
    if probs.shape[1] <= 0 or probs.shape[2] <= 0:
        raise RuntimeError(f"{name}: probs must have h, w > 0, got shape {tuple(probs.shape)}")
    if probs.shape[1] * probs.shape[2] >= 2**31:
        raise RuntimeError(f"{name}: probs h * w must be < 2^31, got shape {tuple(probs.shape)}")
    for arg, s in (("canvas_size", canvas_size), ("valid_size", valid_size), ("out_size", out_size)):
        if len(s) != 2 or not all(0 < v < 2**31 for v in s):
            raise RuntimeError(f"{name}: {arg} must be two positive integers (h, w) below 2^31, got {list(s)}")
    if valid_size[0] > canvas_size[0] or valid_size[1] > canvas_size[1]:
        raise RuntimeError(f"{name}: valid_size {list(valid_size)} must fit inside canvas_size {list(canvas_size)}")
    if not math.isfinite(threshold):
        raise RuntimeError(f"{name}: threshold must be a finite number, got {threshold}")
    if not probs.is_cuda and not cpu_allowed(_is_interpreted()):
        raise RuntimeError(f"{name} (triton): CPU tensors need TRITON_INTERPRET=1 set before triton is imported")


@torch.library.custom_op(
    "solo_triton::paste_masks",
    mutates_args=(),
    schema="(Tensor probs, int[2] canvas_size, int[2] valid_size, int[2] out_size, float threshold) -> Tensor",
)
def paste_masks(
    probs: torch.Tensor, canvas_size: list[int], valid_size: list[int], out_size: list[int], threshold: float
) -> torch.Tensor:
    """Mask pasting (Triton). See csrc/ops.cpp for the contract.

    probs (Tensor[N, h, w], float16/bfloat16/float32/float64) -> Tensor[N, out_h, out_w], bool: bilinear resize to
    canvas_size, crop to valid_size, bilinear resize to out_size, > threshold. Computes in float32 (float64 for
    float64 probs); fp16/bf16 are upcast on load.
    """
    _check_inputs(probs, canvas_size, valid_size, out_size, threshold)
    n, h, w = probs.shape
    out_h, out_w = out_size
    out = torch.empty((n, out_h, out_w), dtype=torch.bool, device=probs.device)
    if n == 0:
        return out
    p = probs.contiguous()
    fp64 = p.dtype == torch.float64
    span = triton.next_power_of_2(_span_bound(_BX, w, canvas_size[1], valid_size[1], out_w))
    direct = span > _MAX_SPAN
    tiles_x = triton.cdiv(out_w, _BX)
    tiles_per_mask = tiles_x * triton.cdiv(out_h, _BY)
    # fp32 compute compares with fp32(threshold) (as the eager reference does); fp64 rebuilds it as hi + lo.
    # Beyond the float range the fp32 threshold is +-inf (what the reference's float32 compare sees too).
    if abs(threshold) > _FLT_MAX:
        thr_hi, thr_lo = math.copysign(math.inf, threshold), 0.0
    else:
        thr_hi, thr_lo = split_f32(threshold)
    with device_ctx(p):
        launch(
            _paste_kernel,
            (n * tiles_per_mask,),
            p,
            out.view(torch.uint8),
            h,
            w,
            canvas_size[0],
            canvas_size[1],
            valid_size[0],
            valid_size[1],
            out_h,
            out_w,
            tiles_x,
            tiles_per_mask,
            thr_hi,
            thr_lo,
            FP64=fp64,
            BY=_BY,
            BX=_BX,
            SPAN=min(span, _MAX_SPAN),
            DIRECT=direct,
            num_warps=_NUM_WARPS,
        )
    return out
