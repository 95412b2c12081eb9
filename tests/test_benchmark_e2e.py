"""The end-to-end benchmark (``python benchmarks/run.py --e2e``) and the detector's phase timer."""

import json
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import e2e, run
from solo.models import build_model
from solo.models.detector import PhaseTimer


def _tiny_inputs(gen):
    images = [torch.rand(3, 96, 128, generator=gen) * 255 for _ in range(2)]
    masks = torch.zeros(2, 96, 128, dtype=torch.uint8)
    masks[0, 10:60, 20:90] = 1
    masks[1, 40:90, 60:120] = 1
    targets = [{"masks": masks, "labels": torch.tensor([0, 1])} for _ in range(2)]
    return images, targets


def test_phase_timer_sections_and_zero_cost_when_off():
    model = build_model("solov2_synthetic_r18")
    images, targets = _tiny_inputs(torch.Generator().manual_seed(0))
    assert model.timer is None
    assert model._section("forward") is model._section("losses")  # the one shared null context: nothing timed
    model.train()
    torch.manual_seed(0)
    plain = model(images, targets)["loss"]

    timer = PhaseTimer("cpu")
    model.timer = timer
    torch.manual_seed(0)
    timed = model(images, targets)["loss"]
    assert set(timer.times) == {"preprocess", "assign", "forward", "losses"}
    assert all(v > 0 for v in timer.times.values())
    torch.testing.assert_close(timed, plain, rtol=0, atol=0)  # timing changes nothing

    timer.reset()
    model.eval()
    model(images)
    assert set(timer.times) == {"preprocess", "network", "postprocess"}
    assert "timer" not in model.state_dict()


def test_postprocess_inputs_give_exactly_the_detections():
    gen = torch.Generator().manual_seed(1)
    model, outs, batch, sizes, images = e2e.postprocess_inputs(torch.device("cpu"), gen, detections=30)
    model.backend = "reference"
    with torch.no_grad():
        res = model._postprocess(outs, outs[1], batch, sizes, images)[0]
    assert res["masks"].shape == (30, 480, 640)
    assert res["masks"].flatten(1).any(1).all()
    with pytest.raises(ValueError, match="detections"):
        e2e.postprocess_inputs(torch.device("cpu"), gen, detections=300)


def test_e2e_bad_arguments(tmp_path):
    assert e2e.main(["--presets", "no_such_preset", "--out", str(tmp_path)]) == 2
    assert e2e.main(["--backends", "no_such_backend", "--out", str(tmp_path)]) == 2
    with pytest.raises(SystemExit):
        e2e.main(["--reps", "0"])
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_e2e_quick_writes_reports(tmp_path, capsys):
    """``run.py --e2e --quick`` (the smoke test): JSON, markdown and PNG written, every phase present, phases adding
    up to the measured total, the 100-detection post-processing row with 100 detections per backend."""
    assert run.main(["--e2e", "--quick", "--quiet", "--out", str(tmp_path)]) == 0
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 3 and not any(f.startswith("latest-") for f in files)  # quick: no latest-* copies
    base = files[0].rsplit(".", 1)[0]
    assert base.endswith("-e2e-quick") and files == [f"{base}.json", f"{base}.md", f"{base}.png"]
    assert (tmp_path / f"{base}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    report = json.loads((tmp_path / f"{base}.json").read_text())
    backends = report["options"]["backends"]
    assert backends[0] == "reference" and len(backends) >= 2  # the reference and the fused backend(s) side by side
    assert [e["preset"] for e in report["presets"]] == list(e2e.QUICK_PRESETS)
    for entry in report["presets"]:
        for mode, phases in (("train", e2e.TRAIN_PHASES), ("infer", e2e.INFER_PHASES)):
            rows = set(entry[mode])  # the backends, plus solo.train's setup (fused + channels_last [+ bf16])
            extra = rows - set(backends)
            assert set(backends) <= rows and len(extra) <= 1 and all("channels_last" in r for r in extra)
            for r in entry[mode].values():
                assert set(r["phases_ms"]) == set(phases)
                # the phases cover the step: their sum is the total up to the small untimed glue between them
                assert 0.8 * r["total_ms"] <= r["phase_sum_ms"] <= 1.0001 * r["total_ms"]
                assert r["peak_bytes"] is None or r["peak_bytes"] > 0
        assert set(entry["train_speedup"]) == set(entry["train"]) - {"reference"}
    pp = report["postprocess_100"]
    assert {b: r["detections"] for b, r in pp["results"].items()} == {b: [100] for b in backends}

    md = (tmp_path / f"{base}.md").read_text()
    assert "| preset | size | backend | to_device |" in md and "100 detections" in md
    assert report["environment"]["torch"] in md
    assert "Training step" in capsys.readouterr().out
