"""Sweeps in the runner: one folder per point, reuse of the main run, skipping finished points, resuming
interrupted ones, and every value checked before anything runs (on small generated notebooks)."""
import json
import textwrap

import pytest

from thermsr_utils import config, notebook, run

pytestmark = pytest.mark.slow  # each test builds and runs small notebooks (about 10 s)

HEADER = """# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---
"""

BUILD = '''
# %% tags=["parameters"]
profile = "demo"
seed = 0

# %%
from thermsr_utils import config, io
paths = config.setup(profile, seed)
paths.crops.mkdir(parents=True, exist_ok=True)
io.atomic_write_json(paths.manifest, {"records": []})
io.atomic_write_json(paths.results / "upstream.json", {"from": "main"})
'''

TRAIN = '''
# %% tags=["parameters"]
profile = "demo"
seed = 0
sweep_point = ""
lpips_weight = 0.05
v2_epochs = 6
resume = False

# %%
import os
from thermsr_utils import config, io
paths = config.setup(profile, seed, sweep_point=sweep_point)
runs = paths.root / "runs.txt"
runs.write_text(runs.read_text() + "x" if runs.exists() else "x")
fail = os.environ.get("SWEEP_TEST_FAIL_AT")
if fail and fail == sweep_point:
    raise RuntimeError("interrupted on purpose")
io.atomic_write_json(paths.results / "point.json", {"lpips_weight": lpips_weight, "seed": seed,
                     "v2_epochs": v2_epochs, "resume": resume, "point": paths.point,
                     "upstream": io.read_json(paths.results / "upstream.json")["from"],
                     "crops": str(paths.crops)})
'''


@pytest.fixture
def notebooks(tmp_path, monkeypatch):
    """Two generated notebooks: 01 builds a main run, 05 "trains" and records what it was given."""
    monkeypatch.setenv("THERMSR_ARTIFACTS", str(tmp_path / "artifacts"))
    folder = tmp_path / "notebooks"
    folder.mkdir()
    (folder / "01_build.py").write_text(HEADER + textwrap.dedent(BUILD))
    (folder / "05_train.py").write_text(HEADER + textwrap.dedent(TRAIN))
    return folder


@pytest.fixture
def sweep_dir(notebooks):
    """The same notebooks after the main run's 01."""
    run.run("demo", only=["01"], notebooks_dir=notebooks, progress=False)
    return notebooks


def _point(name):
    return config.run_paths("demo", name)


def test_a_two_value_sweep_writes_two_complete_points_and_skips_them_on_rerun(sweep_dir, capsys):
    out = run.run("demo", only=["05"], sweep={"lpips_weight": [0, 1]}, overrides={"v2_epochs": 2},
                  notebooks_dir=sweep_dir, progress=False)
    names = ["lpips_weight=0.0,v2_epochs=2", "lpips_weight=1.0,v2_epochs=2"]
    assert [p.parent.parent.name for p in out] == names           # executed copies are kept per point
    main = config.run_paths("demo")
    for name, weight in zip(names, (0.0, 1.0)):
        paths = _point(name)
        got = json.loads((paths.results / "point.json").read_text())
        assert got == {"lpips_weight": weight, "seed": 0, "v2_epochs": 2, "resume": True, "point": name,
                       "upstream": "main", "crops": str(main.crops)}
        assert (paths.executed / "05_train.ipynb").is_file()
        record = json.loads((paths.root / run.POINT_RECORD).read_text())
        assert record["values"] == {"lpips_weight": weight, "v2_epochs": 2}
        assert set(record["finished"]) == {"05_train"}
    assert not (main.results / "point.json").exists()              # the main run's folder is not written
    assert "point 2/2" in capsys.readouterr().out

    again = run.run("demo", only=["05"], sweep={"lpips_weight": [0, 1]}, overrides={"v2_epochs": 2},
                    notebooks_dir=sweep_dir, progress=False)
    assert again == []
    assert capsys.readouterr().out.count("finished earlier: skipped") == 2
    assert all((_point(n).root / "runs.txt").read_text() == "x" for n in names)


def test_a_point_with_the_main_runs_values_is_the_main_run(sweep_dir, capsys):
    out = run.run("demo", only=["05"], sweep={"seed": [0, 3]}, notebooks_dir=sweep_dir, progress=False)
    assert [p.parent.parent.name for p in out] == ["seed=3"]
    assert "reusing the main run" in capsys.readouterr().out
    assert sorted(p.name for p in config.run_paths("demo").sweeps.iterdir()) == ["seed=3"]


def test_an_interrupted_point_resumes_and_the_finished_one_is_not_rerun(sweep_dir, monkeypatch):
    monkeypatch.setenv("SWEEP_TEST_FAIL_AT", "lpips_weight=1.0")
    sweep = {"lpips_weight": [0.5, 1.0]}
    with pytest.raises(notebook.NotebookFailed, match="interrupted on purpose"):
        run.run("demo", only=["05"], sweep=sweep, notebooks_dir=sweep_dir, progress=False)
    done, broken = _point("lpips_weight=0.5"), _point("lpips_weight=1.0")
    assert (done.results / "point.json").is_file() and not (broken.results / "point.json").exists()
    assert "05_train" not in json.loads((broken.root / run.POINT_RECORD).read_text()
                                        if (broken.root / run.POINT_RECORD).exists() else '{"finished": {}}')["finished"]
    monkeypatch.setenv("SWEEP_TEST_FAIL_AT", "")
    run.run("demo", only=["05"], sweep=sweep, notebooks_dir=sweep_dir, progress=False)
    assert (done.root / "runs.txt").read_text() == "x"             # finished: not run again
    assert (broken.root / "runs.txt").read_text() == "xx"          # interrupted: run again, with resume=True
    assert json.loads((broken.results / "point.json").read_text())["resume"] is True


