"""The training engine: atomic checkpoints, the lr schedule, a few training steps, bit-exact resume (in process and
after a SIGKILL), non-finite losses, COCO evaluation, and the ``python -m solo.train`` command line."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from solo.engine.checkpoint import find_latest, load_checkpoint, save_checkpoint
from solo.engine.trainer import Trainer, WarmupStepLR

sys.path.insert(0, os.path.dirname(__file__))
from _engine_helpers import TINY_CLI_ARGS, TinyShapes, tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _model(cfg, seed=0):
    from solo.models import build_model

    torch.manual_seed(seed)
    return build_model(cfg)


def _subprocess_env(tmp_path) -> dict:
    """Environment of a ``python -m solo.train`` subprocess: its own dataset cache, one thread, this checkout."""
    return dict(
        os.environ,
        SOLO_CACHE=str(tmp_path / "cache"),
        OMP_NUM_THREADS="1",
        PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip(tmp_path):
    cfg = tiny_config()
    m = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    m(torch.randn(4, 3)).sum().backward()
    opt.step()
    sched = WarmupStepLR(opt, 0.1, (2,), warmup_iters=5, warmup_ratio=0.1)
    sched.step(3, 0)
    torch.manual_seed(123)
    path = save_checkpoint(
        str(tmp_path / "a.pth"),
        m,
        opt,
        sched,
        torch.amp.GradScaler("cpu", enabled=False),
        epoch=2,
        iteration=7,
        config=cfg,
        class_names=["x", "y"],
    )
    expect = torch.rand(5)
    torch.rand(100)
    ckpt = load_checkpoint(path)  # weights_only=True
    assert ckpt["epoch"] == 2 and ckpt["iter"] == 7 and ckpt["class_names"] == ["x", "y"]
    assert ckpt["config"]["model"]["num_classes"] == cfg.model.num_classes
    assert isinstance(ckpt["config"]["model"]["train_scales"], list)
    assert _same_state(ckpt["model"], m.state_dict())
    assert ckpt["optimizer"]["state"][0]["momentum_buffer"].shape == (2, 3)
    from solo.engine.checkpoint import restore_rng_state

    restore_rng_state(ckpt["rng"])
    assert torch.equal(torch.rand(5), expect)
    sched2 = WarmupStepLR(opt, 0.0, ())
    sched2.load_state_dict(ckpt["scheduler"])
    assert sched2.lr_at(3, 0) == sched.lr_at(3, 0) and sched2.last_iter == 3
    assert find_latest(str(tmp_path)) == path
    assert load_checkpoint(str(tmp_path))["iter"] == 7  # a folder means its latest
    from solo.train import config_from_dict

    assert config_from_dict(ckpt["config"]) == cfg


def test_checkpoint_atomic(tmp_path, monkeypatch):
    m = torch.nn.Linear(3, 2)
    good = save_checkpoint(str(tmp_path / "c.pth"), m, epoch=1, iteration=1)
    before = Path(good).read_bytes()
    real_save = torch.save

    def broken_save(obj, f):  # writes half a checkpoint, then dies
        real_save(obj, f)
        f.truncate(10)
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(good, torch.nn.Linear(3, 2), epoch=2, iteration=2)
    monkeypatch.setattr(torch, "save", real_save)
    assert Path(good).read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["c.pth", "latest"]  # no temp file left behind
    # a stray truncated temp file (a process killed mid-write) is never picked as the latest
    (tmp_path / ".d.pth.xyz.tmp").write_bytes(before[:20])
    assert find_latest(str(tmp_path)) == good
    assert load_checkpoint(good)["epoch"] == 1
    with pytest.raises(FileNotFoundError):
        load_checkpoint(str(tmp_path / "missing.pth"))


# ---------------------------------------------------------------------------------------------------- schedule


def test_warmup_step_schedule():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    s = WarmupStepLR(opt, 0.01, (9, 11), warmup_iters=500, warmup_ratio=1 / 3)
    assert math.isclose(s.lr_at(0, 0), 0.01 / 3)
    assert math.isclose(s.lr_at(250, 0), 0.01 * (1 - 0.5 * (2 / 3)))
    assert math.isclose(s.lr_at(500, 0), 0.01)
    assert math.isclose(s.lr_at(10_000, 8), 0.01)
    assert math.isclose(s.lr_at(10_000, 9), 0.001)
    assert math.isclose(s.lr_at(10_000, 10), 0.001)
    assert math.isclose(s.lr_at(10_000, 11), 1e-4)
    assert math.isclose(s.step(100, 0), 0.01 * (1 - 0.8 * (2 / 3))) and opt.param_groups[0]["lr"] == s.lr_at(100, 0)
    # lr scaled linearly with the total batch
    cfg = tiny_config()
    tr = Trainer(cfg, _model(cfg), TinyShapes(4), "/nonexistent-unused", batch_size=2, max_iters=1, progress=False)
    assert math.isclose(tr.base_lr, cfg.train.lr * 2 / cfg.train.reference_batch)
    assert isinstance(tr.optimizer, torch.optim.SGD) and tr.optimizer.defaults["momentum"] == cfg.train.momentum


def test_adamw_option(tmp_path):
    """``train.optimizer=adamw``: AdamW with the config's weight decay, the same schedule, and bit-exact resume."""
    from solo.configs import TrainConfig

    cfg = tiny_config().override("train.optimizer='adamw'", "train.weight_decay=0.05")
    a = Trainer(cfg, _model(cfg), TinyShapes(4), str(tmp_path / "a"), max_iters=3, checkpoint_period=1, progress=False)
    assert isinstance(a.optimizer, torch.optim.AdamW) and a.optimizer.defaults["weight_decay"] == 0.05
    a.train()
    b = Trainer(cfg, _model(cfg, seed=1), TinyShapes(4), str(tmp_path / "b"), max_iters=3, progress=False)
    b.train(resume=str(tmp_path / "a" / "iter_0000001.pth"))
    assert _same_state(a.module.state_dict(), b.module.state_dict())
    assert all(h["lr"] == a.scheduler.lr_at(h["iter"] - 1, h["epoch"] - 1) for h in a.history)
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="adam")


