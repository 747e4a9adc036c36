"""The training engine: the recipe, optimiser/scheduler/EMA, and one resumable ``fit`` loop (datasets live in
``datasets``, the saved state and the kept model in ``checkpoint``, reading a history in ``checkpoint`` too).

v1 and v2 differ only in their ``Recipe`` and in the loss the caller passes; the loop never builds a loss.
``fit`` writes to ``out_dir``:

- ``history.json``  one record per epoch (lr, train loss and its terms, validation metrics per dataset and over
  all images, timings, whether this epoch gave the kept checkpoint);
- ``best/``         the kept model (super-image's ``save_pretrained``; ``models.load_model`` loads it) plus
  ``thermsr.json``: the resolved recipe, the epoch, its metric values, the loss terms, ``trained_on`` (palettes
  and datasets of the training crops, when the training set knows them) and the caller's metadata;
- ``state.pt``      everything needed to continue after an interruption, rewritten after every epoch
  (tensors and plain containers only: ``torch.load(weights_only=True)`` reads it).

Every random choice of the data pipeline comes from generators seeded by (recipe seed, epoch, item index) (on
``accel``'s device pipeline by (seed, epoch)) and the global RNG states travel in ``state.pt``, so on CPU a run
interrupted after epoch k and resumed ends with the weights and history of an uninterrupted one. Files are written
by temp file + rename; SIGINT / SIGTERM stop at a clean point and say how to resume. A run is never deleted:
without ``resume`` a folder holding an interrupted one is refused (``TrainingRunExists``); a finished one, or any
with ``fresh=True``, is moved aside to ``<name>.old-<date-time>``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import random
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from . import __version__, accel, timing
from .data import SCALE
from .datasets import LR_METHOD
from .io import atomic_write_json
from .config import ParameterValueError
from .params import RECIPE_RULES
from .checkpoint import (ALL, BEST_DIR, BEST_RAW_DIR, HISTORY_FILE, STATE_FILE, check_resume_pipeline,
                         check_resume_recipe, load_state, remove_leftovers, save_best, save_state, set_aside,
                         set_rng_states)
from .losses import describe_loss
from .progress import LineProgress, plain_progress

TIMING_KEYS = ("train_seconds", "val_seconds", "steps_per_second")


# ---- Loader ----
def make_loader(dataset, recipe: "Recipe", epoch: int, rank: int = 0, world_size: int = 1):
    """Shuffled training loader for ``epoch`` (1-based); its order depends only on (seed, epoch). With several ranks,
    rank r loads its ``accel.shard`` of every global batch (those of one process) and gets ``(lr, hr, weight)``."""
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    generator = torch.Generator().manual_seed(accel.order_seed(recipe.seed, epoch))
    workers = dict(num_workers=recipe.num_workers, worker_init_fn=_seed_worker if recipe.num_workers else None,
                   generator=generator)
    if world_size > 1:
        sampler = accel.ShardedBatchSampler(len(dataset), recipe.batch_size, recipe.seed, epoch, rank, world_size)
        loader = DataLoader(dataset, batch_sampler=sampler, **workers)
        return accel.Batches(lambda: ((lr, hr, w) for (lr, hr), w in zip(loader, sampler.weights)), len(sampler))
    return DataLoader(dataset, batch_size=recipe.batch_size, shuffle=True, drop_last=False, **workers)


def _seed_worker(worker_id: int) -> None:
    """Seed NumPy and Python in a loader worker from its torch seed (the items do not rely on it)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


