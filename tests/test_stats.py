"""Paired bootstrap intervals, verdicts, comparisons and the recommendation logic (thermsr_utils.stats)."""
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

from thermsr_utils import stats
from thermsr_utils.metric_specs import METRICS


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


def test_no_groups_keeps_the_crop_bootstrap_and_its_draws():
    rng = np.random.default_rng(9)
    a, b = rng.normal(0, 1, 30), rng.normal(0.3, 1, 30)
    ci = stats.paired_bootstrap(a, b, n_boot=300, seed=2)
    idx = np.random.default_rng(2).integers(0, 30, size=(300, 30))
    lo, hi = np.quantile(b[idx].mean(axis=1) - a[idx].mean(axis=1), [(1 - 0.95) / 2, (1 + 0.95) / 2])
    assert (ci["lo"], ci["hi"]) == (min(lo, ci["diff"]), max(hi, ci["diff"]))
    assert ci["unit"] == "crop" and ci["n_units"] == 30


def test_p_value_is_near_zero_for_a_clear_difference_and_large_for_none():
    rng = np.random.default_rng(11)
    a = rng.normal(30, 1, 60)
    groups = np.repeat(np.arange(20), 3)
    clear = stats.paired_bootstrap(a, a + 1 + rng.normal(0, 0.2, 60), groups=groups)
    assert clear["p"] == 0.0 and clear["lo"] > 0                    # no replicate at or below zero
    none = stats.paired_bootstrap(a, a + rng.normal(0, 1, 60), groups=groups)
    assert none["p"] > 0.2 and none["lo"] < 0 < none["hi"]
    assert stats.paired_bootstrap(a, a.copy())["p"] == 1.0          # every replicate is exactly zero
    assert math.isnan(stats.paired_bootstrap([np.nan], [1.0])["p"])


def test_p_value_agrees_with_the_interval_and_counts_both_tails():
    rng = np.random.default_rng(12)
    for shift in np.linspace(0, 0.6, 13):
        a = rng.normal(0, 1, 40)
        ci = stats.paired_bootstrap(a, a + shift + rng.normal(0, 1, 40), n_boot=1000, seed=3)
        assert (ci["p"] < 0.05) == (ci["lo"] > 0 or ci["hi"] < 0), (shift, ci)
    boot = np.array([-1.0, 0.0, 1.0, 2.0, 3.0])                     # 2 of 5 ≤ 0, 4 of 5 ≥ 0
    assert stats.bootstrap_p(boot) == pytest.approx(0.8)
    assert stats.bootstrap_p([1.0, 2.0]) == 0.0 and stats.bootstrap_p(-boot[2:]) == 0.0


def test_holm_adjusts_like_the_textbook():
    assert stats.holm_adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm_adjust([0.01, 0.02, 0.03, 0.04]) == pytest.approx([0.04, 0.06, 0.06, 0.06])
    assert stats.holm_adjust([0.5, 0.6]) == pytest.approx([1.0, 1.0])             # capped at 1
    adj = stats.holm_adjust([0.02, math.nan, 0.01])                                 # NaN: no test, not counted
    assert adj[0] == pytest.approx(0.02) and math.isnan(adj[1]) and adj[2] == pytest.approx(0.02)


def test_holm_corrects_only_its_family_and_words_the_verdict():
    def c(metric, diff, p):
        return {"base": "a", "new": "b", "split": "all", "metric": metric, "base_value": 1.0, "new_value": 1.0 + diff,
                "diff": diff, "lo": diff, "hi": diff,
                "verdict": "x", "p": p}
    rows = [c("nose_err_px", 1.0, 0.01), c("nose_fail", -0.05, 0.04), c("nose2_err_px", -0.5, 0.03),
            c("psnr", 1.0, 0.04), c("nose_gt_err_sr", math.nan, math.nan)]
    out = stats.holm(rows)
    assert [r.get("p_holm") for r in out[:3]] == pytest.approx([0.03, 0.06, 0.06])
    assert [r["verdict_holm"] for r in out[:3]] == ["worse", "indistinguishable", "indistinguishable"]
    assert "p_holm" not in out[3] and out[3] == rows[3]                               # outside the family
    assert out[4]["verdict_holm"] == "not measured" and out[0]["holm_m"] == 3
    assert all("p_holm" not in r for r in rows)                                       # copies, the input untouched
    assert [r["verdict_holm"] for r in stats.holm(rows, alpha=0.1)[:3]] == ["worse", "better", "better"]
    psnr_too = stats.holm(rows, family=lambda r: r["metric"] in ("psnr", "nose_err_px"))
    assert [r.get("p_holm") for r in psnr_too[:4]] == [0.02, None, None, 0.04]
    assert stats.final_verdict(out[1]) == "no detectable difference" and stats.final_verdict(rows[1]) == "x"
    assert stats.flip(out[0])["verdict_holm"] == "better"
    with pytest.raises(ValueError, match="no bootstrap p-value"):
        stats.holm([{k: v for k, v in rows[0].items() if k != "p"}])


