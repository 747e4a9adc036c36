"""Colour input for a gray-trained model: thermal cameras save false-colour (palette) images, and a model finetuned
on gray crops shifts their hues when run on them as they are. ``sr_folder --colour`` picks a path per image: as it
is, the luminance alone (YCrCb Y), or the inverted palette (OpenCV's inferno, the synthetic iron rendering)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

COLOUR_CHOICES = ("auto", "as-is", "luma", "palette")
# What ``--colour auto`` does with a colour image when the model was trained on gray crops only. Measured
# (tools/palette_check.py: 40 generated iron crops, RGB PSNR): a v1 finetuned on gray crops only (the demo's before it mixed renderings) scores 29.8 dB run on
# the colour as is, 31.4 on the luminance alone and 34.2 through palette inversion, against 33.3 for the srresnet it
# started from and 32.8 for waifu2x-photo, both run as is (v2: 30.4 / 31.2 / 33.3). In a palette that is not inferno
# (COLORMAP_HOT) the luminance fallback beats as is for v1 (29.9 against 29.3) but stays ~2 dB below a zero-shot
# network run as is (waifu2x-photo 31.9): the fallback's note says so.
AUTO_FOR_GRAY_TRAINED = "palette"
# Palette inversion is used when the mean distance (Euclidean, 0-255 BGR) of the image's pixels to their nearest
# inferno colour is at most this; above it the colours are taken to be another palette and get the luminance path.
# Measured: generated inferno crops lie 1.4-2.8 from the palette (their INTER_AREA LR), JPEG-saved ones 3-8 (quality
# 95 to 50); other OpenCV palettes 26 or more (plasma 26-35, hot 29-53, magma 36-41, jet/turbo/bone 70-124).
PALETTE_MAX_ERROR = 12.0


def inferno_lut() -> np.ndarray:
    """The 256 colours (uint8 BGR, 256×3) of OpenCV's COLORMAP_INFERNO, which ``synthetic.iron`` applies."""
    import cv2

    return cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_INFERNO)[:, 0].copy()


def is_colour(img: np.ndarray) -> bool:
    """True when uint8 BGR ``img`` has three channels that differ somewhere (gray stored as BGR is not colour)."""
    return img.ndim == 3 and img.shape[2] == 3 and bool(
        (img[..., 0] != img[..., 1]).any() or (img[..., 1] != img[..., 2]).any())


def invert_palette(img: np.ndarray, lut: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 H×W index image, float32 H×W distance): each BGR pixel of ``img`` mapped to the index of its nearest
    colour of ``lut`` (default: inferno), and how far (Euclidean, 0-255 units) that colour is from it. An image
    made by applying the palette inverts exactly (distance 0)."""
    lut = inferno_lut() if lut is None else np.asarray(lut, np.uint8)
    px = np.ascontiguousarray(img[..., :3]).reshape(-1, 3)
    packed = (px[:, 0].astype(np.int32) << 16) | (px[:, 1].astype(np.int32) << 8) | px[:, 2]
    uniq, inverse = np.unique(packed, return_inverse=True)
    colours = np.stack([(uniq >> 16) & 255, (uniq >> 8) & 255, uniq & 255], axis=1).astype(np.int32)
    index = np.empty(len(uniq), np.uint8)
    dist = np.empty(len(uniq), np.float32)
    lut32 = lut.astype(np.int32)
    for i in range(0, len(uniq), 4096):          # bounded memory: 4096 colours × 256 entries at a time
        d2 = ((colours[i:i + 4096, None, :] - lut32[None]) ** 2).sum(-1)
        index[i:i + 4096] = d2.argmin(1)
        dist[i:i + 4096] = np.sqrt(d2.min(1))
    shape = img.shape[:2]
    return index[inverse].reshape(shape), dist[inverse].reshape(shape)


def _sr_gray(sr) -> np.ndarray:
    """Float RGB tensor 3×H×W → float32 H×W luma (0.299 R + 0.587 G + 0.114 B), unclamped, 0-1 scale."""
    from .metrics import LUMA_WEIGHTS

    x = sr.detach().float().cpu().numpy()
    return (LUMA_WEIGHTS[0] * x[0] + LUMA_WEIGHTS[1] * x[1] + LUMA_WEIGHTS[2] * x[2]).astype(np.float32)


def _bgr_float_to_tensor(bgr: np.ndarray):
    """Float32 BGR H×W×3 on the 0-1 scale → float RGB tensor 3×H×W (not clamped: ``tensor_to_bgr`` clamps)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(bgr[..., ::-1].transpose(2, 0, 1))).float()


def luma_method(method: Callable) -> Callable:
    """``method`` applied to the luminance alone: the LR image's YCrCb Y, replicated to 3 channels, is
    super-resolved (the output's luma kept), Cr and Cb are upscaled bicubically, and the result converted back."""
    import cv2

    def run(lr: np.ndarray):
        ycc = cv2.cvtColor(lr, cv2.COLOR_BGR2YCrCb)
        y = np.repeat(ycc[:, :, :1], 3, axis=2)
        y_sr = _sr_gray(method(np.ascontiguousarray(y)))
        h, w = y_sr.shape
        crcb = cv2.resize(ycc[:, :, 1:].astype(np.float32) / 255.0, (w, h), interpolation=cv2.INTER_CUBIC)
        out = cv2.cvtColor(np.dstack([y_sr, crcb]).astype(np.float32), cv2.COLOR_YCrCb2BGR)
        return _bgr_float_to_tensor(out)
    return run


