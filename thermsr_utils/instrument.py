"""Does a landmark model read the test faces? Its five points against the annotated ones, and how far its nose
moves under the degradations measured on real thermal face crops.

``downstream.nose_errors`` is only as good as the model behind it: if it puts the nose 20 px from the face's nose,
what moves its estimate between HR and SR is not the nose. ``check`` measures on one dataset's HR test crops the
detection rate, the median distance of each of the five points (eye centres, nose tip, mouth corners) to the
annotation's (SF-TL54: eye centre = mean of six eyelid points; ThermEval-D: only the nose, its box centre), and the
nose's displacement under blur σ 1 / σ 2 and bicubic ×4, beside the figures of 115 real thermal face crops.
``targets`` turns that into notebook 02's pass/fail lines; a dataset a model fails gets no downstream verdict.

Annotations have pixel *corners* at integers (pixel i covers [i, i + 1)), the models pixel *centres*: the truth is
shifted by ``to_pixel_centres`` (− 0.5 px) before any distance is taken.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .data import CROP_SIZE, SCALE, map_point
from .readers import read_labelme

POINTS = ("left eye", "right eye", "nose tip", "left mouth corner", "right mouth corner")  # image left/right
NOSE = 2
# 0-based SF-TL54 landmark indices behind each of the five points
_EYES = (slice(36, 42), slice(42, 48))
_NOSE_TIP, _MOUTH = 30, (48, 50)
PERTURBATIONS = ("blur σ1", "blur σ2", "bicubic ×4")
# Measured on 115 real thermal face crops (DESIGN §4): detection rate, noise floor (px), nose displacement (px)
REAL_CROPS = {
    "retinaface": {"detected": 0.90, "floor": 0.66, "blur σ1": 1.71, "blur σ2": 4.39, "bicubic ×4": 3.31},
    "dlib": {"detected": 0.86, "floor": 1.79, "blur σ1": 1.68, "blur σ2": 3.01, "bicubic ×4": 2.77},
}
TARGETS = {"detected": 0.95, "nose_px": 3.0, "ratio": 1.5}   # ≥ detected, ≤ nose_px (192-px crop), within ×ratio
DETECTION_TARGET_DATASETS = ("SF-TL54",)  # face-sized crops; ThermEval-D's faces are a few pixels of a person crop


def to_pixel_centres(xy) -> np.ndarray:
    """Annotation coordinates (pixel corners at integers) → the landmark models' (pixel centres at integers)."""
    return np.asarray(xy, dtype=np.float64) - 0.5


def five_points(landmarks) -> np.ndarray:
    """SF-TL54's 54 landmarks (54×2) → the five points in ``POINTS`` order (5×2), same coordinates."""
    lm = np.asarray(landmarks, dtype=np.float64)
    return np.stack([lm[_EYES[0]].mean(0), lm[_EYES[1]].mean(0), lm[_NOSE_TIP], lm[_MOUTH[0]], lm[_MOUTH[1]]])


def truth_points(records: list[dict], sftl54_root, size: int = CROP_SIZE) -> dict[str, list]:
    """{crop id: 5×2 list} of the annotated five points in crop pixel centres: SF-TL54 from its LabelMe file
    (``<root>/<palette>/<split>/json/<stem>.json``), ThermEval-D the nose only (the others None)."""
    out, root = {}, Path(sftl54_root)
    for r in records:
        if r["dataset"] == "sftl54":
            src = Path(r["source"])            # <palette>/<split>/images/<stem>.png
            _, lm = read_labelme(root / src.parent.parent / "json" / f"{src.stem}.json")
            pts = to_pixel_centres([map_point(p, r["box"], size) for p in five_points(lm)])
            out[r["id"]] = [[round(float(x), 3), round(float(y), 3)] for x, y in pts]
        else:
            pts = [None] * len(POINTS)
            if r.get("nose") is not None:
                x, y = to_pixel_centres(r["nose"])
                pts[NOSE] = [round(float(x), 3), round(float(y), 3)]
            out[r["id"]] = pts
    return out


def truth_array(truth: dict, ids) -> np.ndarray:
    """len(ids)×5×2 float array from ``truth_points``' dict (NaN where unknown or the id is missing)."""
    out = np.full((len(ids), len(POINTS), 2), np.nan)
    for i, cid in enumerate(ids):
        for j, p in enumerate(truth.get(cid) or []):
            if p is not None:
                out[i, j] = p
    return out


