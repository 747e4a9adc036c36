"""Every notebook, executed headlessly in the smoke profile, and the files its tables and figures rest on."""
import math

import pytest

from thermsr_utils import config, evaluate, io, manifests, notebook, publish, run, stats

pytestmark = pytest.mark.notebooks


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke")
    mp = pytest.MonkeyPatch()
    mp.setenv("THERMSR_ARTIFACTS", str(root / "artifacts"))
    mp.setenv("THERMSR_DATA", str(root / "data"))
    try:
        outputs = run.run("smoke", progress=False)
        yield config.run_paths("smoke"), outputs
    finally:
        mp.undo()


def test_every_notebook_executed(smoke_run):
    paths, outputs = smoke_run
    main = [p for p in outputs if p.parent == paths.executed]
    assert [p.stem for p in main] == [nb.name for nb in notebook.discover()]
    points = [p for p in outputs if p.parent != paths.executed]
    assert points and all(p.exists() and p.parents[2] == paths.sweeps for p in points)


def test_the_frontier_sweep_of_the_smoke_profile_ran_before_07(smoke_run):
    from thermsr_utils import frontier

    paths, outputs = smoke_run
    p = config.profile_params("smoke")
    names = sorted(q.name for q in paths.sweeps.iterdir())
    expected = {run.point_name("smoke", {"lpips_weight": lam}) for lam in p["frontier_lambdas"]}
    expected |= {run.point_name("smoke", {"seed": s}) for s in p["frontier_seeds"]}
    expected |= {run.point_name("smoke", {"v1_lr": lr}) for lr in p["frontier_v1_lrs"]}
    assert names == sorted(expected - {""})                    # the main λ, seed and rate are the main run
    order = [(q.parents[2] == paths.sweeps, q.stem) for q in outputs]
    assert order.index((False, "07_perception_distortion_frontier")) > max(
        i for i, (in_sweep, _) in enumerate(order) if in_sweep)
    table = _read_csv(paths.results / "table_frontier.csv")
    lambdas = set(p["frontier_lambdas"]) | {p["lpips_weight"]}
    assert {r["method"] for r in table} >= {f"v2 λ={lam:g}" for lam in lambdas} | {"v2 (EMA)", "v2 raw weights"}
    for r in table:
        assert float(r["lpips_lo"]) <= float(r["lpips"]) <= float(r["lpips_hi"])
    steps = {r["method"]: int(r["steps"]) for r in table}      # every model of a recipe trained alike
    v1 = {steps[m] for m in steps if m.startswith("v1")}
    v2 = {steps[m] for m in steps if not m.startswith("v1")}
    assert len(v1) == 1 and len(v2) == 1
    main = {k: v for k, v in next(r for r in table if r["method"] == "v2 (EMA)").items() if k != "method"}
    assert main == {k: v for k, v in next(r for r in table if r["method"] == f"v2 λ={p['lpips_weight']:g}").items()
                    if k != "method"}                           # the main v2 is the point at its λ
    assert {e.label for e in frontier.read_plan(paths)} >= {f"v1 lr={lr:g}" for lr in p["frontier_v1_lrs"]}
    assert (paths.figures / "frontier.png").stat().st_size > 5_000
    assert (paths.results / "table_decomposition.csv").is_file()
    words = (paths.results / "frontier.md").read_text()
    assert "the rest of the recipe (v1 → v2 at λ = 0)" in words and "the perceptual term" in words
    assert "Blending the weights" in words


