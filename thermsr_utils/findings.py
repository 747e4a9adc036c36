"""The write-up's three findings, answered from this run's paired comparisons, in words.

The notebooks call these functions and display what they return; the decisions (which way an interval
points, whether it clears the instrument's noise floor, whether this run agrees with the write-up) are made
here, once, and tested on hand-made comparison tables. Every function takes rows of ``stats.compare``.
"""
from __future__ import annotations

import csv
import math

from . import stats

SPLITS = ("all", "SF-TL54", "ThermEval-D")
# The write-up's bicubic PSNR on the table crops: in its text (the recommendation table), not in reference_results.csv.
REPORTED_BICUBIC_PSNR = 34.4
_REPORTED_KEYS = {"psnr": "psnr", "ssim": "ssim", "lpips": "lpips", "nose_err_px": "nose_median_px"}


def _reference_rows(name: str, path=None) -> list[dict[str, str]]:
    """Rows of one write-up reference CSV (``data_manifest/reference/<name>``), its ``#`` comment lines skipped."""
    from .config import REFERENCE_DIR

    with open(path or REFERENCE_DIR / name, newline="") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def reported_table(path=None) -> list[dict]:
    """The write-up's table (reference_results.csv) as rows of floats."""
    return [{k: (v if k in ("method", "split") else float(v)) for k, v in r.items()}
            for r in _reference_rows("reference_results.csv", path)]


def reported_protocol(path=None) -> dict[str, dict[str, str]]:
    """The write-up's training protocol (reference_protocol.csv): {setting: {"v1": …, "v2": …}}, "same" resolved."""
    return {r["setting"]: {"v1": r["v1"], "v2": r["v1"] if r["v2"] == "same" else r["v2"]}
            for r in _reference_rows("reference_protocol.csv", path)}


def reported_vs_measured(table: list[dict], method_map: dict[str, str], measured_as: str,
                         reported: list[dict] | None = None) -> list[dict]:
    """Each write-up row followed by this run's row of the same model and split (where the run has one).

    ``table`` holds ``evaluate.aggregate`` rows; ``method_map`` maps a write-up method name to this run's;
    the measured row takes the write-up's name and ``source`` = ``measured_as``.
    """
    reported = reported_table() if reported is None else reported
    out = []
    for ref in reported:
        out.append({"method": ref["method"], "split": ref["split"], "source": "reported (write-up)", "n": int(ref["n"]),
                    "psnr": ref["psnr"], "ssim": ref["ssim"], "lpips": ref["lpips"],
                    "nose_median": ref["nose_median_px"], "nose_mean": ref["nose_mean_px"]})
        mine = method_map.get(ref["method"])
        ours = next((r for r in table if r["method"] == mine and r["split"] == ref["split"]), None)
        if ours:
            out.append({**ours, "method": ref["method"], "source": measured_as})
    return out


def reported_differences(base: str, new: str, table=None) -> dict[str, dict[str, float]]:
    """{split: {metric: new − base}} from the write-up's table (nose: difference of its medians)."""
    table = reported_table() if table is None else table
    out = {}
    for split in SPLITS:
        b = next((r for r in table if r["method"] == base and r["split"] == split), None)
        n = next((r for r in table if r["method"] == new and r["split"] == split), None)
        if b is None or n is None:
            raise KeyError(f"the write-up's table has no {base!r}/{new!r} rows for split {split!r}")
        out[split] = {m: n[col] - b[col] for m, col in _REPORTED_KEYS.items()}
    return out


def reported_v1_story(table=None) -> str:
    """One sentence of the write-up's v1 result, from its table: the PSNR gain and the nose medians."""
    table = reported_table() if table is None else table

    def row(method, split):
        return next(r for r in table if r["method"] == method and r["split"] == split)

    zs, v1 = row("zero-shot", "all"), row("v1-l1", "all")
    zs_te, v1_te = row("zero-shot", "ThermEval-D"), row("v1-l1", "ThermEval-D")
    return (f"The write-up's v1 finetune raised test PSNR by {v1['psnr'] - zs['psnr']:.2f} dB over the zero-shot "
            f"DRLN ({zs['psnr']:.2f} → {v1['psnr']:.2f} dB), yet the downstream nose error did not clearly improve "
            f"(median {zs['nose_median_px']:.2f} → {v1['nose_median_px']:.2f} px overall, but "
            f"{zs_te['nose_median_px']:.2f} → {v1_te['nose_median_px']:.2f} px on ThermEval-D).")


