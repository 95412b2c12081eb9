"""Configuration dataclasses of solo's models and training schedules (values from SOLO_SPEC.md §2, §6).

Plain frozen dataclasses: a preset is a :class:`Config` in :data:`solo.configs.PRESETS`; change a field with
``dataclasses.replace`` (or ``Config.override("model.num_classes=20", ...)`` for command-line overrides).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

HEADS = ("solo", "decoupled_solo", "decoupled_solo_light", "solov2", "solov2_light")

STANDARD_RANGES = ((1, 96), (48, 192), (96, 384), (192, 768), (384, 2048))
LIGHT_RANGES = ((1, 64), (32, 128), (64, 256), (128, 512), (256, 2048))
LIGHT_448_RANGES = ((1, 56), (28, 112), (56, 224), (112, 448), (224, 896))

# (long side max, short side) choices of the keep-ratio resize; training picks one at random per image.
SCALES_1X = ((1333, 800),)
SCALES_3X = tuple((1333, s) for s in (800, 768, 736, 704, 672, 640))
SCALES_LIGHT_852 = tuple((852, s) for s in (512, 480, 448, 416, 384, 352))
SCALES_LIGHT_768 = tuple((768, s) for s in (512, 480, 448, 416, 384, 352))


@dataclass(frozen=True)
class ModelConfig:
    """Everything that defines a SOLO-family model (architecture, targets, losses, inference)."""

    head: str = "solov2"  # one of HEADS
    depth: int = 50  # ResNet depth: 18, 34, 50, 101
    num_classes: int = 80  # foreground classes (no background channel)
    dcn: bool = False  # deformable-conv variants: named by presets, not supported yet
    # backbone (SPEC §3)
    # ImageNet weights the backbone starts from (solo.models.pretrained): "torchvision://resnetXX", an http(s):// or
    # file:// URL, a local path, or None (from scratch). Loaded by `python -m solo.train`, not by build_model (no
    # download when a model is only built). The model-zoo presets name the torchvision file of their depth.
    backbone_weights: str | None = None
    frozen_stages: int = 1
    norm_eval: bool = True
    # neck (SPEC §4)
    fpn_channels: int = 256
    # head (SPEC §5)
    stacked_convs: int = 4
    seg_feat_channels: int = 512
    num_grids: tuple[int, ...] = (40, 36, 24, 16, 12)
    strides: tuple[int, ...] = (8, 8, 16, 32, 32)
    scale_ranges: tuple[tuple[float, float], ...] = STANDARD_RANGES
    sigma: float = 0.2
    # SOLOv2 unified mask feature (SPEC §5.6): internal width, and E (output channels = dynamic kernel size)
    mask_feat_channels: int = 128
    ins_out_channels: int = 256
    # losses (SPEC §8)
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    cate_loss_weight: float = 1.0
    dice_loss_weight: float = 3.0
    # inference (SPEC §9)
    nms_pre: int = 500
    score_thr: float = 0.1
    mask_thr: float = 0.5
    update_thr: float = 0.05
    nms_kernel: str = "gaussian"
    nms_sigma: float = 2.0
    max_per_img: int = 100
    # input (SPEC §2): keep-ratio resize inside the model, then normalise and pad
    train_scales: tuple[tuple[int, int], ...] = SCALES_1X
    test_scale: tuple[int, int] = (1333, 800)
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    size_divisor: int = 32

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"ModelConfig.head must be one of {HEADS}, got {self.head!r}")
        if self.depth not in (18, 34, 50, 101):
            raise ValueError(f"ModelConfig.depth must be 18, 34, 50 or 101, got {self.depth}")
        if not (len(self.num_grids) == len(self.strides) == len(self.scale_ranges)):
            raise ValueError("ModelConfig: num_grids, strides and scale_ranges must have one entry per level")
        if self.backbone_weights is not None and not isinstance(self.backbone_weights, str):
            raise ValueError(f"ModelConfig.backbone_weights must be a string or None, got {self.backbone_weights!r}")
        if self.num_classes < 1:
            raise ValueError(f"ModelConfig.num_classes must be >= 1, got {self.num_classes}")


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation schedule (SPEC §6): SGD, linear warm-up, step decay by 0.1 at the milestone epochs."""

    epochs: int = 12
    milestones: tuple[int, ...] = (9, 11)  # epochs after which the lr is multiplied by 0.1
    lr: float = 0.01  # for `reference_batch` images per step; scaled linearly with the real total batch
    reference_batch: int = 16
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 500
    warmup_ratio: float = 1.0 / 3
    grad_clip: float | None = 35.0
    batch_size: int = 2  # images per process
    # "sgd" (SPEC §6, every model-zoo preset) or "adamw" (AdamW with weight_decay, betas (0.9, 0.999); used by the
    # synthetic presets, which train from scratch in minutes)
    optimizer: str = "sgd"
    # mixed precision: "off", "fp16", "bf16", or "auto" (bf16 where the device computes it natively: CUDA GPUs with
    # bf16, CPUs with AVX512-BF16 or AMX; off elsewhere). The command line's --amp overrides it.
    amp: str = "off"

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"TrainConfig.optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if self.amp not in ("off", "fp16", "bf16", "auto"):
            raise ValueError(f"TrainConfig.amp must be 'off', 'fp16', 'bf16' or 'auto', got {self.amp!r}")


@dataclass(frozen=True)
class Config:
    name: str
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def override(self, *assignments: str) -> Config:
        """A copy with ``"section.field=value"`` assignments applied (values parsed as Python literals)."""
        import ast

        cfg = self
        for a in assignments:
            key, sep, raw = a.partition("=")
            section, dot, name = key.strip().partition(".")
            if not sep or not dot or section not in ("model", "train"):
                raise ValueError(f"config override must look like model.field=value or train.field=value, got {a!r}")
            sub = getattr(cfg, section)
            if name not in {f.name for f in dataclasses.fields(sub)}:
                raise ValueError(f"config override {a!r}: {section} has no field {name!r}")
            try:
                value = ast.literal_eval(raw.strip())
            except (ValueError, SyntaxError):
                value = raw.strip()
            cfg = dataclasses.replace(cfg, **{section: dataclasses.replace(sub, **{name: value})})
        return cfg
