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
# possible objective: the L1 distance between the super-resolved patch and the HR patch, on random 128×128 HR
# patches whose LR is made on the fly (INTER_AREA ÷4), with AdamW and a cosine schedule.
#
# The `demo` and `smoke` profiles keep the recipe's shape but size it for a CPU: a smaller backbone (a
# genuinely pretrained one in the demo, a tiny stand-in in smoke), a few epochs and a higher learning rate (a
# few minutes of training do not move a network at 1e-5). That rate is measured, not guessed: notebook 07
# retrains v1 at several rates and sets their validation PSNR side by side. The recipe table below sets this
# run's values beside the write-up's reported protocol; they are saved with the checkpoint.

# %% tags=["parameters"]
profile = "demo"  # smoke | demo | paper
seed = 0  # seeds Python, NumPy and torch, and the random patches
sweep_point = ""  # the sweep point this run belongs to (set by the runner's --sweep; "" is the main run)
backbone = "srresnet"  # the model to finetune (paper: drln)
weights = "auto"  # auto | hub | standin | random: initial weights, as in 02
v1_epochs = 4  # the write-up: 60
v1_lr = 0.0002  # AdamW learning rate (the write-up: 1e-5)
v1_batch_size = 16  # patches per step
v1_patch = 128  # HR patch side (LR side is a quarter of it)
keep = "last"  # last | best: keep the final epoch, or the write-up's best validation PSNR
val_every = 2  # validate every this many epochs (and at the last)
max_steps_per_epoch = 0  # cap on steps per epoch; 0 means no cap
resume = False  # continue from the last completed epoch of an interrupted run
fresh_start = False  # move an earlier run in the checkpoint folder aside (to <name>.old-<date-time>) and start over
device = "auto"  # auto | cpu | cuda

# %%
import math

from IPython.display import Markdown, display

from thermsr_utils import checkpoint, config, evaluate, manifests, models, plots, recipes, train

paths, device, records = manifests.open_run(profile, seed, device, sweep_point=sweep_point)  # every crop checked against its hash
caption = evaluate.caption(profile, config.provenance(paths))

# %% [markdown]
# ## Data and starting point
#
# Training patches are cut at random from the 192×192 training crops every epoch; validation uses whole
# crops, scored separately for each dataset so that the two domains' progress can be watched apart.

# %%
model, init_info = models.load_model(backbone, source=weights, standin_dir=paths.models / "standin", device=device)
built = recipes.build("v1", globals(), paths.crops, records, device)  # reads this notebook's parameters by name
train_set, val_sets, recipe = built.train_set, built.val_sets, built.recipe
print(train_set.describe())
print({k: len(v) for k, v in val_sets.items()}, "validation crops")
print(f"{backbone}: {init_info['source']} weights, {init_info['n_params']:,} parameters")

# %% [markdown]
# ## Which pretrained network?
#
# The write-up finetunes DRLN ([Anwar & Barnes, 2020](https://arxiv.org/abs/1906.12021)) from the hub. Offline, the
# networks that ship pretrained inside registry packages take its place, and the demo has to pick one that a laptop
# finetunes in minutes. Three things decide: the network's zero-shot gain over bicubic on the test crops (notebook
# 02, with its paired-bootstrap interval), the cost of one v1 training step on this machine, measured here on a
# batch of this run's patches, and whether finetuning still moves it (the training curve below answers that for the
# chosen one).
#
# The demo finetunes krasserm's SRResNet: a native ×4 network (waifu2x is a ×2 network applied twice, so a
# finetune would train one ×2 stage to do a ×4 job in two passes), and a fraction of DAT-light's cost per step.

# %%
steps_per_epoch = min(math.ceil(len(train_set) / v1_batch_size), max_steps_per_epoch or math.inf)
# a sweep point repeats the main run's choice (the backbone is a parameter), so it does not time the candidates again
candidates = ([] if sweep_point else
              recipes.pretrained_candidates(paths.results, train_set, v1_batch_size, device=device))
display(Markdown(recipes.candidates_table(candidates, steps_per_epoch) if candidates else
                 f"Sweep point `{sweep_point}`: the backbone is the main run's choice."))

# %%
if candidates:
    display(Markdown(recipes.candidates_verdict(candidates, backbone, steps_per_epoch=steps_per_epoch,
                                                epochs=v1_epochs, batch_size=v1_batch_size, device=device)))
print(f"finetuning {models.weights_label(backbone, init_info)}")

# %% [markdown]
# ## The recipe, beside the write-up's

# %%
display(Markdown(recipes.protocol_table(recipe, sized=built.schedule)))

# %% [markdown]
# ## Training
#
# The loss built with the recipe is handed to the one training loop that v2 also uses. A resumable state is saved
# after every epoch; `-p resume True` picks an interrupted run up where it stopped, and a rerun without it refuses
# to touch an interrupted run (`-p fresh_start True` moves it aside and starts over; a finished run is moved aside).

# %%
result = train.fit(model, train_set, val_sets, built.loss_fn, recipe, paths.checkpoints / "v1",
                   metrics=train.default_metrics(built.lpips_metric), device=device, resume=resume,
                   fresh=fresh_start, extra_meta=built.meta(paths.manifest, init_info))
history = result["history"]
print(f"kept epoch {result['best_epoch']} (validation PSNR {result['best_value']:.2f} dB) -> {result['best_dir']}")
display(Markdown(checkpoint.kept_words(history, recipe)))

# %% [markdown]
# ## Training curves
#
# Training loss per epoch and validation PSNR per dataset; epoch 0 is the pretrained network before finetuning.
# Look at whether validation PSNR still rises at the last epoch (more epochs would help) or has levelled off.

# %%
fig = plots.training_curves({"v1 (L1)": history}, paths.figures / "v1_training_curves.png", caption=caption)
fig

# %% [markdown]
# ## Summary

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
