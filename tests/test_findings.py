"""The worded findings of notebooks 04 and 06, decided from paired comparisons of hand-made crops."""
import numpy as np
import pytest

from thermsr_utils import findings, stats
from thermsr_utils.metric_specs import METRICS


def _rows(method, psnr, lpips, nose, ids, datasets):
    """One row per crop; every crop is its own subject (SF-TL54) or source frame (ThermEval-D)."""
    return [{"id": i, "dataset": d, "subject": k if d == "sftl54" else None, "source": f"images/{i}.png",
             "method": method, "psnr": p, "ssim": 0.9, "lpips": l, "dists": l / 2, "nose_err_px": n,
             "grad_ratio": 0.8, "hf_ratio": 0.7}
            for k, (i, d, p, l, n) in enumerate(zip(ids, datasets, psnr, lpips, nose))]


def _three_methods(n=40, seed=0):
    rng = np.random.default_rng(seed)
    ids = [f"c{i}" for i in range(n)]
    ds = ["sftl54"] * (n // 2) + ["thermeval"] * (n // 2)
    base = rng.normal(34, 1, n)
    zs = _rows("zs", base, rng.normal(0.25, 0.02, n), rng.normal(2.0, 0.2, n), ids, ds)
    v1 = _rows("v1", base + 1.5 + rng.normal(0, 0.1, n), [r["lpips"] - 0.01 for r in zs],
               [r["nose_err_px"] + 1.0 for r in zs], ids, ds)
    v2 = _rows("v2", base + 1.0 + rng.normal(0, 0.1, n), [r["lpips"] - 0.1 for r in zs],
               [r["nose_err_px"] + rng.normal(0, 0.05) for r in zs], ids, ds)
    return zs, v1, v2


def test_findings_read_the_intervals():
    zs, v1, v2 = _three_methods()
    rows = zs + v1 + v2
    v1_vs_zs = stats.compare(rows, "zs", "v1", n_boot=500)
    f1 = findings.finding_v1(v1_vs_zs, findings.reported_differences("zero-shot", "v1-l1"), floor_px=0.5)
    assert f1["psnr_up"] and f1["nose_worse"] == ["all", "SF-TL54", "ThermEval-D"]
    assert "**(i) v1 raises PSNR" in f1["markdown"] and "[+" in f1["markdown"]
    f3 = findings.finding_v2(stats.compare(rows, "v1", "v2", n_boot=500), stats.compare(rows, "zs", "v2", n_boot=500),
                             v1_vs_zs, {"lpips_ratio": findings.reported_lpips_ratio()})
    assert f3["lpips_cut"] and f3["nose_recovered"] is True and "recovers the nose metric" in f3["markdown"]
    assert findings.trade_off(stats.compare(rows, "v1", "v2", n_boot=500))["shown"]
    # v2 no different from v1 on the nose: not recovered
    v2_bad = [{**r, "nose_err_px": v["nose_err_px"]} for r, v in zip(v2, v1)]
    rows = zs + v1 + v2_bad
    f3 = findings.finding_v2(stats.compare(rows, "v1", "v2", n_boot=500), stats.compare(rows, "zs", "v2", n_boot=500),
                             v1_vs_zs)
    assert f3["nose_recovered"] is False and "does not detectably recover" in f3["markdown"]


def test_reported_differences_come_from_the_writeup_table():
    d = findings.reported_differences("zero-shot", "v1-l1")
    assert d["all"]["psnr"] == pytest.approx(39.16 - 36.89)
    assert d["ThermEval-D"]["nose_err_px"] == pytest.approx(3.01 - 2.24)
    assert findings.reported_lpips_ratio() == pytest.approx(0.092 / 0.029)


def test_reported_vs_measured_pairs_each_writeup_row_with_this_runs():
    reported = [{"method": "zero-shot", "split": "all", "n": 120.0, "psnr": 36.89, "ssim": 0.959, "lpips": 0.094,
                 "nose_median_px": 1.52, "nose_mean_px": 4.39},
                {"method": "v1-l1", "split": "all", "n": 120.0, "psnr": 39.16, "ssim": 0.97, "lpips": 0.1,
                 "nose_median_px": 1.44, "nose_mean_px": 4.0}]
    table = [{"method": "zero-shot srresnet", "split": "all", "n": 12, "psnr": 30.0},
             {"method": "zero-shot srresnet", "split": "SF-TL54", "n": 6, "psnr": 31.0},
             {"method": "bicubic", "split": "all", "n": 12, "psnr": 28.0}]
    rows = findings.reported_vs_measured(table, {"zero-shot": "zero-shot srresnet", "v1-l1": "v1 L1"}, "measured (x)",
                                         reported=reported)
    # the write-up's zero-shot row, this run's zero-shot row under the write-up's name, then v1 (not measured)
    assert [(r["method"], r["source"], r["n"], r["psnr"]) for r in rows] == [
        ("zero-shot", "reported (write-up)", 120, 36.89), ("zero-shot", "measured (x)", 12, 30.0),
        ("v1-l1", "reported (write-up)", 120, 39.16)]
    assert (rows[0]["nose_median"], rows[0]["nose_mean"]) == (1.52, 4.39)
    assert isinstance(rows[0]["n"], int)


def test_reported_protocol_resolves_same():
    prot = findings.reported_protocol()
    assert prot["lr_generation"]["v2"] == prot["lr_generation"]["v1"]       # "same" in the file
    assert prot["augmentation"] == {"v1": "none", "v2": "random flip + rotation by 0/90/180/270"}
    # the loss line holds a comma inside its quoted v1 field
    assert prot["loss"] == {"v1": "L1(SR,HR)", "v2": "L1 + 0.05*LPIPS(AlexNet)"}
    assert prot["optimizer"]["v1"] == "AdamW lr=1e-5 weight_decay=1e-5"       # a quoted field stays whole



def test_reported_v1_story_reads_the_table():
    def r(method, split, psnr, nose):
        return {"method": method, "split": split, "psnr": psnr, "nose_median_px": nose}

    table = [r("zero-shot", "all", 30.0, 2.0), r("v1-l1", "all", 31.5, 1.9),
             r("zero-shot", "ThermEval-D", 29.0, 2.5), r("v1-l1", "ThermEval-D", 30.0, 3.25)]
    text = findings.reported_v1_story(table)
    assert "by 1.50 dB" in text and "30.00 → 31.50 dB" in text
    assert "2.00 → 1.90 px overall" in text and "2.50 → 3.25 px on ThermEval-D" in text
    assert "by 2.27 dB" in findings.reported_v1_story()        # the write-up's own numbers


def test_trade_off_words_say_what_v2_traded_and_where_the_split_is():
    zs, v1, v2 = _three_methods()
    t = findings.trade_off(stats.compare(zs + v1 + v2, "v1", "v2", n_boot=500))
    assert t["shown"]
    assert t["markdown"].startswith("**v2 trades PSNR for perceptual closeness**: it gives up PSNR (-0.")
    assert "closer to the HR on LPIPS, DISTS (LPIPS -0.09" in t["markdown"]
    assert t["markdown"].endswith("is split in notebook 07, which trains v2 at λ = 0 alike.")
    assert "perception–distortion trade-off" not in t["markdown"]
    # no PSNR cost: not shown, and not worded as a trade
    same = [{**r, "psnr": a["psnr"]} for r, a in zip(v2, v1)]
    t = findings.trade_off(stats.compare(zs + v1 + same, "v1", "v2", n_boot=500))
    assert not t["shown"] and t["markdown"].startswith("**v2 is better than v1 on LPIPS, DISTS without a detectable "
                                                       "PSNR cost**")


# ------------------------------------------------------------------------------------------------
# The noise floor rule against the write-up; both landmark models; failure rates
# ------------------------------------------------------------------------------------------------
def _nose(diff, lo, hi, metric="nose_err_px", split="all", **extra):
    c = {"base": "zs", "new": "v1", "split": split, "metric": metric, "stat": METRICS[metric].stat,
         "base_value": 2.0, "new_value": 2.0 + diff, "diff": diff, "lo": lo, "hi": hi, "n": 40}
    return {**c, "verdict": stats.verdict(c, metric), **extra}


def test_a_nose_difference_within_the_noise_floor_is_no_change():
    assert findings.reported_category(-0.08, "nose_err_px", 0.66) == "no change"
    assert findings.reported_category(-0.08, "nose_err_px", 0.0) == "better"
    assert findings.reported_category(0.77, "nose_err_px", 0.66) == "worse"
    clear = _nose(-1.0, -1.2, -0.8)
    assert findings.measured_category(clear, 0.66) == "better"
    a = findings.against_reported(clear, -0.08, 0.66)
    assert (a["reported"], a["measured"], a["same"]) == ("no change", "better", False)
    assert a["text"] == ("unlike the write-up: the write-up's -0.08 px is within the noise floor (0.66 px): no change; "
                         "this run: better, beyond the noise floor")
    # the old wording called this "as in the write-up" because the signs agreed; now it says why it agrees
    small = _nose(-0.56, -0.9, -0.2)
    assert small["verdict"] == "better" and findings.measured_category(small, 0.66) == "no change"
    assert findings._agrees(small, -0.08, 0.66) == (
        "as in the write-up: the write-up's -0.08 px is within the noise floor (0.66 px): no change; this run's "
        "-0.56 px is within the noise floor: no change")
    assert findings.against_reported(small, -0.08, 0.0)["text"] == (
        "as in the write-up: the write-up's -0.08 px: better; this run: better")
    within = _nose(0.7, 0.62, 0.65)                   # a shift whose interval is inside ±floor
    assert "this run's interval lies within ±0.66 px: no change" in findings._agrees(within, 0.0, 0.66)
    spans = _nose(0.4, -0.5, 1.3)
    assert findings._agrees(spans, 0.77, 0.66) == (
        "unlike the write-up: the write-up's +0.77 px is beyond the noise floor (0.66 px): worse; this run's "
        "interval includes zero: no change")
    assert findings._agrees(_nose(1.0, 0.8, 1.5), 0.77, 0.66).startswith("as in the write-up: ")
    assert findings._agrees(_nose(1.0, 0.8, 1.5), None, 0.66) == ""
    # Holm's correction overrules the interval
    held = _nose(-1.0, -1.2, -0.8, p=0.01, p_holm=0.07, holm_m=7, verdict_holm="indistinguishable")
    assert findings.measured_category(held, 0.66) == "no change"
    assert "this run finds no difference after Holm's correction: no change" in findings._agrees(held, -0.08, 0.66)
    # PSNR keeps its words
    psnr = {**_nose(1.0, 0.8, 1.2), "metric": "psnr", "verdict": "better"}
    assert findings._agrees(psnr, 2.27) == "as in the write-up"


def _add_second_model(zs, v1, v2, v1_worse2=False, v2_recovers2=True):
    """nose2_* columns: model 2 sees zero-shot's error + 0.5 px, v1 +1 px more only if ``v1_worse2``; v1 fails
    (model 1) on every fourth crop, and where it fails its nose error is NaN."""
    for k, (a, b, c) in enumerate(zip(zs, v1, v2)):
        a.update(nose_fail=0.0, nose2_err_px=a["nose_err_px"] + 0.5, nose2_fail=0.0)
        b.update(nose_fail=float(k % 4 == 0), nose2_err_px=a["nose2_err_px"] + (1.0 if v1_worse2 else 0.0),
                 nose2_fail=0.0)
        if k % 4 == 0:
            b["nose_err_px"] = float("nan")
        c.update(nose_fail=0.0, nose2_fail=0.0,
                 nose2_err_px=a["nose2_err_px"] + 0.01 * (k % 3) if v2_recovers2 else b["nose2_err_px"])


def test_findings_report_both_landmark_models_and_the_failures():
    zs, v1, v2 = _three_methods()
    _add_second_model(zs, v1, v2)
    rows = zs + v1 + v2
    models = {"nose": "RetinaFace", "nose2": "dlib"}
    v1_vs_zs = stats.compare(rows, "zs", "v1", n_boot=500)
    f1 = findings.finding_v1(v1_vs_zs, findings.reported_differences("zero-shot", "v1-l1"), 0.5, models)
    text = f1["markdown"]
    assert f1["nose_worse"] == ["all", "SF-TL54", "ThermEval-D"] and f1["nose_worse_by_model"]["nose2"] == []
    assert "holds on RetinaFace but not on dlib" in text
    assert "(RetinaFace: all, SF-TL54, ThermEval-D; dlib: no split)" in text
    assert "nose median (dlib) " in text and "nose median (RetinaFace) " in text
    assert "v1 made RetinaFace fail on 10 more crops (+25.0 pp [" in text          # 10 of 40 crops, all split
    assert f1["fail_worse"]["nose"] == ["all", "SF-TL54", "ThermEval-D"] and f1["fail_worse"]["nose2"] == []
    # the write-up's −0.08 px overall is within the floor: no change, unlike this run's worsening
    assert ("unlike the write-up: the write-up's -0.08 px is within the noise floor (0.50 px): no change; this run: "
            "worse, beyond the noise floor") in text
    assert "as in the write-up: the write-up's +0.77 px is beyond the noise floor (0.50 px): worse" in text
    f3 = findings.finding_v2(stats.compare(rows, "v1", "v2", n_boot=500), stats.compare(rows, "zs", "v2", n_boot=500),
                             v1_vs_zs, {"lpips_ratio": 3.0}, 0.5, models)
    assert f3["nose_recovered"] is True and f3["nose_recovered_by_model"] == {"nose": True, "nose2": None}
    assert "dlib: no regression to recover" in f3["markdown"]
    assert "against v1, v2 made RetinaFace fail on 10 fewer crops" in f3["markdown"]

    # model 2 sees v1's regression too: both models agree on (ii); v2 recovers on model 1 only
    zs, v1, v2 = _three_methods()
    _add_second_model(zs, v1, v2, v1_worse2=True, v2_recovers2=False)
    rows = zs + v1 + v2
    v1_vs_zs = stats.compare(rows, "zs", "v1", n_boot=500)
    f1 = findings.finding_v1(v1_vs_zs, None, {"nose": 0.5, "nose2": 0.3}, models)
    assert "**(ii) v1 worsens the nose metric on all, SF-TL54, ThermEval-D**" in f1["markdown"]
    assert "this holds on both landmark models (RetinaFace, dlib)" in f1["markdown"]
    f3 = findings.finding_v2(stats.compare(rows, "v1", "v2", n_boot=500), stats.compare(rows, "zs", "v2", n_boot=500),
                             v1_vs_zs, None, 0.5, models)
    assert f3["nose_recovered_by_model"] == {"nose": True, "nose2": False}
    assert "**recovers the nose metric on some landmark models only**" in f3["markdown"]
    assert "the recovery holds on RetinaFace but not on dlib" in f3["markdown"]
    # unnamed models are numbered
    f1 = findings.finding_v1(v1_vs_zs, None, 0.5)
    assert "this holds on both landmark models (landmark model 1, landmark model 2)" in f1["markdown"]
    assert "nose median (model 2) " in f1["markdown"]


def test_findings_follow_holm_where_applied():
    zs, v1, v2 = _three_methods()
    _add_second_model(zs, v1, v2)
    diffs = stats.holm(stats.compare(zs + v1 + v2, "zs", "v1", n_boot=500))
    f1 = findings.finding_v1(diffs, None, 0.5)
    assert f1["nose_worse"] == ["all", "SF-TL54", "ThermEval-D"]
    # 12 nose tests (median and failure rate of two models on three splits), no replicate at zero: p < 12/500
    assert "nose median +1.00 px [+1.00, +1.00] — **worse** (Holm-adjusted p <0.024)" in f1["markdown"]
    assert "nose median (model 2) +0.00 px [+0.00, +0.00] — **no detectable difference** (Holm-adjusted p 1.000)" \
        in f1["markdown"]


def test_the_headline_states_four_findings_with_intervals_and_leaves_withheld_nose_verdicts_out():
    zs, v1, v2 = _three_methods()
    rows = zs + v1 + v2
    v1_vs_zs, v2_vs_v1 = stats.compare(rows, "zs", "v1", n_boot=300), stats.compare(rows, "v1", "v2", n_boot=300)
    text = findings.headline(v1_vs_zs, v2_vs_v1, {"nose": "RetinaFace"}, reported_ratio=3.2)
    lines = text.strip().splitlines()
    assert [line[:3] for line in lines] == ["1. ", "2. ", "3. ", "4. "]
    assert stats.format_diff(stats.find(v1_vs_zs, "psnr")) in lines[0] and "(better)" in lines[0]
    assert "SF-TL54, RetinaFace: " + stats.format_diff(stats.find(v1_vs_zs, "nose_err_px", "SF-TL54")) in lines[1]
    assert "the write-up's 3.2×" in lines[2] and "DISTS" in lines[2]
    assert stats.format_diff(stats.find(v2_vs_v1, "psnr")) in lines[3]
    ctx = {"models": {"nose": "RetinaFace"}, "reads": {"ThermEval-D|RetinaFace": True}}
    held = findings.headline(findings.withhold(v1_vs_zs, ctx), findings.withhold(v2_vs_v1, ctx), ctx["models"])
    assert "ThermEval-D, RetinaFace" in held and "SF-TL54, RetinaFace" not in held and "all, RetinaFace" not in held
    none = findings.headline(findings.withhold(v1_vs_zs, {**ctx, "reads": {}}), v2_vs_v1, ctx["models"])
    assert "no nose verdict on v1 is stated" in none


# ---- Notebook 08: the task term judged by the model in its loss and by an independent one ----
def _v3_rows(own_shift, other_shift, n=40, seed=1):
    """v2 and v3 crops with two landmark models: v3 moves the first one's nose error by ``own_shift`` px and the
    second one's by ``other_shift`` (0 leaves it as noise around v2's)."""
    rng = np.random.default_rng(seed)
    ids = [f"c{i}" for i in range(n)]
    ds = ["sftl54"] * (n // 2) + ["thermeval"] * (n // 2)
    v2 = _rows("v2", rng.normal(34, 1, n), rng.normal(0.2, 0.02, n), rng.normal(2.0, 0.3, n), ids, ds)
    for r in v2:
        r |= {"nose_fail": 0.0, "nose2_err_px": float(rng.normal(3.0, 0.3)), "nose2_fail": 0.0}
    v3 = [{**r, "method": "v3", "psnr": r["psnr"] - 0.05, "nose_err_px": r["nose_err_px"] + own_shift + rng.normal(0, 0.02),
           "nose2_err_px": r["nose2_err_px"] + other_shift + rng.normal(0, 0.3)} for r in v2]
    return stats.compare(v2 + v3, "v2", "v3", n_boot=500)


MODELS = {"nose": "RetinaFace", "nose2": "dlib"}


def test_finding_v3_tells_a_better_nose_from_a_better_pleased_judge():
    held = findings.finding_v3(_v3_rows(-0.5, -1.0), MODELS)
    assert (held["own"], held["independent"], held["only_own_judge"]) == ("better", "better", False)
    assert "holds on dlib, the model the loss never saw" in held["markdown"]
    own_only = findings.finding_v3(_v3_rows(-0.5, 0.0), MODELS, variant="v3 (landmarks)")
    assert own_only["own"] == "better" and own_only["independent"] == "no detectable difference"
    assert own_only["only_own_judge"] and "**v3 (landmarks) only improves its own judge**" in own_only["markdown"]
    worse = findings.finding_v3(_v3_rows(0.5, 1.0), MODELS)
    assert (worse["own"], worse["independent"]) == ("worse", "worse")
    assert "neither landmark model reads the nose closer" in worse["markdown"]
    assert "PSNR -0.05 dB" in worse["markdown"] and "dlib (not in the loss) — all: nose median +" in worse["markdown"]


def test_finding_v3_says_when_the_independent_judge_cannot_read_the_faces():
    diffs = _v3_rows(-0.5, -1.0)
    ctx = {"models": MODELS, "reads": {"SF-TL54|RetinaFace": True, "ThermEval-D|RetinaFace": True}}
    f = findings.finding_v3(findings.withhold(diffs, ctx), MODELS)
    assert (f["own"], f["independent"]) == ("better", findings.WITHHELD)
    assert "cannot tell a better nose from a better-pleased judge" in f["markdown"]
    assert "dlib (not in the loss) — every verdict withheld" in f["markdown"]
    # RetinaFace stated on one dataset only: its verdict there is the one read
    ctx["reads"] = {"ThermEval-D|RetinaFace": True}
    f = findings.finding_v3(findings.withhold(diffs, ctx), MODELS)
    assert f["own"] == "better" and "RetinaFace (in the loss) — ThermEval-D: nose median -0.5" in f["markdown"]


def test_self_ensemble_words_set_the_gain_against_the_writeups_range():
    def gain(method, d):
        return {"base": method, "new": f"{method} +", "split": "all", "metric": "psnr", "diff": d, "lo": d - 0.1,
                "hi": d + 0.1, "verdict": "better" if d > 0.1 else "no detectable difference"}
    text = findings.self_ensemble_words([gain("v2", 0.05), gain("zs", 0.02)], reported_db=(0.5, 1.5))
    assert "v2: PSNR +0.05 dB [-0.05, +0.15] (no detectable difference; below the write-up's range)" in text
    assert text.endswith("The write-up expects +0.5–1.5 dB.")
    text = findings.self_ensemble_words([gain("v2", 0.7), gain("zs", 1.6)], reported_db=(0.5, 1.5), short=True)
    assert text.startswith("**Self-ensemble** gains v2: PSNR +0.70 dB [+0.60, +0.80] (better; inside the write-up's")
    assert "zs: PSNR +1.60 dB [+1.50, +1.70] (better; above the write-up's range)" in text