# ---------------------------------------------------------------------------------------------------- training


def test_train_few_iterations(tmp_path):
    cfg = tiny_config()
    tr = Trainer(cfg, _model(cfg), TinyShapes(4), str(tmp_path), max_iters=3, progress=False, log_period=1)
    hist = tr.train()
    assert [h["iter"] for h in hist] == [1, 2, 3]
    assert all(math.isfinite(h["loss"]) and h["lr"] > 0 for h in hist)
    assert tr.iters_per_epoch == 2 and tr.epochs == 2
    files = set(os.listdir(tmp_path))
    assert {"epoch_0001.pth", "final.pth", "latest", "log.jsonl"} <= files
    assert find_latest(str(tmp_path)).endswith("final.pth")
    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [x["iter"] for x in lines] == [1, 2, 3] and "loss_cate" in lines[0]
    ckpt = load_checkpoint(str(tmp_path / "final.pth"))
    assert ckpt["iter"] == 3 and ckpt["class_names"] == ["a", "b", "c"]


def test_resume_mid_epoch_is_bit_exact(tmp_path):
    cfg = tiny_config()
    a = Trainer(cfg, _model(cfg), TinyShapes(4), str(tmp_path / "a"), max_iters=5, checkpoint_period=1, progress=False)
    a.train()
    # a different initialisation: everything must come from the checkpoint
    b = Trainer(cfg, _model(cfg, seed=1), TinyShapes(4), str(tmp_path / "b"), max_iters=5, progress=False)
    b.train(resume=str(tmp_path / "a" / "iter_0000003.pth"))  # mid-epoch 2
    assert b.iter == 5
    assert _same_state(a.module.state_dict(), b.module.state_dict())
    assert _same_state(a.optimizer.state_dict()["state"][0], b.optimizer.state_dict()["state"][0])


def test_nonfinite_loss_stops_or_skips(tmp_path):
    cfg = tiny_config()

    class NaNModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, images, targets):
            return {"loss_cate": self.w * float("nan"), "loss_mask": self.w * 1.0}

    tr = Trainer(cfg, NaNModel(), TinyShapes(4), str(tmp_path / "stop"), max_iters=2, progress=False)
    with pytest.raises(FloatingPointError, match=r"iteration 1.*loss_cate=nan"):
        tr.train()
    assert not os.path.exists(tmp_path / "stop" / "final.pth")
    tr = Trainer(cfg, NaNModel(), TinyShapes(4), str(tmp_path / "skip"), max_iters=2, progress=False, nonfinite="skip")
    tr.train()
    assert tr.skipped_steps == 2 and torch.equal(tr.module.w.detach(), torch.ones(1))


