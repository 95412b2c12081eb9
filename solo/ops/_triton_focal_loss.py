"""Triton backend of ``solo_triton::sigmoid_focal_loss_fwd`` (same schema and semantics as ``solo::`` in csrc/ops.cpp).

One pass over the logits: each program reads a block of ``BLOCK`` flattened elements, computes the per-element
focal term and its derivative (the math of csrc/include/solo/focal_loss.h) and writes either the elementwise loss
or one partial sum per program, plus the gradient when asked. The partial sums are then added by a single
``.sum()`` over a small buffer (one value per program), so the scalar loss is deterministic (no atomics) and
there is no host sync.

Only the op is registered here; fake (meta) kernels and autograd for it are registered in solo/ops/focal_loss.py.
Importing this module raises ImportError when triton is not installed. On CPU tensors the kernels run only when
``TRITON_INTERPRET=1`` was set before triton was first imported.
"""

import torch
import triton
import triton.language as tl

from solo.ops._triton_common import cpu_allowed, device_ctx, launch, split_f32, to_acc

__all__ = ["sigmoid_focal_loss_fwd"]

# 1024 elements per program, 4 warps: 8 contiguous fp32 elements per thread (two 16-byte loads), and ~5k programs
# (so ~5k partial sums) for the largest SOLO head (N*C ~ 5M). Fixed sizes rather than autotuning: the kernel is
# purely bandwidth-bound and autotuning would cost a benchmark per new N.
_BLOCK = 1024
_NUM_WARPS = 4

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@triton.jit
def _scalar(hi, lo, FP64: tl.constexpr):
    # Triton passes Python floats as fp32; a float64 kernel gets the value back as hi + lo (two fp32 parts).
    if FP64:
        r = tl.cast(hi, tl.float64) + tl.cast(lo, tl.float64)
    else:
        r = hi
    return r


@triton.jit
def _log1p_01(e):
    # log(1 + e) for e in (0, 1] without losing e's relative precision when e is tiny (Kahan's trick: the rounding
    # error of u = 1 + e cancels in log(u) / (u - 1)). No libdevice call, so it also runs under TRITON_INTERPRET.
    u = 1.0 + e
    is_one = u == 1.0
    den = tl.where(is_one, 1.0, u - 1.0)
    return tl.where(is_one, e, tl.log(u) * (e / den))


