"""ImageNet-pretrained backbones (solo.models.pretrained, ``--backbone-weights``): download into torch.hub's cache from
a (file://) URL, reuse of the cached file, the hash check, bad files (empty, truncated, not a ResNet, another depth),
the offline error, and what ``python -m solo.train`` freezes and logs. Every weights file is generated here."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from _engine_helpers import TINY_CLI_ARGS
from _pretrained_helpers import save_hub_named, write_torchvision_file
from official_layout import torchvision_resnet

from solo.configs import PRESETS
from solo.configs.presets import SYNTHETIC_PRESETS
from solo.models.backbone import ResNet, infer_resnet_depth
from solo.models.pretrained import (
    TORCHVISION_URLS,
    PretrainedWeightsError,
    cache_dir,
    load_backbone_weights,
    parse_weights_spec,
    resolve_weights,
)


@pytest.fixture()
def torch_home(tmp_path, monkeypatch):
    """An empty torch.hub cache ($TORCH_HOME) of this test's own."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    assert cache_dir() == str(home / "hub" / "checkpoints")
    return home


def _url(path) -> str:
    return "file://" + os.path.abspath(path)


# ------------------------------------------------------------------------------------------------- specs and presets


def test_presets_name_the_torchvision_file_of_their_depth():
    for name, cfg in PRESETS.items():
        if name in SYNTHETIC_PRESETS:  # trained from scratch on the synthetic shapes: nothing frozen
            assert cfg.model.backbone_weights is None and cfg.model.frozen_stages == -1 and not cfg.model.norm_eval
            continue
        assert cfg.model.backbone_weights == f"torchvision://resnet{cfg.model.depth}", name
        assert cfg.model.frozen_stages == 1 and cfg.model.norm_eval, name
        kind, url = parse_weights_spec(cfg.model.backbone_weights)
        # the V1 files the original trained from (mmcv's torchvision model_urls of its time)
        assert kind == "url" and url == TORCHVISION_URLS[f"resnet{cfg.model.depth}"]
    assert TORCHVISION_URLS["resnet50"].endswith("/resnet50-19c8e357.pth")


def test_parse_weights_spec():
    assert parse_weights_spec(None) is None and parse_weights_spec("none") is None and parse_weights_spec("") is None
    assert parse_weights_spec("file:///x/resnet18-abcdef12.pth") == ("url", "file:///x/resnet18-abcdef12.pth")
    assert parse_weights_spec("https://h/r.pth") == ("url", "https://h/r.pth")
    assert parse_weights_spec("weights/r18.pth") == ("path", None)
    with pytest.raises(ValueError, match="unknown torchvision weights 'torchvision://resnet152'"):
        parse_weights_spec("torchvision://resnet152")
    with pytest.raises(ValueError, match="unsupported scheme 'ftp'"):
        parse_weights_spec("ftp://h/r.pth")


def test_infer_resnet_depth():
    for depth in (18, 34, 50, 101):  # key names from the spec's table (SPEC §11.1), not from our ResNet
        assert infer_resnet_depth(torchvision_resnet(depth)) == depth
    assert infer_resnet_depth({"conv1.weight": torch.zeros(1)}) is None
    assert infer_resnet_depth({"weight": torch.zeros(1)}) is None


# ------------------------------------------------------------------------------------------------- download and cache


