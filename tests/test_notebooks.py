"""Every notebook, executed headlessly in the smoke profile, and the files its tables and figures rest on."""
import math

import pytest

from thermsr_utils import config, data, evaluate, io, run

pytestmark = pytest.mark.notebooks


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke")
    mp = pytest.MonkeyPatch()
    mp.setenv("THERMSR_ARTIFACTS", str(root / "artifacts"))
    mp.setenv("THERMSR_DATA", str(root / "data"))
    try:
        outputs = run.run("smoke", progress=False)
        yield config.run_paths("smoke"), outputs
    finally:
        mp.undo()


def test_every_notebook_executed(smoke_run):
    paths, outputs = smoke_run
    assert [p.stem for p in outputs] == [nb.name for nb in run.discover()]
    for p in outputs:
        assert p.exists() and p.parent == paths.executed


def test_manifest_matches_the_committed_one(smoke_run):
    paths, _ = smoke_run
    built = data.load_manifest(paths.manifest)["records"]
    committed = io.read_json(config.MANIFEST_DIR / "smoke.json")["records"]
    assert data.compare_manifests(built, committed) == []
    assert {r["split"] for r in built} == {"train", "val", "test"}
    assert {r["dataset"] for r in built} == {"sftl54", "thermeval"}


def test_raw_figures_written(smoke_run):
    paths, _ = smoke_run
    for name in ("raw_samples.png", "crops_test.png"):
        assert (paths.figures / name).stat().st_size > 10_000
