"""solo.data: the COCO dataset (skips and counters, category remapping, flips, strict mode), collate and the
synthetic shapes dataset (deterministic, valid COCO, atomic generation)."""

import json
import os
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("pycocotools")
PIL = pytest.importorskip("PIL")
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from solo.data import CocoInstances, DataWarning, Skipped, collate, ensure_synthetic, make_synthetic_coco
from solo.data import synthetic as synthetic_mod

# pycocotools' Cython decode under numpy 2: "__array__ implementation doesn't accept a copy keyword"
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

H, W = 40, 56


def _rect(x0, y0, x1, y1):
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def _ann(aid, img, cat, segm, area=100.0, bbox=(1, 1, 10, 10), crowd=0):
    return {
        "id": aid,
        "image_id": img,
        "category_id": cat,
        "segmentation": segm,
        "area": area,
        "bbox": list(bbox),
        "iscrowd": crowd,
    }


@pytest.fixture()
def tiny_coco(tmp_path):
    """A hand-made COCO set with every kind of bad data. Images: 1 good, 2 corrupt file, 3 missing file, 4 no
    annotations, 5 crowd only. Categories 10 'ten', 5 'five', 7 'seven' (non-contiguous, unsorted)."""
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    Image.fromarray(arr).save(img_dir / "good.png")
    Image.fromarray(arr).save(img_dir / "empty.png")
    Image.fromarray(arr).save(img_dir / "crowd.png")
    (img_dir / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    rle_mask = np.zeros((H, W), dtype=np.uint8)
    rle_mask[25:35, 40:50] = 1
    rle = mask_utils.encode(np.asfortranarray(rle_mask))
    rle = {"size": [H, W], "counts": rle["counts"].decode("ascii")}
    anns = [
        _ann(1, 1, 5, [_rect(10, 10, 30, 20)], area=200.0, bbox=(10, 10, 20, 10)),  # good polygon -> label 0
        _ann(2, 1, 10, rle, area=100.0, bbox=(40, 25, 10, 10)),  # good RLE -> label 2
        # one good polygon, then 2 points, an odd length, strings, NaN: 4 invalid polygons dropped, kept (label 1)
        _ann(
            3,
            1,
            7,
            [_rect(2, 30, 12, 38), [1, 1, 5, 5], [1, 1, 5, 5, 9, 9, 2], ["1"] * 6, [1, 1, 5, 5, float("nan"), 9]],
            area=80.0,
            bbox=(2, 30, 10, 8),
        ),
        _ann(4, 1, 5, [_rect(0, 0, 5, 5)], area=0.0),  # zero area -> degenerate
        _ann(5, 1, 5, [_rect(0, 0, 5, 5)], area=5.0, bbox=(0, 0, 0.5, 5)),  # width < 1 -> degenerate
        _ann(6, 1, 99, [_rect(0, 0, 5, 5)]),  # unknown category -> invalid annotation
        _ann(7, 1, 5, [[1, 2, 3, 4]]),  # no valid polygon -> 1 invalid polygon + invalid annotation
        _ann(8, 1, 5, rle, crowd=1),  # crowd on a good image: excluded
        _ann(9, 2, 5, [_rect(1, 1, 9, 9)]),
        _ann(10, 3, 5, [_rect(1, 1, 9, 9)]),
        _ann(11, 5, 7, rle, crowd=1),
        _ann(12, 42, 7, [_rect(1, 1, 9, 9)]),  # refers to no image -> invalid annotation
    ]
    images = [
        {"id": i, "file_name": name, "height": H, "width": W}
        for i, name in [(1, "good.png"), (2, "corrupt.png"), (3, "missing.png"), (4, "empty.png"), (5, "crowd.png")]
    ]
    cats = [{"id": 10, "name": "ten"}, {"id": 5, "name": "five"}, {"id": 7, "name": "seven"}]
    ann_file = tmp_path / "instances.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return str(ann_file), str(img_dir), arr


def _make(ann_file, img_dir, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = CocoInstances(ann_file, img_dir, **kw)
    return ds, [str(w.message) for w in caught if issubclass(w.category, DataWarning)]


def test_annotation_checks_and_remap(tiny_coco):
    ann_file, img_dir, _ = tiny_coco
    ds, msgs = _make(ann_file, img_dir, train=True)
    assert ds.cat_ids == [5, 7, 10] and ds.class_names == ["five", "seven", "ten"] and ds.num_classes == 3
    assert ds.image_ids == [1, 2, 3]  # 4 (no annotations) and 5 (crowd only) skipped in training
    assert dict(ds.skipped) == {
        "no_annotations": 2,
        "crowd_annotation": 2,
        "degenerate_annotation": 2,
        "invalid_polygon": 5,
        "invalid_annotation": 3,
    }
    # every invalid thing is reported with its annotation id
    assert any("annotation id 6" in m and "99" in m for m in msgs)
    assert any("annotation id 7" in m for m in msgs)
    assert any("[12]" in m and "no image" in m for m in msgs)
    assert sum("annotation id 3" in m for m in msgs) == 4
    assert all(ann_file in m for m in msgs)

    ev, _ = _make(ann_file, img_dir, train=False)
    assert ev.image_ids == [1, 2, 3, 4, 5] and "no_annotations" not in ev.skipped
    assert ev.flip_prob == 0.0 and ds.flip_prob == 0.5


def test_getitem_good_and_skipped_images(tiny_coco):
    ann_file, img_dir, arr = tiny_coco
    ds, _ = _make(ann_file, img_dir, train=True, flip_prob=0.0)
    image, target = ds[0]
    assert image.dtype == torch.float32 and image.shape == (3, H, W)
    assert torch.equal(image, torch.from_numpy(arr).permute(2, 0, 1).float())
    masks, labels = target["masks"], target["labels"]
    assert masks.dtype == torch.uint8 and masks.shape == (3, H, W)
    assert labels.dtype == torch.int64 and labels.tolist() == [0, 2, 1]
    assert target["image_id"] == 1 and target["orig_size"] == (H, W)
    assert masks[0, 15, 20] == 1 and masks[0, 5, 5] == 0 and masks[0, 25, 20] == 0
    assert masks[1].sum() == 100 and masks[1, 25:35, 40:50].all()
    assert masks[2, 34, 7] == 1 and masks[2, 15, 20] == 0
    assert set(masks.unique().tolist()) <= {0, 1}

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s1, s2 = ds[1], ds[2]
    assert isinstance(s1, Skipped) and not s1 and s1.reasons == {"corrupt_image": 1}
    assert isinstance(s2, Skipped) and s2.reasons == {"missing_image": 1}
    msgs = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert any("corrupt.png" in m for m in msgs) and any("missing.png" in m for m in msgs)
    assert ds.skipped["corrupt_image"] == 1 and ds.skipped["missing_image"] == 1

    ev, _ = _make(ann_file, img_dir, train=False)
    for i in (3, 4):  # no annotations, crowd only: kept in evaluation with no targets
        image, target = ev[i]
        assert image.shape == (3, H, W) and target["masks"].shape == (0, H, W) and target["labels"].shape == (0,)
    assert ev[0][1]["masks"].shape[0] == 3


def test_flip_consistency(tiny_coco):
    ann_file, img_dir, _ = tiny_coco
    plain, _ = _make(ann_file, img_dir, train=True, flip_prob=0.0)
    flipped, _ = _make(ann_file, img_dir, train=True, flip_prob=1.0)
    (im0, t0), (im1, t1) = plain[0], flipped[0]
    assert torch.equal(im1, im0.flip(-1)) and torch.equal(t1["masks"], t0["masks"].flip(-1))
    assert torch.equal(t1["labels"], t0["labels"])
    # the flipped mask still lies on the same pixels as the flipped image content
    assert t1["masks"][1, 25:35, W - 50 : W - 40].all()
    # p = 0.5 with torch's RNG: reproducible and both outcomes happen
    half, _ = _make(ann_file, img_dir, train=True)
    torch.manual_seed(0)
    outcomes = [torch.equal(half[0][0], im1) for _ in range(20)]
    torch.manual_seed(0)
    assert outcomes == [torch.equal(half[0][0], im1) for _ in range(20)]
    assert any(outcomes) and not all(outcomes)
    with pytest.raises(ValueError, match="flip_prob"):
        CocoInstances(ann_file, img_dir, train=True, flip_prob=1.5)


def test_strict_mode(tiny_coco, tmp_path):
    ann_file, img_dir, _ = tiny_coco
    with pytest.raises(ValueError, match="instances.json"):
        CocoInstances(ann_file, img_dir, train=True, strict=True)
    with open(ann_file) as f:
        data = json.load(f)
    data["annotations"] = [a for a in data["annotations"] if a["id"] in (1, 9, 10)]
    clean = tmp_path / "clean.json"
    clean.write_text(json.dumps(data))
    ds = CocoInstances(str(clean), img_dir, train=True, strict=True)
    assert ds[0] is not None
    with pytest.raises(ValueError, match="corrupt.png"):
        ds[1]
    with pytest.raises(ValueError, match="missing.png"):
        ds[2]
    with pytest.raises(FileNotFoundError, match="ann_file"):
        CocoInstances(str(tmp_path / "nope.json"), img_dir, train=True)


def test_collate_drops_none(tiny_coco):
    ann_file, img_dir, _ = tiny_coco
    ds, _ = _make(ann_file, img_dir, train=True, flip_prob=0.0)
    batch = collate([None, ds[0], None])
    images, targets = batch
    assert len(images) == 1 and len(targets) == 1 and batch.skipped == 2
    images, targets = collate([None])
    assert images == [] and targets == []
    index_counts = dict(ds.skipped)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loader = torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=collate, num_workers=1)
        (batch,) = list(loader)
    assert len(batch[0]) == 1 and batch.skipped == 2 and batch[1][0]["labels"].tolist() == [0, 2, 1]
    # the reasons come back from the worker process with the batch (the main process's dataset saw nothing)
    assert batch.reasons == {"corrupt_image": 1, "missing_image": 1} and dict(ds.skipped) == index_counts
    assert "skipped" not in batch[1][0]
    # an image kept without one of its annotations (an empty mask) carries the count to collate
    kept = (torch.zeros(3, 2, 2), {"labels": torch.zeros(1), "skipped": {"empty_mask": 1}})
    b = collate([kept, Skipped({"no_annotations": 1}), Skipped({"corrupt_image": 1})])
    assert b.skipped == 2 and b.reasons == {"empty_mask": 1, "no_annotations": 1, "corrupt_image": 1}
    assert "skipped" not in b[1][0] and "skipped" in kept[1]  # the dataset's dict is not modified


# ---------------------------------------------------------------------------------------------------------------
SMALL = {"num_train": 5, "num_val": 3, "image_size": (64, 80), "num_classes": 3, "seed": 3}


def _files(root):
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root)] = f.read()
    return out


