"""Super-resolution backbones from ``super-image``: loading, offline stand-ins, and batched inference.

Weights come from one of four places, and every loaded model says which in its ``info`` dict:

- ``hub``: the RGB-pretrained weights of the Hugging Face hub (e.g. ``eugenesiow/drln-bam``), read from the local
  Hugging Face cache (downloaded only when ``source="hub"`` is asked for and the hub is reachable);
- ``local``: a directory written by ``save_pretrained`` (a finetuned checkpoint);
- ``standin``: the same architecture pretrained briefly on the photographs shipped inside scikit-image
  (``build_standin``), for machines that cannot reach the hub;
- ``random``: untrained weights, only when asked for explicitly.

A saved directory holds ``config.json`` and ``pytorch_model_{scale}x.pt`` and loads back with super-image's own
``XxxModel.from_pretrained(directory, scale=...)``. This module reads such directories itself: super-image's
``from_pretrained`` calls ``torch.load`` without ``weights_only`` (safe only through torch's default, which an
environment variable can turn off), prints the file name, and its models' ``load_state_dict`` overrides skip missing
keys silently. Here checkpoints are read with ``weights_only=True`` and copied with a strict ``load_state_dict``.

Tensors follow super-image's convention: float RGB in [0, 1], N×3×H×W in, N×3×sH×sW out.
"""
from __future__ import annotations

import inspect
import os
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import super_image
from torch.overrides import TorchFunctionMode

from . import config as _config, zoo
from .accel import DIHEDRAL
from .data import SCALE, bgr_to_tensor, make_lr
from .io import atomic_dir, atomic_write_json, file_sha256, load_torch, read_json
from .zoo import count_params, load_strict

SUPPORTED_SCALES = (2, 3, 4)
CONFIG_NAME = "config.json"
WEIGHTS_TEMPLATE = "pytorch_model_{scale}x.pt"
STANDIN_INFO_NAME = "standin.json"
SOURCES = ("auto", "hub", "local", "standin", "random", "registry")
MAX_CONFIG_SIZE = 4096  # channels or blocks: no super-image backbone comes near it; more only exhausts memory
_NOT_SIZES = ("scale", "rgb_range", "res_scale")  # integer config defaults that are not layer sizes
_OFFERED = ", ".join(f"x{s}" for s in SUPPORTED_SCALES)


class Architecture(NamedTuple):
    """One named backbone: super-image model and config classes, hub id (or None), config overrides."""

    model_class: type
    config_class: type
    hub_id: str | None
    config_kwargs: dict


# DRLN's size is fixed in super-image's code (64 channels, 20 blocks; DrlnConfig only offers `scale`
# and `bam`), so it cannot be shrunk through its config. The CPU presets are PAN with reduced widths.
ARCHITECTURES: dict[str, Architecture] = {
    "drln": Architecture(super_image.DrlnModel, super_image.DrlnConfig, "eugenesiow/drln-bam", {"bam": True}),
    "a2n": Architecture(super_image.A2nModel, super_image.A2nConfig, "eugenesiow/a2n", {}),
    "edsr-base": Architecture(super_image.EdsrModel, super_image.EdsrConfig, "eugenesiow/edsr-base", {}),
    "msrn": Architecture(super_image.MsrnModel, super_image.MsrnConfig, "eugenesiow/msrn", {}),
    "pan": Architecture(super_image.PanModel, super_image.PanConfig, "eugenesiow/pan", {}),
    "pan-small": Architecture(super_image.PanModel, super_image.PanConfig, None, {"nf": 32, "unf": 16, "nb": 8}),
    "pan-tiny": Architecture(super_image.PanModel, super_image.PanConfig, None, {"nf": 8, "unf": 8, "nb": 1}),
}

# Photographs that ship inside scikit-image (no download); the last one is held out for evaluation.
STANDIN_TRAIN_IMAGES = ("astronaut", "camera", "coffee", "rocket", "brick", "grass", "gravel")
STANDIN_HOLDOUT_IMAGE = "chelsea"
STANDIN_HOLDOUT_SIZE = 256


class WeightsNotFoundError(FileNotFoundError):
    """No weights could be found for a model spec; the message says what is missing and how to get it."""


def _model_types() -> dict[str, tuple[type, type]]:
    """super-image's ``model_type`` string (e.g. "DRLN") -> (model class, config class)."""
    configs = {n[:-5]: getattr(super_image, n[:-5] + "Config") for n in super_image.__all__
               if n.endswith("Model") and hasattr(super_image, n[:-5] + "Config")}
    return {cfg.model_type: (getattr(super_image, base + "Model"), cfg) for base, cfg in configs.items()}


