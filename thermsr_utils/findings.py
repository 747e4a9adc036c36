"""The write-up's three findings, answered in words from this run's paired comparisons (``stats.compare`` rows,
through ``stats.holm`` where a notebook corrects its nose family: Holm's verdicts are then used).

A nose difference is held against the write-up under the noise floor rule (``against_reported``): a difference
below the instrument's noise floor, or a measured one whose interval includes zero or lies within ± the floor, is
"no change"; this run agrees only when both are the same of better / worse / no change. With a second landmark
model (``nose2_*``) the findings report both and say whether they hold on both.
"""
from __future__ import annotations

import csv
import math
from collections.abc import Mapping

from . import stats
from .metric_specs import METRICS, spec

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
    """Each write-up row followed by this run's ``evaluate.aggregate`` row of the same model (``method_map``:
    write-up name → this run's) and split, renamed to the write-up's name with ``source`` = ``measured_as``."""
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
    db, px = METRICS["psnr"], METRICS["nose_err_px"]
    return (f"The write-up's v1 finetune raised test PSNR by {db.text(v1['psnr'] - zs['psnr'], unit=True)} over the "
            f"zero-shot DRLN ({db.text(zs['psnr'])} → {db.text(v1['psnr'], unit=True)}), yet the downstream nose "
            f"error did not clearly improve (median {px.text(zs['nose_median_px'])} → "
            f"{px.text(v1['nose_median_px'], unit=True)} overall, but {px.text(zs_te['nose_median_px'])} → "
            f"{px.text(v1_te['nose_median_px'], unit=True)} on ThermEval-D).")


def _sign(x: float) -> int:
    return 0 if not math.isfinite(x) or x == 0 else (1 if x > 0 else -1)


def _floor(floor_px, prefix: str) -> float:
    """The noise floor (px) of landmark model ``prefix``: ``floor_px`` is a number, the first model's floor (what
    notebook 02 measures), or {prefix: floor}; a model without a measured floor has 0 (no floor applied)."""
    if isinstance(floor_px, Mapping):
        value = floor_px.get(prefix)
    else:
        value = floor_px if prefix == "nose" else None
    value = stats._float(value)
    return value if math.isfinite(value) and value > 0 else 0.0


def reported_category(reported: float, metric: str, floor: float = 0.0) -> str:
    """The write-up's difference as "better" / "worse" / "no change": no change when its magnitude is below the
    noise floor (or it is exactly zero)."""
    if not math.isfinite(reported) or abs(reported) < floor or reported == 0:
        return "no change"
    return "better" if (reported > 0) == (spec(metric).direction > 0) else "worse"


def measured_category(c: dict, floor: float = 0.0) -> str:
    """This run's comparison as "better" / "worse" / "no change" ("not measured" without an interval): no change
    when it has no better/worse verdict, lies within ± the noise floor or its difference is below it."""
    verdict = stats.final_verdict(c)
    lo, hi, diff = stats._float(c["lo"]), stats._float(c["hi"]), stats._float(c["diff"])
    if verdict == "not measured" or not (math.isfinite(lo) and math.isfinite(hi)):
        return "not measured"
    if verdict not in ("better", "worse") or abs(diff) < floor or (-floor <= lo and hi <= floor):
        return "no change"
    return verdict