@triton.jit
def _focal_fwd_kernel(
    logits_ptr,
    labels_ptr,
    loss_ptr,
    grad_ptr,
    partial_ptr,
    numel,
    C,
    alpha_hi,
    alpha_lo,
    gamma_hi,
    gamma_lo,
    GAMMA_MODE: tl.constexpr,  # 2, 1, 0: gamma is exactly that value (no pow); -1: general gamma
    REDUCE: tl.constexpr,  # 0: write the elementwise loss; 1: write one partial sum per program
    COMPUTE_GRAD: tl.constexpr,
    FP64: tl.constexpr,
    IDX64: tl.constexpr,  # 64-bit offsets when numel does not fit in int32
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    if IDX64:
        start = pid.to(tl.int64) * BLOCK
    else:
        start = pid * BLOCK
    offs = start + tl.arange(0, BLOCK)
    inb = offs < numel
    row = offs // C
    col = offs - row * C
    # Labels are re-read per element, but C consecutive elements share one label: served from L1/L2.
    lab = tl.load(labels_ptr + row, mask=inb, other=-1)
    valid = inb & (lab >= 0)  # label < 0: ignored row
    pos = lab == col  # label >= C (background) never matches

    x = to_acc(tl.load(logits_ptr + offs, mask=inb, other=0.0), FP64)
    alpha = _scalar(alpha_hi, alpha_lo, FP64)

    # One exp(-|x|); p and 1 - p both from it, so 1 - p keeps its relative precision as p -> 1.
    ax = tl.abs(x)
    e = tl.exp(-ax)
    l1p = _log1p_01(e)  # log(1 + exp(-|x|))
    inv = 1.0 / (1.0 + e)
    nonneg = x >= 0.0
    p = tl.where(nonneg, inv, e * inv)  # sigmoid(x)
    q = tl.where(nonneg, e * inv, inv)  # 1 - sigmoid(x)

    # positive: L = alpha (1-p)^g softplus(-x),   dL/dx = -alpha (1-p)^g (g p softplus(-x) + (1-p))
    # negative: L = (1-alpha) p^g softplus(x),    dL/dx = (1-alpha) p^g (g (1-p) softplus(x) + p)
    # softplus(+-x) = max(+-x, 0) + log1p(exp(-|x|)) is -log(1-p) / -log(p) without ever taking log(0).
    base = tl.where(pos, q, p)
    other = tl.where(pos, p, q)
    sp = tl.where(pos, tl.maximum(-x, 0.0), tl.maximum(x, 0.0)) + l1p
    coef = tl.where(pos, alpha, 1.0 - alpha)

    if GAMMA_MODE == 2:
        w = base * base
        inner = 2.0 * other * sp + base
    elif GAMMA_MODE == 1:
        w = base
        inner = other * sp + base
    elif GAMMA_MODE == 0:
        w = tl.full(base.shape, 1.0, base.dtype)
        inner = base
    else:
        gamma = _scalar(gamma_hi, gamma_lo, FP64)
        # base in [0, 1]: log(0) = -inf gives exp(-inf) = 0 = 0^gamma for gamma > 0.
        w = tl.exp(gamma * tl.log(base))
        inner = gamma * other * sp + base

    loss = tl.where(valid, coef * w * sp, 0.0)
    if REDUCE == 0:
        tl.store(loss_ptr + offs, loss, mask=inb)
    else:
        tl.store(partial_ptr + pid, tl.sum(loss, axis=0))
    if COMPUTE_GRAD:
        grad = coef * w * inner
        grad = tl.where(pos, -grad, grad)
        grad = tl.where(valid, grad, 0.0)
        tl.store(grad_ptr + offs, grad.to(grad_ptr.dtype.element_ty), mask=inb)


def _is_interpreted() -> bool:
    # TRITON_INTERPRET is read when @triton.jit runs, i.e. when this module was imported.
    return type(_focal_fwd_kernel).__name__ == "InterpretedFunction"


# The schema is spelled out (not inferred) so that it is the exact string of csrc/ops.cpp: inference would turn
# `reduction: int` into SymInt.
@torch.library.custom_op(
    "solo_triton::sigmoid_focal_loss_fwd",
    mutates_args=(),
    schema="(Tensor logits, Tensor labels, float alpha, float gamma, int reduction, bool compute_grad) "
    "-> (Tensor, Tensor)",
)
def sigmoid_focal_loss_fwd(
    logits: torch.Tensor, labels: torch.Tensor, alpha: float, gamma: float, reduction: int, compute_grad: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused sigmoid focal loss (Triton). See csrc/ops.cpp for the contract.

    logits (Tensor[N, C], float16/bfloat16/float32/float64); labels (Tensor[N], int64): 0..C-1 positive class,
    C background, < 0 ignored row. reduction 0 -> loss Tensor[N, C], 1 -> loss Tensor[] (float32, float64 for
    float64 logits). grad: Tensor[N, C] in the logits dtype when compute_grad, else an empty Tensor[0].
    """
    if logits.dim() != 2:
        raise RuntimeError(f"sigmoid_focal_loss_fwd: logits must be [N, C], got shape {tuple(logits.shape)}")
    if logits.dtype not in _FLOAT_DTYPES:
        raise RuntimeError(
            f"sigmoid_focal_loss_fwd: logits must be float16/bfloat16/float32/float64, got {logits.dtype}"
        )
    if labels.dim() != 1 or labels.size(0) != logits.size(0):
        raise RuntimeError(
            f"sigmoid_focal_loss_fwd: labels must be [N] with N = {logits.size(0)}, got shape {tuple(labels.shape)}"
        )
    if labels.dtype != torch.int64:
        raise RuntimeError(f"sigmoid_focal_loss_fwd: labels must be int64, got {labels.dtype}")
    if labels.device != logits.device:
        raise RuntimeError(f"sigmoid_focal_loss_fwd: labels on {labels.device}, logits on {logits.device}")
    if reduction not in (0, 1):
        raise RuntimeError(f"sigmoid_focal_loss_fwd: reduction must be 0 (none) or 1 (sum), got {reduction}")
    if not gamma >= 0.0:
        raise RuntimeError(f"sigmoid_focal_loss_fwd: gamma must be >= 0, got {gamma}")
    if not logits.is_cuda and not cpu_allowed(_is_interpreted()):
        raise RuntimeError(
            "sigmoid_focal_loss_fwd (triton): CPU tensors need TRITON_INTERPRET=1 set before triton is imported"
        )

    n, c = logits.shape
    numel = n * c
    fp64 = logits.dtype == torch.float64
    acc_dtype = torch.float64 if fp64 else torch.float32

    grad = torch.empty((n, c), dtype=logits.dtype, device=logits.device) if compute_grad else logits.new_empty(0)
    if numel == 0:
        loss = logits.new_zeros((n, c) if reduction == 0 else (), dtype=acc_dtype)
        return loss, grad

    x = logits.contiguous()
    lab = labels.contiguous()
    n_prog = triton.cdiv(numel, _BLOCK)
    if reduction == 0:
        loss = torch.empty((n, c), dtype=acc_dtype, device=logits.device)
        partial = loss  # unused by the kernel
    else:
        partial = torch.empty(n_prog, dtype=acc_dtype, device=logits.device)
        loss = partial  # unused by the kernel

    if gamma in (2.0, 1.0, 0.0):
        gamma_mode = int(gamma)
    else:
        gamma_mode = -1
    alpha_hi, alpha_lo = split_f32(alpha)
    gamma_hi, gamma_lo = split_f32(gamma)

    with device_ctx(logits):
        launch(
            _focal_fwd_kernel,
            (n_prog,),
            x,
            lab,
            loss,
            grad if compute_grad else x,
            partial,
            numel,
            c,
            alpha_hi,
            alpha_lo,
            gamma_hi,
            gamma_lo,
            GAMMA_MODE=gamma_mode,
            REDUCE=reduction,
            COMPUTE_GRAD=compute_grad,
            FP64=fp64,
            IDX64=numel + _BLOCK >= 2**31,
            BLOCK=_BLOCK,
            num_warps=_NUM_WARPS,
        )
    if reduction == 1:
        # Fixed-size buffer, fixed order: deterministic run to run.
        loss = partial.sum()
    return loss, grad
