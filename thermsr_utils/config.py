"""Paths, profiles, seeding and provenance: everything a run is set up from (``config.setup``).

The rules that every parameter value is checked against live in ``params``.

All paths derive from the repository root (or from the THERMSR_ARTIFACTS / THERMSR_DATA environment
variables); notebooks never hard-code a relative path. Profiles decide parameter *defaults* only:
every value remains overridable from papermill (``-p KEY VALUE`` on the runner).
"""
from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
FIGURES_DIR = REPO_ROOT / "figures"            # published figures (committed)
MANIFEST_DIR = REPO_ROOT / "data_manifest"     # committed split manifests of the synthetic profiles
REFERENCE_DIR = REPO_ROOT / "data_manifest" / "reference"  # the write-up's reported numbers, as data

PROFILE_NAMES = ("smoke", "demo", "paper")
MAX_CROP_SIZE = 1024   # largest HR crop side the builder makes (the write-up's is 192; 100000² would be 30 GB)
DEFAULT_PROFILE = "demo"


def artifacts_root() -> Path:
    """Root of all run outputs (git-ignored); override with THERMSR_ARTIFACTS."""
    return Path(os.environ.get("THERMSR_ARTIFACTS", REPO_ROOT / "artifacts")).resolve()


class UnwritableFolder(OSError):
    """A folder the run must write (the artifacts root or one under it) that is a file or is not writable."""


def writable_folder(path, what: str = "artifacts folder",
                    fix: str = "set THERMSR_ARTIFACTS to a writable folder") -> Path:
    """Create ``path`` (and its parents) if missing and prove it writable; return it.

    Raises UnwritableFolder in one sentence naming the folder when it, or a parent, is a file, or when
    it cannot be written (read-only, another owner), and says what to do (``fix``; by default
    THERMSR_ARTIFACTS, which moves every output elsewhere).
    """
    import tempfile

    path = Path(path)
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise UnwritableFolder(f"{what} {path}: {blocker} is a file, not a folder; remove it, or {fix}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise UnwritableFolder(f"{what} {path} is not writable ({e.strerror or e}); make it writable, "
                               f"or {fix}") from None
    return path


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
        "palette": "mix",
        "sftl54_subjects": 142,
        "sftl54_frames_per_subject": 1,
        "thermeval_frames_file1": 8,
        "thermeval_frames_file2": 6,
        "sftl54_max_train": 16,
        "sftl54_max_val": 4,
        "sftl54_max_test": 8,
        # 02-06
        "backbone": "pan-tiny",
        "zero_shot_models": ["waifu2x-photo"],
        "build_standin": True,
        "standin_steps": 10,
        "nose_model": "auto",
        "v1_epochs": 2,
        "v1_lr": 0.001,
        "val_every": 1,
        "max_steps_per_epoch": 2,
        "v2_perceptual": "lpips",
        "lpips_weight": 1.0,
        "keep": "last",
        "v2_epochs": 2,
        "v2_warmup": 0.25,
        "v2_lr": 0.001,
        "v2_ema_half_life": 0.25,
        # 07: the main λ and one more, a second seed and three blends, so that CI executes every section of 07
        "frontier_lambdas": [0.0, 1.0],
        "frontier_seeds": [0, 1],
        "frontier_v1_lrs": [0.0001],
        "interpolation_points": 3,
    },
    "demo": {
        **_COMMON,
        "profile": "demo",
        "data_source": "synthetic",
        "palette": "mix",  # SF-TL54 subjects alternate gray (white-hot) and iron (false colour), as cameras write both
        "sftl54_subjects": 142,
        "sftl54_frames_per_subject": 3,
        "thermeval_frames_file1": 50,
        "thermeval_frames_file2": 44,
        "sftl54_max_train": 150,
        "sftl54_max_val": 20,
        "sftl54_max_test": 60,
        # A genuinely pretrained ×4 network from a registry package (see notebook 03 for the choice), beside
        # waifu2x; DAT-light (a transformer) and the PAN stand-in would double 02's time on a CPU: one override away
        "backbone": "srresnet",
        "zero_shot_models": ["waifu2x-photo"],
        "build_standin": False,
        "standin_steps": 300,
        "nose_model": "auto",
        "v1_epochs": 4,
        "v1_lr": 0.0002,
        "val_every": 2,
        "max_steps_per_epoch": 0,
        "v2_perceptual": "lpips",
        "lpips_weight": 0.05,
        "keep": "last",
        "v2_epochs": 4,
        "v2_warmup": 0.025,
        "v2_lr": 0.0002,
        "v2_ema_half_life": 0.0666,
        # 07: v2 at λ = 0 and 1 besides the main 0.05, v1 and v2 at a second seed, every one trained exactly like
        # the main run's; the curve between λ = 0 and 1 is traced by blending their weights (no training)
        "frontier_lambdas": [0.0, 1.0],
        "frontier_seeds": [0, 1],
        # v1 at the 1e-4 the write-up's text says fell below zero-shot, and at a rate above the demo's 2e-4
        "frontier_v1_lrs": [0.0001, 0.001],
        "interpolation_points": 5,
    },
    "paper": {
        **_COMMON,
        "profile": "paper",
        "data_source": "real",
        "palette": "gray",  # the write-up's crops
        "sftl54_subjects": 142,
        "sftl54_frames_per_subject": 18,
        "thermeval_frames_file1": 0,
        "thermeval_frames_file2": 0,
        "sftl54_max_train": 600,
        "sftl54_max_val": 80,
        "sftl54_max_test": 200,
        "backbone": "drln",
        "zero_shot_models": ["a2n", "edsr-base", "msrn", "dat-light", "srresnet", "waifu2x-photo"],
        "build_standin": False,
        "standin_steps": 300,
        "nose_model": "rtmlib",
        "v1_epochs": 60,
        "v1_lr": 1e-05,
        "val_every": 5,
        "max_steps_per_epoch": 0,
        "v2_perceptual": "lpips",
        "lpips_weight": 0.05,
        "keep": "best",
        "v2_epochs": 200,
        "v2_warmup": 0.025,
        "v2_lr": 2e-05,
        "v2_ema_half_life": 0.0666,
        # 07: λ points at the write-up's full v2 schedule (a GPU job: 7 v2 and 2 v1 trainings)
        "frontier_lambdas": [0.0, 0.02, 0.1, 0.2, 0.5, 1.0],
        "frontier_seeds": [0, 1, 2],
        "frontier_v1_lrs": [0.0001],
        "interpolation_points": 7,
    },
}


