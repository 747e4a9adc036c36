"""The procedural thermal datasets: layouts and annotation formats of the real ones, determinism, identity,
thermal physiology, the camera's effect on bicubic x4, and the generate-once cache."""
import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from thermsr_utils import faces as F
from thermsr_utils import synthetic as S

N_SUB, N_FRAMES = 6, 2
TE1, TE2 = 3, 2


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """A tiny pair of datasets shared by the read-only tests."""
    base = tmp_path_factory.mktemp("syn")
    sf = S.write_sftl54(base / "SF-TL54", n_subjects=N_SUB, frames_per_subject=N_FRAMES, seed=3)
    te = S.write_thermeval(base / "ThermEval-D", frames_file1=TE1, frames_file2=TE2, seed=3)
    return base / "SF-TL54", base / "ThermEval-D", sf, te


def _labelme(path):
    ann = json.loads(Path(path).read_text())
    face = [s for s in ann["shapes"] if s["label"] == "face"]
    pts = np.array([s["points"][0] for s in ann["shapes"] if s["label"] != "face"], dtype=float)
    return ann, face, pts


def _metadata(root):
    with open(root / "metadata.csv", newline="") as f:
        return list(csv.DictReader(f))


def _crop(img, pts):
    """The write-up's SF-TL54 crop: 1.15 x the extent of landmarks 0-26, centred, clipped, 192x192."""
    lo, hi = pts[:27].min(0), pts[:27].max(0)
    side = 1.15 * float(max(hi - lo))
    cx, cy = (lo + hi) / 2
    h, w = img.shape[:2]
    x0, y0 = max(int(round(cx - side / 2)), 0), max(int(round(cy - side / 2)), 0)
    x1, y1 = min(int(round(cx + side / 2)), w), min(int(round(cy + side / 2)), h)
    return cv2.resize(img[y0:y1, x0:x1], (192, 192), interpolation=cv2.INTER_AREA)


def _gray_frames(root):
    """(subject id, gray image uint8 H×W, landmarks (54, 2), face box) for every gray frame."""
    out = []
    for js in sorted((root / "gray").glob("*/json/*.json")):
        _, face, pts = _labelme(js)
        img = cv2.imread(str(js.parent.parent / "images" / f"{js.stem}.png"), cv2.IMREAD_GRAYSCALE)
        (x0, y0), (x1, y1) = face[0]["points"]
        out.append((int(js.stem.split("_")[0]), img, pts, (x0, y0, x1, y1)))
    return out


# ---------------------------------------------------------------------------------------------
# SF-TL54 layout
# ---------------------------------------------------------------------------------------------
def test_sftl54_layout_and_labelme_schema(sets):
    sf_root, _, summary, _ = sets
    assert summary["frames"] == N_SUB * N_FRAMES
    for pal in ("gray", "iron"):
        jsons = sorted((sf_root / pal).glob("*/json/*.json"))
        assert len(jsons) == N_SUB * N_FRAMES
        for js in jsons:
            ann, face, pts = _labelme(js)
            assert ann["imagePath"] == f"../images/{js.stem}.png"
            assert (js.parent / ann["imagePath"]).resolve().exists()
            assert (ann["imageWidth"], ann["imageHeight"]) == (464, 348) and ann["imageData"] is None
            assert ann["shapes"][0]["label"] == "face" and len(face) == 1
            assert face[0]["shape_type"] == "rectangle" and len(face[0]["points"]) == 2
            points = [s for s in ann["shapes"] if s["label"] != "face"]
            assert len(points) == F.N_LANDMARKS
            assert all(s["shape_type"] == "point" and len(s["points"]) == 1 for s in points)
            assert pts.shape == (F.N_LANDMARKS, 2) and np.isfinite(pts).all()
            assert int(js.stem.split("_")[0]) >= 1  # first field of the name is the subject id


def test_sftl54_images_are_white_hot_gray_and_iron(sets):
    sf_root = sets[0]
    name = sorted((sf_root / "gray").glob("*/images/*.png"))[0]
    gray = cv2.imread(str(name), cv2.IMREAD_UNCHANGED)
    assert gray.dtype == np.uint8 and gray.shape == (348, 464)
    assert cv2.imread(str(name), cv2.IMREAD_COLOR).shape == (348, 464, 3)  # how the builder reads it
    iron = cv2.imread(str(sf_root / "iron" / name.parent.parent.name / "images" / name.name), cv2.IMREAD_UNCHANGED)
    assert iron.shape == (348, 464, 3)
    assert np.abs(iron[..., 0].astype(int) - iron[..., 2].astype(int)).mean() > 10  # a colour palette, not gray
    assert np.array_equal(iron, cv2.applyColorMap(gray, cv2.COLORMAP_INFERNO))  # same frame, other palette
    assert gray.std() > 20  # uses the 8-bit range (auto gain), not a flat image