def against_reported(c: dict, reported: float | None, floor: float = 0.0) -> dict:
    """How a nose comparison ``c`` stands to the write-up's reported difference, under the noise floor rule:
    {"reported", "measured" (``reported_category``, ``measured_category``), "same", "text"} ("" when there is
    nothing to compare)."""
    unit = spec(c["metric"]).suffix
    rep_cat = reported_category(stats._float(reported), c["metric"], floor) if reported is not None else None
    mes_cat = measured_category(c, floor)
    out = {"reported": rep_cat, "measured": mes_cat, "same": rep_cat == mes_cat, "text": ""}
    if rep_cat is None or not math.isfinite(stats._float(reported)) or mes_cat == "not measured":
        return out
    if floor > 0:
        where = "within" if rep_cat == "no change" else "beyond"
        rep = f"the write-up's {reported:+.2f}{unit} is {where} the noise floor ({floor:.2f}{unit}): {rep_cat}"
    else:
        rep = f"the write-up's {reported:+.2f}{unit}: {rep_cat}"
    lo, hi, diff = stats._float(c["lo"]), stats._float(c["hi"]), stats._float(c["diff"])
    if stats.final_verdict(c) not in ("better", "worse"):
        mes = ("this run's interval includes zero: no change" if lo <= 0 <= hi else
               "this run finds no difference after Holm's correction: no change")
    elif floor > 0 and -floor <= lo and hi <= floor:
        mes = f"this run's interval lies within ±{floor:.2f}{unit}: no change"
    elif abs(diff) < floor:
        mes = f"this run's {diff:+.2f}{unit} is within the noise floor: no change"
    else:
        mes = f"this run: {mes_cat}" + (", beyond the noise floor" if floor > 0 else "")
    out["text"] = f"{'as in the write-up' if out['same'] else 'unlike the write-up'}: {rep}; {mes}"
    return out


def _agrees(c: dict, reported: float | None, floor: float = 0.0) -> str:
    """How this run's comparison ``c`` stands to the write-up's reported difference, in a few words (a nose
    metric in pixels by ``against_reported``'s noise floor rule)."""
    if reported is None or not math.isfinite(reported):
        return ""
    if spec(c["metric"]).model and spec(c["metric"]).unit == "px":   # a nose metric in pixels: a floor applies
        return against_reported(c, reported, floor)["text"]
    if stats.final_verdict(c) == "no detectable difference":
        return ("the write-up's difference was " + (f"{reported:+.2f}" if c["metric"] != "lpips" else f"{reported:+.3f}")
                + ", which this run can neither confirm nor rule out")
    same = _sign(c["diff"]) == _sign(reported) and abs(reported) > floor
    return "as in the write-up" if same else f"unlike the write-up ({reported:+.2f})"


def _verdict(c: dict) -> str:
    """**verdict**, Holm's where set (with its adjusted p)."""
    if "p_holm" in c and math.isfinite(stats._float(c["p_holm"])):
        return (f"**{stats.final_verdict(c)}** (Holm-adjusted p "
                f"{stats.format_p(c['p_holm'], c.get('n_boot'), stats._count(c.get('holm_m')))})")
    return f"**{stats.final_verdict(c)}**"


def _clause(c: dict, what: str, reported: dict | None, floor: float = 0.0) -> str:
    rep = None if reported is None else reported.get(c["split"], {}).get(c["metric"])
    agree = _agrees(c, rep, floor)
    return f"{what} {stats.format_diff(c)} — {_verdict(c)}" + (f" ({agree})" if agree else "")


def _has(diffs: list[dict], metric: str, split: str = "all") -> bool:
    return any(c["metric"] == metric and c["split"] == split for c in diffs)


def _final(diffs: list[dict], metric: str, split: str) -> str | None:
    """The final verdict of ``metric`` on ``split``; None where ``diffs`` do not compare it."""
    return stats.final_verdict(stats.find(diffs, metric, split)) if _has(diffs, metric, split) else None


def _models(diffs: list[dict]) -> list[str]:
    """The landmark models (column prefixes) whose displacement ``diffs`` compare, the write-up's first."""
    return [m for m in stats.NOSE_MODELS if m == "nose" or any(c["metric"] == f"{m}_err_px" for c in diffs)]


