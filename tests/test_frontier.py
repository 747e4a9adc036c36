"""The frontier analysis of notebook 07: non-dominated points, seed spread, the table, the single-method bootstrap
interval it rests on, the planned points, weight blends, the v1 → v2 decomposition and the learning-rate sweep."""
import json
import math

import numpy as np
import pytest
import torch

from thermsr_utils import config, frontier, stats


def _row(method, psnr, lpips, **more):
    r = {"method": method, "n": 10, "psnr": psnr, "lpips": lpips, "ssim": 0.9, "dists": 0.1, "nose_err_px": 1.0}
    r.update(more)
    for m in frontier.METRICS:
        r.setdefault(f"{m}_lo", r[m] - 0.01)
        r.setdefault(f"{m}_hi", r[m] + 0.01)
    return r


def test_non_dominated_keeps_only_points_nothing_beats_on_both_axes():
    rows = [_row("a", 30.0, 0.30), _row("b", 29.0, 0.20), _row("c", 28.0, 0.25),   # c: b beats it on both
            _row("d", 27.0, 0.10), _row("e", 30.0, 0.35)]                          # e: a ties PSNR, better LPIPS
    assert frontier.non_dominated(rows, "psnr", "lpips") == ["d", "b", "a"]
    # a higher-is-better y flips which points survive
    assert frontier.non_dominated(rows, "psnr", "ssim") == ["a", "e"]


def test_steps_and_spread():
    rows = [_row("x", 30, 0.3), _row("y", 29, 0.2), _row("z", 29.5, 0.1)]
    assert frontier.steps(rows, "lpips") == (2, 2)
    assert frontier.steps(rows, "psnr") == (1, 2)
    assert frontier.spread(rows, "psnr") == pytest.approx(1.0)
    assert math.isnan(frontier.spread([_row("q", math.nan, 0.1)], "psnr"))


def test_summarise_gives_each_metric_with_an_interval_around_it():
    rng = np.random.default_rng(0)
    # 40 crops: SF-TL54 crops of 10 subjects (2 each) and ThermEval-D crops of 10 frames (2 each)
    rows = [{"method": "m", "id": str(i), "dataset": "sftl54" if i < 20 else "thermeval",
             "subject": i // 2 if i < 20 else None, "source": f"frame{i // 2}.png",
             "psnr": 30 + rng.normal(), "ssim": 0.9, "lpips": 0.2 + 0.01 * rng.normal(),
             "dists": 0.1, "nose_err_px": float(i % 5) if i else math.nan} for i in range(40)]
    (s,) = frontier.summarise(rows, ["m"], n_boot=300)
    assert s["psnr"] == pytest.approx(np.mean([r["psnr"] for r in rows]))
    assert s["nose_err_px"] == pytest.approx(np.nanmedian([r["nose_err_px"] for r in rows]))
    assert s["nose_n"] == 39 and s["n"] == 40
    for m in frontier.METRICS:
        assert s[f"{m}_lo"] <= s[m] <= s[f"{m}_hi"]
    assert s["psnr_hi"] - s["psnr_lo"] > 0.1
    # the interval resamples the 20 subjects/frames, not the 40 crops
    units = [stats.resampling_unit(r) for r in rows]
    assert len(set(units)) == 20
    cluster = stats.interval([r["psnr"] for r in rows], "mean", n_boot=300, seed=0, groups=units)
    assert (s["psnr_lo"], s["psnr_hi"]) == (cluster["lo"], cluster["hi"])
    crops = stats.interval([r["psnr"] for r in rows], "mean", n_boot=300, seed=0)
    assert (s["psnr_lo"], s["psnr_hi"]) != (crops["lo"], crops["hi"])
    with pytest.raises(ValueError, match="no rows of method 'absent'"):
        frontier.summarise(rows, ["absent"])
    with pytest.raises(ValueError, match="'subject'"):          # a row cached before subject/source were written
        frontier.summarise([{**rows[0], "subject": None}, *rows[1:]], ["m"], n_boot=10)