# ---------------------------------------------------------------------------------------------------- SIGKILL


def test_resume_after_sigkill_is_bit_exact(tmp_path):
    """``python -m solo.train`` (synthetic data, a data-loader worker) killed with SIGKILL mid-epoch, then resumed
    with ``--resume``, ends with the same weights as an uninterrupted run (bit for bit; ~16 s on 2 cores)."""
    pytest.importorskip("solo.data")
    env = _subprocess_env(tmp_path)
    # 6 training images, batch 2: 3 iterations per epoch; 7 iterations end mid-epoch 3
    args = [
        "--max-iters",
        "7",
        "--checkpoint-period",
        "1",
        "--no-eval",
        "--synthetic-num-train",
        "6",
        "--synthetic-num-val",
        "1",
        "--workers",
        "1",
        "--batch-size",
        "2",
        "--no-progress",
        "--seed",
        "3",
        "--cfg-options",
        "model.train_scales=((160,128),(160,96))",
        "model.test_scale=(160,128)",
    ]
    full, killed = tmp_path / "full", tmp_path / "killed"

    def cmd(wd, *extra):
        return [sys.executable, "-m", "solo.train", "--work-dir", str(wd), *extra, *args]

    subprocess.run(cmd(full), check=True, env=env, cwd=ROOT, timeout=300, capture_output=True)
    p = subprocess.Popen(cmd(killed), env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (killed / "iter_0000005.pth").exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed / "final.pth").exists()
    r = subprocess.run(
        cmd(killed, "--resume"), check=True, env=env, cwd=ROOT, timeout=300, capture_output=True, text=True
    )
    assert "resumed from" in r.stdout
    a = load_checkpoint(str(full / "final.pth"))
    b = load_checkpoint(str(killed / "final.pth"))
    assert a["iter"] == b["iter"] == 7
    assert _same_state(a["model"], b["model"])
    assert _same_state(a["optimizer"]["state"][0], b["optimizer"]["state"][0])


# ---------------------------------------------------------------------------------------------------- evaluation


def _coco_gt(masks_per_image):
    import numpy as np
    from pycocotools import mask as mask_util
    from pycocotools.coco import COCO

    images, anns = [], []
    for i, (masks, labels) in enumerate(masks_per_image, 1):
        h, w = masks.shape[1:]
        images.append({"id": i, "height": h, "width": w, "file_name": f"{i}.png"})
        for m, lab in zip(masks, labels):
            rle = mask_util.encode(np.asfortranarray(m.numpy().astype(np.uint8)))
            rle["counts"] = rle["counts"].decode()
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": [10, 20, 30][lab],
                    "segmentation": rle,
                    "area": float(m.sum()),
                    "bbox": list(mask_util.toBbox(rle)),
                    "iscrowd": 0,
                }
            )
    gt = COCO()
    gt.dataset = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": c, "name": str(c)} for c in (10, 20, 30)],
    }
    gt.createIndex()
    return gt


class _Oracle(torch.nn.Module):
    """Predicts the ground truth (or nothing)."""

    def __init__(self, ds, empty=False):
        super().__init__()
        self.ds, self.empty, self.i = ds, empty, 0

    def forward(self, images):
        from solo.models.detector import mask_boxes

        out = []
        for _ in images:
            _, t = self.ds[self.i]
            self.i += 1
            m = t["masks"].bool()[: 0 if self.empty else None]
            out.append(
                {"masks": m, "labels": t["labels"][: len(m)], "scores": torch.ones(len(m)), "boxes": mask_boxes(m)}
            )
        return out


