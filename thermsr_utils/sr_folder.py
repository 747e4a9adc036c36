"""Super-resolve a folder of your own images ×4, or score a model on them.

    python -m thermsr_utils.sr_folder --model eugenesiow/drln-bam --input my_frames --output sr_frames
    python -m thermsr_utils.sr_folder --model artifacts/demo/checkpoints/v2/best --input crops --output out --metrics
    python -m thermsr_utils.sr_folder --model bicubic --input crops --output out --metrics
    python -m thermsr_utils.sr_folder --model drln --input big_frames --output out --tile 128
    python -m thermsr_utils.sr_folder --model drln --input my_frames --output sr_frames --tta
    python -m thermsr_utils.sr_folder --model waifu2x-photo --input crops --output out8 --scale 8

Without ``--metrics`` every image is upscaled ×scale. With ``--metrics`` each image is the high-resolution truth:
trimmed to a multiple of the scale, downsampled with INTER_AREA, super-resolved and scored by the notebooks' own
``evaluate.Scorer`` (PSNR/SSIM, LPIPS/DISTS with ``--perceptual``, sharpness ratios, the nose metric with
``--nose-model``); a per-image CSV and summary.json (means, instruments) are written beside the SR images. Large
inputs are tiled (``--tile``) so memory stays bounded. Unusable files (empty, not an image, 16-bit, too small,
corrupt) are listed with the reason and skipped. The input folder is only read. ``--tta`` super-resolves every
image (every tile) with the x8 geometric self-ensemble (``models.upscale(..., self_ensemble=True)``): 8 forward
passes per image, averaged.

×8 (``--scale 8``): waifu2x-photo (its ×2 network applied three times, the registry weights unchanged) and bicubic;
every other model is refused in one sentence before any work. With ``--metrics`` an image is scored at ×8 only
when its LR keeps at least MIN_LR_SIDE px on a side (``min_scored_side``: 64 px of HR).

Colour input (``--colour``): a model finetuned on gray crops shifts the hues of false-colour (palette) images. When
a saved model's ``thermsr.json`` says it was trained on gray only, ``auto`` inverts the known palette (OpenCV's
inferno, the synthetic iron rendering) to its gray index, super-resolves that and re-applies the palette; other
colours get the luminance (YCrCb Y) path. Models trained on colour too, and models without a record (registry,
hub, bicubic), run on colour as it is. Each colour image gets a note; summary.json's ``colour`` counts them.
"""
from __future__ import annotations

import argparse
import csv
import io as _io
import json
import math
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .data import SCALE
from .colour import (COLOUR_CHOICES, colour_method, colour_path, is_colour, model_trained_on, resolve_colour,
                     trained_words)
from . import io
from .io import ImageReadError, atomic_write_json, atomic_write_text, read_image, write_png

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
MIN_SIDE = 32            # smallest HR side scored with --metrics (its LR is 8 px at ×4)
MIN_LR_SIDE = MIN_SIDE // SCALE   # smallest LR side scored: at ×8 the smallest HR side is 8 times this
MIN_INPUT_SIDE = 4       # smallest side super-resolved without --metrics
AUTO_TILE_PIXELS = 256 * 256  # LR images with more pixels than this are tiled when no --tile is given
AUTO_TILE = 128          # LR tile side used then
TILE_OVERLAP = 8         # LR pixels of context around each tile (cut away from its output)
MIN_TILE = 8             # smallest allowed --tile
DEFAULT_PERCEPTUAL = ("lpips", "dists")
DEFAULT_NOSE_MODEL = "auto"   # notebook 02's default: rtmlib when its files are cached, else RetinaFace
METRIC_COLUMNS = ["file", "width", "height", "psnr", "ssim", "psnr_y", "ssim_y", "lpips", "dists", "lpips_vgg",
                  "grad_ratio", "hf_ratio", "nose_hr_found", "nose_sr_found", "nose_err_px"]
TTA_PASSES = 8           # --tta: the 8 flips and 90° turns of models.upscale's self-ensemble
NO_TTA_FOR_BICUBIC = ("--tta averages a model's outputs over the 8 flips and 90° turns of each image, and bicubic "
                      "has no model to ensemble: drop --tta or choose a model")


