"""The notebook runner: parameter validation before any work, failure reporting, executed copies."""
import textwrap

import pytest

from thermsr_utils import run

HEADER = """# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---
"""


def _write(folder, name, body):
    path = folder / f"{name}.py"
    path.write_text(HEADER + textwrap.dedent(body))
    return path


@pytest.fixture
def nbdir(tmp_path, monkeypatch):
    monkeypatch.setenv("THERMSR_ARTIFACTS", str(tmp_path / "artifacts"))
    folder = tmp_path / "notebooks"
    folder.mkdir()
    _write(folder, "01_first", '''
        # %% tags=["parameters"]
        profile = "demo"
        seed = 0
        count = 3  # an int
        ratio = 0.5
        label = "x"

        # %%
        result = count * ratio
        print("RESULT", result, label)
        ''')
    _write(folder, "02_second", '''
        # %% tags=["parameters"]
        profile = "demo"
        flag = False

        # %%
        x = 1

        # %%
        raise RuntimeError("boom in the second notebook")
        ''')
    return folder


def test_discover_reads_literal_parameters(nbdir):
    nbs = run.discover(nbdir)
    assert [nb.name for nb in nbs] == ["01_first", "02_second"]
    assert nbs[0].parameters == {"profile": "demo", "seed": 0, "count": 3, "ratio": 0.5, "label": "x"}


def test_non_literal_parameter_is_rejected(tmp_path):
    _write(tmp_path, "01_bad", '''
        # %% tags=["parameters"]
        n = 3
        m = n * 2
        ''')
    with pytest.raises(ValueError, match="'m' is not a plain literal"):
        run.discover(tmp_path)


def test_unknown_parameter_fails_before_any_work(nbdir, tmp_path):
    with pytest.raises(run.ParameterError, match="'cuont' is not declared"):
        run.run("demo", overrides={"cuont": 4}, notebooks_dir=nbdir, progress=False)
    assert not (tmp_path / "artifacts" / "demo" / "executed").exists()


@pytest.mark.parametrize("key,value", [("count", "three"), ("count", 2.5), ("flag", 1), ("ratio", True)])
def test_wrong_type_is_named(nbdir, key, value):
    with pytest.raises(run.ParameterError, match=repr(key)):
        run.resolve_parameters(run.discover(nbdir), "demo", {key: value})


def test_int_is_accepted_for_float_and_profile_defaults_injected(nbdir):
    resolved = run.resolve_parameters(run.discover(nbdir), "smoke", {"ratio": 2})
    assert resolved["01_first"]["ratio"] == 2
    assert resolved["01_first"]["profile"] == "smoke" and resolved["02_second"]["profile"] == "smoke"
    assert "ratio" not in resolved["02_second"]


def test_parse_value():
    assert run.parse_value("3") == 3 and run.parse_value("1e-4") == 1e-4
    assert run.parse_value("True") is True and run.parse_value("some/path") == "some/path"


def test_select_only_and_from(nbdir):
    nbs = run.discover(nbdir)
    assert [n.name for n in run.select(nbs, only=["02"])] == ["02_second"]
    assert [n.name for n in run.select(nbs, start="02")] == ["02_second"]
    with pytest.raises(run.ParameterError, match="unknown notebook"):
        run.select(nbs, only=["07_nothing"])


def test_execution_and_failure_report(nbdir, tmp_path, capsys):
    out = run.run("demo", only=["01_first"], overrides={"count": 4}, notebooks_dir=nbdir, progress=False)
    text = out[0].read_text()
    assert "RESULT 2.0 x" in text
    with pytest.raises(run.NotebookFailed) as err:
        run.run("demo", only=["02_second"], notebooks_dir=nbdir, progress=False)
    msg = str(err.value)
    assert "02_second" in msg and "RuntimeError" in msg and "boom in the second notebook" in msg
    partial = tmp_path / "artifacts" / "demo" / "executed" / "02_second.ipynb"
    assert partial.exists() and "boom" in partial.read_text()


def test_main_returns_nonzero_with_message(nbdir, capsys, monkeypatch):
    monkeypatch.setattr(run.config, "NOTEBOOKS_DIR", nbdir)
    code = run.main(["--profile", "demo", "-p", "nope", "1"])
    assert code == 2
    assert "'nope' is not declared" in capsys.readouterr().err


