"""Tests of thermsr_utils.train: patch dataset, recipes, schedules, EMA, validation, fit and resume."""
import dataclasses
import functools
import json
import math

import cv2
import numpy as np
import pytest
import torch
from conftest import TinySR, tiny_model
from super_image import EdsrConfig, EdsrModel
from torch import nn

from thermsr_utils import checkpoint, findings, recipes, train
from thermsr_utils.data import bgr_to_tensor, make_lr
from thermsr_utils.datasets import SRPatchDataset
from thermsr_utils.losses import l1_loss, make_loss
from thermsr_utils.train import Recipe, fit


pytestmark = pytest.mark.usefixtures("one_thread")


def noise_images(n, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def smooth_image(size=32, seed=0):
    rng = np.random.default_rng(seed)
    return cv2.resize(rng.integers(40, 216, (2, 2, 3), dtype=np.uint8), (size, size),
                      interpolation=cv2.INTER_LINEAR)


def mae(sr, hr):
    return (sr - hr).abs().mean(dim=(1, 2, 3))


@functools.lru_cache(maxsize=None)
def _writeup(name) -> Recipe:
    return recipes.writeup(name)


def writeup(name, **changes):
    """The write-up's v1 or v2: the recipe the paper profile's parameters build (as notebooks 03 and 05 build it)."""
    return dataclasses.replace(_writeup(name), **changes)


def small_recipe(**kw):
    base = dict(name="t", epochs=2, batch_size=2, lr=1e-3, weight_decay=1e-4, patch=16, augment=False,
                val_every=1, keep="best", select_metric="mae", select_mode="min")
    base.update(kw)
    return Recipe(**base)


def val_sets(n=2, seed=5):
    return {"a": SRPatchDataset(noise_images(n, seed=seed), patch=None),
            "b": SRPatchDataset(noise_images(1, seed=seed + 1), patch=None)}


def strip_timing(history):
    return [{k: v for k, v in rec.items() if k not in train.TIMING_KEYS} for rec in history]


def dihedral(img):
    """The 8 flips/rotations of an H×W×C array."""
    out = []
    for flipped in (img, img[:, ::-1]):
        for k in range(4):
            out.append(np.rot90(flipped, k, axes=(0, 1)))
    return out


# ------------------------------------------------------------------------------ dataset
def test_dataset_shapes_range_and_lr_made_from_the_hr_patch():
    img = noise_images(1, size=64)[0]
    ds = SRPatchDataset([img], patch=32)
    lr, hr = ds[0]
    assert lr.shape == (3, 8, 8) and hr.shape == (3, 32, 32)
    assert lr.dtype == torch.float32 and 0 <= hr.min() and hr.max() <= 1
    patch = ds.hr_patch(0)
    assert torch.equal(hr, bgr_to_tensor(patch))
    assert torch.equal(lr, bgr_to_tensor(make_lr(patch)))
    hits = [(y, x) for y in range(33) for x in range(33) if np.array_equal(img[y:y + 32, x:x + 32], patch)]
    assert len(hits) == 1                                    # a real window of the crop


def test_dataset_converts_bgr_to_rgb():
    blue = np.zeros((16, 16, 3), np.uint8)
    blue[..., 0] = 255                                       # pure blue in OpenCV's BGR order
    lr, hr = SRPatchDataset([blue], patch=None)[0]
    for t in (lr, hr):
        assert torch.all(t[2] == 1) and torch.all(t[0] == 0) and torch.all(t[1] == 0)


def test_dataset_randomness_is_seeded_by_seed_epoch_index():
    imgs = noise_images(3, size=64)
    a = SRPatchDataset(imgs, patch=16, augment=True, seed=1)
    b = SRPatchDataset(imgs, patch=16, augment=True, seed=1)
    a.set_epoch(3)
    b.set_epoch(3)
    _ = b[0], b[1]                                           # earlier draws do not matter
    assert torch.equal(a[2][1], b[2][1])
    b.set_epoch(4)
    assert any(not torch.equal(a[i][1], b[i][1]) for i in range(3))
    c = SRPatchDataset(imgs, patch=16, augment=True, seed=2)
    c.set_epoch(3)
    assert any(not torch.equal(a[i][1], c[i][1]) for i in range(3))


def test_dataset_augmentation_is_a_flip_rotation_of_the_crop():
    img = noise_images(1, size=16)[0]
    choices = dihedral(img)
    seen = set()
    ds = SRPatchDataset([img], patch=None, augment=True)
    for epoch in range(24):
        ds.set_epoch(epoch)
        out = ds.hr_patch(0)
        idx = [i for i, c in enumerate(choices) if np.array_equal(out, c)]
        assert len(idx) == 1
        seen.add(idx[0])
    assert len(seen) >= 4
    plain = SRPatchDataset([img], patch=None, augment=False)
    plain.set_epoch(5)
    assert np.array_equal(plain.hr_patch(0), img)


@pytest.mark.parametrize("kwargs, match", [
    ({"images": [np.zeros((8, 8, 3), np.uint8)], "patch": 16}, "smaller than patch"),
    ({"images": [np.zeros((16, 16, 3), np.float32)]}, "uint8"),
    ({"images": [np.zeros((16, 16), np.uint8)]}, "uint8 BGR"),
    ({"images": [np.zeros((16, 16, 3), np.uint8)], "patch": 10}, "multiple of scale"),
    ({"images": [np.zeros((18, 18, 3), np.uint8)], "patch": None}, "not divisible"),
    ({"images": [np.zeros((16, 16, 3), np.uint8)], "names": ["a", "b"]}, "names"),
    ({"images": []}, "at least one"),
])
def test_dataset_rejects_bad_input(kwargs, match):
    kwargs.setdefault("patch", 16)
    with pytest.raises(ValueError, match=match):
        SRPatchDataset(**kwargs)


def test_dataset_error_names_the_offending_image():
    imgs = noise_images(2, size=32) + [np.zeros((8, 8, 3), np.uint8)]
    with pytest.raises(ValueError, match=r"image 2 \(thermeval\)"):
        SRPatchDataset(imgs, names=["sftl54", "sftl54", "thermeval"], patch=16)


def test_loader_order_depends_only_on_seed_and_epoch():
    ds = SRPatchDataset(noise_images(6, size=32), patch=16, augment=True)
    r = small_recipe(batch_size=3)
    first = [hr for _, hr in train.make_loader(ds, r, epoch=2)]
    again = [hr for _, hr in train.make_loader(ds, r, epoch=2)]
    other = [hr for _, hr in train.make_loader(ds, r, epoch=3)]
    assert all(torch.equal(x, y) for x, y in zip(first, again))
    assert not all(torch.equal(x, y) for x, y in zip(first, other))
    workers = [hr for _, hr in train.make_loader(ds, dataclasses.replace(r, num_workers=1), epoch=2)]
    assert all(torch.equal(x, y) for x, y in zip(first, workers))


# ------------------------------------------------------------------------------ recipe
def test_the_paper_profile_builds_the_writeups_recipes():
    v1, v2 = writeup("v1"), writeup("v2")
    assert (v1.epochs, v1.batch_size, v1.lr, v1.weight_decay, v1.patch, v1.augment) == (60, 16, 1e-5, 1e-5, 128, False)
    assert (v1.warmup, v1.val_every, v1.ema_half_life, v1.selected_copy, v1.keep) == (0, 5, None, "model", "best")
    assert (v2.epochs, v2.batch_size, v2.lr, v2.weight_decay, v2.patch, v2.augment) == (200, 16, 2e-5, 1e-5, None, True)
    assert (v2.selected_copy, v2.select_metric, v2.keep) == ("ema", "psnr", "best")
    # the write-up's 5 warmup epochs of 200 and EMA decay 0.999 (reference_protocol.csv), as fractions of its
    # 200 x 52 = 10,400 steps: notebook 05's v2_warmup and v2_ema_half_life (0.0666 of 692.8 / 10,400 = 0.06662)
    reported = findings.reported_protocol()
    assert "5-epoch linear warmup" in reported["schedule"]["v2"] and "200 epochs" in reported["schedule"]["v2"]
    assert "decay 0.999" in reported["ema"]["v2"]
    assert v2.warmup == pytest.approx(5 / 200)
    assert v2.ema_half_life == pytest.approx(math.log(2) / -math.log(0.999) / (200 * 52), abs=5e-5)
    assert "8" in v2.notes                                  # the script's batch default is recorded


def test_recipes_take_the_notebooks_values_and_name_what_is_missing():
    with pytest.raises(TypeError,
                       match=r"Recipe.v1\(\) needs epochs, lr, batch_size, patch, val_every, keep \(notebook 03"):
        Recipe.v1()
    with pytest.raises(TypeError, match=r"Recipe.v2\(\) needs ema_half_life, val_every, keep \(notebook 05"):
        Recipe.v2(epochs=2, lr=1e-3, batch_size=4, warmup=0.0)


def test_recipe_replace_to_dict_and_back():
    r = dataclasses.replace(writeup("v2"), epochs=3, warmup=0.3, ema_half_life=None, keep="last")
    assert r.selected_copy == "model"
    d = r.to_dict()
    assert d["select_on"] == "model" and d["epochs"] == 3 and (d["warmup"], d["keep"]) == (0.3, "last")
    assert Recipe(**json.loads(json.dumps(d))) == dataclasses.replace(r, select_on="model")


@pytest.mark.parametrize("change, field", [
    ({"warmup": 1.0}, "warmup"),
    ({"warmup": -0.1}, "warmup"),
    ({"epochs": 0}, "epochs"),
    ({"lr": 0.0}, "lr"),
    ({"patch": 30}, "patch"),
    ({"schedule": "step"}, "schedule"),
    ({"ema_half_life": 1.5}, "ema_half_life"),
    ({"ema_half_life": 0.0}, "ema_half_life"),
    ({"keep": "first"}, "keep"),
    ({"select_on": "ema"}, "select_on"),
    ({"select_mode": "up"}, "select_mode"),
    ({"amp": "fp8"}, "amp"),
    ({"min_lr": -1.0}, "min_lr"),
    ({"grad_clip": 0.0}, "grad_clip"),
    ({"max_steps_per_epoch": 0}, "max_steps_per_epoch"),
    ({"fast": "yes"}, "fast"),
])
def test_recipe_rejects_bad_values(change, field):
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(writeup("v1"), **change)


def test_recipe_fields_and_notebook_parameters_share_one_rule_each():
    from thermsr_utils import config, params

    fields = {f.name for f in dataclasses.fields(Recipe)}
    assert set(params.RECIPE_RULES) <= fields
    for param in ("v1_epochs", "v1_lr", "v1_batch_size", "v2_epochs", "v2_lr", "v2_batch_size", "v2_warmup"):
        assert params.PARAMETER_RULES[param] is params.RECIPE_RULES[param.split("_", 1)[1]], param
    assert params.PARAMETER_RULES["keep"] is params.RECIPE_RULES["keep"]
    assert dataclasses.replace(writeup("v2"), ema_half_life=None, grad_clip=None).ema_half_life is None   # None allowed
    with pytest.raises(config.ParameterValueError, match="None or a number in"):
        params.RECIPE_RULES["ema_half_life"].check("ema_half_life", 1.0)
    with pytest.raises(config.ParameterValueError, match="v2_ema_half_life"):    # the notebook's EMA is always on
        params.PARAMETER_RULES["v2_ema_half_life"].check("v2_ema_half_life", None)


# ------------------------------------------------------------------------------ optimiser / schedule / EMA
def test_make_optimizer_is_adamw_over_trainable_parameters():
    model = tiny_model()
    model.body[0].bias.requires_grad_(False)
    opt = train.make_optimizer(model, writeup("v1"))
    assert isinstance(opt, torch.optim.AdamW)
    group = opt.param_groups[0]
    assert group["lr"] == 1e-5 and group["weight_decay"] == 1e-5
    assert len(group["params"]) == 3
    frozen = nn.Conv2d(1, 1, 1).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable"):
        train.make_optimizer(frozen, writeup("v1"))


def _lrs(recipe, total_steps, warmup_steps=0):
    """The lr in force at each of ``total_steps`` optimizer steps (the scheduler stepped after every one)."""
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=recipe.lr)
    sched = train.make_scheduler(opt, recipe, total_steps, warmup_steps)
    lrs = []
    for _ in range(total_steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs, opt.param_groups[0]["lr"]


def test_v1_schedule_is_cosine_over_all_steps():
    r = writeup("v1", epochs=4)
    n = 4 * 7                                               # 4 epochs of 7 optimizer steps
    lrs, after = _lrs(r, n)
    peak = 1e-5
    assert lrs == pytest.approx([peak * (1 + math.cos(math.pi * k / n)) / 2 for k in range(n)], rel=1e-9, abs=1e-15)
    assert lrs[n // 2] == pytest.approx(peak * 0.5)
    assert after == pytest.approx(r.min_lr, abs=1e-15)      # the cosine ends at min_lr after the last step
    assert all(a > b for a, b in zip(lrs, lrs[1:]))


def test_v2_schedule_warms_up_linearly_per_step_then_cosine():
    r = writeup("v2", epochs=10, warmup=0.1)
    total = 10 * 5                                          # 50 optimizer steps
    sized = train.sized_schedule(r, 5)
    w = sized["warmup_steps"]
    assert (sized["total_steps"], w) == (total, 5) == (total, round(0.1 * total))
    lrs, after = _lrs(r, total, w)
    peak, f = 2e-5, r.warmup_start_factor
    for k in range(w):                                      # LinearLR: start_factor → 1 over w steps
        assert lrs[k] == pytest.approx(peak * (f + (1 - f) * k / w)), k
    for k in range(w, total):                               # then cosine over the remaining steps
        assert lrs[k] == pytest.approx(peak * (1 + math.cos(math.pi * (k - w) / (total - w))) / 2), k
    assert lrs[w] == pytest.approx(peak)                    # warmup over: peak, start of the cosine
    assert after == pytest.approx(0.0, abs=1e-15)
    assert all(a < b for a, b in zip(lrs[:w], lrs[1:w + 1]))
    assert all(a > b for a, b in zip(lrs[w:], lrs[w + 1:]))


@pytest.mark.parametrize("warmup, total, steps", [(0.0, 40, 0), (0.1, 40, 4), (0.25, 8, 2), (0.3, 7, 2),
                                                  (0.5, 9, 4), (5 / 200, 10_400, 260)])
def test_sized_schedule_rounds_the_warmup_share_of_the_steps(warmup, total, steps):
    r = writeup("v2", epochs=total, warmup=warmup)
    sized = train.sized_schedule(r, 1)
    assert (sized["total_steps"], sized["warmup_steps"]) == (total, steps) == (total, int(round(warmup * total)))


def test_sized_schedule_gives_the_writeups_decay_for_its_length_and_the_same_half_life_share_when_short():
    r = writeup("v2")                                       # 200 epochs
    full = train.sized_schedule(r, 52)                      # the write-up's 52 steps per epoch
    assert full["total_steps"] == 200 * 52 == 10_400
    assert full["warmup_steps"] == 260                      # 5 epochs of 52 steps
    assert full["ema_decay"] == pytest.approx(0.999, abs=1e-6)
    assert full["ema_half_life_steps"] == pytest.approx(math.log(2) / -math.log(0.999), abs=0.5)  # 0.0666 rounded
    short = train.sized_schedule(dataclasses.replace(r, epochs=6), 13)     # 78 steps
    half = r.ema_half_life * 78                             # the same share of a 78-step run: 5.2 steps
    assert short["total_steps"] == 78 and short["ema_half_life_steps"] == pytest.approx(half)
    assert short["ema_decay"] == pytest.approx(0.5 ** (1 / half)) and short["ema_decay"] == pytest.approx(0.875, abs=1e-3)
    assert short["ema_decay"] ** short["ema_half_life_steps"] == pytest.approx(0.5)   # it halves in its half-life
    none = train.sized_schedule(writeup("v1", epochs=3), 4)
    assert none == {"total_steps": 12, "warmup_steps": 0, "ema_decay": None, "ema_half_life_steps": None}


def test_steps_per_epoch_counts_the_last_partial_batch_and_the_cap():
    r = small_recipe(batch_size=4)
    assert [train.steps_per_epoch(n, r) for n in (1, 4, 5, 8, 9)] == [1, 1, 2, 2, 3]
    capped = dataclasses.replace(r, max_steps_per_epoch=2)
    assert [train.steps_per_epoch(n, capped) for n in (4, 8, 100)] == [1, 2, 2]
    assert train.steps_per_epoch(5, r) == len(train.make_loader(SRPatchDataset(noise_images(5), patch=16), r, 1))


def test_constant_schedule_keeps_the_lr():
    lrs, after = _lrs(small_recipe(epochs=4, schedule="constant", lr=3e-3), 12)
    assert lrs == pytest.approx([3e-3] * 12) and after == pytest.approx(3e-3)
    warm, _ = _lrs(small_recipe(epochs=4, schedule="constant", lr=3e-3), 12, 4)
    assert warm[:4] == pytest.approx([3e-3 * (0.01 + 0.99 * k / 4) for k in range(4)])
    assert warm[4:] == pytest.approx([3e-3] * 8)


def test_fit_steps_the_schedule_after_every_optimizer_step(tmp_path):
    # 5 items in batches of 2: 3 optimizer steps per epoch, 4 epochs = 12 steps, warmup round(0.25 × 12) = 3
    recipe = small_recipe(epochs=4, warmup=0.25, lr=1e-2, val_every=100, val_at_start=False, amp=None)
    out = fit(tiny_model(), SRPatchDataset(noise_images(5), patch=16), val_sets(), make_loss("l1"), recipe,
              tmp_path, metrics={"mae": mae}, progress=False)
    sized = out["execution"]["schedule"]
    assert sized == train.sized_schedule(recipe, 3) == {"total_steps": 12, "warmup_steps": 3, "ema_decay": None,
                                                        "ema_half_life_steps": None}
    assert [h["steps"] for h in out["history"]] == [3, 3, 3, 3]
    expected, _ = _lrs(recipe, 12, 3)
    expected.append(0.0)                                    # after the last step: the cosine's end
    assert [h["lr"] for h in out["history"]] == pytest.approx(expected[0:12:3])     # lr at each epoch's start
    assert [h["lr_end"] for h in out["history"]] == pytest.approx(expected[3::3], abs=1e-12)
    assert out["history"][0]["lr"] == pytest.approx(1e-2 * 0.01)   # the first step runs at the warmup's start
    assert out["history"][-1]["lr_end"] == pytest.approx(0.0, abs=1e-12)


def test_ema_copies_then_averages_with_decay():
    model = nn.Linear(2, 1)
    ema = train.make_ema(model, decay=0.9)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update_parameters(model)                            # the first update copies
    assert torch.allclose(ema.module.weight, torch.ones(1, 2))
    with torch.no_grad():
        model.weight.fill_(3.0)
    ema.update_parameters(model)
    assert torch.allclose(ema.module.weight, torch.full((1, 2), 0.9 * 1.0 + 0.1 * 3.0))
    assert ema.module is not model


# ------------------------------------------------------------------------------ evaluate
class Upsample(nn.Module):
    def __init__(self, offset=0.0):
        super().__init__()
        self.offset = offset

    def forward(self, x):
        return nn.functional.interpolate(x, scale_factor=4, mode="nearest") + self.offset


def _const_pairs(values):
    return [(torch.full((3, 2, 2), v), torch.full((3, 8, 8), v)) for v in values]


def test_evaluate_pools_all_images_not_set_means():
    sets = {"a": _const_pairs([0.2, 0.4]), "b": _const_pairs([0.9])}
    res = train.evaluate(Upsample(), sets, {"hr_mean": lambda sr, hr: hr.mean(dim=(1, 2, 3))}, batch_size=1)
    assert res["a"]["hr_mean"] == pytest.approx(0.3)
    assert res["b"]["hr_mean"] == pytest.approx(0.9)
    assert res["all"]["hr_mean"] == pytest.approx(0.5)      # (0.2 + 0.4 + 0.9) / 3, not (0.3 + 0.9) / 2
    assert (res["a"]["n"], res["b"]["n"], res["all"]["n"]) == (2, 1, 3)


def test_evaluate_clamps_the_output_and_restores_training_mode():
    model = Upsample(offset=5.0).train()
    res = train.evaluate(model, {"a": _const_pairs([0.5])}, {"max": lambda sr, hr: sr.amax(dim=(1, 2, 3))})
    assert res["a"]["max"] == pytest.approx(1.0)
    assert model.training


def test_evaluate_accepts_datasets():
    sets = val_sets()
    res = train.evaluate(Upsample(), sets, {"mae": mae}, batch_size=2)
    assert res["a"]["n"] == 2 and res["all"]["n"] == 3
    assert 0 < res["all"]["mae"] < 1


@pytest.mark.parametrize("sets, metrics, match", [
    ({"all": _const_pairs([0.5])}, {"m": mae}, "reserved"),
    ({"a": []}, {"m": mae}, "empty"),
    ({}, {"m": mae}, "no validation sets"),
    ({"a": _const_pairs([0.5, 0.5])}, {"m": lambda sr, hr: torch.zeros(1)}, "returned 1 values"),
])
def test_evaluate_errors(sets, metrics, match):
    with pytest.raises(ValueError, match=match):
        train.evaluate(Upsample(), sets, metrics, batch_size=2)


# ------------------------------------------------------------------------------ state
def test_rng_states_round_trip_through_weights_only_file(tmp_path):
    import random

    states = checkpoint.rng_states()
    torch.save(states, tmp_path / "rng.pt")
    loaded = torch.load(tmp_path / "rng.pt", weights_only=True)
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    checkpoint.set_rng_states(loaded)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_load_state_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="state.pt"):
        checkpoint.load_state(tmp_path / "state.pt")
    (tmp_path / "state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="state.pt"):
        checkpoint.load_state(tmp_path / "state.pt")
    torch.save({"format": 99}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt"):
        checkpoint.load_state(tmp_path / "other.pt")


# ------------------------------------------------------------------------------ fit
def test_fit_writes_history_best_and_state(tmp_path, capsys):
    train_set = SRPatchDataset(noise_images(3), names=["x", "x", "y"], patch=16)
    recipe = small_recipe(epochs=3, val_every=2)
    loss = make_loss("l1+fft", weight=0.5)
    out = fit(tiny_model(), train_set, val_sets(), loss, recipe, tmp_path, metrics={"mae": mae},
              extra_meta={"manifest_sha256": "abc", "lr_recipe": "cv2.INTER_AREA x1/4"}, progress=True)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "val[model]" in ln]
    assert len(lines) == 3                                  # epoch 0, epoch 2 and the last epoch

    history = json.loads((tmp_path / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1, 2, 3]
    assert [h["val"] is not None for h in history] == [True, False, True, True]
    assert history[0]["is_best"] is False                   # the initial model is never kept
    rec = history[1]
    assert rec["lr"] == pytest.approx(1e-3) and rec["steps"] == 2
    assert set(rec["train_terms"]) == {"l1", "fft"}
    assert rec["train_loss"] == pytest.approx(rec["train_terms"]["l1"] + 0.5 * rec["train_terms"]["fft"])
    assert sum(rec["train_term_share"].values()) == pytest.approx(1.0)
    assert set(history[2]["val"]) == {"a", "b", "all"}
    kept = [h["epoch"] for h in history if h["is_best"]]
    assert out["best_epoch"] == kept[-1]
    assert out["best_value"] == min(h["val"]["all"]["mae"] for h in history[1:] if h["val"])

    best = tmp_path / "best"
    meta = json.loads((best / "thermsr.json").read_text())
    assert meta["epoch"] == out["best_epoch"] and meta["manifest_sha256"] == "abc"
    assert meta["recipe"] == recipe.to_dict() and meta["selected_copy"] == "model"
    assert meta["loss"][1] == {"name": "fft", "weight": 0.5, "fn": "fft_amplitude_l1"}
    assert meta["train_set"]["per_dataset"] == {"x": 2, "y": 1}
    assert (best / "config.json").is_file() and (best / "pytorch_model_4x.pt").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no temp leftovers

    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert state["epoch"] == 3 and len(state["history"]) == 4 and state["ema"] is None


def test_best_folder_loads_with_from_pretrained(tmp_path):
    recipe = small_recipe(epochs=1)
    model = tiny_model()
    fit(model, SRPatchDataset(noise_images(2), patch=16), val_sets(), l1_loss, recipe, tmp_path,
        metrics={"mae": mae}, progress=False)
    loaded = TinySR.from_pretrained(tmp_path / "best", scale=4)
    meta = json.loads((tmp_path / "best" / "thermsr.json").read_text())
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    assert meta["epoch"] == 1 and meta["loss"] == "l1_loss"


def test_a_kept_super_image_model_loads_through_load_model(tmp_path):
    from thermsr_utils.models import load_model

    model = EdsrModel(EdsrConfig(scale=4, n_resblocks=1, n_feats=4))
    checkpoint.save_best(model, tmp_path, {"epoch": 7})
    loaded, _ = load_model(tmp_path / "best", source="local")
    assert type(loaded) is EdsrModel and json.loads((tmp_path / "best" / "thermsr.json").read_text()) == {"epoch": 7}
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    checkpoint.save_best(tiny_model(), tmp_path, {"epoch": 8})  # replaces the folder
    with pytest.raises(ValueError, match="THERMSR_TINY_TEST"):
        load_model(tmp_path / "best", source="local")


def test_fit_overfits_one_batch():
    img = smooth_image()
    ds = SRPatchDataset([img] * 8, patch=None)              # every batch is the same image
    recipe = small_recipe(epochs=40, batch_size=4, lr=1e-2, weight_decay=0.0, patch=None, val_every=1000,
                          val_at_start=False)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        out = fit(tiny_model(), ds, {"a": ds}, make_loss("l1"), recipe, d, metrics={"mae": mae}, progress=False)
    losses = [h["train_loss"] for h in out["history"]]
    assert losses[-1] < losses[0] / 10
    assert out["best_val"]["all"]["mae"] < losses[0] / 10


class SimulatedKill(Exception):
    pass


class KillAfter:
    """Wraps a CombinedLoss; raises SimulatedKill on call number ``calls + 1`` (a killed process)."""

    def __init__(self, inner, calls):
        self.inner, self.calls, self.n = inner, calls, 0

    def __call__(self, sr, hr):
        self.n += 1
        if self.n > self.calls:
            raise SimulatedKill
        return self.inner(sr, hr)

    @property
    def last(self):
        return self.inner.last

    def shares(self, values):
        return self.inner.shares(values)


def test_resume_after_a_kill_matches_an_uninterrupted_run(tmp_path):
    train_set = SRPatchDataset(noise_images(5), patch=16, augment=True)   # 3 steps per epoch (2+2+1)
    # 12 optimizer steps: 3 of warmup, an EMA half-life of 6 steps; the kill comes mid-epoch, mid-cosine
    recipe = small_recipe(epochs=4, warmup=0.25, val_every=2, ema_half_life=0.5, seed=3, lr=3e-3)
    kw = dict(metrics={"mae": mae}, progress=False)

    # dropout draws from the global torch RNG, so its state must travel in state.pt too
    model = lambda seed: tiny_model(seed, dropout=0.2)  # noqa: E731
    straight = tmp_path / "straight"
    fit(model(0), train_set, val_sets(), make_loss("l1+fft", 0.5), recipe, straight, **kw)

    killed = tmp_path / "killed"
    with pytest.raises(SimulatedKill):
        fit(model(0), train_set, val_sets(), KillAfter(make_loss("l1+fft", 0.5), calls=7), recipe,
            killed, **kw)
    assert checkpoint.load_state(killed / "state.pt")["epoch"] == 2

    with pytest.raises(ValueError, match="lr"):             # a changed recipe cannot resume
        fit(model(1), train_set, val_sets(), make_loss("l1+fft", 0.5),
            dataclasses.replace(recipe, lr=1e-3), killed, resume=True, **kw)

    # a different initialisation: the resumed run must take everything from state.pt
    fit(model(1), train_set, val_sets(), make_loss("l1+fft", 0.5), recipe, killed, resume=True, **kw)

    a, b = checkpoint.load_state(straight / "state.pt"), checkpoint.load_state(killed / "state.pt")
    for key in ("model", "ema"):
        assert a[key].keys() == b[key].keys()
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key])
    assert all(torch.equal(x["exp_avg"], y["exp_avg"])
               for x, y in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()))
    assert strip_timing(a["history"]) == strip_timing(b["history"])
    assert strip_timing(json.loads((straight / "history.json").read_text())) == \
        strip_timing(json.loads((killed / "history.json").read_text()))
    wa = torch.load(straight / "best" / "pytorch_model_4x.pt", weights_only=True)
    wb = torch.load(killed / "best" / "pytorch_model_4x.pt", weights_only=True)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_ema_copy_is_validated_and_kept(tmp_path):
    recipe = small_recipe(epochs=2, ema_half_life=0.25, val_every=100, val_at_start=False, lr=1e-2)   # 4 steps
    model = tiny_model()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    out = fit(model, SRPatchDataset(noise_images(4), patch=16), val_sets(), l1_loss, recipe, tmp_path,
              metrics={"mae": mae}, progress=False)
    kept = torch.load(tmp_path / "best" / "pytorch_model_4x.pt", weights_only=True)
    ema_sd = out["ema_model"].state_dict()
    assert all(torch.equal(kept[k], ema_sd[k]) for k in kept)
    assert not all(torch.equal(kept[k], model.state_dict()[k]) for k in kept)
    assert not all(torch.equal(kept[k], initial[k]) for k in kept)       # the EMA did move
    assert out["history"][-1]["val_copy"] == "ema"
    assert out["best_val"]["all"]["mae"] == pytest.approx(
        train.evaluate(out["ema_model"], val_sets(), {"mae": mae})["all"]["mae"])
    raw = torch.load(tmp_path / checkpoint.BEST_RAW_DIR / "pytorch_model_4x.pt", weights_only=True)
    assert all(torch.equal(raw[k], model.state_dict()[k]) for k in raw)  # the trained weights of the same epoch
    raw_meta = json.loads((tmp_path / checkpoint.BEST_RAW_DIR / "thermsr.json").read_text())
    assert (raw_meta["selected_copy"], raw_meta["kept_by"], raw_meta["epoch"]) == ("model", "ema", 2)


