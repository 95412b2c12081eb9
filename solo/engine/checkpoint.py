"""Atomic checkpoints: a temporary file in the target directory, then ``os.replace``; a ``latest`` pointer file
(written the same way) names the newest checkpoint of a work dir. Loaded with ``torch.load(weights_only=True)``,
so a checkpoint holds only tensors and plain Python containers (the RNG states are stored as tensors / lists).

A file that cannot be loaded (cut off while being copied, empty, not a checkpoint at all, or holding objects the safe
unpickler refuses) raises :class:`CheckpointReadError`, whose message names the file and says which of these it is
(torch's own errors do not: a truncated zip gives ``OSError: [Errno 22] Invalid argument``, random bytes a
``weights_only`` complaint). :func:`load_first_loadable` walks a list of candidates (newest first, see
:func:`resume_candidates`) and, under torch.distributed, makes every rank agree on the same file.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import random
import tempfile
import zipfile

import numpy as np
import torch

__all__ = [
    "LATEST_NAME",
    "CheckpointReadError",
    "atomic_write_bytes",
    "capture_rng_state",
    "describe_load_error",
    "find_latest",
    "load_checkpoint",
    "load_first_loadable",
    "pointer_problem",
    "restore_rng_state",
    "resume_candidates",
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


class CheckpointReadError(RuntimeError):
    """A checkpoint that cannot be loaded. ``path`` is the file (or the work dir when no candidate loaded),
    ``reason`` why, ``skipped`` the ``(path, reason)`` pairs of the files tried (:func:`load_first_loadable`)."""

    def __init__(self, message: str, path: str, reason: str, skipped: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.path, self.reason, self.skipped = path, reason, list(skipped or [])


_ZIP_MAGIC = b"PK\x03\x04"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def describe_load_error(path: str, exc: BaseException | None = None) -> str:
    """Why ``torch.load(path)`` failed, in words: empty file, truncated zip, not a checkpoint (text / other bytes),
    a pickle that ``weights_only`` refuses, or torch's first error line. Looks at the file itself, because torch's
    exceptions do not say it (a truncated zip raises ``OSError: [Errno 22]``, random bytes an UnpicklingError
    about ``weights_only``)."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as e:
        return f"cannot be opened ({e.strerror or e})"
    if size == 0:
        return "the file is empty (0 bytes)"
    if head.startswith(_ZIP_MAGIC):
        if not zipfile.is_zipfile(path):
            # torch.save writes a zip whose central directory is at the very end: a cut-off copy lacks it.
            return (
                f"truncated or damaged: a zip archive (the torch.save format) without its central directory "
                f"({size} bytes; cut off while being written or copied?)"
            )
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
                bad = z.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            return f"damaged zip archive ({_first_line(e)})"
        if not any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
            return f"not a checkpoint: a zip archive without the data.pkl of torch.save ({len(names)} members)"
        if bad is not None:
            return f"damaged zip archive: member {bad!r} fails its CRC check"
    elif not head.startswith(b"\x80"):  # every pickle of protocol >= 2 (torch.save's legacy format too) starts so
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None and all(c.isprintable() or c in "\r\n\t" for c in text):
            snippet = text[:40].split("\n")[0]
            return f"not a checkpoint: a text file ({size} bytes, starts with {snippet!r})"
        return (
            f"not a checkpoint: neither a torch.save zip archive nor a pickle ({size} bytes, first bytes "
            f"{head[:8].hex(' ')})"
        )
    if isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in str(exc):
        detail = next((ln.strip() for ln in str(exc).splitlines() if "WeightsUnpickler error" in ln), "")
        detail = detail.replace("WeightsUnpickler error:", "").strip().split(". Please use")[0]
        if "Unsupported global" in str(exc):
            return "holds Python objects that torch.load(weights_only=True) refuses to unpickle" + (
                f" ({detail})" if detail else ""
            )
        # the safe unpickler also reports plain garbage after a pickle-like first byte this way
        opcode = next((ln.strip() for ln in str(exc).splitlines() if "Unsupported operand" in ln), "")
        return f"not a checkpoint: not valid pickle data ({size} bytes{'; ' + opcode if opcode else ''})"
    if isinstance(exc, EOFError) or (exc is not None and "truncated" in str(exc).lower()):
        return f"truncated: the pickle data ends early ({size} bytes; cut off while being written or copied?)"
    if exc is None:
        return "unreadable"
    return f"unreadable by torch.load ({_first_line(exc)})"


