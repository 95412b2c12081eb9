"""Model and schedule presets (SOLO_SPEC.md §6) as dataclasses."""

from solo.configs.base import HEADS, Config, ModelConfig, TrainConfig
from solo.configs.presets import DCN_PRESETS, PRESETS, get_config

__all__ = ["DCN_PRESETS", "HEADS", "PRESETS", "Config", "ModelConfig", "TrainConfig", "get_config"]
