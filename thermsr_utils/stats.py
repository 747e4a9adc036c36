"""Paired bootstrap intervals between two methods, and the words notebooks use for what they show.

Every comparison pairs two methods' crops by ``id`` and puts a percentile bootstrap interval around
stat(new) − stat(base) of a per-crop metric, resampling the independent units with all their crops: the subject
for SF-TL54, the source frame for ThermEval-D (``resampling_unit``; resampling crops, ``unit="crop"``, gives
intervals that are too narrow). A difference is "better" or "worse" only when its interval excludes zero.
Each comparison also carries a two-sided bootstrap p-value (``p``), which ``holm`` adjusts over a family (by
default the nose comparisons). Nose metrics come per landmark model: ``nose_*`` for the first, ``nose2_*`` for a
second (``_err_px`` HR–SR displacement, ``_fail`` no nose on SR, ``_gt_err_sr`` distance to the true nose).
"""
from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .data import DATASET_LABELS
from .evaluate import SPLITS
from .io import atomic_write_csv_and_md, markdown_table
from .metric_specs import METRICS, NOSE_MODELS, spec

# every nose comparison metric: per model, displacement, failure rate and error against the true nose
NOSE_METRICS = tuple(k for k, m in METRICS.items() if m.model)
DEFAULT_METRICS = ("psnr", "ssim", "lpips", "dists", "nose_err_px")
PERCEPTUAL_METRICS = ("lpips", "dists", "nose_err_px")


def model_name(prefix: str, models: Mapping[str, str] | None = None) -> str:
    """The name of the landmark model whose columns start with ``prefix`` ("nose", "nose2", …): its entry in
    ``models`` or "landmark model 1", "landmark model 2", …"""
    if models and models.get(prefix):
        return models[prefix]
    return f"landmark model {prefix[4:] or 1}"


def nose_model(metric: str) -> str | None:
    """The landmark model prefix of a nose metric ("nose" for "nose_fail", "nose2" for "nose2_err_px"), else None."""
    return spec(metric).model or None


def metric_label(metric: str, models: Mapping[str, str] | None = None) -> str:
    """A metric's display label; a nose metric names its model where ``models`` maps its prefix ("nose median
    (RetinaFace)"), else keeps its own label ("nose median", "nose median (model 2)")."""
    m = spec(metric)
    if m.model and models and models.get(m.model):
        return f"{METRICS['nose_' + m.kind].label} ({models[m.model]})"
    return m.label


_GAPS = {"grad_gap": "grad_ratio", "hf_gap": "hf_ratio"}
# what the bootstrap resamples (for captions), and compare()'s choices of unit
BOOTSTRAP_UNIT = "subject (SF-TL54) / source frame (ThermEval-D)"
UNITS = ("subject/frame", "crop")
COMPARISON_COLUMNS = [("pair", "Base → New"), ("split", "Split"), ("metric", "Metric"), ("stat", "Stat"),
                      ("n", "N"), ("base_value", "Base"), ("new_value", "New"),
                      ("interval", "New − Base [95 % CI]"), ("verdict", "Verdict")]