def _fail_words(diffs: list[dict], prefix: str, split: str, who: str, models) -> list[str]:
    """["v1 made RetinaFace fail on 4 more crops (+3.3 pp [+1.0, +5.6])"] when the failure-rate interval of model
    ``prefix`` excludes zero (Holm's verdict where set), else []."""
    if _final(diffs, f"{prefix}_fail", split) not in ("better", "worse"):
        return []
    c = stats.find(diffs, f"{prefix}_fail", split)
    k = int(round(abs(stats._float(c["diff"])) * c["n"]))
    more = "more" if c["diff"] > 0 else "fewer"
    return [f"{who} made {stats.model_name(stats.nose_model(c['metric']), models)} fail on {k} {more} "
            f"crop{'s' if k != 1 else ''} ({stats.format_diff(c)})"]


def _nose_lines(diffs: list[dict], split: str, who: str, reported, floor_px, models) -> list[str]:
    """Clauses of every nose comparison of ``diffs`` on ``split``: displacement per model (with the write-up and
    the noise floor), failures where their interval excludes zero, and the error against the true nose."""
    out = []
    for prefix in _models(diffs):
        floor = _floor(floor_px, prefix)
        if not _has(diffs, f"{prefix}_err_px", split):
            continue
        n = stats.find(diffs, f"{prefix}_err_px", split)
        label = stats.metric_label(n["metric"], models)
        withheld = stats.final_verdict(n) == WITHHELD
        clause = (f"{label} {stats.format_diff(n)} (withheld)" if withheld else _clause(n, label, reported, floor))
        # a worse nose whose whole interval lies beyond ± the instrument's noise floor
        beyond = (" and beyond the instrument's noise floor" if floor > 0 and stats.final_verdict(n) == "worse"
                  and math.isfinite(n["lo"]) and (n["lo"] > floor or n["hi"] < -floor)
                  and "noise floor" not in clause else "")
        out.append(clause + beyond)
        out += _fail_words(diffs, prefix, split, who, models)
        if _has(diffs, f"{prefix}_gt_err_sr", split):
            g = stats.find(diffs, f"{prefix}_gt_err_sr", split)
            if g["n"]:
                out.append(f"{stats.metric_label(g['metric'], models)} {stats.format_diff(g)} ({stats.final_verdict(g)})")
    return out


def _on_models(by_model: dict[str, object], good, models, what: str) -> str:
    """", and this holds on both landmark models" / ", on RetinaFace but not on dlib" for a claim that holds on
    the models whose value satisfies ``good``; "" with one model."""
    if len(by_model) < 2:
        return ""
    names = {m: stats.model_name(m, models) for m in by_model}
    yes = [names[m] for m, v in by_model.items() if good(v)]
    no = [names[m] for m, v in by_model.items() if not good(v)]
    if not no:
        return f"; {what} holds on both landmark models ({', '.join(names.values())})"
    if not yes:
        return f"; {what} holds on neither landmark model ({', '.join(names.values())})"
    return f"; {what} holds on {', '.join(yes)} but not on {', '.join(no)}"