def test_sftl54_splits_are_by_subject(sets):
    sf_root = sets[0]
    rows = _metadata(sf_root)
    assert [int(r["sub_id"]) for r in rows] == list(range(1, N_SUB + 1))
    assert {"sub_id", "split", "sex", "glasses"} <= set(rows[0])
    split_of = {int(r["sub_id"]): r["split"] for r in rows}
    seen = {}
    for img in (sf_root / "gray").glob("*/images/*.png"):
        sub = int(img.stem.split("_")[0])
        seen.setdefault(sub, set()).add(img.parent.parent.name)
    assert all(splits == {split_of[sub]} for sub, splits in seen.items())  # no subject in two splits
    order = {"train": 0, "val": 1, "test": 2}
    ranks = [order[split_of[i]] for i in sorted(split_of)]
    assert ranks == sorted(ranks) and set(ranks) == {0, 1, 2}  # contiguous id ranges, all splits present


def test_split_rule_matches_the_real_dataset():
    splits = [S.sftl54_split(i, 142) for i in range(1, 143)]
    assert splits.count("train") == 100 and splits.count("val") == 20 and splits.count("test") == 22
    assert (splits[99], splits[100], splits[119], splits[120]) == ("train", "val", "val", "test")
    with pytest.raises(ValueError, match="sub_id 0"):
        S.sftl54_split(0, 142)
    with pytest.raises(ValueError, match="143"):
        S.sftl54_split(143, 142)


def test_write_sftl54_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="rainbow"):
        S.write_sftl54(tmp_path / "a", n_subjects=1, frames_per_subject=1, palettes=("gray", "rainbow"))
    with pytest.raises(ValueError, match="n_subjects"):
        S.write_sftl54(tmp_path / "b", n_subjects=0)
    with pytest.raises(ValueError, match="frame counts"):
        S.write_thermeval(tmp_path / "c", frames_file1=-1)


# ---------------------------------------------------------------------------------------------
# Faces: landmarks agree with the rendered physiology; subjects keep their identity
# ---------------------------------------------------------------------------------------------
def test_landmarks_inside_face_box_and_nose_tip_cooler_than_inner_canthi(sets):
    sf_root = sets[0]
    glasses = {int(r["sub_id"]): r["glasses"] == "1" for r in _metadata(sf_root)}
    frames = _gray_frames(sf_root)
    checked = 0
    for sub, img, pts, (x0, y0, x1, y1) in frames:
        nx, ny = pts[F.NOSE_TIP]
        assert x0 < nx < x1 and y0 < ny < y1
        assert pts[:, 0].min() >= x0 - 1 and pts[:, 0].max() <= x1 + 1  # landmarks inside the face box
        if glasses[sub]:  # cold lenses hide the eyes
            continue

        def patch(p):
            x, y = int(p[0]), int(p[1])
            return float(img[y - 1:y + 2, x - 1:x + 2].mean())

        tip, canthi = patch(pts[F.NOSE_TIP]), [patch(pts[i]) for i in F.INNER_EYE_CORNERS]
        assert tip < min(canthi) - 5, (sub, tip, canthi)  # white-hot: cooler = darker
        assert tip < patch(pts[27])  # the tip is cooler than the top of the nose bridge
        face = img[int(y0):int(y1), int(x0):int(x1)]
        assert min(canthi) > np.percentile(face, 85)  # inner canthi are among the hottest face pixels
        checked += 1
    assert checked >= 2


def test_face_is_warmer_than_the_background(sets):
    for _, img, pts, _ in _gray_frames(sets[0]):
        cheeks = img[int(pts[29][1]) - 3:int(pts[29][1]) + 3, int(pts[2][0]) + 8:int(pts[14][0]) - 8]
        corners = np.concatenate([img[:20, :20].ravel(), img[:20, -20:].ravel()])
        assert cheeks.mean() > corners.mean() + 60


