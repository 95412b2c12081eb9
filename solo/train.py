"""Train (and evaluate) a SOLO-family model: ``python -m solo.train [options]``.

With no arguments it trains the default synthetic preset on the built-in synthetic shapes dataset (generated once
into a cache folder) and evaluates it on the held-out synthetic images. On COCO::

    torchrun --nproc_per_node=8 -m solo.train --config solov2_r50_3x --data-root data/coco --work-dir work/solov2

(``data/coco/annotations/instances_{train,val}2017.json``, ``data/coco/train2017/``, ``data/coco/val2017/``).
Under torchrun (RANK / WORLD_SIZE set) it initialises torch.distributed (NCCL on GPUs, gloo on CPUs) and trains with
DistributedDataParallel; only rank 0 writes logs, checkpoints and metrics. The model-zoo presets start from the
torchvision ImageNet file of their depth, downloaded once into torch.hub's cache (``--backbone-weights`` overrides it,
``none`` trains the backbone from scratch; see :mod:`solo.models.pretrained`). A dataset's class count and names come
from its annotation file.
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
    p.add_argument(
        "--backbone-weights",
        default=None,
        metavar="PATH|URL|none",
        help="ImageNet weights of the backbone: torchvision://resnetXX, an http(s):// or file:// URL (downloaded once "
        "into torch.hub's cache, $TORCH_HOME/hub/checkpoints), a local file, or none (from scratch: nothing frozen, "
        "BatchNorm learns). Default: the preset's (model-zoo presets: the torchvision file of their depth; synthetic "
        "presets: none). Not needed (not loaded) when --checkpoint or --resume gives all the weights",
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


def _resolve_config(args, ckpt_config: dict | None, num_classes: int, class_names=None):
    """The run's config: --config (or the checkpoint's, or the default preset) with --cfg-options, the dataset's class
    count (from its annotation file) and --backbone-weights applied; notes what it changed on stdout (rank 0)."""
    from solo.configs.presets import get_config

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
        names = _names(class_names)
        if any(o.strip().startswith("model.num_classes") for o in args.cfg_options):
            raise SystemExit(
                f"--cfg-options model.num_classes={cfg.model.num_classes}, but the dataset's annotation file has "
                f"{num_classes} categories{names}; leave model.num_classes out (it is taken from the dataset)"
            )
        # The class count (and names) of a dataset come from its annotation file: a preset made for COCO's 80
        # classes, trained on a dataset of J categories, gets a J-class head (trained from its initialisation).
        if _is_main():
            print(
                f"config {cfg.name}: model.num_classes = {num_classes} from the dataset's annotation file{names} "
                f"(the config has {cfg.model.num_classes})",
                flush=True,
            )
        cfg = cfg.override(f"model.num_classes={num_classes}")
    return _backbone_config(args, cfg, from_checkpoint=args.config is None and ckpt_config is not None)


def _is_main() -> bool:
    return not (torch.distributed.is_available() and torch.distributed.is_initialized()) or (
        torch.distributed.get_rank() == 0
    )


def _names(class_names, limit: int = 10) -> str:
    """`` (a, b, c)`` for a log line (the first ``limit`` names); empty when unknown."""
    if not class_names:
        return ""
    names = list(class_names)
    return " (" + ", ".join(map(str, names[:limit])) + (", ..." if len(names) > limit else "") + ")"


def _backbone_config(args, cfg, from_checkpoint: bool):
    """Apply --backbone-weights to ``cfg``. A backbone without pretrained weights trains everything: nothing frozen
    (frozen_stages=-1) and BatchNorm learning its statistics (norm_eval=False) -- the preset's frozen stem and frozen
    statistics only make sense for ImageNet weights -- unless --cfg-options sets them. A config read from a
    checkpoint keeps its stored settings (they were decided when that run started)."""
    from solo.models.pretrained import parse_weights_spec

    flag = getattr(args, "backbone_weights", None)
    spec = cfg.model.backbone_weights if flag is None else flag
    try:
        spec = None if parse_weights_spec(spec) is None else spec
    except ValueError as e:
        raise SystemExit(f"--backbone-weights: {e}") from None
    model = dataclasses.replace(cfg.model, backbone_weights=spec)
    if spec is None and not from_checkpoint:
        given = {o.strip().partition("=")[0].strip() for o in args.cfg_options}
        if "model.frozen_stages" not in given:
            model = dataclasses.replace(model, frozen_stages=-1)
        if "model.norm_eval" not in given:
            model = dataclasses.replace(model, norm_eval=False)
    return dataclasses.replace(cfg, model=model)


def _backbone_state(cfg) -> str:
    """``frozen: stem + layer1 (frozen_stages=1), BatchNorm statistics frozen (norm_eval=True)`` for a log line."""
    fs, ne = cfg.model.frozen_stages, cfg.model.norm_eval
    frozen = "nothing" if fs < 0 else "stem" if fs == 0 else "stem + layer1" if fs == 1 else f"stem + layer1-{fs}"
    bn = "BatchNorm statistics frozen" if ne else "BatchNorm learns its statistics"
    return f"frozen: {frozen} (frozen_stages={fs}), {bn} (norm_eval={ne})"


def _checkpoint_classes(ckpt: dict) -> tuple[int | None, list | None]:
    """(class count, class names) a checkpoint was trained for, from its config / class names; (None, None) when it
    does not say (a converted original checkpoint)."""
    names = ckpt.get("class_names") if isinstance(ckpt.get("class_names"), list) else None
    cfg = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    count = (cfg.get("model") or {}).get("num_classes")
    if count is None and names:
        count = len(names)
    return count, names


def _check_checkpoint_classes(args, ckpt: dict, path: str, val_set) -> None:
    """A checkpoint trained for K classes on a dataset of J != K categories: an error for --eval-only (its
    predictions mean other classes), a note for training (the classification head is re-initialised)."""
    count, names = _checkpoint_classes(ckpt)
    if count is None or count == val_set.num_classes:
        return
    what = (
        f"--checkpoint {path} was trained for {count} classes{_names(names)}, but the dataset's annotation file "
        f"{getattr(val_set, 'ann_file', '')} has {val_set.num_classes} categories{_names(val_set.class_names)}"
    )
    if args.eval_only:
        raise SystemExit(
            f"{what}: a {count}-class model cannot be evaluated on it. Evaluate on the dataset it was trained for, or "
            f"fine-tune it on this one first (python -m solo.train --checkpoint {path} ...)"
        )
    if _is_main():
        print(
            f"{what}: the classification head is re-initialised for {val_set.num_classes} classes and trained; every "
            f"other weight is loaded from the checkpoint",
            flush=True,
        )


def _resume_source(args, work_dir: str) -> str | None:
    """The checkpoint --resume will restore (None without --resume or when the work dir has none yet)."""
    from solo.engine.checkpoint import find_latest

    resume = getattr(args, "resume", None)
    if not resume:
        return None
    if resume is True:
        return find_latest(work_dir) if os.path.isdir(work_dir) else None
    return resume if os.path.exists(resume) else None


def _setup_backbone(model, cfg, args, restored_from: str | None, rank: int, world: int) -> None:
    """Load the backbone's ImageNet weights (``cfg.model.backbone_weights``) before training starts, and log what the
    backbone starts from. Skipped when ``restored_from`` (a --checkpoint or --resume file) gives every weight: no
    download then. Under torchrun the first process of each machine (LOCAL_RANK 0) downloads while the others wait,
    then every process loads the file. Any problem is a SystemExit naming the URL, the cache folder and the flag."""
    from solo.models.pretrained import PretrainedWeightsError, cache_dir, load_backbone_weights, resolve_weights

    spec = cfg.model.backbone_weights
    state = _backbone_state(cfg)
    if restored_from is not None:
        if rank == 0:
            skipped = f" ({spec} not needed, not loaded)" if spec else ""
            print(f"backbone: weights from {restored_from}{skipped}; {state}", flush=True)
        return
    if spec is None:
        if rank == 0:
            print(f"backbone: from scratch (no pretrained weights); {state}", flush=True)
        return
    distributed = world > 1 and torch.distributed.is_initialized()

    def agree(error: str | None) -> str | None:
        """Every process's error (or None) to all: also the barrier the waiting processes sit in."""
        if not distributed:
            return error
        errors = [None] * world
        torch.distributed.all_gather_object(errors, error)
        return error or next((e for e in errors if e), None)

    # One process per machine downloads (the cache may be a machine's own disk), the others wait in `agree`.
    first_on_machine = int(os.environ.get("LOCAL_RANK", "0")) == 0 or not distributed
    weights, error = None, None
    if first_on_machine:
        try:
            weights = resolve_weights(
                spec,
                progress=rank == 0 and not args.no_progress,
                log=(lambda m: print(m, flush=True)) if rank == 0 else None,
            )
        except (PretrainedWeightsError, ValueError) as e:
            error = str(e)
    error = agree(error)
    if error is None and distributed:  # the file is in the cache now: the others check it (no download)
        if not first_on_machine:
            try:
                weights = resolve_weights(spec, download=False)
            except (PretrainedWeightsError, ValueError) as e:
                error = str(e)
        error = agree(error)
    if error is None:
        try:
            count = load_backbone_weights(model.backbone, weights)
        except PretrainedWeightsError as e:
            error = str(e)
    if error is not None:
        raise SystemExit(
            f"error: backbone weights {spec}: {error}.\nThe backbone's ImageNet weights are needed before training "
            f"starts. Offline? Put the file into the cache folder {cache_dir()} by hand (same file name), or pass "
            f"--backbone-weights PATH (a local copy) or URL, or --backbone-weights none to train the backbone from "
            f"scratch (nothing frozen; the model-zoo results assume ImageNet weights)"
        )
    if rank == 0:
        print(f"backbone: ImageNet weights {weights.describe()}; {count} tensors loaded; {state}", flush=True)


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


