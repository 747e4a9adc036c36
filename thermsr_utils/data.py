"""The crops: the SF-TL54 and ThermEval-D builders, the manifest and its verification, LR/tensor conversions.

Image convention: arrays are uint8 as OpenCV reads them, BGR, H×W×3. Tensors are float RGB in [0, 1],
C×H×W (or N×C×H×W). Conversions happen only in ``bgr_to_tensor`` / ``tensor_to_bgr``.
"""
from __future__ import annotations

import math
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import io

SCALE = 4
DATASET_LABELS = {"sftl54": "SF-TL54", "thermeval": "ThermEval-D"}   # manifest name → label in tables


def make_lr(hr: np.ndarray, scale: int = SCALE) -> np.ndarray:
    """LR image as the write-up made it: ``cv2.resize(hr, 1/scale, INTER_AREA)`` (uint8 in, uint8 out).

    The HR height and width must be divisible by ``scale``.
    """
    import cv2

    h, w = hr.shape[:2]
    if h % scale or w % scale:
        raise ValueError(f"HR size {w}x{h} is not divisible by scale {scale}")
    return cv2.resize(hr, (w // scale, h // scale), interpolation=cv2.INTER_AREA)


# ---------------------------------------------------------------------------------------------
# Exact INTER_AREA reduction, on tensors (any device) and arrays
# ---------------------------------------------------------------------------------------------
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
# Dataset builders: raw SF-TL54 / ThermEval-D folders -> 192x192 HR crops + manifest.json
# =============================================================================================
SPLITS = ("train", "val", "test")
DATASETS = ("sftl54", "thermeval")
SCHEMA_VERSION = 1
CROP_SIZE = 192
MIN_BOX_SIDE = 8             # a clipped box with a shorter side below this is degenerate
N_LANDMARKS = 54
OUTLINE = slice(0, 27)       # SF-TL54 landmarks 0-26: chin + both eyebrows
NOSE_TIP = 30                # SF-TL54 landmark 30: nose tip
PERSON, NOSE = 0, 3          # ThermEval-D COCO category ids
IMAGE_EXTS = (".png", ".jpg", ".jpeg")

SFTL54_LAYOUT = "<root>/{gray|iron}/{train|val|test}/images/*.png with <root>/{palette}/{split}/json/<stem>.json"
THERMEVAL_LAYOUT = "<root>/images/*.png with <root>/Annotations/annotations_1.json and annotations_2.json"

# Skip reasons, as they appear in the manifest summary.
R_MISSING_JSON = "missing annotation"
R_UNPARSEABLE_JSON = "unparseable annotation"
R_BAD_ANNOTATION = "bad annotation"
R_BAD_NAME = "bad file name"
R_MISSING_IMAGE = "missing image"
R_UNREADABLE = "unreadable image"
R_DEGENERATE = "degenerate crop"
R_TOO_SMALL = "crop smaller than min_crop_side"
R_NO_PERSON = "nose without person"
R_UNKNOWN_IMAGE = "annotation for unknown image id"
R_OUTSIDE_ROOT = "file_name outside images/ (absolute or with '..')"
R_NOT_8BIT = "not an 8-bit image (16-bit raw counts? convert with a fixed temperature range first)"
R_SIZE_MISMATCH = "annotation's imageWidth/imageHeight differ from the image on disk"

DEFAULT_PARAMS = {
    "palette": "gray",
    "caps": (600, 80, 200),
    "size": CROP_SIZE,
    "pad": 1.15,
    "min_crop_side": 0,
    "keep_square": False,
    "seed": 7,
    "train_frac": 0.7,
}
_SFTL54_KEYS = ("palette", "caps", "size", "pad", "min_crop_side", "keep_square")
_THERMEVAL_KEYS = ("seed", "train_frac", "size", "pad", "min_crop_side", "keep_square")
_RECORD_FIELDS = ("id", "dataset", "split", "path", "source", "subject", "palette", "box", "source_size", "nose",
                  "upscaled", "sha256")
# SF-TL54's renderings (palette folders) and the builder's palette choices: one of them, or "mix", where each
# subject's crops all come from one rendering, chosen by ``mix_palette`` (subject id parity), so the splits stay
# subject-disjoint and every split holds both renderings.
PALETTES = ("gray", "iron")
PALETTE_CHOICES = PALETTES + ("mix",)
DEFAULT_PALETTE = "gray"    # what a record without a ``palette`` field (a manifest written before it) was built from
_STAGING = ".staging"


class BadAnnotation(ValueError):
    """An annotation file that parses but does not hold what the protocol needs; names the file."""


class DegenerateCrop(ValueError):
    """A crop box that is empty, too small, or built from points that lie outside the image."""


class ManifestMismatch(ValueError):
    """A freshly built manifest differs from the committed one; the message lists the records."""


class CropIntegrityError(ValueError):
    """Crops missing, unreadable or with pixels that differ from the manifest's sha256.

    The message names them (the first 20 of each kind); ``missing`` and ``changed`` hold every one.
    """

    def __init__(self, message: str, missing: list[str], changed: list[str]):
        super().__init__(message)
        self.missing = list(missing)
        self.changed = list(changed)


@dataclass
class BuildResult:
    """What one dataset builder produced: manifest records, skipped files by reason, and extra counts."""

    dataset: str
    records: list[dict]
    skipped: dict[str, list[str]] = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def skip(self, reason: str, name: str) -> None:
        """Record that ``name`` (a path relative to the dataset root) was skipped for ``reason``."""
        self.skipped.setdefault(reason, []).append(name)


@dataclass
class _Candidate:
    """A crop that passed every check, before its pixels are cut out and written."""

    id: str
    dataset: str
    split: str
    image_path: Path
    source: str
    subject: int | None
    box: tuple[int, int, int, int]
    source_size: tuple[int, int]
    nose_src: tuple[float, float] | None
    palette: str = DEFAULT_PALETTE


# ---------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# SF-TL54
# ---------------------------------------------------------------------------------------------
def read_labelme(json_path) -> tuple[np.ndarray | None, np.ndarray]:
    """Read an SF-TL54 LabelMe JSON: (face box [xmin, ymin, xmax, ymax] float or None, (54, 2) landmarks).

    The shape labelled ``face`` gives the face box from its corner points (any order); every other
    shape adds its points, in file order. Raises ValueError (unparseable file) or BadAnnotation
    (wrong structure, non-finite values, or not exactly 54 landmark points), both naming the file.
    """
    data = io.read_json(json_path)
    shapes = data.get("shapes") if isinstance(data, dict) else None
    if not isinstance(shapes, list):
        raise BadAnnotation(f"{json_path}: no 'shapes' list")
    face, points = None, []
    try:
        for shape in shapes:
            pts = np.asarray(shape["points"], dtype=np.float64).reshape(-1, 2)
            if shape.get("label") == "face":
                if face is not None:
                    raise BadAnnotation(f"{json_path}: more than one 'face' shape")
                if len(pts) < 2:
                    raise BadAnnotation(f"{json_path}: the 'face' shape has fewer than 2 points")
                face = np.concatenate([pts.min(axis=0), pts.max(axis=0)])
            else:
                points.extend(pts)
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, BadAnnotation):
            raise
        raise BadAnnotation(f"{json_path}: malformed shape ({e})") from None
    landmarks = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(landmarks) != N_LANDMARKS:
        raise BadAnnotation(f"{json_path}: expected {N_LANDMARKS} landmark points, found {len(landmarks)}")
    if not np.isfinite(landmarks).all() or (face is not None and not np.isfinite(face).all()):
        raise BadAnnotation(f"{json_path}: non-finite coordinates")
    return face, landmarks


def labelme_image_size(json_path) -> tuple[int, int] | None:
    """The (width, height) a LabelMe file declares for its image, or None when it declares none.

    Raises BadAnnotation naming the file when the fields are present but not positive integers.
    """
    data = io.read_json(json_path)
    w, h = (data.get("imageWidth"), data.get("imageHeight")) if isinstance(data, dict) else (None, None)
    if w is None and h is None:
        return None
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (w, h)):
        raise BadAnnotation(f"{json_path}: imageWidth/imageHeight must be positive integers, got {w!r}/{h!r}")
    return w, h