def test_a_point_starts_from_links_to_the_main_results_and_never_writes_through_them(sweep_dir):
    main = config.run_paths("demo")
    (main.checkpoints / "v2").mkdir(parents=True)
    (main.checkpoints / "v2" / "history.json").write_text("[]")
    (main.checkpoints / "v2" / "state.pt").write_text("main state")
    paths = _point("seed=4")
    run.prepare_point(paths)
    assert (paths.checkpoints / "v2" / "history.json").read_text() == "[]"
    assert not (paths.checkpoints / "v2" / "state.pt").exists()    # nothing resumes from the main run
    from thermsr_utils import io

    io.atomic_write_json(paths.results / "upstream.json", {"from": "point"})
    assert json.loads((main.results / "upstream.json").read_text()) == {"from": "main"}


@pytest.mark.parametrize("sweep, overrides, message", [
    ({"lpips_wieght": [0.1, 0.2]}, {}, "'lpips_wieght' is not declared"),
    ({"lpips_weight": [0.1, "abc"]}, {}, "expects float"),
    ({"lpips_weight": [0.1, -1.0]}, {}, "'lpips_weight' = -1.0 is not allowed"),
    ({"v2_epochs": [2, 0]}, {}, "'v2_epochs' = 0 is not allowed"),
    ({"lpips_weight": [0.1]}, {"lpips_weight": 0.2}, "both with -p and with --sweep"),
    ({"resume": [True]}, {}, "'resume' cannot be swept"),
    ({"lpips_weight": []}, {}, "needs at least one value"),
])
def test_bad_sweeps_are_refused_before_anything_runs(notebooks, sweep, overrides, message):
    with pytest.raises(notebook.ParameterError, match=message):
        run.run("demo", only=["05"], sweep=sweep, overrides=overrides, notebooks_dir=notebooks, progress=False)
    assert not config.run_paths("demo").root.exists()


def test_a_sweep_cannot_rebuild_the_crops_and_needs_a_main_run(notebooks):
    with pytest.raises(notebook.ParameterError, match="cannot run 01_build_dataset"):
        run.run("demo", sweep={"seed": [1]}, notebooks_dir=notebooks, progress=False)
    with pytest.raises(FileNotFoundError, match="run `python -m thermsr_utils.run --profile demo` first"):
        run.run("demo", only=["05"], sweep={"seed": [1]}, notebooks_dir=notebooks, progress=False)
    assert not config.run_paths("demo").sweeps.exists()


def test_the_command_line_reads_sweeps_and_refuses_a_repeated_name(sweep_dir, capsys, monkeypatch):
    monkeypatch.setattr(config, "NOTEBOOKS_DIR", sweep_dir)
    assert run.main(["--profile", "demo", "--only", "05", "--sweep", "seed", "5", "--no-progress"]) == 0
    assert (_point("seed=5").results / "point.json").is_file()
    assert run.main(["--profile", "demo", "--only", "05", "--sweep", "seed", "6", "--sweep", "seed", "7"]) == 2
    assert "given twice" in capsys.readouterr().err
    assert run.main(["--profile", "demo", "--only", "05", "--sweep", "seed", "x1"]) == 2
    assert "expects int" in capsys.readouterr().err


@pytest.mark.parametrize("profile", config.PROFILE_NAMES)
def test_notebook_07_reads_the_points_the_runner_trains(profile, tmp_path, monkeypatch):
    from thermsr_utils import frontier

    monkeypatch.setenv("THERMSR_ARTIFACTS", str(tmp_path))
    notebooks = notebook.discover()
    reader = next(nb for nb in notebooks if "frontier_lambdas" in nb.parameters)
    resolved = notebook.resolve_parameters([reader], profile, {})[reader.name]
    points, plan = run.frontier_plan(notebooks, reader, resolved, profile)
    run.write_plan(config.run_paths(profile), plan)
    trained = {(p.name, nb.name) for p in points for nb in p.notebooks}
    trainer = {"v1": run.FRONTIER_TRAINERS["v1"], "v2": run.FRONTIER_TRAINERS["v2"]}
    read = set()
    for e in frontier.read_plan(config.run_paths(profile)):
        if e.group in ("ema", "raw"):
            assert e.paths.point == ""
            continue
        key = (e.paths.point, trainer[e.checkpoint.parent.name])
        assert e.paths.point == "" or key in trained, f"{e.label}: 07 reads {key}, which no sweep point trains"
        read.add(key)
    assert len(points) == len({(p.name, tuple(nb.name for nb in p.notebooks)) for p in points})   # no point twice
    assert trained == {k for k in read if k[0]}                                                     # nothing extra
