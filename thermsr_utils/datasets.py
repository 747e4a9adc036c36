"""Training and validation pairs: random HR patches of the crops with their LR made on the fly (``SRPatchDataset``)
and the datasets of a run read from its manifest (``datasets_from_manifest``)."""
from __future__ import annotations

from collections import Counter

import numpy as np
from torch.utils.data import Dataset

from .data import DATASET_LABELS, SCALE, bgr_to_tensor, make_lr
from .manifests import read_verified_crops
from .readers import trained_on

LR_METHOD = "cv2.resize INTER_AREA to 1/scale, made on the fly"


class SRPatchDataset(Dataset):
    """(LR, HR) training pairs cut from HR crops: random patch, optional flip/rot90, LR made on the fly.

    ``images`` are uint8 BGR H×W×3 arrays (the 192×192 crops; gray and iron alike). An item is ``(lr, hr)``: float
    RGB tensors in [0, 1], 3×(patch/scale)×(patch/scale) and 3×patch×patch (``patch=None``: the whole image). Item
    ``i``'s window and augmentation in epoch ``e`` come from a generator seeded by ``(seed, e, i)``, independent of
    worker count, order and earlier draws. ``trained_on`` (``readers.trained_on`` of the records: palettes and
    datasets) goes into the ``thermsr.json`` of a model ``train.fit`` keeps from this set.
    """

    def __init__(self, images, names=None, patch: int | None = 128, scale: int = SCALE,
                 augment: bool = False, seed: int = 0, trained_on: dict | None = None):
        images = list(images)
        if not images:
            raise ValueError("SRPatchDataset needs at least one image")
        if names is not None:
            names = list(names)
            if len(names) != len(images):
                raise ValueError(f"names has {len(names)} entries for {len(images)} images")
        if scale < 1:
            raise ValueError(f"scale must be ≥ 1, got {scale}")
        if patch is not None and (patch <= 0 or patch % scale):
            raise ValueError(f"patch must be a positive multiple of scale {scale}, got {patch}")
        for i, img in enumerate(images):
            _check_hr_image(img, i, patch, scale, None if names is None else names[i])
        self.images, self.names, self.patch, self.scale = images, names, patch, scale
        self.augment, self.seed, self.epoch = bool(augment), int(seed), 0
        self.trained_on = None if trained_on is None else dict(trained_on)

    def __len__(self) -> int:
        return len(self.images)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random crops/augmentations the next items use."""
        self.epoch = int(epoch)

    def rng(self, index: int) -> np.random.Generator:
        """The generator of item ``index`` in the current epoch."""
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def hr_patch(self, index: int) -> np.ndarray:
        """The (augmented) HR patch of item ``index``: uint8 BGR patch×patch×3."""
        img = self.images[index]
        rng = self.rng(index)
        h, w = img.shape[:2]
        ph, pw = (h, w) if self.patch is None else (self.patch, self.patch)
        y = int(rng.integers(0, h - ph + 1))
        x = int(rng.integers(0, w - pw + 1))
        hr = img[y:y + ph, x:x + pw]
        if self.augment:
            if rng.random() < 0.5:
                hr = hr[:, ::-1]
            hr = np.rot90(hr, k=int(rng.integers(0, 4)), axes=(0, 1))
        return np.ascontiguousarray(hr)

    def __getitem__(self, index: int):
        hr = self.hr_patch(index)
        lr = make_lr(hr, self.scale)
        return bgr_to_tensor(lr), bgr_to_tensor(hr)

    def describe(self) -> dict:
        """The dataset's settings as plain data, for run metadata."""
        counts = dict(Counter(str(n) for n in self.names or []))
        return {"n_images": len(self), "per_dataset": counts, "patch": self.patch, "scale": self.scale,
                "augment": "hflip + rot90" if self.augment else "none", "lr_method": LR_METHOD}


def _check_hr_image(img, index: int, patch: int | None, scale: int, name) -> None:
    """Raise ValueError unless ``img`` is a uint8 BGR H×W×3 array large enough for ``patch``."""
    where = f"image {index}" + (f" ({name})" if name is not None else "")
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        desc = f"{img.dtype} {img.shape}" if isinstance(img, np.ndarray) else type(img).__name__
        raise ValueError(f"{where}: expected a uint8 BGR H×W×3 array, got {desc}")
    h, w = img.shape[:2]
    if patch is None:
        if h % scale or w % scale:
            raise ValueError(f"{where}: size {w}x{h} is not divisible by scale {scale}")
    elif h < patch or w < patch:
        raise ValueError(f"{where}: size {w}x{h} is smaller than patch {patch}")


def datasets_from_manifest(crops_dir, records, *, patch: int | None, augment: bool, seed: int = 0,
                           scale: int = SCALE) -> tuple[SRPatchDataset, dict[str, SRPatchDataset]]:
    """The training set (random patches) and one whole-crop validation set per dataset, from manifest records.
    Every crop is checked against its manifest sha256 as it is read (manifests.CropIntegrityError names the
    missing or changed ones)."""
    train_recs = [r for r in records if r["split"] == "train"]
    if not train_recs:
        raise ValueError("the manifest has no training crops")
    train_set = SRPatchDataset(read_verified_crops(crops_dir, train_recs),
                               names=[DATASET_LABELS[r["dataset"]] for r in train_recs], patch=patch, scale=scale,
                               augment=augment, seed=seed, trained_on=trained_on(train_recs))
    val_sets = {}
    for name, label in DATASET_LABELS.items():
        recs = [r for r in records if r["split"] == "val" and r["dataset"] == name]
        if recs:
            val_sets[label] = SRPatchDataset(read_verified_crops(crops_dir, recs), names=[label] * len(recs),
                                             patch=None, scale=scale)
    return train_set, val_sets
