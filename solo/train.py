"""Train (and evaluate) a SOLO-family model: ``python -m solo.train [options]``.

With no arguments it trains the default synthetic preset on the built-in synthetic shapes dataset (generated once
into a cache folder) and evaluates it on the held-out synthetic images. On COCO::

    torchrun --nproc_per_node=8 -m solo.train --config solov2_r50_3x --data-root data/coco --work-dir work/solov2

(``data/coco/annotations/instances_{train,val}2017.json``, ``data/coco/train2017/``, ``data/coco/val2017/``).
Under torchrun (RANK / WORLD_SIZE set) it initialises torch.distributed (NCCL on GPUs, gloo on CPUs) and trains with
DistributedDataParallel; only rank 0 writes logs, checkpoints and metrics.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import sys

import torch

DEFAULT_PRESET = "solov2_synthetic_r18"

__all__ = ["DEFAULT_PRESET", "build_parser", "config_from_dict", "main"]


def build_parser(prog: str = "python -m solo.train", eval_only: bool = False) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--config",
        default=None,
        help=f"preset name (solo.configs.PRESETS); default {DEFAULT_PRESET}, or the checkpoint's config",
    )
    p.add_argument(
        "--data-root",
        default=None,
        help="COCO folder (annotations/instances_{train,val}2017.json, train2017/, val2017/); "
        "none: the built-in synthetic dataset",
    )
    p.add_argument("--work-dir", default=None, help="logs, checkpoints and metrics.json (default work_dirs/<config>)")
    p.add_argument(
        "--checkpoint",
        default=None,
        help="weights to start from (training) or to evaluate (--eval-only); a folder means its latest",
    )
    p.add_argument("--backend", default=None, help="solo.ops backend (reference, cpu, cuda, triton; default auto)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--batch-size", type=int, default=None, help="images per process (default: the preset's)")
    p.add_argument(
        "--memory-format",
        choices=("auto", "channels_last", "contiguous"),
        default="auto",
        help="layout of the model's weights and activations; auto: channels_last on the CPU (oneDNN's faster "
        "convolutions) and with mixed precision on CUDA, contiguous otherwise",
    )
    p.add_argument("--workers", type=int, default=2, help="data loader worker processes per process")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--strict-data", action="store_true", help="a corrupt image or invalid annotation is fatal")
    p.add_argument(
        "--cfg-options",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides, e.g. train.lr=0.02 model.score_thr=0.05",
    )
    p.add_argument("--dist-backend", default=None, help="torch.distributed backend (default nccl on GPU, gloo on CPU)")
    p.add_argument("--max-eval-images", type=int, default=None, help="evaluate on at most this many images")
    p.add_argument("--synthetic-num-train", type=int, default=None, help="size of the generated synthetic train set")
    p.add_argument("--synthetic-num-val", type=int, default=None, help="size of the generated synthetic val set")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    if eval_only:
        p.set_defaults(eval_only=True)
        return p
    p.add_argument("--eval-only", action="store_true", help="only evaluate --checkpoint (or the work dir's latest)")
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="PATH",
        help="resume from PATH, or from the latest checkpoint of the work dir when no path is given",
    )
    p.add_argument(
        "--amp",
        choices=("off", "fp16", "bf16", "auto"),
        default=None,
        help="mixed precision (default: the preset's train.amp: off for the model-zoo presets, auto for the synthetic "
        "ones; auto = bf16 where the device computes it natively, else off)",
    )
    p.add_argument("--epochs", type=int, default=None, help="number of epochs (default: the preset's)")
    p.add_argument("--max-iters", type=int, default=None, help="stop after this many iterations (overrides --epochs)")
    p.add_argument("--eval-period", type=int, default=0, help="also evaluate every N epochs (0: only at the end)")
    p.add_argument("--no-eval", action="store_true", help="no evaluation at the end of training")
    p.add_argument("--checkpoint-period", type=int, default=0, help="also checkpoint every N iterations")
    p.add_argument("--log-period", type=int, default=20, help="write a JSON-lines record every N iterations")
    p.add_argument(
        "--skip-nonfinite",
        action="store_true",
        help="skip (and count) steps with a non-finite loss instead of stopping",
    )
    return p


def _tuplify(v):
    return tuple(_tuplify(x) for x in v) if isinstance(v, list) else v


def config_from_dict(d: dict):
    """A :class:`solo.configs.Config` from the plain dict stored in a checkpoint."""
    from solo.configs import Config, ModelConfig, TrainConfig

    def sub(cls, values):
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: _tuplify(v) for k, v in (values or {}).items() if k in names})

    return Config(
        name=d.get("name", "checkpoint"), model=sub(ModelConfig, d.get("model")), train=sub(TrainConfig, d.get("train"))
    )


def _init_distributed(args) -> tuple[int, int, torch.device]:
    """Initialise torch.distributed from torchrun's environment; returns (rank, world_size, device)."""
    want_cuda = args.device == "cuda" or (args.device is None and torch.cuda.is_available())
    if args.device not in (None, "cpu", "cuda") and not str(args.device).startswith("cuda:"):
        raise SystemExit(f"--device must be cpu or cuda, got {args.device!r}")
    if want_cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        backend = args.dist_backend or ("nccl" if want_cuda else "gloo")
        if want_cuda:
            torch.cuda.set_device(local_rank)
        if not torch.distributed.is_initialized():
            torch.distributed.init_process_group(
                backend=backend, init_method="env://", timeout=datetime.timedelta(minutes=30)
            )
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    else:
        rank, world = 0, 1
    if want_cuda:
        device = torch.device(args.device if args.device and ":" in str(args.device) else f"cuda:{local_rank}")
    else:
        device = torch.device("cpu")
    return rank, world, device