def test_frames_of_one_subject_look_alike(sets):
    frames = _gray_frames(sets[0])
    small = [(sub, cv2.resize(_crop(img, pts), (32, 32), interpolation=cv2.INTER_AREA).astype(float))
             for sub, img, pts, _ in frames]
    same, diff, nearest_ok = [], [], 0
    for i, (si, a) in enumerate(small):
        dists = [(np.abs(a - b).mean(), sj) for j, (sj, b) in enumerate(small) if j != i]
        same += [d for d, sj in dists if sj == si]
        diff += [d for d, sj in dists if sj != si]
        nearest_ok += min(dists)[1] == si
    assert np.mean(same) < 0.7 * np.mean(diff)
    assert nearest_ok >= 0.75 * len(small)


def test_frames_of_one_subject_vary_in_pose(sets):
    by_sub = {}
    for sub, _, pts, _ in _gray_frames(sets[0]):
        by_sub.setdefault(sub, []).append(pts)
    moves = [np.abs(p[0] - p[1]).max() for p in by_sub.values()]
    assert all(m > 0.5 for m in moves)  # every subject moved between frames
    assert max(m for m in moves) < 80  # but stayed in a portrait framing


def test_projection_matches_the_renderer_under_roll_and_yaw():
    s = F.make_subject(1, np.random.default_rng(5))
    pose = F.Pose(cx=230.0, cy=150.0, scale=80.0, roll=0.1, yaw=0.15, mouth_open=0.0, skin_dt=0.0, breath=0.0)
    lm = F.canonical_landmarks(s)
    px = F.project(s, pose, lm)
    frame = F._Frame(s, pose, (0, 348, 0, 464))
    for i in (F.NOSE_TIP, *F.INNER_EYE_CORNERS, 8, 48):
        x, y = px[i]
        # face units of the pixel holding the landmark: within a pixel of the landmark's own coordinates
        got = np.array([frame.u[int(y), int(x)], frame.v[int(y), int(x)]])
        assert np.abs(got - lm[i]).max() < 1.5 / pose.scale, i
    flat = F.project(s, F.Pose(230.0, 150.0, 80.0, 0.0, 0.0, 0.0, 0.0, 0.0), lm)
    assert np.allclose(flat, np.array([230.0, 150.0]) + 80.0 * lm)  # no roll, no yaw: a plain scaling
    turned = F.project(s, F.Pose(230.0, 150.0, 80.0, 0.0, 0.15, 0.0, 0.0, 0.0), lm)
    shift = turned[:, 0] - flat[:, 0]
    assert shift[F.NOSE_TIP] > 5  # the nose moves with the yaw ...
    assert abs(shift[16]) < 0.5  # ... the outline on the side it turns to stays ...
    assert 0 <= shift[0] < shift[F.NOSE_TIP]  # ... and the far side's outline moves in, less than the nose


# ---------------------------------------------------------------------------------------------
# ThermEval-D layout
# ---------------------------------------------------------------------------------------------
def test_thermeval_coco_schema(sets):
    _, te_root, _, summary = sets
    files = [json.loads((te_root / "Annotations" / f"annotations_{k}.json").read_text()) for k in (1, 2)]
    assert [len(f["images"]) for f in files] == [TE1, TE2]
    names = [{im["file_name"] for im in f["images"]} for f in files]
    assert not names[0] & names[1]  # disjoint frames
    all_names = names[0] | names[1]
    assert any(n.endswith(".jpg") for n in all_names) and any(n.endswith(".png") for n in all_names)
    n_person = n_nose = 0
    for coco in files:
        cats = {c["id"]: c["name"] for c in coco["categories"]}
        assert cats[0] == "Person" and cats[3] == "Nose"
        ids = {im["id"] for im in coco["images"]}
        assert len(ids) == len(coco["images"])
        for im in coco["images"]:
            disk = te_root / "images" / (Path(im["file_name"]).stem + ".png")
            img = cv2.imread(str(disk), cv2.IMREAD_UNCHANGED)
            assert img is not None and img.dtype == np.uint8 and img.shape[:2] == (im["height"], im["width"])
            assert (im["width"], im["height"]) == (256, 192)
        assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])
        for a in coco["annotations"]:
            assert a["image_id"] in ids and a["iscrowd"] == 0 and a["segmentation"] == []
            x, y, w, h = a["bbox"]
            assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 256.01 and y + h <= 192.01
            assert a["area"] == pytest.approx(w * h, abs=0.05)
            if a["category_id"] == 3:
                assert 3 <= w <= 8 and w == h
                n_nose += 1
            n_person += a["category_id"] == 0
    assert n_person == summary["persons"] and n_nose == summary["noses"] and n_nose >= 1