def _require_dir(path: Path, what: str, layout: str) -> None:
    """Raise FileNotFoundError naming ``path`` and the expected layout if it is not a folder."""
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found: {path} (expected layout: {layout})")


def _check_common(size: int, pad: float, min_crop_side: int) -> None:
    """Validate the parameters both builders share; errors name the parameter."""
    from .config import MAX_CROP_SIZE

    if not isinstance(size, (int, np.integer)) or not 0 < size <= MAX_CROP_SIZE:
        raise ValueError(f"size must be an integer in 1..{MAX_CROP_SIZE} (the crop side in pixels), got {size!r}")
    if not pad > 0:
        raise ValueError(f"pad must be positive, got {pad!r}")
    if min_crop_side < 0:
        raise ValueError(f"min_crop_side must be >= 0, got {min_crop_side!r}")


def _even_subset(n: int, cap: int | None) -> list[int]:
    """Indices of ``cap`` evenly spaced items of a list of ``n`` (all of them when n <= cap or no cap)."""
    if cap is None or n <= cap:
        return list(range(n))
    idx = np.unique(np.round(np.linspace(0, n - 1, cap)).astype(int))
    assert len(idx) == cap
    return idx.tolist()


def build_sftl54(root, crops_dir, *, palette: str = "gray", caps=(600, 80, 200), size: int = CROP_SIZE,
                 pad: float = 1.15, min_crop_side: int = 0, keep_square: bool = False) -> BuildResult:
    """Build SF-TL54 crops into ``crops_dir/<split>/sftl54/sf_<stem>.png``; return records and skips.

    The split is the folder an image sits in; the subject is the first ``_`` field of its name. A
    file is skipped (and named under its reason) when its annotation is missing, unparseable or not
    54 points, its image cannot be read, its crop box is degenerate, or the crop's shorter side is
    below ``min_crop_side``. Caps: when a split has more valid crops than its cap (``caps`` = train,
    val, test; None = no cap), the crops are sorted by (subject, file name) and ``cap`` evenly
    spaced ones are kept (``np.linspace`` indices, rounded), so every subject keeps crops whenever
    the cap is at least the number of subjects. The write-up does not say how it subsampled; this
    rule is our choice. ``palette``: the rendering the crops are cut from, "gray" or "iron", or "mix": each
    subject's frames from the rendering ``mix_palette(subject)`` picks (odd ids iron, even gray), in every
    split; frames of the other rendering are not read. Every record names its ``palette``. Nothing is written
    under ``root``.
    """
    root, crops_dir = Path(root), Path(crops_dir)
    _require_dir(root, "SF-TL54 root", SFTL54_LAYOUT)
    if palette not in PALETTE_CHOICES:
        raise ValueError(f"palette must be one of {', '.join(repr(p) for p in PALETTE_CHOICES)}, got {palette!r}")
    for pal in (PALETTES if palette == "mix" else (palette,)):
        _require_dir(root / pal, f"SF-TL54 palette folder {pal!r}" + (" (palette 'mix' reads both)" if palette == "mix"
                                                                       else ""), SFTL54_LAYOUT)
    _check_common(size, pad, min_crop_side)
    caps = tuple(caps)
    if len(caps) != 3 or any(c is not None and (not isinstance(c, (int, np.integer)) or c < 0) for c in caps):
        raise ValueError(f"caps must be three non-negative integers (train, val, test) or None, got {caps!r}")
    params = {"palette": palette, "caps": list(caps), "size": size, "pad": pad,
              "min_crop_side": min_crop_side, "keep_square": keep_square}
    result = BuildResult("sftl54", [], params=params, info={"available": {}, "upscaled": 0})
    for split, cap in zip(SPLITS, caps):
        cands = []
        for pal in (PALETTES if palette == "mix" else (palette,)):
            _require_dir(root / pal / split / "images", f"SF-TL54 split folder {split!r}", SFTL54_LAYOUT)
            wanted = (lambda sub, pal=pal: mix_palette(sub) == pal) if palette == "mix" else None
            cands += _sftl54_candidates(root, split, pal, pad, keep_square, min_crop_side, result, wanted)
        cands.sort(key=lambda c: (c.subject, c.id))
        result.info["available"][split] = len(cands)
        keep = [cands[i] for i in _even_subset(len(cands), cap)]
        result.records.extend(_write_crops(keep, crops_dir, size))
    result.info["upscaled"] = sum(r["upscaled"] for r in result.records)
    return result


