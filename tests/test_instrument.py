"""The landmark-model check of notebook 02: distances to the annotation, displacements, targets and the gate."""
import numpy as np
import pytest

from thermsr_utils import instrument as I
from thermsr_utils import io as tio
from thermsr_utils import faces as F
from thermsr_utils import synthetic as S


class FixedLocator:
    """Returns the same five points (plus an offset) for every image: a stand-in landmark model."""

    def __init__(self, points, offset=(0.0, 0.0), name="retinaface-test", found=True):
        self.points, self.offset, self.name, self.found = np.asarray(points, float), np.asarray(offset), name, found

    def detect(self, images):
        out = []
        for _ in images:
            if self.found:
                out.append({"boxes": np.zeros((1, 4)), "scores": np.ones(1),
                            "landmarks": (self.points + self.offset)[None]})
            else:
                out.append({"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "landmarks": np.zeros((0, 5, 2))})
        return out


def _images(n=3):
    return np.full((n, 64, 64, 3), 128, np.uint8)


def test_to_pixel_centres_moves_half_a_pixel_up_and_left():
    assert np.allclose(I.to_pixel_centres([[10.0, 20.0]]), [[9.5, 19.5]])


def test_five_points_are_eye_centres_nose_tip_and_mouth_corners():
    lm = F.canonical_landmarks(F.make_subject(1, np.random.default_rng(0)))
    five = I.five_points(lm)
    assert np.allclose(five[0], lm[36:42].mean(0)) and np.allclose(five[1], lm[42:48].mean(0))
    assert np.allclose(five[2], lm[30]) and np.allclose(five[3], lm[48]) and np.allclose(five[4], lm[50])
    assert five[0, 0] < five[1, 0] and five[3, 0] < five[4, 0]  # image left before image right


def test_check_measures_the_distance_to_the_truth_and_the_targets_follow():
    pts = np.array([[20, 20], [44, 20], [32, 34], [24, 46], [40, 46]], float)
    truth = np.repeat(pts[None], 3, 0)
    exact = I.check(FixedLocator(pts), _images(), truth)
    assert exact["detected"] == 1.0 and exact["to_truth_px"]["nose tip"] == pytest.approx(0.0)
    assert exact["displacement_px"]["blur σ1"] == pytest.approx(0.0)  # a fixed answer does not move
    off = I.check(FixedLocator(pts, offset=(3.0, 4.0)), _images(), truth)
    assert off["to_truth_px"]["nose tip"] == pytest.approx(5.0)
    assert I.targets(exact)["nose"] is True and I.targets(off)["nose"] is False
    assert I.targets(exact)["blur σ1"] is None  # a zero displacement has no ratio to the real figure
    assert I.reads_faces(exact, "SF-TL54") and not I.reads_faces(off, "SF-TL54")


def test_detection_is_gated_on_face_crops_only():
    pts = np.array([[20, 20], [44, 20], [32, 34], [24, 46], [40, 46]], float)
    res = I.check(FixedLocator(pts), _images(), np.repeat(pts[None], 3, 0))
    res["detected"] = 0.88
    assert not I.reads_faces(res, "SF-TL54")
    assert I.reads_faces(res, "ThermEval-D")
    assert I.targets(res, "ThermEval-D")["detected"] is None and I.targets(res, "SF-TL54")["detected"] is False
    assert "no target" in I.summary_line("ThermEval-D", "RetinaFace", res)


def test_missing_faces_count_against_detection_and_leave_no_distance():
    pts = np.zeros((5, 2))
    res = I.check(FixedLocator(pts, found=False), _images(), np.repeat(pts[None], 3, 0))
    assert res["detected"] == 0.0 and res["to_truth_px"]["nose tip"] is None
    assert not I.reads_faces(res, "ThermEval-D")


def test_check_refuses_truth_of_the_wrong_shape():
    with pytest.raises(ValueError, match="truth must have shape"):
        I.check(FixedLocator(np.zeros((5, 2))), _images(), np.zeros((2, 5, 2)))


def test_perturbations_change_the_image_and_unknown_names_are_refused():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
    for name in I.PERTURBATIONS:
        out = I.perturb(img, name)
        assert out.shape == img.shape and out.dtype == np.uint8 and not np.array_equal(out, img)
    with pytest.raises(ValueError, match="unknown perturbation"):
        I.perturb(img, "blur σ3")


def test_truth_points_reads_the_labelme_file_and_maps_into_the_crop(tmp_path):
    s = F.make_subject(3, np.random.default_rng(3))
    pose = F.Pose(cx=232, cy=150, scale=80, roll=0.0, yaw=0.0, mouth_open=0.0, skin_dt=0.0, breath=0.0)
    lm = F.project(s, pose, F.canonical_landmarks(s))
    tio.atomic_write_json(tmp_path / "gray" / "test" / "json" / "003_1_1_1_001.json",
                          S._labelme("003_1_1_1_001", S.face_box(s, pose), lm))
    box = [100, 50, 300, 250]
    recs = [{"id": "sf", "dataset": "sftl54", "source": "gray/test/images/003_1_1_1_001.png", "box": box},
            {"id": "te", "dataset": "thermeval", "source": "images/x.png", "box": box, "nose": [10.0, 12.0]}]
    truth = I.truth_points(recs, tmp_path, size=100)
    nose = (lm[30] - [100, 50]) * 100 / 200 - 0.5
    assert np.allclose(truth["sf"][2], nose, atol=1e-3)
    assert truth["te"][2] == [9.5, 11.5] and truth["te"][0] is None
    arr = I.truth_array(truth, ["te", "missing"])
    assert np.isnan(arr[1]).all() and np.isnan(arr[0, 0]).all() and np.allclose(arr[0, 2], [9.5, 11.5])


def test_sensitivity_is_the_median_ratio_to_the_real_crops():
    res = {"real_crops": {"blur σ1": 2.0, "blur σ2": 4.0, "bicubic ×4": 3.0},
           "displacement_px": {"blur σ1": 1.0, "blur σ2": 1.0, "bicubic ×4": 3.0}}
    assert I.sensitivity(res) == pytest.approx(0.5)
    assert "less sensitive" in I.sensitivity_line("SF-TL54", "RetinaFace", res)
    assert I.sensitivity({"real_crops": None, "displacement_px": {}}) is None


def test_withhold_marks_the_verdicts_of_a_model_that_does_not_read_the_faces():
    from thermsr_utils import findings

    ctx = {"models": {"nose": "RetinaFace", "nose2": "dlib"}, "floors": {},
           "reads": {"SF-TL54|RetinaFace": False, "ThermEval-D|RetinaFace": True,
                     "SF-TL54|dlib": True, "ThermEval-D|dlib": True}, "sensitivity": {}}
    comps = [{"metric": m, "split": sp, "verdict": "worse", "verdict_holm": "worse"}
             for m in ("nose_err_px", "nose2_err_px", "psnr") for sp in ("all", "SF-TL54", "ThermEval-D")]
    out = {(c["metric"], c["split"]): c["verdict"] for c in findings.withhold(comps, ctx)}
    assert out[("nose_err_px", "SF-TL54")] == findings.WITHHELD and out[("nose_err_px", "all")] == findings.WITHHELD
    assert out[("nose_err_px", "ThermEval-D")] == "worse"
    assert all(out[("nose2_err_px", sp)] == "worse" for sp in ("all", "SF-TL54", "ThermEval-D"))
    assert out[("psnr", "all")] == "worse"
    assert comps[0]["verdict"] == "worse"  # the input is left as it was
    assert "RetinaFace on SF-TL54" in findings.withheld_line(ctx)