# ---- Recipe ----
@dataclass(frozen=True, kw_only=True)
class Recipe:
    """Every setting of one finetuning run. ``Recipe.v1`` / ``Recipe.v2`` fix what no notebook declares (weight decay,
    patches, augmentation, schedule); the declared values come in through ``recipes.recipe``."""

    name: str
    epochs: int
    batch_size: int
    lr: float                           # peak learning rate (AdamW)
    weight_decay: float
    patch: int | None                   # HR patch side; None = the whole crop
    augment: bool                       # random hflip + rot90
    warmup: float = 0.0                 # fraction of the run's optimizer steps in linear warmup; 0 = none
    warmup_start_factor: float = 0.01   # lr factor of the first warmup step
    schedule: str = "cosine"            # "cosine" (to min_lr over the post-warmup steps) or "constant"
    min_lr: float = 0.0
    val_every: int                      # validate every this many epochs, and at the last one
    val_at_start: bool = True           # also validate the initial model (epoch 0; never kept)
    ema_half_life: float | None = None  # None = no EMA; else the EMA's half-life as a fraction of the run's steps
    keep: str                           # "best": the epoch with the best select_metric; "last": the final epoch
    select_metric: str = "psnr"         # metric on the pooled validation set that picks the kept epoch
    select_mode: str = "max"            # "max" (psnr, ssim) or "min" (lpips, errors)
    select_on: str | None = None        # "ema" or "model"; None = "ema" when EMA is on, else "model"
    seed: int = 0
    scale: int = SCALE
    max_steps_per_epoch: int | None = None  # cap on optimiser steps per epoch (smoke runs)
    grad_clip: float | None = None      # max gradient norm; None = no clipping
    amp: str | None = "auto"            # None (float32), "bf16" autocast of the forward pass, or "auto": bf16
                                        # for training steps on CUDA and on CPUs with native bf16 (AMX or
                                        # AVX512-BF16), float32 elsewhere and in validation
    num_workers: int = 0                # DataLoader workers (results do not depend on it)
    fast: bool | None = None            # device data pipeline + channels_last; None = on for CUDA only
    compile: bool = False               # torch.compile the model for the training steps
    notes: str = ""

    def __post_init__(self):
        for field, rule in RECIPE_RULES.items():          # one rule per field, shared with the notebook parameters
            try:
                rule.check(field, getattr(self, field))
            except ParameterValueError as e:
                raise ValueError(f"Recipe {self.name!r}: {e}") from None

        def bad(field, why):
            raise ValueError(f"Recipe {self.name!r}: {field} {why}, got {getattr(self, field)!r}")

        if self.warmup >= 1:
            bad("warmup", "is a fraction of the run's steps and must be smaller than 1")
        if self.patch is not None and (not isinstance(self.patch, int) or self.patch < 1 or self.patch % self.scale):
            bad("patch", f"must be None or a positive multiple of scale {self.scale}")
        if self.select_on == "ema" and self.ema_half_life is None:
            bad("select_on", "is 'ema' but ema_half_life is None")

    @property
    def selected_copy(self) -> str:
        """Which copy is validated and kept: "ema" or "model"."""
        if self.select_on is not None:
            return self.select_on
        return "ema" if self.ema_half_life is not None else "model"

    @classmethod
    def v1(cls, **values) -> "Recipe":
        """v1 as the write-up trains it: AdamW (weight decay 1e-5), cosine, no warmup, no augmentation, no EMA;
        ``values`` must give epochs, lr, batch_size and patch (notebook 03's ``v1_*``)."""
        _require("v1", values, ("epochs", "lr", "batch_size", "patch", "val_every", "keep"))
        return cls(**{"name": "v1", "weight_decay": 1e-5, "augment": False, "warmup": 0.0, "schedule": "cosine",
                      "ema_half_life": None, "select_metric": "psnr", "select_mode": "max", **values})

    @classmethod
    def v2(cls, **values) -> "Recipe":
        """v2 as the write-up trains it: AdamW (weight decay 1e-5), warmup then cosine, whole crops with flip/rot90,
        EMA; ``values`` must give epochs, lr, batch_size, warmup and ema_half_life (notebook 05's ``v2_*``)."""
        _require("v2", values, ("epochs", "lr", "batch_size", "warmup", "ema_half_life", "val_every", "keep"))
        return cls(**{"name": "v2", "weight_decay": 1e-5, "patch": None, "augment": True, "schedule": "cosine",
                      "select_metric": "psnr", "select_mode": "max",
                      "notes": "batch 16 as the write-up's text states (its training script defaulted to 8)", **values})

    def to_dict(self) -> dict:
        """All fields as plain data, with ``select_on`` resolved."""
        d = dataclasses.asdict(self)
        d["select_on"] = self.selected_copy
        return d


def _require(recipe: str, values: dict, names: tuple) -> None:
    """TypeError naming the values a recipe needs from its caller (the notebook declares them) that are missing."""
    missing = [n for n in names if n not in values]
    if missing:
        raise TypeError(f"Recipe.{recipe}() needs {', '.join(missing)} (notebook "
                        f"{'03' if recipe == 'v1' else '05'} declares them; recipes.recipe passes them)")


