"""Faster execution of the same training recipe (used by ``train.fit``; ``train_cli`` runs it under ``torchrun``).

- ``DevicePatchSampler``: the training crops as one uint8 tensor on the device, where windows, flips, rotations,
  the LR image (``data.area_downsample``) and the float conversion happen. Its batches hold the items of
  ``train.make_loader``'s in the same order; the windows and augmentations come from a seeded ``torch.Generator``
  per epoch (so they differ from the DataLoader path's, with the same distribution).
- Distributed helpers for ``torchrun``: process-group setup, a batch sampler that gives each rank a slice of every
  global batch, and the loss weights that make DistributedDataParallel's gradient average equal the single-process
  gradient even for the last, smaller batch of an epoch.
"""
from __future__ import annotations

import math
import os
from typing import Iterator, NamedTuple

import numpy as np
import torch

from .data import area_downsample

AMP_CHOICES = (None, "bf16", "auto")
DIHEDRAL = tuple((flip, k) for flip in (False, True) for k in range(4))   # (horizontal flip, then k·90° turns)


# ---- Execution settings ----
def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (Intel AMX or AVX512-BF16), where oneDNN's bf16 convolutions
    run several times faster than float32; elsewhere bf16 is emulated and slower."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def resolve_amp(amp: str | None, device) -> str | None:
    """The autocast dtype name to use: "auto" → "bf16" on a CUDA device with bf16 support or on a CPU with native
    bf16 (``cpu_has_native_bf16``), else None (float32)."""
    if amp not in AMP_CHOICES:
        raise ValueError(f"amp must be one of {AMP_CHOICES}, got {amp!r}")
    if amp != "auto":
        return amp
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else None
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else None


def resolve_fast(fast: bool | None, device) -> bool:
    """Whether the device data pipeline and channels_last are used: None (auto) → True on CUDA only."""
    if fast not in (None, True, False):
        raise ValueError(f"fast must be None (auto), True or False, got {fast!r}")
    return torch.device(device).type == "cuda" if fast is None else bool(fast)


def device_path_problem(dataset) -> str | None:
    """Why ``DevicePatchSampler`` cannot serve ``dataset`` (a reason string), or None when it can."""
    images = getattr(dataset, "images", None)
    if images is None or not all(hasattr(dataset, a) for a in ("patch", "scale", "augment", "seed")):
        return f"{type(dataset).__name__} is not an SRPatchDataset (no images/patch/scale/augment/seed)"
    if not images:
        return "the dataset has no images"
    shapes = {tuple(im.shape) for im in images}
    if len(shapes) != 1:
        return f"the crops differ in size ({len(shapes)} sizes, e.g. {sorted(shapes)[:2]})"
    h, w = next(iter(shapes))[:2]
    if dataset.augment and (dataset.patch is None and h != w):
        return f"rotating non-square {w}x{h} crops changes their shape"
    return None


# ---- Seeds shared by the DataLoader path and the device path ----
def order_seed(seed: int, epoch: int) -> int:
    """Seed of the shuffling generator of ``epoch``; depends only on (seed, epoch)."""
    return int(np.random.SeedSequence([int(seed), int(epoch), 1]).generate_state(1)[0])


def window_seed(seed: int, epoch: int) -> int:
    """Seed of the device path's window/augmentation generator of ``epoch`` (a stream apart from the order)."""
    return int(np.random.SeedSequence([int(seed), int(epoch), 2]).generate_state(1)[0])


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """int64 permutation of range(n): the order in which a shuffled DataLoader seeded by ``order_seed`` visits items.

    Such a loader's iterator first takes one int64 from the generator (the base seed of its workers), then
    its RandomSampler draws ``torch.randperm``; both draws are repeated here (a test guards the equality).
    """
    g = torch.Generator().manual_seed(order_seed(seed, epoch))
    torch.empty((), dtype=torch.int64).random_(generator=g)
    return torch.randperm(n, generator=g)


def global_batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """``order`` cut into consecutive batches of ``batch_size`` (the last one may be smaller)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    return list(torch.split(order, batch_size))


def shard(batch: torch.Tensor, rank: int, world_size: int) -> tuple[torch.Tensor, float]:
    """This rank's slice of a global batch (contiguous; lengths differ by at most one) and its loss weight.

    DDP averages gradients over ranks, so rank r's loss is scaled by ``len(slice_r) * world_size / len(batch)``: the
    average is then the gradient of the mean loss over the whole batch. A rank left without items gets the batch's
    first item with weight 0, so it still joins the gradient all-reduce.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
    n = len(batch)
    if n == 0:
        raise ValueError("cannot shard an empty batch")
    part = torch.tensor_split(batch, world_size)[rank]
    if len(part) == 0:
        return batch[:1], 0.0
    return part, len(part) * world_size / n


