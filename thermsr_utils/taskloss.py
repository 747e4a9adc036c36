"""Task-driven loss terms: a frozen face model's reading of SR held against its reading of HR (recipe v3).

The frozen model is the nose instrument's RetinaFace-MobileNet0.25 (``downstream.RetinaFaceNose``), the same
pinned ONNX graph, run in torch so that gradients reach the SR network: ``RetinaFaceTorch`` converts it with
``onnx2torch`` and feeds it what onnxruntime is fed (BGR, 0–255, the package's mean subtracted). Its outputs
match onnxruntime's to 1e-4 (a test holds them). Two terms, as task-driven SR losses use them:

- ``landmark_term``: the L2 distance (pixels) between the five landmarks RetinaFace regresses on SR and on HR,
  averaged over the anchors where it sees a face on HR, each weighted by that face score (the write-up's
  "L2 between SR-predicted keypoints and HR-predicted keypoints");
- ``feature_term``: the distance between its backbone's features on SR and on HR (the three feature maps its
  pyramid reads, each a mean squared difference relative to the HR features' mean square).

Both take ``sr`` (raw network output, clamped here to [0, 1]) and ``hr`` in [0, 1], RGB N×3×H×W, and return a
scalar that carries gradients to ``sr``; the face model's weights never change.
"""
from __future__ import annotations

import torch
from torch import nn

from . import downstream, weights

TERMS = ("landmarks", "features")
FEATURE_STAGES = ("stage1", "stage2", "stage3")   # MobileNet0.25's three outputs, strides 8 / 16 / 32
_EPS_PX2 = 1e-6                                     # keeps the distance's gradient finite where SR equals HR


def _onnx_model():
    """The pinned RetinaFace ONNX graph with its ``Identity`` aliases of weights folded into the weights
    (``onnx2torch`` reads a convolution's weights from the graph's initializers only)."""
    import onnx

    source = weights.describe(downstream.RETINAFACE_KEY)
    onnx_bytes = weights.bytes_literal(weights.locate(downstream.RETINAFACE_KEY), source["sha256"])
    model = onnx.load_from_string(onnx_bytes)
    init = {t.name: t for t in model.graph.initializer}
    kept = []
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input[0] in init:
            alias = onnx.TensorProto()
            alias.CopyFrom(init[node.input[0]])
            alias.name = node.output[0]
            model.graph.initializer.append(alias)
        else:
            kept.append(node)
    del model.graph.node[:]
    model.graph.node.extend(kept)
    return model, source


