"""Tests of thermsr_utils.models on tiny PAN configs (no network, no downloaded weights)."""
from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
import torch
import torch.nn as nn

import super_image
from thermsr_utils import io
from thermsr_utils import models as M
from thermsr_utils.data import make_lr

TINY = {"nf": 8, "unf": 8, "nb": 1}


@pytest.fixture(autouse=True)
def isolated_hf_cache(tmp_path, monkeypatch):
    """Every test sees an empty, offline Hugging Face cache of its own."""
    cache = tmp_path / "hf_home" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def tiny_pan(seed: int = 0, scale: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    return super_image.PanModel(super_image.PanConfig(scale=scale, **TINY)).eval()


def lr_batch(n: int = 2, size: int = 8, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def fake_hub_entry(cache, hub_id: str, model: nn.Module, sha: str = "0" * 39 + "1"):
    """Write ``model`` into the cache layout huggingface_hub uses (refs/main -> snapshots/<sha>/)."""
    repo = cache / ("models--" + hub_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)
    model.save_pretrained(repo / "snapshots" / sha)
    return repo / "snapshots" / sha


# ---------------------------------------------------------------------------------------------
# Registry and random weights
# ---------------------------------------------------------------------------------------------
def test_registry_names_and_hub_ids():
    for name, hub in [("drln", "eugenesiow/drln-bam"), ("a2n", "eugenesiow/a2n"), ("edsr-base", "eugenesiow/edsr-base"),
                      ("msrn", "eugenesiow/msrn"), ("pan", "eugenesiow/pan")]:
        assert M.ARCHITECTURES[name].hub_id == hub
    assert M.ARCHITECTURES["drln"].config_kwargs == {"bam": True}
    small = M.count_params(M.new_model("pan-small"))
    assert M.count_params(M.new_model("pan-tiny")) < small < M.count_params(M.new_model("pan"))


def test_random_source_tiny_model_shapes_and_info():
    model, info = M.load_model("pan-tiny", scale=4, source="random")
    assert info["source"] == "random" and info["architecture"] == "pan-tiny" and info["model_type"] == "PAN"
    assert info["n_params"] == sum(p.numel() for p in model.parameters()) > 0
    assert info["config"]["nf"] == 8 and info["scale"] == 4
    assert not model.training
    assert model(lr_batch(1, 6)).shape == (1, 3, 24, 24)
    json.dumps(info)  # result files must be able to carry it


@pytest.mark.parametrize("scale", [2, 3])
def test_random_source_other_scales(scale):
    model, info = M.load_model("pan-tiny", scale=scale, source="random")
    assert model(lr_batch(1, 5)).shape == (1, 3, 5 * scale, 5 * scale)
    assert info["config"]["scale"] == scale


def test_bad_scale_and_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match=r"x2, x3, x4"):
        M.load_model("pan-tiny", scale=8, source="random")
    with pytest.raises(ValueError, match="scale"):
        M.standin_path(tmp_path, "pan-tiny", scale=1)
    with pytest.raises(ValueError, match="unknown source"):
        M.load_model("pan-tiny", source="internet")
    with pytest.raises(ValueError, match="unknown model 'no-such-net'"):
        M.load_model("no-such-net", source="random")
    with pytest.raises(ValueError, match="unknown architecture"):
        M.standin_path(tmp_path, "no-such-net")


# ---------------------------------------------------------------------------------------------
# Local directories written by save_pretrained
# ---------------------------------------------------------------------------------------------
def test_save_pretrained_round_trip_identical_outputs(tmp_path):
    model = tiny_pan(seed=3)
    model.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "pytorch_model_4x.pt"]
    loaded, info = M.load_model(tmp_path / "ckpt")
    assert info["source"] == "local" and info["weights"] == "ckpt" and info["model_type"] == "PAN"
    assert len(info["weights_sha256"]) == 64
    x = lr_batch()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
        assert not torch.equal(tiny_pan(seed=4)(x), model(x))  # a different model would be told apart