def test_manifest_matches_the_committed_one(smoke_run):
    paths, _ = smoke_run
    manifest = manifests.load_manifest(paths.manifest)
    built = manifest["records"]
    committed = io.read_json(config.MANIFEST_DIR / "smoke.json")["records"]
    diffs = manifests.compare_manifests(built, committed)
    # the only differences allowed are crops whose pixels alone differ (another CPU's float rounding), named in
    # the run's manifest and its provenance, and no more of them than manifests.SYNTHETIC_PIXEL_DRIFT_OK allows
    drift = manifest.get("committed_pixel_drift", [])
    assert len(diffs) == len(drift) and manifests.pixel_drift(diffs) == drift
    assert len(drift) <= manifests.SYNTHETIC_PIXEL_DRIFT_OK * len(built)
    assert bool(drift) == ("crops" in config.provenance(paths))
    assert {r["split"] for r in built} == {"train", "val", "test"}
    assert {r["dataset"] for r in built} == {"sftl54", "thermeval"}


def test_raw_figures_written(smoke_run):
    paths, _ = smoke_run
    for name in ("raw_samples.png", "crops_test.png"):
        assert (paths.figures / name).stat().st_size > 10_000


FIGURES = ["zero_shot_panel.png", "zero_shot_psnr.png", "v1_training_curves.png", "v1_psnr_gain_vs_nose_change.png",
           "v1_worst_nose_crops.png", "v2_training_curves.png", "v2_training_lpips.png", "v2_loss_share.png",
           "v2_panel_sftl54.png", "v2_panel_thermeval.png", "v2_panel_all.png", "v2_lpips.png",
           "perception_distortion.png", "v3_training_curves.png", "v3_panel.png"]


@pytest.mark.parametrize("name", FIGURES)
def test_figures_exist(smoke_run, name):
    paths, _ = smoke_run
    assert (paths.figures / name).stat().st_size > 5_000


def test_zero_shot_weights_name_each_model_of_02_and_its_source(smoke_run):
    paths, _ = smoke_run
    found = evaluate.zero_shot_weights(paths.results)
    assert set(found) == {"zero-shot pan-tiny", "zero-shot waifu2x-photo ×2 twice"}
    waifu = found["zero-shot waifu2x-photo ×2 twice"]
    assert (waifu["spec"], waifu["source"], waifu["applications"]) == ("waifu2x-photo", "registry", 2)
    assert found["zero-shot pan-tiny"]["source"] == "standin"
    assert evaluate.result_stem(paths.results, "zero-shot pan-tiny").with_suffix(".csv").is_file()


def _read_csv(path):
    import csv

    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("table,methods", [
    ("table_zero_shot", {"bicubic", "zero-shot pan-tiny", "zero-shot waifu2x-photo ×2 twice"}),
    ("table_v1", {"zero-shot pan-tiny", "v1 L1"}),
    ("table_v2", {"zero-shot pan-tiny", "v1 L1", "v2 perceptual"}),
])
def test_tables_agree_with_per_crop_results(smoke_run, table, methods):
    paths, _ = smoke_run
    rows = _read_csv(paths.results / f"{table}.csv")
    assert {r["method"] for r in rows} == methods
    assert {(r["method"], r["split"]) for r in rows} == {(m, s) for m in methods for s in evaluate.SPLITS}
    per_crop = []
    for m in methods:
        per_crop += evaluate.read_rows(evaluate.result_stem(paths.results, m).with_suffix(".csv"))
    records = manifests.load_manifest(paths.manifest)["records"]
    ids = {r["id"] for r in evaluate.table_subset(records, 60)}
    expected = evaluate.aggregate([r for r in per_crop if r["id"] in ids])
    for row in rows:
        exp = next(e for e in expected if e["method"] == row["method"] and e["split"] == row["split"])
        assert int(row["n"]) == exp["n"] > 0
        for key in ("psnr", "ssim", "lpips", "grad_ratio"):
            assert math.isfinite(float(row[key]))
            assert float(row[key]) == pytest.approx(exp[key], rel=1e-9)
        assert 0 < float(row["ssim"]) <= 1 and float(row["lpips"]) >= 0
    assert (paths.results / f"{table}.md").read_text().count("profile smoke") >= 1


