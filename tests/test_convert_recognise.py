"""``python -m solo.tools.convert_checkpoint`` without ``--config`` (issue 12): the preset is recognised from the
checkpoint's meta config text and its key names / tensor shapes.

Checkpoints of every non-DCN preset in both official namings (WXinlong/SOLO and mmdetection, tests/official_layout.py,
written from the SPEC tables), with and without a meta config; another class count; presets of the same model
(named, the first or the meta's epoch count taken); presets of different models the weights cannot tell apart (an
error asking for --config, resolved by the meta config); unrecognisable checkpoints (clear errors). Recognition needs
shapes only, so most checkpoints here hold meta-device tensors; the command-line tests use real random tensors.
"""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch
from official_layout import config_text, preset_layout, random_state_dict, to_mmdet_key

from solo.configs.presets import PRESETS
from solo.tools.convert_checkpoint import RecognitionError, main, parse_config_text, recognise

NAMES = sorted(PRESETS)


def _meta_state(layout: dict, source: str) -> dict:
    sd = {k: torch.empty(s, device="meta") for k, s in layout.items()}
    return sd if source == "wxinlong" else {to_mmdet_key(k): v for k, v in sd.items()}


def _same_model(a: str, b: str) -> bool:
    """Independent of the converter: the ModelConfigs are equal but for the training scales, and the head names
    build the same module (solo.models.detector maps solov2 and solov2_light to one class)."""
    ma, mb = PRESETS[a].model, PRESETS[b].model
    alias = {"solov2_light": "solov2"}
    return dataclasses.replace(ma, train_scales=(), head=alias.get(ma.head, ma.head)) == dataclasses.replace(
        mb, train_scales=(), head=alias.get(mb.head, mb.head)
    )


def test_preset_layouts_match_the_models():
    """The SPEC-derived layouts used below are those of solo's models (built on the meta device)."""
    from solo.models import build_model

    for name in NAMES:
        with torch.device("meta"):
            model = build_model(name)
        assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == preset_layout(PRESETS[name].model), name


@pytest.mark.parametrize("with_meta", [False, True], ids=["shapes", "meta"])
@pytest.mark.parametrize("source", ["wxinlong", "mmdet"])
@pytest.mark.parametrize("name", NAMES)
def test_recognise_every_preset(name, source, with_meta):
    cfg = PRESETS[name]
    meta = {"mmdet_version": "x", "config": config_text(cfg.model, source, cfg.train.epochs)} if with_meta else None
    rec = recognise(_meta_state(preset_layout(cfg.model), source), source, meta)
    assert rec.num_classes == cfg.model.num_classes == rec.preset_num_classes
    assert rec.preset == name or (name in rec.same_model and _same_model(name, rec.preset))
    assert all(_same_model(rec.preset, p) for p in rec.same_model)
    # every preset of the same model is named (the test's own notion of "same model")
    assert sorted(rec.same_model + [rec.preset]) == sorted(p for p in NAMES if _same_model(name, p))
    if with_meta:
        # the meta's epoch count picks among presets of the same model (1x / 3x)
        assert PRESETS[rec.preset].train.epochs == cfg.train.epochs
        assert rec.evidence.startswith("its meta config")
        assert not rec.notes, rec.notes
    msg = rec.message()
    assert msg.startswith(f"recognised preset {rec.preset} from ")
    assert f"ResNet-{cfg.model.depth}" in msg and f"{cfg.model.num_classes} classes" in msg


@pytest.mark.parametrize("source", ["wxinlong", "mmdet"])
def test_recognise_other_class_count(source):
    rng = random.Random()
    for name in rng.sample(NAMES, 4):
        m = PRESETS[name].model
        n = rng.choice([k for k in range(1, 200) if k != m.num_classes])
        meta = (
            {"config": config_text(dataclasses.replace(m, num_classes=n), source, 12)} if rng.random() < 0.5 else None
        )
        rec = recognise(_meta_state(preset_layout(m, num_classes=n), source), source, meta)
        assert rec.num_classes == n and rec.preset_num_classes == m.num_classes
        assert _same_model(rec.preset, name)
        assert f"with num_classes={n} (the preset has {m.num_classes})" in rec.message()


