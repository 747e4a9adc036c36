"""Evaluation: run a method over manifest crops, score every crop, and aggregate into tables.

One CSV row per crop (`id`, `dataset`, `subject`, `source`, every metric, nose columns, detection and failure flags,
and the same nose columns of an optional second, independent landmark model, prefixed `nose2_`) is
written under the profile's results folder, with a JSON beside it holding the resolved parameters, the weight
source and every substitute used. Tables follow the write-up's layout: method × split (all / SF-TL54 / ThermEval-D).
"""
from __future__ import annotations

import csv
import io as _io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import data, instrument, readers, timing
from .progress import LineProgress, plain_progress
from .io import (atomic_write_csv_and_md, atomic_write_json, atomic_write_text, markdown_table, read_image, read_json,
                 write_png)
from .metric_specs import METRICS

SPLITS = ("all", *data.DATASET_LABELS.values())
# A nose model's per-crop columns (nose_ primary, nose2_ second): found on HR / SR, SR-vs-HR distance, distances to
# the ground truth, and fail (1.0 when it found no nose on the SR crop, 0.0 when it did, NaN when it did not run)
NOSE_KEYS = ("hr_found", "sr_found", "err_px", "gt_err_hr", "gt_err_sr", "fail")
# subject (SF-TL54; empty for ThermEval-D) and source (the raw frame) name the bootstrap unit of each crop
ROW_FIELDS = ["id", "dataset", "subject", "source", "palette", "method", "psnr", "ssim", "psnr_y", "ssim_y", "lpips", "dists",
              "lpips_vgg", "grad_ratio", "hf_ratio", "nose_hr_found", "nose_sr_found", "nose_err_px", "nose_gt_err_hr", "nose_gt_err_sr",
              "nose_fail", *(f"nose2_{k}" for k in NOSE_KEYS)]


def _nose_columns(prefix: str, name: str) -> list[tuple[str, str]]:
    """A landmark model's result columns: median and mean of its displacement, its misses on HR and on SR."""
    err = METRICS[f"{prefix}_err_px"]
    return [*((f"{prefix}_{s}", f"{name} {s} ({err.unit}) {err.arrow}") for s in ("median", "mean")),
            *((f"{prefix}_failed_{x.lower()}", f"{name} failed on {x}") for x in ("HR", "SR"))]


TABLE_COLUMNS = [("method", "Method"), ("split", "Split"), ("n", "N"),
                 *((k, METRICS[k].heading(arrow=True)) for k in ("psnr", "ssim", "lpips", "dists")),
                 *_nose_columns("nose", "Nose"), *_nose_columns("nose2", "Nose 2")]
# Columns a table shows only where at least one of its rows has a value (the second nose model is optional)
OPTIONAL_COLUMNS = ("nose2_median", "nose2_mean", "nose2_failed_hr", "nose2_failed_sr")
# The caption's words for what every interval resamples (stats.resampling_unit: SF-TL54 subject / ThermEval-D frame)
CAPTION_UNIT = "bootstrap unit: subject/frame"
# The perceptual metrics a Scorer computes besides PSNR/SSIM (Scorer attribute = row key).
PERCEPTUAL_KEYS = ("lpips", "dists", "lpips_vgg")
# What the notebooks score by default: LPIPS-VGG doubles the cost of an evaluation on a CPU and no table or
# sentence reads it (sr_folder --perceptual lpips_vgg still computes it).
DEFAULT_PERCEPTUAL = ("lpips", "dists")

def load_crops(crops_dir, records) -> np.ndarray:
    """The HR crops of ``records`` as one uint8 BGR array N×H×W×3."""
    import cv2

    return np.stack([read_image(Path(crops_dir) / r["path"], cv2.IMREAD_COLOR) for r in records])


def table_subset(records, per_dataset: int | None = 60) -> list[dict]:
    """The write-up's table subset: the first ``per_dataset`` test crops of each dataset (None = all)."""
    out = []
    for name in ("sftl54", "thermeval"):
        recs = [r for r in records if r["split"] == "test" and r["dataset"] == name]
        out += recs if per_dataset is None else recs[:per_dataset]
    return out