def finding_v1(diffs: list[dict], reported: dict | None = None, floor_px=0.0,
               models: dict[str, str] | None = None) -> dict:
    """Findings (i) v1 raises PSNR over zero-shot and (ii) v1 worsens the nose metric, per split.

    ``diffs``: stats.compare(rows, zero-shot, v1), optionally through ``stats.holm``. ``floor_px``: the first
    model's noise floor or {"nose": …, "nose2": …}; ``models`` names the landmark models. With a second model the
    headline says whether the finding holds on both, and failure-rate differences that exclude zero are named.
    Returns {"psnr_up" (all splits), "nose_worse" (splits where the first model's nose got worse),
    "nose_worse_by_model", "fail_worse" ({prefix: splits}), "markdown"}.
    """
    prefixes = _models(diffs)
    lines, psnr_up = [], True
    worse = {m: [] for m in prefixes}
    fail_worse = {m: [] for m in prefixes}
    for split in SPLITS:
        p = stats.find(diffs, "psnr", split)
        stats.find(diffs, "nose_err_px", split)                 # required, as before
        psnr_up &= stats.final_verdict(p) == "better"
        for m in prefixes:
            if _final(diffs, f"{m}_err_px", split) == "worse":
                worse[m].append(split)
            if _final(diffs, f"{m}_fail", split) == "worse":
                fail_worse[m].append(split)
        nose = "; ".join(_nose_lines(diffs, split, "v1", reported, floor_px, models))
        lines.append(f"* **{split}** ({p['n']} crops): {_clause(p, 'PSNR', reported)}; {nose}")
    i = ("**(i) v1 raises PSNR over zero-shot on every split**" if psnr_up else
         "**(i) v1 does not raise PSNR detectably on every split**")
    # one sentence for one or two landmark models: the second adds a per-model parenthesis and _on_models
    two = len(prefixes) > 1
    any_worse = [s for s in SPLITS if any(s in w for w in worse.values())]
    per = "; ".join(f"{stats.model_name(m, models)}: {', '.join(w) or 'no split'}" for m, w in worse.items())
    if any_worse:
        ii = (f"**(ii) v1 worsens the nose metric on {', '.join(any_worse)}**" + (f" ({per})" if two else "")
              + _on_models(worse, lambda w: bool(w) and w == any_worse, models, "this"))
    else:
        names = ", ".join(stats.model_name(m, models) for m in prefixes)
        ii = ("**(ii) this run detects no worsening of the nose metric by v1** on any split"
              + (f", on either landmark model ({names})" if two else ""))
    stated = [f"{stats.model_name(m, models)} on {split}" for m in prefixes for split in SPLITS
              if _final(diffs, f"{m}_err_px", split) not in (None, WITHHELD)]
    n_all = sum(_has(diffs, f"{m}_err_px", sp) for m in prefixes for sp in SPLITS)
    if not stated:
        ii = "**(ii) not stated**: every nose verdict is withheld (notebook 02's instrument check)"
    elif not any(worse.values()) and len(stated) < n_all:
        ii = (f"**(ii) this run detects no worsening of the nose metric by v1** where a verdict is stated "
              f"({', '.join(stated)}; the others are withheld)")
    fails = [f"{stats.model_name(m, models)} on {', '.join(w)}" for m, w in fail_worse.items() if w]
    tail = (f" v1 made the landmark model fail to find the nose more often ({'; '.join(fails)})." if fails else "")
    return {"psnr_up": psnr_up, "nose_worse": worse["nose"], "nose_worse_by_model": worse, "fail_worse": fail_worse,
            "markdown": f"{i}; {ii}.{tail} Differences are v1 − zero-shot with paired bootstrap 95 % intervals:\n\n"
                        + "\n".join(lines)}


