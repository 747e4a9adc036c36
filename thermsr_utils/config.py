"""Paths, profiles, parameter rules, seeding and provenance: everything a run is set up from (``config.setup``).

All paths derive from the repository root (or from the THERMSR_ARTIFACTS / THERMSR_DATA environment
variables); notebooks never hard-code a relative path. Profiles decide parameter *defaults* only:
every value remains overridable from papermill (``-p KEY VALUE`` on the runner).
"""
from __future__ import annotations

import math
import os
import random
import re
from dataclasses import dataclass, replace
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
        "v2_epochs": 2,
        "v2_warmup_epochs": 1,
        "v2_lr": 0.001,
        "v2_ema_decay": 0.5,
        # 07: two λ points and a second seed, so that CI executes every section of 07
        "frontier_lambdas": [0.0, 0.5],
        "frontier_seeds": [0, 1],
        "frontier_v2_epochs": 2,
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
        # A genuinely pretrained ×4 network from a registry package (see notebook 03 for the choice);
        # the PAN stand-in stays in the zero-shot table to show what minutes of pretraining give.
        "backbone": "srresnet",
        "zero_shot_models": ["dat-light", "waifu2x-photo", "pan-small"],
        "build_standin": True,
        "standin_steps": 300,
        "nose_model": "auto",
        "v1_epochs": 6,
        "v1_lr": 0.0002,
        "val_every": 2,
        "max_steps_per_epoch": 0,
        "v2_perceptual": "lpips",
        "lpips_weight": 0.05,
        "v2_epochs": 6,
        "v2_warmup_epochs": 1,
        "v2_lr": 0.0002,
        "v2_ema_decay": 0.95,
        # 07: v2 at seven weights λ and v1/v2 at three seeds; v2 points train for 2 epochs (the main run: 6)
        # to fit the sweep into half an hour on 2 CPU cores
        "frontier_lambdas": [0.0, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0],
        "frontier_seeds": [0, 1, 2],
        "frontier_v2_epochs": 2,
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
        "v2_epochs": 200,
        "v2_warmup_epochs": 5,
        "v2_lr": 2e-05,
        "v2_ema_decay": 0.999,
        # 07: the same λ list at the write-up's full v2 schedule (a GPU job: 9 v2 and 2 v1 trainings)
        "frontier_lambdas": [0.0, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0],
        "frontier_seeds": [0, 1, 2],
        "frontier_v2_epochs": 200,
    },
}


# ---------------------------------------------------------------------------------------------
# Parameter rules. Every parameter a notebook declares has exactly one rule here (a test checks
# this), and the runner checks every resolved value (profile default or override) against it
# before any notebook starts. The runner checks types separately, against the notebook's literal.
# ---------------------------------------------------------------------------------------------
# The short backbone names of thermsr_utils.models.ARCHITECTURES (repeated here so that checking
# parameters does not import torch; a test keeps the two lists equal).
BACKBONE_NAMES = ("drln", "a2n", "edsr-base", "msrn", "pan", "pan-small", "pan-tiny")
# The registry-pretrained networks of thermsr_utils.zoo (also repeated to keep torch out; tested equal).
ZOO_NAMES = ("dat-light", "srresnet", "waifu2x-photo")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
_POINT_VALUE = r"[a-z0-9_]+=[A-Za-z0-9_.+-]+"
_POINT = re.compile(rf"^{_POINT_VALUE}(,{_POINT_VALUE})*$")


class ParameterValueError(ValueError):
    """A parameter value outside its rule; the message names the parameter and what is allowed."""