def test_interval_is_the_bootstrap_of_one_method():
    x = np.arange(100, dtype=float)
    ci = stats.interval(x, "mean", n_boot=500, seed=1)
    assert ci["value"] == pytest.approx(49.5) and ci["lo"] < 49.5 < ci["hi"]
    assert 40 < ci["lo"] and ci["hi"] < 60
    med = stats.interval([1.0, 2.0, math.nan, 100.0], "median", n_boot=200)
    assert med["value"] == 2.0 and med["n"] == 3 and med["n_dropped"] == 1


def test_table_markdown_writes_value_and_interval(tmp_path):
    rows = [_row("v2 λ=0.1", 30.123, 0.21234)]
    text = frontier.table_markdown(rows, "profile test")
    assert "| v2 λ=0.1 | – | 10 | 30.12 [30.11, 30.13] |" in text and "0.2123 [0.2023, 0.2223]" in text
    assert text.startswith("| Method | Steps | N | PSNR (dB) |")
    assert "| v2 λ=0.1 | 1200 | 10 | 30.12 [30.11, 30.13] |" in frontier.table_markdown(
        [_row("v2 λ=0.1", 30.123, 0.21234, steps=1200)], "profile test")
    csv_path, md_path = frontier.write_table(rows, tmp_path / "t", "profile test")
    assert md_path.read_text() == text and "psnr_lo" in csv_path.read_text().splitlines()[0]


def _plan(profile, monkeypatch, tmp_path, overrides=None):
    """The runner's frontier points and plan for ``profile``, the plan written where 07 reads it."""
    from thermsr_utils import notebook, run

    monkeypatch.setenv("THERMSR_ARTIFACTS", str(tmp_path))
    notebooks = notebook.discover()
    reader = next(nb for nb in notebooks if "frontier_lambdas" in nb.parameters)
    own = {k: v for k, v in (overrides or {}).items() if k in reader.parameters}
    p = notebook.resolve_parameters([reader], profile, own)[reader.name]
    points, plan = run.frontier_plan(notebooks, reader, p, profile, overrides)
    run.write_plan(config.run_paths(profile), plan)
    return points, plan, frontier.read_plan(config.run_paths(profile))


def test_read_plan_names_every_model_where_the_runner_trains_it(monkeypatch, tmp_path):
    points, _, entries = _plan("demo", monkeypatch, tmp_path)
    by_label = {e.label: e for e in entries}
    assert [e.label for e in entries] == ["v2 λ=0", "v2 λ=0.05", "v2 λ=1", "v1 seed 0", "v1 seed 1", "v2 seed 0",
                                          "v2 seed 1", "v1 lr=0.0001", "v1 lr=0.0002", "v1 lr=0.001",
                                          "v2 (EMA)", "v2 raw weights"]
    assert by_label["v2 λ=0"].paths.point == "lpips_weight=0.0"
    assert by_label["v2 λ=1"].paths.point == "lpips_weight=1.0"
    # the main λ, seed 0 and the main learning rate are the main run itself, with the main run's schedule
    assert by_label["v2 λ=0.05"].paths.point == "" == by_label["v2 seed 0"].paths.point == by_label["v1 lr=0.0002"].paths.point
    assert by_label["v2 λ=0.05"].checkpoint == by_label["v2 seed 0"].checkpoint == by_label["v2 (EMA)"].checkpoint
    assert by_label["v1 seed 1"].paths.point == "seed=1" == by_label["v2 seed 1"].paths.point
    assert by_label["v1 seed 1"].checkpoint.parts[-2:] == ("v1", "best")
    assert by_label["v1 lr=0.001"].paths.point == "v1_lr=0.001"
    assert by_label["v2 raw weights"].checkpoint.name == "best_raw"
    assert by_label["v2 λ=0"].paths.crops == config.run_paths("demo").crops
    trained = {pt.name for pt in points}
    assert trained == {e.paths.point for e in entries} - {""}          # every point is read, none is extra
    assert "" not in trained                                          # the main run is not trained again


