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
# # 06 · Zero-shot, v1 and v2 side by side
#
# The last notebook puts the three models on the same test crops, shows what they look like, places them on
# the perception–distortion plane, and turns the numbers into a recommendation. Every number in the prose
# below is computed from this run; the write-up's own numbers appear only in the table that marks them as
# *reported*.

# %% tags=["parameters"]
profile = "demo"  # smoke | demo | paper
seed = 0  # seeds Python, NumPy and torch
backbone = "pan-small"  # the finetuned model's architecture, as in 02-05
lpips_standin = True  # allow the random-trunk LPIPS stand-in
nose_model = "auto"  # auto | rtmlib | heatmap, as in 02
table_per_dataset = 60  # the write-up's tables use the first 60 test crops of each dataset
batch_size = 8  # inference batch size
device = "auto"  # auto | cpu | cuda

# %%
import csv

import numpy as np
from IPython.display import Markdown, display

from thermsr_utils import config, data, downstream, evaluate, models, plots, train
from thermsr_utils.io import atomic_write_text

paths = config.setup(profile, seed)
device = config.resolve_device(device)
records = data.load_verified_manifest(paths)["records"]  # every crop checked against its hash
test = [r for r in records if r["split"] == "test"]
table_ids = {r["id"] for r in evaluate.table_subset(records, table_per_dataset)}
prov = config.provenance(paths)
caption = evaluate.caption(profile, prov)
print(caption)

# %% [markdown]
# ## Scoring v2
#
# Bicubic and zero-shot come from notebook 02, v1 from notebook 04; v2 is the EMA checkpoint notebook 05 kept.

# %%
zs_name = f"zero-shot {backbone}"
v2_model, v2_info = models.load_model(paths.checkpoints / "v2" / train.BEST_DIR, device=device)
locator = downstream.prepare_locator(nose_model, paths.models / "nose_locator", device=device)
scorer = evaluate.make_scorer(locator, lpips_standin=lpips_standin, device=device)
v2_rows = evaluate.evaluate_method("v2 perceptual", evaluate.model_method(v2_model, batch_size, device), paths.crops,
                                   test, scorer, batch_size=batch_size, save_sr_dir=paths.results / "sr" / "v2_perceptual")
evaluate.write_rows(v2_rows, paths.results / "v2_perceptual.csv",
                    {"method": "v2 perceptual", "weights": v2_info, "profile": profile, "provenance": prov})
rows = (evaluate.read_rows(paths.results / "bicubic.csv") + evaluate.read_rows(paths.results / f"{zs_name.replace(' ', '_')}.csv")
        + evaluate.read_rows(paths.results / "v1_L1.csv") + v2_rows)

# %% [markdown]
# ## The three-way table
#
# The write-up's layout — all / SF-TL54 / ThermEval-D — with N and the crops on which the nose model failed.

# %%
table = evaluate.aggregate([r for r in rows if r["id"] in table_ids])
three = [r for r in table if r["method"] != "bicubic"]
evaluate.write_table(three, paths.results / "table_v2", caption)
display(Markdown(evaluate.table_markdown(three, caption)))

# %% [markdown]
# ## This run beside the write-up
#
# Reported rows are the write-up's (DRLN from the hub, real data, real LPIPS, rtmlib nose); measured rows are
# this run's, with whatever substitutes the caption names. Where they differ, the measured rows are what this
# code produces on this data; they are not a correction of the write-up.

# %%
with open(config.REFERENCE_DIR / "reference_results.csv") as f:
    reported = list(csv.DictReader(line for line in f if not line.startswith("#")))
method_map = {"zero-shot": zs_name, "v1-l1": "v1 L1", "v2-l1-lpips": "v2 perceptual"}
both = []
for ref in reported:
    both.append({"method": ref["method"], "split": ref["split"], "source": "reported (write-up)", "n": int(ref["n"]),
                 **{k: float(ref[k]) for k in ("psnr", "ssim", "lpips")},
                 "nose_median": float(ref["nose_median_px"]), "nose_mean": float(ref["nose_mean_px"])})
    ours = next((r for r in table if r["method"] == method_map[ref["method"]] and r["split"] == ref["split"]), None)
    if ours:
        both.append({**ours, "method": ref["method"], "source": f"measured ({profile})"})