def test_download_into_cache_load_and_reuse(tmp_path, torch_home):
    src, sd = write_torchvision_file(tmp_path / "server", 18, seed=3)
    logs = []
    wf = resolve_weights(_url(src), log=logs.append)
    assert wf.downloaded and wf.path == os.path.join(cache_dir(), src.name)
    assert os.listdir(cache_dir()) == [src.name]  # no temporary file left behind
    assert wf.checked_prefix == src.stem.split("-")[1] and wf.sha256.startswith(wf.checked_prefix)
    assert logs == [f"backbone weights: downloading {_url(src)} to {wf.path}"]
    assert socket.getdefaulttimeout() is None  # the download's own timeout is not left behind
    assert "downloaded to" in wf.describe() and wf.checked_prefix in wf.describe()

    m = ResNet(18, frozen_stages=1, norm_eval=True)
    n = load_backbone_weights(m, wf)
    own = m.state_dict()
    assert n == len(own) == len(sd) - 2  # every tensor but fc.weight / fc.bias
    assert all(torch.equal(own[k], sd[k]) for k in own)
    assert not m.conv1.weight.requires_grad and m.layer2[0].conv1.weight.requires_grad  # loading keeps the freeze

    # second use: served from the cache, the source is not needed any more
    src.unlink()
    again = resolve_weights(_url(src), log=logs.append)
    assert not again.downloaded and again.path == wf.path and again.sha256 == wf.sha256 and len(logs) == 1
    assert "cached" in again.describe()
    # a file put into the cache by hand (an offline machine) is used as is
    assert resolve_weights(_url(tmp_path / "nowhere" / src.name), download=False).path == wf.path


def test_torchvision_spec_goes_through_the_cache(tmp_path, torch_home, monkeypatch):
    src, _ = write_torchvision_file(tmp_path / "server", 18, seed=4)
    monkeypatch.setitem(TORCHVISION_URLS, "resnet18", _url(src))
    wf = resolve_weights("torchvision://resnet18")
    assert wf.downloaded and wf.url == _url(src) and wf.path == os.path.join(cache_dir(), src.name)
    assert wf.describe().startswith("torchvision://resnet18 -> downloaded to")


def test_local_path_without_hash_in_the_name(tmp_path, torch_home):
    sd_path = tmp_path / "my_r18.pth"
    _, sd = write_torchvision_file(tmp_path / "x", 18)
    torch.save(sd, sd_path)
    wf = resolve_weights(str(sd_path))
    assert wf.path == str(sd_path) and wf.checked_prefix is None and not wf.downloaded
    assert "no hash to check" in wf.describe()
    assert not os.path.exists(cache_dir())  # a local file is not copied
    with pytest.raises(PretrainedWeightsError, match="backbone weights file not found: .*missing.pth"):
        resolve_weights(str(tmp_path / "missing.pth"))


# ------------------------------------------------------------------------------------------------- bad files


def test_wrong_hash(tmp_path, torch_home):
    src, _ = write_torchvision_file(tmp_path / "server", 18)
    bad = tmp_path / "server" / "resnet18-00000000.pth"
    bad.write_bytes(src.read_bytes())
    with pytest.raises(PretrainedWeightsError) as e:
        resolve_weights(_url(bad))
    msg = str(e.value)
    assert "wrong hash" in msg and "file name says 00000000" in msg and _url(bad) in msg
    assert src.stem.split("-")[1] in msg  # the real prefix
    assert os.listdir(cache_dir()) == []  # the bad download does not stay in the cache
    # a cached file that went bad (replaced, cut) is caught on its next use
    good = resolve_weights(_url(src))
    with open(good.path, "r+b") as f:
        f.truncate(1000)
    with pytest.raises(PretrainedWeightsError, match=r"cached backbone weights .* wrong hash.*1000 bytes"):
        resolve_weights(_url(src))