def test_read_plan_follows_the_main_runs_overrides(monkeypatch, tmp_path):
    """With -p overrides the main run is still the main value's model, and the points carry the overrides."""
    points, plan, entries = _plan("demo", monkeypatch, tmp_path, {"v2_epochs": 3, "lpips_weight": 0.1})
    by_label = {e.label: e for e in entries}
    assert by_label["v2 λ=0.1"].paths.point == ""                    # the overridden main λ
    assert "v2 λ=0.05" not in by_label
    assert by_label["v2 λ=0"].paths.point == "lpips_weight=0.0,v2_epochs=3"
    v2_points = {pt.name: pt for pt in points if any("lpips_weight" in nb.parameters for nb in pt.notebooks)}
    assert all(pt.params["05_v2_finetune"]["v2_epochs"] == 3 for pt in v2_points.values())


def test_read_plan_without_a_plan_says_how_to_make_one(monkeypatch, tmp_path):
    monkeypatch.setenv("THERMSR_ARTIFACTS", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="--only 07"):
        frontier.read_plan(config.run_paths("demo"))


# ------------------------------------------------------------------------------------------------
# What each model trained
# ------------------------------------------------------------------------------------------------
def _entry(label, group, tmp_path=None):
    paths = config.run_paths("demo")
    return frontier.Entry(label, group, None, paths, (tmp_path or paths.root) / label / "best")


def test_optimizer_steps_counts_the_steps_up_to_the_kept_epoch(tmp_path):
    e = _entry("v2", "lambda", tmp_path)
    e.checkpoint.mkdir(parents=True)
    (e.checkpoint / "thermsr.json").write_text(json.dumps({"epoch": 2}))
    history = [{"epoch": 0, "steps": 0}, {"epoch": 1, "steps": 13}, {"epoch": 2, "steps": 13}, {"epoch": 3, "steps": 13}]
    (e.checkpoint.parent / "history.json").write_text(json.dumps(history))
    assert frontier.optimizer_steps(e) == 26                 # epoch 3 came after the kept epoch
    (e.checkpoint / "thermsr.json").write_text(json.dumps({"epoch": 3}))
    assert frontier.optimizer_steps(e) == 39


def test_steps_words_when_every_model_of_a_recipe_trained_alike():
    entries = [_entry("v2 λ=0", "lambda"), _entry("v2 λ=0.05", "lambda"), _entry("v1 seed 0", "v1 seed"),
               _entry("v1 seed 1", "v1 seed"), _entry("v2 seed 1", "v2 seed")]
    steps = {"v2 λ=0": 78, "v2 λ=0.05": 78, "v1 seed 0": 24, "v1 seed 1": 24, "v2 seed 1": 78}
    text = frontier.steps_words(entries, steps)
    assert text == ("Every v1 model trained 24 optimizer steps (v1 seed 0, v1 seed 1); every v2 model trained 78 "
                    "optimizer steps (v2 λ=0, v2 λ=0.05, v2 seed 1). v2 took 3.2× v1's steps (the write-up: 10,400 "
                    "against 3,120, 3.3×; notebook 05 says why the demo trains both alike). The main run's v2 is the "
                    "frontier point at its λ, and seed 0 is the main run.")