def test_save_model_loads_with_super_image_from_pretrained(tmp_path, capsys):
    model = tiny_pan(seed=5)
    out = M.save_model(model, tmp_path / "ft", extra_json={"run.json": {"note": "x"}})
    assert json.loads((out / "run.json").read_text()) == {"note": "x"}
    again = super_image.PanModel.from_pretrained(str(out), scale=4)
    x = lr_batch()
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
    # overwriting keeps one folder and leaves no temporary folders behind
    M.save_model(tiny_pan(seed=6), out)
    assert [p.name for p in tmp_path.iterdir()] == ["ft"]
    assert not (out / "run.json").exists()


def test_local_dir_missing_files_lists_contents(tmp_path):
    tiny_pan().save_pretrained(tmp_path / "ckpt")
    listing = r"pytorch_model_3x\.pt.*holds: config\.json, pytorch_model_4x\.pt"
    with pytest.raises(M.WeightsNotFoundError, match=listing):
        M.load_model(tmp_path / "ckpt", scale=3)
    (tmp_path / "ckpt" / "config.json").unlink()
    with pytest.raises(M.WeightsNotFoundError, match=r"lacks config\.json"):
        M.load_model(tmp_path / "ckpt", source="local")
    with pytest.raises(M.WeightsNotFoundError, match="not found"):
        M.load_model(tmp_path / "absent", source="local")


def test_strict_loading_rejects_missing_keys(tmp_path):
    model = tiny_pan()
    model.save_pretrained(tmp_path / "ckpt")
    sd = model.state_dict()
    sd.pop("conv_last.weight")
    torch.save(sd, tmp_path / "ckpt" / "pytorch_model_4x.pt")
    with pytest.raises(ValueError, match=r"(?s)do not fit.*conv_last\.weight"):
        M.load_model(tmp_path / "ckpt")


def test_data_parallel_prefix_is_accepted(tmp_path):
    model = tiny_pan(seed=2)
    model.save_pretrained(tmp_path / "ckpt")
    torch.save({"module." + k: v for k, v in model.state_dict().items()}, tmp_path / "ckpt" / "pytorch_model_4x.pt")
    loaded, _ = M.load_model(tmp_path / "ckpt")
    x = lr_batch()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


