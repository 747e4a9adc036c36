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
# # 07 · The perception–distortion frontier, and where v2's PSNR went
#
# The write-up compares two recipes, v1 (L1) and v2 (L1 + 0.05·LPIPS), and reads a trade-off into the pair. [Blau
# and Michaeli (2018)](https://arxiv.org/abs/1711.06077) showed why a trade-off must appear: for any restoration
# method, the lowest reachable distortion (say, mean squared error) rises as the output's statistics are pushed
# closer to those of real images. The best methods lie on a curve, the *perception–distortion frontier*, and a loss
# weight only chooses where on it a model lands.
#
# But v1 → v2 changes five things at once (loss, whole crops, augmentation, warmup, EMA), so the pair alone cannot
# say how much of v2's lost PSNR the perceptual term cost. This notebook trains what it takes to tell:
#
# - **λ**: v2 retrained at every weight of the LPIPS term in `frontier_lambdas`; the main run's v2 *is* the point
#   at its λ, and v2 at **λ = 0** is the rest of v2's recipe without the perceptual term. Every point runs exactly
#   the main v2's schedule (the table counts each model's optimizer steps).
# - **blends**: between v2 at the smallest and the largest λ, the curve is traced a second way without training, by
#   averaging the two networks' weights (ESRGAN's *network interpolation*; Freirich, Michaeli & Meir, NeurIPS 2021,
#   show that interpolating between the MSE-optimal and a perfect-perceptual estimator traces the optimal
#   trade-off; whether that holds for two finetuned networks here is a finding, not an assumption);
# - **seeds**: v1 and v2 retrained with every seed in `frontier_seeds`; is the v1–v2 gap larger than what a
#   different seed alone moves?
# - **EMA**: the main run's v2 kept an exponential moving average of its weights; its raw weights at the same
#   epoch are scored beside it;
# - **learning rate**: v1 retrained at every rate of `frontier_v1_lrs`, to show that the demo's rate is a measured
#   choice and to test the write-up's remark that 1e-4 fell below the zero-shot model.
#
# Every interval resamples subjects (SF-TL54) and source frames (ThermEval-D), not crops. The runner trains the
# sweep points before this notebook starts (each in its own folder under `artifacts/<profile>/sweeps/`, reusing
# the main run's crops and models); this notebook only reads them.

# %% tags=["parameters"]
profile = "demo"  # smoke | demo | paper
seed = 0  # seeds Python, NumPy and torch, and the bootstrap
backbone = "srresnet"  # the finetuned model's architecture, as in 02-06
lpips_weight = 0.05  # the main run's λ (the write-up's): its v2 is the frontier point at this λ
frontier_lambdas = [0.0, 1.0]  # v2 retrained at each further λ, with the main v2's schedule
frontier_seeds = [0, 1]  # v1 and v2 retrained with each seed, with the main runs' schedules
frontier_v1_lrs = [0.0001, 0.001]  # v1 retrained at each learning rate (the main run's is added)
v1_lr = 0.0002  # the main run's v1 learning rate, as in 03
interpolation_points = 5  # weight blends strictly between v2 at the smallest and the largest λ (0: none)
nose_model = "auto"  # auto | rtmlib | retinaface, as in 02
table_per_dataset = 60  # the tables use the first 60 test crops of each dataset
bootstrap_samples = 2000  # bootstrap resamples of subjects / source frames for every interval
batch_size = 8  # inference batch size
device = "auto"  # auto | cpu | cuda

# %%
from IPython.display import Markdown, display

from thermsr_utils import checkpoint, config, downstream, evaluate, frontier, io, manifests, plots, stats

paths, device, records = manifests.open_run(profile, seed, device)  # every crop checked against its hash
table = evaluate.table_subset(records, table_per_dataset)
caption = evaluate.caption(profile, config.provenance(paths))
locator = downstream.prepare_locator(nose_model, device=device)
scorer = evaluate.make_scorer(locator, device=device)
light = evaluate.make_scorer(locator, device=device, perceptual=("lpips",))  # no DISTS: a fifth of the cost
print(f"{len(table)} test crops; instruments: {', '.join(scorer.instruments())}")

