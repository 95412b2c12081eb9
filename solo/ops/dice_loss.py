"""Dice loss of SOLO's mask branch (plain, and Decoupled SOLO's product of two sigmoids), fused: one pass over
the inputs for the forward sums, one for the backward. Neither pass stores a probability map."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from solo.ops import _registry, _validate, reference
from solo.ops._backend import resolve_backend

__all__ = ["decoupled_dice_loss", "dice_loss"]


def _flatten(fn: str, logits: Tensor, targets: Tensor, y_logits: Tensor | None):
    _validate.tensor(fn, "logits", logits)
    _validate.tensor(fn, "targets", targets)
    _validate.floating(fn, "logits", logits)
    if logits.dim() < 1:
        raise ValueError(f"{fn}: logits must have shape [P, ...], got a 0-d tensor")
    if targets.shape != logits.shape:
        raise ValueError(
            f"{fn}: targets must have the shape of logits {tuple(logits.shape)}, got {tuple(targets.shape)}"
        )
    if not (targets.dtype in (torch.bool, torch.uint8) or targets.dtype.is_floating_point):
        raise ValueError(f"{fn}: targets must be bool, uint8 or floating point, got {targets.dtype}")
    _validate.same_device(fn, "logits", logits, targets=targets)
    if y_logits is not None:
        _validate.tensor(fn, "y_logits", y_logits)
        if y_logits.shape != logits.shape:
            raise ValueError(
                f"{fn}: y_logits must have the shape of x_logits {tuple(logits.shape)}, got {tuple(y_logits.shape)}"
            )
        if y_logits.dtype != logits.dtype:
            raise ValueError(f"{fn}: y_logits must have the dtype of x_logits ({logits.dtype}), got {y_logits.dtype}")
        _validate.same_device(fn, "x_logits", logits, y_logits=y_logits)
    p = logits.shape[0]
    n = math.prod(logits.shape[1:])
    flat = [t.reshape(p, n) for t in (logits, targets)]
    return flat[0], flat[1], None if y_logits is None else y_logits.reshape(p, n)


def _dice(fn, logits, targets, y_logits, eps, reduction, backend) -> Tensor:
    x, t, y = _flatten(fn, logits, targets, y_logits)
    eps = _validate.finite_number(fn, "eps", eps, minimum=0.0)
    _validate.reduction(fn, reduction)
    name = resolve_backend(backend, logits.device)
    if name == "reference":
        if y is None:
            return reference.dice_loss(x, t, eps, reduction)
        return reference.decoupled_dice_loss(x, y, t, eps, reduction)
    op = getattr(torch.ops, _registry.op_namespace(name)).dice_loss_fwd
    loss, _ = op(x, t, y, eps)
    return reference.reduce_losses(loss, reduction)


def dice_loss(
    logits: Tensor, targets: Tensor, eps: float = 1e-3, reduction: str = "none", backend: str | None = None
) -> Tensor:
    """SOLO's Dice loss, one value per instance.

    ``loss_i = 1 - 2 sum(p t) / ((sum p^2 + eps) + (sum t^2 + eps))`` with ``p = sigmoid(logits)``, the sums
    running over all trailing dimensions of instance i.

    Args:
        logits (Tensor[P, ...], float16/bfloat16/float32/float64): mask logits, any strides.
        targets (Tensor[P, ...], bool/uint8/floating): mask targets, same shape (uint8 and bool read as 0/1).
        eps: added to each of the two squared sums (SOLO: 1e-3).
        reduction: ``"none"`` (Tensor[P]), ``"sum"`` or ``"mean"`` (0 when P = 0).
        backend: see ``solo.ops.available_backends()``.

    Returns:
        Tensor[P] (float32; float64 for float64 logits), or a scalar when reduced. Gradients flow to ``logits`` in
        their own dtype.
    """
    return _dice("dice_loss", logits, targets, None, eps, reduction, backend)


def decoupled_dice_loss(
    x_logits: Tensor,
    y_logits: Tensor,
    targets: Tensor,
    eps: float = 1e-3,
    reduction: str = "none",
    backend: str | None = None,
) -> Tensor:
    """Decoupled SOLO's Dice loss: ``dice_loss`` with ``p = sigmoid(x_logits) * sigmoid(y_logits)``.

    The product is formed on the fly and never stored. ``x_logits`` and ``y_logits`` (Tensor[P, ...], same
    shape and floating dtype) are the X- and Y-branch logits gathered for each instance; gradients flow to both.
    """
    return _dice("decoupled_dice_loss", x_logits, targets, y_logits, eps, reduction, backend)


# --- fake kernels and autograd for solo:: and solo_triton:: -------------------------------------------------


def _fake_fwd(logits: Tensor, targets: Tensor, y_logits: Tensor | None, eps: float):
    torch._check(logits.dim() == 2, lambda: "dice_loss: logits must be 2-D [P, L]")
    acc = reference.acc_dtype(logits.dtype)
    return logits.new_empty(logits.shape[:1], dtype=acc), logits.new_empty((logits.shape[0], 3), dtype=acc)


def _fake_bwd(grad_loss, logits, targets, y_logits, sums, eps):
    gy = logits.new_empty(logits.shape) if y_logits is not None else logits.new_empty((0,))
    return logits.new_empty(logits.shape), gy


def _register(ns: str) -> None:
    bwd_op = getattr(torch.ops, ns).dice_loss_bwd

    def setup_context(ctx, inputs, output):
        logits, targets, y_logits, eps = inputs
        sums = output[1]
        ctx.mark_non_differentiable(sums)
        ctx.eps = eps
        ctx.has_y = y_logits is not None
        ctx.save_for_backward(logits, targets, y_logits, sums)

    def backward(ctx, grad_loss, _grad_sums):
        logits, targets, y_logits, sums = ctx.saved_tensors
        gx, gy = bwd_op(grad_loss, logits, targets, y_logits, sums, ctx.eps)
        return gx, None, gy if ctx.has_y else None, None

    torch.library.register_fake(f"{ns}::dice_loss_fwd")(_fake_fwd)
    torch.library.register_fake(f"{ns}::dice_loss_bwd")(_fake_bwd)
    torch.library.register_autograd(f"{ns}::dice_loss_fwd", backward, setup_context=setup_context)


for _ns in _registry.namespaces():
    _register(_ns)
