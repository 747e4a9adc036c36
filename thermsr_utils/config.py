"""Paths, profiles, seeding and provenance: everything a run is set up from (``config.setup``).

The rules that every parameter value is checked against live in ``params``.

All paths derive from the repository root (or from the THERMSR_ARTIFACTS / THERMSR_DATA environment
variables); notebooks never hard-code a relative path. A notebook's ``parameters`` cell holds every
parameter's default; a profile holds only the values that differ from it, and every value remains
overridable from papermill (``-p KEY VALUE`` on the runner).
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
# Profiles. A notebook's `parameters` cell holds the defaults (opening a notebook in Jupyter without
# papermill runs it with them: the demo); a profile holds only the values that differ from those
# literals (a test keeps it so). The runner injects a profile's values, and the profile's name, into
# the notebooks that declare them.
# ---------------------------------------------------------------------------------------------
PROFILES: dict[str, dict] = {
    "smoke": {
        # 01_build_dataset
        "sftl54_frames_per_subject": 1,
        "thermeval_frames_file1": 8,
        "thermeval_frames_file2": 6,
        "sftl54_max_train": 16,
        "sftl54_max_val": 4,
        "sftl54_max_test": 8,
        # 02-06
        "backbone": "pan-tiny",
        "build_standin": True,
        "standin_steps": 10,
        "v1_epochs": 2,
        "v1_lr": 0.001,
        "val_every": 1,
        "max_steps_per_epoch": 2,
        "lpips_weight": 1.0,
        "v2_epochs": 2,
        "v2_warmup": 0.25,
        "v2_lr": 0.001,
        "v2_ema_half_life": 0.25,
        # 07: one v1 learning rate and three blends (with the notebook's λ points and seeds, CI executes every
        # section of 07)
        "frontier_v1_lrs": [0.0001],
        "interpolation_points": 3,
    },
    # the notebooks' own literals
    "demo": {},
    "paper": {
        "data_source": "real",
        "palette": "gray",  # the write-up's crops
        "sftl54_frames_per_subject": 18,
        "thermeval_frames_file1": 0,
        "thermeval_frames_file2": 0,
        "sftl54_max_train": 600,
        "sftl54_max_val": 80,
        "sftl54_max_test": 200,
        "backbone": "drln",
        "zero_shot_models": ["a2n", "edsr-base", "msrn", "dat-light", "srresnet", "waifu2x-photo"],
        "nose_model": "rtmlib",
        "v1_epochs": 60,
        "v1_lr": 1e-05,
        "val_every": 5,
        "keep": "best",
        "v2_epochs": 200,
        "v2_lr": 2e-05,
        # 07: λ points at the write-up's full v2 schedule (a GPU job: 7 v2 and 2 v1 trainings)
        "frontier_lambdas": [0.0, 0.02, 0.1, 0.2, 0.5, 1.0],
        "frontier_seeds": [0, 1, 2],
        "frontier_v1_lrs": [0.0001],
        "interpolation_points": 7,
    },
}


# Notebooks beyond the write-up's study (08 on: the downstream-aware recipe, self-ensemble, ×8) run in the smoke and
# paper profiles; the demo leaves them to their own target (`make beyond`) so that it keeps to its 15-minute budget.
BEYOND_FROM = "08"
RUNS_BEYOND = {"smoke": True, "demo": False, "paper": True}

_POINT_VALUE = r"[a-z0-9_]+=[A-Za-z0-9_.+-]+"
SWEEP_POINT = re.compile(rf"^{_POINT_VALUE}(,{_POINT_VALUE})*$")   # a sweep point's folder name


class ParameterValueError(ValueError):
    """A parameter value outside its rule; the message names the parameter and what is allowed."""


def _check_profile(profile: str) -> None:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILE_NAMES)}")


def profile_values(profile: str) -> dict:
    """What ``profile`` injects into every notebook that declares the name: its name, then the values in which
    it differs from the notebooks' literals (a copy)."""
    _check_profile(profile)
    return {"profile": profile, **PROFILES[profile]}


NOTEBOOK_RE = re.compile(r"^(\d\d)_[a-z0-9_]+\.py$")   # a numbered notebook's py:percent source


def read_parameters(source: Path) -> dict:
    """Names and literal defaults of the ``parameters``-tagged cell of a py:percent notebook."""
    import ast

    import jupytext

    nb = jupytext.read(source)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{source.name}: expected exactly one cell tagged 'parameters', found {len(cells)}")
    tree = ast.parse(cells[0].source)
    params = {}
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            raise ValueError(f"{source.name}: the parameters cell may hold only `name = literal` lines "
                             f"(line {node.lineno})")
        try:
            params[node.targets[0].id] = ast.literal_eval(node.value)
        except ValueError:
            raise ValueError(f"{source.name}: parameter {node.targets[0].id!r} is not a plain literal "
                             f"(derived values belong in the next cell)") from None
    return params


def notebook_defaults(notebooks_dir: Path | None = None) -> dict:
    """The literals of every numbered notebook's ``parameters`` cell, merged (the notebooks agree on shared names;
    a test keeps them so)."""
    found = sorted(p for p in Path(notebooks_dir or NOTEBOOKS_DIR).glob("*.py") if NOTEBOOK_RE.match(p.name))
    return {k: v for p in found for k, v in read_parameters(p).items()}


def profile_params(profile: str, notebooks_dir: Path | None = None) -> dict:
    """Every parameter value a run of ``profile`` uses: the notebooks' literals with the profile's values over them."""
    return {**notebook_defaults(notebooks_dir), **profile_values(profile)}


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
    _check_profile(profile)
    main = artifacts_root() / profile
    if not sweep_point:
        return RunPaths(profile, main)
    if not isinstance(sweep_point, str) or not SWEEP_POINT.match(sweep_point):
        raise ParameterValueError(f"sweep point {sweep_point!r} is not a name like 'lpips_weight=0.1' or "
                                  "'seed=1,v2_epochs=2'")
    return RunPaths(profile, main / "sweeps" / sweep_point, base=main)


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
