"""Unreadable checkpoints (issue 12): truncated, empty, not a checkpoint, refused by ``weights_only``.

Every loader names the file and the reason: :func:`solo.engine.checkpoint.load_checkpoint`, ``--resume`` (falls back
to the newest checkpoint that loads, or stops when none does; an explicit path never falls back), ``--checkpoint`` of
``python -m solo.train`` / ``python -m solo.eval``, and the converter. Under torch.distributed the ranks agree on
the fallback file even when only one rank fails to read a file. The corrupted files are real checkpoints written by
the trainer (or :func:`save_checkpoint`), cut at a random point / overwritten with random text or bytes.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import sys
import tempfile

import pytest
import torch

from solo.engine.checkpoint import (
    CheckpointReadError,
    find_latest,
    load_checkpoint,
    load_first_loadable,
    pointer_problem,
    resume_candidates,
    save_checkpoint,
)

sys.path.insert(0, os.path.dirname(__file__))
from _engine_helpers import TINY_CLI_ARGS, TinyShapes, tiny_config


class Opaque:
    """A class the safe unpickler does not know: a checkpoint holding one is refused by weights_only=True."""

    def __init__(self, v):
        self.v = v


# ---------------------------------------------------------------------------------------------------- corruptions
# Each returns the phrase the error message must contain. ``rng`` gives every run other cut points / contents.


def _truncate(path: str, rng: random.Random) -> str:
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(rng.randint(size // 10, size * 9 // 10))
    return "truncated"


def _zero(path: str, rng: random.Random) -> str:
    open(path, "wb").close()
    return "empty (0 bytes)"


def _text(path: str, rng: random.Random) -> str:
    words = ["".join(rng.choice("abcdefghij") for _ in range(rng.randint(1, 8))) for _ in range(rng.randint(5, 50))]
    with open(path, "w") as f:
        f.write(" ".join(words) + "\n")
    return "not a checkpoint: a text file"


def _random_bytes(path: str, rng: random.Random) -> str:
    data = bytearray(rng.randbytes(rng.randint(100, 5000)))
    data[0] = rng.choice([b for b in range(256) if b not in (0x80, ord("P")) and not 32 <= b < 127])
    with open(path, "wb") as f:
        f.write(bytes(data))
    return "not a checkpoint: neither a torch.save zip archive nor a pickle"


def _refused(path: str, rng: random.Random) -> str:
    torch.save({"model": {"w": torch.randn(3)}, "iter": 1, "meta": Opaque(rng.random())}, path)
    return "refuses to unpickle"


CORRUPTIONS = {"truncated": _truncate, "zero": _zero, "text": _text, "random": _random_bytes, "refused": _refused}


def _small_checkpoint(path: str, iteration: int) -> str:
    m = torch.nn.Linear(8, 4)  # fresh random weights each call
    return save_checkpoint(path, m, epoch=0, iteration=iteration)


# ---------------------------------------------------------------------------------------------------- load_checkpoint


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_load_checkpoint_names_file_and_reason(tmp_path, kind):
    rng = random.Random()
    path = _small_checkpoint(str(tmp_path / "ckpt.pth"), rng.randint(1, 100))
    assert load_checkpoint(path)["model"]  # loads before the damage
    phrase = CORRUPTIONS[kind](path, rng)
    with pytest.raises(CheckpointReadError) as info:
        load_checkpoint(path)
    assert path in str(info.value) and phrase in str(info.value), str(info.value)
    assert info.value.path == path and phrase in info.value.reason


def test_load_checkpoint_not_a_dict_and_missing_keys(tmp_path):
    t = torch.randn(4)
    torch.save(t, tmp_path / "tensor.pth")
    with pytest.raises(CheckpointReadError, match="holds a Tensor"):
        load_checkpoint(str(tmp_path / "tensor.pth"))
    torch.save({"state_dict": {"w": t}}, tmp_path / "converted.pth")
    assert torch.equal(load_checkpoint(str(tmp_path / "converted.pth"))["state_dict"]["w"], t)
    with pytest.raises(CheckpointReadError, match="not a solo.train checkpoint .*'model'"):
        load_checkpoint(str(tmp_path / "converted.pth"), require=("model", "iter"))


def test_candidates_fallback_and_all_bad(tmp_path):
    rng = random.Random()
    iters = sorted(rng.sample(range(1, 1000), 4))
    paths = [_small_checkpoint(str(tmp_path / f"iter_{i:07d}.pth"), i) for i in iters]
    # the latest pointer names the newest; the others follow newest first
    assert resume_candidates(str(tmp_path)) == paths[::-1]
    kinds = rng.sample(sorted(CORRUPTIONS), 2)
    phrases = [CORRUPTIONS[k](p, rng) for k, p in zip(kinds, paths[:1:-1])]  # damage the two newest
    path, ckpt, skipped = load_first_loadable(resume_candidates(str(tmp_path)), require=("model", "iter"))
    assert path == paths[1] and ckpt["iter"] == iters[1]
    assert [p for p, _ in skipped] == [paths[3], paths[2]]
    assert all(ph in r for ph, (_, r) in zip(phrases, skipped))
    # a pointer cut in half names no file: said, and the newest file is tried first
    name = os.path.basename(paths[3])
    with open(tmp_path / "latest", "w") as f:
        f.write(name[: len(name) // 2])
    assert f"names {name[: len(name) // 2]!r}, which does not exist" in pointer_problem(str(tmp_path))
    # newest first; files written within one timestamp tick tie and go by name, newest name first
    newest_first = sorted(paths, key=lambda p: (os.path.getmtime(p), os.path.basename(p)), reverse=True)
    assert resume_candidates(str(tmp_path)) == newest_first
    # a damaged pointer (binary junk) is ignored, not a UnicodeDecodeError
    with open(tmp_path / "latest", "wb") as f:
        f.write(rng.randbytes(32))
    assert find_latest(str(tmp_path)) in paths and len(resume_candidates(str(tmp_path))) == 4
    # all bad: one error naming every file and its reason
    for p in paths[:2]:
        _zero(p, rng)
    with pytest.raises(CheckpointReadError, match="none of the 4 checkpoints") as info:
        load_first_loadable(resume_candidates(str(tmp_path)))
    assert all(p in str(info.value) for p in paths) and len(info.value.skipped) == 4
    assert resume_candidates(str(tmp_path / "nothing")) == []


# ---------------------------------------------------------------------------------------------------- trainer resume


def test_trainer_resume_falls_back_and_continues_bit_exact(tmp_path, capsys):
    """A run's three newest checkpoints are damaged (truncated, text, empty): ``resume=True`` names each, falls
    back to epoch_0001.pth (iteration 3) and ends with the weights of the uninterrupted run."""
    from solo.engine.trainer import Trainer
    from solo.models import build_model

    cfg = tiny_config()
    rng = random.Random()

    def trainer(wd):
        torch.manual_seed(0)
        model = build_model(cfg)
        return Trainer(cfg, model, TinyShapes(6), str(wd), max_iters=5, checkpoint_period=1, progress=False)

    a = trainer(tmp_path / "a")
    a.train()
    final = {k: v.clone() for k, v in a.module.state_dict().items()}
    wd = tmp_path / "a"
    # iters_per_epoch = 3: iter_1, iter_2, epoch_1 (3), iter_4, iter_5, final (5); latest -> final
    assert resume_candidates(str(wd))[:4] == [
        str(wd / n) for n in ("final.pth", "iter_0000005.pth", "iter_0000004.pth", "epoch_0001.pth")
    ]
    damage = [(wd / "final.pth", _truncate), (wd / "iter_0000005.pth", _text), (wd / "iter_0000004.pth", _zero)]
    phrases = [fn(str(p), rng) for p, fn in damage]
    capsys.readouterr()
    b = trainer(wd)
    assert b.resume() and b.iter == 3 and b.epoch == 1
    err = capsys.readouterr().err
    for (p, _), phrase in zip(damage, phrases):
        assert f"--resume: skipping {p}: " in err and phrase in err, err
    assert f"falling back to {wd / 'epoch_0001.pth'} (iteration 3)" in err
    b.train()
    assert b.iter == 5
    got = b.module.state_dict()
    assert all(torch.equal(got[k], final[k]) for k in final)
    assert load_checkpoint(str(wd / "final.pth"))["iter"] == 5  # rewritten, loads again

    # an explicit path never falls back
    _truncate(str(wd / "final.pth"), rng)
    with pytest.raises(CheckpointReadError, match=r"final\.pth: truncated"):
        trainer(wd).resume(str(wd / "final.pth"))


# ---------------------------------------------------------------------------------------------------- command line


def test_cli_resume_checkpoint_and_eval(tmp_path, monkeypatch, capsys):
    from solo.eval import main_eval
    from solo.train import main

    monkeypatch.setenv("SOLO_CACHE", str(tmp_path / "cache"))
    rng = random.Random()
    wd = tmp_path / "wd"
    main(["--max-iters", "3", "--checkpoint-period", "1", "--no-eval", "--work-dir", str(wd)] + TINY_CLI_ARGS)
    # 2 iterations per epoch: iter_0000001, epoch_0001 (2), iter_0000003, final (3)
    assert load_checkpoint(str(wd / "final.pth"))["iter"] == 3
    spare = str(tmp_path / "epoch_0001.pth")
    shutil.copy(wd / "epoch_0001.pth", spare)

    # --resume (no path): final.pth truncated, iter_0000003.pth random bytes -> falls back to epoch_0001 (iter 2)
    p1 = CORRUPTIONS["truncated"](str(wd / "final.pth"), rng)
    p2 = CORRUPTIONS["random"](str(wd / "iter_0000003.pth"), rng)
    (wd / "latest").write_text("fina")  # the pointer cut in half as well
    capsys.readouterr()
    main(["--max-iters", "4", "--no-eval", "--resume", "--work-dir", str(wd)] + TINY_CLI_ARGS)
    out, err = capsys.readouterr()
    assert f"--resume: {wd / 'latest'} names 'fina', which does not exist" in err
    assert f"--resume: skipping {wd / 'final.pth'}: {p1}" in err
    assert f"--resume: skipping {wd / 'iter_0000003.pth'}: {p2}" in err
    assert f"resumed from {wd / 'epoch_0001.pth'} at iteration 2" in out
    assert load_checkpoint(str(wd / "final.pth"))["iter"] == 4

    # --resume, every checkpoint bad: SystemExit naming each file
    names = sorted(n for n in os.listdir(wd) if n.endswith(".pth"))
    assert "epoch_0002.pth" in names and len(names) == 5
    for name in names:
        CORRUPTIONS[rng.choice(["zero", "text", "truncated", "refused"])](str(wd / name), rng)
    with pytest.raises(SystemExit, match="--resume: none of the 5 checkpoints") as info:
        main(["--max-iters", "4", "--no-eval", "--resume", "--work-dir", str(wd)] + TINY_CLI_ARGS)
    assert all(str(wd / n) in str(info.value) for n in names)

    # --resume PATH, a bad file: an error naming it, no fallback
    bad = str(tmp_path / "bad.pth")
    shutil.copy(spare, bad)
    phrase = _zero(bad, rng)
    with pytest.raises(SystemExit, match=re.escape(f"--resume: cannot read checkpoint {bad}: the file is {phrase}")):
        main(["--max-iters", "4", "--no-eval", "--resume", bad, "--work-dir", str(tmp_path / "wd2")] + TINY_CLI_ARGS)

    # --checkpoint of training and of evaluation
    for kind, entry in (("truncated", main), ("zero", main), ("text", main_eval), ("random", main_eval)):
        shutil.copy(spare, bad)
        phrase = CORRUPTIONS[kind](bad, rng)
        args = ["--checkpoint", bad, "--work-dir", str(tmp_path / "wd3")] + TINY_CLI_ARGS
        with pytest.raises(SystemExit) as info:
            entry((["--max-iters", "1", "--no-eval"] if entry is main else []) + args)
        msg = str(info.value)
        assert msg.startswith(f"--checkpoint: cannot read checkpoint {bad}: ") and phrase in msg, msg
    # the intact copy still evaluates
    assert "segm_AP" in main_eval(["--checkpoint", spare, "--work-dir", str(tmp_path / "wd3")] + TINY_CLI_ARGS)


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_converter_names_file_and_reason(tmp_path, kind):
    from official_layout import official_layout, random_state_dict

    from solo.tools.convert_checkpoint import main

    rng = random.Random()
    src = str(tmp_path / "official.pth")
    layout = dict(list(official_layout("solo", depth=18).items())[:30])  # the file is never read: keep it small
    torch.save({"meta": {"epoch": 12}, "state_dict": random_state_dict(layout, rng.randint(0, 99))}, src)
    phrase = CORRUPTIONS[kind](src, rng)
    with pytest.raises(SystemExit) as info:
        main([src, str(tmp_path / "out.pth"), "--from", "wxinlong", "--config", "solo_r50_3x"])
    msg = str(info.value)
    assert msg.startswith(f"error: cannot read input checkpoint {src}: ") and phrase in msg, msg
    if kind == "refused":
        assert "--trust" in msg
    assert not (tmp_path / "out.pth").exists()


# ---------------------------------------------------------------------------------------------------- distributed


def _dist_worker(rank: int, world: int, init_file: str, paths: list[str], result_dir: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        if rank == 1:  # this rank alone cannot read the newest file (e.g. cut off while it was reading)
            real_load = torch.load

            def flaky_load(f, *a, **k):
                if os.path.abspath(str(f)) == os.path.abspath(paths[0]):
                    raise OSError(22, "Invalid argument")
                return real_load(f, *a, **k)

            torch.load = flaky_load
        # rank 1 passes no candidates: rank 0's list is the one used
        path, ckpt, skipped = load_first_loadable(paths if rank == 0 else [], require=("model", "iter"))
        with open(os.path.join(result_dir, f"rank{rank}.txt"), "w") as f:
            f.write(f"{path}\n{ckpt['iter']}\n{skipped[0][1] if skipped else ''}\n")
    finally:
        torch.distributed.destroy_process_group()


def test_distributed_ranks_agree_on_fallback(tmp_path):
    """2 gloo processes: the newest file loads on rank 0 but not on rank 1; both take the next one."""
    import torch.multiprocessing as mp

    rng = random.Random()
    iters = sorted(rng.sample(range(1, 1000), 2))
    paths = [_small_checkpoint(str(tmp_path / f"c{i}.pth"), i) for i in iters][::-1]
    init_file = os.path.join(tempfile.mkdtemp(dir=tmp_path), "init")
    mp.spawn(_dist_worker, args=(2, init_file, paths, str(tmp_path)), nprocs=2, join=True)
    results = [(tmp_path / f"rank{r}.txt").read_text().splitlines() for r in range(2)]
    assert results[0] == results[1], results
    assert results[0][0] == paths[1] and int(results[0][1]) == iters[0]
    assert "on rank 1" in results[0][2] and "rank 0" not in results[0][2]
