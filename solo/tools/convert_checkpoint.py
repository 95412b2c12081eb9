"""Convert an official SOLO checkpoint into solo's format (SOLO_SPEC.md §11).

Usage::

    python -m solo.tools.convert_checkpoint IN OUT --from wxinlong|mmdet [--config PRESET] [--allow-missing]

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

Without ``--config`` the preset is recognised (:func:`recognise`): the tensor shapes give the head family (SOLO,
Decoupled SOLO, Decoupled SOLO light, SOLOv2 of any width), the ResNet depth (blocks of layer3, bottleneck or basic),
the class count (category conv) and, for SOLO / Decoupled SOLO, the grids (mask-branch outputs); a checkpoint's
``meta`` config text (WX and mmdetection write it) adds what the weights cannot show (SOLOv2's grids, thresholds, the
epoch count). The chosen preset is printed; presets with the same model (e.g. ``solo_r50_1x`` / ``solo_r50_3x``,
which differ only in training settings) are named, and presets of different models that the checkpoint cannot tell
apart are listed with a request for ``--config``. Another class count than the preset's is kept (``num_classes``
override, said in the message).

The class channel order is the same in WX, mmdetection and solo (channel c = the c-th COCO category id in sorted
order), so category weights are copied as they are.
"""

from __future__ import annotations

import argparse
import ast
import math
import os
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "SOURCES",
    "ConversionError",
    "ConversionReport",
    "Recognition",
    "RecognitionError",
    "convert",
    "describe_structure",
    "main",
    "mmdet_to_wx_key",
    "parse_config_text",
    "recognise",
]

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


# ---------------------------------------------------------------------------------------------------------------
# Recognising the model (--config optional)

_FAMILY_NAMES = {
    "solo": "SOLO",
    "decoupled_solo": "Decoupled SOLO",
    "decoupled_solo_light": "Decoupled SOLO light",
    "solov2": "SOLOv2",
    "solov2_light": "SOLOv2 light",
}
# head type in the config text (WX and mmdetection spellings) -> solo head family
_HEAD_TYPES = {
    "SOLOHead": "solo",
    "DecoupledSOLOHead": "decoupled_solo",
    "DecoupledSOLOLightHead": "decoupled_solo_light",
    "SOLOv2Head": "solov2",
    "SOLOV2Head": "solov2",
}
# (layer3 blocks, bottleneck) -> ResNet depth (torchvision layouts, SPEC §11.1)
_DEPTHS = {(2, False): 18, (6, False): 34, (6, True): 50, (23, True): 101, (36, True): 152}
# ModelConfig fields that only steer training data (the multi-scale choice): presets differing in nothing else have
# the same weights layout and the same inference, so they are one model for the converter.
_TRAIN_ONLY_FIELDS = ("train_scales",)
# solov2 and solov2_light build the same modules and run the same inference (solo.models.detector); "light" names a
# smaller setting of the same head (fewer, narrower tower convs, a smaller E), which the other fields already carry.
_SAME_MODULES = {"solov2_light": "solov2"}


class RecognitionError(ValueError):
    """The converter cannot tell the preset from the checkpoint (none fits, or several different models fit)."""


@dataclass
class Recognition:
    """What :func:`recognise` concluded: ``preset`` (with ``num_classes``, which may differ from the preset's),
    the other presets of the same model, what the checkpoint looks like and from what that was read."""

    preset: str
    num_classes: int
    preset_num_classes: int
    same_model: list[str]
    structure: dict[str, Any]
    evidence: str
    notes: list[str] = field(default_factory=list)

    def message(self) -> str:
        lines = [f"recognised preset {self.preset} from {self.evidence}: {describe_structure_text(self.structure)}"]
        if self.num_classes != self.preset_num_classes:
            lines.append(
                f"  with num_classes={self.num_classes} (the preset has {self.preset_num_classes}): the preset's model "
                f"for a custom class count"
            )
        if self.same_model:
            lines.append(
                f"  {', '.join(self.same_model)} {'has' if len(self.same_model) == 1 else 'have'} the same model "
                f"(same weights and inference; they differ only in training settings); pass --config to record "
                f"another preset in the output's meta"
            )
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _wx_shapes(state_dict: Mapping[str, Any], source: str) -> dict[str, tuple[int, ...]]:
    """``{WX key: shape}`` of the tensors of ``state_dict`` (``module.`` stripped; mmdetection names mapped back;
    keys without a WX name kept as they are, so they count as unknown)."""
    keys = [k.removeprefix("module.") for k in state_dict]
    hint = None
    if source == "mmdet" and any(k.startswith("mask_head.conv_mask_list_x.") for k in keys):
        hint = {"bbox_head.dsolo_cate.weight": None}  # conv_cls of a decoupled head is dsolo_cate
    out = {}
    for key, value in zip(keys, state_dict.values()):
        if not isinstance(value, Tensor):
            continue
        new = key if source == "wxinlong" else (mmdet_to_wx_key(key, hint) or key)
        out[new] = tuple(value.shape)
    return out


