"""Atomic checkpoints: a temporary file in the target directory, then ``os.replace``; a ``latest`` pointer file
(written the same way) names the newest checkpoint of a work dir. Loaded with ``torch.load(weights_only=True)``,
so a checkpoint holds only tensors and plain Python containers (the RNG states are stored as tensors / lists).
"""

from __future__ import annotations

import dataclasses
import os
import random
import tempfile

import numpy as np
import torch

__all__ = [
    "LATEST_NAME",
    "atomic_write_bytes",
    "capture_rng_state",
    "find_latest",
    "load_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
]

LATEST_NAME = "latest"


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: str, write_fn) -> None:
    """Call ``write_fn(fileobj)`` on a temporary file next to ``path``, fsync it, then rename it over ``path``.
    On any error the temporary file is removed and ``path`` is untouched."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(d)


def atomic_write_bytes(path: str, data: bytes) -> None:
    _atomic_write(path, lambda f: f.write(data))


def capture_rng_state() -> dict:
    """RNG states of torch (CPU and CUDA), numpy and Python ``random`` as weights_only-loadable objects."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "key": np_state[0],
            "pos": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "extra": [int(np_state[2]), int(np_state[3]), float(np_state[4])],
        },
        "python": {
            "version": py_state[0],
            "state": list(py_state[1]),
            "gauss": py_state[2] if py_state[2] is None else float(py_state[2]),
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["key"], n["pos"].numpy().astype(np.uint32), *n["extra"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def _plain(obj):
    """Config dataclasses (nested) -> plain dicts / lists, loadable with weights_only=True."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def save_checkpoint(
    path: str,
    model,
    optimizer=None,
    scheduler=None,
    scaler=None,
    *,
    epoch: int = 0,
    iteration: int = 0,
    config=None,
    class_names=None,
    extra: dict | None = None,
    update_latest: bool = True,
) -> str:
    """Write a checkpoint atomically to ``path`` and (``update_latest``) point ``<dir>/latest`` at it.

    ``model`` may be wrapped in DistributedDataParallel (the inner module's state is saved). ``epoch`` is the number
    of finished epochs, ``iteration`` the global number of finished iterations. Returns ``path``."""
    module = getattr(model, "module", model)
    ckpt = {
        "model": module.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": int(epoch),
        "iter": int(iteration),
        "rng": capture_rng_state(),
        "config": _plain(config),
        "class_names": list(class_names) if class_names is not None else None,
    }
    if extra:
        ckpt.update(_plain(extra))
    _atomic_write(path, lambda f: torch.save(ckpt, f))
    if update_latest:
        atomic_write_bytes(
            os.path.join(os.path.dirname(os.path.abspath(path)), LATEST_NAME), (os.path.basename(path) + "\n").encode()
        )
    return path


def load_checkpoint(path: str, weights_only: bool = True, map_location="cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` (or a bare state dict). A directory means its latest."""
    if os.path.isdir(path):
        latest = find_latest(path)
        if latest is None:
            raise FileNotFoundError(f"no checkpoint in directory {path!r} (no '{LATEST_NAME}' pointer or *.pth file)")
        path = latest
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    return torch.load(path, map_location=map_location, weights_only=weights_only)


def find_latest(work_dir: str) -> str | None:
    """The checkpoint named by ``<work_dir>/latest``, else the newest ``*.pth`` in ``work_dir``; None if none."""
    pointer = os.path.join(work_dir, LATEST_NAME)
    if os.path.isfile(pointer):
        with open(pointer) as f:
            name = f.read().strip()
        cand = os.path.join(work_dir, name)
        if name and os.path.isfile(cand):
            return cand
    if not os.path.isdir(work_dir):
        return None
    pths = [os.path.join(work_dir, n) for n in os.listdir(work_dir) if n.endswith(".pth") and not n.startswith(".")]
    return max(pths, key=os.path.getmtime) if pths else None
