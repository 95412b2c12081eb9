"""ResNet backbone and FPN neck (SOLO_SPEC.md §3, §4, §11.1, §11.2)."""

import math

import pytest
import torch
import torch.nn.functional as F
from official_layout import is_buffer, neck, param_count, random_state_dict, torchvision_resnet
from torch import nn

from solo.models.backbone import ResNet
from solo.models.fpn import FPN, split_feats

# torchvision's totals (resnetXX().parameters()) minus the ImageNet fc layer.
TORCHVISION_PARAMS = {
    18: 11_689_512 - 513_000,
    34: 21_797_672 - 513_000,
    50: 25_557_032 - 2_049_000,
    101: 44_549_160 - 2_049_000,
}


def _meta_resnet(depth: int, **kw) -> ResNet:
    with torch.device("meta"):
        return ResNet(depth, **kw)


@pytest.mark.parametrize("depth", [18, 34, 50, 101])
def test_resnet_keys_shapes_and_param_count(depth):
    m = _meta_resnet(depth)
    expected = torchvision_resnet(depth)
    got = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert list(got) == list(expected)  # same names in torchvision's order
    assert got == expected
    n = sum(p.numel() for p in m.parameters())
    assert n == TORCHVISION_PARAMS[depth] == param_count(expected)
    assert m.out_channels == ([64, 128, 256, 512] if depth < 50 else [256, 512, 1024, 2048])