# ---- Optimiser, schedule, EMA ----
def make_optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.AdamW:
    """AdamW over the model's trainable parameters with the recipe's lr and weight decay."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{type(model).__name__} has no trainable parameters")
    return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)


def steps_per_epoch(n_items: int, recipe: Recipe) -> int:
    """Optimizer steps in one epoch over ``n_items`` training items (the last batch may be smaller)."""
    steps = math.ceil(n_items / recipe.batch_size)
    return min(steps, recipe.max_steps_per_epoch) if recipe.max_steps_per_epoch else steps


def sized_schedule(recipe: Recipe, n_steps_per_epoch: int) -> dict:
    """The recipe's fractions made concrete for a run of ``n_steps_per_epoch``: total steps, warmup steps, EMA decay.
    The EMA's half-life is ``ema_half_life`` of the run's steps (the write-up's 0.999 over 10,400 steps for its own
    length), so a short run averages over the same share of training instead of lagging further behind."""
    total = recipe.epochs * n_steps_per_epoch
    warmup = int(round(recipe.warmup * total))
    decay = None
    if recipe.ema_half_life is not None:
        decay = 0.5 ** (1.0 / max(recipe.ema_half_life * total, 1e-9))
    return {"total_steps": total, "warmup_steps": warmup, "ema_decay": decay,
            "ema_half_life_steps": None if decay is None else recipe.ema_half_life * total}


def make_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe, total_steps: int, warmup_steps: int = 0):
    """Per-step lr schedule from torch: [LinearLR warmup over ``warmup_steps`` →] CosineAnnealingLR over the rest
    (or ConstantLR); stepped after every optimizer step."""
    from torch.optim.lr_scheduler import ConstantLR, CosineAnnealingLR, LinearLR, SequentialLR

    rest = max(total_steps - warmup_steps, 1)
    if recipe.schedule == "cosine":
        main = CosineAnnealingLR(optimizer, T_max=rest, eta_min=recipe.min_lr)
    else:
        main = ConstantLR(optimizer, factor=1.0, total_iters=0)
    if warmup_steps == 0:
        return main
    warmup = LinearLR(optimizer, start_factor=recipe.warmup_start_factor, end_factor=1.0, total_iters=warmup_steps)
    return SequentialLR(optimizer, [warmup, main], milestones=[warmup_steps])


def make_ema(model: torch.nn.Module, decay: float) -> AveragedModel:
    """A separate EMA copy of ``model`` (parameters and buffers), updated by ``update_parameters``."""
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


# ---- Validation ----
def default_metrics(lpips_metric=None) -> dict[str, Callable]:
    """PSNR and SSIM from ``thermsr_utils.metrics`` (imported on first use), plus LPIPS when given one."""
    from . import metrics

    chosen = {"psnr": metrics.psnr, "ssim": metrics.ssim}
    if lpips_metric is not None:
        chosen["lpips"] = lpips_metric
    return chosen


def _per_image(values, n: int, metric: str) -> list[float]:
    """A metric's per-image output (tensor, array or list of length n) as a list of floats."""
    if isinstance(values, torch.Tensor):
        values = values.detach().float().cpu().numpy()
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size != n:
        raise ValueError(f"metric {metric!r} returned {arr.size} values for a batch of {n} images")
    return arr.tolist()


@torch.no_grad()
def evaluate(model: torch.nn.Module, val_sets: Mapping, metrics: Mapping[str, Callable], *,
             device="cpu", batch_size: int = 16, amp: str | None = None) -> dict[str, dict[str, float]]:
    """Mean of each metric per validation set and over all images ("all"), with ``n`` (the image count); SR clamped
    to [0, 1]. ``val_sets`` maps a dataset name to ``(lr, hr)`` tensor pairs (a list or a Dataset; 3×h×w and 3×H×W
    float RGB in [0, 1]); each metric is ``fn(sr, hr) -> (N,)`` values."""
    if not val_sets:
        raise ValueError("no validation sets given")
    if ALL in val_sets:
        raise ValueError(f"validation set name {ALL!r} is reserved for the pooled result")
    if not metrics:
        raise ValueError("no validation metrics given")
    device = torch.device(device)
    was_training = model.training
    model.eval()
    per_set: dict[str, dict[str, list[float]]] = {}     # per-image values of every metric, per set
    try:
        for set_name, pairs in val_sets.items():
            if len(pairs) == 0:
                raise ValueError(f"validation set {set_name!r} is empty")
            per = per_set[set_name] = {m: [] for m in metrics}
            for lr, hr in DataLoader(pairs, batch_size=batch_size, shuffle=False):
                lr, hr = lr.to(device), hr.to(device)
                with _autocast(device, amp):
                    sr = model(lr)
                sr = sr.float().clamp(0.0, 1.0)
                if sr.shape != hr.shape:
                    raise ValueError(f"validation set {set_name!r}: model output {tuple(sr.shape)} does "
                                     f"not match HR {tuple(hr.shape)}")
                for m, fn in metrics.items():
                    per[m] += _per_image(fn(sr, hr), hr.shape[0], m)
    finally:
        model.train(was_training)
    per_set[ALL] = {m: [v for per in per_set.values() for v in per[m]] for m in metrics}
    return {name: {**{m: float(np.mean(v)) for m, v in per.items()}, "n": len(per[next(iter(metrics))])}
            for name, per in per_set.items()}


