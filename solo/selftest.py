"""Self-test of solo on this machine: every op on every usable backend against a float64 oracle, then a few
training steps of a small model on each backend.

    python -m solo.selftest [--device cpu|cuda] [--backends NAME ...] [--ops NAME ...] [--quick] [--json FILE]

Every check runs one op of ``solo.ops`` with one backend on one case (small and edge-case inputs: empty, one
element, sizes 1 / 31 / 33, ties, fp16 / bf16 inputs, non-contiguous views; and SOLO-sized inputs, which
``--quick`` drops) and compares the result with ``solo.ops.reference`` run in float64 on the same (upcast) inputs;
the loss ops also compare their gradients. The tolerances depend on the input dtype and are those of the test
suite. A table row per check goes to stdout: op, backend, case, shapes, max error, tolerance, pass/FAIL, ms (on
CUDA: the median of ``--repeat`` synchronised calls after the checked one; on the CPU: the checked call).

Exit status: 0 when every check passed, 1 on any mismatch (or an op that raised), 2 on bad arguments.

Backends that cannot run on the device are listed with the reason from ``solo.ops.available_backends``. On the CPU
the triton backend runs only in Triton's interpreter (``TRITON_INTERPRET=1``), which has to be switched on before
triton is imported, i.e. before ``solo`` is. So: without ``--backends`` it is tested on the CPU only when
``TRITON_INTERPRET=1`` is already set; asking for it explicitly (``--device cpu --backends ... triton``) re-runs the
self-test in a fresh process with ``TRITON_INTERPRET=1``. Interpreted Triton skips the SOLO-sized cases (minutes).

To add an op: one ``OpCheck`` entry in ``OP_CHECKS`` (its cases, how to call it, its float64 oracle and how to
compare).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from typing import Any

import torch

import solo
from solo import ops
from solo.ops import _backend, reference

__all__ = ["OP_CHECKS", "Case", "OpCheck", "main", "run_selftest"]

EXIT_OK, EXIT_MISMATCH, EXIT_USAGE = 0, 1, 2
PASS, FAIL, SKIP = "pass", "FAIL", "skip"

# --- tolerances ------------------------------------------------------------------------------------------------
# (rtol, atol) by input dtype. Every fused backend computes in float32 (float64 for float64 inputs), so the loss
# values carry a few float32 roundings whatever the input dtype (the oracle sees the same rounded fp16 / bf16
# inputs). Gradients come back in the input's dtype: one rounding of that dtype on top of float32 arithmetic.
LOSS_TOL = {torch.float64: (1e-10, 1e-13)}
LOSS_TOL_DEFAULT = (2e-5, 1e-6)
FOCAL_GRAD_TOL = {
    torch.float32: (1e-5, 1e-7),
    torch.float16: (2e-3, 1e-6),
    torch.bfloat16: (1.6e-2, 1e-5),
    torch.float64: (1e-10, 1e-13),
}
# Dice gradients are O(1 / pixels): the absolute tolerance also scales with the largest reference gradient.
DICE_GRAD_TOL = {
    torch.float32: (2e-5, 1e-9),
    torch.float16: (2e-3, 1e-8),
    torch.bfloat16: (1.6e-2, 1e-7),
    torch.float64: (1e-10, 1e-15),
}
# Matrix NMS returns float32: a few float32 roundings of the decay. The reference backend forms 1 - IoU from a
# float32 IoU, so in the linear kernel near-duplicates (1 - IoU ~ 1e-3) leave it ~1e-4 relative error; the fused
# backends use exact integer counts.
NMS_TOL = (1e-5, 1e-7)
NMS_TOL_REFERENCE_LINEAR = (2e-3, 1e-6)
# paste_masks' contract: only pixels whose float64 value lies within PASTE_BAND of the threshold may differ.
PASTE_BAND = 1e-5
# Training steps: see _train_tolerance().
TRAIN_RTOL, TRAIN_ATOL = 1e-4, 1e-6

SOLO_GRIDS = (40, 36, 24, 16, 12)
SOLO_RANGES = ((1, 96), (48, 192), (96, 384), (192, 768), (384, 2048))
SMALL_GRIDS = (12, 8, 5)
SMALL_RANGES = ((1, 24), (12, 48), (24, 160))

Tensor = torch.Tensor
_DTYPE_NAMES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32", torch.float64: "fp64"}


# --- the data model -------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    """One input of an op check. ``make(generator)`` builds the inputs on the CPU (a dict of tensors and
    parameters); ``big``: SOLO-sized (dropped by ``--quick`` and for interpreted Triton)."""

    label: str
    make: Callable[[torch.Generator], dict]
    big: bool = False


@dataclasses.dataclass(frozen=True)
class Verdict:
    ok: bool
    error: str  # the "max error" column
    tolerance: str
    value: float | None = None  # the error as a number, for the JSON
    note: str = ""


@dataclasses.dataclass(frozen=True)
class OpCheck:
    """An op under test: its cases, how to call it (``call(inputs, backend)``, inputs on the device), its float64
    oracle (``oracle(inputs)`` -> ``{"out": ..., "grads": [...]}``, from ``solo.ops.reference``), how to compare
    an output (``compare(got, expected, inputs, backend) -> Verdict``) and a shapes label. Loss ops name the
    inputs they differentiate in ``grad_args`` and get a second row per case, ``<op>.backward``."""

    name: str
    cases: Callable[[], list[Case]]
    call: Callable[[dict, str], Any]
    oracle: Callable[[dict], dict]
    compare: Callable[[Any, Any, dict, str], Verdict]
    shapes: Callable[[dict], str]
    grad_args: tuple[str, ...] = ()
    compare_grad: Callable[[Tensor, Tensor, dict, str], Verdict] | None = None
    # The oracle is the reference backend's own code on the same inputs (exact ops): on the SOLO-sized cases the
    # reference backend would only compare that code with itself, at the cost of a second run, so it is skipped.
    reference_is_oracle: bool = False


@dataclasses.dataclass
class Row:
    op: str
    backend: str
    case: str
    shapes: str
    error: str
    tolerance: str
    status: str
    ms: float | None
    max_error: float | None = None
    note: str = ""


# --- comparisons ----------------------------------------------------------------------------------------------


def _fmt(v: float) -> str:
    return "nan" if math.isnan(v) else f"{v:.2e}"


def _header_check(got, exp: Tensor, dtype: torch.dtype | None) -> Verdict | None:
    if not isinstance(got, torch.Tensor):
        return Verdict(False, "not a tensor", "", note=f"got {type(got).__name__}")
    if tuple(got.shape) != tuple(exp.shape):
        return Verdict(False, "shape", "", note=f"shape {tuple(got.shape)}, want {tuple(exp.shape)}")
    if dtype is not None and got.dtype != dtype:
        return Verdict(False, "dtype", "", note=f"dtype {got.dtype}, want {dtype}")
    return None


def close(got, exp: Tensor, rtol: float, atol: float, dtype: torch.dtype | None = None) -> Verdict:
    """Elementwise ``|got - exp| <= atol + rtol |exp|`` (NaN / inf must match); error = the largest ``|got - exp|``."""
    tol = f"{atol:.0e}+{rtol:.0e}|ref|"
    bad = _header_check(got, exp, dtype)
    if bad is not None:
        return dataclasses.replace(bad, tolerance=tol)
    g = got.detach().to(device="cpu", dtype=torch.float64)
    e = exp.detach().to(device="cpu", dtype=torch.float64)
    if g.numel() == 0:
        return Verdict(True, "0", tol, 0.0)
    finite = torch.isfinite(e)
    same_special = torch.where(finite, torch.isfinite(g), (g == e) | (g.isnan() & e.isnan()))
    diff = torch.where(finite, (g - e).abs(), torch.zeros_like(e))
    diff = torch.where(same_special, diff, torch.full_like(diff, math.inf))
    diff = torch.where(g.isnan() & finite, torch.full_like(diff, math.nan), diff)
    err = float(diff.max())
    ok = bool(((diff <= atol + rtol * e.abs()) | ~finite & same_special).all())
    return Verdict(ok, _fmt(err), tol, err)


def exact(got, exp, names: tuple[str, ...] = ()) -> Verdict:
    """Bit-for-bit equality of one tensor or of a tuple of them; error = the number of differing elements."""
    gs, es = (tuple(got), tuple(exp)) if isinstance(exp, tuple) else ((got,), (exp,))
    wrong = 0
    notes = []
    for i, (g, e) in enumerate(zip(gs, es)):
        name = names[i] if i < len(names) else f"output {i}"
        bad = _header_check(g, e, e.dtype)
        if bad is not None:
            return Verdict(False, bad.error, "exact", note=f"{name}: {bad.note}")
        n = int((g.cpu() != e.cpu()).sum())
        if n:
            notes.append(f"{name}: {n} differ")
        wrong += n
    return Verdict(wrong == 0, f"{wrong} diff", "exact", float(wrong), "; ".join(notes))


# --- input builders (all on the CPU, from one generator) ------------------------------------------------------


def _rand(shape, g, dtype=torch.float64) -> Tensor:
    return torch.rand(shape, generator=g, dtype=dtype)


def _randint(lo: int, hi: int, shape, g) -> Tensor:
    return torch.randint(lo, hi, shape, generator=g)


def blob_masks(n: int, h: int, w: int, g: torch.Generator, speckle: bool = True) -> Tensor:
    """bool [n, h, w] masks like SOLO's instances: ellipses and rectangles of many sizes, exact duplicates and
    nested parts of earlier masks (ties for Matrix NMS, overlaps for the grid targets), single pixels, empty and
    full masks, and speckle."""
    masks = torch.zeros(n, h, w, dtype=torch.bool)
    if n == 0 or h == 0 or w == 0:
        return masks
    yy = torch.arange(h, dtype=torch.float32).view(h, 1)
    xx = torch.arange(w, dtype=torch.float32).view(1, w)
    centre = _rand((n, 2), g, torch.float32) * torch.tensor([h, w]) * 1.1 - 0.05 * torch.tensor([h, w])
    radius = 0.5 + (0.02 + 0.4 * _rand((n, 2), g, torch.float32) ** 2) * torch.tensor([h, w])
    kinds = _randint(0, 10 if speckle else 9, (n,), g).tolist()
    for i, kind in enumerate(kinds):
        cy, cx = centre[i].tolist()
        ry, rx = radius[i].tolist()
        if kind in (2, 3) and i == 0:
            kind = 0
        if kind in (0, 6):  # ellipse
            masks[i] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        elif kind in (1, 7):  # rectangle
            masks[i] = ((yy - cy).abs() <= ry) & ((xx - cx).abs() <= rx)
        elif kind == 2:  # exact duplicate of an earlier mask
            masks[i] = masks[int(_randint(0, i, (), g))]
        elif kind == 3:  # nested: an earlier mask cut by a rectangle
            masks[i] = masks[int(_randint(0, i, (), g))] & ((yy - cy).abs() <= ry) & ((xx - cx).abs() <= rx)
        elif kind == 4:  # a single pixel
            masks[i, min(max(int(cy), 0), h - 1), min(max(int(cx), 0), w - 1)] = True
        elif kind == 5:
            pass  # empty
        elif kind == 8:
            masks[i] = i % 2 == 0  # full or empty
        else:
            masks[i] = torch.rand(h, w, generator=g) > 0.6
    return masks


def _transposed(t: Tensor) -> Tensor:
    """The same values in a non-contiguous layout (last two dimensions stored transposed)."""
    return t.transpose(-1, -2).contiguous().transpose(-1, -2)


def _strided(t: Tensor) -> Tensor:
    """The same values as a view with gaps between rows (every other element of a wider tensor)."""
    wide = torch.stack([t, torch.zeros_like(t)], -1)
    return wide[..., 0]


def _layout(t: Tensor, layout: str) -> Tensor:
    if layout == "transposed":
        out = _transposed(t)
    elif layout == "strided":
        out = _strided(t)
    else:
        return t
    return out


# --- sigmoid_focal_loss ---------------------------------------------------------------------------------------


def _focal_inputs(n, c, dtype, reduction="sum", layout="contiguous", scale=4.0, saturated=False):
    def make(g):
        x = torch.randn(n, c, generator=g, dtype=torch.float64) * scale
        if saturated and x.numel():
            x.view(-1)[::3] = 60.0 * torch.sign(x.view(-1)[::3])
        r = _rand((n,), g)
        labels = _randint(0, max(c, 1), (n,), g)
        labels = torch.where(r < 0.7, torch.full_like(labels, c), labels)  # background
        labels = torch.where(r < 0.1, torch.full_like(labels, -1), labels)  # ignored
        w = torch.randn(n, c, generator=g) if reduction == "none" else None
        return {
            "logits": _layout(x.to(dtype), layout),
            "labels": labels,
            "reduction": reduction,
            "w": w,
            "alpha": 0.25,
            "gamma": 2.0,
        }

    return make


def _focal_cases() -> list[Case]:
    cases = []
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        for n, c in ((0, 80), (1, 1), (31, 80), (33, 3)):
            cases.append(Case(f"{_DTYPE_NAMES[dtype]} sum", _focal_inputs(n, c, dtype)))
    for reduction in ("none", "mean"):
        cases.append(Case(f"fp32 {reduction}", _focal_inputs(37, 80, torch.float32, reduction)))
    cases.append(Case("fp32 sum transposed", _focal_inputs(33, 80, torch.float32, layout="transposed")))
    cases.append(Case("fp16 none strided", _focal_inputs(31, 7, torch.float16, "none", layout="strided")))
    cases.append(Case("fp32 sum saturated", _focal_inputs(31, 80, torch.float32, saturated=True)))
    # SOLO: 80 classes over the 3872 cells of grids 40/36/24/16/12, batch 2.
    cells = 2 * sum(s * s for s in SOLO_GRIDS)
    cases.append(Case("fp32 sum SOLO", _focal_inputs(cells, 80, torch.float32), big=True))
    cases.append(Case("bf16 sum SOLO", _focal_inputs(cells, 80, torch.bfloat16), big=True))
    return cases


def _focal_call(inp, backend):
    return ops.sigmoid_focal_loss(
        inp["logits"], inp["labels"], inp["alpha"], inp["gamma"], inp["reduction"], backend=backend
    )


def _focal_oracle(inp):
    x64 = inp["logits"].detach().double().requires_grad_(True)
    out = reference.sigmoid_focal_loss(x64, inp["labels"], inp["alpha"], inp["gamma"], inp["reduction"])
    return {"out": out.detach(), "grads": _grads(out, [x64], inp.get("w"))}


def _loss_dtype(dtype):
    return reference.acc_dtype(dtype)


def _focal_compare(got, exp, inp, backend):
    x = inp["logits"]
    rtol, atol = LOSS_TOL.get(x.dtype, LOSS_TOL_DEFAULT)
    if inp["reduction"] == "sum":  # a sum of N x C float32 terms: the absolute error grows like sqrt(N C)
        atol *= max(1, x.numel()) ** 0.5
    return close(got, exp, rtol, atol, _loss_dtype(x.dtype))


def _focal_compare_grad(got, exp, inp, backend):
    rtol, atol = FOCAL_GRAD_TOL[inp["logits"].dtype]
    return close(got, exp, rtol, atol, inp["logits"].dtype)


# --- dice_loss / decoupled_dice_loss -------------------------------------------------------------------------


def _dice_inputs(p, h, w, dtype, decoupled=False, target="bool", reduction="none", layout="contiguous"):
    def make(g):
        t = blob_masks(p, h, w, g)
        if target == "uint8":
            t = t.to(torch.uint8)
        elif target == "float":  # soft targets
            t = t.float() * _rand((p, h, w), g, torch.float32)
        x = (torch.randn(p, h, w, generator=g, dtype=torch.float64) * 3).to(dtype)
        y = (torch.randn(p, h, w, generator=g, dtype=torch.float64) * 3).to(dtype) if decoupled else None
        if layout == "transposed":
            x, t = _transposed(x), _transposed(t)
            y = None if y is None else _transposed(y)
        return {
            "logits": x,
            "y_logits": y,
            "targets": t,
            "reduction": reduction,
            "w": torch.randn(p, generator=g) if reduction == "none" else None,
        }

    return make


def _dice_cases() -> list[Case]:
    cases = []
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        name = _DTYPE_NAMES[dtype]
        for p, h, w in ((0, 8, 8), (1, 1, 1), (31, 13, 17), (33, 1, 31)):
            cases.append(Case(name, _dice_inputs(p, h, w, dtype)))
        cases.append(Case(f"{name} decoupled", _dice_inputs(33, 11, 29, dtype, decoupled=True)))
    cases.append(Case("fp32 uint8 targets sum", _dice_inputs(7, 9, 14, torch.float32, target="uint8", reduction="sum")))
    cases.append(
        Case("fp32 soft targets mean", _dice_inputs(7, 9, 14, torch.float32, target="float", reduction="mean"))
    )
    cases.append(Case("fp32 transposed", _dice_inputs(5, 12, 10, torch.float32, layout="transposed")))
    cases.append(Case("bf16 decoupled transposed", _dice_inputs(5, 12, 10, torch.bfloat16, True, layout="transposed")))
    # SOLO: 100 positives at the stride-4 mask size of an 800 x 1344 canvas.
    cases.append(Case("fp32 SOLO", _dice_inputs(100, 200, 336, torch.float32), big=True))
    cases.append(Case("fp16 decoupled SOLO", _dice_inputs(100, 200, 336, torch.float16, decoupled=True), big=True))
    return cases


def _dice_call(inp, backend):
    if inp["y_logits"] is None:
        return ops.dice_loss(inp["logits"], inp["targets"], reduction=inp["reduction"], backend=backend)
    return ops.decoupled_dice_loss(
        inp["logits"], inp["y_logits"], inp["targets"], reduction=inp["reduction"], backend=backend
    )


def _dice_oracle(inp):
    x64 = inp["logits"].detach().double().requires_grad_(True)
    if inp["y_logits"] is None:
        out = reference.dice_loss(x64, inp["targets"], reduction=inp["reduction"])
        leaves = [x64]
    else:
        y64 = inp["y_logits"].detach().double().requires_grad_(True)
        out = reference.decoupled_dice_loss(x64, y64, inp["targets"], reduction=inp["reduction"])
        leaves = [x64, y64]
    return {"out": out.detach(), "grads": _grads(out, leaves, inp.get("w"))}


def _dice_compare(got, exp, inp, backend):
    dtype = inp["logits"].dtype
    rtol, atol = (1e-10, 1e-12) if dtype == torch.float64 else (2e-5, 2e-6)
    return close(got, exp, rtol, atol, _loss_dtype(dtype))


def _dice_compare_grad(got, exp, inp, backend):
    dtype = inp["logits"].dtype
    rtol, atol = DICE_GRAD_TOL[dtype]
    # A value below fp16's smallest normal is rounded on its subnormal grid (spacing 2^-24) by the cast of the
    # gradient to the input dtype: half that spacing is the least error the cast allows.
    if dtype == torch.float16:
        atol = max(atol, 2.0**-25)
    scale = float(exp.abs().max()) if exp.numel() else 1.0
    return close(got, exp, rtol, max(atol, rtol * scale), dtype)


# --- matrix_nms --------------------------------------------------------------------------------------------------


def _nms_inputs(
    n, h, w, kernel="gaussian", score_dtype=torch.float32, labels="mixed", ties=True, layout="", areas=False
):
    def make(g):
        masks = blob_masks(n, h, w, g)
        if labels == "mixed":
            lab = _randint(0, 3, (n,), g) * 1000 - 7  # few classes, arbitrary label values
        else:
            lab = torch.full((n,), 5, dtype=torch.int64)
        if ties:  # exact ties in the scores
            scores = (_randint(1, 9, (n,), g).float() / 8).sort(descending=True).values
        else:
            scores = _rand((n,), g, torch.float32).sort(descending=True).values
        m = masks
        if layout == "uint8":  # any nonzero byte is inside
            m = masks.to(torch.uint8) * _randint(1, 256, masks.shape, g).to(torch.uint8)
        elif layout == "transposed":
            m = masks.transpose(1, 2)  # a [N, W, H] view: the pixel order differs, the IoUs do not
        elif layout == "strided":
            m = torch.stack([masks, ~masks], 1)[:, 0]
        return {
            "masks": m,
            "labels": lab,
            "scores": scores.to(score_dtype),
            "kernel": kernel,
            "sigma": 2.0,
            "areas": masks.flatten(1).sum(1).int() if areas else None,
        }

    return make


def _nms_cases() -> list[Case]:
    cases = []
    for kernel in ("gaussian", "linear"):
        for n, h, w in ((0, 6, 5), (1, 7, 9), (31, 24, 21), (33, 9, 31)):
            cases.append(Case(f"{kernel} fp32 ties", _nms_inputs(n, h, w, kernel)))
        cases.append(Case(f"{kernel} one class", _nms_inputs(33, 12, 10, kernel, labels="single")))
        for dtype in (torch.float16, torch.bfloat16, torch.float64):
            cases.append(Case(f"{kernel} {_DTYPE_NAMES[dtype]} scores", _nms_inputs(23, 8, 19, kernel, dtype)))
    cases.append(Case("linear uint8 masks", _nms_inputs(23, 8, 19, "linear", layout="uint8")))
    cases.append(Case("linear transposed", _nms_inputs(40, 16, 12, "linear", layout="transposed")))
    cases.append(Case("gaussian strided int32 areas", _nms_inputs(40, 16, 12, layout="strided", areas=True)))
    # SOLOv2: nms_pre = 500 candidates at the stride-4 mask size of an 800 x 1344 canvas.
    for kernel in ("gaussian", "linear"):
        cases.append(Case(f"{kernel} SOLO", _nms_inputs(500, 200, 336, kernel, ties=False), big=True))
    return cases


def _nms_call(inp, backend):
    return ops.matrix_nms(
        inp["masks"], inp["labels"], inp["scores"], inp["kernel"], inp["sigma"], inp["areas"], backend=backend
    )


def _nms_oracle(inp):
    out = reference.matrix_nms(
        inp["masks"], inp["labels"], inp["scores"], inp["kernel"], inp["sigma"], inp["areas"], dtype=torch.float64
    )
    return {"out": out}


def _nms_compare(got, exp, inp, backend):
    rtol, atol = NMS_TOL_REFERENCE_LINEAR if backend == "reference" and inp["kernel"] == "linear" else NMS_TOL
    return close(got, exp, rtol, atol, torch.float32)


# --- downsample_masks ---------------------------------------------------------------------------------------------


def _down_inputs(m, h, w, stride, layout="", values=False):
    def make(g):
        masks = blob_masks(m, h, w, g)
        if values:  # uint8 values other than 0 / 1 count as 1
            masks = masks.to(torch.uint8) * _randint(1, 256, masks.shape, g).to(torch.uint8)
        if layout == "transposed":
            masks = _transposed(masks)
        elif layout == "strided":
            masks = _strided(masks)
        return {"masks": masks, "stride": stride}

    return make


def _down_cases() -> list[Case]:
    cases = [
        Case("empty", _down_inputs(0, 8, 8, 4)),
        Case("one pixel", _down_inputs(1, 1, 1, 1)),
        Case("1x31x33 copy", _down_inputs(1, 31, 33, 1)),
        Case("odd stride", _down_inputs(31, 93, 99, 3)),
        Case("even stride", _down_inputs(33, 62, 66, 2)),
        Case("uint8 values", _down_inputs(9, 64, 96, 4, values=True)),
        Case("transposed", _down_inputs(7, 64, 40, 8, layout="transposed")),
        Case("strided", _down_inputs(5, 40, 64, 4, layout="strided")),
    ]
    for stride in (4, 8):  # SOLO's mask targets: the instances of a batch of 2 on an 800 x 1344 canvas
        cases.append(Case(f"SOLO stride {stride}", _down_inputs(40, 800, 1344, stride), big=True))
    return cases


def _down_call(inp, backend):
    return ops.downsample_masks(inp["masks"], inp["stride"], backend=backend)


def _down_oracle(inp):
    return {"out": reference.downsample_masks(inp["masks"], inp["stride"]).contiguous()}


def _down_compare(got, exp, inp, backend):
    v = exact(got, exp)
    if v.ok and not got.is_contiguous():
        return Verdict(False, v.error, v.tolerance, v.value, "output is not contiguous")
    return v


# --- paste_masks ----------------------------------------------------------------------------------------------------


def _blob_probs(n, h, w, g) -> Tensor:
    """Mask probabilities like SOLO's mask branch: smooth blobs with sharp-ish edges plus noise; every 7th mask all
    low, every 11th all high."""
    yy = torch.arange(h, dtype=torch.float64).view(1, h, 1) + 0.5
    xx = torch.arange(w, dtype=torch.float64).view(1, 1, w) + 0.5
    cy = _rand((n, 1, 1), g) * h
    cx = _rand((n, 1, 1), g) * w
    ry = 1.5 + _rand((n, 1, 1), g) * h / 2.5
    rx = 1.5 + _rand((n, 1, 1), g) * w / 2.5
    sharp = 2.0 + 10.0 * _rand((n, 1, 1), g)
    logits = sharp * (1.0 - (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2).sqrt())
    idx = torch.arange(n).view(n, 1, 1)
    logits = torch.where(idx % 7 == 6, -4.0, torch.where(idx % 11 == 10, 4.0, logits))
    return torch.sigmoid(logits + 0.3 * torch.randn(n, h, w, generator=g, dtype=torch.float64))


def _paste_inputs(n, h, w, canvas, valid, out, dtype=torch.float32, layout="", threshold=0.5):
    def make(g):
        p = _blob_probs(n, h, w, g).to(dtype)
        if layout == "transposed":
            p = _transposed(p)
        return {"probs": p, "canvas": canvas, "valid": valid, "out": out, "threshold": threshold}

    return make


def _paste_cases() -> list[Case]:
    # (n, h, w, canvas, valid, out): SOLO's shapes scaled down and the corner cases of both resizes.
    solo_down = (7, 25, 38, (100, 152), (100, 150), (67, 100))
    cases = [Case(f"{_DTYPE_NAMES[d]}", _paste_inputs(*solo_down, dtype=d)) for d in _DTYPE_NAMES]
    cases += [
        Case("empty", _paste_inputs(0, 4, 4, (16, 16), (16, 16), (9, 9))),
        Case("all 1x1", _paste_inputs(1, 1, 1, (1, 1), (1, 1), (1, 1))),
        Case("n=31 upscale", _paste_inputs(31, 25, 38, (100, 152), (98, 150), (125, 167))),
        Case("n=33 odd sizes", _paste_inputs(33, 13, 11, (29, 31), (27, 30), (53, 71))),
        Case("out 1x1", _paste_inputs(7, 9, 7, (36, 28), (30, 25), (1, 1))),
        Case("one row", _paste_inputs(2, 1, 9, (4, 36), (4, 30), (5, 40))),
        Case("downscale both", _paste_inputs(2, 60, 90, (30, 40), (30, 40), (15, 13))),
        Case(
            "transposed thr 0.3",
            _paste_inputs(5, 17, 23, (61, 90), (55, 83), (40, 97), layout="transposed", threshold=0.3),
        ),
        # SOLO: 100 masks at stride 4 of an 800 x 1344 canvas, pasted onto an 800 x 1333 image.
        Case("fp32 SOLO", _paste_inputs(100, 200, 336, (800, 1344), (750, 1333), (800, 1333)), big=True),
    ]
    return cases


def _paste_call(inp, backend):
    return ops.paste_masks(inp["probs"], inp["canvas"], inp["valid"], inp["out"], inp["threshold"], backend=backend)


def _paste_oracle(inp):
    p = inp["probs"]
    if p.shape[0] == 0:
        return {"out": torch.zeros((0, *inp["out"]), dtype=torch.float64, device=p.device)}
    # Chunks of 10 masks: the float64 canvas of 100 SOLO masks would be 0.9 GB.
    chunks = [reference.paste_values(c.double(), inp["canvas"], inp["valid"], inp["out"]) for c in torch.split(p, 10)]
    return {"out": torch.cat(chunks)}


def _paste_compare(got, values, inp, backend):
    tol = f"0 beyond +-{PASTE_BAND:g} of thr"
    bad = _header_check(got, values, torch.bool)
    if bad is not None:
        return dataclasses.replace(bad, tolerance=tol)
    thr = inp["threshold"]
    v = values.cpu()
    differ = got.cpu() != (v > thr)
    outside = differ & ((v - thr).abs() > PASTE_BAND)
    n_out, n_in = int(outside.sum()), int(differ.sum()) - int(outside.sum())
    dist = float((v[outside] - thr).abs().max()) if n_out else 0.0
    # In-band pixels are rare; many of them would be a systematic error hiding in the band.
    in_band_limit = max(4, v.numel() // 1000)
    ok = n_out == 0 and n_in <= in_band_limit
    note = f"{n_out} px beyond the band (up to {dist:.2g} away), {n_in} within" if (n_out or n_in) else ""
    return Verdict(ok, f"{n_out}+{n_in} px", tol, float(n_out), note)


# --- assign_grid_targets ------------------------------------------------------------------------------------------


def _assign_inputs(counts, h, w, grids, ranges, mode="solo", layout="", dtype=torch.bool):
    def make(g):
        from solo.models.detector import mask_boxes

        m = sum(counts)
        masks = blob_masks(m, h, w, g, speckle=False)
        boxes = mask_boxes(masks).double()
        bounds = sorted({float(b) for r in ranges for b in r if b <= max(h, w)})
        for i in range(m):  # some boxes exactly on a scale-range bound (ties of the inclusive comparison)
            if i % 5 == 4 and bounds:
                b = bounds[int(_randint(0, len(bounds), (), g))]
                x0, y0 = int(_randint(0, w, (), g)), int(_randint(0, h, (), g))
                boxes[i] = torch.tensor([x0, y0, x0 + b, y0 + b], dtype=torch.float64)
        image_ids = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts, dtype=torch.int64))
        if m:  # instances of the images interleaved (annotation order across images)
            perm = torch.randperm(m, generator=g)
            masks, boxes, image_ids = masks[perm], boxes[perm], image_ids[perm]
        if dtype == torch.uint8:
            masks = masks.to(torch.uint8)
        if layout == "transposed":
            masks = _transposed(masks)
        return {
            "masks": masks,
            "boxes": boxes.float(),
            "labels": _randint(0, 80, (m,), g),
            "image_ids": image_ids,
            "batch_size": len(counts),
            "num_grids": grids,
            "scale_ranges": ranges,
            "mode": mode,
        }

    return make


_ASSIGN_KEYS = ("masks", "boxes", "labels", "image_ids", "batch_size", "num_grids", "scale_ranges")


def _assign_cases() -> list[Case]:
    cases = []
    for mode in ("solo", "solov2"):
        small = (96, 128, SMALL_GRIDS, SMALL_RANGES, mode)
        cases += [
            Case(f"{mode} empty", _assign_inputs([0, 0], *small)),
            Case(f"{mode} one instance", _assign_inputs([1], *small)),
            Case(f"{mode} 31+33 instances", _assign_inputs([31, 0, 33], *small)),
            Case(f"{mode} 5-level grids", _assign_inputs([9, 4], 96, 128, SOLO_GRIDS, SOLO_RANGES, mode)),
            # SOLO: a batch of 2 on an 800 x 1344 canvas, grids 40/36/24/16/12 and the COCO scale ranges.
            Case(f"{mode} COCO", _assign_inputs([7, 5], 800, 1344, SOLO_GRIDS, SOLO_RANGES, mode), big=True),
        ]
    cases.append(
        Case(
            "solo uint8 transposed",
            _assign_inputs([5, 6], 64, 96, SMALL_GRIDS, SMALL_RANGES, "solo", "transposed", torch.uint8),
        )
    )
    return cases


def _assign_call(inp, backend):
    return ops.assign_grid_targets(**{k: inp[k] for k in _ASSIGN_KEYS}, mode=inp["mode"], backend=backend)


def _assign_oracle(inp):
    out = reference.assign_grid_targets(**{k: inp[k] for k in _ASSIGN_KEYS}, mode=inp["mode"])
    return {"out": tuple(out)}


def _assign_compare(got, exp, inp, backend):
    return exact(tuple(got), exp, ("labels", "pos_cells", "pos_instances"))


# --- the table of op checks ---------------------------------------------------------------------------------------


def _shape(t: Tensor | None) -> str:
    return "-" if t is None else "x".join(str(s) for s in t.shape) or "scalar"


OP_CHECKS: list[OpCheck] = [
    OpCheck(
        "sigmoid_focal_loss",
        _focal_cases,
        _focal_call,
        _focal_oracle,
        _focal_compare,
        lambda inp: _shape(inp["logits"]),
        grad_args=("logits",),
        compare_grad=_focal_compare_grad,
    ),
    OpCheck(
        "dice_loss",
        _dice_cases,
        _dice_call,
        _dice_oracle,
        _dice_compare,
        lambda inp: _shape(inp["logits"]) + (" x2" if inp["y_logits"] is not None else ""),
        grad_args=("logits", "y_logits"),
        compare_grad=_dice_compare_grad,
    ),
    OpCheck(
        "matrix_nms",
        _nms_cases,
        _nms_call,
        _nms_oracle,
        _nms_compare,
        lambda inp: _shape(inp["masks"]),
    ),
    OpCheck(
        "downsample_masks",
        _down_cases,
        _down_call,
        _down_oracle,
        _down_compare,
        lambda inp: f"{_shape(inp['masks'])} /{inp['stride']}",
        reference_is_oracle=True,
    ),
    OpCheck(
        "paste_masks",
        _paste_cases,
        _paste_call,
        _paste_oracle,
        _paste_compare,
        lambda inp: f"{_shape(inp['probs'])}->{inp['out'][0]}x{inp['out'][1]}",
    ),
    OpCheck(
        "assign_grid_targets",
        _assign_cases,
        _assign_call,
        _assign_oracle,
        _assign_compare,
        lambda inp: f"{_shape(inp['masks'])} B{inp['batch_size']}",
        reference_is_oracle=True,
    ),
]
TRAIN_CHECK = "train"


# --- running ----------------------------------------------------------------------------------------------------------


def _grads(out: Tensor, leaves: list[Tensor], w: Tensor | None) -> list[Tensor]:
    """Gradients of ``sum(out * w)`` (``w`` None: of ``sum(out)``); zeros for empty inputs."""
    if any(leaf.numel() == 0 for leaf in leaves):
        return [torch.zeros_like(leaf) for leaf in leaves]
    total = (out * w.to(device=out.device, dtype=out.dtype)).sum() if w is not None else out.sum()
    return list(torch.autograd.grad(total, leaves))


def _to(inp: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inp.items()}


class _Clock:
    """Wall-clock milliseconds of a call; on CUDA synchronised before and after, so the kernels are included."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def __call__(self, fn: Callable[[], Any]) -> tuple[Any, float]:
        self.sync()
        t0 = time.perf_counter()
        out = fn()
        self.sync()
        return out, (time.perf_counter() - t0) * 1e3


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0] if msg else ''}"[:300]