def _count(shapes: Mapping[str, tuple], prefix: str, suffix: str) -> int:
    """Number of consecutive indices ``i`` with ``f"{prefix}{i}{suffix}"`` in ``shapes``."""
    n = 0
    while f"{prefix}{n}{suffix}" in shapes:
        n += 1
    return n


def describe_structure(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Any]:
    """What the WX-named tensor shapes say about the model: head family, ResNet depth, class count, grids (SOLO and
    Decoupled SOLO reveal them in their mask-branch outputs; SOLOv2's do not), tower size, widths, DCN offsets."""
    d: dict[str, Any] = {}
    if "bbox_head.solo_kernel.weight" in shapes:
        d["family"] = "solov2"
        d["ins_out_channels"] = shapes["bbox_head.solo_kernel.weight"][0]
        pred = shapes.get("mask_feat_head.conv_pred.0.conv.weight")
        if pred:
            d["mask_feat_channels"] = pred[1]
    elif "bbox_head.dsolo_ins_list_x.0.weight" in shapes:
        d["family"] = "decoupled_solo" if "bbox_head.ins_convs_x.0.conv.weight" in shapes else "decoupled_solo_light"
        n = _count(shapes, "bbox_head.dsolo_ins_list_x.", ".weight")
        d["num_grids"] = tuple(shapes[f"bbox_head.dsolo_ins_list_x.{i}.weight"][0] for i in range(n))
    elif "bbox_head.solo_ins_list.0.weight" in shapes:
        d["family"] = "solo"
        n = _count(shapes, "bbox_head.solo_ins_list.", ".weight")
        sq = [shapes[f"bbox_head.solo_ins_list.{i}.weight"][0] for i in range(n)]
        d["num_grids"] = tuple(round(math.sqrt(v)) for v in sq)  # S x S output channels per level
    cate = shapes.get("bbox_head.solo_cate.weight") or shapes.get("bbox_head.dsolo_cate.weight")
    if cate:
        d["num_classes"] = cate[0]
    if "bbox_head.cate_convs.0.conv.weight" in shapes:
        d["stacked_convs"] = _count(shapes, "bbox_head.cate_convs.", ".conv.weight")
        d["seg_feat_channels"] = shapes["bbox_head.cate_convs.0.conv.weight"][0]
    blocks = _count(shapes, "backbone.layer3.", ".conv1.weight")
    if blocks:
        bottleneck = "backbone.layer1.0.conv3.weight" in shapes
        d["depth"] = _DEPTHS.get((blocks, bottleneck), f"unknown ({blocks} blocks in layer3)")
    if "neck.fpn_convs.0.conv.weight" in shapes:
        d["fpn_channels"] = shapes["neck.fpn_convs.0.conv.weight"][0]
    if any(".conv_offset." in k for k in shapes):
        d["dcn"] = True
    return d


def describe_structure_text(d: Mapping[str, Any]) -> str:
    parts = [_FAMILY_NAMES.get(d.get("family"), "no SOLO head")]
    if "depth" in d:
        parts.append(f"ResNet-{d['depth']}")
    if "stacked_convs" in d:
        parts.append(f"{d['stacked_convs']} tower convs x {d['seg_feat_channels']}")
    if "ins_out_channels" in d:
        parts.append(f"E={d['ins_out_channels']}")
    if "num_grids" in d:
        parts.append("grids " + "/".join(map(str, d["num_grids"])))
    if "num_classes" in d:
        parts.append(f"{d['num_classes']} classes")
    if d.get("dcn"):
        parts.append("deformable convolutions")
    return ", ".join(parts)


