"""The notebook runner: parameter validation before any work, failure reporting, executed copies, and what
a running notebook shows on the runner's console."""
import json
import re
import textwrap
import threading
import time
from pathlib import Path

import pytest

from thermsr_utils import config, console, notebook, run

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
    nbs = notebook.discover(nbdir)
    assert [nb.name for nb in nbs] == ["01_first", "02_second"]
    assert nbs[0].parameters == {"profile": "demo", "seed": 0, "count": 3, "ratio": 0.5, "label": "x"}


def test_non_literal_parameter_is_rejected(tmp_path):
    _write(tmp_path, "01_bad", '''
        # %% tags=["parameters"]
        n = 3
        m = n * 2
        ''')
    with pytest.raises(ValueError, match="'m' is not a plain literal"):
        notebook.discover(tmp_path)


def test_unknown_parameter_fails_before_any_work(nbdir, tmp_path):
    with pytest.raises(notebook.ParameterError, match="'cuont' is not declared"):
        run.run("demo", overrides={"cuont": 4}, notebooks_dir=nbdir, progress=False)
    assert not (tmp_path / "artifacts" / "demo" / "executed").exists()


@pytest.mark.parametrize("key,value", [("count", "three"), ("count", 2.5), ("flag", 1), ("ratio", True)])
def test_wrong_type_is_named(nbdir, key, value):
    with pytest.raises(notebook.ParameterError, match=repr(key)):
        notebook.resolve_parameters(notebook.discover(nbdir), "demo", {key: value})


def test_int_is_accepted_for_float_and_profile_defaults_injected(nbdir):
    resolved = notebook.resolve_parameters(notebook.discover(nbdir), "smoke", {"ratio": 2})
    assert resolved["01_first"]["ratio"] == 2
    assert resolved["01_first"]["profile"] == "smoke" and resolved["02_second"]["profile"] == "smoke"
    assert "ratio" not in resolved["02_second"]


def test_parse_value():
    assert notebook.parse_value("3") == 3 and notebook.parse_value("1e-4") == 1e-4
    assert notebook.parse_value("True") is True and notebook.parse_value("some/path") == "some/path"


def test_select_only_and_from(nbdir):
    nbs = notebook.discover(nbdir)
    assert [n.name for n in notebook.select(nbs, only=["02"])] == ["02_second"]
    assert [n.name for n in notebook.select(nbs, start="02")] == ["02_second"]
    with pytest.raises(notebook.ParameterError, match="names no notebook"):
        notebook.select(nbs, only=["07_nothing"])


def test_execution_and_failure_report(nbdir, tmp_path, capsys):
    out = run.run("demo", only=["01_first"], overrides={"count": 4}, notebooks_dir=nbdir, progress=False)
    text = out[0].read_text()
    assert "RESULT 2.0 x" in text
    with pytest.raises(notebook.NotebookFailed) as err:
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


class _Validated(Exception):
    """Raised where the runner would take the artifacts lock: everything before it (parsing, selection,
    parameter checks, sweep and frontier points) has passed."""


DOC_EXAMPLES = re.findall(r"^\s*python -m thermsr_utils\.run (.+)$", run.__doc__, re.M)


def test_the_docstring_has_examples():
    assert len(DOC_EXAMPLES) >= 4, DOC_EXAMPLES


@pytest.mark.parametrize("example", DOC_EXAMPLES)
def test_every_command_line_in_the_runner_docstring_is_accepted(example, tmp_path, monkeypatch, capsys):
    """Each ``python -m thermsr_utils.run …`` example of run.py's docstring parses and passes the parameter
    checks against the repository's notebooks; nothing runs (the lock is never taken)."""
    import shlex

    monkeypatch.setenv("THERMSR_ARTIFACTS", str(tmp_path / "artifacts"))

    def refuse(*args, **kwargs):
        raise _Validated

    monkeypatch.setattr(run, "run_lock", refuse)
    with pytest.raises(_Validated):
        code = run.main(shlex.split(example))
        pytest.fail(f"`{example}` exits with status {code}: {capsys.readouterr().err.strip()}")


RELAYED = re.compile(r"^\[\d\d_\w+\] ", re.M)      # a line a notebook printed, relayed by the runner


