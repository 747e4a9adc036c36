"""Tests of thermsr_utils.accel (exact INTER_AREA, the device data pipeline, execution settings) and of the
fast paths it opens in train.fit and evaluate.evaluate_method."""
import dataclasses
import json

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from conftest import tiny_model as shared_tiny_model

from thermsr_utils import accel, checkpoint, data, evaluate, train
from thermsr_utils.datasets import SRPatchDataset
from thermsr_utils.losses import make_loss
from thermsr_utils.train import Recipe, fit


pytestmark = pytest.mark.usefixtures("one_thread")


def cv2_area(img, scale):
    h, w = img.shape[:2]
    return cv2.resize(img, (w // scale, h // scale), interpolation=cv2.INTER_AREA)


def as_chw(img):
    """H×W×C uint8 array → C×H×W uint8 tensor (channel order kept)."""
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))


def noise_images(n, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def dihedral(img):
    """The 8 flips/rotations of an H×W×C array, in accel.DIHEDRAL order."""
    return [np.rot90(img[:, ::-1] if flip else img, k, axes=(0, 1)) for flip, k in accel.DIHEDRAL]


# ------------------------------------------------------------------------------ exact INTER_AREA
def every_block_sum(scale):
    """A uint8 H×W×3 image whose scale×scale blocks have every possible sum 0..255·scale² (and the
    same sums composed differently in the second and third channels)."""
    area = scale * scale
    sums = np.arange(255 * area + 1)
    side = int(np.ceil(np.sqrt(len(sums))))
    sums = np.concatenate([sums, np.full(side * side - len(sums), 255 * area)])
    q, r = np.divmod(sums, area)
    blocks = np.repeat(q[:, None], area, axis=1)
    blocks[np.arange(area)[None, :] < r[:, None]] += 1                      # r ones first
    spread = np.sort(blocks, axis=1)[:, ::-1].copy()                         # the same sum, ones last
    rng = np.random.default_rng(scale)
    shuffled = rng.permuted(blocks, axis=1)
    chans = [b.reshape(side, side, scale, scale).transpose(0, 2, 1, 3).reshape(side * scale, side * scale)
             for b in (blocks, spread, shuffled)]
    return np.stack(chans, axis=2).astype(np.uint8), sums


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_every_block_sum_matches_cv2(scale):
    img, sums = every_block_sum(scale)
    expected = cv2_area(img, scale)
    assert np.array_equal(data.area_downsample_array(img, scale), expected)
    assert torch.equal(data.area_downsample(as_chw(img), scale), as_chw(expected))
    if scale == 4:                                         # ties (sum ≡ 8 mod 16) go to the even neighbour
        ties = sums % 16 == 8
        got = expected[..., 0].reshape(-1)[ties].astype(int)
        assert np.array_equal(got, np.rint(sums[ties] / 16).astype(int))
        assert np.all(got % 2 == 0)


@pytest.mark.parametrize("h, w", [(4, 4), (8, 12), (36, 20), (64, 192), (192, 192), (128, 128), (48, 100)])
def test_random_images_of_many_sizes_match_cv2(h, w):
    rng = np.random.default_rng(h * 1000 + w)
    imgs = rng.integers(0, 256, (3, h, w, 3), dtype=np.uint8)
    for img in imgs:
        assert np.array_equal(data.area_downsample_array(img), cv2_area(img, 4))
    batch = data.area_downsample(torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous())
    assert torch.equal(batch, torch.from_numpy(np.stack([cv2_area(i, 4) for i in imgs])).permute(0, 3, 1, 2))
    assert np.array_equal(data.area_downsample_array(imgs), np.stack([cv2_area(i, 4) for i in imgs]))


@pytest.mark.parametrize("value", [0, 1, 127, 128, 254, 255])
def test_flat_and_extreme_images(value):
    img = np.full((16, 20, 3), value, np.uint8)
    out = data.area_downsample_array(img)
    assert np.array_equal(out, cv2_area(img, 4)) and np.all(out == value)
    checker = np.indices((16, 16)).sum(0) % 2 * 255                         # 0/255 checkerboard: sums of 8·255
    img = np.repeat(checker[:, :, None], 3, 2).astype(np.uint8)
    assert np.array_equal(data.area_downsample_array(img), cv2_area(img, 4))


def thermal_crops():
    """192×192 crops of one generated SF-TL54-like portrait, white-hot and in the colour palette."""
    from thermsr_utils import faces as F
    from thermsr_utils import synthetic as S

    cam = S.make_camera(np.random.default_rng([0, 540]), *S.SFTL54_SIZE, **S.SFTL54_CAMERA)
    subject = F.make_subject(3, np.random.default_rng([0, 54, 3]))
    rng = np.random.default_rng([0, 54, 3, 1])
    gray, _, box = S.render_sftl54_frame(subject, S.sftl54_pose(subject, rng), F.make_textures(subject), cam, rng)
    colour = S.iron(gray)
    gray3 = np.repeat(gray[:, :, None], 3, axis=2)
    x0 = int(np.clip((box[0] + box[2]) / 2 - 96, 0, gray.shape[1] - 192))
    y0 = int(np.clip((box[1] + box[3]) / 2 - 96, 0, gray.shape[0] - 192))
    crops = [im[y0 + dy:y0 + dy + 192, x0 + dx:x0 + dx + 192] for im in (gray3, colour)
             for dy, dx in ((0, 0), (1, 3), (-min(y0, 5), 2))]
    resized = cv2.resize(gray3[:300, :300], (192, 192), interpolation=cv2.INTER_AREA)  # as the builders resize
    return [np.ascontiguousarray(c) for c in crops] + [resized]


def test_generated_thermal_crops_match_cv2():
    crops = thermal_crops()
    stack = np.stack(crops)
    assert stack.std() > 10                                   # real structure, not a flat image
    expected = np.stack([data.make_lr(c) for c in crops])
    assert np.array_equal(data.area_downsample_array(stack), expected)
    t = torch.from_numpy(stack).permute(0, 3, 1, 2).contiguous()
    assert torch.equal(data.area_downsample(t).permute(0, 2, 3, 1), torch.from_numpy(expected))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.sampled_from([3, 4]), st.data())
