"""The second landmark model: dlib's HOG detector and 68-point shape predictor (pinned registry weights), its
five points against RetinaFace's and against the synthetic generator's, its failures, how runs choose it, and
the scorer's second set of nose columns (nose2_*) beside the primary's failure flag (nose_fail)."""
import dataclasses
import json
import math
import subprocess
import sys
from dataclasses import replace

import cv2
import numpy as np
import pytest

from thermsr_utils import data, evaluate, faces, synthetic, weights
from thermsr_utils import downstream as ds


@pytest.fixture(scope="module")
def dlib_nose():
    return ds.DlibNose()


@pytest.fixture(scope="module")
def synthetic_crops():
    """Four SF-TL54-like 192² test crops made as the dataset builder makes them, with the generator's five points
    (eye centres = means of 36-41 / 42-47, nose tip 30, mouth corners 48 / 50 in SF-TL54 order) in the crop."""
    seed = 0
    cam = synthetic.make_camera(np.random.default_rng([seed, 540]), *synthetic.SFTL54_SIZE, **synthetic.SFTL54_CAMERA)
    crops, five = [], []
    for sub_id in range(121, 125):
        s = faces.make_subject(sub_id, np.random.default_rng([seed, 54, sub_id]))
        tex = faces.make_textures(s)
        frng = np.random.default_rng([seed, 54, sub_id, 1])
        pose = synthetic.sftl54_pose(s, frng)
        focus = replace(cam, blur=float(frng.uniform(*synthetic.SFTL54_BLUR_RANGE)))
        gray, lm, _ = synthetic.render_sftl54_frame(s, pose, tex, focus, frng)
        box = data.sftl54_crop_box(lm, *synthetic.SFTL54_SIZE)
        crop, _ = data.crop_and_resize(gray, box)
        pts = np.array([data.map_point(p, box) for p in lm])
        crops.append(np.repeat(crop[..., None], 3, axis=-1))
        five.append(np.stack([pts[36:42].mean(0), pts[42:48].mean(0), pts[faces.NOSE_TIP], pts[48], pts[50]]))
    return np.stack(crops), np.stack(five)


@pytest.fixture(scope="module")
def astronaut_faces():
    """Four 192² crops of skimage's astronaut photograph around her face (pad 1.15-2 × the face)."""
    from skimage import data as skdata

    img = np.ascontiguousarray(skdata.astronaut()[..., ::-1])
    x0, y0, x1, y1 = 178, 57, 273, 177
    cx, cy, side = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0)
    out = []
    for pad in (1.15, 1.4, 1.7, 2.0):
        s = int(round(pad * side))
        a = min(max(int(round(cx - s / 2)), 0), 512 - s)
        b = min(max(int(round(cy - s / 2)), 0), 512 - s)
        out.append(cv2.resize(img[b:b + s, a:a + s], (192, 192), interpolation=cv2.INTER_AREA))
    return np.stack(out)


# ---------------------------------------------------------------------------------------------
# the locator
# ---------------------------------------------------------------------------------------------

