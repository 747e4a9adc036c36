"""Reliability and reproducibility across the pipeline.

* the smoke pipeline run twice gives the same crops, checkpoints, results, tables and figures, bit for bit;
  the raw data it reads is unchanged;
* training killed (SIGKILL) or stopped (SIGTERM) at a random moment resumes to the uninterrupted result;
  run again without resume it is refused and no file changes;
* every file writer is atomic; files that could run code on load are refused;
* crops that changed since the manifest are named before use;
* one run per artifacts folder;
* every notebook parameter has a rule, and values outside it are refused before any work.
"""
import ast
import csv
import math
import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from thermsr_utils import checkpoint, config, data, datasets, io, lock, manifests, notebook, params, run, train

ROOT = config.REPO_ROOT
PACKAGE = ROOT / "thermsr_utils"

# notebooks 01-06: the pipeline whose outputs must repeat (07 and its sweeps add points of the same notebooks)
PIPELINE = ["01", "02", "03", "04", "05", "06"]


# =============================================================================================
# 1 + 3. The smoke pipeline twice: identical outputs; raw data untouched
# =============================================================================================
# Run-dependent by nature, and excluded by name: wall-clock timings (in histories, in the provenance's "timings" and
# the kernels' phase files under timings/), and the executed notebooks (papermill stores cell timings and progress
# output in them).
TIMING_KEYS = set(train.TIMING_KEYS) | {"train_seconds", "timings"}
EXCLUDED_DIRS = {"executed", "timings"}


