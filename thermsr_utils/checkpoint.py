"""Checkpoints: the resumable training state (weights, optimiser, schedule, EMA, RNG states), the kept model, and
a run's ``history.json`` in words (which epoch was kept, whether training levelled off).

``state.pt`` holds tensors and plain containers only, so ``torch.load(weights_only=True)`` reads it; every file
is written by temp file + rename. The kept model is a ``best/`` folder written by super-image's
``save_pretrained`` (or as a zoo folder) with ``thermsr.json`` beside it.
"""
from __future__ import annotations

import math
import os
import random
import shutil
import time
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from .io import atomic_path, load_torch

STATE_FILE = "state.pt"
HISTORY_FILE = "history.json"
BEST_DIR = "best"
BEST_RAW_DIR = "best_raw"    # with an EMA copy: the trained weights at the EMA copy's kept epoch
META_FILE = "thermsr.json"
ALL = "all"                  # key of the pooled validation result (mean over every image)
# Recipe fields that may change on resume: no effect on results, or (fast) checked through the pipeline it resolves to.
_RESUME_FREE_FIELDS = ("num_workers", "compile", "fast")


# ---- State: save, load, restore ----
def rng_states() -> dict:
    """Python, NumPy and torch (CPU, CUDA) RNG states as tensors and plain values."""
    version, py_state, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    return {
        "python": {"version": version, "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss_next": gauss},
        "numpy": {"bit_generator": np_state["bit_generator"],
                  "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                  "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                  "gauss": float(np_state["gauss"])},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_states(states: Mapping) -> None:
    """Restore the RNG states captured by ``rng_states``."""
    py = states["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss_next"]))
    n = states["numpy"]
    np.random.set_state({"bit_generator": n["bit_generator"],
                         "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
                         "has_gauss": n["has_gauss"], "gauss": n["gauss"]})
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_state(path, *, model, optimizer, scheduler, ema, epoch: int, history: list, best: dict | None,
               recipe, execution: dict | None = None) -> None:
    """Write everything needed to resume after ``epoch`` to ``path`` atomically (weights_only-loadable)."""
    state = {
        "format": 1,
        "epoch": int(epoch),
        "recipe": recipe.to_dict(),
        "model": model.state_dict(),
        "ema": None if ema is None else ema.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_states(),
        "history": history,
        "best": best,
        "execution": execution,
    }
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())


def load_state(path) -> dict:
    """Read a ``state.pt`` (``io.load_torch``: weights_only, onto the CPU); errors name the file."""
    state = load_torch(path, "training state")
    if not isinstance(state, dict) or state.get("format") != 1:
        raise ValueError(f"{path} is not a thermsr training state (format 1)")
    return state


def check_resume_recipe(saved: Mapping, recipe, path: Path) -> None:
    """Raise ValueError if the saved recipe differs from ``recipe`` in a field that changes results."""
    current = recipe.to_dict()
    diff = sorted(k for k in set(saved) | set(current)
                  if k not in _RESUME_FREE_FIELDS and saved.get(k) != current.get(k))
    if diff:
        detail = ", ".join(f"{k}: {saved.get(k)!r} → {current.get(k)!r}" for k in diff)
        raise ValueError(f"cannot resume from {path}: the recipe changed ({detail}); restore it, or start over with "
                         "`-p fresh_start True` (fit(..., fresh=True)), which moves the earlier run aside")


def check_resume_pipeline(saved: Mapping | None, execution: Mapping, path: Path) -> None:
    """Raise ValueError if the run in ``path`` drew its patches with another data pipeline than this one would."""
    before = (saved or {}).get("data_pipeline", "DataLoader")
    if before != execution["data_pipeline"]:
        raise ValueError(f"cannot resume from {path}: it drew its training patches with the {before} pipeline "
                         f"but this run would use the {execution['data_pipeline']} pipeline (different random "
                         f"windows); set the recipe's fast={before == 'device'} to continue it")


# ---- The kept model ----
def save_best(model: torch.nn.Module, out_dir, meta: dict, name: str = BEST_DIR) -> Path:
    """Write ``model`` (``save_pretrained``) and ``thermsr.json`` to ``out_dir/<name>`` via a temp folder + rename."""
    from .models import save_model

    return save_model(model, Path(out_dir) / name, extra_json={META_FILE: meta})