def _datasets(args, need_train: bool):
    """(train dataset or None, val dataset, is_synthetic)."""
    from solo.data import CocoInstances

    if args.data_root is None:
        from solo.data import ensure_synthetic

        kw = {}
        if args.synthetic_num_train is not None:
            kw["num_train"] = args.synthetic_num_train
        if args.synthetic_num_val is not None:
            kw["num_val"] = args.synthetic_num_val
        # rank 0 generates the dataset (once, into the cache) while the others wait, then they read it
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if distributed and torch.distributed.get_rank() != 0:
            torch.distributed.barrier()
        paths = ensure_synthetic(**kw)
        if distributed and torch.distributed.get_rank() == 0:
            torch.distributed.barrier()
        train_ann, train_img = paths["train_ann"], paths["train_images"]
        val_ann, val_img = paths["val_ann"], paths["val_images"]
        synthetic = True
    else:
        root = args.data_root
        if not os.path.isdir(root):
            raise SystemExit(f"--data-root {root!r} is not a folder")
        train_ann = os.path.join(root, "annotations", "instances_train2017.json")
        val_ann = os.path.join(root, "annotations", "instances_val2017.json")
        train_img, val_img = os.path.join(root, "train2017"), os.path.join(root, "val2017")
        for path in ([train_ann, train_img] if need_train else []) + [val_ann, val_img]:
            if not os.path.exists(path):
                raise SystemExit(
                    f"--data-root {root!r}: missing {path} (expected the COCO layout "
                    f"annotations/instances_{{train,val}}2017.json, train2017/, val2017/)"
                )
        synthetic = False
    train = CocoInstances(train_ann, train_img, train=True, strict=args.strict_data) if need_train else None
    val = CocoInstances(val_ann, val_img, train=False, strict=args.strict_data)
    return train, val, synthetic


def _resolve_config(args, ckpt_config: dict | None, num_classes: int, synthetic_preset: bool):
    from solo.configs.presets import SYNTHETIC_PRESETS, get_config

    if args.config is not None:
        try:
            cfg = get_config(args.config)
        except (ValueError, NotImplementedError) as e:
            raise SystemExit(f"--config: {e}") from None
    elif ckpt_config is not None:
        cfg = config_from_dict(ckpt_config)
    else:
        cfg = get_config(DEFAULT_PRESET)
    try:
        cfg = cfg.override(*args.cfg_options)
    except (ValueError, TypeError) as e:
        raise SystemExit(f"--cfg-options: {e}") from None
    if cfg.model.num_classes != num_classes:
        if cfg.name in SYNTHETIC_PRESETS and not any(
            o.strip().startswith("model.num_classes") for o in args.cfg_options
        ):
            cfg = cfg.override(f"model.num_classes={num_classes}")
        else:
            raise SystemExit(
                f"the model of config {cfg.name!r} has {cfg.model.num_classes} classes but the dataset has "
                f"{num_classes} categories; pass --cfg-options model.num_classes={num_classes} (the head is then "
                f"trained from scratch for those classes)"
            )
    return cfg