# ------------------------------------------------------------------------------------------------
# Resampling units (subjects / source frames) instead of crops
# ------------------------------------------------------------------------------------------------
def test_identical_crops_of_equal_subjects_give_the_one_crop_per_subject_interval():
    rng = np.random.default_rng(6)
    base, new = rng.integers(20, 40, 12).astype(float), rng.integers(20, 40, 12).astype(float)  # exact sums
    k = 4                                          # 4 identical crops per subject, the subjects interleaved
    groups = [f"sftl54/subject {s}" for s in range(12)] * k
    crops_a, crops_b = np.tile(base, k), np.tile(new, k)
    for stat in ("mean", "median"):
        cluster = stats.paired_bootstrap(crops_a, crops_b, stat, n_boot=500, seed=3, groups=groups)
        one = stats.paired_bootstrap(base, new, stat, n_boot=500, seed=3)
        assert (cluster["diff"], cluster["lo"], cluster["hi"]) == (one["diff"], one["lo"], one["hi"])
        assert (cluster["n"], cluster["n_units"], cluster["unit"], one["n_units"]) == (48, 12, "cluster", 12)
        single = stats.interval(crops_b, stat, n_boot=500, seed=3, groups=groups)
        assert single == {**stats.interval(new, stat, n_boot=500, seed=3), "n": 48, "unit": "cluster"}
        crops = stats.paired_bootstrap(crops_a, crops_b, stat, n_boot=500, seed=3)
        assert crops["hi"] - crops["lo"] < cluster["hi"] - cluster["lo"]   # crops pretend to be 48 subjects


def test_correlated_crops_of_a_subject_widen_the_interval():
    rng = np.random.default_rng(7)
    groups = np.repeat(np.arange(15), 8)               # 15 subjects of 8 crops
    a = rng.normal(30, 1, 120)
    b = a + 0.5 + rng.normal(0, 1, 15)[groups] + rng.normal(0, 0.05, 120)
    for stat in ("mean", "median"):
        crop = stats.paired_bootstrap(a, b, stat, seed=1)
        cluster = stats.paired_bootstrap(a, b, stat, seed=1, groups=groups)
        assert cluster["diff"] == crop["diff"] and cluster["lo"] <= cluster["diff"] <= cluster["hi"]
        assert cluster["hi"] - cluster["lo"] > 1.5 * (crop["hi"] - crop["lo"])
        assert (crop["n_units"], cluster["n_units"]) == (120, 15)


def test_clusters_of_unequal_size_match_a_brute_force_bootstrap():
    rng = np.random.default_rng(8)
    groups = rng.permutation(np.repeat(np.arange(10), rng.integers(1, 6, 10)))
    a, b = rng.normal(0, 1, groups.size), rng.normal(0.2, 1, groups.size)
    keys = list(dict.fromkeys(groups.tolist()))        # units are drawn in order of first appearance
    idx = np.random.default_rng(4).integers(0, 10, size=(200, 10))
    members = [np.concatenate([np.flatnonzero(groups == keys[u]) for u in row]) for row in idx]
    for stat, f in (("mean", np.mean), ("median", np.median)):
        ci = stats.paired_bootstrap(a, b, stat, n_boot=200, seed=4, groups=groups)
        lo, hi = np.quantile([f(b[m]) - f(a[m]) for m in members], [(1 - 0.95) / 2, (1 + 0.95) / 2])
        assert ci["lo"] == pytest.approx(min(lo, ci["diff"]), abs=1e-12)
        assert ci["hi"] == pytest.approx(max(hi, ci["diff"]), abs=1e-12)


