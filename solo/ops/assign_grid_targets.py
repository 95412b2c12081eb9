"""SOLO / SOLOv2 training targets: which grid cells each ground-truth instance makes positive, fused into one pass
over the masks (their exact moments) and one small pass over instances and cells."""

from __future__ import annotations

import numbers
import operator
from typing import NamedTuple

import torch
from torch import Tensor

from solo.ops import _registry, _validate, reference
from solo.ops._backend import check_values, resolve_backend

__all__ = ["GridTargets", "assign_grid_targets", "mask_moments"]

_FN = "assign_grid_targets"
MODES = ("solo", "solov2")
# Levels per call: the CUDA kernels take the grid configuration by value (csrc/include/solo/grid_targets.h).
MAX_LEVELS = 16
# The largest grid side: S^2 must fit in int32.
MAX_GRID = 46340


class GridTargets(NamedTuple):
    """Targets of a batch (see :func:`assign_grid_targets`)."""

    labels: Tensor
    """int64 [batch_size, sum S^2]: the class of every grid cell, ``num_classes`` for background."""
    pos_cells: Tensor
    """int64 [P]: flat indices into ``labels`` of the positives, ascending."""
    pos_instances: Tensor
    """int64 [P]: the instance (row of ``masks``) whose mask is each positive's target."""


def _masks(fn: str, masks) -> Tensor:
    _validate.tensor(fn, "masks", masks)
    if masks.dim() != 3:
        raise ValueError(f"{fn}: masks must be 3-D [M, H, W], got shape {tuple(masks.shape)}")
    if masks.dtype not in (torch.bool, torch.uint8):
        raise ValueError(f"{fn}: masks must be bool or uint8, got {masks.dtype}")
    return masks


