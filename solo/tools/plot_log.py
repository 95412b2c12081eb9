"""Plot the learning curves of a training run: ``python -m solo.tools.plot_log WORK_DIR [--out PNG]``.

Reads ``WORK_DIR/log.jsonl`` (written by ``solo.train``) and draws the training losses and learning rate against the
iteration, and the evaluation APs (``segm_AP``, ``segm_AP50``, ``bbox_AP``) when the log has any, into
``WORK_DIR/curves.png`` (or ``--out``). Needs matplotlib.
"""

from __future__ import annotations

import argparse
import json
import os

__all__ = ["main", "plot_log", "read_log"]


def read_log(path: str) -> tuple[list[dict], list[dict]]:
    """(train records, eval records) of a JSON-lines log; unreadable lines (a run killed mid-write) are skipped."""
    train, evals = [], []
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            kind = rec.get("type", "train")
            if kind == "eval":
                evals.append(rec)
            elif kind == "train":  # other records (e.g. "data_skipped") are not curves
                train.append(rec)
    # by iteration: a resumed run (or a merged log) may hold them out of order
    return sorted(train, key=lambda r: r.get("iter", 0)), sorted(evals, key=lambda r: r.get("iter", 0))


def plot_log(work_dir: str, out: str | None = None) -> str:
    """Draw the curves of ``work_dir``'s log into ``out`` (default ``<work_dir>/curves.png``); returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log = os.path.join(work_dir, "log.jsonl") if os.path.isdir(work_dir) else work_dir
    if not os.path.isfile(log):
        raise SystemExit(f"no training log at {log!r} (expected WORK_DIR/log.jsonl written by solo.train)")
    train, evals = read_log(log)
    if not train and not evals:
        raise SystemExit(f"{log!r} has no records")
    out = out or os.path.join(os.path.dirname(log), "curves.png")
    ncols = 3 if evals else 2
    fig, axes = plt.subplots(1, ncols, figsize=(5 * ncols, 4))
    its = [r["iter"] for r in train]
    for key in sorted({k for r in train for k in r if k.startswith("loss")}):
        axes[0].plot(its, [r.get(key, float("nan")) for r in train], label=key)
    axes[0].set(xlabel="iteration", ylabel="loss", title="training losses")
    axes[0].legend()
    axes[1].plot(its, [r.get("lr", float("nan")) for r in train])
    axes[1].set(xlabel="iteration", ylabel="learning rate", title="learning rate")
    if evals:
        eits = [r["iter"] for r in evals]
        for key in ("segm_AP", "segm_AP50", "bbox_AP"):
            axes[2].plot(eits, [r.get(key, float("nan")) for r in evals], marker="o", label=key)
        axes[2].set(xlabel="iteration", ylabel="AP", title="evaluation")
        axes[2].legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main(argv=None) -> str:
    p = argparse.ArgumentParser(prog="python -m solo.tools.plot_log", description=__doc__.split("\n\n")[0])
    p.add_argument("work_dir", help="a solo.train work dir (or its log.jsonl)")
    p.add_argument("--out", default=None, help="output PNG (default WORK_DIR/curves.png)")
    args = p.parse_args(argv)
    out = plot_log(args.work_dir, args.out)
    print(out)
    return out


if __name__ == "__main__":
    main()