@dataclass(frozen=True)
class Rule:
    """The values one notebook parameter accepts.

    kind: "int" / "float" (a number in the range lo..hi, ends open when lo_open / hi_open; ints may
    also have to be a multiple of ``multiple_of``), "choice" (one of ``choices``), "bool", "dir"
    (an existing folder, or "" for the default location), "backbone" (a short name, a hub id
    owner/name, or a folder holding a saved model), "backbones" (a list of those), "device"
    (auto, cpu, cuda or cuda:N).
    """

    kind: str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    multiple_of: int | None = None
    choices: tuple = ()
    item: "Rule | None" = None     # kind "list": the rule of every element
    or_none: bool = False          # None is allowed too

    def allowed(self) -> str:
        """The allowed values in words, for error messages."""
        if self.or_none:
            return "None or " + replace(self, or_none=False).allowed()
        if self.kind in ("int", "float"):
            word = "an integer" if self.kind == "int" else "a number"
            lo, hi = _num(self.lo), _num(self.hi)
            if self.lo is not None and self.hi is not None:
                rng = f"in {'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open else ']'}"
            elif self.lo is not None:
                rng = f"{'>' if self.lo_open else '≥'} {lo}"
            elif self.hi is not None:
                rng = f"{'<' if self.hi_open else '≤'} {hi}"
            else:
                rng = "(any finite value)"
            mult = f", a multiple of {self.multiple_of}" if self.multiple_of else ""
            return f"{word} {rng}{mult}"
        if self.kind == "choice":
            return "one of " + ", ".join(repr(c) for c in self.choices)
        return {"bool": "True or False",
                "dir": "an existing folder, or '' for the default location",
                "backbone": f"a short name ({', '.join(BACKBONE_NAMES + ZOO_NAMES)}), a hub id like 'eugenesiow/drln-bam', "
                            "or a folder holding a saved model (config.json)",
                "backbones": "a list of backbones, each a short name, a hub id or a saved-model folder",
                "device": "'auto', 'cpu', 'cuda' or 'cuda:N'",
                "list": f"a non-empty list, each element {self.item.allowed() if self.item else ''}",
                "point": "'' (the main run) or a sweep point name like 'lpips_weight=0.1' or 'seed=1,v2_epochs=2'"
                }[self.kind]

    def check(self, name: str, value):
        """Return ``value`` (folders made absolute) if allowed, else raise ParameterValueError naming ``name``."""
        ok, value = self._check(value)
        if not ok:
            raise ParameterValueError(f"parameter {name!r} = {value!r} is not allowed: expected {self.allowed()}")
        return value

    def _check(self, value) -> tuple[bool, object]:
        """(allowed?, normalised value)."""
        if self.or_none and value is None:
            return True, value
        if self.kind in ("int", "float"):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                return False, value
            if self.kind == "int" and not isinstance(value, int):
                return False, value
            if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
                return False, value
            if self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi):
                return False, value
            return not (self.multiple_of and value % self.multiple_of), value
        if self.kind == "choice":
            return value in self.choices and type(value) in {type(c) for c in self.choices}, value
        if self.kind == "bool":
            return isinstance(value, bool), value
        if self.kind == "dir":
            if value == "":
                return True, value
            if isinstance(value, str) and Path(value).is_dir():
                return True, str(Path(value).resolve())
            return False, value
        if self.kind == "backbone":
            return _backbone_ok(value)
        if self.kind == "backbones":
            if not isinstance(value, (list, tuple)):
                return False, value
            checked = [_backbone_ok(v) for v in value]
            return all(ok for ok, _ in checked), [v for _, v in checked]
        if self.kind == "device":
            return isinstance(value, str) and bool(_DEVICE.match(value)), value
        if self.kind == "list":
            if not isinstance(value, (list, tuple)) or not value:
                return False, value
            checked = [self.item._check(v) for v in value]
            return all(ok for ok, _ in checked), [v for _, v in checked]
        if self.kind == "point":
            return isinstance(value, str) and (value == "" or bool(_POINT.match(value))), value
        raise ValueError(f"unknown rule kind {self.kind!r}")


def _num(x) -> str:
    """A rule bound as text: integers in full, other numbers in short form (None as "")."""
    if x is None:
        return ""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _backbone_ok(value) -> tuple[bool, object]:
    """A short name, a hub id (owner/name that is not a path here) or a saved-model folder (made absolute)."""
    if not isinstance(value, str) or not value:
        return False, value
    if value in BACKBONE_NAMES or value in ZOO_NAMES:
        return True, value
    path = Path(value)
    if path.is_dir():
        return (path / "config.json").is_file(), str(path.resolve())
    return bool(_HUB_ID.match(value)) and not path.exists(), value


def _int(lo=None, hi=None, multiple_of=None) -> Rule:
    return Rule("int", lo=lo, hi=hi, multiple_of=multiple_of)


def _float(lo=None, hi=None, lo_open=False, hi_open=False) -> Rule:
    return Rule("float", lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open)


def _choice(*choices) -> Rule:
    return Rule("choice", choices=tuple(choices))


_BOOL = Rule("bool")
_POSITIVE = _int(lo=1)
_COUNT = _int(lo=0)
_LR = _float(lo=0, hi=1, lo_open=True)
_WEIGHT = _float(lo=0)
_SEED = _int(lo=0, hi=2**32 - 1)

# The fields of a training recipe: train.Recipe checks itself against these, and the notebooks' v1_* / v2_*
# parameters below are held to the same rules.
RECIPE_RULES: dict[str, Rule] = {
    "epochs": _POSITIVE, "batch_size": _POSITIVE, "val_every": _POSITIVE, "scale": _POSITIVE,
    "lr": _LR, "weight_decay": _WEIGHT, "min_lr": _WEIGHT, "warmup_epochs": _COUNT,
    "warmup_start_factor": _float(lo=0, hi=1, lo_open=True), "schedule": _choice("cosine", "constant"),
    "ema_decay": Rule("float", lo=0, hi=1, lo_open=True, hi_open=True, or_none=True),
    "select_mode": _choice("max", "min"), "select_on": _choice(None, "ema", "model"),
    "seed": _SEED, "num_workers": _COUNT, "max_steps_per_epoch": Rule("int", lo=1, or_none=True),
    "grad_clip": Rule("float", lo=0, lo_open=True, or_none=True), "amp": _choice(None, "bf16", "auto"),
    "fast": _choice(None, True, False), "compile": _BOOL,
}

