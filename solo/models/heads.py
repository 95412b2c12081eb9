"""SOLO-family heads (SOLO_SPEC.md §5): SOLO, Decoupled SOLO (+ Light), SOLOv2 kernel/category head and the SOLOv2
unified mask-feature branch.

Module names follow the original code (WXinlong/SOLO, SPEC §11), so an official checkpoint's keys map 1:1. Every head
returns raw logits at training resolution; sigmoids, point NMS and the rest of inference live in the detector.

Inputs of the SOLO / Decoupled SOLO / SOLOv2 heads are the five re-mapped FPN maps (``fpn.split_feats``: strides 8,
8, 16, 32, 32); the mask-feature branch takes the original P2..P5.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from solo.configs import ModelConfig

__all__ = [
    "PRIOR_BIAS",
    "ConvModule",
    "DecoupledSOLOHead",
    "DecoupledSOLOLightHead",
    "MaskFeatHead",
    "SOLOHead",
    "SOLOv2Head",
    "coord_channels",
    "with_coords",
]

# Bias of the category (and SOLO / DSOLO mask) output convs: the logit of a prior probability 0.01 (SPEC §5.7).
PRIOR_BIAS = -math.log((1 - 0.01) / 0.01)


def coord_channels(x: Tensor, which: str = "xy") -> Tensor:
    """CoordConv channels for ``x`` [B, C, h, w] (SPEC §5.1): x = linspace(-1, 1, w) along columns, y =
    linspace(-1, 1, h) along rows (both inclusive), in the order of ``which`` ("xy", "x" or "y"); [B, len, h, w]."""
    b, _, h, w = x.shape
    chans = []
    for c in which:
        if c == "x":
            chans.append(torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype).view(1, 1, 1, w).expand(b, 1, h, w))
        elif c == "y":
            chans.append(torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1).expand(b, 1, h, w))
        else:
            raise ValueError(f"coord_channels: which must be made of 'x' and 'y', got {which!r}")
    return torch.cat(chans, 1)


def with_coords(x: Tensor, which: str = "xy") -> Tensor:
    """``x`` with the CoordConv channels appended after its own channels."""
    return torch.cat([x, coord_channels(x, which)], 1)


class ConvModule(nn.Module):
    """mmdet v1 ConvModule as SOLO uses it: conv (no bias, GN follows) -> GroupNorm(32) -> ReLU.

    Attribute names ``conv`` and ``gn`` give the checkpoint keys ``<name>.conv.weight`` and ``<name>.gn.*``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, num_groups: int = 32):
        super().__init__()
        if out_channels % num_groups:
            raise ValueError(f"ConvModule: {out_channels} channels are not divisible into {num_groups} GN groups")
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.gn = nn.GroupNorm(num_groups, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.gn(self.conv(x)), inplace=True)


def _tower(in_channels: int, channels: int, n: int) -> nn.ModuleList:
    return nn.ModuleList(ConvModule(in_channels if i == 0 else channels, channels) for i in range(n))


def _run(tower: nn.ModuleList, x: Tensor) -> Tensor:
    for layer in tower:
        x = layer(x)
    return x


def _normal_init(module: nn.Module, bias: float = 0.0) -> None:
    """normal(0, 0.01) weights and a constant bias on every Conv2d of ``module`` (SPEC §5.7)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, 0.01)
            if m.bias is not None:
                nn.init.constant_(m.bias, bias)


def _resize(x: Tensor, size) -> Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _up2(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class _GridHead(nn.Module):
    """Shared parts of the SOLO / DSOLO heads: the category tower and its S x S resize (``cate_down_pos = 0``)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.num_classes = cfg.num_classes
        self.num_grids = tuple(cfg.num_grids)
        self.in_channels = cfg.fpn_channels
        self.channels = cfg.seg_feat_channels
        self.stacked_convs = cfg.stacked_convs

    def _cate(self, x: Tensor, level: int, out_conv: nn.Conv2d) -> Tensor:
        s = self.num_grids[level]
        return out_conv(_run(self.cate_convs, _resize(x, (s, s))))