# ---- Methods: callables uint8 BGR LR batch (N×h×w×3) → float RGB SR tensor N×3×H×W (unclamped) ----
def bicubic_method(scale: int = data.SCALE) -> Callable:
    """Bicubic upsampling (cv2.INTER_CUBIC), the no-model baseline."""
    import cv2

    def sr(lr):
        return data.bgr_to_tensor(np.stack([cv2.resize(x, (x.shape[1] * scale, x.shape[0] * scale),
                                                       interpolation=cv2.INTER_CUBIC) for x in lr]))
    return sr


def model_method(model, batch_size: int = 8, device: str = "cpu", self_ensemble: bool = False) -> Callable:
    """A super-image model, batched, no grad; ``self_ensemble``: the mean over the 8 flips and 90° turns of the
    input (``models.upscale``)."""
    from . import models

    def sr(lr):
        return models.upscale(model, data.bgr_to_tensor(lr), batch_size=batch_size, device=device,
                              self_ensemble=self_ensemble)
    return sr


class CachedLocator:
    """A nose locator that remembers its answer per image content (SHA-1 of the pixels), so the HR crops every
    method is scored against are located once. ``calls`` counts the images the wrapped (deterministic) locator
    was given."""

    def __init__(self, locator, cache: dict | None = None):
        self.locator = locator
        self.name = getattr(locator, "name", type(locator).__name__)
        self.cache = {} if cache is None else cache
        self.calls = 0

    def locate(self, images_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 BGR N×H×W×3 → (N×2 float64 xy, NaN where not found; N bool found), from the cache where possible."""
        import hashlib

        keys = [hashlib.sha1(np.ascontiguousarray(img).tobytes() + repr(img.shape).encode()).hexdigest()
                for img in images_bgr]
        todo = [i for i, k in enumerate(keys) if k not in self.cache and keys.index(k) == i]   # first of each new
        if todo:
            xy, found = self.locator.locate(np.ascontiguousarray(images_bgr[todo]))
            xy, found = np.asarray(xy, dtype=np.float64), np.asarray(found)
            if xy.shape != (len(todo), 2) or found.shape != (len(todo),):
                raise ValueError(f"locator {self.name!r} returned xy {xy.shape} and found {found.shape} for "
                                 f"{len(todo)} images")
            self.calls += len(todo)
            for j, i in enumerate(todo):
                self.cache[keys[i]] = (xy[j].copy(), bool(found[j]))
        xy = np.array([self.cache[k][0] for k in keys], dtype=np.float64).reshape(len(keys), 2)
        found = np.array([self.cache[k][1] for k in keys], dtype=bool)
        return xy, found


@dataclass
class Scorer:
    """Everything that scores an SR batch against its HR batch: metrics, LPIPS/DISTS and the nose locators (the
    primary ``locator``, whose columns are nose_*, and an optional, independent ``locator2``: nose2_*)."""

    lpips: object | None = None          # metrics.LPIPSMetric (AlexNet) or None
    locator: object | None = None        # downstream.NoseLocator or None
    device: str = "cpu"
    dists: object | None = None          # metrics.DISTSMetric or None
    lpips_vgg: object | None = None      # metrics.LPIPSMetric(net="vgg") or None
    pixel_extras: bool = True            # SSIM, the Y-channel PSNR/SSIM and the sharpness ratios besides PSNR
    locator2: object | None = None       # a second, independent downstream.NoseLocator (nose2_* columns) or None
    _hr_nose: dict = field(default_factory=dict, repr=False)   # CachedLocator's answers, by pixel hash
    _hr_nose2: dict = field(default_factory=dict, repr=False)  # the same for locator2

    def substitutes(self) -> dict:
        """Names of the perceptual metrics and the nose models used, as recorded with every result
        (``nose_locator2`` only when a second nose model runs)."""
        out = {key: getattr(getattr(self, key), "name", "not computed") for key in PERCEPTUAL_KEYS}
        out["nose_locator"] = getattr(self.locator, "name", "not computed")
        if self.locator2 is not None:
            out["nose_locator2"] = getattr(self.locator2, "name", type(self.locator2).__name__)
        return out

    def instruments(self) -> dict:
        """Full records (weight files, sha256, settings) of every instrument, for result metadata."""
        out = {key: (m.describe() if hasattr(m, "describe") else getattr(m, "name", None))
               for key in PERCEPTUAL_KEYS if (m := getattr(self, key)) is not None}
        for key, loc in (("nose_locator", self.locator), ("nose_locator2", self.locator2)):
            if loc is not None:
                out[key] = getattr(loc, "settings", {"name": getattr(loc, "name", None)})
        return out

    def score(self, ids, sr, hr_bgr, gt_xy, scale: int = data.SCALE) -> dict[str, np.ndarray]:
        """Per-image metric arrays for one batch (``sr`` float RGB, ``hr_bgr`` uint8); the Y-channel metrics
        shave ``scale`` pixels of border."""
        from . import metrics

        hr = data.bgr_to_tensor(hr_bgr)
        sr = sr.detach().float().cpu().clamp(0, 1)
        n = len(ids)
        with timing.phase("score psnr/ssim"):
            out = {"psnr": metrics.psnr(sr, hr).numpy()}
            if self.pixel_extras:
                out |= {"ssim": np.asarray(metrics.ssim(sr, hr)), "psnr_y": metrics.psnr_y(sr, hr, shave=scale).numpy(),
                        "ssim_y": np.asarray(metrics.ssim_y(sr, hr, shave=scale)),
                        "grad_ratio": metrics.grad_ratio(sr, hr).numpy(),
                        "hf_ratio": metrics.hf_energy_ratio(sr, hr).numpy()}
            else:
                out |= {key: np.full(n, np.nan) for key in ("ssim", "psnr_y", "ssim_y", "grad_ratio", "hf_ratio")}
        for key in PERCEPTUAL_KEYS:
            metric = getattr(self, key)
            if metric is None:
                out[key] = np.full(n, np.nan)
                continue
            with timing.phase(f"score {key}"):
                out[key] = metric(sr.to(self.device), hr.to(self.device)).cpu().numpy()
        sr_bgr = data.tensor_to_bgr(sr) if self.locator is not None or self.locator2 is not None else None
        # each locator sits behind a cache shared by every batch and method this Scorer scores
        for prefix, locator, cache in (("nose", self.locator, self._hr_nose), ("nose2", self.locator2, self._hr_nose2)):
            if locator is not None:
                from . import downstream

                with timing.phase(f"score {prefix}"):
                    err = downstream.nose_errors(CachedLocator(locator, cache), hr_bgr, sr_bgr, gt_xy)
                cols = {"hr_found": err["hr_found"], "sr_found": err["sr_found"], "err_px": err["err_px"],
                        "gt_err_hr": err.get("err_gt_hr", np.full(n, np.nan)),
                        "gt_err_sr": err.get("err_gt_sr", np.full(n, np.nan)),
                        "fail": (~err["sr_found"]).astype(np.float64)}
            elif prefix == "nose":   # the primary's found flags stay False without a locator (as before)
                cols = {"hr_found": np.zeros(n, bool), "sr_found": np.zeros(n, bool),
                        **{k: np.full(n, np.nan) for k in ("err_px", "gt_err_hr", "gt_err_sr", "fail")}}
            else:                    # no second model: every nose2_* column is NaN (not computed)
                cols = {k: np.full(n, np.nan) for k in NOSE_KEYS}
            out.update({f"{prefix}_{k}": v for k, v in cols.items()})
        return out


def evaluate_method(name: str, sr_fn: Callable, crops_dir, records, scorer: Scorer, *, batch_size: int = 8,
                    scale: int = data.SCALE, save_sr_dir=None, progress: bool = True) -> list[dict]:
    """Score method ``name`` on every record; one row per crop. SR crops are saved as PNG if asked."""
    return evaluate_methods({name: sr_fn}, crops_dir, records, scorer, batch_size=batch_size, scale=scale,
                            save_sr_dirs=None if save_sr_dir is None else {name: save_sr_dir}, progress=progress)[name]


def evaluate_methods(methods: dict[str, Callable], crops_dir, records, scorer: Scorer, *, batch_size: int = 8,
                     scale: int = data.SCALE, save_sr_dirs: dict | None = None, progress: bool = True
                     ) -> dict[str, list[dict]]:
    """Score several methods on the same records, batch by batch: {name: one row per crop}.

    The next batch is read in a background thread while every method scores the current one, so what the
    metrics compute once per HR batch (DISTS's HR features, the nose locators' HR answers) is shared.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    rows = {name: [] for name in methods}
    save_sr_dirs = save_sr_dirs or {}
    batches = [records[start:start + batch_size] for start in range(0, len(records), batch_size)]
    desc = next(iter(methods)) if len(methods) == 1 else f"{len(methods)} methods"
    lines = LineProgress(f"evaluating {desc}", len(batches), "batches") if progress and plain_progress() else None
    with ThreadPoolExecutor(max_workers=1) as reader:
        pending = reader.submit(load_crops, crops_dir, batches[0]) if batches else None
        for i, recs in enumerate(tqdm(batches, desc=desc, disable=not progress or lines is not None, leave=False)):
            if lines is not None:
                lines.update(i)
            hr = pending.result()
            if i + 1 < len(batches):
                pending = reader.submit(load_crops, crops_dir, batches[i + 1])
            lr = data.area_downsample_array(hr, scale)
            gt = instrument.to_pixel_centres([r["nose"] if r.get("nose") is not None else [np.nan, np.nan] for r in recs])
            for name, sr_fn in methods.items():
                with timing.phase("SR inference"):
                    sr = sr_fn(lr)
                scores = scorer.score([r["id"] for r in recs], sr, hr, gt, scale=scale)
                if name in save_sr_dirs:
                    for r, img in zip(recs, data.tensor_to_bgr(sr)):
                        write_png(Path(save_sr_dirs[name]) / f"{r['id']}.png", img)
                for j, r in enumerate(recs):
                    row = {"id": r["id"], "dataset": r["dataset"], "subject": r.get("subject"),
                           "source": r.get("source"), "palette": readers.record_palette(r), "method": name}
                    row.update({k: (bool(v[j]) if v.dtype == bool else float(v[j])) for k, v in scores.items()})
                    rows[name].append(row)
    return rows


# ---- Files ----
def write_rows(rows: list[dict], path, meta: dict) -> Path:
    """Write per-crop rows as CSV and ``meta`` (parameters, weight source, substitutes) as JSON beside it."""
    path = Path(path)
    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=ROW_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())
    atomic_write_json(path.with_suffix(".json"), meta)
    return path