def _ops_line(backend: str | None, device: torch.device) -> str:
    """One line saying which backend the fused ops run on, and why not a faster one (a missing or mismatched build
    of solo._C is otherwise only a warning at import)."""
    from solo.ops import available_backends, resolve_backend

    try:
        chosen = resolve_backend(backend, device)
    except (RuntimeError, ValueError) as e:
        raise SystemExit(f"--backend: {e}") from None
    line = f"ops: {chosen} backend on {device.type}"
    if chosen == "reference":
        skipped = [f"{name}: {why}" for name, (ok, why) in available_backends(device).items() if not ok]
        if skipped and backend in (None, "auto"):
            line += " (the fused backends cannot run: " + "; ".join(skipped[:2]) + ")"
    return line


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
    for name in ("batch_size", "workers", "epochs", "max_iters"):
        v = getattr(args, name, None)
        if v is not None and v < (0 if name == "workers" else 1):
            raise SystemExit(f"--{name.replace('_', '-')} must be >= {0 if name == 'workers' else 1}, got {v}")
    rank, world, device = _init_distributed(args)
    finished = False
    try:
        metrics = _run(args, rank, world, device)
        finished = True
        return metrics
    finally:
        _shutdown_distributed(finished)


def _shutdown_distributed(finished: bool) -> None:
    """Tear the process group down while the interpreter is fully alive.

    The DDP model, its reducer and the trainer hold the process group; left to interpreter finalization, its gloo
    threads and pending work are destroyed in an order that can abort the process ("terminate called without an
    active exception", SIGABRT) after a run that succeeded. ``_run`` has returned, so its frame no longer holds them:
    a collection frees the reference cycles that still do. After a successful run every rank meets at a barrier
    first, so that none tears down while another is still in a collective; after an error no barrier (the other
    ranks may be gone) and only this rank's resources are released."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    import gc

    gc.collect()
    if finished:
        torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    gc.collect()


def _run(args, rank: int, world: int, device: torch.device) -> dict | None:
    """The body of ``main`` once the process group (if any) is up: its locals (model, trainer) end with it."""
    from solo.engine.checkpoint import CheckpointReadError, find_latest, load_first_loadable
    from solo.models import build_model

    ckpt = None
    # The file named (or a folder's latest) and no other: weights to evaluate or to start from are the user's
    # choice, so an unreadable one is an error naming it and the reason, not a silent fallback. Every rank
    # loads it and they agree (load_first_loadable), so one rank failing stops them all.
    ckpt_path = None
    if args.checkpoint is not None:
        ckpt_path = args.checkpoint
        if os.path.isdir(ckpt_path):
            ckpt_path = find_latest(ckpt_path) or ckpt_path
        if not os.path.exists(ckpt_path):
            raise SystemExit(f"--checkpoint {args.checkpoint!r} does not exist")
    elif args.eval_only and args.work_dir is not None and find_latest(args.work_dir):
        ckpt_path = find_latest(args.work_dir)
    if ckpt_path is not None:
        try:
            ckpt = load_first_loadable([ckpt_path])[1]
        except CheckpointReadError as e:
            raise SystemExit(f"--checkpoint: {e}") from None
    if args.eval_only and ckpt is None:
        raise SystemExit("--eval-only needs --checkpoint (or a --work-dir with a checkpoint)")
    ckpt_cfg = ckpt.get("config") if isinstance(ckpt, dict) and isinstance(ckpt.get("config"), dict) else None

    train_set, val_set, synthetic = _datasets(args, need_train=not args.eval_only)
    if ckpt is not None:
        _check_checkpoint_classes(args, ckpt, ckpt_path, val_set)
    cfg = _resolve_config(args, ckpt_cfg, val_set.num_classes, val_set.class_names)
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
    if not args.eval_only:
        restored = _resume_source(args, work_dir) or args.checkpoint
        _setup_backbone(model, cfg, args, restored, rank, world)
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
    if rank == 0:
        print(_ops_line(args.backend, device), flush=True)

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
    except CheckpointReadError as e:  # --resume: the file named, or every checkpoint of the work dir
        raise SystemExit(f"--resume: {e}") from None
    if rank == 0:
        print(
            f"data skipped: when indexing the annotations: {format_counts(index_skips)}; when loading "
            f"(all epochs and processes): {format_counts(trainer.data_skip_reasons)}",
            flush=True,
        )
        if trainer.skipped_steps:
            print(f"steps skipped for a non-finite loss: {trainer.skipped_steps}", flush=True)
    return eval_hook.metrics


if __name__ == "__main__":
    from torch.distributed.elastic.multiprocessing.errors import record

    # Under torchrun, a rank that dies of an uncaught exception then leaves its traceback in torchrun's error file, so
    # torchrun's failure summary (the end of its output) names that rank and shows why, instead of
    # "error_file: <N/A>"; record also turns on faulthandler, which prints the Python stacks of a rank killed by a
    # fatal signal. Without torchrun it only re-raises.
    record(main)()
