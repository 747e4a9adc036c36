"""Procedural thermal faces written in the on-disk layouts of SF-TL54 and ThermEval-D, an offline stand-in for the
real datasets. Every frame is rendered as a temperature map (°C; its people drawn by ``faces``), passed through a
simple camera model (optics blur, auto-gain window, temporal and fixed-pattern noise, 8-bit quantisation) and
written white-hot (and, for SF-TL54, also through a colour palette). Annotations use the real formats, so the
dataset builders read both kinds of data unchanged:

* SF-TL54-like: ``<root>/{gray,iron}/{train,val,test}/{images,json}/`` with LabelMe JSON (a ``face``
  rectangle and 54 landmark points in SF-TL54 order) and ``<root>/metadata.csv``; 464×348 portraits.
* ThermEval-D-like: ``<root>/images/*.png`` and ``<root>/Annotations/annotations_{1,2}.json`` in COCO form
  (Person = 0, Chest = 1, Forehead = 2, Nose = 3; segmentation left empty); 256×192 indoor scenes with one
  to four people. Some ``file_name`` entries end ``.jpg`` while the file on disk is ``.png``, as in the
  real lists, and about one Nose in twenty has no Person box.

Everything is deterministic: each subject, frame, scene and camera draws from its own NumPy generator
seeded from ``seed`` and its index.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from . import io as tio
from .faces import (NOSE_TIP, TEX_DU, Pose, Subject, _box_sd, _cov, canonical_landmarks, make_subject,
                    make_textures, project, render_person)

GENERATOR_VERSION = 3

SFTL54_SIZE = (464, 348)  # width, height (FLIR T540)
THERMEVAL_SIZE = (256, 192)  # width, height (TOPDON TC001+ sensor)
SFTL54_SPLIT_SIZES = (100, 20, 22)  # subjects in train / val / test for the full 142
SFTL54_PALETTES = ("gray", "iron")
THERMEVAL_CATEGORIES = [{"id": i, "name": name, "supercategory": "person"}
                        for i, name in enumerate(("Person", "Chest", "Forehead", "Nose"))]
PERSON, CHEST, FOREHEAD, NOSE = 0, 1, 2, 3
LABELME_VERSION = "4.5.7"
STAMP_NAME = "synthetic.json"
SFTL54_DIRNAME, THERMEVAL_DIRNAME = "SF-TL54", "ThermEval-D"

# Camera models, calibrated so that bicubic x4 on the 192x192 crops scores near real thermal crops.
SFTL54_CAMERA = dict(blur=0.9, noise=1.4, col_std=0.7, row_std=0.4, halo=0.08, detail=0.0, low_pct=0.5, high_pct=99.9)
SFTL54_BLUR_RANGE = (0.75, 1.05)  # per-frame optics blur sigma (focus varies), pixels
THERMEVAL_CAMERA = dict(blur=1.0, noise=2.0, col_std=1.2, row_std=0.6, halo=0.06, detail=0.35, low_pct=1.0,
                        high_pct=99.5)
THERMEVAL_BLUR_RANGE = (0.8, 1.1)

# --- Backgrounds and the camera ---
def _smooth_field(rng, h, w, cells=6):
    """Smooth random field (float32 H×W, unit-ish amplitude) from an upsampled coarse grid."""
    g = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC)


def portrait_background(rng, s: Subject) -> np.ndarray:
    """Studio background temperature map (float32 348×464): cool wall with smooth gradients."""
    w, h = SFTL54_SIZE
    yy = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
    xx = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    T = s.ambient - 0.6 + 0.5 * _smooth_field(rng, h, w, 4) + rng.uniform(-0.5, 0.5) * yy + rng.uniform(-0.4, 0.4) * xx
    if rng.random() < 0.35:  # a warm object or a sunlit patch somewhere behind
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        rr = rng.uniform(20, 80)
        X, Y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        T += rng.uniform(1.0, 4.0) * np.exp(-((X - cx) ** 2 + (Y - cy) ** 2) / (2 * rr * rr))
    return T.astype(np.float32)


@dataclass(frozen=True)
class Camera:
    """A sensor's fixed properties: optics, noise, detail enhancement and fixed-pattern offsets."""

    blur: float  # Gaussian optics blur sigma, pixels (frames may override it)
    noise: float  # temporal noise, std in 8-bit levels
    col_fpn: np.ndarray  # per-column offsets, 8-bit levels
    row_fpn: np.ndarray  # per-row offsets, 8-bit levels
    halo: float = 0.08  # fraction of the signal scattered into a wide blur (lens scatter)
    detail: float = 0.0  # gain of the camera's detail enhancement (unsharp mask, sigma 2 px)
    low_pct: float = 0.5  # auto-gain window: percentiles of the scene
    high_pct: float = 99.9