def test_synthetic_deterministic(tmp_path):
    a = make_synthetic_coco(tmp_path / "a", **SMALL)
    b = make_synthetic_coco(tmp_path / "b", **SMALL)
    c = make_synthetic_coco(tmp_path / "c", **dict(SMALL, seed=4))
    fa, fb = _files(a["root"]), _files(b["root"])
    assert len(fa) == 5 + 3 + 2 + 1 and fa == fb
    assert _files(c["root"])["train/000001.png"] != fa["train/000001.png"]
    assert sorted(os.listdir(tmp_path)) == ["a", "b", "c"]  # no temporary folders left
    with pytest.raises(FileExistsError):
        make_synthetic_coco(tmp_path / "a", **SMALL)
    with pytest.raises(ValueError, match="num_classes"):
        make_synthetic_coco(tmp_path / "d", **dict(SMALL, num_classes=0))


def test_synthetic_valid_coco(tmp_path):
    p = make_synthetic_coco(tmp_path / "s", **dict(SMALL, num_classes=6, num_train=12))
    assert p["class_names"] == ["ellipse", "rectangle", "triangle", "ring", "star", "cross"]
    for split in ("train", "val"):
        coco = COCO(p[f"{split}_ann"])
        assert sorted(coco.getImgIds()) == list(range(1, SMALL[f"num_{split}"] + 1 if split == "val" else 13))
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == p["class_names"]
        for img_id in coco.getImgIds():
            info = coco.imgs[img_id]
            img = np.asarray(Image.open(os.path.join(p[f"{split}_images"], info["file_name"])))
            assert img.shape == (64, 80, 3) and img.dtype == np.uint8
            anns = coco.imgToAnns[img_id]
            assert 1 <= len(anns) <= 4
            union = np.zeros((64, 80), dtype=np.int32)
            for ann in anns:
                m = coco.annToMask(ann)
                assert ann["iscrowd"] == 0 and 1 <= ann["category_id"] <= 6
                assert m.sum() == ann["area"] >= 64
                x, y, w, h = ann["bbox"]
                ys, xs = np.nonzero(m)
                assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x, y, x + w, y + h)
                union += m
            assert union.max() == 1  # visible masks do not overlap (occlusion resolved)
    ds = CocoInstances(p["train_ann"], p["train_images"], train=True)
    assert len(ds) == 12 and not ds.skipped and ds.class_names == p["class_names"]


