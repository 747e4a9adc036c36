"""Downstream metric: how far a nose keypoint moves between an HR crop and its SR version.

Two nose locators share one interface (``NoseLocator``): ``locate(images_bgr)`` takes uint8 BGR images
N×H×W×3 and returns ``(xy, found)``: N×2 float pixel coordinates (x right, y down, pixel centres at
integer coordinates; NaN where not found) and an N-element bool array.

- ``RtmlibNose``: the write-up's model, rtmlib ``Wholebody`` (a YOLOX person detector and an RTMW pose
  model, run with onnxruntime). Keypoint 0 (body nose) of the first detected person. It only reads
  local ONNX files and never downloads them.
- ``HeatmapNoseLocator``: the offline stand-in, a small CNN (``HeatmapNose``) that predicts a heatmap at
  1/4 resolution, decoded by soft-argmax. Trained on HR training crops and their ground-truth nose points;
  differentiable, so it can also serve as a loss.

``nose_errors`` measures the SR-vs-HR distance per image and ``summarize_nose`` aggregates it. The
write-up averaged over crops where both detections succeeded and did not report the others; here the
failures are counted and reported beside the median and mean.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import urlparse

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import data
from .io import atomic_path, atomic_write_json, read_image, read_json

HEATMAP_NAME = "heatmap-locator (stand-in)"
STRIDE = 4  # heatmap cell size in input pixels


@runtime_checkable
class NoseLocator(Protocol):
    """Anything that finds one nose point per image; ``name`` is recorded with every result."""

    name: str

    def locate(self, images_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 BGR N×H×W×3 → (N×2 float64 xy in pixels, NaN where not found; N bool found)."""
        ...


def check_images(images_bgr, name: str = "images_bgr", multiple: int = 1) -> np.ndarray:
    """Return ``images_bgr`` if it is a uint8 N×H×W×3 array (H, W divisible by ``multiple``); else raise."""
    if not isinstance(images_bgr, np.ndarray):
        raise TypeError(f"{name} must be a numpy array of uint8 BGR images N×H×W×3, got {type(images_bgr).__name__}")
    if images_bgr.dtype != np.uint8:
        raise ValueError(f"{name} must have dtype uint8 (BGR as OpenCV reads it), got {images_bgr.dtype}")
    if images_bgr.ndim != 4 or images_bgr.shape[-1] != 3:
        raise ValueError(f"{name} must have shape N×H×W×3, got {images_bgr.shape}")
    h, w = images_bgr.shape[1:3]
    if h == 0 or w == 0 or h % multiple or w % multiple:
        raise ValueError(f"{name}: height and width must be positive multiples of {multiple}, got {h}×{w}")
    return images_bgr


# ---------------------------------------------------------------------------------------------
# rtmlib Wholebody (the write-up's downstream model)
# ---------------------------------------------------------------------------------------------

def rtmlib_cache_dir() -> Path:
    """The folder where rtmlib keeps downloaded checkpoints (honours TORCH_HOME / XDG_CACHE_HOME)."""
    from rtmlib.tools.file import _get_rtmhub_dir

    return Path(_get_rtmhub_dir()) / "checkpoints"


def rtmlib_expected_files(mode: str = "balanced") -> dict[str, tuple[str, str]]:
    """For ``mode``: {"det"/"pose": (ONNX file name rtmlib caches it as, URL of the zip it comes from)}."""
    from rtmlib import Wholebody

    if mode not in Wholebody.MODE:
        raise ValueError(f"unknown rtmlib Wholebody mode {mode!r}; choose one of {', '.join(Wholebody.MODE)}")
    out = {}
    for part in ("det", "pose"):
        url = Wholebody.MODE[mode][part]
        # rtmlib names the extracted model after the zip, cut at the first dot (rtmlib.tools.file).
        out[part] = (Path(urlparse(url).path).name.split(".")[0] + ".onnx", url)
    return out