class SOLOHead(_GridHead):
    """Vanilla SOLO head (SPEC §5.2). ``forward(feats)`` -> (mask logits per level [B, S^2, 2h, 2w], category
    logits per level [B, C, S, S]); mask channel ``i * S + j`` is grid cell (row i, column j)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        c = self.channels
        self.ins_convs = _tower(self.in_channels + 2, c, self.stacked_convs)
        self.cate_convs = _tower(self.in_channels, c, self.stacked_convs)
        self.solo_ins_list = nn.ModuleList(nn.Conv2d(c, s * s, 1) for s in self.num_grids)
        self.solo_cate = nn.Conv2d(c, self.num_classes, 3, padding=1)
        self.init_weights()

    def init_weights(self) -> None:
        _normal_init(self.ins_convs)
        _normal_init(self.cate_convs)
        _normal_init(self.solo_ins_list, PRIOR_BIAS)
        _normal_init(self.solo_cate, PRIOR_BIAS)

    def forward(self, feats: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        towers, cates = self.forward_towers(feats)
        return [self.solo_ins_list[level](t) for level, t in enumerate(towers)], cates

    def forward_towers(self, feats: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """(upsampled mask-tower outputs [B, c, 2h, 2w], category logits) per level: everything but the S^2-channel
        1x1 convs, which the detector applies only to the cells it needs (``mask_logits``)."""
        towers, cates = [], []
        for level, x in enumerate(feats):
            towers.append(_up2(_run(self.ins_convs, with_coords(x, "xy"))))
            cates.append(self._cate(x, level, self.solo_cate))
        return towers, cates

    def mask_logits(self, level: int, tower: Tensor, channels: Tensor) -> Tensor:
        """Channels ``channels`` [n] of level ``level``'s mask logits for one image's tower output [1, c, h, w]:
        the same numbers as ``forward``'s, [n, h, w], without computing the other S^2 - n channels."""
        conv = self.solo_ins_list[level]
        return F.conv2d(tower, conv.weight[channels], conv.bias[channels])[0]


