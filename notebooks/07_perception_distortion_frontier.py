# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 07 · The perception–distortion frontier
#
# The write-up compares two recipes, v1 (L1) and v2 (L1 + 0.05·LPIPS), and reads a trade-off into the pair.
# Blau and Michaeli (2018) showed why a trade-off must appear: for any restoration method, the lowest reachable
# distortion (say, mean squared error) rises as the output's statistics are pushed closer to those of real
# images. No method reaches both ends at once; the best methods lie on a curve, the *perception–distortion
# frontier*, and a loss weight only chooses where on it a model lands.
#
# This notebook traces that curve for this run instead of two points on it:
#
# - **λ**: v2 retrained at every weight of the LPIPS term in `frontier_lambdas`, each model scored on the same
#   test crops with PSNR (distortion) against LPIPS, DISTS and the nose error, with bootstrap intervals;
# - **seeds**: v1 and v2 (at the main run's λ) retrained with every seed in `frontier_seeds`; is the v1–v2 gap
#   larger than what a different seed alone moves?
# - **EMA**: the main run's v2 kept an exponential moving average of its weights; its raw weights at the same
#   epoch are scored beside it.
#
# The runner trains the sweep points before this notebook starts (each in its own folder under
# `artifacts/<profile>/sweeps/`, reusing the main run's crops and models); this notebook only reads them.

# %% tags=["parameters"]
profile = "demo"  # smoke | demo | paper
seed = 0  # seeds Python, NumPy and torch, and the bootstrap
backbone = "srresnet"  # the finetuned model's architecture, as in 02-06
lpips_weight = 0.05  # the main run's λ (the write-up's), marked in the figures
frontier_lambdas = [0.0, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]  # v2 retrained at each λ
frontier_seeds = [0, 1, 2]  # v1 and v2 retrained with each seed
frontier_v2_epochs = 2  # epochs of every v2 sweep point (the main run's v2 may train longer)
nose_model = "auto"  # auto | rtmlib | retinaface, as in 02
table_per_dataset = 60  # the tables use the first 60 test crops of each dataset
bootstrap_samples = 2000  # bootstrap resamples of the test crops for every interval
batch_size = 8  # inference batch size
device = "auto"  # auto | cpu | cuda

# %%
from IPython.display import Markdown, display

from thermsr_utils import checkpoint, config, data, downstream, evaluate, frontier, io, plots, stats

paths, device, records = data.open_run(profile, seed, device)  # every crop checked against its hash
table = evaluate.table_subset(records, table_per_dataset)
caption = evaluate.caption(profile, config.provenance(paths))
locator = downstream.prepare_locator(nose_model, device=device)
scorer = evaluate.make_scorer(locator, device=device, perceptual=("lpips", "dists"))
print(f"{len(table)} test crops; instruments: {', '.join(scorer.instruments())}")

# %% [markdown]
# ## What was trained
#
# Every point is a full run of notebook 03 or 05 through the same training loop and recipe builder, with one
# parameter changed. What the sweep had to shrink to fit its budget is stated here, from the runs' own records.

# %%
entries = frontier.planned(profile, frontier_lambdas, frontier_seeds, frontier_v2_epochs)
missing = [e for e in entries if not e.trained]
if missing:
    raise FileNotFoundError(f"{len(missing)} frontier models are not trained yet ({', '.join(e.label for e in missing)}): "
                            f"run `python -m thermsr_utils.run --profile {profile}`, which runs 01-06, then the "
                            "frontier sweeps, then this notebook (`--only 07` when 01-06 have run)")
main_v2 = io.read_json(paths.checkpoints / "v2" / checkpoint.BEST_DIR / checkpoint.META_FILE)
sweep_v2 = io.read_json(entries[0].checkpoint / checkpoint.META_FILE)
display(Markdown(
    f"{len(frontier_lambdas)} λ points, {len(frontier_seeds)} seeds each for v1 and v2, and the main run's EMA and "
    f"raw weights: {len({e.checkpoint for e in entries})} models. The main run's v2 trained "
    f"{main_v2['recipe']['epochs']} epochs and kept epoch {main_v2['epoch']}; every v2 sweep point trained "
    f"{sweep_v2['recipe']['epochs']} epochs"
    + (" (shrunk to fit the sweep's budget)" if sweep_v2['recipe']['epochs'] < main_v2['recipe']['epochs'] else "")
    + ", so the λ curve and the v2 seeds compare with each other, not with the main run's v2."))
