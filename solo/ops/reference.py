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
    c = logits.shape[1]
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


# --- mask resizing (SOLO_SPEC.md §7.8, §9.2 step 10) -----------------------------------------------------------


def downsample_masks(masks: Tensor, stride: int) -> Tensor:
    """OpenCV ``INTER_LINEAR`` resize of 0/1 uint8 masks by ``1/stride`` (SOLO's mask targets, mmcv.imrescale).

    For an integer factor the bilinear source point of output pixel ``i`` is ``stride*i + (stride-1)/2``: for an
    odd stride that is one input pixel; for an even one it lies half-way between rows/columns
    ``stride*i + stride/2 - 1`` and ``stride*i + stride/2``, so the output is the mean of those 2x2 pixels rounded
    half up (OpenCV's fixed point): 1 exactly when at least 2 of the 4 are 1. Nonzero input counts as 1.

    Args: masks (Tensor[M, H, W], bool/uint8), stride (int dividing H and W). Returns Tensor[M, H/s, W/s], uint8.
    """
    m = masks != 0 if masks.dtype != torch.bool else masks
    if stride % 2 == 1:
        o = (stride - 1) // 2
        return m[:, o::stride, o::stride].to(torch.uint8).contiguous()
    a, b = stride // 2 - 1, stride // 2
    votes = (
        m[:, a::stride, a::stride].to(torch.uint8)
        + m[:, a::stride, b::stride]
        + m[:, b::stride, a::stride]
        + m[:, b::stride, b::stride]
    )
    return (votes >= 2).to(torch.uint8)


def paste_masks(
    probs: Tensor,
    canvas_size: tuple[int, int],
    valid_size: tuple[int, int],
    out_size: tuple[int, int],
    threshold: float = 0.5,
) -> Tensor:
    """SOLO's final mask resize (WX ``get_seg_single``), step by step: bilinear (``align_corners=False``) resize of
    the stride-4 probabilities to the padded canvas, crop the padding off (``[:valid_h, :valid_w]``), bilinear
    resize to the original image size, then ``> threshold``.

    Args: probs (Tensor[N, h, w], float), canvas_size/valid_size/out_size (h, w). Returns Tensor[N, out_h, out_w],
    bool. Computes in float32 (float64 for float64 probs).
    """
    if probs.shape[0] == 0:
        return torch.zeros((0, *out_size), dtype=torch.bool, device=probs.device)
    return paste_values(probs, canvas_size, valid_size, out_size) > threshold


def paste_values(
    probs: Tensor, canvas_size: tuple[int, int], valid_size: tuple[int, int], out_size: tuple[int, int]
) -> Tensor:
    """The resized probabilities of :func:`paste_masks` before the threshold: Tensor[N, out_h, out_w] in float32
    (float64 for float64 probs). The oracle uses them to find the pixels within rounding of the threshold."""
    x = probs.to(acc_dtype(probs.dtype)).unsqueeze(1)
    canvas = F.interpolate(x, size=tuple(canvas_size), mode="bilinear", align_corners=False)
    canvas = canvas[:, :, : valid_size[0], : valid_size[1]]
    return F.interpolate(canvas, size=tuple(out_size), mode="bilinear", align_corners=False)[:, 0]


# --- Matrix NMS (SOLO_SPEC.md §9.3) -----------------------------------------------------------------------------


def matrix_nms(
    masks: Tensor,
    labels: Tensor,
    scores: Tensor,
    kernel: str = "gaussian",
    sigma: float = 2.0,
    areas: Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """SOLOv2's Matrix NMS (WX ``matrix_nms``), step by step; returns the decayed scores in ``dtype``.

    ``masks`` (Tensor[N, H, W], bool/uint8; nonzero = inside), ``labels`` [N], ``scores`` [N] sorted descending.
    Intersections come from a ``dtype`` matmul of the flattened masks (exact for counts below 2^24 in float32).
    Two deliberate departures from the original, both where it produces NaN: an empty mask has IoU 0 with
    everything (the original divides 0 by 0), and in the linear kernel a 0/0 ratio (a duplicate of a duplicate,
    ``D = comp = 1``) is 0 instead of NaN; the same column then always holds another 0 (its top duplicate), so the
    decayed score is 0 either way.
    """
    n = labels.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=dtype, device=scores.device)
    m = (masks.reshape(n, -1) != 0).to(dtype)
    inter = m @ m.T
    a = m.sum(1) if areas is None else areas.to(dtype)
    union = a[:, None] + a[None, :] - inter
    iou = torch.where(union > 0, inter / torch.where(union > 0, union, 1), 0).triu(diagonal=1)
    same = (labels[:, None] == labels[None, :]).triu(diagonal=1)
    decay_iou = iou * same
    # comp_i: the largest IoU of mask i with a higher-scored mask of its class (column max), laid along row i.
    comp = decay_iou.max(0).values.expand(n, n).T
    if kernel == "gaussian":
        ratio = torch.exp(-sigma * decay_iou**2) / torch.exp(-sigma * comp**2)
    elif kernel == "linear":
        ratio = torch.nan_to_num((1 - decay_iou) / (1 - comp), nan=0.0, posinf=math.inf)
    else:
        raise ValueError(f"matrix_nms: kernel must be 'gaussian' or 'linear', got {kernel!r}")
    return scores.to(dtype) * ratio.min(0).values