def test_units_are_counted_among_finite_pairs_and_groups_must_match():
    ci = stats.paired_bootstrap([1.0, 2.0, 3.0, 4.0], [2.0, np.nan, 4.0, 6.0], groups=["x", "y", "x", "z"])
    assert (ci["n"], ci["n_units"], ci["n_dropped"]) == (3, 2, 1)
    empty = stats.interval([np.nan], groups=["x"])
    assert empty["n_units"] == 0 and math.isnan(empty["value"])
    with pytest.raises(ValueError, match="one key per element"):
        stats.paired_bootstrap([1.0, 2.0], [1.0, 2.0], groups=["x"])


def test_resampling_unit_is_the_subject_or_the_source_frame():
    records = json.loads((Path(__file__).parents[1] / "data_manifest" / "demo.json").read_text())["records"]
    sf = next(r for r in records if r["dataset"] == "sftl54")
    te = [r for r in records if r["dataset"] == "thermeval"][:2]
    assert stats.resampling_unit(sf) == f"sftl54/subject {sf['subject']}"
    assert stats.resampling_unit(te[0]) == stats.resampling_unit(te[1]) == f"thermeval/{te[0]['source']}"
    assert stats.resampling_unit({"id": "te_1_0", "dataset": "thermeval", "subject": None,
                                  "source": "images/rec100_00001.png"}) == "thermeval/images/rec100_00001.png"
    assert stats.resampling_unit({"id": "sf_1", "dataset": "sftl54", "subject": 7.0, "source": "a.png"}) == \
        "sftl54/subject 7"
    assert stats.resampling_unit({"id": "x", "dataset": "other", "source": "raw/x.png"}) == "raw/x.png"
    assert stats.BOOTSTRAP_UNIT == "subject (SF-TL54) / source frame (ThermEval-D)"


@pytest.mark.parametrize("row, field", [({"id": "sf_9", "dataset": "sftl54", "source": "a.png"}, "subject"),
                                        ({"id": "sf_9", "dataset": "sftl54", "subject": math.nan}, "subject"),
                                        ({"id": "te_9", "dataset": "thermeval", "subject": None, "source": ""}, "source"),
                                        ({"id": "te_9", "dataset": "thermeval"}, "source"),
                                        ({"id": "o_9", "dataset": "other", "source": None}, "source"),
                                        ({"id": "n_9", "source": "a.png"}, "dataset")])
def test_resampling_unit_names_the_crop_and_the_missing_field_in_one_sentence(row, field):
    with pytest.raises(ValueError) as err:
        stats.resampling_unit(row)
    text = str(err.value)
    assert f"crop {row['id']!r}" in text and f"no {field!r}" in text
    assert text.endswith(".") and text.count(". ") == 0 and "\n" not in text


# ------------------------------------------------------------------------------------------------
# verdict
# ------------------------------------------------------------------------------------------------
def test_verdict_respects_direction_for_lower_is_better_metrics():
    lower = {"lo": -0.03, "hi": -0.01}
    higher = {"lo": 0.01, "hi": 0.03}
    d = METRICS["lpips"].direction
    assert d == -1
    assert stats.verdict(lower, d) == "better" and stats.verdict(higher, d) == "worse"
    assert stats.verdict(lower, "lpips") == "better" and stats.verdict(lower, "psnr") == "worse"
    assert stats.verdict({"lo": -0.01, "hi": 0.02}, d) == "no detectable difference"
    assert stats.verdict({"lo": math.nan, "hi": math.nan}, d) == "not measured"


def test_metric_stat_is_median_only_for_the_nose_errors():
    medians = {"nose_err_px", "nose_gt_err_sr", "nose2_err_px", "nose2_gt_err_sr"}
    assert {k for k, m in METRICS.items() if m.stat == "median"} == medians
    assert {m.stat for k, m in METRICS.items() if k not in medians} == {"mean"}
    assert METRICS["nose_fail"].stat == METRICS["nose2_fail"].stat == "mean"


