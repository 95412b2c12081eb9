"""The model presets of SOLO_SPEC.md §6 (non-DCN) and small presets for the synthetic dataset."""

from __future__ import annotations

from dataclasses import replace

from solo.configs.base import (
    LIGHT_448_RANGES,
    LIGHT_RANGES,
    SCALES_1X,
    SCALES_3X,
    SCALES_LIGHT_768,
    SCALES_LIGHT_852,
    Config,
    ModelConfig,
    TrainConfig,
)

SCHEDULE_1X = TrainConfig(epochs=12, milestones=(9, 11))
SCHEDULE_3X = TrainConfig(epochs=36, milestones=(27, 33))

_SOLO = ModelConfig(head="solo", stacked_convs=7, seg_feat_channels=256)
_DSOLO = ModelConfig(head="decoupled_solo", stacked_convs=7, seg_feat_channels=256)
_DSOLO_LIGHT = ModelConfig(
    head="decoupled_solo_light",
    stacked_convs=4,
    seg_feat_channels=256,
    scale_ranges=LIGHT_RANGES,
    train_scales=SCALES_LIGHT_852,
    test_scale=(852, 512),
)
_SOLOV2 = ModelConfig(head="solov2", stacked_convs=4, seg_feat_channels=512, ins_out_channels=256)
_SOLOV2_LIGHT_448 = ModelConfig(
    head="solov2_light",
    stacked_convs=2,
    seg_feat_channels=256,
    ins_out_channels=128,
    scale_ranges=LIGHT_448_RANGES,
    train_scales=SCALES_LIGHT_768,
    test_scale=(768, 448),
)
_V2_TRAIN = {"warmup_ratio": 0.01}


def _preset(name: str, model: ModelConfig, schedule: TrainConfig, pretrained: bool = True, **train) -> Config:
    """A preset; ``pretrained``: the backbone starts from the torchvision ImageNet file of its depth, as the original's
    ``pretrained='torchvision://resnetXX'`` (SPEC §3), with the model's frozen_stages / norm_eval (1 / True)."""
    if pretrained:
        model = replace(model, backbone_weights=f"torchvision://resnet{model.depth}")
    return Config(name=name, model=model, train=replace(schedule, **train))


PRESETS: dict[str, Config] = {
    c.name: c
    for c in (
        _preset("solo_r50_1x", replace(_SOLO, train_scales=SCALES_1X), SCHEDULE_1X),
        _preset("solo_r50_3x", replace(_SOLO, train_scales=SCALES_3X), SCHEDULE_3X),
        _preset("solo_r101_3x", replace(_SOLO, depth=101, train_scales=SCALES_3X), SCHEDULE_3X),
        _preset("decoupled_solo_r50_1x", replace(_DSOLO, train_scales=SCALES_1X), SCHEDULE_1X),
        _preset("decoupled_solo_r50_3x", replace(_DSOLO, train_scales=SCALES_3X), SCHEDULE_3X),
        _preset("decoupled_solo_r101_3x", replace(_DSOLO, depth=101, train_scales=SCALES_3X), SCHEDULE_3X),
        _preset("decoupled_solo_light_r50_3x", _DSOLO_LIGHT, SCHEDULE_3X),
        _preset("solov2_r50_1x", replace(_SOLOV2, train_scales=SCALES_1X), SCHEDULE_1X, **_V2_TRAIN),
        _preset("solov2_r50_3x", replace(_SOLOV2, train_scales=SCALES_3X), SCHEDULE_3X, **_V2_TRAIN),
        _preset("solov2_r101_3x", replace(_SOLOV2, depth=101, train_scales=SCALES_3X), SCHEDULE_3X, **_V2_TRAIN),
        _preset("solov2_light_448_r18_3x", replace(_SOLOV2_LIGHT_448, depth=18), SCHEDULE_3X, **_V2_TRAIN),
        _preset("solov2_light_448_r34_3x", replace(_SOLOV2_LIGHT_448, depth=34), SCHEDULE_3X, **_V2_TRAIN),
        _preset("solov2_light_448_r50_3x", replace(_SOLOV2_LIGHT_448, depth=50), SCHEDULE_3X, **_V2_TRAIN),
    )
}

# Small presets for the synthetic shapes dataset: images of a few hundred pixels (test scale 320x256), R18, a light
# head (2 tower convs of 128 channels, E = 64), grids and scale ranges shrunk to the small canvas (the COCO ranges
# scaled by 1/3 and rounded to powers of two), 3 classes and a short schedule. They train from scratch (no ImageNet
# weights to start from), so nothing is frozen and BatchNorm learns its statistics, with AdamW (lr 1e-3 at 4 images
# per step) and bf16 autocast where the CPU/GPU computes bf16 natively: on a 2-core CPU, segm AP about 0.4 on the
# held-out synthetic images in under 15 minutes (README, "The main job").
SYNTHETIC_RANGES = ((1, 32), (16, 64), (32, 128), (64, 256), (128, 1024))
SYNTHETIC_GRIDS = (12, 10, 8, 6, 4)
SCALES_SYNTHETIC = tuple((320, s) for s in (256, 240, 224, 208, 192))
SCHEDULE_SYNTHETIC = TrainConfig(
    epochs=16,
    milestones=(12, 15),
    optimizer="adamw",
    lr=0.004,
    reference_batch=16,
    weight_decay=0.05,
    warmup_iters=100,
    warmup_ratio=0.01,
    batch_size=4,
    amp="auto",
)
_SYNTHETIC = ModelConfig(
    depth=18,
    frozen_stages=-1,
    norm_eval=False,
    num_classes=3,
    fpn_channels=128,
    stacked_convs=2,
    seg_feat_channels=128,
    num_grids=SYNTHETIC_GRIDS,
    scale_ranges=SYNTHETIC_RANGES,
    mask_feat_channels=64,
    ins_out_channels=64,
    nms_pre=200,
    max_per_img=50,
    train_scales=SCALES_SYNTHETIC,
    test_scale=(320, 256),
)

SYNTHETIC_PRESETS: dict[str, Config] = {
    c.name: c
    for c in (
        _preset(f"{head}_synthetic_r18", replace(_SYNTHETIC, head=head), SCHEDULE_SYNTHETIC, pretrained=False)
        for head in ("solo", "decoupled_solo", "decoupled_solo_light", "solov2", "solov2_light")
    )
}
PRESETS.update(SYNTHETIC_PRESETS)

# Deformable-convolution presets of the model zoo: named, so asking for them gives a clear error.
DCN_PRESETS = (
    "decoupled_solo_light_dcn_r50_3x",
    "solov2_r101_dcn_3x",
    "solov2_x101_dcn_3x",
    "solov2_light_512_dcn_r50_3x",
)


def get_config(name: str) -> Config:
    """The preset called ``name`` (see :data:`PRESETS`)."""
    if name in DCN_PRESETS:
        raise NotImplementedError(
            f"preset {name!r} uses deformable convolutions, which solo does not support yet; "
            f"presets without DCN: {sorted(PRESETS)}"
        )
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known presets: {sorted(PRESETS)}")
    return PRESETS[name]