# ---- Per-crop values ----
def _float(value) -> float:
    """``value`` as a float; None, empty strings and anything unparsable become NaN."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def derive_gaps(rows: list[dict]) -> list[dict]:
    """New row dicts with ``grad_gap`` = |1 − grad_ratio| and ``hf_gap`` = |1 − hf_ratio| (NaN where absent)."""
    return [{**r, **{gap: abs(1.0 - _float(r.get(ratio))) for gap, ratio in _GAPS.items()}} for r in rows]


def _missing(value) -> bool:
    """True for None, a blank string or a NaN (a field a row does not really carry)."""
    return value is None or (isinstance(value, str) and not value.strip()) or \
        (isinstance(value, float) and math.isnan(value))


def resampling_unit(row: Mapping) -> str:
    """The cluster key of one per-crop row: "sftl54/subject <n>", "thermeval/<source>", else its "source"."""
    dataset = row.get("dataset")
    field = "dataset" if _missing(dataset) else "subject" if dataset == "sftl54" else "source"
    value = row.get(field)
    if _missing(value):
        raise ValueError(f"crop {row.get('id')!r} has no {field!r} to resample by, so its bootstrap unit is unknown "
                         "(score it again: evaluate.py now writes subject and source into every row).")
    if dataset == "sftl54":
        return f"sftl54/subject {int(value)}"
    return f"thermeval/{value}" if dataset == "thermeval" else str(value)


def _finite(a, b) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a[ok], b[ok], ok) for paired arrays of length n, ok (bool, length n) where both are finite."""
    a, b = np.asarray(a, float).ravel(), np.asarray(b, float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired arrays must have the same length, got {a.size} and {b.size}")
    ok = np.isfinite(a) & np.isfinite(b)
    return a[ok], b[ok], ok


def _stat(x: np.ndarray, stat: str, axis=None):
    """Mean or median of ``x`` along ``axis``."""
    return np.median(x, axis=axis) if stat == "median" else np.mean(x, axis=axis)


# ---- Bootstrap and verdicts ----
def _unit_codes(groups, ok: np.ndarray) -> np.ndarray:
    """Unit index (0..n_units−1, in order of first appearance) of each kept element: length ok.sum()."""
    if len(groups) != ok.size:
        raise ValueError(f"groups must hold one key per element, got {len(groups)} keys for {ok.size} elements")
    keys = [g for g, keep in zip(groups, ok) if keep]
    index = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    return np.array([index[k] for k in keys], dtype=np.intp)


def _cluster_stat(x: np.ndarray, codes: np.ndarray, counts: np.ndarray, stat: str) -> np.ndarray:
    """stat per replicate (length n_boot) of x (length n), unit codes[i]'s elements taken counts[r, unit] times."""
    if stat == "mean":
        sums = np.bincount(codes, weights=x, minlength=counts.shape[1])
        sizes = np.bincount(codes, minlength=counts.shape[1])
        return (counts @ sums) / (counts @ sizes)
    order = np.argsort(x, kind="stable")
    cum = np.cumsum(counts[:, codes[order]], axis=1)            # n_boot×n: elements up to each sorted value
    total = cum[:, -1:]
    lower = (cum < (total + 1) // 2).sum(axis=1)                # the two middle elements (equal when total is odd)
    upper = (cum < total // 2 + 1).sum(axis=1)
    xs = x[order]
    return (xs[lower] + xs[upper]) / 2


def paired_bootstrap(a, b, stat: str = "mean", n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                     groups=None) -> dict:
    """stat(b) − stat(a) for paired per-crop arrays (length n) with a ``level`` percentile bootstrap interval.

    Non-finite pairs are dropped. Without ``groups`` each replicate draws n crops with replacement (one
    n_boot×n index matrix from ``np.random.default_rng(seed)``); with ``groups`` (a unit key per element) it draws
    as many units and takes every element of each. The interval is widened to contain ``diff`` where the
    percentile interval misses it (rounding, a median on few crops). ``p``: ``bootstrap_p`` of the replicates (0:
    p < 1/n_boot). Returns {"diff", "lo", "hi", "p", "n", "n_units", "unit" ("crop"/"cluster"), "n_dropped",
    "stat", "level", "n_boot", "seed"}; NaNs with n = 0 when no finite pair is left.
    """
    if stat not in ("mean", "median"):
        raise ValueError(f"stat must be 'mean' or 'median', got {stat!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    a, b, ok = _finite(a, b)
    codes = None if groups is None else _unit_codes(groups, ok)
    n_units = int(a.size) if codes is None else int(codes.max(initial=-1)) + 1
    out = {"n": int(a.size), "n_units": n_units, "unit": "crop" if groups is None else "cluster",
           "n_dropped": int(ok.size - a.size), "stat": stat, "level": level, "n_boot": n_boot, "seed": seed}
    if a.size == 0:
        return {"diff": math.nan, "lo": math.nan, "hi": math.nan, "p": math.nan, **out}
    diff = float(_stat(b, stat) - _stat(a, stat))
    # n_boot replicates, each drawing n_units crops or units (one draw for both, so one-crop units give the crop
    # bootstrap's replicates); with units, counts (n_boot×n_units) is how often each unit is drawn
    idx = np.random.default_rng(seed).integers(0, n_units, size=(n_boot, n_units))
    if codes is None:
        boot = _stat(b[idx], stat, axis=1) - _stat(a[idx], stat, axis=1)
    else:
        flat = (idx + n_units * np.arange(n_boot)[:, None]).ravel()
        counts = np.bincount(flat, minlength=n_boot * n_units).reshape(n_boot, n_units)
        boot = _cluster_stat(b, codes, counts, stat) - _cluster_stat(a, codes, counts, stat)
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return {"diff": diff, "lo": min(float(lo), diff), "hi": max(float(hi), diff), "p": bootstrap_p(boot), **out}


def bootstrap_p(replicates) -> float:
    """Two-sided bootstrap p-value of "no difference" from replicates of a difference (length n_boot):
    min(1, 2·min(share of replicates ≤ 0, share ≥ 0)); NaN without finite replicates."""
    boot = np.asarray(replicates, float).ravel()
    boot = boot[np.isfinite(boot)]
    if boot.size == 0:
        return math.nan
    return float(min(1.0, 2 * min(np.mean(boot <= 0), np.mean(boot >= 0))))


def interval(values, stat: str = "mean", n_boot: int = 2000, seed: int = 0, level: float = 0.95,
             groups=None) -> dict:
    """stat of one method's per-crop ``values`` with ``paired_bootstrap``'s interval (against zeros): {"value",
    "lo", "hi", "n", "n_units", "unit", "n_dropped", "stat"}; NaNs with n = 0 when no value is finite."""
    x = np.asarray(values, float).ravel()
    ci = paired_bootstrap(np.zeros_like(x), x, stat, n_boot=n_boot, seed=seed, level=level, groups=groups)
    return {"value": ci["diff"], "lo": ci["lo"], "hi": ci["hi"], "n": ci["n"], "n_units": ci["n_units"],
            "unit": ci["unit"], "n_dropped": ci["n_dropped"], "stat": stat}


def verdict(ci: dict, direction: int | str) -> str:
    """"better" / "worse" when ci's [lo, hi] excludes 0 on the good / bad side of ``direction`` (+1, −1 or a
    metric name), "no detectable difference" when it contains 0, "not measured" when it is NaN."""
    if isinstance(direction, str):
        direction = METRICS[direction].direction
    lo, hi = _float(ci["lo"]), _float(ci["hi"])
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "not measured"
    if lo > 0 or hi < 0:
        return "better" if (lo > 0) == (direction > 0) else "worse"
    return "no detectable difference"


# ---- Comparing two methods ----
def _by_id(rows: list[dict], method: str) -> dict[str, dict]:
    """{crop id: row} of ``method``; a ValueError when the method is absent or scored a crop twice."""
    out = {}
    for r in rows:
        if r["method"] != method:
            continue
        if r["id"] in out:
            raise ValueError(f"method {method!r} has more than one row for crop {r['id']!r}.")
        out[r["id"]] = r
    if not out:
        present = sorted({r["method"] for r in rows})
        raise ValueError(f"method {method!r} has no rows to compare (methods present: {present}).")
    return out


def compare(rows: list[dict], base: str, new: str, metrics=None, splits=SPLITS, ids=None, n_boot: int = 2000,
            seed: int = 0, level: float = 0.95, unit: str = "subject/frame") -> list[dict]:
    """new − base per split × metric over the crops both methods scored (paired by "id", within ``ids``).

    ``metrics`` defaults to DEFAULT_METRICS that rows carry, then the other NOSE_METRICS with a finite value on
    some compared crop; ``grad_gap``/``hf_gap`` are derived when asked for; each metric's statistic is its
    ``METRICS`` entry's. ``unit="subject/frame"`` resamples ``resampling_unit`` of the base rows, "crop" crops.
    Returns rows {"base", "new", "split", "metric", "stat", "base_value", "new_value", "diff", "lo", "hi", "n",
    "n_dropped", "verdict", "n_units", "unit", "p", "n_boot"} (values over crops where both are finite; a split
    without crops is NaN, n 0).
    """
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
    a_rows, b_rows = _by_id(rows, base), _by_id(rows, new)
    wanted = None if ids is None else set(ids)
    shared = [i for i in a_rows if i in b_rows and (wanted is None or i in wanted)]
    if not shared:
        raise ValueError(f"methods {base!r} and {new!r} share no crop ids"
                         + (" within the given ids." if ids is not None else "."))
    for i in shared:
        if a_rows[i]["dataset"] != b_rows[i]["dataset"]:
            raise ValueError(f"crop {i!r} belongs to dataset {a_rows[i]['dataset']!r} for {base!r} "
                             f"but to {b_rows[i]['dataset']!r} for {new!r}.")
    pairs = [(a_rows[i], b_rows[i]) for i in shared]
    units = [resampling_unit(a) for a, _ in pairs] if unit == "subject/frame" else None
    if metrics is None:
        keys = {k for a, b in pairs for k in (*a, *b)}
        metrics = [m for m in DEFAULT_METRICS if m in keys]
        metrics += [m for m in NOSE_METRICS if m not in metrics and m in keys
                    and any(math.isfinite(_float(r.get(m))) for pair in pairs for r in pair)]
    if any(m in _GAPS for m in metrics):
        pairs = list(zip(derive_gaps([a for a, _ in pairs]), derive_gaps([b for _, b in pairs])))
    out = []
    for split in splits:
        sel = [k for k, (a, _) in enumerate(pairs)
               if split == "all" or DATASET_LABELS.get(a["dataset"], a["dataset"]) == split]
        groups = None if units is None else [units[k] for k in sel]
        for metric in metrics:
            stat = spec(metric).stat
            va = np.array([_float(pairs[k][0].get(metric)) for k in sel], float)
            vb = np.array([_float(pairs[k][1].get(metric)) for k in sel], float)
            ci = paired_bootstrap(va, vb, stat=stat, n_boot=n_boot, seed=seed, level=level, groups=groups)
            fa, fb, _ = _finite(va, vb)
            out.append({"base": base, "new": new, "split": split, "metric": metric, "stat": stat,
                        "base_value": float(_stat(fa, stat)) if fa.size else math.nan,
                        "new_value": float(_stat(fb, stat)) if fb.size else math.nan,
                        **{k: ci[k] for k in ("diff", "lo", "hi", "n", "n_dropped")},
                        "verdict": verdict(ci, spec(metric).direction), "n_units": ci["n_units"], "unit": unit,
                        "p": ci["p"], "n_boot": n_boot})
    return out


def find(comparisons: list[dict], metric: str, split: str = "all", *, base: str | None = None,
         new: str | None = None) -> dict:
    """The one comparison row of ``metric`` on ``split`` (optionally of the pair base → new); KeyError otherwise."""
    hits = [c for c in comparisons if c["metric"] == metric and c["split"] == split
            and (base is None or c["base"] == base) and (new is None or c["new"] == new)]
    if len(hits) == 1:
        return hits[0]
    pair = f" for {base or '*'} → {new or '*'}" if base or new else ""
    if not hits:
        have = sorted({(c["metric"], c["split"]) for c in comparisons})
        raise KeyError(f"no comparison of metric {metric!r} on split {split!r}{pair} (have: {have})")
    pairs = sorted({(c["base"], c["new"]) for c in hits})
    raise KeyError(f"{len(hits)} comparisons of metric {metric!r} on split {split!r} (pairs {pairs}); "
                   "pass base= and new= to choose one")


def flip(c: dict) -> dict:
    """Comparison row ``c`` seen the other way round: base and new swapped, interval negated, verdict mirrored."""
    mirror = {"better": "worse", "worse": "better"}
    out = {**c, "base": c["new"], "new": c["base"], "base_value": c["new_value"], "new_value": c["base_value"],
           "diff": 0.0 - c["diff"], "lo": 0.0 - c["hi"], "hi": 0.0 - c["lo"],
           "verdict": mirror.get(c["verdict"], c["verdict"])}
    if "verdict_holm" in c:
        out["verdict_holm"] = mirror.get(c["verdict_holm"], c["verdict_holm"])
    return out


# ---- Multiplicity ----
def is_nose(c: dict) -> bool:
    """The default family of ``holm``: every comparison whose metric starts with "nose"."""
    return str(c["metric"]).startswith("nose")


def holm_adjust(pvalues) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given: sorted ascending, the i-th (1-based) of m becomes
    max over j ≤ i of min(1, (m − j + 1)·p_(j)). NaNs are no test: they stay NaN and do not count in m."""
    p = [_float(x) for x in pvalues]
    tested = sorted((x, i) for i, x in enumerate(p) if math.isfinite(x))
    m, out, running = len(tested), [math.nan] * len(p), 0.0
    for j, (x, i) in enumerate(tested):
        running = max(running, min(1.0, (m - j) * x))
        out[i] = running
    return out


def holm(comparisons: list[dict], family=is_nose, alpha: float = 0.05) -> list[dict]:
    """Copies of ``comparisons`` where those in ``family`` (default: nose metrics) also carry Holm's adjustment over
    the family: ``p_holm``, ``verdict_holm`` ("better" / "worse" by the sign of diff when p_holm ≤ ``alpha``,
    "indistinguishable" otherwise, "not measured" without a p-value) and ``holm_m`` (the tests counted). Pass the
    whole family at once: a family split over several calls is corrected less."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie strictly between 0 and 1, got {alpha}")
    out = [dict(c) for c in comparisons]
    members = [c for c in out if family(c)]
    for c in members:
        if "p" not in c:
            raise ValueError(f"comparison of {c['metric']!r} ({c.get('base')} → {c.get('new')}, {c.get('split')}) has "
                             "no bootstrap p-value; compare() it again.")
    adjusted = holm_adjust(c["p"] for c in members)
    m = sum(math.isfinite(x) for x in adjusted)
    for c, p in zip(members, adjusted):
        c["p_holm"], c["holm_m"] = p, m
        diff = _float(c["diff"])
        if not math.isfinite(p):
            c["verdict_holm"] = "not measured"
        elif p <= alpha and diff != 0 and math.isfinite(diff):
            c["verdict_holm"] = "better" if (diff > 0) == (spec(c["metric"]).direction > 0) else "worse"
        else:
            c["verdict_holm"] = "indistinguishable"
    return out


def final_verdict(c: dict) -> str:
    """The verdict to act on: Holm's where ``holm`` set one ("indistinguishable" read as "no detectable
    difference"), else the comparison's own."""
    v = c.get("verdict_holm")
    if v in (None, ""):
        return c["verdict"]
    return "no detectable difference" if v == "indistinguishable" else v


# ---- Words and tables ----
def format_diff(c: dict, digits: int | None = None) -> str:
    """"+1.23 dB [+0.98, +1.49]": the difference and its interval in the metric's digits and unit (a failure rate in
    percentage points: "+3.3 pp [+1.0, +5.6]")."""
    m = spec(c["metric"])
    d = m.digits if digits is None else digits
    scale = 100.0 if m.percent else 1.0
    diff, lo, hi = (scale * _float(c[k]) for k in ("diff", "lo", "hi"))
    if not math.isfinite(diff):
        return "not measured"

    def num(x: float) -> str:
        return f"{x + 0.0:+.{d}f}" if math.isfinite(x) else "–"  # + 0.0 turns −0.0 into 0.0
    return f"{num(diff)}{m.suffix} [{num(lo)}, {num(hi)}]"


def _value(metric: str, value) -> str:
    value = _float(value)
    return spec(metric).text(value) if math.isfinite(value) else "–"


def format_p(p, n_boot=None, m: int = 1) -> str:
    """A p-value with 3 decimals; 0 as "<" its resolution m/n_boot ("<0.001" without n_boot); "–" when absent."""
    p = _float(p)
    if not math.isfinite(p):
        return "–"
    if p == 0:
        n_boot = _float(n_boot)
        return f"<{m / n_boot:.2g}" if math.isfinite(n_boot) and n_boot > 0 else "<0.001"
    return f"{p:.3f}"


def _count(value) -> int:
    """A count field (int, float or CSV text) as an int ≥ 1; 1 when absent."""
    value = _float(value)
    return max(1, int(value)) if math.isfinite(value) else 1


# columns comparisons_markdown appends after COMPARISON_COLUMNS when some comparison carries them
EXTRA_COLUMNS = [("p", "p"), ("p_holm", "p (Holm)"), ("verdict_holm", "Verdict (Holm)")]


def comparisons_markdown(comparisons: list[dict], caption: str, models: Mapping[str, str] | None = None) -> str:
    """A Markdown table of comparison rows with the caption under it: COMPARISON_COLUMNS, then the EXTRA_COLUMNS
    some row carries ("–" in a row without); nose metrics labelled by ``metric_label``."""
    extra = [(k, label) for k, label in EXTRA_COLUMNS if any(k in c for c in comparisons)]

    def cells(c: dict) -> list[str]:
        by_key = {"pair": f"{c['base']} → {c['new']}", "split": c["split"],
                  "metric": metric_label(c["metric"], models), "stat": c["stat"], "n": str(c["n"]),
                  "base_value": _value(c["metric"], c["base_value"]), "new_value": _value(c["metric"], c["new_value"]),
                  "interval": format_diff(c), "verdict": c["verdict"],
                  "p": format_p(c.get("p"), c.get("n_boot")),
                  "p_holm": format_p(c.get("p_holm"), c.get("n_boot"), _count(c.get("holm_m"))),
                  "verdict_holm": c.get("verdict_holm") or "–"}
        return [by_key[k] for k, _ in COMPARISON_COLUMNS + extra]
    return markdown_table([label for _, label in COMPARISON_COLUMNS + extra], map(cells, comparisons), caption)


def write_comparisons(comparisons: list[dict], stem, caption: str,
                      models: Mapping[str, str] | None = None) -> tuple[Path, Path]:
    """Write ``stem``.csv (every field of every comparison row) and ``stem``.md (comparisons_markdown)."""
    return atomic_write_csv_and_md(comparisons, stem, comparisons_markdown(comparisons, caption, models))


def read_comparisons(path) -> list[dict]:
    """Comparison rows of ``write_comparisons``' CSV with numbers parsed back (empty optional fields dropped)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key in ("base_value", "new_value", "diff", "lo", "hi"):
            row[key] = _float(row[key])
        for key in ("p", "p_holm", "n_boot", "holm_m", "verdict_holm"):
            if row.get(key) in (None, ""):
                row.pop(key, None)
            elif key in ("p", "p_holm"):
                row[key] = _float(row[key])
        for key in ("n", "n_dropped", "n_units", "n_boot", "holm_m"):
            if row.get(key) not in (None, ""):
                row[key] = int(row[key])
    return rows


# ---- Recommendation ----
def _oriented(rows: list[dict], metric: str, split: str, method: str, other: str) -> dict:
    """The comparison of ``metric`` on ``split`` between two methods, as method − other (new = method)."""
    for c in rows:
        if c["metric"] == metric and c["split"] == split:
            if (c["base"], c["new"]) == (other, method):
                return c
            if (c["base"], c["new"]) == (method, other):
                return flip(c)
    raise ValueError(f"recommend needs a comparison of {metric!r} on split {split!r} between {method!r} and "
                     f"{other!r}; pass the compare() rows of that pair.")


def _methods(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(m for c in rows for m in (c["base"], c["new"])))


def _clause(c: dict, models: Mapping[str, str] | None = None) -> str:
    """"LPIPS v2 − v1 −0.0123 [−0.0150, −0.0100] (better)"; a nose metric as ``nose_clause`` words it."""
    if nose_model(c["metric"]):
        return nose_clause(c, models)
    return f"{metric_label(c['metric'], models)} {c['new']} − {c['base']} {format_diff(c)} ({final_verdict(c)})"


def nose_clause(c: dict, models: Mapping[str, str] | None = None) -> str:
    """A nose comparison in words: "nose: v2 − v1 +0.87 px [+0.21, +1.44] (worse, RetinaFace)" (the metric's
    ``words``; Holm's verdict where set)."""
    m = METRICS[c["metric"]]
    return (f"{m.words}: {c['new']} − {c['base']} {format_diff(c)} "
            f"({final_verdict(c)}, {model_name(m.model, models)})")


def _pixel_pick(rows: list[dict], split: str, metric: str) -> dict:
    """Maximum-PSNR use case: the highest mean, tied with every method whose interval against it spans 0."""
    values = {}
    for c in rows:
        if c["metric"] == metric and c["split"] == split:
            values.setdefault(c["base"], _float(c["base_value"]))
            values.setdefault(c["new"], _float(c["new_value"]))
    ranked = sorted((m for m in values if math.isfinite(values[m])), key=lambda m: -values[m])
    label = spec(metric).label
    use = f"maximum {label} (pixel fidelity)"
    if not ranked:
        return {"use case": use, "pick": "not measured", "why": f"no method has a finite {label} on {split}"}
    top = ranked[0]
    others = [_oriented(rows, metric, split, top, m) for m in ranked[1:]]
    tied = [c["base"] for c in others if c["verdict"] != "better"]
    value = f"{top} has the highest {label} ({_value(metric, values[top])}{spec(metric).suffix})"
    pick = " ≈ ".join([top, *tied]) + f" (no detectable {label} difference)" if tied else top
    return {"use case": use, "pick": pick, "why": "; ".join([value] + [_clause(c) for c in others])}


def _present(rows: list[dict], metrics, split: str) -> list[str]:
    return [m for m in dict.fromkeys(metrics) if any(c["metric"] == m and c["split"] == split for c in rows)]


def _in_every_pair(rows: list[dict], metric: str, split: str) -> bool:
    """True when every pair of methods in ``rows`` has a comparison of ``metric`` on ``split``."""
    have = {frozenset((c["base"], c["new"])) for c in rows if c["metric"] == metric and c["split"] == split}
    return have == {frozenset((c["base"], c["new"])) for c in rows}


def _perceptual_pick(rows: list[dict], split: str, metrics, models=None) -> dict:
    """Perception use case: the method better than every other on the most perceptual metrics ("why" also names
    each pick's nose displacement against every other)."""
    methods = _methods(rows)
    metrics = _present(rows, metrics, split)
    labels = ", ".join(metric_label(m, models) for m in metrics)
    use = f"perceptual quality ({labels})"
    wins = {m: [k for k in metrics if all(final_verdict(_oriented(rows, k, split, m, o)) == "better"
                                          for o in methods if o != m)] for m in methods}
    best = max((len(w) for w in wins.values()), default=0)
    picks = [m for m in methods if len(wins[m]) == best] if best else methods
    noses = [k for k in _present(rows, [f"{p}_err_px" for p in NOSE_MODELS], split) if _in_every_pair(rows, k, split)]
    nose_why = [nose_clause(_oriented(rows, k, split, m, o), models) for m in picks for k in noses
                for o in methods if o != m and (best or methods.index(o) > methods.index(m))]
    if best == 0:
        why = [_clause(c, models) for c in rows if c["split"] == split and c["metric"] in metrics]
        pick = " ≈ ".join(methods) + f" (none is better than all others on any of {labels})"
    else:
        why = [_clause(_oriented(rows, k, split, m, o), models) for m in picks for k in wins[m] for o in methods
               if o != m]
        pick = (" ≈ ".join(picks) + f" (each better than all others on {best} metric{'s' if best > 1 else ''})"
                if len(picks) > 1 else picks[0])
    return {"use case": use, "pick": pick, "why": "; ".join(why + nose_why)}


def _nose_pick(rows: list[dict], split: str, metrics, models=None) -> dict:
    """Downstream nose localisation: never a method measured worse than another on any nose metric.

    Of the methods never "worse" (Holm's verdict where set), one better than every other on some nose metric is
    the pick (at most one can be), otherwise they are tied; when every method is worse somewhere, none is picked.
    A nose metric some pair was not compared on is left out (the first model's displacement is required)."""
    methods = _methods(rows)
    # a nose metric other than the first model's displacement counts only where every pair compared it
    metrics = [k for k in _present(rows, metrics, split) if k == "nose_err_px" or _in_every_pair(rows, k, split)]
    labels = ", ".join(metric_label(m, models) for m in metrics)
    use = f"downstream nose localisation ({labels})" if metrics else "downstream nose localisation"
    if not metrics:
        return {"use case": use, "pick": "not measured", "why": f"no nose comparison on {split}"}
    oriented = {(m, o, k): _oriented(rows, k, split, m, o) for m in methods for o in methods if o != m
                for k in metrics}
    if all(final_verdict(c) == "withheld" for c in oriented.values()):
        return {"use case": use, "pick": "not stated (every nose verdict is withheld: notebook 02's instrument check)",
                "why": "; ".join(nose_clause(c, models) for (m, o, k), c in oriented.items()
                                 if methods.index(m) < methods.index(o) and k == "nose_err_px")}
    worse = {m: [c for (a, _, _), c in oriented.items() if a == m and final_verdict(c) == "worse"] for m in methods}
    ok = [m for m in methods if not worse[m]]
    winner = [m for m in ok if any(all(final_verdict(oriented[(m, o, k)]) == "better" for o in methods if o != m)
                                   for k in metrics)]
    excluded = [m for m in methods if m not in ok]
    if not ok:
        return {"use case": use, "pick": "none (each method is measured worse than another on some nose metric)",
                "why": "; ".join(nose_clause(c, models) for m in methods for c in worse[m])}
    shown = winner or ok
    why = "; ".join(nose_clause(oriented[(m, o, k)], models) for m in shown for o in methods if o != m
                    and (o not in shown or methods.index(o) > methods.index(m)) for k in metrics)
    note = f"; {', '.join(excluded)} measured worse on the nose" if excluded else ""
    if winner or len(ok) == 1:
        pick = shown[0] + (f" ({note[2:]})" if note else "")
    elif not excluded:
        pick = " ≈ ".join(ok) + " (no detectable nose difference)"
    else:
        pick = " ≈ ".join(ok) + f" (none of them worse on the nose than another{note})"
    return {"use case": use, "pick": pick, "why": why}


def recommend(comparisons_by_pair, split: str = "all", pixel_metric: str = "psnr",
              perceptual=("lpips", "dists"), nose=NOSE_METRICS, models: Mapping[str, str] | None = None) -> list[dict]:
    """Three use cases → [{"use case", "pick", "why"}] from compare() rows of every pair of the candidate methods.

    ``comparisons_by_pair``: {(base, new): rows} or any iterable of row lists; decided on ``split`` by each
    verdict (Holm's where set). Maximum PSNR: the highest ``pixel_metric``, tied with any method whose interval
    against it spans 0. Perceptual quality: the method "better" than every other on the most ``perceptual``
    metrics (ties reported; none: all tied), its nose displacement named too. Downstream nose: ``_nose_pick`` over
    the ``nose`` metrics (nose metrics listed in ``perceptual`` are judged here). "why" names each interval, nose
    models named by ``models``. A missing pair, or comparisons resampled by different units, is a ValueError.
    """
    groups = comparisons_by_pair.values() if isinstance(comparisons_by_pair, Mapping) else comparisons_by_pair
    rows = [c for group in groups for c in group]
    if not rows:
        raise ValueError("recommend needs at least one list of compare() rows.")
    units = sorted({c["unit"] for c in rows if c.get("unit")})
    if len(units) > 1:
        raise ValueError(f"recommend got comparisons resampled by different units {units}; compare every pair "
                         "with the same unit.")
    nose = [*[m for m in perceptual if nose_model(m)], *nose]
    perceptual = [m for m in perceptual if not nose_model(m)]
    return [_pixel_pick(rows, split, pixel_metric), _perceptual_pick(rows, split, perceptual, models),
            _nose_pick(rows, split, nose, models)]
