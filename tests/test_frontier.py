"""The frontier analysis of notebook 07: non-dominated points, the bend, seed spread, the table, and the
single-method bootstrap interval it rests on."""
import math

import numpy as np
import pytest

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


def test_bend_is_the_point_farthest_from_the_chord():
    lam = [0.0, 0.1, 0.5, 1.0]
    psnr = [30.0, 29.9, 29.0, 27.0]       # PSNR holds, then drops
    lpips = [0.30, 0.15, 0.12, 0.11]      # LPIPS falls fast, then flattens
    assert frontier.bend(lam, psnr, lpips) == 0.1
    assert frontier.bend(list(reversed(lam)), list(reversed(psnr)), list(reversed(lpips))) == 0.1  # order by λ
    assert frontier.bend([0.0, 1.0], [30, 29], [0.3, 0.1]) is None        # two points: no bend
    assert frontier.bend(lam, [30.0] * 4, lpips) is None                   # a flat axis: undefined


def test_steps_and_spread():
    rows = [_row("x", 30, 0.3), _row("y", 29, 0.2), _row("z", 29.5, 0.1)]
    assert frontier.steps(rows, "lpips") == (2, 2)
    assert frontier.steps(rows, "psnr") == (1, 2)
    assert frontier.spread(rows, "psnr") == pytest.approx(1.0)
    assert math.isnan(frontier.spread([_row("q", math.nan, 0.1)], "psnr"))


def test_summarise_gives_each_metric_with_an_interval_around_it():
    rng = np.random.default_rng(0)
    rows = [{"method": "m", "id": str(i), "psnr": 30 + rng.normal(), "ssim": 0.9, "lpips": 0.2 + 0.01 * rng.normal(),
             "dists": 0.1, "nose_err_px": float(i % 5) if i else math.nan} for i in range(40)]
    (s,) = frontier.summarise(rows, ["m"], n_boot=300)
    assert s["psnr"] == pytest.approx(np.mean([r["psnr"] for r in rows]))
    assert s["nose_err_px"] == pytest.approx(np.nanmedian([r["nose_err_px"] for r in rows]))
    assert s["nose_n"] == 39
    for m in frontier.METRICS:
        assert s[f"{m}_lo"] <= s[m] <= s[f"{m}_hi"]
    assert s["psnr_hi"] - s["psnr_lo"] > 0.1
    with pytest.raises(ValueError, match="no rows of method 'absent'"):
        frontier.summarise(rows, ["absent"])


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
    assert "| v2 λ=0.1 | 10 | 30.12 [30.11, 30.13] |" in text and "0.2123 [0.2023, 0.2223]" in text
    csv_path, md_path = frontier.write_table(rows, tmp_path / "t", "profile test")
    assert md_path.read_text() == text and "psnr_lo" in csv_path.read_text().splitlines()[0]


def test_planned_points_are_named_like_the_runner_names_them():
    entries = frontier.planned("demo", [0.0, 0.05], [0, 1], 2)
    by_label = {e.label: e for e in entries}
    assert by_label["v2 λ=0"].paths.point == "lpips_weight=0.0,v2_epochs=2"
    assert by_label["v2 λ=0.05"].paths.point == "v2_epochs=2" == by_label["v2 seed 0"].paths.point
    assert by_label["v1 seed 0"].paths.point == ""                     # the main run itself
    assert by_label["v1 seed 1"].paths.point == "seed=1"
    assert by_label["v2 raw weights"].checkpoint.name == "best_raw"
    assert by_label["v2 λ=0"].paths.crops == config.run_paths("demo").crops