prov = config.record_provenance(paths, frontier=f"v2 at λ ∈ {{{', '.join(f'{l:g}' for l in frontier_lambdas)}}} "
                                                f"({sweep_v2['recipe']['epochs']} epochs each), seeds {frontier_seeds}")
caption = evaluate.caption(profile, prov)

# %% [markdown]
# ## Scoring every point
#
# The same evaluation engine as notebooks 02–06, on the table crops. Scores are cached next to each point's
# checkpoint (with its sha256), so rerunning this notebook scores only models that changed; the models still to
# score are scored together, so each test batch's HR features are computed once for all of them.

# %%
ids = {r["id"] for r in table}
# the main run's v1 and v2 were scored by notebooks 04 and 06 with the same instruments: their rows are reused
main_rows = {paths.checkpoints / "v1" / checkpoint.BEST_DIR: "v1 L1", paths.checkpoints / "v2" / checkpoint.BEST_DIR: "v2 perceptual"}
scored = {ckpt: [r for r in evaluate.read_method(paths.results, name) if r["id"] in ids]
          for ckpt, name in main_rows.items()}
scored |= frontier.score([e for e in entries if e.checkpoint not in scored], paths.crops, table, scorer,
                         batch_size=batch_size, device=device)
rows = [{**r, "method": e.label} for e in entries for r in scored[e.checkpoint]]
references = {"bicubic": "bicubic", f"zero-shot {backbone}": f"zero-shot {backbone}", "v1 L1": "v1 (main run)"}
for name, label in references.items():
    rows += [{**r, "method": label} for r in evaluate.read_method(paths.results, name) if r["id"] in ids]
summary = {r["method"]: r for r in frontier.summarise(rows, dict.fromkeys(r["method"] for r in rows),
                                                      n_boot=bootstrap_samples, seed=seed)}
by_group = {g: [summary[e.label] for e in entries if e.group == g] for g in ("lambda", "v1 seed", "v2 seed", "ema", "raw")}
frontier.write_table([summary[e.label] for e in entries], paths.results / "table_frontier", caption)
display(Markdown(frontier.table_markdown([summary[e.label] for e in entries], caption)))

# %% [markdown]
# ## The curve
#
# PSNR (right is less distortion) against each perceptual measure (down is better). Each λ point carries its
# 95 % bootstrap interval on both axes; the dashed line joins the λ points no other λ point beats on both axes
# (the empirical frontier); bicubic, the zero-shot network and the main run's v1 are marked for scale.

# %%
lam_rows = [{**r, "tag": f"λ={e.value:g}"} for e, r in zip([e for e in entries if e.group == "lambda"], by_group["lambda"])]
refs = [summary[label] for label in references.values()]
metrics = (("lpips", "LPIPS"), ("dists", "DISTS"), ("nose_err_px", "nose error, median (px)"))
fronts = {m: frontier.non_dominated(lam_rows, "psnr", m) for m, _ in metrics}
fig = plots.plane_with_intervals({"v2 at each λ": lam_rows, "references": refs}, paths.figures / "frontier.png",
                                 metrics=metrics, connect=("v2 at each λ",), fronts=fronts,
                                 mark=f"v2 λ={lpips_weight:g}", caption=caption,
                                 title=f"Perception–distortion frontier: v2 at {len(lam_rows)} weights λ")
fig

# %%
lo_lam, hi_lam = min(frontier_lambdas), max(frontier_lambdas)
ends = stats.compare(rows, f"v2 λ={lo_lam:g}", f"v2 λ={hi_lam:g}", metrics=frontier.METRICS, splits=("all",),
                     n_boot=bootstrap_samples, seed=seed)
lam_sorted = sorted(zip(frontier_lambdas, by_group["lambda"]), key=lambda t: t[0])
falls = {m: frontier.steps([r for _, r in lam_sorted], m) for m in ("psnr", "lpips", "dists")}
knee = frontier.bend([l for l, _ in lam_sorted], [r["psnr"] for _, r in lam_sorted], [r["lpips"] for _, r in lam_sorted])


