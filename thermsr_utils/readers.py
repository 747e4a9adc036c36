"""The raw datasets' readers: SF-TL54 (LabelMe landmarks, one folder per palette and split) and ThermEval-D
(COCO Person and Nose boxes) folders → 192×192 HR crops and their manifest records, every skipped file named
under its reason. ``manifests.build_dataset`` runs both and writes the manifest.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import io
from .data import (N_LANDMARKS, NOSE_TIP, SPLITS, DegenerateCrop, crop_and_resize, map_point,
                   sftl54_crop_box, thermeval_crop_box)

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
_RECORD_FIELDS = ("id", "dataset", "split", "path", "source", "subject", "palette", "box", "source_size", "nose",
                  "upscaled", "sha256")
# SF-TL54's renderings (palette folders) and the builder's palette choices: one of them, or "mix", where each
# subject's crops all come from one rendering, chosen by ``mix_palette`` (subject id parity), so the splits stay
# subject-disjoint and every split holds both renderings.
PALETTES = ("gray", "iron")
PALETTE_CHOICES = PALETTES + ("mix",)
TRAIN_FRAC = 0.7            # ThermEval-D: share of annotations_1's images in train (the rest is val)
DEFAULT_PALETTE = "gray"    # what a record without a ``palette`` field (a manifest written before it) was built from


class BadAnnotation(ValueError):
    """An annotation file that parses but does not hold what the protocol needs; names the file."""


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


# ---- SF-TL54 ----
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


def build_sftl54(root, crops_dir, *, palette: str, caps, size: int, pad: float, min_crop_side: int,
                 keep_square: bool = False) -> BuildResult:
    """Build SF-TL54 crops into ``crops_dir/<split>/sftl54/sf_<stem>.png``; return records and skips. The values
    come from notebook 01's parameters (``palette``, ``caps`` = its sftl54_max_*, ``size`` = crop_size, ``pad`` =
    crop_pad, ``min_crop_side``).

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


# ---- ThermEval-D ----
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


def build_thermeval(root, crops_dir, *, seed: int, size: int, pad: float, min_crop_side: int,
                    train_frac: float = TRAIN_FRAC, keep_square: bool = False) -> BuildResult:
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