cols = [("method", "Method"), ("split", "Split"), ("source", "Source"), *evaluate.TABLE_COLUMNS[2:8]]
evaluate.write_table(both, paths.results / "table_reported_vs_measured", caption, columns=cols)
display(Markdown(evaluate.table_markdown(both, caption, columns=cols)))

# %% [markdown]
# ## What the three models look like
#
# Columns: HR, the LR input (nearest-neighbour), zero-shot, v1 and v2; the lower row of each pair enlarges
# the eyes and nose.

# %%
def panel(recs, out_name, title):
    rows_, zooms = [], []
    for rec in recs:
        hr = evaluate.load_crops(paths.crops, [rec])[0]
        outs = [evaluate.load_crops(paths.results / "sr" / m, [{"path": f"{rec['id']}.png"}])[0]
                for m in (zs_name.replace(" ", "_"), "v1_L1", "v2_perceptual")]
        rows_.append([hr, data.make_lr(hr), *outs])
        nx, ny = rec["nose"] if rec.get("nose") else (96, 96)
        x0, y0 = int(np.clip(nx - 36, 0, 120)), int(np.clip(ny - 56, 0, 120))
        zooms.append((x0, y0, x0 + 72, y0 + 72))
    return plots.comparison_panel(rows_, ["HR", "LR (nearest)", zs_name, "v1 L1", "v2 perceptual"],
                                  paths.figures / out_name, zoom=zooms, caption=caption, title=title)


shown = [r for r in test if r["id"] in table_ids]
sf = [r for r in shown if r["dataset"] == "sftl54"][:3]
te = [r for r in shown if r["dataset"] == "thermeval"][:3]
fig = panel(sf, "v2_panel_sftl54.png", "SF-TL54 test crops")
fig

# %%
fig = panel(te, "v2_panel_thermeval.png", "ThermEval-D test crops")
fig

# %%
fig = panel(sf + te, "v2_panel_all.png", "All six, head to head")
fig

# %% [markdown]
# ## LPIPS, and the perception–distortion plane
#
# Blau and Michaeli (2018) showed that distortion (PSNR) and perceptual quality cannot both be pushed to their
# best: methods sit on or above a frontier, and a recipe chooses a point on it. Besides LPIPS, two planes use
# non-learned fidelity measures: how far the output's mean gradient magnitude is from the HR's
# (|1 − gradient ratio|; 0 means as sharp as the truth), and the same for the energy above a quarter of the
# Nyquist frequency (|1 − high-frequency ratio|).

# %%
fig = plots.metric_bars(three, "lpips", paths.figures / "v2_lpips.png", label=f"LPIPS ({scorer.substitutes()['lpips']})",
                        caption=caption, lower_is_better=True)
fig

# %%
for r in table:
    r["grad_gap"], r["hf_gap"] = abs(1 - r["grad_ratio"]), abs(1 - r["hf_ratio"])
fig = plots.perception_distortion(table, paths.figures / "perception_distortion.png", caption=caption,
                                  axes_spec=(("lpips", scorer.substitutes()["lpips"]),
                                             ("grad_gap", "|1 − gradient ratio|"), ("hf_gap", "|1 − high-frequency ratio|")))
fig

# %%
def cell(method, key, split="all"):
    return next(r[key] for r in table if r["method"] == method and r["split"] == split)


v1p, v2p, zsp = cell("v1 L1", "psnr"), cell("v2 perceptual", "psnr"), cell(zs_name, "psnr")
lpips_is_standin = scorer.lpips.standin
# perceptual measures, lower is better; the random-trunk LPIPS is left out of the verdict (see below)
perceptual = {"sharpness gap |1 − gradient ratio|": "grad_gap", "spectral gap |1 − high-frequency ratio|": "hf_gap"}
if not lpips_is_standin:
    perceptual = {"LPIPS": "lpips", **perceptual}