def read_rows(path) -> list[dict]:
    """Rows written by ``write_rows`` with numbers and flags parsed back (subject an int or None, source a str)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for k, v in row.items():
            if k == "subject":
                row[k] = int(v) if v.strip() else None
            elif k not in ("id", "dataset", "method", "source", "palette"):
                row[k] = (v == "True") if v in ("True", "False") else float(v)
    return rows


def result_stem(results_dir, method: str) -> Path:
    """Where the per-crop rows of ``method`` live: ``<results_dir>/<method, spaces as _>`` (+ .csv/.json)."""
    return Path(results_dir) / method.replace(" ", "_")


def read_method(results_dir, method: str) -> list[dict]:
    """The per-crop rows of ``method`` that a notebook wrote into ``results_dir`` (``result_stem`` + .csv)."""
    return read_rows(result_stem(results_dir, method).with_suffix(".csv"))


def retire_zero_shot(results_dir, kept) -> list[str]:
    """Remove the per-crop results (CSV, JSON and SR images) of zero-shot methods an earlier run of notebook 02
    scored but this one did not (``kept``: this run's method names), so that nothing downstream reads them as this
    run's; say which. Returns the removed methods."""
    import shutil

    gone = [m for m in zero_shot_weights(results_dir) if m not in set(kept)]
    for method in gone:
        stem = result_stem(results_dir, method)
        for suffix in (".csv", ".json"):
            stem.with_suffix(suffix).unlink(missing_ok=True)
        shutil.rmtree(result_stem(Path(results_dir) / "sr", method), ignore_errors=True)
        print(f"removed the results of {method} from an earlier run: this run does not score it")
    return gone


def zero_shot_weights(results_dir) -> dict[str, dict]:
    """{method: weights info} of every zero-shot model notebook 02 scored (its ``zero-shot_*.json`` files)."""
    metas = [read_json(path) for path in sorted(Path(results_dir).glob("zero-shot_*.json"))]
    return {meta["method"]: meta["weights"] for meta in metas}


# ---- Aggregation and tables ----
def _nanmean(values) -> float:
    a = np.asarray(values, float)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else float("nan")


def _nose_summary(rows: list[dict], prefix: str, found: Callable) -> dict:
    """A landmark model's statistics: median/mean displacement where both detections succeeded, how often each
    failed (``found`` reads a flag), the mean error against the true nose and the failure rate on SR crops."""
    err = np.array([r.get(f"{prefix}_err_px", math.nan) for r in rows], float)
    ok = np.isfinite(err)
    return {
        f"{prefix}_median": float(np.median(err[ok])) if ok.any() else float("nan"),
        f"{prefix}_mean": float(err[ok].mean()) if ok.any() else float("nan"),
        f"{prefix}_failed": int((~ok).sum()),
        f"{prefix}_failed_hr": int(sum(not found(r[f"{prefix}_hr_found"]) for r in rows)),
        f"{prefix}_failed_sr": int(sum(not found(r.get(f"{prefix}_sr_found")) for r in rows)),
        f"{prefix}_gt_sr": _nanmean([r.get(f"{prefix}_gt_err_sr", math.nan) for r in rows]),
        f"{prefix}_fail_rate": _nanmean([r.get(f"{prefix}_fail", math.nan) for r in rows]),
    }


def summarize(rows: list[dict]) -> dict:
    """Means of every metric over ``rows`` (NaN-aware) and each landmark model's ``_nose_summary`` (``nose2_*``
    over the rows where the second model ran; NaN where it ran on none)."""
    ran = [r for r in rows if _flag(r.get("nose2_hr_found")) is not None]
    return {
        "n": len(rows),
        **{key: _nanmean([r[key] for r in rows]) for key in ("psnr", "ssim", "psnr_y", "ssim_y")},
        **{key: _nanmean([r.get(key, math.nan) for r in rows]) for key in PERCEPTUAL_KEYS},
        "grad_ratio": _nanmean([r["grad_ratio"] for r in rows]),
        "hf_ratio": _nanmean([r["hf_ratio"] for r in rows]),
        **_nose_summary(rows, "nose", _truthy),
        **{k: (v if ran else float("nan")) for k, v in _nose_summary(ran, "nose2", _flag).items()},
    }


def aggregate(rows: list[dict]) -> list[dict]:
    """Method × split table rows (``summarize`` of each method's crops per split)."""
    table = []
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for method in methods:
        for split in SPLITS:
            sel = [r for r in rows if r["method"] == method and split in ("all", data.DATASET_LABELS[r["dataset"]])]
            if sel:
                table.append({"method": method, "split": split, **summarize(sel)})
    return table


def by_palette(rows: list[dict], dataset: str = "sftl54") -> list[dict]:
    """Method × rendering table rows for one dataset's crops ("<dataset label> gray" / "... iron"): what a
    false-colour rendering does to each method. Empty when the crops hold one rendering only."""
    rows = [r for r in rows if r["dataset"] == dataset]
    palettes = sorted({r.get("palette") or "gray" for r in rows})
    if len(palettes) < 2:
        return []
    return [{"method": method, "split": f"{data.DATASET_LABELS[dataset]} {pal}",
             **summarize([r for r in rows if r["method"] == method and (r.get("palette") or "gray") == pal])}
            for method in dict.fromkeys(r["method"] for r in rows) for pal in palettes
            if any(r["method"] == method and (r.get("palette") or "gray") == pal for r in rows)]


def _truthy(value) -> bool:
    """A found-flag from a row (bool, or "True"/"False" read back from CSV)."""
    return value if isinstance(value, bool) else str(value).strip().lower() in ("true", "1")


def _flag(value) -> bool | None:
    """A found-flag that may be missing: True / False (bool or its CSV text), None when not computed (NaN,
    empty or absent)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    text = str(value).strip().lower()
    return True if text in ("true", "1", "1.0") else False if text in ("false", "0", "0.0") else None


def _fmt(key, value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(value)
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return METRICS[key].text(value) if key in METRICS else f"{value:.2f}"   # the nose medians and means: px


def _has_value(value) -> bool:
    return value is not None and not (isinstance(value, float) and not math.isfinite(value))


def shown_columns(table: list[dict], columns=TABLE_COLUMNS) -> list[tuple[str, str]]:
    """``columns`` without the ``OPTIONAL_COLUMNS`` that no row of ``table`` has a value for (the second nose
    model's, when it did not run)."""
    return [(k, label) for k, label in columns
            if k not in OPTIONAL_COLUMNS or any(_has_value(row.get(k)) for row in table)]


def table_markdown(table: list[dict], caption: str, columns=TABLE_COLUMNS) -> str:
    """A Markdown table with a caption line naming the profile and every substitute (optional columns only
    where they have values: ``shown_columns``)."""
    columns = shown_columns(table, columns)
    return markdown_table([label for _, label in columns], ([_fmt(k, row.get(k)) for k, _ in columns] for row in table),
                          caption)


def write_table(table: list[dict], stem, caption: str, columns=TABLE_COLUMNS) -> tuple[Path, Path]:
    """Write ``stem``.csv (all fields) and ``stem``.md (the chosen columns + caption)."""
    return atomic_write_csv_and_md(table, stem, table_markdown(table, caption, columns))


# The provenance entries a caption names, by the name part of each entry (before its parenthesis); the entries in
# full, with versions and checksums, are in the report's provenance appendix and PROVENANCE.json.
CAPTION_ENTRIES = ("data", "lpips", "dists", "nose_locator", "nose_locator2")
CAPTION_POINTER = "sources: provenance appendix"


def caption(profile: str, provenance: dict) -> str:
    """A short tag for a table or figure: the profile, the data and each substitute by name, the bootstrap unit,
    and where the full provenance is."""
    named = [str(provenance[key]).split(" (")[0] for key in CAPTION_ENTRIES if provenance.get(key)]
    return " · ".join([f"profile {profile}", *named, CAPTION_UNIT, CAPTION_POINTER])


def bicubic_psnr_by_dataset(crops_dir, records, split="test", scale=data.SCALE) -> dict[str, float]:
    """Mean PSNR (the write-up's definition) of bicubic ×scale per dataset and over all, in dB."""
    from . import metrics

    out = {}
    chosen = [r for r in records if r["split"] == split]
    sr_fn = bicubic_method(scale)
    for name in sorted({r["dataset"] for r in chosen}) + ["all"]:
        recs = [r for r in chosen if name in ("all", r["dataset"])]
        hr = load_crops(crops_dir, recs)
        sr = sr_fn(np.stack([data.make_lr(h, scale) for h in hr]))
        out[data.DATASET_LABELS.get(name, name)] = float(metrics.psnr(sr, data.bgr_to_tensor(hr)).mean())
    return out


def make_scorer(locator=None, *, device: str = "cpu", perceptual=DEFAULT_PERCEPTUAL, pixel_extras: bool = True,
                locator2=None) -> Scorer:
    """A Scorer with the real ImageNet-trunk metrics named in ``perceptual``, the nose ``locator`` and optionally
    a second, independent nose locator ``locator2`` (``downstream.prepare_locators``; its columns are nose2_*);
    without ``pixel_extras`` PSNR is the only pixel metric (the others are NaN: not computed)."""
    from . import metrics

    makers = {"lpips": lambda: metrics.LPIPSMetric(device=device), "dists": lambda: metrics.DISTSMetric(device=device),
              "lpips_vgg": lambda: metrics.LPIPSMetric(device=device, net="vgg")}
    built = {key: make() for key, make in makers.items() if key in perceptual}
    return Scorer(locator=locator, locator2=locator2, device=device, pixel_extras=pixel_extras, **built)


def _source_label(record) -> str:
    """'name (package==version file, sha256 …)' for an instrument's describe() record."""
    if not isinstance(record, dict):
        return str(record)
    name = record.get("name", "?")
    if record.get("package"):
        where = f"{record['package']}=={record['version']} {Path(record['file']).name}"
    elif record.get("source_package"):
        where = f"{record['source_package']}=={record.get('source_version', '?')}"
    elif record.get("trunk_file"):
        where = f"torchvision cache {record['trunk_file']}"
    else:
        where = record.get("trunk_source", "")
    sha = record.get("sha256") or record.get("trunk_sha256")
    if isinstance(record.get("alpha_beta"), dict):
        ab = record["alpha_beta"]
        sha = f"{sha[:12]}…; α/β {ab['package']}=={ab['version']}" if sha else None
        return f"{name} ({where}, sha256 {sha})"
    return f"{name} ({where}{f', sha256 {sha[:12]}…' if sha else ''})" if where else name


def instrument_provenance(scorer: Scorer) -> dict:
    """One caption-ready line per instrument of ``scorer``: its name and the weight file it used."""
    return {key: _source_label(rec) for key, rec in scorer.instruments().items()}