@dataclass
class Report:
    processed: list = field(default_factory=list)   # file names
    skipped: list = field(default_factory=list)     # (file name, reason)
    notes: list = field(default_factory=list)       # (file name, what was adapted)
    rows: list = field(default_factory=list)        # per-image metrics (with --metrics)
    written: list = field(default_factory=list)     # names of the files this run wrote into --output
    colour: dict = field(default_factory=dict)      # colour images per path taken ("as-is", "luma", "palette")
    colour_record: dict = field(default_factory=dict)  # summary.json's "colour": the option, what auto meant, training


def to_bgr8(img: np.ndarray, name: str, report: Report) -> np.ndarray | None:
    """Bring a decoded image to uint8 BGR H×W×3, or record why it cannot be used (None)."""
    if img.dtype != np.uint8:
        bits = f"{img.dtype.itemsize * 8}-bit ({img.dtype})"
        report.skipped.append((name, f"{bits} pixels: only 8-bit images are supported; convert it to 8 bits "
                                     "first, choosing the value range (e.g. the temperature span) yourself"))
        return None
    if img.ndim == 2:
        return np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim == 3 and img.shape[2] == 1:
        return np.repeat(img, 3, axis=2)
    if img.ndim == 3 and img.shape[2] == 2:
        report.notes.append((name, "alpha channel dropped (gray + alpha image)"))
        return np.repeat(img[:, :, :1], 3, axis=2)
    if img.ndim == 3 and img.shape[2] == 4:
        report.notes.append((name, "alpha channel dropped"))
        return np.ascontiguousarray(img[:, :, :3])
    if img.ndim == 3 and img.shape[2] == 3:
        return img
    report.skipped.append((name, f"unsupported image shape {img.shape}"))
    return None


def check_method_scale(spec: str, scale: int) -> None:
    """Raise ValueError, in one sentence naming the scale and the models that offer it, when ``spec`` cannot
    upscale ×``scale`` (bicubic serves every scale; waifu2x-photo ×2, ×4, ×8; other models ×2, ×3, ×4)."""
    from . import models

    if spec != "bicubic":
        models.check_scale(scale, None if Path(spec).is_dir() else spec)


def load_method(spec: str, scale: int, device: str, standin_dir=None, self_ensemble: bool = False):
    """``bicubic`` or a model spec → (callable LR uint8 BGR h×w×3 → SR float RGB tensor 3×sh×sw, info dict).

    The info records the scale, and for a zoo network applied more than once how often (e.g. waifu2x-photo at ×8:
    ``applications`` 3, ``scale_note`` "waifu2x-photo ×2 applied three times"). ``self_ensemble`` (``--tta``): the
    model's x8 self-ensemble; the info says so and how many forward passes each image (each tile) takes. Bicubic
    with ``self_ensemble`` is a ValueError."""
    from . import data, models

    check_method_scale(spec, scale)
    if spec == "bicubic":
        if self_ensemble:
            raise ValueError(NO_TTA_FOR_BICUBIC)

        def run_bicubic(lr):
            return data.bgr_to_tensor(models.bicubic(lr, scale))
        return run_bicubic, {"method": "bicubic", "source": "none", "scale": scale, "self_ensemble": False}
    model, info = models.load_model(spec, scale, standin_dir=standin_dir, device=device)

    def run_model(lr):
        return models.upscale(model, data.bgr_to_tensor(lr)[None], batch_size=1, device=device,
                              self_ensemble=self_ensemble)[0]
    return run_model, {**info, "self_ensemble": self_ensemble,
                       "forward_passes_per_image": TTA_PASSES if self_ensemble else 1}


# ---- Tiling ----
def choose_tile(height: int, width: int, tile: int | None) -> int:
    """The LR tile side to use for an h×w LR image: ``tile`` when given (0 = no tiling), else AUTO_TILE
    above AUTO_TILE_PIXELS pixels and 0 below. Raises ValueError for a tile below MIN_TILE."""
    if tile is None:
        return AUTO_TILE if height * width > AUTO_TILE_PIXELS else 0
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < 0 or 0 < tile < MIN_TILE:
        raise ValueError(f"--tile must be 0 (no tiling) or an integer ≥ {MIN_TILE}, got {tile!r}")
    return tile