def test_derive_gaps():
    rows = stats.derive_gaps([{"grad_ratio": 0.8, "hf_ratio": 1.25}, {"grad_ratio": 1.1}])
    assert rows[0]["grad_gap"] == pytest.approx(0.2) and rows[0]["hf_gap"] == pytest.approx(0.25)
    assert rows[1]["grad_gap"] == pytest.approx(0.1) and math.isnan(rows[1]["hf_gap"])


# ------------------------------------------------------------------------------------------------
# compare / find / format_diff
# ------------------------------------------------------------------------------------------------
def _rows(seed=0, n_each=15):
    """Two methods over n_each crops per dataset, 3 crops per subject / source frame: "new" is +2 dB on SF-TL54
    crops, +0 on ThermEval-D."""
    rng = np.random.default_rng(seed)
    base, new = [], []
    for dataset, shift in (("sftl54", 2.0), ("thermeval", 0.0)):
        for k in range(n_each):
            cid = f"{dataset}-{k}"
            unit = {"subject": k // 3 if dataset == "sftl54" else None, "source": f"images/{dataset}_{k // 3}.png"}
            p = float(rng.normal(30, 1))
            lp = float(rng.uniform(0.1, 0.3))
            nose = float(rng.uniform(1, 5))
            base.append({"id": cid, "dataset": dataset, **unit, "method": "old", "psnr": p, "ssim": 0.9, "lpips": lp,
                         "dists": lp / 2, "nose_err_px": nose, "grad_ratio": 0.8, "hf_ratio": 0.7})
            new.append({"id": cid, "dataset": dataset, **unit, "method": "new",
                        "psnr": p + shift + float(rng.normal(0, .05)), "ssim": 0.9, "lpips": lp - 0.05,
                        "dists": lp / 2, "nose_err_px": nose if k else math.nan, "grad_ratio": 0.9, "hf_ratio": 0.7})
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


def test_compare_resamples_subjects_and_frames_and_records_the_unit():
    base, new = _rows()
    out = stats.compare(base + new, "old", "new", metrics=("psnr", "nose_err_px"), n_boot=300, seed=5)
    assert {c["unit"] for c in out} == {"subject/frame"}
    psnr = {s: stats.find(out, "psnr", s) for s in stats.SPLITS}
    assert [(psnr[s]["n"], psnr[s]["n_units"]) for s in stats.SPLITS] == [(30, 10), (15, 5), (15, 5)]
    assert stats.find(out, "nose_err_px", "SF-TL54")["n_units"] == 5     # crop 0 dropped, subject 0 kept
    sf = [(a, b) for a, b in zip(base, new) if a["dataset"] == "sftl54"]
    expect = stats.paired_bootstrap([a["psnr"] for a, _ in sf], [b["psnr"] for _, b in sf], n_boot=300, seed=5,
                                    groups=[stats.resampling_unit(a) for a, _ in sf])
    assert (psnr["SF-TL54"]["lo"], psnr["SF-TL54"]["hi"]) == (expect["lo"], expect["hi"])
    crops = stats.compare(base + new, "old", "new", metrics=("psnr",), n_boot=300, seed=5, unit="crop")
    old = stats.paired_bootstrap([a["psnr"] for a, _ in sf], [b["psnr"] for _, b in sf], n_boot=300, seed=5)
    c = stats.find(crops, "psnr", "SF-TL54")
    assert (c["unit"], c["n_units"], c["lo"], c["hi"]) == ("crop", 15, old["lo"], old["hi"])
    assert (c["lo"], c["hi"]) != (psnr["SF-TL54"]["lo"], psnr["SF-TL54"]["hi"])
    with pytest.raises(ValueError, match="unit must be one of"):
        stats.compare(base + new, "old", "new", unit="frame")


def test_compare_adds_the_nose_failure_rate_true_nose_error_and_second_model_where_rows_carry_them():
    base, new = _rows()
    rng = np.random.default_rng(3)
    for rows, fails in ((base, 0.1), (new, 0.4)):
        for r in rows:
            f1, f2 = float(rng.random() < fails), float(rng.random() < 0.2)
            r.update(nose_fail=f1, nose2_fail=f2, nose2_err_px=math.nan if f2 else r["nose_err_px"] + 0.5,
                     nose_gt_err_sr=math.nan, nose2_gt_err_sr=1.0 if rows is base else 2.0)
    out = stats.compare(base + new, "old", "new", n_boot=300)
    metrics = list(dict.fromkeys(c["metric"] for c in out))
    # the old metrics first, then the nose metrics with a finite value (no true nose here for model 1)
    assert metrics == [*stats.DEFAULT_METRICS, "nose_fail", "nose2_err_px", "nose2_fail", "nose2_gt_err_sr"]
    fail = stats.find(out, "nose_fail")
    assert fail["stat"] == "mean" and fail["n"] == 30
    assert fail["diff"] == pytest.approx(np.mean([r["nose_fail"] for r in new]) - np.mean([r["nose_fail"] for r in base]))
    assert stats.find(out, "nose2_gt_err_sr")["diff"] == 1.0 and stats.find(out, "nose2_gt_err_sr")["verdict"] == "worse"
    assert stats.find(out, "nose2_err_px")["stat"] == "median"
    assert all(0 <= c["p"] <= 1 for c in out if c["n"]) and {c["n_boot"] for c in out} == {300}
    assert list(out[0])[-3:] == ["unit", "p", "n_boot"]                  # the new fields after the old ones


def test_nose_labels_name_their_landmark_model():
    models = {"nose": "RetinaFace", "nose2": "dlib"}
    assert stats.metric_label("nose_err_px") == "nose median" == METRICS["nose_err_px"].label
    assert stats.metric_label("nose2_err_px") == "nose median (model 2)"
    assert stats.metric_label("nose_err_px", models) == "nose median (RetinaFace)"
    assert stats.metric_label("nose2_fail", models) == "nose failure rate (dlib)"
    assert stats.metric_label("nose2_gt_err_sr", {"nose": "RetinaFace"}) == "nose median to true nose (model 2)"
    assert stats.metric_label("psnr", models) == "PSNR" and stats.metric_label("xyz") == "xyz"
    assert (stats.model_name("nose"), stats.model_name("nose2", models)) == ("landmark model 1", "dlib")
    assert {METRICS[m].direction for m in stats.NOSE_METRICS} == {-1}


def test_compare_refuses_rows_without_their_unit():
    base, new = _rows()
    base[4] = {k: v for k, v in base[4].items() if k != "subject"}
    with pytest.raises(ValueError, match="crop 'sftl54-4' has no 'subject'"):
        stats.compare(base + new, "old", "new", n_boot=50)
    assert stats.find(stats.compare(base + new, "old", "new", n_boot=50, unit="crop"), "psnr")["unit"] == "crop"


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
    assert stats.format_diff({**c, "metric": "nose_fail", "diff": 0.0333, "lo": 0.01, "hi": 0.056}) == \
        "+3.3 pp [+1.0, +5.6]"
    assert stats.format_diff({**c, "metric": "nose2_gt_err_sr", "diff": -0.5, "lo": -1, "hi": 0}) == \
        "-0.50 px [-1.00, +0.00]"


def test_write_comparisons(tmp_path):
    base, new = _rows()
    out = stats.compare(base + new, "old", "new", n_boot=100)
    csv_path, md_path = stats.write_comparisons(out, tmp_path / "table", "profile test")
    text = md_path.read_text()
    assert "old → new" in text and "*profile test*" in text and text.count("\n| ") == len(out)
    assert csv_path.read_text().splitlines()[0].startswith("base,new,split,metric")
    header = text.splitlines()[0]
    assert header.startswith("| Base → New | Split | Metric | Stat | N | Base | New | New − Base [95 % CI] | "
                             "Verdict | p |") and "Holm" not in header


def test_markdown_shows_p_holm_and_rates_where_present(tmp_path):
    base, new = _rows()
    for rows, f in ((base, 0.0), (new, 1.0)):
        for k, r in enumerate(rows):
            r["nose_fail"] = f if k % 3 == 0 else 0.0
    out = stats.holm(stats.compare(base + new, "old", "new", n_boot=400, splits=("all",)))
    text = stats.comparisons_markdown(out, "cap", models={"nose": "RetinaFace"})
    assert text.splitlines()[0].endswith("| Verdict | p | p (Holm) | Verdict (Holm) |")
    fail = next(line for line in text.splitlines() if "nose failure rate (RetinaFace)" in line)
    c = stats.find(out, "nose_fail")
    assert "| 0.0 % | 33.3 % | +33.3 pp [" in fail and c["p"] == 0 and c["holm_m"] == 2
    assert fail.endswith("| worse | <0.0025 | <0.005 | worse |")                   # 1/400 and 2/400
    psnr = next(line for line in text.splitlines() if "| PSNR |" in line)
    assert psnr.endswith(" | – | – |")                                                # outside the family
    csv_path, _ = stats.write_comparisons(out, tmp_path / "t", "cap")
    back = stats.read_comparisons(csv_path)
    assert stats.find(back, "nose_fail")["p_holm"] == 0.0 and stats.find(back, "nose_fail")["holm_m"] == 2
    assert "p_holm" not in stats.find(back, "psnr") and stats.find(back, "psnr")["p"] == stats.find(out, "psnr")["p"]
    assert stats.comparisons_markdown(back, "cap") == stats.comparisons_markdown(out, "cap")


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
        assert isinstance(b["n_units"], int) and (b["n_units"], b["unit"]) == (a["n_units"], "subject/frame")
        for key in ("diff", "lo", "hi", "base_value", "new_value"):
            assert b[key] == pytest.approx(a[key], nan_ok=True)
    assert stats.format_diff(stats.find(back, "psnr", "SF-TL54")) == stats.format_diff(stats.find(out, "psnr", "SF-TL54"))


# ------------------------------------------------------------------------------------------------
# recommend
# ------------------------------------------------------------------------------------------------
def _c(base, new, metric, base_value, diff, lo, hi, split="all"):
    c = {"base": base, "new": new, "split": split, "metric": metric, "stat": METRICS[metric].stat,
         "base_value": base_value, "new_value": base_value + diff, "diff": diff, "lo": lo, "hi": hi, "n": 30}
    return {**c, "verdict": stats.verdict(c, METRICS[metric].direction)}


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
    pixel, perceptual, nose = stats.recommend(_table())
    assert "maximum PSNR" in pixel["use case"]
    assert pixel["pick"] == "v1"
    assert "+0.80 dB [+0.60, +1.00]" in pixel["why"]  # v1 − v2, the flipped v2 − v1 interval
    assert perceptual["use case"] == "perceptual quality (LPIPS, DISTS)"
    assert perceptual["pick"] == "v2"  # better than both others on LPIPS and DISTS
    assert "-0.1000 [-0.1200, -0.0800]" in perceptual["why"]
    # the evidence names the nose as measured, even where the nose did not decide the pick
    assert "nose: v2 − v1 -1.00 px [-1.50, -0.50] (better, landmark model 1)" in perceptual["why"]
    assert "nose: v2 − zs +0.00 px [-0.50, +0.50] (no detectable difference, landmark model 1)" in perceptual["why"]
    # v1 is worse than zero-shot on the nose: never the downstream pick; zero-shot and v2 are tied
    assert nose["use case"] == "downstream nose localisation (nose median)"
    assert nose["pick"] == "zs ≈ v2 (none of them worse on the nose than another; v1 measured worse on the nose)"
    assert "nose: zs − v1 -1.00 px [-1.50, -0.50] (better, landmark model 1)" in nose["why"]
    assert all(set(m) == {"use case", "pick", "why"} for m in (pixel, perceptual, nose))


def test_recommend_reports_a_tie_when_the_psnr_interval_spans_zero():
    pixel = stats.recommend(_table(v2_psnr_vs_v1=(0.1, -0.2, 0.4)))[0]
    assert pixel["pick"] == "v2 ≈ v1 (no detectable PSNR difference)"
    assert "PSNR v2 − v1 +0.10 dB [-0.20, +0.40] (no detectable difference)" in pixel["why"]


def test_recommend_reports_a_perceptual_tie_and_an_honest_nose_pick():
    table = _table()
    # v2 still beats both others on LPIPS, v1 now beats both others on DISTS, and zero-shot beats v2 (and v1) on
    # the nose
    table[("zs", "v1")][2] = _c("zs", "v1", "dists", 0.10, -0.05, -0.06, -0.04)
    table[("v1", "v2")][2] = _c("v1", "v2", "dists", 0.05, 0.02, 0.01, 0.03)
    table[("zs", "v2")] = [_c("zs", "v2", "psnr", 30.0, 0.2, 0.0, 0.4),
                           _c("zs", "v2", "lpips", 0.20, -0.09, -0.11, -0.07),
                           _c("zs", "v2", "dists", 0.10, -0.03, -0.04, -0.02),
                           _c("zs", "v2", "nose_err_px", 2.0, 1.0, 0.5, 1.5)]
    _, perceptual, nose = stats.recommend(table, models={"nose": "RetinaFace"})
    assert perceptual["pick"] == "v1 ≈ v2 (each better than all others on 1 metric)"
    assert "nose: v2 − zs +1.00 px [+0.50, +1.50] (worse, RetinaFace)" in perceptual["why"]
    assert nose["pick"] == "zs (v1, v2 measured worse on the nose)"
    assert "nose: zs − v2 -1.00 px [-1.50, -0.50] (better, RetinaFace)" in nose["why"]
    assert nose["use case"] == "downstream nose localisation (nose median (RetinaFace))"


def test_recommend_never_picks_for_the_nose_a_method_worse_on_the_second_landmark_model():
    table = _table()
    # v2 is better than v1 on landmark model 1 but worse than v1 on model 2 and fails more often there
    table[("zs", "v1")] += [_c("zs", "v1", "nose2_err_px", 2.0, 0.0, -0.3, 0.3),
                            _c("zs", "v1", "nose2_fail", 0.10, 0.0, -0.02, 0.02)]
    table[("v1", "v2")] += [_c("v1", "v2", "nose2_err_px", 2.0, 0.87, 0.21, 1.44),
                            _c("v1", "v2", "nose2_fail", 0.10, 0.033, 0.01, 0.056)]
    table[("zs", "v2")] += [_c("zs", "v2", "nose2_err_px", 2.0, 0.0, -0.3, 0.3),       # v2 fails less than zs
                            _c("zs", "v2", "nose2_fail", 0.10, -0.033, -0.056, -0.01)]
    models = {"nose": "RetinaFace", "nose2": "dlib"}
    _, perceptual, nose = stats.recommend(table, models=models)
    assert perceptual["pick"] == "v2"                                 # LPIPS and DISTS still say v2 ...
    assert "nose: v2 − v1 +0.87 px [+0.21, +1.44] (worse, dlib)" in perceptual["why"]   # ... and say the nose
    assert nose["pick"] == "none (each method is measured worse than another on some nose metric)"
    assert "nose failures: v2 − v1 +3.3 pp [+1.0, +5.6] (worse, dlib)" in nose["why"]
    assert "nose median (RetinaFace), nose median (dlib), nose failure rate (dlib)" in nose["use case"]
    # where v2 does not fail less than zero-shot, zero-shot is the one method worse on no nose metric than another
    table[("zs", "v2")][-1] = _c("zs", "v2", "nose2_fail", 0.10, -0.01, -0.03, 0.01)
    assert stats.recommend(table, models=models)[2]["pick"] == "zs (v1, v2 measured worse on the nose)"
    # a nose metric one pair lacks is left out rather than refused
    table[("zs", "v2")] = table[("zs", "v2")][:-1]
    assert "nose failure rate (dlib)" not in stats.recommend(table, models=models)[2]["use case"]
    # old callers passing the old perceptual tuple: the nose is judged in its own row, not among the perceptual
    _, perceptual, nose = stats.recommend(_table(), perceptual=stats.PERCEPTUAL_METRICS)
    assert perceptual["use case"] == "perceptual quality (LPIPS, DISTS)" and nose["pick"].startswith("zs ≈ v2")


def test_recommend_with_no_perceptual_winner_ties_everyone():
    table = {k: [c if c["metric"] == "psnr" else {**c, "lo": -1.0, "hi": 1.0, "verdict": "no detectable difference"}
                 for c in v] for k, v in _table().items()}
    _, perceptual, nose = stats.recommend(table)
    assert perceptual["pick"].startswith("zs ≈ v1 ≈ v2")
    assert nose["pick"] == "zs ≈ v1 ≈ v2 (no detectable nose difference)"
    assert perceptual["why"].count("nose: ") == nose["why"].count("nose: ") == 3    # each pair once


def test_recommend_follows_holm_where_it_was_applied():
    rows = [{**c, "p": 0.03} for v in _table().values() for c in v]
    assert stats.recommend([rows])[2]["pick"].startswith("zs ≈ v2 (")          # v1 worse than zero-shot
    rows = stats.holm(rows)
    # three nose comparisons with p = 0.03 each: Holm gives 0.09, so v1 is no longer worse than zero-shot
    assert [c["p_holm"] for c in rows if c["metric"] == "nose_err_px"] == pytest.approx([0.09] * 3)
    assert all("p_holm" not in c for c in rows if c["metric"] != "nose_err_px")
    assert stats.recommend([rows])[2]["pick"] == "zs ≈ v1 ≈ v2 (no detectable nose difference)"


def test_recommend_refuses_comparisons_of_different_units():
    table = {k: [{**c, "unit": "subject/frame"} for c in v] for k, v in _table().items()}
    assert stats.recommend(table)[0]["pick"] == "v1"
    table[("zs", "v2")] = [{**c, "unit": "crop"} for c in table[("zs", "v2")]]
    with pytest.raises(ValueError, match="different units"):
        stats.recommend(table)


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


# ------------------------------------------------------------------------------------------------
# Per-crop rows carry their unit; captions name it
# ------------------------------------------------------------------------------------------------
def test_written_rows_keep_subject_and_source(tmp_path):
    from thermsr_utils import evaluate

    scores = {k: 0.5 for k in evaluate.ROW_FIELDS if k not in ("id", "dataset", "subject", "source", "method")}
    rows = [{**scores, "id": "sf_1", "dataset": "sftl54", "subject": 12, "source": "gray/test/images/012_1.png",
             "method": "m", "psnr": 30.5, "nose_hr_found": True},
            {**scores, "id": "te_1", "dataset": "thermeval", "subject": None, "source": "images/rec100_00001.png",
             "method": "m", "psnr": 31.0, "nose_hr_found": False}]
    path = evaluate.write_rows(rows, tmp_path / "m.csv", {"method": "m"})
    assert path.read_text().splitlines()[0].startswith("id,dataset,subject,source,palette,method,")
    back = evaluate.read_rows(path)
    assert [(r["subject"], r["source"]) for r in back] == [(12, "gray/test/images/012_1.png"),
                                                           (None, "images/rec100_00001.png")]
    assert back[0]["psnr"] == 30.5 and back[1]["nose_hr_found"] is False
    assert [stats.resampling_unit(r) for r in back] == ["sftl54/subject 12", "thermeval/images/rec100_00001.png"]


def test_every_caption_names_the_bootstrap_unit():
    from thermsr_utils import evaluate

    for prov in ({}, {"lpips": "lpips-alex (x)", "nose_locator": "stand-in"}):
        text = evaluate.caption("smoke", prov)
        assert text.startswith("profile smoke") and "bootstrap unit: subject/frame" in text
        assert text.endswith("sources: provenance appendix")


def test_the_metric_table_writes_headings_values_and_directions():
    psnr, fail = METRICS["psnr"], METRICS["nose2_fail"]
    assert (psnr.heading(arrow=True), psnr.heading(unit=True), psnr.text(30.123, unit=True)) == (
        "PSNR ↑", "PSNR (dB)", "30.12 dB")
    assert METRICS["nose_err_px"].heading(unit=True, arrow=True) == "Nose median (px) ↓"
    assert (fail.text(0.125), fail.suffix, fail.model, fail.kind, fail.label) == (
        "12.5 %", " pp", "nose2", "fail", "nose failure rate (model 2)")
    with pytest.raises(ValueError, match="no better direction"):
        METRICS["grad_ratio"].direction
