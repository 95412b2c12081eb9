"""Triton backend of ``solo_triton::downsample_masks`` (same schema and semantics as ``solo::downsample_masks`` in
csrc/ops.cpp; the rule is explained in csrc/include/solo/downsample_masks.h).

One launch over tiles of the output: the rows of a tile are flattened (mask, output row) pairs, its columns output
columns. Each output pixel loads its one (odd stride) or four (even stride) input bytes through the input's strides,
so non-contiguous masks are never copied and input rows no output pixel samples are never read.

Only the op is registered here; the fake (meta) kernel is registered in solo/ops/downsample_masks.py. Importing this
module raises ImportError when triton is not installed. On CPU tensors the kernel runs only when
``TRITON_INTERPRET=1`` was set before triton was first imported.
"""

import torch
import triton
import triton.language as tl

from solo.ops._triton_common import cpu_allowed, device_ctx, launch

__all__ = ["downsample_masks"]

# Output bytes per program (a tile of _TILE / block_c rows x block_c columns); 4 warps -> 8 bytes per thread.
_TILE = 1024
_MAX_BLOCK_C = 256
_NUM_WARPS = 4


@triton.jit
def _downsample_kernel(
    in_ptr,
    out_ptr,
    rows,
    Ho,
    Wo,
    s_m,
    s_h,
    s_w,
    STRIDE: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    pid = tl.program_id(0)
    n_ct = tl.cdiv(Wo, BLOCK_C)
    pr = pid // n_ct
    pc = pid - pr * n_ct
    r = pr * BLOCK_R + tl.arange(0, BLOCK_R)  # flattened (mask, output row)
    j = pc * BLOCK_C + tl.arange(0, BLOCK_C)  # output column
    valid = (r < rows)[:, None] & (j < Wo)[None, :]
    m = r // Ho
    i = r - m * Ho
    # First sampled pixel of each block: (s - 1)/2 for odd s, = s/2 - 1 for even s (then also the next one).
    C0: tl.constexpr = (STRIDE - 1) // 2
    # int64 offsets: M * H * W may exceed 2^31 even when every index fits in int32.
    row_off = m.to(tl.int64) * s_m + (i * STRIDE + C0).to(tl.int64) * s_h
    col_off = (j * STRIDE + C0).to(tl.int64) * s_w
    ptr = in_ptr + (row_off[:, None] + col_off[None, :])
    if STRIDE % 2 == 1:
        v = tl.load(ptr, mask=valid, other=0) != 0
    else:
        # Bilinear weights are all 1/2: the mean of the 2x2 pixels, rounded half up -> at least 2 of 4 set.
        n = (tl.load(ptr, mask=valid, other=0) != 0).to(tl.int32)
        n += (tl.load(ptr + s_w, mask=valid, other=0) != 0).to(tl.int32)
        n += (tl.load(ptr + s_h, mask=valid, other=0) != 0).to(tl.int32)
        n += (tl.load(ptr + (s_h + s_w), mask=valid, other=0) != 0).to(tl.int32)
        v = n >= 2
    out = out_ptr + (r.to(tl.int64)[:, None] * Wo + j[None, :])
    tl.store(out, v.to(tl.uint8), mask=valid)


def _is_interpreted() -> bool:
    # TRITON_INTERPRET is read when @triton.jit runs, i.e. when this module was imported.
    return type(_downsample_kernel).__name__ == "InterpretedFunction"


@torch.library.custom_op(
    "solo_triton::downsample_masks", mutates_args=(), schema="(Tensor masks, int stride) -> Tensor"
)
def downsample_masks(masks: torch.Tensor, stride: int) -> torch.Tensor:
    """OpenCV INTER_LINEAR downsampling of 0/1 masks (Triton). See csrc/ops.cpp for the contract.

    masks (Tensor[M, H, W], bool/uint8, any strides; nonzero = 1), stride (int > 0 dividing H and W).
    Returns Tensor[M, H / stride, W / stride], uint8 0/1, contiguous.
    """
    if masks.dim() != 3:
        raise RuntimeError(f"downsample_masks: masks must be 3-D [M, H, W], got shape {tuple(masks.shape)}")
    if masks.dtype not in (torch.bool, torch.uint8):
        raise RuntimeError(f"downsample_masks: masks must be bool or uint8, got {masks.dtype}")
    if stride <= 0:
        raise RuntimeError(f"downsample_masks: stride must be a positive integer, got {stride}")
    M, H, W = masks.shape
    if H % stride != 0 or W % stride != 0:
        raise RuntimeError(f"downsample_masks: stride {stride} must divide H = {H} and W = {W}")
    if not masks.is_cuda and not cpu_allowed(_is_interpreted()):
        raise RuntimeError(
            "downsample_masks (triton): CPU tensors need TRITON_INTERPRET=1 set before triton is imported"
        )
    Ho, Wo = H // stride, W // stride
    out = torch.empty((M, Ho, Wo), dtype=torch.uint8, device=masks.device)
    if out.numel() == 0:
        return out
    # A bool tensor is one byte per element like uint8; viewing keeps its strides (no copy).
    x = masks.view(torch.uint8) if masks.dtype == torch.bool else masks
    rows = M * Ho
    block_c = min(_MAX_BLOCK_C, triton.next_power_of_2(Wo))
    block_r = max(1, _TILE // block_c)
    grid = (triton.cdiv(rows, block_r) * triton.cdiv(Wo, block_c),)
    s_m, s_h, s_w = x.stride()
    with device_ctx(masks):
        launch(
            _downsample_kernel,
            grid,
            x,
            out,
            rows,
            Ho,
            Wo,
            s_m,
            s_h,
            s_w,
            STRIDE=stride,
            BLOCK_R=block_r,
            BLOCK_C=block_c,
            num_warps=_NUM_WARPS,
        )
    return out
