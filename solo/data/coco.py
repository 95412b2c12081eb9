"""COCO instance segmentation through pycocotools (polygons and RLE), with reported-and-skipped bad data.

``CocoInstances(ann_file, image_dir, train)[i]`` -> ``(image, target)`` or ``None`` for a skipped image:

- ``image``: float32 [3, H, W], RGB, 0..255, at the image's own size (resize, normalisation and padding happen in
  the model).
- ``target``: ``{"masks": uint8 [K, H, W] (0/1), "labels": int64 [K] (contiguous 0..C-1), "image_id": int,
  "orig_size": (H, W)}``.

Annotations are checked once, when the dataset is built: crowd annotations are excluded from the targets; an
annotation with ``area <= 0`` or a box side under 1 pixel is dropped; polygons with fewer than 3 points or an odd
number of coordinates are dropped one by one; an annotation with an unknown category, no valid polygon or a
malformed RLE is reported (a :class:`DataWarning` naming the file and the annotation id) and dropped. In training,
images left without annotations are skipped (kept in evaluation, with K = 0). A missing or corrupt image file is
found when it is read: reported and a :class:`Skipped` returned (``collate`` drops it). ``dataset.skipped`` counts
every reason in the process that saw it; so that the counts survive DataLoader worker processes, what one
``__getitem__`` call skipped also travels with its result (``Skipped.reasons``, or ``target["skipped"]`` for an image
kept without some of its annotations) and :func:`collate` sums it into ``Batch.reasons``. With ``strict=True`` any
missing/corrupt image or invalid annotation raises a ValueError naming the file instead.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import warnings
from collections import Counter

import numpy as np
import torch

__all__ = ["Batch", "CocoInstances", "DataWarning", "Skipped", "collate"]


class DataWarning(UserWarning):
    """A corrupt/missing image or an invalid annotation that was skipped."""


class Skipped:
    """What ``CocoInstances[i]`` returns for an image it skips: false in a boolean context; ``reasons`` maps each
    reason (``missing_image``, ``corrupt_image``, ``no_annotations``, ...) to its count for this call."""

    __slots__ = ("reasons",)

    def __init__(self, reasons=None):
        self.reasons = dict(reasons or {})

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"Skipped({self.reasons})"

    def __reduce__(self):
        return (Skipped, (self.reasons,))


class Batch(tuple):
    """``(images, targets)`` as returned by :func:`collate`. ``batch.skipped``: the number of images the dataset
    skipped (dropped from the batch); ``batch.reasons``: a Counter of everything skipped while loading the batch
    (dropped images and dropped annotations of kept images), by reason."""

    skipped: int = 0

    def __new__(cls, images, targets, skipped: int = 0, reasons=None):
        self = super().__new__(cls, (images, targets))
        self.skipped = skipped
        self.reasons = Counter(reasons or {})
        return self

    def __reduce__(self):  # survives the trip back from DataLoader worker processes
        return (Batch, (self[0], self[1], self.skipped, dict(self.reasons)))


def collate(batch):
    """DataLoader ``collate_fn``: drops skipped entries (``None`` or :class:`Skipped`) and returns ``(list of images
    [3, H, W], list of target dicts)`` as a :class:`Batch` that counts what was skipped (``skipped``, ``reasons``);
    the ``"skipped"`` entries of the targets are moved into ``reasons``."""
    reasons: Counter = Counter()
    images, targets = [], []
    for b in batch:
        if b is None or isinstance(b, Skipped):
            reasons.update(getattr(b, "reasons", None) or {})
            continue
        image, target = b
        if "skipped" in target:
            target = dict(target)
            reasons.update(target.pop("skipped"))
        images.append(image)
        targets.append(target)
    return Batch(images, targets, skipped=len(batch) - len(images), reasons=reasons)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _valid_polygon(p) -> bool:
    """A flat list of at least 3 (x, y) points, all finite numbers."""
    if not isinstance(p, (list, tuple)) or len(p) < 6 or len(p) % 2:
        return False
    try:
        a = np.asarray(p)
    except (TypeError, ValueError):
        return False
    return a.ndim == 1 and a.dtype.kind in "iuf" and bool(np.isfinite(a).all())


class CocoInstances(torch.utils.data.Dataset):
    """COCO-format instance segmentation dataset (see the module docstring).

    Args:
        ann_file: COCO JSON (``instances_*.json``).
        image_dir: folder the images' ``file_name`` are relative to.
        train: training mode (skip images without usable annotations; flip with probability 0.5 by default).
        strict: raise a ValueError naming the file on a missing/corrupt image or an invalid annotation.
        flip_prob: horizontal flip probability (torch RNG); default 0.5 in training, 0 in evaluation.

    Attributes: ``coco`` (the pycocotools COCO), ``class_names`` (label -> name), ``cat_ids`` (label -> COCO
    category id), ``cat_to_label``, ``image_ids`` (index -> COCO image id), ``skipped`` (Counter reason -> count).
    """

    def __init__(self, ann_file, image_dir, train: bool, strict: bool = False, flip_prob: float | None = None):
        try:
            from pycocotools.coco import COCO
        except ImportError as e:  # pragma: no cover
            raise ImportError("CocoInstances needs pycocotools (pip install pycocotools)") from e
        ann_file, image_dir = os.fspath(ann_file), os.fspath(image_dir)
        if not os.path.isfile(ann_file):
            raise FileNotFoundError(f"CocoInstances: annotation file not found: ann_file={ann_file!r}")
        if not os.path.isdir(image_dir):
            raise FileNotFoundError(f"CocoInstances: image folder not found: image_dir={image_dir!r}")
        if flip_prob is None:
            flip_prob = 0.5 if train else 0.0
        if not 0.0 <= float(flip_prob) <= 1.0:
            raise ValueError(f"CocoInstances: flip_prob must be in [0, 1], got {flip_prob}")
        self.ann_file, self.image_dir = ann_file, image_dir
        self.train, self.strict, self.flip_prob = bool(train), bool(strict), float(flip_prob)
        self.skipped: Counter = Counter()
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints timing lines
                self.coco = COCO(ann_file)
        except Exception as e:
            raise ValueError(f"CocoInstances: cannot read COCO annotations {ann_file!r}: {e}") from e
        coco = self.coco
        self.cat_ids = sorted(coco.cats)
        self.cat_to_label = {c: i for i, c in enumerate(self.cat_ids)}
        self.class_names = [str(coco.cats[c].get("name", c)) for c in self.cat_ids]
        if not self.cat_ids:
            raise ValueError(f"CocoInstances: {ann_file!r} has no categories")

        # Per image: the list of (annotation id, label, segmentation) that survive the checks.
        self._anns: dict[int, list[tuple[int, int, object]]] = {}
        self.image_ids: list[int] = []
        for img_id in sorted(coco.imgs):
            info = coco.imgs[img_id]
            h, w = info.get("height"), info.get("width")
            if not (_is_number(h) and _is_number(w) and h >= 1 and w >= 1 and "file_name" in info):
                self._bad(
                    "invalid_image_entry", f"{ann_file}: image id {img_id}: missing file_name or bad height/width"
                )
                continue
            kept = []
            for ann in coco.imgToAnns.get(img_id, []):
                entry = self._check_ann(ann, int(h), int(w))
                if entry is not None:
                    kept.append(entry)
            if train and not kept:
                self.skipped["no_annotations"] += 1  # also crowd-only images: normal, not warned
                continue
            self._anns[img_id] = kept
            self.image_ids.append(img_id)
        orphans = [a.get("id") for a in coco.dataset.get("annotations", []) if a.get("image_id") not in coco.imgs]
        if orphans:
            self._bad(
                "invalid_annotation", f"{ann_file}: annotation ids {orphans[:5]}... refer to no image", len(orphans)
            )

    # ----------------------------------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.cat_ids)

    def __len__(self) -> int:
        return len(self.image_ids)

    def __repr__(self) -> str:
        return (
            f"CocoInstances({self.ann_file!r}, {len(self)} images, {self.num_classes} classes, "
            f"train={self.train}, skipped={dict(self.skipped)})"
        )

    def _bad(self, reason: str, msg: str, count: int = 1):
        """Count and report a problem (or raise in strict mode)."""
        if self.strict:
            raise ValueError(f"solo.data ({reason}, strict mode): {msg}")
        self.skipped[reason] += count
        warnings.warn(f"solo.data: {msg} (skipped)", DataWarning, stacklevel=3)

    def _check_ann(self, ann: dict, h: int, w: int):
        """(ann id, label, segmentation) for a usable annotation, else None (counted)."""
        aid = ann.get("id")
        where = f"{self.ann_file}: annotation id {aid}"
        if ann.get("iscrowd", 0):
            self.skipped["crowd_annotation"] += 1
            return None
        cat = ann.get("category_id")
        if cat not in self.cat_to_label:
            self._bad("invalid_annotation", f"{where}: category_id {cat!r} is not one of the dataset's categories")
            return None
        area, bbox = ann.get("area"), ann.get("bbox")
        if not _is_number(area) or not (
            isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(_is_number(v) for v in bbox)
        ):
            self._bad("invalid_annotation", f"{where}: missing or malformed area/bbox")
            return None
        if area <= 0 or bbox[2] < 1 or bbox[3] < 1:
            self.skipped["degenerate_annotation"] += 1
            return None
        segm = ann.get("segmentation")
        if isinstance(segm, list):
            polys = []
            for k, p in enumerate(segm):
                if _valid_polygon(p):
                    polys.append(p)
                else:
                    n = len(p) if isinstance(p, (list, tuple)) else type(p).__name__
                    self._bad("invalid_polygon", f"{where}: polygon {k} is invalid ({n} coordinates)")
            if not polys:
                self._bad("invalid_annotation", f"{where}: no valid polygon")
                return None
            segm = polys
        elif isinstance(segm, dict):
            size, counts = segm.get("size"), segm.get("counts")
            if not (isinstance(size, (list, tuple)) and list(size) == [h, w]):
                self._bad("invalid_annotation", f"{where}: RLE size {size!r} differs from the image's {[h, w]}")
                return None
            if isinstance(counts, list):
                if not all(isinstance(c, int) and c >= 0 for c in counts) or sum(counts) != h * w:
                    self._bad("invalid_annotation", f"{where}: uncompressed RLE counts do not cover {h}x{w} pixels")
                    return None
            elif not isinstance(counts, (str, bytes)):
                self._bad("invalid_annotation", f"{where}: RLE counts of type {type(counts).__name__}")
                return None
        else:
            self._bad("invalid_annotation", f"{where}: segmentation of type {type(segm).__name__}")
            return None
        return (aid, self.cat_to_label[cat], segm)

    # ----------------------------------------------------------------------------------------------------------
    def _decode(self, aid, segm, h: int, w: int):
        """uint8 [h, w] 0/1 mask of one annotation's segmentation, or None if pycocotools rejects it."""
        from pycocotools import mask as mask_utils

        try:
            if isinstance(segm, list):
                rle = mask_utils.merge(mask_utils.frPyObjects(segm, h, w))
            elif isinstance(segm["counts"], list):
                rle = mask_utils.frPyObjects(segm, h, w)
            else:
                rle = segm
            with warnings.catch_warnings():  # numpy 2 "__array__ ... copy keyword" from pycocotools' Cython
                warnings.simplefilter("ignore", DeprecationWarning)
                m = mask_utils.decode(rle)
        except Exception as e:  # noqa: BLE001 - pycocotools raises assorted types on malformed data
            self._bad("invalid_annotation", f"{self.ann_file}: annotation id {aid}: cannot decode its mask ({e})")
            return None
        if m.ndim == 3:
            m = m[..., 0]
        return m

    def load_image(self, img_id: int):
        """uint8 [H, W, 3] RGB array of one image, or None (reported and counted) if missing/corrupt."""
        from PIL import Image

        info = self.coco.imgs[img_id]
        path = os.path.join(self.image_dir, info["file_name"])
        if not os.path.isfile(path):
            self._bad("missing_image", f"image file not found: {path} (image id {img_id})")
            return None
        try:
            with Image.open(path) as im:
                arr = np.asarray(im.convert("RGB"))
        except Exception as e:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
            self._bad("corrupt_image", f"cannot read image {path} (image id {img_id}): {type(e).__name__}: {e}")
            return None
        if arr.shape[:2] != (int(info["height"]), int(info["width"])):
            self._bad(
                "corrupt_image",
                f"image {path} (image id {img_id}) is {arr.shape[1]}x{arr.shape[0]} but the annotations say "
                f"{info['width']}x{info['height']}",
            )
            return None
        return arr

    def __getitem__(self, index: int):
        before = self.skipped.copy()
        item = self._load(index)
        reasons = dict(self.skipped - before)
        if item is None:
            return Skipped(reasons)
        if reasons:
            item[1]["skipped"] = reasons
        return item

    def _load(self, index: int):
        img_id = self.image_ids[index]
        arr = self.load_image(img_id)
        if arr is None:
            return None
        h, w = arr.shape[:2]
        masks, labels = [], []
        for aid, label, segm in self._anns[img_id]:
            m = self._decode(aid, segm, h, w)
            if m is None:
                continue
            if not m.any():
                self.skipped["empty_mask"] += 1
                continue
            masks.append(m)
            labels.append(label)
        if self.train and not masks:
            self.skipped["no_annotations"] += 1
            return None
        image = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)).astype(np.float32))
        mask_t = torch.from_numpy(np.stack(masks)) if masks else torch.zeros((0, h, w), dtype=torch.uint8)
        label_t = torch.tensor(labels, dtype=torch.int64)
        if self.flip_prob > 0 and torch.rand(()).item() < self.flip_prob:
            image = image.flip(-1)
            mask_t = mask_t.flip(-1)
        target = {"masks": mask_t.contiguous(), "labels": label_t, "image_id": int(img_id), "orig_size": (h, w)}
        return image.contiguous(), target