class ShardedBatchSampler(torch.utils.data.Sampler):
    """Index lists of one rank: its ``shard`` of every global batch of ``epoch_order(n, seed, epoch)`` (with one rank,
    those of ``DataLoader(shuffle=True)`` seeded by ``order_seed(seed, epoch)``); ``weights``: their loss weights."""

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1):
        if n < 1:
            raise ValueError(f"ShardedBatchSampler needs at least one item, got n={n}")
        parts = [shard(b, rank, world_size) for b in global_batches(epoch_order(n, seed, epoch), batch_size)]
        self.batches = [p.tolist() for p, _ in parts]
        self.weights = [w for _, w in parts]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class Batches:
    """The batches ``make()`` yields, anew on every iteration, with a length ``n``: what ``fit`` expects of a loader."""

    def __init__(self, make, n: int):
        self.make, self.n = make, n

    def __iter__(self):
        return iter(self.make())

    def __len__(self) -> int:
        return self.n


# ---- The device data pipeline ----
def stack_crops(images, device="cpu") -> torch.Tensor:
    """uint8 BGR H×W×3 arrays (all one size) → one uint8 RGB tensor N×3×H×W on ``device``."""
    arr = np.stack(list(images))
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"expected uint8 BGR images H×W×3 of one size, got {arr.dtype} {arr.shape}")
    rgb = torch.from_numpy(np.ascontiguousarray(arr[..., ::-1].transpose(0, 3, 1, 2)))
    return rgb.to(device)


def _dihedral_tables(size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """For the 8 flip/rot90 variants of a size×size window: source row and column of every output pixel."""
    pixel = torch.arange(size * size).view(size, size)                      # row * size + column
    variants = torch.stack([torch.rot90(pixel.flip(-1) if flip else pixel, k, dims=(0, 1)) for flip, k in DIHEDRAL])
    return (variants // size).to(device), (variants % size).to(device)


class DevicePatchSampler:
    """Training batches of an ``SRPatchDataset`` made on ``device`` from one uint8 tensor of all its crops.

    ``epoch(e)`` yields ``(lr, hr, weight)``: float RGB in [0, 1] (B×3×p/s×p/s and B×3×p×p, or whole crops when
    the dataset's patch is None) and this rank's loss weight (1.0 on one process). Batch b holds the items of
    ``train.make_loader``'s batch b for a recipe seeded ``order_seed`` (default: the dataset's seed); each rank takes
    its ``shard``. Every item's window (uniform), flip (probability 1/2) and k·90° turn (k uniform in 0..3) in epoch
    e are drawn on the CPU from a generator seeded by ``window_seed(dataset seed, e)``: the same on every device and
    rank. The LR image is ``area_downsample`` of the uint8 HR patch.
    """

    def __init__(self, dataset, batch_size: int, device="cpu", *, order_seed: int | None = None, rank: int = 0,
                 world_size: int = 1):
        problem = device_path_problem(dataset)
        if problem:
            raise ValueError(f"the device data pipeline cannot serve this training set: {problem}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        self.device = torch.device(device)
        self.images = stack_crops(dataset.images, self.device)
        self.n, _, self.h, self.w = self.images.shape
        self.ph, self.pw = (self.h, self.w) if dataset.patch is None else (dataset.patch, dataset.patch)
        self.scale = int(dataset.scale)
        if self.ph % self.scale or self.pw % self.scale:
            raise ValueError(f"patch {self.pw}x{self.ph} is not divisible by scale {self.scale}")
        self.augment = bool(dataset.augment)
        self.seed = int(dataset.seed)
        self.order_seed = self.seed if order_seed is None else int(order_seed)
        self.batch_size = int(batch_size)
        self.rank, self.world_size = int(rank), int(world_size)
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
        self._rows, self._cols = _dihedral_tables(self.ph, self.device) if self.augment else (None, None)

    def __len__(self) -> int:
        """Number of (global) batches per epoch."""
        return math.ceil(self.n / self.batch_size)

    def draws(self, epoch: int) -> dict[str, torch.Tensor]:
        """Every item's window corner (y, x), flip flag and rotation count k for ``epoch`` (int64 CPU tensors of n)."""
        g = torch.Generator().manual_seed(window_seed(self.seed, epoch))
        y = torch.randint(0, self.h - self.ph + 1, (self.n,), generator=g)
        x = torch.randint(0, self.w - self.pw + 1, (self.n,), generator=g)
        if self.augment:
            flip = torch.randint(0, 2, (self.n,), generator=g)
            k = torch.randint(0, 4, (self.n,), generator=g)
        else:
            flip = k = torch.zeros(self.n, dtype=torch.int64)
        return {"y": y, "x": x, "flip": flip, "k": k}

    def hr_patches(self, idx: torch.Tensor, draws: dict[str, torch.Tensor]) -> torch.Tensor:
        """uint8 RGB B×3×ph×pw: the (flipped, rotated) windows of items ``idx`` under ``draws``."""
        idx = idx.cpu()
        b = len(idx)
        variant = draws["flip"][idx] * 4 + draws["k"][idx]
        packed = torch.stack([idx, draws["y"][idx], draws["x"][idx], variant]).to(self.device, non_blocking=True)
        idx_d, y, x, variant = packed[0], packed[1].view(b, 1, 1), packed[2].view(b, 1, 1), packed[3]
        if self.augment:
            rows, cols = self._rows[variant] + y, self._cols[variant] + x       # B×p×p source rows, columns
        else:
            rows = torch.arange(self.ph, device=self.device).view(1, self.ph, 1) + y
            cols = torch.arange(self.pw, device=self.device).view(1, 1, self.pw) + x
        flat = (rows * self.w + cols).expand(b, self.ph, self.pw).reshape(b, 1, -1).expand(b, 3, -1)
        src = self.images.index_select(0, idx_d)                                  # B×3×H×W
        return src.reshape(b, 3, -1).gather(2, flat).reshape(b, 3, self.ph, self.pw)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, float]]:
        """Yield this rank's ``(lr, hr, weight)`` batches of ``epoch`` (1-based, as in ``fit``)."""
        draws = self.draws(epoch)
        for batch in global_batches(epoch_order(self.n, self.order_seed, epoch), self.batch_size):
            idx, weight = shard(batch, self.rank, self.world_size)
            hr = self.hr_patches(idx, draws)
            lr = area_downsample(hr, self.scale)
            yield lr.float().div_(255.0), hr.float().div_(255.0), weight


# ---- Several processes (torchrun) ----
class DistInfo(NamedTuple):
    """Where this process stands in a distributed run (0, 1, 0 for a single process)."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    """Integer environment variable ``name``; a clear error if it is not an integer."""
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def launched_distributed() -> bool:
    """True when torchrun (or another launcher) started this process as one of several (WORLD_SIZE > 1)."""
    return _env_int("WORLD_SIZE", 1) > 1


def dist_info() -> DistInfo:
    """Rank, world size and local rank of the initialised process group, else (0, 1, 0)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0))
    return DistInfo(0, 1, 0)