def test_steps_words_when_models_of_one_recipe_trained_differently():
    entries = [_entry("v2 λ=0", "lambda"), _entry("v2 λ=1", "lambda"), _entry("v1 seed 0", "v1 seed"),
               _entry("v1 seed 1", "v1 seed")]
    steps = {"v2 λ=0": 78, "v2 λ=1": 26, "v1 seed 0": 24, "v1 seed 1": 24}
    text = frontier.steps_words(entries, steps)
    assert text.startswith("Every v1 model trained 24 optimizer steps (v1 seed 0, v1 seed 1); **the v2 models were "
                           "not trained alike**: 26, 78 steps (v2 λ=0, v2 λ=1).")
    assert "took" not in text                                # no ratio between recipes trained unevenly
    both = frontier.steps_words(entries, {**steps, "v1 seed 1": 30, "v2 λ=1": 78})
    assert both.startswith("**the v1 models were not trained alike**: 24, 30 steps (v1 seed 0, v1 seed 1); every v2 "
                           "model trained 78 optimizer steps")


def test_steps_words_keeps_the_labels_as_written():
    entries = [_entry("v1 seed 0", "v1 seed"), _entry("v2 (EMA)", "ema"), _entry("v2 raw weights", "raw")]
    text = frontier.steps_words(entries, {"v1 seed 0": 24, "v2 (EMA)": 78, "v2 raw weights": 78})
    assert "(v2 (EMA), v2 raw weights)" in text


# ------------------------------------------------------------------------------------------------
# Weight blends
# ------------------------------------------------------------------------------------------------
def _state(seed):
    g = torch.Generator().manual_seed(seed)
    return {"conv.weight": torch.randn(4, 3, 3, 3, generator=g), "conv.bias": torch.randn(4, generator=g),
            "bn.num_batches_tracked": torch.tensor(7 + seed), "index": torch.arange(3) + seed}


def test_blend_state_ends_midpoint_and_integer_buffers():
    a, b = _state(0), _state(1)
    at0, at1, mid = (frontier.blend_state(a, b, alpha) for alpha in (0.0, 1.0, 0.5))
    assert all(torch.equal(at0[k], a[k]) for k in a)         # α = 0: model a
    assert all(torch.allclose(at1[k].float(), b[k].float()) for k in ("conv.weight", "conv.bias"))
    for k in ("conv.weight", "conv.bias"):                  # α = 1: model b; α = 0.5: the midpoint
        assert torch.allclose(mid[k], (a[k] + b[k]) / 2, atol=1e-7)
    q = frontier.blend_state(a, b, 0.25)["conv.weight"]
    assert torch.allclose(q, 0.75 * a["conv.weight"] + 0.25 * b["conv.weight"], atol=1e-6)
    for k in ("bn.num_batches_tracked", "index"):           # integer buffers: a's, as copies
        for blended in (at0, at1, mid):
            assert torch.equal(blended[k], a[k]) and blended[k].dtype == a[k].dtype
            assert blended[k].data_ptr() != a[k].data_ptr()
    assert set(mid) == set(a) and mid["conv.weight"].dtype == torch.float32
    assert torch.equal(a["conv.weight"], _state(0)["conv.weight"])     # the inputs are left alone


def test_blend_state_refuses_two_architectures():
    a, b = _state(0), _state(1)
    with pytest.raises(ValueError, match="different tensors"):
        frontier.blend_state(a, {k: v for k, v in b.items() if k != "conv.bias"}, 0.5)
    with pytest.raises(ValueError, match="different tensors"):
        frontier.blend_state(a, {**b, "extra": torch.zeros(1)}, 0.5)
    with pytest.raises(ValueError, match=r"'conv.weight' has shape \(4, 3, 3, 3\) in one model and \(8, 3, 3, 3\)"):
        frontier.blend_state(a, {**b, "conv.weight": torch.zeros(8, 3, 3, 3)}, 0.5)


def test_blend_state_loads_into_a_model_of_the_architecture():
    from conftest import tiny_model

    m0, m1 = tiny_model(0), tiny_model(1)
    blended = tiny_model(2)
    blended.load_state_dict(frontier.blend_state(m0.state_dict(), m1.state_dict(), 0.5))
    x = torch.rand(1, 3, 4, 4)
    for k, v in blended.state_dict().items():
        assert torch.allclose(v, (m0.state_dict()[k] + m1.state_dict()[k]) / 2, atol=1e-7)
    assert blended(x).shape == (1, 3, 16, 16)


