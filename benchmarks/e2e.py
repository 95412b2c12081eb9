"""End-to-end benchmark: where the time of a training step and of an inference goes, fused backends against the
reference, side by side in one run.

    python benchmarks/run.py --e2e                     # every preset, cuda if available else cpu
    python benchmarks/run.py --e2e --quick             # smoke test (< 1 min on a CPU): synthetic preset, 2 images
    python benchmarks/run.py --e2e --presets solov2_r50_3x --reps 10 --amp bf16

For each preset (``solov2_r50_3x`` and ``solo_r50_3x`` at 1333x800, batch 2 on a GPU, 512x320 on the CPU;
``solov2_synthetic_r18`` at its own 320x256, batch 4) and backend (``reference`` and the fused backends of the
device: ``cpu`` on a CPU, ``cuda`` and ``triton`` on a GPU) it times

- one training step (SGD with momentum and weight decay, as ``solo.engine.trainer``), split into ``to_device``
  (images and targets from host memory, pinned on a GPU), ``preprocess`` (resize, normalise, pad, GT masks onto the
  canvas), ``assign`` (mask boxes + ``assign_grid_targets``), ``forward`` (backbone, FPN, heads), ``losses`` (focal
  and Dice losses, mask-target downsampling, the dynamic convolution of SOLOv2's positives), ``backward`` and
  ``optimizer``;
- one inference, split into ``to_device``, ``preprocess``, ``network``, ``postprocess`` (point NMS to paste,
  SPEC §9) and ``rle`` (COCO RLE of the masks, as ``solo.evaluation.coco_eval.predictions_to_coco``).

A further row per preset, ``<fused> + channels_last [+ bf16]``, runs what ``python -m solo.train`` runs by default
for the synthetic presets: the fused ops on a channels_last model under bf16 autocast where the device computes bf16
natively (``--no-setup`` drops it). The plain fused rows isolate the kernels (same precision and layout as the
reference); this one shows what a user of the trainer gets over the reference setup.

The phases come from :class:`solo.models.detector.PhaseTimer` (``model.timer``), which synchronises a CUDA device
at phase boundaries only while it is set. Repeats of the backends are interleaved (reference, fused, reference,
...), so that a neighbour's load on a shared machine hits every backend alike; each phase is the median over the
repeats, the total the median of the per-repeat totals. Peak memory: one more call, CUDA ``max_memory_allocated``
above the level before it; CPU torch's profiler, as the op benchmarks (``_timing.peak_extra_bytes``).

A last row, ``postprocess, 100 detections``, times the post-processing of one image alone (solov2_r50_3x, a
480x640 image at 1333x800 on every device) on synthetic head outputs built so that exactly 100 detections come
out (see :func:`postprocess_inputs`).

Writes ``<out>/<device-tag>-<date>-e2e.{json,md,png}`` and, for a complete run (not ``--quick``, the default
presets), copies them to ``latest-<device>-e2e.*``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks import _report, _timing
from benchmarks._cases import blob_masks
from solo.models.detector import PhaseTimer

REFERENCE = "reference"
TRAIN_PHASES = ("to_device", "preprocess", "assign", "forward", "losses", "backward", "optimizer")
INFER_PHASES = ("to_device", "preprocess", "network", "postprocess", "rle")
POST_PHASES = ("postprocess", "rle")
AMP = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclasses.dataclass(frozen=True)
class Preset:
    """A preset as benchmarked: its images (H, W) before the model's resize, instances per image, and the scale
    (long side max, short side) per device type."""

    name: str
    image_sizes: tuple[tuple[int, int], ...]
    instances: int
    scales: dict[str, tuple[int, int]]


_COCO_IMAGES = ((480, 640), (427, 640))  # two COCO-like images
_COCO_SCALES = {"cuda": (1333, 800), "cpu": (512, 320)}
PRESETS = {
    p.name: p
    for p in (
        Preset("solov2_r50_3x", _COCO_IMAGES, 10, _COCO_SCALES),
        Preset("solo_r50_3x", _COCO_IMAGES, 10, _COCO_SCALES),
        Preset(
            "solov2_synthetic_r18",
            ((256, 320), (240, 320), (320, 256), (288, 320)),
            5,
            {"cuda": (320, 256), "cpu": (320, 256)},
        ),
    )
}
QUICK_PRESETS = ("solov2_synthetic_r18",)
POSTPROCESS_PRESET = "solov2_r50_3x"
POSTPROCESS_IMAGE = (480, 640)
POSTPROCESS_DETECTIONS = 100  # = max_per_img of the preset


# --- inputs ---------------------------------------------------------------------------------------------------


def preset_scale(preset: Preset, device: torch.device) -> tuple[int, int]:
    return preset.scales.get(device.type, preset.scales["cpu"])


INFER_CANDIDATES = 200  # category scores above score_thr per image (all levels and classes) of the inference models


def build(preset: Preset, device: torch.device, train: bool, seed: int, images=None):
    """The preset's model at the benchmark scale on ``device`` with seeded random weights.

    For inference (``images`` given: the benchmark's inputs) the category output is calibrated so that the
    random-weight model behaves like a trained one in the post-processing: an untrained model detects nothing
    (category prior 0.01 < score_thr 0.1), a zero bias would make nearly every cell x class a candidate (hundreds
    of thousands at 1333x800); here one bias, set from a forward pass on the inputs, puts about
    :data:`INFER_CANDIDATES` scores per image above score_thr (before point NMS). The mask-output biases are
    zeroed so that the masks are not empty."""
    from solo.configs import get_config
    from solo.models import build_model

    scale = preset_scale(preset, device)
    cfg = dataclasses.replace(get_config(preset.name).model, train_scales=(scale,), test_scale=scale)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(cfg)
    if not train:
        cate = None
        with torch.no_grad():
            for name, mod in model.bbox_head.named_modules():
                top = name.split(".")[0]
                if top.endswith("_cate"):
                    cate = mod
                elif "_ins_list" in top and getattr(mod, "bias", None) is not None:
                    mod.bias.zero_()
            if images is not None and cate is not None:
                model.eval()
                cate.bias.zero_()
                batch = model.preprocess([im.float() for im in images])[0]
                outs = model.forward_features(batch)
                cates = outs[-2] if model.is_v2 else outs[-1]
                logits = torch.cat([c.flatten(1) for c in cates], 1)  # [B, cells x classes]
                k = min(INFER_CANDIDATES, logits.shape[1])
                kth = logits.topk(k, dim=1).values[:, -1].median()
                threshold = math.log(cfg.score_thr / (1 - cfg.score_thr))
                cate.bias.fill_(float(threshold - kth) + 1e-3)
    return model.to(device).train(train)


def host_inputs(preset: Preset, num_classes: int, device: torch.device, gen: torch.Generator):
    """Images (float 0..255) and targets (uint8 blob masks, labels) in host memory, as a data loader gives them
    (pinned when the device is a GPU)."""
    images, targets = [], []
    for h, w in preset.image_sizes:
        images.append(torch.rand(3, h, w, generator=gen) * 255)
        masks = blob_masks(preset.instances, h, w, gen=gen).to(torch.uint8)
        labels = torch.randint(num_classes, (preset.instances,), generator=gen)
        targets.append({"masks": masks, "labels": labels})
    if device.type == "cuda":
        images = [im.pin_memory() for im in images]
        targets = [{k: v.pin_memory() for k, v in t.items()} for t in targets]
    return images, targets


def _to(device: torch.device, images, targets=None):
    images = [im.to(device, non_blocking=True) for im in images]
    if targets is None:
        return images, None
    return images, [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]


def postprocess_inputs(device: torch.device, gen: torch.Generator, detections: int = POSTPROCESS_DETECTIONS):
    """A solov2_r50_3x inference model and synthetic head outputs for one 480x640 image at 1333x800 from which
    exactly ``detections`` (<= max_per_img) detections come out.

    Built so, and not from a network: ``detections + 10`` grid cells of the 40x40 level (every other row and
    column, so that each is its own point-NMS maximum) get one random class with a score in 0.3..0.9, every other
    category logit is -8 (score 3e-4, below score_thr); mask-feature channel j is +6 inside blob j (an ellipse with
    ragged edges, random size and place) and -6 outside, and the kernel of candidate j selects channel j, so the
    soft masks are near-binary blobs of different sizes. 80 classes and random places leave Matrix NMS little to
    decay: all candidates stay above update_thr, and the max_per_img cut leaves ``detections``.
    Returns (model, outs, batch, sizes, images) for ``model._postprocess``."""
    from solo.models.detector import rescale_size

    preset = PRESETS[POSTPROCESS_PRESET]
    model = build(preset, torch.device("cpu"), train=False, seed=0)
    model.cfg = dataclasses.replace(model.cfg, test_scale=(1333, 800), max_per_img=detections)
    model = model.to(device).eval()
    cfg = model.cfg
    h0, w0 = POSTPROCESS_IMAGE
    h, w = rescale_size(h0, w0, cfg.test_scale)
    hc, wc = (math.ceil(x / cfg.size_divisor) * cfg.size_divisor for x in (h, w))
    e, c = cfg.ins_out_channels, cfg.num_classes
    n = detections + 10
    if n > e:
        raise ValueError(f"postprocess_inputs: detections must be <= {e - 10}, got {detections}")
    s0 = cfg.num_grids[0]
    cells = (torch.randperm((s0 // 2) ** 2, generator=gen)[:n]).tolist()
    kernels = [torch.zeros(1, e, s, s) for s in cfg.num_grids]
    cates = [torch.full((1, c, s, s), -8.0) for s in cfg.num_grids]
    scores = 0.3 + 0.6 * torch.rand(n, generator=gen)
    labels = torch.randint(c, (n,), generator=gen)
    for j, cell in enumerate(cells):
        y, x = 2 * (cell // (s0 // 2)), 2 * (cell % (s0 // 2))
        cates[0][0, labels[j], y, x] = torch.logit(scores[j])
        kernels[0][0, j, y, x] = 1.0
    blobs = blob_masks(e, hc // 4, wc // 4, gen=gen)
    blobs[:, h // 4 :, :] = False
    blobs[:, :, w // 4 :] = False
    feat = torch.where(blobs, 6.0, -6.0)[None]
    outs = (
        [k.to(device) for k in kernels],
        [t.to(device) for t in cates],
        feat.to(device),
    )
    batch = torch.zeros((1, 3, hc, wc), device=device)
    images = [torch.zeros((3, h0, w0), device=device)]
    return model, outs, batch, [(h, w)], images


# --- timing ---------------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Runner:
    """One (preset, backend, mode): its model copy, optimizer (train), timer and inputs; ``__call__`` runs one
    step or inference and returns (total seconds, {phase: seconds})."""

    def __init__(self, mode: str, model, backend: str, inputs, device: torch.device, amp: str, lr: float = 0.0):
        self.mode, self.model, self.backend, self.device = mode, model, backend, device
        self.images, self.targets = inputs
        self.amp = AMP[amp]
        model.backend = backend
        self.timer = PhaseTimer(device)
        model.timer = self.timer
        self.cat_ids = list(range(1, model.cfg.num_classes + 1))
        self.optimizer = None
        if mode == "train":
            params = [p for p in model.parameters() if p.requires_grad]
            self.optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
        self.detections: list[int] = []

    def _autocast(self):
        if self.amp is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.amp)

    def run_once(self) -> None:
        from solo.evaluation.coco_eval import predictions_to_coco

        section = self.timer.section
        if self.mode == "train":
            with section("to_device"):
                images, targets = _to(self.device, self.images, self.targets)
            with self._autocast():
                losses = self.model(images, targets)
            with section("backward"):
                self.optimizer.zero_grad(set_to_none=True)
                losses["loss"].backward()
            with section("optimizer"):
                self.optimizer.step()
        else:
            with section("to_device"):
                images, _ = _to(self.device, self.images)
            with torch.no_grad(), self._autocast():
                results = self.model(images)
            with section("rle"):
                for k, res in enumerate(results):
                    predictions_to_coco(res, k, self.cat_ids)
            self.detections = [int(r["labels"].numel()) for r in results]

    def __call__(self) -> tuple[float, dict[str, float]]:
        self.timer.reset()
        _sync(self.device)
        t0 = time.perf_counter()
        self.run_once()
        _sync(self.device)
        return time.perf_counter() - t0, dict(self.timer.times)

    def peak_bytes(self) -> int | None:
        self.timer.reset()
        return _timing.peak_extra_bytes(self.run_once, lambda: None, self.device)


class PostprocessRunner(Runner):
    """The post-processing of one image (and the RLE of its masks) on fixed head outputs."""

    def __init__(self, model, backend: str, inputs, device: torch.device):
        self.mode, self.model, self.backend, self.device = "postprocess", model, backend, device
        self.outs, self.batch, self.sizes, self.image_list = inputs
        model.backend = backend
        self.timer = PhaseTimer(device)
        self.cat_ids = list(range(1, model.cfg.num_classes + 1))
        self.detections = []

    def run_once(self) -> None:
        from solo.evaluation.coco_eval import predictions_to_coco

        with self.timer.section("postprocess"), torch.no_grad():
            results = self.model._postprocess(self.outs, self.outs[1], self.batch, self.sizes, self.image_list)
        with self.timer.section("rle"):
            coco = predictions_to_coco(results[0], 0, self.cat_ids)
        self.detections = [len(coco)]


def measure(runners: dict[str, Runner], warmup: int, reps: int, memory: bool) -> dict[str, dict[str, Any]]:
    """Interleaved repeats of every backend's runner; per backend the median phases, totals and peak memory."""
    for _ in range(warmup):
        for r in runners.values():
            r()
    totals: dict[str, list[float]] = {b: [] for b in runners}
    phases: dict[str, list[dict[str, float]]] = {b: [] for b in runners}
    monitor = _timing.OtherCpuMonitor()
    monitor.start()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(reps):
            for b, r in runners.items():
                total, ph = r()
                totals[b].append(total)
                phases[b].append(ph)
    finally:
        if gc_was_enabled:
            gc.enable()
    busy = monitor.stop()
    out = {}
    for b, r in runners.items():
        names = list(dict.fromkeys(k for ph in phases[b] for k in ph))
        med = {k: statistics.median(ph.get(k, 0.0) for ph in phases[b]) * 1e3 for k in names}
        res: dict[str, Any] = {
            "total_ms": statistics.median(totals[b]) * 1e3,
            "min_total_ms": min(totals[b]) * 1e3,
            "phases_ms": med,
            "phase_sum_ms": sum(med.values()),
            "reps": reps,
            "other_cpu": busy,
            "detections": r.detections,
            "raw_total_ms": [t * 1e3 for t in totals[b]],
        }
        if memory:
            gc.collect()
            if r.device.type == "cuda":
                torch.cuda.empty_cache()
            res["peak_bytes"] = r.peak_bytes()
        out[b] = res
    return out


def _speedups(results: dict[str, dict[str, Any]], key) -> dict[str, float]:
    ref = results.get(REFERENCE)
    if ref is None:
        return {}
    base = key(ref)
    return {b: base / key(r) for b, r in results.items() if b != REFERENCE and key(r) > 0}


# --- the run --------------------------------------------------------------------------------------------------


def fused_backends(device: torch.device) -> tuple[list[str], dict[str, str]]:
    from benchmarks.run import solo_backends

    return solo_backends(device)


def solo_setup(device: torch.device, backends: list[str], args) -> tuple[str, str, str] | None:
    """(row label, backend, amp) of the configuration ``python -m solo.train`` uses by default on ``device`` for
    the synthetic presets (the first fused backend, channels_last, bf16 autocast where the device computes bf16
    natively), or None when there is no fused backend, ``--amp`` is set, or ``--no-setup``."""
    from solo.engine.trainer import resolve_amp

    fused = [b for b in backends if b != REFERENCE]
    if not fused or args.amp != "off" or args.no_setup:
        return None
    amp = resolve_amp("auto", device)
    label = f"{fused[0]} + channels_last" + ("" if amp == "off" else f" + {amp}")
    return label, fused[0], amp


def run_preset(preset: Preset, device, backends, args, log) -> dict[str, Any]:
    from solo.configs import get_config

    if args.quick:  # smoke test: the first two images only
        preset = dataclasses.replace(preset, image_sizes=preset.image_sizes[:2])
    gen = torch.Generator().manual_seed(args.seed)
    num_classes = get_config(preset.name).model.num_classes
    train_cfg = get_config(preset.name).train
    inputs = host_inputs(preset, num_classes, device, gen)
    lr = train_cfg.lr * len(preset.image_sizes) / train_cfg.reference_batch
    entry: dict[str, Any] = {
        "preset": preset.name,
        "images": len(preset.image_sizes),
        "image_sizes": [list(s) for s in preset.image_sizes],
        "scale": list(preset_scale(preset, device)),
        "instances_per_image": preset.instances,
    }
    for mode in ("train", "infer"):
        t0 = time.perf_counter()
        base = build(preset, device, train=mode == "train", seed=args.seed, images=inputs[0])
        runners = {b: Runner(mode, copy.deepcopy(base), b, inputs, device, args.amp, lr) for b in backends}
        setup = solo_setup(device, backends, args)
        if setup is not None:  # what `python -m solo.train` runs: the fused ops + channels_last (+ bf16 autocast)
            label, backend, amp = setup
            model = copy.deepcopy(base).to(memory_format=torch.channels_last)
            runners[label] = Runner(mode, model, backend, inputs, device, amp, lr)
        del base
        res = measure(runners, args.warmup, args.reps, memory=not args.no_memory)
        entry[mode] = res
        entry[f"{mode}_speedup"] = _speedups(res, lambda r: r["total_ms"])
        if mode == "infer":
            entry["postprocess_speedup"] = _speedups(res, lambda r: r["phases_ms"].get("postprocess", 0.0))
        log(
            f"  {preset.name} {mode}: "
            + ", ".join(f"{b} {r['total_ms']:.1f} ms" for b, r in res.items())
            + f" ({time.perf_counter() - t0:.1f} s)"
        )
        del runners
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return entry


def run_postprocess(device, backends, args, log) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(args.seed)
    model, *inputs = postprocess_inputs(device, gen)
    runners = {b: PostprocessRunner(copy.deepcopy(model), b, inputs, device) for b in backends}
    res = measure(runners, args.warmup, args.reps, memory=not args.no_memory)
    log("  postprocess 100 detections: " + ", ".join(f"{b} {r['total_ms']:.1f} ms" for b, r in res.items()))
    return {
        "preset": POSTPROCESS_PRESET,
        "image": list(POSTPROCESS_IMAGE),
        "scale": [1333, 800],
        "how": (
            "synthetic head outputs (benchmarks/e2e.py postprocess_inputs): 110 candidate cells of one class each "
            "with scores 0.3..0.9 on every other cell of the 40x40 grid, near-binary blob soft masks; all survive "
            "Matrix NMS and max_per_img=100 keeps 100"
        ),
        "results": res,
        "postprocess_speedup": _speedups(res, lambda r: r["phases_ms"]["postprocess"]),
        "total_speedup": _speedups(res, lambda r: r["total_ms"]),
    }


# --- reports --------------------------------------------------------------------------------------------------


def _ms(x: float | None) -> str:
    if x is None:
        return ""
    return f"{x:.2f}" if x < 10 else f"{x:.1f}" if x < 1000 else f"{x:.0f}"


def _mb(b: int | None) -> str:
    return "n/a" if b is None else f"{b / 2**20:.0f}"


def _busy(r: dict[str, Any]) -> str:
    return "" if r.get("other_cpu") is None else f"{r['other_cpu']:.2f}"


def _x(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}x"


def markdown_tables(report: dict[str, Any]) -> str:
    """The pasteable part: the training, inference and post-processing tables (times in ms, medians)."""
    lines = [
        "Training step (ms, median of the repeats; `vs ref` = reference total / this total):",
        "",
        "| preset | size | backend | " + " | ".join(TRAIN_PHASES) + " | total | vs ref | peak MB | busy |",
        "| --- | --- | --- |" + " ---: |" * (len(TRAIN_PHASES) + 4),
    ]
    for e in report["presets"]:
        size = f"{e['images']} img @ {e['scale'][0]}x{e['scale'][1]}"
        for b, r in e["train"].items():
            cells = [_ms(r["phases_ms"].get(p)) for p in TRAIN_PHASES]
            sp = "" if b == REFERENCE else _x(e["train_speedup"].get(b))
            lines.append(
                f"| {e['preset']} | {size} | {b} | "
                + " | ".join(cells)
                + f" | **{_ms(r['total_ms'])}** | {sp} | {_mb(r.get('peak_bytes'))} | {_busy(r)} |"
            )
    lines += [
        "",
        "Inference (ms, median; `post vs ref` = the post-processing alone; dets = detections per image):",
        "",
        "| preset | size | backend | "
        + " | ".join(INFER_PHASES)
        + " | total | img/s | vs ref | post vs ref | dets | peak MB | busy |",
        "| --- | --- | --- |" + " ---: |" * (len(INFER_PHASES) + 7),
    ]
    for e in report["presets"]:
        size = f"{e['images']} img @ {e['scale'][0]}x{e['scale'][1]}"
        for b, r in e["infer"].items():
            cells = [_ms(r["phases_ms"].get(p)) for p in INFER_PHASES]
            ips = e["images"] / (r["total_ms"] * 1e-3)
            sp = "" if b == REFERENCE else _x(e["infer_speedup"].get(b))
            psp = "" if b == REFERENCE else _x(e["postprocess_speedup"].get(b))
            dets = "/".join(str(d) for d in r["detections"])
            lines.append(
                f"| {e['preset']} | {size} | {b} | "
                + " | ".join(cells)
                + f" | **{_ms(r['total_ms'])}** | {ips:.1f} | {sp} | {psp} | {dets} | {_mb(r.get('peak_bytes'))}"
                + f" | {_busy(r)} |"
            )
    pp = report.get("postprocess_100")
    if pp:
        lines += [
            "",
            (
                f"Post-processing of one image with 100 detections ({pp['preset']}, {pp['image'][0]}x{pp['image'][1]} "
                f"image at {pp['scale'][0]}x{pp['scale'][1]}; {pp['how']}):"
            ),
            "",
            "| backend | postprocess ms | rle ms | total ms | postprocess vs ref | dets | peak MB | busy |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for b, r in pp["results"].items():
            sp = "" if b == REFERENCE else _x(pp["postprocess_speedup"].get(b))
            lines.append(
                f"| {b} | {_ms(r['phases_ms']['postprocess'])} | {_ms(r['phases_ms']['rle'])} | "
                f"{_ms(r['total_ms'])} | {sp} | {r['detections'][0]} | {_mb(r.get('peak_bytes'))} | {_busy(r)} |"
            )
    return "\n".join(lines)


def header_lines(report: dict[str, Any]) -> list[str]:
    env, opts = report["environment"], report["options"]
    lines = [
        *_report.environment_lines(env),
        (
            f"backends: {', '.join(opts['backends'])}; amp {opts['amp']}; warm-up {opts['warmup']}, repeats "
            f"{opts['reps']} (interleaved across backends)"
        ),
    ]
    if env.get("warning"):
        lines.append(f"WARNING: {env['warning']}")
    busy = report.get("other_cpu_during_run")
    lines.append(
        f"run time: {report.get('wall_s')} s"
        + ("" if busy is None else f"; other processes used {busy:.2f} CPU cores on average meanwhile")
    )
    for name, why in report.get("backends_not_run", {}).items():
        lines.append(f"not run: {name} ({why})")
    return lines


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# solo end-to-end benchmark: {report['environment']['device_name']}", ""]
    lines += [f"- {h}" for h in header_lines(report)]
    lines += ["", markdown_tables(report), "", NOTES, ""]
    return "\n".join(lines)


NOTES = (
    "Phases: to_device = images and targets from host memory; preprocess = resize, normalise, pad (+ GT masks onto "
    "the canvas in training); assign = mask boxes + assign_grid_targets; forward = backbone, FPN, heads; losses = "
    "focal + Dice losses with the mask-target downsampling and SOLOv2's dynamic convolution of the positives; "
    "postprocess = point NMS .. paste (SPEC §9); rle = pycocotools RLE as solo.evaluation.coco_eval. Each phase is "
    "the median over the repeats, total the median of per-repeat totals (so phases need not add up exactly). "
    "peak MB: memory allocated above the level before one call (CUDA allocator statistics; CPU torch profiler). "
    "busy: CPU cores used by other processes during the timed repeats (Linux); on a CPU, values well above 0 mean "
    "inflated and uneven times (a starved thread stalls every multi-threaded op). "
    f"Inference models: random weights with the category bias set so that about {INFER_CANDIDATES} scores per image "
    "pass score_thr (a trained model's order), mask biases zeroed."
)


def plot(report: dict[str, Any], path: Path) -> None:
    """Stacked horizontal bars, one per preset x backend x {train, infer}, one panel per preset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(e["preset"], e) for e in report["presets"]]
    pp = report.get("postprocess_100")
    if pp:
        panels.append(("postprocess, 100 detections", pp))
    phases = list(dict.fromkeys(TRAIN_PHASES + INFER_PHASES))
    colors = {p: plt.get_cmap("tab10")(i % 10) for i, p in enumerate(phases)}
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 1.2 + 1.6 * len(panels)), squeeze=False)
    for ax, (title, e) in zip(axes[:, 0], panels):
        bars = []
        if "results" in e:
            bars = [(f"{b}", r) for b, r in e["results"].items()]
        else:
            bars = [(f"train {b}", r) for b, r in e["train"].items()] + [
                (f"infer {b}", r) for b, r in e["infer"].items()
            ]
        for y, (label, r) in enumerate(bars):
            left = 0.0
            for p in phases:
                v = r["phases_ms"].get(p)
                if v:
                    ax.barh(y, v, left=left, color=colors[p], label=p)
                    left += v
            ax.text(left, y, f" {_ms(r['total_ms'])} ms", va="center", fontsize=8)
        ax.set_yticks(range(len(bars)), [b for b, _ in bars], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("ms", fontsize=8)
        ax.margins(x=0.15)
    handles, labels = {}, []
    for ax in axes[:, 0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles:
                handles[lab] = h
                labels.append(lab)
    fig.legend([handles[k] for k in labels], labels, loc="lower center", ncol=min(6, len(labels)), fontsize=8)
    env = report["environment"]
    fig.suptitle(f"solo end-to-end: {env['device_name']}, torch {env['torch']}, {env['date'][:10]}", fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- main -----------------------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="benchmarks/run.py --e2e",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawTextHelpFormatter,
    )
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda if available, else cpu")
    p.add_argument("--presets", help=f"comma-separated presets (default: all): {','.join(PRESETS)}")
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke test: {','.join(QUICK_PRESETS)} with 2 images, no warm-up, 1 repeat",
    )
    p.add_argument("--reps", type=int, help="timed repeats per backend (default 5 on a CPU, 20 on a GPU; quick 1)")
    p.add_argument("--warmup", type=int, help="untimed repeats first (default 2; quick 0)")
    p.add_argument("--amp", choices=tuple(AMP), default="off", help="autocast of the network (default off)")
    p.add_argument("--backends", help="comma-separated subset of the backends (reference included by default)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory call")
    p.add_argument("--no-postprocess", action="store_true", help="skip the 100-detection post-processing row")
    p.add_argument(
        "--no-setup",
        action="store_true",
        help="skip the row of solo.train's default setup (fused ops + channels_last + bf16 autocast where native)",
    )
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "results",
        help="output directory (default: benchmarks/results/)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = p.parse_args(argv)
    for name in ("reps", "warmup"):
        v = getattr(args, name)
        if v is not None and v < (1 if name == "reps" else 0):
            p.error(f"--{name} must be >= {1 if name == 'reps' else 0}, got {v}")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    t_start = time.perf_counter()
    device = _report.resolve_device(args.device, args.threads)
    if device is None:
        return 2
    names = args.presets.split(",") if args.presets else list(QUICK_PRESETS if args.quick else PRESETS)
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        print(f"error: --presets: unknown {unknown}; known: {list(PRESETS)}", file=sys.stderr)
        return 2
    if args.reps is None:
        args.reps = 1 if args.quick else (20 if device.type == "cuda" else 5)
    if args.warmup is None:
        args.warmup = 0 if args.quick else 2
    fused, not_run = fused_backends(device)
    backends = [REFERENCE, *fused]
    if args.backends:
        wanted = args.backends.split(",")
        bad = [b for b in wanted if b not in backends and b not in not_run]
        if bad:
            print(f"error: --backends: unknown {bad}; usable here: {backends}", file=sys.stderr)
            return 2
        for b in backends:
            if b not in wanted:
                not_run[b] = "not in --backends"
        backends = [b for b in backends if b in wanted]

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    environment = _report.environment(device, ["--e2e", *argv])
    monitor = _timing.OtherCpuMonitor()
    monitor.start()
    report: dict[str, Any] = {
        "environment": environment,
        "options": {
            "presets": names,
            "backends": backends,
            "amp": args.amp,
            "reps": args.reps,
            "warmup": args.warmup,
            "quick": args.quick,
            "seed": args.seed,
        },
        "backends_not_run": not_run,
        "presets": [],
    }
    for name in names:
        report["presets"].append(run_preset(PRESETS[name], device, backends, args, log))
    if not args.no_postprocess:
        report["postprocess_100"] = run_postprocess(device, backends, args, log)
    report["wall_s"] = round(time.perf_counter() - t_start, 1)
    report["other_cpu_during_run"] = monitor.stop()

    print("\n".join(header_lines(report)))
    print()
    print(markdown_tables(report))
    complete = not args.quick and not args.presets and not args.backends and args.amp == "off"
    suffix = ("" if args.amp == "off" else f"-{args.amp}") + ("-quick" if args.quick else "")
    paths = _report.write_reports(
        report, args.out, update_latest=complete, suffix="-e2e" + suffix, render=markdown, extra={".png": plot}
    )
    print(f"\nwall time {report['wall_s']} s; wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    if __package__ in (None, ""):
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