def test_property_equals_cv2(bh, bw, scale, draw):
    img = draw.draw(arrays(np.uint8, (bh * scale, bw * scale, 3)))
    assert np.array_equal(data.area_downsample_array(img, scale), cv2_area(img, scale))
    assert torch.equal(data.area_downsample(as_chw(img), scale), as_chw(cv2_area(img, scale)))


def test_area_downsample_rejects_bad_input():
    with pytest.raises(ValueError, match="18x16 is not divisible by scale 4"):
        data.area_downsample(torch.zeros(3, 16, 18, dtype=torch.uint8))
    with pytest.raises(ValueError, match="uint8"):
        data.area_downsample(torch.zeros(3, 16, 16))
    with pytest.raises(ValueError, match="not divisible"):
        data.area_downsample_array(np.zeros((10, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        data.area_downsample_array(np.zeros((16, 16, 3), np.float32))
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="scale"):
            data.area_downsample_array(np.zeros((16, 16, 3), np.uint8), bad)


# ------------------------------------------------------------------------------ device data pipeline
def indexed_images(n, size=32, seed=0):
    """Noise crops whose blue channel (BGR index 0) holds the crop's index everywhere."""
    imgs = noise_images(n, size, seed)
    for i, img in enumerate(imgs):
        img[..., 0] = i
    return imgs


def items_of(hr):
    """Crop indices of a float RGB batch made from ``indexed_images`` (blue is RGB channel 2)."""
    return [int(round(float(v) * 255)) for v in hr[:, 2, 0, 0]]


@pytest.mark.parametrize("patch, augment", [(16, False), (16, True), (None, True)])
def test_device_batches_hold_the_loader_items_in_order(patch, augment):
    imgs = indexed_images(11)
    ds = SRPatchDataset(imgs, patch=patch, augment=augment, seed=4)
    recipe = Recipe(name="t", epochs=3, batch_size=4, lr=1e-3, weight_decay=0.0, patch=patch, augment=augment, seed=7,
                    val_every=5, keep="best")
    sampler = accel.DevicePatchSampler(ds, recipe.batch_size, order_seed=recipe.seed)   # windows: the set's seed
    assert len(sampler) == 3 == len(train.make_loader(ds, recipe, 1))
    for epoch in (1, 2):
        ours = [items_of(hr) for _, hr, w in sampler.epoch(epoch)]
        theirs = [items_of(hr) for _, hr in train.make_loader(ds, recipe, epoch)]
        assert ours == theirs
        assert sorted(sum(ours, [])) == list(range(11))


def test_device_lr_is_make_lr_of_the_hr_patch_and_windows_are_the_drawn_ones():
    imgs = noise_images(6, size=40)
    ds = SRPatchDataset(imgs, patch=24, augment=False, seed=1)
    sampler = accel.DevicePatchSampler(ds, batch_size=4)
    for epoch in (1, 2):
        draws = sampler.draws(epoch)
        order = accel.epoch_order(6, 1, epoch)
        pos = 0
        for lr, hr, weight in sampler.epoch(epoch):
            assert weight == 1.0 and lr.dtype == hr.dtype == torch.float32
            assert lr.shape[-2:] == (6, 6) and hr.shape[-2:] == (24, 24)
            hr_bgr = data.tensor_to_bgr(hr)
            assert torch.equal(data.bgr_to_tensor(hr_bgr), hr)                 # exact k/255 values
            assert torch.equal(lr, data.bgr_to_tensor(np.stack([data.make_lr(h) for h in hr_bgr])))
            for patch in hr_bgr:
                i = int(order[pos])
                y, x = int(draws["y"][i]), int(draws["x"][i])
                assert np.array_equal(patch, imgs[i][y:y + 24, x:x + 24])
                hits = [(a, b) for a in range(17) for b in range(17) if np.array_equal(imgs[i][a:a + 24, b:b + 24], patch)]
                assert hits == [(y, x)]                                       # a real window of its crop
                pos += 1
        assert pos == 6


def test_device_augmentation_gives_all_eight_flips_and_rotations():
    imgs = noise_images(8, size=16)
    ds = SRPatchDataset(imgs, patch=None, augment=True, seed=2)
    sampler = accel.DevicePatchSampler(ds, batch_size=8)
    seen = set()
    for epoch in range(1, 5):
        draws = sampler.draws(epoch)
        order = accel.epoch_order(8, 2, epoch)
        (lr, hr, _), = list(sampler.epoch(epoch))
        for j, patch in enumerate(data.tensor_to_bgr(hr)):
            i = int(order[j])
            variants = dihedral(imgs[i])
            match = [v for v, img in enumerate(variants) if np.array_equal(img, patch)]
            assert len(match) == 1
            assert accel.DIHEDRAL[match[0]] == (bool(draws["flip"][i]), int(draws["k"][i]))
            seen.add(match[0])
        assert torch.equal(lr, data.bgr_to_tensor(np.stack([data.make_lr(h) for h in data.tensor_to_bgr(hr)])))
    assert seen == set(range(8))


def test_device_augmented_windows_are_rotated_windows():
    imgs = noise_images(5, size=40)
    ds = SRPatchDataset(imgs, patch=16, augment=True, seed=9)
    sampler = accel.DevicePatchSampler(ds, batch_size=5)
    draws = sampler.draws(3)
    order = accel.epoch_order(5, 9, 3)
    (_, hr, _), = list(sampler.epoch(3))
    for j, patch in enumerate(data.tensor_to_bgr(hr)):
        i = int(order[j])
        y, x = int(draws["y"][i]), int(draws["x"][i])
        window = imgs[i][y:y + 16, x:x + 16]
        v = accel.DIHEDRAL.index((bool(draws["flip"][i]), int(draws["k"][i])))
        assert np.array_equal(patch, dihedral(window)[v])


def test_device_draws_are_seeded_uniform_and_independent_of_the_device():
    tiny = [np.zeros((12, 12, 3), np.uint8)] * 2000
    s = accel.DevicePatchSampler(SRPatchDataset(tiny, patch=4, augment=True, seed=5), batch_size=16)
    a, b = s.draws(1), s.draws(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["y"], s.draws(2)["y"])
    other = accel.DevicePatchSampler(SRPatchDataset(tiny, patch=4, augment=True, seed=6), batch_size=16)
    assert not torch.equal(a["y"], other.draws(1)["y"])
    for key, hi in (("y", 8), ("x", 8), ("flip", 1), ("k", 3)):
        counts = torch.bincount(a[key], minlength=hi + 1).double()
        assert int(a[key].min()) == 0 and int(a[key].max()) == hi          # every position is reachable
        expected = 2000 / (hi + 1)
        assert float((counts - expected).abs().max()) < 5 * expected ** 0.5  # roughly uniform
    plain = accel.DevicePatchSampler(SRPatchDataset(tiny[:10], patch=4, augment=False), batch_size=4).draws(1)
    assert int(plain["flip"].sum()) == 0 and int(plain["k"].sum()) == 0


def test_device_batches_repeat_per_epoch():
    ds = SRPatchDataset(noise_images(5), patch=16, augment=True, seed=1)
    sampler = accel.DevicePatchSampler(ds, batch_size=2)
    first = [hr for _, hr, _ in sampler.epoch(2)]
    again = [hr for _, hr, _ in sampler.epoch(2)]
    other = [hr for _, hr, _ in sampler.epoch(3)]
    assert [h.shape[0] for h in first] == [2, 2, 1]
    assert all(torch.equal(x, y) for x, y in zip(first, again))
    assert not all(torch.equal(x, y) for x, y in zip(first, other))


def test_device_sampler_shards_every_global_batch():
    ds = SRPatchDataset(indexed_images(7), patch=8, augment=True, seed=0)
    whole = [items_of(hr) for _, hr, _ in accel.DevicePatchSampler(ds, 4).epoch(1)]
    ranks = [list(accel.DevicePatchSampler(ds, 4, rank=r, world_size=2).epoch(1)) for r in range(2)]
    single = list(accel.DevicePatchSampler(ds, 4).epoch(1))
    for b, items in enumerate(whole):
        parts = [ranks[r][b] for r in range(2)]
        got = [i for (_, hr, w) in parts if w > 0 for i in items_of(hr)]
        assert got == items                                                  # contiguous slices, in order
        assert sum(w for _, _, w in parts) == pytest.approx(2.0)
        hr_all = torch.cat([hr for _, hr, w in parts if w > 0])
        assert torch.equal(hr_all, single[b][1])                              # the same windows as one process


def test_device_sampler_refuses_what_it_cannot_serve():
    mixed = SRPatchDataset([np.zeros((16, 16, 3), np.uint8), np.zeros((20, 20, 3), np.uint8)], patch=8)
    with pytest.raises(ValueError, match="differ in size"):
        accel.DevicePatchSampler(mixed, 2)
    oblong = SRPatchDataset([np.zeros((16, 24, 3), np.uint8)], patch=None, augment=True)
    with pytest.raises(ValueError, match="non-square"):
        accel.DevicePatchSampler(oblong, 2)
    with pytest.raises(ValueError, match="SRPatchDataset"):
        accel.DevicePatchSampler([(torch.zeros(3, 2, 2), torch.zeros(3, 8, 8))], 2)
    ok = SRPatchDataset(noise_images(2), patch=16)
    with pytest.raises(ValueError, match="rank 2"):
        accel.DevicePatchSampler(ok, 2, rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        accel.DevicePatchSampler(ok, 0)


def test_stack_crops_is_rgb_uint8():
    img = np.zeros((4, 4, 3), np.uint8)
    img[..., 0] = 200                                                        # blue in BGR
    t = accel.stack_crops([img, img])
    assert t.dtype == torch.uint8 and t.shape == (2, 3, 4, 4)
    assert int(t[0, 2].min()) == 200 and int(t[0, :2].max()) == 0


# ------------------------------------------------------------------------------ execution settings
def test_resolve_amp_and_fast(monkeypatch):
    monkeypatch.setattr(accel, "cpu_has_native_bf16", lambda: False)     # bf16 emulated: float32 is faster
    assert accel.resolve_amp("auto", "cpu") is None
    monkeypatch.setattr(accel, "cpu_has_native_bf16", lambda: True)      # AMX / AVX512-BF16
    assert accel.resolve_amp("auto", "cpu") == "bf16"
    assert accel.resolve_amp(None, "cpu") is None                         # explicit float32 stays float32
    monkeypatch.undo()
    assert accel.resolve_amp("auto", "cpu") == ("bf16" if accel.cpu_has_native_bf16() else None)
    assert accel.resolve_amp("bf16", "cpu") == "bf16"
    assert accel.resolve_amp(None, "cuda") is None
    assert accel.resolve_fast(None, "cpu") is False and accel.resolve_fast(True, "cpu") is True
    assert accel.resolve_fast(False, "cpu") is False
    if torch.cuda.is_available():
        assert accel.resolve_fast(None, "cuda") is True
    with pytest.raises(ValueError, match="amp"):
        accel.resolve_amp("fp16", "cpu")
    with pytest.raises(ValueError, match="fast"):
        accel.resolve_fast("yes", "cpu")


def test_cpu_has_native_bf16_reads_torchs_cpu_probes(monkeypatch):
    for amx, avx in ((False, False), (True, False), (False, True), (True, True)):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx: v, raising=False)
        assert accel.cpu_has_native_bf16() is (amx or avx)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    assert accel.cpu_has_native_bf16() is False                           # a torch without the probes: no claim


@pytest.mark.parametrize("native", [False, True])
def test_execution_uses_channels_last_with_bf16(monkeypatch, native):
    monkeypatch.setattr(accel, "cpu_has_native_bf16", lambda: native)
    one = type("OneRank", (), {"world_size": 1})()
    train_set = SRPatchDataset(noise_images(2), patch=16)
    auto = train._execution(train_set, small_recipe(fast=False), torch.device("cpu"), one)
    assert (auto["amp"], auto["channels_last"], auto["data_pipeline"]) == (
        ("bf16", True, "DataLoader") if native else (None, False, "DataLoader"))
    plain = train._execution(train_set, small_recipe(fast=False, amp=None), torch.device("cpu"), one)
    assert (plain["amp"], plain["channels_last"]) == (None, False)
    forced = train._execution(train_set, small_recipe(fast=False, amp="bf16"), torch.device("cpu"), one)
    assert (forced["amp"], forced["channels_last"]) == ("bf16", True)


def test_recipe_defaults_and_checks_for_the_fast_path():
    r = Recipe.v1(epochs=2, lr=1e-3, batch_size=4, patch=16, val_every=5, keep="best")
    assert (r.amp, r.fast, r.compile) == ("auto", None, False)
    with pytest.raises(ValueError, match="fast"):
        dataclasses.replace(r, fast="on")
    with pytest.raises(ValueError, match="compile"):
        dataclasses.replace(r, compile=1)
    assert Recipe(**r.to_dict()) == dataclasses.replace(r, select_on="model")


# ------------------------------------------------------------------------------ fit on the fast path
def tiny_model(seed=0):
    return shared_tiny_model(seed, n_feats=8)


def mae(sr, hr):
    return (sr - hr).abs().mean(dim=(1, 2, 3))


def small_recipe(**kw):
    base = dict(name="t", epochs=2, batch_size=2, lr=3e-3, weight_decay=1e-4, patch=16, augment=False,
                val_every=1, keep="best", select_metric="mae", select_mode="min", seed=1)
    base.update(kw)
    return Recipe(**base)


def val_sets():
    return {"a": SRPatchDataset(noise_images(2, seed=5), patch=None)}


def test_fast_path_computes_what_the_dataloader_path_computes(tmp_path):
    # whole crops without augmentation: no random windows, so both pipelines give identical batches
    train_set = SRPatchDataset(noise_images(5), patch=None, augment=False)
    out = {}
    for fast in (False, True):
        recipe = small_recipe(patch=None, fast=fast, ema_half_life=0.25, amp=None)   # float32: exact comparison
        out[fast] = fit(tiny_model(), train_set, val_sets(), make_loss("l1+fft", 0.5), recipe, tmp_path / str(fast),
                        metrics={"mae": mae}, progress=False)
    assert out[True]["execution"]["data_pipeline"] == "device" and out[True]["execution"]["channels_last"]
    assert out[False]["execution"]["data_pipeline"] == "DataLoader"
    for a, b in zip(out[False]["history"], out[True]["history"]):
        assert a["steps"] == b["steps"]
        if a["train_loss"] is not None:
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val"]["all"]["mae"] == pytest.approx(b["val"]["all"]["mae"], rel=1e-5)
    wa = torch.load(tmp_path / "False" / "state.pt", weights_only=True)["model"]
    wb = torch.load(tmp_path / "True" / "state.pt", weights_only=True)["model"]
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)
    meta = json.loads((tmp_path / "True" / "best" / "thermsr.json").read_text())
    assert meta["execution"]["data_pipeline"] == "device" and meta["execution"]["amp"] is None


@pytest.mark.gpu
def test_on_cuda_fit_trains_in_bf16_on_the_device_pipeline_close_to_the_cpu(tmp_path):
    train_set = SRPatchDataset(noise_images(5), patch=None, augment=False)
    out = {}
    for device in ("cpu", "cuda"):
        recipe = small_recipe(patch=None, fast=True, amp="auto", ema_half_life=0.25)
        out[device] = fit(tiny_model(), train_set, val_sets(), make_loss("l1"), recipe, tmp_path / device,
                          metrics={"mae": mae}, device=device, progress=False)
    ex = out["cuda"]["execution"]
    assert (ex["amp"], ex["data_pipeline"], ex["channels_last"]) == ("bf16", "device", True)
    assert out["cpu"]["execution"]["amp"] == ("bf16" if accel.cpu_has_native_bf16() else None)
    for a, b in zip(out["cpu"]["history"], out["cuda"]["history"]):    # bf16 steps: close, not equal
        assert a["val"]["all"]["mae"] == pytest.approx(b["val"]["all"]["mae"], rel=0.05)


class Interrupt(Exception):
    pass


def stops_after(calls):
    """The L1 loss that raises Interrupt on call number ``calls + 1`` (a killed process)."""
    loss, n = make_loss("l1"), [0]

    def fn(sr, hr):
        n[0] += 1
        if n[0] > calls:
            raise Interrupt
        return loss(sr, hr)

    return fn


def test_fast_path_resumes_exactly_and_refuses_a_pipeline_switch(tmp_path):
    train_set = SRPatchDataset(noise_images(4, size=32), patch=16, augment=True, seed=2)
    kw = dict(metrics={"mae": mae}, progress=False)
    recipe = small_recipe(epochs=3, fast=True)                               # 2 steps per epoch
    fit(tiny_model(), train_set, val_sets(), make_loss("l1"), recipe, tmp_path / "straight", **kw)
    with pytest.raises(Interrupt):
        fit(tiny_model(), train_set, val_sets(), stops_after(3), recipe, tmp_path / "cut", **kw)
    assert checkpoint.load_state(tmp_path / "cut" / "state.pt")["execution"]["data_pipeline"] == "device"
    with pytest.raises(ValueError, match="DataLoader pipeline"):
        fit(tiny_model(), train_set, val_sets(), make_loss("l1"), dataclasses.replace(recipe, fast=False),
            tmp_path / "cut", resume=True, **kw)
    fit(tiny_model(1), train_set, val_sets(), make_loss("l1"), recipe, tmp_path / "cut", resume=True, **kw)
    a = checkpoint.load_state(tmp_path / "straight" / "state.pt")
    b = checkpoint.load_state(tmp_path / "cut" / "state.pt")
    assert a["epoch"] == b["epoch"] == 3
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]


