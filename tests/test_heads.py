"""Heads of solo.models (SOLO_SPEC.md §5, §11): CoordConv, ConvModule, output shapes, initialisation and the
checkpoint key layout of the original code."""

import math

import pytest
import torch

from solo.configs import get_config
from solo.models.heads import (
    PRIOR_BIAS,
    ConvModule,
    DecoupledSOLOHead,
    DecoupledSOLOLightHead,
    MaskFeatHead,
    SOLOHead,
    SOLOv2Head,
    coord_channels,
    with_coords,
)
from tests._model_helpers import small_cfg

GRIDS = (8, 6, 5, 4, 3)


def level_feats(b=2, c=32, h=12, w=16):
    """The five re-mapped maps of a (8h x 8w) canvas: strides 8, 8, 16, 32, 32."""
    g = torch.Generator().manual_seed(0)
    sizes = [(h, w), (h, w), (h // 2, w // 2), (h // 4, w // 4), (h // 4, w // 4)]
    return [torch.randn(b, c, *s, generator=g) for s in sizes]


def test_prior_bias():
    assert PRIOR_BIAS == pytest.approx(-4.59512, abs=1e-5)


def test_coord_channels():
    x = torch.zeros(2, 5, 3, 4)
    c = coord_channels(x)
    assert c.shape == (2, 2, 3, 4)
    torch.testing.assert_close(c[1, 0, 2], torch.linspace(-1, 1, 4))  # x varies along columns
    torch.testing.assert_close(c[0, 1, :, 3], torch.linspace(-1, 1, 3))  # y varies along rows
    assert (c[:, 0] == c[:, 0, :1]).all() and (c[:, 1] == c[:, 1, :, :1]).all()
    out = with_coords(x)
    assert out.shape == (2, 7, 3, 4)
    torch.testing.assert_close(out[:, 5:], c)  # appended after the features, order [x, y]
    torch.testing.assert_close(with_coords(x, "y")[:, 5], c[:, 1])
    torch.testing.assert_close(with_coords(x, "x")[:, 5], c[:, 0])
    with pytest.raises(ValueError, match="which"):
        coord_channels(x, "z")


def test_coord_channels_single_pixel_and_dtype():
    c = coord_channels(torch.zeros(1, 1, 1, 1, dtype=torch.bfloat16))
    assert c.dtype == torch.bfloat16 and c.shape == (1, 2, 1, 1)


def test_conv_module():
    m = ConvModule(10, 64)
    assert sorted(m.state_dict()) == ["conv.weight", "gn.bias", "gn.weight"]
    assert m.conv.bias is None and m.gn.num_groups == 32 and m.gn.eps == 1e-5
    y = m(torch.randn(2, 10, 5, 6))
    assert y.shape == (2, 64, 5, 6) and (y >= 0).all()
    assert ConvModule(8, 32, kernel_size=1).conv.weight.shape == (32, 8, 1, 1)
    with pytest.raises(ValueError, match="GN groups"):
        ConvModule(8, 48)


def test_solo_head_shapes():
    cfg = small_cfg("solo")
    head = SOLOHead(cfg)
    masks, cates = head(level_feats())
    hw = [(24, 32), (24, 32), (12, 16), (6, 8), (6, 8)]  # 2x each level: strides 4, 4, 8, 16, 16
    for lv, s in enumerate(GRIDS):
        assert masks[lv].shape == (2, s * s, *hw[lv])
        assert cates[lv].shape == (2, 3, s, s)


@pytest.mark.parametrize(
    "cls,head", [(DecoupledSOLOHead, "decoupled_solo"), (DecoupledSOLOLightHead, "decoupled_solo_light")]
)
def test_decoupled_head_shapes(cls, head):
    h = cls(small_cfg(head))
    xs, ys, cates = h(level_feats())
    hw = [(24, 32), (24, 32), (12, 16), (6, 8), (6, 8)]
    for lv, s in enumerate(GRIDS):
        assert xs[lv].shape == ys[lv].shape == (2, s, *hw[lv])
        assert cates[lv].shape == (2, 3, s, s)


def test_solov2_head_and_mask_feat_shapes():
    cfg = small_cfg("solov2")
    kernels, cates = SOLOv2Head(cfg)(level_feats())
    for lv, s in enumerate(GRIDS):
        assert kernels[lv].shape == (2, 32, s, s) and cates[lv].shape == (2, 3, s, s)
    g = torch.Generator().manual_seed(1)
    p = [torch.randn(2, 32, 24 // 2**i, 32 // 2**i, generator=g) for i in range(4)]  # P2..P5 of a 96x128 canvas
    feat = MaskFeatHead(cfg)(p)
    assert feat.shape == (2, 32, 24, 32) and (feat >= 0).all()
    with pytest.raises(ValueError, match="P2..P5"):
        MaskFeatHead(cfg)(p[:3])


def test_solov2_head_category_ignores_coordinates():
    """The category branch reads the resized features without the coordinate channels (SPEC §5.5)."""
    cfg = small_cfg("solov2")
    head = SOLOv2Head(cfg)
    feats = level_feats()
    _, cates = head(feats)
    s = GRIDS[2]
    x = torch.nn.functional.interpolate(feats[2], size=(s, s), mode="bilinear", align_corners=False)
    for layer in head.cate_convs:
        x = layer(x)
    torch.testing.assert_close(cates[2], head.solo_cate(x))


def test_init():
    torch.manual_seed(0)
    head = SOLOHead(get_config("solo_r50_3x").model)
    w = head.ins_convs[3].conv.weight
    assert abs(w.std().item() - 0.01) < 1e-3 and abs(w.mean().item()) < 1e-3
    assert (head.ins_convs[3].gn.weight == 1).all() and (head.ins_convs[3].gn.bias == 0).all()
    assert torch.allclose(head.solo_cate.bias, torch.full((80,), PRIOR_BIAS))
    assert torch.allclose(head.solo_ins_list[4].bias, torch.full((144,), PRIOR_BIAS))
    assert abs(head.solo_ins_list[0].weight.std().item() - 0.01) < 1e-3
    v2 = SOLOv2Head(get_config("solov2_r50_3x").model)
    assert (v2.solo_kernel.bias == 0).all() and torch.allclose(v2.solo_cate.bias, torch.full((80,), PRIOR_BIAS))
    assert abs(v2.kernel_convs[0].conv.weight.std().item() - 0.01) < 1e-3
    mf = MaskFeatHead(get_config("solov2_r50_3x").model)
    assert abs(mf.conv_pred[0].conv.weight.std().item() - 0.01) < 1e-3
    ds = DecoupledSOLOHead(get_config("decoupled_solo_r50_3x").model)
    assert torch.allclose(ds.dsolo_ins_list_y[1].bias, torch.full((36,), PRIOR_BIAS))


def _shapes(module, prefix):
    return {prefix + k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_solo_r50_keys():
    """SPEC §11.3: 54 tensors with the original names and shapes."""
    sd = _shapes(SOLOHead(get_config("solo_r50_3x").model), "bbox_head.")
    assert len(sd) == 54
    assert sd["bbox_head.ins_convs.0.conv.weight"] == (256, 258, 3, 3)
    assert sd["bbox_head.ins_convs.6.conv.weight"] == (256, 256, 3, 3)
    assert sd["bbox_head.ins_convs.6.gn.bias"] == (256,)
    assert sd["bbox_head.cate_convs.0.conv.weight"] == (256, 256, 3, 3)
    for i, s in enumerate((40, 36, 24, 16, 12)):
        assert sd[f"bbox_head.solo_ins_list.{i}.weight"] == (s * s, 256, 1, 1)
        assert sd[f"bbox_head.solo_ins_list.{i}.bias"] == (s * s,)
    assert sd["bbox_head.solo_cate.weight"] == (80, 256, 3, 3) and sd["bbox_head.solo_cate.bias"] == (80,)


def test_decoupled_solo_r50_keys():
    """SPEC §11.4: 85 tensors; Light: 4-conv shared tower."""
    sd = _shapes(DecoupledSOLOHead(get_config("decoupled_solo_r50_3x").model), "bbox_head.")
    assert len(sd) == 85
    assert sd["bbox_head.ins_convs_x.0.conv.weight"] == (256, 257, 3, 3)
    assert sd["bbox_head.ins_convs_y.0.conv.weight"] == (256, 257, 3, 3)
    assert sd["bbox_head.ins_convs_y.6.conv.weight"] == (256, 256, 3, 3)
    for i, s in enumerate((40, 36, 24, 16, 12)):
        for ax in "xy":
            assert sd[f"bbox_head.dsolo_ins_list_{ax}.{i}.weight"] == (s, 256, 3, 3)
            assert sd[f"bbox_head.dsolo_ins_list_{ax}.{i}.bias"] == (s,)
    assert sd["bbox_head.dsolo_cate.weight"] == (80, 256, 3, 3)
    light = _shapes(DecoupledSOLOLightHead(get_config("decoupled_solo_light_r50_3x").model), "bbox_head.")
    assert light["bbox_head.ins_convs.0.conv.weight"] == (256, 258, 3, 3)
    assert "bbox_head.ins_convs.4.conv.weight" not in light and "bbox_head.cate_convs.3.gn.weight" in light
    assert not any(k.startswith("bbox_head.ins_convs_x") for k in light)
    assert len(light) == 4 * 3 * 2 + 5 * 4 + 2


def test_solov2_r50_keys():
    """SPEC §11.5: mask_feat_head 24 tensors, bbox_head 28."""
    cfg = get_config("solov2_r50_3x").model
    mf = _shapes(MaskFeatHead(cfg), "mask_feat_head.")
    assert len(mf) == 24
    assert mf["mask_feat_head.convs_all_levels.0.conv0.conv.weight"] == (128, 256, 3, 3)
    assert mf["mask_feat_head.convs_all_levels.2.conv1.conv.weight"] == (128, 128, 3, 3)
    assert mf["mask_feat_head.convs_all_levels.3.conv0.conv.weight"] == (128, 258, 3, 3)
    assert mf["mask_feat_head.convs_all_levels.3.conv2.gn.weight"] == (128,)
    assert mf["mask_feat_head.conv_pred.0.conv.weight"] == (256, 128, 1, 1)
    assert mf["mask_feat_head.conv_pred.0.gn.bias"] == (256,)
    bh = _shapes(SOLOv2Head(cfg), "bbox_head.")
    assert len(bh) == 28
    assert bh["bbox_head.cate_convs.0.conv.weight"] == (512, 256, 3, 3)
    assert bh["bbox_head.cate_convs.3.conv.weight"] == (512, 512, 3, 3)
    assert bh["bbox_head.kernel_convs.0.conv.weight"] == (512, 258, 3, 3)
    assert bh["bbox_head.solo_cate.weight"] == (80, 512, 3, 3)
    assert bh["bbox_head.solo_kernel.weight"] == (256, 512, 3, 3) and bh["bbox_head.solo_kernel.bias"] == (256,)
    # Registration order of the original: cate before kernel.
    assert next(iter(SOLOv2Head(cfg).state_dict())).startswith("cate_convs.0")


def test_solov2_light_448_keys():
    cfg = get_config("solov2_light_448_r18_3x").model
    bh = _shapes(SOLOv2Head(cfg), "")
    assert bh["kernel_convs.0.conv.weight"] == (256, 258, 3, 3) and bh["cate_convs.1.conv.weight"] == (256, 256, 3, 3)
    assert "kernel_convs.2.conv.weight" not in bh
    assert bh["solo_kernel.weight"] == (128, 256, 3, 3)
    mf = _shapes(MaskFeatHead(cfg), "")
    assert mf["conv_pred.0.conv.weight"] == (128, 128, 1, 1)


@pytest.mark.parametrize("name", ["solo_r50_3x", "decoupled_solo_r50_3x", "solov2_r50_3x"])
def test_head_parameter_counts(name):
    """The number of parameters equals the sum implied by the SPEC §11 shapes."""
    cfg = get_config(name).model
    grids = (40, 36, 24, 16, 12)

    def gnconv(cin, cout, k=3):
        return cout * cin * k * k + 2 * cout

    if cfg.head == "solo":
        n = gnconv(258, 256) + 6 * gnconv(256, 256) + 7 * gnconv(256, 256)
        n += sum(s * s * 256 + s * s for s in grids) + 80 * 256 * 9 + 80
        got = sum(p.numel() for p in SOLOHead(cfg).parameters())
    elif cfg.head == "decoupled_solo":
        n = 2 * (gnconv(257, 256) + 6 * gnconv(256, 256)) + 7 * gnconv(256, 256)
        n += 2 * sum(s * 256 * 9 + s for s in grids) + 80 * 256 * 9 + 80
        got = sum(p.numel() for p in DecoupledSOLOHead(cfg).parameters())
    else:
        n = gnconv(256, 512) + gnconv(258, 512) + 6 * gnconv(512, 512) + 80 * 512 * 9 + 80 + 256 * 512 * 9 + 256
        n += 3 * gnconv(256, 128) + gnconv(258, 128) + 3 * gnconv(128, 128) + gnconv(128, 256, 1)
        got = sum(p.numel() for p in SOLOv2Head(cfg).parameters()) + sum(
            p.numel() for p in MaskFeatHead(cfg).parameters()
        )
    assert got == n
    assert math.isfinite(got)


def test_solo_mask_logits_selected_channels():
    """The detector's selective path (tower outputs + the 1x1 conv of the needed channels only) equals forward()."""
    head = SOLOHead(small_cfg("solo"))
    feats = level_feats()
    masks, _ = head(feats)
    towers, _ = head.forward_towers(feats)
    ch = torch.tensor([0, 7, 20, 24])
    torch.testing.assert_close(head.mask_logits(2, towers[2][1:2], ch), masks[2][1, ch])
