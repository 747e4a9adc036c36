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
# # 01 · Building the thermal super-resolution dataset
#
# Every later notebook trains or scores on 192×192 high-resolution (HR) face crops; the low-resolution
# inputs are made from them on the fly. This notebook turns raw thermal datasets into those crops, with
# splits that never share a person (SF-TL54) or a source frame (ThermEval-D) between train, validation and
# test, and a manifest that records where every crop came from.
#
# * **SF-TL54**: studio portraits (464×348). One crop per frame: a square around the jaw line and the
#   eyebrows (landmarks 0–26), 15 % larger than their extent, clipped at the border, resized to 192×192.
# * **ThermEval-D**: indoor scenes with several people. One crop per annotated nose: the smallest person box
#   that contains the nose, padded by 15 %, squared, clipped, resized.
#
# With `data_source = "synthetic"` (the `smoke` and `demo` profiles) the raw datasets are first *generated*
# in the real datasets' exact folder layouts and annotation formats, so that the very same builder code runs
# on both. Every result downstream says which kind of data it came from.

# %% tags=["parameters"]
profile = "demo"  # smoke | demo | paper
seed = 0  # seeds Python, NumPy and torch
data_source = "synthetic"  # "synthetic": generate SF-TL54/ThermEval-D look-alikes; "real": read them from disk
sftl54_root = ""  # real SF-TL54 root; empty means <data>/SF-TL54
thermeval_root = ""  # real ThermEval-D root; empty means <data>/ThermEval-D
sftl54_subjects = 142  # synthetic only: subjects (1-100 train, 101-120 val, 121-142 test)
sftl54_frames_per_subject = 3  # synthetic only: frames per subject
thermeval_frames_file1 = 50  # synthetic only: frames in annotations_1.json (train/val pool)
thermeval_frames_file2 = 44  # synthetic only: frames in annotations_2.json (test pool)
sftl54_max_train = 150  # caps on SF-TL54 crops per split (the write-up: 600 / 80 / 200)
sftl54_max_val = 20
sftl54_max_test = 60
palette = "mix"  # SF-TL54 rendering: gray (white-hot), iron (false colour), or mix (odd subjects iron, even gray)
crop_size = 192  # HR crop side in pixels
crop_pad = 1.15  # square side is pad x the face (or person) extent
thermeval_split_seed = 7  # shuffle of annotations_1 frames before the 70/30 train/val split
min_crop_side = 0  # drop crops whose clipped source side is below this (0 keeps all, as the write-up did)
update_manifest = False  # overwrite the committed manifest in data_manifest/ instead of checking against it

# %%
from pathlib import Path

from IPython.display import Markdown, display

from thermsr_utils import config, io, manifests

paths = config.setup(profile, seed)
print("artifacts:", paths.root)

# %% [markdown]
# ## Raw data
#
# The real datasets are read from their published layouts (see `data_manifest/README.md`). In the synthetic
# profiles they are generated once, deterministically from the seed, and reused while the generator's
# parameters stay the same.

# %%
if data_source == "synthetic":
    from thermsr_utils import synthetic

    sf_root, te_root = synthetic.ensure_synthetic(
        paths.synthetic_raw, seed=seed, sftl54_subjects=sftl54_subjects,
        sftl54_frames_per_subject=sftl54_frames_per_subject,
        thermeval_frames_file1=thermeval_frames_file1, thermeval_frames_file2=thermeval_frames_file2)
elif data_source == "real":
    sf_root = Path(sftl54_root) if sftl54_root else config.data_root() / "SF-TL54"
    te_root = Path(thermeval_root) if thermeval_root else config.data_root() / "ThermEval-D"
else:
    raise ValueError(f"data_source must be 'synthetic' or 'real', got {data_source!r}")
config.record_provenance(paths, data=(
    f"synthetic thermal faces (SF-TL54 and ThermEval-D look-alikes, generator version {synthetic.GENERATOR_VERSION}, "
    f"{palette} palette; not the real datasets)" if data_source == "synthetic" else
    f"SF-TL54 and ThermEval-D (the real datasets, {palette} palette)"))
print("SF-TL54 root:", sf_root, "\nThermEval-D root:", te_root)

# %% [markdown]
# A look at the raw frames and their annotations (face box and 54 landmarks, nose tip highlighted; person and
# nose boxes). For synthetic data this is the place to judge whether the generator looks like a thermal camera.

# %%
from thermsr_utils import plots

fig = plots.synthetic_samples_figure(sf_root, te_root, paths.figures / "raw_samples.png",
                                     title_prefix="SYNTHETIC" if data_source == "synthetic" else "REAL")
fig

# %% [markdown]
# ### What the generator varies
#
# The synthetic faces follow a face's canonical proportions — eyes at mid-head, the nose tip about a third and the
# mouth a little over half of the way from the eyes to the chin — with a thermal camera's look: warm inner eye
# corners, forehead and neck; a cool nose, cheeks and ears; open eyes cooler than the skin around them; hair,
# beards and glasses cooler than skin (glasses are opaque to long-wave infrared); soft optics and sensor noise.
# One subject, one generator parameter changed per tile (this is not the test data; notebook 02 checks that a
# face model reads the test faces where the generator drew them).

