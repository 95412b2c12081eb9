"""Triton backend of ``solo_triton::dice_loss_fwd`` / ``solo_triton::dice_loss_bwd`` (same schemas and semantics
as ``solo::`` in csrc/ops.cpp; math of csrc/include/solo/dice_loss.h).

Forward, two launches and no atomics:
  1. grid P * S: program (row, split) reduces a chunk of ``_CHUNK`` elements of one row to three partial sums
     (sum p t, sum p^2, sum t^2). S = ceil(L / _CHUNK) depends on L only, so a row's result does not depend on
     how many other rows are in the batch.
  2. grid ceil(P / _FIN_BLOCK_P): adds each row's S partials in a fixed order and writes sums [P, 3] and the
     loss [P]. Deterministic run to run.
Backward, one launch: grid P * ceil(L / _BWD_BLOCK), each program recomputes p from the logits and applies
dL/dp = cp p + ct t with the row's (cp, ct) from the saved sums.

Only the ops are registered here; fake (meta) kernels and autograd are registered in solo/ops/dice_loss.py.
Importing this module raises ImportError when triton is not installed. On CPU tensors the kernels run only when
``TRITON_INTERPRET=1`` was set before triton was first imported.
"""

import torch
import triton
import triton.language as tl

from solo.ops._triton_common import cpu_allowed, device_ctx, launch, split_f32, to_acc

__all__ = ["dice_loss_bwd", "dice_loss_fwd"]

# Forward: 1024-element tiles (4 warps, 8 fp32 per thread), 8 tiles per program -> 8192 elements per program.
# A SOLO row (L = 200 * 304 = 60,800) is 8 programs; P = 500 instances -> 4,000 programs, plenty for any GPU,
# while each program still streams enough bytes to amortise its three tree reductions.
_BLOCK = 1024
_ITERS = 8
_CHUNK = _BLOCK * _ITERS
_NUM_WARPS = 4
# Finalize: 64 rows per program, partials read 16 splits at a time.
_FIN_BLOCK_P = 64
_FIN_BLOCK_S = 16
# Backward: purely elementwise; 2048 elements (8 warps) per program -> 30 programs per SOLO row.
_BWD_BLOCK = 2048
_BWD_NUM_WARPS = 8

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_TARGET_DTYPES = (torch.bool, torch.uint8) + _FLOAT_DTYPES


@triton.jit
def _sigmoid_pair(x):
    # sigmoid(x) and 1 - sigmoid(x) from one exp of a non-positive argument: never overflows, and 1 - s keeps
    # its relative precision when s -> 1.
    e = tl.exp(-tl.abs(x))
    inv = 1.0 / (1.0 + e)
    nonneg = x >= 0.0
    s = tl.where(nonneg, inv, e * inv)
    q = tl.where(nonneg, e * inv, inv)
    return s, q


@triton.jit
def _dice_partial_kernel(
    x_ptr,
    y_ptr,
    t_ptr,
    part_ptr,
    L,
    n_split,
    HAS_Y: tl.constexpr,
    FP64: tl.constexpr,
    BLOCK: tl.constexpr,
    ITERS: tl.constexpr,
):
    pid = tl.program_id(0)
    row = pid // n_split
    split = pid - row * n_split
    row_off = row.to(tl.int64) * L  # P * L may exceed int32
    start = split * (BLOCK * ITERS)
    zero = to_acc(tl.zeros([BLOCK], dtype=tl.float32), FP64)
    acc_pt = zero
    acc_pp = zero
    acc_tt = zero
    for i in range(ITERS):
        offs = start + i * BLOCK + tl.arange(0, BLOCK)
        m = offs < L
        x = to_acc(tl.load(x_ptr + row_off + offs, mask=m, other=0.0), FP64)
        p, _ = _sigmoid_pair(x)
        if HAS_Y:
            y = to_acc(tl.load(y_ptr + row_off + offs, mask=m, other=0.0), FP64)
            sy, _ = _sigmoid_pair(y)
            p = p * sy
        p = tl.where(m, p, 0.0)  # masked lanes would contribute sigmoid(0)^2
        t = to_acc(tl.load(t_ptr + row_off + offs, mask=m, other=0), FP64)
        acc_pt += p * t
        acc_pp += p * p
        acc_tt += t * t
    out = part_ptr + pid.to(tl.int64) * 3
    tl.store(out, tl.sum(acc_pt, axis=0))
    tl.store(out + 1, tl.sum(acc_pp, axis=0))
    tl.store(out + 2, tl.sum(acc_tt, axis=0))


