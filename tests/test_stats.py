"""Paired bootstrap intervals, verdicts, comparisons and the recommendation logic (thermsr_utils.stats)."""
import math
import random

import numpy as np
import pytest

from thermsr_utils import stats


# ------------------------------------------------------------------------------------------------
# paired_bootstrap
# ------------------------------------------------------------------------------------------------
def test_known_shift_is_found_with_an_interval_around_it():
    rng = np.random.default_rng(1)
    a = rng.normal(30, 2, 40)
    b = a + 1 + rng.normal(0, 0.1, 40)
    ci = stats.paired_bootstrap(a, b)
    assert abs(ci["diff"] - 1) < 0.05
    assert 0 < ci["lo"] <= 1 <= ci["hi"]
    assert ci["n"] == 40 and ci["n_dropped"] == 0
    assert stats.verdict(ci, +1) == "better" and stats.verdict(ci, -1) == "worse"


def test_identical_arrays_give_a_degenerate_interval_at_zero():
    a = np.random.default_rng(2).normal(0, 1, 25)
    ci = stats.paired_bootstrap(a, a.copy())
    assert ci["diff"] == 0 and ci["lo"] == 0 and ci["hi"] == 0
    assert stats.verdict(ci, +1) == "no detectable difference"


def test_pure_noise_interval_spans_zero():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, 30), rng.normal(0, 1, 30)
    ci = stats.paired_bootstrap(a, b)
    assert ci["lo"] < 0 < ci["hi"]
    assert stats.verdict(ci, +1) == "no detectable difference"


def test_interval_width_follows_the_level():
    rng = np.random.default_rng(5)
    a, b = rng.normal(0, 1, 200), rng.normal(0, 1, 200)
    se = np.std(b - a, ddof=1) / np.sqrt(200)
    wide, narrow = stats.paired_bootstrap(a, b, level=0.95), stats.paired_bootstrap(a, b, level=0.5)
    assert wide["hi"] - wide["lo"] == pytest.approx(2 * 1.96 * se, rel=0.15)
    assert wide["lo"] < narrow["lo"] <= narrow["hi"] < wide["hi"] and wide["level"] == 0.95


def test_non_finite_pairs_are_dropped_and_counted():
    a = np.array([1.0, 2.0, np.nan, 4.0, 5.0, 6.0])
    b = np.array([2.0, np.inf, 3.0, 5.0, np.nan, 7.0])
    ci = stats.paired_bootstrap(a, b)
    assert ci["n"] == 3 and ci["n_dropped"] == 3
    assert ci["diff"] == pytest.approx(1.0) and ci["lo"] == pytest.approx(1.0) and ci["hi"] == pytest.approx(1.0)


def test_nothing_finite_gives_nans():
    ci = stats.paired_bootstrap([np.nan, 1.0], [2.0, np.nan])
    assert ci["n"] == 0 and ci["n_dropped"] == 2
    assert all(math.isnan(ci[k]) for k in ("diff", "lo", "hi"))
    assert stats.verdict(ci, +1) == "not measured"


def test_median_is_the_difference_of_medians():
    a = [1.0, 2.0, 3.0, 4.0, 100.0]   # median 3 (mean 22)
    b = [2.0, 4.0, 7.0, 9.0, 10.0]    # median 7 (mean 6.4)
    med = stats.paired_bootstrap(a, b, stat="median")
    assert med["diff"] == pytest.approx(4.0) and med["stat"] == "median"
    assert med["lo"] <= 4.0 <= med["hi"]
    assert stats.paired_bootstrap(a, b, stat="mean")["diff"] == pytest.approx(6.4 - 22.0)


