"""Dataset builders on hand-made SF-TL54-format and ThermEval-D-format folders.

Expected boxes and points below are worked out by hand from the crop protocol (DESIGN.md §3):
SF-TL54 side = 1.15 x the larger side of the extent of landmarks 0-26, ThermEval-D side = 1.15 x
max(Person w, h); x0/y0 rounded down, x1/y1 rounded up, then clipped to the image.
"""
import hashlib
import json
import random
from pathlib import Path

import cv2
import numpy as np
import pytest

from thermsr_utils import data, io, manifests, readers

# The builders take every value notebook 01 declares; these tests build the write-up's gray crops with its caps.
SF = dict(palette="gray", caps=(600, 80, 200), size=192, pad=1.15, min_crop_side=0)
TE = dict(seed=7, size=192, pad=1.15, min_crop_side=0)
BOTH = {**SF, **TE}


def build_sf(root, crops, **kw):
    return readers.build_sftl54(root, crops, **{**SF, **kw})


def build_te(root, crops, **kw):
    return readers.build_thermeval(root, crops, **{**TE, **kw})

SF_W, SF_H = 464, 348  # SF-TL54 frame size


# ---------------------------------------------------------------------------------------------
# Fixture writers
# ---------------------------------------------------------------------------------------------
def landmarks(x0, y0, x1, y1, nose=None):
    """54 points whose landmarks 0-26 span [x0, x1] x [y0, y1]; point 30 at ``nose`` (default centre).

    Point 40 is put far away on purpose: only landmarks 0-26 may define the crop.
    """
    c = ((x0 + x1) / 2, (y0 + y1) / 2)
    pts = np.tile(np.array(c, float), (54, 1))
    pts[0], pts[1] = (x0, y0), (x1, y1)
    pts[30] = nose if nose is not None else c
    pts[40] = (x1 + 30, y1 + 30)
    return pts


def labelme(pts, face=((300, 250), (10, 20))):
    """A LabelMe dict: landmark shapes (the last four as one multi-point shape), a face box in between."""
    shapes = [{"label": str(i), "shape_type": "point", "points": [list(map(float, p))]}
              for i, p in enumerate(pts[:-4])]
    shapes.append({"label": "extra", "shape_type": "polygon", "points": [list(map(float, p)) for p in pts[-4:]]})
    shapes.insert(10, {"label": "face", "shape_type": "rectangle", "points": [list(p) for p in face]})
    return {"version": "5.0.1", "shapes": shapes, "imagePath": "x.png"}


def noise_image(h, w, seed=0, channels=1):
    """Random uint8 image (gray H×W, or H×W×channels)."""
    rng = np.random.default_rng(seed)
    shape = (h, w) if channels == 1 else (h, w, channels)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def add_sftl54(root, split, stem, pts=None, size=(SF_W, SF_H), palette="gray", seed=0):
    """Write one SF-TL54 gray image and (if pts is not None) its LabelMe JSON."""
    base = Path(root) / palette / split
    (base / "images").mkdir(parents=True, exist_ok=True)
    (base / "json").mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(base / "images" / f"{stem}.png"), noise_image(size[1], size[0], seed))
    if pts is not None:
        (base / "json" / f"{stem}.json").write_text(json.dumps(labelme(pts)))
    return base


def sftl54_tree(root, extra=()):
    """A small valid SF-TL54 tree: one image per split (subjects 1, 101, 121) plus ``extra`` items."""
    for split, stem in (("train", "1_1_1_1"), ("val", "101_1_1_1"), ("test", "121_1_1_1")):
        add_sftl54(root, split, stem, landmarks(100, 80, 200, 160), seed=len(stem) + ord(split[0]))
    for item in extra:
        add_sftl54(root, *item)
    return Path(root)


def coco(entries, start_id=0):
    """COCO dict from [(file_name, [person xywh...], [nose xywh...])]; noses listed after persons."""
    images, anns = [], []
    for i, (name, persons, noses) in enumerate(entries):
        images.append({"id": start_id + i, "file_name": name, "width": 0, "height": 0})
        anns += [{"id": len(anns), "image_id": start_id + i, "category_id": 0, "bbox": list(b)} for b in persons]
        anns += [{"id": len(anns), "image_id": start_id + i, "category_id": 3, "bbox": list(b)} for b in noses]
    return {"images": images, "annotations": anns,
            "categories": [{"id": 0, "name": "Person"}, {"id": 3, "name": "Nose"}]}


