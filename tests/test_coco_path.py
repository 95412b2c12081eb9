"""The path a real user takes, end to end: a dataset in COCO's folder layout, the README's COCO command (torchrun, two
processes, a model-zoo preset) starting from torchvision-format ImageNet weights fetched from a URL into torch.hub's
cache, a checkpoint, a resumed run that evaluates; and a checkpoint trained for other classes than the dataset's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from _pretrained_helpers import write_torchvision_file

pytest.importorskip("pycocotools")
# pycocotools' Cython decode under numpy 2: "__array__ implementation doesn't accept a copy keyword"
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRESET = "solov2_light_448_r18_3x"  # a model-zoo preset (80 COCO classes, ImageNet R18, frozen stem + layer1)
SMALL = [
    "--cfg-options",
    "model.train_scales=((160,128),)",
    "model.test_scale=(160,128)",
    "train.batch_size=1",
    "train.warmup_iters=2",
]


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    from solo.data import write_synthetic_coco

    root = tmp_path_factory.mktemp("coco")
    paths = write_synthetic_coco(root, num_train=4, num_val=2, image_size=(128, 160))
    assert sorted(os.listdir(root)) == ["annotations", "train2017", "val2017"]
    assert sorted(os.listdir(root / "annotations")) == ["instances_train2017.json", "instances_val2017.json"]
    assert len(os.listdir(root / "train2017")) == 4 and len(os.listdir(root / "val2017")) == 2
    assert paths["class_names"] == ["ellipse", "rectangle", "triangle"]
    return root


def _run(cmd, env, timeout=600):
    t0 = time.perf_counter()
    r = subprocess.run(cmd, check=False, env=env, cwd=ROOT, timeout=timeout, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    print(f"{time.perf_counter() - t0:.1f}s: {' '.join(cmd[3:8])} ...\n{r.stdout}")  # shown with pytest -s
    return r.stdout


def test_readme_coco_command_with_torchrun(coco_root, tmp_path):
    server = tmp_path / "server"
    weights, _ = write_torchvision_file(server, 18, seed=1)
    url = "file://" + str(weights)
    torch_home = tmp_path / "torch_home"
    cache = torch_home / "hub" / "checkpoints"
    env = dict(
        os.environ,
        TORCH_HOME=str(torch_home),
        OMP_NUM_THREADS="1",
        PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    wd = tmp_path / "wd"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "solo.train"]
    common = ["--config", PRESET, "--data-root", str(coco_root), "--work-dir", str(wd), "--device", "cpu"]
    common += ["--workers", "0", "--no-progress", "--log-period", "1", "--backbone-weights", url]
    out = _run(torchrun + common + ["--max-iters", "2", "--no-eval"] + SMALL, env)
    # the class count and names come from the annotation file, not the preset's 80 COCO classes
    assert (
        f"config {PRESET}: model.num_classes = 3 from the dataset's annotation file (ellipse, rectangle, triangle) "
        f"(the config has 80)" in out
    )
    assert "2 process(es) on cpu" in out
    # one download (the first process; the other waited), then every process loaded it
    assert out.count(f"backbone weights: downloading {url} to {cache / weights.name}") == 1
    assert os.listdir(cache) == [weights.name]
    line = next(ln for ln in out.splitlines() if ln.startswith("backbone: ImageNet weights"))
    assert f"sha256 {weights.stem.split('-')[1]}" in line and "120 tensors loaded" in line
    assert "frozen_stages=1" in line and "norm_eval=True" in line
    log = [json.loads(ln) for ln in (wd / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in log if r["type"] == "train"] == [1, 2]
    from solo.engine.checkpoint import load_checkpoint

    ckpt = load_checkpoint(str(wd / "final.pth"))
    assert ckpt["iter"] == 2 and ckpt["world_size"] == 2
    assert ckpt["class_names"] == ["ellipse", "rectangle", "triangle"] and ckpt["config"]["model"]["num_classes"] == 3
    assert not (wd / "metrics.json").exists()

    # resume to 4 iterations and evaluate: every weight comes from the checkpoint, the backbone file is not needed
    weights.unlink()
    (cache / weights.name).unlink()
    out = _run(torchrun + common + ["--max-iters", "4", "--resume"] + SMALL, env)
    assert "resumed from" in out and "at iteration 2" in out
    assert f"backbone: weights from {wd / 'final.pth'} ({url} not needed, not loaded)" in out  # the latest
    assert "downloading" not in out
    assert load_checkpoint(str(wd / "final.pth"))["iter"] == 4
    metrics = json.loads((wd / "metrics.json").read_text())
    assert metrics["num_images"] == 2 and 0.0 <= metrics["segm_AP"] <= 1.0
    assert metrics["class_names"] == ["ellipse", "rectangle", "triangle"]


def test_checkpoint_for_other_classes(coco_root, tmp_path, monkeypatch, capsys):
    """A checkpoint of a 3-class model on a 2-category dataset: --eval-only says why it cannot; training re-initialises
    the classification head (and says so) and loads the rest."""
    import torch

    from solo.configs import get_config
    from solo.data import write_synthetic_coco
    from solo.engine.checkpoint import save_checkpoint
    from solo.models import build_model
    from solo.train import main

    cfg = get_config(PRESET).override(
        "model.num_classes=3", "model.train_scales=((160,128),)", "model.test_scale=(160,128)"
    )
    torch.manual_seed(0)
    model = build_model(cfg)
    ckpt_path = save_checkpoint(
        str(tmp_path / "three.pth"), model, epoch=1, iteration=1, config=cfg, class_names=["a", "b", "c"]
    )
    two = tmp_path / "two"
    write_synthetic_coco(two, num_train=2, num_val=1, image_size=(128, 160), num_classes=2)
    base = ["--data-root", str(two), "--checkpoint", ckpt_path, "--workers", "0", "--no-progress"] + SMALL
    with pytest.raises(SystemExit) as e:
        main(["--eval-only", "--work-dir", str(tmp_path / "ev")] + base)
    msg = str(e.value)
    assert f"--checkpoint {ckpt_path} was trained for 3 classes (a, b, c)" in msg
    assert "has 2 categories (ellipse, rectangle)" in msg and "cannot be evaluated" in msg

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # nothing may be downloaded: weights from ckpt
    wd = tmp_path / "ft"
    main(["--work-dir", str(wd), "--max-iters", "1", "--no-eval"] + base)
    out = capsys.readouterr().out
    assert "the classification head is re-initialised for 2 classes and trained" in out
    assert f"backbone: weights from {ckpt_path} (torchvision://resnet18 not needed, not loaded)" in out
    from solo.engine.checkpoint import load_checkpoint

    tuned = load_checkpoint(str(wd / "final.pth"))
    assert tuned["class_names"] == ["ellipse", "rectangle"] and tuned["config"]["model"]["num_classes"] == 2
    # the frozen stem came from the checkpoint, untouched by training
    assert torch.equal(tuned["model"]["backbone.conv1.weight"], model.state_dict()["backbone.conv1.weight"])
    assert not os.path.exists(tmp_path / "torch_home")