def _load_weights(model, ckpt: dict, strict: bool, verbose: bool) -> None:
    """Load a solo.train checkpoint ({"model": ...}), a converted one ({"state_dict": ...}) or a bare state dict.
    Not ``strict``: tensors whose shapes differ (e.g. a head for another class count) are left at their
    initialisation, and missing/unexpected keys are reported."""
    for key in ("model", "state_dict"):
        if isinstance(ckpt.get(key), dict):
            state = ckpt[key]
            break
    else:
        state = ckpt
    own = model.state_dict()
    mismatched = [k for k, v in state.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    if strict and mismatched:
        raise SystemExit(
            f"--checkpoint: {len(mismatched)} tensors do not fit the model (e.g. {mismatched[0]}: "
            f"{tuple(state[mismatched[0]].shape)} vs {tuple(own[mismatched[0]].shape)}); wrong --config?"
        )
    state = {k: v for k, v in state.items() if k not in mismatched}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if strict and (missing or unexpected):
        raise SystemExit(
            f"--checkpoint: {len(missing)} missing and {len(unexpected)} unexpected keys "
            f"(e.g. {(list(missing) + list(unexpected))[:3]}); wrong --config?"
        )
    if verbose and (missing or unexpected or mismatched):
        print(
            f"--checkpoint: {len(missing)} missing keys, {len(unexpected)} unexpected keys, {len(mismatched)} "
            f"tensors of another shape left at their initialisation "
            f"(e.g. {(list(missing) + list(unexpected) + mismatched)[:3]})",
            file=sys.stderr,
            flush=True,
        )


class _EvalHook:
    """Evaluate every ``period`` epochs (0: never) and at the end; appends {"type": "eval"} records to the log."""

    def __init__(self, val, period: int, at_end: bool, max_images, progress: bool):
        self.val, self.period, self.at_end, self.max_images, self.progress = val, period, at_end, max_images, progress
        self.metrics = None

    def _run(self):
        from solo.evaluation import evaluate

        tr = self.trainer
        self.metrics = evaluate(
            tr.model,
            self.val,
            device=tr.device,
            out_dir=tr.work_dir if tr.is_main else None,
            max_images=self.max_images,
            progress=self.progress,
        )
        if tr.is_main:
            with open(os.path.join(tr.work_dir, "log.jsonl"), "a") as f:
                f.write(json.dumps({"type": "eval", "iter": tr.iter, "epoch": tr.epoch + 1, **self.metrics}) + "\n")

    def before_train(self): ...
    def before_epoch(self): ...
    def before_step(self): ...
    def after_step(self): ...

    def after_epoch(self):
        tr = self.trainer
        done = tr.iter // tr.iters_per_epoch
        if self.period and tr.iter % tr.iters_per_epoch == 0 and done % self.period == 0 and tr.iter < tr.max_iters:
            self._run()

    def after_train(self):
        if self.at_end and self.trainer.completed:
            self._run()


def main(argv=None, eval_only: bool = False) -> dict | None:
    """Train (or, with ``eval_only``/``--eval-only``, evaluate) as the command line ``argv`` says; returns the final
    metrics (None when evaluation is off)."""
    prog = "python -m solo.eval" if eval_only else "python -m solo.train"
    args = build_parser(prog, eval_only=eval_only).parse_args(argv)
    from solo.engine.checkpoint import find_latest, load_checkpoint
    from solo.models import build_model

    for name in ("batch_size", "workers", "epochs", "max_iters"):
        v = getattr(args, name, None)
        if v is not None and v < (0 if name == "workers" else 1):
            raise SystemExit(f"--{name.replace('_', '-')} must be >= {0 if name == 'workers' else 1}, got {v}")
    rank, world, device = _init_distributed(args)
    try:
        ckpt = None
        if args.checkpoint is not None:
            path = args.checkpoint
            if os.path.isdir(path):
                path = find_latest(path) or path
            if not os.path.exists(path):
                raise SystemExit(f"--checkpoint {args.checkpoint!r} does not exist")
            ckpt = load_checkpoint(path)
        elif args.eval_only and args.work_dir is not None and find_latest(args.work_dir):
            ckpt = load_checkpoint(find_latest(args.work_dir))
        if args.eval_only and ckpt is None:
            raise SystemExit("--eval-only needs --checkpoint (or a --work-dir with a checkpoint)")
        ckpt_cfg = ckpt.get("config") if isinstance(ckpt, dict) and isinstance(ckpt.get("config"), dict) else None

        train_set, val_set, synthetic = _datasets(args, need_train=not args.eval_only)
        cfg = _resolve_config(args, ckpt_cfg, val_set.num_classes, synthetic)
        work_dir = args.work_dir or os.path.join("work_dirs", cfg.name)
        if rank == 0:
            os.makedirs(work_dir, exist_ok=True)
            print(
                f"config {cfg.name}: {cfg.model.head} R{cfg.model.depth}, {cfg.model.num_classes} classes; "
                f"data: {'synthetic' if synthetic else args.data_root} ({len(val_set)} val images"
                f"{'' if train_set is None else f', {len(train_set)} train images'}); {world} process(es) on "
                f"{device}; work dir {work_dir}",
                flush=True,
            )
            with open(os.path.join(work_dir, "config.json"), "w") as f:
                json.dump(dataclasses.asdict(cfg), f, indent=1)

        torch.manual_seed(args.seed)
        model = build_model(cfg, backend=args.backend)
        if ckpt is not None:
            _load_weights(model, ckpt, strict=args.eval_only, verbose=rank == 0)
        model.to(device)
        from solo.engine.trainer import resolve_amp

        amp = resolve_amp(getattr(args, "amp", None) or cfg.train.amp, device)
        fmt = args.memory_format
        if fmt == "auto":
            fmt = "channels_last" if device.type == "cpu" or amp != "off" else "contiguous"
        if fmt == "channels_last":
            model.to(memory_format=torch.channels_last)
        if rank == 0 and not args.eval_only:
            print(f"precision: {'fp32' if amp == 'off' else amp + ' autocast'}, memory format {fmt}", flush=True)

        if args.eval_only:
            from solo.evaluation import evaluate

            return evaluate(
                model,
                val_set,
                device=device,
                out_dir=work_dir if rank == 0 else None,
                max_images=args.max_eval_images,
                progress=not args.no_progress,
            )

        from solo.data import collate
        from solo.engine.trainer import Trainer, format_counts

        index_skips = dict(train_set.skipped)  # counted once when the dataset was built (same on every rank)
        if rank == 0 and index_skips:
            print(f"training set: skipped when indexing the annotations: {format_counts(index_skips)}", flush=True)

        eval_hook = _EvalHook(val_set, args.eval_period, not args.no_eval, args.max_eval_images, not args.no_progress)
        trainer = Trainer(
            cfg,
            model,
            train_set,
            work_dir,
            seed=args.seed,
            batch_size=args.batch_size,
            epochs=args.epochs,
            max_iters=args.max_iters,
            workers=args.workers,
            amp=amp,
            device=device,
            nonfinite="skip" if args.skip_nonfinite else "stop",
            log_period=args.log_period,
            checkpoint_period=args.checkpoint_period,
            collate_fn=collate,
            class_names=train_set.class_names,
            progress=not args.no_progress,
            hooks=[eval_hook],
        )
        try:
            trainer.train(resume=args.resume)
        except FloatingPointError as e:
            raise SystemExit(f"error: {e}") from None
        if rank == 0:
            print(
                f"data skipped: when indexing the annotations: {format_counts(index_skips)}; when loading "
                f"(all epochs and processes): {format_counts(trainer.data_skip_reasons)}",
                flush=True,
            )
            if trainer.skipped_steps:
                print(f"steps skipped for a non-finite loss: {trainer.skipped_steps}", flush=True)
        return eval_hook.metrics
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    from torch.distributed.elastic.multiprocessing.errors import record

    # Under torchrun, a rank that dies of an uncaught exception then leaves its traceback in torchrun's error file, so
    # torchrun's failure summary (the end of its output) names that rank and shows why, instead of
    # "error_file: <N/A>"; record also turns on faulthandler, which prints the Python stacks of a rank killed by a
    # fatal signal. Without torchrun it only re-raises.
    record(main)()
