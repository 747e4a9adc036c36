"""Super-resolve a folder of your own images ×4, or score a model on them.

    python -m thermsr_utils.sr_folder --model eugenesiow/drln-bam --input my_frames --output sr_frames
    python -m thermsr_utils.sr_folder --model artifacts/demo/checkpoints/v2/best --input crops --output out --metrics
    python -m thermsr_utils.sr_folder --model bicubic --input crops --output out --metrics

Without ``--metrics`` every image is upscaled ×scale (real use). With ``--metrics`` each image is treated as the
high-resolution truth: it is trimmed to a multiple of the scale, downsampled with INTER_AREA, super-resolved
and scored (PSNR/SSIM as the write-up computed them, and on the Y channel with the border shaved); the SR
images, a per-image CSV and a summary JSON are written. Unreadable files are listed and skipped; they never
stop the rest of the folder. The input folder is only read.
"""
from __future__ import annotations

import argparse
import csv
import io as _io
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .io import ImageReadError, atomic_write_json, atomic_write_text, read_image, write_png

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
MIN_SIDE = 32  # smallest HR side scored with --metrics (its LR is 8 px)


@dataclass
class Report:
    processed: list = field(default_factory=list)   # file names
    skipped: list = field(default_factory=list)     # (file name, reason)
    notes: list = field(default_factory=list)       # (file name, what was adapted)
    rows: list = field(default_factory=list)        # per-image metrics (with --metrics)


def to_bgr8(img: np.ndarray, name: str, report: Report) -> np.ndarray | None:
    """Bring a decoded image to uint8 BGR H×W×3, or record why it cannot be used."""
    if img.dtype != np.uint8:
        report.skipped.append((name, f"{img.dtype} pixels: only 8-bit images are supported; convert it first"))
        return None
    if img.ndim == 2:
        return np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim == 3 and img.shape[2] == 1:
        return np.repeat(img, 3, axis=2)
    if img.ndim == 3 and img.shape[2] == 4:
        report.notes.append((name, "alpha channel dropped"))
        return np.ascontiguousarray(img[:, :, :3])
    if img.ndim == 3 and img.shape[2] == 3:
        return img
    report.skipped.append((name, f"unsupported image shape {img.shape}"))
    return None


def load_method(spec: str, scale: int, device: str, standin_dir=None):
    """``bicubic`` or a model spec → (callable LR uint8 BGR → SR float RGB tensor, info dict)."""
    from . import data, models

    if spec == "bicubic":
        def run_bicubic(lr):
            return data.bgr_to_tensor(models.bicubic(lr, scale))
        return run_bicubic, {"method": "bicubic", "source": "none", "scale": scale}
    model, info = models.load_model(spec, scale, standin_dir=standin_dir, device=device)

    def run_model(lr):
        return models.upscale(model, data.bgr_to_tensor(lr)[None], batch_size=1, device=device)[0]
    return run_model, info


def process_folder(model: str, input_dir, output_dir, *, metrics=False, scale=4, device="cpu",
                   standin_dir=None, progress=True) -> Report:
    """Upscale (or, with ``metrics``, score) every image of ``input_dir``; write results to ``output_dir``."""
    import cv2
    from tqdm.auto import tqdm

    from . import data
    from . import metrics as M

    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.is_dir():
        raise FileNotFoundError(f"input folder not found: {input_dir}")
    if output_dir.resolve() == input_dir.resolve():
        raise ValueError("--output must differ from --input (the input folder is never written to)")
    output_dir.mkdir(parents=True, exist_ok=True)
    method, info = load_method(model, scale, device, standin_dir)
    report = Report()
    files = sorted(p for p in input_dir.iterdir() if p.is_file())
    for path in tqdm(files, desc="sr_folder", disable=not progress):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            report.skipped.append((path.name, f"not an image type ({path.suffix or 'no suffix'})"))
            continue
        try:
            raw = read_image(path, cv2.IMREAD_UNCHANGED)
        except ImageReadError as e:
            report.skipped.append((path.name, str(e).replace(str(path), path.name)))
            continue
        img = to_bgr8(raw, path.name, report)
        if img is None:
            continue
        gray = raw.ndim == 2 or (raw.ndim == 3 and raw.shape[2] == 1)
        h, w = img.shape[:2]
        if metrics:
            if min(h, w) < MIN_SIDE:
                report.skipped.append((path.name, f"{w}x{h} is smaller than {MIN_SIDE} px, too small to score"))
                continue
            hh, ww = h - h % scale, w - w % scale
            if (hh, ww) != (h, w):
                report.notes.append((path.name, f"trimmed {w}x{h} to {ww}x{hh} (a multiple of {scale})"))
            hr = img[:hh, :ww]
            lr = data.make_lr(hr, scale)
        else:
            lr = img
        sr = method(lr)
        out_img = data.tensor_to_bgr(sr)
        if gray:
            out_img = cv2.cvtColor(out_img, cv2.COLOR_BGR2GRAY)
        write_png(output_dir / f"{path.stem}.png", out_img)
        report.processed.append(path.name)
        if metrics:
            srt, hrt = sr[None].clamp(0, 1), data.bgr_to_tensor(hr)[None]
            report.rows.append({
                "file": path.name, "width": ww, "height": hh,
                "psnr": float(M.psnr(srt, hrt)[0]), "ssim": float(M.ssim(srt, hrt)[0]),
                "psnr_y": float(M.psnr_y(srt, hrt, shave=scale)[0]),
                "ssim_y": float(M.ssim_y(srt, hrt, shave=scale)[0]),
            })
    _write_outputs(report, output_dir, info, metrics)
    return report


def _mean(values):
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def _write_outputs(report: Report, output_dir: Path, info: dict, metrics: bool) -> None:
    summary = {"method": info, "processed": len(report.processed),
               "skipped": [{"file": f, "reason": r} for f, r in report.skipped],
               "notes": [{"file": f, "note": n} for f, n in report.notes]}
    if metrics:
        buf = _io.StringIO()
        cols = ["file", "width", "height", "psnr", "ssim", "psnr_y", "ssim_y"]
        writer = csv.DictWriter(buf, fieldnames=cols)
        writer.writeheader()
        writer.writerows(report.rows)
        atomic_write_text(output_dir / "metrics.csv", buf.getvalue())
        summary["mean"] = {k: _mean([r[k] for r in report.rows]) for k in cols[3:]}
        summary["n_scored"] = len(report.rows)
    atomic_write_json(output_dir / "summary.json", summary)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m thermsr_utils.sr_folder", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="bicubic, a short name (drln), a hub id, or a save_pretrained folder")
    ap.add_argument("--input", required=True, help="folder of PNG/JPEG/TIFF/BMP images (8-bit gray or colour)")
    ap.add_argument("--output", required=True, help="folder for the results (created)")
    ap.add_argument("--metrics", action="store_true", help="treat inputs as HR: downsample, restore and score")
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--standin-dir", default=None, help="folder of offline stand-in weights (see notebook 02)")
    args = ap.parse_args(argv)
    try:
        report = process_folder(args.model, args.input, args.output, metrics=args.metrics, scale=args.scale,
                                device=args.device, standin_dir=args.standin_dir)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"processed {len(report.processed)} image(s) into {args.output}")
    for name, note in report.notes:
        print(f"  note: {name}: {note}")
    for name, reason in report.skipped:
        print(f"  skipped: {name}: {reason}")
    if args.metrics and report.rows:
        means = json.loads((Path(args.output) / "summary.json").read_text())["mean"]
        print("  mean " + "  ".join(f"{k} {v:.4f}" for k, v in means.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