def rtmlib_models_cached(mode: str = "balanced") -> bool:
    """True when both ONNX files of Wholebody ``mode`` are in rtmlib's cache (so ``RtmlibNose()`` works offline)."""
    cache = rtmlib_cache_dir()
    return all((cache / fname).is_file() for fname, _ in rtmlib_expected_files(mode).values())


def _resolve_rtmlib_models(det_model, pose_model, mode: str) -> tuple[Path, Path]:
    """Local ONNX paths for the detector and pose model; FileNotFoundError listing what is missing."""
    expected = rtmlib_expected_files(mode)
    given = {"det": det_model, "pose": pose_model}
    cache = rtmlib_cache_dir()
    resolved, missing = {}, []
    for part, arg in given.items():
        fname, url = expected[part]
        if arg is not None:
            if "://" in str(arg):
                raise ValueError(f"{part}_model={arg!r} looks like a URL; downloads are disabled here: fetch the "
                                 f"file yourself and pass its local path")
            path = Path(arg)
            if not path.is_file():
                raise FileNotFoundError(f"{part}_model: ONNX file not found: {path}")
            resolved[part] = path
        elif (cache / fname).is_file():
            resolved[part] = cache / fname
        else:
            missing.append(f"  {part}_model: {cache / fname}\n    (the end2end.onnx inside {url})")
    if missing:
        raise FileNotFoundError(
            f"rtmlib Wholebody(mode={mode!r}) model files are not available locally and will not be "
            "downloaded:\n" + "\n".join(missing) + "\nPut each file at the path shown, or pass "
            "det_model=/pose_model= with local .onnx paths.")
    return resolved["det"], resolved["pose"]