def perturb(images_bgr: np.ndarray, name: str, scale: int = SCALE) -> np.ndarray:
    """The HR crops under one of ``PERTURBATIONS`` (uint8 N×H×W×3 in and out)."""
    import cv2

    if name in ("blur σ1", "blur σ2"):
        sigma = 1.0 if name == "blur σ1" else 2.0
        return np.stack([cv2.GaussianBlur(im, (0, 0), sigma, borderType=cv2.BORDER_REFLECT) for im in images_bgr])
    if name == "bicubic ×4":
        h, w = images_bgr.shape[1:3]
        return np.stack([cv2.resize(cv2.resize(im, (w // scale, h // scale), interpolation=cv2.INTER_AREA), (w, h),
                                    interpolation=cv2.INTER_CUBIC) for im in images_bgr])
    raise ValueError(f"unknown perturbation {name!r}; choose one of {', '.join(PERTURBATIONS)}")


def five_from(locator, images_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N×5×2 points of the best face, NaN where none; N bool found) from a locator with ``detect``; a locator
    without it (nose only) fills the nose and leaves the other four NaN."""
    n = len(images_bgr)
    pts = np.full((n, len(POINTS), 2), np.nan)
    found = np.zeros(n, bool)
    if hasattr(locator, "detect"):
        for i, face in enumerate(locator.detect(images_bgr)):
            if len(face["scores"]):
                pts[i] = face["landmarks"][0]
                found[i] = True
    else:
        xy, found = locator.locate(images_bgr)
        found = np.asarray(found, bool)
        pts[found, NOSE] = np.asarray(xy)[found]
    return pts, found


def _median(x) -> float | None:
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    return float(np.median(x)) if len(x) else None


def real_key(locator) -> str | None:
    """Which real-crop reference row a locator matches ("retinaface", "dlib") by its name; None if neither."""
    name = str(getattr(locator, "name", "")).lower()
    return next((k for k in REAL_CROPS if k in name), None)


def check(locator, images_bgr: np.ndarray, truth: np.ndarray) -> dict:
    """The instrument check of one model on HR crops (uint8 BGR N×H×W×3) against ``truth`` N×5×2 (pixel centres,
    NaN where unknown), as JSON data: n, detected, per point median distance to the truth (and over how many crops),
    median nose displacement per perturbation (px), and the ``REAL_CROPS`` reference of the model."""
    truth = np.asarray(truth, dtype=np.float64)
    if truth.shape != (len(images_bgr), len(POINTS), 2):
        raise ValueError(f"truth must have shape ({len(images_bgr)}, {len(POINTS)}, 2), got {truth.shape}")
    pts, found = five_from(locator, images_bgr)
    dist = np.linalg.norm(pts - truth, axis=2)              # NaN where not found or not annotated
    out = {"locator": getattr(locator, "name", type(locator).__name__), "n": int(len(images_bgr)),
           "detected": float(found.mean()) if len(found) else None,
           "to_truth_px": {p: _median(dist[:, j]) for j, p in enumerate(POINTS)},
           "to_truth_n": {p: int(np.isfinite(dist[:, j]).sum()) for j, p in enumerate(POINTS)},
           "displacement_px": {}, "displacement_n": {}}
    for name in PERTURBATIONS:
        moved, ok = five_from(locator, perturb(images_bgr, name))
        d = np.linalg.norm(moved[:, NOSE] - pts[:, NOSE], axis=1)
        out["displacement_px"][name] = _median(d)
        out["displacement_n"][name] = int(np.isfinite(d).sum())
    out["real_crops"] = REAL_CROPS.get(real_key(locator))
    return out


def targets(result: dict, dataset: str | None = None, *, with_displacements: bool = True) -> dict[str, bool | None]:
    """Which of ``TARGETS`` a ``check`` result meets: "detected" (face-crop datasets only), "nose" (median distance to
    the truth) and each perturbation (within ×ratio of the real figure); None where it cannot be judged."""
    out: dict[str, bool | None] = {}
    det = result.get("detected")
    face_crops = dataset is None or dataset in DETECTION_TARGET_DATASETS
    out["detected"] = None if det is None or not face_crops else det >= TARGETS["detected"]
    nose = result["to_truth_px"].get(POINTS[NOSE])
    out["nose"] = None if nose is None else nose <= TARGETS["nose_px"]
    ref = result.get("real_crops")
    if with_displacements:
        for name in PERTURBATIONS:
            got = result["displacement_px"].get(name)
            if ref is None or got is None or not got > 0:
                out[name] = None
            else:
                ratio = got / ref[name]
                out[name] = 1 / TARGETS["ratio"] <= ratio <= TARGETS["ratio"]
    return out


def reads_faces(result: dict, dataset: str) -> bool:
    """Whether a model's downstream verdicts on a dataset are stated: its median nose within ``TARGETS["nose_px"]``
    of the annotated one and, on face crops, the detection target met. Displacements (sensitivity, not where it
    looks) are only reported."""
    t = targets(result, dataset, with_displacements=False)
    return t["detected"] is not False and result.get("detected") is not None and t["nose"] is True


def table_rows(results: dict[tuple[str, str], dict]) -> list[dict]:
    """One row per (dataset label, model label) → a flat dict for ``io.atomic_write_csv_and_md``."""
    rows = []
    for (dataset, model), res in results.items():
        t = targets(res, dataset)
        ref = res.get("real_crops") or {}
        row = {"dataset": dataset, "model": model, "n": res["n"],
               "detected %": None if res["detected"] is None else round(100 * res["detected"], 1)}
        for p in POINTS:
            v = res["to_truth_px"][p]
            row[f"{p} to truth (px)"] = None if v is None else round(v, 2)
        for name in PERTURBATIONS:
            v = res["displacement_px"][name]
            row[f"nose moves, {name} (px)"] = None if v is None else round(v, 2)
            row[f"real crops, {name} (px)"] = ref.get(name)
        row["targets met"] = ", ".join(k for k, v in t.items() if v) or "none"
        row["targets missed"] = ", ".join(k for k, v in t.items() if v is False) or "none"
        rows.append(row)
    return rows


def summary_line(dataset: str, model: str, res: dict) -> str:
    """One sentence: detection, nose distance to the truth and the displacements beside the real figures."""
    t = targets(res, dataset)
    nose = res["to_truth_px"][POINTS[NOSE]]
    ref = res.get("real_crops") or {}
    real = f"; real face crops {100 * ref['detected']:.0f} %" if "detected" in ref else ""
    target = (f"{'meets' if t['detected'] else 'misses'} ≥ {100 * TARGETS['detected']:.0f} %" if t["detected"] is not None
              else "no target for faces this small: failures are counted")
    parts = [f"**{model} on {dataset}**: detected {100 * (res['detected'] or 0):.0f} % ({target}{real})"]
    if nose is not None:
        parts.append(f"median nose distance to the annotated nose {nose:.2f} px "
                     f"({'meets' if t['nose'] else 'misses'} ≤ {TARGETS['nose_px']:g} px)")
    moves = [f"{name} {got:.2f} px" + (f" (real crops {ref[name]:.2f})" if name in ref else "")
             for name in PERTURBATIONS if (got := res["displacement_px"][name]) is not None]
    if moves:
        missed = [k for k in PERTURBATIONS if t.get(k) is False]
        tail = (f"; outside ×{TARGETS['ratio']:g} of the real figure: {', '.join(missed)}" if missed else
                (f"; each within ×{TARGETS['ratio']:g} of the real figure" if ref else ""))
        parts.append("the nose moves under " + ", ".join(moves) + tail)
    return "; ".join(parts) + "."


def sensitivity(result: dict) -> float | None:
    """The median over ``PERTURBATIONS`` of (displacement here ÷ displacement on real crops): 1 means the model's
    nose moves under blur and bicubic as much as on real thermal faces; None without a reference."""
    ref = result.get("real_crops")
    if not ref:
        return None
    r = [result["displacement_px"][p] / ref[p] for p in PERTURBATIONS if result["displacement_px"].get(p)]
    return float(np.median(r)) if r else None


def sensitivity_line(dataset: str, model: str, result: dict) -> str:
    """A sentence on what the model's sensitivity means for the verdicts read from it ('' without a reference)."""
    s = sensitivity(result)
    if s is None:
        return ""
    if 1 / TARGETS["ratio"] <= s <= TARGETS["ratio"]:
        return f"On {dataset}, {model}'s nose moves under blur and bicubic about as much as on real crops (×{s:.2f})."
    if s < 1:
        return (f"On {dataset}, {model}'s nose moves under blur and bicubic only ×{s:.2f} as far as on real thermal "
                "crops: here it is a less sensitive instrument, so a nose difference it detects is real but \"no "
                "detectable difference\" may hide one that real faces would show.")
    return (f"On {dataset}, {model}'s nose moves under blur and bicubic ×{s:.2f} as far as on real thermal crops: "
            "a more jittery instrument here than on real data.")