def test_per_crop_csv_records_instruments_and_their_weight_files(smoke_run):
    from thermsr_utils import weights

    paths, _ = smoke_run
    meta = io.read_json(paths.results / "v1_L1.json")
    assert meta["profile"] == "smoke"
    assert meta["weights"]["source"] == "local"
    inst = meta["instruments"]
    assert inst["nose_locator"]["name"] == "retinaface-mobilenet0.25" or inst["nose_locator"]["name"].startswith("rtmlib")
    assert inst["lpips"]["name"] == "lpips-alex" and inst["dists"]["name"] == "dists"
    if inst["lpips"]["trunk_source"] == "registry":
        assert inst["lpips"]["sha256"] == weights.REGISTRY["alexnet-imagenet"].sha256
    assert "randtrunk" not in meta["provenance"]["lpips"] and "sha256" in meta["provenance"]["lpips"]
    floor = io.read_json(paths.results / "nose_noise_floor.json")
    assert floor["noise"]["n_valid"] > 0 and "noise floor" not in meta["provenance"]  # recorded under its own key
    assert meta["provenance"]["nose_noise_floor"]


def test_checkpoints_load_with_super_image(smoke_run):
    from super_image import PanModel

    paths, _ = smoke_run
    for run_name in ("v1", "v2"):
        best = paths.checkpoints / run_name / "best"
        PanModel.from_pretrained(str(best), scale=4)
        meta = io.read_json(best / "thermsr.json")
        assert meta["manifest_sha256"] == io.file_sha256(paths.manifest)
        assert meta["init_weights"]["source"] == "standin" and meta["recipe"]["name"] == run_name


def test_recommendation_and_reported_table(smoke_run):
    paths, _ = smoke_run
    rows = _read_csv(paths.results / "table_reported_vs_measured.csv")
    assert {r["source"] for r in rows} == {"reported (write-up)", "measured (smoke)"}
    assert sum(r["source"].startswith("reported") for r in rows) == 9
    assert "maximum PSNR" in (paths.results / "recommendation.md").read_text()


def test_findings_answer_the_three_questions_with_intervals(smoke_run):
    paths, _ = smoke_run
    text = (paths.results / "findings.md").read_text()
    for marker in ("**(i) ", "**(ii) ", "**(iii) v2**"):
        assert marker in text
    assert text.count("[") >= 6  # every stated difference carries its interval
    rows = _read_csv(paths.results / "table_v2_differences.csv")
    assert {(r["base"], r["new"]) for r in rows} == {("zero-shot pan-tiny", "v1 L1"), ("v1 L1", "v2 perceptual")}
    for r in rows:
        if r["lo"] not in ("", "nan"):
            assert float(r["lo"]) <= float(r["diff"]) <= float(r["hi"])


def test_publish(smoke_run, tmp_path):
    dest = publish.publish("smoke", dest_root=tmp_path)
    prov = io.read_json(dest / "PROVENANCE.json")
    assert prov["profile"] == "smoke" and prov["data_manifest_sha256"]
    assert prov["substitutes_and_sources"]["lpips"].startswith("lpips-alex (")
    assert "nose_noise_floor" in prov["substitutes_and_sources"]
    assert set(FIGURES) <= {p.name for p in dest.iterdir()}