def tile_boxes(height: int, width: int, tile: int) -> list[tuple[int, int, int, int]]:
    """Core boxes (y0, y1, x0, x1), ends exclusive, of at most ``tile`` px that cover an h×w image exactly once."""
    if tile < 1:
        raise ValueError(f"tile must be ≥ 1, got {tile}")
    return [(y, min(y + tile, height), x, min(x + tile, width))
            for y in range(0, height, tile) for x in range(0, width, tile)]


def _tile_core(method: Callable, lr: np.ndarray, scale: int, box, overlap: int):
    """SR of one core box (y0, y1, x0, x1) of ``lr``, made with ``overlap`` LR pixels of context on every side
    (where the image has them) and cut back to the core: float RGB tensor 3×(scale·box)."""
    h, w = lr.shape[:2]
    y0, y1, x0, x1 = box
    ry0, ry1 = max(0, y0 - overlap), min(h, y1 + overlap)
    rx0, rx1 = max(0, x0 - overlap), min(w, x1 + overlap)
    sr = method(np.ascontiguousarray(lr[ry0:ry1, rx0:rx1]))
    if tuple(sr.shape[-2:]) != ((ry1 - ry0) * scale, (rx1 - rx0) * scale):
        raise ValueError(f"the method returned {tuple(sr.shape)} for a {rx1 - rx0}x{ry1 - ry0} tile at scale {scale}")
    return sr[:, (y0 - ry0) * scale:(y1 - ry0) * scale, (x0 - rx0) * scale:(x1 - rx0) * scale]


def upscale_tiled(method: Callable, lr: np.ndarray, scale: int, tile: int, overlap: int = TILE_OVERLAP):
    """SR of uint8 BGR h×w×3 ``lr`` tile by tile: float RGB tensor 3×(scale·h)×(scale·w), like ``method(lr)``.

    Each core tile is super-resolved with ``overlap`` LR pixels of context on every side (where the image
    has them), and only the core's part of the output is kept, so tile borders see the same context as
    in a whole-image pass. With an overlap at least the model's receptive field the result equals the
    untiled one up to float rounding; only one tile's activations are in memory at a time.
    """
    import torch

    if overlap < 0:
        raise ValueError(f"overlap must be ≥ 0, got {overlap}")
    h, w = lr.shape[:2]
    out = None
    for y0, y1, x0, x1 in tile_boxes(h, w, tile):
        core = _tile_core(method, lr, scale, (y0, y1, x0, x1), overlap)
        if out is None:
            out = torch.empty((core.shape[0], h * scale, w * scale), dtype=core.dtype)
        out[:, y0 * scale:y1 * scale, x0 * scale:x1 * scale] = core
    return out


def write_png_bands(path: str | os.PathLike, bands, width: int, height: int, *, gray: bool = False,
                    compression: int = 1) -> None:
    """Write an image that arrives in horizontal bands (uint8 arrays of rows×width×3 BGR, or rows×width when
    ``gray``) as one PNG, row by row (pypng), atomically: memory holds one band, never the whole image. The
    bands must add up to ``height`` rows. ``compression`` is the zlib level (OpenCV's default is 1)."""
    import png

    count = 0

    def rows():
        nonlocal count
        for band in bands:
            if band.dtype != np.uint8 or band.shape[1:] != ((width,) if gray else (width, 3)):
                raise ValueError(f"a band of {band.dtype} {band.shape} does not fit a {width}-px wide "
                                 f"{'gray' if gray else 'BGR'} uint8 image for {path}")
            band = band if gray else band[..., ::-1]          # PNG stores RGB
            for row in band:
                count += 1
                if count > height:
                    break
                yield row.tobytes()

    writer = png.Writer(width, height, greyscale=gray, bitdepth=8, compression=compression)
    with io.atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            writer.write_packed(f, rows())
            if count != height:   # pypng does not check; a PNG with missing rows must never be left behind
                raise ValueError(f"{path}: the bands held {'more than ' if count > height else ''}{count} rows "
                                 f"for an image {height} rows high")
            f.flush()
            os.fsync(f.fileno())