class DecoupledSOLOHead(_GridHead):
    """Decoupled SOLO head (SPEC §5.3). ``forward(feats)`` -> (X logits [B, S, 2h, 2w], Y logits [B, S, 2h, 2w],
    category logits [B, C, S, S]) per level; cell (i, j) has mask sigmoid(X[j]) * sigmoid(Y[i])."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        c = self.channels
        self.ins_convs_x = _tower(self.in_channels + 1, c, self.stacked_convs)
        self.ins_convs_y = _tower(self.in_channels + 1, c, self.stacked_convs)
        self.cate_convs = _tower(self.in_channels, c, self.stacked_convs)
        self.dsolo_ins_list_x = nn.ModuleList(nn.Conv2d(c, s, 3, padding=1) for s in self.num_grids)
        self.dsolo_ins_list_y = nn.ModuleList(nn.Conv2d(c, s, 3, padding=1) for s in self.num_grids)
        self.dsolo_cate = nn.Conv2d(c, self.num_classes, 3, padding=1)
        self.init_weights()

    def init_weights(self) -> None:
        for tower in (self.ins_convs_x, self.ins_convs_y, self.cate_convs):
            _normal_init(tower)
        for out in (self.dsolo_ins_list_x, self.dsolo_ins_list_y, self.dsolo_cate):
            _normal_init(out, PRIOR_BIAS)

    def _towers(self, x: Tensor) -> tuple[Tensor, Tensor]:
        fx = _up2(_run(self.ins_convs_x, with_coords(x, "x")))
        fy = _up2(_run(self.ins_convs_y, with_coords(x, "y")))
        return fx, fy

    def forward(self, feats: list[Tensor]) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        xs, ys, cates = [], [], []
        for level, x in enumerate(feats):
            fx, fy = self._towers(x)
            xs.append(self.dsolo_ins_list_x[level](fx))
            ys.append(self.dsolo_ins_list_y[level](fy))
            cates.append(self._cate(x, level, self.dsolo_cate))
        return xs, ys, cates


class DecoupledSOLOLightHead(DecoupledSOLOHead):
    """Decoupled SOLO Light head (SPEC §5.4): one shared mask tower on feature + [x, y] feeding both X and Y convs."""

    def __init__(self, cfg: ModelConfig):
        _GridHead.__init__(self, cfg)
        c = self.channels
        self.ins_convs = _tower(self.in_channels + 2, c, self.stacked_convs)
        self.cate_convs = _tower(self.in_channels, c, self.stacked_convs)
        self.dsolo_ins_list_x = nn.ModuleList(nn.Conv2d(c, s, 3, padding=1) for s in self.num_grids)
        self.dsolo_ins_list_y = nn.ModuleList(nn.Conv2d(c, s, 3, padding=1) for s in self.num_grids)
        self.dsolo_cate = nn.Conv2d(c, self.num_classes, 3, padding=1)
        self.init_weights()

    def init_weights(self) -> None:
        for tower in (self.ins_convs, self.cate_convs):
            _normal_init(tower)
        for out in (self.dsolo_ins_list_x, self.dsolo_ins_list_y, self.dsolo_cate):
            _normal_init(out, PRIOR_BIAS)

    def _towers(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f = _up2(_run(self.ins_convs, with_coords(x, "xy")))
        return f, f


class SOLOv2Head(_GridHead):
    """SOLOv2 kernel + category head (SPEC §5.5; also the Light 448 models with their config values).

    ``forward(feats)`` -> (kernel maps per level [B, E, S, S], category logits per level [B, C, S, S]); the vector
    ``kernels[b, :, i, j]`` is the 1x1 dynamic conv (no bias) applied to the unified mask feature for cell (i, j)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        c = self.channels
        self.kernel_out_channels = cfg.ins_out_channels
        self.cate_convs = _tower(self.in_channels, c, self.stacked_convs)
        self.kernel_convs = _tower(self.in_channels + 2, c, self.stacked_convs)
        self.solo_cate = nn.Conv2d(c, self.num_classes, 3, padding=1)
        self.solo_kernel = nn.Conv2d(c, self.kernel_out_channels, 3, padding=1)
        self.init_weights()

    def init_weights(self) -> None:
        _normal_init(self.cate_convs)
        _normal_init(self.kernel_convs)
        _normal_init(self.solo_cate, PRIOR_BIAS)
        _normal_init(self.solo_kernel, 0.0)

    def forward(self, feats: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        kernels, cates = [], []
        for level, x in enumerate(feats):
            s = self.num_grids[level]
            # Coordinates at level resolution, then the square resize (SPEC §5.5 steps 1-2).
            feat = _resize(with_coords(x, "xy"), (s, s))
            kernels.append(self.solo_kernel(_run(self.kernel_convs, feat)))
            cates.append(self.solo_cate(_run(self.cate_convs, feat[:, :-2].contiguous())))
        return kernels, cates


class MaskFeatHead(nn.Module):
    """SOLOv2's unified mask-feature branch (SPEC §5.6): P2..P5 -> F [B, E, H/4, W/4] (non-negative, stride 4).

    ``convs_all_levels.{l}`` is a Sequential ``conv0, upsample0, conv1, upsample1, ...`` (l convs / upsamplings for
    level l > 0, a single conv for P2); P5 gets [x, y] coordinates; the four maps are summed and ``conv_pred.0``
    (1x1 ConvModule) gives E channels."""

    def __init__(self, cfg: ModelConfig, num_levels: int = 4):
        super().__init__()
        cin, mid, out = cfg.fpn_channels, cfg.mask_feat_channels, cfg.ins_out_channels
        self.num_levels = num_levels
        self.convs_all_levels = nn.ModuleList()
        for level in range(num_levels):
            seq = nn.Sequential()
            if level == 0:
                seq.add_module("conv0", ConvModule(cin, mid))
            for j in range(level):
                first_in = (cin + 2 if level == num_levels - 1 else cin) if j == 0 else mid
                seq.add_module(f"conv{j}", ConvModule(first_in, mid))
                seq.add_module(f"upsample{j}", nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.convs_all_levels.append(seq)
        self.conv_pred = nn.Sequential(ConvModule(mid, out, kernel_size=1))
        self.init_weights()

    def init_weights(self) -> None:
        _normal_init(self)

    def forward(self, feats: list[Tensor]) -> Tensor:
        if len(feats) != self.num_levels:
            raise ValueError(f"MaskFeatHead: expected {self.num_levels} maps (P2..P5), got {len(feats)}")
        out = self.convs_all_levels[0](feats[0])
        for level in range(1, self.num_levels):
            x = feats[level]
            if level == self.num_levels - 1:
                x = with_coords(x, "xy")
            out = out + self.convs_all_levels[level](x)
        return self.conv_pred(out)
