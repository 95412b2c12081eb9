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


def solo_head(
    num_classes: int = 80, grids=GRIDS, fpn: int = 256, stacked: int = 7, ch: int = 256
) -> dict[str, tuple[int, ...]]:
    """SPEC §11.3 (54 tensors for R50)."""
    d = _tower("ins_convs", stacked, fpn + 2, ch) | _tower("cate_convs", stacked, fpn, ch)
    for i, s in enumerate(grids):
        d[f"solo_ins_list.{i}.weight"] = (s * s, ch, 1, 1)
        d[f"solo_ins_list.{i}.bias"] = (s * s,)
    d["solo_cate.weight"] = (num_classes, ch, 3, 3)
    d["solo_cate.bias"] = (num_classes,)
    return d


def decoupled_solo_head(
    num_classes: int = 80, grids=GRIDS, fpn: int = 256, stacked: int = 7, ch: int = 256, light: bool = False
) -> dict[str, tuple[int, ...]]:
    """SPEC §11.4 (85 tensors for R50; light: one shared mask tower with both coordinates, first conv fpn + 2 in)."""
    if light:
        d = _tower("ins_convs", stacked, fpn + 2, ch)
    else:
        d = _tower("ins_convs_x", stacked, fpn + 1, ch) | _tower("ins_convs_y", stacked, fpn + 1, ch)
    d |= _tower("cate_convs", stacked, fpn, ch)
    for axis in ("x", "y"):
        for i, s in enumerate(grids):
            d[f"dsolo_ins_list_{axis}.{i}.weight"] = (s, ch, 3, 3)
            d[f"dsolo_ins_list_{axis}.{i}.bias"] = (s,)
    d["dsolo_cate.weight"] = (num_classes, ch, 3, 3)
    d["dsolo_cate.bias"] = (num_classes,)
    return d


def solov2_mask_feat_head(e: int = 256, mid: int = 128, fpn: int = 256) -> dict[str, tuple[int, ...]]:
    """SPEC §11.5 ``mask_feat_head.*`` (24 tensors)."""
    d = {}
    for level in range(4):
        for j in range(max(1, level)):
            cin = (fpn + 2 if level == 3 else fpn) if j == 0 else mid
            d[f"convs_all_levels.{level}.conv{j}.conv.weight"] = (mid, cin, 3, 3)
            d[f"convs_all_levels.{level}.conv{j}.gn.weight"] = (mid,)
            d[f"convs_all_levels.{level}.conv{j}.gn.bias"] = (mid,)
    d["conv_pred.0.conv.weight"] = (e, mid, 1, 1)
    d["conv_pred.0.gn.weight"] = (e,)
    d["conv_pred.0.gn.bias"] = (e,)
    return d


def solov2_head(
    num_classes: int = 80, stacked: int = 4, ch: int = 512, e: int = 256, fpn: int = 256
) -> dict[str, tuple[int, ...]]:
    """SPEC §11.5 ``bbox_head.*`` (28 tensors for R50; cate registered before kernel)."""
    d = _tower("cate_convs", stacked, fpn, ch) | _tower("kernel_convs", stacked, fpn + 2, ch)
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


def preset_layout(m, num_classes: int | None = None) -> dict[str, tuple[int, ...]]:
    """The WX checkpoint layout of a model with the settings of ``m`` (a ``solo.configs.ModelConfig``: head, depth,
    class count, FPN width, tower size and width, grids, SOLOv2's mask-feature width and E), from the SPEC tables."""
    nc = m.num_classes if num_classes is None else num_classes
    fpn, stacked, ch = m.fpn_channels, m.stacked_convs, m.seg_feat_channels
    d = _prefixed("backbone", torchvision_resnet(m.depth)) | _prefixed("neck", neck(m.depth, fpn))
    if m.head == "solo":
        d |= _prefixed("bbox_head", solo_head(nc, m.num_grids, fpn, stacked, ch))
    elif m.head in ("decoupled_solo", "decoupled_solo_light"):
        light = m.head == "decoupled_solo_light"
        d |= _prefixed("bbox_head", decoupled_solo_head(nc, m.num_grids, fpn, stacked, ch, light))
    elif m.head in ("solov2", "solov2_light"):
        d |= _prefixed("mask_feat_head", solov2_mask_feat_head(m.ins_out_channels, m.mask_feat_channels, fpn))
        d |= _prefixed("bbox_head", solov2_head(nc, stacked, ch, m.ins_out_channels, fpn))
    else:
        raise ValueError(m.head)
    return d


_WX_HEAD_TYPES = {
    "solo": "SOLOHead",
    "decoupled_solo": "DecoupledSOLOHead",
    "decoupled_solo_light": "DecoupledSOLOLightHead",
    "solov2": "SOLOv2Head",
    "solov2_light": "SOLOv2Head",
}
_MMDET_HEAD_TYPES = {**_WX_HEAD_TYPES, "solov2": "SOLOV2Head", "solov2_light": "SOLOV2Head"}