def apply_palette(index: np.ndarray, lut: np.ndarray | None = None) -> np.ndarray:
    """Float H×W palette index (0-255, clipped) → float32 BGR H×W×3 on the 0-1 scale, interpolating linearly between
    the palette's 256 colours (an integer index gives its colour exactly)."""
    lut = (inferno_lut() if lut is None else np.asarray(lut)).astype(np.float32) / 255.0
    t = np.clip(np.asarray(index, np.float32), 0.0, 255.0)
    lo = np.floor(t).astype(np.int64)
    hi = np.minimum(lo + 1, 255)
    f = (t - lo)[..., None]
    return (lut[lo] * (1.0 - f) + lut[hi] * f).astype(np.float32)


def palette_method(method: Callable, lut: np.ndarray | None = None) -> Callable:
    """``method`` applied to the palette's index image: each LR pixel mapped to its nearest palette colour's index
    (``invert_palette``), that gray image super-resolved (the output's luma taken as the index) and the palette
    re-applied (``apply_palette``)."""
    lut = inferno_lut() if lut is None else lut

    def run(lr: np.ndarray):
        index, _ = invert_palette(lr, lut)
        sr = method(np.ascontiguousarray(np.repeat(index[:, :, None], 3, axis=2)))
        return _bgr_float_to_tensor(apply_palette(_sr_gray(sr) * 255.0, lut))
    return run


def model_trained_on(spec) -> dict | None:
    """What a saved model was trained on, from its ``thermsr.json``: ``{"palettes": [...], "datasets": [...]}``.

    A model finetuned by this project before the record existed (a ``recipe`` but no ``trained_on``) is taken to be
    gray-trained (the builder's default palette then), marked ``"assumed": True``. None for models without a
    training record (short names, hub ids, bicubic, registry zoo folders): trained on RGB photos.
    """
    from .data import DATASET_LABELS
    from .io import read_json

    path = Path(os.fspath(spec))
    meta_file = path / "thermsr.json"
    if not (path.is_dir() and meta_file.is_file()):
        return None
    try:
        meta = read_json(meta_file)
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict):
        return None
    if isinstance(meta.get("trained_on"), dict):
        return {"palettes": sorted(meta["trained_on"].get("palettes") or []),
                "datasets": sorted(meta["trained_on"].get("datasets") or [])}
    if "recipe" in meta:
        labels = {v: k for k, v in DATASET_LABELS.items()}
        per_dataset = (meta.get("train_set") or {}).get("per_dataset") or {}
        return {"palettes": ["gray"], "datasets": sorted(labels.get(k, k) for k in per_dataset), "assumed": True}
    return None


def trained_words(trained: dict | None, spec: str) -> str:
    """What the model was trained on, in a few words for the notes."""
    if spec == "bicubic":
        return "bicubic has no training"
    if trained is None:
        return "the model has no thermal training record: trained on RGB photos"
    words = "/".join(trained["palettes"]) + " thermal crops"
    if trained.get("datasets"):
        words += " of " + ", ".join(trained["datasets"])
    if trained.get("assumed"):
        words += " (assumed: its thermsr.json predates the trained_on record, when the builder's palette was gray)"
    return "the model was trained on " + words


def resolve_colour(option: str, trained: dict | None) -> str:
    """The colour path ``option`` means for a model trained on ``trained``: ``auto`` is AUTO_FOR_GRAY_TRAINED for a
    gray-only model and as-is otherwise (a colour-trained model, or one trained on RGB photos)."""
    if option not in COLOUR_CHOICES:
        raise ValueError(f"--colour must be one of {', '.join(COLOUR_CHOICES)}, got {option!r}")
    if option != "auto":
        return option
    return AUTO_FOR_GRAY_TRAINED if trained is not None and trained["palettes"] == ["gray"] else "as-is"


def colour_path(mode: str, lr: np.ndarray) -> tuple[str, str]:
    """(the path taken, what was done in words) for colour LR image ``lr`` under ``mode``: "palette" falls back to
    "luma" when the colours are not the inferno palette (mean distance above PALETTE_MAX_ERROR)."""
    if mode == "as-is":
        return "as-is", "run on the colour image as it is"
    if mode == "palette":
        _, dist = invert_palette(lr)
        err = float(dist.mean())
        if err <= PALETTE_MAX_ERROR:
            return "palette", (f"inferno palette inverted to its gray index (mean colour error {err:.2f}), the index "
                               "super-resolved, the palette re-applied")
        return "luma", (f"colours are not the inferno palette (mean distance {err:.1f} > {PALETTE_MAX_ERROR:g}): "
                        "luminance (Y) super-resolved, colour (CrCb) upscaled bicubically (measured on another "
                        "palette, a gray-trained model does better so than as is but about 2 dB worse than a "
                        "zero-shot network run as is)")
    return "luma", "luminance (Y) super-resolved, colour (CrCb) upscaled bicubically"


def colour_method(method: Callable, path: str) -> Callable:
    """``method`` wrapped for colour path ``path`` ("as-is", "luma" or "palette")."""
    return {"as-is": lambda m: m, "luma": luma_method, "palette": palette_method}[path](method)
