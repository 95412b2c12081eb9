"""Official checkpoints -> solo (SOLO_SPEC.md §11): layouts written from the SPEC tables, random values.

Checkpoints in the naming of WXinlong/SOLO and of mmdetection convert and load with ``strict=True`` into
``solo_r50_3x``, ``decoupled_solo_r50_3x`` and ``solov2_r50_3x``; those presets' parameter counts equal the sums
implied by the SPEC shapes.
"""

import os

import pytest
import torch
from official_layout import official_layout, param_count, random_state_dict, to_mmdet_key

from solo.tools.convert_checkpoint import ConversionReport, convert, main, mmdet_to_wx_key

try:
    from solo.models import build_model
except ImportError:  # the detector is written in parallel; only the tests that build a model depend on it
    build_model = None

needs_build_model = pytest.mark.skipif(build_model is None, reason="solo.models.build_model is not available yet")

CASES = [("solo_r50_3x", "solo"), ("decoupled_solo_r50_3x", "decoupled_solo"), ("solov2_r50_3x", "solov2")]
# Tensor counts of SPEC §11: backbone R50 (torchvision, 53 convs + 53 BN x 5), neck 16, heads 54 / 85 / 24 + 28.
HEAD_TENSORS = {"solo": 54, "decoupled_solo": 85, "solov2": 52}


def _wx_checkpoint(variant: str, seed: int = 0) -> dict:
    sd = random_state_dict(official_layout(variant), seed=seed)
    return {
        "meta": {"mmdet_version": "1.0rc0+f4cd03b", "config": "model = dict(...)", "epoch": 36, "iter": 263000},
        "state_dict": sd,
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "momentum": 0.9, "params": [0, 1]}]},
    }


def _mmdet_state(wx_sd: dict) -> dict:
    return {to_mmdet_key(k): v for k, v in wx_sd.items()}


# ---------------------------------------------------------------------------------------------------------------
# Independent of the model code


@pytest.mark.parametrize("variant", ["solo", "decoupled_solo", "solov2"])
def test_layout_tensor_counts(variant):
    layout = official_layout(variant)
    backbone = [k for k in layout if k.startswith("backbone.")]
    assert len(backbone) == 53 + 53 * 5  # R50: 53 convs (stem, 16 blocks x 3, 4 downsample) + 53 BN x 5
    assert sum(k.startswith("neck.") for k in layout) == 16
    assert len(layout) - len(backbone) - 16 == HEAD_TENSORS[variant]


@pytest.mark.parametrize("variant", ["solo", "decoupled_solo", "solov2"])
def test_mmdet_keys_map_back(variant):
    layout = official_layout(variant)
    for k in layout:
        assert mmdet_to_wx_key(to_mmdet_key(k), layout) == k


def test_mmdet_key_examples():
    assert mmdet_to_wx_key("mask_head.mask_convs.0.conv.weight") == "bbox_head.ins_convs.0.conv.weight"
    assert mmdet_to_wx_key("mask_head.mask_convs_x.6.gn.bias") == "bbox_head.ins_convs_x.6.gn.bias"
    assert mmdet_to_wx_key("mask_head.cls_convs.3.gn.weight") == "bbox_head.cate_convs.3.gn.weight"
    assert mmdet_to_wx_key("mask_head.conv_mask_list.4.bias") == "bbox_head.solo_ins_list.4.bias"
    assert mmdet_to_wx_key("mask_head.conv_mask_list_y.0.weight") == "bbox_head.dsolo_ins_list_y.0.weight"
    assert mmdet_to_wx_key("mask_head.conv_cls.weight") == "bbox_head.solo_cate.weight"
    assert (
        mmdet_to_wx_key("mask_head.conv_cls.weight", {"bbox_head.dsolo_cate.weight": 0})
        == "bbox_head.dsolo_cate.weight"
    )
    assert mmdet_to_wx_key("mask_head.conv_kernel.bias") == "bbox_head.solo_kernel.bias"
    assert (
        mmdet_to_wx_key("mask_head.mask_feature_head.conv_pred.conv.weight") == "mask_feat_head.conv_pred.0.conv.weight"
    )
    assert (
        mmdet_to_wx_key("mask_head.mask_feature_head.convs_all_levels.3.conv2.gn.bias")
        == "mask_feat_head.convs_all_levels.3.conv2.gn.bias"
    )
    assert mmdet_to_wx_key("neck.fpn_convs.0.conv.bias") == "neck.fpn_convs.0.conv.bias"
    assert mmdet_to_wx_key("mask_head.something_new.weight") is None
    assert mmdet_to_wx_key("rpn_head.conv.weight") is None