def _autocast(device: torch.device, amp: str | None):
    """bf16 autocast context when ``amp`` is "bf16" (or "auto" on CUDA), else a no-op context."""
    if accel.resolve_amp(amp, device) == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _is_better(value: float, best: float | None, mode: str) -> bool:
    """Strict improvement of ``value`` over ``best`` ("max" or "min"); NaN never improves."""
    if value is None or math.isnan(value):
        return False
    return best is None or (value > best if mode == "max" else value < best)


# ---- Stopping on SIGINT / SIGTERM ----
class TrainingInterrupted(KeyboardInterrupt):
    """``fit`` stopped by SIGINT; ``state.pt`` holds the last completed epoch (the message says how to resume)."""


class TrainingRunExists(RuntimeError):
    """``fit`` without ``resume`` or ``fresh`` found an interrupted run's ``state.pt`` in its folder and changed
    nothing; the message names the folder, the epoch the run reached and the two ways on."""


class _StopOnSignal:
    """SIGINT/SIGTERM during one ``fit`` call (handled in the main thread only). During an epoch's training steps a
    signal abandons the epoch at once: ``state.pt`` keeps the previous epoch, as after a SIGKILL. After ``hold`` a
    first signal waits until the epoch is fully written (``release``); a second stops at once. Stopping prints how
    to resume and raises TrainingInterrupted (SIGINT) or SystemExit (SIGTERM)."""

    def __init__(self, name: str, state_path: Path, epochs: int):
        self.name, self.state_path, self.epochs = name, state_path, epochs
        self.signum, self.holding, self.saved_epoch, self._previous = None, False, None, {}

    def __enter__(self) -> "_StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def hold(self) -> None:
        self.holding = True

    def release(self, epoch: int) -> None:
        self.holding, self.saved_epoch = False, epoch
        if self.signum is not None:
            self._stop()

    def _handle(self, signum, frame) -> None:
        first, self.signum = self.signum is None, signum
        if self.holding and first:
            print(f"{signal.Signals(signum).name} received: finishing this epoch's validation and checkpoint before "
                  "stopping (send it again to stop at once)", file=sys.stderr, flush=True)
            return
        self._stop()

    def _stop(self):
        self.holding = False
        if self.saved_epoch is not None:
            saved = f"{self.state_path} holds epoch {self.saved_epoch}/{self.epochs}"
        elif self.state_path.exists():
            saved = f"{self.state_path} holds the last completed epoch"
        else:
            saved = "no epoch was completed yet, so a resumed run starts from the beginning"
        msg = (f"training {self.name!r} stopped by {signal.Signals(self.signum).name}; {saved}. Continue it with "
               f"`-p resume True` (python -m thermsr_utils.run) or fit(..., resume=True); the result is the "
               f"same as an uninterrupted run.")
        if self.signum == signal.SIGTERM:
            raise SystemExit(msg)
        print(msg, file=sys.stderr, flush=True)
        raise TrainingInterrupted(msg)


# ---- The loop ----
_RESERVED_META = ("recipe", "epoch", "value", "val", "select_metric", "select_mode", "selected_copy",
                  "loss", "model_class", "train_set", "trained_on", "versions", "execution")


def _execution(train_set, recipe: Recipe, device: torch.device, dist) -> dict:
    """How this run executes (resolved amp, memory format, data pipeline, compile, ranks), as plain data. With
    ``recipe.fast`` None (auto) a training set the device pipeline cannot serve quietly uses the DataLoader."""
    fast = accel.resolve_fast(recipe.fast, device)
    problem = accel.device_path_problem(train_set) if fast else None
    if problem and recipe.fast:
        raise ValueError(f"recipe.fast is True but the device data pipeline cannot serve the training set: {problem}")
    amp = accel.resolve_amp(recipe.amp, device)
    return {"device": str(device), "amp": amp, "channels_last": fast or amp == "bf16",
            "data_pipeline": "device" if fast and problem is None else "DataLoader",
            "compile": recipe.compile, "world_size": dist.world_size}