def _literal(node: ast.AST) -> Any:
    """A config value from its syntax tree: literals, ``dict(...)`` calls, containers, negative numbers. Anything
    else (names, other calls) is None: only literal values are needed here, and nothing is executed."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        return tuple(_literal(e) for e in node.elts)
    if isinstance(node, ast.Dict):
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values) if k is not None}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
        return {kw.arg: _literal(kw.value) for kw in node.keywords if kw.arg is not None}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        v = _literal(node.operand)
        return -v if isinstance(v, (int, float)) else None
    return None


def parse_config_text(text: str) -> dict[str, Any]:
    """The top-level assignments of an mmcv / mmengine config file's text (``model = dict(...)``, ``test_cfg``,
    ``total_epochs`` ...) as plain values, read with :mod:`ast` (never executed). Raises SyntaxError."""
    out: dict[str, Any] = {}
    for stmt in ast.parse(text).body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            out[stmt.targets[0].id] = _literal(stmt.value)
    return out


def _config_text(meta: Any) -> str | None:
    if not isinstance(meta, Mapping):
        return None
    for key in ("config", "cfg"):  # mmcv / mmdetection v2 write "config", mmengine (mmdetection v3) "cfg"
        if isinstance(meta.get(key), str):
            return meta[key]
    return None


def _norm(v: Any) -> Any:
    """Numbers as floats and sequences as tuples, so (8, 8) == [8.0, 8.0]."""
    if isinstance(v, (list, tuple)):
        return tuple(_norm(x) for x in v)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return v
    return float(v)


def meta_model_fields(cfg: Mapping[str, Any], source: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(fields, extra)`` from a parsed config (:func:`parse_config_text`): ``fields`` maps solo ModelConfig field
    names to the config's values (WX and mmdetection spellings; WX counts the background in ``num_classes``);
    ``extra`` has ``family``, ``dcn`` and ``epochs`` where the config says them."""
    model = cfg.get("model") if isinstance(cfg.get("model"), dict) else {}
    head = model.get("bbox_head") or model.get("mask_head") or {}
    head = head if isinstance(head, dict) else {}
    backbone = model.get("backbone") if isinstance(model.get("backbone"), dict) else {}
    neck = model.get("neck") if isinstance(model.get("neck"), dict) else {}
    feat = model.get("mask_feat_head") or head.get("mask_feature_head") or {}
    feat = feat if isinstance(feat, dict) else {}
    test = model.get("test_cfg") or cfg.get("test_cfg") or {}
    test = test if isinstance(test, dict) else {}
    fields: dict[str, Any] = {}
    extra: dict[str, Any] = {}

    def put(name, value):
        if value is not None:
            fields[name] = value

    put("depth", backbone.get("depth"))
    put("fpn_channels", neck.get("out_channels"))
    if isinstance(head.get("num_classes"), int):
        # WX (mmdetection v1) counts the background class; mmdetection v2/v3 does not
        put("num_classes", head["num_classes"] - 1 if source == "wxinlong" else head["num_classes"])
    put("stacked_convs", head.get("stacked_convs"))
    put("seg_feat_channels", head.get("seg_feat_channels", head.get("feat_channels")))
    put("num_grids", head.get("num_grids"))
    put("strides", head.get("strides"))
    put("scale_ranges", head.get("scale_ranges"))
    put("sigma", head.get("sigma", head.get("pos_scale")))
    if source == "wxinlong":
        put("ins_out_channels", head.get("ins_out_channels"))
        put("mask_feat_channels", feat.get("out_channels"))
    else:
        put("ins_out_channels", feat.get("out_channels"))
        put("mask_feat_channels", feat.get("feat_channels"))
    put("nms_pre", test.get("nms_pre"))
    put("score_thr", test.get("score_thr"))
    put("mask_thr", test.get("mask_thr"))
    put("update_thr", test.get("update_thr", test.get("filter_thr")))
    put("nms_kernel", test.get("kernel"))
    put("nms_sigma", test.get("sigma"))
    put("max_per_img", test.get("max_per_img"))
    if head.get("type") in _HEAD_TYPES:
        extra["family"] = _HEAD_TYPES[head["type"]]
    if backbone.get("dcn") or head.get("dcn_cfg") or head.get("with_deform") or head.get("use_dcn_in_tower"):
        extra["dcn"] = True
    runner = cfg.get("runner") if isinstance(cfg.get("runner"), dict) else {}
    train_cfg = cfg.get("train_cfg") if isinstance(cfg.get("train_cfg"), dict) else {}
    epochs = cfg.get("total_epochs") or runner.get("max_epochs") or train_cfg.get("max_epochs")
    if isinstance(epochs, int):
        extra["epochs"] = epochs
    return fields, extra


