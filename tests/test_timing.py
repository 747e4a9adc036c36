"""Phase times of a notebook (thermsr_utils.timing) and how the runner adds them to a run's provenance and README
(notebook.record_time, notebook.timings_file, publish.timings_markdown, publish.readme_block)."""
import json
import os
import time

import pytest

from thermsr_utils import config, evaluate, notebook, publish, run, timing


@pytest.fixture
def fresh(monkeypatch):
    """Empty phase totals for this test, and no timings file unless the test names one."""
    monkeypatch.setattr(timing, "_totals", {})
    monkeypatch.delenv(timing.ENV, raising=False)


# ------------------------------------------------------------------------------ timing
def test_phase_writes_the_totals_to_the_file_named_by_the_environment(fresh, tmp_path, monkeypatch):
    target = tmp_path / "timings" / "05_v2_finetune.json"           # its folder does not exist yet
    monkeypatch.setenv(timing.ENV, str(target))
    with timing.phase("training"):
        time.sleep(0.02)
    first = json.loads(target.read_text())
    assert set(first) == {"training"} and first["training"] >= 0.02
    with timing.phase("validation"):
        pass
    with timing.phase("training"):                                 # a second block adds to the same phase
        time.sleep(0.02)
    again = json.loads(target.read_text())
    assert list(again) == ["training", "validation"] and again["training"] >= first["training"] + 0.02
    assert timing.read(target) == again == {k: round(v, 3) for k, v in timing.totals().items()}
    assert [p.name for p in target.parent.iterdir()] == [target.name]   # no temp file left behind


def test_a_phase_that_raises_is_still_counted_and_written(fresh, tmp_path, monkeypatch):
    target = tmp_path / "t.json"
    monkeypatch.setenv(timing.ENV, str(target))
    with pytest.raises(RuntimeError, match="boom"):
        with timing.phase("score lpips"):
            raise RuntimeError("boom")
    assert set(timing.read(target)) == {"score lpips"}