# %% [markdown]
# ## What was trained
#
# Every point is a full run of notebook 03 or 05 through the same training loop and recipe builder, with one
# parameter changed. The optimizer steps each kept model trained are read from its own history.

# %%
plan = frontier.read_plan(paths)  # every model the runner trained for this notebook, and where it lies
lr_entries = [e for e in plan if e.group == "v1 lr"]
entries = [e for e in plan if e.group != "v1 lr"]
missing = [e for e in plan if not e.trained]
if missing:
    raise FileNotFoundError(f"{len(missing)} frontier models are not trained yet ({', '.join(e.label for e in missing)}): "
                            f"run `python -m thermsr_utils.run --profile {profile}`, which runs 01-06, then the "
                            "frontier sweeps, then this notebook (`--only 07` when 01-06 have run)")
steps = {e.label: frontier.optimizer_steps(e) for e in entries}
display(Markdown(frontier.steps_words(entries, steps)))
lambdas = [e.value for e in entries if e.group == "lambda"]
prov = config.record_provenance(paths, frontier=f"v2 at λ ∈ {{{', '.join(f'{l:g}' for l in lambdas)}}}, seeds "
                                                f"{sorted({e.value for e in entries if 'seed' in e.group})}, "
                                                f"{interpolation_points} weight blends; every "
                                                "point with its main run's schedule")
caption = evaluate.caption(profile, prov)

# %% [markdown]
# ## Scoring every point
#
# The same evaluation engine as notebooks 02–06, on the table crops. DISTS (a VGG16 on every crop) is most of an
# evaluation's cost on a CPU, so it is computed where a figure reads it, for the λ points; the seeds and the raw
# weights are scored on PSNR, SSIM, LPIPS and the nose. Scores are cached next to each point's checkpoint (with its
# sha256), so rerunning this notebook scores only models that changed; the models still to score are scored
# together, so each test batch's HR features are computed once for all of them.

# %%
ids = {r["id"] for r in table}
# the main run's v1 and v2 were scored by notebooks 04 and 06 with the same instruments: their rows are reused
main_rows = {paths.checkpoints / "v1" / checkpoint.BEST_DIR: "v1 L1", paths.checkpoints / "v2" / checkpoint.BEST_DIR: "v2 perceptual"}
scored = {ckpt: [r for r in evaluate.read_method(paths.results, name) if r["id"] in ids]
          for ckpt, name in main_rows.items()}
for group_scorer, todo in ((scorer, [e for e in entries if e.group == "lambda"]),
                           (light, [e for e in entries if e.group != "lambda"])):
    scored |= frontier.score([e for e in todo if e.checkpoint not in scored], paths.crops, table, group_scorer,
                             batch_size=batch_size, device=device)
rows = [{**r, "method": e.label} for e in entries for r in scored[e.checkpoint]]
references = {"bicubic": "bicubic", f"zero-shot {backbone}": f"zero-shot {backbone}"}
for name, label in references.items():
    rows += [{**r, "method": label} for r in evaluate.read_method(paths.results, name) if r["id"] in ids]
summary = {r["method"]: {**r, "steps": steps.get(r["method"])}
           for r in frontier.summarise(rows, dict.fromkeys(r["method"] for r in rows), n_boot=bootstrap_samples, seed=seed)}
by_group = {g: [summary[e.label] for e in entries if e.group == g] for g in ("lambda", "v1 seed", "v2 seed", "ema", "raw")}
frontier.write_table([summary[e.label] for e in entries], paths.results / "table_frontier", caption)
display(Markdown(frontier.table_markdown([summary[e.label] for e in entries], caption)))