# "better" needs a margin (2 % relative): a difference in the fourth decimal is noise, not a trade-off
better = [name for name, key in perceptual.items() if cell("v2 perceptual", key) < 0.98 * cell("v1 L1", key)]
worse = [name for name in perceptual if name not in better]
trade = v1p >= v2p and bool(better)
lines = [f"* PSNR: v2 {v2p:.2f} dB, v1 {v1p:.2f} dB ({v2p - v1p:+.2f} dB), zero-shot {zsp:.2f} dB",
         *[f"* {name}: v2 {cell('v2 perceptual', key):.4f}, v1 {cell('v1 L1', key):.4f}" for name, key in perceptual.items()],
         f"* {scorer.substitutes()['lpips']}: v2 {cell('v2 perceptual', 'lpips'):.5f}, v1 {cell('v1 L1', 'lpips'):.5f}",
         f"* nose median: v2 {cell('v2 perceptual', 'nose_median'):.2f} px, v1 {cell('v1 L1', 'nose_median'):.2f} px"]
verdict = (f"**That is the perception–distortion trade-off**: v2 gives up {v1p - v2p:.2f} dB of PSNR and is closer to "
           f"the HR on {', '.join(better)}." if trade else
           f"**This run does not show the trade-off cleanly** (v2 − v1: {v2p - v1p:+.2f} dB PSNR; v2 better on: "
           f"{', '.join(better) or 'none'}; worse on: {', '.join(worse) or 'none'}); read the table before the "
           "recommendation below.")
note = ("" if not lpips_is_standin else
        "\n\nThe LPIPS column here comes from a random AlexNet trunk. Without ImageNet features it behaves like one more "
        "distortion measure (it rises and falls with PSNR), so it cannot register what a perceptual loss buys, and it is "
        "left out of the verdict; with torchvision's AlexNet weights cached, the real LPIPS is used and counted.")
display(Markdown("\n".join(lines) + "\n\n" + verdict + note))

# %% [markdown]
# ## Recommendation matrix
#
# Filled from this run's numbers: the pick for pixel fidelity is the method with the best PSNR; the pick for
# perception and downstream use is the one with the best mean rank over the perceptual measures above and the
# nose median error.

# %%
methods = [m for m in dict.fromkeys(r["method"] for r in table)]
models_only = [m for m in methods if m != "bicubic"]
best_psnr = max(models_only, key=lambda m: cell(m, "psnr"))
rank = {m: 0.0 for m in models_only}
for key in [*perceptual.values(), "nose_median"]:
    vals = {m: cell(m, key) for m in models_only}
    for i, m in enumerate(sorted(models_only, key=lambda m: (np.nan_to_num(vals[m], nan=np.inf)))):
        rank[m] += i
best_perc = min(models_only, key=lambda m: rank[m])
matrix = [
    {"use case": "maximum PSNR / pixel fidelity", "pick": best_psnr,
     "why": f"PSNR {cell(best_psnr, 'psnr'):.2f} dB ({cell(best_psnr, 'psnr') - zsp:+.2f} dB over zero-shot)"},
    {"use case": "perceptual quality and downstream vision models", "pick": best_perc,
     "why": ", ".join(f"{name.split(' |')[0]} {cell(best_perc, key):.4f}" for name, key in perceptual.items())
            + f", nose median {cell(best_perc, 'nose_median'):.2f} px, PSNR {cell(best_perc, 'psnr'):.2f} dB"},
    {"use case": "no GPU at inference time", "pick": "bicubic",
     "why": f"no model; PSNR {cell('bicubic', 'psnr'):.2f} dB"},
    {"use case": "no thermal training set yet", "pick": zs_name,
     "why": f"PSNR {zsp:.2f} dB, nose median {cell(zs_name, 'nose_median'):.2f} px without any thermal labels"},
]
md = "| Use case | Pick | Why (this run) |\n|---|---|---|\n" + "\n".join(
    f"| {m['use case']} | {m['pick']} | {m['why']} |" for m in matrix) + f"\n\n*{caption}*\n"
atomic_write_text(paths.results / "recommendation.md", md)
display(Markdown(md))