def test_nose_boxes_sit_on_a_face_inside_a_person(sets):
    _, te_root, _, summary = sets
    orphans = 0
    for k in (1, 2):
        coco = json.loads((te_root / "Annotations" / f"annotations_{k}.json").read_text())
        for im in coco["images"]:
            anns = [a for a in coco["annotations"] if a["image_id"] == im["id"]]
            persons = [a["bbox"] for a in anns if a["category_id"] == 0]
            img = cv2.imread(str(te_root / "images" / (Path(im["file_name"]).stem + ".png")), cv2.IMREAD_GRAYSCALE)
            for a in (a for a in anns if a["category_id"] == 3):
                x, y, w, h = a["bbox"]
                cx, cy = x + w / 2, y + h / 2
                inside = [p for p in persons if p[0] <= cx <= p[0] + p[2] and p[1] <= cy <= p[1] + p[3]]
                orphans += not inside
                ring = img[max(int(cy) - 12, 0):int(cy) + 13, max(int(cx) - 12, 0):int(cx) + 13]
                assert img[int(cy), int(cx)] > np.percentile(img, 40)  # on warm skin, not on the background
                assert ring.std() > 2  # a face has structure around the nose
    assert orphans == summary["noses_without_person"]


def test_orphan_nose_count():
    person = (S.PERSON, [10.0, 10.0, 50.0, 100.0])
    inside, outside = (S.NOSE, [30.0, 30.0, 4.0, 4.0]), (S.NOSE, [100.0, 30.0, 4.0, 4.0])
    assert S._orphan_noses([person, inside]) == 0
    assert S._orphan_noses([person, inside, outside]) == 1
    assert S._orphan_noses([inside]) == 1


# ---------------------------------------------------------------------------------------------
# Determinism, calibration, and the generate-once cache
# ---------------------------------------------------------------------------------------------
def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    def make(name, seed):
        S.write_sftl54(tmp_path / name / "sf", n_subjects=3, frames_per_subject=1, seed=seed, palettes=("gray",))
        S.write_thermeval(tmp_path / name / "te", frames_file1=1, frames_file2=1, seed=seed)
        return _tree(tmp_path / name)

    a, b, c = make("a", 11), make("b", 11), make("c", 12)
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    pngs = [k for k in a if k.endswith(".png")]
    assert len(pngs) == 5 and all(a[k] != c.get(k) for k in pngs)


def test_bicubic_x4_on_face_crops_is_in_the_range_of_real_thermal_crops(sets):
    # Real thermal face crops score about 34.4 dB; far above means too smooth, far below too noisy.
    psnr = []
    for _, img, pts, _ in _gray_frames(sets[0]):
        hr = _crop(cv2.cvtColor(img, cv2.COLOR_GRAY2BGR), pts).astype(np.float64) / 255
        lr = cv2.resize((hr * 255).astype(np.uint8), (48, 48), interpolation=cv2.INTER_AREA)
        sr = cv2.resize(lr, (192, 192), interpolation=cv2.INTER_CUBIC).astype(np.float64) / 255
        psnr.append(10 * np.log10(1.0 / np.mean((hr - sr) ** 2)))
    assert 32.0 < np.mean(psnr) < 37.0, np.round(psnr, 2)


def _ensure(base, **over):
    kw = dict(seed=0, sftl54_subjects=3, sftl54_frames_per_subject=1, thermeval_frames_file1=1,
              thermeval_frames_file2=1)
    kw.update(over)
    return S.ensure_synthetic(base, **kw)


def test_ensure_synthetic_generates_once_and_regenerates_on_change(tmp_path):
    base = tmp_path / "synthetic" / "smoke"
    sf, te = _ensure(base)
    assert (sf, te) == (base / "SF-TL54", base / "ThermEval-D")
    assert (sf / "metadata.csv").exists() and (te / "Annotations" / "annotations_2.json").exists()
    stamp = json.loads((base / "synthetic.json").read_text())
    assert stamp["generator_version"] == S.GENERATOR_VERSION and stamp["sftl54_subjects"] == 3
    marker = sf / "marker"
    marker.write_text("kept")
    _ensure(base)
    assert marker.exists()  # same parameters: reused, not regenerated
    _ensure(base, thermeval_frames_file2=2)
    assert not marker.exists()  # changed parameters: regenerated
    coco = json.loads((te / "Annotations" / "annotations_2.json").read_text())
    assert len(coco["images"]) == 2
    assert sorted(p.name for p in base.parent.iterdir()) == ["smoke"]  # no temporary folders left behind