def test_truncated_and_empty_files(tmp_path, torch_home):
    src, _ = write_torchvision_file(tmp_path / "server", 18)
    data = src.read_bytes()
    # truncated, under a name whose hash matches the truncated bytes (or no hash): the load says what is wrong
    half = data[: len(data) // 2]
    cut = tmp_path / "cut" / f"resnet18-{hashlib.sha256(half).hexdigest()[:8]}.pth"
    cut.parent.mkdir()
    cut.write_bytes(half)
    wf = resolve_weights(_url(cut))
    with pytest.raises(
        PretrainedWeightsError, match=r"cannot be read as a PyTorch weights file \(\d+ bytes; truncated"
    ):
        load_backbone_weights(ResNet(18), wf)
    # empty file: named by the hash of zero bytes (e3b0c442), or downloaded/cached empty
    empty = tmp_path / "empty" / "resnet18-e3b0c442.pth"
    empty.parent.mkdir()
    empty.write_bytes(b"")
    with pytest.raises(PretrainedWeightsError, match=r"is empty \(0 bytes\)"):
        resolve_weights(_url(empty))
    with pytest.raises(PretrainedWeightsError, match=r"backbone weights file .*resnet18-e3b0c442.pth is empty"):
        resolve_weights(str(empty))
    with pytest.raises(PretrainedWeightsError, match=r"the file is empty \(0 bytes\)"):
        load_backbone_weights(ResNet(18), empty)


def test_not_a_resnet(tmp_path):
    noise = save_hub_named({"encoder.weight": torch.randn(3, 3), "fc.weight": torch.randn(2, 3)}, tmp_path, "x")
    with pytest.raises(PretrainedWeightsError, match=r"not a ResNet weights file: none of its 1 tensors"):
        load_backbone_weights(ResNet(18), noise)
    for obj in ([torch.randn(2)], torch.randn(3), {"a": {"b": torch.zeros(1)}}):
        path = save_hub_named(obj, tmp_path, "y")
        with pytest.raises(PretrainedWeightsError, match=r"not a state dict .* expected a torchvision ResNet-18"):
            load_backbone_weights(ResNet(18), path)
    pickled = tmp_path / "obj.pth"
    torch.save({"conv1.weight": argparse.Namespace(a=1)}, pickled)  # arbitrary objects: refused by weights_only
    with pytest.raises(PretrainedWeightsError, match="cannot be read as a PyTorch weights file"):
        load_backbone_weights(ResNet(18), pickled)


def test_file_of_another_depth(tmp_path):
    r18, _ = write_torchvision_file(tmp_path, 18)
    with pytest.raises(PretrainedWeightsError, match="this is a ResNet-18 file, the config needs ResNet-50"):
        load_backbone_weights(ResNet(50), r18)
    r50, _ = write_torchvision_file(tmp_path, 50)
    with pytest.raises(PretrainedWeightsError, match="this is a ResNet-50 file, the config needs ResNet-34"):
        load_backbone_weights(ResNet(34), r50)


# ------------------------------------------------------------------------------------------------- solo.train


def _args(**kw):
    base = {"config": "solov2_light_448_r18_3x", "cfg_options": [], "backbone_weights": None}
    return argparse.Namespace(**{**base, **kw})


def test_config_none_trains_everything():
    from solo.train import _resolve_config

    pre = _resolve_config(_args(), None, 80)
    assert pre.model.backbone_weights == "torchvision://resnet18"
    assert pre.model.frozen_stages == 1 and pre.model.norm_eval
    for spec in ("none", "None", "NONE"):
        cfg = _resolve_config(_args(backbone_weights=spec), None, 80)
        assert cfg.model.backbone_weights is None and cfg.model.frozen_stages == -1 and not cfg.model.norm_eval
    # explicit --cfg-options win over the from-scratch default
    cfg = _resolve_config(_args(backbone_weights="none", cfg_options=["model.frozen_stages=0"]), None, 80)
    assert cfg.model.frozen_stages == 0 and not cfg.model.norm_eval
    cfg = _resolve_config(_args(cfg_options=["model.backbone_weights=none"]), None, 80)
    assert cfg.model.backbone_weights is None and cfg.model.frozen_stages == -1
    # a local file: the preset's freezing
    cfg = _resolve_config(_args(backbone_weights="/x/r18.pth"), None, 80)
    assert cfg.model.backbone_weights == "/x/r18.pth" and cfg.model.frozen_stages == 1 and cfg.model.norm_eval
    with pytest.raises(SystemExit, match="--backbone-weights: unknown torchvision weights"):
        _resolve_config(_args(backbone_weights="torchvision://resnet7"), None, 80)
    # a config read from a checkpoint keeps the freezing it was trained with
    stored = {"name": "c", "model": {"depth": 18, "frozen_stages": 1, "norm_eval": True}}
    cfg = _resolve_config(_args(config=None), stored, 80)
    assert cfg.model.frozen_stages == 1 and cfg.model.norm_eval


_TINY = ["--no-eval", "--config", "solov2_light_448_r18_3x", *TINY_CLI_ARGS]


def test_train_offline_error_before_training(tmp_path, torch_home, monkeypatch):
    pytest.importorskip("pycocotools")
    from solo.train import main

    monkeypatch.setenv("SOLO_CACHE", str(tmp_path / "cache"))
    wd = tmp_path / "wd"
    url = _url(tmp_path / "offline" / "resnet18-5c106cde.pth")  # the source cannot be reached
    with pytest.raises(SystemExit) as e:
        main(["--max-iters", "1", "--work-dir", str(wd), "--backbone-weights", url] + _TINY)
    msg = str(e.value)
    assert url in msg and cache_dir() in msg and "--backbone-weights" in msg and "none" in msg
    assert not (wd / "log.jsonl").exists() and not (wd / "final.pth").exists()  # before training started
    # the preset's own torchvision:// spec, offline: the real URL and where to put the file by hand
    monkeypatch.setitem(TORCHVISION_URLS, "resnet18", url)
    with pytest.raises(SystemExit, match=r"torchvision://resnet18: cannot download .*resnet18-5c106cde.pth"):
        main(["--max-iters", "1", "--work-dir", str(wd)] + _TINY)
    # a bad file is refused as well: never a silent random backbone
    r50, _ = write_torchvision_file(tmp_path / "w", 50)
    with pytest.raises(SystemExit, match="this is a ResNet-50 file, the config needs ResNet-18"):
        main(["--max-iters", "1", "--work-dir", str(wd), "--backbone-weights", str(r50)] + _TINY)


def test_train_loads_weights_freezes_and_logs(tmp_path, torch_home, monkeypatch, capsys):
    pytest.importorskip("pycocotools")
    from solo.engine.checkpoint import load_checkpoint
    from solo.train import main

    monkeypatch.setenv("SOLO_CACHE", str(tmp_path / "cache"))
    src, sd = write_torchvision_file(tmp_path / "server", 18, seed=7)
    wd = tmp_path / "wd"
    main(["--max-iters", "2", "--work-dir", str(wd), "--backbone-weights", _url(src)] + _TINY)
    out = capsys.readouterr().out
    assert f"backbone weights: downloading {_url(src)}" in out
    line = next(ln for ln in out.splitlines() if ln.startswith("backbone: ImageNet weights"))
    assert "tensors loaded" in line and f"{len(sd) - 2} tensors loaded" in line
    assert "frozen_stages=1" in line and "norm_eval=True" in line and src.stem.split("-")[1] in line
    final = load_checkpoint(str(wd / "final.pth"))["model"]
    # the frozen stem and layer1 and every BatchNorm statistic are still the file's after training; layer4 trained
    for k in ("conv1.weight", "bn1.weight", "layer1.0.conv1.weight", "layer3.1.bn2.running_mean"):
        assert torch.equal(final[f"backbone.{k}"], sd[k]), k
    assert not torch.equal(final["backbone.layer4.1.conv2.weight"], sd["layer4.1.conv2.weight"])
    assert json.loads((wd / "config.json").read_text())["model"]["backbone_weights"] == _url(src)

    # --backbone-weights none: from scratch, nothing frozen, BatchNorm learns; the log says so
    wd2 = tmp_path / "wd2"
    main(["--max-iters", "1", "--work-dir", str(wd2), "--backbone-weights", "none"] + _TINY)
    out = capsys.readouterr().out
    assert "backbone: from scratch (no pretrained weights); frozen: nothing (frozen_stages=-1)" in out
    assert "BatchNorm learns its statistics (norm_eval=False)" in out
    stored = json.loads((wd2 / "config.json").read_text())["model"]
    assert stored["frozen_stages"] == -1 and stored["norm_eval"] is False and stored["backbone_weights"] is None

    # --resume: every weight comes from the checkpoint, nothing is downloaded (source and cache gone)
    src.unlink()
    os.remove(os.path.join(cache_dir(), src.name))
    main(["--max-iters", "3", "--work-dir", str(wd), "--resume", "--backbone-weights", _url(src)] + _TINY)
    out = capsys.readouterr().out
    assert f"backbone: weights from {wd / 'final.pth'} (" in out
    assert "not needed, not loaded" in out and "downloading" not in out
    assert load_checkpoint(str(wd / "final.pth"))["iter"] == 3