# %% [markdown]
# ## Where v2's PSNR went
#
# v2 at λ = 0 is v2's whole recipe — whole crops, augmentation, warmup, EMA, its learning rate — with the
# perceptual term switched off, trained for the same steps. So v1 → v2 splits into two paired differences on the
# same crops: v1 → v2 at λ = 0 (the rest of the recipe) and v2 at λ = 0 → v2 at the main λ (the perceptual term).

# %%
main_v1 = next(e for e in entries if e.group == "v1 seed" and not e.paths.point)   # the main run's v1
zero_label, main_label = f"v2 λ={lambdas[0]:g}", f"v2 λ={lpips_weight:g}"
parts = frontier.decomposition(rows, main_v1.label, zero_label, main_label, n_boot=bootstrap_samples, seed=seed)
stats.write_comparisons([c for p in parts.values() for c in p], paths.results / "table_decomposition", caption)
split_words = (f"**Where v2's change against v1 comes from** (v1 and v2 at seed {main_v1.value}, the main runs; "
               f"differences with 95 % intervals over subjects and frames):\n\n"
               + frontier.decomposition_words(parts, lpips_weight))
display(Markdown(split_words))

# %% [markdown]
# ## The curve, trained and blended
#
# PSNR (right is less distortion) against each perceptual measure (down is better). Each λ point carries its
# 95 % bootstrap interval on both axes; the dashed line joins the λ points no other λ point beats on both axes
# (the empirical frontier). The blends of the two end models are scored on PSNR and LPIPS only (the rest is not
# computed, to keep the notebook short), so they appear in the first panel.

# %%
lam_rows = [{**r, "tag": f"λ={e.value:g}"} for e, r in zip([e for e in entries if e.group == "lambda"], by_group["lambda"])]
ends = [e for e in entries if e.group == "lambda"]
alphas = frontier.blend_alphas(interpolation_points) if len(ends) > 1 else []
blend_scorer = evaluate.make_scorer(None, device=device, perceptual=("lpips",), pixel_extras=False)  # PSNR, LPIPS
blend_rows = frontier.interpolate(ends[0], ends[-1], alphas, paths.crops, table, blend_scorer, batch_size=batch_size,
                                  device=device) if alphas else []
blend_summary = frontier.summarise(blend_rows, dict.fromkeys(r["method"] for r in blend_rows),
                                   n_boot=bootstrap_samples, seed=seed) if blend_rows else []
curve = [lam_rows[0], *[{**r, "tag": f"α={a:.2f}"} for a, r in zip(alphas, blend_summary)], lam_rows[-1]]
refs = [summary[label] for label in references.values()] + [{**summary[main_v1.label], "tag": "v1"}]
metrics = (("lpips", "LPIPS"), ("dists", "DISTS"), ("nose_err_px", "nose error, median (px)"))
fronts = {m: frontier.non_dominated(lam_rows, "psnr", m) for m, _ in metrics}
fig = plots.plane_with_intervals({"v2 at each λ (trained)": lam_rows, "weight blends (no training)": curve,
                                  "references": refs}, paths.figures / "frontier.png", metrics=metrics,
                                 connect=("v2 at each λ (trained)", "weight blends (no training)"), fronts=fronts,
                                 mark=f"v2 λ={lpips_weight:g}", caption=caption,
                                 title=f"Perception–distortion frontier: v2 at {len(lam_rows)} weights λ and "
                                       f"{len(alphas)} blends")
fig

# %%
lo_lam, hi_lam = lambdas[0], lambdas[-1]
end_cmp = stats.compare(rows, f"v2 λ={lo_lam:g}", f"v2 λ={hi_lam:g}", metrics=frontier.METRICS, splits=("all",),
                        n_boot=bootstrap_samples, seed=seed)
lam_sorted = sorted(zip(lambdas, by_group["lambda"]), key=lambda t: t[0])
falls = {m: frontier.steps([r for _, r in lam_sorted], m) for m in ("psnr", "lpips", "dists")}