def _sign(x: float) -> int:
    return 0 if not math.isfinite(x) or x == 0 else (1 if x > 0 else -1)


def _agrees(c: dict, reported: float | None, floor: float = 0.0) -> str:
    """How this run's comparison ``c`` stands to the write-up's reported difference, in a few words."""
    if reported is None or not math.isfinite(reported):
        return ""
    if c["verdict"] == "no detectable difference":
        return ("the write-up's difference was " + (f"{reported:+.2f}" if c["metric"] != "lpips" else f"{reported:+.3f}")
                + ", which this run can neither confirm nor rule out")
    same = _sign(c["diff"]) == _sign(reported) and abs(reported) > floor
    return "as in the write-up" if same else f"unlike the write-up ({reported:+.2f})"


def _clause(c: dict, what: str, reported: dict | None, floor: float = 0.0) -> str:
    rep = None if reported is None else reported.get(c["split"], {}).get(c["metric"])
    agree = _agrees(c, rep, floor)
    return f"{what} {stats.format_diff(c)} — **{c['verdict']}**" + (f" ({agree})" if agree else "")


def nose_outside_floor(c: dict, floor_px: float) -> bool:
    """True when a nose-median difference's whole interval lies beyond ± the instrument's noise floor."""
    return math.isfinite(c["lo"]) and (c["lo"] > floor_px or c["hi"] < -floor_px)


def finding_v1(diffs: list[dict], reported: dict | None = None, floor_px: float = 0.0) -> dict:
    """Findings (i) v1 raises PSNR over zero-shot and (ii) v1 worsens the nose metric, per split.

    ``diffs``: stats.compare(rows, zero-shot, v1). Returns {"psnr_up": bool (all splits), "nose_worse":
    list of splits where the nose median grew beyond its interval, "markdown": the sentences}.
    """
    lines, psnr_up, nose_worse = [], True, []
    for split in SPLITS:
        p, n = stats.find(diffs, "psnr", split), stats.find(diffs, "nose_err_px", split)
        psnr_up &= p["verdict"] == "better"
        if n["verdict"] == "worse":
            nose_worse.append(split)
        beyond = (" and beyond the instrument's noise floor" if nose_outside_floor(n, floor_px) else "")
        lines.append(f"* **{split}** ({p['n']} crops): {_clause(p, 'PSNR', reported)}; "
                     f"{_clause(n, 'nose median', reported)}" + (beyond if n["verdict"] == "worse" else ""))
    i = ("**(i) v1 raises PSNR over zero-shot on every split**" if psnr_up else
         "**(i) v1 does not raise PSNR detectably on every split**")
    ii = (f"**(ii) v1 worsens the nose metric on {', '.join(nose_worse)}**" if nose_worse else
          "**(ii) this run detects no worsening of the nose metric by v1** on any split")
    return {"psnr_up": psnr_up, "nose_worse": nose_worse,
            "markdown": f"{i}; {ii}. Differences are v1 − zero-shot with paired bootstrap 95 % intervals:\n\n"
                        + "\n".join(lines)}