def moved(metric):
    c = stats.find(ends, metric)
    return f"{stats.format_diff(c)} ({c['verdict']})"


curve_words = (
    f"From λ = {lo_lam:g} to λ = {hi_lam:g}, LPIPS changed by {moved('lpips')}, DISTS by {moved('dists')}, PSNR by "
    f"{moved('psnr')} and the nose error by {moved('nose_err_px')}. Step by step, LPIPS fell at "
    f"{falls['lpips'][0]} of {falls['lpips'][1]} steps of λ and PSNR at {falls['psnr'][0]} of {falls['psnr'][1]}"
    + (f"; the PSNR–LPIPS curve bends most at λ = {knee:g} (the point farthest from the chord between its ends)"
       if knee is not None else "")
    + f". Non-dominated on PSNR and LPIPS: {', '.join(fronts['lpips'])}.")
display(Markdown(curve_words))

# %% [markdown]
# ## Seeds: is the v1–v2 gap more than noise?
#
# A recipe's score also depends on the seed (initial patches, augmentation, batch order). If two seeds of the
# same recipe land as far apart as v1 and v2, the write-up's one-seed comparison could not tell the recipes apart.

# %%
fig = plots.plane_with_intervals({"v1 seeds": [{**r, "tag": r["method"][3:]} for r in by_group["v1 seed"]],
                                  "v2 seeds": [{**r, "tag": r["method"][3:]} for r in by_group["v2 seed"]]},
                                 paths.figures / "frontier_seeds.png", metrics=metrics[:2], caption=caption,
                                 title="v1 and v2 with different seeds")
fig

# %%
gaps = {s: stats.compare(rows, f"v1 seed {s}", f"v2 seed {s}", metrics=("psnr", "lpips", "dists"), splits=("all",),
                         n_boot=bootstrap_samples, seed=seed) for s in frontier_seeds}
words = []
for metric in ("lpips", "psnr"):
    per_seed = [stats.find(gaps[s], metric) for s in frontier_seeds]
    widest = max(frontier.spread(by_group["v1 seed"], metric), frontier.spread(by_group["v2 seed"], metric))
    smallest = min(abs(c["diff"]) for c in per_seed)
    name = stats.METRIC_LABELS.get(metric, metric)
    words.append(f"v2 − v1 {name} per seed: " + "; ".join(f"seed {s} {stats.format_diff(c)}" for s, c in
                                                          zip(frontier_seeds, per_seed))
                 + f". The seed-to-seed range of either recipe's mean {name} is at most {widest:.4g}, "
                 + ("so the smallest gap is larger than the spread between seeds."
                    if len(frontier_seeds) > 1 and smallest > widest else
                    "so the gap is not larger than the spread between seeds." if len(frontier_seeds) > 1 else
                    "but with a single seed there is no spread to compare with."))
seed_words = "\n\n".join(words)
display(Markdown(seed_words))

# %% [markdown]
# ## EMA against the raw weights
#
# v2 validates and keeps its EMA copy. The raw weights of the same run at the same epoch were saved beside it
# (`best_raw/`); the paired differences say what the averaging itself did.

# %%
ema = stats.compare(rows, "v2 raw weights", "v2 (EMA)", metrics=frontier.METRICS, splits=("all",),
                    n_boot=bootstrap_samples, seed=seed)
stats.write_comparisons(ema, paths.results / "table_frontier_ema_vs_raw", caption)
display(Markdown(stats.comparisons_markdown(ema, caption)))
ema_words = "EMA − raw weights of the main run's v2 at its kept epoch: " + "; ".join(
    f"{stats.METRIC_LABELS.get(m, m)} {stats.format_diff(stats.find(ema, m))} ({stats.find(ema, m)['verdict']})"
    for m in ("psnr", "lpips", "dists", "nose_err_px")) + "."
display(Markdown(ema_words))

# %% [markdown]
# ## Summary
#
# The paragraphs above, collected for the README and the published figures folder.

# %%
summary_md = "\n\n".join([f"### The perception–distortion frontier ({profile} profile)",
                            curve_words, seed_words, ema_words, f"*{caption}*"])
io.atomic_write_text(paths.results / "frontier.md", summary_md + "\n")