def test_without_ema_no_raw_copy_is_written(tmp_path):
    recipe = small_recipe(epochs=1, val_every=1, val_at_start=False)
    fit(tiny_model(), SRPatchDataset(noise_images(4), patch=16), val_sets(), l1_loss, recipe, tmp_path,
        metrics={"mae": mae}, progress=False)
    assert (tmp_path / "best").is_dir() and not (tmp_path / checkpoint.BEST_RAW_DIR).exists()


@pytest.mark.parametrize("mode, expected", [("max", 3), ("min", 1)])
def test_selection_direction(tmp_path, mode, expected):
    calls = []

    def rising(sr, hr):                                     # 1, 2, 3 … on successive validations
        calls.append(None)
        return torch.full((sr.shape[0],), float(len(calls)))

    recipe = small_recipe(epochs=3, val_at_start=False, select_metric="rising", select_mode=mode,
                          batch_size=4)
    out = fit(tiny_model(), SRPatchDataset(noise_images(2), patch=16), {"a": _const_pairs([0.5])},
              l1_loss, recipe, tmp_path, metrics={"rising": rising}, progress=False)
    assert out["best_epoch"] == expected
    assert json.loads((tmp_path / "best" / "thermsr.json").read_text())["epoch"] == expected


def test_fit_argument_errors(tmp_path):
    ds = SRPatchDataset(noise_images(2), patch=16)
    with pytest.raises(ValueError, match="select_metric"):
        fit(tiny_model(), ds, val_sets(), l1_loss, small_recipe(), tmp_path, metrics={"other": mae})
    with pytest.raises(ValueError, match="reserved"):
        fit(tiny_model(), ds, val_sets(), l1_loss, small_recipe(), tmp_path, metrics={"mae": mae},
            extra_meta={"recipe": "x"})
    with pytest.raises(TypeError, match="save_pretrained"):
        fit(nn.Conv2d(3, 3, 1), ds, val_sets(), l1_loss, small_recipe(), tmp_path, metrics={"mae": mae})


