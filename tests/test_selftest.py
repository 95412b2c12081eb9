"""python -m solo.selftest: a quick run passes and prints its table, a planted mismatch fails naming the op and the
backend, bad arguments exit 2 naming the argument, --json holds the rows and the environment."""

import json
import os
import subprocess
import sys

import pytest
import torch

import solo.ops
from solo import selftest
from solo.ops import available_backends

CPU_OK = available_backends("cpu")["cpu"][0]
BACKENDS = ["reference", "cpu"] if CPU_OK else ["reference"]
OPS = [c.name for c in selftest.OP_CHECKS]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One in-process `--quick` run on the CPU (reference and cpu backends), its stdout, JSON and exit status."""
    path = tmp_path_factory.mktemp("selftest") / "selftest.json"
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = selftest.main(["--quick", "--device", "cpu", "--backends", *BACKENDS, "--json", str(path)])
    return rc, out.getvalue(), json.loads(path.read_text())


def table_rows(text):
    """(op, backend, result) of the table's rows."""
    rows = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and (parts[0] in OPS or parts[0].endswith(".backward") or parts[0] == "train"):
            op = parts[0] if parts[0] != "train" else f"train {parts[1]}"
            backend = parts[1] if parts[0] != "train" else parts[3]
            result = next(p for p in parts if p in ("pass", "FAIL"))
            rows.append((op, backend, result))
    return rows


def test_quick_run_passes_with_a_row_per_op_and_backend(quick_run):
    rc, text, _ = quick_run
    assert rc == 0, text
    rows = table_rows(text)
    assert rows and all(r == "pass" for _, _, r in rows)
    seen = {(op, b) for op, b, _ in rows}
    for op in OPS + ["sigmoid_focal_loss.backward", "dice_loss.backward", "train solov2", "train decoupled_solo"]:
        for b in BACKENDS:
            assert (op, b) in seen, (op, b)
    header = text.splitlines()
    assert any(
        line.split()[:8] == ["op", "backend", "case", "shapes", "max", "err", "tolerance", "result"] for line in header
    )
    # --quick drops the SOLO-sized cases; unusable backends are listed with their reason.
    big = {c.label for check in selftest.OP_CHECKS for c in check.cases() if c.big}
    assert big and not {r["case"] for r in quick_run[2]["rows"]} & big
    assert "backend cuda not usable on cpu:" in text or torch.cuda.is_available()
    assert f"{len(rows)} checks, {len(rows)} passed, 0 FAILED" in text


def test_json_holds_the_rows_and_the_environment(quick_run):
    _, text, doc = quick_run
    assert doc["passed"] is True and doc["quick"] is True
    assert doc["backends"] == BACKENDS
    env = doc["environment"]
    for key in ("torch", "triton", "device", "device_name", "capability", "solo", "date"):
        assert key in env
    assert env["torch"] == torch.__version__ and env["solo"] == solo.__version__ and env["device"] == "cpu"
    assert len(doc["rows"]) == len(table_rows(text))
    row = doc["rows"][0]
    assert set(row) >= {"op", "backend", "case", "shapes", "error", "tolerance", "status", "ms", "max_error"}
    assert all(r["status"] == "pass" for r in doc["rows"])
    assert "cuda" in doc["unusable"] or torch.cuda.is_available()


@pytest.mark.parametrize("backend", BACKENDS)
def test_planted_mismatch_fails_naming_op_and_backend(monkeypatch, capsys, backend):
    real = solo.ops.matrix_nms

    def perturbed(*args, **kw):
        out = real(*args, **kw)
        return out * 1.001 if kw.get("backend") == backend else out

    monkeypatch.setattr(solo.ops, "matrix_nms", perturbed)
    rc = selftest.main(["--quick", "--backends", *BACKENDS, "--ops", "matrix_nms", "downsample_masks"])
    text = capsys.readouterr().out
    assert rc == 1
    fails = [line for line in text.splitlines() if line.startswith("FAIL ")]
    assert fails and all(line.startswith(f"FAIL matrix_nms [{backend}]") for line in fails), fails
    assert {(op, b) for op, b, r in table_rows(text) if r == "FAIL"} == {("matrix_nms", backend)}


def test_an_op_that_raises_is_a_failure(monkeypatch, capsys):
    def broken(*args, **kw):
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(solo.ops, "dice_loss", broken)
    rc = selftest.main(["--quick", "--backends", "reference", "--ops", "dice_loss"])
    text = capsys.readouterr().out
    assert rc == 1
    assert "FAIL dice_loss [reference]" in text and "RuntimeError: kernel exploded" in text


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--backends", "reference", "numpy"], "argument --backends: unknown backend 'numpy'"),
        (["--ops", "nms"], "argument --ops: unknown check 'nms'"),
        (["--device", "tpu"], "argument --device: expected cpu, cuda or cuda:N, got 'tpu'"),
        (["--json", "/nonexistent-dir/x.json"], "argument --json: the directory '/nonexistent-dir' does not exist"),
        (["--repeat", "-1"], "argument --repeat: must be >= 0"),
        (["--quick", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    ],
)
def test_bad_arguments_exit_2_naming_the_argument(capsys, argv, message):
    assert selftest.main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_exits_2(capsys):
    assert selftest.main(["--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "argument --device: 'cuda' asked for, but CUDA is not available" in err


def test_a_backend_asked_for_that_cannot_run_exits_2(capsys):
    """--backends cuda with --device cpu: the reason comes from solo.ops.available_backends."""
    assert selftest.main(["--device", "cpu", "--backends", "reference", "cuda"]) == 2
    err = capsys.readouterr().err
    assert f"argument --backends: backend 'cuda' cannot run on cpu: {available_backends('cpu')['cuda'][1]}" in err


def test_module_entry_point_exit_status():
    """`python -m solo.selftest` itself: a bad argument exits 2 with the message on stderr."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}
    r = subprocess.run(
        [sys.executable, "-m", "solo.selftest", "--backends", "cuda-ish"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert r.returncode == 2, r.stderr
    assert "argument --backends: unknown backend 'cuda-ish'" in r.stderr


@pytest.mark.skipif(
    not (available_backends("cpu")["triton"][0] and os.environ.get("TRITON_INTERPRET") == "1"),
    reason="needs triton's interpreter (TRITON_INTERPRET=1 before triton is imported)",
)
def test_interpreted_triton(capsys):
    """Under the interpreter the triton backend is tested on the CPU too (one cheap op here)."""
    rc = selftest.main(["--quick", "--backends", "triton", "--ops", "downsample_masks"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert ("downsample_masks", "triton", "pass") in table_rows(text)


def test_interpreter_rerun_decision(monkeypatch):
    """--device cpu asking for triton in a process whose triton is not interpreted re-runs itself with
    TRITON_INTERPRET=1; nothing else does."""
    monkeypatch.setattr(selftest._backend, "triton_interpret", lambda: False)
    monkeypatch.setattr(selftest, "_triton_loadable", lambda: True)
    monkeypatch.delenv("_SOLO_SELFTEST_RERUN", raising=False)
    assert selftest._needs_interpreter_rerun(selftest._parse(["--backends", "cpu", "triton"]))
    assert not selftest._needs_interpreter_rerun(selftest._parse(["--backends", "cpu"]))
    assert not selftest._needs_interpreter_rerun(selftest._parse([]))  # default: listed as unusable, no re-run
    monkeypatch.setenv("_SOLO_SELFTEST_RERUN", "1")  # the re-run itself never re-runs
    assert not selftest._needs_interpreter_rerun(selftest._parse(["--backends", "triton"]))
