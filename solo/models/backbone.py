"""ResNet-18/34/50/101 backbones with torchvision-compatible state-dict keys (SOLO_SPEC.md §3).

Written here because there is no CPU build of torchvision to lean on. Style 'pytorch' (the stride-2 of a
bottleneck sits in its 3x3 conv, as in torchvision and mmdet's default), four stages returning C2..C5.
The state-dict keys are exactly torchvision's minus ``fc.*`` (``conv1``, ``bn1``, ``layer{1..4}.{b}.conv1`` /
``bn1`` / ... / ``downsample.0`` / ``downsample.1``), so an ImageNet checkpoint in torchvision format loads with
:meth:`ResNet.load_torchvision_weights`, and the ``backbone.*`` keys of an official SOLO checkpoint (SPEC §11.1)
load 1:1.
"""

from __future__ import annotations

import os
import re

import torch
from torch import Tensor, nn

__all__ = ["ARCH_SETTINGS", "BasicBlock", "Bottleneck", "ResNet", "infer_resnet_depth"]


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34); the first carries the stride."""

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_ch, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride here: 'pytorch' style) -> 1x1 (x4 channels) (ResNet-50/101)."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv1x1(in_ch, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


ARCH_SETTINGS: dict[int, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}


class ResNet(nn.Module):
    """ResNet returning the four stage outputs ``[C2, C3, C4, C5]`` (strides 4, 8, 16, 32).

    Args:
        depth: 18, 34, 50 or 101.
        frozen_stages: -1 freezes nothing; 0 freezes the stem (conv1 + bn1); k >= 1 also freezes layer1..layer{k}.
            Frozen parameters have ``requires_grad=False`` and their modules stay in eval mode through ``.train()``.
        norm_eval: keep every BatchNorm in eval mode (running statistics frozen) even in training mode; the affine
            parameters of unfrozen stages still train (SPEC §3).

    Attributes:
        out_channels: channels of C2..C5 (64/128/256/512 for R18/34, 256/512/1024/2048 for R50/101).
    """

    def __init__(self, depth: int = 50, frozen_stages: int = 1, norm_eval: bool = True) -> None:
        super().__init__()
        if depth not in ARCH_SETTINGS:
            raise ValueError(f"ResNet depth must be one of {sorted(ARCH_SETTINGS)}, got {depth}")
        if not -1 <= frozen_stages <= 4:
            raise ValueError(f"ResNet frozen_stages must be in [-1, 4], got {frozen_stages}")
        block, layers = ARCH_SETTINGS[depth]
        self.depth = depth
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval

        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self._in_ch = 64
        self.layer1 = self._make_layer(block, 64, layers[0], stride=1)
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.out_channels: list[int] = [p * block.expansion for p in (64, 128, 256, 512)]
        del self._in_ch

        self.init_weights()
        self._freeze_stages()

    def _make_layer(self, block: type[nn.Module], planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        out_ch = planes * block.expansion
        if stride != 1 or self._in_ch != out_ch:
            downsample = nn.Sequential(_conv1x1(self._in_ch, out_ch, stride), nn.BatchNorm2d(out_ch))
        mods = [block(self._in_ch, planes, stride, downsample)]
        self._in_ch = out_ch
        mods += [block(self._in_ch, planes) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def init_weights(self) -> None:
        """torchvision's initialisation: kaiming-normal (fan_out, relu) convs, BN weight 1 and bias 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages < 0:
            return []
        mods: list[nn.Module] = [self.conv1, self.bn1]
        mods += [getattr(self, f"layer{i}") for i in range(1, self.frozen_stages + 1)]
        return mods

    def _freeze_stages(self) -> None:
        for m in self._frozen_modules():
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> ResNet:
        """Training mode, except frozen stages (always eval) and, with ``norm_eval``, every BatchNorm."""
        super().train(mode)
        if mode:
            self._freeze_stages()
            if self.norm_eval:
                for m in self.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.eval()
        return self

    def forward(self, x: Tensor) -> list[Tensor]:
        """x (Tensor[B, 3, H, W], normalised) -> [C2, C3, C4, C5] at strides 4, 8, 16, 32 (sizes ceil-divided)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
            outs.append(x)
        return outs

    def load_torchvision_weights(self, path: str | os.PathLike) -> int:
        """Load a torchvision ImageNet checkpoint file (``torchvision.models.resnetXX`` state dict, or a dict
        holding one under ``state_dict``/``model``); ``fc.*`` is ignored. Returns the number of tensors loaded.

        Raises ``ValueError`` naming the file and what is wrong: empty, truncated or not a PyTorch file; not a state
        dict; no ResNet keys; a ResNet of another depth ("this is a ResNet-18 file, the model is a ResNet-50");
        missing, unexpected or wrongly shaped keys. Loaded with ``weights_only=True`` (tensors only, no code).
        Frozen parameters stay frozen."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"ResNet weights file not found: {path}")
        if os.path.getsize(path) == 0:
            raise ValueError(f"{path}: the file is empty (0 bytes); an interrupted download? Delete it and retry")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 (torch raises RuntimeError, EOFError, UnpicklingError, ... here)
            raise ValueError(
                f"{path}: cannot be read as a PyTorch weights file ({os.path.getsize(path)} bytes; truncated, "
                f"corrupt or not a tensor file): {type(e).__name__}: {_first_sentence(e)}"
            ) from None
        if isinstance(obj, dict):
            for key in ("state_dict", "model"):
                if key in obj and isinstance(obj[key], dict):
                    obj = obj[key]
                    break
        if not isinstance(obj, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()):
            if isinstance(obj, dict):
                k, v = next((k, v) for k, v in obj.items() if not (isinstance(k, str) and torch.is_tensor(v)))
                got = f"a dict holding other things than tensors ({k!r}: {type(v).__name__})"
            else:
                got = f"a {type(obj).__name__}"
            raise ValueError(
                f"{path}: not a state dict (a dict of name -> tensor) but {got}; expected a "
                f"torchvision ResNet-{self.depth} ImageNet file"
            )
        sd = {k.removeprefix("module."): v for k, v in obj.items()}
        sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
        own = self.state_dict()
        file_depth = infer_resnet_depth(sd)
        if file_depth is None:
            raise ValueError(
                f"{path}: not a ResNet weights file: none of its {len(sd)} tensors has torchvision ResNet names "
                f"(conv1.weight, layer1.0.conv1.weight, ...; the file has e.g. {sorted(sd)[:3]}); expected a "
                f"torchvision ResNet-{self.depth} ImageNet file"
            )
        if file_depth != self.depth:
            raise ValueError(
                f"{path}: this is a ResNet-{file_depth} file, the config needs ResNet-{self.depth} "
                f"(pass the ResNet-{self.depth} file, e.g. torchvision://resnet{self.depth}, or set model.depth)"
            )
        missing = sorted(k for k in own if k not in sd)
        unexpected = sorted(k for k in sd if k not in own)
        # Old torchvision files predate BN's num_batches_tracked: not an error, the buffer keeps its value.
        missing_real = [k for k in missing if not k.endswith("num_batches_tracked")]
        bad_shape = sorted(
            f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
            for k in sd
            if k in own and tuple(sd[k].shape) != tuple(own[k].shape)
        )
        if missing_real or unexpected or bad_shape:
            parts = [f"{path} does not match ResNet-{self.depth}:"]
            if missing_real:
                parts.append(f"missing keys ({len(missing_real)}): {missing_real[:20]}")
            if unexpected:
                parts.append(f"unexpected keys ({len(unexpected)}): {unexpected[:20]}")
            if bad_shape:
                # Same names and depth but other widths: a Wide ResNet / ResNeXt file, not a plain ResNet.
                parts.append(f"shape mismatches ({len(bad_shape)}): {bad_shape[:20]}")
            raise ValueError(" ".join(parts))
        self.load_state_dict(sd, strict=False)
        return len(sd)


def _first_sentence(e: Exception) -> str:
    """The first sentence of an exception's message (torch.load's errors go on with generic advice)."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return text.split(". ")[0]


def infer_resnet_depth(state_dict: dict) -> int | None:
    """The depth of the torchvision-style ResNet whose (``fc``-less) ``state_dict`` this is, from its key names:
    blocks per stage (``layer{i}.{b}.``) and block type (a ``conv3`` means bottlenecks). None when the keys are not
    a ResNet's (no ``conv1.weight`` or no ``layer1..4``). Depth = 2 * blocks + 2 for basic blocks and
    3 * blocks + 2 for bottlenecks (18, 34, 50, 101, 152, ...)."""
    if "conv1.weight" not in state_dict:
        return None
    blocks = [0, 0, 0, 0]
    bottleneck = False
    for k in state_dict:
        m = re.match(r"layer([1-4])\.(\d+)\.(conv\d)\.weight$", k)
        if m:
            i, b = int(m.group(1)) - 1, int(m.group(2))
            blocks[i] = max(blocks[i], b + 1)
            bottleneck |= m.group(3) == "conv3"
    if not all(blocks):
        return None
    return (3 if bottleneck else 2) * sum(blocks) + 2