@pytest.mark.parametrize("source", ["wxinlong", "mmdet"])
def test_convert_against_layout(source):
    layout = official_layout("solov2")
    target = random_state_dict(layout, seed=5)  # stands in for a model's state dict
    wx = random_state_dict(layout, seed=6)
    src = wx if source == "wxinlong" else _mmdet_state(wx)
    if source == "wxinlong":
        src = {"module." + k: v for k, v in src.items()}  # DataParallel prefix is stripped
    out, report = convert(src, source, target)
    assert report.ok() and report.mapped == len(layout) and not report.filled
    assert list(out) == list(target)
    assert all(torch.equal(out[k], wx[k]) for k in layout)
    if source == "mmdet":
        assert report.renamed["mask_head.conv_kernel.weight"] == "bbox_head.solo_kernel.weight"


def test_convert_reports_problems():
    layout = official_layout("solo")
    target = random_state_dict(layout)
    src = random_state_dict(layout, seed=1)
    del src["bbox_head.solo_cate.bias"]
    del src["backbone.bn1.num_batches_tracked"]  # filled from the model, not an error
    src["bbox_head.solo_cate.weight"] = torch.zeros(81, 256, 3, 3)  # background channel: wrong shape
    src["bbox_head.extra.weight"] = torch.zeros(3)
    src["backbone.conv1.weight"] = src["backbone.conv1.weight"].half()  # cast to the model's dtype
    out, report = convert(src, "wxinlong", target)
    assert not report.ok()
    assert report.missing == ["bbox_head.solo_cate.weight", "bbox_head.solo_cate.bias"]
    assert report.unmapped == ["bbox_head.extra.weight"]
    assert len(report.shape_mismatches) == 1 and "(81, 256, 3, 3)" in report.shape_mismatches[0]
    assert report.filled == ["backbone.bn1.num_batches_tracked"]
    assert out["backbone.conv1.weight"].dtype == torch.float32 and len(report.cast) == 1
    assert not report.ok(allow_missing=True, allow_unmapped=True)  # shape mismatches are always errors
    text = report.summary()
    assert "shape mismatches (1)" in text and "missing model keys (2)" in text and "unmapped source keys (1)" in text
    with pytest.raises(ValueError, match="source"):
        convert(src, "detectron2", target)
    assert isinstance(report, ConversionReport)


# ---------------------------------------------------------------------------------------------------------------
# Against solo's model (build_model)


@pytest.fixture(scope="module")
def models():
    cache = {}

    def get(preset):
        if preset not in cache:
            torch.manual_seed(0)
            cache[preset] = build_model(preset)
        return cache[preset]

    return get


@needs_build_model
@pytest.mark.parametrize(("preset", "variant"), CASES)
def test_param_count_matches_spec(models, preset, variant):
    model = models(preset)
    layout = official_layout(variant)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == layout
    assert list(model.state_dict()) == list(layout)  # registration order of SPEC §11 too
    assert sum(p.numel() for p in model.parameters()) == param_count(layout)