def tiled_bands(method: Callable, lr: np.ndarray, scale: int, tile: int, overlap: int = TILE_OVERLAP, *,
                gray: bool = False):
    """The uint8 output of ``upscale_tiled``, one band of tiles at a time, top to bottom: arrays of
    (≤ scale·tile)×(scale·w)×3 BGR, or without the channel axis when ``gray``, converted as ``data.tensor_to_bgr``
    (then to gray) converts the whole image. Written out as they come (``write_png_bands``), memory holds one
    band, never an image of the output's size."""
    import cv2

    from .data import tensor_to_bgr

    if overlap < 0:
        raise ValueError(f"overlap must be ≥ 0, got {overlap}")
    h, w = lr.shape[:2]
    for y0 in range(0, h, tile):
        y1 = min(y0 + tile, h)
        band = np.empty(((y1 - y0) * scale, w * scale) + (() if gray else (3,)), np.uint8)
        for x0 in range(0, w, tile):
            x1 = min(x0 + tile, w)
            px = tensor_to_bgr(_tile_core(method, lr, scale, (y0, y1, x0, x1), overlap))
            band[:, x0 * scale:x1 * scale] = cv2.cvtColor(px, cv2.COLOR_BGR2GRAY) if gray else px
        yield band


# ---- The folder ----
def _read(path: Path, report: Report) -> np.ndarray | None:
    """Decode ``path`` (any depth and channel count), or record why not (None)."""
    import cv2

    if path.suffix.lower() not in IMAGE_SUFFIXES:
        report.skipped.append((path.name, f"not an image type ({path.suffix or 'no suffix'}); "
                                          f"supported: {', '.join(sorted(IMAGE_SUFFIXES))}"))
        return None
    if path.stat().st_size == 0:
        report.skipped.append((path.name, "empty file (0 bytes)"))
        return None
    try:
        return read_image(path, cv2.IMREAD_UNCHANGED)
    except ImageReadError as e:
        report.skipped.append((path.name, str(e).replace(str(path), path.name)))
        return None


def _output_name(path: Path, taken: set[str], report: Report) -> str:
    """``<stem>.png``, or ``<stem>_<suffix>.png`` (with a note) when another input already took that name."""
    name = f"{path.stem}.png"
    if name in taken:
        name = f"{path.stem}_{path.suffix.lstrip('.').lower()}.png"
        report.notes.append((path.name, f"written as {name}: another input is also called {path.stem}"))
    taken.add(name)
    return name


def input_files(input_dir: Path, report: "Report") -> list[Path]:
    """The regular files of ``input_dir``, sorted; every other entry goes to ``report.skipped`` with its reason."""
    files = []
    for p in sorted(input_dir.iterdir()):
        if p.is_symlink() and not p.exists():
            report.skipped.append((p.name, f"a symbolic link to {os.readlink(p)}, which does not exist"))
        elif p.is_dir():
            report.skipped.append((p.name, "a folder: only the images directly in --input are read"))
        elif not p.is_file():
            kind = "a named pipe (FIFO)" if stat.S_ISFIFO(p.stat().st_mode) else "not a regular file"
            report.skipped.append((p.name, f"{kind}: only regular image files are read"))
        else:
            files.append(p)
    return files


def prepare_output(input_dir: Path, output_dir: Path) -> None:
    """Create ``output_dir`` and check it can be written, or raise ValueError in one sentence naming it: not the
    input folder nor inside it (the input is only read), not a file, not a symlink loop, writable."""
    try:
        inp, out = input_dir.resolve(strict=True), output_dir.resolve()
    except (OSError, RuntimeError) as e:   # a symlink loop, a path that cannot be resolved
        raise ValueError(f"--output {output_dir} cannot be used ({type(e).__name__}: {e}); choose another folder") from None
    if out == inp:
        raise ValueError(f"--output {output_dir} must differ from --input {input_dir}: the input folder is never "
                         "written to")
    if out.is_relative_to(inp):
        raise ValueError(f"--output {output_dir} lies inside --input {input_dir}, which is never written to: choose "
                         "a folder outside it")
    from .config import UnwritableFolder, writable_folder

    try:
        writable_folder(output_dir, "--output", fix="choose a folder you can write to (it is created if missing)")
    except UnwritableFolder as e:
        raise ValueError(str(e)) from None
    earlier_run(output_dir)          # refuse foreign files before any work