class _Payload:
    """Unpickling this runs os.mkdir(path): a stand-in for arbitrary code in a crafted checkpoint."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_crafted_pickle_is_refused_without_running_code(tmp_path):
    ckpt = tmp_path / "ckpt"
    tiny_pan().save_pretrained(ckpt)
    # the payload is real: an unsafe load of an identical file does run it
    probe_marker = tmp_path / "probe_ran"
    torch.save({"w": _Payload(probe_marker)}, tmp_path / "probe.pt")
    torch.load(tmp_path / "probe.pt", weights_only=False)
    assert probe_marker.is_dir()

    marker = tmp_path / "payload_ran"
    torch.save({"conv_first.weight": _Payload(marker)}, ckpt / "pytorch_model_4x.pt")
    with pytest.raises(io.UnsafeCheckpointError, match="refusing to load"):
        M.load_model(ckpt)
    assert not marker.exists()


def test_non_state_dict_and_corrupt_files(tmp_path):
    ckpt = tmp_path / "ckpt"
    tiny_pan().save_pretrained(ckpt)
    torch.save([torch.zeros(1)], ckpt / "pytorch_model_4x.pt")
    with pytest.raises(io.UnsafeCheckpointError, match="not a state dict"):
        M.load_model(ckpt)
    (ckpt / "pytorch_model_4x.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="cannot read weights file"):
        M.load_model(ckpt)


def tiny_edsr(seed: int = 0) -> nn.Module:
    """EDSR at 4 features and 1 residual block (its MeanShift layers assign CPU tensors in __init__)."""
    torch.manual_seed(seed)
    return super_image.EdsrModel(super_image.EdsrConfig(scale=4, n_feats=4, n_resblocks=1)).eval()


def edit_config(ckpt, **fields):
    """Overwrite ``fields`` in ``ckpt``/config.json."""
    cfg = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**cfg, **fields}))


@pytest.fixture
def constructions(monkeypatch):
    """(seen, real_allowed): ``seen`` lists the devices (``torch.get_default_device().type``) on which EdsrModel and
    PanModel get constructed; a construction off the meta device while ``real_allowed[0]`` is False fails at once,
    before it allocates anything."""
    seen, real_allowed = [], [True]
    for cls in (super_image.EdsrModel, super_image.PanModel):
        def spy(self, config, _init=cls.__init__):
            seen.append(torch.get_default_device().type)
            assert real_allowed[0] or seen[-1] == "meta", "the network was built on a real device"
            _init(self, config)
        monkeypatch.setattr(cls, "__init__", spy)
    return seen, real_allowed


@pytest.mark.parametrize("make, field, value", [
    (tiny_edsr, "n_feats", -4), (tiny_edsr, "n_resblocks", -1), (tiny_edsr, "n_feats", 3.5),
    (tiny_edsr, "n_colors", True), (tiny_pan, "nf", -4), (tiny_pan, "nb", 0), (tiny_pan, "unf", None),
    (tiny_pan, "scale", 0), (tiny_edsr, "scale", 8)])
def test_nonsense_config_size_is_a_clear_error(tmp_path, constructions, make, field, value):
    ckpt = tmp_path / "ckpt"
    make().save_pretrained(ckpt)
    edit_config(ckpt, **{field: value})
    constructions[0].clear()
    with pytest.raises(ValueError) as err:
        M.load_model(ckpt)
    msg = str(err.value)
    assert type(err.value) is ValueError and str(ckpt / "config.json") in msg
    assert f"field '{field}' is {value!r}" in msg and "re-save the model with save_pretrained" in msg
    assert constructions[0] == []  # refused before any network was built
    assert err.value.__context__ is None  # raised directly, with no torch error behind it


def test_huge_config_size_is_refused_before_building(tmp_path, constructions):
    ckpt = tmp_path / "ckpt"
    tiny_edsr().save_pretrained(ckpt)
    edit_config(ckpt, n_feats=100000)
    constructions[0].clear()
    constructions[1][0] = False
    with pytest.raises(ValueError, match=rf"field 'n_feats' is 100000, but EDSR sizes must be integers from 1 to "
                                         rf"{M.MAX_CONFIG_SIZE}"):
        M.load_model(ckpt)
    assert constructions[0] == []


@pytest.mark.parametrize("make, fields, diff", [
    (tiny_pan, {"nf": 4096}, r"tensor 'conv_first\.weight' is \(8, 3, 3, 3\) in the weights but \(4096, 3, 3, 3\) "
                             r"in the model"),
    (tiny_pan, {"nb": 3}, r"the weights lack tensor 'SCPA_trunk\.1\.conv1_a\.weight' of shape \(4, 8, 1, 1\)"),
    (tiny_edsr, {"n_feats": 2000, "n_resblocks": 4000}, r"tensor 'head\.0\.weight' is \(4, 3, 3, 3\) in the weights "
                                                         r"but \(2000, 3, 3, 3\)"),
    (tiny_edsr, {"n_colors": 1}, r"tensor 'head\.0\.weight' is \(4, 3, 3, 3\) in the weights but \(4, 1, 3, 3\)")])
def test_config_that_does_not_fit_the_weights_is_refused_on_the_meta_device(tmp_path, constructions, make, fields,
                                                                             diff):
    ckpt = tmp_path / "ckpt"
    make().save_pretrained(ckpt)
    edit_config(ckpt, **fields)
    constructions[0].clear()
    constructions[1][0] = False
    with pytest.raises(ValueError) as err:
        M.load_model(ckpt)
    msg = str(err.value)
    assert type(err.value) is ValueError
    assert msg.startswith(f"weights in {ckpt / 'pytorch_model_4x.pt'} do not fit the model built from "
                          f"{ckpt / 'config.json'}: ")
    assert re.search(diff, msg) and msg.endswith("re-save the model with save_pretrained or fix config.json")
    assert constructions[0] == ["meta"]


def test_extra_tensor_in_weights_is_named(tmp_path):
    ckpt = tmp_path / "ckpt"
    model = tiny_pan()
    model.save_pretrained(ckpt)
    torch.save({**model.state_dict(), "stray.weight": torch.zeros(2, 5)}, ckpt / "pytorch_model_4x.pt")
    with pytest.raises(ValueError, match=r"the weights hold tensor 'stray\.weight' of shape \(2, 5\), which the "
                                         r"model lacks"):
        M.load_model(ckpt)


def test_config_super_image_cannot_build_is_a_clear_error(tmp_path):
    ckpt = tmp_path / "ckpt"
    torch.manual_seed(0)
    super_image.MsrnModel(super_image.MsrnConfig(scale=4, n_blocks=1, n_feats=4)).save_pretrained(ckpt)
    edit_config(ckpt, rgb_mean=[0.5, 0.5])
    with pytest.raises(ValueError, match=r"config\.json: super-image cannot build a MsrnModel from it \(RuntimeError: "
                                         r".*fix config\.json") as err:
        M.load_model(ckpt)
    assert type(err.value) is ValueError


@pytest.mark.parametrize("make", [tiny_edsr, tiny_pan])
def test_config_that_fits_still_loads_identically(tmp_path, constructions, make):
    model = make(seed=7)
    out = M.save_model(model, tmp_path / "ft")
    constructions[0].clear()
    loaded, info = M.load_model(out)
    assert constructions[0] == ["meta", "cpu"]  # checked on the meta device, then built for real
    assert all(p.device.type == "cpu" for p in loaded.state_dict().values())
    assert info["source"] == "local" and info["config"] == M._config_dict(model.config)
    x = lr_batch()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


# ---------------------------------------------------------------------------------------------
# Hub cache and the auto order
# ---------------------------------------------------------------------------------------------
def test_auto_with_nothing_available_raises_clear_error(tmp_path, isolated_hf_cache):
    with pytest.raises(M.WeightsNotFoundError) as err:
        M.load_model("drln", standin_dir=tmp_path / "standins")
    msg = str(err.value)
    for part in ("eugenesiow/drln-bam", "not in the Hugging Face cache", str(isolated_hf_cache),
                 "build_standin", "source='random'", "drln-x4"):
        assert part in msg
    with pytest.raises(M.WeightsNotFoundError, match="HF_HUB_OFFLINE"):
        M.load_model("drln", source="hub")
    with pytest.raises(M.WeightsNotFoundError, match="no hub weights"):
        M.load_model("pan-tiny")


def test_fake_hub_cache_entry_is_used(isolated_hf_cache):
    model = tiny_pan(seed=7)
    fake_hub_entry(isolated_hf_cache, "eugenesiow/pan", model, sha="a" * 40)
    assert M.cached_hub_files("eugenesiow/pan", 4) is not None
    assert M.cached_hub_files("eugenesiow/pan", 2) is None
    x = lr_batch()
    for spec, source in [("pan", "auto"), ("eugenesiow/pan", "auto"), ("pan", "hub")]:
        loaded, info = M.load_model(spec, source=source)
        assert info["source"] == "hub" and info["weights"] == "eugenesiow/pan" and info["revision"] == "a" * 40
        assert info["architecture"] == "pan" and info["config"]["nf"] == 8
        with torch.no_grad():
            assert torch.equal(loaded(x), model(x))


def test_auto_prefers_hub_over_standin_and_falls_back_to_standin(tmp_path, isolated_hf_cache):
    standins = tmp_path / "standins"
    M.save_model(tiny_pan(seed=8), M.standin_path(standins, "pan"), extra_json={"standin.json": {"arch": "pan"}})
    _, info = M.load_model("pan", standin_dir=standins)
    assert info["source"] == "standin"
    fake_hub_entry(isolated_hf_cache, "eugenesiow/pan", tiny_pan(seed=9))
    _, info = M.load_model("pan", standin_dir=standins)
    assert info["source"] == "hub"


# ---------------------------------------------------------------------------------------------
# Stand-in pretraining
# ---------------------------------------------------------------------------------------------
def test_build_standin_writes_folder_and_is_deterministic(tmp_path):
    kw = dict(steps=3, batch=2, patch=16, progress=False)
    a = M.build_standin("pan-tiny", M.standin_path(tmp_path / "a", "pan-tiny"), seed=0, **kw)
    b = M.build_standin("pan-tiny", M.standin_path(tmp_path / "b", "pan-tiny"), seed=0, **kw)
    c = M.build_standin("pan-tiny", M.standin_path(tmp_path / "c", "pan-tiny"), seed=1, **kw)
    folder = M.standin_path(tmp_path / "a", "pan-tiny")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "pytorch_model_4x.pt", "standin.json"]
    assert [p.name for p in folder.parent.iterdir()] == ["pan-tiny-x4"]  # no temporary folder left
    on_disk = json.loads((folder / "standin.json").read_text())
    assert on_disk["steps"] == 3 and on_disk["train_images"] == list(M.STANDIN_TRAIN_IMAGES)
    assert M.STANDIN_HOLDOUT_IMAGE not in on_disk["train_images"]
    assert np.isfinite(on_disk["final_train_l1"]) and on_disk["holdout_psnr_bicubic"] > 20
    strip = lambda d: {k: v for k, v in d.items() if k != "train_seconds"}  # noqa: E731
    assert strip(a) == strip(b) and a["final_train_l1"] != c["final_train_l1"]
    sd = lambda name: torch.load(M.standin_path(tmp_path / name, "pan-tiny") / "pytorch_model_4x.pt",  # noqa: E731
                                 weights_only=True)
    sa, sb, sc = sd("a"), sd("b"), sd("c")
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    model, info = M.load_model("pan-tiny", source="standin", standin_dir=tmp_path / "a")
    assert info["source"] == "standin" and info["standin"]["seed"] == 0
    _, info_dir = M.load_model(folder)
    assert info_dir["source"] == "standin"  # a stand-in stays labelled as one when loaded by path


def test_build_standin_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="multiple of scale"):
        M.build_standin("pan-tiny", tmp_path / "x", patch=18, steps=1, progress=False)
    with pytest.raises(ValueError, match="unknown architecture"):
        M.build_standin("no-such-net", tmp_path / "x", steps=1, progress=False)
    assert not (tmp_path / "x").exists()


def test_skimage_photos_load_offline_as_bgr():
    for name in M.STANDIN_TRAIN_IMAGES + (M.STANDIN_HOLDOUT_IMAGE,):
        img = M.skimage_photo(name)
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    import skimage.data

    assert np.array_equal(M.skimage_photo("astronaut")[..., 0], skimage.data.astronaut()[..., 2])
    with pytest.raises(ValueError, match="no sample image"):
        M.skimage_photo("not_an_image")


# ---------------------------------------------------------------------------------------------
# Inference and bicubic
# ---------------------------------------------------------------------------------------------
def test_upscale_shapes_and_batching_equivalence():
    model = tiny_pan(seed=11)
    x = lr_batch(5, 7)
    one = M.upscale(model, x, batch_size=1)
    four = M.upscale(model, x, batch_size=4)
    assert one.shape == (5, 3, 28, 28) and one.dtype == torch.float32
    torch.testing.assert_close(one, four, rtol=0, atol=1e-6)
    torch.testing.assert_close(M.upscale(model, x[2]), one[2], rtol=0, atol=1e-6)
    assert not one.requires_grad


class _Times3(nn.Module):
    """Nearest ×2 upsampling times 3: outputs leave [0, 1]."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(3.0))

    def forward(self, x):
        return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest") * self.w


