"""Tests of training on several processes: batch sharding, loss weights, and a 2-process torchrun (gloo, CPU)
whose result must match a single-process run with the same global batch."""
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from thermsr_utils import accel, checkpoint, train, train_cli
from thermsr_utils.datasets import SRPatchDataset
from thermsr_utils.train import Recipe

# The training run both sides execute: imported here for the single process, started by torchrun for two.
SCRIPT = '''
import os
import sys
from pathlib import Path

import numpy as np
import torch
from super_image import PretrainedConfig, PreTrainedModel
from torch import nn

from thermsr_utils.losses import make_loss
from thermsr_utils.datasets import SRPatchDataset
from thermsr_utils.train import Recipe, fit


class DdpConfig(PretrainedConfig):
    model_type = "THERMSR_DDP_TEST"

    def __init__(self, scale=4, **kwargs):
        super().__init__(**kwargs)
        self.scale, self.data_parallel = scale, False


class DdpSR(PreTrainedModel):
    """A tiny x4 model with one trainable layer that never takes part (as DRLN has)."""

    config_class = DdpConfig

    def __init__(self, config):
        super().__init__(config)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 48, 3, padding=1),
                                  nn.PixelShuffle(4))
        self.unused = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        return self.body(x)


def images(n, size, seed):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def mae(sr, hr):
    return (sr - hr).abs().mean(dim=(1, 2, 3))


def run(out, fast):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = DdpSR(DdpConfig())
    # 5 crops, global batch 4: batches of 4 and 1; on two ranks 2+2 and 1+0 (the empty rank weighs 0)
    train_set = SRPatchDataset(images(5, 24, 1), patch=16, augment=True, seed=3)
    val_sets = {"a": SRPatchDataset(images(2, 16, 2), patch=None)}
    recipe = Recipe(name="ddp", epochs=2, batch_size=4, lr=1e-3, weight_decay=1e-4, patch=16, augment=True,
                    val_every=1, keep="best", select_metric="mae", select_mode="min", ema_half_life=0.25, seed=5,
                    fast=fast,
                    amp=None)   # float32: the comparison is of the gradient arithmetic, not of bf16 rounding
    return fit(model, train_set, val_sets, make_loss("l1+fft", 0.5), recipe, out, metrics={"mae": mae},
               device="cpu", progress=False)


if __name__ == "__main__":
    for fast in (False, True):
        result = run(Path(sys.argv[1]) / ("fast" if fast else "loader"), fast)
        # one marker file per rank and pipeline (stdout of the two ranks interleaves)
        rank = os.environ.get("RANK", "0")
        marker = Path(sys.argv[1]) / f"done_{result['execution']['world_size']}_{result['execution']['data_pipeline']}_{rank}"
        marker.write_text("ok")
'''


pytestmark = pytest.mark.usefixtures("one_thread")