RUN_RECORD = "summary.json"     # written last by every finished run; its "written" names the files that run wrote


def earlier_run(output_dir: Path) -> list[str]:
    """The files a finished earlier run recorded in ``output_dir``'s summary.json, to be replaced by this run's;
    ValueError, in one sentence, for a folder that holds anything else (files of yours, or an interrupted run's
    images, which are never deleted)."""
    import re

    record = output_dir / RUN_RECORD
    written: list[str] = []
    if record.is_file():
        try:
            written = json.loads(record.read_text()).get("written") or []
        except (ValueError, AttributeError):
            written = []
    leftover = re.compile(r"^\..+\.(?:tmp|old)-")           # temporary files of killed writers (io.remove_leftovers)
    foreign = sorted(p.name for p in output_dir.iterdir()
                     if p.name not in written and p.name != RUN_RECORD and not leftover.match(p.name))
    if foreign or (record.exists() and not written):
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise ValueError(f"--output {output_dir} holds {shown or RUN_RECORD}, which no finished sr_folder run there "
                         "wrote (your files, or an interrupted run's): choose an empty or new folder, or empty it "
                         "yourself; nothing in it was changed")
    return [name for name in written if (output_dir / name).is_file()]


def clear_earlier_run(output_dir: Path) -> list[str]:
    """Remove the files of the finished earlier run in ``output_dir`` (``earlier_run``), saying how many."""
    removed = earlier_run(output_dir)
    for name in removed + [RUN_RECORD]:
        (output_dir / name).unlink(missing_ok=True)
    if removed:
        print(f"--output {output_dir}: removed the {len(removed)} file(s) of the earlier run there "
              f"(its {RUN_RECORD} named them)", file=sys.stderr)
    return removed


def check_scoring(perceptual, nose_model: str) -> None:
    """Raise ValueError, in one sentence naming the option, for an unknown perceptual metric or nose model."""
    from . import downstream, evaluate

    unknown = [p for p in perceptual if p not in evaluate.PERCEPTUAL_KEYS]
    if unknown:
        raise ValueError(f"--perceptual: unknown metric {unknown[0]!r}; choose from "
                         f"{', '.join(evaluate.PERCEPTUAL_KEYS)}, or none")
    if nose_model != "none" and nose_model not in downstream.NOSE_MODELS:
        raise ValueError(f"--nose-model must be one of {', '.join(downstream.NOSE_MODELS)} or none, "
                         f"got {nose_model!r}")


def make_scorer(perceptual, nose_model: str, device: str):
    """The notebooks' Scorer with the perceptual metrics named in ``perceptual`` and the nose model ``nose_model``
    ("none": no nose metric); the names are checked first by ``check_scoring``."""
    from . import downstream, evaluate

    locator = None if nose_model == "none" else downstream.prepare_locator(nose_model, device=device)
    return evaluate.make_scorer(locator, device=device, perceptual=tuple(perceptual))


def score_image(scorer, name: str, sr, hr: np.ndarray, scale: int) -> dict:
    """One metrics.csv row: ``scorer``'s metrics of SR (float RGB 3×H×W) against HR (uint8 BGR)."""
    scores = scorer.score([name], sr[None], hr[None], None, scale=scale)
    row = {"file": name, "width": hr.shape[1], "height": hr.shape[0]}
    for key in METRIC_COLUMNS[3:]:
        value = scores[key][0]
        row[key] = bool(value) if isinstance(value, (bool, np.bool_)) else float(value)
    return row


