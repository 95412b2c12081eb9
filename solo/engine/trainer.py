"""A small detectron2-style trainer: ``run_step`` plus hooks (logging, checkpoints, evaluation).

Schedule (SOLO_SPEC.md §6): SGD (momentum, weight decay from the config; AdamW with ``cfg.train.optimizer="adamw"``),
lr = ``cfg.train.lr * total_batch / cfg.train.reference_batch``, step decay by 0.1 for every milestone epoch <= the
current (0-based) epoch, linear warm-up over the first ``warmup_iters`` iterations:
``lr_k = lr * (1 - (1 - k / W) * (1 - warmup_ratio))``.

Reproducibility: the data order of epoch ``e`` is a permutation drawn from a generator seeded by ``(seed, e)``;
every sample is loaded with the RNGs seeded by ``(seed, e, position)`` (so flips do not depend on the worker that
loads it) and every step starts with torch's RNG seeded by ``(seed, iteration, rank)`` (the model's multi-scale
choice). A run resumed from any checkpoint, even one written mid-epoch, therefore ends bit-identical (on the CPU)
to an uninterrupted run of the same seed.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import sys
import time
from collections import Counter

import numpy as np
import torch
from torch import nn

from solo.engine.checkpoint import (
    load_first_loadable,
    pointer_problem,
    restore_rng_state,
    resume_candidates,
    save_checkpoint,
)

__all__ = [
    "HookBase",
    "Trainer",
    "WarmupStepLR",
    "dist_info",
    "format_counts",
    "mix_seed",
    "native_bf16",
    "resolve_amp",
]


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (splitmix64-style mixing)."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


def format_counts(counts) -> str:
    """``"a=1, b=2"`` for a Counter/dict of reason -> count (sorted by reason); ``"none"`` when empty."""
    return ", ".join(f"{k}={v}" for k, v in sorted(counts.items()) if v) or "none"


def native_bf16(device) -> bool:
    """Whether ``device`` computes bfloat16 natively (CUDA with bf16 support; a CPU with AVX512-BF16 or AMX)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)
    return False


def resolve_amp(amp: str, device) -> str:
    """``amp`` with "auto" replaced: "bf16" where :func:`native_bf16`, else "off"."""
    if amp == "auto":
        return "bf16" if native_bf16(device) else "off"
    return amp