def finding_v2(v2_vs_v1: list[dict], v2_vs_zs: list[dict], v1_vs_zs: list[dict],
               reported: dict | None = None, floor_px: float = 0.0) -> dict:
    """Finding (iii): does v2 cut LPIPS substantially (against v1) and recover the nose metric?

    "Recover" means: on the splits where v1 worsened the nose median against zero-shot, v2 is better than v1
    there, and v2 is not detectably worse than zero-shot. Returns {"lpips_cut": bool, "lpips_ratio": v1/v2
    LPIPS over all crops, "nose_recovered": bool | None (None when v1 worsened nothing), "markdown"}.
    """
    lp = stats.find(v2_vs_v1, "lpips")
    ratio = lp["base_value"] / lp["new_value"] if lp["new_value"] > 0 else math.nan
    lpips_cut = lp["verdict"] == "better"
    worse_splits = [s for s in SPLITS if stats.find(v1_vs_zs, "nose_err_px", s)["verdict"] == "worse"]
    lines = [f"* LPIPS, v2 − v1 over all crops: {stats.format_diff(lp)} — **{lp['verdict']}**; v1's LPIPS is "
             f"{ratio:.2f}× v2's (the write-up: {reported['lpips_ratio']:.1f}×)" if reported else
             f"* LPIPS, v2 − v1 over all crops: {stats.format_diff(lp)} — **{lp['verdict']}**; v1's LPIPS is "
             f"{ratio:.2f}× v2's"]
    for split in SPLITS:
        a, b = stats.find(v2_vs_v1, "nose_err_px", split), stats.find(v2_vs_zs, "nose_err_px", split)
        d = stats.find(v2_vs_v1, "psnr", split)
        lines.append(f"* **{split}**: nose median v2 − v1 {stats.format_diff(a)} ({a['verdict']}), v2 − zero-shot "
                     f"{stats.format_diff(b)} ({b['verdict']}); PSNR v2 − v1 {stats.format_diff(d)} ({d['verdict']})")
    if worse_splits:
        recovered = all(stats.find(v2_vs_v1, "nose_err_px", s)["verdict"] == "better"
                        and stats.find(v2_vs_zs, "nose_err_px", s)["verdict"] != "worse" for s in worse_splits)
        nose = (f"**recovers the nose metric** where v1 had worsened it ({', '.join(worse_splits)})" if recovered else
                f"**does not detectably recover the nose metric** where v1 had worsened it ({', '.join(worse_splits)})")
    else:
        recovered = None
        nose = "has no nose regression to recover (v1 worsened no split detectably)"
    cut = (f"**cuts LPIPS** (v1/v2 = {ratio:.2f}×)" if lpips_cut else "**does not cut LPIPS detectably**")
    return {"lpips_cut": lpips_cut, "lpips_ratio": ratio, "nose_recovered": recovered,
            "markdown": f"**(iii) v2** {cut} and {nose}.\n\n" + "\n".join(lines)}


def reported_lpips_ratio(table=None) -> float:
    """The write-up's v1/v2 LPIPS ratio over all crops (its "threefold" cut)."""
    table = reported_table() if table is None else table
    v1 = next(r for r in table if r["method"] == "v1-l1" and r["split"] == "all")
    v2 = next(r for r in table if r["method"] == "v2-l1-lpips" and r["split"] == "all")
    return v1["lpips"] / v2["lpips"]


def trade_off(v2_vs_v1: list[dict]) -> dict:
    """Does v2 sit elsewhere on the perception–distortion frontier than v1: PSNR worse and a perceptual
    measure (LPIPS or DISTS) better, each by an interval that excludes zero?"""
    p = stats.find(v2_vs_v1, "psnr")
    perceptual = [m for m in ("lpips", "dists") if any(c["metric"] == m and c["split"] == "all" for c in v2_vs_v1)]
    better = [m.upper() for m in perceptual if stats.find(v2_vs_v1, m)["verdict"] == "better"]
    worse = [m.upper() for m in perceptual if stats.find(v2_vs_v1, m)["verdict"] == "worse"]
    parts = ", ".join(f"{m.upper()} {stats.format_diff(stats.find(v2_vs_v1, m))}" for m in perceptual)
    if p["verdict"] == "worse" and better:
        text = (f"**v2 trades PSNR for perceptual closeness**: it gives up PSNR ({stats.format_diff(p)}) and is "
                f"closer to the HR on {', '.join(better)}" + (f" but further from it on {', '.join(worse)}" if worse
                                                               else "") + f" ({parts}). v2 changes five things at "
                "once; how much of this the perceptual term did and how much the rest of the recipe did is split in "
                "notebook 07, which trains v2 at λ = 0 alike.")
        shown = True
    elif p["verdict"] != "worse" and better:
        text = (f"**v2 is better than v1 on {', '.join(better)} without a detectable PSNR cost** "
                f"({stats.format_diff(p)}; {parts})" + (f", though worse on {', '.join(worse)}" if worse else "")
                + ".")
        shown = False
    else:
        text = (f"**This run does not show v2 trading PSNR for perception** (PSNR {stats.format_diff(p)}; {parts}"
                + (f"; worse on {', '.join(worse)}" if worse else "") + ").")
        shown = False
    return {"shown": shown, "markdown": text}