def process_folder(model: str, input_dir, output_dir, *, metrics=False, scale=SCALE, device="cpu",
                   standin_dir=None, tile: int | None = None, tile_overlap: int = TILE_OVERLAP,
                   perceptual=DEFAULT_PERCEPTUAL, nose_model: str = DEFAULT_NOSE_MODEL, colour: str = "auto",
                   tta: bool = False, progress=True) -> Report:
    """Upscale (or, with ``metrics``, score) every image of ``input_dir``; write results to ``output_dir``.

    ``colour``: what is done with a colour image (``COLOUR_CHOICES``; ``resolve_colour`` says what ``auto`` means
    for the model, ``colour_path`` what is done per image); gray images are never affected. Each colour image gets
    a note naming the path taken and what the model was trained on.
    ``tile``: LR tile side (0 = never tile; None = tile automatically above AUTO_TILE_PIXELS LR pixels);
    ``tile_overlap``: LR pixels of context around each tile; ``perceptual`` and ``nose_model``: what
    ``metrics`` scores besides PSNR/SSIM and the sharpness ratios (``make_scorer``); ``tta``: every image (every
    tile) through the model's x8 self-ensemble (``load_method``), refused for bicubic before any work.
    """
    from tqdm.auto import tqdm

    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.is_dir():
        raise FileNotFoundError(f"input folder not found: {input_dir}")
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"--scale must be an integer ≥ 1, got {scale!r}")
    choose_tile(1, 1, tile)  # reject a bad --tile before any work
    if tile_overlap < 0:
        raise ValueError(f"--tile-overlap must be ≥ 0, got {tile_overlap}")
    check_scoring(perceptual, nose_model)
    if tta and model == "bicubic":
        raise ValueError(NO_TTA_FOR_BICUBIC)
    check_method_scale(model, scale)
    trained = None if model == "bicubic" else model_trained_on(model)
    colour_mode = resolve_colour(colour, trained)
    trained_note = trained_words(trained, model)
    report = Report()
    prepare_output(input_dir, output_dir)
    scorer = make_scorer(perceptual, nose_model, device) if metrics else None
    method, info = load_method(model, scale, device, standin_dir, self_ensemble=tta)
    clear_earlier_run(output_dir)    # only now that this run can start: a refused run changes nothing
    taken: set[str] = set()
    for path in tqdm(input_files(input_dir, report), desc="sr_folder", disable=not progress):
        raw = _read(path, report)
        img = None if raw is None else to_bgr8(raw, path.name, report)
        pair = None if img is None else _pair(img, path.name, scale, metrics, report)
        if pair is None:
            continue
        hr, lr = pair
        gray = raw.ndim == 2 or (raw.ndim == 3 and raw.shape[2] in (1, 2))
        run, taken_path = method, None
        if not gray and is_colour(img):
            taken_path, done = colour_path(colour_mode, lr)
            run = colour_method(method, taken_path)
        out_path = output_dir / _output_name(path, taken, report)
        n_tile = choose_tile(*lr.shape[:2], tile)
        try:
            sr = _write_sr(run, lr, scale, n_tile, tile_overlap, gray, out_path, keep_float=metrics)
        except (RuntimeError, MemoryError) as e:  # e.g. out of memory: report it, carry on with the folder
            taken.discard(out_path.name)
            report.notes = [n for n in report.notes if n != (path.name, f"written as {out_path.name}: another "
                                                                         f"input is also called {path.stem}")]
            report.skipped.append((path.name, f"super-resolution failed ({type(e).__name__}: {e}); "
                                              "a smaller --tile may help"))
            continue
        if n_tile and max(lr.shape[:2]) > n_tile:
            n = len(tile_boxes(*lr.shape[:2], n_tile))
            report.notes.append((path.name, f"super-resolved in {n} tiles of {n_tile} px (LR) with "
                                            f"{tile_overlap} px overlap"))
        if taken_path is not None:
            report.notes.append((path.name, f"colour image ({taken_path}, --colour {colour}): {done}; {trained_note}"))
            report.colour[taken_path] = report.colour.get(taken_path, 0) + 1
        report.processed.append(path.name)
        report.written.append(out_path.name)
        if metrics:
            report.rows.append(score_image(scorer, path.name, sr, hr, scale))
    report.colour_record = {"option": colour, "auto_means": colour_mode, "model_trained_on": trained,
                            "trained_words": trained_note, "colour_images": dict(sorted(report.colour.items()))}
    _write_outputs(report, output_dir, info, scorer)
    return report


def min_scored_side(scale: int) -> int:
    """The smallest HR side scored with --metrics at ×``scale``: MIN_SIDE, or more where the LR of MIN_SIDE would
    be under MIN_LR_SIDE px (64 at ×8)."""
    return max(MIN_SIDE, MIN_LR_SIDE * scale)