def _fits(shapes: Mapping[str, tuple], target: Mapping[str, tuple]) -> tuple[bool, int | None]:
    """Whether ``shapes`` (a checkpoint's, WX names) is exactly ``target``'s layout, allowing another class count
    (the class conv's output channels) and absent BN counters; returns (fits, class count of the checkpoint)."""
    num_classes = None
    for key, shape in target.items():
        got = shapes.get(key)
        if got is None:
            if key.endswith("num_batches_tracked"):
                continue
            return False, None
        if key in (
            "bbox_head.solo_cate.weight",
            "bbox_head.dsolo_cate.weight",
            "bbox_head.solo_cate.bias",
            "bbox_head.dsolo_cate.bias",
        ):
            if got[1:] != shape[1:]:
                return False, None
            num_classes = got[0]
        elif got != shape:
            return False, None
    if any(k not in target for k in shapes):
        return False, None
    return True, num_classes


def _model_key(model_cfg) -> tuple:
    """The model of a preset as far as weights and inference go (training-only fields and class count dropped)."""
    import dataclasses

    d = dataclasses.asdict(model_cfg)
    for name in (*_TRAIN_ONLY_FIELDS, "num_classes"):
        d.pop(name)
    d["head"] = _SAME_MODULES.get(d["head"], d["head"])
    return tuple(sorted((k, _norm(v)) for k, v in d.items()))


def _preset_shapes(name: str, cache: dict) -> dict[str, tuple[int, ...]]:
    if name not in cache:
        from solo.models import build_model

        with torch.device("meta"):  # shapes only: no memory, no initialisation cost
            model = build_model(name)
        cache[name] = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return cache[name]


_SHAPE_CACHE: dict[str, dict[str, tuple[int, ...]]] = {}