# %%
if data_source == "synthetic":
    fig = plots.image_gallery(synthetic.gallery(seed=seed), paths.figures / "synthetic_gallery.png", ncols=4,
                              title="SYNTHETIC: one subject, one generator parameter changed per tile")
    display(fig)

# %% [markdown]
# ## Crops, splits and the manifest
#
# The builder writes one PNG per crop and `manifest.json`, one record per crop: id, dataset, split, source
# file, subject, crop box in source pixels, nose point in crop pixels and a hash of the pixels. For the
# synthetic profiles the manifest is also committed under `data_manifest/`; a rebuild that differs from it
# stops here and lists the records that changed. One difference is tolerated and said out loud: the generator
# computes in float32 and OpenCV and NumPy choose their SIMD code by CPU, so on another CPU a few crops can
# differ in a few pixels while every id, split, box and nose stays the same.

# %%
committed = paths.committed_manifest if data_source == "synthetic" else None
manifest = manifests.build_dataset(
    paths.crops, sftl54_root=sf_root, thermeval_root=te_root, committed_manifest=committed,
    update_committed=update_manifest, palette=palette, caps=(sftl54_max_train, sftl54_max_val, sftl54_max_test),
    size=crop_size, pad=crop_pad, seed=thermeval_split_seed, min_crop_side=min_crop_side,
    pixel_drift_ok=manifests.SYNTHETIC_PIXEL_DRIFT_OK if data_source == "synthetic" else 0.0)
print(manifests.summary_table(manifest))
drift = manifest.get("committed_pixel_drift", [])
if drift:
    config.record_provenance(paths, crops=f"{len(drift)} of {len(manifest['records'])} synthetic crops differ in "
                                          "pixels from the committed manifest (float rounding of this CPU)")
    print(f"{len(drift)} crops differ from {committed.name} in their pixels alone: {', '.join(drift)}")

# %% [markdown]
# No person (SF-TL54) and no source frame (ThermEval-D) may sit in two splits; otherwise the test numbers
# would measure memory rather than super-resolution.

# %%
records = manifest["records"]
manifests.check_disjoint(records)
manifests.verify_crops(paths.crops, records)
print(f"{len(records)} crops; splits are disjoint and every crop matches its recorded hash")

# %% [markdown]
# Notebook 02 checks the landmark models against the annotated eyes, nose and mouth of each test crop; those five
# points are read here from the annotations (SF-TL54: its 54 landmarks; ThermEval-D: only the nose).

# %%
from thermsr_utils import instrument

truth = instrument.truth_points([r for r in records if r["split"] == "test"], sf_root, size=crop_size)
io.atomic_write_json(paths.results / "landmark_truth.json", truth)
print(f"annotated points of {len(truth)} test crops written")

# %% [markdown]
# *The write-up* is the study these notebooks reproduce: a report of finetuning an RGB-pretrained DRLN on these two
# thermal datasets with the v1 and v2 recipes. It is not part of this repository; the figures it reports are
# committed in `data_manifest/reference/`, and the references at the end of notebook 07 say more.
#
# One thing the write-up does not mention: when a clipped crop box is smaller than 192 px, "resized to
# 192×192" means *enlarged*. Those "HR" crops carry no detail beyond their source resolution, which makes the
# 4× task easier than it looks. We keep the protocol (set `min_crop_side` to drop such crops) but count them.

# %%
for name, label in (("sftl54", "SF-TL54"), ("thermeval", "ThermEval-D")):
    recs = [r for r in records if r["dataset"] == name]
    up = sum(r["upscaled"] for r in recs)
    display(Markdown(f"**{label}**: {up} of {len(recs)} crops ({100 * up / max(len(recs), 1):.0f} %) were "
                     f"enlarged from a smaller source box."))

# %% [markdown]
# ## Is the data hard enough? Bicubic ×4 as a yardstick
#
# On real thermal face crops, bicubic upsampling of the 4×-downsampled image scores about 34.4 dB PSNR (the
# write-up). Synthetic data far above that would be too smooth to teach anything about super-resolution; far
# below, too noisy. The numbers below are this run's.

# %%
from thermsr_utils import evaluate

bicubic = evaluate.bicubic_psnr_by_dataset(paths.crops, records, split="test")
for name, value in bicubic.items():
    print(f"bicubic x4 PSNR on the {name} test crops: {value:.2f} dB")

# %% [markdown]
# Some test crops as the later notebooks see them: the 192×192 HR crop each method must recover from its 48×48
# reduction.

# %%
fig = plots.crop_grid(paths.crops, records, paths.figures / "crops_test.png", split="test")
fig

# %% [markdown]
# ## Summary

# %%
from thermsr_utils import findings

counts = ", ".join(f"{sum(r['split'] == s for r in records)} {s}" for s in ("train", "val", "test"))
display(Markdown(
    f"* **{len(records)} crops** of {crop_size} px from {data_source} data ({counts}); no person or source frame "
    f"sits in two splits, and every crop matches its hash.\n"
    f"* **Bicubic ×4 on the test crops:** " + ", ".join(f"{k} {v:.2f} dB" for k, v in bicubic.items())
    + f" (the write-up's real crops: about {findings.REPORTED_BICUBIC_PSNR} dB)."))