PARAMETER_RULES: dict[str, Rule] = {
    # every notebook
    "profile": _choice(*PROFILE_NAMES),
    "seed": _SEED,
    # 01_build_dataset
    "data_source": _choice("synthetic", "real"),
    "sftl54_root": Rule("dir"),
    "thermeval_root": Rule("dir"),
    "sftl54_subjects": _int(lo=3),                 # at least one subject per split
    "sftl54_frames_per_subject": _POSITIVE,
    "thermeval_frames_file1": _COUNT,
    "thermeval_frames_file2": _COUNT,
    "sftl54_max_train": _POSITIVE,
    "sftl54_max_val": _POSITIVE,
    "sftl54_max_test": _POSITIVE,
    "palette": _choice("gray", "iron"),
    "crop_size": _int(lo=16, multiple_of=4),       # LR = crop / 4
    "crop_pad": _float(lo=0, lo_open=True),
    "thermeval_split_seed": _int(lo=0, hi=2**32 - 1),
    "min_crop_side": _COUNT,
    "update_manifest": _BOOL,
    # 02-06: models, metrics, nose model
    "backbone": Rule("backbone"),
    "zero_shot_models": Rule("backbones"),
    "weights": _choice("auto", "hub", "standin", "random"),
    "build_standin": _BOOL,
    "standin_steps": _POSITIVE,
    "nose_model": _choice("auto", "rtmlib", "retinaface"),
    "table_per_dataset": _POSITIVE,
    "bootstrap_samples": _int(lo=100),             # paired bootstrap resamples of the test crops
    "batch_size": _POSITIVE,
    "device": Rule("device"),
    # 03 and 05: training
    "v1_epochs": RECIPE_RULES["epochs"],
    "v1_lr": RECIPE_RULES["lr"],
    "v1_batch_size": RECIPE_RULES["batch_size"],
    "v1_patch": _int(lo=4, multiple_of=4),
    "val_every": RECIPE_RULES["val_every"],
    "max_steps_per_epoch": _COUNT,                 # 0 = no cap
    "resume": _BOOL,
    "v2_perceptual": _choice("lpips", "fft"),
    "lpips_weight": _WEIGHT,
    "fft_weight": _WEIGHT,
    "v2_epochs": RECIPE_RULES["epochs"],
    "v2_warmup_epochs": RECIPE_RULES["warmup_epochs"],
    "v2_lr": RECIPE_RULES["lr"],
    "v2_batch_size": RECIPE_RULES["batch_size"],
    "v2_ema_decay": replace(RECIPE_RULES["ema_decay"], or_none=False),
    # 02-07: which sweep point a notebook runs in (set by the runner's --sweep; '' is the main run)
    "sweep_point": Rule("point"),
    # 07: the frontier sweeps the runner executes before 07 reads them
    "frontier_lambdas": Rule("list", item=_WEIGHT),
    "frontier_seeds": Rule("list", item=_SEED),
    "frontier_v2_epochs": _POSITIVE,
}

# Rules between two parameters of the same notebook: (names, test, what is required).
CROSS_RULES = (
    (("v2_warmup_epochs", "v2_epochs"), lambda w, e: w < e, "v2_warmup_epochs must be smaller than v2_epochs"),
)


def check_parameters(values: dict, where: str = "", require_rules: bool = False) -> dict:
    """Check the entries of ``values`` against PARAMETER_RULES and CROSS_RULES; return them normalised.

    Raises ParameterValueError naming the parameter (and ``where`` it comes from) for a value outside
    its rule. A name without a rule passes unchanged unless ``require_rules`` (the project's notebooks
    have a rule for every parameter; a test keeps it so).
    """
    prefix = f"{where}: " if where else ""
    out = {}
    for name, value in values.items():
        rule = PARAMETER_RULES.get(name)
        if rule is None:
            if require_rules:
                raise ParameterValueError(f"{prefix}parameter {name!r} has no rule in config.PARAMETER_RULES")
            out[name] = value
            continue
        try:
            out[name] = rule.check(name, value)
        except ParameterValueError as e:
            raise ParameterValueError(prefix + str(e)) from None
    for names, test, requirement in CROSS_RULES:
        if all(n in out for n in names) and not test(*(out[n] for n in names)):
            got = ", ".join(f"{n}={out[n]!r}" for n in names)
            raise ParameterValueError(f"{prefix}{requirement} (got {got})")
    return out


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
    PARAMETER_RULES["sweep_point"].check("sweep_point", sweep_point)
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
    if name and not _POINT.match(name):
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
