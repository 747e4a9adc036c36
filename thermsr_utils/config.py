"""Paths, profiles and the one setup call every notebook makes.

All paths derive from the repository root (or from the THERMSR_ARTIFACTS / THERMSR_DATA environment
variables); notebooks never hard-code a relative path. Profiles decide parameter *defaults* only:
every value remains overridable from papermill (``-p KEY VALUE`` on the runner).
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
FIGURES_DIR = REPO_ROOT / "figures"            # published figures (committed)
MANIFEST_DIR = REPO_ROOT / "data_manifest"     # committed split manifests of the synthetic profiles
REFERENCE_DIR = REPO_ROOT / "data_manifest" / "reference"  # the write-up's reported numbers, as data

PROFILE_NAMES = ("smoke", "demo", "paper")
DEFAULT_PROFILE = "demo"


def artifacts_root() -> Path:
    """Root of all run outputs (git-ignored); override with THERMSR_ARTIFACTS."""
    return Path(os.environ.get("THERMSR_ARTIFACTS", REPO_ROOT / "artifacts")).resolve()


def data_root() -> Path:
    """Root of raw datasets (git-ignored); override with THERMSR_DATA."""
    return Path(os.environ.get("THERMSR_DATA", REPO_ROOT / "data")).resolve()


# ---------------------------------------------------------------------------------------------
# Profiles. One flat dict of parameter defaults per profile; a notebook receives the keys it
# declares in its `parameters` cell. The notebooks' own literals equal the `demo` values (tested),
# so opening a notebook in Jupyter without papermill runs the demo.
# ---------------------------------------------------------------------------------------------
_COMMON = {"seed": 0}

PROFILES: dict[str, dict] = {
    "smoke": {
        **_COMMON,
        "profile": "smoke",
        # 01_build_dataset
        "data_source": "synthetic",
        "sftl54_subjects": 142,
        "sftl54_frames_per_subject": 1,
        "thermeval_frames_file1": 8,
        "thermeval_frames_file2": 6,
        "sftl54_max_train": 16,
        "sftl54_max_val": 4,
        "sftl54_max_test": 8,
        # 02-06
        "backbone": "pan-tiny",
        "zero_shot_models": [],
        "build_standin": True,
        "standin_steps": 10,
        "lpips_standin": True,
        "nose_model": "auto",
        "locator_epochs": 2,
        "v1_epochs": 2,
        "v1_lr": 0.001,
        "val_every": 1,
        "max_steps_per_epoch": 2,
        "v2_perceptual": "auto",
        "v2_epochs": 2,
        "v2_warmup_epochs": 1,
        "v2_lr": 0.001,
        "v2_ema_decay": 0.5,
    },
    "demo": {
        **_COMMON,
        "profile": "demo",
        "data_source": "synthetic",
        "sftl54_subjects": 142,
        "sftl54_frames_per_subject": 3,
        "thermeval_frames_file1": 50,
        "thermeval_frames_file2": 44,
        "sftl54_max_train": 150,
        "sftl54_max_val": 20,
        "sftl54_max_test": 60,
        "backbone": "pan-small",
        "zero_shot_models": [],
        "build_standin": True,
        "standin_steps": 300,
        "lpips_standin": True,
        "nose_model": "auto",
        "locator_epochs": 30,
        "v1_epochs": 30,
        "v1_lr": 0.0005,
        "val_every": 5,
        "max_steps_per_epoch": 0,
        "v2_perceptual": "auto",
        "v2_epochs": 40,
        "v2_warmup_epochs": 3,
        "v2_lr": 0.0005,
        "v2_ema_decay": 0.99,
    },
    "paper": {
        **_COMMON,
        "profile": "paper",
        "data_source": "real",
        "sftl54_subjects": 142,
        "sftl54_frames_per_subject": 18,
        "thermeval_frames_file1": 0,
        "thermeval_frames_file2": 0,
        "sftl54_max_train": 600,
        "sftl54_max_val": 80,
        "sftl54_max_test": 200,
        "backbone": "drln",
        "zero_shot_models": ["a2n", "edsr-base", "msrn"],
        "build_standin": False,
        "standin_steps": 300,
        "lpips_standin": False,
        "nose_model": "rtmlib",
        "locator_epochs": 30,
        "v1_epochs": 60,
        "v1_lr": 1e-05,
        "val_every": 5,
        "max_steps_per_epoch": 0,
        "v2_perceptual": "lpips",
        "v2_epochs": 200,
        "v2_warmup_epochs": 5,
        "v2_lr": 2e-05,
        "v2_ema_decay": 0.999,
    },
}


def profile_params(profile: str) -> dict:
    """The parameter defaults of ``profile`` (a copy)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILE_NAMES)}")
    return dict(PROFILES[profile])


@dataclass(frozen=True)
class RunPaths:
    """Every folder one profile's run reads or writes."""

    profile: str
    root: Path

    @property
    def crops(self) -> Path:
        return self.root / "crops"

    @property
    def manifest(self) -> Path:
        return self.crops / "manifest.json"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def executed(self) -> Path:
        return self.root / "executed"

    @property
    def synthetic_raw(self) -> Path:
        """Where the synthetic raw datasets of this profile are generated (under the data root)."""
        return data_root() / "synthetic" / self.profile

    @property
    def committed_manifest(self) -> Path:
        return MANIFEST_DIR / f"{self.profile}.json"


def run_paths(profile: str) -> RunPaths:
    """Paths of ``profile``'s artifacts folder (not created)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILE_NAMES)}")
    return RunPaths(profile, artifacts_root() / profile)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and (when installed) torch; ask torch for deterministic kernels."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency, but keep setup importable
        return
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def setup(profile: str = DEFAULT_PROFILE, seed: int = 0, dpi: int = 110) -> RunPaths:
    """The one call each notebook makes first: seeds, figure style, and the run's folders."""
    paths = run_paths(profile)
    for folder in (paths.root, paths.results, paths.figures):
        folder.mkdir(parents=True, exist_ok=True)
    seed_everything(seed)
    try:
        import matplotlib

        matplotlib.rcParams.update({"figure.dpi": dpi, "savefig.dpi": 150, "savefig.bbox": "tight",
                                    "axes.grid": False, "image.interpolation": "nearest"})
    except ImportError:  # pragma: no cover
        pass
    return paths


def resolve_device(device: str = "auto") -> str:
    """"auto" → "cuda" when a GPU is visible, else "cpu"; anything else is returned unchanged."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def record_provenance(paths: RunPaths, **entries) -> dict:
    """Merge ``entries`` (what data, weights and substitutes this run used) into the run's provenance.json."""
    from .io import atomic_write_json, read_json

    file = paths.root / "provenance.json"
    current = read_json(file) if file.exists() else {}
    current.update(entries)
    atomic_write_json(file, current)
    return current


def provenance(paths: RunPaths) -> dict:
    """The run's provenance so far (empty before notebook 01 ran)."""
    from .io import read_json

    file = paths.root / "provenance.json"
    return read_json(file) if file.exists() else {}