def test_synthetic_shapes_are_their_class(tmp_path):
    """A lone (unoccluded) rectangle fills its (rotated) box; an ellipse ~pi/4 of it; a triangle ~half. Checked via the
    ratio of mask area to the area of its minimum-area rotated box (approximated over 90 angles)."""
    p = make_synthetic_coco(
        tmp_path / "s", num_train=80, num_val=0, image_size=(96, 96), num_classes=3, seed=1, max_objects=1
    )
    coco = COCO(p["train_ann"])
    ratios = {1: [], 2: [], 3: []}
    for ann in coco.dataset["annotations"]:
        m = coco.annToMask(ann)
        ys, xs = np.nonzero(m)
        if xs.min() == 0 or ys.min() == 0 or xs.max() == 95 or ys.max() == 95 or ann["area"] < 150:
            continue  # cut by the border
        pts = np.stack([xs, ys], 1).astype(np.float64)
        best = np.inf
        for t in np.linspace(0, np.pi / 2, 90, endpoint=False):
            r = pts @ np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
            best = min(best, (np.ptp(r[:, 0]) + 1) * (np.ptp(r[:, 1]) + 1))
        ratios[ann["category_id"]].append(ann["area"] / best)
    med = {k: float(np.median(v)) for k, v in ratios.items() if v}
    assert set(med) == {1, 2, 3}
    assert med[2] > 0.9 and 0.7 < med[1] < 0.85 and med[3] < 0.7, med