# ---- Names, scales and paths ----
def check_scale(scale: int, spec: str | os.PathLike | None = None) -> int:
    """Return ``scale`` if the model ``spec`` can upscale by it, else raise ValueError in one sentence naming the
    scale and the models that offer it. A zoo name offers what its network serves (``zoo.zoo_scale_times``: e.g.
    waifu2x-photo ×2, ×4, ×8); any other spec, or none, is held to super-image's 2, 3, 4."""
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or int(scale) < 1:
        raise ValueError(f"unsupported scale {scale!r}: super-image models offer {_OFFERED}")
    scale, zoo_name = int(scale), isinstance(spec, str) and spec in zoo.ZOO
    if (zoo.zoo_scale_times(spec, scale) is not None) if zoo_name else scale in SUPPORTED_SCALES:
        return scale
    who = zoo.who_offers(scale, ("the super-image models",) if scale in SUPPORTED_SCALES else ())
    if zoo_name:
        raise ValueError(f"{spec} ({zoo.ZOO[spec]['scale_note']}) cannot upscale ×{scale}: {who}")
    raise ValueError(f"unsupported scale {scale}: super-image models offer {_OFFERED}; {who}")


def standin_path(standin_dir: str | os.PathLike, arch: str, scale: int = SCALE) -> Path:
    """Folder of the stand-in weights of ``arch`` at ``scale`` inside ``standin_dir``."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    return Path(standin_dir) / f"{arch}-x{check_scale(scale)}"


def weights_name(scale: int) -> str:
    """File name super-image gives the weights of one scale, e.g. ``pytorch_model_4x.pt``."""
    return WEIGHTS_TEMPLATE.format(scale=check_scale(scale))


def _friendly_name(path: Path) -> str:
    """A path for result files: relative to the artifacts or repository root when inside them, else its name."""
    path = Path(path).resolve()
    for root in (_config.artifacts_root(), _config.REPO_ROOT):
        try:
            return path.relative_to(Path(root).resolve()).as_posix()
        except ValueError:
            continue
    return path.name


def _config_dict(cfg) -> dict:
    """A model config as a JSON-ready dict (without super-image's private ``_name_or_path``)."""
    d = cfg.to_dict()
    d.pop("_name_or_path", None)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def _resolve_arch(spec: str) -> str | None:
    """Short name for ``spec`` (a short name or a known hub id), or None."""
    return spec if spec in ARCHITECTURES else next((n for n, a in ARCHITECTURES.items() if a.hub_id == spec), None)


# ---- Building and reading models ----
def new_model(arch: str, scale: int = SCALE) -> nn.Module:
    """A freshly initialised (random) model of the named architecture at ``scale`` (uses torch's RNG)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    a = ARCHITECTURES[arch]
    cfg = a.config_class(scale=check_scale(scale), **a.config_kwargs)
    return a.model_class(cfg)


def _check_config_sizes(config_file: Path, cfg_dict: dict, cfg_cls: type) -> None:
    """Raise ValueError naming ``config_file`` and the field when a size ``cfg_cls`` takes (a field whose default
    is an integer, e.g. ``n_feats``, ``nb``) is not an integer in 1..MAX_CONFIG_SIZE, or ``scale`` is unsupported."""
    fix = "re-save the model with save_pretrained or fix the field"
    scales = cfg_dict.get("scale")
    for v in scales if isinstance(scales, list) else [scales]:  # a DRN config lists its x2 steps
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v not in SUPPORTED_SCALES):
            raise ValueError(f"{config_file}: field 'scale' is {scales!r}, but super-image models offer {_OFFERED}; "
                             f"{fix}")
    for name, p in inspect.signature(cfg_cls.__init__).parameters.items():
        if name in _NOT_SIZES or isinstance(p.default, bool) or not isinstance(p.default, int) or name not in cfg_dict:
            continue
        v = cfg_dict[name]
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_CONFIG_SIZE:
            raise ValueError(f"{config_file}: field {name!r} is {v!r}, but {cfg_cls.model_type} sizes must be "
                             f"integers from 1 to {MAX_CONFIG_SIZE}; {fix}")


_SET_DATA = torch.Tensor.data.__set__


class _OnMeta(TorchFunctionMode):
    """Inside ``with torch.device("meta")``: keep super-image's constructors on the meta device where they assign a
    CPU tensor to a parameter's ``.data`` (MeanShift) or move a sub-module to a real device (DRN)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func == _SET_DATA and args[0].is_meta:
            args = (args[0], args[1].to("meta"))
        elif func is torch.Tensor.to and args[0].is_meta:
            return args[0]
        return func(*args, **(kwargs or {}))


def _check_fits(model_cls: type, cfg, sd: dict, config_file: Path, weights_file: Path) -> None:
    """Build ``model_cls(cfg)`` on the meta device (no memory) and compare its tensor names and shapes with ``sd``;
    raise ValueError naming both files and the first tensor that differs."""
    try:
        with torch.device("meta"), _OnMeta():
            want = {k: tuple(v.shape) for k, v in model_cls(cfg).state_dict().items()}
    except Exception as e:  # noqa: BLE001 - super-image's own error, re-raised with the file name
        raise ValueError(f"{config_file}: super-image cannot build a {model_cls.__name__} from it ({type(e).__name__}: "
                         f"{e}); re-save the model with save_pretrained or fix config.json") from None
    have = {k: tuple(v.shape) for k, v in sd.items()}
    for k in [*want, *(k for k in have if k not in want)]:
        if want.get(k) != have.get(k):
            diff = (f"the weights lack tensor {k!r} of shape {want[k]}" if k not in have else
                    f"the weights hold tensor {k!r} of shape {have[k]}, which the model lacks" if k not in want else
                    f"tensor {k!r} is {have[k]} in the weights but {want[k]} in the model")
            raise ValueError(f"weights in {weights_file} do not fit the model built from {config_file}: {diff}; "
                             "re-save the model with save_pretrained or fix config.json")


def _model_from_files(config_file: Path, weights_file: Path, scale: int) -> tuple[nn.Module, dict]:
    """Build a model from a super-image ``config.json`` and load its weights file strictly. The config's sizes are
    checked first, then against the weights' shapes on the meta device, so a bad config allocates nothing."""
    cfg_dict = read_json(config_file)
    if not isinstance(cfg_dict, dict) or "model_type" not in cfg_dict:
        raise ValueError(f"{config_file} is not a super-image config (no 'model_type' field)")
    types = _model_types()
    mtype = cfg_dict["model_type"]
    if mtype not in types:
        raise ValueError(f"{config_file}: unknown model_type {mtype!r}; super-image knows {', '.join(sorted(types))}")
    model_cls, cfg_cls = types[mtype]
    _check_config_sizes(config_file, cfg_dict, cfg_cls)
    kwargs = {k: v for k, v in cfg_dict.items() if k not in ("model_type", "_name_or_path")}
    kwargs.update(scale=scale, data_parallel=False)
    try:
        cfg = cfg_cls(**kwargs)
    except TypeError as e:
        raise ValueError(f"{config_file}: invalid {cfg_cls.__name__} fields: {e}") from None
    sd = load_torch(weights_file, state_dict=True)
    if sd and all(k.startswith("module.") for k in sd):  # saved from a DataParallel wrapper
        sd = {k[len("module."):]: v for k, v in sd.items()}
    _check_fits(model_cls, cfg, sd, config_file, weights_file)
    model = model_cls(cfg)
    load_strict(model, sd, weights_file)
    return model, cfg_dict


def _check_local_dir(directory: Path, scale: int) -> tuple[Path, Path]:
    """(config.json, weights file) of a saved model directory; a clear error lists what is there instead."""
    if not directory.is_dir():
        raise WeightsNotFoundError(f"model directory not found: {directory}")
    need = [directory / CONFIG_NAME, directory / weights_name(scale)]
    missing = [p.name for p in need if not p.is_file()]
    if missing:
        present = sorted(p.name for p in directory.iterdir()) or ["(empty)"]
        raise WeightsNotFoundError(
            f"model directory {directory} lacks {', '.join(missing)} for x{scale}; it holds: {', '.join(present)}")
    return need[0], need[1]


# ---- Hugging Face hub (cache first; never wait on the network unless asked) ----
def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment at call time (HF_HUB_CACHE, HF_HOME)."""
    for var, sub in (("HF_HUB_CACHE", ""), ("HUGGINGFACE_HUB_CACHE", ""), ("HF_HOME", "hub")):
        if os.environ.get(var):
            return Path(os.environ[var]) / sub
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def hf_offline() -> bool:
    """True when HF_HUB_OFFLINE is set (now, or when huggingface_hub was imported)."""
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE") or bool(
        constants.HF_HUB_OFFLINE)


def cached_hub_files(hub_id: str, scale: int = SCALE) -> tuple[Path, Path] | None:
    """(config, weights) of ``hub_id`` if both are already in the local cache, else None (no network)."""
    from huggingface_hub import try_to_load_from_cache

    cache = str(hf_cache_dir())
    found = [try_to_load_from_cache(hub_id, name, cache_dir=cache) for name in (CONFIG_NAME, weights_name(scale))]
    return (Path(found[0]), Path(found[1])) if all(isinstance(p, str) for p in found) else None


def _download_hub_files(hub_id: str, scale: int) -> tuple[Path, Path]:
    """Fetch config and weights of ``hub_id`` into the cache (needs the network)."""
    from huggingface_hub import hf_hub_download

    try:
        return tuple(Path(hf_hub_download(hub_id, name, cache_dir=str(hf_cache_dir())))
                     for name in (CONFIG_NAME, weights_name(scale)))
    except Exception as e:
        raise WeightsNotFoundError(
            f"cannot download {hub_id} ({CONFIG_NAME}, {weights_name(scale)}) from the Hugging Face hub: "
            f"{type(e).__name__}: {e}") from None


def _how_to_get(arch: str | None, hub_id: str | None, scale: int) -> str:
    """The remedies listed in every 'weights not found' error."""
    tips = []
    if hub_id:
        tips.append(f"download the hub weights on a connected machine "
                    f"(`hf download {hub_id} {CONFIG_NAME} {weights_name(scale)}`) and copy the cache here")
    if arch:
        tips.append(f"build the offline stand-in with thermsr_utils.models.build_standin({arch!r}, "
                    f"standin_path(standin_dir, {arch!r}, {scale}), steps=N) or by running notebook 02")
    tips.append("or pass source='random' to use untrained weights on purpose")
    return "; ".join(tips)


# ---- The public loader ----
def load_model(spec: str | os.PathLike, scale: int = SCALE, *, source: str = "auto",
               standin_dir: str | os.PathLike | None = None, device: str | torch.device = "cpu"
               ) -> tuple[nn.Module, dict]:
    """Load an SR model (eval mode, on ``device``) from a short name, hub id or saved directory.

    Returns ``(model, info)``; ``info["source"]`` is "hub", "local", "standin" or "random". With
    ``source="auto"`` the order is: directory, hub cache, stand-in; random weights never by default.
    """
    spec_str = os.fspath(spec)
    is_dir = Path(spec_str).is_dir()
    scale = check_scale(scale, None if is_dir else spec_str)
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    found = _load_zoo(spec_str, is_dir, scale, source, device)
    model, info = found or _load_super_image(spec_str, is_dir, scale, source, standin_dir)
    info["spec"] = _friendly_name(Path(spec_str)) if is_dir else spec_str
    info["n_params"] = count_params(model)
    info["device"] = str(device)
    return model.to(device).eval(), info


def _load_super_image(spec_str: str, is_dir: bool, scale: int, source: str, standin_dir) -> tuple[nn.Module, dict]:
    """``load_model`` for a super-image model: the directory, hub, stand-in or random weights ``source`` asks for."""
    arch = None if is_dir else _resolve_arch(spec_str)
    hub_id = ARCHITECTURES[arch].hub_id if arch else (spec_str if _looks_like_hub_id(spec_str) else None)
    if source == "local" or (source == "auto" and is_dir):
        return _load_dir(Path(spec_str), scale)
    elif is_dir:
        raise ValueError(f"{spec_str} is a directory: load it with source='local' or 'auto', not {source!r}")
    elif arch is None and hub_id is None:
        raise ValueError(f"unknown model {spec_str!r}: not a directory, a short name "
                         f"({', '.join(ARCHITECTURES)}) or a hub id like 'eugenesiow/drln-bam'")
    elif source == "random":
        return _load_random(arch, spec_str, scale)
    elif source == "standin":
        return _load_standin(arch, spec_str, scale, standin_dir, required=True)
    elif source == "hub":
        found = _load_hub(arch, hub_id, scale, download=not hf_offline())
        if found is None:
            raise WeightsNotFoundError(f"{hub_id} x{scale} is not in the Hugging Face cache ({hf_cache_dir()}) "
                                       "and HF_HUB_OFFLINE is set. To fix: " + _how_to_get(arch, hub_id, scale) + ".")
        return found
    found = _load_hub(arch, hub_id, scale, download=False) if hub_id else None   # auto, not a directory
    if found is None and arch is not None and standin_dir is not None:
        found = _load_standin(arch, spec_str, scale, standin_dir, required=False)
    if found is None:
        raise WeightsNotFoundError(_auto_failure(spec_str, arch, hub_id, scale, standin_dir))
    return found


def _load_zoo(spec: str, is_dir: bool, scale: int, source: str, device) -> tuple[nn.Module, dict] | None:
    """A model of the registry-pretrained zoo by short name, or a folder saved from one; None otherwise."""
    if is_dir:
        cfg = Path(spec) / CONFIG_NAME
        if not (cfg.is_file() and read_json(cfg).get("model_type") in zoo.ZOO):
            return None
        if source not in ("auto", "local"):
            raise ValueError(f"{spec} is a saved {read_json(cfg)['model_type']} folder: load it with source='local' "
                             f"or 'auto', not {source!r}")
        model, info = zoo.load_zoo_folder(spec, device=device)
        info["weights"] = _friendly_name(Path(spec))
    elif spec in zoo.ZOO:
        if source not in ("auto", "registry"):
            raise ValueError(f"{spec} is a registry-pretrained zoo model; its weights come from a package "
                             f"(source 'auto' or 'registry'), not {source!r}")
        model, info = zoo.load_zoo_model(spec, device=device, scale=scale)
        info["weights"] = f"{info['package']}=={info['version']} {Path(info['file']).name}"
        return model, info
    else:
        return None
    if scale != zoo.SCALE:
        raise ValueError(f"{spec} is a ×{zoo.SCALE} model; scale {scale} is not available")
    return model, info


def weights_label(spec: str, info: dict) -> str:
    """One caption-ready line saying where a loaded model's weights came from (package, file, sha256, scale)."""
    if info.get("source") == "registry":
        return (f"{spec}: {info['package']}=={info['version']} {Path(info['file']).name} "
                f"(sha256 {info['sha256'][:12]}…, {info.get('scale_note', 'native ×4')}, {info.get('training_data', '')})")
    return f"{spec}: {info.get('source')} ({info.get('weights')})"


def method_label(spec: str, info: dict) -> str:
    """The table name of a zero-shot model; a ×2 network applied more than once says so ("×2 twice")."""
    times = info.get("applications", 1)
    return f"zero-shot {spec}" + (f" ×{info.get('native_scale', 2)} {zoo.times_words(times)}" if times > 1 else "")


def _looks_like_hub_id(spec: str) -> bool:
    """True for 'owner/name' strings that are not existing paths."""
    parts = spec.split("/")
    return len(parts) == 2 and all(parts) and not Path(spec).exists()


def _auto_failure(spec: str, arch: str | None, hub_id: str | None, scale: int, standin_dir) -> str:
    """The message of a failed ``source='auto'`` lookup: what was tried, what is missing, how to get it."""
    tried = []
    if hub_id:
        tried.append(f"{hub_id} x{scale} is not in the Hugging Face cache ({hf_cache_dir()})")
    else:
        tried.append(f"{spec!r} has no hub weights")
    if arch is None:
        tried.append("no stand-in exists for an unregistered hub id")
    elif standin_dir is None:
        tried.append("no standin_dir was given")
    else:
        tried.append(f"no stand-in at {standin_path(standin_dir, arch, scale)}")
    return (f"no weights found for {spec!r} (x{scale}): " + "; ".join(tried) + ". To fix: "
            + _how_to_get(arch, hub_id, scale) + ".")


def _load_dir(directory: Path, scale: int) -> tuple[nn.Module, dict]:
    """Load a saved directory; a directory holding standin.json reports source 'standin'."""
    config_file, weights_file = _check_local_dir(directory, scale)
    model, cfg = _model_from_files(config_file, weights_file, scale)
    meta = read_json(directory / STANDIN_INFO_NAME) if (directory / STANDIN_INFO_NAME).is_file() else None
    info = {"architecture": (meta or {}).get("arch", cfg["model_type"]), "model_type": cfg["model_type"],
            "source": "standin" if meta else "local", "weights": _friendly_name(directory), "scale": scale,
            "config": _config_dict(model.config), "weights_sha256": file_sha256(weights_file)}
    if meta:
        info["standin"] = meta
    return model, info


def _load_random(arch: str | None, spec: str, scale: int) -> tuple[nn.Module, dict]:
    """Untrained weights of a registered architecture (torch's RNG decides them)."""
    if arch is None:
        raise ValueError(f"random weights need a registered architecture, not {spec!r}; "
                         f"choose one of {', '.join(ARCHITECTURES)}")
    model = new_model(arch, scale)
    return model, {"architecture": arch, "model_type": model.config.model_type, "source": "random",
                   "weights": "random initialisation", "scale": scale, "config": _config_dict(model.config)}


def _load_standin(arch: str | None, spec: str, scale: int, standin_dir, *, required: bool):
    """The stand-in of ``arch`` from ``standin_dir``; None (or an error if required) when it is missing."""
    if arch is None:
        raise ValueError(f"stand-ins exist only for registered architectures, not {spec!r}")
    if standin_dir is None:
        if required:
            raise ValueError("source='standin' needs standin_dir (the folder build_standin writes into)")
        return None
    folder = standin_path(standin_dir, arch, scale)
    if not (folder / STANDIN_INFO_NAME).is_file():
        if required:
            raise WeightsNotFoundError(f"no stand-in for {arch} x{scale} at {folder}. To fix: "
                                       + _how_to_get(arch, None, scale) + ".")
        return None
    model, info = _load_dir(folder, scale)
    info["architecture"] = arch
    return model, info


def _load_hub(arch: str | None, hub_id: str | None, scale: int, *, download: bool):
    """Hub weights from the cache, else downloaded when ``download``; None when not cached and not downloading."""
    if hub_id is None:
        raise WeightsNotFoundError(f"{arch!r} has no hub weights (it is a reduced preset). To fix: "
                                   + _how_to_get(arch, None, scale) + ".")
    files = cached_hub_files(hub_id, scale)
    if files is None and download:
        files = _download_hub_files(hub_id, scale)
    if files is None:
        return None
    config_file, weights_file = files
    model, cfg = _model_from_files(config_file, weights_file, scale)
    return model, {"architecture": arch or cfg["model_type"], "model_type": cfg["model_type"], "source": "hub",
                   "weights": hub_id, "revision": weights_file.parent.name, "scale": scale,
                   "config": _config_dict(model.config), "weights_sha256": file_sha256(weights_file)}


# ---- Saving ----
def save_model(model: nn.Module, out_dir: str | os.PathLike, *, extra_json: dict[str, dict] | None = None) -> Path:
    """``save_pretrained`` into ``out_dir`` atomically (temp folder + rename), plus optional JSON files.

    A zoo model (``zoo_name`` attribute) is written as a zoo folder instead; its ``thermsr.json`` merges the
    registry provenance with ``extra_json["thermsr.json"]``.
    """
    out_dir = Path(out_dir)
    zoo_name = getattr(model, "zoo_name", None)
    if zoo_name is not None:
        extra = dict(extra_json or {})
        zoo.save_zoo_folder(zoo_name, out_dir, model, provenance=extra.pop(zoo.PROVENANCE_NAME, None))
        for name, obj in extra.items():
            atomic_write_json(out_dir / name, obj)
        return out_dir

    def save_pretrained_into(tmp: Path):
        model.save_pretrained(tmp)
        for name, obj in (extra_json or {}).items():
            atomic_write_json(tmp / name, obj)

    return atomic_dir(out_dir, save_pretrained_into)


# ---- Inference and the bicubic baseline ----
def _forward(model: nn.Module, x: torch.Tensor, batch_size: int, device) -> list[torch.Tensor]:
    """``model`` on ``x`` in batches of ``batch_size``: float32 CPU outputs, one per batch."""
    return [model(x[i:i + batch_size].to(device=device, dtype=torch.float32)).float().cpu()
            for i in range(0, x.shape[0], batch_size)]


def _self_ensemble(model: nn.Module, x: torch.Tensor, batch_size: int, device) -> list[torch.Tensor]:
    """The mean of ``model``'s outputs on the 8 ``DIHEDRAL`` variants of ``x`` (horizontal flip, then k·90° turns),
    each turned back, one float32 CPU tensor per chunk. Chunks of ``batch_size // 8`` images (at least one) carry
    all their variants through ``_forward``; the variants of one shape (k even, then k odd: H and W swapped) run
    together."""
    per = max(1, batch_size // len(DIHEDRAL))
    groups = [DIHEDRAL] if x.shape[-2] == x.shape[-1] else [[t for t in DIHEDRAL if t[1] % 2 == r] for r in (0, 1)]
    outs = []
    for i in range(0, x.shape[0], per):
        chunk, total = x[i:i + per], None
        n = chunk.shape[0]
        for group in groups:
            variants = torch.cat([torch.rot90(chunk.flip(-1) if f else chunk, k, dims=(-2, -1)) for f, k in group])
            ys = torch.cat(_forward(model, variants, batch_size, device))
            for j, (f, k) in enumerate(group):
                y = torch.rot90(ys[j * n:(j + 1) * n], -k, dims=(-2, -1))
                y = y.flip(-1) if f else y
                total = y if total is None else total + y
        outs.append(total / len(DIHEDRAL))
    return outs


def upscale(model: nn.Module, lr: torch.Tensor, *, batch_size: int = 8,
            device: str | torch.device | None = None, self_ensemble: bool = False) -> torch.Tensor:
    """Batched no-grad SR: float RGB N×3×h×w (or 3×h×w) in [0, 1] -> float32 CPU N×3×sh×sw, not clamped.

    ``self_ensemble``: the x8 geometric self-ensemble of SR papers (EDSR+): the mean over the 8 flips and 90°
    turns of the input, each undone on its output (``_self_ensemble``); 8 forward passes per image."""
    if not torch.is_tensor(lr) or lr.ndim not in (3, 4) or lr.shape[-3] != 3:
        raise ValueError(f"expected a float RGB tensor N×3×H×W or 3×H×W, got {getattr(lr, 'shape', type(lr))}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    single = lr.ndim == 3
    x = lr.unsqueeze(0) if single else lr
    if device is None:
        device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            outs = (_self_ensemble if self_ensemble else _forward)(model, x, batch_size, device)
    finally:
        model.train(was_training)
    out = torch.cat(outs) if outs else x.new_zeros((0, 3, 0, 0))
    return out[0] if single else out


def bicubic(lr: np.ndarray, scale: int = SCALE) -> np.ndarray:
    """The bicubic baseline: uint8 BGR (or gray) h×w -> uint8 sh×sw by ``cv2.resize`` INTER_CUBIC."""
    import cv2

    if not isinstance(lr, np.ndarray) or lr.dtype != np.uint8 or lr.ndim not in (2, 3):
        raise ValueError(f"expected a uint8 image array, got {getattr(lr, 'dtype', type(lr))} "
                         f"{getattr(lr, 'shape', '')}")
    if not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    h, w = lr.shape[:2]
    return cv2.resize(lr, (w * scale, h * scale), interpolation=cv2.INTER_CUBIC)


# ---- The offline stand-in for RGB-pretrained weights ----
def skimage_photo(name: str) -> np.ndarray:
    """One photograph shipped with scikit-image as uint8 BGR H×W×3 (gray ones replicated); no download."""
    import skimage.data

    fn = getattr(skimage.data, name, None)
    if fn is None:
        raise ValueError(f"scikit-image has no sample image {name!r}")
    try:
        img = np.asarray(fn())
    except Exception as e:  # a file that would need pooch / the network
        raise FileNotFoundError(f"scikit-image sample image {name!r} is not available offline: {e}") from None
    if img.dtype != np.uint8:
        raise ValueError(f"scikit-image sample image {name!r} is {img.dtype}, not uint8")
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., 2::-1])  # RGB(A) -> BGR


def _random_patch(img: np.ndarray, patch: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``patch``×``patch`` crop of ``img`` with random flips and transpose (uint8 BGR)."""
    h, w = img.shape[:2]
    y = int(rng.integers(0, h - patch + 1))
    x = int(rng.integers(0, w - patch + 1))
    p = img[y:y + patch, x:x + patch]
    if rng.random() < 0.5:
        p = p[:, ::-1]
    if rng.random() < 0.5:
        p = p[::-1]
    if rng.random() < 0.5:
        p = p.transpose(1, 0, 2)
    return np.ascontiguousarray(p)


def _holdout_pair(scale: int, size: int = STANDIN_HOLDOUT_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(HR, LR) uint8 BGR of the held-out photograph: a centred square crop divisible by ``scale``."""
    img = skimage_photo(STANDIN_HOLDOUT_IMAGE)
    h, w = img.shape[:2]
    side = min(size, h, w) // scale * scale
    y, x = (h - side) // 2, (w - side) // 2
    hr = np.ascontiguousarray(img[y:y + side, x:x + side])
    return hr, make_lr(hr, scale)


def _version(dist: str) -> str:
    """Installed version of a distribution, or "unknown"."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


def build_standin(arch: str, out_dir: str | os.PathLike, *, steps: int, scale: int = SCALE, batch: int = 8,
                  patch: int = 96, lr: float = 1e-3, seed: int = 0, device: str | torch.device = "cpu",
                  progress: bool = True) -> dict:
    """Pretrain ``arch`` briefly with L1 on scikit-image's photographs and save it as a stand-in in ``out_dir``
    (save_pretrained + standin.json, atomically); return the standin.json dict. Deterministic by ``seed`` on CPU.

    HR patches of ``patch`` px with flips; LR by INTER_AREA 1/``scale``; Adam (``lr``) with a cosine schedule down to
    ``lr``/10. (PAN-small, 300 steps: lr 2e-4 stayed below bicubic on the held-out photograph, 1e-3 passed it.)
    """
    from skimage.metrics import peak_signal_noise_ratio
    from tqdm.auto import tqdm

    scale = check_scale(scale)
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    if steps < 1 or batch < 1:
        raise ValueError(f"steps and batch must be >= 1, got steps={steps}, batch={batch}")
    if patch < scale or patch % scale:
        raise ValueError(f"patch must be a positive multiple of scale {scale}, got {patch}")
    images = [skimage_photo(n) for n in STANDIN_TRAIN_IMAGES]
    if any(min(im.shape[:2]) < patch for im in images):
        raise ValueError(f"patch {patch} is larger than a training image")

    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = new_model(arch, scale)
    model.to(device).train()
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=lr * 0.1)
    losses = []
    for _ in tqdm(range(steps), desc=f"stand-in {arch} x{scale}", disable=not progress):
        hr = np.stack([_random_patch(images[int(rng.integers(len(images)))], patch, rng) for _ in range(batch)])
        lr_img = np.stack([make_lr(p, scale) for p in hr])
        x, y = bgr_to_tensor(lr_img).to(device), bgr_to_tensor(hr).to(device)
        loss = F.l1_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    model.cpu().eval()

    hr, lr_hold = _holdout_pair(scale)
    sr = upscale(model, bgr_to_tensor(lr_hold)[None]).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    hr_rgb = hr[..., ::-1].astype(np.float64) / 255.0
    bic_rgb = bicubic(lr_hold, scale)[..., ::-1].astype(np.float64) / 255.0
    tail = losses[-max(1, steps // 10):]
    info = {
        "what": "offline stand-in for RGB-pretrained weights: the architecture pretrained briefly with L1 "
                "on photographs shipped in scikit-image, not the hub weights",
        "arch": arch, "model_type": model.config.model_type, "config": _config_dict(model.config),
        "scale": scale, "steps": steps, "batch": batch, "patch": patch, "lr": lr, "seed": seed,
        "optimizer": "Adam + CosineAnnealingLR (eta_min = lr/10)", "loss": "L1 on the unclamped output",
        "lr_generation": "cv2.resize INTER_AREA 1/scale", "augmentation": "random flips and transpose",
        "train_images": list(STANDIN_TRAIN_IMAGES), "n_params": count_params(model),
        "final_train_l1": float(np.mean(tail)), "final_train_l1_steps": len(tail),
        "holdout_image": STANDIN_HOLDOUT_IMAGE, "holdout_hr_size": list(hr.shape[:2]),
        "holdout_psnr_sr": float(peak_signal_noise_ratio(hr_rgb, sr.astype(np.float64), data_range=1.0)),
        "holdout_psnr_bicubic": float(peak_signal_noise_ratio(hr_rgb, bic_rgb, data_range=1.0)),
        "train_seconds": round(time.perf_counter() - t0, 2), "device": str(device),
        "torch_version": torch.__version__, "super_image_version": _version("super-image"),
    }
    info["holdout_psnr_gain_db"] = info["holdout_psnr_sr"] - info["holdout_psnr_bicubic"]
    save_model(model, out_dir, extra_json={STANDIN_INFO_NAME: info})
    return info


def prepare_backbone(spec: str, *, standin_steps: int, weights: str = "auto", standin_dir=None,
                     build_standin_if_missing=False, scale: int = SCALE, seed: int = 0, device="cpu",
                     progress: bool = True) -> tuple[nn.Module, dict]:
    """Load the initial weights a notebook asks for; build the offline stand-in first when allowed and needed.

    The stand-in is built only when ``weights`` is "auto" or "standin", the hub weights are not cached,
    no stand-in exists yet and ``build_standin_if_missing`` is true; otherwise this is ``load_model``.
    """
    arch = _resolve_arch(spec) if not Path(spec).is_dir() else None
    if (build_standin_if_missing and weights in ("auto", "standin") and arch is not None
            and standin_dir is not None and not standin_path(standin_dir, arch, scale).exists()):
        hub_id = ARCHITECTURES[arch].hub_id
        if weights == "standin" or hub_id is None or cached_hub_files(hub_id, scale) is None:
            if progress:
                print(f"building the offline stand-in for {arch} x{scale}: {standin_steps} steps on "
                      f"scikit-image's photographs")
            build_standin(arch, standin_path(standin_dir, arch, scale), scale=scale, steps=standin_steps,
                          seed=seed, device=device, progress=progress)
    return load_model(spec, scale, source=weights, standin_dir=standin_dir, device=device)