def _case_seed(seed: int, op: str, label: str, index: int) -> int:
    return (seed * 1_000_003 + zlib.crc32(f"{op}/{index}/{label}".encode())) % 2**63


def _run_case(check: OpCheck, case: Case, inp: dict, expected: dict, backend: str, clock: _Clock, repeat: int):
    """Rows (forward, and backward for a loss op) of one backend on one case."""
    shapes = check.shapes(inp)
    grad_names = [k for k in check.grad_args if inp.get(k) is not None]

    def fresh():
        args = dict(inp)
        for k in grad_names:
            args[k] = inp[k].detach().requires_grad_(True)  # a leaf with the input's strides
        return args

    def forward(args):
        return check.call(args, backend)

    rows = []
    args = fresh()
    try:
        out, ms = clock(lambda: forward(args))
        fwd_times = [ms]
        bwd = None
        if grad_names:
            leaves = [args[k] for k in grad_names]
            bwd, ms_b = clock(lambda: _grads(out, leaves, inp.get("w")))
            bwd_times = [ms_b]
        for _ in range(repeat):
            a2 = fresh()
            o2, ms = clock(lambda: forward(a2))  # noqa: B023
            fwd_times.append(ms)
            if grad_names:
                leaves2 = [a2[k] for k in grad_names]
                _, ms_b = clock(lambda: _grads(o2, leaves2, inp.get("w")))  # noqa: B023
                bwd_times.append(ms_b)
    except Exception as e:  # noqa: BLE001  an op that raises is a failed check, reported with its message
        return [Row(check.name, backend, case.label, shapes, "raised", "", FAIL, None, None, _one_line(e))]

    def median(ts):
        return statistics.median(ts[1:] if len(ts) > 1 else ts)

    v = check.compare(out, expected["out"], inp, backend)
    rows.append(
        Row(
            check.name,
            backend,
            case.label,
            shapes,
            v.error,
            v.tolerance,
            PASS if v.ok else FAIL,
            median(fwd_times),
            v.value,
            v.note,
        )
    )
    if grad_names:
        verdicts = [check.compare_grad(g, e, inp, backend) for g, e in zip(bwd, expected["grads"])]
        worst = next((x for x in verdicts if not x.ok), max(verdicts, key=lambda x: x.value or 0.0))
        rows.append(
            Row(
                f"{check.name}.backward",
                backend,
                case.label,
                shapes,
                worst.error,
                worst.tolerance,
                PASS if all(x.ok for x in verdicts) else FAIL,
                median(bwd_times),
                worst.value,
                worst.note,
            )
        )
    return rows