def test_fit_stops_on_a_non_finite_loss(tmp_path):
    def nan_loss(sr, hr):
        return (sr - hr).abs().mean() * float("nan")

    with pytest.raises(FloatingPointError, match="non-finite"):
        fit(tiny_model(), SRPatchDataset(noise_images(2), patch=16), val_sets(), nan_loss, small_recipe(),
            tmp_path, metrics={"mae": mae}, progress=False)


def test_max_steps_per_epoch_caps_the_epoch(tmp_path):
    recipe = small_recipe(epochs=1, batch_size=1, max_steps_per_epoch=2, val_at_start=False)
    out = fit(tiny_model(), SRPatchDataset(noise_images(5), patch=16), val_sets(), l1_loss, recipe, tmp_path,
              metrics={"mae": mae}, progress=False)
    assert out["history"][-1]["steps"] == 2


def _run_files(folder):
    """Every file under ``folder`` with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_rerun_without_resume_refuses_an_interrupted_run_and_fresh_sets_it_aside(tmp_path, capsys):
    ds = SRPatchDataset(noise_images(2), patch=16)                       # one step per epoch
    recipe = small_recipe(epochs=40, val_every=5)
    kw = dict(metrics={"mae": mae}, progress=False)
    out = tmp_path / "v1"
    with pytest.raises(SimulatedKill):                                     # killed during epoch 12 of 40
        fit(tiny_model(), ds, val_sets(), KillAfter(l1_loss, calls=11), recipe, out, **kw)
    before = _run_files(out)
    assert {"state.pt", "history.json", "best/thermsr.json"} <= set(before)

    with pytest.raises(train.TrainingRunExists) as refused:               # the same command again, no resume
        fit(tiny_model(), ds, val_sets(), l1_loss, recipe, out, resume=False, **kw)
    msg = str(refused.value)
    assert msg.startswith(f"{out} holds an interrupted training run (t, stopped after epoch 11/40)")
    assert "`-p resume True`" in msg and "`-p fresh_start True`" in msg and "\n" not in msg
    assert _run_files(out) == before, "a refused run must change nothing"

    result = fit(tiny_model(), ds, val_sets(), l1_loss, small_recipe(epochs=1), out, fresh=True, **kw)
    assert [h["epoch"] for h in result["history"]] == [0, 1]
    (old,) = tmp_path.glob("v1.old-*")
    assert _run_files(old) == before, "the interrupted run is set aside whole"
    assert f"the earlier run in {out} was moved to {old}" in capsys.readouterr().out
    assert checkpoint.load_state(out / "state.pt")["epoch"] == 1


def test_a_finished_run_is_reused_with_resume_and_moved_aside_without(tmp_path, capsys):
    ds = SRPatchDataset(noise_images(2), patch=16)
    kw = dict(metrics={"mae": mae}, progress=False)
    first = fit(tiny_model(), ds, val_sets(), l1_loss, small_recipe(epochs=2), tmp_path / "run", **kw)
    before = _run_files(tmp_path / "run")
    again = fit(tiny_model(1), ds, val_sets(), l1_loss, small_recipe(epochs=2), tmp_path / "run", resume=True, **kw)
    assert strip_timing(again["history"]) == strip_timing(first["history"])
    assert again["best_epoch"] == first["best_epoch"]
    assert _run_files(tmp_path / "run") == before, "resuming a finished run trains nothing"
    out = fit(tiny_model(), ds, val_sets(), l1_loss, small_recipe(epochs=1), tmp_path / "run", **kw)  # a rerun
    assert [h["epoch"] for h in out["history"]] == [0, 1]
    assert json.loads((tmp_path / "run" / "best" / "thermsr.json").read_text())["recipe"]["epochs"] == 1
    assert [_run_files(p) for p in tmp_path.glob("run.old-*")] == [before]
    assert "the earlier run in" in capsys.readouterr().out
    second = _run_files(tmp_path / "run")
    fit(tiny_model(), ds, val_sets(), l1_loss, small_recipe(epochs=1), tmp_path / "run", fresh=True, resume=True,
        **kw)                                                               # fresh wins over resume
    assert [_run_files(p) for p in sorted(tmp_path.glob("run.old-*"))] == [before, second]   # in time order


def test_without_a_state_no_epoch_completed_and_leftovers_are_cleared(tmp_path):
    ds = SRPatchDataset(noise_images(2), patch=16)
    (tmp_path / "best").mkdir()
    (tmp_path / "best" / "thermsr.json").write_text("{}")                 # killed before its first state.pt
    (tmp_path / "history.json").write_text("[]")
    fit(tiny_model(), ds, val_sets(), l1_loss, small_recipe(epochs=1, val_at_start=False), tmp_path,
        metrics={"mae": mae}, progress=False)
    assert json.loads((tmp_path / "best" / "thermsr.json").read_text())["epoch"] == 1
    assert not list(tmp_path.parent.glob(f"{tmp_path.name}.old-*"))


def test_bf16_autocast_trains_on_cpu(tmp_path):
    recipe = small_recipe(epochs=1, amp="bf16", val_at_start=False)
    out = fit(tiny_model(), SRPatchDataset(noise_images(2), patch=16), val_sets(), l1_loss, recipe, tmp_path,
              metrics={"mae": mae}, progress=False)
    rec = out["history"][-1]
    assert math.isfinite(rec["train_loss"]) and math.isfinite(rec["val"]["all"]["mae"])


@pytest.mark.parametrize("value, best, mode, expected", [
    (30.0, None, "max", True),
    (31.0, 30.0, "max", True),
    (30.0, 30.0, "max", False),                             # ties keep the earlier epoch
    (0.1, 0.2, "min", True),
    (0.3, 0.2, "min", False),
    (float("inf"), 40.0, "max", True),                      # PSNR of an exact copy is inf, still the best
    (float("nan"), None, "max", False),
])
def test_is_better(value, best, mode, expected):
    assert train._is_better(value, best, mode) is expected


def test_last_val_change_is_the_move_between_the_last_two_validations():
    def h(epoch, psnr):
        return {"epoch": epoch, "val": {"all": {"psnr": psnr}} if psnr is not None else None}

    history = [h(0, 30.0), h(1, None), h(5, 31.0), h(6, None), h(10, 31.25)]
    assert checkpoint.last_val_change(history) == (0.25, 5)
    gain, epochs = checkpoint.last_val_change(history[:2])
    assert math.isnan(gain) and epochs == 0


# ------------------------------------------------------------------------------ keep = "last"
def _falling(values):
    """A validation metric (called ``psnr`` below) that gives ``values[i]`` on the i-th validation."""
    calls = []

    def fn(sr, hr):
        calls.append(None)
        return torch.full((sr.shape[0],), float(values[len(calls) - 1]))
    return fn


@pytest.mark.parametrize("keep, kept", [("last", 3), ("best", 1)])
def test_keep_last_keeps_the_final_epoch_even_when_an_earlier_one_scored_better(tmp_path, keep, kept):
    recipe = small_recipe(epochs=3, val_at_start=False, select_metric="psnr", select_mode="max", keep=keep,
                          batch_size=4, lr=1e-2, amp=None)
    model = tiny_model()
    out = fit(model, SRPatchDataset(noise_images(2), patch=16), {"a": _const_pairs([0.5])}, l1_loss, recipe,
              tmp_path, metrics={"psnr": _falling([30.0, 29.0, 28.0])}, progress=False)
    history = out["history"]
    assert [h["val"]["all"]["psnr"] for h in history] == [30.0, 29.0, 28.0]     # epoch 1 has the best PSNR
    assert out["best_epoch"] == kept and out["best_value"] == {1: 30.0, 3: 28.0}[kept]
    assert json.loads((tmp_path / "best" / "thermsr.json").read_text())["epoch"] == kept
    assert [h["epoch"] for h in history if h["is_best"]] == [kept]
    if keep == "last":                                      # the kept weights are the final model's
        saved = torch.load(tmp_path / "best" / "pytorch_model_4x.pt", weights_only=True)
        assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
        assert checkpoint.kept_words(history, recipe).startswith("Kept: epoch 3 (its last epoch; PSNR 28.00 dB).")
        assert "would have kept epoch 1 (PSNR 30.00 dB)" in checkpoint.kept_words(history, recipe)


# ------------------------------------------------------------------------------ prose helpers
def _val(epoch, psnr, ssim=None, lpips=None, best=False):
    v = {"psnr": psnr}
    if ssim is not None:
        v["ssim"] = ssim
    if lpips is not None:
        v["lpips"] = lpips
    return {"epoch": epoch, "val": {"all": v}, "is_best": best}


def _no_val(epoch):
    return {"epoch": epoch, "val": None, "is_best": False}


def test_kept_words_when_the_kept_epoch_is_the_best_psnr_and_when_it_is_not():
    best = writeup("v1", epochs=10, val_every=5)
    history = [_val(0, 35.0, lpips=0.1), _val(5, 30.0, lpips=0.3, best=True), _no_val(6), _val(10, 29.5, lpips=0.2)]
    words = checkpoint.kept_words(history, best)                 # epoch 0 (the initial model) is never kept
    assert words == ("Kept: epoch 5 (its best validation PSNR; PSNR 30.00 dB, LPIPS 0.3000). It is also the "
                     "epoch the write-up's rule, the best validation PSNR, would have kept.")
    last = dataclasses.replace(best, keep="last")
    history = [_val(0, 35.0), _val(5, 30.0), _val(10, 29.5, best=True)]
    assert checkpoint.kept_words(history, last) == (
        "Kept: epoch 10 (its last epoch; PSNR 29.50 dB). The write-up's rule, the best validation PSNR, would have "
        "kept epoch 5 (PSNR 30.00 dB).")
    by_lpips = dataclasses.replace(best, select_metric="lpips", select_mode="min")
    history = [_val(5, 31.0, lpips=0.3), _val(10, 30.0, lpips=0.2, best=True)]
    assert checkpoint.kept_words(history, by_lpips).startswith("Kept: epoch 10 (its best validation LPIPS; ")
    assert checkpoint.kept_words([_val(0, 30.0), _no_val(1)], best) == "No epoch was validated."


def test_kept_words_without_a_kept_flag_names_the_last_validated_epoch():
    history = [_val(5, 31.0), _val(10, 30.0), _no_val(11)]
    assert checkpoint.kept_words(history, writeup("v1", keep="last")).startswith("Kept: epoch 10 (its last epoch; ")


def test_kept_words_names_the_epoch_fit_kept_when_the_best_improved_twice():
    # what fit writes with keep="best" when PSNR improves at epochs 5 and 10: is_best on both, epoch 10 kept
    history = [_val(0, 30.0), _val(5, 31.0, best=True), _val(10, 32.0, best=True)]
    assert checkpoint.kept_words(history, writeup("v1", epochs=10)).startswith("Kept: epoch 10 ")


def test_levelled_words_says_still_improving_or_levelled_off_per_run():
    still = [_val(0, 30.0, 0.80, 0.30), _val(5, 31.0, 0.85, 0.25), _no_val(6), _val(10, 31.2, 0.8505, 0.2490)]
    flat = [_val(0, 30.0, 0.80, 0.30), _val(4, 30.5, 0.82, 0.28), _val(8, 30.52, 0.8205, 0.2795)]
    worse = [_val(3, 30.0, 0.80, 0.30), _val(6, 29.0, 0.70, 0.40)]
    words = checkpoint.levelled_words({"v1": still, "v2": flat, "v3": worse, "v4": [_val(0, 30.0, 0.8, 0.3)]})
    assert words == (
        "Over its last 5 epochs v1 moved by PSNR +0.20, SSIM +0.0005, LPIPS -0.0010: **still improving** on PSNR, so "
        "its scores are not yet what this recipe reaches with longer training. "
        "Over its last 4 epochs v2 moved by PSNR +0.02, SSIM +0.0005, LPIPS -0.0005: levelled off on every metric. "
        "Over its last 3 epochs v3 moved by PSNR -1.00, SSIM -0.1000, LPIPS +0.1000: levelled off on every metric. "
        "v4 was validated fewer than twice.")
    lpips_only = [_val(0, 30.0, 0.80, 0.30), _val(5, 30.0, 0.80, 0.29)]      # LPIPS falls by 0.01 > 0.002
    assert "**still improving** on LPIPS," in checkpoint.levelled_words({"v2": lpips_only})
    both = [_val(0, 30.0, 0.80, 0.30), _val(5, 30.1, 0.81, 0.29)]
    assert "**still improving** on PSNR, SSIM, LPIPS," in checkpoint.levelled_words({"v2": both})


def test_levelled_words_skips_a_metric_the_run_did_not_validate():
    history = [_val(0, 30.0, 0.8), _val(5, 31.0, 0.85)]    # fit with default_metrics() and no LPIPS metric
    assert checkpoint.levelled_words({"v1": history}).startswith("Over its last 5 epochs v1 moved by PSNR +1.00, SSIM")


def test_the_kept_model_records_what_it_was_trained_on_and_sr_folder_reads_it(tmp_path):
    from thermsr_utils.colour import model_trained_on, resolve_colour

    seen = {"palettes": ["gray"], "datasets": ["sftl54", "thermeval"]}
    train_set = SRPatchDataset(noise_images(2), names=["x", "y"], patch=16, trained_on=seen)
    fit(tiny_model(), train_set, val_sets(), l1_loss, small_recipe(epochs=1), tmp_path / "a",
        metrics={"mae": mae}, progress=False)
    meta = json.loads((tmp_path / "a" / "best" / "thermsr.json").read_text())
    assert meta["trained_on"] == seen
    assert model_trained_on(tmp_path / "a" / "best") == seen
    assert resolve_colour("auto", seen) == "palette"
    fit(tiny_model(), SRPatchDataset(noise_images(2), patch=16), val_sets(), l1_loss, small_recipe(epochs=1),
        tmp_path / "b", metrics={"mae": mae}, progress=False)
    assert "trained_on" not in json.loads((tmp_path / "b" / "best" / "thermsr.json").read_text())
    with pytest.raises(ValueError, match="reserved"):
        fit(tiny_model(), train_set, val_sets(), l1_loss, small_recipe(epochs=1), tmp_path / "c",
            metrics={"mae": mae}, extra_meta={"trained_on": {}}, progress=False)
