"""The perception–distortion frontier of notebook 07: which sweep points the runner trained, their scores on the
test crops (through the one evaluation engine, cached per checkpoint), weight blends between two of them, the
non-dominated set, how far apart seeds land, and the split of v1 → v2 into its two parts.

The points are the ones ``run.frontier_plan`` executes and writes down (``read_plan``): v2 at every λ of
``frontier_lambdas``, v1 and v2 at every seed of ``frontier_seeds``, v1 at every rate of ``frontier_v1_lrs``, all
with the main run's schedule; a value equal to the main run's is the main run itself (so the main v2 *is* the point
at its λ). The main run's v2 also gives EMA against its raw weights at the same epoch.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

from . import config, evaluate, io, stats
from .metric_specs import METRICS as SPECS

METRICS = ("psnr", "ssim", "lpips", "dists", "nose_err_px")
TABLE_COLUMNS = [("method", "Method"), ("steps", "Steps"), ("n", "N"),
                 *((m, SPECS[m].heading(unit=True)) for m in METRICS)]
ROW_VERSION = "subject+source+palette+nose2"  # cached rows carry the fields the bootstrap resamples by


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


PLAN_FILE = "frontier_plan.json"   # written by the runner (run.write_plan) before it trains the sweep points
_LABELS = {"lambda": "v2 λ={:g}", "v1 seed": "v1 seed {}", "v2 seed": "v2 seed {}", "v1 lr": "v1 lr={:g}"}


def read_plan(paths: config.RunPaths) -> list[Entry]:
    """Every model of the frontier study, in the runner's order: the plan's points (the main run's value of each
    group is the main run itself), then the main run's v2 as kept (EMA) and its raw weights at the same epoch."""
    from .checkpoint import BEST_DIR, BEST_RAW_DIR

    file = paths.root / PLAN_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{file} does not exist: notebook 07 reads the models the runner trains for it; run "
                                f"`python -m thermsr_utils.run --profile {paths.profile} --only 07` (after 01-06)")
    out = []
    for e in io.read_json(file)["entries"]:
        p = config.run_paths(paths.profile, e["point"])
        out.append(Entry(_LABELS[e["group"]].format(e["value"]), e["group"], e["value"], p,
                         p.checkpoints / e["recipe"] / BEST_DIR))
    out.sort(key=lambda e: (list(_LABELS).index(e.group), e.value))
    out.append(Entry("v2 (EMA)", "ema", None, paths, paths.checkpoints / "v2" / BEST_DIR))
    out.append(Entry("v2 raw weights", "raw", None, paths, paths.checkpoints / "v2" / BEST_RAW_DIR))
    return out


def optimizer_steps(entry: Entry) -> int:
    """Optimizer steps the entry's kept model trained (from its history up to the kept epoch)."""
    from .checkpoint import HISTORY_FILE, META_FILE

    meta = io.read_json(entry.checkpoint / META_FILE)
    history = io.read_json(entry.checkpoint.parent / HISTORY_FILE)
    return int(sum(h.get("steps", 0) for h in history if h["epoch"] <= meta["epoch"]))


def steps_words(entries: list[Entry], steps: dict[str, int]) -> str:
    """Whether every model of each recipe trained the same number of optimizer steps, in one paragraph."""
    recipe = {e.label: ("v1" if e.group == "v1 seed" else "v2") for e in entries}
    counts = {name: sorted({steps[e.label] for e in entries if recipe[e.label] == name}) for name in ("v1", "v2")}
    words = []
    for name, c in counts.items():
        labels = ", ".join(dict.fromkeys(e.label for e in entries if recipe[e.label] == name))
        words.append(f"every {name} model trained {c[0]} optimizer steps ({labels})" if len(c) == 1 else
                     f"**the {name} models were not trained alike**: {', '.join(map(str, c))} steps ({labels})")
    text = "; ".join(words)
    text = text[:1].upper() + text[1:] + "."
    if len(counts["v1"]) == 1 and len(counts["v2"]) == 1:
        text += (f" v2 took {counts['v2'][0] / counts['v1'][0]:.1f}× v1's steps (the write-up: 10,400 against 3,120, "
                 "3.3×; notebook 05 says why the demo trains both alike).")
    return text + " The main run's v2 is the frontier point at its λ, and seed 0 is the main run."


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
                    and meta.get("instruments") == scorer.instruments() and meta.get("row_fields") == ROW_VERSION):
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
                            {"method": entry.label, "weights": loaded[ckpt][1], "ids": ids, "row_fields": ROW_VERSION,
                             "checkpoint_sha256": sha, "instruments": scorer.instruments()})
        out[ckpt] = rows[entry.label]
    return out