def mix_palette(subject: int) -> str:
    """The rendering a subject's crops come from under palette "mix": "iron" for odd subject ids, "gray" for even."""
    return PALETTES[int(subject) % 2]


def record_palette(record: dict) -> str:
    """A manifest record's palette; records written before the field existed were built from gray frames."""
    return record.get("palette") or DEFAULT_PALETTE


def trained_on(records: list[dict]) -> dict:
    """What a model trained on the ``train`` records of ``records`` saw: ``{"palettes": [...], "datasets": [...]}``,
    both sorted (a record without a palette counts as gray). A kept checkpoint writes it into ``thermsr.json``."""
    train = [r for r in records if r.get("split") == "train"]
    return {"palettes": sorted({record_palette(r) for r in train}),
            "datasets": sorted({r["dataset"] for r in train})}


def _sftl54_candidates(root: Path, split: str, palette: str, pad: float, keep_square: bool,
                       min_crop_side: int, result: BuildResult, wanted=None) -> list[_Candidate]:
    """Every valid SF-TL54 crop of one split in one palette folder (reads each image once to learn its size);
    ``wanted(subject)``, when given, picks the subjects whose frames are read (the others are passed over unread
    and unreported: under palette "mix" they come from the other folder)."""
    img_dir, json_dir = root / palette / split / "images", root / palette / split / "json"
    images = {p.stem: p for p in img_dir.glob("*.png") if p.is_file()}
    jsons = {p.stem: p for p in json_dir.glob("*.json") if p.is_file()} if json_dir.is_dir() else {}
    rel = lambda p: p.relative_to(root).as_posix()  # noqa: E731
    for stem in sorted(set(jsons) - set(images)):
        sub = stem.split("_")[0]
        if wanted is None or not sub.isdigit() or wanted(int(sub)):
            result.skip(R_MISSING_IMAGE, rel(jsons[stem]))
    cands = []
    for stem in sorted(images):
        img_path = images[stem]
        try:
            subject = int(stem.split("_")[0])
        except ValueError:
            result.skip(R_BAD_NAME, rel(img_path))
            continue
        if wanted is not None and not wanted(subject):
            continue
        if stem not in jsons:
            result.skip(R_MISSING_JSON, rel(img_path))
            continue
        try:
            _, landmarks = read_labelme(jsons[stem])
            declared = labelme_image_size(jsons[stem])
        except BadAnnotation:
            result.skip(R_BAD_ANNOTATION, rel(jsons[stem]))
            continue
        except ValueError:
            result.skip(R_UNPARSEABLE_JSON, rel(jsons[stem]))
            continue
        cand = _candidate(img_path, rel(img_path), result,
                          lambda w, h: sftl54_crop_box(landmarks, w, h, pad, keep_square),
                          min_crop_side, declared)
        if cand is None:
            continue
        box, (w, h) = cand
        cands.append(_Candidate(f"sf_{stem}", "sftl54", split, img_path, rel(img_path), subject, box,
                                (w, h), tuple(landmarks[NOSE_TIP]), palette))
    return cands