def config_text(m, source: str, epochs: int, **overrides) -> str:
    """The config file text that WXinlong/SOLO (``source`` 'wxinlong', mmdetection v1 style) or mmdetection v2
    ('mmdet') stores in a checkpoint's ``meta['config']``, for a model with the settings of ``m`` (a ModelConfig;
    ``overrides`` replace head settings, e.g. ``num_grids``). Written the way those repositories' configs are,
    with the surrounding data / schedule settings a real config has."""
    g = {k: getattr(m, k) for k in ("num_grids", "scale_ranges", "strides", "sigma")} | overrides
    v2 = m.head in ("solov2", "solov2_light")
    in_ch = [64, 128, 256, 512] if m.depth < 50 else [256, 512, 1024, 2048]
    backbone = (
        f"dict(type='ResNet', depth={m.depth}, num_stages=4, out_indices=(0, 1, 2, 3), frozen_stages=1, "
        f"style='pytorch')"
    )
    neck = f"dict(type='FPN', in_channels={in_ch}, out_channels={m.fpn_channels}, start_level=0, num_outs=5)"
    grids, ranges, strides = list(g["num_grids"]), tuple(tuple(r) for r in g["scale_ranges"]), list(g["strides"])
    test = {"nms_pre": m.nms_pre, "score_thr": m.score_thr, "mask_thr": m.mask_thr}
    if source == "wxinlong":
        head = (
            f"dict(type='{_WX_HEAD_TYPES[m.head]}', num_classes={m.num_classes + 1}, in_channels={m.fpn_channels}, "
            f"stacked_convs={m.stacked_convs}, seg_feat_channels={m.seg_feat_channels}, strides={strides}, "
            f"scale_ranges={ranges}, sigma={g['sigma']}, num_grids={grids}, "
            + (f"ins_out_channels={m.ins_out_channels}, " if v2 else "")
            + "loss_ins=dict(type='DiceLoss', use_sigmoid=True, loss_weight=3.0), "
            "loss_cate=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0))"
        )
        feat = (
            f",\n    mask_feat_head=dict(type='MaskFeatHead', in_channels={m.fpn_channels}, "
            f"out_channels={m.mask_feat_channels}, start_level=0, end_level=3, num_classes={m.ins_out_channels}, "
            f"norm_cfg=dict(type='GN', num_groups=32, requires_grad=True))"
            if v2
            else ""
        )
        test_cfg = dict(
            test, update_thr=m.update_thr, kernel=m.nms_kernel, sigma=m.nms_sigma, max_per_img=m.max_per_img
        )
        return (
            "# model settings\n"
            f"model = dict(\n    type='{'SOLOv2' if v2 else 'SOLO'}',\n    pretrained='torchvision://resnet{m.depth}',\n"
            f"    backbone={backbone},\n    neck={neck},\n    bbox_head={head}{feat})\n"
            "train_cfg = dict()\n"
            f"test_cfg = {test_cfg!r}\n"
            "dataset_type = 'CocoDataset'\n"
            "img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)\n"
            "data = dict(imgs_per_gpu=2, workers_per_gpu=2, train=dict(type=dataset_type, img_prefix=data_root))\n"
            "optimizer = dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001)\n"
            f"total_epochs = {epochs}\n"
            f"work_dir = './work_dirs/{m.head}_release_r{m.depth}_fpn_8gpu_{epochs // 12}x'\n"
        )
    feat = (
        f", mask_feature_head=dict(feat_channels={m.mask_feat_channels}, start_level=0, end_level=3, "
        f"out_channels={m.ins_out_channels}, mask_stride=4, norm_cfg=dict(type='GN', num_groups=32, "
        "requires_grad=True))"
        if v2
        else ""
    )
    head = (
        f"dict(type='{_MMDET_HEAD_TYPES[m.head]}', num_classes={m.num_classes}, in_channels={m.fpn_channels}, "
        f"stacked_convs={m.stacked_convs}, feat_channels={m.seg_feat_channels}, strides={strides}, "
        f"scale_ranges={ranges}, pos_scale={g['sigma']}, num_grids={grids}, cls_down_index=0{feat}, "
        "loss_mask=dict(type='DiceLoss', use_sigmoid=True, activate=False, loss_weight=3.0), "
        "norm_cfg=dict(type='GN', num_groups=32, requires_grad=True))"
    )
    test_cfg = dict(test, filter_thr=m.update_thr, kernel=m.nms_kernel, sigma=m.nms_sigma, max_per_img=m.max_per_img)
    return (
        "_base_ = ['../_base_/datasets/coco_instance.py', '../_base_/default_runtime.py']\n"
        f"model = dict(\n    type='{'SOLOv2' if v2 else 'SOLO'}',\n    backbone={backbone},\n    neck={neck},\n"
        f"    mask_head={head},\n    test_cfg={test_cfg!r})\n"
        "optimizer = dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001)\n"
        f"lr_config = dict(policy='step', warmup='linear', warmup_iters=500, step=[{epochs - 3}, {epochs - 1}])\n"
        f"runner = dict(type='EpochBasedRunner', max_epochs={epochs})\n"
    )


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