def make_camera(rng, width, height, *, col_std, row_std, **kw) -> Camera:
    """A camera whose fixed-pattern offsets (std ``col_std``/``row_std`` levels) are drawn once from ``rng``."""
    col = rng.normal(0, col_std, width).astype(np.float32)
    row = rng.normal(0, row_std, height).astype(np.float32)
    return Camera(col_fpn=col, row_fpn=row, **kw)


def expose(T: np.ndarray, cam: Camera, rng, blur: float | None = None) -> np.ndarray:
    """Temperature map (float32 H×W, °C) -> white-hot frame (uint8 H×W) through ``cam``: optics blur and a little
    wide scatter, an auto-gain window from scene percentiles, temporal noise, the camera's detail enhancement,
    column/row fixed-pattern offsets, rounding to 8 bits."""
    sigma = cam.blur if blur is None else blur
    Tb = cv2.GaussianBlur(T, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    if cam.halo > 0:  # a wide blur, made cheaply on a 4x smaller copy
        h, w = T.shape
        small = cv2.resize(T, (max(w // 4, 1), max(h // 4, 1)), interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (0, 0), (6.0 * sigma + 6.0) / 4.0, borderType=cv2.BORDER_REFLECT)
        Tb = (1.0 - cam.halo) * Tb + cam.halo * cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    lo, hi = np.percentile(Tb[::2, ::2], (cam.low_pct, cam.high_pct))
    span = max(float(hi - lo), 2.0)
    lo, hi = lo - 0.03 * span, hi + 0.04 * span
    img = (Tb - lo) * np.float32(255.0 / (hi - lo))
    img += rng.standard_normal(T.shape, dtype=np.float32) * np.float32(cam.noise)
    if cam.detail > 0:
        img += np.float32(cam.detail) * (img - cv2.GaussianBlur(img, (0, 0), 2.0, borderType=cv2.BORDER_REFLECT))
    img += cam.col_fpn[None, :] + cam.row_fpn[:, None]
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def iron(gray: np.ndarray) -> np.ndarray:
    """White-hot uint8 H×W -> an iron-like colour palette (uint8 BGR H×W×3, OpenCV's inferno)."""
    return cv2.applyColorMap(gray, cv2.COLORMAP_INFERNO)


# --- SF-TL54-like portraits ---
def sftl54_split(sub_id: int, n_subjects: int = 142) -> str:
    """Split of a subject: ids 1-100 train, 101-120 val, 121-142 test, scaled for other subject counts."""
    if not 1 <= sub_id <= n_subjects:
        raise ValueError(f"sub_id {sub_id} outside 1..{n_subjects}")
    total = sum(SFTL54_SPLIT_SIZES)
    n_train = round(n_subjects * SFTL54_SPLIT_SIZES[0] / total)
    n_val = round(n_subjects * SFTL54_SPLIT_SIZES[1] / total)
    if n_subjects >= 3:
        n_val = max(n_val, 1)
        n_train = min(max(n_train, 1), n_subjects - n_val - 1)
    if sub_id <= n_train:
        return "train"
    return "val" if sub_id <= n_train + n_val else "test"


def sftl54_pose(s: Subject, rng) -> Pose:
    """A frame's pose for a studio portrait: roughly frontal, small translation/roll/yaw/scale changes."""
    w, h = SFTL54_SIZE
    scale = s.half_width * float(rng.uniform(0.96, 1.04))
    top = (s.skull_len * (1.0 + s.hair_volume) - s.v_widest) * scale  # eye line to top of the hair
    chin = (s.v_widest + s.jaw_len) * scale  # eye line to chin
    cy = min(max(top + 6.0, 0.36 * h), h - chin - 24.0) + float(np.clip(rng.normal(0, 6), -12, 12))
    return Pose(cx=w / 2 + float(rng.normal(0, 12)), cy=cy, scale=scale, roll=float(rng.normal(0, 0.05)),
                yaw=float(np.clip(rng.normal(0, 0.07), -0.18, 0.18)),
                mouth_open=float(rng.random() < 0.25) * float(rng.uniform(0.3, 1.0)),
                skin_dt=float(rng.normal(0, 0.15)), breath=float(rng.normal(0, 0.5)))


def render_sftl54_frame(s: Subject, pose: Pose, tex: dict, cam: Camera, rng) -> tuple:
    """One portrait: ``(gray uint8 348×464, landmarks float64 (54, 2) in pixels, face box [x0, y0, x1, y1])``."""
    T = portrait_background(np.random.default_rng(s.tex_seed + 1), s)
    T += float(rng.normal(0, 0.1))
    render_person(T, s, pose, tex)
    return expose(T, cam, rng), project(s, pose, canonical_landmarks(s, pose.mouth_open)), face_box(s, pose)


def face_box(s: Subject, pose: Pose) -> list:
    """Face rectangle [x0, y0, x1, y1] in pixels: jaw contour plus the forehead up to the hairline."""
    lm = canonical_landmarks(s)[:17]
    top = min(s.hairline, -0.9) if s.hair != "bald" else -1.1
    fore = np.stack([np.linspace(-0.85, 0.85, 5), np.full(5, top)], 1)
    return _frame_box(s, pose, np.concatenate([lm, fore]), SFTL54_SIZE)


def _frame_box(s: Subject, pose: Pose, pts, size) -> list:
    """[x0, y0, x1, y1] around face-unit points after projection, clipped to a frame of ``size`` (width, height)."""
    p = project(s, pose, pts)
    (x0, y0), (x1, y1) = np.clip(p.min(0), 0, size), np.clip(p.max(0), 0, size)
    return [float(x0), float(y0), float(x1), float(y1)]


def _labelme(name: str, box, lm) -> dict:
    """LabelMe annotation: a ``face`` rectangle then 54 point shapes in SF-TL54 order."""
    def shape(label, pts, kind):  # coordinates rounded to 0.01 px
        return {"label": label, "points": [[round(float(x), 2), round(float(y), 2)] for x, y in pts],
                "group_id": None, "shape_type": kind, "flags": {}}
    shapes = [shape("face", [box[:2], box[2:]], "rectangle")]
    shapes += [shape(str(i + 1), [p], "point") for i, p in enumerate(lm)]
    return {"version": LABELME_VERSION, "flags": {}, "shapes": shapes, "imagePath": f"../images/{name}.png",
            "imageData": None, "imageHeight": SFTL54_SIZE[1], "imageWidth": SFTL54_SIZE[0]}


def write_sftl54(root, n_subjects=142, frames_per_subject=3, seed=0, palettes=("gray", "iron")) -> dict:
    """Write an SF-TL54-like dataset under ``root``; returns counts per split and palette."""
    root = Path(root)
    if n_subjects < 1 or frames_per_subject < 1:
        raise ValueError(f"n_subjects and frames_per_subject must be >= 1, got {n_subjects}, {frames_per_subject}")
    if bad := [p for p in palettes if p not in SFTL54_PALETTES]:
        raise ValueError(f"unknown palette(s) {bad}; choose from {SFTL54_PALETTES}")
    cam = make_camera(np.random.default_rng([seed, 540]), *SFTL54_SIZE, **SFTL54_CAMERA)
    rows, counts = [], {sp: 0 for sp in ("train", "val", "test")}
    for sub_id in range(1, n_subjects + 1):
        s = make_subject(sub_id, np.random.default_rng([seed, 54, sub_id]))
        split = sftl54_split(sub_id, n_subjects)
        tex = make_textures(s)
        rows.append({"sub_id": sub_id, "split": split, "sex": s.sex, "glasses": int(s.glasses), "hair": s.hair,
                     "beard": int(s.beard > 0)})
        for k in range(frames_per_subject):
            frng = np.random.default_rng([seed, 54, sub_id, k + 1])
            pose = sftl54_pose(s, frng)
            focus = replace(cam, blur=float(frng.uniform(*SFTL54_BLUR_RANGE)))
            gray, lm, box = render_sftl54_frame(s, pose, tex, focus, frng)
            name = f"{sub_id:03d}_1_{k % 3 + 1}_{k // 3 + 1}_{k + 1:03d}"
            ann = _labelme(name, box, lm)
            for pal in palettes:
                img = gray if pal == "gray" else iron(gray)  # gray: one channel, white-hot
                tio.write_png(root / pal / split / "images" / f"{name}.png", img)
                tio.atomic_write_json(root / pal / split / "json" / f"{name}.json", ann)
            counts[split] += 1
    lines = [",".join(rows[0])] + [",".join(str(v) for v in row.values()) for row in rows]  # nothing needs quoting
    tio.atomic_write_text(root / "metadata.csv", "\n".join(lines) + "\n")
    return {"subjects": n_subjects, "frames": sum(counts.values()), "frames_per_split": counts,
            "palettes": list(palettes)}


GALLERY = (  # (label, subject changes, pose changes, face scale): one generator parameter at a time
    ("frontal", {}, {}, 1.0), ("turned left", {}, {"yaw": -0.18}, 1.0), ("turned right", {}, {"yaw": 0.18}, 1.0),
    ("tilted", {}, {"roll": 0.15}, 1.0), ("mouth open", {}, {"mouth_open": 1.0}, 1.0),
    ("long hair", {"hair": "long", "hair_len": 3.0}, {}, 1.0),
    ("curly hair", {"hair": "curly", "hair_volume": 0.25}, {}, 1.0),
    ("bald", {"hair": "bald", "hairline": -1.9}, {}, 1.0), ("glasses", {"glasses": True}, {}, 1.0),
    ("beard", {"beard": 0.8}, {}, 1.0), ("farther away", {}, {}, 0.6), ("cold nose", {"nose_cool": 3.4}, {}, 1.0),
)


def gallery(seed: int = 0, sub_id: int = 1) -> list[tuple[str, np.ndarray]]:
    """One subject rendered as an SF-TL54-like portrait under each of ``GALLERY``'s changes:
    ``[(label, uint8 348×464 white-hot frame)]``. The camera, focus and noise are the dataset's."""
    base = make_subject(sub_id, np.random.default_rng([seed, 54, sub_id]))
    cam = replace(make_camera(np.random.default_rng([seed, 540]), *SFTL54_SIZE, **SFTL54_CAMERA), blur=0.9)
    out = []
    for label, subject_changes, pose_changes, scale in GALLERY:
        s = replace(base, **subject_changes)
        pose = replace(sftl54_pose(s, np.random.default_rng([seed, 54, sub_id, 1])), yaw=0.0, roll=0.0,
                       mouth_open=0.0)
        pose = replace(pose, scale=pose.scale * scale, **pose_changes)
        frame_rng = np.random.default_rng([seed, 54, sub_id, 99])
        out.append((label, render_sftl54_frame(s, pose, make_textures(s), cam, frame_rng)[0]))
    return out

# --- ThermEval-D-like indoor scenes ---
def indoor_background(rng, ambient: float) -> np.ndarray:
    """Indoor scene temperature map (float32 192×256): walls, floor and warm or cold clutter."""
    w, h = THERMEVAL_SIZE
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    T = ambient + 0.35 * _smooth_field(rng, h, w, 5) + rng.uniform(-0.8, 0.8) * (yy / h - 0.5)
    horizon = rng.uniform(0.45, 0.8) * h
    T += np.where(yy > horizon, rng.uniform(-1.5, 0.5) + 0.8 * (yy - horizon) / h, 0.0).astype(np.float32)
    if rng.random() < 0.5:  # wall corner
        xc = rng.uniform(0.1, 0.9) * w
        T += np.where((xx > xc) & (yy < horizon), rng.uniform(-0.8, 0.8), 0.0).astype(np.float32)

    def rect(x0, y0, x1, y1, value, r=1.0):
        """Paint an antialiased rounded rectangle of temperature ``value``; returns its coverage."""
        a = _cov(_box_sd(xx, yy, (x0 + x1) / 2, (y0 + y1) / 2, abs(x1 - x0) / 2, abs(y1 - y0) / 2, r), 1.0)
        T[...] += a * (value - T)
        return a

    for _ in range(int(rng.integers(2, 6))):
        kind = rng.choice(["monitor", "window", "radiator", "desk", "lamp", "cup", "door", "shelf"])
        x0, y0 = rng.uniform(-0.1, 0.9) * w, rng.uniform(0.05, 0.85) * h
        if kind == "monitor":
            ww, hh = rng.uniform(30, 90), rng.uniform(22, 55)
            rect(x0, y0, x0 + ww, y0 + hh, ambient + rng.uniform(1.0, 3.0))
            rect(x0 + 2, y0 + 2, x0 + ww - 2, y0 + hh - 2, ambient + rng.uniform(3.0, 9.0))
            rect(x0 + ww * 0.2, y0 + hh - 3, x0 + ww * 0.8, y0 + hh, ambient + rng.uniform(6.0, 12.0), 0.5)
        elif kind == "window":
            ww, hh = rng.uniform(40, 110), rng.uniform(40, 90)
            rect(x0, y0, x0 + ww, y0 + hh, ambient - rng.uniform(2.0, 7.0))
            rect(x0 + ww / 2 - 1.5, y0, x0 + ww / 2 + 1.5, y0 + hh, ambient - 0.5, 0.0)
        elif kind == "radiator":
            ww, hh = rng.uniform(35, 90), rng.uniform(18, 40)
            hot = ambient + rng.uniform(8, 25)
            a = rect(x0, y0, x0 + ww, y0 + hh, hot)
            fins = 0.5 + 0.5 * np.cos(2 * np.pi * (xx - x0) / rng.uniform(4, 7))
            T[...] -= a * fins * (hot - ambient) * 0.35
        elif kind == "desk":
            top = rng.uniform(0.55, 0.85) * h
            rect(x0 - 40, top, x0 + rng.uniform(60, 160), h + 5, ambient + rng.uniform(-1.0, 1.0), 0.0)
            rect(x0 - 40, top, x0 + rng.uniform(60, 160), top + 2, ambient + rng.uniform(0.5, 2.0), 0.0)
        elif kind == "lamp":
            rr = rng.uniform(3, 8)
            a = _cov(np.hypot(xx - x0, yy - y0) - rr, 1.0)
            T[...] += a * (ambient + rng.uniform(20, 45) - T)
            T[...] += rng.uniform(1, 4) * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * (4 * rr) ** 2))
        elif kind == "cup":
            ww, hh = rng.uniform(5, 10), rng.uniform(7, 12)
            rect(x0, y0, x0 + ww, y0 + hh, ambient + rng.uniform(15, 35), 1.5)
        elif kind == "door":
            ww = rng.uniform(40, 70)
            rect(x0, 0.1 * h, x0 + ww, horizon + 2, ambient + rng.uniform(-1.2, 1.2), 0.0)
            rect(x0 + ww - 8, 0.45 * h, x0 + ww - 4, 0.45 * h + 3, ambient - 1.5, 0.5)
        else:  # shelf with items
            ww = rng.uniform(50, 120)
            rect(x0, y0, x0 + ww, y0 + 3, ambient - 0.6, 0.0)
            for _ in range(int(rng.integers(2, 6))):
                bx = x0 + rng.uniform(0, ww - 6)
                bh = rng.uniform(6, 18)
                rect(bx, y0 - bh, bx + rng.uniform(3, 10), y0, ambient + rng.uniform(-1.5, 1.5), 0.0)
    return T.astype(np.float32)


# Where people stand in a scene: (range of face scales in pixels per face unit, range of the face's height / frame)
_PLACES = {"far": ((3.2, 6.5), (0.1, 0.35)), "mid": ((8.0, 16.0), (0.25, 0.55)), "close": ((20.0, 40.0), (0.3, 0.6))}


def _scene_people(rng, seed: int, scene: int) -> list:
    """1-4 (subject, pose, full_body) triples for one indoor scene, drawn far to near."""
    w, h = THERMEVAL_SIZE
    n = int(rng.choice([1, 2, 3, 4], p=[0.35, 0.3, 0.2, 0.15]))
    people = []
    for i in range(n):
        s = make_subject(10_000 + i, np.random.default_rng([seed, 256, scene, i]))
        kind = rng.choice(["far", "mid", "close"], p=[0.25, 0.5, 0.25] if n > 1 else [0.15, 0.45, 0.4])
        scales, heights = _PLACES[kind]
        scale, full = float(rng.uniform(*scales)), bool(kind == "far")  # far away: a standing person, seen whole
        cy = float(rng.uniform(*heights)) * h
        cx = float(rng.uniform(-0.05, 1.05)) * w
        pose = Pose(cx=cx, cy=cy, scale=scale, roll=float(rng.normal(0, 0.08)),
                    yaw=float(np.clip(rng.normal(0, 0.08), -0.18, 0.18)),
                    mouth_open=float(rng.random() < 0.2) * float(rng.uniform(0.2, 1.0)),
                    skin_dt=float(rng.normal(0, 0.4)), breath=float(rng.normal(0, 0.6)),
                    back_view=bool(rng.random() < 0.08))
        people.append((s, pose, full))
    people.sort(key=lambda p: p[1].scale)
    return people


def _proj_box(s: Subject, pose: Pose, u0, v0, u1, v1) -> list | None:
    """COCO box of a face-unit rectangle after projection, clipped to the frame; None if under 2 px."""
    g = np.stack(np.meshgrid(np.linspace(u0, u1, 5), np.linspace(v0, v1, 5)), -1).reshape(-1, 2)
    x0, y0, x1, y1 = _frame_box(s, pose, g, THERMEVAL_SIZE)
    return None if x1 - x0 < 2 or y1 - y0 < 2 else [x0, y0, x1 - x0, y1 - y0]


def render_thermeval_frame(seed: int, scene: int, cam: Camera) -> tuple:
    """One indoor frame: ``(gray uint8 192×256, [(category_id, bbox), ...])``."""
    w, h = THERMEVAL_SIZE
    rng = np.random.default_rng([seed, 256, scene])
    ambient = float(rng.uniform(21.0, 27.0))
    T = indoor_background(rng, ambient)
    people = _scene_people(rng, seed, scene)
    owner = np.full((h, w), -1, np.int16)
    drawn = []
    for k, (s, pose, full) in enumerate(people):
        s = replace(s, ambient=ambient)
        roi, alpha = render_person(T, s, pose, make_textures(s, du=max(TEX_DU, 0.45 / pose.scale)), full_body=full)
        if roi is None:
            continue
        y0, y1, x0, x1 = roi
        owner[y0:y1, x0:x1][alpha > 0.5] = k
        drawn.append((k, s, pose, roi, alpha))
    anns = []
    drop_rng = np.random.default_rng([seed, 256, scene, 99])
    for k, s, pose, roi, alpha in drawn:
        y0, y1, x0, x1 = roi
        body = alpha > 0.5
        n_vis = int((body & (owner[y0:y1, x0:x1] == k)).sum())
        if n_vis < 20 or n_vis < 0.3 * int(body.sum()):  # mostly hidden behind someone nearer: not labelled
            continue
        ys, xs = np.nonzero(body)  # the person's full extent inside the frame, as annotators draw it
        pbox = [float(x0 + xs.min()), float(y0 + ys.min()), float(xs.max() - xs.min() + 1),
                float(ys.max() - ys.min() + 1)]
        nose = None
        if not pose.back_view:
            nx, ny = project(s, pose, canonical_landmarks(s)[NOSE_TIP:NOSE_TIP + 1])[0]
            ix, iy = int(np.floor(nx)), int(np.floor(ny))
            if 1 <= nx < w - 1 and 1 <= ny < h - 1 and owner[iy, ix] == k:
                side = float(np.clip(round(0.45 * pose.scale), 3, 8))
                nose = [round(nx - side / 2, 2), round(ny - side / 2, 2), side, side]
        if nose is None or drop_rng.random() >= 0.05:  # about one Nose in twenty has no Person box
            anns.append((PERSON, pbox))
        if nose is not None:
            anns.append((NOSE, nose))
            fb = _proj_box(s, pose, -0.55, -1.0 if s.hair != "bald" else -1.2, 0.55, -0.45)
            if fb is not None and pose.scale >= 6:
                anns.append((FOREHEAD, fb))
        cb = _proj_box(s, pose, -1.0, s.v_widest + s.jaw_len + 1.6, 1.0, s.v_widest + s.jaw_len + 3.2)
        if cb is not None and not pose.back_view and pose.scale >= 6:
            anns.append((CHEST, cb))
    return expose(T, cam, rng, blur=float(rng.uniform(*THERMEVAL_BLUR_RANGE))), anns


def write_thermeval(root, frames_file1=40, frames_file2=36, seed=0) -> dict:
    """Write a ThermEval-D-like dataset under ``root``; returns frame and annotation counts."""
    root = Path(root)
    if frames_file1 < 0 or frames_file2 < 0:
        raise ValueError(f"frame counts must be >= 0, got {frames_file1}, {frames_file2}")
    w, h = THERMEVAL_SIZE
    cam = make_camera(np.random.default_rng([seed, 2560]), w, h, **THERMEVAL_CAMERA)
    summary = {"frames": 0, "persons": 0, "noses": 0, "noses_without_person": 0}
    ann_id, scene = 1, 0
    for file_no, n_frames in ((1, frames_file1), (2, frames_file2)):
        coco = {"info": {"description": "synthetic ThermEval-D-like frames", "version": str(GENERATOR_VERSION)},
                "images": [], "annotations": [], "categories": THERMEVAL_CATEGORIES}
        for _ in range(n_frames):
            scene += 1
            gray, anns = render_thermeval_frame(seed, scene, cam)
            stem = f"rec{file_no}{(scene - 1) // 12:02d}_{scene:05d}"
            tio.write_png(root / "images" / f"{stem}.png", gray)
            listed = f"{stem}.jpg" if scene % 3 == 0 else f"{stem}.png"  # the real file lists mix both
            coco["images"].append({"id": scene, "file_name": listed, "width": w, "height": h})
            for cat, box in anns:
                box = [round(float(b), 2) for b in box]
                coco["annotations"].append({"id": ann_id, "image_id": scene, "category_id": cat, "bbox": box,
                                            "segmentation": [], "area": round(box[2] * box[3], 2), "iscrowd": 0})
                ann_id += 1
            summary["persons"] += sum(c == PERSON for c, _ in anns)
            summary["noses"] += sum(c == NOSE for c, _ in anns)
            summary["noses_without_person"] += _orphan_noses(anns)
            summary["frames"] += 1
        tio.atomic_write_json(root / "Annotations" / f"annotations_{file_no}.json", coco)
        summary[f"frames_file{file_no}"] = n_frames
    return summary


def _orphan_noses(anns) -> int:
    """Nose boxes that no Person box of the same frame contains."""
    persons = [b for c, b in anns if c == PERSON]
    centres = [(b[0] + b[2] / 2, b[1] + b[3] / 2) for c, b in anns if c == NOSE]
    return sum(not any(p[0] <= x <= p[0] + p[2] and p[1] <= y <= p[1] + p[3] for p in persons) for x, y in centres)


# --- Generate once, reuse while the parameters stay the same ---
def _is_current(base: Path, stamp: dict) -> bool:
    """True when ``base`` holds both datasets and a stamp equal to ``stamp``."""
    if not ((base / SFTL54_DIRNAME).is_dir() and (base / THERMEVAL_DIRNAME).is_dir()):
        return False
    try:
        old = tio.read_json(base / STAMP_NAME)
    except (FileNotFoundError, ValueError):
        return False
    return isinstance(old, dict) and {k: old.get(k) for k in stamp} == stamp


def ensure_synthetic(base, *, seed, sftl54_subjects, sftl54_frames_per_subject,
                     thermeval_frames_file1, thermeval_frames_file2) -> tuple[Path, Path]:
    """Generate both synthetic datasets under ``base`` unless an identical set is already there; returns
    ``(base/"SF-TL54", base/"ThermEval-D")``. A new set is written into a temporary sibling folder and renamed into
    place, with the stamp ``base/synthetic.json`` written last, so an interrupted run never leaves a set that looks
    complete. The whole of ``base`` is replaced on regeneration."""
    base = Path(base)
    stamp = {"generator_version": GENERATOR_VERSION, "seed": int(seed),  # what fully determines the files
             "sftl54_subjects": int(sftl54_subjects), "sftl54_frames_per_subject": int(sftl54_frames_per_subject),
             "thermeval_frames_file1": int(thermeval_frames_file1),
             "thermeval_frames_file2": int(thermeval_frames_file2)}
    tio.remove_leftovers(base)          # the temporary folders of a generation that was killed, also beside a set
    if not _is_current(base, stamp):    # that is current
        base.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=tio.temp_prefix(base), dir=base.parent))
        try:
            sf = write_sftl54(tmp / SFTL54_DIRNAME, sftl54_subjects, sftl54_frames_per_subject, seed)
            te = write_thermeval(tmp / THERMEVAL_DIRNAME, thermeval_frames_file1, thermeval_frames_file2, seed)
            tio.atomic_write_json(tmp / STAMP_NAME, {**stamp, "sftl54": sf, "thermeval": te})
            _swap_in(tmp, base, stamp)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return base / SFTL54_DIRNAME, base / THERMEVAL_DIRNAME


def _swap_in(tmp: Path, base: Path, stamp: dict) -> None:
    """Move the finished folder ``tmp`` to ``base``, retiring any old ``base`` first."""
    old = None
    if base.exists():
        if _is_current(base, stamp):  # a concurrent run finished the same set first
            return
        old = Path(tempfile.mkdtemp(prefix=tio.temp_prefix(base, "old"), dir=base.parent))
        os.replace(base, old / "data")
    os.replace(tmp, base)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)