def recognise(
    state_dict: Mapping[str, Any], source: str, meta: Any = None, presets: Mapping[str, Any] | None = None
) -> Recognition:
    """The preset whose model ``state_dict`` (naming ``source``) is, read from the tensor shapes and, where ``meta``
    holds the config text (WX / mmdetection checkpoints do), from the config's model settings.

    A preset fits when the checkpoint's layout is exactly its model's (any class count). The config text then
    narrows the fitting presets by the settings the weights cannot show (SOLOv2's grids, inference thresholds ...).
    Presets left that differ only in training settings (see ``_TRAIN_ONLY_FIELDS``) are one model: the first in
    ``PRESETS`` order is taken (or the one with the config's epoch count) and the others are named. Raises
    :class:`RecognitionError` when no preset fits, or when presets of different models are left (naming them and
    how they differ: pass ``--config``)."""
    from solo.configs.presets import PRESETS

    presets = PRESETS if presets is None else presets
    shapes = _wx_shapes(state_dict, source)
    structure = describe_structure(shapes)
    notes: list[str] = []
    meta_fields: dict[str, Any] = {}
    meta_extra: dict[str, Any] = {}
    text = _config_text(meta)
    if text is not None:
        try:
            meta_fields, meta_extra = meta_model_fields(parse_config_text(text), source)
        except SyntaxError as e:
            notes.append(f"the meta config text could not be parsed ({e.msg}, line {e.lineno}); shapes only")
    if structure.get("dcn") or meta_extra.get("dcn"):
        raise RecognitionError(
            f"the checkpoint has deformable convolutions ({describe_structure_text(structure)}); solo has no DCN "
            f"presets yet"
        )
    family = structure.get("family")
    if family is None:
        raise RecognitionError(
            f"no SOLO head in the checkpoint with --from {source} (none of bbox_head.solo_ins_list / "
            f"dsolo_ins_list_x / solo_kernel{'' if source == 'wxinlong' else ' after mapping mask_head.* names'}); "
            f"{len(shapes)} tensors, e.g. {list(shapes)[:3]}"
        )
    # cheap filter first (head family and depth from the config), then the exact layout of each remaining preset
    fitting: list[tuple[str, int]] = []
    for name, cfg in presets.items():
        m = cfg.model
        if m.dcn or _SAME_MODULES.get(m.head, m.head) != _SAME_MODULES.get(family, family):
            continue
        if m.depth != structure.get("depth"):
            continue
        ok, num_classes = _fits(shapes, _preset_shapes(name, _SHAPE_CACHE))
        if ok:
            fitting.append((name, num_classes if num_classes is not None else m.num_classes))
    if not fitting:
        raise RecognitionError(
            f"no preset has this model: {describe_structure_text(structure)} ({len(shapes)} tensors); pass --config "
            f"PRESET (with --allow-missing / --allow-unmapped for a partial fit)"
        )
    evidence = "the key names and tensor shapes"
    if meta_fields or meta_extra:
        evidence = "its meta config text and the tensor shapes"
        if meta_extra.get("family") and _SAME_MODULES.get(meta_extra["family"], meta_extra["family"]) != family:
            notes.append(f"the meta config names a {meta_extra['family']} head but the weights are {family}")
        for name, value in meta_fields.items():
            if name == "num_classes":
                continue  # the class conv's shape says it
            kept = [(p, n) for p, n in fitting if _norm(getattr(presets[p].model, name)) == _norm(value)]
            if kept:
                fitting = kept
            else:
                notes.append(f"the meta config's {name}={value} is not that of any fitting preset; ignored")
    groups: dict[tuple, list[tuple[str, int]]] = {}
    for p, n in fitting:
        groups.setdefault(_model_key(presets[p].model), []).append((p, n))
    if len(groups) > 1:
        import dataclasses

        firsts = [g[0][0] for g in groups.values()]
        base = dataclasses.asdict(presets[firsts[0]].model)
        differ = sorted(
            {
                k
                for p in firsts[1:]
                for k, v in dataclasses.asdict(presets[p].model).items()
                if _norm(v) != _norm(base[k]) and k not in _TRAIN_ONLY_FIELDS
            }
        )
        listing = "; ".join(", ".join(p for p, _ in g) for g in groups.values())
        raise RecognitionError(
            f"several presets fit {describe_structure_text(structure)} and the checkpoint cannot tell them apart: "
            f"{listing} (their models differ in {', '.join(differ)}); pass --config with the right one"
        )
    (group,) = groups.values()
    chosen = group[0]
    if meta_extra.get("epochs") is not None:
        by_epochs = [g for g in group if presets[g[0]].train.epochs == meta_extra["epochs"]]
        if by_epochs:
            chosen = by_epochs[0]
    preset, num_classes = chosen
    return Recognition(
        preset=preset,
        num_classes=num_classes,
        preset_num_classes=presets[preset].model.num_classes,
        same_model=[p for p, _ in group if p != preset],
        # the weights cannot say "light" for SOLOv2 (same modules, narrower); the preset's name for it can
        structure={**structure, "family": presets[preset].model.head},
        evidence=evidence,
        notes=notes,
    )


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
    parser.add_argument(
        "--config",
        default=None,
        help="solo preset whose model receives the weights (default: recognised from the checkpoint's meta config "
        "text, key names and tensor shapes)",
    )
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
    if args.config is None:
        try:
            rec = recognise(state, args.source, ckpt.get("meta"))
        except RecognitionError as e:
            print(f"error: {args.input}: {e}", file=sys.stderr)
            return 2
        if args.num_classes is not None and args.num_classes != rec.num_classes:
            print(
                f"error: --num-classes {args.num_classes}, but the class conv of {args.input} has {rec.num_classes} "
                f"output channels",
                file=sys.stderr,
            )
            return 2
        print(rec.message())
        args.config = rec.preset
        if rec.num_classes != rec.preset_num_classes:
            args.num_classes = rec.num_classes
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
