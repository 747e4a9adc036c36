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
sweep_point = ""  # the sweep point this run belongs to (set by the runner's --sweep; "" is the main run)
backbone = "srresnet"  # the finetuned model's architecture, as in 02-05
nose_model = "auto"  # auto | rtmlib | retinaface, as in 02
second_nose_model = "dlib"  # dlib | none, as in 02
table_per_dataset = 60  # the write-up's tables use the first 60 test crops of each dataset
bootstrap_samples = 2000  # bootstrap resamples (of subjects and source frames) for every interval
batch_size = 8  # inference batch size
device = "auto"  # auto | cpu | cuda

# %%
from IPython.display import Markdown, display

from thermsr_utils import checkpoint, config, downstream, evaluate, findings, io, manifests, models, plots, stats

paths, device, records = manifests.open_run(profile, seed, device, sweep_point=sweep_point)  # every crop checked against its hash
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
v2_model, v2_info = models.load_model(paths.checkpoints / "v2" / checkpoint.BEST_DIR, device=device)
locator, locator2 = downstream.prepare_locators(nose_model, second_nose_model, device=device)
scorer = evaluate.make_scorer(locator, device=device, locator2=locator2)
v2_rows = evaluate.evaluate_method("v2 perceptual", evaluate.model_method(v2_model, batch_size, device), paths.crops,
                                   test, scorer, batch_size=batch_size,
                                   save_sr_dir=evaluate.result_stem(paths.results / "sr", "v2 perceptual"))
evaluate.write_rows(v2_rows, evaluate.result_stem(paths.results, "v2 perceptual").with_suffix(".csv"),
                    {"method": "v2 perceptual", "weights": v2_info, "profile": profile, "provenance": prov,
                     "instruments": scorer.instruments()})
rows = [r for name in ("bicubic", zs_name, "v1 L1") for r in evaluate.read_method(paths.results, name)] + v2_rows

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
# ## Gray and iron renderings
#
# Thermal cameras save false-colour palette images as often as white-hot ones, and SF-TL54 ships an `iron`
# rendering beside `gray`. Where this run's crops mix both (the `palette` of notebook 01: every other SF-TL54
# subject in iron), the same table split by rendering shows what the colour does to each method.

# %%
split_pal = evaluate.by_palette([r for r in rows if r["id"] in table_ids and r["method"] != "bicubic"])
if split_pal:
    evaluate.write_table(split_pal, paths.results / "table_v2_by_palette", caption)
    display(Markdown(evaluate.table_markdown(split_pal, caption)))
else:
    display(Markdown("This run's SF-TL54 crops hold one rendering only (notebook 01's `palette`)."))

# %% [markdown]
# ## The differences, with their intervals
#
# v1 − zero-shot and v2 − v1 on the same crops, each with a paired bootstrap 95 % interval (subjects and source
# frames resampled with all their crops, both methods' scores of a crop kept together; the nose row is a
# difference of medians). A verdict of
# "better" or "worse" means the interval excludes zero.

# %%
pairs = [(zs_name, "v1 L1"), ("v1 L1", "v2 perceptual"), (zs_name, "v2 perceptual")]
each = [stats.compare(rows, a, b, ids=table_ids, n_boot=bootstrap_samples, seed=seed) for a, b in pairs]
nose = findings.nose_context(paths.results, locator, locator2)
family = findings.withhold(stats.holm([c for cs in each for c in cs]), nose)  # one Holm family: every nose row
v1_vs_zs, v2_vs_v1, v2_vs_zs = (family[sum(map(len, each[:k])):sum(map(len, each[:k + 1]))] for k in range(3))
stats.write_comparisons(v1_vs_zs + v2_vs_v1, paths.results / "table_v2_differences", caption, models=nose["models"])
display(Markdown(stats.comparisons_markdown(v1_vs_zs + v2_vs_v1, caption, models=nose["models"])))
display(Markdown(findings.withheld_line(nose)))

# %% [markdown]
# ## This run beside the write-up
#
# Reported rows are the write-up's (DRLN from the hub, real data, real LPIPS, rtmlib nose); measured rows are
# this run's, with whatever substitutes the caption names. Where they differ, the measured rows are what this
# code produces on this data; they are not a correction of the write-up.