def _versions() -> dict:
    """Versions of the libraries that shape a checkpoint."""
    v = {"thermsr_utils": __version__, "torch": torch.__version__}
    with contextlib.suppress(Exception):
        from importlib.metadata import version

        v["super-image"] = version("super-image")
    return v


def _train_epoch(model, loader, loss_fn, optimizer, scheduler, ema, recipe: Recipe, device, bar_desc: str,
                 progress: bool, *, amp: str | None = None, channels_last: bool = False,
                 ema_source: torch.nn.Module | None = None, distributed: bool = False) -> dict:
    """One pass over ``loader`` (forward, loss, optimizer, lr-schedule and EMA steps); the epoch's loss statistics.

    ``loader`` yields ``(lr, hr)`` or ``(lr, hr, weight)``; the weight scales this rank's loss (``accel.shard``).
    With ``distributed`` the reported loss and terms are the global batch's, the same on every rank. ``amp`` is the
    resolved autocast ("bf16" or None); ``ema_source`` is the module the EMA copy follows (default ``model``)."""
    from tqdm import tqdm

    model.train()
    total = 0.0
    terms: dict[str, float] = {}
    steps = 0
    n_batches = min(len(loader), recipe.max_steps_per_epoch or len(loader))
    lines = LineProgress(bar_desc, n_batches, "steps") if progress and plain_progress() else None  # under the runner
    bar = tqdm(total=n_batches, desc=bar_desc, leave=False, disable=not progress or lines is not None, unit="step",
               mininterval=1.0)
    try:
        for lr_img, hr_img, *rest in itertools.islice(loader, n_batches):
            weight = float(rest[0]) if rest else 1.0
            lr_img, hr_img = lr_img.to(device, non_blocking=True), hr_img.to(device, non_blocking=True)
            if channels_last:
                lr_img = lr_img.contiguous(memory_format=torch.channels_last)
            with _autocast(device, amp):
                sr = model(lr_img)
            loss = loss_fn(sr.float(), hr_img)
            step_terms = {k: float(v) for k, v in (getattr(loss_fn, "last", None) or {}).items()}
            value = float(loss.detach())
            if distributed:         # the global batch's loss and terms
                step_terms = accel.reduce_weighted({"__loss__": value, **step_terms}, weight, device)
                value = step_terms.pop("__loss__")
            if not math.isfinite(value):
                raise FloatingPointError(f"non-finite training loss {value} at step {steps} ({bar_desc})")
            optimizer.zero_grad(set_to_none=True)
            (loss if weight == 1.0 else loss * weight).backward()
            if recipe.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
            optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.update_parameters(ema_source if ema_source is not None else model)
            total += value
            for k, v in step_terms.items():
                terms[k] = terms.get(k, 0.0) + v
            steps += 1
            bar.update(1)
            bar.set_postfix(loss=f"{total / steps:.4g}", refresh=False)
            if lines is not None:
                lines.update(steps, f", loss {total / steps:.4g}")
    finally:
        bar.close()
    if steps == 0:
        raise ValueError("the training set yielded no batches")
    stats = {"steps": steps, "train_loss": total / steps, "train_terms": {k: v / steps for k, v in terms.items()}}
    shares = getattr(loss_fn, "shares", None)
    stats["train_term_share"] = shares(stats["train_terms"]) if callable(shares) and terms else {}
    return stats


