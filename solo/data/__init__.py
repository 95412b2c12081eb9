"""Data pipeline: COCO instance segmentation (:class:`CocoInstances`, :func:`collate`) and the built-in synthetic
shapes dataset (:func:`make_synthetic_coco`, :func:`ensure_synthetic`, :func:`synthetic_root`; in COCO's folder layout:
:func:`write_synthetic_coco`).

pycocotools and Pillow are imported lazily (inside the functions that need them): ``import solo.data`` needs
neither."""

from solo.data.coco import Batch, CocoInstances, DataWarning, Skipped, collate
from solo.data.synthetic import SHAPES, ensure_synthetic, make_synthetic_coco, synthetic_root, write_synthetic_coco

__all__ = [
    "SHAPES",
    "Batch",
    "CocoInstances",
    "DataWarning",
    "Skipped",
    "collate",
    "ensure_synthetic",
    "make_synthetic_coco",
    "synthetic_root",
    "write_synthetic_coco",
]
