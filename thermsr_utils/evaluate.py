"""Evaluation: run a method over manifest crops and score it."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import data
from .io import read_image

DATASET_LABELS = {"sftl54": "SF-TL54", "thermeval": "ThermEval-D"}


def load_crops(crops_dir, records) -> np.ndarray:
    """The HR crops of ``records`` as one uint8 BGR array N×H×W×3."""
    import cv2

    return np.stack([read_image(Path(crops_dir) / r["path"], cv2.IMREAD_COLOR) for r in records])


def bicubic_psnr_by_dataset(crops_dir, records, split="test", scale=data.SCALE) -> dict[str, float]:
    """Mean PSNR (the write-up's definition) of bicubic ×scale per dataset and over all, in dB."""
    import cv2

    from . import metrics

    out = {}
    chosen = [r for r in records if r["split"] == split]
    for name in sorted({r["dataset"] for r in chosen}) + ["all"]:
        recs = [r for r in chosen if name in ("all", r["dataset"])]
        hr = load_crops(crops_dir, recs)
        sr = np.stack([cv2.resize(data.make_lr(h, scale), h.shape[1::-1], interpolation=cv2.INTER_CUBIC)
                       for h in hr])
        values = metrics.psnr(data.bgr_to_tensor(sr), data.bgr_to_tensor(hr))
        out[DATASET_LABELS.get(name, name)] = float(values.mean())
    return out