def test_dlib_finds_the_synthetic_faces_near_the_generators_points(dlib_nose, synthetic_crops):
    crops, truth = synthetic_crops
    assert isinstance(dlib_nose, ds.NoseLocator) and dlib_nose.name == ds.DLIB_KEY
    xy, found, scores = dlib_nose.locate_with_scores(crops)
    assert found.all() and np.isfinite(scores).all()
    # a crop is 192 px and the face fills most of it: the nose lies within 30 px of the generator's nose tip
    # (measured: median 11 px on 40 crops, at most 20 px; the synthetic faces are not real proportions)
    d = np.linalg.norm(xy - truth[:, 2], axis=1)
    assert (d < 30).all() and np.median(d) < 20, d
    faces = dlib_nose.detect(crops)
    for f, t in zip(faces, truth):
        lm = f["landmarks"][0]
        assert f["boxes"].shape == (len(f["scores"]), 4) and f["landmarks"].shape == (len(f["scores"]), 5, 2)
        assert f["points68"].shape == (len(f["scores"]), 68, 2)
        assert (np.diff(f["scores"]) <= 0).all()                            # best first
        # RetinaFace's order: image-left eye, image-right eye, nose, image-left / image-right mouth corner
        assert lm[0, 0] < lm[2, 0] < lm[1, 0] and lm[3, 0] < lm[2, 0] < lm[4, 0]
        assert lm[:2, 1].max() < lm[2, 1] < lm[3:, 1].min()
        np.testing.assert_array_equal(lm[2], f["points68"][0, 30])
        np.testing.assert_array_equal(lm[0], f["points68"][0, 36:42].mean(0))
        np.testing.assert_array_equal(lm[4], f["points68"][0, 54])
        assert np.linalg.norm(lm - t, axis=1).max() < 40
    # dlib's parts are whole pixels; the eye centres are means of six of them
    assert (xy == np.round(xy)).all()
    assert (np.abs(faces[0]["landmarks"][0, :2] * 6 - np.round(faces[0]["landmarks"][0, :2] * 6)) < 1e-9).all()


def test_dlib_agrees_with_retinaface_on_a_photograph(dlib_nose, astronaut_faces):
    """Two independently trained face models place the same five points on a real RGB face within a few pixels."""
    retina = ds.RetinaFaceNose(threads=1)
    mine, theirs = dlib_nose.detect(astronaut_faces), retina.detect(astronaut_faces)
    for a, b in zip(mine, theirs):
        assert len(a["scores"]) == 1 and len(b["scores"]) == 1
        d = np.linalg.norm(a["landmarks"][0] - b["landmarks"][0], axis=1)
        assert d.max() < 7 and d[2] < 6, d
    # the mirrored photograph keeps the image-based order and mirrors the nose
    flipped = dlib_nose.detect(np.ascontiguousarray(astronaut_faces[:1, :, ::-1]))[0]["landmarks"][0]
    assert flipped[0, 0] < flipped[1, 0] and flipped[3, 0] < flipped[4, 0]
    assert abs((191 - flipped[2, 0]) - mine[0]["landmarks"][0, 2, 0]) < 3


def test_dlib_finds_nothing_in_blank_flat_or_noise_images(dlib_nose):
    rng = np.random.default_rng(0)
    imgs = np.stack([np.zeros((192, 192, 3), np.uint8), np.full((192, 192, 3), 128, np.uint8),
                     np.full((192, 192, 3), 255, np.uint8), rng.integers(0, 256, (192, 192, 3), dtype=np.uint8)])
    xy, found, score = dlib_nose.locate_with_scores(imgs)
    assert found.tolist() == [False] * 4 and np.isnan(xy).all() and np.isnan(score).all()
    faces = dlib_nose.detect(imgs)
    assert all(len(f["scores"]) == 0 and f["landmarks"].shape == (0, 5, 2) for f in faces)
    xy, found = dlib_nose.locate(np.zeros((0, 64, 64, 3), np.uint8))
    assert xy.shape == (0, 2) and found.shape == (0,)


def test_dlib_is_deterministic_and_batches_equal_single_images(dlib_nose, synthetic_crops):
    crops = np.concatenate([synthetic_crops[0][:2], np.zeros((1, 192, 192, 3), np.uint8)])
    first = dlib_nose.locate_with_scores(crops)
    fresh = ds.DlibNose().locate_with_scores(crops)
    assert first[1].tolist() == [True, True, False]
    for a, b in zip(first, fresh):
        np.testing.assert_array_equal(a, b)
    for i, img in enumerate(crops):
        one = dlib_nose.locate_with_scores(img[None])
        for a, b in zip(one, first):
            np.testing.assert_array_equal(a[0], b[i])