@pytest.mark.parametrize("depth", [18, 50])
@pytest.mark.parametrize("hw", [(64, 64), (97, 131), (33, 160)])
def test_resnet_output_shapes(depth, hw):
    m = ResNet(depth).eval()
    x = torch.randn(1, 3, *hw)
    with torch.no_grad():
        outs = m(x)
    assert len(outs) == 4
    for stride, ch, o in zip((4, 8, 16, 32), m.out_channels, outs):
        # every stride-2 step (conv1, maxpool, the first block of stages 2-4) gives ceil(size / 2)
        h, w = hw
        for _ in range(int(math.log2(stride))):
            h, w = -(-h // 2), -(-w // 2)
        assert tuple(o.shape) == (1, ch, h, w)


def test_resnet_stride_in_3x3_conv():
    m = _meta_resnet(50)
    blk = m.layer2[0]
    assert blk.conv1.stride == (1, 1) and blk.conv2.stride == (2, 2) and blk.downsample[0].stride == (2, 2)
    b18 = _meta_resnet(18).layer3[0]
    assert b18.conv1.stride == (2, 2) and b18.conv2.stride == (1, 1)


def test_resnet_init():
    torch.manual_seed(0)
    m = ResNet(18)
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            assert torch.all(mod.weight == 1) and torch.all(mod.bias == 0)
    # kaiming normal, fan_out, relu gain: std = sqrt(2 / (out * k * k))
    w = m.layer1[0].conv1.weight
    assert abs(w.std().item() - math.sqrt(2 / (64 * 9))) < 0.1 * math.sqrt(2 / (64 * 9))


def _bn_modes(m):
    return {name: mod.training for name, mod in m.named_modules() if isinstance(mod, nn.BatchNorm2d)}


@pytest.mark.parametrize("frozen_stages", [-1, 0, 1, 2, 4])
@pytest.mark.parametrize("norm_eval", [True, False])
def test_frozen_stages_and_norm_eval(frozen_stages, norm_eval):
    m = ResNet(18, frozen_stages=frozen_stages, norm_eval=norm_eval)
    for mode in (True, False, True):  # .train() twice around an .eval(): the state must be re-established
        m.train(mode)
        frozen_prefixes = (
            [] if frozen_stages < 0 else ["conv1.", "bn1."] + [f"layer{i}." for i in range(1, frozen_stages + 1)]
        )
        for name, p in m.named_parameters():
            is_frozen = any(name.startswith(pref) for pref in frozen_prefixes)
            assert p.requires_grad == (not is_frozen), name
        for name, mod in m.named_modules():
            if not name:
                continue
            is_frozen = any((name + ".").startswith(pref) for pref in frozen_prefixes)
            expected = mode and not is_frozen and not (norm_eval and isinstance(mod, nn.BatchNorm2d))
            assert mod.training == expected, (mode, name)


def test_norm_eval_keeps_running_stats():
    m = ResNet(18, frozen_stages=1, norm_eval=True).train()
    before = {k: v.clone() for k, v in m.state_dict().items() if "running" in k}
    out = m(torch.randn(2, 3, 64, 64))
    sum(o.sum() for o in out).backward()
    after = m.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert m.conv1.weight.grad is None and m.layer1[0].conv1.weight.grad is None
    assert m.layer2[0].conv1.weight.grad is not None and m.layer2[0].bn1.weight.grad is not None

    m2 = ResNet(18, frozen_stages=1, norm_eval=False).train()
    before2 = m2.layer2[0].bn1.running_mean.clone()
    m2(torch.randn(2, 3, 64, 64))
    assert not torch.equal(before2, m2.layer2[0].bn1.running_mean)


def test_load_torchvision_weights_round_trip(tmp_path):
    layout = torchvision_resnet(18)
    sd = random_state_dict(layout, seed=1)
    sd["fc.weight"] = torch.randn(1000, 512)  # torchvision files carry the ImageNet classifier: ignored
    sd["fc.bias"] = torch.randn(1000)
    path = tmp_path / "resnet18.pth"
    torch.save(sd, path)
    m = ResNet(18, frozen_stages=1)
    m.load_torchvision_weights(path)
    got = m.state_dict()
    for k in layout:
        assert torch.equal(got[k], sd[k]), k
    assert not m.conv1.weight.requires_grad and m.layer2[0].conv1.weight.requires_grad

    # wrapped in {"state_dict": ...} and without num_batches_tracked (older torchvision files) also loads
    old = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    torch.save({"state_dict": old}, tmp_path / "old.pth")
    ResNet(18).load_torchvision_weights(tmp_path / "old.pth")


def test_load_torchvision_weights_errors(tmp_path):
    sd = random_state_dict(torchvision_resnet(18))
    bad = dict(sd)
    del bad["layer3.0.conv1.weight"]
    bad["layer5.0.conv1.weight"] = torch.zeros(1)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"missing keys \(1\).*layer3\.0\.conv1\.weight.*unexpected keys.*layer5"):
        ResNet(18).load_torchvision_weights(tmp_path / "bad.pth")
    # a ResNet-50 file into a ResNet-18
    torch.save(random_state_dict(torchvision_resnet(50)), tmp_path / "r50.pth")
    with pytest.raises(ValueError, match="this is a ResNet-50 file, the config needs ResNet-18"):
        ResNet(18).load_torchvision_weights(tmp_path / "r50.pth")
    sd2 = dict(sd)
    sd2["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    torch.save(sd2, tmp_path / "shape.pth")
    with pytest.raises(ValueError, match=r"shape mismatches.*conv1\.weight"):
        ResNet(18).load_torchvision_weights(tmp_path / "shape.pth")


@pytest.mark.parametrize("depth", [18, 50])
def test_fpn_keys_and_shapes(depth):
    in_ch = [64, 128, 256, 512] if depth < 50 else [256, 512, 1024, 2048]
    with torch.device("meta"):
        fpn = FPN(in_ch, 256)
    got = {k: tuple(v.shape) for k, v in fpn.state_dict().items()}
    assert len(got) == 16
    assert got == neck(depth)


def test_fpn_init():
    torch.manual_seed(0)
    fpn = FPN([64, 128, 256, 512], 256)
    for i in range(4):
        w = fpn.fpn_convs[i].conv.weight
        bound = math.sqrt(6 / (256 * 9 + 256 * 9))
        assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
        assert torch.all(fpn.fpn_convs[i].conv.bias == 0) and torch.all(fpn.lateral_convs[i].conv.bias == 0)


def test_fpn_forward_matches_formula():
    torch.manual_seed(0)
    in_ch = [8, 16, 24, 32]
    fpn = FPN(in_ch, 16)
    for m in fpn.modules():  # non-zero biases so the formula check sees them
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.bias)
    sizes = [(32, 48), (16, 24), (8, 12), (4, 6)]
    c = [torch.randn(2, ch, *s) for ch, s in zip(in_ch, sizes)]
    p = fpn(c)
    assert [tuple(t.shape) for t in p] == [(2, 16, *s) for s in sizes] + [(2, 16, 2, 3)]
    lat = [fpn.lateral_convs[i].conv(c[i]) for i in range(4)]
    for i in (2, 1, 0):
        lat[i] = lat[i] + lat[i + 1].repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    for i in range(4):
        torch.testing.assert_close(p[i], fpn.fpn_convs[i].conv(lat[i]))
    assert torch.equal(p[4], p[3][:, :, ::2, ::2])  # P6 = stride-2 subsample of P5