def _pair(img: np.ndarray, name: str, scale: int, metrics: bool, report: Report):
    """(HR, LR) of one readable image: with ``metrics`` the image trimmed to a multiple of ``scale`` and its LR
    (``data.make_lr``), else (None, the image itself); None, with the reason in ``report``, when it is too small."""
    from . import data

    h, w = img.shape[:2]
    if not metrics:
        if min(h, w) < MIN_INPUT_SIDE:
            report.skipped.append((name, f"{w}x{h} is smaller than {MIN_INPUT_SIDE} px on a side, "
                                         "too small to super-resolve"))
            return None
        return None, img
    side = min_scored_side(scale)
    if min(h, w) < side:
        why = f" at ×{scale} (its LR must be at least {MIN_LR_SIDE} px)" if side > MIN_SIDE else ""
        report.skipped.append((name, f"{w}x{h} is smaller than {side} px, too small to score{why}"))
        return None
    hh, ww = h - h % scale, w - w % scale
    if (hh, ww) != (h, w):
        report.notes.append((name, f"trimmed {w}x{h} to {ww}x{hh} (a multiple of {scale})"))
    hr = img[:hh, :ww]
    return hr, data.make_lr(hr, scale)


def _write_sr(run: Callable, lr: np.ndarray, scale: int, n_tile: int, overlap: int, gray: bool, out_path: Path, *,
              keep_float: bool):
    """Super-resolve ``lr`` into the PNG ``out_path``; return the float output when ``keep_float`` (to score it).
    A tiled image that is not scored streams band by band into the PNG: memory is set by the tile, not the image."""
    import cv2

    from . import data

    tiled = bool(n_tile) and max(lr.shape[:2]) > n_tile
    if tiled and not keep_float:
        write_png_bands(out_path, tiled_bands(run, lr, scale, n_tile, overlap, gray=gray),
                        lr.shape[1] * scale, lr.shape[0] * scale, gray=gray)
        return None
    sr = upscale_tiled(run, lr, scale, n_tile, overlap) if tiled else run(lr)
    out_img = data.tensor_to_bgr(sr)
    write_png(out_path, cv2.cvtColor(out_img, cv2.COLOR_BGR2GRAY) if gray else out_img)
    return sr


def _write_outputs(report: Report, output_dir: Path, info: dict, scorer) -> None:
    """summary.json, and with a ``scorer`` (--metrics) metrics.csv and the summary's means and instruments."""
    from . import evaluate

    summary = {"method": info, "processed": len(report.processed),
               "skipped": [{"file": f, "reason": r} for f, r in report.skipped],
               "notes": [{"file": f, "note": n} for f, n in report.notes]}
    if report.colour_record:
        summary["colour"] = report.colour_record
    if scorer is not None:
        buf = _io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS)
        writer.writeheader()
        writer.writerows(report.rows)
        atomic_write_text(output_dir / "metrics.csv", buf.getvalue())
        report.written.append("metrics.csv")
        summary["mean"] = _means(report.rows, scorer.locator is not None)
        summary["n_scored"] = len(report.rows)
        summary["instruments"] = {**scorer.substitutes(), **evaluate.instrument_provenance(scorer)}
    summary["written"] = sorted(report.written)      # what the next run into this folder replaces
    atomic_write_json(output_dir / RUN_RECORD, summary)


def _means(rows: list[dict], nose: bool) -> dict:
    """``evaluate.summarize`` of the rows (the tables' means and nose statistics), without the nose's ground-truth
    error (there is none here), the second nose model's entries (none runs here) and, when no nose model ran,
    without any nose entry."""
    from . import evaluate

    means = evaluate.summarize(rows) if rows else {}
    return {k: v for k, v in means.items()
            if k != "nose_gt_sr" and not k.startswith("nose2_") and (nose or not k.startswith("nose_"))}