def moved(metric):
    c = stats.find(end_cmp, metric)
    return f"{stats.format_diff(c)} ({c['verdict']})"


curve_words = (
    f"From λ = {lo_lam:g} to λ = {hi_lam:g}, LPIPS changed by {moved('lpips')}, DISTS by {moved('dists')}, PSNR by "
    f"{moved('psnr')} and the nose error by {moved('nose_err_px')}. Step by step, LPIPS fell at "
    f"{falls['lpips'][0]} of {falls['lpips'][1]} steps of λ and PSNR at {falls['psnr'][0]} of {falls['psnr'][1]}. "
    f"Non-dominated on PSNR and LPIPS: {', '.join(fronts['lpips'])}.")
blend_words = frontier.blend_words(rows + blend_rows, curve, lam_rows[1:-1], n_boot=bootstrap_samples, seed=seed)
display(Markdown(curve_words + ("\n\n" + blend_words if blend_words else "")))

# %% [markdown]
# ## Seeds: is the v1–v2 gap more than noise?
#
# A recipe's score also depends on the seed (initial patches, augmentation, batch order). If two seeds of the
# same recipe land as far apart as v1 and v2, the write-up's one-seed comparison could not tell the recipes apart.
# Both recipes' seeds train their main run's schedule.

# %%
fig = plots.plane_with_intervals({"v1 seeds": [{**r, "tag": r["method"][3:]} for r in by_group["v1 seed"]],
                                  "v2 seeds": [{**r, "tag": r["method"][3:]} for r in by_group["v2 seed"]]},
                                 paths.figures / "frontier_seeds.png", metrics=metrics[:1], caption=caption,
                                 title="v1 and v2 with different seeds")
fig

# %%
seeds = [e.value for e in entries if e.group == "v1 seed"]
gaps = {s: stats.compare(rows, f"v1 seed {s}", f"v2 seed {s}", metrics=("psnr", "lpips"), splits=("all",),
                         n_boot=bootstrap_samples, seed=seed) for s in seeds}
seed_words = "\n\n".join(frontier.seed_words(gaps, by_group["v1 seed"], by_group["v2 seed"], metric)
                          for metric in ("lpips", "psnr"))
display(Markdown(seed_words))

# %% [markdown]
# ## EMA against the raw weights
#
# v2 validates and keeps its EMA copy. The raw weights of the same run at the same epoch were saved beside it
# (`best_raw/`); the paired differences say what the averaging itself did. The EMA's half-life is the same share
# of the run as the write-up's (notebook 05), so this compares averaging, not a copy lagging further behind.

# %%
ema = stats.compare(rows, "v2 raw weights", "v2 (EMA)", metrics=("psnr", "ssim", "lpips", "nose_err_px"), splits=("all",),
                    n_boot=bootstrap_samples, seed=seed)
stats.write_comparisons(ema, paths.results / "table_frontier_ema_vs_raw", caption)
display(Markdown(stats.comparisons_markdown(ema, caption)))
ema_words = "EMA − raw weights of the main run's v2 at its kept epoch: " + "; ".join(
    f"{stats.metric_label(m)} {stats.format_diff(stats.find(ema, m))} ({stats.find(ema, m)['verdict']})"
    for m in ("psnr", "lpips", "nose_err_px")) + "."
display(Markdown(ema_words))

# %% [markdown]
# ## The learning rate
#
# The write-up finetuned v1 at 1e-5 for 3,120 optimizer steps; the demo has a sixtieth of that, so it needs a
# larger rate, and which one should be measured. v1 was retrained at a lower and a higher rate than the demo's, with
# everything else the main run's; the rates are compared on their own validation crops (the test crops play no
# part in the choice). The write-up also remarks that 1e-4 fell below the zero-shot model in its runs.