def _tree(folder: Path) -> dict[str, tuple[str, int, int]]:
    """relative path -> (sha256 of the bytes, size, mtime_ns) of every file under ``folder``."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            st = p.stat()
            out[p.relative_to(folder).as_posix()] = (hashlib.sha256(p.read_bytes()).hexdigest(), st.st_size,
                                                      st.st_mtime_ns)
    return out


def _normalise(obj, roots: dict[str, str]):
    """``obj`` with timing keys dropped and run-folder prefixes replaced by placeholders."""
    if isinstance(obj, dict):
        return {k: _normalise(v, roots) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, (list, tuple)):
        return [_normalise(v, roots) for v in obj]
    if isinstance(obj, str):
        for prefix, name in roots.items():
            obj = obj.replace(prefix, name)
    return obj


def _differences(a, b, where: str) -> list[str]:
    """Where two loaded structures differ (tensors compared with torch.equal, floats exactly)."""
    if torch.is_tensor(a) or torch.is_tensor(b):
        same = torch.is_tensor(a) and torch.is_tensor(b) and a.dtype == b.dtype and a.shape == b.shape \
            and torch.equal(a, b)
        return [] if same else [where]
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{where}: keys {sorted(set(a) ^ set(b), key=str)}"]
        return [d for k in a for d in _differences(a[k], b[k], f"{where}.{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{where}: length {len(a)} vs {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{where}[{i}]")]
    if isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b):
        return []
    return [] if a == b and type(a) is type(b) else [f"{where}: {a!r} vs {b!r}"]


def _load(path: Path, roots: dict[str, str]):
    """A result file as comparable data: JSON and torch files parsed and normalised, anything else as bytes."""
    if path.suffix == ".json":
        return _normalise(io.read_json(path), roots)
    if path.suffix == ".pt":
        return _normalise(torch.load(path, map_location="cpu", weights_only=True), roots)
    return path.read_bytes()


@pytest.fixture(scope="module")
def two_smoke_runs(tmp_path_factory):
    """The smoke pipeline run twice into separate artifacts and data folders (run B's raw data made first)."""
    from thermsr_utils import synthetic

    root = tmp_path_factory.mktemp("repro")
    p = config.profile_params("smoke")
    raw_b = root / "data_b" / "synthetic" / "smoke"
    synthetic.ensure_synthetic(raw_b, seed=p["seed"], sftl54_subjects=p["sftl54_subjects"],
                               sftl54_frames_per_subject=p["sftl54_frames_per_subject"],
                               thermeval_frames_file1=p["thermeval_frames_file1"],
                               thermeval_frames_file2=p["thermeval_frames_file2"])
    raw_before = _tree(raw_b)
    mp = pytest.MonkeyPatch()
    runs = {}
    try:
        for name in ("a", "b"):
            mp.setenv("THERMSR_ARTIFACTS", str(root / f"artifacts_{name}"))
            mp.setenv("THERMSR_DATA", str(root / f"data_{name}"))
            run.run("smoke", only=PIPELINE, progress=False)
            runs[name] = config.run_paths("smoke")
    finally:
        mp.undo()
    return {"runs": runs, "raw_b": raw_b, "raw_before": raw_before, "raw_a": root / "data_a" / "synthetic" / "smoke",
            "roots": {str(root / "artifacts_a"): "<artifacts>", str(root / "artifacts_b"): "<artifacts>",
                      str(root / "data_a"): "<data>", str(root / "data_b"): "<data>"}}


@pytest.mark.notebooks
def test_two_runs_give_identical_outputs(two_smoke_runs):
    a, b = two_smoke_runs["runs"]["a"], two_smoke_runs["runs"]["b"]
    roots = two_smoke_runs["roots"]

    def files(paths):
        return sorted(p.relative_to(paths.root).as_posix() for p in paths.root.rglob("*")
                      if p.is_file() and p.relative_to(paths.root).parts[0] not in EXCLUDED_DIRS)

    names = files(a)
    assert names == files(b)
    # everything the brief names is among the compared files
    for expected in ("crops/manifest.json", "checkpoints/v1/state.pt", "checkpoints/v2/best/pytorch_model_4x.pt",
                     "checkpoints/v2/history.json", "results/v1_L1.csv", "results/table_v2.csv",
                     "figures/perception_distortion.png"):
        assert expected in names
    assert not (a.root / ".lock").exists() and not (b.root / ".lock").exists()
    diffs = []
    for name in names:
        diffs += _differences(_load(a.root / name, roots), _load(b.root / name, roots), name)
    assert diffs == [], f"{len(diffs)} differences between the two runs, e.g. {diffs[:10]}"


@pytest.fixture(scope="module")
def one_thread_run(two_smoke_runs):
    """Run A's pipeline again with one CPU thread (run A had the environment's count, 2 in CI)."""
    root = Path(str(two_smoke_runs["raw_a"])).parents[2]
    mp = pytest.MonkeyPatch()
    try:
        mp.setenv("THERMSR_ARTIFACTS", str(root / "artifacts_1thread"))
        mp.setenv("THERMSR_DATA", str(root / "data_a"))
        mp.setenv("OMP_NUM_THREADS", "1")
        mp.setenv("MKL_NUM_THREADS", "1")
        run.run("smoke", only=PIPELINE, progress=False)
        return config.run_paths("smoke")
    finally:
        mp.undo()


@pytest.mark.notebooks
def test_one_thread_and_two_threads_agree_within_their_intervals(two_smoke_runs, one_thread_run):
    """The cross-machine promise of docs/reliability.md, on the nearest case CI has: a different thread count. Every
    difference the tables state (v1 − zero-shot, v2 − v1, per split and metric) from the one-thread run lies
    inside the interval the two-thread run reports for it."""
    a = two_smoke_runs["runs"]["a"]
    with open(a.results / "table_v2_differences.csv", newline="") as f:
        ref = {(r["base"], r["new"], r["split"], r["metric"]): r for r in csv.DictReader(f)}
    with open(one_thread_run.results / "table_v2_differences.csv", newline="") as f:
        other = {(r["base"], r["new"], r["split"], r["metric"]): r for r in csv.DictReader(f)}
    assert ref.keys() == other.keys() and len(ref) >= 10
    outside = []
    for key, r in ref.items():
        lo, hi, d = float(r["lo"]), float(r["hi"]), float(other[key]["diff"])
        if math.isfinite(lo) and not (lo - 1e-9 <= d <= hi + 1e-9):
            outside.append(f"{key}: {d:+.4f} outside [{lo:+.4f}, {hi:+.4f}]")
    assert outside == [], outside


@pytest.mark.notebooks
def test_crops_match_their_manifest_in_both_runs(two_smoke_runs):
    a, b = two_smoke_runs["runs"]["a"], two_smoke_runs["runs"]["b"]
    records = manifests.load_manifest(a.manifest)["records"]
    assert records == manifests.load_manifest(b.manifest)["records"] and len(records) > 20
    for r in records:
        pa = io.pixel_sha256(io.read_image(a.crops / r["path"]))
        assert pa == io.pixel_sha256(io.read_image(b.crops / r["path"])) == r["sha256"], r["path"]


@pytest.mark.notebooks
def test_checkpoints_record_seed_and_determinism(two_smoke_runs):
    a = two_smoke_runs["runs"]["a"]
    for name in ("v1", "v2"):
        meta = io.read_json(a.checkpoints / name / "best" / "thermsr.json")
        det = meta["determinism"]
        assert det["deterministic_algorithms"] is True and det["cudnn_deterministic"] is True
        assert det["cudnn_benchmark"] is False and meta["recipe"]["seed"] == 0


@pytest.mark.notebooks
def test_raw_data_is_not_modified_by_the_pipeline(two_smoke_runs):
    raw_b = two_smoke_runs["raw_b"]
    assert _tree(raw_b) == two_smoke_runs["raw_before"], "the pipeline changed files of the raw dataset"
    # and the generator is deterministic: run A generated the same raw files itself
    content = lambda tree: {k: v[:2] for k, v in tree.items()}  # noqa: E731 - bytes and sizes, not mtimes
    assert content(_tree(two_smoke_runs["raw_a"])) == content(two_smoke_runs["raw_before"])


def test_builders_never_write_under_the_raw_roots(tmp_path):
    """Every open/rename/remove/mkdir the builders make is audited; none may touch the raw folders."""
    from thermsr_utils import synthetic

    base = tmp_path / "raw"
    sf, te = synthetic.ensure_synthetic(base, seed=3, sftl54_subjects=3, sftl54_frames_per_subject=1,
                                        thermeval_frames_file1=2, thermeval_frames_file2=1)
    before = _tree(base)
    touched, reads = [], []
    active = [True]
    raw = str(base.resolve())

    def hook(event, args):
        if not active[0] or not args:
            return
        target = args[0]
        if isinstance(target, int) or not isinstance(target, (str, bytes, os.PathLike)):
            return
        path = os.path.abspath(os.fsdecode(target))
        if not path.startswith(raw):
            return
        if event == "open":
            mode, flags = args[1], args[2]
            writes = (mode is not None and any(c in str(mode) for c in "wax+")) or \
                (mode is None and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND))
            (touched if writes else reads).append((event, path))
        elif event in ("os.rename", "os.replace", "os.remove", "os.unlink", "os.rmdir", "os.mkdir",
                       "os.chmod", "os.truncate", "shutil.rmtree", "shutil.move"):
            touched.append((event, path))

    sys.addaudithook(hook)  # audit hooks cannot be removed; ``active`` switches this one off
    try:
        manifests.build_dataset(tmp_path / "crops", sftl54_root=sf, thermeval_root=te, palette="gray",
                                caps=(None, None, None), size=192, pad=1.15, min_crop_side=0, seed=7)
    finally:
        active[0] = False
    assert touched == []
    assert reads, "the audit hook saw no reads of the raw files at all"
    assert _tree(base) == before


