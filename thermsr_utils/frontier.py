"""The perception–distortion frontier of notebook 07: which sweep points the runner trained, their scores on the
test crops (through the one evaluation engine, cached per checkpoint), the non-dominated set, where the curve
bends, and how far apart seeds land.

The points are the ones ``run.frontier_points`` executes: v2 at every λ of ``frontier_lambdas`` (with
``frontier_v2_epochs`` epochs), v1 at every seed of ``frontier_seeds`` (the main run's schedule) and v2 at every
seed (again ``frontier_v2_epochs``). A point's folder is named by ``config.point_name``; the one whose values are
the main run's is the main run itself. The main run's v2 also gives EMA against its raw weights at the same epoch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import config, evaluate, io, stats

METRICS = ("psnr", "ssim", "lpips", "dists", "nose_err_px")
TABLE_COLUMNS = [("method", "Method"), ("n", "N"), ("psnr", "PSNR (dB)"), ("ssim", "SSIM"), ("lpips", "LPIPS"),
                 ("dists", "DISTS"), ("nose_err_px", "Nose median (px)")]
_DIGITS = {"psnr": 2, "ssim": 3, "lpips": 4, "dists": 4, "nose_err_px": 2}


@dataclass(frozen=True)
class Entry:
    """One model of the frontier study."""

    label: str            # its method name in tables and figures
    group: str            # "lambda", "v1 seed", "v2 seed", "ema" or "raw"
    value: float | None   # λ or the seed (None for the EMA / raw pair)
    paths: config.RunPaths
    checkpoint: Path      # the saved model folder

    @property
    def trained(self) -> bool:
        return (self.checkpoint / "config.json").is_file()


def planned(profile: str, lambdas, seeds, v2_epochs: int) -> list[Entry]:
    """Every model the frontier sweeps of ``profile`` produce, in the order the runner trains them."""
    from .checkpoint import BEST_DIR, BEST_RAW_DIR

    def at(values: dict) -> config.RunPaths:
        return config.run_paths(profile, config.point_name(profile, values))

    out = []
    for lam in lambdas:
        p = at({"lpips_weight": float(lam), "v2_epochs": v2_epochs})
        out.append(Entry(f"v2 λ={float(lam):g}", "lambda", float(lam), p, p.checkpoints / "v2" / BEST_DIR))
    for seed in seeds:
        p = at({"seed": seed})
        out.append(Entry(f"v1 seed {seed}", "v1 seed", seed, p, p.checkpoints / "v1" / BEST_DIR))
    for seed in seeds:
        p = at({"seed": seed, "v2_epochs": v2_epochs})
        out.append(Entry(f"v2 seed {seed}", "v2 seed", seed, p, p.checkpoints / "v2" / BEST_DIR))
    main = config.run_paths(profile)
    out.append(Entry("v2 (EMA)", "ema", None, main, main.checkpoints / "v2" / BEST_DIR))
    out.append(Entry("v2 raw weights", "raw", None, main, main.checkpoints / "v2" / BEST_RAW_DIR))
    return out


def _checkpoint_sha256(folder: Path) -> str:
    """One sha256 over the names and contents of every file of a saved model folder."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(f.relative_to(folder).as_posix().encode() + b"\0" + io.file_sha256(f).encode() + b"\0")
    return h.hexdigest()


def score(entries, crops_dir, records, scorer, *, batch_size: int = 8, device: str = "cpu") -> dict[Path, list[dict]]:
    """Per-crop rows of each entry's model on ``records`` (method = its label), by checkpoint folder.

    Cached in each point's results folder next to the checkpoint's sha256: a rerun of 07 scores only what
    changed. The models still to score are scored together, batch by batch, so each HR batch's DISTS features
    and nose answers are computed once for all of them."""
    from . import models

    ids = sorted(r["id"] for r in records)
    out, todo = {}, {}
    for entry in entries:
        if entry.checkpoint in out or entry.checkpoint in todo:
            continue
        if not entry.trained:
            raise FileNotFoundError(f"{entry.label}: no trained model in {entry.checkpoint}; run the frontier sweeps "
                                    f"(python -m thermsr_utils.run --profile {entry.paths.profile} --only 07)")
        stem = evaluate.result_stem(entry.paths.results, f"frontier {entry.label}")
        sha = _checkpoint_sha256(entry.checkpoint)
        if stem.with_suffix(".csv").is_file() and stem.with_suffix(".json").is_file():
            meta = io.read_json(stem.with_suffix(".json"))
            if (meta.get("checkpoint_sha256") == sha and meta.get("ids") == ids
                    and meta.get("instruments") == scorer.instruments()):
                out[entry.checkpoint] = evaluate.read_rows(stem.with_suffix(".csv"))
                continue
        todo[entry.checkpoint] = (entry, stem, sha)
    if not todo:
        return out
    loaded = {ckpt: models.load_model(ckpt, device=device) for ckpt in todo}
    methods = {todo[ckpt][0].label: evaluate.model_method(model, batch_size, device)
               for ckpt, (model, _) in loaded.items()}
    rows = evaluate.evaluate_methods(methods, crops_dir, records, scorer, batch_size=batch_size)
    for ckpt, (entry, stem, sha) in todo.items():
        evaluate.write_rows(rows[entry.label], stem.with_suffix(".csv"),
                            {"method": entry.label, "weights": loaded[ckpt][1], "ids": ids,
                             "checkpoint_sha256": sha, "instruments": scorer.instruments()})
        out[ckpt] = rows[entry.label]
    return out