def dist_info() -> tuple[int, int]:
    """(rank, world_size); (0, 1) when torch.distributed is not initialised."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class WarmupStepLR:
    """Linear warm-up by iteration, then step decay by epoch milestones. Sets the lr of every param group."""

    def __init__(
        self,
        optimizer,
        base_lr: float,
        milestones,
        gamma: float = 0.1,
        warmup_iters: int = 0,
        warmup_ratio: float = 1.0,
    ):
        self.optimizer = optimizer
        self.base_lr = float(base_lr)
        self.milestones = tuple(int(m) for m in milestones)
        self.gamma = gamma
        self.warmup_iters = int(warmup_iters)
        self.warmup_ratio = float(warmup_ratio)
        self.last_iter = 0
        self.last_epoch = 0

    def lr_at(self, iteration: int, epoch: int) -> float:
        """Learning rate of (0-based) global iteration ``iteration`` in (0-based) epoch ``epoch``."""
        lr = self.base_lr * self.gamma ** sum(1 for m in self.milestones if m <= epoch)
        if iteration < self.warmup_iters:
            lr *= 1 - (1 - iteration / self.warmup_iters) * (1 - self.warmup_ratio)
        return lr

    def step(self, iteration: int, epoch: int) -> float:
        self.last_iter, self.last_epoch = int(iteration), int(epoch)
        lr = self.lr_at(iteration, epoch)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        return lr

    def state_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state: dict) -> None:
        self.__dict__.update({k: (tuple(v) if k == "milestones" else v) for k, v in state.items()})


class HookBase:
    """Called by :class:`Trainer` at these points; ``self.trainer`` is set when registered."""

    trainer: Trainer

    def before_train(self): ...
    def after_train(self): ...
    def before_epoch(self): ...
    def after_epoch(self): ...
    def before_step(self): ...
    def after_step(self): ...


class _SeededDataset(torch.utils.data.Dataset):
    """``dataset[order[i]]`` with python/numpy/torch RNGs seeded by (seed, epoch, start + i) before loading."""

    def __init__(self, dataset, order: list[int], seed: int, epoch: int, start: int):
        self.dataset, self.order, self.seed, self.epoch, self.start = dataset, order, seed, epoch, start

    def __len__(self):
        return len(self.order)

    def __getitem__(self, i):
        s = mix_seed(self.seed, self.epoch, self.start + i, 1)
        random.seed(s)
        np.random.seed(s % (2**32))
        torch.manual_seed(s)
        return self.dataset[self.order[i]]


def _default_collate(batch):
    batch = [b for b in batch if b is not None]
    return [b[0] for b in batch], [b[1] for b in batch]


class Trainer:
    """Train ``model`` on ``dataset`` (items ``(image [3,H,W] float 0-255, target dict)`` or None) with ``cfg``.

    Arguments: ``cfg`` a :class:`solo.configs.Config`; ``work_dir`` where logs and checkpoints go (rank 0 only);
    ``batch_size`` images per process (default ``cfg.train.batch_size``); ``epochs`` (default ``cfg.train.epochs``)
    or ``max_iters`` (stop after that many global iterations); ``amp`` one of off/fp16/bf16/auto; ``nonfinite``
    "stop" (raise ``FloatingPointError`` naming the losses and iteration) or "skip" (skip the step and count it);
    ``checkpoint_period`` also save every N iterations (0: only at epoch ends and at the end).
    """

    def __init__(
        self,
        cfg,
        model: nn.Module,
        dataset,
        work_dir: str,
        *,
        seed: int = 0,
        batch_size: int | None = None,
        epochs: int | None = None,
        max_iters: int | None = None,
        workers: int = 0,
        amp: str = "off",
        device: str | torch.device = "cpu",
        nonfinite: str = "stop",
        log_period: int = 20,
        checkpoint_period: int = 0,
        collate_fn=None,
        class_names=None,
        progress: bool = True,
        hooks: list[HookBase] | None = None,
    ):
        if amp not in ("off", "fp16", "bf16", "auto"):
            raise ValueError(f"amp must be one of off, fp16, bf16, auto; got {amp!r}")
        amp = resolve_amp(amp, device)
        if nonfinite not in ("stop", "skip"):
            raise ValueError(f"nonfinite must be 'stop' or 'skip'; got {nonfinite!r}")
        self.cfg = cfg
        self.dataset = dataset
        self.work_dir = work_dir
        self.seed = int(seed)
        self.batch_size = int(batch_size or cfg.train.batch_size)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        self.workers = int(workers)
        self.amp = amp
        self.device = torch.device(device)
        self.nonfinite = nonfinite
        self.log_period = max(1, int(log_period))
        self.checkpoint_period = int(checkpoint_period)
        self.collate_fn = collate_fn or _default_collate
        self.class_names = class_names if class_names is not None else getattr(dataset, "class_names", None)
        self.progress = progress
        self.rank, self.world_size = dist_info()
        self.is_main = self.rank == 0

        if len(dataset) == 0:
            raise ValueError("the training dataset is empty")
        self.samples_per_rank = math.ceil(len(dataset) / self.world_size)
        self.iters_per_epoch = math.ceil(self.samples_per_rank / self.batch_size)
        if max_iters is not None:
            if max_iters < 1:
                raise ValueError(f"max_iters must be >= 1, got {max_iters}")
            self.max_iters = int(max_iters)
            self.epochs = math.ceil(self.max_iters / self.iters_per_epoch)
        else:
            self.epochs = int(epochs if epochs is not None else cfg.train.epochs)
            if self.epochs < 1:
                raise ValueError(f"epochs must be >= 1, got {self.epochs}")
            self.max_iters = self.epochs * self.iters_per_epoch

        model.to(self.device)
        self.model = model
        if self.world_size > 1:
            ddp_kwargs = {"device_ids": [self.device.index]} if self.device.type == "cuda" else {}
            self.model = nn.parallel.DistributedDataParallel(model, find_unused_parameters=True, **ddp_kwargs)
        self.module = model
        params = [p for p in model.parameters() if p.requires_grad]
        t = cfg.train
        self.base_lr = t.lr * self.batch_size * self.world_size / t.reference_batch
        if t.optimizer == "adamw":
            self.optimizer = torch.optim.AdamW(params, lr=self.base_lr, weight_decay=t.weight_decay)
        else:
            self.optimizer = torch.optim.SGD(params, lr=self.base_lr, momentum=t.momentum, weight_decay=t.weight_decay)
        self.scheduler = WarmupStepLR(self.optimizer, self.base_lr, t.milestones, 0.1, t.warmup_iters, t.warmup_ratio)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=(amp == "fp16"))
        self.grad_clip = t.grad_clip

        self.iter = 0  # global iterations done
        self.epoch = 0  # current (0-based) epoch
        self.skipped_steps = 0
        # What the data loaders skipped, by reason, summed over ranks (synchronised at epoch ends and checkpoints;
        # saved in checkpoints, so a resumed run keeps counting): the total and the total at the epoch's start.
        self.data_skip_reasons: Counter = Counter()
        self.data_skip_epoch_start: Counter = Counter()
        self._skip_local: Counter = Counter()  # this rank's counts since the last synchronisation
        self.history: list[dict] = []
        self.hooks: list[HookBase] = []
        self.register_hooks([_LoggerHook(), _CheckpointHook()] + list(hooks or []))

    # ------------------------------------------------------------------------------------------------ hooks

    def register_hooks(self, hooks) -> None:
        for h in hooks:
            h.trainer = self
            self.hooks.append(h)

    def _call(self, name: str) -> None:
        for h in self.hooks:
            getattr(h, name)()

    # ------------------------------------------------------------------------------------------------ checkpoints

    def checkpoint_path(self, name: str) -> str:
        return os.path.join(self.work_dir, name)

    def sync_data_skips(self) -> Counter:
        """Add every rank's skip counts since the last call to :attr:`data_skip_reasons` (a collective: every rank
        calls it) and return the total."""
        local = dict(self._skip_local)
        self._skip_local = Counter()
        if self.world_size > 1:
            parts = [None] * self.world_size
            torch.distributed.all_gather_object(parts, local)
        else:
            parts = [local]
        for p in parts:
            self.data_skip_reasons.update(p)
        return self.data_skip_reasons

    def save(self, name: str) -> str | None:
        """Save the full state to ``<work_dir>/<name>`` (rank 0 only) and point ``latest`` at it. Every rank
        calls it (the data skip counts are gathered first)."""
        self.sync_data_skips()
        if not self.is_main:
            return None
        return save_checkpoint(
            self.checkpoint_path(name),
            self.module,
            self.optimizer,
            self.scheduler,
            self.scaler,
            epoch=self.epoch,
            iteration=self.iter,
            config=self.cfg,
            class_names=self.class_names,
            extra={
                "seed": self.seed,
                "skipped_steps": self.skipped_steps,
                "data_skip_reasons": dict(self.data_skip_reasons),
                "data_skip_epoch_start": dict(self.data_skip_epoch_start),
                "iters_per_epoch": self.iters_per_epoch,
                "world_size": self.world_size,
                "batch_size": self.batch_size,
            },
        )

    def resume(self, path: str | None = None) -> bool:
        """Restore everything from ``path`` (a file), or, when None, from the newest checkpoint of ``work_dir`` that
        loads: the one ``latest`` names, else the others newest first, each file skipped said on stderr (rank 0).
        False if ``work_dir`` has no checkpoint. Raises :class:`solo.engine.checkpoint.CheckpointReadError` naming
        the file(s) and the reason when ``path``, or every checkpoint of ``work_dir``, cannot be loaded. Every rank
        calls it and all end on the same file (:func:`solo.engine.checkpoint.load_first_loadable`)."""
        # An explicit path gets no fallback: the user chose that state (an epoch to branch from, a file copied in),
        # and silently training on from another one would be a different experiment. Without a path the intent is
        # "continue this run", which the newest loadable checkpoint serves; the skipped files are named.
        require = ("model", "iter")
        if path is None:
            # rank 0 lists the work dir; load_first_loadable hands its list to the other ranks
            candidates = resume_candidates(self.work_dir) if self.is_main else []
            if not self._any(candidates):
                return False
            path, ckpt, skipped = load_first_loadable(candidates, require=require)
            problem = pointer_problem(self.work_dir) if self.is_main else None
            if problem:
                print(f"--resume: {problem}; taking the newest checkpoint instead", file=sys.stderr, flush=True)
            if skipped and self.is_main:
                for bad, reason in skipped:
                    print(f"--resume: skipping {bad}: {reason}", file=sys.stderr, flush=True)
                print(
                    f"--resume: falling back to {path} (iteration {int(ckpt['iter'])}), the newest checkpoint of "
                    f"{self.work_dir} that loads",
                    file=sys.stderr,
                    flush=True,
                )
        else:
            path, ckpt, _ = load_first_loadable([path], require=require)
        if ckpt.get("iters_per_epoch") not in (None, self.iters_per_epoch):
            raise ValueError(
                f"--resume {path}: the checkpoint has {ckpt['iters_per_epoch']} iterations per epoch, "
                f"this run {self.iters_per_epoch} (batch size, process count or dataset changed)"
            )
        self.module.load_state_dict(ckpt["model"])
        if ckpt.get("optimizer") is not None:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scheduler") is not None:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler") is not None:
            self.scaler.load_state_dict(ckpt["scaler"])
        self.iter = int(ckpt["iter"])
        self.epoch = self.iter // self.iters_per_epoch
        self.skipped_steps = int(ckpt.get("skipped_steps", 0))
        self.data_skip_reasons = Counter(ckpt.get("data_skip_reasons") or {})
        self.data_skip_epoch_start = Counter(ckpt.get("data_skip_epoch_start") or {})
        self._skip_local = Counter()
        if ckpt.get("rng") is not None:
            restore_rng_state(ckpt["rng"])
        if self.is_main:
            print(f"resumed from {path} at iteration {self.iter} (epoch {self.epoch + 1})", flush=True)
        return True

    def _any(self, items: list) -> bool:
        """Rank 0's ``bool(items)``, on every rank (the work dir is listed on rank 0 only)."""
        flag = [bool(items)]
        if self.world_size > 1:
            torch.distributed.broadcast_object_list(flag, src=0)
        return flag[0]

    # ------------------------------------------------------------------------------------------------ data

    def epoch_order(self, epoch: int) -> list[int]:
        """This rank's sample indices for ``epoch`` (a permutation seeded by (seed, epoch), padded to equal
        length across ranks, then strided by rank like DistributedSampler)."""
        g = torch.Generator()
        g.manual_seed(mix_seed(self.seed, epoch))
        perm = torch.randperm(len(self.dataset), generator=g).tolist()
        total = self.samples_per_rank * self.world_size
        perm += perm[: total - len(perm)]
        return perm[self.rank : total : self.world_size]

    def _loader(self, epoch: int, start_iter: int):
        order = self.epoch_order(epoch)
        start = start_iter * self.batch_size
        ds = _SeededDataset(self.dataset, order[start:], mix_seed(self.seed, self.rank), epoch, start)
        g = torch.Generator()
        g.manual_seed(mix_seed(self.seed, epoch, start_iter, 2))
        return torch.utils.data.DataLoader(
            ds,
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.workers,
            collate_fn=self.collate_fn,
            generator=g,
            persistent_workers=False,
            pin_memory=self.device.type == "cuda",
        )

    # ------------------------------------------------------------------------------------------------ training

    def _autocast(self):
        if self.amp == "off":
            return contextlib.nullcontext()
        dtype = torch.float16 if self.amp == "fp16" else torch.bfloat16
        return torch.autocast(self.device.type, dtype=dtype)

    def run_step(self, images, targets) -> dict[str, float]:
        """One optimisation step on a batch; returns the (rank-averaged) loss values and the lr."""
        torch.manual_seed(mix_seed(self.seed, self.iter, self.rank, 3))
        lr = self.scheduler.step(self.iter, self.epoch)
        images = [im.to(self.device, non_blocking=True) for im in images]
        targets = [
            {k: (v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()}
            for t in targets
        ]
        self.model.train()
        with self._autocast():
            losses = self.model(images, targets)
        loss = losses["loss"] if "loss" in losses else sum(losses.values())
        names = sorted(k for k in losses if k != "loss")
        vals = torch.stack([loss.detach().float()] + [losses[k].detach().float() for k in names])
        if self.world_size > 1:
            torch.distributed.all_reduce(vals)
            vals /= self.world_size
        out = {"loss": float(vals[0])}
        out.update({k: float(v) for k, v in zip(names, vals[1:])})
        if not all(math.isfinite(v) for v in out.values()):
            bad = ", ".join(f"{k}={v}" for k, v in out.items() if not math.isfinite(v))
            if self.nonfinite == "stop":
                raise FloatingPointError(
                    f"non-finite loss at iteration {self.iter + 1} (epoch {self.epoch + 1}): {bad}. "
                    f"Lower the learning rate (--cfg-options train.lr=...), check the data, or pass "
                    f"--skip-nonfinite to skip such steps"
                )
            self.skipped_steps += 1
            self.optimizer.zero_grad(set_to_none=True)
            if self.is_main:
                print(
                    f"warning: skipped step at iteration {self.iter + 1}: non-finite {bad} "
                    f"({self.skipped_steps} skipped so far)",
                    file=sys.stderr,
                    flush=True,
                )
            out["skipped"] = 1.0
            out["lr"] = lr
            return out
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.grad_clip:
            self.scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
            out["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, self.grad_clip))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        out["lr"] = lr
        return out

    def train(self, resume: str | bool | None = None) -> list[dict]:
        """Run to ``max_iters``. ``resume``: a path, or True for the latest checkpoint of the work dir."""
        if resume:
            found = self.resume(None if resume is True else resume)
            if not found and self.is_main:
                print(f"--resume: no checkpoint in {self.work_dir}; starting from scratch", flush=True)
        self.completed = False
        self._call("before_train")
        try:
            while self.iter < self.max_iters:
                self.epoch = self.iter // self.iters_per_epoch
                start_iter = self.iter - self.epoch * self.iters_per_epoch
                if start_iter == 0:
                    self.data_skip_epoch_start = Counter(self.data_skip_reasons)
                self._call("before_epoch")
                for batch in self._loader(self.epoch, start_iter):
                    if self.iter >= self.max_iters:
                        break
                    images, targets = batch
                    self._skip_local.update(getattr(batch, "reasons", None) or {})
                    self._call("before_step")
                    self.step_t0 = time.perf_counter()
                    has_data = len(images) > 0
                    if self.world_size > 1:  # every rank skips together, or DDP would wait for the one that skips
                        flag = torch.tensor([int(has_data)], device=self.device if self.device.type == "cuda" else None)
                        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
                        has_data = bool(flag.item())
                    if not has_data:  # every sample of the batch (on some rank) was skipped by the dataset
                        self.last_out = {"skipped": 1.0}
                    else:
                        self.last_out = self.run_step(images, targets)
                    self.iter += 1
                    self._call("after_step")
                self.sync_data_skips()
                self._call("after_epoch")
            self.completed = True
        finally:
            self._call("after_train")
        return self.history


class _LoggerHook(HookBase):
    """tqdm bar (ETA, losses, lr, memory), JSON lines ``<work_dir>/log.jsonl``, TensorBoard when importable."""

    def before_train(self):
        tr = self.trainer
        self.bar = None
        self.tb = None
        self.jsonl = None
        if not tr.is_main:
            return
        os.makedirs(tr.work_dir, exist_ok=True)
        self.jsonl = open(os.path.join(tr.work_dir, "log.jsonl"), "a")  # noqa: SIM115 (closed in after_train)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(os.path.join(tr.work_dir, "tb"))
        except Exception:  # noqa: BLE001 (tensorboard missing or broken: no TensorBoard scalars)
            self.tb = None
        if tr.progress:
            try:
                from tqdm import tqdm

                self.bar = tqdm(
                    total=tr.max_iters,
                    initial=tr.iter,
                    dynamic_ncols=True,
                    desc="train",
                    file=sys.stderr,
                    mininterval=1.0,
                )
            except ImportError:
                self.bar = None
        self.t0 = time.perf_counter()

    def _mem(self) -> str:
        dev = self.trainer.device
        if dev.type == "cuda":
            return f"{torch.cuda.max_memory_allocated(dev) / 2**20:.0f}M"
        try:
            import resource

            return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}M"
        except (ImportError, OSError):
            return "?"

    def after_step(self):
        tr = self.trainer
        out = tr.last_out
        if not tr.is_main:
            return
        rec = {"iter": tr.iter, "epoch": tr.epoch + 1, **out, "time": time.perf_counter() - tr.step_t0}
        tr.history.append(rec)
        if self.bar is not None:
            self.bar.update(1)
            post = {k: f"{v:.3f}" for k, v in out.items() if k.startswith("loss")}
            if "lr" in out:
                post["lr"] = f"{out['lr']:.2e}"
            post["mem"] = self._mem()
            self.bar.set_postfix(post, refresh=False)
        if tr.iter % tr.log_period == 0 or tr.iter == tr.max_iters or tr.iter == 1:
            if self.jsonl is not None:
                self.jsonl.write(json.dumps({"type": "train", **rec}) + "\n")
                self.jsonl.flush()
            if self.tb is not None:
                for k, v in out.items():
                    self.tb.add_scalar(f"train/{k}", v, tr.iter)

    def after_epoch(self):
        tr = self.trainer
        epoch = tr.data_skip_reasons - tr.data_skip_epoch_start
        if tr.is_main and epoch:
            print(
                f"epoch {tr.epoch + 1}: skipped while loading data: {format_counts(epoch)} "
                f"(run total: {format_counts(tr.data_skip_reasons)})",
                file=sys.stderr,
                flush=True,
            )
            if self.jsonl is not None:
                self.jsonl.write(
                    json.dumps({"type": "data_skipped", "epoch": tr.epoch + 1, "iter": tr.iter, **dict(epoch)}) + "\n"
                )
                self.jsonl.flush()

    def after_train(self):
        if self.bar is not None:
            self.bar.close()
        if self.jsonl is not None:
            self.jsonl.close()
        if self.tb is not None:
            self.tb.close()


class _CheckpointHook(HookBase):
    """``epoch_{N}.pth`` after every epoch, ``iter_{N}.pth`` every ``checkpoint_period`` iterations, and
    ``final.pth`` at the end; all atomic, with ``latest`` pointing at the newest."""

    def after_step(self):
        tr = self.trainer
        if tr.checkpoint_period and tr.iter % tr.checkpoint_period == 0 and tr.iter % tr.iters_per_epoch:
            tr.save(f"iter_{tr.iter:07d}.pth")

    def after_epoch(self):
        tr = self.trainer
        if tr.iter % tr.iters_per_epoch == 0 and tr.iter > 0:
            tr.save(f"epoch_{tr.iter // tr.iters_per_epoch:04d}.pth")

    def after_train(self):
        tr = self.trainer
        if tr.completed:
            tr.save("final.pth")
