"""The FPN neck and SOLO's level re-mapping (SOLO_SPEC.md §4).

mmdet-v1 FPN without extra convs, norm or activation: a 1x1 lateral conv (with bias) per input level, a top-down
pathway (nearest x2 upsample to the lateral's size, then add) and a 3x3 output conv (with bias) per level, giving
P2..P5; P6 = ``max_pool2d(P5, 1, stride=2)`` (plain 2x subsampling, no parameters). Module names follow the
official checkpoints (SPEC §11.2): ``lateral_convs.{i}.conv`` and ``fpn_convs.{i}.conv``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FPN", "split_feats"]


class _ConvWrap(nn.Module):
    """A conv held as ``.conv`` (the mmdet ConvModule name without norm or activation)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class FPN(nn.Module):
    """Feature pyramid: ``[C2, C3, C4, C5] -> [P2, P3, P4, P5, P6]`` (``num_outs`` maps, all ``out_channels``).

    Args:
        in_channels: channels of the input levels (e.g. [256, 512, 1024, 2048] for R50).
        out_channels: channels of every output map (256).
        num_outs: number of outputs; levels beyond the inputs are stride-2 subsamples of the previous one.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int = 256, num_outs: int = 5) -> None:
        super().__init__()
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        self.num_outs = num_outs
        if num_outs < len(self.in_channels):
            raise ValueError(f"FPN num_outs ({num_outs}) must be >= the number of inputs ({len(self.in_channels)})")
        self.lateral_convs = nn.ModuleList(_ConvWrap(c, out_channels, 1) for c in self.in_channels)
        self.fpn_convs = nn.ModuleList(_ConvWrap(out_channels, out_channels, 3) for _ in self.in_channels)
        self.init_weights()

    def init_weights(self) -> None:
        """xavier-uniform weights, zero bias (mmdet-v1 FPN)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, inputs: Sequence[Tensor]) -> list[Tensor]:
        if len(inputs) != len(self.in_channels):
            raise ValueError(f"FPN expects {len(self.in_channels)} input maps, got {len(inputs)}")
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, inputs)]
        for i in range(len(laterals) - 1, 0, -1):
            # mmdet v1 upsamples by scale_factor=2; with odd sizes that would not match, so resize to the
            # lateral's size (identical result when the size is exactly 2x, which padding to 32 guarantees).
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest"
            )
        outs = [conv(lat) for conv, lat in zip(self.fpn_convs, laterals)]
        while len(outs) < self.num_outs:
            outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        return outs


def split_feats(feats: Sequence[Tensor]) -> list[Tensor]:
    """SOLO's re-mapping of ``[P2..P6]`` to the five head inputs (strides 8, 8, 16, 32, 32), as WX ``split_feats``:
    P2 bilinearly downsampled by 0.5, P3, P4, P5, and P6 bilinearly resized to P5's size (align_corners=False).

    On a canvas padded to a multiple of 32 (the detector's inputs) P2 has even sizes, the x0.5 resize is an exact
    2x2 average and level 0 has P3's size. On odd P2 sizes level 0 is floor(P2 / 2), one smaller than P3, as in WX
    (mmdetection resizes to P3's size instead; the two agree on padded inputs)."""
    if len(feats) != 5:
        raise ValueError(f"split_feats expects the five maps P2..P6, got {len(feats)}")
    p2, p3, p4, p5, p6 = feats
    return [
        F.interpolate(p2, scale_factor=0.5, mode="bilinear", align_corners=False),
        p3,
        p4,
        p5,
        F.interpolate(p6, size=p5.shape[-2:], mode="bilinear", align_corners=False),
    ]