def summarise(rows: list[dict], methods, *, n_boot: int = 2000, seed: int = 0) -> list[dict]:
    """One row per method: each metric's statistic (mean; median for the nose error) over its crops with a
    bootstrap interval (``<metric>_lo`` / ``<metric>_hi``)."""
    out = []
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            raise ValueError(f"no rows of method {method!r} to summarise")
        row = {"method": method, "n": len(mine)}
        for metric in METRICS:
            ci = stats.interval([r.get(metric, math.nan) for r in mine], stats.METRIC_STAT[metric], n_boot=n_boot,
                                seed=seed)
            row.update({metric: ci["value"], f"{metric}_lo": ci["lo"], f"{metric}_hi": ci["hi"]})
            if metric == "nose_err_px":
                row["nose_n"] = ci["n"]
        out.append(row)
    return out


def non_dominated(summary: list[dict], x: str = "psnr", y: str = "lpips") -> list[str]:
    """Methods no other method beats on both ``x`` and ``y`` (each in its own better direction), ordered by x."""
    dx, dy = stats.METRIC_DIRECTION[x], stats.METRIC_DIRECTION[y]
    pts = [(r["method"], dx * r[x], dy * r[y]) for r in summary if math.isfinite(r[x]) and math.isfinite(r[y])]
    keep = [m for m, a, b in pts
            if not any((a2 >= a and b2 >= b) and (a2 > a or b2 > b) for m2, a2, b2 in pts if m2 != m)]
    return sorted(keep, key=lambda m: next(r[x] for r in summary if r["method"] == m))


def bend(lambdas, xs, ys) -> float | None:
    """The λ where the curve (x, y) ordered by λ bends most: the point farthest from the chord between its ends,
    in coordinates scaled to [0, 1]. None for fewer than three points or a flat curve."""
    order = np.argsort(np.asarray(lambdas, float))
    lam = np.asarray(lambdas, float)[order]
    pts = np.stack([np.asarray(xs, float)[order], np.asarray(ys, float)[order]], axis=1)
    if len(lam) < 3 or not np.isfinite(pts).all():
        return None
    span = pts.max(axis=0) - pts.min(axis=0)
    if (span == 0).any():
        return None
    pts = (pts - pts.min(axis=0)) / span
    a, b = pts[0], pts[-1]
    chord = b - a
    norm = float(np.hypot(*chord))
    if norm == 0:
        return None
    dist = np.abs(chord[0] * (pts[:, 1] - a[1]) - chord[1] * (pts[:, 0] - a[0])) / norm
    return float(lam[int(np.argmax(dist))])


def steps(summary: list[dict], metric: str) -> tuple[int, int]:
    """(steps where ``metric`` fell, steps in all) along consecutive rows of ``summary``."""
    values = [r[metric] for r in summary]
    falls = sum(b < a for a, b in zip(values, values[1:]))
    return falls, max(len(values) - 1, 0)


def spread(summary: list[dict], metric: str) -> float:
    """Largest minus smallest value of ``metric`` over the rows (e.g. the seeds of one recipe)."""
    values = [r[metric] for r in summary if math.isfinite(r[metric])]
    return float(max(values) - min(values)) if values else math.nan


def table_markdown(summary: list[dict], caption: str) -> str:
    """The frontier table: one row per model, every metric as value [interval]."""
    def cell(r: dict, metric: str) -> str:
        d = _DIGITS[metric]
        if not math.isfinite(r[metric]):
            return "–"
        return f"{r[metric]:.{d}f} [{r[metric + '_lo']:.{d}f}, {r[metric + '_hi']:.{d}f}]"
    rows = ([r["method"], r["n"], *(cell(r, m) for m in METRICS)] for r in summary)
    return io.markdown_table([label for _, label in TABLE_COLUMNS], rows, caption)


def write_table(summary: list[dict], stem, caption: str) -> tuple[Path, Path]:
    """``stem``.csv (every field) and ``stem``.md (``table_markdown``), atomically."""
    return io.atomic_write_csv_and_md(summary, stem, table_markdown(summary, caption))