def test_ensure_synthetic_reuses_and_is_atomic(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("SOLO_CACHE", str(cache))
    assert synthetic_mod.synthetic_root() == str(cache / "synthetic-v1")
    p1 = ensure_synthetic(**SMALL)
    assert p1["root"].startswith(str(cache / "synthetic-v1"))
    stamp = os.stat(p1["train_ann"]).st_mtime_ns
    p2 = ensure_synthetic(**SMALL)
    assert p2 == p1 and os.stat(p2["train_ann"]).st_mtime_ns == stamp

    # a generation killed half-way leaves nothing behind, and the next call generates afresh
    calls = []

    def boom(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    real = synthetic_mod._write_split
    monkeypatch.setattr(synthetic_mod, "_write_split", boom)
    with pytest.raises(KeyboardInterrupt):
        ensure_synthetic(**dict(SMALL, seed=9))
    assert os.listdir(cache / "synthetic-v1") == [os.path.basename(p1["root"])]
    # leftovers of a SIGKILLed generation (no cleanup handler ran) are removed once they are stale
    stale = cache / "synthetic-v1" / (os.path.basename(p1["root"]) + ".tmp-dead")
    (stale / "train").mkdir(parents=True)
    os.utime(stale, (0, 0))
    assert ensure_synthetic(**SMALL) == p1 and not stale.exists()
    monkeypatch.setattr(synthetic_mod, "_write_split", real)
    p3 = ensure_synthetic(**dict(SMALL, seed=9))
    assert p3["root"] != p1["root"] and os.path.isfile(p3["val_ann"])
    with pytest.raises(TypeError, match="bogus"):
        ensure_synthetic(bogus=1)


def test_ensure_synthetic_concurrent_winner(tmp_path, monkeypatch):
    """Two processes generating at once: the one whose rename loses finds the winner's dataset and uses it."""
    real_make, real_rename = synthetic_mod.make_synthetic_coco, os.rename

    def rename(src, dst):  # just before this process renames its finished folder, the other one wins
        monkeypatch.setattr(synthetic_mod.os, "rename", real_rename)
        real_make(dst, **SMALL)
        return real_rename(src, dst)

    monkeypatch.setattr(synthetic_mod.os, "rename", rename)
    p = ensure_synthetic(root=tmp_path / "d", **SMALL)
    assert p["root"] == str(tmp_path / "d") and os.path.isfile(p["train_ann"])
    assert sorted(os.listdir(tmp_path)) == ["d"]
    # a folder made with other arguments is never silently reused
    with pytest.raises(FileExistsError, match="other arguments"):
        ensure_synthetic(root=tmp_path / "d", **dict(SMALL, seed=5))


def test_synthetic_sigkill_leaves_no_half_dataset(tmp_path):
    """SIGKILL during generation: the dataset folder never appears half written; the next call generates it."""
    import signal
    import subprocess
    import sys
    import time

    root = tmp_path / "d"
    code = (
        "import sys; from solo.data import make_synthetic_coco; "
        "make_synthetic_coco(sys.argv[1], num_train=2000, num_val=0, image_size=(64, 80))"
    )
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", code, str(root)], env=env)
    deadline = time.time() + 30
    while time.time() < deadline and not any(n.startswith("d.tmp-") for n in os.listdir(tmp_path)):
        time.sleep(0.02)
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not root.exists()
    assert any(n.startswith("d.tmp-") for n in os.listdir(tmp_path))  # killed mid-way: the temporary remains
    p = ensure_synthetic(root=root, **SMALL)
    assert os.path.isfile(p["val_ann"])


def test_training_on_bad_data_completes_and_reports(tiny_coco, tmp_path, capsys):
    """``python -m solo.train`` on a COCO folder with a corrupt image, a missing image, an image without
    annotations, a crowd-only image and invalid polygons (the tiny_coco set, plus clean copies of the good image):
    training and evaluation complete, and the skips are reported by reason, including those a DataLoader worker
    process saw, summed over epochs and kept across --resume."""
    import shutil

    from solo.engine.checkpoint import load_checkpoint
    from solo.train import main

    ann_file, img_dir, _ = tiny_coco
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    with open(ann_file) as f:
        data = json.load(f)
    for k in range(6, 9):  # three more good images, so that most batches train
        shutil.copy(os.path.join(img_dir, "good.png"), os.path.join(img_dir, f"good{k}.png"))
        data["images"].append({"id": k, "file_name": f"good{k}.png", "height": H, "width": W})
        data["annotations"].append(_ann(100 + k, k, 5, [_rect(10, 10, 30, 20)], area=200.0, bbox=(10, 10, 20, 10)))
    for split in ("train2017", "val2017"):
        shutil.copytree(img_dir, root / split)
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    wd = tmp_path / "wd"
    # 6 training images (good x4, corrupt, missing), batch 2: 3 iterations per epoch, 2 epochs
    args = ["--data-root", str(root), "--work-dir", str(wd), "--workers", "1", "--batch-size", "2"]
    args += ["--no-progress", "--cfg-options", "model.train_scales=((64,40),)", "model.test_scale=(64,40)"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        main(args + ["--epochs", "1", "--no-eval"])
        out1 = capsys.readouterr()
        assert "skipped while loading data: corrupt_image=1, missing_image=1" in out1.err
        metrics = main(args + ["--epochs", "2", "--resume"])
    out = capsys.readouterr()
    assert "resumed from" in out.out
    assert "when indexing the annotations: crowd_annotation=2, degenerate_annotation=2" in out.out
    assert "invalid_annotation=3, invalid_polygon=5, no_annotations=2" in out.out
    # loading: the corrupt and the missing image once per epoch, over both runs (the count survived --resume)
    assert "(all epochs and processes): corrupt_image=2, missing_image=2" in out.out
    assert load_checkpoint(str(wd / "final.pth"))["data_skip_reasons"] == {"corrupt_image": 2, "missing_image": 2}
    assert metrics["num_images"] == 6  # evaluation keeps the no-annotation and crowd-only images, skips the bad files
