"""Pure-PyTorch references of the solo ops, written straight from the SOLO formulas (SOLO_SPEC.md).

They are the test oracle (run in float64) and the fallback backend (``backend="reference"``). They favour
clarity over speed: each follows the original implementation step by step, with PyTorch autograd for the
gradients. Shapes, dtypes and reductions are the same as the public ops in ``solo.ops``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from torch import Tensor


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every other floating dtype computes (and returns losses) in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def sigmoid_focal_loss(
    logits: Tensor, labels: Tensor, alpha: float = 0.25, gamma: float = 2.0, reduction: str = "sum"
) -> Tensor:
    """Sigmoid focal loss as in mmdetection's ``py_sigmoid_focal_loss`` used by SOLO.

    ``labels`` 0..C-1 mark the positive class, C background, negative values ignored rows.
    """
    n, c = logits.shape
    x = logits.to(acc_dtype(logits.dtype))
    valid = labels >= 0
    # One-hot over C classes; the background label C matches no column.
    target = (labels.unsqueeze(1) == torch.arange(c, device=labels.device)).to(x.dtype)
    p = torch.sigmoid(x)
    pt = (1 - p) * target + p * (1 - target)
    focal_weight = (alpha * target + (1 - alpha) * (1 - target)) * pt.pow(gamma)
    loss = F.binary_cross_entropy_with_logits(x, target, reduction="none") * focal_weight
    loss = torch.where(valid.unsqueeze(1), loss, torch.zeros((), dtype=x.dtype, device=x.device))
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / (valid.sum() * c).clamp(min=1)


def reduce_losses(loss: Tensor, reduction: str) -> Tensor:
    """Reduce per-instance losses: "none", "sum", or "mean" (0 for no instances)."""
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    # The mean of no instances is 0 (a batch without positives has no mask loss), not NaN.
    return loss.sum() / max(loss.numel(), 1)


def _flat(t: Tensor, dtype: torch.dtype) -> Tensor:
    return t.reshape(t.shape[0], math.prod(t.shape[1:])).to(dtype)


def _dice_from_probs(p: Tensor, t: Tensor, eps: float) -> Tensor:
    a = (p * t).sum(1)
    b = (p * p).sum(1) + eps
    c = (t * t).sum(1) + eps
    return 1 - 2 * a / (b + c)


def dice_loss(logits: Tensor, targets: Tensor, eps: float = 1e-3, reduction: str = "none") -> Tensor:
    """SOLO's Dice loss per instance: ``1 - 2 sum(p t) / ((sum p^2 + eps) + (sum t^2 + eps))``, p = sigmoid."""
    dtype = acc_dtype(logits.dtype)
    p = torch.sigmoid(_flat(logits, dtype))
    return reduce_losses(_dice_from_probs(p, _flat(targets, dtype), eps), reduction)


def decoupled_dice_loss(
    x_logits: Tensor, y_logits: Tensor, targets: Tensor, eps: float = 1e-3, reduction: str = "none"
) -> Tensor:
    """Decoupled SOLO's Dice loss: the same with ``p = sigmoid(x) * sigmoid(y)``."""
    dtype = acc_dtype(x_logits.dtype)
    p = torch.sigmoid(_flat(x_logits, dtype)) * torch.sigmoid(_flat(y_logits, dtype))
    return reduce_losses(_dice_from_probs(p, _flat(targets, dtype), eps), reduction)