class _Runner:
    """What one ``fit`` call works with, set up once: data, loss, metrics, output folder; how the steps run (device,
    rank, data pipeline, bf16, channels_last, DDP, compile: ``execution``); optimiser, sized schedule and EMA copy.
    ``train_model`` is what the steps call: ``model`` (saved, followed by the EMA copy) in DDP and/or compiled."""

    def __init__(self, model, train_set, val_sets, loss_fn, recipe: Recipe, out_dir: Path, *, metrics, device,
                 extra_meta, progress: bool):
        out_dir.mkdir(parents=True, exist_ok=True)
        if not callable(getattr(model, "save_pretrained", None)) and getattr(model, "zoo_name", None) is None:
            raise TypeError(f"fit keeps checkpoints with super-image's save_pretrained or as a zoo folder; "
                            f"{type(model).__name__} is neither a super-image model nor a thermsr_utils.zoo model")
        self.metrics = default_metrics() if metrics is None else dict(metrics)
        if recipe.select_metric not in self.metrics:
            raise ValueError(f"select_metric {recipe.select_metric!r} is not among the metrics {sorted(self.metrics)}")
        self.extra_meta = dict(extra_meta or {})
        clash = sorted(set(self.extra_meta) & set(_RESERVED_META))
        if clash:
            raise ValueError(f"extra_meta keys {clash} are reserved for the run's own metadata")
        self.model, self.train_set, self.val_sets, self.loss_fn = model, train_set, val_sets, loss_fn
        self.recipe, self.out_dir = recipe, out_dir
        device = torch.device(device)
        if accel.launched_distributed():
            accel.init_distributed(device.type)
        self.dist = accel.dist_info()
        self.is_main = self.dist.is_main                # rank 0 validates and alone writes files
        self.device = accel.rank_device(device, self.dist)
        if recipe.batch_size % self.dist.world_size:
            raise ValueError(f"batch_size {recipe.batch_size} (the global batch) is not divisible by the "
                             f"{self.dist.world_size} ranks of this run")
        self.progress = progress and self.is_main
        self.execution = _execution(train_set, recipe, self.device, self.dist)
        model.to(self.device)
        if self.execution["channels_last"]:
            model.to(memory_format=torch.channels_last)
        if isinstance(loss_fn, torch.nn.Module):
            loss_fn.to(self.device)
        self.optimizer = make_optimizer(model, recipe)
        sized = self.execution["schedule"] = sized_schedule(recipe, steps_per_epoch(len(train_set), recipe))
        self.scheduler = make_scheduler(self.optimizer, recipe, sized["total_steps"], sized["warmup_steps"])
        self.ema = make_ema(model, sized["ema_decay"]) if sized["ema_decay"] is not None else None
        self.kept_model = self.ema.module if recipe.selected_copy == "ema" else model   # validated and kept
        self.train_model, self.sampler = model, None    # made by start_or_resume, once the state is in place

    def start_or_resume(self, resume: bool, fresh: bool) -> tuple[int, list, dict | None]:
        """(last completed epoch, history, best so far) from ``state.pt`` when resuming, else a clean start (RNGs seeded
        from the recipe; no ``state.pt``: no epoch completed, stale files go). An earlier run's ``state.pt`` without
        ``resume`` is refused; ``fresh`` moves it aside first. Then ``train_model`` and the device sampler are made."""
        recipe, out_dir, state_path = self.recipe, self.out_dir, self.out_dir / STATE_FILE
        if self.is_main:
            remove_leftovers(out_dir)
        if not (resume or fresh) and state_path.exists():
            state = load_state(state_path)
            if state["epoch"] < state["recipe"]["epochs"]:
                raise TrainingRunExists(
                    f"{out_dir} holds an interrupted training run ({state['recipe']['name']}, stopped after epoch "
                    f"{state['epoch']}/{state['recipe']['epochs']}): continue it with `-p resume True` (fit(..., "
                    f"resume=True)), or start over with `-p fresh_start True` (fit(..., fresh=True)), which moves it "
                    f"aside to {out_dir.name}.old-<date-time> instead of deleting it.")
            fresh = True           # a finished run is kept too: moved aside, never deleted
        if fresh:
            resume = False
            old = set_aside(out_dir) if self.is_main else None
            if old is not None:
                print(f"fresh start of {recipe.name}: the earlier run in {out_dir} was moved to {old} "
                      "(`-p resume True` reuses a finished run without training)", flush=True)
        if resume and state_path.exists():
            state = load_state(state_path)
            check_resume_recipe(state["recipe"], recipe, state_path)
            check_resume_pipeline(state.get("execution"), self.execution, state_path)
            self.model.load_state_dict(state["model"])
            if self.ema is not None:
                self.ema.load_state_dict(state["ema"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            set_rng_states(state["rng"])
            if self.progress:
                print(f"resuming {recipe.name} from {state_path.name} after epoch {state['epoch']}/{recipe.epochs}")
            begun = state["epoch"], list(state["history"]), state["best"]
        else:
            if resume and self.progress:
                print(f"no {STATE_FILE} in the output folder: starting {recipe.name} from scratch")
            if self.is_main:
                for stale in (state_path, out_dir / HISTORY_FILE):
                    stale.unlink(missing_ok=True)
                shutil.rmtree(out_dir / BEST_DIR, ignore_errors=True)
                shutil.rmtree(out_dir / BEST_RAW_DIR, ignore_errors=True)
            random.seed(recipe.seed)
            np.random.seed(recipe.seed)
            torch.manual_seed(recipe.seed)
            begun = 0, [], None
        accel.barrier()     # rank 0 has cleared or read the output folder
        self.train_model = accel.wrap_ddp(self.model, self.device)
        if recipe.compile:
            self.train_model = torch.compile(self.train_model)
        if self.execution["data_pipeline"] == "device":
            self.sampler = accel.DevicePatchSampler(self.train_set, recipe.batch_size, self.device,
                                                    order_seed=recipe.seed, rank=self.dist.rank,
                                                    world_size=self.dist.world_size)
        return begun

    def train_epoch(self, epoch: int) -> dict:
        """Epoch ``epoch``'s training steps (``_train_epoch``); its history record, not yet validated."""
        r, ex, lr = self.recipe, self.execution, self.optimizer.param_groups[0]["lr"]
        batches = (make_loader(self.train_set, r, epoch, self.dist.rank, self.dist.world_size) if self.sampler is None
                   else accel.Batches(lambda: self.sampler.epoch(epoch), len(self.sampler)))
        t0 = time.perf_counter()
        with timing.phase("training"):
            stats = _train_epoch(self.train_model, batches, self.loss_fn, self.optimizer, self.scheduler, self.ema, r,
                                 self.device, f"{r.name} epoch {epoch}/{r.epochs}", self.progress, amp=ex["amp"],
                                 channels_last=ex["channels_last"], ema_source=self.model,
                                 distributed=self.dist.world_size > 1)
        seconds = time.perf_counter() - t0
        return {"epoch": epoch, "lr": lr, **stats, "lr_end": self.optimizer.param_groups[0]["lr"],
                "train_seconds": seconds, "steps_per_second": stats["steps"] / seconds if seconds > 0 else None,
                "val": None, "val_copy": None, "val_seconds": None, "is_best": False}

    def validate(self, record: dict) -> dict:
        """``record`` with the kept copy's validation metrics per dataset and pooled (rank 0's, sent to all)."""
        t0 = time.perf_counter()
        result = None
        if self.is_main:
            with timing.phase("validation"):
                result = evaluate(self.kept_model, self.val_sets, self.metrics, device=self.device,
                                  batch_size=self.recipe.batch_size, amp="bf16" if self.recipe.amp == "bf16" else None)
        record["val"], record["val_copy"] = accel.broadcast_object(result), self.recipe.selected_copy
        record["val_seconds"] = time.perf_counter() - t0
        return record

    def keep(self, record: dict, best: dict | None) -> dict | None:
        """The best so far after the validated ``record``. When its epoch is kept, rank 0 writes the kept copy to
        ``best/`` and, with an EMA copy, the trained weights of that epoch to ``best_raw/`` (EMA versus none)."""
        r, epoch, kept = self.recipe, record["epoch"], self.kept_model
        value = record["val"][ALL][r.select_metric]
        if not (epoch == r.epochs if r.keep == "last"
                else _is_better(value, None if best is None else best["value"], r.select_mode)):
            return best
        record["is_best"] = True
        if self.is_main:
            meta = {**self.extra_meta, "recipe": r.to_dict(), "epoch": epoch, "value": value, "val": record["val"],
                    "loss": describe_loss(self.loss_fn), "execution": self.execution,
                    "train_set": self.train_set.describe() if hasattr(self.train_set, "describe") else None}
            if getattr(self.train_set, "trained_on", None) is not None:   # palettes and datasets it saw
                meta["trained_on"] = self.train_set.trained_on
            meta.update(select_metric=r.select_metric, select_mode=r.select_mode, selected_copy=r.selected_copy,
                        model_class=type(kept).__name__, versions=_versions())
            save_best(kept, self.out_dir, meta)
            if r.selected_copy == "ema":
                save_best(self.model, self.out_dir, {**meta, "selected_copy": "model", "kept_by": "ema"},
                          name=BEST_RAW_DIR)
        return {"epoch": epoch, "value": value, "val": record["val"]}

    def report(self, record: dict) -> None:
        """With progress, one line per epoch: its validation, or its loss between validations."""
        r, head = self.recipe, f"epoch {record['epoch']:>3}/{self.recipe.epochs}  "
        if not self.progress:
            return
        if record["val"] is None:
            print(f"{head}loss {record['train_loss']:.4g}  (validated every {r.val_every} epochs)")
            return
        parts = [f"{name}: " + " ".join(f"{m} {v:.4g}" for m, v in vals.items() if m != "n")
                 for name, vals in record["val"].items()]
        loss = "" if record.get("train_loss") is None else f"loss {record['train_loss']:.4g}  "
        star = "  * kept" if record.get("is_best") else ""
        print(f"{head}{loss}val[{r.selected_copy}] " + " | ".join(parts) + star)

    def save(self, epoch: int, history: list, best: dict | None) -> None:
        """Rank 0 writes ``history.json`` and ``state.pt``: everything needed to continue after ``epoch``."""
        if self.is_main:
            atomic_write_json(self.out_dir / HISTORY_FILE, history)
            save_state(self.out_dir / STATE_FILE, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                       ema=self.ema, epoch=epoch, history=history, best=best, recipe=self.recipe,
                       execution=self.execution)

    def summary(self, history: list, best: dict | None) -> dict:
        """What ``fit`` returns."""
        best, r = best or {}, self.recipe
        return {"out_dir": str(self.out_dir), "best_dir": str(self.out_dir / BEST_DIR), "best_epoch": best.get("epoch"),
                "best_value": best.get("value"), "best_val": best.get("val"), "select_metric": r.select_metric,
                "selected_copy": r.selected_copy, "epochs_completed": r.epochs, "execution": self.execution,
                "history": history, "ema_model": None if self.ema is None else self.ema.module}


def fit(model: torch.nn.Module, train_set, val_sets: Mapping, loss_fn: Callable, recipe: Recipe, out_dir, *,
        metrics: Mapping[str, Callable] | None = None, device="cpu", resume: bool = False, fresh: bool = False,
        extra_meta: Mapping | None = None, progress: bool = True) -> dict:
    """Train ``model`` (a super-image PreTrainedModel) with ``loss_fn`` under ``recipe``; keep the best epoch.

    ``train_set`` yields ``(lr, hr)`` float RGB pairs (e.g. ``SRPatchDataset``); ``val_sets`` maps a dataset name to
    (lr, hr) pairs; ``metrics`` maps a name to ``fn(sr, hr) -> (N,)`` (default: PSNR and SSIM).
    ``loss_fn(sr, hr) -> scalar`` gets the unclamped output. With ``resume=True`` training continues from
    ``out_dir/state.pt`` when present (a finished run is returned as it is); without it an interrupted run there
    raises TrainingRunExists and a finished one is moved aside, as any run is with ``fresh=True`` (which wins over
    ``resume``). Returns a summary (kept epoch and its metrics, the history, the final EMA copy or None, ``execution``).

    Execution (recorded as ``execution`` in the result, ``thermsr.json`` and ``state.pt``): bf16 autocast,
    channels_last, the device data pipeline (``accel.DevicePatchSampler``) and ``torch.compile`` as the recipe's
    amp, fast and compile resolve on ``device``. Under ``torchrun`` (WORLD_SIZE > 1) the model is wrapped in
    DistributedDataParallel, each rank trains on its slice of every global batch (``recipe.batch_size`` stays the
    global batch), rank 0 validates and alone writes files. SIGINT or SIGTERM stops cleanly (``_StopOnSignal``).
    """
    out_dir = Path(out_dir)
    with _StopOnSignal(recipe.name, out_dir / STATE_FILE, recipe.epochs) as stop:
        run = _Runner(model, train_set, val_sets, loss_fn, recipe, out_dir, metrics=metrics, device=device,
                      extra_meta=extra_meta, progress=progress)
        done, history, best = run.start_or_resume(resume, fresh)
        if done == 0 and recipe.val_at_start and not history:      # epoch 0: the initial model, never kept
            history.append(run.validate({"epoch": 0, "lr": None, "steps": 0, "train_loss": None, "train_terms": {},
                                         "train_term_share": {}, "train_seconds": 0.0, "steps_per_second": None,
                                         "val": None, "val_copy": None, "is_best": False}))
            run.report(history[-1])
        for epoch in range(done + 1, recipe.epochs + 1):
            record = run.train_epoch(epoch)
            stop.hold()     # a signal from here on lets this epoch finish saving first
            if epoch % recipe.val_every == 0 or epoch == recipe.epochs:
                run.validate(record)
                best = run.keep(record, best)
            run.report(record)
            history.append(record)
            run.save(epoch, history, best)
            stop.release(epoch)
        accel.barrier()     # every file of rank 0 is written before any rank returns
        return run.summary(history, best)


def run_meta(manifest_path, init_info: dict, **more) -> dict:
    """What a kept checkpoint records besides its recipe: data manifest hash, initial weights, code version,
    and the determinism settings in force (``config.determinism``)."""
    from .config import code_version, determinism
    from .io import file_sha256

    return {"manifest_sha256": file_sha256(manifest_path), "init_weights": init_info, "code_version": code_version(),
            "lr_recipe": LR_METHOD, "determinism": determinism(), **more}