def test_the_published_report_reads_as_the_run_and_opens_in_a_browser(smoke_run, tmp_path, browser):
    import nbformat

    from thermsr_utils import report

    paths, _ = smoke_run
    rep = publish.publish("smoke", dest_root=tmp_path) / publish.REPORT_DIR
    names = [nb.name for nb in notebook.discover()]
    assert sorted(p.stem for p in rep.glob("[0-9][0-9]_*.md")) == names
    executed = [nbformat.read(str(paths.executed / f"{n}.ipynb"), as_version=4) for n in names]
    figures = sum("image/png" in o.get("data", {}) for nb in executed for c in nb.cells for o in c.get("outputs", []))
    assert figures >= len(FIGURES) - 1, "the executed notebooks hold their figures, not their reprs"
    page = (rep / "01_build_dataset.md").read_text()
    assert "<Figure size" not in page and "IPKernelApp" not in page
    text = "".join(p.read_text() for p in rep.glob("*.md")) + (rep / report.INDEX_HTML).read_text()
    assert "artifacts/smoke" in text
    for place in (paths.root, config.artifacts_root(), config.data_root(), config.REPO_ROOT):
        assert str(place) not in text, f"the report names {place}, a folder of the machine that ran it"
    shots = config.REPO_ROOT / "artifacts" / "browser"
    seen = browser(rep / report.INDEX_HTML, shots / "report_smoke_top.png", boxes=(report.BANNER_ID, report.HEADLINE_ID))
    assert seen["title"].startswith("thermsr: the study as executed (smoke profile)")
    assert seen["images"] == figures + 1 and seen["broken"] == []      # every figure and the headline figure load
    assert seen["links"] >= len(names) and seen["dangling"] == []
    headings = [report.title_of(nb, n) for nb, n in zip(executed, names)]
    assert [h for h in seen["h1"] if h in headings] == headings, "every notebook's heading, in order"
    assert seen["visible_code"] == 0, "code cells are folded in the default view"
    assert seen["stderr"] == 0, "no stderr block in the report"
    for key in (report.BANNER_ID, report.HEADLINE_ID):
        top, bottom = seen["boxes"][key][1], seen["boxes"][key][3]
        assert 0 <= top and bottom <= 1400, f"{key} is not in the first 1400 × 1400 px: {seen['boxes'][key]}"
    html = (rep / report.INDEX_HTML).read_text()
    assert (paths.results / publish.HEADLINE_FILE).read_text().splitlines()[0].split("**")[1] in html
    browser(rep / report.INDEX_HTML, shots / "report_smoke_frontier.png",
            start=report.anchor("07_perception_distortion_frontier"))
    browser(rep / report.INDEX_HTML, shots / "report_smoke_panel.png", start="What-the-three-models-look-like")
    for name in ("top", "frontier", "panel"):
        assert (shots / f"report_smoke_{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_notebook_08_judges_v3_by_both_landmark_models_and_tables_self_ensemble_and_x8(smoke_run):
    paths, _ = smoke_run
    v3 = _read_csv(paths.results / "table_v3.csv")
    assert {r["method"] for r in v3} == {"v2 perceptual", "v3 landmarks", "v3 features"}
    assert all(r["nose_failed_sr"] != "" and r["nose2_failed_sr"] != "" for r in v3)      # both models' failures
    diffs = stats.read_comparisons(paths.results / "table_v3_differences.csv")
    for new in ("v3 landmarks", "v3 features"):
        got = {c["metric"] for c in diffs if c["new"] == new and c["split"] == "all"}
        assert {"psnr", "lpips", "dists", "nose_err_px", "nose_fail", "nose2_err_px", "nose2_fail"} <= got
    text = (paths.results / "downstream_aware.md").read_text()
    assert "RetinaFace (in the loss)" in text and "dlib (not in the loss)" in text
    for name in ("v3-landmarks", "v3-features"):
        meta = io.read_json(paths.checkpoints / name / "best" / "thermsr.json")
        assert meta["recipe"]["name"] == "v3" and meta["task_term"]
    gains = stats.read_comparisons(paths.results / "table_self_ensemble.csv")
    assert {(c["base"], c["new"]) for c in gains} == {("zero-shot pan-tiny", "zero-shot pan-tiny +"),
                                                      ("v2 perceptual", "v2 perceptual +")}
    x8 = _read_csv(paths.results / "table_x8.csv")
    assert {r["method"] for r in x8} == {"bicubic ×4", "waifu2x-photo ×4", "bicubic ×8", "waifu2x-photo ×8"}
    psnr = {r["method"]: float(r["psnr"]) for r in x8 if r["split"] == "all"}
    assert psnr["bicubic ×8"] < psnr["bicubic ×4"] and psnr["waifu2x-photo ×8"] < psnr["waifu2x-photo ×4"]
