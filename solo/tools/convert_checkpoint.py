"""Convert an official SOLO checkpoint into solo's format (SOLO_SPEC.md §11).

Usage::

    python -m solo.tools.convert_checkpoint IN OUT --from wxinlong|mmdet --config PRESET [--allow-missing]

``IN`` is a checkpoint of the original SOLO repository (WXinlong/SOLO: an mmcv dict with ``state_dict`` and
possibly ``meta`` / ``optimizer``) or of mmdetection v2/v3 (same container, the key names of SPEC §11.6). Our
module names are the WX ones, so a WX checkpoint maps 1:1; mmdetection names are renamed back
(``mask_head.`` -> ``bbox_head.``, ``mask_convs`` -> ``ins_convs``, ``cls_convs`` -> ``cate_convs``,
``conv_mask_list`` -> ``solo_ins_list``, ``conv_cls`` -> ``solo_cate`` / ``dsolo_cate``, ``conv_kernel`` ->
``solo_kernel``, ``mask_head.mask_feature_head.`` -> ``mask_feat_head.``, its ``conv_pred.`` -> ``conv_pred.0.``).
Every tensor's shape is checked against ``solo.models.build_model(PRESET).state_dict()``; source keys that map to
nothing and model keys that get no value are reported (errors, unless ``--allow-unmapped`` / ``--allow-missing``).
The output ``{"state_dict": ..., "meta": {...}}`` is written atomically and loads with
``torch.load(OUT, weights_only=True)`` followed by ``model.load_state_dict(ckpt["state_dict"], strict=True)``.

The class channel order is the same in WX, mmdetection and solo (channel c = the c-th COCO category id in sorted
order), so category weights are copied as they are.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["SOURCES", "ConversionError", "ConversionReport", "convert", "main", "mmdet_to_wx_key"]

SOURCES = ("wxinlong", "mmdet")

# mmdetection (SOLOHead / DecoupledSOLOHead / DecoupledSOLOLightHead / SOLOV2Head) -> WX head module names.
_MMDET_HEAD_NAMES = {
    "mask_convs": "ins_convs",
    "mask_convs_x": "ins_convs_x",
    "mask_convs_y": "ins_convs_y",
    "cls_convs": "cate_convs",
    "conv_mask_list": "solo_ins_list",
    "conv_mask_list_x": "dsolo_ins_list_x",
    "conv_mask_list_y": "dsolo_ins_list_y",
    "kernel_convs": "kernel_convs",
    "conv_kernel": "solo_kernel",
    # "conv_cls" -> "solo_cate" or "dsolo_cate", decided by the target model
}


class ConversionError(ValueError):
    """The checkpoint does not fit the model (the message lists every problem); ``.report`` has the details."""

    def __init__(self, message: str, report: ConversionReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class ConversionReport:
    """What :func:`convert` did. ``renamed`` maps source key -> our key for keys whose name changed."""

    source: str
    mapped: int = 0
    renamed: dict[str, str] = field(default_factory=dict)
    unmapped: list[str] = field(default_factory=list)  # source keys with no counterpart in the model
    missing: list[str] = field(default_factory=list)  # model keys the checkpoint gives no value for
    filled: list[str] = field(default_factory=list)  # missing BN num_batches_tracked, taken from the model
    shape_mismatches: list[str] = field(default_factory=list)
    cast: list[str] = field(default_factory=list)  # keys whose dtype was converted to the model's

    def ok(self, allow_missing: bool = False, allow_unmapped: bool = False) -> bool:
        return (
            not self.shape_mismatches and (allow_missing or not self.missing) and (allow_unmapped or not self.unmapped)
        )

    def summary(self) -> str:
        lines = [f"source={self.source}: {self.mapped} tensors mapped ({len(self.renamed)} renamed)"]
        for title, items in (
            ("shape mismatches", self.shape_mismatches),
            ("unmapped source keys", self.unmapped),
            ("missing model keys", self.missing),
            ("filled from the model (num_batches_tracked)", self.filled),
            ("dtype converted", self.cast),
        ):
            if items:
                shown = ", ".join(items[:30]) + (f", ... ({len(items) - 30} more)" if len(items) > 30 else "")
                lines.append(f"{title} ({len(items)}): {shown}")
        return "\n".join(lines)


def mmdet_to_wx_key(key: str, target_keys: Mapping[str, Any] | None = None) -> str | None:
    """The WX (= solo) name of an mmdetection state-dict key, or None if it has none (SPEC §11.6, reversed).

    ``conv_cls`` becomes ``dsolo_cate`` when ``target_keys`` has ``bbox_head.dsolo_cate.*`` keys, else ``solo_cate``.
    """
    feat_prefix = "mask_head.mask_feature_head."
    if key.startswith(feat_prefix):
        rest = key[len(feat_prefix) :]
        if rest.startswith("conv_pred.") and not rest.startswith("conv_pred.0."):
            rest = "conv_pred.0." + rest[len("conv_pred.") :]
        return "mask_feat_head." + rest
    if key.startswith("mask_head."):
        first, _, tail = key[len("mask_head.") :].partition(".")
        if first == "conv_cls":
            decoupled = target_keys is not None and any(k.startswith("bbox_head.dsolo_cate.") for k in target_keys)
            name = "dsolo_cate" if decoupled else "solo_cate"
        else:
            name = _MMDET_HEAD_NAMES.get(first)
        if name is None or not tail:
            return None
        return f"bbox_head.{name}.{tail}"
    if key.startswith(("backbone.", "neck.")):
        return key
    return None


def _target_state(model: nn.Module | Mapping[str, Tensor]) -> Mapping[str, Tensor]:
    return model.state_dict() if isinstance(model, nn.Module) else model


def convert(
    state_dict: Mapping[str, Tensor], source: str, model: nn.Module | Mapping[str, Tensor]
) -> tuple[dict[str, Tensor], ConversionReport]:
    """Map an official ``state_dict`` (``source`` 'wxinlong' or 'mmdet') onto ``model``'s keys.

    Args:
        state_dict: the checkpoint's ``state_dict`` (a leading ``module.`` of DataParallel is stripped).
        source: 'wxinlong' (WXinlong/SOLO) or 'mmdet' (mmdetection v2/v3).
        model: the target model (or its state dict): names, shapes and dtypes to check against.

    Returns:
        ``(new_state_dict, report)``: only keys of ``model`` whose shapes match; missing
        ``num_batches_tracked`` buffers are filled from the model (reported in ``report.filled``). Nothing is
        raised here: check ``report.ok()`` (the command-line tool turns problems into errors).
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    target = _target_state(model)
    report = ConversionReport(source=source)
    out: dict[str, Tensor] = {}
    for src_key, value in state_dict.items():
        key = src_key.removeprefix("module.")
        new_key = key if source == "wxinlong" else mmdet_to_wx_key(key, target)
        if new_key is None or new_key not in target:
            report.unmapped.append(src_key)
            continue
        if not isinstance(value, Tensor):
            report.unmapped.append(src_key)
            continue
        ref = target[new_key]
        if tuple(value.shape) != tuple(ref.shape):
            report.shape_mismatches.append(f"{src_key}: checkpoint {tuple(value.shape)} vs model {tuple(ref.shape)}")
            continue
        if new_key in out:
            report.unmapped.append(f"{src_key} (duplicate of {new_key})")
            continue
        if value.dtype != ref.dtype:
            report.cast.append(f"{src_key}: {value.dtype} -> {ref.dtype}")
            value = value.to(ref.dtype)
        out[new_key] = value.detach().clone().contiguous()
        report.mapped += 1
        if new_key != src_key:
            report.renamed[src_key] = new_key
    for key, ref in target.items():
        if key in out:
            continue
        if key.endswith("num_batches_tracked"):
            # Not used with frozen BN statistics; older checkpoints lack it.
            out[key] = ref.detach().clone()
            report.filled.append(key)
        else:
            report.missing.append(key)
    # Keep the model's key order (state dicts are ordered; this makes diffs of converted files readable).
    out = {k: out[k] for k in target if k in out}
    return out, report