def test_upscale_does_not_clamp_and_restores_training_mode():
    model = _Times3().train()
    out = M.upscale(model, torch.full((2, 3, 3, 3), 0.5), batch_size=1)
    assert out.shape == (2, 3, 6, 6) and torch.allclose(out, torch.full_like(out, 1.5))
    assert model.training
    with pytest.raises(ValueError, match="N×3×H×W"):
        M.upscale(model, torch.zeros(2, 1, 4, 4))


class _NearestX4(nn.Module):
    """A 1×1 conv (channel mixing) then nearest ×4 upsampling: exactly equivariant to flips and 90° turns."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.mix = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        return torch.nn.functional.interpolate(self.mix(x), scale_factor=4, mode="nearest")


class _Counting(nn.Module):
    """``inner``, counting the images it is given and the batches they came in."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.images, self.batches = inner, 0, []

    def forward(self, x):
        self.images += x.shape[0]
        self.batches.append(tuple(x.shape))
        return self.inner(x)


def _hand_written_self_ensemble(model, x):
    """The x8 self-ensemble written out: every flip × 90° turn of ``x``, the model, the turn and flip undone, mean."""
    outs = []
    with torch.no_grad():
        for flip in (False, True):
            for k in range(4):
                v = torch.rot90(torch.flip(x, dims=[-1]) if flip else x, k, dims=[-2, -1])
                y = torch.rot90(model(v), -k, dims=[-2, -1])
                outs.append(torch.flip(y, dims=[-1]) if flip else y)
    return torch.stack(outs).mean(0)


