"""The official checkpoint layout of SOLO_SPEC.md §11, written from the SPEC tables (not from solo's modules).

``official_layout(variant, depth)`` gives ``{key: shape}`` of a WXinlong/SOLO checkpoint's ``state_dict``;
``to_mmdet_key`` renames a WX key the way mmdetection names it (SPEC §11.6, forward direction);
``random_state_dict`` fills a layout with random values of the right kinds (BN variances positive,
``num_batches_tracked`` int64 scalars). Used by the converter and backbone tests.
"""

from __future__ import annotations

import torch

GRIDS = (40, 36, 24, 16, 12)
BN_SUFFIXES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def _bn(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.{s}": (() if s == "num_batches_tracked" else (c,)) for s in BN_SUFFIXES}


def torchvision_resnet(depth: int) -> dict[str, tuple[int, ...]]:
    """torchvision ``resnet{depth}`` state-dict keys and shapes, without ``fc`` (SPEC §11.1)."""
    bottleneck = depth >= 50
    blocks = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}[depth]
    exp = 4 if bottleneck else 1
    out = {"conv1.weight": (64, 3, 7, 7), **_bn("bn1", 64)}
    in_ch = 64
    for stage, (planes, n) in enumerate(zip((64, 128, 256, 512), blocks), start=1):
        for b in range(n):
            p = f"layer{stage}.{b}"
            if bottleneck:
                out[f"{p}.conv1.weight"] = (planes, in_ch, 1, 1)
                out |= _bn(f"{p}.bn1", planes)
                out[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                out |= _bn(f"{p}.bn2", planes)
                out[f"{p}.conv3.weight"] = (planes * 4, planes, 1, 1)
                out |= _bn(f"{p}.bn3", planes * 4)
            else:
                out[f"{p}.conv1.weight"] = (planes, in_ch, 3, 3)
                out |= _bn(f"{p}.bn1", planes)
                out[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                out |= _bn(f"{p}.bn2", planes)
            if b == 0 and (stage > 1 or in_ch != planes * exp):
                out[f"{p}.downsample.0.weight"] = (planes * exp, in_ch, 1, 1)
                out |= _bn(f"{p}.downsample.1", planes * exp)
            in_ch = planes * exp
    return out


def neck(depth: int, out: int = 256) -> dict[str, tuple[int, ...]]:
    """SPEC §11.2: 16 tensors."""
    cins = (64, 128, 256, 512) if depth < 50 else (256, 512, 1024, 2048)
    d = {}
    for i, c in enumerate(cins):
        d[f"lateral_convs.{i}.conv.weight"] = (out, c, 1, 1)
        d[f"lateral_convs.{i}.conv.bias"] = (out,)
    for i in range(4):
        d[f"fpn_convs.{i}.conv.weight"] = (out, out, 3, 3)
        d[f"fpn_convs.{i}.conv.bias"] = (out,)
    return d


def _tower(prefix: str, n: int, first_in: int, ch: int) -> dict[str, tuple[int, ...]]:
    d = {}
    for i in range(n):
        d[f"{prefix}.{i}.conv.weight"] = (ch, first_in if i == 0 else ch, 3, 3)
        d[f"{prefix}.{i}.gn.weight"] = (ch,)
        d[f"{prefix}.{i}.gn.bias"] = (ch,)
    return d


def solo_head(num_classes: int = 80) -> dict[str, tuple[int, ...]]:
    """SPEC §11.3 (54 tensors)."""
    d = _tower("ins_convs", 7, 258, 256) | _tower("cate_convs", 7, 256, 256)
    for i, s in enumerate(GRIDS):
        d[f"solo_ins_list.{i}.weight"] = (s * s, 256, 1, 1)
        d[f"solo_ins_list.{i}.bias"] = (s * s,)
    d["solo_cate.weight"] = (num_classes, 256, 3, 3)
    d["solo_cate.bias"] = (num_classes,)
    return d


def decoupled_solo_head(num_classes: int = 80) -> dict[str, tuple[int, ...]]:
    """SPEC §11.4 (85 tensors)."""
    d = _tower("ins_convs_x", 7, 257, 256) | _tower("ins_convs_y", 7, 257, 256) | _tower("cate_convs", 7, 256, 256)
    for axis in ("x", "y"):
        for i, s in enumerate(GRIDS):
            d[f"dsolo_ins_list_{axis}.{i}.weight"] = (s, 256, 3, 3)
            d[f"dsolo_ins_list_{axis}.{i}.bias"] = (s,)
    d["dsolo_cate.weight"] = (num_classes, 256, 3, 3)
    d["dsolo_cate.bias"] = (num_classes,)
    return d


def solov2_mask_feat_head(e: int = 256, mid: int = 128) -> dict[str, tuple[int, ...]]:
    """SPEC §11.5 ``mask_feat_head.*`` (24 tensors)."""
    d = {}
    for level in range(4):
        for j in range(max(1, level)):
            cin = (258 if level == 3 else 256) if j == 0 else mid
            d[f"convs_all_levels.{level}.conv{j}.conv.weight"] = (mid, cin, 3, 3)
            d[f"convs_all_levels.{level}.conv{j}.gn.weight"] = (mid,)
            d[f"convs_all_levels.{level}.conv{j}.gn.bias"] = (mid,)
    d["conv_pred.0.conv.weight"] = (e, mid, 1, 1)
    d["conv_pred.0.gn.weight"] = (e,)
    d["conv_pred.0.gn.bias"] = (e,)
    return d


def solov2_head(num_classes: int = 80, stacked: int = 4, ch: int = 512, e: int = 256) -> dict[str, tuple[int, ...]]:
    """SPEC §11.5 ``bbox_head.*`` (28 tensors for R50; cate registered before kernel)."""
    d = _tower("cate_convs", stacked, 256, ch) | _tower("kernel_convs", stacked, 258, ch)
    d["solo_cate.weight"] = (num_classes, ch, 3, 3)
    d["solo_cate.bias"] = (num_classes,)
    d["solo_kernel.weight"] = (e, ch, 3, 3)
    d["solo_kernel.bias"] = (e,)
    return d


def _prefixed(prefix: str, d: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.{k}": v for k, v in d.items()}


def official_layout(variant: str, depth: int = 50, num_classes: int = 80) -> dict[str, tuple[int, ...]]:
    """WX checkpoint ``state_dict`` layout of 'solo', 'decoupled_solo' or 'solov2' (registration order)."""
    d = _prefixed("backbone", torchvision_resnet(depth)) | _prefixed("neck", neck(depth))
    if variant == "solo":
        d |= _prefixed("bbox_head", solo_head(num_classes))
    elif variant == "decoupled_solo":
        d |= _prefixed("bbox_head", decoupled_solo_head(num_classes))
    elif variant == "solov2":
        d |= _prefixed("mask_feat_head", solov2_mask_feat_head())
        d |= _prefixed("bbox_head", solov2_head(num_classes))
    else:
        raise ValueError(variant)
    return d


_MMDET = {
    "ins_convs_x": "mask_convs_x",
    "ins_convs_y": "mask_convs_y",
    "ins_convs": "mask_convs",
    "cate_convs": "cls_convs",
    "solo_ins_list": "conv_mask_list",
    "dsolo_ins_list_x": "conv_mask_list_x",
    "dsolo_ins_list_y": "conv_mask_list_y",
    "solo_cate": "conv_cls",
    "dsolo_cate": "conv_cls",
    "kernel_convs": "kernel_convs",
    "solo_kernel": "conv_kernel",
}


def to_mmdet_key(key: str) -> str:
    """SPEC §11.6, WX -> mmdetection."""
    if key.startswith("mask_feat_head."):
        rest = key[len("mask_feat_head.") :]
        if rest.startswith("conv_pred.0."):
            rest = "conv_pred." + rest[len("conv_pred.0.") :]
        return "mask_head.mask_feature_head." + rest
    if key.startswith("bbox_head."):
        first, _, tail = key[len("bbox_head.") :].partition(".")
        return f"mask_head.{_MMDET[first]}.{tail}"
    return key


def is_buffer(key: str) -> bool:
    return key.endswith(BUFFER_SUFFIXES)


def random_state_dict(layout: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, shape in layout.items():
        if k.endswith("num_batches_tracked"):
            out[k] = torch.randint(0, 1000, shape, generator=g, dtype=torch.int64)
        elif k.endswith("running_var"):
            out[k] = torch.rand(shape, generator=g) + 0.5
        else:
            out[k] = torch.randn(shape, generator=g)
    return out


def param_count(layout: dict[str, tuple[int, ...]]) -> int:
    """Number of learnable parameters implied by a layout (BN running stats and counters excluded)."""
    total = 0
    for k, shape in layout.items():
        if not is_buffer(k):
            n = 1
            for s in shape:
                n *= s
            total += n
    return total
