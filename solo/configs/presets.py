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


def _preset(name: str, model: ModelConfig, schedule: TrainConfig, **train) -> Config:
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
