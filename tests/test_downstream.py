"""The downstream nose metric: rtmlib through its real pre/post-processing on tiny ONNX models, the heatmap
stand-in (soft-argmax, augmentation, training, save/load) and the SR-vs-HR error with failure counts."""
import socket
import warnings

import numpy as np
import pytest
import torch

from thermsr_utils import downstream as ds

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


def blob_set(n, size, seed):
    """n noisy size×size images, each with one bright blob at a random position; returns (images, xy)."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(8, size - 9, (n, 2))
    imgs = []
    for x, y in xy:
        img = blob_image(size, size, [(x, y, 180.0)], background=40.0).astype(float)
        img += rng.normal(0, 6, (size, size, 1))
        imgs.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(imgs), xy


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
# the heatmap stand-in
# ---------------------------------------------------------------------------------------------

def test_heatmap_shapes_and_gradients():
    torch.manual_seed(0)
    model = ds.HeatmapNose(width=4)
    x = torch.rand(2, 3, 64, 48, requires_grad=True)
    assert model(x).shape == (2, 1, 16, 12)
    xy = model.predict_xy(x)
    assert xy.shape == (2, 2)
    assert ((xy[:, 0] >= 0) & (xy[:, 0] <= 47) & (xy[:, 1] >= 0) & (xy[:, 1] <= 63)).all()
    xy.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="divisible by 4"):
        model(torch.rand(1, 3, 62, 64))
    with pytest.raises(ValueError, match="N×3×H×W"):
        model(torch.rand(1, 1, 64, 64))
    with pytest.raises(ValueError, match="width"):
        ds.HeatmapNose(width=0)


def test_soft_argmax_is_exact_on_peaked_maps():
    logits = torch.full((3, 1, 8, 10), -1e4)
    logits[0, 0, 3, 5] = 0.0                                  # one cell
    logits[1, 0, 2, 1] = logits[1, 0, 2, 4] = 0.0             # two equal cells: midpoint
    logits[2] = 0.0                                           # flat: the image centre
    xy = ds.soft_argmax(logits)
    expected = torch.tensor([[4 * 5 + 1.5, 4 * 3 + 1.5], [4 * 2.5 + 1.5, 4 * 2 + 1.5], [(40 - 1) / 2, (32 - 1) / 2]])
    torch.testing.assert_close(xy, expected)
    with pytest.raises(ValueError):
        ds.soft_argmax(torch.zeros(1, 2, 4, 4))


def test_gaussian_targets_decode_back_to_the_point():
    xy = torch.tensor([[20.0, 30.0], [33.7, 18.2]], dtype=torch.float64)
    t = ds.gaussian_targets(xy, 24, 24, sigma=4.0)  # one heatmap cell
    assert t.shape == (2, 24, 24)
    torch.testing.assert_close(t.sum(dim=(1, 2)), torch.ones(2, dtype=torch.float64))
    decoded = ds.soft_argmax(t.log()[:, None])
    torch.testing.assert_close(decoded, xy, atol=1e-3, rtol=0)
    cx = torch.arange(24, dtype=torch.float64) * 4 + 1.5  # cell centres in pixels
    std_x = ((t.sum(1) * (cx[None] - xy[:, :1]) ** 2).sum(1)).sqrt()
    torch.testing.assert_close(std_x, torch.full((2,), 4.0, dtype=torch.float64), atol=1e-3, rtol=0)  # sigma in px


def test_augmentation_moves_the_target_with_the_image():
    h, w = 48, 64
    pts = np.array([[15.3, 20.6], [40.0, 12.0], [50.5, 35.2], [8.0, 40.0]])
    imgs = np.stack([blob_image(h, w, [(x, y, 255.0)], background=0.0, sigma=2.5) for x, y in pts])
    x = torch.from_numpy(imgs[..., ::-1].copy()).permute(0, 3, 1, 2).float() / 255
    gen = torch.Generator().manual_seed(3)
    flipped_any = False
    for _ in range(3):
        xa, ya = ds.augment_batch(x, torch.from_numpy(pts).float(), gen, max_shift=5.0)
        assert xa.shape == x.shape and xa.min() >= 0 and xa.max() <= 1
        for img, target, orig in zip(xa.mean(1).numpy(), ya.numpy(), pts):
            mask = img > 0.5 * img.max()
            yy, xx = np.nonzero(mask)
            centroid = np.array([np.average(xx, weights=img[mask]), np.average(yy, weights=img[mask])])
            np.testing.assert_allclose(centroid, target, atol=0.75)
            flipped_any |= abs(target[0] - orig[0]) > 6
    assert flipped_any  # the mirror is exercised, not only small shifts


@pytest.fixture(scope="module")
def trained():
    """A small locator trained on 64×64 blob images (two with unknown points, which must be skipped)."""
    imgs, xy = blob_set(66, 64, seed=0)
    xy[[5, 40]] = np.nan
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the CPU is shared; one thread is about as fast here and kinder
    try:
        model, info = ds.train_heatmap_locator(imgs, xy, epochs=12, batch_size=16, width=8, seed=0, progress=False)
    finally:
        torch.set_num_threads(threads)
    return model, info


def test_training_learns_to_locate_blobs(trained):
    model, info = trained
    assert info["n_skipped_no_point"] == 2 and info["n_train"] + info["n_val"] == 64 and info["n_val"] > 0
    assert len(info["history"]) == 12 and info["history"][-1]["loss"] < info["history"][0]["loss"]
    assert info["image_size"] == [64, 64] and info["name"] == ds.HEATMAP_NAME
    imgs, xy = blob_set(24, 64, seed=1)
    loc = ds.HeatmapNoseLocator(model, info)
    assert isinstance(loc, ds.NoseLocator) and "stand-in" in loc.name
    pred, found = loc.locate(imgs)
    err = np.linalg.norm(pred - xy, axis=1)
    assert found.all()
    assert np.median(err) < 2.0 and err.max() < 5.0, err
    # An untrained network cannot do this: its soft-argmax sits near the centre.
    untrained = ds.HeatmapNoseLocator(ds.HeatmapNose(width=8))
    assert np.median(np.linalg.norm(untrained.locate(imgs)[0] - xy, axis=1)) > 5.0


def test_training_rejects_bad_inputs():
    imgs, xy = blob_set(4, 32, seed=2)
    with pytest.raises(ValueError, match="nose_xy"):
        ds.train_heatmap_locator(imgs, xy[:3], epochs=1, progress=False)
    with pytest.raises(ValueError, match="multiples of 4"):
        ds.train_heatmap_locator(np.zeros((4, 30, 32, 3), np.uint8), xy, epochs=1, progress=False)
    with pytest.raises(ValueError, match="epochs"):
        ds.train_heatmap_locator(imgs, xy, epochs=0, progress=False)
    with pytest.raises(ValueError, match="val_xy"):
        ds.train_heatmap_locator(imgs, xy, epochs=1, progress=False, val_images=imgs, val_xy=xy[:2])
    with pytest.raises(ValueError, match="finite nose point"):
        ds.train_heatmap_locator(imgs, np.full((4, 2), np.nan), epochs=1, progress=False)


def test_save_load_round_trip(trained, tmp_path):
    model, info = trained
    path = ds.save_locator(model, info, tmp_path / "nose" / "locator.pt")
    assert path.is_file() and path.with_suffix(".json").is_file()
    imgs, _ = blob_set(5, 64, seed=3)
    before, _ = ds.HeatmapNoseLocator(model, info).locate(imgs)
    loaded = ds.load_locator(path)
    after, found = loaded.locate(imgs)
    assert found.all() and np.array_equal(before, after)
    assert loaded.info["val_median_px"] == info["val_median_px"] and loaded.name == ds.HEATMAP_NAME
    assert not any(p.name.startswith(".") for p in path.parent.iterdir())  # no temporary files left
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        ds.load_locator(tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "bad.json").write_text('{"width": 8}')
    with pytest.raises(ValueError, match="bad.pt"):
        ds.load_locator(tmp_path / "bad.pt")
    (tmp_path / "nojson.pt").write_bytes(path.read_bytes())
    with pytest.raises(FileNotFoundError, match="nojson.json"):
        ds.load_locator(tmp_path / "nojson.pt")


def test_locator_rejects_wrong_inputs():
    loc = ds.HeatmapNoseLocator(ds.HeatmapNose(width=4))
    with pytest.raises(ValueError, match="uint8"):
        loc.locate(np.zeros((2, 16, 16, 3), np.float32))
    with pytest.raises(ValueError, match="N×H×W×3"):
        loc.locate(np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="N×H×W×3"):
        loc.locate(np.zeros((1, 16, 16, 1), np.uint8))
    with pytest.raises(ValueError, match="multiples of 4"):
        loc.locate(np.zeros((1, 18, 16, 3), np.uint8))
    with pytest.raises(TypeError, match="numpy array"):
        loc.locate([np.zeros((16, 16, 3), np.uint8)])


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
    s = ds.summarize_nose(err)
    assert (s["n"], s["n_valid"], s["n_failed_hr"], s["n_failed_sr"], s["n_failed_any"]) == (6, 3, 2, 2, 3)
    assert s["median"] == pytest.approx(5.0) and s["mean"] == pytest.approx(5.0)
    g = ds.summarize_nose(err, key="err_gt_sr")
    assert g["n_valid"] == 3 and g["median"] == pytest.approx(np.hypot(3, 3))
    assert "err_gt_hr" not in ds.nose_errors(BrightestPoint(), hr, sr)


def test_summarize_all_failed_is_nan_without_warnings():
    err = {"err_px": np.full(3, np.nan), "hr_found": np.array([False, True, True]),
           "sr_found": np.array([True, False, False])}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = ds.summarize_nose(err)
    assert np.isnan(s["median"]) and np.isnan(s["mean"]) and s["n_valid"] == 0 and s["n_failed_any"] == 3
    with pytest.raises(KeyError, match="err_gt_sr"):
        ds.summarize_nose(err, key="err_gt_sr")


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
# choosing the nose model for a run
# ---------------------------------------------------------------------------------------------

def _write_crops(crops_dir, split, n, seed):
    """Write n 32×32 blob crops as PNGs under crops_dir/split and return manifest-like records."""
    from thermsr_utils import io

    imgs, xy = blob_set(n, 32, seed)
    recs = []
    for i, (img, p) in enumerate(zip(imgs, xy)):
        rel = f"{split}/c{seed}_{i}.png"
        io.write_png(crops_dir / rel, img)
        recs.append({"id": f"{split}{seed}_{i}", "path": rel, "nose": [float(p[0]), float(p[1])],
                     "sha256": io.pixel_sha256(img), "split": split})
    recs[0]["nose"] = None  # a crop without a ground-truth point is skipped, not fatal
    return recs


def test_prepare_locator_trains_reuses_and_loads(tmp_path, monkeypatch, empty_cache, network_calls):
    crops = tmp_path / "crops"
    train, val = _write_crops(crops, "train", 10, 0), _write_crops(crops, "val", 4, 1)
    folder = tmp_path / "models" / "nose_locator"
    calls = []
    real_train = ds.train_heatmap_locator

    def counting_train(*args, **kwargs):
        calls.append(kwargs)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(ds, "train_heatmap_locator", counting_train)
    kw = dict(epochs=1, seed=0, progress=False, width=4)
    loc = ds.prepare_locator("auto", folder, crops, train, val, **kw)  # empty rtmlib cache: the stand-in
    assert isinstance(loc, ds.HeatmapNoseLocator) and len(calls) == 1
    assert loc.info["n_train"] == 9 and loc.info["n_val"] == 3 and loc.info["val_source"] == "given"
    assert (folder / ds.LOCATOR_FILE).is_file()
    probe = blob_set(3, 32, 5)[0]
    again = ds.prepare_locator("heatmap", folder, crops, train, val, **kw)
    assert len(calls) == 1 and np.array_equal(again.locate(probe)[0], loc.locate(probe)[0])
    loaded = ds.prepare_locator("auto", folder)  # later notebooks: load what was trained
    assert np.array_equal(loaded.locate(probe)[0], loc.locate(probe)[0])
    ds.prepare_locator("heatmap", folder, crops, train, val, **{**kw, "epochs": 2})  # other settings: retrain
    ds.prepare_locator("heatmap", folder, crops, train[:-1], val, **{**kw, "epochs": 2})  # other records
    assert len(calls) == 3
    with pytest.raises(FileNotFoundError, match="train it first"):
        ds.prepare_locator("heatmap", tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="nose_model"):
        ds.prepare_locator("dwpose", folder)
    with pytest.raises(FileNotFoundError, match="will not be downloaded"):
        ds.prepare_locator("rtmlib", folder)
    assert network_calls == []


def test_prepare_locator_auto_prefers_cached_rtmlib(tmp_path, pose_onnx, empty_cache, network_calls):
    names = ds.rtmlib_expected_files("balanced")
    empty_cache.mkdir(parents=True)
    make_detector(empty_cache / names["det"][0], (0, 0, DET_SIZE, DET_SIZE), 0.9)
    (empty_cache / names["pose"][0]).write_bytes(pose_onnx.read_bytes())
    loc = ds.prepare_locator("auto", tmp_path / "unused")
    assert isinstance(loc, ds.RtmlibNose) and loc.name == "rtmlib-wholebody-balanced"
    assert network_calls == []