def summarise(rows: list[dict], methods, *, n_boot: int = 2000, seed: int = 0) -> list[dict]:
    """One row per method: each metric's statistic (mean; median for the nose error) over its crops with a
    bootstrap interval (``<metric>_lo`` / ``<metric>_hi``) that resamples subjects and source frames."""
    out = []
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            raise ValueError(f"no rows of method {method!r} to summarise")
        row = {"method": method, "n": len(mine)}
        units = [stats.resampling_unit(r) for r in mine]
        for metric in METRICS:
            ci = stats.interval([r.get(metric, math.nan) for r in mine], SPECS[metric].stat, n_boot=n_boot,
                                seed=seed, groups=units)
            row.update({metric: ci["value"], f"{metric}_lo": ci["lo"], f"{metric}_hi": ci["hi"]})
            if metric == "nose_err_px":
                row["nose_n"] = ci["n"]
        out.append(row)
    return out


def non_dominated(summary: list[dict], x: str = "psnr", y: str = "lpips") -> list[str]:
    """Methods no other method beats on both ``x`` and ``y`` (each in its own better direction), ordered by x."""
    dx, dy = SPECS[x].direction, SPECS[y].direction
    pts = [(r["method"], dx * r[x], dy * r[y]) for r in summary if math.isfinite(r[x]) and math.isfinite(r[y])]
    keep = [m for m, a, b in pts
            if not any((a2 >= a and b2 >= b) and (a2 > a or b2 > b) for m2, a2, b2 in pts if m2 != m)]
    return sorted(keep, key=lambda m: next(r[x] for r in summary if r["method"] == m))


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
        m = SPECS[metric]
        if not math.isfinite(r[metric]):
            return "–"
        return f"{m.text(r[metric])} [{m.text(r[metric + '_lo'])}, {m.text(r[metric + '_hi'])}]"
    rows = ([r["method"], r.get("steps", "–"), r["n"], *(cell(r, m) for m in METRICS)] for r in summary)
    return io.markdown_table([label for _, label in TABLE_COLUMNS], rows, caption)


def write_table(summary: list[dict], stem, caption: str) -> tuple[Path, Path]:
    """``stem``.csv (every field) and ``stem``.md (``table_markdown``), atomically."""
    return io.atomic_write_csv_and_md(summary, stem, table_markdown(summary, caption))


# ---- Network interpolation: the curve between two trained models, without training ----
def blend_state(a: dict, b: dict, alpha: float) -> dict:
    """(1 − alpha)·a + alpha·b for every floating tensor of two state dicts of one architecture (others from a)."""
    if a.keys() != b.keys():
        raise ValueError("the two models' weights have different tensors; blend models of one architecture only")
    out = {}
    for k, ta in a.items():
        tb = b[k]
        if ta.shape != tb.shape:
            raise ValueError(f"tensor {k!r} has shape {tuple(ta.shape)} in one model and {tuple(tb.shape)} in the other")
        out[k] = ta.lerp(tb, float(alpha)) if ta.is_floating_point() else ta.clone()
    return out


def blend_alphas(points: int) -> list[float]:
    """``points`` evenly spaced blend weights strictly between 0 and 1 (the trained ends are scored already)."""
    return [k / (points + 1) for k in range(1, points + 1)]


def interpolate(start: Entry, end: Entry, alphas, crops_dir, records, scorer, *, batch_size: int = 8,
                device: str = "cpu") -> list[dict]:
    """Per-crop rows of the blends θ = (1 − α)·θ_start + α·θ_end (method "blend α=<α>"), scored together."""
    from . import models

    m0, _ = models.load_model(start.checkpoint, device=device)
    m1, _ = models.load_model(end.checkpoint, device=device)
    s0, s1 = m0.state_dict(), m1.state_dict()
    methods = {}
    for alpha in alphas:
        model = copy.deepcopy(m0)                  # the start model's architecture, loaded once
        model.load_state_dict(blend_state(s0, s1, alpha))
        methods[blend_label(alpha)] = evaluate.model_method(model.eval(), batch_size, device)
    rows = evaluate.evaluate_methods(methods, crops_dir, records, scorer, batch_size=batch_size)
    return [r for name in methods for r in rows[name]]


def blend_label(alpha: float) -> str:
    return f"blend α={alpha:.2f}"


# ---- v1 → v2 in two parts: the rest of the recipe (v1 → v2 at λ = 0) and the perceptual term (λ = 0 → main λ) ----
def decomposition(rows: list[dict], v1: str, v2_zero: str, v2_main: str, *, metrics=("psnr", "lpips", "dists"),
                  n_boot: int = 2000, seed: int = 0) -> dict[str, list[dict]]:
    """Paired comparisons (subject/frame bootstrap) of the whole change v1 → v2 and of its two parts."""
    kw = dict(metrics=metrics, splits=("all",), n_boot=n_boot, seed=seed)
    return {"whole": stats.compare(rows, v1, v2_main, **kw), "recipe": stats.compare(rows, v1, v2_zero, **kw),
            "term": stats.compare(rows, v2_zero, v2_main, **kw)}


def decomposition_words(parts: dict[str, list[dict]], main_lambda: float) -> str:
    """The split of v1 → v2 in words: each metric's whole change, then its two parts with intervals."""
    out = []
    for metric in [c["metric"] for c in parts["whole"]]:
        w, r, t = (stats.find(parts[k], metric) for k in ("whole", "recipe", "term"))
        name = stats.metric_label(metric)
        out.append(f"* **{name}**: v1 → v2 {stats.format_diff(w)} ({w['verdict']}) = the rest of the recipe (v1 → v2 at "
                   f"λ = 0) {stats.format_diff(r)} ({r['verdict']}) + the perceptual term (λ = 0 → {main_lambda:g}) "
                   f"{stats.format_diff(t)} ({t['verdict']})")
    return "\n".join(out)