@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8])
def test_predictions_to_coco_rle_matches_per_mask_encoding(dtype):
    """The batched RLE (one transposing copy, one encode call per image) gives each mask's own RLE, for bool and
    uint8 (any nonzero inside) masks, also non-contiguous ones; boxes are xywh."""
    from pycocotools import mask as mask_util

    from solo.evaluation.coco_eval import predictions_to_coco
    from solo.models.detector import mask_boxes

    g = torch.Generator().manual_seed(0)
    masks = torch.rand(4, 37, 53, generator=g) > 0.6
    masks[2] = False  # an empty mask
    m = masks.to(dtype) * (7 if dtype == torch.uint8 else 1)
    m = torch.cat([m, m], 2)[:, :, ::2]  # non-contiguous: columns 0, 2, ... of the doubled masks
    want_masks = torch.cat([masks, masks], 2)[:, :, ::2]
    res = {"masks": m, "labels": torch.tensor([0, 1, 2, 0]), "scores": torch.rand(4, generator=g)}
    res["boxes"] = mask_boxes(want_masks)
    out = predictions_to_coco(res, 5, [10, 20, 30])
    assert [o["category_id"] for o in out] == [10, 20, 30, 10]
    for o, mk, box in zip(out, want_masks, res["boxes"].tolist()):
        want = mask_util.encode(np.asfortranarray(mk.numpy().astype(np.uint8)))
        assert o["segmentation"] == {"size": want["size"], "counts": want["counts"].decode("ascii")}
        assert o["bbox"] == [box[0], box[1], box[2] - box[0], box[3] - box[1]]


def test_coco_eval_perfect_and_empty(tmp_path, capsys):
    from solo.evaluation import evaluate

    ds = TinyShapes(3, flip_prob=0.0)
    ds.cat_ids = [10, 20, 30]
    gt = _coco_gt([ds[i][1]["masks"], ds[i][1]["labels"]] for i in range(3))
    m = evaluate(_Oracle(ds), ds, coco_gt=gt, out_dir=str(tmp_path))
    assert m["segm_AP"] == pytest.approx(1.0) and m["segm_AP50"] == pytest.approx(1.0)
    assert m["segm_AP75"] == pytest.approx(1.0) and m["bbox_AP"] == pytest.approx(1.0)
    assert json.loads((tmp_path / "metrics.json").read_text())["segm_AP"] == pytest.approx(1.0)
    assert "segm" in capsys.readouterr().out
    m = evaluate(_Oracle(ds, empty=True), ds, coco_gt=gt)
    assert m["segm_AP"] == 0.0 and m["bbox_AP"] == 0.0 and m["num_predictions"] == 0


# ---------------------------------------------------------------------------------------------------- command line


def test_cli_train_then_eval(tmp_path, monkeypatch):
    pytest.importorskip("solo.data")
    from solo.train import main

    monkeypatch.setenv("SOLO_CACHE", str(tmp_path / "cache"))
    wd = tmp_path / "wd"
    metrics = main(["--max-iters", "2", "--work-dir", str(wd)] + TINY_CLI_ARGS)
    assert set(metrics) >= {"segm_AP", "segm_AP50", "segm_AP75", "bbox_AP"}
    assert (wd / "metrics.json").exists() and (wd / "final.pth").exists()
    ckpt = load_checkpoint(str(wd / "final.pth"))
    assert ckpt["config"]["model"]["num_classes"] == len(ckpt["class_names"])
    (wd / "metrics.json").unlink()
    m2 = main(["--eval-only", "--checkpoint", str(wd / "final.pth"), "--work-dir", str(wd)] + TINY_CLI_ARGS)
    assert m2["segm_AP"] == metrics["segm_AP"] and (wd / "metrics.json").exists()
    # the class count comes from the dataset; an explicit other count is a contradiction
    with pytest.raises(SystemExit, match="model.num_classes=7, but the dataset's annotation file has 3 categories"):
        main(["--max-iters", "1", "--work-dir", str(wd)] + TINY_CLI_ARGS + ["model.num_classes=7"])


def test_cli_demo_eval_module_and_plot_log(tmp_path, monkeypatch):
    pytest.importorskip("solo.data")
    from solo import demo
    from solo.eval import main_eval
    from solo.tools.plot_log import plot_log, read_log
    from solo.train import main

    monkeypatch.setenv("SOLO_CACHE", str(tmp_path / "cache"))
    wd = tmp_path / "wd"
    main(["--max-iters", "1", "--work-dir", str(wd), "--log-period", "1"] + TINY_CLI_ARGS)
    m = main_eval(["--checkpoint", str(wd), "--work-dir", str(tmp_path / "ev")] + TINY_CLI_ARGS)
    assert "segm_AP" in m and (tmp_path / "ev" / "metrics.json").exists()
    with open(wd / "log.jsonl", "a") as f:  # what an epoch with skipped data adds: not a curve point
        f.write(json.dumps({"type": "data_skipped", "epoch": 1, "iter": 1, "corrupt_image": 1}) + "\n")
    train, evals = read_log(str(wd / "log.jsonl"))
    assert train[0]["iter"] == 1 and evals and "segm_AP" in evals[-1]
    assert all("loss" in r for r in train)
    assert os.path.getsize(plot_log(str(wd))) > 0
    # demo: a folder of images -> one overlay PNG and one JSON each
    from solo.data import ensure_synthetic

    val_images = ensure_synthetic(num_train=4, num_val=2)["val_images"]
    written = demo.main(
        ["--checkpoint", str(wd / "final.pth"), "--input", val_images, "--out", str(tmp_path / "demo")]
        + ["--score-thr", "0", "--cfg-options", "model.score_thr=0.0"]
    )
    assert len(written) == 2
    rec = json.loads((tmp_path / "demo" / "000001.json").read_text())
    assert rec["height"] == 256 and rec["width"] == 320
    for inst in rec["instances"]:
        assert set(inst) == {"label", "class_name", "score", "box", "segmentation"}


