"""Datasets: the SF-TL54 and ThermEval-D builders, the crop manifest, and LR/tensor conversions.

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

import numpy as np

from . import io

SCALE = 4


def make_lr(hr: np.ndarray, scale: int = SCALE) -> np.ndarray:
    """LR image as the write-up made it: ``cv2.resize(hr, 1/scale, INTER_AREA)`` (uint8 in, uint8 out).

    The HR height and width must be divisible by ``scale``.
    """
    import cv2

    h, w = hr.shape[:2]
    if h % scale or w % scale:
        raise ValueError(f"HR size {w}x{h} is not divisible by scale {scale}")
    return cv2.resize(hr, (w // scale, h // scale), interpolation=cv2.INTER_AREA)


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