def test_fast_true_refuses_a_set_it_cannot_serve_and_auto_falls_back(tmp_path):
    mixed = SRPatchDataset([np.zeros((32, 32, 3), np.uint8), np.zeros((36, 36, 3), np.uint8)], patch=16)
    with pytest.raises(ValueError, match="differ in size"):
        fit(tiny_model(), mixed, val_sets(), make_loss("l1"), small_recipe(fast=True), tmp_path, metrics={"mae": mae},
            progress=False)
    out = fit(tiny_model(), mixed, val_sets(), make_loss("l1"), small_recipe(epochs=1), tmp_path, metrics={"mae": mae},
              progress=False)
    amp = accel.resolve_amp("auto", "cpu")             # "auto": bf16 on a CPU with native bf16, else float32
    assert out["execution"]["data_pipeline"] == "DataLoader" and out["execution"]["amp"] == amp
    assert out["execution"]["channels_last"] is (amp == "bf16")


def test_compile_flag_compiles_the_training_model(tmp_path, monkeypatch):
    compiled = []

    def fake_compile(module, *args, **kwargs):
        compiled.append(module)
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    model = tiny_model()
    out = fit(model, SRPatchDataset(noise_images(2), patch=16), val_sets(), make_loss("l1"),
              small_recipe(epochs=1, compile=True), tmp_path, metrics={"mae": mae}, progress=False)
    assert compiled == [model] and out["execution"]["compile"] is True
    before = checkpoint.load_state(tmp_path / "state.pt")
    fit(tiny_model(), SRPatchDataset(noise_images(2), patch=16), val_sets(), make_loss("l1"),
        small_recipe(epochs=1), tmp_path, metrics={"mae": mae}, progress=False, resume=True)   # compile may change
    assert checkpoint.load_state(tmp_path / "state.pt")["epoch"] == before["epoch"]


