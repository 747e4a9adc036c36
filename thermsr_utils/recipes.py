"""One builder per recipe: a notebook's parameters in; the recipe, its loss and its datasets out.

Notebooks 03 (v1), 05 (v2) and 08 (v3) and the torchrun entry point (``train_cli``) all call ``build``, so a run
started from the command line trains exactly what the notebook trains. v3 is v2 as notebook 05 ran it (its kept
checkpoint's record: recipe, loss, seed) plus one task term of a frozen face model (``taskloss``), so that v3 and
v2 differ in that term only. ``protocol_table`` sets the recipe
beside the write-up's reported protocol (``findings.reported_protocol``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

from . import findings, losses, metrics, taskloss
from .datasets import datasets_from_manifest
from .io import markdown_table
from .train import Recipe, run_meta, sized_schedule, steps_per_epoch

# The notebook parameters each builder reads (the test holds them equal to the notebooks' parameter cells).
PARAMETERS = {
    "v1": ("seed", "sweep_point", "v1_epochs", "v1_lr", "v1_batch_size", "v1_patch", "val_every",
           "max_steps_per_epoch", "keep"),
    "v2": ("seed", "sweep_point", "v2_perceptual", "lpips_weight", "fft_weight", "v2_epochs", "v2_warmup",
           "v2_lr", "v2_batch_size", "v2_ema_half_life", "val_every", "max_steps_per_epoch", "keep"),
    "v3": ("landmark_weight", "feature_weight"),     # the rest is v2's, read from its checkpoint
}
TASK_WEIGHTS = {"landmarks": "landmark_weight", "features": "feature_weight"}   # v3's term -> its weight's parameter


@dataclass
class Built:
    """What ``train.fit`` needs for one recipe, besides the model."""

    recipe: Recipe
    loss_fn: Callable
    lpips_metric: metrics.LPIPSMetric
    term_name: str | None              # v2's perceptual term, e.g. "0.05·LPIPS (AlexNet, …)"; None for v1
    train_set: object
    val_sets: dict
    task_term: str | None = None       # v3's task term, e.g. "0.01·RetinaFace landmark L2 (px) …"; None otherwise

    @property
    def schedule(self) -> dict:
        """The recipe's schedule sized to this training set (``train.sized_schedule``): steps, warmup, EMA decay."""
        return sized_schedule(self.recipe, steps_per_epoch(len(self.train_set), self.recipe))

    def meta(self, manifest_path, init_info: dict) -> dict:
        """The metadata a kept checkpoint records (``train.run_meta`` plus the instruments of this run)."""
        more = {"lpips": self.lpips_metric.name}
        if self.term_name is not None:
            more["perceptual_term"] = self.term_name
        if self.task_term is not None:
            more["task_term"] = self.task_term
        return run_meta(manifest_path, init_info, **more)


def _params(name: str, p: Mapping) -> dict:
    if name not in PARAMETERS:
        raise ValueError(f"unknown recipe {name!r}; choose one of {', '.join(PARAMETERS)}")
    missing = [k for k in PARAMETERS[name] if k not in p]
    if missing:
        raise ValueError(f"recipe {name} needs the notebook parameters {', '.join(missing)}")
    return {k: p[k] for k in PARAMETERS[name]}


def recipe(name: str, p: Mapping) -> Recipe:
    """The ``Recipe`` of ``name`` ("v1" or "v2") sized by the notebook parameters ``p``."""
    if name not in ("v1", "v2"):
        raise ValueError(f"unknown recipe {name!r} here; choose v1 or v2 (v3 repeats v2's recorded recipe: v3_recipe)")
    q = _params(name, p)
    common = dict(val_every=q["val_every"], seed=q["seed"], max_steps_per_epoch=q["max_steps_per_epoch"] or None,
                  val_at_start=not q["sweep_point"], keep=q["keep"])  # a sweep point starts where the main run did
    if name == "v1":
        return Recipe.v1(epochs=q["v1_epochs"], lr=q["v1_lr"], batch_size=q["v1_batch_size"], patch=q["v1_patch"],
                         **common)
    return Recipe.v2(epochs=q["v2_epochs"], warmup=q["v2_warmup"], lr=q["v2_lr"],
                     batch_size=q["v2_batch_size"], ema_half_life=q["v2_ema_half_life"], **common)


def writeup(name: str) -> Recipe:
    """The write-up's ``name`` recipe ("v1" or "v2"): the one notebook 03 or 05 builds from the paper profile's
    parameters (e.g. for a benchmark at the write-up's settings)."""
    from .config import profile_params

    return recipe(name, profile_params("paper"))


def v3_recipe(base: Mapping) -> Recipe:
    """v2's recipe exactly as its kept checkpoint records it (``base``: its thermsr.json), renamed v3."""
    if not isinstance(base, Mapping) or not isinstance(base.get("recipe"), Mapping) or base["recipe"].get("name") != "v2":
        raise ValueError("recipe v3 needs base=, the record of notebook 05's kept v2 checkpoint "
                         "(checkpoints/v2/best/thermsr.json): run notebook 05 first")
    return Recipe(**{**base["recipe"], "name": "v3", "notes": "v2's recipe as notebook 05 ran it, plus a task term"})


def _v2_loss(base: Mapping, lpips_metric) -> tuple[losses.CombinedLoss, str]:
    """v2's loss rebuilt from its checkpoint's record: L1 plus its perceptual term at the recorded weight."""
    terms = {t["name"]: t["weight"] for t in base.get("loss", [])}
    others = [k for k in terms if k != "l1"]
    if "l1" not in terms or len(others) != 1 or not set(others) <= {"lpips", "fft"}:
        raise ValueError(f"the v2 checkpoint records the loss terms {sorted(terms)}; v3 expects l1 and one of lpips/fft")
    (term,) = others
    recorded = terms[term]
    return losses.v2_loss(term, lpips_metric, lpips_weight=recorded, fft_weight=recorded)


def build(name: str, p: Mapping, crops_dir, records, device, *, base: Mapping | None = None,
          term: str | None = None) -> Built:
    """Recipe, loss, LPIPS metric and datasets of ``name`` from the notebook parameters ``p`` (a notebook's
    globals or ``train_cli``'s resolved parameters; only the names in ``PARAMETERS[name]`` are read). v3 also needs
    ``base``, the record of the kept v2 checkpoint it repeats, and its task ``term`` ("landmarks" or "features")."""
    q = _params(name, p)
    lpips_metric = metrics.LPIPSMetric(device=device)
    task = None
    if name == "v1":
        r, loss_fn, term_name = recipe(name, p), losses.make_loss("l1"), None
    elif name == "v2":
        r = recipe(name, p)
        loss_fn, term_name = losses.v2_loss(q["v2_perceptual"], lpips_metric, lpips_weight=q["lpips_weight"],
                                            fft_weight=q["fft_weight"])
    else:
        r = v3_recipe(base)
        v2, term_name = _v2_loss(base, lpips_metric)
        if term not in TASK_WEIGHTS:
            raise ValueError(f"recipe v3 needs term= one of {', '.join(TASK_WEIGHTS)}, got {term!r}")
        weight = q[TASK_WEIGHTS[term]]
        fn = taskloss.make_term(term, device=device)
        loss_fn = losses.CombinedLoss([*v2.terms, (term, weight, fn)])
        task = f"{weight:g}·{fn.description}"
    train_set, val_sets = datasets_from_manifest(crops_dir, records, patch=r.patch, augment=r.augment, seed=r.seed,
                                                 scale=r.scale)
    return Built(r, loss_fn, lpips_metric, term_name, train_set, val_sets, task_term=task)


def task_share_words(trained: Mapping[str, Mapping]) -> str:
    """One sentence per v3 term (``trained``: term -> {"history": fit's history}): the term's share of the loss in the
    first and the last epoch."""
    out = []
    for term, run in trained.items():
        shares = [h["train_term_share"] for h in run["history"] if h.get("train_term_share")]
        out.append(f"The {term} term made up {100 * shares[0][term]:.0f} % of v3 ({term})'s loss in the first epoch "
                   f"and {100 * shares[-1][term]:.0f} % in the last.")
    return " ".join(out)


def _this_run(r: Recipe, term_name: str | None, sized: dict | None = None) -> dict[str, str]:
    steps = f" ({sized['total_steps']} optimizer steps)" if sized else ""
    warm = f" ({sized['warmup_steps']} steps)" if sized else ""
    schedule = (f"linear warmup over {100 * r.warmup:.1f} % of the steps{warm}, then " if r.warmup else "") + \
        f"{r.schedule} over {r.epochs} epochs{steps}, stepped every optimizer step"
    ema = "none"
    if r.ema_half_life:
        ema = (f"half-life {100 * r.ema_half_life:.1f} % of the run's steps"
               + (f" (decay {sized['ema_decay']:.4f})" if sized else "") + ", validated and kept")
    return {
        "loss": "L1" if term_name is None else f"L1 + {term_name}",
        "optimizer": f"AdamW lr={r.lr:g} weight_decay={r.weight_decay:g}",
        "schedule": schedule,
        "batch_size": f"{r.batch_size} patches" + (f", at most {r.max_steps_per_epoch} steps per epoch"
                                                   if r.max_steps_per_epoch else ""),
        "hr_patch": "the whole crop" if r.patch is None else f"random {r.patch}x{r.patch} crop",
        "augmentation": "random flip + rotation by 0/90/180/270" if r.augment else "none",
        "ema": ema,
        "kept": (f"the last epoch's {r.selected_copy} copy" if r.keep == "last" else
                 f"best validation {r.select_metric.upper()} of the {r.selected_copy} copy, every {r.val_every} "
                 "epochs and at the last"),
    }


def protocol_table(r: Recipe, term_name: str | None = None, reported: Mapping | None = None,
                   sized: dict | None = None) -> str:
    """Markdown: each training setting as the write-up reports it and as this run's recipe ``r`` sets it (with
    ``sized``, a ``Built.schedule``, the step counts and EMA decay of this run)."""
    reported = findings.reported_protocol() if reported is None else reported
    return markdown_table(("setting", "the write-up", "this run"),
                          ((setting.replace("_", " "), reported.get(setting, {}).get(r.name, "—"), ours)
                           for setting, ours in _this_run(r, term_name, sized).items()))


# ---- Which pretrained network notebook 03 finetunes ----
def training_step_seconds(model, loss_fn, dataset, batch_size: int, *, steps: int = 2, untimed: int = 1,
                          device="cpu") -> float:
    """Seconds per AdamW training step of a copy of ``model`` (left unchanged) on the first ``batch_size`` items of
    ``dataset`` (``(LR, HR)`` tensor pairs, as ``datasets.SRPatchDataset`` gives), after ``untimed`` steps."""
    import copy
    import time

    import torch

    if steps < 1 or untimed < 0 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be at least 1 and untimed at least 0, got steps={steps}, "
                         f"batch_size={batch_size}, untimed={untimed}")
    device = torch.device(device)
    net = copy.deepcopy(model).to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-5)
    lr, hr = (torch.stack(t).to(device) for t in zip(*(dataset[i] for i in range(min(batch_size, len(dataset))))))

    def run(k: int) -> None:
        for _ in range(k):
            opt.zero_grad(set_to_none=True)
            loss_fn(net(lr).float(), hr).backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    run(untimed)
    t0 = time.perf_counter()
    run(steps)
    return (time.perf_counter() - t0) / steps


def pretrained_candidates(results_dir, train_set, batch_size: int, *, device="cpu") -> list[dict]:
    """Every genuinely pretrained model notebook 02 scored (registry or hub weights), with its zero-shot PSNR gain
    over bicubic (02's paired comparison) and the seconds of one L1 training step on ``batch_size`` items of
    ``train_set``: what notebook 03 chooses its backbone on."""
    from pathlib import Path

    from . import evaluate, models, stats

    gains = stats.read_comparisons(Path(results_dir) / "table_zero_shot_vs_bicubic.csv")
    out = []
    for method, info in evaluate.zero_shot_weights(results_dir).items():
        if info["source"] not in ("registry", "hub"):
            continue
        net, _ = models.load_model(info["spec"], source=info["source"], device=device)
        out.append({"method": method, "spec": info["spec"], "n_params": info["n_params"],
                    "step_s": training_step_seconds(net, losses.make_loss("l1"), train_set, batch_size, device=device),
                    "gain": stats.find(gains, "psnr", base="bicubic", new=method)})
    return out


def candidates_table(candidates: list[dict], steps_per_epoch: int) -> str:
    """Markdown table of ``pretrained_candidates``: parameters, zero-shot gain, seconds per step and per epoch."""
    from .stats import format_diff

    return markdown_table(("network", "parameters", "zero-shot PSNR gain over bicubic [95 % CI]", "s per v1 step",
                           "s per epoch (estimate)"),
                          ((c["method"], f"{c['n_params']:,}", format_diff(c["gain"]), f"{c['step_s']:.2f}",
                            f"{c['step_s'] * steps_per_epoch:.0f}") for c in candidates))


def candidates_verdict(candidates: list[dict], backbone: str, *, steps_per_epoch: int, epochs: int,
                       batch_size: int, device) -> str:
    """One paragraph on ``pretrained_candidates``: which gains most, which costs least, what ``backbone`` costs."""
    from .stats import format_diff

    top = max(candidates, key=lambda c: c["gain"]["diff"])
    cheap = min(candidates, key=lambda c: c["step_s"])
    mine = next((c for c in candidates if c["spec"] == backbone), None)
    gain = f"{format_diff(top['gain'])} over bicubic"
    cost = f"{cheap['step_s']:.2f} s per step of {batch_size} patches on {device}"
    of = f"Of the {len(candidates)} pretrained networks scored in 02, {top['spec']}"
    if len(candidates) == 1:
        words = f"The one pretrained network scored in 02, {top['spec']}, gains {gain} and costs {cost}. "
    elif top is cheap:
        words = f"{of} both gains most ({gain}) and costs least ({cost}). "
    else:
        words = f"{of} gains most ({gain}) and {cheap['spec']} costs least ({cost}). "
    if mine:
        words += (f"This run finetunes {mine['spec']}: about {mine['step_s'] * steps_per_epoch * epochs / 60:.1f} "
                  f"min for {epochs} epochs of {steps_per_epoch} steps.")
    return words