# =============================================================================================
# 2. Crash safety: kill or stop training at a random moment, resume, compare
# =============================================================================================
TRAINER = '''
"""A tiny training run used by test_reliability (run as a script it trains, slowed down a little)."""
import sys
import time

import numpy as np
import torch

from thermsr_utils import datasets, losses, models, train

EPOCHS = 20


class SlowPatches(datasets.SRPatchDataset):
    """The same items, each a few milliseconds late, so a run lasts long enough to be interrupted."""

    def __getitem__(self, index):
        time.sleep(0.012)
        return super().__getitem__(index)


def run(out, resume=False, slow=False):
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(8)]
    torch.manual_seed(0)
    model = models.new_model("pan-tiny")
    train_set = (SlowPatches if slow else datasets.SRPatchDataset)(images, patch=16, augment=True, seed=1)
    val_sets = {"a": datasets.SRPatchDataset(images[:3], patch=None)}
    recipe = train.Recipe.v2(epochs=EPOCHS, batch_size=2, lr=2e-3, patch=16, warmup=1 / EPOCHS, val_every=3,
                             keep="best", ema_half_life=0.1, seed=1)
    return train.fit(model, train_set, val_sets, losses.make_loss("l1"), recipe, out, resume=resume,
                     progress=False)


if __name__ == "__main__":
    print("START", flush=True)
    run(sys.argv[1], resume=sys.argv[2] == "1", slow=True)
    print("DONE", flush=True)
'''


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    """The trainer script on disk and imported, plus an uninterrupted reference run made in this process."""
    import importlib.util

    folder = tmp_path_factory.mktemp("trainer")
    script = folder / "tiny_trainer.py"
    script.write_text(TRAINER)
    spec = importlib.util.spec_from_file_location("tiny_trainer", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    n = torch.get_num_threads()
    try:
        module.run(folder / "reference")
    finally:
        torch.set_num_threads(n)
    return script, module, folder / "reference"


def _start(script: Path, out: Path) -> subprocess.Popen:
    """Start the trainer script on ``out``; return once it has imported everything and begins training."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, str(script), str(out), "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()
    assert line.strip() == "START", f"the trainer did not start: {line!r} {proc.stderr.read()[-2000:]}"
    return proc


def _check_not_torn(out: Path) -> int:
    """state.pt loads and history.json parses (when present); return the epoch state.pt holds (0 if none)."""
    epoch = 0
    if (out / checkpoint.STATE_FILE).exists():
        epoch = checkpoint.load_state(out / checkpoint.STATE_FILE)["epoch"]
    if (out / checkpoint.HISTORY_FILE).exists():
        history = io.read_json(out / checkpoint.HISTORY_FILE)
        # history.json is written just before state.pt: it holds the same epoch or the next one
        assert history[-1]["epoch"] in (epoch, epoch + 1)
    return epoch


def _assert_same_result(out: Path, reference: Path):
    a, b = checkpoint.load_state(reference / checkpoint.STATE_FILE), checkpoint.load_state(out / checkpoint.STATE_FILE)
    assert b["epoch"] == a["epoch"]
    for key in ("model", "ema"):
        assert a[key].keys() == b[key].keys()
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    strip = lambda h: [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in h]  # noqa: E731
    assert strip(a["history"]) == strip(b["history"])
    assert strip(io.read_json(out / checkpoint.HISTORY_FILE)) == strip(io.read_json(reference / checkpoint.HISTORY_FILE))
    wa = torch.load(reference / "best" / "pytorch_model_4x.pt", weights_only=True)
    wb = torch.load(out / "best" / "pytorch_model_4x.pt", weights_only=True)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    leftovers = [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert leftovers == [], f"temporary files left behind: {leftovers}"


def test_sigkill_at_random_moments_then_resume_matches_an_uninterrupted_run(trainer, tmp_path, one_thread):
    script, module, reference = trainer
    rng = random.Random(20240611)
    epochs_at_kill = []
    for trial in range(3):
        out = tmp_path / f"killed{trial}"
        proc = _start(script, out)
        time.sleep(rng.uniform(0.3, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        epochs_at_kill.append(_check_not_torn(out))
        module.run(out, resume=True)
        _assert_same_result(out, reference)
    assert all(e < module.EPOCHS for e in epochs_at_kill), f"a kill came after training ended: {epochs_at_kill}"


def test_rerunning_a_killed_run_without_resume_loses_nothing(trainer, tmp_path, one_thread):
    """The same command again without `-p resume True` is refused with the epoch reached and changes no file;
    resuming afterwards still gives the uninterrupted result."""
    script, module, reference = trainer
    out = tmp_path / "killed"
    proc = _start(script, out)
    deadline = time.time() + 60
    while not (out / checkpoint.STATE_FILE).exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    epoch = _check_not_torn(out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(train.TrainingRunExists, match=rf"stopped after epoch {epoch}/{module.EPOCHS}\): continue it "
                                                       r"with `-p resume True`.*`-p fresh_start True`"):
        module.run(out, resume=False)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    module.run(out, resume=True)
    _assert_same_result(out, reference)


@pytest.mark.slow
def test_sigterm_saves_state_and_says_how_to_resume(trainer, tmp_path, one_thread):
    script, module, reference = trainer
    out = tmp_path / "terminated"
    proc = _start(script, out)
    time.sleep(0.9)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode not in (0, -signal.SIGTERM), "SIGTERM must be handled, not kill the process"
    assert "DONE" not in stdout
    assert "stopped by SIGTERM" in stderr and "-p resume True" in stderr and str(out / "state.pt") in stderr
    epoch = _check_not_torn(out)
    assert 0 < epoch < module.EPOCHS and f"holds epoch {epoch}/{module.EPOCHS}" in stderr
    module.run(out, resume=True)
    _assert_same_result(out, reference)


def test_sigint_in_process_raises_training_interrupted(tmp_path, one_thread):
    """SIGINT during the training steps abandons the epoch; state.pt keeps the last complete one."""
    from thermsr_utils import losses, models

    images = [np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8) for i in range(4)]
    calls = []

    def loss_sending_sigint(sr, hr):
        calls.append(1)
        if len(calls) == 5:  # during epoch 3 (2 steps per epoch)
            os.kill(os.getpid(), signal.SIGINT)
        return losses.l1_loss(sr, hr)

    torch.manual_seed(0)
    recipe = train.Recipe.v1(epochs=6, batch_size=2, lr=1e-3, patch=16, val_every=1, keep="best", seed=0)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(train.TrainingInterrupted, match=r"holds epoch 2/6.*-p resume True"):
        train.fit(models.new_model("pan-tiny"), datasets.SRPatchDataset(images, patch=16),
                  {"a": datasets.SRPatchDataset(images[:1], patch=None)}, loss_sending_sigint, recipe, tmp_path,
                  progress=False)
    assert signal.getsignal(signal.SIGINT) is before, "fit must restore the previous SIGINT handler"
    assert checkpoint.load_state(tmp_path / "state.pt")["epoch"] == 2
    assert io.read_json(tmp_path / "history.json")[-1]["epoch"] == 2


# =============================================================================================
# 2 (audit). Every writer is atomic
# =============================================================================================
# Calls that write files (by method name; some only on a given module), and where they may appear
# without an enclosing ``with ...atomic_path(...)``.
WRITE_CALLS = {"savefig": None, "imwrite": None, "save_pretrained": None, "write_text": None, "write_bytes": None,
               "to_csv": None, "dump": None, "save": ("torch", "np", "numpy"), "savez": ("np", "numpy"),
               "copy": ("shutil",), "copy2": ("shutil",), "copyfile": ("shutil",), "copytree": ("shutil",),
               "move": ("shutil",)}
ALLOWED = {
    ("models.py", "save_pretrained_into", "save_pretrained"): "written into io.atomic_dir's temp folder, renamed into place",
    ("publish.py", "publish", "copy2"): "copied into a staging folder that is swapped in whole",
    ("run.py", "fill_point", "copytree"): "a sweep point assembled in io.atomic_dir's temp folder, renamed into place",
    ("run.py", "fill_point", "copy2"): "the same temp folder",
    ("run.py", "_link_or_copy", "copy2"): "copytree's copy function inside fill_point's temp folder",
    ("timing.py", "_write", "write_text"): "a per-process temp file renamed into place with os.replace",
}


def _sources():
    yield from sorted(PACKAGE.glob("*.py"))
    yield from sorted((ROOT / "thermsr_tools").glob("*.py"))
    yield from sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))


def _unsafe_writes(path: Path) -> list[str]:
    """Write calls in ``path`` outside ``with atomic_path(...)`` blocks and the allowed places."""
    tree = ast.parse(path.read_text())
    found = []

    def visit(node, func, atomic):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            func = node.name
        if isinstance(node, ast.With):
            atomic = atomic or any(isinstance(i.context_expr, ast.Call) and "atomic_path" in ast.unparse(
                i.context_expr.func) for i in node.items)
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            is_open_for_write = name == "open" and any(
                isinstance(a, ast.Constant) and isinstance(a.value, str) and set(a.value) & set("wax+")
                for a in node.args[1:2] + [k.value for k in node.keywords if k.arg == "mode"])
            owner = ast.unparse(node.func.value) if isinstance(node.func, ast.Attribute) else None
            is_write = name in WRITE_CALLS and (WRITE_CALLS[name] is None or owner in WRITE_CALLS[name])
            if (is_open_for_write or is_write) and not atomic and (path.name, func, name) not in ALLOWED:
                found.append(f"{path.name}:{node.lineno} {func}: {ast.unparse(node)[:80]}")
        for child in ast.iter_child_nodes(node):
            visit(child, func, atomic)

    visit(tree, None, False)
    return found


def test_every_file_writer_is_atomic():
    unsafe = [w for p in _sources() for w in _unsafe_writes(p)]
    assert unsafe == [], "writes that bypass io.atomic_*: " + "; ".join(unsafe)


def test_the_writer_audit_catches_a_plain_write(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f(p, fig, a):\n    open(p, 'w').write('x')\n    fig.savefig(p)\n    torch.save(a, p)\n"
                   "    b = a.copy()\n    with open(p, 'rb') as f:\n        f.read()\n"
                   "    with atomic_path(p) as t:\n        fig.savefig(t)\n        torch.save(a, t)\n")
    assert [w.split()[0] for w in _unsafe_writes(bad)] == ["bad.py:2", "bad.py:3", "bad.py:4"]


# =============================================================================================
# 4. Safe loading
# =============================================================================================
class _RunsCode:
    """Unpickling this would run a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_every_torch_load_is_weights_only():
    calls = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                kw = {k.arg: k.value for k in node.keywords}
                ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                calls.append((path.name, node.lineno, ok))
            if isinstance(node, ast.Call) and ast.unparse(node.func) in ("pickle.load", "pickle.loads"):
                calls.append((path.name, node.lineno, False))
    assert calls, "no torch.load found at all: the check is looking in the wrong place"
    assert [c for c in calls if not c[2]] == []


def test_a_training_state_that_would_run_code_is_refused(tmp_path, one_thread):
    from thermsr_utils import losses, models

    marker = tmp_path / "code_ran"
    out = tmp_path / "run"
    out.mkdir()
    torch.save({"format": 1, "epoch": 1, "payload": _RunsCode(marker)}, out / "state.pt")
    with pytest.raises(ValueError, match=r"refusing to load training state .*state\.pt"):
        checkpoint.load_state(out / "state.pt")
    images = [np.zeros((16, 16, 3), np.uint8)] * 2
    with pytest.raises(ValueError, match=r"state\.pt"):
        train.fit(models.new_model("pan-tiny"), datasets.SRPatchDataset(images, patch=16),
                  {"a": datasets.SRPatchDataset(images, patch=None)}, losses.make_loss("l1"),
                  train.Recipe.v1(epochs=1, batch_size=2, lr=1e-3, patch=16, val_every=5, keep="best"), out, resume=True, progress=False)
    assert not marker.exists()


# =============================================================================================
# 5. Integrity of the crops
# =============================================================================================
def _tiny_run(tmp_path, n=6):
    """A RunPaths with ``n`` 16×16 crops and their manifest."""
    paths = config.RunPaths("smoke", tmp_path / "smoke")
    rng = np.random.default_rng(0)
    records = []
    for i in range(n):
        img = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        rel = f"{data.SPLITS[i % 3]}/sftl54/sf_{i}.png"
        io.write_png(paths.crops / rel, img)
        records.append({"id": f"sf_{i}", "dataset": "sftl54", "split": data.SPLITS[i % 3], "path": rel,
                        "sha256": io.pixel_sha256(img)})
    io.atomic_write_json(paths.manifest, {"schema_version": manifests.SCHEMA_VERSION, "records": records})
    return paths, records


def test_load_verified_manifest_names_changed_and_missing_crops(tmp_path):
    paths, records = _tiny_run(tmp_path)
    assert manifests.load_verified_manifest(paths)["records"] == [{**r, "palette": "gray"} for r in records]  # old: gray
    changed = paths.crops / records[1]["path"]
    img = io.read_image(changed)
    img[0, 0, 0] ^= 1                                   # one bit of one pixel
    io.write_png(changed, img)
    (paths.crops / records[4]["path"]).unlink()
    with pytest.raises(manifests.CropIntegrityError) as err:
        manifests.load_verified_manifest(paths)
    msg = str(err.value)
    assert records[1]["path"] in msg and records[4]["path"] in msg and "1 missing" in msg
    assert err.value.changed == [records[1]["path"]] and err.value.missing == [records[4]["path"]]
    assert not any(r["path"] in msg for i, r in enumerate(records) if i not in (1, 4))


def test_missing_manifest_says_which_notebook_makes_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="01_build_dataset"):
        manifests.load_verified_manifest(config.RunPaths("smoke", tmp_path / "nothing"))