@pytest.mark.parametrize("shape", [(2, 3, 6, 6), (2, 3, 5, 9)])
def test_self_ensemble_of_an_equivariant_model_is_the_model(shape):
    model = _NearestX4().eval()
    x = torch.rand(shape, generator=torch.Generator().manual_seed(4))
    plain = M.upscale(model, x, batch_size=3)
    tta = M.upscale(model, x, batch_size=3, self_ensemble=True)
    assert tta.shape == plain.shape == (2, 3, 4 * shape[2], 4 * shape[3])
    torch.testing.assert_close(tta, plain, rtol=0, atol=1e-6)


def test_self_ensemble_is_the_mean_over_the_eight_flips_and_turns():
    model = tiny_pan(seed=12)
    x = torch.rand(3, 3, 10, 14, generator=torch.Generator().manual_seed(5))           # not square: turns swap H, W
    expected = _hand_written_self_ensemble(model, x)
    for batch_size in (1, 3, 8, 16):                                                      # chunks of 1 or 2 images
        tta = M.upscale(model, x, batch_size=batch_size, self_ensemble=True)
        assert tta.shape == (3, 3, 40, 56) and tta.dtype == torch.float32
        torch.testing.assert_close(tta, expected, rtol=0, atol=1e-5)
    single = M.upscale(model, x[1], self_ensemble=True)
    assert single.shape == (3, 40, 56)
    torch.testing.assert_close(single, expected[1], rtol=0, atol=1e-5)
    plain = M.upscale(model, x)
    assert (tta - plain).abs().max() > 1e-3, "a 3×3-conv model is not equivariant: the ensemble must differ"
    square = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(M.upscale(model, square, batch_size=8, self_ensemble=True),
                               _hand_written_self_ensemble(model, square), rtol=0, atol=1e-5)


