"""Gray-trained models on false-colour (iron-palette) thermal frames: PSNR of each model and colour path.

    THERMSR_ARTIFACTS=<folder with weights/> python tools/palette_check.py [--n 40] [--checkpoints DIR]

Makes ``--n`` 192×192 SF-TL54-like crops from the generator (subjects 121 onwards, one frame each, crop protocol
of the builder), their iron rendering (``synthetic.iron``, OpenCV's inferno) and another palette (COLORMAP_HOT,
which palette inversion must refuse), LR = INTER_AREA ÷4, and scores RGB PSNR (``metrics.psnr``, the tables'
PSNR) of bicubic, the zero-shot networks and the v1/v2 checkpoints under ``--checkpoints`` (``v1/best``,
``v2/best``), each run as is, on the luminance alone and through palette inversion (``colour``'s paths, which ``sr_folder --colour`` takes).
Also prints how far the LR pixels of each palette lie from the inferno palette (``colour.PALETTE_MAX_ERROR``).
Single-threaded; about two minutes on one CPU core for 40 crops.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from thermsr_utils import colour as C, data as D, faces as F, metrics, models, synthetic as S  # noqa: E402


def gray_crops(n: int, seed: int = 0, first: int = 121) -> list[np.ndarray]:
    """``n`` 192×192 uint8 gray crops of generated SF-TL54-like frames (one per subject from ``first``)."""
    cam = S.make_camera(np.random.default_rng([seed, 540]), *S.SFTL54_SIZE, **S.SFTL54_CAMERA)
    out = []
    for sub_id in range(first, first + n):
        s = F.make_subject(sub_id, np.random.default_rng([seed, 54, sub_id]))
        frng = np.random.default_rng([seed, 54, sub_id, 1])
        pose = S.sftl54_pose(s, frng)
        focus = replace(cam, blur=float(frng.uniform(*S.SFTL54_BLUR_RANGE)))
        gray, lm, _ = S.render_sftl54_frame(s, pose, F.make_textures(s), focus, frng)
        out.append(D.crop_and_resize(gray, D.sftl54_crop_box(lm, *S.SFTL54_SIZE))[0])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--checkpoints", default=os.environ.get("THERMSR_CHECKPOINTS", "artifacts/demo/checkpoints"))
    ap.add_argument("--models", default="bicubic,waifu2x-photo,srresnet,v1,v2")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.time()
    g = gray_crops(args.n)
    sets = {"gray": [np.repeat(c[:, :, None], 3, 2) for c in g],
            "iron": [S.iron(c) for c in g],
            "hot": [cv2.applyColorMap(c, cv2.COLORMAP_HOT) for c in g]}
    lrs = {k: [D.make_lr(h) for h in v] for k, v in sets.items()}
    print(f"{args.n} crops in {time.time() - t0:.1f}s")
    for k, v in lrs.items():
        if k != "gray":
            errs = [float(C.invert_palette(lr)[1].mean()) for lr in v]
            print(f"LR {k}: distance to the inferno palette, mean over pixels: min {min(errs):.2f} "
                  f"median {np.median(errs):.2f} max {max(errs):.2f}")
    for name in ("magma", "plasma", "jet", "turbo", "bone"):
        cmap = getattr(cv2, f"COLORMAP_{name.upper()}")
        errs = [float(C.invert_palette(D.make_lr(cv2.applyColorMap(c, cmap)))[1].mean()) for c in g[:10]]
        print(f"LR {name}: distance to inferno min {min(errs):.2f} max {max(errs):.2f}")

    rows, per_crop = [], {}
    for spec in args.models.split(","):
        if spec == "bicubic":
            method = lambda lr: D.bgr_to_tensor(models.bicubic(lr, 4))  # noqa: E731
        else:
            path = Path(args.checkpoints) / spec / "best" if spec in ("v1", "v2") else spec
            model, _ = models.load_model(str(path))
            method = lambda lr, m=model: models.upscale(m, D.bgr_to_tensor(lr)[None], batch_size=1)[0]  # noqa: E731
        for pal, paths in (("gray", ("as-is",)), ("iron", ("as-is", "luma", "palette")), ("hot", ("as-is", "luma"))):
            for path in paths:
                fn = C.colour_method(method, path)
                t = time.time()
                sr = torch.stack([fn(lr) for lr in lrs[pal]])
                hr = D.bgr_to_tensor(np.stack(sets[pal]))
                p = metrics.psnr(sr, hr)
                rows.append((spec, pal, path, float(p.mean()), float(p.std() / np.sqrt(len(p)))))
                per_crop[(spec, pal, path)] = p.numpy()
                print(f"{spec:14s} {pal:5s} {path:8s} PSNR {rows[-1][3]:6.2f} ± {rows[-1][4]:.2f} dB "
                      f"({time.time() - t:.1f}s)", flush=True)
    print("\n| model | gray as-is | iron as-is | iron luma | iron palette | hot as-is | hot luma |")
    print("|---|---|---|---|---|---|---|")
    for spec in args.models.split(","):
        r = {(pal, path): v for s, pal, path, v, _ in rows if s == spec}
        cells = [r.get(k) for k in (("gray", "as-is"), ("iron", "as-is"), ("iron", "luma"), ("iron", "palette"),
                                    ("hot", "as-is"), ("hot", "luma"))]
        print(f"| {spec} | " + " | ".join("—" if c is None else f"{c:.2f}" for c in cells) + " |")
    print("\npaired on the iron crops, against the zero-shot networks run as is (mean Δ dB ± 1.96 s.e.):")
    for ref in ("waifu2x-photo", "srresnet"):
        base = per_crop.get((ref, "iron", "as-is"))
        for (spec, pal, path), p in per_crop.items():
            if base is None or pal != "iron" or spec not in ("v1", "v2"):
                continue
            d = p - base
            print(f"  {spec} {path:8s} − {ref} as-is: {d.mean():+.2f} ± {1.96 * d.std(ddof=1) / np.sqrt(len(d)):.2f}")
    print(f"total {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