def init_distributed(device_type: str = "cuda") -> DistInfo:
    """Join the process group of torchrun's environment once (NCCL on CUDA, using GPU ``LOCAL_RANK``, else gloo);
    nothing for a single process."""
    import torch.distributed as dist

    if not launched_distributed() or dist.is_initialized():
        return dist_info()
    local_rank = _env_int("LOCAL_RANK", 0)
    backend = "nccl" if device_type == "cuda" else "gloo"
    if backend == "nccl":
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA device(s) "
                               f"are visible: start at most that many processes per node")
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend)
    return dist_info()


def rank_device(device, info: DistInfo) -> torch.device:
    """``device`` with the rank's GPU index filled in ("cuda" → "cuda:LOCAL_RANK") in a distributed run."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and info.world_size > 1:
        return torch.device("cuda", info.local_rank)
    return device


def barrier() -> None:
    """Wait for every rank (no-op for a single process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s ``obj`` on every rank (picklable plain data; returned unchanged for one process)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def reduce_weighted(values: dict[str, float], weight: float, device) -> dict[str, float]:
    """Per key, the mean over ranks of ``weight * value``: with ``shard``'s weights, the global batch's value
    (every rank passes the same keys in the same order)."""
    import torch.distributed as dist

    if not values or not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return {k: float(v) * weight for k, v in values.items()}
    keys = list(values)
    t = torch.tensor([float(values[k]) * weight for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return dict(zip(keys, (t / dist.get_world_size()).tolist()))


def wrap_ddp(model: torch.nn.Module, device) -> torch.nn.Module:
    """``model`` in DistributedDataParallel (gradients averaged over ranks) when several ranks run, else itself."""
    if dist_info().world_size == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device = torch.device(device)
    ids = [device.index] if device.type == "cuda" else None
    # static_graph: the same parameters take part in every step; it also copes with trainable parameters
    # that never do (DRLN has such a block), which the default setting rejects.
    return DistributedDataParallel(model, device_ids=ids, gradient_as_bucket_view=True, static_graph=True)