# --- the training check ---------------------------------------------------------------------------------------------


def _train_setup(head: str):
    """A small model (R18, 32-channel head, grids 8..3, 3 classes, images fit to 128 x 96), its initial weights and
    a fixed batch of 2 images with 2 and 3 instances."""
    from solo.configs import get_config

    cfg = dataclasses.replace(
        get_config(f"{head}_synthetic_r18").model,
        fpn_channels=32,
        seg_feat_channels=32,
        mask_feat_channels=32,
        ins_out_channels=32,
        num_grids=(8, 6, 5, 4, 3),
        frozen_stages=1,  # the model-zoo setting; also spares the backward of the stem and first stage
        norm_eval=True,
        train_scales=((96, 64),),
        test_scale=(96, 64),
    )
    g = torch.Generator().manual_seed(1234)
    images, targets = [], []
    for (h, w), k in (((64, 96), 2), ((56, 80), 3)):
        img = torch.rand(3, h, w, generator=g) * 60
        masks = torch.zeros(k, h, w, dtype=torch.uint8)
        for j in range(k):
            y0, x0 = int(_randint(0, h // 2, (), g)), int(_randint(0, w // 2, (), g))
            hh, ww = int(_randint(6, h - y0, (), g)), int(_randint(6, w - x0, (), g))
            masks[j, y0 : y0 + hh, x0 : x0 + ww] = 1
            img[:, y0 : y0 + hh, x0 : x0 + ww] += 80 + 40 * j
        images.append(img)
        targets.append({"masks": masks, "labels": torch.arange(k, dtype=torch.int64) % 3})
    return cfg, images, targets


def _train_run(cfg, state, images, targets, backend: str, device: torch.device, steps: int):
    """Losses (loss_cate, loss_mask, loss) of ``steps`` SGD steps from ``state`` with ``backend``."""
    from solo.models import SOLODetector

    torch.manual_seed(0)
    model = SOLODetector(cfg, backend=backend)
    model.load_state_dict(state)
    model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    imgs = [i.to(device) for i in images]
    tgts = [{k: v.to(device) for k, v in t.items()} for t in targets]
    out = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        losses = model(imgs, tgts)
        losses["loss"].backward()
        opt.step()
        out.append([float(losses[k].detach()) for k in ("loss_cate", "loss_mask", "loss")])
    return torch.tensor(out, dtype=torch.float64)  # [steps, 3]


def _train_rows(backends, device, clock, steps: int, heads=("solov2", "decoupled_solo")) -> list[Row]:
    """Each backend trains the same model from the same weights on the same batch (SGD, lr 1e-3, momentum 0.9);
    its losses must be finite and match those of the reference backend (the baseline, run even when not among
    ``backends``). SOLOv2 exercises assign_grid_targets' "solov2" mode, focal and Dice loss; Decoupled SOLO the
    "solo" mode and the decoupled Dice loss; both downsample_masks.

    Tolerance: the runs differ only in the ops, whose results agree to a few float32 roundings: the first step's
    parameter gradients agree to 2e-6 relative and the losses of three steps to 1.2e-6 (measured on the CPU).
    TRAIN_RTOL = 1e-4 leaves room for the GPU's non-deterministic reductions (atomics, cuDNN's algorithm choice),
    while an op error of 1e-4, far below the 1e-2 to 1e-1 change of the losses per step, still fails. The learning
    rate is small on purpose: at lr 1e-2 the tiny batch makes the training chaotic and the same 1e-6 differences
    grew to 3e-4 by the third step."""
    rows = []
    threads = torch.get_num_threads()
    if device.type == "cpu":
        # The model's tensors are too small to gain from threads, and where other processes share the cores the
        # threads' spin-waits cost ten times the work (measured: 2 steps 0.66 s on one thread, 8.9 s on two).
        torch.set_num_threads(1)
    try:
        for head in heads:
            rows += _train_head(head, backends, device, clock, steps)
    finally:
        torch.set_num_threads(threads)
    return rows


def _train_head(head: str, backends, device, clock, steps: int) -> list[Row]:
    from solo.models import SOLODetector

    op, shapes = f"train {head} x{steps}", "2 img 64x96"
    cfg, images, targets = _train_setup(head)
    torch.manual_seed(0)
    state = SOLODetector(cfg).state_dict()

    def run(backend):
        return clock(lambda: _train_run(cfg, state, images, targets, backend, device, steps))

    try:
        base, base_ms = run("reference")
    except Exception as e:  # noqa: BLE001  reported as a failed check
        return [Row(op, "reference", "losses (baseline)", shapes, "raised", "", FAIL, None, None, _one_line(e))]
    rows = []
    if not bool(torch.isfinite(base).all()) or "reference" in backends:
        finite = bool(torch.isfinite(base).all())
        note = ("" if finite else "non-finite loss; ") + "losses " + " ".join(f"{v:.6g}" for v in base[:, 2].tolist())
        rows.append(
            Row(
                op,
                "reference",
                "losses (baseline)",
                shapes,
                "finite" if finite else "non-finite",
                "finite",
                PASS if finite else FAIL,
                base_ms,
                0.0,
                note,
            )
        )
    for backend in backends:
        if backend == "reference":
            continue
        try:
            got, ms = run(backend)
        except Exception as e:  # noqa: BLE001
            rows.append(Row(op, backend, "losses vs reference", shapes, "raised", "", FAIL, None, None, _one_line(e)))
            continue
        finite = bool(torch.isfinite(got).all())
        err = float(((got - base).abs() / base.abs().clamp(min=TRAIN_ATOL / TRAIN_RTOL)).max())
        ok = finite and err <= TRAIN_RTOL
        note = ("" if finite else "non-finite loss; ") + "losses " + " ".join(f"{v:.6g}" for v in got[:, 2].tolist())
        rows.append(
            Row(
                op,
                backend,
                "losses vs reference",
                shapes,
                _fmt(err),
                f"rel {TRAIN_RTOL:.0e}",
                PASS if ok else FAIL,
                ms,
                err,
                note,
            )
        )
    return rows


# --- environment, table, JSON -------------------------------------------------------------------------------------------


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict:
    try:
        import triton

        triton_version = triton.__version__
    except Exception:  # noqa: BLE001  missing or broken: reported as None
        triton_version = None
    env = {
        "solo": solo.__version__,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "triton": triton_version,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "device_name": _cpu_name(),
        "capability": None,
        "cpu_threads": torch.get_num_threads(),
        "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET"),
        "SOLO_BACKEND": os.environ.get("SOLO_BACKEND"),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
        env["capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
    from solo.ops import _ext

    info = _ext.BUILD_INFO
    env["solo_C"] = {k: getattr(info, k, None) for k in ("TORCH_VERSION", "TORCH_CUDA", "WITH_CUDA")} if info else None
    return env


_COLUMNS = (
    ("op", 27),
    ("backend", 9),
    ("case", 28),
    ("shapes", 22),
    ("max err", 11),
    ("tolerance", 23),
    ("result", 6),
    ("ms", 9),
)


def _format_row(values) -> str:
    return "  ".join(str(v).ljust(w) for v, (_, w) in zip(values, _COLUMNS)).rstrip()


def format_row(row: Row) -> str:
    ms = "" if row.ms is None else f"{row.ms:.1f}" if row.ms >= 1 else f"{row.ms:.3f}"
    line = _format_row((row.op, row.backend, row.case, row.shapes, row.error, row.tolerance, row.status, ms))
    if row.status == FAIL and row.note:
        line += f"\n    -> {row.note}"
    return line


def table_header() -> str:
    head = _format_row([c for c, _ in _COLUMNS])
    return head + "\n" + "-" * len(head)


# --- arguments ------------------------------------------------------------------------------------------------------


class _UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m solo.selftest",
        description="Check every solo op on every usable backend against a float64 reference, and a few training "
        "steps per backend. Exit status 0: all passed, 1: a mismatch, 2: bad arguments.",
    )
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument(
        "--backends",
        nargs="+",
        metavar="NAME",
        help=f"backends to test, of {', '.join(_backend.BACKENDS)} (default: every one usable on the device)",
    )
    names = [c.name for c in OP_CHECKS] + [TRAIN_CHECK]
    p.add_argument("--ops", nargs="+", metavar="NAME", help=f"checks to run, of {', '.join(names)} (default: all)")
    p.add_argument("--quick", action="store_true", help="drop the SOLO-sized cases")
    p.add_argument("--json", metavar="FILE", help="also write the rows and the environment to FILE")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    p.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="timed calls after the checked one, their median reported (default 5 on CUDA, 0 on the CPU)",
    )
    p.add_argument("--steps", type=int, default=3, help="training steps per backend (default 3)")
    return p


def _parse(argv) -> argparse.Namespace:
    args = _parser().parse_args(argv)
    dev = args.device.strip().lower()
    try:
        device = torch.device(dev)
    except (RuntimeError, ValueError):
        raise _UsageError(f"argument --device: expected cpu, cuda or cuda:N, got {args.device!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise _UsageError(f"argument --device: expected cpu, cuda or cuda:N, got {args.device!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = (
                f"torch {torch.__version__} is a CPU-only build"
                if torch.version.cuda is None
                else f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no CUDA device"
            )
            raise _UsageError(f"argument --device: {args.device!r} asked for, but CUDA is not available: {why}")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise _UsageError(
                f"argument --device: {args.device!r} asked for, but there are {torch.cuda.device_count()} CUDA devices"
            )
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    args.device = device
    if args.backends is not None:
        unknown = [b for b in args.backends if b not in _backend.BACKENDS]
        if unknown:
            raise _UsageError(
                f"argument --backends: unknown backend {unknown[0]!r} (choose from {', '.join(_backend.BACKENDS)})"
            )
        args.backends = list(dict.fromkeys(args.backends))
    if args.ops is not None:
        names = [c.name for c in OP_CHECKS] + [TRAIN_CHECK]
        unknown = [o for o in args.ops if o not in names]
        if unknown:
            raise _UsageError(f"argument --ops: unknown check {unknown[0]!r} (choose from {', '.join(names)})")
    if args.json is not None:
        parent = os.path.dirname(os.path.abspath(args.json))
        if not os.path.isdir(parent):
            raise _UsageError(f"argument --json: the directory {parent!r} does not exist")
    if args.repeat is not None and args.repeat < 0:
        raise _UsageError(f"argument --repeat: must be >= 0, got {args.repeat}")
    if args.steps < 1:
        raise _UsageError(f"argument --steps: must be >= 1, got {args.steps}")
    return args


def _triton_loadable() -> bool:
    """Whether triton and solo's Triton kernels import (whatever the device)."""
    from solo.ops import _registry

    return _backend._triton_status()[0] and _registry.TRITON_ERROR is None


def _needs_interpreter_rerun(args) -> bool:
    """--device cpu with triton asked for explicitly, in a process whose triton was imported without the
    interpreter: only a fresh process with TRITON_INTERPRET=1 can run it."""
    if args.device.type != "cpu" or not args.backends or "triton" not in args.backends:
        return False
    if _backend.triton_interpret() or os.environ.get("_SOLO_SELFTEST_RERUN") == "1":
        return False
    return _triton_loadable()


# --- main ---------------------------------------------------------------------------------------------------------------


def run_selftest(args: argparse.Namespace, out=None) -> tuple[list[Row], dict]:
    """Run the checks of parsed ``args``; rows are printed to ``out`` (stdout) as they finish. Returns (rows,
    info) where info holds the environment, the backends tested and those unusable with their reasons."""
    out = out or sys.stdout
    device = args.device
    status = _backend.available_backends(device)
    wanted = args.backends or list(_backend.BACKENDS)
    usable = [b for b in wanted if status[b][0]]
    unusable = {b: status[b][1] for b in _backend.BACKENDS if not status[b][0]}
    if device.type == "cpu" and "triton" in unusable and _backend._triton_status()[0]:
        unusable["triton"] += "; pass --backends ... triton to have the self-test re-run itself that way"
    interpreted = {"triton"} if _backend.triton_interpret() else set()
    env = environment(device)
    repeat = args.repeat if args.repeat is not None else (5 if device.type == "cuda" else 0)

    print(
        f"solo {env['solo']} self-test on {device} ({env['device_name']}"
        + (f", capability {env['capability']}" if env["capability"] else "")
        + ")",
        file=out,
    )
    print(f"torch {env['torch']} (CUDA {env['torch_cuda']}), triton {env['triton']}, {env['date']}", file=out)
    print("backends tested: " + ", ".join(f"{b} ({status[b][1]})" for b in usable), file=out)
    for b, why in unusable.items():
        print(f"backend {b} not usable on {device.type}: {why}", file=out)
    if device.type == "cuda" and interpreted:
        print("note: TRITON_INTERPRET=1 is set: the triton backend runs in the interpreter, not on the GPU", file=out)
    timing = f"median of {repeat} synchronised calls after the checked one" if repeat else "the checked call"
    print(f"oracle: solo.ops.reference in float64 on the same inputs; ms: {timing}", file=out)
    print(table_header(), file=out)
    out.flush()

    clock = _Clock(device)
    rows: list[Row] = []

    def emit(new_rows):
        for r in new_rows:
            rows.append(r)
            print(format_row(r), file=out)
        out.flush()

    selected = args.ops or [c.name for c in OP_CHECKS] + [TRAIN_CHECK]
    for check in OP_CHECKS:
        if check.name not in selected:
            continue
        for index, case in enumerate(check.cases()):
            if case.big and args.quick:
                continue
            runners = [
                b
                for b in usable
                if not (case.big and (b in interpreted or (b == "reference" and check.reference_is_oracle)))
            ]
            if not runners:
                continue
            g = torch.Generator().manual_seed(_case_seed(args.seed, check.name, case.label, index))
            inp = _to(case.make(g), device)
            try:
                expected = check.oracle(inp)
            except Exception as e:  # noqa: BLE001  a broken oracle fails the check for every backend
                emit(
                    [
                        Row(
                            check.name,
                            b,
                            case.label,
                            check.shapes(inp),
                            "oracle raised",
                            "",
                            FAIL,
                            None,
                            None,
                            _one_line(e),
                        )
                        for b in runners
                    ]
                )
                continue
            for backend in runners:
                emit(_run_case(check, case, inp, expected, backend, clock, repeat))
            del inp, expected
    if TRAIN_CHECK in selected and usable:
        emit(_train_rows(usable, device, clock, args.steps))
    skipped_big = [b for b in usable if b in interpreted] if not args.quick else []
    info = {
        "environment": env,
        "backends": usable,
        "unusable": unusable,
        "quick": bool(args.quick),
        "seed": args.seed,
        "repeat": repeat,
        "skipped": {b: "SOLO-sized cases (interpreter)" for b in skipped_big},
    }
    return rows, info


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parse(argv)
    except SystemExit as e:  # argparse's own errors (exit status 2) and --help (0)
        return int(e.code or 0)
    except _UsageError as e:
        print(f"{_parser().prog}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if _needs_interpreter_rerun(args):
        # solo imported triton before this module ran, so the interpreter can no longer be switched on here.
        print(
            "selftest: the triton backend runs on CPU tensors only in Triton's interpreter, which must be switched "
            "on before triton is imported: re-running as TRITON_INTERPRET=1 python -m solo.selftest " + " ".join(argv),
            file=sys.stderr,
        )
        sys.stdout.flush()
        env = {**os.environ, "TRITON_INTERPRET": "1", "_SOLO_SELFTEST_RERUN": "1"}
        return subprocess.call([sys.executable, "-m", "solo.selftest", *argv], env=env)
    if args.backends:
        status = _backend.available_backends(args.device)
        bad = [b for b in args.backends if not status[b][0]]
        if bad:
            print(
                f"{_parser().prog}: error: argument --backends: backend {bad[0]!r} cannot run on "
                f"{args.device.type}: {status[bad[0]][1]}",
                file=sys.stderr,
            )
            return EXIT_USAGE
    t0 = time.perf_counter()
    rows, info = run_selftest(args)
    wall = time.perf_counter() - t0
    failed = [r for r in rows if r.status == FAIL]
    print(f"\n{len(rows)} checks, {len(rows) - len(failed)} passed, {len(failed)} FAILED in {wall:.1f} s", flush=True)
    for r in failed:
        print(
            f"FAIL {r.op} [{r.backend}] {r.case} ({r.shapes}): error {r.error}, tolerance {r.tolerance}"
            + (f": {r.note}" if r.note else "")
        )
    if args.json:
        doc = {
            **info,
            "argv": argv,
            "wall_s": round(wall, 3),
            "passed": not failed,
            "rows": [dataclasses.asdict(r) for r in rows],
        }
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1, default=str)
        print(f"wrote {args.json}")
    return EXIT_MISMATCH if failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