class RetinaFaceTorch(nn.Module):
    """RetinaFace-MobileNet0.25 in torch, frozen: RGB [0, 1] N×3×H×W → (loc N×A×4, face score N×A, landmarks
    N×A×10), the network's raw outputs in the order ``downstream.retinaface_anchors`` lays out."""

    def __init__(self, device="cpu"):
        super().__init__()
        import warnings

        from onnx2torch import convert

        model, source = _onnx_model()
        self.net = convert(model).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.register_buffer("mean_bgr", torch.tensor(downstream.RETINAFACE_MEAN_BGR).view(1, 3, 1, 1))
        self.settings = {"name": downstream.RETINAFACE_KEY, **source, "backend": "torch (onnx2torch)"}
        self._anchors = {}
        self.to(device)
        warnings.filterwarnings("ignore", message="Using a non-tuple sequence", category=UserWarning)

    def train(self, mode: bool = True):
        return super().train(False)      # frozen: never in training mode

    def forward(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        bgr = rgb.flip(1) * 255.0 - self.mean_bgr
        loc, conf, lm = self.net(bgr)
        return loc, conf[..., 1], lm

    def landmarks_px(self, lm: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Raw landmark outputs N×A×10 → N×A×5×2 pixel coordinates (``downstream.retinaface_decode``'s maths)."""
        key = (height, width, lm.device)
        if key not in self._anchors:
            a = torch.as_tensor(downstream.retinaface_anchors(height, width), dtype=torch.float32, device=lm.device)
            self._anchors[key] = a
        a = self._anchors[key]
        scale = torch.tensor([width, height], dtype=torch.float32, device=lm.device)
        centre, size = a[None, :, None, :2], a[None, :, None, 2:]
        return (centre + size * lm.float().view(*lm.shape[:2], 5, 2) * downstream.RETINAFACE_VARIANCES[0]) * scale


def _check(sr: torch.Tensor, hr: torch.Tensor) -> None:
    if sr.shape != hr.shape or sr.ndim != 4 or sr.shape[1] != 3:
        raise ValueError(f"sr and hr must be RGB batches of one shape N×3×H×W, got {tuple(sr.shape)} and "
                         f"{tuple(hr.shape)}")


def landmark_term(face: RetinaFaceTorch, score_thr: float = 0.2):
    """Loss callable (sr, hr) → the mean L2 distance in pixels between RetinaFace's five landmarks on SR and on HR,
    over every anchor whose HR face score exceeds ``score_thr`` (the nose instrument's threshold), weighted by that
    score; 0 for a batch in which it sees no face on any HR crop."""
    def landmark_l2(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        _check(sr, hr)
        h, w = hr.shape[-2:]
        with torch.no_grad():
            _, score, lm_hr = face(hr)
            target = face.landmarks_px(lm_hr, h, w)
            weight = score.float() * (score > score_thr)
        if not bool(weight.any()):
            return sr.sum() * 0.0
        _, _, lm_sr = face(sr.clamp(0.0, 1.0))
        dist = (((face.landmarks_px(lm_sr, h, w) - target) ** 2).sum(-1) + _EPS_PX2).sqrt().mean(-1)
        return (weight * dist).sum() / weight.sum()

    landmark_l2.description = f"RetinaFace landmark L2 (px), SR vs HR, weighted by HR face score > {score_thr:g}"
    return landmark_l2


def feature_layers(face: RetinaFaceTorch) -> dict[str, nn.Module]:
    """The last module of each backbone stage (``FEATURE_STAGES``): the feature maps RetinaFace's pyramid reads."""
    named = dict(face.net.named_modules())
    layers = {stage: named[[n for n in named if n.startswith(f"fx/{stage}/")][-1]] for stage in FEATURE_STAGES}
    return layers


def feature_term(face: RetinaFaceTorch):
    """Loss callable (sr, hr) → mean over RetinaFace's three backbone feature maps of
    mean((F(sr) − F(hr))²) / mean(F(hr)²): how far SR moves the face model's features, relative to their size."""
    layers = feature_layers(face)
    seen: dict[str, torch.Tensor] = {}
    for stage, module in layers.items():
        module.register_forward_hook(lambda _m, _i, out, stage=stage: seen.__setitem__(stage, out))

    def feature_distance(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        _check(sr, hr)
        with torch.no_grad():
            face(hr)
            target = {k: v.float() for k, v in seen.items()}
        face(sr.clamp(0.0, 1.0))
        parts = [((seen[k].float() - target[k]) ** 2).mean() / target[k].pow(2).mean().clamp_min(1e-12)
                 for k in FEATURE_STAGES]
        seen.clear()
        return torch.stack(parts).mean()

    feature_distance.description = ("RetinaFace backbone features (3 stages), relative mean squared difference, "
                                     "SR vs HR")
    return feature_distance


def match_onnxruntime(face: RetinaFaceTorch, ort_face, images_bgr) -> dict[str, float]:
    """Largest absolute difference between ``face``'s raw outputs and onnxruntime's (``ort_face``, a
    ``downstream.RetinaFaceNose``) on uint8 BGR ``images_bgr``: {"loc", "score", "landmarks"}."""
    import numpy as np

    from .data import bgr_to_tensor

    images_bgr = downstream.check_images(images_bgr)
    want = ort_face._raw(images_bgr)
    device = face.mean_bgr.device
    with torch.no_grad():
        got = face(bgr_to_tensor(images_bgr).to(device))
    return {k: float(np.abs(g.double().cpu().numpy() - w).max()) for k, g, w in zip(("loc", "score", "landmarks"), got, want)}


def make_term(name: str, device="cpu"):
    """The task term ``name`` ("landmarks" or "features") on a frozen RetinaFace placed on ``device``."""
    if name not in TERMS:
        raise ValueError(f"unknown task term {name!r}; choose one of {', '.join(TERMS)}")
    face = RetinaFaceTorch(device=device)
    return (landmark_term if name == "landmarks" else feature_term)(face)
