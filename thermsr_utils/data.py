"""The crops' shared terms and geometry, and the LR operator: the scale, the splits and datasets of a manifest,
the crop box rules and the cut, the INTER_AREA reduction (on arrays and tensors) and the tensor conversions.

Image convention: arrays are uint8 as OpenCV reads them, BGR, H×W×3. Tensors are float RGB in [0, 1],
C×H×W (or N×C×H×W). Conversions happen only in ``bgr_to_tensor`` / ``tensor_to_bgr``.

The raw datasets' readers are in ``readers``, the manifest (building, verifying, ``open_run``) in ``manifests``.
"""
from __future__ import annotations

import math

import numpy as np

SCALE = 4
DATASET_LABELS = {"sftl54": "SF-TL54", "thermeval": "ThermEval-D"}   # manifest name → label in tables
SPLITS = ("train", "val", "test")
DATASETS = ("sftl54", "thermeval")


def make_lr(hr: np.ndarray, scale: int = SCALE) -> np.ndarray:
    """LR image as the write-up made it: ``cv2.resize(hr, 1/scale, INTER_AREA)`` (uint8 in, uint8 out).

    The HR height and width must be divisible by ``scale``.
    """
    import cv2

    h, w = hr.shape[:2]
    if h % scale or w % scale:
        raise ValueError(f"HR size {w}x{h} is not divisible by scale {scale}")
    return cv2.resize(hr, (w // scale, h // scale), interpolation=cv2.INTER_AREA)


# ---- Exact INTER_AREA reduction, on tensors (any device) and arrays ----
# OpenCV's INTER_AREA reduction by an integer factor, reproduced bit for bit (``make_lr`` is the reference): each
# LR pixel is the mean of an s×s block, rounded half to even except in OpenCV's vectorised 2× path, which rounds
# halves up. The block sum is taken in integers and rounded with integer arithmetic: no float rounding at all.
HALF_UP_SCALES = (2,)          # factors where OpenCV's INTER_AREA rounds halves up (its vectorised 2× path)


def _round_block_mean(total, area: int, half_up: bool):
    """Integer block sums → their mean ``total / area`` rounded to the nearest integer (ties: up or to even)."""
    q = total // area
    twice_r = 2 * (total - q * area)
    if half_up:
        return q + (twice_r >= area)
    return q + ((twice_r > area) | ((twice_r == area) & (q % 2 == 1)))


def _check_scale(scale) -> int:
    """Return ``scale`` as an int if it is an integer ≥ 1, else raise ValueError."""
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"scale must be an integer ≥ 1, got {scale!r}")
    return int(scale)


def area_downsample(x, scale: int = SCALE):
    """uint8 torch tensor …×H×W (any device; H, W divisible by ``scale``) → uint8 …×H/s×W/s, equal to cv2 INTER_AREA."""
    import torch

    scale = _check_scale(scale)
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.ndim < 2:
        desc = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"area_downsample expects a uint8 tensor …×H×W, got {desc}")
    *batch_dims, h, w = x.shape
    if h % scale or w % scale:
        raise ValueError(f"area_downsample: size {w}x{h} is not divisible by scale {scale}")
    total = x.reshape(*batch_dims, h // scale, scale, w // scale, scale).sum(dim=(-3, -1), dtype=torch.int32)
    return _round_block_mean(total, scale * scale, scale in HALF_UP_SCALES).to(torch.uint8)


def area_downsample_array(img: np.ndarray, scale: int = SCALE) -> np.ndarray:
    """uint8 array H×W×C or N×H×W×C (OpenCV layout; H, W divisible by ``scale``) → the same at 1/scale, as INTER_AREA."""
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim not in (3, 4):
        desc = f"{img.dtype} {img.shape}" if isinstance(img, np.ndarray) else type(img).__name__
        raise ValueError(f"area_downsample_array expects a uint8 array H×W×C or N×H×W×C, got {desc}")
    import torch

    lr = area_downsample(torch.from_numpy(np.ascontiguousarray(img)).movedim(-1, -3), scale)
    return np.ascontiguousarray(lr.movedim(-3, -1).numpy())


def bgr_to_tensor(img: np.ndarray):
    """uint8 BGR H×W×3 (or N×H×W×3) → float32 RGB tensor in [0, 1], C×H×W (or N×C×H×W)."""
    import torch

    if img.dtype != np.uint8 or img.shape[-1] != 3:
        raise ValueError(f"expected uint8 BGR images with 3 channels, got {img.dtype} {img.shape}")
    rgb = np.ascontiguousarray(img[..., ::-1])
    t = torch.from_numpy(rgb).float().div_(255.0)
    return t.permute(2, 0, 1) if t.ndim == 3 else t.permute(0, 3, 1, 2)


def tensor_to_bgr(t) -> np.ndarray:
    """float RGB tensor (C×H×W or N×C×H×W, any range) → uint8 BGR, clamped to [0, 1] and rounded."""
    x = t.detach().float().clamp(0, 1).mul(255.0).round().to("cpu").numpy().astype(np.uint8)
    x = np.moveaxis(x, -3, -1)
    return np.ascontiguousarray(x[..., ::-1])


# =============================================================================================
# Crop geometry: a face's square box in its source image, cut and resized to CROP_SIZE
# =============================================================================================
CROP_SIZE = 192
MIN_BOX_SIDE = 8             # a clipped box with a shorter side below this is degenerate
N_LANDMARKS = 54
OUTLINE = slice(0, 27)       # SF-TL54 landmarks 0-26: chin + both eyebrows
NOSE_TIP = 30                # SF-TL54 landmark 30: nose tip


class DegenerateCrop(ValueError):
    """A crop box that is empty, too small, or built from points that lie outside the image."""


def _floor(v: float) -> int:
    """floor(v), tolerant of float noise just below an integer (e.g. 33.9999999999 -> 34)."""
    return int(math.floor(v + 1e-6))


def _ceil(v: float) -> int:
    """ceil(v), tolerant of float noise just above an integer (e.g. 126.0000000001 -> 126)."""
    return int(math.ceil(v - 1e-6))


def _check_box_params(width: int, height: int, pad: float) -> None:
    """Raise ValueError for a non-positive image size or pad."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got width={width} height={height}")
    if not pad > 0:
        raise ValueError(f"pad must be positive, got {pad}")


def square_box(cx: float, cy: float, side: float, width: int, height: int,
               keep_square: bool = False) -> tuple[int, int, int, int]:
    """Integer box (x0, y0, x1, y1), x1/y1 exclusive, of a square of ``side`` px centred on (cx, cy).

    Default (the write-up's protocol): the float square is rounded *outwards* (floor for x0/y0, ceil
    for x1/y1, so the integer box always covers the float square), then clipped to the image, so a
    square near the border becomes a rectangle. ``keep_square=True``: the side is rounded up to an
    integer (at most the image's shorter side) and the square is shifted inside the image instead of
    clipped. Raises DegenerateCrop if the result has a side below ``MIN_BOX_SIDE`` px.
    """
    if not (math.isfinite(cx) and math.isfinite(cy) and math.isfinite(side)) or side <= 0:
        raise DegenerateCrop(f"invalid square: centre ({cx}, {cy}), side {side}")
    if keep_square:
        s = min(_ceil(side), width, height)
        x0 = min(max(_floor(cx - s / 2), 0), width - s)
        y0 = min(max(_floor(cy - s / 2), 0), height - s)
        x1, y1 = x0 + s, y0 + s
    else:
        x0, y0 = max(_floor(cx - side / 2), 0), max(_floor(cy - side / 2), 0)
        x1, y1 = min(_ceil(cx + side / 2), width), min(_ceil(cy + side / 2), height)
    if min(x1 - x0, y1 - y0) < MIN_BOX_SIDE:
        raise DegenerateCrop(f"crop box {(x0, y0, x1, y1)} in a {width}x{height} image is smaller "
                             f"than {MIN_BOX_SIDE} px on a side")
    return x0, y0, x1, y1


def sftl54_crop_box(landmarks: np.ndarray, width: int, height: int, pad: float = 1.15,
                    keep_square: bool = False) -> tuple[int, int, int, int]:
    """SF-TL54 crop box (x0, y0, x1, y1) in source pixels from (54, 2) float landmarks (x, y).

    Square of side ``pad`` x the larger side of the extent of landmarks 0-26 (chin + eyebrows),
    centred on that extent; rounding and clipping as in ``square_box``. Raises DegenerateCrop if all
    of landmarks 0-26 lie outside the image or the clipped box is too small.
    """
    _check_box_params(width, height, pad)
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] < OUTLINE.stop:
        raise ValueError(f"landmarks must have shape (54, 2), got {pts.shape}")
    outline = pts[OUTLINE]
    inside = ((outline[:, 0] >= 0) & (outline[:, 0] <= width)
              & (outline[:, 1] >= 0) & (outline[:, 1] <= height))
    if not inside.any():
        raise DegenerateCrop(f"landmarks 0-26 all lie outside the {width}x{height} image")
    (xmin, ymin), (xmax, ymax) = outline.min(axis=0), outline.max(axis=0)
    side = pad * max(xmax - xmin, ymax - ymin)
    return square_box((xmin + xmax) / 2, (ymin + ymax) / 2, side, width, height, keep_square)


def thermeval_crop_box(person_xywh, width: int, height: int, pad: float = 1.15,
                       keep_square: bool = False) -> tuple[int, int, int, int]:
    """ThermEval-D crop box (x0, y0, x1, y1) from a COCO Person box [x, y, w, h] in source pixels.

    Square of side ``pad`` x max(w, h) centred on the Person box centre; rounding and clipping as in
    ``square_box``. Raises DegenerateCrop if the clipped box is too small (e.g. the Person box lies
    outside the image).
    """
    _check_box_params(width, height, pad)
    x, y, w, h = (float(v) for v in person_xywh)
    if w <= 0 or h <= 0:
        raise DegenerateCrop(f"Person box {list(person_xywh)} has no area")
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        raise DegenerateCrop(f"Person box {list(person_xywh)} lies outside the {width}x{height} image")
    return square_box(x + w / 2, y + h / 2, pad * max(w, h), width, height, keep_square)


def crop_and_resize(img: np.ndarray, box, size: int = CROP_SIZE) -> tuple[np.ndarray, bool]:
    """Cut ``box`` (x0, y0, x1, y1, exclusive ends) from uint8 H×W(×C) ``img``, resize to size×size.

    INTER_AREA when the crop is at least ``size`` px on both sides; otherwise INTER_CUBIC and the
    returned flag ``upscaled`` is True. Returns (uint8 size×size(×C) crop, upscaled).
    """
    import cv2

    x0, y0, x1, y1 = (int(v) for v in box)
    h, w = img.shape[:2]
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        raise ValueError(f"crop box {(x0, y0, x1, y1)} is empty or outside the {w}x{h} image")
    crop = img[y0:y1, x0:x1]
    upscaled = min(x1 - x0, y1 - y0) < size
    interp = cv2.INTER_CUBIC if upscaled else cv2.INTER_AREA
    return cv2.resize(crop, (size, size), interpolation=interp), upscaled


def map_point(pt, box, size: int = CROP_SIZE) -> tuple[float, float]:
    """Map a source-pixel point (x, y) into the size×size crop of ``box``: (x-x0)·size/(x1-x0), same for y."""
    x, y = float(pt[0]), float(pt[1])
    x0, y0, x1, y1 = box
    return (x - x0) * size / (x1 - x0), (y - y0) * size / (y1 - y0)