def test_blend_alphas_lie_strictly_between_the_trained_ends():
    assert frontier.blend_alphas(0) == []
    assert frontier.blend_alphas(1) == [0.5]
    assert frontier.blend_alphas(3) == [0.25, 0.5, 0.75]
    assert len(frontier.blend_alphas(9)) == 9 and all(0 < a < 1 for a in frontier.blend_alphas(9))
    assert [frontier.blend_label(a) for a in frontier.blend_alphas(3)] == ["blend α=0.25", "blend α=0.50",
                                                                           "blend α=0.75"]


# ------------------------------------------------------------------------------------------------
# v1 → v2 in two parts
# ------------------------------------------------------------------------------------------------
def _crop_rows(method, psnr, lpips, dists):
    """16 crops: 8 of SF-TL54 (4 subjects, 2 crops each) and 8 of ThermEval-D (4 frames, 2 crops each)."""
    rows = []
    for i in range(16):
        sf = i < 8
        rows.append({"id": f"c{i}", "dataset": "sftl54" if sf else "thermeval", "subject": i // 2 if sf else None,
                     "source": f"{'sf' if sf else 'te'}/frame{i // 2}.png", "method": method, "psnr": psnr[i],
                     "ssim": 0.9, "lpips": lpips[i], "dists": dists[i], "nose_err_px": 1.0})
    return rows


def _decomposition_rows(noise=False):
    rng = np.random.default_rng(4)
    base = 30.0 + np.arange(16) * 0.25                     # exact binary fractions: shifts stay exact
    lp = 0.25 + np.arange(16) * 0.0078125
    e = rng.normal(0, 0.1, 16) if noise else np.zeros(16)
    return (_crop_rows("v1", base, lp, lp / 2)
            + _crop_rows("v2 λ=0", base - 1.0 + e, lp - 0.0625, lp / 2 - 0.03125)     # the rest of the recipe
            + _crop_rows("v2 λ=0.05", base - 1.5 + e, lp - 0.125, lp / 2 - 0.03125))  # + the perceptual term


def test_decomposition_splits_v1_to_v2_into_the_recipe_and_the_perceptual_term():
    rows = _decomposition_rows()
    parts = frontier.decomposition(rows, "v1", "v2 λ=0", "v2 λ=0.05", n_boot=200)
    assert set(parts) == {"whole", "recipe", "term"}
    for key, (base, new) in {"whole": ("v1", "v2 λ=0.05"), "recipe": ("v1", "v2 λ=0"),
                             "term": ("v2 λ=0", "v2 λ=0.05")}.items():
        assert [(c["base"], c["new"], c["split"]) for c in parts[key]] == [(base, new, "all")] * 3
        assert [c["metric"] for c in parts[key]] == ["psnr", "lpips", "dists"]
        assert all(c["n"] == 16 and c["n_units"] == 8 and c["unit"] == "subject/frame" for c in parts[key])
    built = {"recipe": {"psnr": -1.0, "lpips": -0.0625, "dists": -0.03125},
             "term": {"psnr": -0.5, "lpips": -0.0625, "dists": 0.0},
             "whole": {"psnr": -1.5, "lpips": -0.125, "dists": -0.03125}}
    for key, diffs in built.items():
        for metric, diff in diffs.items():
            c = stats.find(parts[key], metric)
            assert c["diff"] == pytest.approx(diff, abs=1e-9), (key, metric)
            assert c["lo"] == pytest.approx(diff, abs=1e-9) and c["hi"] == pytest.approx(diff, abs=1e-9)  # a shift
    for metric in ("psnr", "lpips", "dists"):               # the whole is the sum of its parts
        whole, recipe, term = (stats.find(parts[k], metric)["diff"] for k in ("whole", "recipe", "term"))
        assert whole == pytest.approx(recipe + term, abs=1e-12)
    assert stats.find(parts["recipe"], "psnr")["verdict"] == "worse"
    assert stats.find(parts["term"], "lpips")["verdict"] == "better"
    assert stats.find(parts["term"], "dists")["verdict"] == "no detectable difference"
    words = frontier.decomposition_words(parts, 0.05).splitlines()
    assert words[0] == ("* **PSNR**: v1 → v2 -1.50 dB [-1.50, -1.50] (worse) = the rest of the recipe (v1 → v2 at "
                        "λ = 0) -1.00 dB [-1.00, -1.00] (worse) + the perceptual term (λ = 0 → 0.05) -0.50 dB "
                        "[-0.50, -0.50] (worse)")
    assert words[1].startswith("* **LPIPS**: v1 → v2 -0.1250 [-0.1250, -0.1250] (better) = ")
    assert len(words) == 3


