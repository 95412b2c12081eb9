"""Shared helpers of the model tests: a small configuration of every head."""

import dataclasses

from solo.configs import get_config


def small_cfg(head: str, **kw):
    """R18, 32-channel towers, grids 8..3, 3 classes, images resized to fit 128 x 96."""
    base = get_config(f"{head}_synthetic_r18").model
    kw = {
        "num_classes": 3,
        "frozen_stages": 1,  # the model-zoo backbone setting (the synthetic presets train everything)
        "norm_eval": True,
        "fpn_channels": 32,
        "seg_feat_channels": 32,
        "mask_feat_channels": 32,
        "ins_out_channels": 32,
        "num_grids": (8, 6, 5, 4, 3),
        "train_scales": ((128, 96),),
        "test_scale": (128, 96),
        **kw,
    }
    return dataclasses.replace(base, **kw)
