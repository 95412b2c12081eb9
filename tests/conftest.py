"""Shared test configuration.

Backends that cannot run here are skipped with the reason from ``solo.ops.available_backends``; the test bodies
never branch on the device. Without a GPU, Triton kernels run on CPU tensors in the interpreter, which has to be
switched on before anything imports triton (hence first thing in this file).
"""

import os
import random
import zlib

if os.environ.get("SOLO_TEST_NO_INTERPRET", "0") != "1":
    try:
        import torch

        _has_cuda = torch.cuda.is_available()
    except Exception:  # noqa: BLE001  # pragma: no cover  (a broken CUDA setup counts as none)
        _has_cuda = False
    if not _has_cuda:
        os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np
import pytest
import torch

import solo.ops

CUDA = torch.cuda.is_available()
# Fresh random inputs on every run; the seed is printed in the header so a failure can be replayed with
# SOLO_TEST_SEED=<seed>.
SESSION_SEED = int(os.environ.get("SOLO_TEST_SEED", random.SystemRandom().randrange(2**31)))


def pytest_report_header(config):
    return [
        f"solo: SOLO_TEST_SEED={SESSION_SEED}, TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '0')}",
        "solo backends: "
        + ", ".join(f"{k}={'yes' if v[0] else 'no'}" for k, v in solo.ops.available_backends().items()),
    ]


def backend_params(device: str, *, triton: bool = True):
    """pytest params for every backend that can compute on `device` ('cpu' or 'cuda'), skipped with a reason when
    unusable. On CPU the triton backend runs interpreted: give it small shapes (triton=False leaves it out)."""
    names = ["reference", "cpu"] if device == "cpu" else ["reference", "cuda"]
    if triton:
        names.append("triton")
    out = []
    for name in names:
        if device == "cuda" and not CUDA:
            out.append(
                pytest.param(name, device, marks=pytest.mark.skip(reason="no CUDA device"), id=f"{name}-{device}")
            )
            continue
        ok, why = solo.ops.available_backends(device)[name]
        marks = [] if ok else [pytest.mark.skip(reason=f"backend {name} unavailable: {why}")]
        out.append(pytest.param(name, device, marks=marks, id=f"{name}-{device}"))
    return out


def all_backend_params(*, triton: bool = True):
    return backend_params("cpu", triton=triton) + backend_params("cuda", triton=triton)


def set_cpu_isa(monkeypatch, isa: str):
    """The CPU kernels' instruction set for one test (csrc/cpu/isa.h): "baseline" forces the portable loops, "auto"
    takes AVX2 where the CPU has it."""
    if isa == "baseline":
        monkeypatch.setenv("SOLO_CPU_ISA", "baseline")
    else:
        monkeypatch.delenv("SOLO_CPU_ISA", raising=False)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "needs_cuda" in item.keywords and not CUDA:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))
        if "needs_ext" in item.keywords and not solo.ops.available_backends()["cpu"][0]:
            item.add_marker(pytest.mark.skip(reason=solo.ops.available_backends()["cpu"][1]))


@pytest.fixture(autouse=True)
def _seeded_rng():
    """Fresh but reproducible random inputs per test; global RNG state restored afterwards."""
    torch_state = torch.get_rng_state()
    np_state = np.random.get_state()
    py_state = random.getstate()
    name = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]
    torch.manual_seed(SESSION_SEED ^ zlib.crc32(name.encode()))
    yield
    torch.set_rng_state(torch_state)
    np.random.set_state(np_state)
    random.setstate(py_state)