class NotEightBit(io.ImageReadError):
    """An image stored with more than 8 bits per sample: OpenCV would squeeze it into 8 bits by a shift."""


def read_frame(path: Path) -> np.ndarray:
    """Read an 8-bit image as uint8 BGR H×W×3 (grayscale replicated to 3 channels); ImageReadError names it.

    A 16-bit frame (raw sensor counts, say 7000-8020) is refused with NotEightBit rather than read:
    OpenCV's 8-bit conversion divides by 256 and would turn it into a flat crop (values 27-31).
    """
    import cv2

    img = io.read_image(path, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_COLOR)
    if img.dtype != np.uint8:
        raise NotEightBit(f"{path}: {img.dtype} pixels, values {int(img.min())}-{int(img.max())}; the builder "
                          "reads 8-bit frames: convert it with a fixed temperature range first")
    return img


def _candidate(img_path: Path, name: str, result: BuildResult, box_fn, min_crop_side: int,
               declared_size: tuple[int, int] | None = None):
    """Read ``img_path`` for its size and compute its box with ``box_fn(w, h)``; None (and a counted skip
    named ``name``) if the image is unreadable or not 8-bit, its size differs from ``declared_size`` (the
    annotation's), the box is degenerate, or shorter than min_crop_side."""
    try:
        h, w = read_frame(img_path).shape[:2]
    except NotEightBit:
        result.skip(R_NOT_8BIT, name)
        return None
    except io.ImageReadError:
        result.skip(R_UNREADABLE, name)
        return None
    if declared_size is not None and tuple(declared_size) != (w, h):
        result.skip(R_SIZE_MISMATCH, f"{name} (annotated {declared_size[0]}×{declared_size[1]}, on disk {w}×{h})")
        return None
    try:
        box = box_fn(w, h)
    except DegenerateCrop:
        result.skip(R_DEGENERATE, name)
        return None
    if min(box[2] - box[0], box[3] - box[1]) < min_crop_side:
        result.skip(R_TOO_SMALL, name)
        return None
    return box, (w, h)


def _write_crops(cands: list[_Candidate], crops_dir: Path, size: int) -> list[dict]:
    """Cut, resize and write (atomically) the crops of ``cands``; return their manifest records."""
    records, cache = [], (None, None)
    for c in cands:
        if cache[0] != c.image_path:
            cache = (c.image_path, read_frame(c.image_path))
        crop, upscaled = crop_and_resize(cache[1], c.box, size)
        rel_path = f"{c.split}/{c.dataset}/{c.id}.png"
        io.write_png(crops_dir / rel_path, crop)
        nose = None
        if c.nose_src is not None:
            nose = [round(v, 3) for v in map_point(c.nose_src, c.box, size)]
        records.append({
            "id": c.id, "dataset": c.dataset, "split": c.split, "path": rel_path, "source": c.source,
            "subject": c.subject, "palette": c.palette, "box": [int(v) for v in c.box],
            "source_size": [int(v) for v in c.source_size], "nose": nose, "upscaled": bool(upscaled),
            "sha256": io.pixel_sha256(crop),
        })
    return records


# ---------------------------------------------------------------------------------------------
# ThermEval-D
# ---------------------------------------------------------------------------------------------
def read_coco(path: Path) -> tuple[list[dict], list[dict]]:
    """(images, annotations) of a COCO file; a missing, unparseable or malformed file stops with its name."""
    if not path.is_file():
        raise FileNotFoundError(f"ThermEval-D annotations not found: {path} (expected layout: {THERMEVAL_LAYOUT})")
    data = io.read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise ValueError(f"{path}: not a COCO file (needs 'images' and 'annotations' lists)")
    for what, entries, check in (("images", data["images"], _check_coco_image),
                                 ("annotations", data["annotations"], _check_coco_annotation)):
        for i, entry in enumerate(entries):
            try:
                check(entry)
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{path}: malformed {what}[{i}] ({type(e).__name__}: {e})") from None
    ids = [im["id"] for im in data["images"]]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: duplicate image ids")
    return data["images"], data["annotations"]