class RtmlibNose:
    """rtmlib Wholebody nose locator: keypoint 0 (body nose) of the first person the detector returns.

    ``found`` is False when the detector returns no person (unless ``whole_image_fallback``, which is
    what ``Wholebody.__call__`` itself does: it then runs the pose model on the whole image), or when the
    keypoint score is not above ``score_thr``. At the default 0 only keypoints that rtmlib's SimCC decoder
    itself marks invalid (maximum response <= 0) are rejected: no extra confidence filter.
    """

    def __init__(self, det_model: str | os.PathLike | None = None, pose_model: str | os.PathLike | None = None,
                 mode: str = "balanced", device: str = "cpu", score_thr: float = 0.0,
                 whole_image_fallback: bool = False, backend: str = "onnxruntime"):
        from rtmlib import Wholebody

        det_path, pose_path = _resolve_rtmlib_models(det_model, pose_model, mode)
        spec = Wholebody.MODE[mode]
        # Explicit model paths make Wholebody fall back to its generic input sizes, so pass the mode's sizes.
        self.wholebody = Wholebody(det=str(det_path), det_input_size=spec["det_input_size"], pose=str(pose_path),
                                   pose_input_size=spec["pose_input_size"], mode=mode, to_openpose=False,
                                   backend=backend, device=device)
        self.name = f"rtmlib-wholebody-{mode}"
        self.score_thr = float(score_thr)
        self.whole_image_fallback = bool(whole_image_fallback)
        self.settings = {"name": self.name, "det_model": det_path.name, "pose_model": pose_path.name,
                         "det_input_size": list(spec["det_input_size"]),
                         "pose_input_size": list(spec["pose_input_size"]), "keypoint": 0, "person": "first",
                         "score_thr": self.score_thr, "whole_image_fallback": self.whole_image_fallback,
                         "backend": backend, "device": device}

    def locate_with_scores(self, images_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """uint8 BGR N×H×W×3 → (N×2 xy, N found, N keypoint scores; NaN where no person was detected)."""
        images_bgr = check_images(images_bgr)
        n = len(images_bgr)
        xy = np.full((n, 2), np.nan)
        scores = np.full(n, np.nan)
        found = np.zeros(n, bool)
        for i, img in enumerate(images_bgr):  # rtmlib runs one image at a time
            boxes = self.wholebody.det_model(img)
            if len(boxes) == 0 and not self.whole_image_fallback:
                continue
            kpts, kscores = self.wholebody.pose_model(img, bboxes=list(boxes[:1]))
            scores[i] = float(kscores[0, 0])
            if scores[i] > self.score_thr:
                xy[i] = kpts[0, 0]
                found[i] = True
        return xy, found, scores

    def locate(self, images_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 BGR N×H×W×3 → (N×2 float64 xy in pixels, NaN where not found; N bool found)."""
        xy, found, _ = self.locate_with_scores(images_bgr)
        return xy, found


# ---------------------------------------------------------------------------------------------
# The offline stand-in: a small heatmap CNN with soft-argmax
# ---------------------------------------------------------------------------------------------

def soft_argmax(logits: torch.Tensor, stride: int = STRIDE) -> torch.Tensor:
    """Heatmap logits N×1×h×w → expected position N×2 (x, y) in input pixels; cell j is centred at
    ``stride·j + (stride-1)/2``. Differentiable."""
    if logits.ndim != 4 or logits.shape[1] != 1:
        raise ValueError(f"soft_argmax expects logits N×1×h×w, got {tuple(logits.shape)}")
    n, _, h, w = logits.shape
    prob = torch.softmax(logits.reshape(n, h * w), dim=1, dtype=torch.promote_types(logits.dtype, torch.float32))
    prob = prob.reshape(n, h, w)
    offset = (stride - 1) / 2.0
    xs = torch.arange(w, device=logits.device, dtype=prob.dtype) * stride + offset
    ys = torch.arange(h, device=logits.device, dtype=prob.dtype) * stride + offset
    x = (prob.sum(1) * xs).sum(1)
    y = (prob.sum(2) * ys).sum(1)
    return torch.stack([x, y], dim=1)


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1, dilation: int = 1, pad: int | None = None) -> nn.Module:
    """Conv + GroupNorm + ReLU (GroupNorm: the same computation in training and inference, any batch size)."""
    pad = dilation * (k - 1) // 2 if pad is None else pad
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, pad, dilation=dilation, bias=False),
                         nn.GroupNorm(math.gcd(4, cout), cout), nn.ReLU(inplace=True))


class HeatmapNose(nn.Module):
    """Small fully convolutional nose detector: RGB [0, 1] N×3×H×W (H, W divisible by 4) → logits N×1×H/4×W/4.

    Two 4×4 stride-2 convolutions bring the input to 1/4 resolution (cell j covers pixels 4j…4j+3), then
    dilated 3×3 convolutions (dilation 1, 2, 4, 8) give context of about 130 input pixels.
    """

    def __init__(self, width: int = 16):
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be a positive integer, got {width}")
        self.width = int(width)
        w = self.width
        self.body = nn.Sequential(
            _conv(3, w),
            _conv(w, w, k=4, stride=2, pad=1),
            _conv(w, 2 * w, k=4, stride=2, pad=1),
            _conv(2 * w, 2 * w, dilation=1),
            _conv(2 * w, 2 * w, dilation=2),
            _conv(2 * w, 2 * w, dilation=4),
            _conv(2 * w, 2 * w, dilation=8),
        )
        self.head = nn.Conv2d(2 * w, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """RGB [0, 1] N×3×H×W → heatmap logits N×1×H/4×W/4."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"HeatmapNose expects N×3×H×W RGB tensors, got {tuple(x.shape)}")
        if x.shape[2] % STRIDE or x.shape[3] % STRIDE:
            raise ValueError(f"HeatmapNose needs H and W divisible by {STRIDE}, got {x.shape[2]}×{x.shape[3]}")
        return self.head(self.body(x))

    def predict_xy(self, x_rgb01: torch.Tensor) -> torch.Tensor:
        """RGB [0, 1] N×3×H×W → nose position N×2 (x, y) in input pixels (differentiable)."""
        return soft_argmax(self.forward(x_rgb01))


class HeatmapNoseLocator:
    """A trained ``HeatmapNose`` as a ``NoseLocator`` (batched inference, always ``found``)."""

    def __init__(self, model: HeatmapNose, info: dict | None = None, batch_size: int = 32, device: str = "cpu"):
        self.model = model.to(device).eval()
        self.info = dict(info or {})
        self.name = self.info.get("name", HEATMAP_NAME)
        self.batch_size = int(batch_size)
        self.device = device

    @torch.no_grad()
    def locate(self, images_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 BGR N×H×W×3 (H, W divisible by 4) → (N×2 float64 xy in pixels, N bool found)."""
        images_bgr = check_images(images_bgr, multiple=STRIDE)
        self.model.eval()
        out = [self.model.predict_xy(data.bgr_to_tensor(images_bgr[s:s + self.batch_size]).to(self.device)).cpu()
               for s in range(0, len(images_bgr), self.batch_size)]
        xy = torch.cat(out).double().numpy() if out else np.zeros((0, 2))
        found = np.isfinite(xy).all(axis=1)
        xy[~found] = np.nan
        return xy, found


def gaussian_targets(xy: torch.Tensor, h: int, w: int, sigma: float, stride: int = STRIDE) -> torch.Tensor:
    """Target distributions N×h×w over heatmap cells (each sums to 1): a Gaussian of ``sigma`` input pixels
    around ``xy`` (N×2, input pixels)."""
    offset = (stride - 1) / 2.0
    u = (xy[:, 0] - offset) / stride
    v = (xy[:, 1] - offset) / stride
    sigma = sigma / stride  # in cells
    xs = torch.arange(w, dtype=xy.dtype, device=xy.device)
    ys = torch.arange(h, dtype=xy.dtype, device=xy.device)
    gx = torch.exp(-((xs[None] - u[:, None]) ** 2) / (2 * sigma ** 2))
    gy = torch.exp(-((ys[None] - v[:, None]) ** 2) / (2 * sigma ** 2))
    g = gy[:, :, None] * gx[:, None, :]
    return g / g.sum(dim=(1, 2), keepdim=True).clamp_min(1e-12)


def augment_batch(x: torch.Tensor, xy: torch.Tensor, gen: torch.Generator, *, max_shift: float = 6.0,
                  flip: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Random degradations of the kind SR introduces, per sample: shift (target moved too), horizontal
    mirror, Gaussian blur or ×4 down-up resampling, gain/offset, noise. RGB [0, 1] N×3×H×W, xy N×2 pixels."""
    from torchvision.transforms.v2.functional import gaussian_blur

    n, _, h, w = x.shape
    dev = x.device

    def rand(*shape):
        """Uniform [0, 1) draws from ``gen``, on the batch's device."""
        return torch.rand(*shape, generator=gen).to(dev)

    # Geometry: out(p) = in(s·p + t) in normalised coordinates (align_corners=False), s = ±1 on x.
    sx = torch.where(rand(n) < 0.5, -1.0, 1.0) if flip else torch.ones(n, device=dev)
    shift = (rand(n, 2) * 2 - 1) * max_shift  # pixels, in input coordinates
    tx, ty = 2 * shift[:, 0] / w, 2 * shift[:, 1] / h
    theta = torch.zeros(n, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 0, 2] = sx, tx
    theta[:, 1, 1], theta[:, 1, 2] = 1.0, ty
    grid = F.affine_grid(theta, (n, 3, h, w), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    # Target: p_norm = s·(in_norm - t); pixel ↔ normalised: q = (2p + 1)/size - 1.
    qx = (2 * xy[:, 0] + 1) / w - 1
    qy = (2 * xy[:, 1] + 1) / h - 1
    px = sx * (qx - tx)
    py = qy - ty
    xy = torch.stack([((px + 1) * w - 1) / 2, ((py + 1) * h - 1) / 2], dim=1)

    # Degradation: 1/3 none, 1/3 Gaussian blur, 1/3 ×4 area-down + bicubic-up.
    choice = rand(n)
    sigma = float(0.4 + 0.8 * rand(1).item())
    blurred = gaussian_blur(x, kernel_size=[5, 5], sigma=[sigma, sigma])
    if h % STRIDE == 0 and w % STRIDE == 0:
        small = F.interpolate(x, size=(h // STRIDE, w // STRIDE), mode="area")
        downup = F.interpolate(small, size=(h, w), mode="bicubic", align_corners=False)
    else:
        downup = blurred
    sel = choice.view(n, 1, 1, 1)
    x = torch.where(sel < 1 / 3, x, torch.where(sel < 2 / 3, blurred, downup))

    gain = 1 + (rand(n, 1, 1, 1) * 2 - 1) * 0.1
    bias = (rand(n, 1, 1, 1) * 2 - 1) * 0.03
    noise = torch.randn(x.shape, generator=gen).to(dev) * (rand(n, 1, 1, 1) * 0.02)
    return (x * gain + bias + noise).clamp(0, 1), xy


def _to_uint8_rgb(images_bgr: np.ndarray) -> torch.Tensor:
    """uint8 BGR N×H×W×3 → uint8 RGB tensor N×3×H×W (kept as uint8; batches become float on the fly)."""
    return torch.from_numpy(np.ascontiguousarray(images_bgr[..., ::-1].transpose(0, 3, 1, 2)))


def _errors_px(model: HeatmapNose, images: torch.Tensor, xy: torch.Tensor, device: str, batch_size: int) -> np.ndarray:
    """Per-image Euclidean error (pixels) of ``model`` on uint8 RGB N×3×H×W ``images`` with targets ``xy``."""
    if len(images) == 0:
        return np.zeros(0)
    model.eval()
    preds = []
    with torch.no_grad():
        for s in range(0, len(images), batch_size):
            preds.append(model.predict_xy(images[s:s + batch_size].to(device).float().div_(255)).cpu())
    return torch.linalg.vector_norm(torch.cat(preds) - xy, dim=1).numpy().astype(float)


def _stats(err: np.ndarray) -> tuple[float, float]:
    """(median, mean) of ``err``, NaN when empty."""
    return (float(np.median(err)), float(np.mean(err))) if len(err) else (math.nan, math.nan)


def train_heatmap_locator(images_bgr: np.ndarray, nose_xy, *, epochs: int, batch_size: int = 16, lr: float = 2e-3,
                          sigma: float = 2.0, augment: bool = True, seed: int = 0, device: str = "cpu",
                          progress: bool = True, width: int = 8, val_fraction: float = 0.1,
                          coord_weight: float = 1.0, val_images: np.ndarray | None = None,
                          val_xy=None) -> tuple[HeatmapNose, dict]:
    """Train a ``HeatmapNose`` on uint8 BGR crops N×H×W×3 and nose points N×2 (pixels; NaN rows are skipped).

    Loss: cross-entropy between the softmax heatmap and a Gaussian target (``sigma`` in input pixels)
    plus ``coord_weight`` × L1 of the soft-argmax position (in heatmap cells of 4 pixels). AdamW with a
    cosine schedule per step; ``augment`` applies ``augment_batch``. Validation: ``val_images`` /
    ``val_xy`` when given (then every training point trains), else ``val_fraction`` of the points is held
    out. ``info`` reports the train and validation errors (pixels, no augmentation), the settings and the
    per-epoch history. ``width`` 8 (not the class default 16) located synthetic noses as well
    in a third of the time.
    """
    images_bgr = check_images(images_bgr, multiple=STRIDE)
    nose_xy = np.asarray(nose_xy, dtype=np.float64)
    if nose_xy.shape != (len(images_bgr), 2):
        raise ValueError(f"nose_xy must have shape ({len(images_bgr)}, 2) to match images_bgr, got {nose_xy.shape}")
    if epochs < 1 or batch_size < 1 or lr <= 0 or sigma <= 0:
        raise ValueError(f"need epochs >= 1, batch_size >= 1, lr > 0, sigma > 0; got epochs={epochs}, "
                         f"batch_size={batch_size}, lr={lr}, sigma={sigma}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    ok = np.isfinite(nose_xy).all(axis=1)
    if ok.sum() < 2:
        raise ValueError(f"need at least 2 images with a finite nose point, got {int(ok.sum())}")
    h, w = images_bgr.shape[1:3]

    gen = torch.Generator().manual_seed(seed)
    idx = np.flatnonzero(ok)[torch.randperm(int(ok.sum()), generator=gen).numpy()]
    n_val = 0 if val_images is not None else int(round(len(idx) * val_fraction))
    val_idx, train_idx = np.sort(idx[:n_val]), np.sort(idx[n_val:])
    x_tr, y_tr = _to_uint8_rgb(images_bgr[train_idx]), torch.from_numpy(nose_xy[train_idx]).float()
    if val_images is None:
        x_va, y_va = _to_uint8_rgb(images_bgr[val_idx]), torch.from_numpy(nose_xy[val_idx]).float()
    else:
        check_images(val_images, "val_images", multiple=STRIDE)
        val_xy = np.asarray(val_xy, dtype=np.float64)
        if val_xy.shape != (len(val_images), 2):
            raise ValueError(f"val_xy must have shape ({len(val_images)}, 2) to match val_images, got {val_xy.shape}")
        keep = np.isfinite(val_xy).all(axis=1)
        x_va, y_va = _to_uint8_rgb(val_images[keep]), torch.from_numpy(val_xy[keep]).float()

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = HeatmapNose(width).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps_per_epoch = math.ceil(len(train_idx) / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)

    history = []
    t0 = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(train_idx), generator=gen)
        total, count = 0.0, 0
        for s in range(0, len(order), batch_size):
            b = order[s:s + batch_size]
            xb = x_tr[b].to(device).float().div_(255)
            yb = y_tr[b].to(device)
            if augment:
                xb, yb = augment_batch(xb, yb, gen)
            logits = model(xb)
            target = gaussian_targets(yb, logits.shape[2], logits.shape[3], sigma)
            logp = torch.log_softmax(logits.flatten(1), dim=1)
            ce = -(target.flatten(1) * logp).sum(1).mean()
            coord = (soft_argmax(logits) - yb).abs().sum(1).mean() / STRIDE
            loss = ce + coord_weight * coord
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(b)
            count += len(b)
        val_med, val_mean = _stats(_errors_px(model, x_va, y_va, device, 64))
        history.append({"epoch": epoch, "loss": total / count, "val_median_px": val_med, "val_mean_px": val_mean})
        if progress:
            print(f"nose locator epoch {epoch}/{epochs}: loss {total / count:.4f}, "
                  f"val median {val_med:.2f} px, mean {val_mean:.2f} px", flush=True)
    seconds = time.perf_counter() - t0
    tr_med, tr_mean = _stats(_errors_px(model, x_tr, y_tr, device, 64))
    model.eval()
    info = {"name": HEATMAP_NAME, "width": width, "stride": STRIDE, "image_size": [int(h), int(w)],
            "epochs": epochs, "batch_size": batch_size, "lr": lr, "sigma": sigma, "augment": augment,
            "coord_weight": coord_weight, "seed": seed, "val_fraction": val_fraction,
            "val_source": "given" if val_images is not None else "held out",
            "n_train": len(train_idx), "n_val": len(x_va), "n_skipped_no_point": int((~ok).sum()),
            "train_median_px": tr_med, "train_mean_px": tr_mean,
            "val_median_px": history[-1]["val_median_px"], "val_mean_px": history[-1]["val_mean_px"],
            "train_seconds": seconds, "history": history}
    return model, info


def save_locator(model: HeatmapNose, info: dict, path: str | os.PathLike) -> Path:
    """Save the state dict to ``path`` (torch.save) and ``info`` + width to ``path`` with .json; both atomic."""
    path = Path(path)
    if path.suffix == ".json":
        raise ValueError(f"locator weights path must not end in .json (the sidecar takes that name): {path}")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        # through a file handle, so the archive does not embed the temporary file's name
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, f)
    atomic_write_json(path.with_suffix(".json"), {**info, "width": model.width, "weights_file": path.name})
    return path


def load_locator(path: str | os.PathLike, device: str = "cpu") -> HeatmapNoseLocator:
    """Load a locator written by ``save_locator`` (weights with ``weights_only=True``, sidecar JSON)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"nose locator weights not found: {path}")
    info = read_json(path.with_suffix(".json"))
    if "width" not in info:
        raise ValueError(f"nose locator sidecar {path.with_suffix('.json')} has no 'width' entry")
    model = HeatmapNose(int(info["width"]))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as e:
        raise ValueError(f"cannot load nose locator weights from {path}: {e}") from e
    return HeatmapNoseLocator(model, info, device=device)


# ---------------------------------------------------------------------------------------------
# Choosing the nose model for a run
# ---------------------------------------------------------------------------------------------
NOSE_MODELS = ("auto", "rtmlib", "heatmap")
LOCATOR_FILE = "heatmap_nose.pt"


def _records_data(crops_dir, records) -> tuple[np.ndarray, np.ndarray]:
    """HR crops (uint8 BGR N×H×W×3) and nose points N×2 (NaN where a record has none) of manifest records."""
    import cv2

    imgs = np.stack([read_image(Path(crops_dir) / r["path"], cv2.IMREAD_COLOR) for r in records])
    xy = np.array([r["nose"] if r.get("nose") is not None else (np.nan, np.nan) for r in records], float)
    return imgs, xy


def _records_digest(records) -> str:
    """sha256 over the records' ids, pixel hashes and nose points: what a trained locator has seen."""
    key = [[r.get("id"), r.get("sha256"), r.get("nose")] for r in records]
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=float).encode()).hexdigest()


def prepare_locator(nose_model: str, folder, crops_dir=None, train_records=None, val_records=None, *,
                    epochs: int = 30, seed: int = 0, device: str = "cpu", progress: bool = True,
                    **train_kwargs) -> NoseLocator:
    """The run's nose locator. ``nose_model``: "rtmlib" (Wholebody from local files; a clear error when they
    are missing), "heatmap" (the stand-in) or "auto" (rtmlib when its files are cached, else the stand-in).

    The stand-in lives in ``folder/heatmap_nose.pt`` (+ .json). With ``train_records`` (manifest records
    under ``crops_dir``) it is trained, or reused when the saved one was trained on the same records with
    the same settings; without them the saved one is loaded (FileNotFoundError if there is none).
    """
    if nose_model not in NOSE_MODELS:
        raise ValueError(f"nose_model must be one of {', '.join(NOSE_MODELS)}, got {nose_model!r}")
    if nose_model == "rtmlib" or (nose_model == "auto" and rtmlib_models_cached()):
        return RtmlibNose(device=device)
    path = Path(folder) / LOCATOR_FILE
    if train_records is None:
        if not path.is_file():
            raise FileNotFoundError(f"no trained heatmap nose locator at {path}; train it first by passing "
                                    "crops_dir and train_records (notebook 02 does)")
        return load_locator(path, device=device)
    if crops_dir is None:
        raise ValueError("prepare_locator: train_records given without crops_dir")
    request = json.loads(json.dumps({"epochs": epochs, "seed": seed, "train": _records_digest(train_records),
                                     "val": _records_digest(val_records or []), **train_kwargs}))
    if path.is_file() and path.with_suffix(".json").is_file():
        if read_json(path.with_suffix(".json")).get("request") == request:
            return load_locator(path, device=device)
    images, xy = _records_data(crops_dir, train_records)
    val = {}
    if val_records:
        val_images, val_xy = _records_data(crops_dir, val_records)
        val = {"val_images": val_images, "val_xy": val_xy}
    model, info = train_heatmap_locator(images, xy, epochs=epochs, seed=seed, device=device, progress=progress,
                                        **val, **train_kwargs)
    info["request"] = request
    save_locator(model, info, path)
    return HeatmapNoseLocator(model, info, device=device)


# ---------------------------------------------------------------------------------------------
# The metric
# ---------------------------------------------------------------------------------------------

def _checked_locate(locator: NoseLocator, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run ``locator`` and check its output shapes; positions are NaN where not found."""
    xy, found = locator.locate(images)
    xy = np.array(xy, dtype=np.float64)
    found = np.asarray(found)
    n = len(images)
    if xy.shape != (n, 2) or found.shape != (n,) or found.dtype != bool:
        raise ValueError(f"locator {getattr(locator, 'name', locator)!r} returned xy {xy.shape} and found "
                         f"{found.shape} {found.dtype}; expected ({n}, 2) floats and ({n},) bools")
    found = found & np.isfinite(xy).all(axis=1)
    xy[~found] = np.nan
    return xy, found


def nose_errors(locator: NoseLocator, hr_bgr: np.ndarray, sr_bgr: np.ndarray, gt_xy=None) -> dict[str, np.ndarray]:
    """Per-image nose results for uint8 BGR N×H×W×3 HR/SR pairs: hr_xy, sr_xy (N×2), hr_found, sr_found (N bool),
    err_px (SR vs HR distance in pixels, NaN where either failed) and, with ground truth N×2 (NaN rows
    allowed), err_gt_hr / err_gt_sr (distance to the truth, NaN where unknown or not found)."""
    check_images(hr_bgr, "hr_bgr")
    check_images(sr_bgr, "sr_bgr")
    if hr_bgr.shape != sr_bgr.shape:
        raise ValueError(f"hr_bgr {hr_bgr.shape} and sr_bgr {sr_bgr.shape} must have the same shape")
    hr_xy, hr_found = _checked_locate(locator, hr_bgr)
    sr_xy, sr_found = _checked_locate(locator, sr_bgr)
    out = {"hr_xy": hr_xy, "sr_xy": sr_xy, "hr_found": hr_found, "sr_found": sr_found,
           "err_px": np.linalg.norm(sr_xy - hr_xy, axis=1)}
    if gt_xy is not None:
        gt = np.asarray(gt_xy, dtype=np.float64)
        if gt.shape != (len(hr_bgr), 2):
            raise ValueError(f"gt_xy must have shape ({len(hr_bgr)}, 2), got {gt.shape}")
        out["err_gt_hr"] = np.linalg.norm(hr_xy - gt, axis=1)
        out["err_gt_sr"] = np.linalg.norm(sr_xy - gt, axis=1)
    return out


def summarize_nose(err: dict, key: str = "err_px") -> dict:
    """Aggregate ``nose_errors`` output: n, n_valid, median, mean, p90 (pixels, over finite ``err[key]``),
    and the failure counts n_failed_hr, n_failed_sr, n_failed_any (either)."""
    if key not in err:
        raise KeyError(f"summarize_nose: no {key!r} in the results (keys: {', '.join(err)})")
    values = np.asarray(err[key], dtype=np.float64)
    hr_found = np.asarray(err["hr_found"], bool)
    sr_found = np.asarray(err["sr_found"], bool)
    valid = values[np.isfinite(values)]
    has = len(valid) > 0
    return {"n": int(len(values)), "n_valid": int(len(valid)),
            "median": float(np.median(valid)) if has else math.nan,
            "mean": float(np.mean(valid)) if has else math.nan,
            "p90": float(np.percentile(valid, 90)) if has else math.nan,
            "n_failed_hr": int((~hr_found).sum()), "n_failed_sr": int((~sr_found).sum()),
            "n_failed_any": int((~(hr_found & sr_found)).sum())}