def thermeval_tree(root, file1, file2, frames=None):
    """Write images (``frames``: disk name -> (H, W), default 192x256 landscape) and both COCO files."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    frames = dict(frames or {})
    for name, _, _ in file1 + file2:
        frames.setdefault(Path(name).with_suffix(".png").name, (192, 256))
    for i, (disk, (h, w)) in enumerate(sorted(frames.items())):
        if disk is not None:
            assert cv2.imwrite(str(root / "images" / disk), noise_image(h, w, seed=100 + i, channels=3))
    (root / "Annotations" / "annotations_1.json").write_text(json.dumps(coco(file1)))
    (root / "Annotations" / "annotations_2.json").write_text(json.dumps(coco(file2, start_id=1000)))
    return root


def small_thermeval(root):
    """One train/val pool image and one test image, each with one Person and one Nose."""
    person, nose = [50, 40, 60, 80], [75, 60, 10, 8]
    return thermeval_tree(root, [("p0.png", [person], [nose])], [("t0.png", [person], [nose])])


def tree_hash(root):
    """sha256 over every file's relative path and bytes under ``root`` (detects any write)."""
    h = hashlib.sha256()
    for p in sorted(Path(root).rglob("*")):
        h.update(p.relative_to(root).as_posix().encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def names(res, reason):
    """Files a BuildResult skipped for ``reason``."""
    return res.skipped.get(reason, [])


# ---------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------
def test_sftl54_box_interior_rounds_outwards():
    # extent 100..200 x 80..160 -> centre (150, 120), side 115 -> 92.5..207.5 x 62.5..177.5
    assert data.sftl54_crop_box(landmarks(100, 80, 200, 160), SF_W, SF_H) == (92, 62, 208, 178)
    # a larger pad widens the box around the same centre: side 200 -> 50..250 x 20..220
    assert data.sftl54_crop_box(landmarks(100, 80, 200, 160), SF_W, SF_H, pad=2.0) == (50, 20, 250, 220)


def test_sftl54_box_clipped_at_border_and_keep_square():
    top_left = landmarks(0, 10, 100, 90)  # centre (50, 50), side 115 -> -7.5..107.5
    assert data.sftl54_crop_box(top_left, SF_W, SF_H) == (0, 0, 108, 108)
    assert data.sftl54_crop_box(top_left, SF_W, SF_H, keep_square=True) == (0, 0, 115, 115)
    right = landmarks(420, 150, 463, 170)  # centre (441.5, 160), side 49.45
    assert data.sftl54_crop_box(right, SF_W, SF_H) == (416, 135, 464, 185)
    assert data.sftl54_crop_box(right, SF_W, SF_H, keep_square=True) == (414, 135, 464, 185)
    # a square larger than the frame's short side shrinks to it with keep_square
    wide = landmarks(10, 20, 90, 40)  # centre (50, 30), side 92 in a 100x60 frame
    assert data.sftl54_crop_box(wide, 100, 60, keep_square=True) == (20, 0, 80, 60)
    assert data.sftl54_crop_box(wide, 100, 60) == (4, 0, 96, 60)


def test_thermeval_box():
    # centre (80, 80), side 1.15 * 80 = 92 -> 34..126 on both axes
    assert data.thermeval_crop_box([50, 40, 60, 80], 256, 192) == (34, 34, 126, 126)
    assert data.thermeval_crop_box([50, 40, 60, 80], 256, 192, pad=1.0) == (40, 40, 120, 120)


def test_rounding_ignores_float_noise():
    # extent 106.3..142.3 (w 36): x1 = 124.3 + 20.7 = 145 exactly, computed as 145.00000000000003;
    # it must round to 145, not 146. y: centre 110, 89.3..130.7 -> 89..131
    assert data.sftl54_crop_box(landmarks(106.3, 100, 142.3, 120), SF_W, SF_H) == (103, 89, 145, 131)


def test_degenerate_boxes_raise():
    with pytest.raises(data.DegenerateCrop, match="outside"):
        data.sftl54_crop_box(landmarks(500, 400, 600, 450), SF_W, SF_H)
    with pytest.raises(data.DegenerateCrop, match="smaller than 8"):
        data.sftl54_crop_box(landmarks(100, 100, 103, 102), SF_W, SF_H)  # side 3.45
    with pytest.raises(data.DegenerateCrop, match="smaller than 8"):
        data.thermeval_crop_box([-60, -60, 62, 62], 256, 192)  # clipped to 0..7
    with pytest.raises(data.DegenerateCrop, match="outside"):
        data.thermeval_crop_box([300, 10, 20, 20], 256, 192, keep_square=True)
    with pytest.raises(ValueError, match="pad"):
        data.thermeval_crop_box([0, 0, 10, 10], 256, 192, pad=0)


def test_crop_and_resize_upscale_flag_and_errors():
    img = np.full((300, 400, 3), 77, np.uint8)
    out, up = data.crop_and_resize(img, (0, 0, 100, 100))
    assert out.shape == (192, 192, 3) and out.dtype == np.uint8 and up
    out, up = data.crop_and_resize(img, (10, 0, 210, 300))
    assert not up and (out == 77).all()
    out, up = data.crop_and_resize(img, (0, 0, 300, 150))  # one side below 192
    assert up
    with pytest.raises(ValueError, match="outside"):
        data.crop_and_resize(img, (350, 0, 450, 100))
    with pytest.raises(ValueError, match="empty"):
        data.crop_and_resize(img, (10, 10, 10, 50))


def test_map_point():
    box = (92, 62, 208, 178)
    assert data.map_point((150, 120), box) == pytest.approx((96.0, 96.0))
    assert data.map_point((92, 62), box) == pytest.approx((0.0, 0.0))
    # non-square box: x and y scale differently
    assert data.map_point((40, 100), (0, 0, 80, 400), size=192) == pytest.approx((96.0, 48.0))


# ---------------------------------------------------------------------------------------------
# LabelMe reading
# ---------------------------------------------------------------------------------------------
def test_read_labelme_face_box_and_landmark_order(tmp_path):
    pts = landmarks(100, 80, 200, 160, nose=(151, 121))
    pts[50:54] = [(1, 2), (3, 4), (5, 6), (7, 8)]
    p = tmp_path / "a.json"
    p.write_text(json.dumps(labelme(pts, face=((300, 250), (10, 20)))))
    face, lm = readers.read_labelme(p)
    assert face.tolist() == [10, 20, 300, 250]
    assert lm.shape == (54, 2) and np.array_equal(lm, pts)


def test_read_labelme_rejects_wrong_count_and_bad_json(tmp_path):
    p = tmp_path / "short.json"
    p.write_text(json.dumps(labelme(landmarks(0, 0, 50, 50)[:53])))
    with pytest.raises(readers.BadAnnotation, match=r"short\.json.*found 53"):
        readers.read_labelme(p)
    q = tmp_path / "broken.json"
    q.write_text('{"shapes": [')
    with pytest.raises(ValueError, match=r"broken\.json"):
        readers.read_labelme(q)


# ---------------------------------------------------------------------------------------------
# SF-TL54 builder
# ---------------------------------------------------------------------------------------------
def test_build_sftl54_records(tmp_path):
    root = sftl54_tree(tmp_path / "sf", extra=[("train", "2_1_1_1", landmarks(50, 50, 250, 250, nose=(60, 200)))])
    res = build_sf(root, tmp_path / "crops")
    recs = {r["id"]: r for r in res.records}
    assert set(recs) == {"sf_1_1_1_1", "sf_2_1_1_1", "sf_101_1_1_1", "sf_121_1_1_1"}
    r = recs["sf_1_1_1_1"]
    assert r["split"] == "train" and r["dataset"] == "sftl54" and r["subject"] == 1
    assert r["box"] == [92, 62, 208, 178] and r["source_size"] == [SF_W, SF_H]
    assert r["nose"] == [96.0, 96.0] and r["upscaled"] is True
    assert r["path"] == "train/sftl54/sf_1_1_1_1.png"
    assert r["source"] == "gray/train/images/1_1_1_1.png"
    assert recs["sf_101_1_1_1"]["split"] == "val" and recs["sf_121_1_1_1"]["subject"] == 121
    big = recs["sf_2_1_1_1"]  # side 230 -> 35..265, downscaled with INTER_AREA
    assert big["box"] == [35, 35, 265, 265] and big["upscaled"] is False
    assert big["nose"] == [round(25 * 192 / 230, 3), round(165 * 192 / 230, 3)]
    crop = io.read_image(tmp_path / "crops" / r["path"])
    assert crop.shape == (192, 192, 3)
    assert (crop[..., 0] == crop[..., 1]).all() and (crop[..., 1] == crop[..., 2]).all()  # gray x3
    assert io.pixel_sha256(crop) == r["sha256"]
    src = cv2.imread(str(root / r["source"]), cv2.IMREAD_COLOR)
    expected = cv2.resize(src[62:178, 92:208], (192, 192), interpolation=cv2.INTER_CUBIC)
    assert np.array_equal(crop, expected)
    src2 = cv2.imread(str(root / big["source"]), cv2.IMREAD_COLOR)  # each crop comes from its own image
    expected2 = cv2.resize(src2[35:265, 35:265], (192, 192), interpolation=cv2.INTER_AREA)
    assert np.array_equal(io.read_image(tmp_path / "crops" / big["path"]), expected2)


def test_sftl54_caps_take_evenly_spaced_items_in_subject_order(tmp_path):
    root = tmp_path / "sf"
    for subject in (1, 2, 3, 10, 11):
        for frame in (1, 2):
            add_sftl54(root, "train", f"{subject}_1_1_{frame}", landmarks(20, 20, 80, 80), size=(120, 100),
                       seed=subject * 10 + frame)
    for split in ("val", "test"):
        (root / "gray" / split / "images").mkdir(parents=True)
    res = build_sf(root, tmp_path / "crops", caps=(4, 80, 200))
    # order by subject number: 1a 1b 2a 2b 3a 3b 10a 10b 11a 11b; linspace(0, 9, 4) -> 0, 3, 6, 9
    assert sorted(r["id"] for r in res.records) == sorted(
        ["sf_1_1_1_1", "sf_2_1_1_2", "sf_10_1_1_1", "sf_11_1_1_2"])
    assert res.info["available"] == {"train": 10, "val": 0, "test": 0}
    assert len(list((tmp_path / "crops" / "train" / "sftl54").glob("*.png"))) == 4
    assert len(build_sf(root, tmp_path / "c2", caps=(None, 0, 0)).records) == 10
    with pytest.raises(ValueError, match="caps"):
        build_sf(root, tmp_path / "c3", caps=(4, 80))


def test_sftl54_bad_inputs_are_skipped_counted_and_named(tmp_path):
    root = sftl54_tree(tmp_path / "sf")
    good = landmarks(100, 80, 200, 160)
    base = add_sftl54(root, "train", "3_1_1_1", good)            # truncated image
    raw = (base / "images" / "3_1_1_1.png").read_bytes()
    (base / "images" / "3_1_1_1.png").write_bytes(raw[: len(raw) // 2])
    add_sftl54(root, "train", "4_1_1_1", None)                   # unparseable JSON
    (base / "json" / "4_1_1_1.json").write_text("{not json")
    add_sftl54(root, "train", "5_1_1_1", good[:53])              # 53 points
    add_sftl54(root, "train", "6_1_1_1", None)                   # no JSON at all
    (base / "json" / "7_1_1_1.json").write_text(json.dumps(labelme(good)))  # JSON without image
    add_sftl54(root, "train", "8_1_1_1", landmarks(600, 400, 700, 500))     # landmarks off the frame
    add_sftl54(root, "train", "face_1_1_1", good)                 # no subject number
    add_sftl54(root, "train", "9_1_1_1", landmarks(100, 100, 140, 140))     # side 46 < min_crop_side
    res = build_sf(root, tmp_path / "crops", min_crop_side=64)
    assert names(res, readers.R_UNREADABLE) == ["gray/train/images/3_1_1_1.png"]
    assert names(res, readers.R_UNPARSEABLE_JSON) == ["gray/train/json/4_1_1_1.json"]
    assert names(res, readers.R_BAD_ANNOTATION) == ["gray/train/json/5_1_1_1.json"]
    assert names(res, readers.R_MISSING_JSON) == ["gray/train/images/6_1_1_1.png"]
    assert names(res, readers.R_MISSING_IMAGE) == ["gray/train/json/7_1_1_1.json"]
    assert names(res, readers.R_DEGENERATE) == ["gray/train/images/8_1_1_1.png"]
    assert names(res, readers.R_BAD_NAME) == ["gray/train/images/face_1_1_1.png"]
    assert names(res, readers.R_TOO_SMALL) == ["gray/train/images/9_1_1_1.png"]
    assert sorted(r["id"] for r in res.records) == ["sf_101_1_1_1", "sf_121_1_1_1", "sf_1_1_1_1"]


def test_missing_roots_name_path_and_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere.*expected layout"):
        build_sf(tmp_path / "nowhere", tmp_path / "crops")
    root = sftl54_tree(tmp_path / "sf")
    with pytest.raises(FileNotFoundError, match="iron"):
        build_sf(root, tmp_path / "crops", palette="iron")
    with pytest.raises(FileNotFoundError, match=r"gone.*expected layout"):
        build_te(tmp_path / "gone", tmp_path / "crops")
    te = small_thermeval(tmp_path / "te")
    (te / "Annotations" / "annotations_2.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"annotations_2\.json"):
        build_te(te, tmp_path / "crops")


# ---------------------------------------------------------------------------------------------
# ThermEval-D builder
# ---------------------------------------------------------------------------------------------
def test_thermeval_smallest_person_and_jpg_name(tmp_path):
    big, small, other = [0, 0, 200, 180], [50, 40, 60, 80], [150, 100, 20, 20]  # `other` excludes the nose
    nose = [75, 60, 10, 8]  # centre (80, 64)
    root = thermeval_tree(tmp_path / "te", [("f1.jpg", [big, other, small], [nose])],
                          [("t0.png", [small], [nose])])
    res = build_te(root, tmp_path / "crops")
    r = next(r for r in res.records if r["id"] == "te_f1_0")
    assert r["source"] == "images/f1.png" and r["subject"] is None
    assert r["box"] == [34, 34, 126, 126]  # from the small Person, not the big one
    assert r["nose"] == [96.0, round(30 * 192 / 92, 3)]
    assert r["source_size"] == [256, 192]


@pytest.mark.parametrize("hw, box", [((256, 192), [82, 142, 192, 256]), ((192, 256), [82, 142, 198, 192])])
def test_thermeval_reads_the_real_frame_orientation(tmp_path, hw, box):
    person, nose = [100, 150, 80, 100], [135, 165, 10, 10]  # centre (140, 200), side 115
    root = thermeval_tree(tmp_path / "te", [("a.png", [person], [nose])], [("b.png", [person], [nose])],
                          frames={"a.png": hw, "b.png": hw})
    res = build_te(root, tmp_path / "crops")
    assert [r["box"] for r in res.records] == [box, box]
    assert res.records[0]["source_size"] == [hw[1], hw[0]]


def test_thermeval_splits_by_image_with_seed(tmp_path):
    person, nose = [50, 40, 60, 80], [75, 60, 10, 8]
    file1 = [(f"s{i:02d}.png", [person], [nose, nose]) for i in range(10)]
    file1.insert(4, ("lonely.png", [], [nose]))  # no Person: no crop, not part of the shuffle
    res = build_te(thermeval_tree(tmp_path / "te", file1, [("t.png", [person], [nose])]),
                               tmp_path / "crops")
    order = [f"images/s{i:02d}.png" for i in range(10)]
    random.Random(7).shuffle(order)
    by_split = {s: {r["source"] for r in res.records if r["split"] == s} for s in data.SPLITS}
    assert by_split == {"train": set(order[:7]), "val": set(order[7:]), "test": {"images/t.png"}}
    assert res.info["images"] == {"train": 7, "val": 3, "test": 1}
    assert sum(r["split"] == "train" for r in res.records) == 14  # two noses per image
    assert names(res, readers.R_NO_PERSON) == ["images/lonely.png (nose 0)"]
    manifests.check_disjoint(res.records)
    other = build_te(tmp_path / "te", tmp_path / "c2", seed=8)
    assert {r["source"] for r in other.records if r["split"] == "train"} != by_split["train"]


def test_thermeval_bad_inputs(tmp_path):
    person, nose = [50, 40, 60, 80], [75, 60, 10, 8]
    file1 = [("ok.png", [person], [nose, [5, 5, 4, 4], nose]), ("ghost.jpg", [person], [nose]),
             ("broken.png", [person], [nose])]
    root = thermeval_tree(tmp_path / "te", file1, [("t.png", [person], [nose])])
    (root / "images" / "ghost.png").unlink()
    raw = (root / "images" / "broken.png").read_bytes()
    (root / "images" / "broken.png").write_bytes(raw[:100])
    res = build_te(root, tmp_path / "crops")
    assert names(res, readers.R_MISSING_IMAGE) == ["Annotations/annotations_1.json: images/ghost.jpg"]
    assert names(res, readers.R_UNREADABLE) == ["images/broken.png"]
    assert names(res, readers.R_NO_PERSON) == ["images/ok.png (nose 1)"]
    # k counts every Nose of the image, so the ids stay stable when one is skipped
    assert sorted(r["id"] for r in res.records) == ["te_ok_0", "te_ok_2", "te_t_0"]
    (root / "Annotations" / "annotations_1.json").write_text('{"images": [')
    with pytest.raises(ValueError, match=r"annotations_1\.json"):
        build_te(root, tmp_path / "c2")
    (root / "Annotations" / "annotations_1.json").write_text(json.dumps({"images": [{"id": 1}], "annotations": []}))
    with pytest.raises(ValueError, match=r"annotations_1\.json: malformed images\[0\]"):
        build_te(root, tmp_path / "c3")


# ---------------------------------------------------------------------------------------------
# Manifest
# ---------------------------------------------------------------------------------------------
def build_both(tmp_path, **kw):
    """Build the small SF-TL54 + ThermEval-D fixtures (created once per tmp_path) into tmp_path/crops."""
    sf, te = tmp_path / "sf", tmp_path / "te"
    if not sf.exists():
        sftl54_tree(sf)
        small_thermeval(te)
    return manifests.build_dataset(tmp_path / "crops", sftl54_root=sf, thermeval_root=te, **{**BOTH, **kw})


def test_build_dataset_writes_manifest_in_stable_order(tmp_path):
    m = build_both(tmp_path)
    assert m == manifests.load_manifest(tmp_path / "crops" / "manifest.json")
    keys = [(r["split"], r["dataset"], r["id"]) for r in m["records"]]
    # the single pool image of ThermEval-D goes to val: int(0.7 * 1) = 0 train images
    assert keys == [("train", "sftl54", "sf_1_1_1_1"), ("val", "sftl54", "sf_101_1_1_1"),
                    ("val", "thermeval", "te_p0_0"), ("test", "sftl54", "sf_121_1_1_1"),
                    ("test", "thermeval", "te_t0_0")]
    assert all(set(r) == set(readers._RECORD_FIELDS) for r in m["records"])
    assert m["summary"]["counts"]["val"] == {"sftl54": 1, "thermeval": 1, "total": 2}
    assert m["params"]["caps"] == [600, 80, 200] and m["params"]["seed"] == 7
    assert manifests.verify_crops(tmp_path / "crops", m["records"]) == 5
    assert not (tmp_path / "crops" / manifests._STAGING).exists()
    assert str(tmp_path) not in (tmp_path / "crops" / "manifest.json").read_text()
    table = manifests.summary_table(m)
    assert "train" in table and "skipped: none" in table
    with pytest.raises(TypeError, match="palete"):
        build_both(tmp_path, palete="iron")


def test_committed_manifest_mismatch_and_update(tmp_path):
    committed = tmp_path / "committed.json"
    build_both(tmp_path, committed_manifest=committed)
    saved = json.loads(committed.read_text())
    assert set(saved) == {"schema_version", "records"} and str(tmp_path) not in committed.read_text()
    build_both(tmp_path, committed_manifest=committed)  # same inputs: no mismatch
    saved["records"][0]["box"] = [0, 0, 10, 10]
    committed.write_text(json.dumps(saved))
    before = tree_hash(tmp_path / "crops")
    with pytest.raises(manifests.ManifestMismatch, match=r"changed: sf_1_1_1_1 \(box\)"):
        build_both(tmp_path, committed_manifest=committed)
    assert tree_hash(tmp_path / "crops") == before  # a refused build changes nothing
    m = build_both(tmp_path, committed_manifest=committed, update_committed=True)
    assert manifests.load_manifest(committed)["records"] == m["records"]


def test_compare_manifests_names_ids_and_fields():
    a = {"id": "a", "box": [0, 0, 1, 1], "sha256": "x"}
    b = {"id": "b", "box": [0, 0, 1, 1], "sha256": "y"}
    c = {"id": "c", "box": [0, 0, 1, 1], "sha256": "z"}
    changed = {**b, "box": [0, 0, 2, 2], "sha256": "w"}
    assert manifests.compare_manifests([a, b], [a, b]) == []
    diffs = manifests.compare_manifests([a, changed, c], [a, b])
    assert [str(d) for d in diffs] == ["added: c", "changed: b (box, sha256)"]
    assert diffs[1].fields == ("box", "sha256")
    assert [str(d) for d in manifests.compare_manifests([a], [a, b])] == ["removed: b"]


def test_subject_in_two_splits_is_refused(tmp_path):
    sf = sftl54_tree(tmp_path / "sf", extra=[("test", "1_2_1_1", landmarks(100, 80, 200, 160))])
    with pytest.raises(ValueError, match=r"subject 1 of sftl54 is in splits \['train', 'test'\]"):
        manifests.build_dataset(tmp_path / "crops", sftl54_root=sf, thermeval_root=None, **BOTH)
    assert not (tmp_path / "crops" / "manifest.json").exists()
    recs = [{"id": "x", "dataset": "thermeval", "split": "train", "source": "images/a.png", "subject": None},
            {"id": "y", "dataset": "thermeval", "split": "val", "source": "images/a.png", "subject": None}]
    with pytest.raises(ValueError, match="images/a.png"):
        manifests.check_disjoint(recs)
    manifests.check_disjoint(recs[:1])


def test_stale_crops_removed_and_other_files_kept(tmp_path):
    stale = tmp_path / "crops" / "train" / "sftl54" / "sf_old.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    note = tmp_path / "crops" / "notes.txt"
    note.write_text("keep me")
    m = build_both(tmp_path)
    assert not stale.exists() and note.read_text() == "keep me"
    assert m["summary"]["stale_removed"] == ["train/sftl54/sf_old.png"]


def test_verify_crops_detects_changed_and_missing(tmp_path):
    m = build_both(tmp_path)
    crops = tmp_path / "crops"
    rec = m["records"][0]
    img = io.read_image(crops / rec["path"])
    img[0, 0, 0] ^= 1
    io.write_png(crops / rec["path"], img)
    with pytest.raises(ValueError, match=rf"1 unreadable or with different pixels: {rec['path']}"):
        manifests.verify_crops(crops, m["records"])
    (crops / m["records"][1]["path"]).unlink()
    with pytest.raises(ValueError, match=rf"1 missing: {m['records'][1]['path']}"):
        manifests.verify_crops(crops, m["records"])


def test_raw_tree_unchanged_and_crops_never_inside_it(tmp_path):
    sf, te = sftl54_tree(tmp_path / "sf"), small_thermeval(tmp_path / "te")
    add_sftl54(sf, "train", "5_1_1_1", landmarks(0, 0, 50, 50)[:53])  # a skipped file too
    before = tree_hash(sf), tree_hash(te)
    m = manifests.build_dataset(tmp_path / "crops", sftl54_root=sf, thermeval_root=te, **BOTH)
    assert (tree_hash(sf), tree_hash(te)) == before
    assert "5_1_1_1.json" in manifests.summary_table(m) and "bad annotation: 1" in manifests.summary_table(m)
    with pytest.raises(ValueError, match="overlap"):
        manifests.build_dataset(sf / "crops", sftl54_root=sf, thermeval_root=te, **BOTH)
    assert (tree_hash(sf), tree_hash(te)) == before


def test_the_table_subset_is_the_first_test_crops_of_each_dataset():
    """What notebooks 02, 04, 06 and 07 tabulate (``table_per_dataset``): the first n test crops of each dataset."""
    from thermsr_utils import evaluate

    recs = [{"id": f"{d[:2]}_{s}_{i}", "dataset": d, "split": s}
            for s in data.SPLITS for d in reversed(data.DATASETS) for i in range(3)]
    assert [r["id"] for r in evaluate.table_subset(recs, 2)] == ["sf_test_0", "sf_test_1", "th_test_0", "th_test_1"]
    assert len(evaluate.table_subset(recs, None)) == 6 and evaluate.table_subset(recs, 0) == []


def test_load_manifest_names_the_file_it_refuses(tmp_path):
    bad = tmp_path / "m.json"
    bad.write_text(json.dumps({"records": []}))
    with pytest.raises(ValueError, match=r"m\.json"):
        manifests.load_manifest(bad)
    with pytest.raises(FileNotFoundError, match=r"absent\.json"):
        manifests.load_manifest(tmp_path / "absent.json")


def test_pixel_only_drift_from_the_committed_manifest_is_tolerated_up_to_a_fraction(tmp_path):
    committed = tmp_path / "committed.json"
    m = build_both(tmp_path, committed_manifest=committed)
    saved = json.loads(committed.read_text())
    saved["records"][0]["sha256"] = "0" * 64                       # one crop's pixels differ, nothing else
    committed.write_text(json.dumps(saved))
    with pytest.raises(manifests.ManifestMismatch, match=r"\(sha256\)"):  # no tolerance: stops
        build_both(tmp_path, committed_manifest=committed)
    n = len(m["records"])
    again = build_both(tmp_path, committed_manifest=committed, pixel_drift_ok=1 / n)
    assert again["committed_pixel_drift"] == [saved["records"][0]["id"]]
    assert again["records"] == m["records"]                          # the run's manifest holds the real hashes
    saved["records"][1]["sha256"] = "0" * 64                         # two crops: more than the fraction allows
    committed.write_text(json.dumps(saved))
    with pytest.raises(manifests.ManifestMismatch):
        build_both(tmp_path, committed_manifest=committed, pixel_drift_ok=1 / n)
    saved["records"][1]["sha256"] = m["records"][1]["sha256"]
    saved["records"][1]["box"] = [0, 0, 10, 10]                      # any other field still stops the build
    committed.write_text(json.dumps(saved))
    with pytest.raises(manifests.ManifestMismatch, match=r"\(box\)"):
        build_both(tmp_path, committed_manifest=committed, pixel_drift_ok=0.5)
    D = manifests.ManifestDiff
    assert manifests.pixel_drift([D("changed", "a", ("sha256",)), D("changed", "b", ("box", "sha256")), D("added", "c")]) == ["a"]


# ---------------------------------------------------------------------------------------------
# Hostile and silently-wrong inputs
# ---------------------------------------------------------------------------------------------
def test_thermeval_file_name_cannot_leave_the_images_folder(tmp_path):
    person, nose = [50, 40, 60, 80], [75, 60, 10, 8]
    outside = tmp_path / "outside"
    outside.mkdir()
    assert cv2.imwrite(str(outside / "secret_frame.png"), noise_image(192, 256, seed=3, channels=3))
    file1 = [("ok.png", [person], [nose]), ("../../outside/secret_frame.png", [person], [nose]),
             (str(outside / "secret_frame.png"), [person], [nose])]
    root = thermeval_tree(tmp_path / "data" / "te", file1, [("t.png", [person], [nose])])
    (root / "images" / "secret_frame.png").unlink()   # the only copy is outside the data root
    res = build_te(root, tmp_path / "crops")
    assert sorted(r["source"] for r in res.records) == ["images/ok.png", "images/t.png"]
    assert names(res, readers.R_OUTSIDE_ROOT) == [
        "Annotations/annotations_1.json: ../../outside/secret_frame.png",
        f"Annotations/annotations_1.json: {outside / 'secret_frame.png'}"]
    with pytest.raises(readers.OutsideRoot, match=r"'\.\./x\.png' leaves .*images"):
        readers.resolve_image(root / "images", "../x.png")
    with pytest.raises(readers.OutsideRoot):
        readers.resolve_image(root / "images", "sub/../ok.png")


def test_coco_ids_that_cannot_be_ids_are_named(tmp_path):
    person, nose = [50, 40, 60, 80], [75, 60, 10, 8]
    root = thermeval_tree(tmp_path / "te", [("ok.png", [person], [nose])], [("t.png", [person], [nose])])
    ann = root / "Annotations" / "annotations_1.json"
    good = json.loads(ann.read_text())
    bad = json.loads(ann.read_text())
    bad["images"][0]["id"] = [1, 2]
    ann.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"annotations_1\.json: malformed images\[0\] .*id must be an integer"):
        build_te(root, tmp_path / "c1")
    bad = good
    bad["annotations"][1]["image_id"] = {"id": 0}
    ann.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"malformed annotations\[1\] .*image_id must be an integer or a string"):
        build_te(root, tmp_path / "c2")


def test_sixteen_bit_frames_are_skipped_not_squeezed(tmp_path):
    root = sftl54_tree(tmp_path / "sf")
    raw = np.random.default_rng(0).integers(7000, 8021, (SF_H, SF_W), dtype=np.uint16)
    assert cv2.imwrite(str(root / "gray" / "train" / "images" / "1_1_1_1.png"), raw)
    res = build_sf(root, tmp_path / "crops")
    assert names(res, readers.R_NOT_8BIT) == ["gray/train/images/1_1_1_1.png"]
    assert sorted(r["id"] for r in res.records) == ["sf_101_1_1_1", "sf_121_1_1_1"]
    with pytest.raises(readers.NotEightBit, match=r"1_1_1_1\.png: uint16 pixels, values 7\d\d\d-8\d\d\d"):
        readers.read_frame(root / "gray" / "train" / "images" / "1_1_1_1.png")


def test_labelme_size_that_disagrees_with_the_image_is_skipped(tmp_path):
    root = sftl54_tree(tmp_path / "sf")
    js = root / "gray" / "val" / "json" / "101_1_1_1.json"
    ann = json.loads(js.read_text())
    ann.update(imageWidth=SF_W, imageHeight=SF_H)
    js.write_text(json.dumps(ann))
    assert build_sf(root, tmp_path / "c0").skipped == {}    # agreeing sizes pass
    assert cv2.imwrite(str(root / "gray" / "val" / "images" / "101_1_1_1.png"), noise_image(2 * SF_H, 2 * SF_W))
    res = build_sf(root, tmp_path / "c1")
    assert names(res, readers.R_SIZE_MISMATCH) == [
        f"gray/val/images/101_1_1_1.png (annotated {SF_W}×{SF_H}, on disk {2 * SF_W}×{2 * SF_H})"]
    assert [r["split"] for r in res.records] == ["train", "test"]
    ann.update(imageWidth="wide")
    js.write_text(json.dumps(ann))
    assert names(build_sf(root, tmp_path / "c2"), readers.R_BAD_ANNOTATION) == ["gray/val/json/101_1_1_1.json"]


# ---------------------------------------------------------------------------------------------
# Palettes: gray, iron and the per-subject mix
# ---------------------------------------------------------------------------------------------
def test_mix_takes_each_subject_from_one_rendering_in_every_split(tmp_path):
    from thermsr_utils import synthetic
    from thermsr_utils.datasets import datasets_from_manifest

    sf = tmp_path / "sf"
    synthetic.write_sftl54(sf, n_subjects=10, frames_per_subject=2, seed=0)   # subjects 1-7 train, 8 val, 9-10 test
    res = build_sf(sf, tmp_path / "crops", palette="mix", caps=(None, None, None))
    recs = res.records
    assert len(recs) == 20 and not res.skipped
    for r in recs:
        assert r["palette"] == ("iron" if r["subject"] % 2 else "gray") == readers.mix_palette(r["subject"])
        assert r["source"].startswith(r["palette"] + "/")
    assert {s: sorted({r["palette"] for r in recs if r["split"] == s}) for s in data.SPLITS} == \
        {"train": ["gray", "iron"], "val": ["gray"], "test": ["gray", "iron"]}   # val: subject 8 alone
    manifests.check_disjoint(recs)                                                      # subject-disjoint splits
    crops = manifests.read_verified_crops(tmp_path / "crops", recs)
    for r, img in zip(recs, crops):                                 # iron crops: 3 different channels, unchanged
        assert img.shape == (192, 192, 3) and img.dtype == np.uint8
        differ = bool((img[..., 0] != img[..., 2]).any())
        assert differ == (r["palette"] == "iron"), r["id"]
    train_set, val_sets = datasets_from_manifest(tmp_path / "crops", recs, patch=64, augment=True)
    assert train_set.trained_on == {"palettes": ["gray", "iron"], "datasets": ["sftl54"]}
    lr, hr = train_set[next(i for i, r in enumerate(r for r in recs if r["split"] == "train")
                            if r["palette"] == "iron")]
    assert hr.shape == (3, 64, 64) and not np.allclose(hr[0].numpy(), hr[2].numpy())   # colour reaches the model
    gray = build_sf(sf, tmp_path / "g", palette="gray", caps=(None, None, None)).records
    assert {r["palette"] for r in gray} == {"gray"} and [r["id"] for r in gray] == [r["id"] for r in recs]
    with pytest.raises(ValueError, match="'mix'"):
        build_sf(sf, tmp_path / "x", palette="rainbow")


def test_mix_needs_both_palette_folders(tmp_path):
    root = sftl54_tree(tmp_path / "sf")
    with pytest.raises(FileNotFoundError, match=r"'iron'.*mix"):
        build_sf(root, tmp_path / "crops", palette="mix")


def test_every_record_carries_its_palette_and_the_manifest_counts_them(tmp_path):
    m = build_both(tmp_path)
    assert {(r["dataset"], r["palette"]) for r in m["records"]} == {("sftl54", "gray"), ("thermeval", "gray")}
    assert m["summary"]["palettes"]["val"] == {"gray": 2}
    assert "renderings: train gray 1; val gray 2; test gray 2" in manifests.summary_table(m)
    assert readers.trained_on(m["records"]) == {"palettes": ["gray"], "datasets": ["sftl54"]}


def test_a_committed_manifest_from_before_the_palette_field_reads_as_gray(tmp_path):
    committed = tmp_path / "committed.json"
    build_both(tmp_path, committed_manifest=committed)
    old = io.read_json(committed)
    for r in old["records"]:
        del r["palette"]
    io.atomic_write_json(committed, old)
    assert all(r["palette"] == "gray" for r in manifests.load_manifest(committed)["records"])
    assert manifests.compare_manifests(build_both(tmp_path, committed_manifest=committed)["records"], old["records"]) == []
    iron = [{**r, "palette": "iron"} for r in old["records"]]
    assert {d.fields for d in manifests.compare_manifests(iron, old["records"])} == {("palette",)}
    assert readers.trained_on(old["records"]) == {"palettes": ["gray"], "datasets": ["sftl54"]}
    from thermsr_utils.params import PARAMETER_RULES
    assert PARAMETER_RULES["palette"].choices == readers.PALETTE_CHOICES


def test_evaluation_rows_get_their_crops_palette(tmp_path):
    """Each per-crop row of ``evaluate.evaluate_method`` (what the notebooks score with) carries its record's
    palette; a record written before the field existed counts as gray."""
    from thermsr_utils import evaluate

    records = [{"id": "sf_1", "dataset": "sftl54", "path": "sf_1.png", "palette": "iron"},
               {"id": "sf_2", "dataset": "sftl54", "path": "sf_2.png"},
               {"id": "te_3", "dataset": "thermeval", "path": "te_3.png", "palette": "gray"}]
    rng = np.random.default_rng(0)
    for r in records:
        io.write_png(tmp_path / r["path"], rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    rows = evaluate.evaluate_method("bicubic", evaluate.bicubic_method(), tmp_path, records,
                                    evaluate.Scorer(pixel_extras=False), batch_size=2, progress=False)
    assert [(r["id"], r["palette"]) for r in rows] == [("sf_1", "iron"), ("sf_2", "gray"), ("te_3", "gray")]


def test_build_dataset_takes_notebook_01s_values_and_names_what_is_missing(tmp_path):
    """The builders declare no defaults of their own for what notebook 01 declares; a missing one is named."""
    no_pad = {k: v for k, v in BOTH.items() if k != "pad"}
    with pytest.raises(TypeError, match="needs pad"):
        manifests.build_dataset(tmp_path / "crops", sftl54_root=tmp_path, thermeval_root=None, **no_pad)
    with pytest.raises(TypeError, match=r"unknown build parameter\(s\) \['colour'\]"):
        manifests.build_dataset(tmp_path / "crops", sftl54_root=tmp_path, thermeval_root=None, colour="x", **BOTH)
    with pytest.raises(TypeError, match="palette"):
        readers.build_sftl54(tmp_path, tmp_path / "c", caps=(1, 1, 1), size=192, pad=1.15, min_crop_side=0)
    m = build_both(tmp_path)
    assert list(m["params"])[:8] == list(manifests.PARAMS) and m["params"]["train_frac"] == readers.TRAIN_FRAC
