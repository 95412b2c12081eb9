"""Helpers of tests/test_pretrained.py and tests/test_coco_path.py: torchvision-format ImageNet files generated here
(never downloaded), named as torch.hub names them (``resnet18-<first 8 hex digits of the sha256>.pth``)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import torch

from solo.models.backbone import ResNet


def torchvision_state_dict(depth: int, seed: int = 0) -> dict:
    """A state dict with torchvision's ResNet keys (ours plus the ImageNet classifier ``fc``): convolutions drawn as
    torchvision initialises them, BatchNorm affine parameters and statistics drawn near their usual values (so that a
    tensor that was not loaded cannot pass for one that was, and a model starting from it trains without overflow)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    sd = {k: v.clone() for k, v in ResNet(depth, frozen_stages=-1, norm_eval=False).state_dict().items()}
    for k, v in sd.items():
        if k.endswith(("bn1.weight", "bn2.weight", "bn3.weight", "downsample.1.weight")):
            v.copy_(torch.rand(v.shape, generator=g) * 0.5 + 0.5)
        elif k.endswith(("bias", "running_mean")):
            v.copy_(torch.randn(v.shape, generator=g) * 0.1)
        elif k.endswith("running_var"):
            v.copy_(torch.rand(v.shape, generator=g) + 0.5)
    width = 512 if depth < 50 else 2048
    sd["fc.weight"] = torch.randn(1000, width, generator=g) * 0.01
    sd["fc.bias"] = torch.zeros(1000)
    return sd


def save_hub_named(obj, folder: Path, stem: str) -> Path:
    """``torch.save(obj)`` into ``folder/<stem>-<sha256[:8]>.pth``; returns the path."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    path.write_bytes(data)
    return path


def write_torchvision_file(folder: Path, depth: int, seed: int = 0) -> tuple[Path, dict]:
    """A generated ``resnet<depth>-<hash>.pth`` in ``folder`` and its state dict."""
    sd = torchvision_state_dict(depth, seed)
    return save_hub_named(sd, folder, f"resnet{depth}"), sd