def test_fpn_odd_sizes_and_p6():
    fpn = FPN([4, 4, 4, 4], 8)
    c = [torch.randn(1, 4, *s) for s in [(25, 33), (13, 17), (7, 9), (4, 5)]]
    p = fpn(c)
    assert [tuple(t.shape[-2:]) for t in p] == [(25, 33), (13, 17), (7, 9), (4, 5), (2, 3)]
    assert torch.equal(p[4], p[3][:, :, ::2, ::2])


def test_split_feats_worked_example():
    # SPEC §4: canvas 800x1216 -> P2 200x304, P3 100x152, P4 50x76, P5 25x38, P6 13x19;
    # head inputs 100x152, 100x152, 50x76, 25x38, 25x38.
    fpn = FPN([4, 4, 4, 4], 4)
    c = [torch.randn(1, 4, 800 // s, 1216 // s) for s in (4, 8, 16, 32)]
    with torch.no_grad():
        p = fpn(c)
        heads = split_feats(p)
    assert [tuple(t.shape[-2:]) for t in p] == [(200, 304), (100, 152), (50, 76), (25, 38), (13, 19)]
    assert [tuple(t.shape[-2:]) for t in heads] == [(100, 152), (100, 152), (50, 76), (25, 38), (25, 38)]
    # level 0: exact x0.5 bilinear (align_corners=False) = 2x2 average pooling
    torch.testing.assert_close(heads[0], F.avg_pool2d(p[0], 2))
    assert heads[1] is p[1] and heads[2] is p[2] and heads[3] is p[3]
    torch.testing.assert_close(heads[4], F.interpolate(p[4], size=(25, 38), mode="bilinear", align_corners=False))


def test_backbone_fpn_end_to_end_r18():
    m = ResNet(18).eval()
    fpn = FPN(m.out_channels, 32).eval()
    with torch.no_grad():
        p = fpn(m(torch.randn(2, 3, 96, 160)))
        heads = split_feats(p)
    assert [tuple(t.shape[-2:]) for t in heads] == [(12, 20), (12, 20), (6, 10), (3, 5), (3, 5)]
    assert all(torch.isfinite(t).all() for t in heads)


def test_buffers_are_the_bn_stats():
    m = _meta_resnet(18)
    assert {k for k, _ in m.named_buffers()} == {k for k in torchvision_resnet(18) if is_buffer(k)}


def test_detector_keeps_backbone_frozen_through_train():
    build_model = pytest.importorskip("solo.models").__dict__.get("build_model")
    if build_model is None:
        pytest.skip("solo.models.build_model is not available yet")
    model = build_model("solov2_light_448_r18_3x").train()  # a model-zoo preset: frozen stem + layer1, BN eval
    bb = model.backbone
    assert not bb.conv1.weight.requires_grad and not bb.layer1[1].conv2.weight.requires_grad
    assert bb.layer2[0].conv1.weight.requires_grad and bb.layer4[1].bn2.weight.requires_grad
    assert not any(m.training for m in bb.modules() if isinstance(m, nn.BatchNorm2d))
    assert bb.layer2.training and model.neck.training
    # the synthetic presets train from scratch: nothing frozen, BatchNorm learns its statistics
    scratch = build_model("solo_synthetic_r18").train()
    assert all(p.requires_grad for p in scratch.parameters())
    assert all(m.training for m in scratch.backbone.modules() if isinstance(m, nn.BatchNorm2d))