def test_same_seed_same_result_other_seed_other_endpoints():
    rng = np.random.default_rng(4)
    a, b = rng.normal(0, 1, 30), rng.normal(0.3, 1, 30)
    first, again = stats.paired_bootstrap(a, b, seed=7), stats.paired_bootstrap(a, b, seed=7)
    other = stats.paired_bootstrap(a, b, seed=8)
    assert first == again
    assert first["diff"] == other["diff"]
    assert (first["lo"], first["hi"]) != (other["lo"], other["hi"])


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="same length"):
        stats.paired_bootstrap([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="stat"):
        stats.paired_bootstrap([1.0], [1.0], stat="mode")


# ------------------------------------------------------------------------------------------------
# verdict
# ------------------------------------------------------------------------------------------------
def test_verdict_respects_direction_for_lower_is_better_metrics():
    lower = {"lo": -0.03, "hi": -0.01}
    higher = {"lo": 0.01, "hi": 0.03}
    d = stats.METRIC_DIRECTION["lpips"]
    assert d == -1
    assert stats.verdict(lower, d) == "better" and stats.verdict(higher, d) == "worse"
    assert stats.verdict(lower, "lpips") == "better" and stats.verdict(lower, "psnr") == "worse"
    assert stats.verdict({"lo": -0.01, "hi": 0.02}, d) == "no detectable difference"
    assert stats.verdict({"lo": math.nan, "hi": math.nan}, d) == "not measured"


def test_metric_stat_is_median_only_for_the_nose():
    assert stats.METRIC_STAT["nose_err_px"] == "median"
    assert {v for k, v in stats.METRIC_STAT.items() if k != "nose_err_px"} == {"mean"}


def test_derive_gaps():
    rows = stats.derive_gaps([{"grad_ratio": 0.8, "hf_ratio": 1.25}, {"grad_ratio": 1.1}])
    assert rows[0]["grad_gap"] == pytest.approx(0.2) and rows[0]["hf_gap"] == pytest.approx(0.25)
    assert rows[1]["grad_gap"] == pytest.approx(0.1) and math.isnan(rows[1]["hf_gap"])


# ------------------------------------------------------------------------------------------------
# compare / find / format_diff
# ------------------------------------------------------------------------------------------------
def _rows(seed=0, n_each=15):
    """Two methods over n_each crops per dataset: "new" is +2 dB on SF-TL54 crops, +0 on ThermEval-D."""
    rng = np.random.default_rng(seed)
    base, new = [], []
    for dataset, shift in (("sftl54", 2.0), ("thermeval", 0.0)):
        for k in range(n_each):
            cid = f"{dataset}-{k}"
            p = float(rng.normal(30, 1))
            lp = float(rng.uniform(0.1, 0.3))
            nose = float(rng.uniform(1, 5))
            base.append({"id": cid, "dataset": dataset, "method": "old", "psnr": p, "ssim": 0.9, "lpips": lp,
                         "dists": lp / 2, "nose_err_px": nose, "grad_ratio": 0.8, "hf_ratio": 0.7})
            new.append({"id": cid, "dataset": dataset, "method": "new", "psnr": p + shift + float(rng.normal(0, .05)),
                        "ssim": 0.9, "lpips": lp - 0.05, "dists": lp / 2, "nose_err_px": nose if k else math.nan,
                        "grad_ratio": 0.9, "hf_ratio": 0.7})
    return base, new


def test_compare_pairs_by_id_whatever_the_row_order_and_splits_use_their_own_crops():
    base, new = _rows()
    random.Random(0).shuffle(new)
    out = stats.compare(base + new, "old", "new", n_boot=500)
    assert {(c["split"], c["metric"]) for c in out} == {(s, m) for s in stats.SPLITS for m in stats.DEFAULT_METRICS}
    psnr = {s: stats.find(out, "psnr", s) for s in stats.SPLITS}
    assert psnr["SF-TL54"]["diff"] == pytest.approx(2.0, abs=0.05) and psnr["SF-TL54"]["verdict"] == "better"
    assert abs(psnr["ThermEval-D"]["diff"]) < 0.05 and psnr["ThermEval-D"]["n"] == 15
    assert psnr["all"]["diff"] == pytest.approx(1.0, abs=0.05) and psnr["all"]["n"] == 30
    sf = [r for r in base if r["dataset"] == "sftl54"]
    assert psnr["SF-TL54"]["base_value"] == pytest.approx(np.mean([r["psnr"] for r in sf]))
    lp = stats.find(out, "lpips")
    assert lp["diff"] == pytest.approx(-0.05) and lp["verdict"] == "better"
    assert stats.find(out, "ssim")["verdict"] == "no detectable difference"
    nose = stats.find(out, "nose_err_px", "SF-TL54")
    assert nose["stat"] == "median" and nose["n"] == 14 and nose["n_dropped"] == 1
    for c in out:
        assert c["lo"] <= c["diff"] <= c["hi"]
        assert c["new_value"] - c["base_value"] == pytest.approx(c["diff"])


def test_compare_respects_ids_and_derives_gaps():
    base, new = _rows()
    ids = [f"sftl54-{k}" for k in range(5)]
    out = stats.compare(base + new, "old", "new", metrics=("psnr", "grad_gap"), ids=ids, n_boot=200)
    assert stats.find(out, "psnr")["n"] == 5 and stats.find(out, "psnr", "ThermEval-D")["n"] == 0
    assert stats.find(out, "psnr", "ThermEval-D")["verdict"] == "not measured"
    gap = stats.find(out, "grad_gap", "SF-TL54")
    assert gap["diff"] == pytest.approx(-0.1) and gap["verdict"] == "better"


def test_compare_raises_clearly_for_an_absent_method_or_no_shared_crops():
    base, new = _rows()
    with pytest.raises(ValueError, match="'v9' has no rows"):
        stats.compare(base + new, "old", "v9")
    moved = [{**r, "id": "x" + r["id"]} for r in new]
    with pytest.raises(ValueError, match="share no crop ids"):
        stats.compare(base + moved, "old", "new")


def test_find_names_what_is_missing():
    base, new = _rows()
    out = stats.compare(base + new, "old", "new", metrics=("psnr",), n_boot=100)
    with pytest.raises(KeyError, match="'lpips'"):
        stats.find(out, "lpips")
    assert stats.find(out, "psnr", "SF-TL54")["split"] == "SF-TL54"


def test_format_diff():
    c = {"metric": "psnr", "diff": 1.234, "lo": 0.981, "hi": 1.49}
    assert stats.format_diff(c) == "+1.23 dB [+0.98, +1.49]"
    assert stats.format_diff({**c, "metric": "ssim", "diff": -0.0123, "lo": -0.02, "hi": -0.004}) == \
        "-0.012 [-0.020, -0.004]"
    assert stats.format_diff({**c, "metric": "lpips", "diff": -0.05, "lo": -0.06, "hi": -0.04}) == \
        "-0.0500 [-0.0600, -0.0400]"
    assert stats.format_diff({**c, "metric": "nose_err_px", "diff": 0.5, "lo": -0.25, "hi": 1.0}) == \
        "+0.50 px [-0.25, +1.00]"
    assert stats.format_diff({**c, "diff": -0.0, "lo": -0.0, "hi": 0.0}) == "+0.00 dB [+0.00, +0.00]"
    assert stats.format_diff(c, digits=1) == "+1.2 dB [+1.0, +1.5]"


def test_write_comparisons(tmp_path):
    base, new = _rows()
    out = stats.compare(base + new, "old", "new", n_boot=100)
    csv_path, md_path = stats.write_comparisons(out, tmp_path / "table", "profile test")
    text = md_path.read_text()
    assert "old → new" in text and "*profile test*" in text and text.count("\n| ") == len(out)
    assert csv_path.read_text().splitlines()[0].startswith("base,new,split,metric")


def test_read_comparisons_gives_back_what_was_written(tmp_path):
    base, new = _rows()
    out = stats.compare(base + new, "old", "new", n_boot=100)
    csv_path, _ = stats.write_comparisons(out, tmp_path / "table", "profile test")
    back = stats.read_comparisons(csv_path)
    assert len(back) == len(out)
    for a, b in zip(out, back):
        assert (b["base"], b["new"], b["split"], b["metric"], b["verdict"]) == (a["base"], a["new"], a["split"],
                                                                                a["metric"], a["verdict"])
        assert isinstance(b["n"], int) and b["n"] == a["n"]
        for key in ("diff", "lo", "hi", "base_value", "new_value"):
            assert b[key] == pytest.approx(a[key], nan_ok=True)
    assert stats.format_diff(stats.find(back, "psnr", "SF-TL54")) == stats.format_diff(stats.find(out, "psnr", "SF-TL54"))


# ------------------------------------------------------------------------------------------------
# recommend
# ------------------------------------------------------------------------------------------------
def _c(base, new, metric, base_value, diff, lo, hi, split="all"):
    c = {"base": base, "new": new, "split": split, "metric": metric, "stat": stats.METRIC_STAT[metric],
         "base_value": base_value, "new_value": base_value + diff, "diff": diff, "lo": lo, "hi": hi, "n": 30}
    return {**c, "verdict": stats.verdict(c, stats.METRIC_DIRECTION[metric])}


def _table(v2_psnr_vs_v1=(-0.8, -1.0, -0.6)):
    """zs 30 dB, v1 31 dB, v2 31 + v2_psnr_vs_v1; v2 best on LPIPS and DISTS, v1 worst on the nose."""
    d, lo, hi = v2_psnr_vs_v1
    v1_vs_zs = [_c("zs", "v1", "psnr", 30.0, 1.0, 0.8, 1.2), _c("zs", "v1", "lpips", 0.20, 0.01, -0.01, 0.03),
                _c("zs", "v1", "dists", 0.10, 0.00, -0.01, 0.01), _c("zs", "v1", "nose_err_px", 2.0, 1.0, 0.5, 1.5)]
    v2_vs_v1 = [_c("v1", "v2", "psnr", 31.0, d, lo, hi), _c("v1", "v2", "lpips", 0.21, -0.10, -0.12, -0.08),
                _c("v1", "v2", "dists", 0.10, -0.05, -0.06, -0.04),
                _c("v1", "v2", "nose_err_px", 3.0, -1.0, -1.5, -0.5)]
    v2_vs_zs = [_c("zs", "v2", "psnr", 30.0, 1.0 + d, 0.8 + lo, 1.2 + hi),
                _c("zs", "v2", "lpips", 0.20, -0.09, -0.11, -0.07), _c("zs", "v2", "dists", 0.10, -0.05, -0.06, -0.04),
                _c("zs", "v2", "nose_err_px", 2.0, 0.0, -0.5, 0.5)]
    return {("zs", "v1"): v1_vs_zs, ("v1", "v2"): v2_vs_v1, ("zs", "v2"): v2_vs_zs}


def test_recommend_picks_the_highest_psnr_and_the_perceptual_winner():
    pixel, perceptual = stats.recommend(_table())
    assert "maximum PSNR" in pixel["use case"]
    assert pixel["pick"] == "v1"
    assert "+0.80 dB [+0.60, +1.00]" in pixel["why"]  # v1 − v2, the flipped v2 − v1 interval
    assert perceptual["pick"] == "v2"  # better than both others on LPIPS and DISTS
    assert "-0.1000 [-0.1200, -0.0800]" in perceptual["why"]
    assert all(set(m) == {"use case", "pick", "why"} for m in (pixel, perceptual))


def test_recommend_reports_a_tie_when_the_psnr_interval_spans_zero():
    pixel, _ = stats.recommend(_table(v2_psnr_vs_v1=(0.1, -0.2, 0.4)))
    assert pixel["pick"] == "v2 ≈ v1 (no detectable PSNR difference)"
    assert "PSNR v2 − v1 +0.10 dB [-0.20, +0.40] (no detectable difference)" in pixel["why"]


def test_recommend_reports_a_perceptual_tie():
    table = _table()
    # v2 still beats both others on LPIPS, no longer on DISTS, and zero-shot now beats v2 (and v1) on the nose
    table[("zs", "v2")] = [_c("zs", "v2", "psnr", 30.0, 0.2, 0.0, 0.4),
                           _c("zs", "v2", "lpips", 0.20, -0.09, -0.11, -0.07),
                           _c("zs", "v2", "dists", 0.10, 0.0, -0.01, 0.01),
                           _c("zs", "v2", "nose_err_px", 2.0, 1.0, 0.5, 1.5)]
    _, perceptual = stats.recommend(table)
    assert perceptual["pick"] == "zs ≈ v2 (each better than all others on 1 metric)"
    assert "nose median zs − v2 -1.00 px [-1.50, -0.50] (better)" in perceptual["why"]


def test_recommend_with_no_perceptual_winner_ties_everyone():
    table = {k: [c if c["metric"] == "psnr" else {**c, "lo": -1.0, "hi": 1.0, "verdict": "no detectable difference"}
                 for c in v] for k, v in _table().items()}
    _, perceptual = stats.recommend(table)
    assert perceptual["pick"].startswith("zs ≈ v1 ≈ v2")


def test_recommend_needs_every_pair():
    table = _table()
    del table[("zs", "v2")]
    with pytest.raises(ValueError, match="between"):
        stats.recommend(table)


def test_aggregate_hand_computed_means_medians_and_failures():
    from thermsr_utils import evaluate

    def row(i, dataset, psnr, err, hr_found=True, sr_found=True):
        return {"id": f"c{i}", "dataset": dataset, "method": "m", "psnr": psnr, "ssim": 0.5 + i / 10,
                "psnr_y": psnr + 1, "ssim_y": 0.9, "lpips": 0.1 * i, "dists": float("nan"), "lpips_vgg": 0.2,
                "grad_ratio": 1.0, "hf_ratio": 2.0, "nose_hr_found": hr_found, "nose_sr_found": sr_found,
                "nose_err_px": err, "nose_gt_err_hr": float("nan"), "nose_gt_err_sr": 3.0}

    rows = [row(0, "sftl54", 30.0, 1.0), row(1, "sftl54", 32.0, 5.0), row(2, "thermeval", 40.0, 2.0),
            row(3, "thermeval", 34.0, float("nan"), sr_found=False)]
    table = {r["split"]: r for r in evaluate.aggregate(rows)}
    assert list(table) == ["all", "SF-TL54", "ThermEval-D"]
    assert table["all"]["n"] == 4 and table["all"]["psnr"] == pytest.approx(34.0)
    assert table["SF-TL54"]["psnr"] == pytest.approx(31.0) and table["ThermEval-D"]["psnr"] == pytest.approx(37.0)
    assert table["all"]["ssim"] == pytest.approx(0.65) and table["all"]["lpips"] == pytest.approx(0.15)
    assert table["all"]["nose_median"] == pytest.approx(2.0) and table["all"]["nose_mean"] == pytest.approx(8 / 3)
    assert table["SF-TL54"]["nose_median"] == pytest.approx(3.0)
    assert (table["all"]["nose_failed"], table["all"]["nose_failed_sr"], table["all"]["nose_failed_hr"]) == (1, 1, 0)
    assert table["ThermEval-D"]["nose_median"] == pytest.approx(2.0) and table["ThermEval-D"]["nose_failed"] == 1
    assert math.isnan(table["all"]["dists"])          # not computed anywhere: NaN, not 0