def test_decomposition_is_additive_in_the_mean_with_noise_and_resamples_subjects():
    rows = _decomposition_rows(noise=True)
    parts = frontier.decomposition(rows, "v1", "v2 λ=0", "v2 λ=0.05", metrics=("psnr",), n_boot=300, seed=2)
    whole, recipe, term = (stats.find(parts[k], "psnr") for k in ("whole", "recipe", "term"))
    assert whole["diff"] == pytest.approx(recipe["diff"] + term["diff"], abs=1e-9)
    assert term["diff"] == pytest.approx(-0.5, abs=1e-9)    # the same noise in λ = 0 and main: an exact shift
    assert recipe["lo"] < recipe["diff"] < recipe["hi"]
    expected = stats.compare(rows, "v1", "v2 λ=0", metrics=("psnr",), splits=("all",), n_boot=300, seed=2)
    assert recipe == expected[0]
    crops = stats.compare(rows, "v1", "v2 λ=0", metrics=("psnr",), splits=("all",), n_boot=300, seed=2, unit="crop")
    assert (recipe["lo"], recipe["hi"]) != (crops[0]["lo"], crops[0]["hi"])
    bad = [{**r, "subject": None} if r["dataset"] == "sftl54" else r for r in rows]
    with pytest.raises(ValueError, match="'subject'"):
        frontier.decomposition(bad, "v1", "v2 λ=0", "v2 λ=0.05", n_boot=10)


# ------------------------------------------------------------------------------------------------
# The learning-rate sweep
# ------------------------------------------------------------------------------------------------
def _lr_history(start, psnrs, lpips=None, every=2):
    """A fit history: epoch 0 validated at ``start`` (None: not validated), then one validation every ``every``."""
    h = [{"epoch": 0, "val": None if start is None else {"all": {"psnr": start}}}]
    for k, p in enumerate(psnrs, 1):
        h.append({"epoch": k * every - 1, "val": None})
        v = {"psnr": p} if lpips is None else {"psnr": p, "lpips": lpips[k - 1]}
        h.append({"epoch": k * every, "val": {"all": v}})
    return h


def test_lr_table_reads_the_zero_shot_start_and_the_last_validation():
    histories = {1e-5: _lr_history(None, [30.0, 30.05]), 2e-4: _lr_history(30.0, [30.5, 30.75], [0.3, 0.25]),
                 1e-3: _lr_history(None, [29.0, 29.5, 29.25])}
    rows = frontier.lr_table(histories)
    assert [r["lr"] for r in rows] == [1e-5, 2e-4, 1e-3]
    assert [r["epochs"] for r in rows] == [4, 4, 6]
    assert [r["psnr"] for r in rows] == [30.05, 30.75, 29.25]            # the last validation, not the best
    assert math.isnan(rows[0]["psnr_start"]) and rows[1]["psnr_start"] == 30.0
    assert rows[1]["lpips"] == 0.25 and math.isnan(rows[0]["lpips"])