_POINT_VALUE = r"[a-z0-9_]+=[A-Za-z0-9_.+-]+"
SWEEP_POINT = re.compile(rf"^{_POINT_VALUE}(,{_POINT_VALUE})*$")   # a sweep point's folder name


class ParameterValueError(ValueError):
    """A parameter value outside its rule; the message names the parameter and what is allowed."""


def profile_params(profile: str) -> dict:
    """The parameter defaults of ``profile`` (a copy)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILE_NAMES)}")
    return dict(PROFILES[profile])


@dataclass(frozen=True)
class RunPaths:
    """Every folder one profile's run reads or writes.

    A sweep point (``base`` set) is a run of its own under ``<base>/sweeps/<point>/`` that reuses the main
    run's crops and models (stand-in weights, converted registry weights, the nose model): those are read from
    ``base``; results, checkpoints, figures and executed notebooks are the point's own.
    """

    profile: str
    root: Path
    base: Path | None = None

    @property
    def main_root(self) -> Path:
        """The main run's folder (``root`` itself unless this is a sweep point)."""
        return self.base or self.root

    @property
    def point(self) -> str:
        """The sweep point's name, '' for the main run."""
        return "" if self.base is None else self.root.name

    @property
    def sweeps(self) -> Path:
        """Where the sweep points of this profile live."""
        return self.main_root / "sweeps"

    @property
    def crops(self) -> Path:
        return self.main_root / "crops"

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
        return self.main_root / "models"

    @property
    def executed(self) -> Path:
        return self.root / "executed"

    @property
    def lock(self) -> Path:
        """The lock file of a run in progress (owner's pid, host, start time and command)."""
        return self.root / ".lock"

    @property
    def synthetic_raw(self) -> Path:
        """Where the synthetic raw datasets of this profile are generated (under the data root)."""
        return data_root() / "synthetic" / self.profile

    @property
    def committed_manifest(self) -> Path:
        return MANIFEST_DIR / f"{self.profile}.json"