def test_ambiguous_presets_ask_for_config(monkeypatch):
    """A preset of another model with the same weights layout (SOLOv2's grids are not in its weights): without meta
    both fit and the converter asks for --config; the meta config's grids settle it."""
    rng = random.Random()
    base = PRESETS["solov2_r50_3x"]
    grids = base.model.num_grids
    while grids == base.model.num_grids:
        grids = tuple(sorted(rng.sample(range(5, 60), 5), reverse=True))
    other = dataclasses.replace(
        base, name="solov2_r50_3x_grids", model=dataclasses.replace(base.model, num_grids=grids)
    )
    monkeypatch.setitem(PRESETS, other.name, other)
    state = _meta_state(preset_layout(base.model), "wxinlong")
    with pytest.raises(RecognitionError) as info:
        recognise(state, "wxinlong")
    msg = str(info.value)
    assert "solov2_r50_1x, solov2_r50_3x; solov2_r50_3x_grids" in msg
    assert "differ in num_grids" in msg and "--config" in msg
    meta = {"config": config_text(base.model, "wxinlong", 36, num_grids=grids)}
    assert recognise(state, "wxinlong", meta).preset == "solov2_r50_3x_grids"
    meta = {"config": config_text(base.model, "wxinlong", 36)}
    assert recognise(state, "wxinlong", meta).preset == "solov2_r50_3x"
    # the same through the command line: exit code 2, the candidates named, nothing written
    monkeypatch.setattr("solo.tools.convert_checkpoint._load_checkpoint", lambda path, trust: {"state_dict": state})
    assert main(["in.pth", "/nonexistent/out.pth", "--from", "wxinlong"]) == 2


def test_unrecognisable_checkpoints():
    rng = random.Random()
    m = PRESETS["solo_r50_3x"].model
    # no SOLO head at all (e.g. a Mask R-CNN)
    state = {f"roi_head.layer{i}.weight": torch.empty(rng.randint(1, 9), device="meta") for i in range(5)}
    with pytest.raises(RecognitionError, match="no SOLO head"):
        recognise(state, "wxinlong")
    # a ResNet-152 SOLO: no preset
    layout = preset_layout(dataclasses.replace(m, depth=101))
    extra = {f"backbone.layer3.{i}.conv1.weight": (256, 1024, 1, 1) for i in range(23, 36)}
    with pytest.raises(RecognitionError, match="no preset has this model: SOLO, ResNet-152"):
        recognise(_meta_state(layout | extra, "wxinlong"), "wxinlong")
    # a tower width no preset has
    with pytest.raises(RecognitionError, match="no preset has this model.*--config"):
        recognise(_meta_state(preset_layout(dataclasses.replace(m, seg_feat_channels=192)), "mmdet"), "mmdet")
    # deformable convolutions (the DCN presets are not supported)
    layout = preset_layout(m) | {"bbox_head.ins_convs.6.conv.conv_offset.weight": (18, 256, 3, 3)}
    with pytest.raises(RecognitionError, match="deformable"):
        recognise(_meta_state(layout, "wxinlong"), "wxinlong")
    # a meta config text that is not Python: noted, the shapes still decide
    rec = recognise(_meta_state(preset_layout(m), "wxinlong"), "wxinlong", {"config": "model = dict(("})
    assert rec.preset in ("solo_r50_1x", "solo_r50_3x") and "could not be parsed" in rec.notes[0]


def test_parse_config_text_reads_literals_only():
    cfg = parse_config_text(
        "a = dict(x=1, y=[1, 2], z=(-3, 4.5), w={'k': None}, v=some_name, u=open('f'))\nb = 'text'\nimport os\n"
    )
    assert cfg == {"a": {"x": 1, "y": (1, 2), "z": (-3, 4.5), "w": {"k": None}, "v": None, "u": None}, "b": "text"}


@pytest.mark.parametrize("source", ["wxinlong", "mmdet"])
@pytest.mark.parametrize("name", ["decoupled_solo_light_synthetic_r18", "solov2_light_synthetic_r18"])
def test_cli_without_config(tmp_path, capsys, name, source):
    """End to end with real tensors: recognised, converted, loads strict into the recognised preset's model."""
    from solo.models import build_model

    rng = random.Random()
    cfg = PRESETS[name]
    n = rng.choice([cfg.model.num_classes, rng.randint(1, 30)])
    wx = random_state_dict(preset_layout(cfg.model, num_classes=n), seed=rng.randint(0, 10**6))
    sd = wx if source == "wxinlong" else {to_mmdet_key(k): v for k, v in wx.items()}
    meta = {"config": config_text(dataclasses.replace(cfg.model, num_classes=n), source, cfg.train.epochs)}
    src, out = tmp_path / "in.pth", tmp_path / "out.pth"
    torch.save({"meta": meta, "state_dict": sd}, src)
    assert main([str(src), str(out), "--from", source]) == 0
    text = capsys.readouterr().out
    loaded = torch.load(out, weights_only=True)
    preset = loaded["meta"]["preset"]
    assert _same_model(preset, name) and text.startswith(f"recognised preset {preset} from its meta config")
    assert loaded["meta"]["num_classes"] == n
    model = build_model(preset, num_classes=n)
    model.load_state_dict(loaded["state_dict"], strict=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in wx.items())
    # --num-classes that contradicts the checkpoint is an error
    assert main([str(src), str(tmp_path / "o2.pth"), "--from", source, "--num-classes", str(n + 1)]) == 2
    assert f"has {n} output channels" in capsys.readouterr().err