def test_draw_overlay():
    from solo.demo import draw_overlay

    img = np.zeros((20, 30, 3), np.uint8)
    masks = torch.zeros(1, 20, 30, dtype=torch.bool)
    masks[0, 5:10, 5:15] = True
    res = {
        "masks": masks,
        "labels": torch.tensor([1]),
        "scores": torch.tensor([0.9]),
        "boxes": torch.tensor([[5.0, 5.0, 15.0, 10.0]]),
    }
    out = np.asarray(draw_overlay(img, res, ["a", "b"]))
    assert out.shape == (20, 30, 3) and out[7, 10].sum() > 0 and out[15, 25].sum() == 0


def test_torchrun_two_processes_gloo(tmp_path):
    """torchrun --nproc_per_node=2 (gloo on the CPU): trains 2 iterations, checkpoints (rank 0) and evaluates."""
    pytest.importorskip("solo.data")
    wd = tmp_path / "wd"
    env = _subprocess_env(tmp_path)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "solo.train",
        "--max-iters",
        "2",
        "--work-dir",
        str(wd),
        "--device",
        "cpu",
        "--log-period",
        "1",
    ] + TINY_CLI_ARGS
    r = subprocess.run(cmd, check=False, env=env, cwd=ROOT, timeout=300, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "2 process(es)" in r.stdout
    ckpt = load_checkpoint(str(wd / "final.pth"))
    assert ckpt["iter"] == 2 and ckpt["world_size"] == 2
    assert json.loads((wd / "metrics.json").read_text())["num_images"] == 2


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_step(tmp_path, amp):
    cfg = tiny_config()
    tr = Trainer(cfg, _model(cfg), TinyShapes(2), str(tmp_path), max_iters=1, progress=False, amp=amp)
    hist = tr.train()
    assert math.isfinite(hist[0]["loss"])  # fp16: the GradScaler may skip the first step (inf gradients), not stop
    assert load_checkpoint(str(tmp_path / "final.pth"))["scaler"] is not None
    with pytest.raises(ValueError, match="amp"):
        Trainer(cfg, _model(cfg), TinyShapes(2), str(tmp_path), max_iters=1, amp="fp8")


def test_load_weights_other_class_count(capsys):
    import dataclasses

    from solo.train import _load_weights

    cfg = tiny_config()
    src = _model(cfg)
    dst = _model(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_classes=5)), seed=1)
    _load_weights(dst, {"state_dict": src.state_dict()}, strict=False, verbose=True)
    assert "of another shape" in capsys.readouterr().err
    same = [k for k, v in dst.state_dict().items() if v.shape == src.state_dict()[k].shape]
    assert all(torch.equal(dst.state_dict()[k], src.state_dict()[k]) for k in same)
    with pytest.raises(SystemExit, match="wrong --config"):
        _load_weights(dst, {"model": src.state_dict()}, strict=True, verbose=False)


def test_amp_auto_and_config():
    from solo.configs import TrainConfig, get_config
    from solo.engine.trainer import native_bf16, resolve_amp

    assert resolve_amp("auto", "cpu") == ("bf16" if native_bf16("cpu") else "off")
    assert [resolve_amp(a, "cpu") for a in ("off", "fp16", "bf16")] == ["off", "fp16", "bf16"]
    assert get_config("solov2_r50_3x").train.amp == "off" and get_config("solov2_synthetic_r18").train.amp == "auto"
    with pytest.raises(ValueError, match="amp"):
        TrainConfig(amp="fp8")