def test_ensure_synthetic_regenerates_after_damage(tmp_path):
    base = tmp_path / "set"
    sf, te = _ensure(base)
    (base / "synthetic.json").write_text("{not json")
    (sf / "marker").write_text("x")
    _ensure(base)
    assert not (sf / "marker").exists()
    (te / "marker").write_text("x")
    import shutil

    shutil.rmtree(sf)
    _ensure(base)
    assert sf.is_dir() and not (te / "marker").exists()


def test_interrupted_generation_leaves_no_complete_looking_set(tmp_path, monkeypatch):
    base = tmp_path / "set"
    _ensure(base)
    before = (base / "synthetic.json").read_bytes()

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(S, "write_thermeval", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        _ensure(base, seed=1)
    assert (base / "synthetic.json").read_bytes() == before  # the old, complete set is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]
    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError):
        _ensure(fresh)
    assert not fresh.exists()


def test_samples_figure_is_written_and_labelled(sets, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from thermsr_utils import plots

    sf_root, te_root = sets[0], sets[1]
    out = tmp_path / "figs" / "raw_samples.png"
    fig = plots.synthetic_samples_figure(sf_root, te_root, out, n=3)
    try:
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "SYNTHETIC" in fig._suptitle.get_text()
        assert len([ax for ax in fig.axes if ax.images]) == 3 * 3  # gray, iron and ThermEval rows
        assert [p.name for p in out.parent.iterdir()] == ["raw_samples.png"]  # no temporary file left
    finally:
        plt.close(fig)
    with pytest.raises(ValueError, match="n must be"):
        plots.synthetic_samples_figure(sf_root, te_root, out, n=0)
    with pytest.raises(FileNotFoundError, match="no SF-TL54 gray images"):
        plots.synthetic_samples_figure(tmp_path / "missing" / "SF-TL54", te_root, out)


def test_samples_figure_passes_over_what_the_builder_skips(sets, tmp_path):
    """A truncated first training frame, text coordinates in an annotation, a file_name that leaves images/:
    the preview shows other frames and counts the ones it passed over, as the builder skips and names them."""
    import shutil

    import matplotlib

    matplotlib.use("Agg")
    from thermsr_utils import plots

    sf_root, te_root = tmp_path / "SF-TL54", tmp_path / "ThermEval-D"
    shutil.copytree(sets[0], sf_root)
    shutil.copytree(sets[1], te_root)
    first = sorted((sf_root / "gray" / "train" / "images").glob("*.png"))[0]
    first.write_bytes(first.read_bytes()[:200])
    js = sorted((sf_root / "gray" / "val" / "json").glob("*.json"))[0]
    ann = json.loads(js.read_text())
    ann["shapes"][0]["points"] = [["abc", 1.0]]
    js.write_text(json.dumps(ann))
    coco_path = te_root / "Annotations" / "annotations_1.json"
    coco = json.loads(coco_path.read_text())
    coco["images"][0]["file_name"] = "../../../outside/secret_frame.png"
    coco_path.write_text(json.dumps(coco))
    out = tmp_path / "raw_samples.png"
    fig = plots.synthetic_samples_figure(sf_root, te_root, out, n=4)   # the spread starts with the first frame
    shown = [ax.get_title() for ax in fig.axes if ax.images]
    assert f"SF-TL54 gray · {first.stem}" not in shown and f"SF-TL54 gray · {js.stem}" not in shown
    assert "passed over" in fig.texts[-1].get_text()
    assert out.is_file() and len(shown) == 4 + 4 + 4


def test_samples_figure_shows_the_same_frames_when_all_are_readable(sets, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from thermsr_utils import plots

    fig = plots.synthetic_samples_figure(sets[0], sets[1], tmp_path / "a.png", n=3)
    stems = [js.stem for split in ("train", "val", "test")
             for js in sorted((sets[0] / "gray" / split / "json").glob("*.json"))]
    expected = [f"SF-TL54 gray · {stem}" for stem in plots._spread(stems, 3)]
    assert [ax.get_title() for ax in fig.axes if ax.get_title().startswith("SF-TL54 gray")] == expected
    assert "passed over" not in fig.texts[-1].get_text()