def finding_v2(v2_vs_v1: list[dict], v2_vs_zs: list[dict], v1_vs_zs: list[dict],
               reported: dict | None = None, floor_px=0.0, models: dict[str, str] | None = None) -> dict:
    """Finding (iii): does v2 cut LPIPS (against v1) and recover the nose metric, per landmark model?

    "Recover": on the splits where v1 worsened the nose against zero-shot, v2 is better than v1 and not worse than
    zero-shot. ``reported``: {"lpips_ratio": …} and optionally the write-up's v2 − v1 differences by split, held
    against the v2 − v1 nose clauses under the noise floor rule; ``floor_px``/``models`` as in ``finding_v1``.
    Returns {"lpips_cut", "lpips_ratio" (v1/v2), "nose_recovered" (first model; None when v1 worsened nothing),
    "nose_recovered_by_model", "markdown"}.
    """
    lp = stats.find(v2_vs_v1, "lpips")
    ratio = lp["base_value"] / lp["new_value"] if lp["new_value"] > 0 else math.nan
    lpips_cut = stats.final_verdict(lp) == "better"
    lines = [f"* LPIPS, v2 − v1 over all crops: {stats.format_diff(lp)} — {_verdict(lp)}; v1's LPIPS is "
             f"{ratio:.2f}× v2's" + (f" (the write-up: {reported['lpips_ratio']:.1f}×)" if reported else "")]
    prefixes = [m for m in _models(v2_vs_v1) if m == "nose" or all(_has(d, f"{m}_err_px") for d in (v2_vs_zs, v1_vs_zs))]
    for split in SPLITS:
        d = stats.find(v2_vs_v1, "psnr", split)
        parts = []
        for m in prefixes:
            metric = f"{m}_err_px"
            a, b = stats.find(v2_vs_v1, metric, split), stats.find(v2_vs_zs, metric, split)
            floor = _floor(floor_px, m)
            rep = (reported or {}).get(split)
            agree = _agrees(a, rep.get(metric), floor) if isinstance(rep, Mapping) else ""
            parts.append(f"{stats.metric_label(metric, models)} v2 − v1 {stats.format_diff(a)} "
                         f"({stats.final_verdict(a)}{'; ' + agree if agree else ''}), v2 − zero-shot "
                         f"{stats.format_diff(b)} ({stats.final_verdict(b)})")
            for diffs, who in ((v2_vs_v1, "against v1, v2"), (v2_vs_zs, "against zero-shot, v2")):
                parts += _fail_words(diffs, m, split, who, models)
        lines.append(f"* **{split}**: " + "; ".join(parts) + f"; PSNR v2 − v1 {stats.format_diff(d)} "
                     f"({stats.final_verdict(d)})")
    recovered_by = {}
    worse_by = {}
    for m in prefixes:
        metric = f"{m}_err_px"
        worse_by[m] = [s for s in SPLITS if stats.final_verdict(stats.find(v1_vs_zs, metric, s)) == "worse"]
        recovered_by[m] = (all(stats.final_verdict(stats.find(v2_vs_v1, metric, s)) == "better"
                               and stats.final_verdict(stats.find(v2_vs_zs, metric, s)) != "worse"
                               for s in worse_by[m]) if worse_by[m] else None)
    # one sentence for one or two landmark models: one names the splits, two say per model what was recovered
    regressed = [m for m, r in recovered_by.items() if r is not None]
    where = ", ".join(worse_by["nose"]) if len(prefixes) == 1 else "; ".join(
        f"{stats.model_name(m, models)}: " + ("no regression to recover" if r is None else
                                               f"{'recovered' if r else 'not recovered'} on {', '.join(worse_by[m])}")
        for m, r in recovered_by.items())
    if not regressed:
        nose = ("has no nose regression to recover (v1 worsened no split detectably"
                + (" on either landmark model, where a verdict is stated)" if len(prefixes) > 1 else ")"))
    elif all(recovered_by[m] for m in regressed):
        nose = f"**recovers the nose metric** where v1 had worsened it ({where})"
    elif any(recovered_by[m] for m in regressed):
        nose = f"**recovers the nose metric on some landmark models only** ({where})"
    else:
        nose = f"**does not detectably recover the nose metric** where v1 had worsened it ({where})"
    nose += _on_models({m: recovered_by[m] for m in regressed}, lambda r: r is True, models, "the recovery")
    cut = (f"**cuts LPIPS** (v1/v2 = {ratio:.2f}×)" if lpips_cut else "**does not cut LPIPS detectably**")
    return {"lpips_cut": lpips_cut, "lpips_ratio": ratio, "nose_recovered": recovered_by["nose"],
            "nose_recovered_by_model": recovered_by,
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
    better = [m.upper() for m in perceptual if stats.final_verdict(stats.find(v2_vs_v1, m)) == "better"]
    worse = [m.upper() for m in perceptual if stats.final_verdict(stats.find(v2_vs_v1, m)) == "worse"]
    parts = ", ".join(f"{m.upper()} {stats.format_diff(stats.find(v2_vs_v1, m))}" for m in perceptual)
    shown = stats.final_verdict(p) == "worse" and bool(better)
    if shown:
        text = (f"**v2 trades PSNR for perceptual closeness**: it gives up PSNR ({stats.format_diff(p)}) and is "
                f"closer to the HR on {', '.join(better)}" + (f" but further from it on {', '.join(worse)}" if worse
                                                               else "") + f" ({parts}). v2 changes five things at "
                "once; how much of this the perceptual term did and how much the rest of the recipe did is split in "
                "notebook 07, which trains v2 at λ = 0 alike.")
    elif better:
        text = (f"**v2 is better than v1 on {', '.join(better)} without a detectable PSNR cost** "
                f"({stats.format_diff(p)}; {parts})" + (f", though worse on {', '.join(worse)}" if worse else "")
                + ".")
    else:
        text = (f"**This run does not show v2 trading PSNR for perception** (PSNR {stats.format_diff(p)}; {parts}"
                + (f"; worse on {', '.join(worse)}" if worse else "") + ").")
    return {"shown": shown, "markdown": text}


# ---- Which landmark model may speak on which dataset (notebook 02's instrument check) ----
WITHHELD = "withheld"
_DATASETS = ("SF-TL54", "ThermEval-D")


def nose_context(results_dir, locator, locator2=None) -> dict:
    """What later notebooks need to read nose comparisons: ``models`` ({"nose": "RetinaFace", …}), ``floors`` (px,
    from 02's files), ``reads`` ({"<dataset>|<model>": bool} from 02's ``instrument_check.json``) and
    ``sensitivity``."""
    from pathlib import Path

    from .downstream import noise_floor_px, short_name
    from .io import read_json

    results_dir = Path(results_dir)
    models, floors = {"nose": short_name(locator)}, {}
    floors["nose"] = noise_floor_px(read_json(results_dir / "nose_noise_floor.json"))
    if locator2 is not None:
        models["nose2"] = short_name(locator2)
        path = results_dir / "nose2_noise_floor.json"
        if path.is_file():
            floors["nose2"] = noise_floor_px(read_json(path))
    check = results_dir / "instrument_check.json"
    got = read_json(check) if check.is_file() else {}
    from .instrument import sensitivity

    sens = {key: sensitivity(res) for key, res in got.get("results", {}).items()}
    return {"models": models, "floors": floors, "reads": got.get("reads_faces", {}), "sensitivity": sens}


def withhold(comparisons: list[dict], ctx: dict) -> list[dict]:
    """Copies of ``comparisons`` with the verdicts of every nose comparison whose model failed 02's instrument check
    on that split's data (both datasets for "all") set to ``WITHHELD`` (numbers kept)."""
    out = []
    for c in comparisons:
        prefix = stats.nose_model(c["metric"])
        datasets = _DATASETS if c["split"] == "all" else (c["split"],)
        if prefix is not None and not all(ctx["reads"].get(f"{d}|{ctx['models'].get(prefix)}", False)
                                          for d in datasets):
            c = {**c, "verdict": WITHHELD, **({"verdict_holm": WITHHELD} if "verdict_holm" in c else {})}
        out.append(c)
    return out


def withheld_line(ctx: dict) -> str:
    """Sentences naming the (dataset, model) pairs whose nose verdicts are withheld (or saying none is), and the
    stated ones whose instrument is less sensitive than on real crops."""
    off = [f"{m} on {d}" for prefix, m in ctx["models"].items() for d in _DATASETS
           if not ctx["reads"].get(f"{d}|{m}", False)]
    if not off:
        text = "Every landmark model passed notebook 02's instrument check on both datasets, so every nose verdict below is stated."
    else:
        text = ("Nose verdicts are **withheld** (numbers shown, marked \"withheld\") for " + ", ".join(off)
                + ": notebook 02 found that model's nose too far from the annotated nose there (or too many faces "
                  "missed), so a change in its estimate does not say where the nose went. Verdicts on \"all\" need "
                  "both datasets.")
    weak = [f"{m} on {d} (×{ctx['sensitivity'][f'{d}|{m}']:.2f})" for m in ctx["models"].values() for d in _DATASETS
            if ctx["reads"].get(f"{d}|{m}", False) and (ctx.get("sensitivity") or {}).get(f"{d}|{m}") is not None
            and ctx["sensitivity"][f"{d}|{m}"] < 1 / 1.5]
    if weak:
        text += (" Where a verdict is stated, its instrument moves under blur and bicubic less than on real thermal "
                 "crops (" + ", ".join(weak) + " of the real figure): a difference it detects is real, but \"no "
                 "detectable difference\" may hide one that real faces would show.")
    return text


# ---- The four lines a reader sees first (the report's banner and the README) ----
def stated_nose(diffs: list[dict], models, who: str) -> str:
    """Every nose-median comparison whose verdict is stated (not withheld), split by split: "<split>, <model>:
    <difference> (<verdict>)"; a sentence saying none is where every one is withheld."""
    stated = []
    for split in SPLITS:
        for c in diffs:
            prefix = stats.nose_model(c["metric"])
            if (c["split"] == split and prefix and c["metric"] == f"{prefix}_err_px"
                    and stats.final_verdict(c) != WITHHELD):
                stated.append(f"{split}, {stats.model_name(prefix, models)}: {stats.format_diff(c)} "
                              f"({stats.final_verdict(c)})")
    if not stated:
        return f"no nose verdict on {who} is stated: no landmark model read these faces well enough (notebook 02)"
    return "; ".join(stated)


def headline(v1_vs_zs: list[dict], v2_vs_v1: list[dict], models=None, reported_ratio: float | None = None) -> str:
    """Four Markdown lines, each a finding with interval and verdict: v1's PSNR over zero-shot, v1's stated nose
    changes, v2's perceptual gain over v1 (with the LPIPS ratio), and what v2 paid in PSNR and on the nose."""
    ratio = stats.find(v2_vs_v1, "lpips")
    lp = f"LPIPS {stats.format_diff(ratio)} ({stats.final_verdict(ratio)}; v1's LPIPS is " \
         f"{ratio['base_value'] / ratio['new_value']:.2f}× v2's" + \
         (f", the write-up's {reported_ratio:.1f}×)" if reported_ratio else ")")
    if _has(v2_vs_v1, "dists"):
        d = stats.find(v2_vs_v1, "dists")
        lp += f", DISTS {stats.format_diff(d)} ({stats.final_verdict(d)})"
    p1, p2 = stats.find(v1_vs_zs, "psnr"), stats.find(v2_vs_v1, "psnr")
    return "\n".join([
        f"1. **v1 (pixel loss) − zero-shot, PSNR:** {stats.format_diff(p1)} ({stats.final_verdict(p1)}).",
        f"2. **v1 − zero-shot, nose error:** {stated_nose(v1_vs_zs, models, 'v1')}.",
        f"3. **v2 (L1 + LPIPS) − v1, perceptual distance:** {lp}.",
        f"4. **v2 − v1, what it cost:** PSNR {stats.format_diff(p2)} ({stats.final_verdict(p2)}); nose error: "
        f"{stated_nose(v2_vs_v1, models, 'v2')}.",
    ]) + "\n"


# ---- Notebook 08: does a task term help the task, or only its own judge? ----
def finding_v3(v3_vs_v2: list[dict], models, in_loss: str = "nose", variant: str = "v3") -> dict:
    """One paragraph on ``variant`` − v2: PSNR, LPIPS, DISTS over all crops, and for each landmark model (``in_loss``
    the prefix of the one in the loss, the other independent) its nose median and failure rate on every split where
    its verdict is stated (all crops when stated there). Returns {"own", "independent": "better" / "worse" / "no
    detectable difference" / "mixed" / WITHHELD (no split stated) / "not measured", "only_own_judge", "verdict",
    "markdown"}; a verdict is the Holm-adjusted one where set."""
    def said(metric: str, split: str = "all") -> str:
        c = stats.find(v3_vs_v2, metric, split)
        return f"{stats.format_diff(c)} ({stats.final_verdict(c)})"

    def stated(prefix: str) -> list[str]:
        splits = [s for s in SPLITS if _has(v3_vs_v2, f"{prefix}_err_px", s)
                  and stats.final_verdict(stats.find(v3_vs_v2, f"{prefix}_err_px", s)) != WITHHELD]
        return ["all"] if "all" in splits else splits

    def overall(prefix: str | None) -> str:
        if prefix is None:
            return "not measured"
        got = {stats.final_verdict(stats.find(v3_vs_v2, f"{prefix}_err_px", s)) for s in stated(prefix)}
        return WITHHELD if not got else got.pop() if len(got) == 1 else "mixed"

    other = next((m for m in _models(v3_vs_v2) if m != in_loss), None)
    image = "; ".join(f"{stats.metric_label(m)} {said(m)}" for m in ("psnr", "lpips", "dists") if _has(v3_vs_v2, m))
    nose = []
    for prefix, role in ((in_loss, "in the loss"), (other, "not in the loss")):
        if prefix is None:
            continue
        where = stated(prefix)
        got = "; ".join(f"{s}: nose median {said(f'{prefix}_err_px', s)}, failure rate {said(f'{prefix}_fail', s)}"
                        for s in where) or "every verdict withheld (notebook 02: it does not read these faces)"
        nose.append(f"{stats.model_name(prefix, models)} ({role}) — {got}")
    own, independent = overall(in_loss), overall(other)
    judge, second = stats.model_name(in_loss, models), stats.model_name(other, models) if other else "a second model"
    words = {"worse": "the nose further off", "mixed": "mixed verdicts across the datasets",
             WITHHELD: "no verdict (withheld by notebook 02's check)"}
    if own == "better" and independent == "better":
        verdict = f"**the nose gain holds on {second}, the model the loss never saw**"
    elif own == "better" and independent in (WITHHELD, "not measured"):
        verdict = (f"{judge} reads the nose closer, but {second}, which the loss never saw, cannot judge these faces "
                   "(its verdicts are withheld): **this run cannot tell a better nose from a better-pleased judge**")
    elif own == "better":
        verdict = (f"**{variant} only improves its own judge**: {judge} reads the nose closer, while {second}, which "
                   f"the loss never saw, finds {words.get(independent, independent)}")
    elif independent == "better":
        verdict = f"{second} (not in the loss) reads the nose closer; {judge} (in the loss) finds {words.get(own, own)}"
    else:
        verdict = (f"neither landmark model reads the nose closer ({judge}: {words.get(own, own)}; {second}: "
                   f"{words.get(independent, independent)})")
    return {"own": own, "independent": independent, "only_own_judge": own == "better" and independent != "better",
            "verdict": verdict,
            "markdown": f"**{variant} − v2:** {verdict}. Image, all crops: {image}. Landmarks: {'. '.join(nose)}."}


def self_ensemble_words(gains: list[dict], reported_db: tuple[float, float], short: bool = False) -> str:
    """What self-ensemble gave each method (``gains``: "<method> +" − "<method>" comparisons over all crops) in PSNR,
    each set against the ``reported_db`` range the write-up expects; with ``short`` one sentence, PSNR only."""
    lo, hi = reported_db
    parts = []
    for c in (g for g in gains if g["metric"] == "psnr" and g["split"] == "all"):
        where = "below" if c["diff"] < lo else "above" if c["diff"] > hi else "inside"
        words = f"{c['base']}: PSNR {stats.format_diff(c)} ({stats.final_verdict(c)}; {where} the write-up's range)"
        if not short:
            more = [f"{stats.metric_label(d['metric'])} {stats.format_diff(d)} ({stats.final_verdict(d)})" for d in gains
                    if d["base"] == c["base"] and d["split"] == "all" and d["metric"] != "psnr"]
            words += f", {', '.join(more)}" if more else ""
        parts.append(words)
    return (f"{'**Self-ensemble**' if short else 'Self-ensemble'} gains {'; '.join(parts)}. The write-up expects "
            f"+{lo:g}–{hi:g} dB.")