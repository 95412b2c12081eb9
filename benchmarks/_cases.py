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
        check: optional ``(output, float64 inputs) -> {"ok": bool, ...}`` replacing the default comparison with the
            float64 reference (for outputs such as thresholded masks, where exact equality is not the contract).
        no_compile: why ``torch.compile(reference)`` is not timed for this case (None: it is).
    """

    op: str
    size: str
    setup: Callable[[torch.device, torch.dtype, torch.Generator], Inputs]
    reference: Callable[..., Any]
    solo: Callable[..., Any]
    grad_inputs: tuple[str, ...]
    traffic: Callable[[Inputs, str], int]
    params: dict[str, Any] = field(default_factory=dict)
    check: Callable[[Any, Inputs], dict[str, Any]] | None = None
    no_compile: str | None = None

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


# --- mask resizing: downsample (training targets) and paste (inference output) ------------------------------

CANVAS_HW = (800, 1216)  # padded batch canvas of a 1333x800 COCO image (SOLO_SPEC.md §2); stride-4 map 200x304
VALID_HW = (800, 1199)  # the resized image inside the padded canvas
PASTE_THRESHOLD = 0.5
PASTE_BAND = 1e-5  # pixels whose float64 value is this close to the threshold may go either way (issue 3)


def downsample_inputs(m: int, stride: int, device: torch.device, gen: torch.Generator) -> Inputs:
    """``m`` uint8 0/1 instance masks of the padded canvas (SOLO's GT masks before mmcv.imrescale)."""
    return {"masks": blob_masks(m, *CANVAS_HW, gen=gen).to(torch.uint8).to(device), "stride": stride}


def _downsample_reference(masks: torch.Tensor, stride: int) -> torch.Tensor:
    return reference.downsample_masks(masks, stride)


def _downsample_solo(masks: torch.Tensor, stride: int, backend: str) -> torch.Tensor:
    return solo.ops.downsample_masks(masks, stride, backend=backend)


def _register_downsample(m: int, stride: int) -> None:
    h, w = CANVAS_HW
    register(
        Case(
            op="downsample_masks",
            size=f"M={m} {h}x{w} /{stride}",
            setup=lambda device, dtype, gen: downsample_inputs(m, stride, device, gen),
            reference=_downsample_reference,
            solo=_downsample_solo,
            grad_inputs=(),
            # Only 4 bytes per output pixel need reading (2 rows x 2 columns of each stride x stride block).
            traffic=lambda inp, _pass: inp["masks"].numel() // stride**2 * (1 + (4 if stride % 2 == 0 else 1)),
            params={"stride": stride, "masks": "uint8"},
        )
    )


def mask_probs(n: int, hw: tuple[int, int], gen: torch.Generator) -> torch.Tensor:
    """Soft masks as SOLO's mask branch gives them at stride 4: sigmoid of smooth logits around blob shapes."""
    masks = blob_masks(n, *hw, gen=gen)
    logits = torch.where(masks, 3.0, -4.0) + 1.5 * torch.randn(masks.shape, generator=gen)
    logits = F.avg_pool2d(logits.unsqueeze(1), 5, stride=1, padding=2, count_include_pad=False).squeeze(1)
    return torch.sigmoid(logits)


def paste_inputs(n: int, out_hw: tuple[int, int], device: torch.device, dtype: torch.dtype, gen) -> Inputs:
    return {
        "probs": mask_probs(n, MASK_HW, gen).to(device=device, dtype=dtype),
        "canvas_size": CANVAS_HW,
        "valid_size": VALID_HW,
        "out_size": out_hw,
    }


def _paste_reference(probs, canvas_size, valid_size, out_size) -> torch.Tensor:
    return reference.paste_masks(probs, canvas_size, valid_size, out_size, PASTE_THRESHOLD)


def _paste_solo(probs, canvas_size, valid_size, out_size, backend: str) -> torch.Tensor:
    return solo.ops.paste_masks(probs, canvas_size, valid_size, out_size, PASTE_THRESHOLD, backend=backend)


def paste_values64(probs, canvas_size, valid_size, out_size) -> torch.Tensor:
    """The reference's pre-threshold values in float64 (the check's oracle)."""
    x = probs.double().unsqueeze(1)
    x = F.interpolate(x, size=tuple(canvas_size), mode="bilinear", align_corners=False)
    x = x[:, :, : valid_size[0], : valid_size[1]]
    return F.interpolate(x, size=tuple(out_size), mode="bilinear", align_corners=False)[:, 0]


def _paste_check(out: torch.Tensor, inputs64: Inputs) -> dict[str, Any]:
    """Every pixel must agree with the float64 reference except those within PASTE_BAND of the threshold."""
    vals = paste_values64(inputs64["probs"], inputs64["canvas_size"], inputs64["valid_size"], inputs64["out_size"])
    if out.shape != vals.shape or out.dtype != torch.bool:
        return {"ok": False, "error": f"output {tuple(out.shape)} {out.dtype}, want {tuple(vals.shape)} bool"}
    differ = out.cpu() != (vals.cpu() > PASTE_THRESHOLD)
    near = (vals.cpu() - PASTE_THRESHOLD).abs() <= PASTE_BAND
    bad = int((differ & ~near).sum())
    return {"ok": bad == 0, "mismatches_outside_band": bad, "mismatches_in_band": int((differ & near).sum())}


def _register_paste(n: int, out_hw: tuple[int, int]) -> None:
    h, w = MASK_HW
    register(
        Case(
            op="paste_masks",
            size=f"N={n} {h}x{w}->{out_hw[0]}x{out_hw[1]}",
            setup=lambda device, dtype, gen: paste_inputs(n, out_hw, device, dtype, gen),
            reference=_paste_reference,
            solo=_paste_solo,
            grad_inputs=(),
            traffic=lambda inp, _pass: _nbytes(inp["probs"]) + n * out_hw[0] * out_hw[1],
            params={
                "canvas": CANVAS_HW,
                "valid": VALID_HW,
                "out": out_hw,
                "threshold": PASTE_THRESHOLD,
                "check": f"differences only within {PASTE_BAND} of the threshold",
            },
            check=_paste_check,
        )
    )


# --- Matrix NMS -------------------------------------------------------------------------------------------------


def nms_inputs(n: int, num_classes: int, device: torch.device, dtype: torch.dtype, gen: torch.Generator) -> Inputs:
    """``n`` candidate masks as Matrix NMS sees them after the top-``n`` cut: clusters of overlapping candidates
    around ~n/8 objects (each a jittered, rescaled copy of its object's blob, some exact duplicates), the object's
    class as label (``num_classes`` classes), scores sorted descending."""
    h, w = MASK_HW
    objects = max(1, n // 8)
    obj = torch.randint(objects, (n,), generator=gen)
    cy = torch.rand(objects, generator=gen)[obj] * h + torch.randn(n, generator=gen) * 4
    cx = torch.rand(objects, generator=gen)[obj] * w + torch.randn(n, generator=gen) * 4
    size = (0.03 + 0.22 * torch.rand(objects, generator=gen))[obj]
    ry = (size * (1 + 0.15 * torch.randn(n, generator=gen))).clamp(min=0.01) * h
    rx = (size * (1 + 0.15 * torch.randn(n, generator=gen))).clamp(min=0.01) * w
    yy = torch.arange(h, dtype=torch.float32).view(1, h, 1) + 0.5
    xx = torch.arange(w, dtype=torch.float32).view(1, 1, w) + 0.5
    masks = ((yy - cy.view(n, 1, 1)) / ry.view(n, 1, 1)) ** 2 + ((xx - cx.view(n, 1, 1)) / rx.view(n, 1, 1)) ** 2 <= 1
    dup = torch.rand(n, generator=gen) < 0.05
    masks[dup] = masks[obj[dup]]
    labels = torch.randint(num_classes, (objects,), generator=gen)[obj]
    scores = torch.rand(n, generator=gen).sort(descending=True).values * 0.9 + 0.1
    return {"masks": masks.to(device), "labels": labels.to(device), "scores": scores.to(device=device, dtype=dtype)}


def _nms_reference(masks, labels, scores) -> torch.Tensor:
    return reference.matrix_nms(masks, labels, scores, "gaussian", 2.0, dtype=reference.acc_dtype(scores.dtype))


def _nms_solo(masks, labels, scores, backend: str) -> torch.Tensor:
    return solo.ops.matrix_nms(masks, labels, scores, "gaussian", 2.0, backend=backend)


def _register_nms(n: int, num_classes: int) -> None:
    h, w = MASK_HW
    register(
        Case(
            op="matrix_nms",
            size=f"N={n} {h}x{w}" + (" 1 class" if num_classes == 1 else ""),
            setup=lambda device, dtype, gen: nms_inputs(n, num_classes, device, dtype, gen),
            reference=_nms_reference,
            solo=_nms_solo,
            grad_inputs=(),
            traffic=_traffic_model(("masks", "labels", "scores"), lambda inp: 4 * n, ()),
            params={"kernel": "gaussian", "sigma": 2.0, "classes": num_classes, "masks": "bool", "objects": n // 8},
        )
    )


# --- grid target assignment ---------------------------------------------------------------------------------

GRID_NUM_CLASSES = 80


def grid_target_inputs(images: int, per_image: int, device: torch.device, gen: torch.Generator) -> Inputs:
    """``images`` x ``per_image`` GT instances on the padded canvas as SOLO's target assignment sees them: bool blob
    masks, their bounding boxes (float32, x2 = x1 + w; zeros for a mask the noise emptied), random classes, image
    ids in annotation order (image-major)."""
    m = images * per_image
    masks = blob_masks(m, *CANVAS_HW, gen=gen)
    rows, cols = masks.any(2), masks.any(1)  # [m, H], [m, W]
    h, w = CANVAS_HW

    def first_last(hit: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        first = hit.to(torch.uint8).argmax(1)
        last = n - hit.flip(1).to(torch.uint8).argmax(1)
        return first, last

    y1, y2 = first_last(rows, h)
    x1, x2 = first_last(cols, w)
    boxes = torch.stack([x1, y1, x2, y2], 1).float() * rows.any(1, keepdim=True)
    return {
        "masks": masks.to(device),
        "boxes": boxes.to(device),
        "labels": torch.randint(0, GRID_NUM_CLASSES, (m,), generator=gen).to(device),
        "image_ids": torch.arange(images).repeat_interleave(per_image).to(device),
        "batch_size": images,
    }


def _grid_reference(masks, boxes, labels, image_ids, batch_size):
    return reference.assign_grid_targets(masks, boxes, labels, image_ids, batch_size, num_classes=GRID_NUM_CLASSES)


def _grid_solo(masks, boxes, labels, image_ids, batch_size, backend: str):
    return solo.ops.assign_grid_targets(
        masks, boxes, labels, image_ids, batch_size, num_classes=GRID_NUM_CLASSES, backend=backend
    )


def _register_grid(images: int, per_image: int) -> None:
    h, w = CANVAS_HW
    m = images * per_image
    register(
        Case(
            op="assign_grid_targets",
            size=f"M={m} ({images} img x {per_image}) {h}x{w}",
            setup=lambda device, dtype, gen: grid_target_inputs(images, per_image, device, gen),
            reference=_grid_reference,
            solo=_grid_solo,
            grad_inputs=(),
            # The masks once, the boxes / labels / ids, the label grids; the positives (a few per instance) are
            # left out: their number is only known after the run.
            traffic=lambda inp, _pass: (
                _nbytes(inp["masks"], inp["boxes"], inp["labels"], inp["image_ids"]) + 8 * images * CELLS_PER_IMAGE
            ),
            params={"grids": "40,36,24,16,12", "sigma": 0.2, "mode": "solo", "masks": "bool"},
            no_compile="the reference is a Python loop over images, levels and instances (graph breaks throughout)",
        )
    )


def _mass_reference(masks):
    return reference.mask_moments(masks)


def _mass_solo(masks, backend: str):
    from solo.ops.assign_grid_targets import mask_moments

    return mask_moments(masks, backend=backend)


def _register_grid_mass(images: int, per_image: int) -> None:
    """The first pass of assign_grid_targets alone (the per-mask moments): the bandwidth floor of the op, M*H*W
    bytes read."""
    h, w = CANVAS_HW
    m = images * per_image
    register(
        Case(
            op="assign_grid_targets_mass",
            size=f"M={m} {h}x{w}",
            setup=lambda device, dtype, gen: {"masks": grid_target_inputs(images, per_image, device, gen)["masks"]},
            reference=_mass_reference,
            solo=_mass_solo,
            grad_inputs=(),
            traffic=lambda inp, _pass: _nbytes(inp["masks"]) + 24 * m,
            params={"masks": "bool"},
        )
    )


# --- the model: one training step (forward + backward) and one inference ------------------------------------------

MODEL_SCALES = {"cuda": (1333, 800), "cpu": (512, 320)}  # (long side max, short side): SOLO's on a GPU, reduced on CPU
MODEL_IMAGE_SIZES = ((480, 640), (427, 640))  # two COCO-like images (H, W), resized inside the model
MODEL_INSTANCES = 10  # GT instances per image


def model_inputs(preset: str, train: bool, device: torch.device, gen: torch.Generator) -> Inputs:
    """A ``preset`` model with deterministic random weights, two images and their targets. An untrained model
    detects nothing (category prior 0.01 < score threshold 0.1), so for inference the category and mask-output
    biases are set to 0: every stage of the post-processing (selection, nms_pre, Matrix NMS, paste) then has work."""
    from dataclasses import replace

    from solo.configs import get_config
    from solo.models import build_model

    scale = MODEL_SCALES.get(device.type, MODEL_SCALES["cpu"])
    cfg = replace(get_config(preset).model, train_scales=(scale,), test_scale=scale)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(2**31, (1,), generator=gen)))
        model = build_model(cfg).to(device)
    if not train:
        head = model.bbox_head
        with torch.no_grad():
            for name, mod in head.named_modules():
                if (
                    name.split(".")[0]
                    in ("solo_cate", "dsolo_cate", "solo_ins_list", "dsolo_ins_list_x", "dsolo_ins_list_y")
                    and getattr(mod, "bias", None) is not None
                ):
                    mod.bias.zero_()
    model.train(train)
    images, targets = [], []
    for h, w in MODEL_IMAGE_SIZES:
        images.append((torch.rand(3, h, w, generator=gen) * 255).to(device))
        masks = blob_masks(MODEL_INSTANCES, h, w, gen=gen)
        labels = torch.randint(cfg.num_classes, (MODEL_INSTANCES,), generator=gen)
        targets.append({"masks": masks.to(torch.uint8).to(device), "labels": labels.to(device)})
    return {"model": model, "images": images, "targets": targets}


def _model_train_step(model, images, targets, backend: str) -> torch.Tensor:
    model.backend = backend
    with torch.enable_grad():
        loss = model(images, targets)["loss"]
        loss.backward()
    model.zero_grad(set_to_none=True)
    return loss.detach()


def _model_infer(model, images, targets, backend: str) -> list[dict[str, torch.Tensor]]:
    model.backend = backend
    with torch.no_grad():
        return model(images)


def _model_infer_check(out: list[dict[str, torch.Tensor]], inputs: Inputs) -> dict[str, Any]:
    """Against the reference backend in float32: the same detections (count, labels, scores within 1e-4) and masks
    that differ at most on pixels within the paste threshold band (< 1e-4 of the pixels)."""
    want = _model_infer(**inputs, backend="reference")
    worst_score, flipped, pixels = 0.0, 0, 0
    for got, ref in zip(out, want):
        if got["labels"].shape != ref["labels"].shape or not torch.equal(got["labels"].cpu(), ref["labels"].cpu()):
            return {"ok": False, "error": f"detections differ: {got['labels'].numel()} vs {ref['labels'].numel()}"}
        if ref["scores"].numel():
            worst_score = max(worst_score, float((got["scores"] - ref["scores"]).abs().max()))
        flipped += int((got["masks"] != ref["masks"]).sum())
        pixels += ref["masks"].numel()
    ok = worst_score <= 1e-4 and flipped <= 1e-4 * max(pixels, 1)
    return {"ok": ok, "max_rel_diff": worst_score, "flipped_pixels": flipped}


def _model_weight_bytes(inputs: Inputs, _pass: str) -> int:
    """The model cases' "traffic": the bytes of the weights (read at least once per call)."""
    return sum(p.numel() * p.element_size() for p in inputs["model"].parameters())


def _register_model(preset: str) -> None:
    params = {"images": "2 (480x640, 427x640)", "scale": MODEL_SCALES, "instances/image": MODEL_INSTANCES}
    why = "a whole detector with data-dependent post-processing: compile time dominates (ops are compared above)"
    register(
        Case(
            op="model_train_step",
            size=f"{preset} 2 img",
            setup=lambda device, dtype, gen: model_inputs(preset, True, device, gen),
            reference=lambda model, images, targets: _model_train_step(model, images, targets, "reference"),
            solo=_model_train_step,
            grad_inputs=(),
            traffic=_model_weight_bytes,
            params={**params, "pass": "forward + backward of the losses"},
            no_compile=why,
        )
    )
    register(
        Case(
            op="model_inference",
            size=f"{preset} 2 img",
            setup=lambda device, dtype, gen: model_inputs(preset, False, device, gen),
            reference=lambda model, images, targets: _model_infer(model, images, targets, "reference"),
            solo=_model_infer,
            grad_inputs=(),
            traffic=_model_weight_bytes,
            params={**params, "pass": "preprocess, network, SPEC §9 post-processing"},
            check=_model_infer_check,
            no_compile=why,
        )
    )


for _images in (2, 16):
    _register_focal(_images)
for _p in (100, 500):
    _register_dice(_p)
_register_decoupled_dice(100)
for _stride in (4, 8, 16):
    _register_downsample(50, _stride)
for _n, _out in ((20, (427, 640)), (100, (427, 640)), (20, (800, 1333)), (100, (800, 1333))):
    _register_paste(_n, _out)
for _n in (100, 500, 1000, 2000):
    _register_nms(_n, 20)
_register_nms(500, 1)
for _images, _per_image in ((2, 50), (16, 20)):
    _register_grid(_images, _per_image)
    _register_grid_mass(_images, _per_image)
for _preset in ("solov2_r50_3x", "solo_r50_3x"):
    _register_model(_preset)
