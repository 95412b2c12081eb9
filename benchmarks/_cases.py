"""The benchmark case registry: which ops run at which SOLO sizes, with which inputs.

A :class:`Case` is one (op, size): a ``setup`` that builds realistic inputs on a device, the eager pure-PyTorch
``reference`` (also the function handed to ``torch.compile``), the public ``solo.ops`` entry point (called with
``backend=``), the inputs that receive gradients (none: the op is timed forward only), and a ``traffic`` model:
the bytes a pass must move at least (inputs read once, outputs and gradients written once).

``CASES`` maps op name -> cases, smallest size first (``--quick`` runs only the first). To add an op, write a
setup function and call :func:`register` for each size.

Sizes are SOLOv2 R50 on COCO (PERF_ANCHORS.md §0): 3872 category-grid cells per image (grids 40/36/24/16/12), 80
classes, 2 images per GPU (16 for a whole 8-GPU batch); mask-branch outputs at stride 4 of a 1216x800 padded batch
(200x304), P positive instances per GPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

import solo.ops
from solo.ops import reference

FWD = "fwd"
FWD_BWD = "fwd+bwd"

Inputs = dict[str, Any]

CELLS_PER_IMAGE = 40 * 40 + 36 * 36 + 24 * 24 + 16 * 16 + 12 * 12  # 3872
NUM_CLASSES = 80
MASK_HW = (200, 304)

FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 2.0
DICE_EPS = 1e-3


@dataclass(frozen=True)
class Case:
    """One benchmarked (op, size).

    Attributes:
        op: the op's name (the ``--ops`` key).
        size: a short human label of the problem size.
        setup: ``(device, dtype, generator) -> inputs``; tensors that receive gradients come back with
            ``requires_grad=True``. ``generator`` is a seeded CPU generator (inputs are made on the CPU, then moved,
            so every device benchmarks the same numbers).
        reference: the eager reference, called as ``reference(**inputs)``; also what ``torch.compile`` compiles.
        solo: the public op, called as ``solo(**inputs, backend=name)``.
        grad_inputs: names of the inputs that receive gradients; empty for forward-only ops.
        traffic: ``(inputs, pass) -> bytes`` that the pass has to move at least.
        params: the op's non-tensor arguments, for the report.
    """

    op: str
    size: str
    setup: Callable[[torch.device, torch.dtype, torch.Generator], Inputs]
    reference: Callable[..., Any]
    solo: Callable[..., Any]
    grad_inputs: tuple[str, ...]
    traffic: Callable[[Inputs, str], int]
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def passes(self) -> tuple[str, ...]:
        return (FWD, FWD_BWD) if self.grad_inputs else (FWD,)


CASES: dict[str, list[Case]] = {}


def register(case: Case) -> Case:
    """Add ``case`` to :data:`CASES` (after the op's earlier sizes)."""
    CASES.setdefault(case.op, []).append(case)
    return case


def select(ops: list[str] | None, quick: bool) -> list[Case]:
    """The cases of ``ops`` (all when None), registry order; only each op's smallest size when ``quick``."""
    names = list(CASES) if ops is None else ops
    unknown = [n for n in names if n not in CASES]
    if unknown:
        raise ValueError(f"unknown op(s) {unknown}; known: {list(CASES)}")
    return [c for n in names for c in (CASES[n][:1] if quick else CASES[n])]


def _nbytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _traffic_model(reads: tuple[str, ...], out_bytes: Callable[[Inputs], int], grads: tuple[str, ...]):
    """Minimal traffic: every input in ``reads`` read once, the output written, and (fwd+bwd) one gradient per
    ``grads`` input written. The scalar fed back to backward is not counted."""

    def traffic(inputs: Inputs, pass_: str) -> int:
        total = _nbytes(*(inputs[k] for k in reads)) + out_bytes(inputs)
        if pass_ == FWD_BWD:
            total += _nbytes(*(inputs[k] for k in grads))
        return total

    return traffic


# --- sigmoid focal loss -------------------------------------------------------------------------------------


def focal_inputs(
    n: int,
    c: int,
    device: torch.device,
    dtype: torch.dtype,
    gen: torch.Generator,
    pos_frac: float = 0.015,
    ignore_frac: float = 0.005,
) -> Inputs:
    """Category-branch logits and labels as SOLO sees them: logits around the prior bias ``-log(99)`` (cls prior
    0.01), ~1.5% positive cells with a random class, ~0.5% ignored (-1), the rest background (C)."""
    logits = torch.randn(n, c, generator=gen) * 1.5 - math.log(99.0)
    u = torch.rand(n, generator=gen)
    labels = torch.full((n,), c, dtype=torch.int64)
    pos = u < pos_frac
    labels[pos] = torch.randint(0, c, (int(pos.sum()),), generator=gen)
    labels[(u >= pos_frac) & (u < pos_frac + ignore_frac)] = -1
    rows = torch.nonzero(pos).squeeze(1)
    logits[rows, labels[rows]] += 3.0  # a partly trained head: positives score higher
    return {
        "logits": logits.to(device=device, dtype=dtype).requires_grad_(True),
        "labels": labels.to(device),
    }


def _focal_reference(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return reference.sigmoid_focal_loss(logits, labels, FOCAL_ALPHA, FOCAL_GAMMA, "sum")


def _focal_solo(logits: torch.Tensor, labels: torch.Tensor, backend: str) -> torch.Tensor:
    return solo.ops.sigmoid_focal_loss(logits, labels, FOCAL_ALPHA, FOCAL_GAMMA, "sum", backend=backend)


def _register_focal(images: int) -> None:
    n = images * CELLS_PER_IMAGE
    register(
        Case(
            op="sigmoid_focal_loss",
            size=f"N={n} ({images} img) C={NUM_CLASSES}",
            setup=lambda device, dtype, gen: focal_inputs(n, NUM_CLASSES, device, dtype, gen),
            reference=_focal_reference,
            solo=_focal_solo,
            grad_inputs=("logits",),
            traffic=_traffic_model(("logits", "labels"), lambda inp: 4, ("logits",)),
            params={"alpha": FOCAL_ALPHA, "gamma": FOCAL_GAMMA, "reduction": "sum"},
        )
    )


# --- Dice loss ----------------------------------------------------------------------------------------------


def blob_masks(p: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    """``[p, h, w]`` bool instance masks: ellipses of random centre and size (1/30 to 1/2 of the image side)
    with ragged edges from low-frequency noise, like resized COCO instance masks."""
    cy = torch.rand(p, 1, 1, generator=gen) * h
    cx = torch.rand(p, 1, 1, generator=gen) * w
    ry = (0.03 + 0.22 * torch.rand(p, 1, 1, generator=gen)) * h
    rx = (0.03 + 0.22 * torch.rand(p, 1, 1, generator=gen)) * w
    yy = torch.arange(h, dtype=torch.float32).view(1, h, 1) + 0.5
    xx = torch.arange(w, dtype=torch.float32).view(1, 1, w) + 0.5
    radius = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
    noise = torch.randn(p, 1, h // 16 + 1, w // 16 + 1, generator=gen)
    noise = F.interpolate(noise, size=(h, w), mode="bilinear", align_corners=False).squeeze(1)
    return radius + 0.4 * noise <= 1.0


def _mask_logits(masks: torch.Tensor, gen: torch.Generator, scale: float = 1.0) -> torch.Tensor:
    """Logits of a partly trained mask head: noisy, leaning towards the target."""
    noise = torch.randn(masks.shape, generator=gen) * 2.0
    return scale * (noise + torch.where(masks, 1.5, -3.0))


def dice_inputs(
    p: int, hw: tuple[int, int], device: torch.device, dtype: torch.dtype, gen: torch.Generator, decoupled: bool = False
) -> Inputs:
    """Mask logits ``[p, h, w]`` (``dtype``) and bool blob targets; decoupled: X- and Y-branch logits, each
    carrying half of the lean so that the product of their sigmoids looks like one mask probability."""
    masks = blob_masks(p, *hw, gen=gen)
    if decoupled:
        x = _mask_logits(masks, gen, 0.5)
        y = _mask_logits(masks, gen, 0.5)
        return {
            "x_logits": x.to(device=device, dtype=dtype).requires_grad_(True),
            "y_logits": y.to(device=device, dtype=dtype).requires_grad_(True),
            "targets": masks.to(device),
        }
    return {
        "logits": _mask_logits(masks, gen).to(device=device, dtype=dtype).requires_grad_(True),
        "targets": masks.to(device),
    }


def _dice_reference(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return reference.dice_loss(logits, targets, DICE_EPS, "none")


def _dice_solo(logits: torch.Tensor, targets: torch.Tensor, backend: str) -> torch.Tensor:
    return solo.ops.dice_loss(logits, targets, DICE_EPS, "none", backend=backend)


def _ddice_reference(x_logits: torch.Tensor, y_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return reference.decoupled_dice_loss(x_logits, y_logits, targets, DICE_EPS, "none")


def _ddice_solo(x_logits: torch.Tensor, y_logits: torch.Tensor, targets: torch.Tensor, backend: str) -> torch.Tensor:
    return solo.ops.decoupled_dice_loss(x_logits, y_logits, targets, DICE_EPS, "none", backend=backend)


def _per_instance_out(name: str) -> Callable[[Inputs], int]:
    return lambda inp: 4 * inp[name].shape[0]  # one float32 loss per instance


def _register_dice(p: int) -> None:
    h, w = MASK_HW
    register(
        Case(
            op="dice_loss",
            size=f"P={p} {h}x{w}",
            setup=lambda device, dtype, gen: dice_inputs(p, MASK_HW, device, dtype, gen),
            reference=_dice_reference,
            solo=_dice_solo,
            grad_inputs=("logits",),
            traffic=_traffic_model(("logits", "targets"), _per_instance_out("logits"), ("logits",)),
            params={"eps": DICE_EPS, "reduction": "none", "targets": "bool"},
        )
    )


def _register_decoupled_dice(p: int) -> None:
    h, w = MASK_HW
    register(
        Case(
            op="decoupled_dice_loss",
            size=f"P={p} {h}x{w}",
            setup=lambda device, dtype, gen: dice_inputs(p, MASK_HW, device, dtype, gen, decoupled=True),
            reference=_ddice_reference,
            solo=_ddice_solo,
            grad_inputs=("x_logits", "y_logits"),
            traffic=_traffic_model(
                ("x_logits", "y_logits", "targets"), _per_instance_out("x_logits"), ("x_logits", "y_logits")
            ),
            params={"eps": DICE_EPS, "reduction": "none", "targets": "bool"},
        )
    )


for _images in (2, 16):
    _register_focal(_images)
for _p in (100, 500):
    _register_dice(_p)
_register_decoupled_dice(100)