def _check_id(value, what: str) -> None:
    """Raise TypeError unless ``value`` can be a COCO id: an integer or a string (not a list, dict or bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"{what} must be an integer or a string, got {type(value).__name__} {value!r:.40}")


def _check_coco_image(im: dict) -> None:
    """Raise KeyError/TypeError if a COCO images[] entry lacks an id or a file_name."""
    if not isinstance(im["file_name"], str):
        raise TypeError("file_name must be a string")
    _check_id(im["id"], "id")


def _check_coco_annotation(a: dict) -> None:
    """Raise KeyError/TypeError/ValueError if a COCO annotation lacks image_id, category_id or a bbox."""
    _check_id(a["image_id"], "image_id")
    int(a["category_id"])
    if len(a["bbox"]) != 4 or not all(math.isfinite(float(v)) for v in a["bbox"]):
        raise ValueError("bbox must be 4 finite numbers")


class OutsideRoot(ValueError):
    """A COCO ``file_name`` that would leave the images folder (absolute, or with a '..' component)."""


def resolve_image(images_dir, file_name: str) -> Path | None:
    """The file on disk for a COCO ``file_name``: the name itself, else the same stem with .png/.jpg/.jpeg.

    ``file_name`` is relative to ``images_dir`` and may not leave it: an absolute name or one with a
    ``..`` component raises OutsideRoot (a hostile annotation must not read files from elsewhere).
    """
    images_dir = Path(images_dir)
    parts = file_name.replace("\\", "/").split("/")
    if Path(file_name).is_absolute() or file_name.startswith(("/", "\\")) or ".." in parts:
        raise OutsideRoot(f"file_name {file_name!r} leaves {images_dir}: use a path relative to it")
    given = images_dir / file_name
    tries = [given] + [given.with_suffix(ext) for ext in IMAGE_EXTS]
    return next((p for p in tries if p.is_file()), None)


def _contains(xywh, pt) -> bool:
    """True if point (x, y) lies in the COCO box [x, y, w, h] (edges included)."""
    x, y, w, h = (float(v) for v in xywh)
    return x <= pt[0] <= x + w and y <= pt[1] <= y + h


def smallest_person(persons: list, nose_pt) -> list | None:
    """The smallest-area Person box [x, y, w, h] that contains ``nose_pt`` (first one on ties), or None."""
    inside = [p for p in persons if float(p[2]) > 0 and float(p[3]) > 0 and _contains(p, nose_pt)]
    return min(inside, key=lambda p: float(p[2]) * float(p[3])) if inside else None


def _thermeval_file(root: Path, ann_name: str, pad: float, keep_square: bool, min_crop_side: int,
                    result: BuildResult) -> list[tuple[str, list[_Candidate]]]:
    """Per image (in the file's images[] order): its key and valid crop candidates (split unset)."""
    images, anns = read_coco(root / "Annotations" / ann_name)
    by_image = {im["id"]: [] for im in images}
    for a in anns:
        if a["image_id"] not in by_image:
            result.skip(R_UNKNOWN_IMAGE, f"Annotations/{ann_name}: image_id {a['image_id']}")
            continue
        by_image[a["image_id"]].append(a)
    out = []
    for im in images:
        file_name = str(im["file_name"])
        noses = [a for a in by_image[im["id"]] if int(a["category_id"]) == NOSE]
        if not noses:
            continue
        try:
            img_path = resolve_image(root / "images", file_name)
        except OutsideRoot:
            result.skip(R_OUTSIDE_ROOT, f"Annotations/{ann_name}: {file_name}")
            continue
        if img_path is None:
            result.skip(R_MISSING_IMAGE, f"Annotations/{ann_name}: images/{file_name}")
            continue
        source = img_path.relative_to(root).as_posix()
        try:
            h, w = read_frame(img_path).shape[:2]
        except NotEightBit:
            result.skip(R_NOT_8BIT, source)
            continue
        except io.ImageReadError:
            result.skip(R_UNREADABLE, source)
            continue
        persons = [a["bbox"] for a in by_image[im["id"]] if int(a["category_id"]) == PERSON]
        cands = []
        for k, nose in enumerate(noses):
            nx, ny, nw, nh = (float(v) for v in nose["bbox"])
            pt = (nx + nw / 2, ny + nh / 2)
            name = f"{source} (nose {k})"
            person = smallest_person(persons, pt)
            if person is None:
                result.skip(R_NO_PERSON, name)
                continue
            try:
                box = thermeval_crop_box(person, w, h, pad, keep_square)
            except DegenerateCrop:
                result.skip(R_DEGENERATE, name)
                continue
            if min(box[2] - box[0], box[3] - box[1]) < min_crop_side:
                result.skip(R_TOO_SMALL, name)
                continue
            stem = Path(file_name).stem
            cands.append(_Candidate(f"te_{stem}_{k}", "thermeval", "", img_path, source, None, box,
                                    (w, h), pt))
        if cands:
            out.append((source, cands))
    return out


def build_thermeval(root, crops_dir, *, seed: int = 7, train_frac: float = 0.7, size: int = CROP_SIZE,
                    pad: float = 1.15, min_crop_side: int = 0, keep_square: bool = False) -> BuildResult:
    """Build ThermEval-D crops into ``crops_dir/<split>/thermeval/te_<stem>_<k>.png``; return records.

    One crop per Nose box (k = its index among the image's Nose annotations, in file order; nose
    point = box centre), cut around the smallest Person box containing it. Splits: the images of
    annotations_1.json that yield at least one crop, in the file's images[] order, are shuffled with
    ``random.Random(seed).shuffle``; the crops of the first ``int(train_frac * n_images)`` go to
    train, the rest to val (whole images, so no source image is in two splits; the write-up's exact
    rule is unknown, this is our reading). annotations_2.json gives test. No cap. A missing root,
    images folder or annotations file raises FileNotFoundError; an unparseable annotations file
    raises ValueError naming it. Nothing is written under ``root``.
    """
    root, crops_dir = Path(root), Path(crops_dir)
    _require_dir(root, "ThermEval-D root", THERMEVAL_LAYOUT)
    _require_dir(root / "images", "ThermEval-D images folder", THERMEVAL_LAYOUT)
    _check_common(size, pad, min_crop_side)
    if not 0 <= train_frac <= 1:
        raise ValueError(f"train_frac must be in [0, 1], got {train_frac!r}")
    params = {"seed": seed, "train_frac": train_frac, "size": size, "pad": pad,
              "min_crop_side": min_crop_side, "keep_square": keep_square}
    result = BuildResult("thermeval", [], params=params, info={"images": {}, "upscaled": 0})
    pool = _thermeval_file(root, "annotations_1.json", pad, keep_square, min_crop_side, result)
    test = _thermeval_file(root, "annotations_2.json", pad, keep_square, min_crop_side, result)
    random.Random(seed).shuffle(pool)
    n_train = int(train_frac * len(pool))
    for split, groups in (("train", pool[:n_train]), ("val", pool[n_train:]), ("test", test)):
        cands = sorted((c for _, cs in groups for c in cs), key=lambda c: (c.source, c.id))
        for c in cands:
            c.split = split
        result.info["images"][split] = len(groups)
        result.records.extend(_write_crops(cands, crops_dir, size))
    result.info["upscaled"] = sum(r["upscaled"] for r in result.records)
    return result


# ---------------------------------------------------------------------------------------------
# Manifest
# ---------------------------------------------------------------------------------------------
def sort_records(records: list[dict]) -> list[dict]:
    """Records in the manifest's stable order: split (train, val, test), then dataset, then id."""
    return sorted(records, key=lambda r: (SPLITS.index(r["split"]), r["dataset"], r["id"]))


def check_disjoint(records: list[dict]) -> None:
    """Raise ValueError naming every SF-TL54 subject or source image that occurs in more than one split."""
    where: dict[tuple, set] = {}
    for r in records:
        where.setdefault(("source image", r["dataset"], r["source"]), set()).add(r["split"])
        if r.get("subject") is not None:
            where.setdefault(("subject", r["dataset"], r["subject"]), set()).add(r["split"])
    clashes = [f"{kind} {key!r} of {ds} is in splits {sorted(s, key=SPLITS.index)}"
               for (kind, ds, key), s in where.items() if len(s) > 1]
    if clashes:
        raise ValueError("splits are not disjoint: " + "; ".join(sorted(clashes)))


def _check_unique_ids(records: list[dict]) -> None:
    """Raise ValueError naming the record ids that occur more than once."""
    seen, dup = set(), set()
    for r in records:
        (dup if r["id"] in seen else seen).add(r["id"])
    if dup:
        raise ValueError(f"duplicate crop ids: {sorted(dup)[:20]}")


class ManifestDiff(NamedTuple):
    """One difference between two record lists: ``kind`` is "added", "removed" or "changed"; ``fields`` names
    the changed fields (empty for added and removed ids). ``str()`` is the sentence a message shows."""
    kind: str
    id: str
    fields: tuple[str, ...] = ()

    def __str__(self):
        return f"{self.kind}: {self.id}" + (f" ({', '.join(self.fields)})" if self.fields else "")


def _with_palette(record: dict) -> dict:
    """``record`` with its ``palette`` filled in: a record written before the field existed reads as gray."""
    return record if "palette" in record else {**record, "palette": record_palette(record)}


def compare_manifests(new_records: list[dict], committed_records: list[dict]) -> list[ManifestDiff]:
    """Differences between two record lists: added, removed, then changed ids (with their fields). A record
    without ``palette`` (a manifest committed before the field existed) compares as gray."""
    new = {r["id"]: _with_palette(r) for r in new_records}
    old = {r["id"]: _with_palette(r) for r in committed_records}
    diffs = [ManifestDiff("added", i) for i in sorted(set(new) - set(old))]
    diffs += [ManifestDiff("removed", i) for i in sorted(set(old) - set(new))]
    for i in sorted(set(new) & set(old)):
        fields = tuple(sorted(k for k in set(new[i]) | set(old[i]) if new[i].get(k) != old[i].get(k)))
        if fields:
            diffs.append(ManifestDiff("changed", i, fields))
    return diffs


def load_manifest(path) -> dict:
    """Read a manifest (or committed manifest) JSON; ValueError naming the file if it is not one. Records
    written before the ``palette`` field existed get ``palette: "gray"`` (what they were built from)."""
    m = io.read_json(path)
    if not isinstance(m, dict) or m.get("schema_version") != SCHEMA_VERSION or not isinstance(m.get("records"), list):
        raise ValueError(f"{path}: not a schema_version {SCHEMA_VERSION} manifest with a 'records' list")
    m["records"] = [_with_palette(r) if isinstance(r, dict) else r for r in m["records"]]
    return m


def read_verified_crops(crops_dir, records: list[dict]) -> list[np.ndarray]:
    """The crops of ``records`` as ``io.read_image`` returns them (uint8 BGR H×W×3), each checked against
    its manifest sha256. Raises CropIntegrityError naming every missing, unreadable or changed crop (all
    files are checked before it is raised)."""
    crops_dir = Path(crops_dir)
    images, missing, bad = [], [], []
    for r in records:
        p = crops_dir / r["path"]
        if not p.is_file():
            missing.append(r["path"])
            continue
        try:
            img = io.read_image(p)
        except io.ImageReadError:
            bad.append(r["path"])
            continue
        if io.pixel_sha256(img) != r["sha256"]:
            bad.append(r["path"])
            continue
        images.append(img)
    if missing or bad:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing: {_head(missing)}")
        if bad:
            parts.append(f"{len(bad)} unreadable or with different pixels: {_head(bad)}")
        raise CropIntegrityError(f"crops in {crops_dir} do not match the manifest; " + "; ".join(parts)
                                 + ". Rebuild them with notebook 01 (or restore the files).", missing, bad)
    return images


def verify_crops(crops_dir, records: list[dict]) -> int:
    """Check every record's crop file exists and its pixel sha256 matches; raise CropIntegrityError naming
    the missing, unreadable and changed files. Returns the number of crops verified."""
    read_verified_crops(crops_dir, records)
    return len(records)


def open_run(profile: str, seed: int, device: str = "auto", *, sweep_point: str = ""):
    """Every notebook's first step: ``(paths, device, records)`` — the run's folders made and everything seeded
    (``config.setup``), the device resolved, and the manifest's records with every crop verified."""
    from .config import resolve_device, setup

    paths = setup(profile, seed, sweep_point=sweep_point)
    return paths, resolve_device(device), load_verified_manifest(paths)["records"]


def load_verified_manifest(paths) -> dict:
    """The run's manifest (``paths.manifest``) after checking every crop under ``paths.crops`` against it.

    ``paths`` is a ``config.RunPaths``. Notebooks 02-06 load the manifest through this, so a crop that
    went missing or changed since notebook 01 stops the run with its name before anything uses it.
    """
    if not Path(paths.manifest).is_file():
        raise FileNotFoundError(f"no manifest at {paths.manifest}: run notebook 01_build_dataset for profile "
                                f"{paths.profile!r} first")
    manifest = load_manifest(paths.manifest)
    verify_crops(paths.crops, manifest["records"])
    return manifest


def _head(items: list, n: int = 20) -> str:
    """The first ``n`` items joined by commas, plus how many more there are."""
    more = f" ... and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(map(str, items[:n])) + more


def _summary(records: list[dict], results: list[BuildResult]) -> dict:
    """Counts per split x dataset, upscaled counts, per-dataset extras and skips (reason -> files)."""
    counts = {s: {d: 0 for d in DATASETS} for s in SPLITS}
    for r in records:
        counts[r["split"]][r["dataset"]] += 1
    for s in SPLITS:
        counts[s]["total"] = sum(counts[s][d] for d in DATASETS)
    palettes = {s: {} for s in SPLITS}
    for r in records:
        pal = palettes[r["split"]]
        pal[record_palette(r)] = pal.get(record_palette(r), 0) + 1
    return {
        "counts": counts,
        "palettes": {s: dict(sorted(c.items())) for s, c in palettes.items()},
        "total": len(records),
        "upscaled": {res.dataset: res.info.get("upscaled", 0) for res in results},
        "available_before_cap": {res.dataset: res.info["available"] for res in results if "available" in res.info},
        "source_images": {res.dataset: res.info["images"] for res in results if "images" in res.info},
        "skipped": {res.dataset: {reason: {"count": len(files), "files": sorted(files)}
                                  for reason, files in sorted(res.skipped.items())} for res in results},
    }


def summary_table(manifest: dict, max_names: int = 20) -> str:
    """Printable counts per split x dataset, upscaled counts, and every skip reason with its files."""
    s = manifest["summary"]
    lines = [f"{'split':<8}" + "".join(f"{d:>11}" for d in DATASETS) + f"{'total':>9}"]
    for split in SPLITS:
        c = s["counts"][split]
        lines.append(f"{split:<8}" + "".join(f"{c[d]:>11}" for d in DATASETS) + f"{c['total']:>9}")
    lines.append(f"{'all':<8}" + "".join(f"{sum(s['counts'][x][d] for x in SPLITS):>11}" for d in DATASETS)
                 + f"{s['total']:>9}")
    if "palettes" in s:
        lines.append("renderings: " + "; ".join(f"{split} " + ", ".join(f"{k} {v}" for k, v in s["palettes"][split].items())
                                                for split in SPLITS if s["palettes"].get(split)))
    for ds, n in s.get("upscaled", {}).items():
        lines.append(f"{ds}: {n} crops upscaled (crop smaller than the output size)")
    for ds, avail in s.get("available_before_cap", {}).items():
        lines.append(f"{ds}: valid crops before the caps: " + ", ".join(f"{k} {v}" for k, v in avail.items()))
    for ds, imgs in s.get("source_images", {}).items():
        lines.append(f"{ds}: source images per split: " + ", ".join(f"{k} {v}" for k, v in imgs.items()))
    skipped = s.get("skipped", {})
    if not any(skipped.values()):
        lines.append("skipped: none")
    for ds, reasons in skipped.items():
        for reason, info in reasons.items():
            lines.append(f"skipped {ds} / {reason}: {info['count']}")
            lines.extend(f"    {name}" for name in info["files"][:max_names])
            if info["count"] > max_names:
                lines.append(f"    ... and {info['count'] - max_names} more (see manifest.json summary)")
    return "\n".join(lines)


def _resolve_params(params: dict) -> dict:
    """The builder parameters with defaults filled in; TypeError naming any unknown key."""
    unknown = sorted(set(params) - set(DEFAULT_PARAMS))
    if unknown:
        raise TypeError(f"unknown build parameter(s) {unknown}; known: {sorted(DEFAULT_PARAMS)}")
    return {**DEFAULT_PARAMS, **params}


def _is_within(a: Path, b: Path) -> bool:
    """True if path ``a`` is ``b`` or lies inside it (both resolved)."""
    a, b = a.resolve(), b.resolve()
    return a == b or b in a.parents


def _clear_stale(crops_dir: Path, records: list[dict]) -> list[str]:
    """Delete PNGs under crops_dir/<split>/<dataset>/ that no record names; return their relative paths."""
    keep = {r["path"] for r in records}
    removed = []
    for split in SPLITS:
        for ds in DATASETS:
            folder = crops_dir / split / ds
            if not folder.is_dir():
                continue
            for p in sorted(folder.glob("*.png")):
                rel = p.relative_to(crops_dir).as_posix()
                if p.is_file() and rel not in keep:
                    p.unlink()
                    removed.append(rel)
    return removed


# The largest fraction of synthetic crops that may differ from the committed manifest in pixels alone (see
# build_dataset's pixel_drift_ok): float rounding differs between CPUs; a code change moves far more crops.
SYNTHETIC_PIXEL_DRIFT_OK = 0.25


def pixel_drift(diffs: list[ManifestDiff]) -> list[str]:
    """The ids among ``compare_manifests`` differences that changed in their pixel hash alone."""
    return [d.id for d in diffs if d.kind == "changed" and d.fields == ("sha256",)]


def build_dataset(crops_dir, *, sftl54_root, thermeval_root, committed_manifest=None,
                  update_committed: bool = False, pixel_drift_ok: float = 0.0, **params) -> dict:
    """Build both datasets' crops and ``crops_dir/manifest.json``; return the manifest.

    ``params`` override DEFAULT_PARAMS (palette, caps, size, pad, min_crop_side, keep_square, seed,
    train_frac). A root of None leaves that dataset out. Crops are written to a staging folder
    first; only when both builds succeed, the splits are disjoint (``check_disjoint``), the ids are
    unique and the committed manifest (if given) agrees, are they moved into place; then PNGs of an
    earlier run that the new manifest does not name are deleted, and the manifest is written last,
    atomically. ``committed_manifest``: a path to a records-only manifest kept in the repository.
    If it exists and the new records differ, ManifestMismatch is raised (nothing in ``crops_dir``
    changes) unless ``update_committed`` is True, which rewrites it; if it does not exist it is
    written. ``pixel_drift_ok``: the largest fraction of crops that may differ from the committed manifest in
    their pixel hash alone (same ids, splits, boxes and noses) without stopping the build; such crops are
    listed in the manifest's ``committed_pixel_drift``. The synthetic generator computes in float32, and
    OpenCV and NumPy pick their SIMD code by CPU, so a few pixels of a few crops round differently on
    another CPU. No absolute path is written anywhere.
    """
    crops_dir = Path(crops_dir)
    p = _resolve_params(params)
    roots = {"sftl54": sftl54_root, "thermeval": thermeval_root}
    if all(r is None for r in roots.values()):
        raise ValueError("nothing to build: both sftl54_root and thermeval_root are None")
    for name, r in roots.items():
        if r is not None and Path(r).exists() and (_is_within(crops_dir, Path(r)) or _is_within(Path(r), crops_dir)):
            raise ValueError(f"crops_dir {crops_dir} and the {name} root {r} overlap; "
                             "crops must never be written inside a raw dataset")
    staging = crops_dir / _STAGING
    if staging.exists():
        shutil.rmtree(staging)
    try:
        results = []
        if sftl54_root is not None:
            results.append(build_sftl54(sftl54_root, staging, **{k: p[k] for k in _SFTL54_KEYS}))
        if thermeval_root is not None:
            results.append(build_thermeval(thermeval_root, staging, **{k: p[k] for k in _THERMEVAL_KEYS}))
        records = sort_records([r for res in results for r in res.records])
        check_disjoint(records)
        _check_unique_ids(records)
        committed = Path(committed_manifest) if committed_manifest is not None else None
        write_committed = committed is not None and (update_committed or not committed.exists())
        drift = []
        if committed is not None and committed.exists() and not update_committed:
            diffs = compare_manifests(records, load_manifest(committed)["records"])
            drift = pixel_drift(diffs)
            if len(drift) == len(diffs) and len(drift) <= pixel_drift_ok * len(records):
                diffs = []
            if diffs:
                raise ManifestMismatch(
                    f"the built records differ from the committed manifest {committed.name} in "
                    f"{len(diffs)} place(s): {_head(diffs)}. Pass update_committed=True to accept them.")
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "params": {**{k: (list(v) if isinstance(v, tuple) else v) for k, v in p.items()},
                       "datasets": [res.dataset for res in results]},
            "summary": _summary(records, results),
            "records": records,
        }
        if drift:
            manifest["committed_pixel_drift"] = drift
        manifest_path = crops_dir / "manifest.json"
        if manifest_path.exists():
            manifest_path.unlink()  # never leave an old manifest beside new crops
        for r in records:
            dest = crops_dir / r["path"]
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / r["path"], dest)
        manifest["summary"]["stale_removed"] = _clear_stale(crops_dir, records)
        io.atomic_write_json(manifest_path, manifest)
        if write_committed:
            io.atomic_write_json(committed, {"schema_version": SCHEMA_VERSION, "records": records})
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest
