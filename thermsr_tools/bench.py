"""Throughput benchmark: this repository's training and evaluation paths against a plain reference loop.

    python -m thermsr_tools.bench                          # DRLN at the write-up's sizes (a GPU job)
    python -m thermsr_tools.bench --small --device cpu     # tiny model and images: checks the benchmark runs
    python -m thermsr_tools.bench --compile --out my.json  # also torch.compile the training steps

One run on one machine measures, for the v1 recipe (128² patches) and the v2 recipe (whole 192² crops,
flips/rotations, L1 + λ·LPIPS, EMA; the paper profile's values), both at batch 16 on 831 crops:

- **ours**: ``train._train_epoch`` fed by ``accel.DevicePatchSampler`` with bf16 autocast on CUDA
  (``Recipe.amp="auto"``), channels_last and optionally ``torch.compile``: what ``fit`` runs on a GPU;
- **reference**: a loop written the way the write-up's was: float32, a DataLoader whose dataset reads each
  PNG with OpenCV, crops it and makes the LR image per item, and an EMA updated parameter by parameter;

reporting patches/s, seconds per epoch, peak memory (``torch.cuda.max_memory_allocated`` on a GPU, the
process's resident memory on a CPU) and the speed-up. FLOPs per step are counted with torch's
``FlopCounterMode``; divided by the step time and by the device's measured bf16 matrix-multiply rate they
give the model FLOPs utilisation (MFU). Evaluation throughput (crops/s with every metric: PSNR, SSIM,
Y-channel PSNR/SSIM, sharpness ratios, LPIPS and the nose locator) compares ``evaluate.evaluate_method``
with a per-image loop. Weights are random (speed does not depend on them), the crops are generated
thermal-like images, LPIPS uses the ImageNet AlexNet (torchvision's cache or the registry copy), and the nose
locator is RetinaFace (the offline default). Figures go to a JSON file.
"""
from __future__ import annotations

import argparse
import copy
import gc
import math
import os
import platform
import random
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from thermsr_utils.data import SCALE

SCHEMA_VERSION = 1
WRITEUP = {"n_crops": 831, "crop": 192, "v1_patch": 128, "v2_patch": 192, "batch": 16, "eval_crops": 120}


@dataclass(frozen=True)
class BenchConfig:
    """Sizes and switches of one benchmark run."""

    model: str
    device: str
    steps: int            # timed training steps per recipe and path
    warmup: int           # untimed steps before them (cuDNN autotuning, compilation, worker start-up)
    compile: bool
    small: bool
    n_crops: int
    crop: int
    v1_patch: int
    v2_patch: int
    batch: int
    eval_crops: int
    ref_workers: int      # DataLoader workers of the reference loop
    seed: int = 0
    matmul_size: int = 8192
    matmul_seconds: float = 1.0


def make_config(args: argparse.Namespace) -> BenchConfig:
    """The run's sizes: the write-up's by default, tiny ones with ``--small``; options override."""
    from thermsr_utils import config

    device = config.resolve_device(args.device)
    small = bool(args.small)
    sizes = (dict(n_crops=12, crop=48, v1_patch=32, v2_patch=48, batch=4, eval_crops=4) if small
             else dict(WRITEUP))
    cuda = torch.device(device).type == "cuda"
    cfg = BenchConfig(model=args.model or ("pan-tiny" if small else "drln"), device=device,
                      steps=args.steps if args.steps is not None else (2 if small else 20),
                      warmup=args.warmup if args.warmup is not None else (1 if small else 3),
                      compile=bool(args.compile), small=small,
                      ref_workers=args.ref_workers if args.ref_workers is not None
                      else (0 if small else max(0, min(4, (os.cpu_count() or 1) - 1))),
                      seed=args.seed, matmul_size=8192 if cuda else (256 if small else 1024),
                      matmul_seconds=0.05 if small else 1.0, **sizes)
    check_config(cfg)
    return cfg


def check_config(cfg: BenchConfig) -> None:
    """Raise ValueError naming the first setting that cannot work."""
    from thermsr_utils import models

    if cfg.model not in models.ARCHITECTURES:
        raise ValueError(f"unknown --model {cfg.model!r}; choose one of {', '.join(models.ARCHITECTURES)}")
    for name in ("steps", "n_crops", "batch", "eval_crops"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be ≥ 1, got {getattr(cfg, name)}")
    if cfg.warmup < 0 or cfg.ref_workers < 0:
        raise ValueError(f"--warmup and --ref-workers must be ≥ 0, got {cfg.warmup} and {cfg.ref_workers}")
    if max(cfg.v1_patch, cfg.v2_patch) > cfg.crop or cfg.v1_patch % 4 or cfg.v2_patch % 4:
        raise ValueError(f"patches {cfg.v1_patch}/{cfg.v2_patch} must be multiples of 4 within the {cfg.crop} crop")
    if cfg.n_crops < cfg.batch:
        raise ValueError(f"need at least one full batch: {cfg.n_crops} crops < batch {cfg.batch}")


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------
def thermal_like_crops(n: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` uint8 BGR size×size×3 gray images: smooth warm blobs, edges and sensor noise (cheap to make)."""
    import cv2

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        base = cv2.resize(rng.uniform(40, 220, (6, 6)).astype(np.float32), (size, size),
                          interpolation=cv2.INTER_CUBIC)
        yy, xx = np.mgrid[:size, :size]
        (cy, cx), r = rng.uniform(0.3, 0.7, 2) * size, rng.uniform(0.15, 0.3) * size
        base += 30.0 * ((yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2)
        base += rng.normal(0, 2.0, (size, size))
        gray = np.clip(np.rint(base), 0, 255).astype(np.uint8)
        out.append(np.repeat(gray[:, :, None], 3, axis=2))
    return out


def write_crops(folder: Path, images: list[np.ndarray]) -> list[dict]:
    """Write ``images`` as PNGs under ``folder``; manifest-like records (id, dataset, path, nose)."""
    from thermsr_utils.io import write_png

    records = []
    for i, img in enumerate(images):
        rel = f"test/sftl54/bench_{i:04d}.png"
        write_png(folder / rel, img)
        h, w = img.shape[:2]
        records.append({"id": f"bench_{i:04d}", "dataset": "sftl54", "split": "test", "path": rel,
                        "nose": [w / 2.0, h / 2.0]})
    return records


# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_bytes() -> int | None:
    """Resident memory of this process (Linux /proc), else None."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class PeakMemory:
    """Peak memory inside a ``with`` block: CUDA allocator peak on a GPU, sampled resident memory on a CPU."""

    def __init__(self, device: torch.device, interval: float = 0.005):
        self.device, self.interval = device, interval
        self.peak_bytes = 0
        self.kind = "cuda.max_memory_allocated" if device.type == "cuda" else "process RSS (sampled)"
        self._stop = threading.Event()
        self._thread = None

    def _sample(self) -> None:
        """Poll the resident size until stopped."""
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, _rss_bytes() or 0)
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.peak_bytes = int(torch.cuda.max_memory_allocated(self.device))
        else:
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self.peak_bytes, _rss_bytes() or 0)

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / 2**20


def matmul_tflops(device: torch.device, dtype: torch.dtype, n: int, seconds: float) -> float:
    """Measured dense n×n×n matrix-multiply rate of ``device`` in ``dtype``, TFLOP/s (2n³ per product)."""
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    synchronize(device)
    count, t0 = 0, time.perf_counter()
    while True:
        for _ in range(4):
            a @ b
        count += 4
        synchronize(device)
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return 2.0 * n ** 3 * count / elapsed / 1e12


def count_flops(model, loss_fn, lr: torch.Tensor, hr: torch.Tensor) -> int:
    """FLOPs of one training step's forward + loss + backward, counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    model.train()
    with FlopCounterMode(display=False) as counter:
        loss = loss_fn(model(lr).float(), hr)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


class _Take:
    """The next ``n`` items of an iterator, with a length (what ``_train_epoch`` expects of a loader)."""

    def __init__(self, iterator, n: int):
        self.iterator, self.n = iterator, n

    def __iter__(self):
        for _ in range(self.n):
            yield next(self.iterator)

    def __len__(self) -> int:
        return self.n


def _forever(make_epoch):
    """Batches of epoch 1, 2, 3, … from ``make_epoch(e)``, without end."""
    epoch = 1
    while True:
        yield from make_epoch(epoch)
        epoch += 1


def _timed(run_steps, steps: int, warmup: int, device: torch.device) -> float:
    """Seconds per step of ``run_steps(k)`` over ``steps`` steps after ``warmup`` untimed ones."""
    if warmup:
        run_steps(warmup)
    synchronize(device)
    t0 = time.perf_counter()
    run_steps(steps)
    synchronize(device)
    return (time.perf_counter() - t0) / steps


# ---------------------------------------------------------------------------------------------
# Training: ours and the reference
# ---------------------------------------------------------------------------------------------
def _lpips(device):
    """The LPIPS metric used by the v2 loss (the real ImageNet AlexNet: torchvision's cache or the registry copy)."""
    from thermsr_utils.metrics import LPIPSMetric

    return LPIPSMetric(device=device)


def _writeup_values() -> dict:
    """The write-up's recipe values (λ, learning rates, epochs): the paper profile's, as the notebooks receive them."""
    from thermsr_utils import config

    return config.profile_params("paper")


def _ema_decay(recipe, cfg: BenchConfig) -> float | None:
    """The EMA decay ``fit`` uses for ``recipe`` at ``cfg``'s dataset size (the write-up's 0.999 at its sizes)."""
    from thermsr_utils import train

    return train.sized_schedule(recipe, train.steps_per_epoch(cfg.n_crops, recipe))["ema_decay"]


def _recipe(name: str, cfg: BenchConfig):
    """The write-up's recipe at the benchmark's sizes, with the fast path forced on whatever the device."""
    from thermsr_utils import recipes

    base = recipes.writeup(name)
    patch = cfg.v1_patch if name == "v1" else (None if cfg.v2_patch == cfg.crop else cfg.v2_patch)
    return replace(base, batch_size=cfg.batch, patch=patch, fast=True, amp="auto", compile=cfg.compile,
                   seed=cfg.seed)


def _fresh_model(cfg: BenchConfig):
    """A randomly initialised model of ``cfg.model`` (seeded, so both paths start alike)."""
    from thermsr_utils import models

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return models.new_model(cfg.model)


def bench_ours(name: str, cfg: BenchConfig, images, device: torch.device, lpips_metric) -> dict:
    """Seconds per step and peak memory of ``fit``'s step loop on the device pipeline (bf16 on CUDA)."""
    from thermsr_utils import accel, datasets, losses, train

    recipe = _recipe(name, cfg)
    amp = accel.resolve_amp(recipe.amp, device)
    with PeakMemory(device) as mem:
        model = _fresh_model(cfg).to(device).to(memory_format=torch.channels_last)
        loss_fn = losses.make_loss("l1") if name == "v1" else losses.make_loss(
            "l1+lpips", weight=_writeup_values()["lpips_weight"], lpips_metric=lpips_metric)
        optimizer = train.make_optimizer(model, recipe)
        decay = _ema_decay(recipe, cfg)
        ema = train.make_ema(model, decay) if decay is not None else None
        step_model = torch.compile(model) if cfg.compile else model
        patches = datasets.SRPatchDataset(images, patch=recipe.patch, augment=recipe.augment, seed=cfg.seed)
        sampler = accel.DevicePatchSampler(patches, recipe.batch_size, device)
        batches = _forever(sampler.epoch)

        scheduler = train.make_scheduler(optimizer, recipe, total_steps=cfg.steps + cfg.warmup)

        def run_steps(k: int) -> None:
            train._train_epoch(step_model, _Take(batches, k), loss_fn, optimizer, scheduler, ema, recipe, device,
                               "bench", False, amp=amp, channels_last=True, ema_source=model)

        seconds = _timed(run_steps, cfg.steps, cfg.warmup, device)
    lr, hr, _ = next(batches)
    flops = count_flops(model, loss_fn, lr.contiguous(memory_format=torch.channels_last), hr)
    return {"s_per_step": seconds, "peak_memory_mb": mem.peak_mb, "memory_kind": mem.kind,
            "flops_per_step": flops, "amp": amp, "channels_last": True, "data_pipeline": "device",
            "compile": cfg.compile, "patch": recipe.patch or cfg.crop}


class ReferenceDataset(torch.utils.data.Dataset):
    """The write-up's style: each item reads its PNG with OpenCV, cuts a random window, makes LR with cv2."""

    def __init__(self, files: list[Path], patch: int, augment: bool):
        self.files, self.patch, self.augment = list(files), patch, augment

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        import cv2
        from torchvision.transforms.functional import to_tensor

        hr = cv2.imread(str(self.files[i]))
        h, w = hr.shape[:2]
        y, x = random.randint(0, h - self.patch), random.randint(0, w - self.patch)
        hr = hr[y:y + self.patch, x:x + self.patch]
        if self.augment:
            if random.random() < 0.5:
                hr = hr[:, ::-1]
            hr = np.ascontiguousarray(np.rot90(hr, random.randint(0, 3)))
        lr = cv2.resize(hr, (self.patch // SCALE, self.patch // SCALE), interpolation=cv2.INTER_AREA)
        return to_tensor(lr), to_tensor(hr)


def bench_reference(name: str, cfg: BenchConfig, files: list[Path], device: torch.device, lpips_metric) -> dict:
    """Seconds per step and peak memory of a float32 loop fed by a per-item OpenCV DataLoader."""
    from torch.utils.data import DataLoader

    patch = cfg.v1_patch if name == "v1" else cfg.v2_patch
    recipe, lam = _recipe(name, cfg), _writeup_values()["lpips_weight"]
    decay = _ema_decay(recipe, cfg)
    with PeakMemory(device) as mem:
        model = _fresh_model(cfg).to(device)
        ema = copy.deepcopy(model) if decay is not None else None
        optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
        loader = DataLoader(ReferenceDataset(files, patch, augment=name == "v2"), batch_size=cfg.batch,
                            shuffle=True, num_workers=cfg.ref_workers, drop_last=True)

        def batches():
            while True:
                yield from loader

        stream = batches()

        def run_steps(k: int) -> None:
            model.train()
            for _ in range(k):
                lr, hr = next(stream)
                lr, hr = lr.to(device), hr.to(device)
                sr = model(lr)
                loss = torch.nn.functional.l1_loss(sr, hr)
                if name == "v2":
                    loss = loss + lam * lpips_metric.loss(sr.clamp(0, 1), hr)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                float(loss.detach())
                if ema is not None:
                    with torch.no_grad():
                        for pe, p in zip(ema.parameters(), model.parameters()):
                            pe.mul_(decay).add_(p, alpha=1 - decay)

        seconds = _timed(run_steps, cfg.steps, cfg.warmup, device)
    return {"s_per_step": seconds, "peak_memory_mb": mem.peak_mb, "memory_kind": mem.kind, "amp": None,
            "channels_last": False, "data_pipeline": f"DataLoader, cv2 per item, {cfg.ref_workers} workers",
            "compile": False, "patch": patch}


def _rates(rec: dict, cfg: BenchConfig, flops: int, peak: dict) -> dict:
    """Add throughput, epoch time, achieved TFLOP/s and MFU to a path's record."""
    steps_per_epoch = math.ceil(cfg.n_crops / cfg.batch)
    s = rec["s_per_step"]
    achieved = flops / s / 1e12
    rec.update(patches_per_s=cfg.batch / s, s_per_epoch=s * steps_per_epoch, achieved_tflops=achieved,
               mfu=achieved / peak["bf16"], mfu_vs_fp32_peak=achieved / peak["fp32"])
    return rec


def bench_training(cfg: BenchConfig, images, files, device: torch.device, peak: dict, lpips_metric) -> dict:
    """Both recipes, both paths: per-path figures plus the speed-up of ours over the reference."""
    out = {}
    for name in ("v1", "v2"):
        ours = bench_ours(name, cfg, images, device, lpips_metric)
        ref = bench_reference(name, cfg, files, device, lpips_metric)
        flops = ours.pop("flops_per_step")
        out[name] = {"batch": cfg.batch, "patch": ours["patch"], "steps_per_epoch": math.ceil(cfg.n_crops / cfg.batch),
                     "flops_per_step": flops, "ours": _rates(ours, cfg, flops, peak),
                     "reference": _rates(ref, cfg, flops, peak)}
        out[name]["speedup"] = out[name]["ours"]["patches_per_s"] / out[name]["reference"]["patches_per_s"]
    return out


# ---------------------------------------------------------------------------------------------
# Evaluation: ours and the reference
# ---------------------------------------------------------------------------------------------
def _locator(device):
    """The offline nose locator of the demo: RetinaFace's nose landmark (onnxruntime, on the CPU)."""
    from thermsr_utils.downstream import RetinaFaceNose

    return RetinaFaceNose()


def _reference_eval(model, crops_dir: Path, records: list[dict], lpips_metric, locator, device) -> None:
    """Every metric, one crop at a time, the model at batch 1: the write-up's evaluation loop."""
    import cv2

    from thermsr_utils import data, metrics

    model.eval()
    for r in records:
        hr_bgr = cv2.imread(str(crops_dir / r["path"]))
        lr_bgr = cv2.resize(hr_bgr, (hr_bgr.shape[1] // SCALE, hr_bgr.shape[0] // SCALE), interpolation=cv2.INTER_AREA)
        with torch.no_grad():
            sr = model(data.bgr_to_tensor(lr_bgr)[None].to(device)).float().cpu().clamp(0, 1)
        hr = data.bgr_to_tensor(hr_bgr)[None]
        metrics.psnr(sr, hr), metrics.ssim(sr, hr), metrics.psnr_y(sr, hr), metrics.ssim_y(sr, hr)
        metrics.grad_ratio(sr, hr), metrics.hf_energy_ratio(sr, hr)
        lpips_metric(sr.to(device), hr.to(device))
        locator.locate(hr_bgr[None]), locator.locate(data.tensor_to_bgr(sr))


def bench_eval(cfg: BenchConfig, crops_dir: Path, records: list[dict], device: torch.device, lpips_metric) -> dict:
    """Crops per second with every metric: ``evaluate.evaluate_method`` against a per-image loop."""
    from thermsr_utils import evaluate

    model = _fresh_model(cfg).to(device).eval()
    locator = _locator(device)
    warm = records[:1]
    results = {}
    with PeakMemory(device) as mem:
        def ours(recs):
            scorer = evaluate.Scorer(lpips=lpips_metric, locator=locator, device=str(device))
            evaluate.evaluate_method("bench", evaluate.model_method(model, cfg.batch, str(device)), crops_dir, recs,
                                     scorer, batch_size=cfg.batch, progress=False)

        ours(warm)
        synchronize(device)
        t0 = time.perf_counter()
        ours(records)
        synchronize(device)
        results["ours"] = {"seconds": time.perf_counter() - t0}
    results["ours"].update(peak_memory_mb=mem.peak_mb, memory_kind=mem.kind, batch=cfg.batch)
    with PeakMemory(device) as mem:
        _reference_eval(model, crops_dir, warm, lpips_metric, locator, device)
        synchronize(device)
        t0 = time.perf_counter()
        _reference_eval(model, crops_dir, records, lpips_metric, locator, device)
        synchronize(device)
        results["reference"] = {"seconds": time.perf_counter() - t0}
    results["reference"].update(peak_memory_mb=mem.peak_mb, memory_kind=mem.kind, batch=1)
    for rec in results.values():
        rec["crops_per_s"] = len(records) / rec["seconds"]
    results["n_crops"] = len(records)
    results["speedup"] = results["ours"]["crops_per_s"] / results["reference"]["crops_per_s"]
    results["metrics"] = ["psnr", "ssim", "psnr_y", "ssim_y", "grad_ratio", "hf_ratio", lpips_metric.name,
                          locator.name]
    return results


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------
def device_info(device: torch.device) -> dict:
    """What the figures were measured on."""
    info = {"type": device.type, "torch": torch.__version__, "python": platform.python_version(),
            "cpu_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(name=props.name, memory_gb=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda)
    else:
        info["name"] = platform.processor() or platform.machine()
    return info


def run(cfg: BenchConfig) -> dict:
    """Measure everything for ``cfg``; returns the JSON-ready result."""
    from thermsr_utils import models

    device = torch.device(cfg.device)
    peak = {"bf16": matmul_tflops(device, torch.bfloat16, cfg.matmul_size, cfg.matmul_seconds),
            "fp32": matmul_tflops(device, torch.float32, cfg.matmul_size, cfg.matmul_seconds),
            "n": cfg.matmul_size}
    images = thermal_like_crops(cfg.n_crops, cfg.crop, cfg.seed)
    lpips_metric = _lpips(device)
    with tempfile.TemporaryDirectory(prefix="thermsr-bench-") as tmp:
        crops_dir = Path(tmp)
        records = write_crops(crops_dir, images)
        files = [crops_dir / r["path"] for r in records]
        training = bench_training(cfg, images, files, device, peak, lpips_metric)
        evaluation = bench_eval(cfg, crops_dir, records[:cfg.eval_crops], device, lpips_metric)
    n_params = models.count_params(_fresh_model(cfg))
    return {
        "schema_version": SCHEMA_VERSION,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "device": device_info(device),
        "settings": asdict(cfg),
        "model": {"name": cfg.model, "n_params": n_params},
        "matmul_tflops": peak,
        "train": training,
        "eval": evaluation,
        "summary": {"train_speedup_v1": training["v1"]["speedup"], "train_speedup_v2": training["v2"]["speedup"],
                    "eval_speedup": evaluation["speedup"], "mfu_v1": training["v1"]["ours"]["mfu"],
                    "mfu_v2": training["v2"]["ours"]["mfu"]},
    }


def default_out(cfg: BenchConfig) -> Path:
    """artifacts/bench/bench-<device type>-<model>[-small].json"""
    from thermsr_utils import config

    kind = torch.device(cfg.device).type
    return config.artifacts_root() / "bench" / f"bench-{kind}-{cfg.model}{'-small' if cfg.small else ''}.json"


def report(result: dict) -> str:
    """A short printable summary of a result."""
    lines = [f"{result['model']['name']} ({result['model']['n_params']:,} parameters) on "
             f"{result['device']['type']} ({result['device'].get('name', '')}); "
             f"matmul peak bf16 {result['matmul_tflops']['bf16']:.3g} TFLOP/s, fp32 {result['matmul_tflops']['fp32']:.3g}"]
    for name, rec in result["train"].items():
        o, r = rec["ours"], rec["reference"]
        lines.append(f"train {name} (batch {rec['batch']}, {rec['patch']}²): ours {o['patches_per_s']:.3g} patches/s "
                     f"({o['s_per_epoch']:.3g} s/epoch, {o['peak_memory_mb']:.0f} MB, MFU {o['mfu']:.1%}) | reference "
                     f"{r['patches_per_s']:.3g} patches/s ({r['s_per_epoch']:.3g} s/epoch, {r['peak_memory_mb']:.0f} MB, "
                     f"MFU {r['mfu']:.1%}) | speed-up {rec['speedup']:.2f}×")
    e = result["eval"]
    lines.append(f"eval ({e['n_crops']} crops, all metrics): ours {e['ours']['crops_per_s']:.3g} crops/s | reference "
                 f"{e['reference']['crops_per_s']:.3g} crops/s | speed-up {e['speedup']:.2f}×")
    return "\n".join(lines)


def main(argv=None) -> int:
    """Command-line entry: measure, print a summary, write the JSON."""
    from thermsr_utils import models
    from thermsr_utils.io import atomic_write_json

    ap = argparse.ArgumentParser(prog="python -m thermsr_tools.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=sorted(models.ARCHITECTURES), help="default: drln (pan-tiny with --small)")
    ap.add_argument("--steps", type=int, help="timed training steps per recipe and path (default 20; 2 with --small)")
    ap.add_argument("--warmup", type=int, help="untimed steps first (default 3; 1 with --small)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--compile", action="store_true", help="torch.compile our training step")
    ap.add_argument("--small", action="store_true", help="tiny model, crops and batches (checks the benchmark runs)")
    ap.add_argument("--ref-workers", type=int,
                    help="DataLoader workers of the reference loop (default min(4, CPUs - 1); 0 with --small)")
    ap.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's own choice)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="result JSON (default artifacts/bench/bench-<device>-<model>.json)")
    args = ap.parse_args(argv)
    try:
        cfg = make_config(args)
        if args.threads is not None:
            if args.threads < 1:
                raise ValueError(f"--threads must be ≥ 1, got {args.threads}")
            torch.set_num_threads(args.threads)
    except ValueError as e:
        ap.error(str(e))
    result = run(cfg)
    out = args.out or default_out(cfg)
    atomic_write_json(out, result)
    print(report(result))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