@needs_build_model
@pytest.mark.parametrize("source", ["wxinlong", "mmdet"])
@pytest.mark.parametrize(("preset", "variant"), CASES)
def test_convert_and_load_strict(models, preset, variant, source):
    model = models(preset)
    ckpt = _wx_checkpoint(variant, seed=3)
    wx = ckpt["state_dict"]
    src = wx if source == "wxinlong" else _mmdet_state(wx)
    out, report = convert(src, source, model)
    assert report.ok(), report.summary()
    assert not report.unmapped and not report.missing and not report.filled
    model.load_state_dict(out, strict=True)
    got = model.state_dict()
    for k, v in wx.items():
        assert torch.equal(got[k], v), k


@needs_build_model
def test_cli_wx_solov2(tmp_path, models, capsys):
    ckpt = _wx_checkpoint("solov2", seed=4)
    src = tmp_path / "solov2_release_r50_fpn_8gpu_3x.pth"
    torch.save(ckpt, src)
    out = tmp_path / "out" / "solov2_r50_3x.pth"
    assert main([str(src), str(out), "--from", "wxinlong", "--config", "solov2_r50_3x"]) == 0
    assert "wrote" in capsys.readouterr().out
    loaded = torch.load(out, weights_only=True)
    assert set(loaded) == {"state_dict", "meta"}
    assert loaded["meta"]["source"] == "wxinlong" and loaded["meta"]["preset"] == "solov2_r50_3x"
    assert loaded["meta"]["source_meta"] == {"mmdet_version": "1.0rc0+f4cd03b", "epoch": 36, "iter": 263000}
    model = models("solov2_r50_3x")
    model.load_state_dict(loaded["state_dict"], strict=True)
    assert torch.equal(
        model.state_dict()["bbox_head.solo_kernel.weight"], ckpt["state_dict"]["bbox_head.solo_kernel.weight"]
    )
    assert [p.name for p in out.parent.iterdir()] == ["solov2_r50_3x.pth"]  # no temp file left behind


@needs_build_model
def test_cli_mmdet_small_preset_and_errors(tmp_path, capsys):
    preset = "decoupled_solo_synthetic_r18"
    torch.manual_seed(1)
    ours = build_model(preset).state_dict()
    mm = {to_mmdet_key(k): torch.randn_like(v) if v.is_floating_point() else v for k, v in ours.items()}
    src = tmp_path / "mmdet.pth"
    torch.save({"meta": {"CLASSES": ("a", "b", "c")}, "state_dict": mm}, src)
    out = tmp_path / "ours.pth"
    assert main([str(src), str(out), "--from", "mmdet", "--config", preset]) == 0
    loaded = torch.load(out, weights_only=True)
    assert loaded["meta"]["source_meta"] == {"CLASSES": ["a", "b", "c"]}
    model = build_model(preset)
    model.load_state_dict(loaded["state_dict"], strict=True)
    assert torch.equal(model.state_dict()["bbox_head.dsolo_cate.weight"], mm["mask_head.conv_cls.weight"])

    # the wrong preset: unmapped and missing keys -> exit code 1, nothing written
    bad_out = tmp_path / "bad.pth"
    assert main([str(src), str(bad_out), "--from", "mmdet", "--config", "solo_synthetic_r18"]) == 1
    err = capsys.readouterr().err
    assert "unmapped source keys" in err and "missing model keys" in err
    assert not bad_out.exists()

    # the right preset but the wrong naming: an error with a hint
    assert main([str(src), str(bad_out), "--from", "wxinlong", "--config", preset]) == 1
    assert "try --from mmdet" in capsys.readouterr().err
    assert not bad_out.exists()

    # a partial checkpoint (backbone + neck only) passes with --allow-missing
    part = {k: v for k, v in mm.items() if k.startswith(("backbone.", "neck."))}
    torch.save({"state_dict": part}, src)
    assert main([str(src), str(bad_out), "--from", "mmdet", "--config", preset]) == 1
    assert main([str(src), str(bad_out), "--from", "mmdet", "--config", preset, "--allow-missing"]) == 0
    assert os.path.exists(bad_out)
