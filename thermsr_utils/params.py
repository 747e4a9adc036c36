"""The rules every parameter value is checked against before any work: one ``Rule`` per notebook parameter
(``PARAMETER_RULES``) and per training-recipe field (``RECIPE_RULES``, shared by the v1_* / v2_* parameters),
and ``check_parameters``, which the runner calls on every resolved value.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from pathlib import Path

from .config import MAX_CROP_SIZE, PROFILE_NAMES, SWEEP_POINT, ParameterValueError

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
            return isinstance(value, str) and (value == "" or bool(SWEEP_POINT.match(value))), value
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
    "lr": _LR, "weight_decay": _WEIGHT, "min_lr": _WEIGHT,
    "warmup": _float(lo=0, hi=1, hi_open=True),
    "warmup_start_factor": _float(lo=0, hi=1, lo_open=True), "schedule": _choice("cosine", "constant"),
    "ema_half_life": Rule("float", lo=0, hi=1, lo_open=True, hi_open=True, or_none=True),
    "keep": _choice("best", "last"),
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
    "palette": _choice("gray", "iron", "mix"),        # readers.PALETTE_CHOICES (tested equal)
    "crop_size": _int(lo=16, hi=MAX_CROP_SIZE, multiple_of=4),   # LR = crop / 4
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
    "nose_model": _choice("auto", "rtmlib", "retinaface", "dlib"),
    "second_nose_model": _choice("dlib", "retinaface", "rtmlib", "none"),
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
    "fresh_start": _BOOL,
    "v2_perceptual": _choice("lpips", "fft"),
    "lpips_weight": _WEIGHT,
    "fft_weight": _WEIGHT,
    "v2_epochs": RECIPE_RULES["epochs"],
    "v2_warmup": RECIPE_RULES["warmup"],
    "v2_lr": RECIPE_RULES["lr"],
    "v2_batch_size": RECIPE_RULES["batch_size"],
    "v2_ema_half_life": replace(RECIPE_RULES["ema_half_life"], or_none=False),
    "keep": RECIPE_RULES["keep"],
    # 02-07: which sweep point a notebook runs in (set by the runner's --sweep; '' is the main run)
    "sweep_point": Rule("point"),
    # 07: the frontier sweeps the runner executes before 07 reads them
    "frontier_lambdas": Rule("list", item=_WEIGHT),
    "frontier_seeds": Rule("list", item=_SEED),
    "frontier_v1_lrs": Rule("list", item=RECIPE_RULES["lr"]),
    "interpolation_points": _COUNT,                # weight blends between v2 at the smallest and largest λ
    # 08: beyond the write-up (RetinaFace is the landmark model in v3's loss; the independent one is another)
    "independent_nose_model": _choice("dlib", "rtmlib"),
    "v3_terms": Rule("list", item=_choice("landmarks", "features")),
    "landmark_weight": _WEIGHT,
    "feature_weight": _WEIGHT,
    "x8_model": Rule("backbone"),
}

# Rules between two parameters, of one notebook or of two that run together: (names, test, what is required).
CROSS_RULES = (
    (("v1_patch", "crop_size"), lambda p, c: p <= c,
     "v1_patch must not exceed crop_size (training patches are cut from the crops)"),
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
                raise ParameterValueError(f"{prefix}parameter {name!r} has no rule in params.PARAMETER_RULES")
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
