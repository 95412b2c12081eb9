"""SOLO-family models: ResNet-FPN backbones, SOLO / Decoupled SOLO / SOLOv2 heads and the detector."""

from __future__ import annotations

import dataclasses

from solo.configs import Config, ModelConfig, get_config
from solo.models.detector import SOLODetector

__all__ = ["SOLODetector", "build_model"]


def build_model(
    name_or_config: str | Config | ModelConfig, num_classes: int | None = None, backend: str | None = None
) -> SOLODetector:
    """A :class:`SOLODetector` from a preset name (``solo.configs.PRESETS``), a ``Config`` or a ``ModelConfig``.

    ``num_classes`` overrides the config's; ``backend`` is passed to every ``solo.ops`` call. Deformable-convolution
    presets raise ``NotImplementedError``."""
    if isinstance(name_or_config, str):
        cfg = get_config(name_or_config).model
    elif isinstance(name_or_config, Config):
        cfg = name_or_config.model
    elif isinstance(name_or_config, ModelConfig):
        cfg = name_or_config
    else:
        raise TypeError(
            f"build_model: expected a preset name, a Config or a ModelConfig, got {type(name_or_config).__name__}"
        )
    if num_classes is not None:
        cfg = dataclasses.replace(cfg, num_classes=num_classes)
    return SOLODetector(cfg, backend=backend)