# %%
ours = {"zero-shot": zs_name, "v1-l1": "v1 L1", "v2-l1-lpips": "v2 perceptual"}  # write-up name -> this run's
both = findings.reported_vs_measured(table, ours, measured_as=f"measured ({profile})")
cols = [("method", "Method"), ("split", "Split"), ("source", "Source"), *evaluate.TABLE_COLUMNS[2:8]]
evaluate.write_table(both, paths.results / "table_reported_vs_measured", caption, columns=cols)
display(Markdown(evaluate.table_markdown(both, caption, columns=cols)))

# %% [markdown]
# ## What the three models look like
#
# Columns: HR, the LR input (nearest-neighbour), zero-shot, v1 and v2, each output with its PSNR and LPIPS on that
# crop. Under each crop: the eyes and nose enlarged with one contrast stretch for every column, then |output − HR|
# there on one colour scale. v1 and v2 differ little at full size; compare their close-ups and error maps (darker
# is closer to the HR), and read them beside the PSNR and LPIPS printed on each tile.

# %%
def panel(recs, out_name, title):
    return plots.method_panel(paths.crops, paths.results / "sr", recs, [zs_name, "v1 L1", "v2 perceptual"],
                              paths.figures / out_name, caption=caption, title=title, crop_rows=rows)


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
# [Blau and Michaeli (2018)](https://arxiv.org/abs/1711.06077) showed that distortion (PSNR) and perceptual quality
# cannot both be pushed to their best: methods sit on or above a frontier, and a recipe chooses a point on it.
# Three planes: PSNR against LPIPS (AlexNet, the write-up's perceptual metric and v2's loss), against DISTS (a
# VGG16-based measure of structure and texture that v2 was *not* trained on, so it checks that v2 did not merely
# learn to please its own loss), and against the downstream nose error.
#
# First LPIPS alone, per method and split (lower is closer to the HR): look at the gap between v1 and v2 in each
# split.

# %%
fig = plots.metric_dots(three, "lpips", paths.figures / "v2_lpips.png", label=f"LPIPS ({scorer.substitutes()['lpips']})",
                        caption=caption)
fig

# %%
fig = plots.perception_distortion(table, paths.figures / "perception_distortion.png", caption=caption,
                                  axes_spec=(("lpips", "LPIPS (AlexNet)"), ("dists", "DISTS"),
                                             ("nose_median", "nose median (px)")))
fig

# %% [markdown]
# ## The write-up's three findings, answered by this run
#
# (i) v1 raises PSNR over zero-shot; (ii) v1 worsens the nose metric; (iii) v2 cuts LPIPS substantially and
# recovers the nose metric. Each answer below reads the intervals above; a nose difference is also held
# against the instrument's noise floor measured in notebook 02.

# %%
reported_v1 = findings.reported_differences("zero-shot", "v1-l1")
reported_v2 = {"lpips_ratio": findings.reported_lpips_ratio(), **findings.reported_differences("v1-l1", "v2-l1-lpips")}
f1 = findings.finding_v1(v1_vs_zs, reported_v1, nose["floors"], nose["models"])
f3 = findings.finding_v2(v2_vs_v1, v2_vs_zs, v1_vs_zs, reported_v2, nose["floors"], nose["models"])
trade = findings.trade_off(v2_vs_v1)
text = "\n\n".join([findings.withheld_line(nose), f1["markdown"], f3["markdown"], trade["markdown"]])
md = f"### Findings of this run ({profile} profile)\n\n{text}\n\n*{caption}*\n"
io.atomic_write_text(paths.results / "findings.md", md)
display(Markdown(md))

# %% [markdown]
# ## Recommendation matrix
#
# Filled from this run's intervals: a method is picked over another only where the interval of their
# difference excludes zero; otherwise the two are reported as tied.

# %%
matrix = stats.recommend({(zs_name, "v1 L1"): v1_vs_zs, ("v1 L1", "v2 perceptual"): v2_vs_v1,
                          (zs_name, "v2 perceptual"): v2_vs_zs}, models=nose["models"])
md = io.markdown_table(("Use case", "Pick", "Why (this run)"), ((m["use case"], m["pick"], m["why"]) for m in matrix),
                      caption)
io.atomic_write_text(paths.results / "recommendation.md", md)
display(Markdown(md))

# %% [markdown]
# ## Summary
#
# The run's findings in four lines (the report and the README open with them).

# %%
head = findings.headline(v1_vs_zs, v2_vs_v1, nose["models"], findings.reported_lpips_ratio())
io.atomic_write_text(paths.results / "headline.md", head)
display(Markdown(head))