def _runner_error(capsys, argv):
    """(exit code, stderr) of the runner's command line."""
    code = run.main(argv)
    return code, capsys.readouterr().err


def test_a_killed_kernel_is_reported_in_one_sentence_with_how_to_resume(nbdir, capsys, monkeypatch):
    _write(nbdir, "03_dies", '''
        # %% tags=["parameters"]
        profile = "demo"
        resume = False

        # %%
        print("before the kill")

        # %%
        import os, signal
        os.kill(os.getpid(), signal.SIGKILL)  # what the OOM killer does
        ''')
    monkeypatch.setattr(run.config, "NOTEBOOKS_DIR", nbdir)
    code, err = _runner_error(capsys, ["--profile", "demo", "--only", "03", "--no-progress"])
    partial = nbdir.parent / "artifacts" / "demo" / "executed" / "03_dies.ipynb"
    assert code == 1 and err == (
        f"error: 03_dies stopped: its kernel was killed (most likely out of memory, or by a signal); the partly "
        f"executed copy is {partial}; run the same command again with `--from 03 -p resume True` added (training "
        "continues from its last completed epoch).\n")
    import nbformat

    cells = nbformat.read(partial, as_version=4).cells
    assert any("before the kill" in str(c.get("outputs")) for c in cells)
    assert [p.name for p in partial.parent.glob(".03_dies*")] == []


def test_a_full_disk_while_saving_keeps_the_earlier_copy_and_says_what_to_do(nbdir, capsys, monkeypatch):
    import errno

    from papermill import iorw

    monkeypatch.setattr(run.config, "NOTEBOOKS_DIR", nbdir)
    good = run.run("demo", only=["01"], notebooks_dir=nbdir, progress=False)[0]
    before = good.read_bytes()
    real_write, calls = iorw.papermill_io.write, []

    def write_until_full(buf, path):
        calls.append(path)
        if len(calls) < 2:
            return real_write(buf, path)
        with open(path, "w") as f:                      # a disk that fills half way through the file
            f.write(buf[: len(buf) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(iorw.papermill_io, "write", write_until_full)
    code, err = _runner_error(capsys, ["--profile", "demo", "--only", "01", "-p", "count", "5", "--no-progress"])
    assert code == 1 and err == (
        f"error: 01_first stopped: no space left on device while writing its executed copy {good} (an earlier copy "
        "there is left as it was); free some space, then run the same command again with `--from 01` added.\n")
    assert len(calls) >= 2 and all(p != str(good) for p in calls), "papermill must write beside the copy"
    assert good.read_bytes() == before
    assert [p.name for p in good.parent.glob(".01_first*")] == [], "the torn temp file is removed"


def test_a_self_explaining_error_is_reported_alone(nbdir, capsys, monkeypatch):
    _write(nbdir, "03_train", '''
        # %% tags=["parameters"]
        profile = "demo"

        # %%
        from thermsr_utils.train import TrainingRunExists
        raise TrainingRunExists("x holds an interrupted training run: continue it with `-p resume True`.")
        ''')
    monkeypatch.setattr(run.config, "NOTEBOOKS_DIR", nbdir)
    code, err = _runner_error(capsys, ["--profile", "demo", "--only", "03", "--no-progress"])
    assert (code, err) == (1, "error: 03_train: x holds an interrupted training run: continue it with "
                              "`-p resume True`.\n")


def test_resume_and_fresh_start_do_not_name_a_sweep_point(nbdir):
    _write(nbdir, "05_train", '''
        # %% tags=["parameters"]
        profile = "demo"
        count = 1
        resume = False
        ''')
    nb = run.select(run.discover(nbdir), only=["05"])
    points = run.sweep_points(nb, "demo", {"count": [2, 3]}, {"resume": True})
    assert [p.name for p in points] == ["count=2", "count=3"]
    assert all(p.params["05_train"]["resume"] is True for p in points)
    with pytest.raises(run.ParameterError, match="'fresh_start' cannot be swept"):
        run.sweep_points(nb, "demo", {"fresh_start": [True]})