def test_outside_the_runner_nothing_is_written(fresh, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with timing.phase("figures"):
        pass
    assert "figures" in timing.totals() and list(tmp_path.iterdir()) == []
    totals = timing.totals()
    totals["figures"] = 1e9                                        # a copy: the process totals are unchanged
    assert timing.totals()["figures"] < 1e9


def test_an_unwritable_timings_file_never_stops_the_notebook(fresh, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv(timing.ENV, str(blocker / "sub" / "t.json"))   # its parent is a file
    with timing.phase("training"):
        pass
    assert "training" in timing.totals()


def test_read_of_a_missing_or_corrupt_file_is_empty(tmp_path):
    assert timing.read(tmp_path / "missing.json") == {}
    bad = tmp_path / "bad.json"
    bad.write_text('{"training": 1.5')                            # cut short
    assert timing.read(bad) == {}
    bad.write_text("[1, 2]")                                        # not an object
    assert timing.read(bad) == {}
    bad.write_text(json.dumps({"training": 2, "validation": 0.5, "note": "x", "flag": None}))
    assert timing.read(bad) == {"training": 2.0, "validation": 0.5}  # only the numbers
    assert timing.read(tmp_path) == {}                             # a folder


# ------------------------------------------------------------------------------ the runner's records
def test_timings_file_is_per_notebook_in_the_runs_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("THERMSR_ARTIFACTS", str(tmp_path))
    nb = next(nb for nb in notebook.discover() if nb.number == "05")
    main, point = config.run_paths("demo"), config.run_paths("demo", "seed=1")
    assert notebook.timings_file(main, nb) == tmp_path / "demo" / "timings" / f"{nb.name}.json"
    assert notebook.timings_file(point, nb) == tmp_path / "demo" / "sweeps" / "seed=1" / "timings" / f"{nb.name}.json"


def test_record_time_accumulates_into_the_main_runs_provenance(tmp_path, monkeypatch):
    monkeypatch.setenv("THERMSR_ARTIFACTS", str(tmp_path))
    main = config.run_paths("demo")
    config.record_provenance(main, weights="hub")                  # what was there before stays
    notebook.record_time(main, "01_build_dataset", 12.34, {"figures": 1.26})
    notebook.record_time(main, "05_v2_finetune", 100.0, {"training": 80.04, "validation": 15.0})
    notebook.record_time(main, "frontier seed=1 05", 50.0)              # a sweep point's notebook, no phases read
    prov = config.provenance(main)
    assert prov["weights"] == "hub"
    t = prov["timings"]
    assert t["seconds"] == {"01_build_dataset": 12.3, "05_v2_finetune": 100.0, "frontier seed=1 05": 50.0}
    assert t["phases"] == {"01_build_dataset": {"figures": 1.3}, "05_v2_finetune": {"training": 80.0,
                                                                                     "validation": 15.0}}
    assert t["total_seconds"] == pytest.approx(162.3)
    notebook.record_time(main, "05_v2_finetune", 90.0, {"training": 70.0})   # a rerun replaces its own entry
    t = config.provenance(main)["timings"]
    assert t["seconds"]["05_v2_finetune"] == 90.0 and t["phases"]["05_v2_finetune"] == {"training": 70.0}
    assert t["total_seconds"] == pytest.approx(152.3)


def test_timings_markdown_lists_every_step_its_longest_phases_and_the_total():
    timings = {"seconds": {"01_build_dataset": 30.0, "05_v2_finetune": 600.0, "report": 5.0},
               "phases": {"05_v2_finetune": {"training": 500.0, "validation": 60.0, "figures": 2.0, "score lpips": 9.0}}}
    md = publish.timings_markdown(timings, "2 CPU cores").splitlines()
    assert md[0] == "### Where the time went (2 CPU cores)"
    assert md[2] == "| step | seconds | longest phases |"
    assert md[4:] == ["| 01_build_dataset | 30 | – |",
                      "| 05_v2_finetune | 600 | training 500 s, validation 60 s, score lpips 9 s |",   # top three
                      "| report | 5 | – |",
                      "| **total** | **635** (10.6 min) |  |"]
    assert publish.timings_markdown({"seconds": {"a": 1.0}}).startswith("### Where the time went (this machine)")


def test_readme_block_says_the_run_time_only_when_timed(tmp_path):
    (tmp_path / publish.HEADLINE_FILE).write_text("the findings")
    assert "The run took" not in publish.readme_block(tmp_path)
    prov = {"device": "cpu", "timings": {"seconds": {"01_build_dataset": 30.0, "02_x": 60.0}, "phases": {}}}
    (tmp_path / "PROVENANCE.json").write_text(json.dumps(prov))
    block = publish.readme_block(tmp_path)
    assert block.index("the findings") < block.index("The run took 1.5 min on cpu")
    prov["timings"]["seconds"] |= {"08_downstream_aware": 420.0, "report": 6.0}      # `make beyond` ran 08 too
    (tmp_path / "PROVENANCE.json").write_text(json.dumps(prov))
    assert ("The run took 1.6 min on cpu; notebook 08, beyond the write-up (`make beyond`), took 7.0 min more"
            in publish.readme_block(tmp_path))
    (tmp_path / "PROVENANCE.json").write_text(json.dumps({"timings": {"seconds": {}}}))
    assert "The run took" not in publish.readme_block(tmp_path)


def test_captions_leave_the_timings_out():
    text = evaluate.caption("demo", {"lpips": "lpips-alex (pkg==1, sha256 ab…)", "timings": {"seconds": {"01": 3.0}}})
    assert "timings" not in text and "lpips-alex" in text and "sha256" not in text and text.startswith("profile demo · ")


def test_the_runner_records_each_notebooks_time_and_phases(tmp_path, monkeypatch):
    monkeypatch.setenv("THERMSR_ARTIFACTS", str(tmp_path / "artifacts"))
    folder = tmp_path / "notebooks"
    folder.mkdir()
    (folder / "01_timed.py").write_text('''# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% tags=["parameters"]
profile = "demo"

# %%
import time
from thermsr_utils import timing

with timing.phase("work"):
    time.sleep(0.05)
''')
    run.run("demo", notebooks_dir=folder, progress=False)
    main = config.run_paths("demo")
    t = config.provenance(main)["timings"]
    assert list(t["seconds"]) == ["01_timed"] and t["seconds"]["01_timed"] > 0
    assert t["phases"]["01_timed"]["work"] >= 0.0             # rounded to 0.1 s
    assert timing.read(main.root / "timings" / "01_timed.json")["work"] >= 0.05   # what the kernel wrote
    assert timing.ENV not in os.environ                        # the runner's own environment is restored
    notebook.record_time(main, "frontier seed=1 05", 50.0)          # from an earlier run
    run.run("demo", notebooks_dir=folder, progress=False, force=True)   # a run from 01 starts the record afresh
    assert list(config.provenance(main)["timings"]["seconds"]) == ["01_timed"]