def run_paths(profile: str, sweep_point: str = "") -> RunPaths:
    """Paths of ``profile``'s artifacts folder, or of one of its sweep points (not created)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILE_NAMES)}")
    main = artifacts_root() / profile
    if not sweep_point:
        return RunPaths(profile, main)
    if not isinstance(sweep_point, str) or not SWEEP_POINT.match(sweep_point):
        raise ParameterValueError(f"sweep point {sweep_point!r} is not a name like 'lpips_weight=0.1' or "
                                  "'seed=1,v2_epochs=2'")
    return RunPaths(profile, main / "sweeps" / sweep_point, base=main)


def _point_value(value) -> str:
    """One swept value as it appears in a point's name."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return f"{value:.1f}"
    return str(value)


def point_values(profile: str, values: dict, defaults: dict | None = None) -> dict:
    """The entries of ``values`` that differ from the profile's defaults (then from ``defaults``, e.g. a
    notebook's own literals): what makes a sweep point different from the main run."""
    base = {**(defaults or {}), **PROFILES[profile]}
    return {k: v for k, v in sorted(values.items()) if k not in base or base[k] != v}


def point_name(profile: str, values: dict, defaults: dict | None = None) -> str:
    """The folder name of the sweep point with these parameter values ('' when they are the main run's):
    ``name=value`` pairs of the non-default values, sorted and joined by commas."""
    differing = point_values(profile, values, defaults)
    name = ",".join(f"{k}={_point_value(v)}" for k, v in differing.items())
    if name and not SWEEP_POINT.match(name):
        raise ParameterValueError(f"cannot name a sweep point after {differing}: swept values must be numbers, "
                                  "True/False or short names made of letters, digits, '.', '_', '+' and '-'")
    return name


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every GPU); ask torch and cuDNN for deterministic kernels.

    ``PYTHONHASHSEED`` only reaches processes started afterwards (e.g. DataLoader workers started with
    spawn); string hashing is not used for any random choice here. Ops without a deterministic GPU
    kernel only warn (``warn_only=True``): ``determinism()`` records what was in force with each result.
    """
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS initialises
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency, but keep setup importable
        return
    torch.manual_seed(seed)  # seeds the CUDA generators too
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def determinism() -> dict:
    """The settings that decide whether GPU results repeat bit for bit, as plain data for run records."""
    import torch

    return {
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        "cuda_available": torch.cuda.is_available(),
        "note": "CPU results repeat bit for bit; on a GPU, ops without a deterministic kernel only warn",
    }


def setup(profile: str = DEFAULT_PROFILE, seed: int = 0, sweep_point: str = "", dpi: int = 110) -> RunPaths:
    """The one call each notebook makes first: seeds, figure style, and the run's folders (a sweep point's
    when ``sweep_point`` names one)."""
    paths = run_paths(profile, sweep_point)
    for folder in (paths.root, paths.results, paths.figures):
        writable_folder(folder)
    seed_everything(seed)
    _figures_inline()
    try:
        import matplotlib

        matplotlib.rcParams.update({"figure.dpi": dpi, "savefig.dpi": 150, "savefig.bbox": "tight",
                                    "axes.grid": False, "image.interpolation": "nearest"})
    except ImportError:  # pragma: no cover
        pass
    return paths


def _figures_inline() -> None:
    """In a notebook kernel, show each figure a cell returns as a PNG in its output, so the executed notebook
    (and the report made from it) holds the figure and not its repr; MPLBACKEND=Agg alone would not."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return
    shell = get_ipython()
    if shell is not None and getattr(shell, "kernel", None) is not None:
        shell.run_line_magic("matplotlib", "inline")


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


def code_version() -> str:
    """The package version, with '+g<short commit>' when run from a git checkout."""
    import subprocess

    from . import __version__

    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
        suffix = f"+g{out.stdout.strip()}" if out.returncode == 0 and out.stdout.strip() else ""
    except (OSError, subprocess.SubprocessError):
        suffix = ""
    return __version__ + suffix


def provenance(paths: RunPaths) -> dict:
    """The run's provenance so far (empty before notebook 01 ran)."""
    from .io import read_json

    file = paths.root / "provenance.json"
    return read_json(file) if file.exists() else {}