@triton.jit
def _dice_finalize_kernel(
    part_ptr,
    sums_ptr,
    loss_ptr,
    P,
    n_split,
    eps_hi,
    eps_lo,
    FP64: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_S: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_P + tl.arange(0, BLOCK_P)
    rmask = rows < P
    zero = to_acc(tl.zeros([BLOCK_P, BLOCK_S], dtype=tl.float32), FP64)
    acc_a = zero
    acc_b = zero
    acc_c = zero
    for s0 in range(0, n_split, BLOCK_S):
        cols = s0 + tl.arange(0, BLOCK_S)
        m = rmask[:, None] & (cols[None, :] < n_split)
        ptr = part_ptr + (rows.to(tl.int64)[:, None] * n_split + cols[None, :]) * 3
        acc_a += tl.load(ptr, mask=m, other=0.0)
        acc_b += tl.load(ptr + 1, mask=m, other=0.0)
        acc_c += tl.load(ptr + 2, mask=m, other=0.0)
    a = tl.sum(acc_a, axis=1)
    b = tl.sum(acc_b, axis=1)
    c = tl.sum(acc_c, axis=1)
    if FP64:
        eps = tl.cast(eps_hi, tl.float64) + tl.cast(eps_lo, tl.float64)
    else:
        eps = eps_hi
    loss = 1.0 - 2.0 * a / ((b + eps) + (c + eps))
    tl.store(sums_ptr + rows * 3, a, mask=rmask)
    tl.store(sums_ptr + rows * 3 + 1, b, mask=rmask)
    tl.store(sums_ptr + rows * 3 + 2, c, mask=rmask)
    tl.store(loss_ptr + rows, loss, mask=rmask)


@triton.jit
def _dice_bwd_kernel(
    g_ptr,
    sums_ptr,
    x_ptr,
    y_ptr,
    t_ptr,
    gx_ptr,
    gy_ptr,
    L,
    n_blk,
    eps_hi,
    eps_lo,
    HAS_Y: tl.constexpr,
    FP64: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    row = pid // n_blk
    blk = pid - row * n_blk
    # Per-row coefficients of dL/dp = cp p + ct t (dice_grad_coeffs in dice_loss.h).
    a = tl.load(sums_ptr + row * 3)
    b = tl.load(sums_ptr + row * 3 + 1)
    c = tl.load(sums_ptr + row * 3 + 2)
    g = tl.load(g_ptr + row)
    if FP64:
        eps = tl.cast(eps_hi, tl.float64) + tl.cast(eps_lo, tl.float64)
    else:
        eps = eps_hi
    d = (b + eps) + (c + eps)
    cp = 4.0 * a * g / (d * d)
    ct = -2.0 * g / d

    offs = blk * BLOCK + tl.arange(0, BLOCK)
    m = offs < L
    off = row.to(tl.int64) * L + offs
    x = to_acc(tl.load(x_ptr + off, mask=m, other=0.0), FP64)
    t = to_acc(tl.load(t_ptr + off, mask=m, other=0), FP64)
    sx, qx = _sigmoid_pair(x)
    if HAS_Y:
        y = to_acc(tl.load(y_ptr + off, mask=m, other=0.0), FP64)
        sy, qy = _sigmoid_pair(y)
        gp = cp * (sx * sy) + ct * t
        gx = gp * (sx * qx) * sy
        gy = gp * (sy * qy) * sx
        tl.store(gy_ptr + off, gy.to(gy_ptr.dtype.element_ty), mask=m)
    else:
        gp = cp * sx + ct * t
        gx = gp * (sx * qx)
    tl.store(gx_ptr + off, gx.to(gx_ptr.dtype.element_ty), mask=m)


def _is_interpreted() -> bool:
    # TRITON_INTERPRET is read when @triton.jit runs, i.e. when this module was imported.
    return type(_dice_partial_kernel).__name__ == "InterpretedFunction"


def _check_inputs(name: str, logits: torch.Tensor, targets: torch.Tensor, y_logits: torch.Tensor | None) -> None:
    if logits.dim() != 2:
        raise RuntimeError(f"{name}: logits must be [P, L], got shape {tuple(logits.shape)}")
    if logits.dtype not in _FLOAT_DTYPES:
        raise RuntimeError(f"{name}: logits must be float16/bfloat16/float32/float64, got {logits.dtype}")
    if targets.shape != logits.shape:
        raise RuntimeError(f"{name}: targets shape {tuple(targets.shape)} != logits shape {tuple(logits.shape)}")
    if targets.dtype not in _TARGET_DTYPES:
        raise RuntimeError(f"{name}: targets must be bool/uint8/float16/bfloat16/float32/float64, got {targets.dtype}")
    if targets.device != logits.device:
        raise RuntimeError(f"{name}: targets on {targets.device}, logits on {logits.device}")
    if y_logits is not None:
        if y_logits.shape != logits.shape:
            raise RuntimeError(f"{name}: y_logits shape {tuple(y_logits.shape)} != logits shape {tuple(logits.shape)}")
        if y_logits.dtype != logits.dtype:
            raise RuntimeError(f"{name}: y_logits must have the dtype of logits ({logits.dtype}), got {y_logits.dtype}")
        if y_logits.device != logits.device:
            raise RuntimeError(f"{name}: y_logits on {y_logits.device}, logits on {logits.device}")
    if not logits.is_cuda and not cpu_allowed(_is_interpreted()):
        raise RuntimeError(f"{name} (triton): CPU tensors need TRITON_INTERPRET=1 set before triton is imported")


def _targets_for_triton(targets: torch.Tensor) -> torch.Tensor:
    t = targets.contiguous()
    # Triton has no bool pointer loads worth using; a bool tensor is one byte per element, same as uint8.
    return t.view(torch.uint8) if t.dtype == torch.bool else t


@torch.library.custom_op(
    "solo_triton::dice_loss_fwd",
    mutates_args=(),
    schema="(Tensor logits, Tensor targets, Tensor? y_logits, float eps) -> (Tensor, Tensor)",
)
def dice_loss_fwd(
    logits: torch.Tensor, targets: torch.Tensor, y_logits: torch.Tensor | None, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dice loss forward (Triton). See csrc/ops.cpp for the contract.

    logits (Tensor[P, L], float16/bfloat16/float32/float64); targets (Tensor[P, L], bool/uint8/float);
    y_logits (Tensor[P, L] or None): Decoupled SOLO, p = sigmoid(logits) * sigmoid(y_logits).
    Returns loss (Tensor[P]) = 1 - 2a / ((b + eps) + (c + eps)) and sums (Tensor[P, 3]) = (a, b, c) =
    (sum p t, sum p^2, sum t^2), both float32 (float64 for float64 logits).
    """
    _check_inputs("dice_loss_fwd", logits, targets, y_logits)
    P, L = logits.shape
    fp64 = logits.dtype == torch.float64
    acc_dtype = torch.float64 if fp64 else torch.float32
    dev = logits.device
    if P == 0 or L == 0:
        # Empty rows: all sums are 0 and the loss is 1 - 0 / (2 eps) = 1.
        sums = torch.zeros((P, 3), dtype=acc_dtype, device=dev)
        loss = torch.ones((P,), dtype=acc_dtype, device=dev)
        return loss, sums

    x = logits.contiguous()
    y = y_logits.contiguous() if y_logits is not None else x
    t = _targets_for_triton(targets)
    n_split = triton.cdiv(L, _CHUNK)
    partials = torch.empty((P * n_split, 3), dtype=acc_dtype, device=dev)
    sums = torch.empty((P, 3), dtype=acc_dtype, device=dev)
    loss = torch.empty((P,), dtype=acc_dtype, device=dev)
    eps_hi, eps_lo = split_f32(eps)
    with device_ctx(logits):
        launch(
            _dice_partial_kernel,
            (P * n_split,),
            x,
            y,
            t,
            partials,
            L,
            n_split,
            HAS_Y=y_logits is not None,
            FP64=fp64,
            BLOCK=_BLOCK,
            ITERS=_ITERS,
            num_warps=_NUM_WARPS,
        )
        launch(
            _dice_finalize_kernel,
            (triton.cdiv(P, _FIN_BLOCK_P),),
            partials,
            sums,
            loss,
            P,
            n_split,
            eps_hi,
            eps_lo,
            FP64=fp64,
            BLOCK_P=_FIN_BLOCK_P,
            BLOCK_S=_FIN_BLOCK_S,
            num_warps=4,
        )
    return loss, sums


@torch.library.custom_op(
    "solo_triton::dice_loss_bwd",
    mutates_args=(),
    schema="(Tensor grad_loss, Tensor logits, Tensor targets, Tensor? y_logits, Tensor sums, float eps) "
    "-> (Tensor, Tensor)",
)
def dice_loss_bwd(
    grad_loss: torch.Tensor,
    logits: torch.Tensor,
    targets: torch.Tensor,
    y_logits: torch.Tensor | None,
    sums: torch.Tensor,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dice loss backward (Triton). See csrc/ops.cpp for the contract.

    grad_loss (Tensor[P]), sums (Tensor[P, 3]) from dice_loss_fwd. Returns grad_logits (Tensor[P, L], logits
    dtype) and grad_y_logits (Tensor[P, L], logits dtype; an empty Tensor[0] when y_logits is None).
    """
    _check_inputs("dice_loss_bwd", logits, targets, y_logits)
    P, L = logits.shape
    if grad_loss.numel() != P:
        raise RuntimeError(f"dice_loss_bwd: grad_loss must have P = {P} elements, got shape {tuple(grad_loss.shape)}")
    if sums.shape != (P, 3):
        raise RuntimeError(f"dice_loss_bwd: sums must be [P, 3] with P = {P}, got shape {tuple(sums.shape)}")
    fp64 = logits.dtype == torch.float64
    acc_dtype = torch.float64 if fp64 else torch.float32
    dev = logits.device

    grad_x = torch.empty((P, L), dtype=logits.dtype, device=dev)
    grad_y = torch.empty((P, L), dtype=y_logits.dtype, device=dev) if y_logits is not None else logits.new_empty(0)
    if P == 0 or L == 0:
        return grad_x, grad_y

    # grad_loss is often an expanded (stride 0) ones tensor from .sum()/.mean(): materialise [P] in acc dtype.
    g = grad_loss.reshape(P).to(acc_dtype).contiguous()
    s = sums.to(acc_dtype).contiguous()
    x = logits.contiguous()
    y = y_logits.contiguous() if y_logits is not None else x
    t = _targets_for_triton(targets)
    n_blk = triton.cdiv(L, _BWD_BLOCK)
    eps_hi, eps_lo = split_f32(eps)
    with device_ctx(logits):
        launch(
            _dice_bwd_kernel,
            (P * n_blk,),
            g,
            s,
            x,
            y,
            t,
            grad_x,
            grad_y if y_logits is not None else grad_x,
            L,
            n_blk,
            eps_hi,
            eps_lo,
            HAS_Y=y_logits is not None,
            FP64=fp64,
            BLOCK=_BWD_BLOCK,
            num_warps=_BWD_NUM_WARPS,
        )
    return grad_x, grad_y
