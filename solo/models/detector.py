"""The SOLO-family detector: preprocessing, ResNet-FPN, a SOLO / Decoupled SOLO / SOLOv2 head, the training losses
(SOLO_SPEC.md §7-§8) and inference (§9), with every heavy step going through ``solo.ops``.

Calling convention (torchvision detection style)::

    model.train(); losses = model(images, targets)   # {"loss_cate", "loss_mask", "loss"}
    model.eval();  results = model(images)           # [{"masks", "labels", "scores", "boxes"}] per image

``images``: list of float [3, H, W] RGB tensors in 0..255, any sizes. ``targets``: list of dicts with ``masks``
(uint8/bool [K, H, W] at the image's size) and ``labels`` (int64 [K], 0-based classes).
"""

from __future__ import annotations

import contextlib
import math
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from solo import ops
from solo.configs import ModelConfig
from solo.models.heads import DecoupledSOLOHead, DecoupledSOLOLightHead, MaskFeatHead, SOLOHead, SOLOv2Head

__all__ = ["PhaseTimer", "SOLODetector", "mask_boxes", "rescale_size"]

_HEADS = {
    "solo": SOLOHead,
    "decoupled_solo": DecoupledSOLOHead,
    "decoupled_solo_light": DecoupledSOLOLightHead,
    "solov2": SOLOv2Head,
    "solov2_light": SOLOv2Head,
}
# Memory bound of the inference mask pass: candidate soft masks are built at most this many floats at a time.
_MASK_CHUNK_ELEMS = 1 << 25
_NO_SECTION = contextlib.nullcontext()  # reusable: what ``_section`` returns when no timer is set


class PhaseTimer:
    """Wall-clock seconds per named phase, for ``model.timer = PhaseTimer(device)`` (benchmarks, profiling).

    The detector wraps its phases (``preprocess``, ``assign``, ``forward``, ``losses`` in training; ``preprocess``,
    ``network``, ``postprocess`` in inference) in ``with self._section(name)``; callers can time their own phases
    with ``with timer.section(name)``. On a CUDA device each section boundary synchronises the device, so that a
    phase is charged with its own kernels; without a timer the detector does no timing and no synchronisation.
    Times of a name entered more than once add up; ``reset()`` clears them."""

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = torch.device(device) if device is not None else None
        self.times: dict[str, float] = {}

    def reset(self) -> None:
        self.times = {}

    def _sync(self) -> None:
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def section(self, name: str):
        self._sync()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - t0


def rescale_size(h: int, w: int, scale: tuple[int, int]) -> tuple[int, int]:
    """Keep-ratio resize of mmcv (SPEC §2): factor = min(long_max / long side, short / short side), new size
    ``int(x * factor + 0.5)``. ``scale`` is (long side max, short side). Returns (new_h, new_w)."""
    long_max, short = max(scale), min(scale)
    factor = min(long_max / max(h, w), short / min(h, w))
    return int(h * factor + 0.5), int(w * factor + 0.5)


def mask_boxes(masks: Tensor) -> Tensor:
    """Tight boxes of binary masks [N, H, W] (bool or uint8, nonzero = inside) -> float32 [N, 4] (x1, y1, x2, y2) with the modern convention
    ``x2 = last column + 1`` (``x2 = x1 + w``, mmdetection v2+; the original SOLO used ``x1 + w - 1``). An empty
    mask gets the box (0, 0, 0, 0)."""
    n, h, w = masks.shape
    if n == 0:
        return torch.zeros((0, 4), dtype=torch.float32, device=masks.device)
    # A max over uint8 (bool masks reinterpreted, no copy) instead of any(): any() over the middle dimension does
    # not vectorise on the CPU and costs twice as much; the boxes are the same.
    if masks.dtype == torch.bool:
        u8 = masks.view(torch.uint8)
    elif masks.dtype == torch.uint8:
        u8 = masks
    else:
        u8 = (masks != 0).view(torch.uint8)
    cols = u8.amax(1) != 0  # [N, W]
    rows = u8.amax(2) != 0  # [N, H]
    xs = torch.arange(w, device=masks.device)
    ys = torch.arange(h, device=masks.device)
    x1 = torch.where(cols, xs, w).min(1).values
    x2 = torch.where(cols, xs + 1, 0).max(1).values
    y1 = torch.where(rows, ys, h).min(1).values
    y2 = torch.where(rows, ys + 1, 0).max(1).values
    boxes = torch.stack([x1, y1, x2, y2], 1).float()
    return boxes * (x2 > 0).unsqueeze(1)  # empty masks: zeros instead of (W, H, 0, 0)


