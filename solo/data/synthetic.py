"""The built-in synthetic dataset: random filled shapes on textured backgrounds, as PNG files plus COCO JSON.

Layout under ``root``::

    train/000001.png ...   val/000001.png ...
    annotations/instances_train.json   annotations/instances_val.json
    meta.json              (the generation arguments; written last, marks a complete dataset)

Each image holds 1..``max_objects`` shapes; the class is the shape (ellipse, rectangle, triangle, then ring, star,
cross for more classes), never the colour: the colours of objects and backgrounds are drawn independently of the
class. Shapes overlap (later ones occlude earlier ones; an object left with too little visible area is removed)
and vary in size, aspect and rotation. Segmentations are compressed RLE of the visible masks; ``bbox``/``area``
come from the masks. Generation is deterministic for its arguments (same bytes with the same numpy, Pillow and
zlib) and atomic: written into a
temporary sibling folder and renamed into place, so a killed generation never leaves a half dataset.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time

import numpy as np

__all__ = ["DEFAULTS", "SHAPES", "ensure_synthetic", "make_synthetic_coco", "synthetic_root", "write_synthetic_coco"]

SHAPES = ("ellipse", "rectangle", "triangle", "ring", "star", "cross")
DEFAULTS = {"num_train": 400, "num_val": 200, "image_size": (256, 320), "num_classes": 3, "max_objects": 4, "seed": 0}
_VERSION = 1


def synthetic_root(cache_dir=None) -> str:
    """Default cache folder of the synthetic dataset: ``<cache_dir or $SOLO_CACHE or ~/.cache/solo>/synthetic-v1``."""
    base = cache_dir or os.environ.get("SOLO_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "solo")
    return os.path.join(os.fspath(base), f"synthetic-v{_VERSION}")


def _paths(root: str) -> dict:
    return {
        "root": root,
        "train_images": os.path.join(root, "train"),
        "val_images": os.path.join(root, "val"),
        "train_ann": os.path.join(root, "annotations", "instances_train.json"),
        "val_ann": os.path.join(root, "annotations", "instances_val.json"),
    }


def _shape_polygon(kind: str, cx, cy, rx, ry, angle, rng) -> list[np.ndarray]:
    """Outline(s) of one shape as float [N, 2] (x, y) arrays; a second outline is a hole (ring)."""

    def rot(pts):
        c, s = math.cos(angle), math.sin(angle)
        x, y = pts[:, 0] * rx, pts[:, 1] * ry
        return np.stack([cx + c * x - s * y, cy + s * x + c * y], 1)

    if kind in ("ellipse", "ring"):
        t = np.linspace(0, 2 * math.pi, 64, endpoint=False)
        outer = rot(np.stack([np.cos(t), np.sin(t)], 1))
        if kind == "ellipse":
            return [outer]
        k = rng.uniform(0.45, 0.65)
        return [outer, rot(np.stack([k * np.cos(t), k * np.sin(t)], 1))]
    if kind == "rectangle":
        return [rot(np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64))]
    if kind == "triangle":
        base = np.array([math.pi / 2 + i * 2 * math.pi / 3 for i in range(3)]) + rng.uniform(-0.35, 0.35, 3)
        return [rot(np.stack([np.cos(base), np.sin(base)], 1))]
    if kind == "star":
        t = np.linspace(0, 2 * math.pi, 10, endpoint=False)
        r = np.where(np.arange(10) % 2 == 0, 1.0, rng.uniform(0.4, 0.55))
        return [rot(np.stack([r * np.cos(t), r * np.sin(t)], 1))]
    if kind == "cross":
        a = rng.uniform(0.3, 0.45)
        pts = [
            [-a, -1],
            [a, -1],
            [a, -a],
            [1, -a],
            [1, a],
            [a, a],
            [a, 1],
            [-a, 1],
            [-a, a],
            [-1, a],
            [-1, -a],
            [-a, -a],
        ]
        return [rot(np.array(pts, dtype=np.float64))]
    raise ValueError(f"unknown shape {kind!r}")


def _texture(rng, h: int, w: int, colour: np.ndarray, strength: float) -> np.ndarray:
    """float32 [h, w, 3]: a colour with low-frequency blotches, optional stripes and pixel noise."""
    from PIL import Image

    gh, gw = int(rng.integers(2, 9)), int(rng.integers(2, 9))
    coarse = rng.normal(0, strength, (gh, gw, 3)).astype(np.float32)
    bilinear = Image.Resampling.BILINEAR
    up = np.stack([np.asarray(Image.fromarray(coarse[..., c]).resize((w, h), bilinear)) for c in range(3)], -1)
    img = colour[None, None, :].astype(np.float32) + up
    if rng.random() < 0.4:  # stripes
        period = rng.uniform(6, 30)
        theta = rng.uniform(0, math.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        phase = (xx * math.cos(theta) + yy * math.sin(theta)) * (2 * math.pi / period)
        img += (rng.uniform(8, 25) * np.sin(phase))[..., None]
    img += rng.normal(0, rng.uniform(2, 10), (h, w, 3)).astype(np.float32)
    return img


def _render_image(rng, h: int, w: int, classes: list[str], max_objects: int):
    """Returns (uint8 [h, w, 3] image, [(label, uint8 [h, w] visible mask)])."""
    from PIL import Image, ImageDraw

    img = _texture(rng, h, w, rng.uniform(30, 225, 3), strength=rng.uniform(10, 40))
    objects = []  # (label, full mask bool, colour, texture strength)
    n = int(rng.integers(1, max_objects + 1))
    short = min(h, w)
    for _ in range(n):
        label = int(rng.integers(len(classes)))
        size = rng.uniform(0.1, 0.4) * short  # half-extent in pixels
        aspect = math.exp(rng.uniform(-0.4, 0.4))
        rx, ry = size * aspect, size / aspect
        cx, cy = rng.uniform(0.1 * w, 0.9 * w), rng.uniform(0.1 * h, 0.9 * h)
        outlines = _shape_polygon(classes[label], cx, cy, rx, ry, rng.uniform(0, 2 * math.pi), rng)
        canvas = Image.new("L", (w, h), 0)
        draw = ImageDraw.Draw(canvas)
        for k, pts in enumerate(outlines):
            draw.polygon([(float(x), float(y)) for x, y in pts], fill=255 if k == 0 else 0)
        objects.append((label, np.asarray(canvas) > 0, rng.uniform(0, 255, 3), rng.uniform(5, 25)))
    # Occlusion: each object loses what later objects cover; a mostly hidden one is not drawn at all (its
    # visibility depends only on later objects, so dropping it changes nobody else's).
    keep = [False] * len(objects)
    visible_masks = [None] * len(objects)
    covered = np.zeros((h, w), dtype=bool)
    for j in range(len(objects) - 1, -1, -1):
        full = objects[j][1]
        visible = full & ~covered
        if visible.sum() >= max(64, 0.3 * full.sum()):
            keep[j], visible_masks[j] = True, visible
            covered |= full
    kept = []
    for j, (label, full, colour, strength) in enumerate(objects):
        if keep[j]:
            ys, xs = np.nonzero(full.any(1))[0], np.nonzero(full.any(0))[0]
            y0, y1, x0, x1 = ys[0], ys[-1] + 1, xs[0], xs[-1] + 1  # texture only the object's box
            sub = full[y0:y1, x0:x1]
            img[y0:y1, x0:x1][sub] = _texture(rng, y1 - y0, x1 - x0, colour, strength=strength)[sub]
            kept.append((label, visible_masks[j].astype(np.uint8)))
    return np.clip(img, 0, 255).round().astype(np.uint8), kept


def _write_split(split_dir: str, ann_path: str, rng_seed, n: int, h: int, w: int, classes: list[str], max_objects: int):
    from PIL import Image
    from pycocotools import mask as mask_utils

    os.makedirs(split_dir, exist_ok=True)
    images, annotations = [], []
    seeds = np.random.SeedSequence(rng_seed).spawn(n)
    ann_id = 1
    for i in range(n):
        rng = np.random.default_rng(seeds[i])
        img, objs = _render_image(rng, h, w, classes, max_objects)
        name = f"{i + 1:06d}.png"
        Image.fromarray(img).save(os.path.join(split_dir, name), format="PNG", optimize=False)
        images.append({"id": i + 1, "file_name": name, "height": h, "width": w})
        for label, m in objs:
            rle = mask_utils.encode(np.asfortranarray(m))
            bbox = [float(v) for v in mask_utils.toBbox(rle)]
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": i + 1,
                    "category_id": label + 1,
                    "segmentation": {"size": [h, w], "counts": rle["counts"].decode("ascii")},
                    "area": float(mask_utils.area(rle)),
                    "bbox": bbox,
                    "iscrowd": 0,
                }
            )
            ann_id += 1
    data = {
        "info": {"description": "solo synthetic shapes", "version": str(_VERSION)},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": c, "supercategory": "shape"} for k, c in enumerate(classes)],
    }
    with open(ann_path, "w") as f:
        json.dump(data, f, sort_keys=True, separators=(",", ":"))


def make_synthetic_coco(
    root,
    num_train: int = DEFAULTS["num_train"],
    num_val: int = DEFAULTS["num_val"],
    image_size=DEFAULTS["image_size"],
    num_classes: int = DEFAULTS["num_classes"],
    seed: int = DEFAULTS["seed"],
    max_objects: int = DEFAULTS["max_objects"],
    overwrite: bool = False,
) -> dict:
    """Generate the synthetic COCO dataset into ``root`` (atomically). Returns the paths: ``root``,
    ``train_images``, ``val_images``, ``train_ann``, ``val_ann`` and ``class_names``.

    ``image_size`` is (H, W). Raises FileExistsError if ``root`` exists (unless ``overwrite``)."""
    root = os.path.abspath(os.fspath(root))
    h, w = (int(image_size), int(image_size)) if isinstance(image_size, int) else map(int, image_size)
    if h < 32 or w < 32:
        raise ValueError(f"make_synthetic_coco: image_size must be at least 32x32, got {image_size}")
    if not 1 <= num_classes <= len(SHAPES):
        raise ValueError(f"make_synthetic_coco: num_classes must be in 1..{len(SHAPES)}, got {num_classes}")
    if num_train < 0 or num_val < 0:
        raise ValueError(f"make_synthetic_coco: num_train/num_val must be >= 0, got {num_train}/{num_val}")
    if max_objects < 1:
        raise ValueError(f"make_synthetic_coco: max_objects must be >= 1, got {max_objects}")
    if os.path.exists(root) and not overwrite:
        raise FileExistsError(f"make_synthetic_coco: {root} exists (pass overwrite=True or use ensure_synthetic)")
    classes = list(SHAPES[:num_classes])
    meta = {
        "version": _VERSION,
        "num_train": int(num_train),
        "num_val": int(num_val),
        "image_size": [h, w],
        "num_classes": int(num_classes),
        "seed": int(seed),
        "max_objects": int(max_objects),
        "class_names": classes,
    }
    parent = os.path.dirname(root)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=os.path.basename(root) + ".tmp-", dir=parent)
    try:
        p = _paths(tmp)
        os.makedirs(os.path.dirname(p["train_ann"]))
        _write_split(p["train_images"], p["train_ann"], [seed, 0], num_train, h, w, classes, max_objects)
        _write_split(p["val_images"], p["val_ann"], [seed, 1], num_val, h, w, classes, max_objects)
        with open(os.path.join(tmp, "meta.json"), "w") as f:
            json.dump(meta, f, sort_keys=True, indent=1)
        os.chmod(tmp, 0o755)
        if os.path.exists(root) and overwrite:
            old = tempfile.mkdtemp(prefix=os.path.basename(root) + ".old-", dir=parent)
            os.rename(root, os.path.join(old, "d"))
            os.rename(tmp, root)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dict(_paths(root), class_names=classes)


def write_synthetic_coco(
    root,
    num_train: int = 8,
    num_val: int = 4,
    image_size=DEFAULTS["image_size"],
    num_classes: int = DEFAULTS["num_classes"],
    seed: int = DEFAULTS["seed"],
    max_objects: int = DEFAULTS["max_objects"],
) -> dict:
    """Write synthetic images in COCO's folder layout, as a custom dataset to try ``--data-root`` on (and the tests
    of the COCO path)::

        root/annotations/instances_train2017.json   root/annotations/instances_val2017.json
        root/train2017/000001.png ...               root/val2017/000001.png ...

    Same images and annotations as :func:`make_synthetic_coco` with the same arguments. ``root`` must not hold these
    files yet. Returns the paths (``root``, ``train_ann``, ``val_ann``, ``train_images``, ``val_images``) and
    ``class_names``."""
    root = os.path.abspath(os.fspath(root))
    h, w = (int(image_size), int(image_size)) if isinstance(image_size, int) else map(int, image_size)
    if not 1 <= num_classes <= len(SHAPES):
        raise ValueError(f"write_synthetic_coco: num_classes must be in 1..{len(SHAPES)}, got {num_classes}")
    if num_train < 1 or num_val < 1:
        raise ValueError(f"write_synthetic_coco: num_train/num_val must be >= 1, got {num_train}/{num_val}")
    paths = {
        "root": root,
        "train_ann": os.path.join(root, "annotations", "instances_train2017.json"),
        "val_ann": os.path.join(root, "annotations", "instances_val2017.json"),
        "train_images": os.path.join(root, "train2017"),
        "val_images": os.path.join(root, "val2017"),
    }
    taken = [p for p in paths.values() if p != root and os.path.exists(p)]
    if taken:
        raise FileExistsError(f"write_synthetic_coco: {taken[0]} exists")
    classes = list(SHAPES[:num_classes])
    os.makedirs(os.path.dirname(paths["train_ann"]), exist_ok=True)
    _write_split(paths["train_images"], paths["train_ann"], [seed, 0], num_train, h, w, classes, max_objects)
    _write_split(paths["val_images"], paths["val_ann"], [seed, 1], num_val, h, w, classes, max_objects)
    return dict(paths, class_names=classes)


def _read_meta(root: str):
    try:
        with open(os.path.join(root, "meta.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _remove_stale_temporaries(root: str, max_age_s: float = 3600.0):
    """Delete what killed generations left next to ``root`` (temporary folders untouched for ``max_age_s``)."""
    parent, base = os.path.dirname(root), os.path.basename(root)
    try:
        names = os.listdir(parent)
    except OSError:
        return
    now = time.time()
    for name in names:
        if name.startswith((base + ".tmp-", base + ".old-")):
            path = os.path.join(parent, name)
            try:
                if now - os.stat(path).st_mtime > max_age_s:
                    shutil.rmtree(path, ignore_errors=True)
            except OSError:
                pass


def ensure_synthetic(root=None, cache_dir=None, **kwargs) -> dict:
    """Generate the synthetic dataset once and reuse it. ``kwargs`` are those of :func:`make_synthetic_coco`
    (defaults: :data:`DEFAULTS`). ``root`` defaults to ``synthetic_root(cache_dir)/<tag of the arguments>``, so
    different arguments get different folders. Safe when several processes call it at once (one rename wins).
    Returns the paths as :func:`make_synthetic_coco`."""
    unknown = set(kwargs) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"ensure_synthetic: unknown arguments {sorted(unknown)} (known: {sorted(DEFAULTS)})")
    args = dict(DEFAULTS, **kwargs)
    size = args["image_size"]
    h, w = (size, size) if isinstance(size, int) else size
    if root is None:
        tag = (
            f"n{args['num_train']}-{args['num_val']}_{h}x{w}_c{args['num_classes']}_o{args['max_objects']}"
            f"_s{args['seed']}"
        )
        root = os.path.join(synthetic_root(cache_dir), tag)
    root = os.path.abspath(os.fspath(root))
    want = {
        "version": _VERSION,
        "num_train": int(args["num_train"]),
        "num_val": int(args["num_val"]),
        "image_size": [int(h), int(w)],
        "num_classes": int(args["num_classes"]),
        "seed": int(args["seed"]),
        "max_objects": int(args["max_objects"]),
        "class_names": list(SHAPES[: args["num_classes"]]),
    }
    _remove_stale_temporaries(root)
    meta = _read_meta(root)
    if meta == want:
        return dict(_paths(root), class_names=meta["class_names"])
    if os.path.exists(root) and meta is not None:
        raise FileExistsError(f"ensure_synthetic: {root} holds a synthetic dataset made with other arguments {meta}")
    if os.path.exists(root) and os.listdir(root):
        raise FileExistsError(f"ensure_synthetic: {root} exists and is not a synthetic dataset (no meta.json)")
    if os.path.isdir(root):
        os.rmdir(root)
    try:
        return make_synthetic_coco(root, **args)
    except (FileExistsError, OSError):
        if _read_meta(root) == want:  # another process finished first
            return dict(_paths(root), class_names=want["class_names"])
        raise
