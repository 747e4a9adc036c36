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
# # 03 · Finetuning v1: the pixel-loss recipe
#
# The write-up's first recipe bends the RGB-pretrained backbone toward thermal images with the plainest
# possible objective: the L1 distance between the super-resolved patch and the HR patch.
#
# | setting | the write-up (`paper` profile) |
# |---|---|
# | loss | L1 on the unclamped output |
# | optimiser | AdamW, lr 1e-5, weight decay 1e-5 |
# | schedule | cosine over 60 epochs, stepped per epoch |
# | batch | 16 random 128×128 HR patches (LR made on the fly, INTER_AREA ÷4), no augmentation |
# | kept checkpoint | best validation PSNR, validated every 5 epochs |
#
# The `demo` and `smoke` profiles keep the recipe's shape but size it for a CPU: a small backbone, fewer
# epochs and a higher learning rate (a small model trained for minutes does not move at 1e-5). The values
# used are printed below and saved with the checkpoint.

# %% tags=["parameters"]
profile = "demo"  # smoke | demo | paper
seed = 0  # seeds Python, NumPy and torch, and the random patches
backbone = "pan-small"  # the model to finetune (paper: drln)
weights = "auto"  # auto | hub | standin | random: initial weights, as in 02
v1_epochs = 30  # the write-up: 60
v1_lr = 0.0005  # AdamW learning rate (the write-up: 1e-5)
v1_batch_size = 16  # patches per step
v1_patch = 128  # HR patch side (LR side is a quarter of it)
val_every = 5  # validate every this many epochs (and at the last)
max_steps_per_epoch = 0  # cap on steps per epoch; 0 means no cap
resume = False  # continue from the last completed epoch of an interrupted run
device = "auto"  # auto | cpu | cuda

# %%
import dataclasses

from IPython.display import Markdown, display

from thermsr_utils import config, data, evaluate, losses, metrics, models, plots, train

paths = config.setup(profile, seed)
device = config.resolve_device(device)
records = data.load_verified_manifest(paths)["records"]  # every crop checked against its hash
caption = evaluate.caption(profile, config.provenance(paths))

# %% [markdown]
# ## Data and starting point
#
# Training patches are cut at random from the 192×192 training crops every epoch; validation uses whole
# crops, scored separately for each dataset so that the two domains' progress can be watched apart.

# %%
train_set, val_sets = train.datasets_from_manifest(paths.crops, records, patch=v1_patch, augment=False, seed=seed)
print(train_set.describe())
print({k: len(v) for k, v in val_sets.items()}, "validation crops")
model, init_info = models.load_model(backbone, source=weights, standin_dir=paths.models / "standin", device=device)
print(f"{backbone}: {init_info['source']} weights, {init_info['n_params']:,} parameters")

# %%
recipe = train.Recipe.v1(epochs=v1_epochs, lr=v1_lr, batch_size=v1_batch_size, patch=v1_patch,
                         val_every=val_every, seed=seed, max_steps_per_epoch=max_steps_per_epoch or None)
recipe.to_dict()

# %% [markdown]
# ## Training
#
# The loss is built here and handed to the one training loop that v2 also uses. A resumable state is saved
# after every epoch; `-p resume True` picks an interrupted run up where it stopped.

# %%
loss_fn = losses.make_loss("l1")
lpips_metric = metrics.LPIPSMetric(device=device)
result = train.fit(model, train_set, val_sets, loss_fn, recipe, paths.checkpoints / "v1",
                   metrics=train.default_metrics(lpips_metric), device=device, resume=resume,
                   extra_meta=train.run_meta(paths.manifest, init_info, lpips=lpips_metric.name))
history = result["history"]
print(f"kept epoch {result['best_epoch']} (validation PSNR {result['best_value']:.2f} dB) -> {result['best_dir']}")

# %% [markdown]
# ## Training curves

# %%
fig = plots.training_curves({"v1 (L1)": history}, paths.figures / "v1_training_curves.png", caption=caption)
fig

# %%
vals = [h for h in history if h["val"]]
first, best = vals[0], next(h for h in vals if h["epoch"] == result["best_epoch"])
epoch_s = [h["train_seconds"] for h in history if h["epoch"] > 0]
per_ds = "; ".join(f"{k} {first['val'][k]['psnr']:.2f} → {best['val'][k]['psnr']:.2f} dB"
                   for k in val_sets)
display(Markdown(
    f"Validation PSNR went from {first['val']['all']['psnr']:.2f} dB before finetuning to "
    f"{best['val']['all']['psnr']:.2f} dB at the kept epoch {best['epoch']} ({per_ds}). "
    f"One epoch took {sum(epoch_s) / len(epoch_s):.1f} s on {device} "
    f"(the write-up: about 22 s per epoch for DRLN on one RTX A5000)."))
config.record_provenance(paths, v1=f"{backbone}, {recipe.epochs} epochs, lr {recipe.lr:g}, batch {recipe.batch_size}")