# %%
lr_rows = frontier.lr_table({e.value: io.read_json(e.checkpoint.parent / checkpoint.HISTORY_FILE) for e in lr_entries})
display(Markdown(io.markdown_table(("learning rate", "epochs", "validation PSNR before (dB)", "after (dB)", "LPIPS after"),
                                   [(f"{r['lr']:g}", r["epochs"], f"{r['psnr_start']:.2f}", f"{r['psnr']:.2f}",
                                     f"{r['lpips']:.4f}") for r in lr_rows])))
lr_words = frontier.lr_words(lr_rows, v1_lr)
display(Markdown(lr_words))

# %% [markdown]
# ## Summary
#
# Where v2's change came from, in two lines; the paragraphs above are collected in `frontier.md` for the published
# figures folder.

# %%
summary_md = "\n\n".join([f"### Where v2's PSNR went, and the perception–distortion frontier ({profile} profile)",
                            split_words, curve_words, blend_words, seed_words, ema_words, lr_words, f"*{caption}*"])
io.atomic_write_text(paths.results / "frontier.md", summary_md + "\n")
lines = []
for metric in ("psnr", "lpips"):
    w, r, t = (stats.find(parts[k], metric) for k in ("whole", "recipe", "term"))
    lines.append(f"* **v1 → v2, {stats.metric_label(metric)} {stats.format_diff(w)}:** the perceptual "
                 f"term {stats.format_diff(t)} ({t['verdict']}), the rest of the recipe {stats.format_diff(r)} "
                 f"({r['verdict']}).")
display(Markdown("\n".join(lines)))

# %% [markdown]
# ## References
#
# Each is cited where the notebooks first use it; the same list is in the repository's `docs/references.md`.
#
# * **The write-up**: the study these notebooks reproduce, a report of finetuning an RGB-pretrained DRLN ×4 on
#   thermal face crops from SF-TL54 and ThermEval-D with an L1 recipe (v1) and an L1 + LPIPS recipe with EMA,
#   warmup and augmentation (v2). It is not part of this repository and carries no formal title; the figures and
#   settings it reports are committed in `data_manifest/reference/`.
# * Y. Blau and T. Michaeli, "The Perception-Distortion Tradeoff", CVPR 2018.
#   [arXiv:1711.06077](https://arxiv.org/abs/1711.06077)
# * R. Zhang, P. Isola, A. A. Efros, E. Shechtman and O. Wang, "The Unreasonable Effectiveness of Deep Features as
#   a Perceptual Metric" (LPIPS), CVPR 2018. [arXiv:1801.03924](https://arxiv.org/abs/1801.03924)
# * K. Ding, K. Ma, S. Wang and E. P. Simoncelli, "Image Quality Assessment: Unifying Structure and Texture
#   Similarity" (DISTS), IEEE TPAMI 2020. [arXiv:2004.07728](https://arxiv.org/abs/2004.07728)
# * J. Deng, J. Guo, E. Ververas, I. Kotsia and S. Zafeiriou, "RetinaFace: Single-shot Multi-level Face
#   Localisation in the Wild", CVPR 2020. [arXiv:1905.00641](https://arxiv.org/abs/1905.00641)
# * V. Kazemi and J. Sullivan, "One Millisecond Face Alignment with an Ensemble of Regression Trees", CVPR 2014
#   (dlib's 68-point shape predictor); D. E. King, "Dlib-ml: A Machine Learning Toolkit", JMLR 10, 2009.
# * C. Ledig et al., "Photo-Realistic Single Image Super-Resolution Using a Generative Adversarial Network" (SRGAN;
#   its generator trained without the adversarial loss is SRResNet), CVPR 2017.
#   [arXiv:1609.04802](https://arxiv.org/abs/1609.04802)
# * S. Anwar and N. Barnes, "Densely Residual Laplacian Super-Resolution" (DRLN), IEEE TPAMI 2020.
#   [arXiv:1906.12021](https://arxiv.org/abs/1906.12021)