def test_training_data_is_verified_before_use(tmp_path):
    paths, records = _tiny_run(tmp_path)
    train_set, val_sets = datasets.datasets_from_manifest(paths.crops, records, patch=16, augment=False)
    assert len(train_set) == 2 and sum(len(v) for v in val_sets.values()) == 2
    changed = paths.crops / records[0]["path"]      # a training crop
    img = io.read_image(changed)
    io.write_png(changed, 255 - img)
    with pytest.raises(manifests.CropIntegrityError, match=records[0]["path"]):
        datasets.datasets_from_manifest(paths.crops, records, patch=16, augment=False)


def test_notebooks_load_the_manifest_through_the_verified_path():
    for nb in notebook.discover():
        if nb.number == "01":
            continue
        text = nb.source.read_text()
        assert "manifests.open_run(profile, seed, device" in text, nb.name
        assert "load_manifest(" not in text, nb.name


def test_open_run_refuses_changed_crops(tmp_path, monkeypatch):
    monkeypatch.setenv("THERMSR_ARTIFACTS", str(tmp_path))
    paths, records = _tiny_run(tmp_path)
    got_paths, device, got = manifests.open_run("smoke", 0, "cpu")
    assert (got_paths.root, device, got) == (paths.root, "cpu", [{**r, "palette": "gray"} for r in records])
    io.write_png(paths.crops / records[1]["path"], np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(manifests.CropIntegrityError, match=records[1]["path"]):
        manifests.open_run("smoke", 0, "cpu")


# =============================================================================================
# 6. One writer per artifacts folder
# =============================================================================================
HOLDER = '''
import sys, time
from thermsr_utils import config, lock
with lock.run_lock(config.run_paths("demo"), "holder of the lock"):
    print("HELD", flush=True)
    time.sleep(60)
'''


@pytest.fixture
def artifacts(tmp_path, monkeypatch):
    monkeypatch.setenv("THERMSR_ARTIFACTS", str(tmp_path / "artifacts"))
    return config.run_paths("demo")


def _write_lock(paths, pid, command):
    paths.root.mkdir(parents=True, exist_ok=True)
    io.atomic_write_json(paths.lock, {"pid": pid, "host": socket.gethostname(), "started": "2024-01-01T00:00:00",
                                      "command": command})


def test_a_second_process_is_refused_while_the_first_holds_the_folder(artifacts, tmp_path, capsys):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "HELD"
        with pytest.raises(lock.RunLocked, match=rf"pid {holder.pid} .*holder of the lock"):
            with lock.run_lock(artifacts, "second"):
                pass
        assert run.main(["--profile", "demo", "--only", "01"]) == 1
        assert f"pid {holder.pid}" in capsys.readouterr().err
        assert not artifacts.executed.exists(), "the refused run started work"
    finally:
        holder.kill()
        holder.wait()
    # killed without cleaning up: its lock file stays, its flock is gone; the next run takes over
    assert lock.read_lock(artifacts.lock)["pid"] == holder.pid
    with lock.run_lock(artifacts, "third") as me:
        assert lock.read_lock(artifacts.lock) == me
    assert f"stale lock {artifacts.lock} of pid {holder.pid}" in capsys.readouterr().err
    assert not artifacts.lock.exists()


def test_a_lock_of_a_live_process_refuses_and_a_dead_one_is_taken_over(artifacts, capsys):
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        _write_lock(artifacts, sleeper.pid, "sleep 60")
        with pytest.raises(lock.RunLocked, match=rf"pid {sleeper.pid} on {socket.gethostname()}.*sleep 60"):
            with lock.run_lock(artifacts):
                pass
        assert lock.read_lock(artifacts.lock)["pid"] == sleeper.pid, "a refused run must leave the lock alone"
    finally:
        sleeper.kill()
        sleeper.wait()                                  # reaped: the pid no longer exists
    with lock.run_lock(artifacts, "after") as me:
        assert me["pid"] == os.getpid() and me["command"] == "after" and me["host"] == socket.gethostname()
    err = capsys.readouterr().err
    assert "taking over the stale lock" in err and f"pid {sleeper.pid}" in err
    assert not artifacts.lock.exists()


def test_an_unreadable_lock_is_taken_over_and_a_foreign_host_is_not(artifacts, capsys):
    artifacts.root.mkdir(parents=True)
    artifacts.lock.write_text("{ torn")
    with lock.run_lock(artifacts):
        pass
    assert "unreadable lock file" in capsys.readouterr().err
    io.atomic_write_json(artifacts.lock, {"pid": 1, "host": "another-host", "started": "x", "command": "y"})
    with pytest.raises(lock.RunLocked, match="another-host"):
        with lock.run_lock(artifacts):
            pass


def test_the_lock_is_released_when_a_notebook_fails(artifacts, tmp_path):
    folder = tmp_path / "nbs"
    folder.mkdir()
    (folder / "01_fail.py").write_text(textwrap.dedent('''\
        # ---
        # jupyter:
        #   kernelspec:
        #     display_name: Python 3
        #     language: python
        #     name: python3
        # ---

        # %% tags=["parameters"]
        profile = "demo"

        # %%
        raise RuntimeError("fails on purpose")
        '''))
    with pytest.raises(notebook.NotebookFailed):
        run.run("demo", notebooks_dir=folder, progress=False)
    assert not artifacts.lock.exists()


SLEEPER_NOTEBOOK = '''\
# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% tags=["parameters"]
profile = "demo"

# %%
import os, time
from thermsr_utils.io import atomic_write_text
atomic_write_text(os.environ["THERMSR_ARTIFACTS"] + "/kernel.pid", str(os.getpid()))
time.sleep(120)
'''

RUNNER = '''
import sys
from pathlib import Path
from thermsr_utils import config, run
config.NOTEBOOKS_DIR = Path(sys.argv[1])
sys.exit(run.main(["--profile", "demo", "--no-progress"]))
'''


@pytest.mark.slow
def test_sigterm_to_the_runner_stops_the_kernel_and_releases_the_lock(artifacts, tmp_path):
    folder = tmp_path / "nbs"
    folder.mkdir()
    (folder / "01_sleep.py").write_text(SLEEPER_NOTEBOOK)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, str(folder)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    pid_file = tmp_path / "artifacts" / "kernel.pid"
    deadline = time.time() + 120
    while not pid_file.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert pid_file.exists(), f"the notebook never started: {proc.communicate()[1][-2000:]}"
    assert artifacts.lock.exists()
    kernel = int(pid_file.read_text())
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "-p resume True" in err
    assert not artifacts.lock.exists()
    for _ in range(50):  # the kernel is shut down with its runner, not left behind
        if not io.process_alive(kernel):
            break
        time.sleep(0.1)
    assert not io.process_alive(kernel)


# =============================================================================================
# 8. Parameters
# =============================================================================================
NOTEBOOKS = notebook.discover()


def test_every_notebook_parameter_has_a_rule():
    declared = {k for nb in NOTEBOOKS for k in nb.parameters}
    missing = sorted(declared - set(params.PARAMETER_RULES))
    assert missing == [], f"parameters without a rule in params.PARAMETER_RULES: {missing}"


def test_notebook_literals_and_every_profile_pass_their_rules():
    for nb in NOTEBOOKS:
        params.check_parameters(nb.parameters, nb.name, require_rules=True)
    for profile in config.PROFILE_NAMES:
        resolved = notebook.resolve_parameters(NOTEBOOKS, profile, {})
        assert set(resolved) == {nb.name for nb in NOTEBOOKS}


def test_backbone_names_match_the_model_registry():
    from thermsr_utils import models

    from thermsr_utils import zoo

    assert set(params.BACKBONE_NAMES) == set(models.ARCHITECTURES)
    assert set(params.ZOO_NAMES) == set(zoo.ZOO)


BAD_VALUES = [
    ("v1_epochs", 0, "an integer ≥ 1"),
    ("v2_batch_size", -4, "an integer ≥ 1"),
    ("batch_size", 0, "an integer ≥ 1"),
    ("lpips_weight", -0.05, "a number ≥ 0"),
    ("fft_weight", 1e999, "a number ≥ 0"),
    ("v1_lr", 0.0, "in (0, 1]"),
    ("v2_ema_half_life", 1.0, "in (0, 1)"),
    ("v2_ema_half_life", 0, "in (0, 1)"),
    ("v2_ema_half_life", None, "expects float"),                     # 05 always validates its EMA copy
    ("v2_warmup", 1.0, "a number in [0, 1)"),                        # a fraction of the run's steps
    ("v2_warmup", -0.1, "a number in [0, 1)"),
    ("keep", "first", "one of 'best', 'last'"),
    ("frontier_v1_lrs", [1e-4, 0.0], "each element a number in (0, 1]"),
    ("frontier_v1_lrs", [], "a non-empty list"),
    ("interpolation_points", -1, "an integer ≥ 0"),
    ("v2_ema_decay", 0.999, "not declared by any selected notebook"),     # renamed: v2_ema_half_life
    ("frontier_v2_epochs", 2, "not declared by any selected notebook"),   # removed: every point is the main schedule
    ("seed", -1, "[0, 4294967295]"),
    ("crop_size", 190, "a multiple of 4"),
    ("v1_patch", 130, "a multiple of 4"),
    ("data_source", "synthetc", "'synthetic', 'real'"),
    ("nose_model", "dwpose", "'auto', 'rtmlib', 'retinaface'"),
    ("weights", "hubb", "'auto', 'hub', 'standin', 'random'"),
    ("v2_perceptual", "perceptual", "'lpips', 'fft'"),
    ("palette", "rainbow", "'gray', 'iron'"),
    ("device", "gpu", "'cuda:N'"),
    ("device", "cuda:x", "'cuda:N'"),
    ("backbone", "drln2", "a short name"),
    ("backbone", "not/a/hub/id", "a short name"),
    ("zero_shot_models", ["a2n", "bogus"], "a list of backbones"),
    ("sftl54_root", "no-such-folder-here", "an existing folder"),
    ("crop_size", 100000, "an integer in [16, 1024]"),                # OpenCV would be asked for 30 GB
    ("v1_patch", 400, "v1_patch must not exceed crop_size"),         # 03's patch against 01's crops
]


@pytest.mark.parametrize("key,value,allowed", BAD_VALUES, ids=[f"{k}={v!r}" for k, v, _ in BAD_VALUES])
def test_bad_values_are_refused_naming_the_parameter(key, value, allowed):
    with pytest.raises(notebook.ParameterError) as err:
        notebook.resolve_parameters(NOTEBOOKS, "demo", {key: value})
    assert repr(key) in str(err.value) or key in str(err.value)
    assert allowed in str(err.value)


def test_a_bad_value_stops_the_run_before_any_notebook(artifacts):
    with pytest.raises(notebook.ParameterError, match="'v2_ema_half_life' = 1.5 is not allowed"):
        run.run("demo", overrides={"v2_ema_half_life": 1.5}, progress=False)
    assert not artifacts.root.exists(), "nothing may be created before the parameters are checked"


def test_a_bad_profile_default_is_refused(monkeypatch):
    monkeypatch.setitem(config.PROFILES["smoke"], "v1_epochs", 0)
    with pytest.raises(notebook.ParameterError, match=r"03_v1_finetune: parameter 'v1_epochs' = 0"):
        notebook.resolve_parameters(NOTEBOOKS, "smoke", {})


def test_good_values_are_accepted_and_folders_made_absolute(tmp_path, monkeypatch):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    (tmp_path / "sf").mkdir()
    monkeypatch.chdir(tmp_path)
    resolved = notebook.resolve_parameters(NOTEBOOKS, "demo", {
        "backbone": "model", "zero_shot_models": ["eugenesiow/edsr-base", "msrn"], "sftl54_root": "sf",
        "device": "cuda:1", "v2_ema_half_life": 0.0666, "lpips_weight": 0,
        "max_steps_per_epoch": 0, "v2_warmup": 0.0, "keep": "best", "frontier_v1_lrs": [1e-5, 1e-3],
        "interpolation_points": 0, "v2_epochs": 1})
    assert resolved["03_v1_finetune"]["backbone"] == str(model_dir)
    assert resolved["01_build_dataset"]["sftl54_root"] == str(tmp_path / "sf")
    assert resolved["02_zero_shot_baselines"]["zero_shot_models"] == ["eugenesiow/edsr-base", "msrn"]
    assert resolved["05_v2_finetune"]["device"] == "cuda:1"
    assert (resolved["05_v2_finetune"]["v2_warmup"], resolved["05_v2_finetune"]["keep"]) == (0.0, "best")
    assert resolved["03_v1_finetune"]["keep"] == "best"                 # one keep for 03 and 05
    assert resolved["07_perception_distortion_frontier"]["frontier_v1_lrs"] == [1e-5, 1e-3]


def test_rule_descriptions():
    rules = params.PARAMETER_RULES
    assert rules["v2_ema_half_life"].allowed() == "a number in (0, 1)"
    assert rules["v2_warmup"].allowed() == "a number in [0, 1)"
    assert rules["keep"].allowed() == "one of 'best', 'last'"
    assert rules["crop_size"].allowed() == "an integer in [16, 1024], a multiple of 4"
    assert rules["weights"].check("weights", "hub") == "hub"
    with pytest.raises(config.ParameterValueError, match="one of 'auto', 'hub', 'standin', 'random'"):
        rules["weights"].check("weights", "cloud")
    with pytest.raises(config.ParameterValueError, match="'resume'"):
        rules["resume"].check("resume", 1)


# =============================================================================================
# Seeds
# =============================================================================================
def test_seed_everything_repeats_every_generator_and_asks_for_determinism():
    import torch.backends.cudnn as cudnn

    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             cudnn.deterministic, cudnn.benchmark)

    def draws():
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    try:
        config.seed_everything(11)
        first = draws()
        config.seed_everything(11)
        assert draws() == first
        config.seed_everything(12)
        assert draws() != first
        det = config.determinism()
        assert det["deterministic_algorithms"] and det["cudnn_deterministic"] and not det["cudnn_benchmark"]
        json.dumps(det)  # plain data for the checkpoint meta
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        cudnn.deterministic, cudnn.benchmark = saved[2], saved[3]