def _load_checkpoint(path: str, trust: bool) -> dict[str, Any]:
    """The input checkpoint as a dict; SystemExit naming ``path`` and the reason (empty, truncated, not a
    checkpoint, refused by ``weights_only``) when it cannot be read."""
    from solo.engine.checkpoint import describe_load_error

    if not os.path.isfile(path):
        raise SystemExit(f"error: input checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust)
    except Exception as e:  # torch's exceptions do not say what is wrong with the file; describe_load_error does
        reason = describe_load_error(path, e)
        hint = ""
        if not trust and "weights_only" in reason:
            # official mmcv checkpoints may pickle numpy scalars or config objects in their meta
            hint = "\nIf you trust this file, run again with --trust to unpickle it fully (weights_only=False)."
        raise SystemExit(f"error: cannot read input checkpoint {path}: {reason}{hint}") from e
    if not isinstance(obj, dict):
        raise SystemExit(f"error: input checkpoint {path} holds a {type(obj).__name__}, not a checkpoint dict")
    return obj


def _simple_meta(meta: Any) -> dict[str, Any]:
    """The plain scalar entries of the source meta (kept so the output still loads with weights_only=True)."""
    if not isinstance(meta, dict):
        return {}
    keep = {}
    for k, v in meta.items():
        if isinstance(k, str) and isinstance(v, (str, int, float, bool)) and k != "config":
            keep[k] = v
        elif k == "CLASSES" and isinstance(v, (list, tuple)) and all(isinstance(c, str) for c in v):
            keep[k] = list(v)
    return keep


def _naming_hint(unmapped: list[str], source: str) -> str | None:
    """A hint when the unmapped keys look like the other naming (e.g. a WX file passed with --from mmdet)."""
    wx = sum(k.startswith(("bbox_head.", "mask_feat_head.")) for k in unmapped)
    mm = sum(k.startswith("mask_head.") for k in unmapped)
    if source == "mmdet" and wx > mm:
        return "hint: the unmapped keys use WXinlong/SOLO names (bbox_head.*); try --from wxinlong"
    if source == "wxinlong" and mm > wx:
        return "hint: the unmapped keys use mmdetection names (mask_head.*); try --from mmdet"
    return None


def _save_atomic(obj: Any, path: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_convert_", suffix=".pth", dir=directory)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m solo.tools.convert_checkpoint",
        description="Convert a WXinlong/SOLO or mmdetection SOLO checkpoint into solo's format (SPEC §11).",
    )
    parser.add_argument("input", help="source checkpoint (.pth)")
    parser.add_argument("output", help="where to write the converted checkpoint")
    parser.add_argument("--from", dest="source", required=True, choices=SOURCES, help="naming of the source")
    parser.add_argument("--config", required=True, help="solo preset whose model receives the weights")
    parser.add_argument("--num-classes", type=int, default=None, help="override the preset's number of classes")
    parser.add_argument("--allow-missing", action="store_true", help="model keys without a value are not an error")
    parser.add_argument("--allow-unmapped", action="store_true", help="source keys left over are not an error")
    parser.add_argument("--trust", action="store_true", help="unpickle the input fully (weights_only=False)")
    args = parser.parse_args(argv)

    from solo.configs import get_config
    from solo.models import build_model  # lazy: the model code is only needed here

    ckpt = _load_checkpoint(args.input, args.trust)
    state = ckpt.get("state_dict", ckpt)
    if not isinstance(state, dict) or not state:
        print(f"error: {args.input} has no state_dict", file=sys.stderr)
        return 2
    model = build_model(args.config, num_classes=args.num_classes)
    new_state, report = convert(state, args.source, model)
    print(report.summary())
    if not report.ok(allow_missing=args.allow_missing, allow_unmapped=args.allow_unmapped):
        problems = []
        if report.shape_mismatches:
            problems.append(f"{len(report.shape_mismatches)} shape mismatches")
        if report.unmapped and not args.allow_unmapped:
            problems.append(f"{len(report.unmapped)} unmapped source keys (--allow-unmapped to ignore)")
        if report.missing and not args.allow_missing:
            problems.append(f"{len(report.missing)} missing model keys (--allow-missing to ignore)")
        print(f"error: {args.input} does not fit preset {args.config!r}: " + "; ".join(problems), file=sys.stderr)
        hint = _naming_hint(report.unmapped, args.source)
        if hint:
            print(hint, file=sys.stderr)
        return 1
    meta = {
        "source": args.source,
        "preset": args.config,
        "num_classes": args.num_classes or get_config(args.config).model.num_classes,
        "input": os.path.basename(args.input),
        "converter": "solo.tools.convert_checkpoint",
        "source_meta": _simple_meta(ckpt.get("meta")),
    }
    _save_atomic({"state_dict": new_state, "meta": meta}, args.output)
    print(f"wrote {args.output} ({len(new_state)} tensors)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