# --- grid target assignment (SOLO_SPEC.md §7) ---------------------------------------------------------------------


def mask_moments(masks: Tensor) -> Tensor:
    """Exact moments of each mask: int64 [M, 3] = (sum m, sum x m, sum y m), m = (mask != 0), x / y the 0-based
    column / row. The centre of mass is (sum x m, sum y m) / sum m. masks (Tensor[M, H, W], bool/uint8)."""
    _, h, w = masks.shape
    nz = masks != 0
    rows = nz.sum(2)  # [M, H] int64 (sums of bool; no int64 copy of the masks)
    cols = nz.sum(1)  # [M, W]
    ys = torch.arange(h, device=masks.device, dtype=torch.int64)
    xs = torch.arange(w, device=masks.device, dtype=torch.int64)
    return torch.stack([rows.sum(1), (cols * xs).sum(1), (rows * ys).sum(1)], 1)


def _floor_cell(v: float, s: int) -> int:
    """floor(v) clamped to [-1, s]; NaN and -inf give -1, +inf gives s (csrc/include/solo/grid_targets.h)."""
    if not v > -1.0:
        return -1
    if v >= s:
        return s
    return math.floor(v)


def _grid_cell(pos: float, extent: int, s: int) -> int:
    return _floor_cell(pos / extent * s, s)


def assign_grid_targets(
    masks: Tensor,
    boxes: Tensor,
    labels: Tensor,
    image_ids: Tensor,
    batch_size: int,
    num_grids=(40, 36, 24, 16, 12),
    scale_ranges=((1, 96), (48, 192), (96, 384), (192, 768), (384, 2048)),
    sigma: float = 0.2,
    num_classes: int = 80,
    mode: str = "solo",
) -> tuple[Tensor, Tensor, Tensor]:
    """SOLO's grid targets, as the original computes them: per image, per level, per instance, on the inputs'
    device (``solo.ops.assign_grid_targets`` documents the contract). Returns (labels [batch_size, sum S^2],
    pos_cells [P], pos_instances [P]), all int64.

    Follows WX ``solov2_target_single``: the instances of the level's scale range, in annotation order; the centre
    of mass of each full-resolution mask (recomputed per level, as there); the centre region clamped to the 3 x 3
    cells around the centre cell; later instances overwrite the labels of earlier ones. Deliberate differences,
    shared by every backend: float64 throughout (the original mixes float32), exact integer mask sums, the cell as
    floor((c / W) * S) instead of (c / W) // (1 / S), and an all-background grid, not a crash, for images without
    instances.
    """
    dev = masks.device
    h, w = masks.shape[-2:]
    cells_per_image = sum(s * s for s in num_grids)
    out = torch.full((batch_size, cells_per_image), num_classes, dtype=torch.int64, device=dev)
    b = boxes.detach().to(torch.float64)
    # sqrt of a negative area is NaN, which no range contains.
    scale = torch.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))
    ys = torch.arange(h, device=dev, dtype=torch.int64)[:, None]
    xs = torch.arange(w, device=dev, dtype=torch.int64)[None, :]
    pairs: list[tuple[int, int]] = []  # (cell, instance)
    for image in range(batch_size):
        in_image = image_ids == image
        level_offset = 0  # first cell of the level among the image's cells
        for s, (lower, upper) in zip(num_grids, scale_ranges):
            grid = out[image, level_offset : level_offset + s * s].view(s, s)
            hit = torch.nonzero(in_image & (scale >= lower) & (scale <= upper)).flatten().tolist()
            owner: dict[int, int] = {}  # SOLO mode: cell -> the last instance covering it
            for m in hit:
                mask = masks[m] != 0
                n = int(mask.sum())
                if n == 0:
                    continue
                cy = int((mask * ys).sum()) / n  # Python int / int: the exact quotient, rounded once
                cx = int((mask * xs).sum()) / n
                x1, y1, x2, y2 = b[m].tolist()
                hw = 0.5 * (x2 - x1) * sigma
                hh = 0.5 * (y2 - y1) * sigma
                ic = min(max(_grid_cell(cy, h, s), 0), s - 1)
                jc = min(max(_grid_cell(cx, w, s), 0), s - 1)
                top = max(0, _grid_cell(cy - hh, h, s), ic - 1)
                down = min(s - 1, _grid_cell(cy + hh, h, s), ic + 1)
                left = max(0, _grid_cell(cx - hw, w, s), jc - 1)
                right = min(s - 1, _grid_cell(cx + hw, w, s), jc + 1)
                if top > down or left > right:
                    continue
                grid[top : down + 1, left : right + 1] = int(labels[m])
                for i in range(top, down + 1):
                    for j in range(left, right + 1):
                        cell = image * cells_per_image + level_offset + i * s + j
                        owner[cell] = m
                        if mode == "solov2":
                            pairs.append((cell, m))
            if mode == "solo":
                pairs.extend(owner.items())
            level_offset += s * s
    pairs.sort()
    pos = torch.tensor(pairs, dtype=torch.int64).reshape(-1, 2).to(dev)
    return out, pos[:, 0].contiguous(), pos[:, 1].contiguous()
