"""The GPU check: what it carries, its dry run on the CPU, its JSON and the table made from it (docs/gpu.md)."""
import json
import subprocess
import tomllib

import pytest

from thermsr_tools import gpu_check
from thermsr_utils import config, weights


def test_carried_wheels_are_pinned_as_in_pyproject_and_weights_are_registry_files():
    deps = tomllib.loads((config.REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for wheel in gpu_check.WHEELS:
        assert wheel in deps, f"{wheel} is not pinned so in pyproject.toml"
    names = [w.split("==")[0] for w in gpu_check.WHEELS]
    assert len(set(names)) == len(names) == len(gpu_check.WHEELS)   # one version of each, or pip stops
    assert set(gpu_check.CARRIED_WEIGHTS) <= set(weights.REGISTRY)
    script = (config.REPO_ROOT / "tools" / "gpu_check.sh").read_text()
    assert "gpu_check import WHEELS" in script and "CARRIED_WEIGHTS" in script   # the script reads these lists


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu") / "gpu_check-dry-run.json"
    proc = subprocess.run([str(config.REPO_ROOT / "tools" / "gpu_check.sh"), "--dry-run"], capture_output=True,
                          text=True, env={**__import__("os").environ, "OUT": str(out.parent),
                                          "PYTHON": __import__("sys").executable}, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


@pytest.mark.slow
def test_dry_run_measures_every_step_and_writes_the_schema(dry_run):
    result, stdout = dry_run
    assert set(result) == set(gpu_check.RESULT_KEYS) and result["schema_version"] == gpu_check.SCHEMA_VERSION
    assert result["dry_run"] is True and result["skipped"] == [] and result["device"]["type"] == "cpu"
    train = result["bench"]["train"]
    for name in ("v1", "v2"):
        assert train[name]["ours"]["patches_per_s"] > 0 and train[name]["reference"]["patches_per_s"] > 0
        assert result["compiled"][name]["compile"] is True and result["compiled"][name]["patches_per_s"] > 0
    settings = result["bench"]["settings"]
    assert settings["small"] is True and result["bench"]["eval"]["n_crops"] == settings["eval_crops"]
    epoch = result["v2_epoch"]
    assert epoch["n_crops"] == settings["n_crops"] and epoch["loss"] == "lpips-alex"
    assert epoch["minutes_for_200_epochs"] == pytest.approx(200 * epoch["train_seconds"] / 60)
    assert set(result["goals"]) == set(gpu_check.GOALS)
    assert all(g["value"] is not None and isinstance(g["met"], bool) for g in result["goals"].values())
    assert "DRY RUN" in stdout and "| v2, 200 epochs extrapolated, min |" in stdout


@pytest.mark.slow
def test_readme_table_comes_from_an_accelerator_json_and_never_from_a_dry_run(dry_run, tmp_path):
    result, _ = dry_run
    path = tmp_path / "gpu_check.json"
    assert "not measured" in gpu_check.readme_block(path)                 # no file yet
    path.write_text(json.dumps(result))
    with pytest.raises(ValueError, match="dry run"):
        gpu_check.readme_block(path)
    path.write_text(json.dumps({**result, "dry_run": False}))
    block = gpu_check.readme_block(path)
    assert "DRY RUN" not in block and f"code {result['code_version']}" in block
    assert f"{result['v2_epoch']['minutes_for_200_epochs']:.1f} | write-up: 77 | ≤ 5 |" in block


def test_goals_are_judged_against_their_thresholds():
    def judged(minutes, speedup, mfu):
        bench = {"train": {"v2": {"speedup": speedup, "ours": {"mfu": mfu}}}}
        return {k: g["met"] for k, g in gpu_check.verdicts(
            {"bench": bench, "v2_epoch": {"minutes_for_200_epochs": minutes}}).items()}

    assert judged(4.9, 3.1, 0.41) == {"v2_200_epochs_min": True, "train_speedup_v2": True, "mfu_bf16_v2": True}
    assert judged(5.1, 2.9, 0.39) == {"v2_200_epochs_min": False, "train_speedup_v2": False, "mfu_bf16_v2": False}
    unmeasured = gpu_check.verdicts({"bench": None, "v2_epoch": None})
    assert all(g["value"] is None and g["met"] is None for g in unmeasured.values())


def test_steps_past_the_budget_are_skipped_not_run():
    result = gpu_check.run("cpu", dry_run=True, budget_s=1e-9)
    assert result["skipped"] == ["bench", "compiled", "v2_epoch"]
    assert result["bench"] is None and all(g["met"] is None for g in result["goals"].values())
    assert "Skipped for the time budget: bench, compiled, v2_epoch." in gpu_check.table(result)


def test_the_gpu_page_shows_the_table_of_the_recorded_gpu_run_or_says_not_measured():
    readme = (config.REPO_ROOT / "docs" / "gpu.md").read_text()
    start, end = "<!-- gpu-check:start -->", "<!-- gpu-check:end -->"
    assert start in readme and end in readme
    assert readme.split(start)[1].split(end)[0].strip() == gpu_check.readme_block().strip()


def test_no_cuda_refuses_the_accelerator_run_in_one_sentence(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit):
        gpu_check.main(["--out", str(tmp_path / "x.json")])
    assert "no CUDA device here" in capsys.readouterr().err and not (tmp_path / "x.json").exists()