def blend_words(rows: list[dict], curve: list[dict], trained: list[dict], *, n_boot: int = 2000, seed: int = 0) -> str:
    """Does a trained λ point or the weight blend nearest to it in PSNR do better, paired on the same crops?"""
    blends = [r for r in curve if r["method"].startswith("blend")]
    if not blends:
        return ""
    first, last, db, lp = curve[0], curve[-1], SPECS["psnr"], SPECS["lpips"]
    words = [f"Blending the weights of {first['method']} and {last['method']} traced {len(blends)} models between "
             f"them without training, from {db.text(blends[0]['psnr'], unit=True)} / LPIPS {lp.text(blends[0]['lpips'])} "
             f"to {db.text(blends[-1]['psnr'], unit=True)} / LPIPS {lp.text(blends[-1]['lpips'])}."]
    if not trained:
        return words[0] + " No trained λ point lies between the ends to compare the blends with."
    for point in trained:
        near = min(blends, key=lambda b: abs(b["psnr"] - point["psnr"]))
        cmp = stats.compare(rows, near["method"], point["method"], metrics=("psnr", "lpips"), splits=("all",),
                            n_boot=n_boot, seed=seed)
        p, l = stats.find(cmp, "psnr"), stats.find(cmp, "lpips")
        better = {v for v in (p["verdict"], l["verdict"])}
        if "better" in better and "worse" not in better:
            who = f"the trained {point['method']} dominates the blend"
        elif "worse" in better and "better" not in better:
            who = f"the blend dominates the trained {point['method']}"
        else:
            who = "neither dominates the other detectably"
        words.append(f"Against the blend nearest to it in PSNR ({near['method']}), {point['method']} differs by PSNR "
                     f"{stats.format_diff(p)} and LPIPS {stats.format_diff(l)}: {who}.")
    return " ".join(words)


def seed_words(gaps: dict, v1_rows: list[dict], v2_rows: list[dict], metric: str) -> str:
    """The v2 − v1 gap of ``metric`` per seed against the spread between seeds of either recipe."""
    per_seed = [stats.find(g, metric) for g in gaps.values()]
    widest = max(spread(v1_rows, metric), spread(v2_rows, metric))
    smallest = min(abs(c["diff"]) for c in per_seed)
    name = stats.metric_label(metric)
    text = (f"v2 − v1 {name} per seed: " + "; ".join(f"seed {s} {stats.format_diff(c)}" for s, c in zip(gaps, per_seed))
            + f". The seed-to-seed range of either recipe's mean {name} is at most {widest:.4g}, ")
    if len(gaps) < 2:
        return text + "but with a single seed there is no spread to compare with."
    return text + ("so the smallest gap is larger than the spread between seeds." if smallest > widest else
                   "so the gap is not larger than the spread between seeds.")


# ---- The learning rate: v1 at each rate, read from each run's own validation (no test scoring) ----
def lr_table(histories: dict[float, list[dict]]) -> list[dict]:
    """One row per learning rate: pooled validation PSNR before finetuning (epoch 0, the zero-shot model) and at
    the last epoch, and the LPIPS there."""
    rows = []
    for lr, history in histories.items():
        vals = [h for h in history if h["val"]]
        start = next((h for h in vals if h["epoch"] == 0), None)
        end = vals[-1]
        rows.append({"lr": lr, "epochs": end["epoch"], "psnr_start": start["val"]["all"]["psnr"] if start else math.nan,
                     "psnr": end["val"]["all"]["psnr"], "lpips": end["val"]["all"].get("lpips", math.nan)})
    return rows


def lr_words(rows: list[dict], main_lr: float) -> str:
    """Which learning rate gave v1 the best validation PSNR, and which fell below the zero-shot model."""
    zero_shot = next((r["psnr_start"] for r in rows if math.isfinite(r["psnr_start"])), math.nan)
    best = max(rows, key=lambda r: r["psnr"])
    below = [f"{r['lr']:g}" for r in rows if r["psnr"] < zero_shot]
    main = next(r for r in rows if r["lr"] == main_lr)
    db = lambda x: SPECS["psnr"].text(x, unit=True)  # noqa: E731
    return (f"v1's validation PSNR after its {main['epochs']} epochs, by learning rate: "
            + ", ".join(f"{r['lr']:g} → {db(r['psnr'])}" for r in rows)
            + f" (the zero-shot model: {db(zero_shot)}). The best is {best['lr']:g}; this run's {main_lr:g} is "
            + ("that rate." if best["lr"] == main_lr else f"{db(best['psnr'] - main['psnr'])} below it.")
            + (f" Below zero-shot: {', '.join(below)}." if below else " No rate fell below zero-shot.")
            + " These are validation crops, so the choice does not peek at the test crops.")