def load_checkpoint(path: str, weights_only: bool = True, map_location="cpu", require: tuple[str, ...] = ()) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` (or a bare state dict). A directory means its latest.

    Raises FileNotFoundError for a missing file and :class:`CheckpointReadError` (naming the file and the reason)
    for one that cannot be loaded, that is not a dict, or that lacks one of the ``require`` keys."""
    if os.path.isdir(path):
        latest = find_latest(path)
        if latest is None:
            raise FileNotFoundError(f"no checkpoint in directory {path!r} (no '{LATEST_NAME}' pointer or *.pth file)")
        path = latest
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=weights_only)
    except Exception as e:  # torch raises OSError, EOFError, RuntimeError, UnpicklingError, KeyError ... here
        reason = describe_load_error(path, e)
        raise CheckpointReadError(f"cannot read checkpoint {path}: {reason}", path, reason) from e
    if not isinstance(obj, dict):
        reason = f"not a checkpoint: it holds a {type(obj).__name__}, not a dict"
        raise CheckpointReadError(f"cannot use checkpoint {path}: {reason}", path, reason)
    missing = [k for k in require if k not in obj]
    if missing:
        reason = (
            f"not a solo.train checkpoint (no {', '.join(map(repr, missing))} entry; a converted or bare state dict)"
        )
        raise CheckpointReadError(f"cannot use checkpoint {path}: {reason}", path, reason)
    return obj


def _read_pointer(work_dir: str) -> str | None:
    """The file name in ``<work_dir>/latest`` (None if there is no pointer). Read as bytes: a damaged pointer may
    hold anything, and must not raise UnicodeDecodeError."""
    pointer = os.path.join(work_dir, LATEST_NAME)
    if not os.path.isfile(pointer):
        return None
    with open(pointer, "rb") as f:
        return f.read(4096).decode("utf-8", errors="replace").strip()


def find_latest(work_dir: str) -> str | None:
    """The checkpoint named by ``<work_dir>/latest``, else the newest ``*.pth`` in ``work_dir``; None if none."""
    name = _read_pointer(work_dir)
    if name:
        cand = os.path.join(work_dir, name)
        if os.path.isfile(cand):
            return cand
    if not os.path.isdir(work_dir):
        return None
    pths = _checkpoint_files(work_dir)
    return pths[0] if pths else None


def _checkpoint_files(work_dir: str) -> list[str]:
    """The ``*.pth`` files of ``work_dir`` (not temporary ``.*`` ones), newest first: modification time, and for files
    written within one timestamp tick, name (descending), so that every caller and every rank orders them alike."""
    pths = [os.path.join(work_dir, n) for n in os.listdir(work_dir) if n.endswith(".pth") and not n.startswith(".")]
    pths = [p for p in pths if os.path.isfile(p)]
    pths.sort(key=lambda p: (os.path.getmtime(p), os.path.basename(p)), reverse=True)
    return pths


def pointer_problem(work_dir: str) -> str | None:
    """Why ``<work_dir>/latest`` cannot be followed (it names no existing file), or None when it can or is absent."""
    name = _read_pointer(work_dir)
    if name is None:
        return None
    if not name:
        return f"{os.path.join(work_dir, LATEST_NAME)} is empty"
    if not os.path.isfile(os.path.join(work_dir, name)):
        return f"{os.path.join(work_dir, LATEST_NAME)} names {name!r}, which does not exist (a damaged pointer?)"
    return None


def resume_candidates(work_dir: str) -> list[str]:
    """Every checkpoint of ``work_dir``, the one to try first first: the file named by ``latest``, then the other
    ``*.pth`` files newest first (modification time, ties by name, descending). Temporary files (``.*``) are not
    candidates. Empty when there is none."""
    if not os.path.isdir(work_dir):
        return []
    pths = _checkpoint_files(work_dir)
    first = find_latest(work_dir)
    if first in pths:
        pths.remove(first)
        pths.insert(0, first)
    return pths


def _distributed() -> bool:
    return (
        torch.distributed.is_available()
        and torch.distributed.is_initialized()
        and torch.distributed.get_world_size() > 1
    )


def load_first_loadable(candidates: list[str], require: tuple[str, ...] = ()) -> tuple[str, dict, list]:
    """Load the first of ``candidates`` that loads (see :func:`load_checkpoint`); returns ``(path, checkpoint,
    skipped)`` with ``skipped`` the ``(path, reason)`` of every candidate passed over. Raises
    :class:`CheckpointReadError` (listing every file and reason) when none loads, or when ``candidates`` is empty.

    Under torch.distributed every rank must call it. Rank 0's candidate list is used by all (directory listings and
    modification times may differ between machines), and a file is taken only if it loads on *every* rank (the
    ranks exchange their results after each try): a file readable on one rank only (truncated while another was
    reading it, or on a machine-local disk) is skipped by all, so the ranks never resume from different states."""
    dist = _distributed()
    if dist:
        box = [list(candidates)]
        torch.distributed.broadcast_object_list(box, src=0)
        candidates = box[0]
    skipped: list[tuple[str, str]] = []
    for cand in candidates:
        ckpt, err = None, None
        try:
            ckpt = load_checkpoint(cand, require=require)
        except CheckpointReadError as e:
            err = e.reason
        except FileNotFoundError:
            err = "does not exist"
        if dist:
            errs = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(errs, err)
            bad = [(r, e) for r, e in enumerate(errs) if e is not None]
            if bad and len({e for _, e in bad}) == 1 and len(bad) == len(errs):
                err = bad[0][1]  # the same on every rank: say it once
            elif bad:
                err = "; ".join(f"on rank {r}: {e}" for r, e in bad)
        if err is None:
            return cand, ckpt, skipped
        skipped.append((cand, err))
    if not skipped:
        raise CheckpointReadError("no checkpoint to load", "", "no candidates")
    where = os.path.dirname(skipped[0][0]) or "."
    listing = "; ".join(f"{p}: {r}" for p, r in skipped)
    if len(skipped) == 1:
        raise CheckpointReadError(f"cannot read checkpoint {listing}", skipped[0][0], skipped[0][1], skipped)
    raise CheckpointReadError(
        f"none of the {len(skipped)} checkpoints in {where} can be loaded: {listing}", where, "none loads", skipped
    )