def remove_leftovers(out_dir: Path) -> None:
    """Delete the temp folders and files a killed ``save_best`` / ``save_state`` / history write left in ``out_dir``."""
    for p in [*out_dir.glob(f".{BEST_DIR}.*"), *out_dir.glob(f".{BEST_RAW_DIR}.*")]:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
    for name in (STATE_FILE, HISTORY_FILE):   # io.atomic_path's temp names: .<name>.<random><suffix>
        for p in out_dir.glob(f".{name}.*"):
            if p.is_file():
                p.unlink(missing_ok=True)


def set_aside(out_dir: Path) -> Path | None:
    """Rename a training folder that holds a run (state, history or kept model) to the sibling
    ``<name>.old-<date-time>`` and recreate it empty; return the new name, or None when there was no run."""
    if not any((out_dir / name).exists() for name in (STATE_FILE, HISTORY_FILE, BEST_DIR, BEST_RAW_DIR)):
        return None
    base = out_dir.with_name(f"{out_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
    old, n = base, 1
    while old.exists():                      # two fresh starts within a second
        n += 1
        old = base.with_name(f"{base.name}-{n}")
    os.rename(out_dir, old)
    out_dir.mkdir()
    return old


# ---- Reading a history ----
def last_val_change(history: list[dict], metric: str = "psnr") -> tuple[float, int]:
    """How much the pooled validation ``metric`` moved between the last two validations of a ``fit`` history,
    and over how many epochs: (nan, 0) with fewer than two validations."""
    vals = [h for h in history if h["val"]]
    if len(vals) < 2:
        return float("nan"), 0
    return vals[-1]["val"][ALL][metric] - vals[-2]["val"][ALL][metric], vals[-1]["epoch"] - vals[-2]["epoch"]


# How much a validation metric must still improve between the last two validations for a run to count as
# still learning (in its own units), and which way is better.
LEVEL_TOLERANCE = {"psnr": (0.05, +1), "ssim": (0.001, +1), "lpips": (0.002, -1)}


def levelled_words(histories: Mapping[str, list[dict]]) -> str:
    """One sentence per run: every pooled validation metric's change over its last two validations, and whether
    the run was still improving on any of them (``LEVEL_TOLERANCE``)."""
    out = []
    for name, history in histories.items():
        moves, still = [], []
        measured = set.intersection(*(set(h["val"][ALL]) for h in history if h["val"])) if any(
            h["val"] for h in history) else set()
        for metric, (tol, sign) in LEVEL_TOLERANCE.items():
            if metric not in measured:
                continue
            change, epochs = last_val_change(history, metric)
            if epochs == 0 or math.isnan(change):
                continue
            digits = 2 if metric == "psnr" else 4
            moves.append(f"{metric.upper()} {change:+.{digits}f}")
            if sign * change > tol:
                still.append(metric.upper())
        if not moves:
            out.append(f"{name} was validated fewer than twice.")
            continue
        epochs = last_val_change(history, "psnr")[1]
        out.append(f"Over its last {epochs} epochs {name} moved by " + ", ".join(moves) + ": "
                   + (f"**still improving** on {', '.join(still)}, so its scores are not yet what this recipe "
                      "reaches with longer training." if still else "levelled off on every metric."))
    return " ".join(out)


def kept_words(history: list[dict], recipe) -> str:
    """Which epoch the run kept and why, and which epoch the write-up's rule (best validation PSNR) would have kept,
    with both epochs' pooled validation PSNR and (when measured) LPIPS."""
    vals = [h for h in history if h["val"] and h["epoch"] > 0]
    if not vals:
        return "No epoch was validated."
    kept = next((h for h in reversed(vals) if h.get("is_best")), vals[-1])   # each new best is marked; the last is kept
    by_psnr = max(vals, key=lambda h: h["val"][ALL]["psnr"])

    def scores(h):
        v = h["val"][ALL]
        return f"PSNR {v['psnr']:.2f} dB" + (f", LPIPS {v['lpips']:.4f}" if "lpips" in v else "")
    rule = "its last epoch" if recipe.keep == "last" else f"its best validation {recipe.select_metric.upper()}"
    words = f"Kept: epoch {kept['epoch']} ({rule}; {scores(kept)})."
    if by_psnr["epoch"] == kept["epoch"]:
        return words + " It is also the epoch the write-up's rule, the best validation PSNR, would have kept."
    return words + (f" The write-up's rule, the best validation PSNR, would have kept epoch {by_psnr['epoch']} "
                    f"({scores(by_psnr)}).")