def test_self_ensemble_takes_eight_passes_per_image_in_batches_of_at_most_batch_size():
    counting = _Counting(tiny_pan(seed=13))
    M.upscale(counting, torch.rand(3, 3, 6, 10), batch_size=8, self_ensemble=True)
    assert counting.images == 3 * 8
    assert max(b[0] for b in counting.batches) <= 8
    assert {b[2:] for b in counting.batches} == {(6, 10), (10, 6)}
    counting.images = 0
    M.upscale(counting, torch.rand(2, 3, 6, 6), batch_size=1, self_ensemble=True)
    assert counting.images == 2 * 8


def test_without_self_ensemble_upscale_is_the_plain_forward_pass_bit_for_bit():
    model = tiny_pan(seed=14)
    x = lr_batch(4, 9, seed=7)
    with torch.no_grad():
        plain = torch.cat([model(x[0:2]), model(x[2:4])])
    assert torch.equal(M.upscale(model, x, batch_size=2), plain)
    assert torch.equal(M.upscale(model, x, batch_size=2, self_ensemble=False), plain)


def test_model_method_passes_self_ensemble_through():
    from thermsr_utils import data, evaluate

    model = tiny_pan(seed=15)
    lr = np.random.default_rng(8).integers(0, 256, (2, 7, 11, 3), dtype=np.uint8)
    x = data.bgr_to_tensor(lr)
    assert torch.equal(evaluate.model_method(model, 2)(lr), M.upscale(model, x, batch_size=2))
    assert torch.equal(evaluate.model_method(model, 2, self_ensemble=True)(lr),
                       M.upscale(model, x, batch_size=2, self_ensemble=True))