def _int(fn: str, name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{fn}: {name} must be an int, got {value!r}")  # noqa: TRY004  (bad arguments: ValueError)
    v = operator.index(value)
    if v < minimum:
        raise ValueError(f"{fn}: {name} must be >= {minimum}, got {v}")
    return v


def _grid_config(num_grids, scale_ranges) -> tuple[list[int], list[float]]:
    """num_grids as ints and scale_ranges flattened to [lower_0, upper_0, lower_1, ...] floats, checked."""
    try:
        grids = list(num_grids)
    except TypeError:
        raise ValueError(f"{_FN}: num_grids must be a sequence of ints, got {num_grids!r}") from None
    if not 1 <= len(grids) <= MAX_LEVELS:
        raise ValueError(f"{_FN}: num_grids must have 1 to {MAX_LEVELS} levels, got {len(grids)}")
    grids = [_int(_FN, f"num_grids[{i}]", s, 1) for i, s in enumerate(grids)]
    if max(grids) > MAX_GRID:
        raise ValueError(f"{_FN}: num_grids must be at most {MAX_GRID}, got {max(grids)}")
    try:
        ranges = [tuple(r) for r in scale_ranges]
    except TypeError:
        raise ValueError(
            f"{_FN}: scale_ranges must be a sequence of (lower, upper) pairs, got {scale_ranges!r}"
        ) from None
    if len(ranges) != len(grids):
        raise ValueError(
            f"{_FN}: scale_ranges must have one (lower, upper) pair per level of num_grids ({len(grids)}), "
            f"got {len(ranges)}"
        )
    flat = []
    for i, r in enumerate(ranges):
        if len(r) != 2:
            raise ValueError(f"{_FN}: scale_ranges[{i}] must be a (lower, upper) pair, got {r!r}")
        try:
            lo, hi = float(r[0]), float(r[1])
        except (TypeError, ValueError):
            raise ValueError(f"{_FN}: scale_ranges[{i}] must hold two numbers, got {r!r}") from None
        if not 0.0 <= lo <= hi:  # also rejects NaN; upper may be inf
            raise ValueError(f"{_FN}: scale_ranges[{i}] must satisfy 0 <= lower <= upper, got {r!r}")
        flat += [lo, hi]
    return grids, flat


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
    backend: str | None = None,
) -> GridTargets:
    """SOLO's category and mask targets for a batch (SOLO_SPEC.md §7): which cell of which level's S x S grid each
    ground-truth instance makes positive, with which class.

    For every instance with a non-empty mask, on every level whose scale range holds its scale:

    * scale ``s = sqrt((x2 - x1) * (y2 - y1))`` from the box as given, compared inclusively with the level's
      ``(lower, upper)``; the ranges overlap, so an instance can be a target on several levels. Boxes follow the
      caller's convention: solo's data pipeline uses the modern ``x2 = x1 + w`` (mmdetection v2+), the original
      SOLO code mmdetection v1's ``x2 = x1 + w - 1``. A negative area gives no target.
    * centre = the mask's centre of mass in pixel indices, ``c_x = sum(x m) / sum(m)`` (likewise ``c_y``), from
      exact integer sums over the full-resolution mask (nonzero = 1), in float64;
    * centre cell ``j_c = floor((c_x / W) * S)``, ``i_c = floor((c_y / H) * S)``, H x W = the masks' canvas. The
      original computes ``(c / W) // (1 / S)`` in float; the two differ only where ``c * S / W`` is within
      rounding of an integer. Every backend computes the same float64 operations, so they agree bit for bit;
    * half sizes ``h_w = 0.5 (x2 - x1) sigma``, ``h_h = 0.5 (y2 - y1) sigma``; positive region rows
      ``max(0, floor((c_y - h_h) / H * S))`` to ``min(S - 1, floor((c_y + h_h) / H * S))``, columns likewise, then
      clamped to the 3 x 3 cells around the centre cell (1 to 9 cells);
    * the instance's label is written to its region of the image's grid. Instances are applied in index order
      (annotation order; those of one image need not be contiguous): a later instance overwrites earlier labels.

    Instances with an all-zero mask or a scale outside every range produce nothing; so do images without instances
    (all-background labels) and M = 0.

    Args:
        masks (Tensor[M, H, W], bool/uint8): every instance of the batch on the padded batch canvas; nonzero =
            inside. Any strides (non-contiguous masks are copied once).
        boxes (Tensor[M, 4], floating): x1, y1, x2, y2 in canvas pixels (used in float64).
        labels (Tensor[M], int64): classes in ``[0, num_classes)``.
        image_ids (Tensor[M], int64): the image of each instance, in ``[0, batch_size)``.
        batch_size: number of images (rows of the returned labels).
        num_grids: S of each level (SOLO: 40, 36, 24, 16, 12); at most 16 levels.
        scale_ranges: inclusive ``(lower, upper)`` scale range of each level, ``0 <= lower <= upper``.
        sigma: centre-region scale, > 0 (SOLO: 0.2).
        num_classes: the background label; labels must be below it.
        mode: ``"solo"`` (SOLO, Decoupled SOLO): one positive per positive cell, the last instance covering the
            cell providing both its label and its mask. ``"solov2"``: one positive per (instance, cell) pair, so a
            cell covered by two instances appears twice (its label is still the later instance's).
        backend: ``None``/``"auto"``, ``"reference"``, ``"cpu"``, ``"cuda"`` or ``"triton"``.

    Returns:
        GridTargets(labels, pos_cells, pos_instances): ``labels`` int64 [batch_size, sum S^2] with cells ordered
        level by level, row-major (``i * S + j``) inside a level; ``pos_cells`` int64 [P] flat indices into
        ``labels`` (``image * sum S^2 + level offset + i * S + j``); ``pos_instances`` int64 [P] the instance whose
        mask is each positive's target. Sorted by ``pos_cells``, then by instance. The mask targets are then
        ``downsample_masks(masks, stride)[pos_instances]``: each mask is resized once, not once per positive cell.

    Labels and image ids outside their ranges are errors on the CPU. On the GPU they are not checked (a check
    needs a device-to-host sync; set ``SOLO_CHECK_VALUES=1`` to check there too): instances with an out-of-range
    image id are then ignored. The fused backends read the masks once (their moments) and synchronise once, to
    size P.
    """
    _masks(_FN, masks)
    for name, t in (("boxes", boxes), ("labels", labels), ("image_ids", image_ids)):
        _validate.tensor(_FN, name, t)
    m = masks.shape[0]
    if boxes.dim() != 2 or tuple(boxes.shape) != (m, 4):
        raise ValueError(f"{_FN}: boxes must have shape [{m}, 4] (one box per mask), got {tuple(boxes.shape)}")
    _validate.floating(_FN, "boxes", boxes)
    for name, t in (("labels", labels), ("image_ids", image_ids)):
        if t.dtype != torch.int64:
            raise ValueError(f"{_FN}: {name} must be int64, got {t.dtype}")
        if tuple(t.shape) != (m,):
            raise ValueError(f"{_FN}: {name} must have shape [{m}] (one per mask), got {tuple(t.shape)}")
    _validate.same_device(_FN, "masks", masks, boxes=boxes, labels=labels, image_ids=image_ids)
    batch_size = _int(_FN, "batch_size", batch_size, 0)
    num_classes = _int(_FN, "num_classes", num_classes, 1)
    sigma = _validate.finite_number(_FN, "sigma", sigma)
    if sigma <= 0:
        raise ValueError(f"{_FN}: sigma must be > 0, got {sigma!r}")
    if mode not in MODES:
        raise ValueError(f"{_FN}: mode must be one of {MODES}, got {mode!r}")
    grids, flat_ranges = _grid_config(num_grids, scale_ranges)
    if batch_size * sum(s * s for s in grids) >= 2**31:
        raise ValueError(f"{_FN}: batch_size * sum(S^2) must be below 2^31 cells, got {batch_size} images")
    # Under torch.compile the checks would be data-dependent graph breaks; the CPU kernel checks values itself.
    if m and (masks.device.type == "cpu" or check_values()) and not torch.compiler.is_compiling():
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"{_FN}: labels must be in [0, num_classes) = [0, {num_classes}), got values in [{lo}, {hi}]"
            )
        lo, hi = int(image_ids.min()), int(image_ids.max())
        if lo < 0 or hi >= batch_size:
            raise ValueError(
                f"{_FN}: image_ids must be in [0, batch_size) = [0, {batch_size}), got values in [{lo}, {hi}]"
            )

    name = resolve_backend(backend, masks.device)
    if name == "reference":
        ranges = [(flat_ranges[2 * i], flat_ranges[2 * i + 1]) for i in range(len(grids))]
        out = reference.assign_grid_targets(
            masks, boxes, labels, image_ids, batch_size, grids, ranges, sigma, num_classes, mode
        )
        return GridTargets(*out)
    ops = getattr(torch.ops, _registry.op_namespace(name))
    mass = ops.assign_grid_targets_mass(masks)
    h, w = masks.shape[1], masks.shape[2]
    out = ops.assign_grid_targets_cells(
        mass,
        boxes.detach(),
        labels,
        image_ids,
        batch_size,
        h,
        w,
        grids,
        flat_ranges,
        sigma,
        num_classes,
        MODES.index(mode),
    )
    return GridTargets(*out)


