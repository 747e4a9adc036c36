"""Checkpoints: the resumable training state (weights, optimiser, schedule, EMA, RNG states) and the kept model.

``state.pt`` holds tensors and plain containers only, so ``torch.load(weights_only=True)`` reads it; every file
is written by temp file + rename. The kept model is a ``best/`` folder written by super-image's
``save_pretrained`` (or as a zoo folder) with ``thermsr.json`` beside it.
"""
from __future__ import annotations

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
# Recipe fields that may change on resume: no effect on results, or (fast) checked through the pipeline it resolves to.
_RESUME_FREE_FIELDS = ("num_workers", "compile", "fast")


# ---------------------------------------------------------------------------------------------
# State: save, load, restore
# ---------------------------------------------------------------------------------------------
def rng_states() -> dict:
    """Python, NumPy and torch (CPU, CUDA) RNG states as tensors and plain values."""
    version, py_state, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    states = {
        "python": {"version": version, "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss_next": gauss},
        "numpy": {"bit_generator": np_state["bit_generator"],
                  "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                  "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                  "gauss": float(np_state["gauss"])},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return states


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


# ---------------------------------------------------------------------------------------------
# The kept model
# ---------------------------------------------------------------------------------------------
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