def _point_nms(heat: Tensor) -> Tensor:
    """SPEC §9.1: keep a score only where it equals the max of its (up, left, up-left, self) 2x2 window."""
    hmax = F.max_pool2d(heat, (2, 2), stride=1, padding=1)
    return heat * (hmax[:, :, :-1, :-1] == heat)


def _conv_per_image(feat: Tensor, weight: Tensor, bias: Tensor | None, image: Tensor, batch_size: int):
    """Per-row 1x1 convolutions: row p of the result is ``weight[p]`` (and ``bias[p]``) applied to
    ``feat[image[p]]``. One conv per image; rows come out grouped by image: returns (logits [P, h, w], order) with
    ``order`` the row permutation (stable sort by image)."""
    order = torch.argsort(image, stable=True)
    counts = torch.bincount(image, minlength=batch_size).tolist()
    out, start = [], 0
    for j, n in enumerate(counts):
        if n:
            idx = order[start : start + n]
            out.append(F.conv2d(feat[j : j + 1], weight[idx], None if bias is None else bias[idx])[0])
            start += n
    return torch.cat(out), order


class SOLODetector(nn.Module):
    """SOLO / Decoupled SOLO (Light) / SOLOv2 (Light) instance segmentation model (SPEC §1-§9).

    Sub-modules, in the order of the original checkpoints: ``backbone`` (ResNet), ``neck`` (FPN),
    ``mask_feat_head`` (SOLOv2 only), ``bbox_head``. ``backend`` is passed to every ``solo.ops`` call (None: auto).
    ``timer``: None, or a :class:`PhaseTimer` that times the phases of each call (benchmarks).
    """

    timer: PhaseTimer | None = None

    def _section(self, name: str):
        timer = self.timer
        return _NO_SECTION if timer is None else timer.section(name)

    def __init__(self, cfg: ModelConfig, backend: str | None = None):
        super().__init__()
        if cfg.dcn:
            raise NotImplementedError("deformable-convolution (DCN) models are not supported yet")
        from solo.models.backbone import ResNet
        from solo.models.fpn import FPN

        self.cfg = cfg
        self.backend = backend
        self.head_type = cfg.head
        self.is_v2 = cfg.head in ("solov2", "solov2_light")
        self.is_decoupled = cfg.head in ("decoupled_solo", "decoupled_solo_light")
        self.backbone = ResNet(cfg.depth, cfg.frozen_stages, cfg.norm_eval)
        self.neck = FPN(self.backbone.out_channels, cfg.fpn_channels, 5)
        if self.is_v2:
            self.mask_feat_head = MaskFeatHead(cfg)
        self.bbox_head = _HEADS[cfg.head](cfg)
        self.register_buffer("pixel_mean", torch.tensor(cfg.pixel_mean).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg.pixel_std).view(3, 1, 1), persistent=False)
        grids = list(cfg.num_grids)
        self._level_cells = [s * s for s in grids]
        self._level_offsets = [0]
        for c in self._level_cells:
            self._level_offsets.append(self._level_offsets[-1] + c)

    # ------------------------------------------------------------------------------------------------ preprocess

    def _scale(self) -> tuple[int, int]:
        if self.training:
            scales = self.cfg.train_scales
            # torch's generator, so that torch.manual_seed makes a run reproducible
            return scales[int(torch.randint(len(scales), ()))] if len(scales) > 1 else scales[0]
        return self.cfg.test_scale

    def preprocess(self, images: list[Tensor], targets: list[dict] | None = None):
        """Keep-ratio resize (bilinear images, nearest masks), normalisation, padding to a multiple of
        ``size_divisor`` and to the batch's largest size (pad value 0 after normalisation; SPEC §2).

        Returns (batch [B, 3, Hc, Wc], resized sizes [(h, w)], masks uint8 [M, Hc, Wc] or None, list of per-image
        mask counts or None)."""
        if not isinstance(images, (list, tuple)) or len(images) == 0:
            raise ValueError("SOLODetector: images must be a non-empty list of [3, H, W] tensors")
        if targets is not None and len(targets) != len(images):
            raise ValueError(f"SOLODetector: got {len(images)} images but {len(targets)} targets")
        device = self.pixel_mean.device
        resized, sizes, masks = [], [], []
        for k, img in enumerate(images):
            if img.dim() != 3 or img.shape[0] != 3:
                raise ValueError(f"SOLODetector: image {k} must be [3, H, W], got {tuple(img.shape)}")
            h0, w0 = img.shape[-2:]
            h, w = rescale_size(h0, w0, self._scale())
            x = img.to(device=device, dtype=torch.float32)
            if (h, w) != (h0, w0):
                x = F.interpolate(x[None], size=(h, w), mode="bilinear", align_corners=False)[0]
            resized.append((x - self.pixel_mean) / self.pixel_std)
            sizes.append((h, w))
            if targets is not None:
                m = targets[k]["masks"]
                if m.dim() != 3 or tuple(m.shape[-2:]) != (h0, w0):
                    raise ValueError(
                        f"SOLODetector: targets[{k}]['masks'] must be [K, {h0}, {w0}], got {tuple(m.shape)}"
                    )
                m = (m.to(device) != 0).to(torch.uint8)  # any nonzero value is inside
                if m.shape[0] and (h, w) != (h0, w0):
                    m = F.interpolate(m[None], size=(h, w), mode="nearest")[0]
                masks.append(m)
        div = self.cfg.size_divisor
        hc = math.ceil(max(s[0] for s in sizes) / div) * div
        wc = math.ceil(max(s[1] for s in sizes) / div) * div
        batch = resized[0].new_zeros((len(images), 3, hc, wc))
        for k, x in enumerate(resized):
            batch[k, :, : x.shape[1], : x.shape[2]] = x
        if targets is None:
            return batch, sizes, None, None
        counts = [m.shape[0] for m in masks]
        canvas = torch.zeros((sum(counts), hc, wc), dtype=torch.uint8, device=device)
        i = 0
        for m in masks:
            canvas[i : i + m.shape[0], : m.shape[1], : m.shape[2]] = m
            i += m.shape[0]
        return batch, sizes, canvas, counts

    # ------------------------------------------------------------------------------------------------ network

    def forward_features(self, batch: Tensor):
        """Raw head outputs for a preprocessed batch.

        SOLO: (mask logits [B, S^2, Hc/os, Wc/os] per level, cate logits [B, C, S, S] per level); Decoupled SOLO:
        (X logits, Y logits, cate logits); SOLOv2: (kernels [B, E, S, S] per level, cate logits, mask feature
        [B, E, Hc/4, Wc/4])."""
        from solo.models.fpn import split_feats

        feats = self.neck(self.backbone(batch))
        out = self.bbox_head(split_feats(feats))
        if self.is_v2:
            return (*out, self.mask_feat_head(feats[:4]))
        return out

    def _network(self, batch: Tensor):
        """``forward_features``, except that SOLO returns its mask-tower outputs instead of the S^2-channel logits
        (applied later to the needed cells only)."""
        if self.head_type != "solo":
            return self.forward_features(batch)
        from solo.models.fpn import split_feats

        return self.bbox_head.forward_towers(split_feats(self.neck(self.backbone(batch))))

    def forward(self, images: list[Tensor], targets: list[dict] | None = None):
        if self.training:
            if targets is None:
                raise ValueError("SOLODetector: training mode needs targets (call model.eval() for inference)")
            return self.loss(images, targets)
        return self.predict(images)

    # ------------------------------------------------------------------------------------------------ training

    def loss(self, images: list[Tensor], targets: list[dict]) -> dict[str, Tensor]:
        """The losses of SPEC §8: ``loss_cate`` = focal sum / (positive cells + 1), ``loss_mask`` = mean Dice over
        positives x 3, ``loss`` = their weighted sum.

        Targets come from ``solo.ops.assign_grid_targets`` on the batch canvas. The boxes that set each instance's
        scale and centre region are the tight boxes of the resized masks with the modern convention
        ``x2 = x1 + w`` (mmdetection v2+); the original (mmdetection v1) used ``x1 + w - 1``, i.e. scales about one
        pixel smaller. Mask targets are ``downsample_masks(masks, stride)[pos_instances]`` at the head resolution
        (SOLO / DSOLO strides 4, 4, 8, 16, 16; SOLOv2 4). Random horizontal flips are the data pipeline's job."""
        cfg = self.cfg
        with self._section("preprocess"):
            batch, _, masks, counts = self.preprocess(images, targets)
        device = batch.device
        b = batch.shape[0]
        with self._section("assign"):
            labels = torch.cat([t["labels"].to(device=device, dtype=torch.int64).reshape(-1) for t in targets])
            if labels.shape[0] != masks.shape[0]:
                raise ValueError("SOLODetector: every target needs as many labels as masks")
            image_ids = torch.repeat_interleave(torch.arange(b, device=device), torch.tensor(counts, device=device))
            boxes = mask_boxes(masks)
            gt = ops.assign_grid_targets(
                masks,
                boxes,
                labels,
                image_ids,
                b,
                cfg.num_grids,
                cfg.scale_ranges,
                cfg.sigma,
                cfg.num_classes,
                mode="solov2" if self.is_v2 else "solo",
                backend=self.backend,
            )
        with self._section("forward"):
            outs = self._network(batch)
        with self._section("losses"):
            return self._losses(outs, gt, masks, batch.shape)

    def _losses(self, outs, gt, masks: Tensor, batch_shape) -> dict[str, Tensor]:
        """The losses of ``loss`` from the network outputs and the assigned targets."""
        cfg = self.cfg
        device = masks.device
        b, hc, wc = batch_shape[0], batch_shape[2], batch_shape[3]
        cates = outs[-2] if self.is_v2 else outs[-1]

        # Category loss over every cell of every level and image (cells level by level, row-major).
        cate_logits = torch.cat([c.permute(0, 2, 3, 1).reshape(b, -1, cfg.num_classes) for c in cates], 1)
        cate_labels = gt.labels.reshape(-1)
        num_pos = (cate_labels != cfg.num_classes).sum()
        loss_cate = ops.sigmoid_focal_loss(
            cate_logits.reshape(-1, cfg.num_classes),
            cate_labels,
            cfg.focal_alpha,
            cfg.focal_gamma,
            reduction="sum",
            backend=self.backend,
        ) / (num_pos + 1).to(torch.float32)

        # Mask loss per positive (SOLO / DSOLO at each level's head resolution, SOLOv2 at stride 4).
        total = self._level_offsets[-1]
        cell = gt.pos_cells % total
        img = gt.pos_cells // total
        level = torch.bucketize(cell, torch.tensor(self._level_offsets[1:], device=device), right=True)
        terms, unused = [], []
        down_cache: dict[int, Tensor] = {}

        def down(stride: int) -> Tensor:
            if stride not in down_cache:
                down_cache[stride] = ops.downsample_masks(masks, stride, backend=self.backend)
            return down_cache[stride]

        counts_per_level = torch.bincount(level, minlength=len(cfg.num_grids)).tolist()
        v2_kernels, v2_images, v2_instances = [], [], []
        for lv, s in enumerate(cfg.num_grids):
            if counts_per_level[lv] == 0:
                # A level without positives: its own outputs are tied in with weight 0 (below).
                if self.head_type == "solo":
                    conv = self.bbox_head.solo_ins_list[lv]
                    unused += [outs[0][lv], conv.weight, conv.bias]
                elif self.is_decoupled:
                    unused += [outs[0][lv], outs[1][lv]]
                else:
                    unused.append(outs[0][lv])
                continue
            sel = (level == lv).nonzero().squeeze(1)
            k = cell[sel] - self._level_offsets[lv]
            bi = img[sel]
            inst = gt.pos_instances[sel]
            if self.is_v2:
                v2_kernels.append(outs[0][lv].flatten(2)[bi, :, k])  # [P, E]
                v2_images.append(bi)
                v2_instances.append(inst)
            elif self.is_decoupled:
                xl, yl = outs[0][lv], outs[1][lv]
                tgt = down(self._out_stride(hc, wc, xl))[inst]
                terms.append(ops.decoupled_dice_loss(xl[bi, k % s], yl[bi, k // s], tgt, backend=self.backend))
            else:
                # Only the positive channels of the S^2-channel 1x1 conv: the others get no gradient anyway.
                tower = outs[0][lv]
                conv = self.bbox_head.solo_ins_list[lv]
                logits, order = _conv_per_image(tower, conv.weight[k], conv.bias[k], bi, b)
                tgt = down(self._out_stride(hc, wc, tower))[inst[order]]
                terms.append(ops.dice_loss(logits, tgt, backend=self.backend))
        if v2_kernels:
            feat = outs[-1]
            w = torch.cat(v2_kernels)
            logits, order = _conv_per_image(feat, w[:, :, None, None], None, torch.cat(v2_images), b)
            tgt = down(self._out_stride(hc, wc, feat))[torch.cat(v2_instances)[order]]
            terms.append(ops.dice_loss(logits, tgt, backend=self.backend))
        elif self.is_v2:
            unused.append(outs[-1])
        # Outputs no positive reached are tied in with weight 0: every trainable parameter gets a (zero) gradient,
        # and a batch without positives gives a finite, connected zero instead of the original's crash (SPEC §13.2).
        loss_mask = torch.cat(terms).mean() * cfg.dice_loss_weight if terms else torch.zeros((), device=device)
        if unused:
            loss_mask = loss_mask + sum(p.float().sum() for p in unused) * 0.0
        loss_cate = loss_cate * cfg.cate_loss_weight
        return {"loss_cate": loss_cate, "loss_mask": loss_mask, "loss": loss_cate + loss_mask}

    @staticmethod
    def _out_stride(hc: int, wc: int, pred: Tensor) -> int:
        h, w = pred.shape[-2:]
        if hc % h or wc % w or hc // h != wc // w:
            raise RuntimeError(f"SOLODetector: head map {h}x{w} is not an integer stride of the canvas {hc}x{wc}")
        return hc // h

    # ------------------------------------------------------------------------------------------------ inference

    @torch.no_grad()
    def predict(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        """Per-image results at each input's own size (SPEC §9): ``masks`` bool [K, H0, W0], ``labels`` int64 [K],
        ``scores`` float32 [K], ``boxes`` float32 [K, 4] (tight around the masks, x2 = last column + 1)."""
        with self._section("preprocess"):
            batch, sizes, _, _ = self.preprocess(images)
        with self._section("network"):
            outs = self._network(batch)
        cates = outs[-2] if self.is_v2 else outs[-1]
        # Post-processing in float32 whatever the autocast state (scores, soft masks and the dynamic conv).
        with self._section("postprocess"), torch.autocast(batch.device.type, enabled=False):
            return self._postprocess(outs, cates, batch, sizes, images)

    def _postprocess(self, outs, cates, batch, sizes, images) -> list[dict[str, Tensor]]:
        b = batch.shape[0]
        scores = torch.cat(
            [_point_nms(c.float().sigmoid()).permute(0, 2, 3, 1).reshape(b, -1, self.cfg.num_classes) for c in cates],
            1,
        )
        cell_strides = torch.cat(
            [
                torch.full((n,), float(st), device=batch.device)
                for n, st in zip(self._level_cells, self.cfg.strides, strict=True)
            ]
        )
        results = []
        for i, img in enumerate(images):
            results.append(self._predict_single(outs, i, scores[i], cell_strides, batch.shape[-2:], sizes[i], img))
        return results

    def _soft_masks(self, outs, i: int, cells: Tensor, size: tuple[int, int]) -> Tensor:
        """Stride-4 mask probabilities (float32 [n, h4, w4]) of image i's grid cells ``cells`` (flat over levels,
        sorted ascending, as ``torch.unique`` gives them: each level's cells are then one contiguous run)."""
        h4, w4 = size
        # One host sync for the run boundaries of all levels (instead of a nonzero per level).
        offsets = torch.tensor(self._level_offsets, device=cells.device, dtype=cells.dtype)
        edges = torch.searchsorted(cells, offsets).tolist()
        runs = [
            (lv, cells[edges[lv] : edges[lv + 1]] - self._level_offsets[lv])
            for lv in range(len(self.cfg.num_grids))
            if edges[lv + 1] > edges[lv]
        ]
        if not runs:
            return torch.empty((0, h4, w4), dtype=torch.float32, device=cells.device)
        if self.is_v2:
            # One dynamic convolution for the kernels of every level (the same sums per output channel).
            feat = outs[-1][i : i + 1]
            w = torch.cat([outs[0][lv][i].flatten(1)[:, k] for lv, k in runs], 1).t().float()  # [n, E]
            return F.conv2d(feat.float(), w[:, :, None, None])[0].sigmoid_()
        parts = []
        for lv, k in runs:
            s = self.cfg.num_grids[lv]
            if self.is_decoupled:
                xs = self._to_stride4(outs[0][lv][i, k % s].float().sigmoid(), size)
                ys = self._to_stride4(outs[1][lv][i, k // s].float().sigmoid(), size)
                parts.append(xs * ys)
            else:
                logits = self.bbox_head.mask_logits(lv, outs[0][lv][i : i + 1].float(), k)
                parts.append(self._to_stride4(logits.sigmoid(), size))
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    @staticmethod
    def _to_stride4(p: Tensor, size: tuple[int, int]) -> Tensor:
        if tuple(p.shape[-2:]) == tuple(size):
            return p
        return F.interpolate(p[None], size=size, mode="bilinear", align_corners=False)[0]

    def _empty(self, h0: int, w0: int, device) -> dict[str, Tensor]:
        return {
            "masks": torch.zeros((0, h0, w0), dtype=torch.bool, device=device),
            "labels": torch.zeros((0,), dtype=torch.int64, device=device),
            "scores": torch.zeros((0,), dtype=torch.float32, device=device),
            "boxes": torch.zeros((0, 4), dtype=torch.float32, device=device),
        }

    def _predict_single(self, outs, i, scores, cell_strides, canvas, valid, image) -> dict[str, Tensor]:
        cfg = self.cfg
        h0, w0 = image.shape[-2:]
        device = scores.device
        hc, wc = canvas
        size4 = (hc // 4, wc // 4)
        cand = (scores > cfg.score_thr).nonzero()  # row-major (cell, class), as the original
        if cand.shape[0] == 0:
            return self._empty(h0, w0, device)
        cells, labels = cand[:, 0], cand[:, 1]
        cand_scores = scores[cells, labels]

        # Soft masks per distinct cell (a cell can give several classes), in bounded chunks: areas and maskness only.
        ucells, inverse = torch.unique(cells, return_inverse=True)
        chunk = max(1, _MASK_CHUNK_ELEMS // (size4[0] * size4[1]))
        one_pass = ucells.shape[0] <= chunk
        areas_u = torch.empty(ucells.shape[0], dtype=torch.float32, device=device)
        soft_sum_u = torch.empty_like(areas_u)
        for start in range(0, ucells.shape[0], chunk):
            soft = self._soft_masks(outs, i, ucells[start : start + chunk], size4)
            binary_u = soft > cfg.mask_thr
            # Counted as uint8 (the bool bytes) into int32: summing the bool tensor would first convert every pixel
            # to int64 (8x the bytes). Exact either way.
            areas_u[start : start + chunk] = binary_u.view(torch.uint8).sum((1, 2), dtype=torch.int32).float()
            # Sum of the probabilities inside the binary mask: soft * 1 or soft * 0 per pixel, the same terms as
            # torch.where(binary, soft, 0) (probabilities are finite) in the same order, at a third of the cost.
            soft_sum_u[start : start + chunk] = (soft * binary_u).sum((1, 2))
        areas = areas_u[inverse]
        keep = (areas > cell_strides[cells]).nonzero().squeeze(1)
        if keep.numel() == 0:
            return self._empty(h0, w0, device)
        cells, labels, areas, inverse = cells[keep], labels[keep], areas[keep], inverse[keep]
        cand_scores = cand_scores[keep] * (soft_sum_u[inverse] / areas)

        # Sort and cut to nms_pre before anything else is built.
        order = torch.sort(cand_scores, descending=True, stable=True).indices[: cfg.nms_pre]
        cells, labels, areas, inverse, cand_scores = (
            cells[order],
            labels[order],
            areas[order],
            inverse[order],
            cand_scores[order],
        )
        if one_pass:  # reuse the soft and binary masks of the pass above (index the 1-byte masks, not the floats)
            soft_u, idx = soft, inverse
        else:
            kept_cells, idx = torch.unique(cells, return_inverse=True)
            soft_u = self._soft_masks(outs, i, kept_cells, size4)
            binary_u = soft_u > cfg.mask_thr
        binary = binary_u[idx]

        decayed = ops.matrix_nms(
            binary,
            labels,
            cand_scores,
            kernel=cfg.nms_kernel,
            sigma=cfg.nms_sigma,
            areas=areas,
            backend=self.backend,
        )
        keep = (decayed >= cfg.update_thr).nonzero().squeeze(1)
        if keep.numel() == 0:
            return self._empty(h0, w0, device)
        decayed = decayed[keep]
        order = torch.sort(decayed, descending=True, stable=True).indices[: cfg.max_per_img]
        keep = keep[order]
        masks = ops.paste_masks(
            soft_u[idx[keep]],
            canvas_size=(hc, wc),
            valid_size=valid,
            out_size=(h0, w0),
            threshold=cfg.mask_thr,
            backend=self.backend,
        )
        return {
            "masks": masks,
            "labels": labels[keep],
            "scores": decayed[order].float(),
            "boxes": mask_boxes(masks),
        }