def test_bicubic_baseline():
    flat = np.full((6, 5, 3), 77, np.uint8)
    up = M.bicubic(flat, 4)
    assert up.shape == (24, 20, 3) and up.dtype == np.uint8 and np.all(up == 77)
    rng = np.random.default_rng(0)
    smooth = np.clip(np.cumsum(rng.integers(-2, 3, (16, 16, 3)), axis=1) + 128, 0, 255).astype(np.uint8)
    back = make_lr(M.bicubic(smooth, 4), 4).astype(int)
    assert np.abs(back - smooth.astype(int)).mean() < 2.0
    with pytest.raises(ValueError, match="uint8"):
        M.bicubic(flat.astype(np.float32))


def test_no_leftovers_from_failed_save(tmp_path):
    class Broken(nn.Module):
        def save_pretrained(self, path):
            (path / "partial.bin").write_bytes(b"x")
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        M.save_model(Broken(), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("spec", ["srresnet", "dat-light", "drln", "pan-tiny", "eugenesiow/drln-bam"])
def test_x8_is_refused_in_one_sentence_naming_who_offers_it(spec):
    """Only waifu2x-photo (its ×2 network three times) and bicubic offer ×8; the refusal comes before any loading."""
    with pytest.raises(ValueError) as e:
        M.load_model(spec, 8, source="random" if spec == "pan-tiny" else "auto")
    msg = str(e.value)
    assert "×8 is offered by waifu2x-photo (waifu2x-photo ×2 applied three times) and bicubic" in msg
    assert msg.count(".") == 0 and "\n" not in msg
    assert ("cannot upscale ×8" in msg) if spec in ("srresnet", "dat-light") else ("x2, x3, x4" in msg)


def test_check_scale_per_model():
    assert M.check_scale(8, "waifu2x-photo") == 8 and M.check_scale(2, "waifu2x-photo") == 2
    assert M.check_scale(4, "srresnet") == 4 and M.check_scale(3, "pan") == 3
    with pytest.raises(ValueError, match="x2, x3, x4"):
        M.check_scale(8)                          # super-image (and its file names) stay at 2, 3, 4
    with pytest.raises(ValueError, match="x2, x3, x4"):
        M.weights_name(8)
    with pytest.raises(ValueError, match=r"×3 is offered by the super-image models and bicubic"):
        M.check_scale(3, "waifu2x-photo")
    assert M.zoo.offered_by(8) == ["waifu2x-photo", "bicubic"] and M.zoo.offered_by(5) == ["bicubic"]