def mask_moments(masks: Tensor, backend: str | None = None) -> Tensor:
    """The exact moments of each mask, the first pass of :func:`assign_grid_targets`.

    Args: masks (Tensor[M, H, W], bool/uint8; nonzero = 1). Returns Tensor[M, 3], int64: (sum m, sum x m, sum y m)
    with x, y the 0-based column and row (the centre of mass is (sum x m, sum y m) / sum m).
    """
    _masks("mask_moments", masks)
    name = resolve_backend(backend, masks.device)
    if name == "reference":
        return reference.mask_moments(masks)
    return getattr(torch.ops, _registry.op_namespace(name)).assign_grid_targets_mass(masks)


# --- fake kernels for solo:: and solo_triton:: ---------------------------------------------------------------


def _fake_mass(masks: Tensor) -> Tensor:
    torch._check(masks.dim() == 3, lambda: "assign_grid_targets_mass: masks must be 3-D [M, H, W]")
    return masks.new_empty((masks.shape[0], 3), dtype=torch.int64)


def _fake_cells(
    mass, boxes, labels, image_ids, batch_size, height, width, num_grids, scale_ranges, sigma, num_classes, mode
):
    torch._check(mass.dim() == 2 and mass.shape[1] == 3, lambda: f"{_FN}: mass must be [M, 3]")
    cells = sum(s * s for s in num_grids)
    # P, the number of positives, depends on the data: an unbacked size.
    p = torch.library.get_ctx().new_dynamic_size()
    out_labels = mass.new_empty((batch_size, cells), dtype=torch.int64)
    return out_labels, mass.new_empty((p,), dtype=torch.int64), mass.new_empty((p,), dtype=torch.int64)


for _ns in _registry.namespaces():
    torch.library.register_fake(f"{_ns}::assign_grid_targets_mass")(_fake_mass)
    torch.library.register_fake(f"{_ns}::assign_grid_targets_cells")(_fake_cells)