def test_lr_words_names_the_best_rate_and_those_below_zero_shot():
    rows = frontier.lr_table({1e-5: _lr_history(None, [30.0, 30.05]), 2e-4: _lr_history(30.0, [30.5, 30.75]),
                              1e-3: _lr_history(None, [29.0, 29.5, 29.25])})
    text = frontier.lr_words(rows, 2e-4)
    assert text == ("v1's validation PSNR after its 4 epochs, by learning rate: 1e-05 → 30.05 dB, 0.0002 → 30.75 dB, "
                    "0.001 → 29.25 dB (the zero-shot model: 30.00 dB). The best is 0.0002; this run's 0.0002 is that "
                    "rate. Below zero-shot: 0.001. These are validation crops, so the choice does not peek at the test "
                    "crops.")
    other = frontier.lr_words(rows, 1e-5)
    assert "The best is 0.0002; this run's 1e-05 is 0.70 dB below it." in other
    fine = frontier.lr_table({1e-5: _lr_history(30.0, [30.25]), 1e-4: _lr_history(None, [30.5])})
    assert "No rate fell below zero-shot." in frontier.lr_words(fine, 1e-5)


@pytest.mark.parametrize("profile", ["smoke", "demo"])
def test_the_runner_trains_every_point_with_the_main_schedule_and_the_lr_sweep(profile, monkeypatch, tmp_path):
    points, plan, _ = _plan(profile, monkeypatch, tmp_path)
    main = config.profile_params(profile)
    for pt in points:                                           # nothing but the swept value differs from main
        for nb, params in pt.params.items():
            assert params.get("v2_epochs", main["v2_epochs"]) == main["v2_epochs"]
            assert params["sweep_point"] == pt.name
    assert all(pt.name.startswith(("lpips_weight=", "seed=", "v1_lr=")) for pt in points)
    groups = {(e["group"], e["value"]): e["point"] for e in plan}
    assert groups[("lambda", main["lpips_weight"])] == "" and groups[("v1 lr", main["v1_lr"])] == ""
    assert {v for g, v in groups if g == "lambda"} == set(main["frontier_lambdas"]) | {main["lpips_weight"]}