# ------------------------------------------------------------------------------ fast evaluation
class CountingLocator:
    """A deterministic fake nose locator: the brightest pixel; counts the images it was given."""

    name = "counting"

    def __init__(self):
        self.images = 0

    def locate(self, images_bgr):
        self.images += len(images_bgr)
        flat = images_bgr.sum(axis=3).reshape(len(images_bgr), -1).argmax(axis=1)
        w = images_bgr.shape[2]
        xy = np.stack([flat % w, flat // w], axis=1).astype(float)
        found = images_bgr.max(axis=(1, 2, 3)) > 0
        xy[~found] = np.nan
        return xy, found


def crops_on_disk(folder, n=5, size=32):
    from thermsr_utils.io import write_png

    recs = []
    for i, img in enumerate(noise_images(n, size, seed=11)):
        if i == 3:
            img[:] = 0                                                       # the locator finds nothing here
        rel = f"test/{'sftl54' if i % 2 else 'thermeval'}/c{i}.png"
        write_png(folder / rel, img)
        recs.append({"id": f"c{i}", "dataset": "sftl54" if i % 2 else "thermeval", "path": rel,
                     "nose": [float(i), 2.0] if i != 2 else None})
    return recs


def per_image_rows(name, sr_fn, crops_dir, recs, locator):
    """The same rows computed one crop at a time with cv2's INTER_AREA and no cache (the reference)."""
    rows = []
    for r in recs:
        scorer = evaluate.Scorer(locator=locator)
        hr = evaluate.load_crops(crops_dir, [r])
        sr = sr_fn(np.stack([data.make_lr(hr[0])]))
        gt = np.array([r["nose"] if r.get("nose") is not None else [np.nan, np.nan]], float) - 0.5  # pixel centres
        s = scorer.score([r["id"]], sr, hr, gt)
        rows.append({"id": r["id"], "dataset": r["dataset"], "subject": r.get("subject"), "source": r.get("source"),
                     "palette": "gray", "method": name,
                     **{k: (bool(v[0]) if v.dtype == bool else float(v[0])) for k, v in s.items()}})
    return rows


def rows_equal(a, b, rel=0.0):
    assert [r["id"] for r in a] == [r["id"] for r in b]
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            if isinstance(x[k], float) and np.isnan(x[k]):
                assert np.isnan(y[k]), k
            elif isinstance(x[k], float) and rel:
                assert x[k] == pytest.approx(y[k], rel=rel, abs=1e-9), (x["id"], k, x[k], y[k])
            else:
                assert x[k] == y[k], (x["id"], k, x[k], y[k])


def test_batched_evaluation_equals_the_per_image_reference(tmp_path):
    recs = crops_on_disk(tmp_path)
    model = tiny_model().eval()
    # bicubic is exact; a model run on a batch of 2 instead of 1 may differ in the last float bits
    for name, sr_fn, rel in (("bicubic", evaluate.bicubic_method(), 0.0),
                             ("tiny", evaluate.model_method(model, 2), 1e-6)):
        locator = CountingLocator()
        fast = evaluate.evaluate_method(name, sr_fn, tmp_path, recs, evaluate.Scorer(locator=locator), batch_size=2,
                                        progress=False)
        rows_equal(fast, per_image_rows(name, sr_fn, tmp_path, recs, CountingLocator()), rel)
        assert [r["nose_hr_found"] for r in fast] == [True, True, True, False, True]
    assert np.isnan(fast[2]["nose_gt_err_hr"]) and not np.isnan(fast[0]["nose_gt_err_hr"])


def test_hr_noses_are_located_once_per_scorer(tmp_path):
    recs = crops_on_disk(tmp_path)
    locator = CountingLocator()
    scorer = evaluate.Scorer(locator=locator)
    first = evaluate.evaluate_method("a", evaluate.bicubic_method(), tmp_path, recs, scorer, batch_size=3, progress=False)
    assert locator.images == 9          # 5 HR + 5 SR, less the black crop whose SR is the same black image
    model = tiny_model().eval()
    evaluate.evaluate_method("b", evaluate.model_method(model, 4), tmp_path, recs, scorer, batch_size=3, progress=False)
    assert locator.images == 14                                               # HR answers came from the cache
    again = evaluate.evaluate_method("a", evaluate.bicubic_method(), tmp_path, recs, scorer, batch_size=3,
                                     progress=False)
    assert locator.images == 14
    rows_equal(first, again)


def test_several_methods_scored_together_equal_each_scored_alone(tmp_path):
    recs = crops_on_disk(tmp_path)
    model = tiny_model().eval()
    methods = {"bicubic": evaluate.bicubic_method(), "tiny": evaluate.model_method(model, 3)}
    together = evaluate.evaluate_methods(methods, tmp_path, recs, evaluate.Scorer(locator=CountingLocator()),
                                         batch_size=3, progress=False)
    assert list(together) == ["bicubic", "tiny"]
    for name, sr_fn in methods.items():
        alone = evaluate.evaluate_method(name, sr_fn, tmp_path, recs, evaluate.Scorer(locator=CountingLocator()),
                                         batch_size=3, progress=False)
        assert [r["method"] for r in together[name]] == [name] * len(recs)
        rows_equal(together[name], alone)
    assert together["bicubic"][0]["psnr"] != together["tiny"][0]["psnr"]


def test_cached_locator_checks_the_wrapped_output():
    class Broken:
        name = "broken"

        def locate(self, images):
            return np.zeros((1, 2)), np.ones(1, bool)

    with pytest.raises(ValueError, match="broken"):
        evaluate.CachedLocator(Broken()).locate(np.arange(96, dtype=np.uint8).reshape(2, 4, 4, 3))


def test_evaluation_read_errors_name_the_file(tmp_path):
    recs = crops_on_disk(tmp_path, n=3)
    (tmp_path / recs[2]["path"]).write_bytes(b"not a png")
    with pytest.raises(ValueError, match="c2.png"):
        evaluate.evaluate_method("a", evaluate.bicubic_method(), tmp_path, recs, evaluate.Scorer(), batch_size=2,
                                 progress=False)