def _runner_error(capsys, argv):
    """(exit code, stderr without the lines the notebooks printed) of the runner's command line."""
    code = run.main(argv)
    err = capsys.readouterr().err
    return code, "".join(line for line in err.splitlines(keepends=True) if not RELAYED.match(line))


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
    nb = notebook.select(notebook.discover(nbdir), only=["05"])
    points = run.sweep_points(nb, "demo", {"count": [2, 3]}, {"resume": True})
    assert [p.name for p in points] == ["count=2", "count=3"]
    assert all(p.params["05_train"]["resume"] is True for p in points)
    with pytest.raises(notebook.ParameterError, match="'fresh_start' cannot be swept"):
        run.sweep_points(nb, "demo", {"fresh_start": [True]})



# ---------------------------------------------------------------------------------------------
# What a running notebook shows on the runner's console
# ---------------------------------------------------------------------------------------------
TCP_WARNING = "Kernel is running over TCP without encryption"


def _run_in_thread(fn):
    """Start ``fn`` in a thread; returns (thread, box) where box holds its result or error when it ends."""
    box = {}

    def target():
        try:
            box["result"] = fn()
        except BaseException as e:  # noqa: B036 - handed to the test
            box["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def test_printed_epochs_appear_on_the_runners_stderr_prefixed_while_the_notebook_runs(nbdir, tmp_path, capfd):
    go_on = tmp_path / "go_on"
    _write(nbdir, "03_epochs", f"""
        # %% tags=["parameters"]
        profile = "demo"

        # %%
        import os, sys, time
        from tqdm import tqdm
        for _ in tqdm(range(3), mininterval=0):     # a bar redrawn with \\r: not relayed
            time.sleep(0.01)
        print("epoch 1/2 loss 0.5000 val PSNR 20.1 dB", flush=True)
        for _ in range(600):                         # the test answers when it has seen epoch 1 on the console
            if os.path.exists({str(go_on)!r}):
                break
            time.sleep(0.1)
        else:
            raise TimeoutError("the runner did not show epoch 1 while the cell ran")
        print("epoch 2/2 loss 0.2500 val PSNR 22.3 dB")
        print("a warning on stderr", file=sys.stderr)
        print("the kernel sees", os.environ.get("THERMSR_PROGRESS"))
        """)
    capfd.readouterr()
    thread, box = _run_in_thread(lambda: run.run("demo", only=["03"], notebooks_dir=nbdir, progress=False))
    seen, deadline = "", time.time() + 120
    while "epoch 1/2" not in seen and thread.is_alive() and time.time() < deadline:
        time.sleep(0.1)
        seen += capfd.readouterr().err
    go_on.touch()
    thread.join(120)
    err = seen + capfd.readouterr().err
    assert "error" not in box, box.get("error")
    lines = err.splitlines()
    assert "[03_epochs] epoch 1/2 loss 0.5000 val PSNR 20.1 dB" in seen.splitlines(), "not shown while running"
    assert lines.count("[03_epochs] epoch 2/2 loss 0.2500 val PSNR 22.3 dB") == 1
    assert "[03_epochs] a warning on stderr" in lines and "[03_epochs] the kernel sees lines" in lines
    assert "[03_epochs] cell 3/3: import os, sys, time" in lines     # without a bar a line names each code cell
    assert not any("it/s" in line or "\r" in line for line in lines), "a progress bar was relayed"
    assert TCP_WARNING not in err and "IPKernelApp" not in err
    outputs = json.dumps(json.loads(box["result"][0].read_text())["cells"][2]["outputs"])
    assert all(text in outputs for text in ("epoch 1/2 loss 0.5000", "epoch 2/2 loss 0.2500", "a warning on stderr"))


def test_the_kernel_listens_on_ipc_sockets_in_a_temp_folder_it_removes(nbdir, tmp_path, capfd, monkeypatch):
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    _write(nbdir, "04_where", """
        # %% tags=["parameters"]
        profile = "demo"

        # %%
        import json, os
        from ipykernel import get_connection_info
        info = json.loads(get_connection_info())
        print("transport", info["transport"], "at", info["ip"], "in", sorted(os.listdir(os.path.dirname(info["ip"]))))
        print("beside the notebook", sorted(os.listdir(".")))
        """)
    capfd.readouterr()
    run.run("demo", only=["04"], notebooks_dir=nbdir, progress=True)
    err = capfd.readouterr().err                    # the bar's redraws share lines with the relayed text here
    where = re.search(r"\[04_where\] transport (\w+) at (\S+) in (.*)", err)
    assert where and where.group(1) == "ipc", err
    folder = Path(where.group(2)).parent
    assert folder.name.startswith("thermsr-kernel-") and "'ipc-1'" in where.group(3)   # its sockets were there
    assert not folder.exists(), "the kernel's folder is left behind"
    beside = re.search(r"\[04_where\] beside the notebook (.*)", err).group(1)
    assert "ipc" not in beside and "kernel" not in beside, beside
    assert TCP_WARNING not in err and "IPKernelApp" not in err
    assert [p.name for p in nbdir.iterdir() if "ipc" in p.name or "kernel" in p.name] == []
    assert list(work.iterdir()) == []
    assert "[04_where] cell " not in err, "with the bar, no line per cell"


def test_the_relay_shows_whole_lines_and_drops_redrawn_bars(capfd):
    relay = console.Relay("[05_x] ")
    for chunk in ("\r  0%|          | 0/4 [00:00<?, ?it/s]", "\r 50%|█████     | 2/4 [00:01<00:01,  2.0it/s]",
                  "\r                          \r", "epoch 1/4 lo", "ss 0.1\n\nval PSNR ", "30.0 dB\n",
                  "\r100%|██████████| 4/4 [00:02<00:00,  2.0it/s]\n", "50%| of plain text is kept\n",
                  "unended"):
        relay.write(chunk)
        relay.flush()
    assert capfd.readouterr().err == ("[05_x] epoch 1/4 loss 0.1\n[05_x] val PSNR 30.0 dB\n"
                                      "[05_x] 50%| of plain text is kept\n")
    relay.end()
    assert capfd.readouterr().err == "[05_x] unended\n"


def test_plain_progress_lines_replace_the_bar_under_the_runner(monkeypatch, capsys):
    from thermsr_utils import progress

    monkeypatch.setenv(progress.PROGRESS_ENV, "lines")
    assert progress.plain_progress()
    lines = progress.LineProgress("v1 epoch 3/6", 10, "steps", every=0.0)
    lines.update(4, ", loss 0.0213")
    lines.update(10)                                    # the end is the epoch's own line
    assert capsys.readouterr().err == "v1 epoch 3/6: 4/10 steps, loss 0.0213\n"
    monkeypatch.delenv(progress.PROGRESS_ENV)
    assert not progress.plain_progress()


@pytest.fixture
def chain(tmp_path, monkeypatch):
    """Three notebooks that each append their name to a log file, so a test sees which ones executed."""
    monkeypatch.setenv("THERMSR_ARTIFACTS", str(tmp_path / "artifacts"))
    folder = tmp_path / "notebooks"
    folder.mkdir()
    log = tmp_path / "executed.log"
    for name, extra in (("01_make", "size = 2"), ("02_use", "scale = 1.0"), ("03_end", "label = 'x'")):
        _write(folder, name, f'''
            # %% tags=["parameters"]
            profile = "demo"
            {extra}

            # %%
            with open({str(log)!r}, "a") as f:
                f.write("{name}\\n")
            ''')
    return folder, log


def _executed(log) -> list[str]:
    names = log.read_text().split() if log.exists() else []
    log.unlink(missing_ok=True)
    return names


def test_a_rerun_executes_only_what_changed_and_what_came_after_it(chain, monkeypatch):
    folder, log = chain
    run.run("demo", notebooks_dir=folder, progress=False)
    assert _executed(log) == ["01_make", "02_use", "03_end"]                 # a clean run computes everything
    run.run("demo", notebooks_dir=folder, progress=False)
    assert _executed(log) == []                                              # nothing changed: nothing runs
    run.run("demo", notebooks_dir=folder, progress=False, overrides={"scale": 2.0})
    assert _executed(log) == ["02_use", "03_end"]                            # a parameter of 02: 02 and after
    run.run("demo", notebooks_dir=folder, progress=False, overrides={"scale": 2.0})
    assert _executed(log) == []
    run.run("demo", notebooks_dir=folder, progress=False)                     # back to the default: 02 again
    assert _executed(log) == ["02_use", "03_end"]
    src = folder / "01_make.py"
    src.write_text(src.read_text().replace("size = 2", "size = 3"))          # 01's source changed
    run.run("demo", notebooks_dir=folder, progress=False)
    assert _executed(log) == ["01_make", "02_use", "03_end"]
    run.run("demo", notebooks_dir=folder, progress=False, only=["03"], force=True)
    assert _executed(log) == ["03_end"]                                      # --force runs what is selected
    monkeypatch.setattr(run, "code_fingerprint", lambda: "another version of the package")
    run.run("demo", notebooks_dir=folder, progress=False)
    assert _executed(log) == ["01_make", "02_use", "03_end"]                 # the code changed: everything


def test_a_notebook_run_alone_invalidates_the_ones_after_it(chain):
    folder, log = chain
    run.run("demo", notebooks_dir=folder, progress=False)
    _executed(log)
    run.run("demo", notebooks_dir=folder, progress=False, only=["02"], overrides={"scale": 3.0})
    assert _executed(log) == ["02_use"]
    run.run("demo", notebooks_dir=folder, progress=False, overrides={"scale": 3.0})
    assert _executed(log) == ["03_end"]          # 03 read 02's old outputs: it runs again, 01 and 02 do not
    (config_root := run.config.run_paths("demo")).executed.joinpath("02_use.ipynb").unlink()
    run.run("demo", notebooks_dir=folder, progress=False, overrides={"scale": 3.0})
    assert _executed(log) == ["02_use", "03_end"]   # a missing executed copy is not reused
    assert (config_root.executed / run.CACHE_FILE).is_file()


def test_the_demo_leaves_the_notebooks_beyond_the_writeup_to_their_own_target(chain, monkeypatch, capsys):
    folder, log = chain
    monkeypatch.setattr(config, "BEYOND_FROM", "03")                      # 03_end plays notebook 08
    run.run("demo", notebooks_dir=folder, progress=False)
    assert _executed(log) == ["01_make", "02_use"]
    assert "03_end (beyond the write-up) run with `--from 03` (`make beyond`)" in capsys.readouterr().out
    run.run("demo", notebooks_dir=folder, progress=False, start="03")     # what `make beyond` runs
    assert _executed(log) == ["03_end"]
    run.run("smoke", notebooks_dir=folder, progress=False)                # CI's smoke run executes every notebook
    assert _executed(log) == ["01_make", "02_use", "03_end"]
    assert set(config.RUNS_BEYOND) == set(config.PROFILE_NAMES)


def test_publish_leaves_out_a_notebook_whose_predecessors_ran_again_since(chain, monkeypatch, tmp_path):
    from thermsr_utils import publish

    folder, log = chain
    monkeypatch.setattr(config, "BEYOND_FROM", "03")
    monkeypatch.setattr(config, "NOTEBOOKS_DIR", folder)
    paths = config.run_paths("demo")
    run.run("demo", notebooks_dir=folder, progress=False)
    run.run("demo", notebooks_dir=folder, progress=False, start="03")
    for name in ("a.png", "x8_panel.png"):
        (paths.figures / name).parent.mkdir(parents=True, exist_ok=True)
        (paths.figures / name).write_bytes(b"png")
    for name in ("table_v2.md", "table_x8.md", "table_v3_differences.csv"):
        (paths.results / name).parent.mkdir(parents=True, exist_ok=True)
        (paths.results / name).write_text("t")

    def published():
        dest = publish.publish("demo", dest_root=tmp_path / "figures")
        pages = {p.name for p in (dest / publish.REPORT_DIR).glob("*.md")}
        return {p.name for p in dest.iterdir() if p.is_file()}, pages

    files, pages = published()
    assert {"a.png", "x8_panel.png", "table_v2.md", "table_x8.md", "table_v3_differences.csv"} <= files
    assert any("03_end" in p for p in pages)
    run.run("demo", notebooks_dir=folder, progress=False, overrides={"scale": 2.0})   # 02 again: 03 is now stale
    assert _executed(log) == ["01_make", "02_use", "03_end", "02_use"]
    files, pages = published()
    assert {"a.png", "table_v2.md"} <= files
    assert not files & {"x8_panel.png", "table_x8.md", "table_v3_differences.csv"}
    assert not any("03_end" in p for p in pages) and any("02_use" in p for p in pages)