def _subject_rows(method, psnr, lpips, n_subjects=8, per_subject=3, noise=0.0, seed=0):
    """Per-crop rows of one method: SF-TL54 crops of n_subjects subjects, PSNR and LPIPS around the given values."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_subjects):
        for k in range(per_subject):
            rows.append({"id": f"sf_{s}_{k}", "dataset": "sftl54", "subject": s, "source": f"gray/{s}_{k}.png",
                         "method": method, "psnr": psnr + noise * rng.standard_normal(),
                         "lpips": lpips + noise * rng.standard_normal()})
    return rows


def test_blend_words_says_which_of_a_trained_point_and_its_nearest_blend_dominates():
    curve = [_row("v2 λ=0", 37.0, 0.10), _row("blend α=0.33", 36.8, 0.09), _row("blend α=0.67", 36.5, 0.08),
             _row("v2 λ=1", 36.2, 0.07)]
    crops = (_subject_rows("blend α=0.33", 36.8, 0.09, noise=0.001, seed=1)
             + _subject_rows("blend α=0.67", 36.5, 0.08, noise=0.001, seed=2))
    better = crops + _subject_rows("v2 λ=0.05", 36.8, 0.07, noise=0.001, seed=3)      # same PSNR, lower LPIPS
    text = frontier.blend_words(better, curve, [_row("v2 λ=0.05", 36.8, 0.07)], n_boot=300)
    assert "traced 2 models" in text and "(blend α=0.33)" in text
    assert "the trained v2 λ=0.05 dominates the blend" in text
    worse = crops + _subject_rows("v2 λ=0.05", 36.7, 0.095, noise=0.001, seed=3)      # lower PSNR, higher LPIPS
    assert "the blend dominates the trained v2 λ=0.05" in frontier.blend_words(
        worse, curve, [_row("v2 λ=0.05", 36.7, 0.095)], n_boot=300)
    mixed = crops + _subject_rows("v2 λ=0.05", 36.9, 0.095, noise=0.001, seed=3)      # better PSNR, worse LPIPS
    assert "neither dominates the other detectably" in frontier.blend_words(
        mixed, curve, [_row("v2 λ=0.05", 36.9, 0.095)], n_boot=300)
    assert "No trained λ point lies between the ends" in frontier.blend_words(crops, curve, [], n_boot=300)
    assert frontier.blend_words(crops, [_row("v2 λ=0", 37.0, 0.1), _row("v2 λ=1", 36.2, 0.07)], []) == ""


def test_points_run_side_by_side_each_with_its_share_of_the_cores(monkeypatch, tmp_path):
    from thermsr_utils import notebook, run

    monkeypatch.setenv("THERMSR_ARTIFACTS", str(tmp_path))
    calls = []
    monkeypatch.setattr(run, "prepare_point", lambda paths: paths.root.mkdir(parents=True, exist_ok=True))
    monkeypatch.setattr(run.os, "cpu_count", lambda: 2)

    active, overlaps = set(), []

    def fake_execute(nb, params, paths, progress=True, *, threads=None, tag=""):
        import time

        calls.append((nb.name, params["sweep_point"], threads, tag, progress))
        if paths.root in active:                   # two notebooks in one folder at once would race on its files
            overlaps.append(paths.root)
        active.add(paths.root)
        time.sleep(0.05)
        active.discard(paths.root)
        return paths.executed / f"{nb.name}.ipynb"
    monkeypatch.setattr(run, "execute", fake_execute)
    nbs = {nb.name: nb for nb in notebook.discover()}
    v1, v2 = nbs["03_v1_finetune"], nbs["05_v2_finetune"]
    points = (run.sweep_points([v1], "smoke", {"seed": [1]}) + run.sweep_points([v2], "smoke", {"seed": [1]})
              + run.sweep_points([v2], "smoke", {"lpips_weight": [0.0]}))
    outputs = run.run_points(points, "smoke", progress=True, jobs=2)
    assert len(outputs) == 3 and len(calls) == 3
    assert overlaps == []                                                      # v1 and v2 at seed 1 took turns
    assert {c[2] for c in calls} == {1} and all(c[3] == c[1] for c in calls)     # one thread each, tagged
    assert not any(c[4] for c in calls)                                        # no bars side by side
    costs = {pt.name + nb.name[:2]: run._point_cost((None, pt, None, pt.notebooks)) for pt in points
             for nb in pt.notebooks}
    assert costs["seed=105"] > costs["seed=103"]                               # v2 points are queued first
    timings = config.provenance(config.run_paths("smoke"))["timings"]
    assert set(timings["points"]) == {"seed=1 03", "seed=1 05", "lpips_weight=0.0 05"}
    assert run.run_points(points, "smoke", jobs=2) == []                       # finished points are reused
    calls.clear()
    run.run_points(points, "smoke", jobs=1)
    assert calls == []
    run.run_points(points, "smoke", jobs=1, force=True)
    assert {c[2] for c in calls} == {None} and len(calls) == 3                 # one at a time: all the cores


def test_a_scorer_without_pixel_extras_computes_psnr_alone():
    from thermsr_utils import evaluate

    hr = (np.random.default_rng(0).random((2, 32, 32, 3)) * 255).astype(np.uint8)
    sr = torch.rand(2, 3, 32, 32)
    full = evaluate.Scorer().score(["a", "b"], sr, hr, np.full((2, 2), np.nan))
    light = evaluate.Scorer(pixel_extras=False).score(["a", "b"], sr, hr, np.full((2, 2), np.nan))
    assert np.allclose(full["psnr"], light["psnr"]) and np.isfinite(full["ssim"]).all()
    assert all(np.isnan(light[k]).all() for k in ("ssim", "psnr_y", "ssim_y", "grad_ratio", "hf_ratio"))