class Index(Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return i


# ------------------------------------------------------------------------------ sharding
def test_one_rank_sampler_gives_the_shuffled_loader_batches():
    for n, b, seed, epoch in ((10, 3, 0, 1), (17, 4, 5, 3), (4, 8, 1, 2)):
        g = torch.Generator().manual_seed(accel.order_seed(seed, epoch))
        loader = [t.tolist() for t in DataLoader(Index(n), batch_size=b, shuffle=True, generator=g)]
        assert list(accel.ShardedBatchSampler(n, b, seed, epoch)) == loader
        assert accel.ShardedBatchSampler(n, b, seed, epoch).weights == [1.0] * len(loader)


@pytest.mark.parametrize("n, b, world", [(10, 4, 2), (9, 6, 3), (5, 4, 2), (7, 8, 4), (3, 4, 4)])
def test_shards_cover_each_global_batch_once_with_weights_that_average_it(n, b, world):
    whole = list(accel.ShardedBatchSampler(n, b, 2, 1))
    ranks = [accel.ShardedBatchSampler(n, b, 2, 1, rank=r, world_size=world) for r in range(world)]
    assert all(len(s) == len(whole) for s in ranks)
    for j, batch in enumerate(whole):
        kept = [(s.batches[j], s.weights[j]) for s in ranks]
        assert [i for idx, w in kept if w > 0 for i in idx] == batch            # contiguous, in order, no repeats
        # DDP averages over ranks, so an item of rank r counts weight_r / (world · len_r): it must be 1 / len(batch)
        for idx, w in kept:
            if w > 0:
                assert w / (world * len(idx)) == pytest.approx(1 / len(batch))
        for idx, w in kept:
            assert len(idx) >= 1                                                # every rank joins every step
            if w == 0:
                assert idx == batch[:1]


def test_shard_weights_reproduce_the_global_mean_gradient():
    torch.manual_seed(0)
    w = torch.randn(5, requires_grad=True)
    x = torch.randn(7, 5)
    (x @ w).pow(2).mean().backward()
    full = w.grad.clone()
    w.grad = None
    world, total = 3, torch.zeros(5)
    for r in range(world):
        idx, weight = accel.shard(torch.arange(7), r, world)
        (x[idx] @ w).pow(2).mean().mul(weight).backward()
        total += w.grad
        w.grad = None
    assert torch.allclose(total / world, full, atol=1e-6)                     # what DDP's average gives


def test_shard_rejects_bad_arguments():
    with pytest.raises(ValueError, match="rank 2"):
        accel.shard(torch.arange(4), 2, 2)
    with pytest.raises(ValueError, match="empty"):
        accel.shard(torch.arange(0), 0, 2)
    with pytest.raises(ValueError, match="batch_size"):
        accel.global_batches(torch.arange(4), 0)


def test_make_loader_shards_are_slices_of_the_single_process_batches():
    rng = np.random.default_rng(0)
    ds = SRPatchDataset([rng.integers(0, 256, (24, 24, 3), dtype=np.uint8) for _ in range(5)], patch=8,
                        augment=True, seed=3)
    recipe = Recipe(name="t", epochs=2, batch_size=4, lr=1e-3, weight_decay=0.0, patch=8, augment=True, seed=9,
                    val_every=5, keep="best")
    single = [hr for _, hr in train.make_loader(ds, recipe, 2)]
    parts = [list(train.make_loader(ds, recipe, 2, rank=r, world_size=2)) for r in range(2)]
    for j, hr in enumerate(single):
        got = torch.cat([p[j][1] for p in parts if p[j][2] > 0])
        assert torch.equal(got, hr)


# ------------------------------------------------------------------------------ process group helpers
def test_single_process_helpers_are_no_ops(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not accel.launched_distributed()
    assert accel.init_distributed("cpu") == accel.DistInfo(0, 1, 0)
    assert accel.dist_info().is_main
    assert accel.broadcast_object({"a": 1}) == {"a": 1}
    assert accel.reduce_weighted({"x": 2.0}, 0.5, "cpu") == {"x": 1.0}
    model = torch.nn.Linear(2, 2)
    assert accel.wrap_ddp(model, "cpu") is model
    accel.barrier()
    assert str(accel.rank_device("cuda", accel.DistInfo(1, 2, 1))) == "cuda:1"
    assert str(accel.rank_device("cuda:0", accel.DistInfo(1, 2, 1))) == "cuda:0"
    assert str(accel.rank_device("cpu", accel.DistInfo(1, 2, 1))) == "cpu"


def test_bad_launcher_environment_is_named(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE"):
        accel.launched_distributed()


def test_fit_refuses_a_global_batch_the_ranks_cannot_split(tmp_path, monkeypatch):
    monkeypatch.setattr(accel, "dist_info", lambda: accel.DistInfo(0, 3, 0))
    mod = load_script(tmp_path)
    with pytest.raises(ValueError, match="not divisible by the 3 ranks"):
        mod.run(tmp_path / "out", False)


# ------------------------------------------------------------------------------ two processes
def load_script(tmp_path):
    path = tmp_path / "ddp_run.py"
    path.write_text(SCRIPT)
    spec = importlib.util.spec_from_file_location("ddp_run", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_two_process_torchrun_matches_one_process(tmp_path):
    mod = load_script(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(tmp_path / "ddp_run.py"), str(tmp_path / "ddp")],
                          capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    done = sorted(p.name for p in (tmp_path / "ddp").glob("done_*"))
    assert done == ["done_2_DataLoader_0", "done_2_DataLoader_1", "done_2_device_0", "done_2_device_1"], done

    for pipeline in ("loader", "fast"):
        single = mod.run(tmp_path / "single" / pipeline, pipeline == "fast")
        assert single["execution"]["world_size"] == 1
        ddp_dir, one_dir = tmp_path / "ddp" / pipeline, tmp_path / "single" / pipeline
        a, b = checkpoint.load_state(one_dir / "state.pt"), checkpoint.load_state(ddp_dir / "state.pt")
        assert b["execution"]["world_size"] == 2 and b["epoch"] == 2
        for key in ("model", "ema"):
            assert a[key].keys() == b[key].keys()
            for k in a[key]:
                assert torch.allclose(a[key][k].float(), b[key][k].float(), atol=1e-5), (pipeline, key, k)
        assert not torch.equal(a["model"]["body.0.weight"], mod.DdpSR(mod.DdpConfig()).body[0].weight)
        ha, hb = json.loads((one_dir / "history.json").read_text()), json.loads((ddp_dir / "history.json").read_text())
        assert [h["steps"] for h in ha] == [h["steps"] for h in hb] == [0, 2, 2]
        for x, y in zip(ha[1:], hb[1:]):
            assert y["train_loss"] == pytest.approx(x["train_loss"], rel=1e-5)
            assert y["train_terms"]["fft"] == pytest.approx(x["train_terms"]["fft"], rel=1e-5)
            assert y["val"]["all"]["mae"] == pytest.approx(x["val"]["all"]["mae"], rel=1e-5)
        meta = json.loads((ddp_dir / "best" / "thermsr.json").read_text())
        assert meta["execution"]["world_size"] == 2
        # only rank 0 wrote: the same files as the single run, no leftovers
        assert sorted(p.name for p in ddp_dir.iterdir()) == sorted(p.name for p in one_dir.iterdir())


# ------------------------------------------------------------------------------ the torchrun entry point
def test_entry_point_takes_the_notebooks_parameters():
    p = train_cli.notebook_parameters("v1", "smoke")
    assert (p["v1_epochs"], p["v1_lr"], p["max_steps_per_epoch"]) == (2, 0.001, 2)       # from the profile
    assert (p["v1_batch_size"], p["v1_patch"]) == (16, 128)                              # the notebook's literals
    assert train_cli.notebook_parameters("v1", "smoke", {"v1_epochs": 7})["v1_epochs"] == 7
    with pytest.raises(ValueError, match="v2_epochs"):                                   # not a v1 parameter
        train_cli.notebook_parameters("v1", "smoke", {"v2_epochs": 3})
    with pytest.raises(ValueError, match="unknown recipe"):
        train_cli.notebook_parameters("v3", "smoke")


def _notebook_globals(nb_name: str, profile: str, overrides: dict) -> dict:
    """The names a notebook's parameters cell defines once papermill has injected the profile's values and the
    overrides, worked out from the sources alone (not through the runner's parameter code): the cell read with
    jupytext and executed as written, then the profile's entries that the cell declares, then the overrides."""
    import jupytext

    from thermsr_utils import config

    cells = [c for c in jupytext.read(config.NOTEBOOKS_DIR / f"{nb_name}.py").cells
             if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, nb_name
    namespace: dict = {}
    exec(cells[0].source, {}, namespace)
    namespace.update({k: v for k, v in config.profile_params(profile).items() if k in namespace})
    namespace.update(overrides)
    return namespace


@pytest.mark.parametrize("recipe, nb_name", [("v1", "03_v1_finetune"), ("v2", "05_v2_finetune")])
@pytest.mark.parametrize("profile, overrides", [("smoke", {}), ("demo", {"seed": 3, "keep": "best"}),
                                                ("paper", {"val_every": 7})])
def test_entry_point_parameters_are_what_the_notebook_would_see(recipe, nb_name, profile, overrides):
    assert train_cli.notebook_parameters(recipe, profile, overrides) == _notebook_globals(nb_name, profile, overrides)


def _tiny_manifest(paths, side=32, n=6):
    from thermsr_utils import io, manifests

    rng = np.random.default_rng(0)
    records = []
    for i in range(n):
        img = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        ds = ("sftl54", "thermeval")[i % 2]
        split = ("train", "train", "val", "val", "test", "test")[i]
        rel = f"{split}/{ds}/c{i}.png"
        io.write_png(paths.crops / rel, img)
        records.append({"id": f"c{i}", "dataset": ds, "split": split, "path": rel, "sha256": io.pixel_sha256(img)})
    io.atomic_write_json(paths.manifest, {"schema_version": manifests.SCHEMA_VERSION, "records": records})
    return records


@pytest.mark.parametrize("name, overrides", [("v1", {"v1_patch": 16, "v1_epochs": 3, "v1_lr": 0.003}),
                                             ("v2", {"v2_perceptual": "fft", "fft_weight": 2.5, "v2_epochs": 4})])
def test_entry_point_trains_what_the_notebook_builds(tmp_path, monkeypatch, name, overrides):
    from thermsr_utils import config, models, recipes

    nb_name = train_cli.RECIPE_NOTEBOOKS[name]
    source = (config.NOTEBOOKS_DIR / f"{nb_name}.py").read_text()
    assert f'recipes.build("{name}", globals(),' in source          # the notebook builds with this function
    monkeypatch.setenv("THERMSR_ARTIFACTS", str(tmp_path))
    records = _tiny_manifest(config.run_paths("smoke"))
    tiny = models.new_model("pan-tiny")
    monkeypatch.setattr(models, "load_model", lambda *a, **k: (tiny, {"source": "random"}))
    seen = {}

    def fake_fit(model, train_set, val_sets, loss_fn, recipe, out_dir, **kw):
        seen.update(train_set=train_set, val_sets=val_sets, loss=loss_fn, recipe=recipe, meta=kw["extra_meta"])
        return {"best_epoch": 1, "best_value": 30.0, "best_dir": str(out_dir)}

    monkeypatch.setattr(train, "fit", fake_fit)
    argv = ["--profile", "smoke", "--recipe", name, "--fast", "off"]
    for k, v in overrides.items():
        argv += ["-p", k, str(v)]
    assert train_cli.main(argv) == 0

    expected = recipes.build(name, _notebook_globals(nb_name, "smoke", overrides), config.run_paths("smoke").crops,
                             records, "cpu")
    assert seen["recipe"] == dataclasses.replace(expected.recipe, fast=False)
    assert seen["loss"].describe() == expected.loss_fn.describe()
    assert seen["train_set"].describe() == expected.train_set.describe()
    assert {k: len(v) for k, v in seen["val_sets"].items()} == {k: len(v) for k, v in expected.val_sets.items()}
    assert seen["meta"].get("perceptual_term") == expected.term_name
    for key, value in overrides.items():                               # the overrides reached the recipe and loss
        field = {"v1_patch": "patch", "v1_epochs": "epochs", "v1_lr": "lr", "v2_epochs": "epochs"}.get(key)
        if field:
            assert getattr(seen["recipe"], field) == value
    if name == "v2":
        assert [(t["name"], t["weight"]) for t in seen["loss"].describe()] == [("l1", 1.0), ("fft", 2.5)]
        assert (seen["recipe"].patch, seen["recipe"].augment) == (None, True)   # whole crops, augmented
    else:
        assert (seen["recipe"].patch, seen["recipe"].augment) == (16, False)


def test_recipe_builders_read_only_their_notebooks_parameters():
    from thermsr_utils import recipes

    for name, nb_name in train_cli.RECIPE_NOTEBOOKS.items():
        declared = _notebook_globals(nb_name, "demo", {})
        assert set(recipes.PARAMETERS[name]) <= set(declared), name
    assert set(recipes.PARAMETERS["v3"]) <= set(_notebook_globals("08_downstream_aware", "demo", {}))
    p = _notebook_globals("03_v1_finetune", "smoke", {})
    with pytest.raises(ValueError, match="v1_lr"):
        recipes.recipe("v1", {k: v for k, v in p.items() if k != "v1_lr"})
    with pytest.raises(ValueError, match="unknown recipe"):
        recipes.recipe("v3", p)
    assert recipes.recipe("v1", {**p, "sweep_point": "lambda-0.1"}).val_at_start is False
    assert recipes.recipe("v1", p).val_at_start is True


def test_protocol_table_sets_the_run_beside_the_reported_protocol():
    from thermsr_utils import findings, recipes

    reported = {"optimizer": {"v1": "AdamW lr=1e-5", "v2": "AdamW peak"}, "ema": {"v1": "none", "v2": "decay 0.999"}}
    r = Recipe.v2(epochs=7, lr=2e-5, batch_size=16, warmup=0.25, ema_half_life=0.1, val_every=5, keep="best")
    md = recipes.protocol_table(r, "0.05·LPIPS", reported)
    lines = md.splitlines()
    assert lines[0] == "| setting | the write-up | this run |"
    assert "| optimizer | AdamW peak | AdamW lr=2e-05 weight_decay=1e-05 |" in lines
    assert "| ema | decay 0.999 | half-life 10.0 % of the run's steps, validated and kept |" in lines
    assert ("| schedule | — | linear warmup over 25.0 % of the steps, then cosine over 7 epochs, stepped every "
            "optimizer step |") in lines
    assert "| loss | — | L1 + 0.05·LPIPS |" in lines
    assert "| kept | — | best validation PSNR of the ema copy, every 5 epochs and at the last |" in lines
    # sized to a run of 4 steps per epoch: 28 steps, 7 of warmup, the decay whose half-life is 2.8 steps
    sized = recipes.protocol_table(r, "0.05·LPIPS", reported, sized=train.sized_schedule(r, 4)).splitlines()
    assert ("| schedule | — | linear warmup over 25.0 % of the steps (7 steps), then cosine over 7 epochs "
            "(28 optimizer steps), stepped every optimizer step |") in sized
    assert f"| ema | decay 0.999 | half-life 10.0 % of the run's steps (decay {0.5 ** (1 / 2.8):.4f}), validated and kept |" in sized
    last = recipes.protocol_table(Recipe.v1(epochs=60, lr=1e-5, batch_size=16, patch=128, val_every=5, keep="last"), None, reported).splitlines()
    assert "| kept | — | the last epoch's model copy |" in last and "| ema | none | none |" in last
    assert "| schedule | — | cosine over 60 epochs, stepped every optimizer step |" in last
    assert findings.reported_protocol()["hr_patch"]["v2"].startswith("random 192x192")