def test_dlib_settings_record_the_threshold_and_the_weight_file(dlib_nose):
    st = dlib_nose.settings
    json.dumps(st, allow_nan=False)
    entry = weights.REGISTRY[ds.DLIB_KEY]
    assert (st["package"], st["version"], st["file"], st["sha256"]) == (
        "face-recognition-models", "0.3.0", "face_recognition_models/models/shape_predictor_68_face_landmarks.dat",
        entry.sha256)
    assert st["adjust_threshold"] == -0.5 and st["upsample"] == 1 and st["landmark"] == 30
    assert ds.DlibNose(adjust_threshold=0.25, upsample=0).settings["adjust_threshold"] == 0.25


def test_dlib_rejects_wrong_inputs(dlib_nose):
    with pytest.raises(ValueError, match="uint8"):
        dlib_nose.locate(np.zeros((1, 64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="N×H×W×3"):
        dlib_nose.locate(np.zeros((64, 64, 3), np.uint8))
    for bad in (dict(adjust_threshold=float("nan")), dict(upsample=-1), dict(upsample=1.5)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ds.DlibNose(**bad)


def test_dlib_refuses_a_changed_or_missing_weight_file(monkeypatch):
    entry = weights.REGISTRY[ds.DLIB_KEY]
    assert weights.locate(ds.DLIB_KEY).stat().st_size == 99693937
    assert "face-recognition-models==0.3.0" in weights.REQUIREMENTS
    monkeypatch.setitem(weights.REGISTRY, ds.DLIB_KEY, dataclasses.replace(entry, sha256="0" * 64))
    with pytest.raises(weights.WeightsIntegrityError, match="sha256"):
        ds.DlibNose()
    assert not weights.available(ds.DLIB_KEY)
    assert weights.main(["--check"]) == 1                                  # the check names the bad file
    monkeypatch.setitem(weights.REGISTRY, ds.DLIB_KEY,
                        dataclasses.replace(entry, dist="face-recognition-models-not-installed"))
    with pytest.raises(weights.WeightsUnavailable, match="make install"):
        ds.DlibNose()
    with pytest.raises(weights.WeightsUnavailable, match="make install"):
        ds.prepare_locator("dlib")


def test_dlib_never_imports_the_weights_package():
    code = ("import sys, numpy as np; from thermsr_utils import downstream as ds; "
            "ds.DlibNose().locate(np.zeros((1, 64, 64, 3), np.uint8)); "
            "assert 'face_recognition_models' not in sys.modules and 'pkg_resources' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------------
# choosing the models of a run
# ---------------------------------------------------------------------------------------------

def test_prepare_locators_gives_a_primary_and_a_second_model(monkeypatch):
    monkeypatch.setattr(ds, "rtmlib_models_cached", lambda mode="balanced": False)
    assert "dlib" in ds.NOSE_MODELS
    assert isinstance(ds.prepare_locator("dlib"), ds.DlibNose)
    first, second = ds.prepare_locators("auto")
    assert isinstance(first, ds.RetinaFaceNose) and isinstance(second, ds.DlibNose)
    first, second = ds.prepare_locators("dlib", "retinaface")
    assert isinstance(first, ds.DlibNose) and isinstance(second, ds.RetinaFaceNose)
    first, second = ds.prepare_locators("retinaface", "none")
    assert isinstance(first, ds.RetinaFaceNose) and second is None
    with pytest.raises(ValueError, match="primary nose model"):
        ds.prepare_locators("auto", "retinaface")                # auto resolved to RetinaFace here
    with pytest.raises(ValueError, match="second_model"):
        ds.prepare_locators("retinaface", "mediapipe")
    with pytest.raises(ValueError, match="nose_model"):
        ds.prepare_locators("dwpose")


# ---------------------------------------------------------------------------------------------
# the scorer's second nose model
# ---------------------------------------------------------------------------------------------

class Brightest:
    """A transparent locator: the brightest pixel; nothing found in an image without a pixel above ``thr``."""

    def __init__(self, name, thr=200):
        self.name, self.thr, self.settings, self.images = name, thr, {"name": name, "thr": thr}, 0

    def locate(self, images_bgr):
        self.images += len(images_bgr)
        g = images_bgr.astype(int).sum(-1)
        flat = g.reshape(len(g), -1)
        idx = flat.argmax(1)
        xy = np.stack([idx % g.shape[2], idx // g.shape[2]], 1).astype(float)
        found = flat.max(1) > 3 * self.thr
        xy[~found] = np.nan
        return xy, found


def _batch():
    """Three 32² HR crops and their "SR": a bright dot kept as it is; a dim dot (found by the lenient locator
    only) that SR dims further (found by neither); nothing, where SR invents a bright dot (found by both)."""
    hr = np.full((3, 32, 32, 3), 20, np.uint8)
    hr[0, 10:13, 20:23] = 255
    hr[1, 16:19, 8:11] = 150
    sr_bgr = hr.copy()
    sr_bgr[1, 16:19, 8:11] = 90
    sr_bgr[2, 5:8, 5:8] = 255
    return hr, data.bgr_to_tensor(sr_bgr), np.array([[20.0, 10.0], [8.0, 16.0], [np.nan, np.nan]])


def test_scorer_fills_the_second_models_columns_and_the_failure_flags():
    hr, sr, gt = _batch()
    strict, lenient = Brightest("strict", 200), Brightest("lenient", 100)
    scorer = evaluate.Scorer(locator=strict, locator2=lenient)
    out = scorer.score(["a", "b", "c"], sr, hr, gt)
    assert out["nose_hr_found"].tolist() == [True, False, False] and out["nose_sr_found"].tolist() == [True, False, True]
    assert out["nose_fail"].tolist() == [0.0, 1.0, 0.0]                    # no nose on the SR crop
    assert out["nose2_hr_found"].tolist() == [True, True, False] and out["nose2_sr_found"].tolist() == [True, False, True]
    assert out["nose2_fail"].tolist() == [0.0, 1.0, 0.0]
    np.testing.assert_array_equal(out["nose2_err_px"], [0.0, np.nan, np.nan])
    np.testing.assert_array_equal(out["nose2_gt_err_hr"], [0.0, 0.0, np.nan])
    np.testing.assert_array_equal(out["nose_err_px"], [0.0, np.nan, np.nan])
    assert set(evaluate.ROW_FIELDS) >= set(out) and {f"nose2_{k}" for k in evaluate.NOSE_KEYS} <= set(out)
    # each locator has its own cache: the second call sees nothing new
    seen = (strict.images, lenient.images)
    scorer.score(["a", "b", "c"], sr, hr, gt)
    assert (strict.images, lenient.images) == seen
    assert scorer.substitutes()["nose_locator"] == "strict" and scorer.substitutes()["nose_locator2"] == "lenient"
    inst = scorer.instruments()
    assert inst["nose_locator"] == {"name": "strict", "thr": 200} and inst["nose_locator2"]["name"] == "lenient"
    assert "nose_locator2" in evaluate.instrument_provenance(scorer)


def test_without_a_second_model_its_columns_are_nan_and_not_shown(tmp_path):
    hr, sr, gt = _batch()
    scorer = evaluate.Scorer(locator=Brightest("strict"))
    out = scorer.score(["a", "b", "c"], sr, hr, gt)
    assert all(np.isnan(out[f"nose2_{k}"]).all() for k in evaluate.NOSE_KEYS)
    assert out["nose_fail"].tolist() == [0.0, 1.0, 0.0]
    assert "nose_locator2" not in scorer.substitutes() and "nose_locator2" not in scorer.instruments()
    none = evaluate.Scorer().score(["a", "b", "c"], sr, hr, gt)
    assert np.isnan(none["nose_fail"]).all() and np.isnan(none["nose2_fail"]).all()
    assert none["nose_hr_found"].tolist() == [False] * 3
    # rows → CSV → rows → table: no nose2 column in the Markdown, NaN in the summary
    rows = [{"id": i, "dataset": "sftl54", "subject": 1, "source": "s", "method": "m",
             **{k: (bool(v[j]) if v.dtype == bool else float(v[j])) for k, v in out.items()}}
            for j, i in enumerate("abc")]
    back = evaluate.read_rows(evaluate.write_rows(rows, tmp_path / "m.csv", {}))
    table = evaluate.aggregate(back)
    assert math.isnan(table[0]["nose2_median"]) and math.isnan(table[0]["nose2_failed_hr"])
    assert table[0]["nose_fail_rate"] == pytest.approx(1 / 3) and math.isnan(table[0]["nose2_fail_rate"])
    md = evaluate.table_markdown(table, "cap")
    assert "Nose failed on SR" in md and "Nose 2" not in md
    assert [k for k, _ in evaluate.shown_columns(table)] == [k for k, _ in evaluate.TABLE_COLUMNS
                                                             if k not in evaluate.OPTIONAL_COLUMNS]


def test_second_models_columns_survive_the_csv_and_reach_the_table(tmp_path):
    hr, sr, gt = _batch()
    scorer = evaluate.make_scorer(Brightest("strict"), perceptual=(), locator2=Brightest("lenient", 100))
    assert scorer.locator2.name == "lenient"
    out = scorer.score(["a", "b", "c"], sr, hr, gt)
    rows = [{"id": i, "dataset": "sftl54" if j < 2 else "thermeval", "subject": 1, "source": "s", "method": "m",
             **{k: (bool(v[j]) if v.dtype == bool else float(v[j])) for k, v in out.items()}}
            for j, i in enumerate("abc")]
    path = evaluate.write_rows(rows, tmp_path / "m.csv", {})
    header = path.read_text().splitlines()[0].split(",")
    assert header[header.index("nose_gt_err_sr") + 1:] == ["nose_fail", "nose2_hr_found", "nose2_sr_found",
                                                            "nose2_err_px", "nose2_gt_err_hr", "nose2_gt_err_sr",
                                                            "nose2_fail"]
    back = evaluate.read_rows(path)
    assert (back[1]["nose2_hr_found"], back[1]["nose2_sr_found"], back[1]["nose_fail"]) == (True, False, 1.0)
    assert (back[2]["nose2_hr_found"], back[2]["nose2_sr_found"], back[2]["nose2_fail"]) == (False, True, 0.0)
    table = {r["split"]: r for r in evaluate.aggregate(back)}
    assert (table["all"]["nose2_median"], table["all"]["nose2_mean"]) == (0.0, 0.0)
    assert (table["all"]["nose2_failed"], table["all"]["nose2_failed_hr"], table["all"]["nose2_failed_sr"]) == (2, 1, 1)
    assert table["all"]["nose2_fail_rate"] == pytest.approx(1 / 3) and table["SF-TL54"]["nose2_fail_rate"] == 0.5
    assert table["ThermEval-D"]["nose2_fail_rate"] == 0.0 and table["ThermEval-D"]["nose2_failed_hr"] == 1
    assert table["all"]["nose_fail_rate"] == pytest.approx(1 / 3) and table["all"]["nose_failed_sr"] == 1
    md = evaluate.table_markdown(list(table.values()), "cap")
    head = md.splitlines()[0]
    assert head.index("Nose failed on SR") < head.index("Nose 2 median (px)") < head.index("Nose 2 failed on SR")
    assert [k for k, _ in evaluate.TABLE_COLUMNS[:11]] == ["method", "split", "n", "psnr", "ssim", "lpips", "dists",
                                                           "nose_median", "nose_mean", "nose_failed_hr",
                                                           "nose_failed_sr"]
