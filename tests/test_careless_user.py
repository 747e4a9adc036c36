"""What a careless user trips over, through the command lines: leftovers of killed runs, stale results beside new
ones, inputs skipped without a word, selectors that misread a number."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from thermsr_utils import config, io, run, sr_folder

DEAD_PID = 2**22 + 12345        # above the default pid_max of 4,194,304: no live process has it


def _images(folder, names, size=32):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        cv2.imwrite(str(folder / name), cv2.GaussianBlur(rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
                                                          (5, 5), 2))


# --------------------------------------------------------------------------------------------------
# 1. Temporary folders and files of killed writers are removed by the next run that finds them
# --------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_next_data_build_removes_what_a_killed_generation_left(tmp_path):
    data = tmp_path / "data" / "synthetic"
    killed = data / f".smoke.tmp-{DEAD_PID}-abcd"          # what a SIGKILLed generation leaves
    older = data / ".smoke.tmp-k2j3h4x9"                     # the same, named by an earlier version
    for leftover in (killed, older):
        (leftover / "SF-TL54").mkdir(parents=True)
        (leftover / "SF-TL54" / "half.png").write_bytes(b"x" * 100)
    live = data / f".smoke.tmp-{os.getpid()}-live"           # a live writer's folder is left alone
    live.mkdir()
    env = {**os.environ, "THERMSR_ARTIFACTS": str(tmp_path / "artifacts"), "THERMSR_DATA": str(tmp_path / "data"),
           "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, "-m", "thermsr_utils.run", "--profile", "smoke", "--only", "1",
                           "--no-progress"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not killed.exists() and not older.exists() and live.exists()
    assert f"removed {killed}, left by an interrupted run" in done.stderr
    assert (data / "smoke" / "synthetic.json").is_file()


def test_atomic_writers_remove_the_temporary_files_of_dead_writers_only(tmp_path, capsys):
    target = tmp_path / "table.csv"
    dead = tmp_path / f".table.csv.tmp-{DEAD_PID}-x.csv"
    mine = tmp_path / f".table.csv.tmp-{os.getpid()}-y.csv"
    other = tmp_path / ".other.csv.tmp-1-z.csv"
    for p in (dead, mine, other):
        p.write_text("half")
    io.atomic_write_text(target, "a,b\n")
    assert target.read_text() == "a,b\n" and not dead.exists() and mine.exists() and other.exists()
    assert "left by an interrupted run" in capsys.readouterr().err
    folder = tmp_path / "model"
    (tmp_path / f".model.old-{DEAD_PID}-q").mkdir()
    io.atomic_dir(folder, lambda tmp: (tmp / "w.bin").write_bytes(b"1"))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".model.")] == []


# --------------------------------------------------------------------------------------------------
# 2. An output folder holds the results of one run
# --------------------------------------------------------------------------------------------------
def test_a_second_sr_folder_run_leaves_no_stale_results(tmp_path, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    _images(src, ["a.png", "b.png"])
    args = ["--model", "bicubic", "--input", str(src), "--output", str(out), "--perceptual", "none",
            "--nose-model", "none"]
    assert sr_folder.main(args + ["--metrics"]) == 0
    assert {p.name for p in out.iterdir()} == {"a.png", "b.png", "metrics.csv", "summary.json"}
    (src / "b.png").unlink()
    capsys.readouterr()
    assert sr_folder.main(args) == 0                                     # no --metrics, one image fewer
    assert {p.name for p in out.iterdir()} == {"a.png", "summary.json"}  # nothing of the first run is left
    assert "removed the 3 file(s) of the earlier run" in capsys.readouterr().err
    assert json.loads((out / "summary.json").read_text())["written"] == ["a.png"]


def test_sr_folder_refuses_an_output_holding_files_no_run_recorded(tmp_path, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    _images(src, ["a.png"])
    out.mkdir()
    (out / "my_notes.txt").write_text("keep me")
    (out / "a.png").write_bytes(b"an interrupted run's image")
    args = ["--model", "bicubic", "--input", str(src), "--output", str(out)]
    assert sr_folder.main(args) == 2
    err = capsys.readouterr().err
    assert f"--output {out} holds a.png, my_notes.txt" in err and "nothing in it was changed" in err
    assert (out / "my_notes.txt").read_text() == "keep me" and (out / "a.png").read_bytes() == b"an interrupted run's image"


# --------------------------------------------------------------------------------------------------
# 3. Every input entry that is not processed is listed with its reason
# --------------------------------------------------------------------------------------------------
def test_sr_folder_lists_fifos_dangling_links_and_folders_it_does_not_read(tmp_path, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    _images(src, ["a.png"])
    os.mkfifo(src / "pipe.png")
    (src / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (src / "more").mkdir()
    assert sr_folder.main(["--model", "bicubic", "--input", str(src), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    for name, why in (("pipe.png", "named pipe"), ("gone.png", "does not exist"), ("more", "a folder")):
        assert f"skipped: {name}: " in printed and why in printed
    skipped = {s["file"]: s["reason"] for s in json.loads((out / "summary.json").read_text())["skipped"]}
    assert set(skipped) == {"pipe.png", "gone.png", "more"}


# --------------------------------------------------------------------------------------------------
# 4. Selectors accept what a person types
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def executed(monkeypatch, tmp_path):
    """run.main with notebooks recorded instead of executed."""
    monkeypatch.setenv("THERMSR_ARTIFACTS", str(tmp_path))
    names = []

    def fake(nb, params, paths, progress=True, **kw):
        names.append(nb.name)
        paths.executed.mkdir(parents=True, exist_ok=True)
        return paths.executed / f"{nb.name}.ipynb"
    monkeypatch.setattr(run, "execute", fake)
    monkeypatch.setattr(run, "run_points", lambda *a, **k: [])
    return names


@pytest.mark.parametrize("argv,expected", [
    (["--only", "3"], ["03_v1_finetune"]),
    (["--only", "03", "5"], ["03_v1_finetune", "05_v2_finetune"]),
    (["--only", "v1_finetune"], ["03_v1_finetune"]),
    (["--only", "notebooks/04_v1_eval.py"], ["04_v1_eval"]),
    (["--from", "6"], ["06_v2_finetune_eval", "07_perception_distortion_frontier", "08_downstream_aware"]),
])
def test_a_number_or_a_name_selects_its_notebook(executed, argv, expected):
    assert run.main(["--profile", "smoke", "--no-progress", *argv]) == 0
    assert executed == expected


@pytest.mark.parametrize("argv", [["--from", "9"], ["--only", "9"], ["--only", "3", "zero"], ["--from", "x"]])
def test_a_selector_that_matches_nothing_exits_naming_the_notebooks(executed, capsys, argv):
    assert run.main(["--profile", "smoke", *argv]) == 2
    err = capsys.readouterr().err
    assert "names no notebook" in err and "01_build_dataset" in err and "08_downstream_aware" in err
    assert executed == []


def test_zero_shot_results_of_an_earlier_run_are_not_read_as_this_runs(tmp_path, capsys):
    from thermsr_utils import evaluate

    for method in ("zero-shot srresnet", "zero-shot dat-light"):
        stem = evaluate.result_stem(tmp_path, method)
        evaluate.write_rows([], stem.with_suffix(".csv"), {"method": method, "weights": {"source": "registry"}})
        (evaluate.result_stem(tmp_path / "sr", method)).mkdir(parents=True)
    assert set(evaluate.zero_shot_weights(tmp_path)) == {"zero-shot srresnet", "zero-shot dat-light"}
    assert evaluate.retire_zero_shot(tmp_path, ["bicubic", "zero-shot srresnet"]) == ["zero-shot dat-light"]
    assert set(evaluate.zero_shot_weights(tmp_path)) == {"zero-shot srresnet"}
    assert not evaluate.result_stem(tmp_path / "sr", "zero-shot dat-light").exists()
    assert "removed the results of zero-shot dat-light" in capsys.readouterr().out