def _summary_lines(output_dir: Path) -> list[str]:
    """The console's account of summary.json: the means the tables show and the instruments behind them."""
    summary = json.loads((Path(output_dir) / "summary.json").read_text())
    means = summary["mean"]
    shown = ["psnr", "ssim", "psnr_y", "ssim_y", "lpips", "dists", "lpips_vgg", "grad_ratio", "hf_ratio",
             "nose_median"]
    parts = [f"{k} {means[k]:.4f}" for k in shown if isinstance(means.get(k), float) and math.isfinite(means[k])]
    lines = ["  mean " + "  ".join(parts)]
    if summary["instruments"].get("nose_locator") != "not computed":
        lines.append(f"  nose: found in {means['n'] - means['nose_failed']} of {means['n']} image pairs "
                     f"(HR missed {means['nose_failed_hr']}, SR missed {means['nose_failed_sr']})")
    lines += [f"  {k}: {v}" for k, v in summary["instruments"].items() if v != "not computed"]
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m thermsr_utils.sr_folder", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="bicubic, a short name (drln, srresnet, dat-light, waifu2x-photo), a hub id, or a saved model folder")
    ap.add_argument("--input", required=True, help="folder of PNG/JPEG/TIFF/BMP images (8-bit gray or colour)")
    ap.add_argument("--output", required=True, help="folder for the results (created)")
    ap.add_argument("--metrics", action="store_true",
                    help="treat inputs as HR: downsample, restore and score them as the notebooks' tables do "
                         "(PSNR, SSIM and their Y/shave versions, the perceptual metrics, the sharpness ratios, "
                         "the nose metric)")
    ap.add_argument("--perceptual", default=",".join(DEFAULT_PERCEPTUAL), metavar="LIST",
                    help="with --metrics: comma list of lpips, dists, lpips_vgg, or none (default: %(default)s)")
    ap.add_argument("--nose-model", default=DEFAULT_NOSE_MODEL,
                    help="with --metrics: auto, rtmlib, retinaface or none (default: %(default)s, rtmlib when its "
                         "files are cached, else RetinaFace)")
    ap.add_argument("--scale", type=int, default=SCALE)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tile", type=int, default=None, metavar="N",
                    help=f"super-resolve in LR tiles of N px (0 = never; default: tiles of {AUTO_TILE} px for "
                         f"inputs above {AUTO_TILE_PIXELS} LR pixels)")
    ap.add_argument("--tile-overlap", type=int, default=TILE_OVERLAP, metavar="PX",
                    help="LR pixels of context around each tile")
    ap.add_argument("--standin-dir", default=None, help="folder of offline stand-in weights (see notebook 02)")
    ap.add_argument("--colour", default="auto", choices=COLOUR_CHOICES,
                    help="colour (false-colour palette) images: auto (default) = palette inversion for a model "
                         "trained on gray crops only (its thermsr.json says so), as-is for one trained on colour "
                         "too or on RGB photos; as-is = run the model on the colour image; luma = super-resolve "
                         "the luminance, upscale the colour bicubically; palette = invert the inferno palette, "
                         "super-resolve the gray index, re-apply it (luma where the colours are another palette)")
    ap.add_argument("--tta", action="store_true",
                    help=f"test-time self-ensemble: average the model's outputs over the {TTA_PASSES} flips and 90° "
                         f"turns of every image (every tile), undone on the output; {TTA_PASSES} forward passes per "
                         "image; not with --model bicubic")
    args = ap.parse_args(argv)
    try:
        report = process_folder(args.model, args.input, args.output, metrics=args.metrics, scale=args.scale,
                                device=args.device, standin_dir=args.standin_dir, tile=args.tile,
                                tile_overlap=args.tile_overlap, nose_model=args.nose_model, colour=args.colour,
                                tta=args.tta,
                                perceptual=[] if args.perceptual == "none" else
                                [p.strip() for p in args.perceptual.split(",") if p.strip()])
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"processed {len(report.processed)} image(s) into {args.output}")
    if args.tta:
        print(f"  self-ensemble (--tta): {TTA_PASSES} forward passes per image (per tile when tiled), averaged")
    for name, note in report.notes:
        print(f"  note: {name}: {note}")
    for name, reason in report.skipped:
        print(f"  skipped: {name}: {reason}")
    if args.metrics and report.rows:
        print("\n".join(_summary_lines(args.output)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
