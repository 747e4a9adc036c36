"""What each per-crop metric is, in one table: its label, unit, better direction, decimals and the statistic its
interval is put around. Every module that names, formats, orders by or compares a metric reads ``METRICS``
(stats, evaluate, frontier, plots, findings), so a metric's label or precision is declared once, the way BasicSR
registers metrics that carry their own name and direction. Pure data: it imports nothing of the package.

The landmark models' metrics come as a family per model: ``nose_*`` for the first (the write-up's), ``nose2_*``
for a second, independent one; ``<prefix>_err_px`` the HR–SR nose displacement, ``<prefix>_fail`` 1.0 where the
model found no nose on the SR crop, ``<prefix>_gt_err_sr`` the distance to the generator's true nose.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    key: str                          # the per-crop row field
    label: str                        # in tables and words ("PSNR", "nose median")
    unit: str = ""                    # of a value and a difference ("dB", "px"; "pp" for a rate's difference)
    higher_is_better: bool | None = True   # None: no better direction (a ratio whose best is 1)
    digits: int = 3                   # decimals of a value and a difference
    stat: str = "mean"                # the statistic compared: "mean", or "median" for the heavy-tailed nose errors
    percent: bool = False             # a rate of 0/1 flags, shown in percent and its differences in pp
    model: str = ""                   # the landmark model's column prefix ("nose", "nose2") of a nose metric
    words: str = ""                   # a nose metric's name in an evidence clause ("nose failures")

    @property
    def direction(self) -> int:
        """+1 when higher is better, −1 when lower is."""
        if self.higher_is_better is None:
            raise ValueError(f"{self.key} has no better direction (compare its gap to 1 instead)")
        return 1 if self.higher_is_better else -1

    @property
    def arrow(self) -> str:
        return "" if self.higher_is_better is None else "↑" if self.higher_is_better else "↓"

    @property
    def suffix(self) -> str:
        """The unit as written after a number (" dB"; "" without a unit)."""
        return f" {self.unit}" if self.unit else ""

    @property
    def kind(self) -> str:
        """A nose metric's key without its model prefix ("err_px", "fail", "gt_err_sr"); else the key."""
        return self.key.removeprefix(f"{self.model}_") if self.model else self.key

    def heading(self, *, unit: bool = False, arrow: bool = False) -> str:
        """A table column's heading: "PSNR ↑" (``arrow``), "PSNR (dB)" (``unit``), "Nose median (px) ↓" (both)."""
        text = self.label[:1].upper() + self.label[1:]
        return text + (f" ({self.unit})" if unit and self.unit else "") + (f" {self.arrow}" if arrow else "")

    def text(self, value: float, *, unit: bool = False) -> str:
        """A value with the metric's decimals ("30.18", "30.18 dB" with ``unit``; a rate "12.5 %")."""
        if self.percent:
            return f"{100 * value:.{self.digits}f} %"
        return f"{value:.{self.digits}f}" + (self.suffix if unit else "")


# The landmark models' column prefixes, the write-up's model first
NOSE_MODELS = ("nose", "nose2")
# each landmark model's metrics: kind → (label, unit, digits, stat, percent, words). Every one is lower-is-better.
_NOSE_KINDS = {"err_px": ("nose median", "px", 2, "median", False, "nose"),
               "fail": ("nose failure rate", "pp", 1, "mean", True, "nose failures"),
               "gt_err_sr": ("nose median to true nose", "px", 2, "median", False, "nose to true nose")}


def _nose(model: str, kind: str) -> Metric:
    """The first model's metrics keep their plain label ("nose median"), another's is numbered ("… (model 2)")."""
    label, unit, digits, stat, percent, words = _NOSE_KINDS[kind]
    return Metric(f"{model}_{kind}", label + ("" if model == "nose" else f" (model {model[4:]})"), unit, False,
                  digits, stat, percent, model, words)


METRICS = {m.key: m for m in (
    Metric("psnr", "PSNR", "dB", digits=2), Metric("ssim", "SSIM"),
    Metric("psnr_y", "PSNR-Y", "dB", digits=2), Metric("ssim_y", "SSIM-Y"),
    Metric("lpips", "LPIPS", higher_is_better=False, digits=4),
    Metric("lpips_vgg", "LPIPS-VGG", higher_is_better=False, digits=4),
    Metric("dists", "DISTS", higher_is_better=False, digits=4),
    Metric("grad_ratio", "gradient ratio", higher_is_better=None), Metric("hf_ratio", "high-frequency ratio",
                                                                         higher_is_better=None),
    Metric("grad_gap", "gradient gap", higher_is_better=False), Metric("hf_gap", "high-frequency gap",
                                                                       higher_is_better=False),
    *(_nose(model, kind) for model in NOSE_MODELS for kind in _NOSE_KINDS))}


def spec(key: str) -> Metric:
    """``METRICS[key]``; a field the table does not know reads as itself: higher is better, 3 decimals, mean."""
    return METRICS.get(key) or Metric(key, key)
