"""sr_folder: a user's own images, mixed formats and sizes, corrupt and odd files listed and skipped, tiling."""
import csv
import json
import math

import cv2
import numpy as np
import pytest

from conftest import need_zoo
from thermsr_utils import colour, sr_folder


def notes_of(report, name):
    """The notes of one input file, in order (a colour image also gets its colour note)."""
    return [n for f, n in report.notes if f == name]


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "in"
    src.mkdir()
    smooth = lambda h, w, c: cv2.GaussianBlur(rng.integers(0, 256, (h, w, c), dtype=np.uint8), (5, 5), 2)  # noqa: E731
    cv2.imwrite(str(src / "gray.png"), smooth(64, 48, 1))
    cv2.imwrite(str(src / "colour.jpg"), smooth(50, 70, 3))          # 50x70: not divisible by 4
    cv2.imwrite(str(src / "odd.bmp"), smooth(37, 41, 3))             # odd sizes
    cv2.imwrite(str(src / "frame.tiff"), smooth(40, 40, 3))
    cv2.imwrite(str(src / "rgba.png"), np.dstack([smooth(32, 32, 3), np.full((32, 32), 255, np.uint8)]))
    cv2.imwrite(str(src / "deep.png"), smooth(40, 40, 1).astype(np.uint16) * 256)
    cv2.imwrite(str(src / "tiny.png"), smooth(16, 16, 3))
    good = (src / "frame.tiff").read_bytes()
    (src / "corrupt.png").write_bytes(good[: len(good) // 3])
    (src / "notes.txt").write_text("not an image")
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    return src, before


def test_bicubic_metrics_mixed_folder(folder, tmp_path):
    src, before = folder
    out = tmp_path / "out"
    report = sr_folder.process_folder("bicubic", src, out, metrics=True, perceptual=(), nose_model="none",
                                      progress=False)
    scored = {r["file"] for r in report.rows}
    assert scored == {"gray.png", "colour.jpg", "odd.bmp", "frame.tiff", "rgba.png"}
    skipped = dict(report.skipped)
    assert set(skipped) == {"corrupt.png", "notes.txt", "deep.png", "tiny.png"}
    assert "corrupt" in skipped["corrupt.png"] and "uint16" in skipped["deep.png"]
    assert "too small" in skipped["tiny.png"]
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5
    odd = next(r for r in rows if r["file"] == "odd.bmp")
    assert (int(odd["width"]), int(odd["height"])) == (40, 36)
    assert all(20 < float(r["psnr"]) < 60 for r in rows)
    # SR images keep the trimmed HR size and the input's channel count
    assert cv2.imread(str(out / "odd.png"), cv2.IMREAD_UNCHANGED).shape == (36, 40, 3)
    assert cv2.imread(str(out / "gray.png"), cv2.IMREAD_UNCHANGED).shape == (64, 48)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_scored"] == 5 and {s["file"] for s in summary["skipped"]} == set(skipped)
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before, "the input folder was modified"


def test_upscale_without_metrics(folder, tmp_path):
    src, _ = folder
    out = tmp_path / "up"
    report = sr_folder.process_folder("bicubic", src, out, progress=False)
    assert cv2.imread(str(out / "odd.png")).shape == (37 * 4, 41 * 4, 3)
    assert "tiny.png" in report.processed  # small images are fine to upscale
    assert not (out / "metrics.csv").exists()


def test_bad_arguments(tmp_path, capsys):
    assert sr_folder.main(["--model", "bicubic", "--input", str(tmp_path / "missing"), "--output", str(tmp_path)]) == 2
    assert "input folder not found" in capsys.readouterr().err
    (tmp_path / "same").mkdir()
    with pytest.raises(ValueError, match="must differ"):
        sr_folder.process_folder("bicubic", tmp_path / "same", tmp_path / "same")


def test_model_path_through_save_pretrained(tmp_path, folder):
    from thermsr_utils import models

    model, _ = models.load_model("pan-tiny", source="random")
    models.save_model(model, tmp_path / "m")
    src, _ = folder
    report = sr_folder.process_folder(str(tmp_path / "m"), src, tmp_path / "o", metrics=True, perceptual=(),
                                      nose_model="none", progress=False)
    assert len(report.rows) == 5
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["method"]["source"] == "local"


# ------------------------------------------------------------------------------ the notebooks' metric set
FULL_COLUMNS = ["file", "width", "height", "psnr", "ssim", "psnr_y", "ssim_y", "lpips", "dists", "lpips_vgg",
                "grad_ratio", "hf_ratio", "nose_hr_found", "nose_sr_found", "nose_err_px"]


def test_metrics_are_the_scorers_on_the_same_hr_and_sr(folder, tmp_path, monkeypatch, capsys):
    """The only test that loads the real LPIPS/DISTS trunks and the nose model (once, through the command line)."""
    from thermsr_utils import data, evaluate

    src, _ = folder
    built = []
    real = sr_folder.make_scorer
    monkeypatch.setattr(sr_folder, "make_scorer", lambda *a, **k: built.append(real(*a, **k)) or built[-1])
    out = tmp_path / "out"
    assert sr_folder.main(["--model", "bicubic", "--input", str(src), "--output", str(out), "--metrics"]) == 0
    printed = capsys.readouterr().out
    (scorer,) = built
    assert scorer.lpips is not None and scorer.dists is not None and scorer.lpips_vgg is None
    assert scorer.locator is not None
    with open(out / "metrics.csv") as f:
        reader = csv.DictReader(f)
        rows = {r["file"]: r for r in reader}
        assert reader.fieldnames == FULL_COLUMNS
    assert set(rows) == {"gray.png", "colour.jpg", "odd.bmp", "frame.tiff", "rgba.png"}
    for name, row in rows.items():
        img = cv2.imread(str(src / name), cv2.IMREAD_COLOR)
        hr = img[: img.shape[0] // 4 * 4, : img.shape[1] // 4 * 4]
        sr = evaluate.bicubic_method(4)(data.make_lr(hr, 4)[None])
        want = scorer.score([name], sr, hr[None], None, scale=4)
        assert (int(row["width"]), int(row["height"])) == (hr.shape[1], hr.shape[0])
        for key in FULL_COLUMNS[3:]:
            if key.endswith("_found"):
                assert row[key] == str(bool(want[key][0])), (name, key)
            else:
                np.testing.assert_allclose(float(row[key]), float(want[key][0]), rtol=1e-6, equal_nan=True,
                                           err_msg=f"{name} {key}")
        assert 0 <= float(row["lpips"]) < 1 and 0 <= float(row["dists"]) < 1 and row["lpips_vgg"] == "nan"
    summary = json.loads((out / "summary.json").read_text())
    mean, inst = summary["mean"], summary["instruments"]
    assert mean["lpips"] == pytest.approx(np.mean([float(r["lpips"]) for r in rows.values()]))
    err = np.array([float(r["nose_err_px"]) for r in rows.values()])
    assert mean["nose_failed_hr"] == sum(r["nose_hr_found"] == "False" for r in rows.values())
    assert mean["nose_failed_sr"] == sum(r["nose_sr_found"] == "False" for r in rows.values())
    assert math.isnan(mean["nose_median"]) if np.isnan(err).all() else mean["nose_median"] == pytest.approx(
        np.nanmedian(err))
    assert inst["lpips"] == evaluate.instrument_provenance(scorer)["lpips"] and "alex" in inst["lpips"]
    assert inst["nose_locator"].startswith(scorer.locator.name) and inst["lpips_vgg"] == "not computed"
    assert "lpips " in printed and "dists " in printed and "nose: found in" in printed
    assert inst["lpips"] in printed and inst["nose_locator"] in printed


def test_no_perceptual_metrics_and_no_nose(folder, tmp_path):
    src, _ = folder
    out = tmp_path / "out"
    assert sr_folder.main(["--model", "bicubic", "--input", str(src), "--output", str(out), "--metrics",
                           "--perceptual", "none", "--nose-model", "none"]) == 0
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 and all(r[k] == "nan" for r in rows for k in ("lpips", "dists", "lpips_vgg", "nose_err_px"))
    summary = json.loads((out / "summary.json").read_text())
    assert not [k for k in summary["mean"] if k.startswith("nose")] and math.isnan(summary["mean"]["lpips"])
    assert summary["instruments"] == {"lpips": "not computed", "dists": "not computed",
                                      "lpips_vgg": "not computed", "nose_locator": "not computed"}
    assert 20 < summary["mean"]["psnr"] < 60 and summary["mean"]["grad_ratio"] > 0


@pytest.mark.parametrize("extra, option", [(["--perceptual", "lpips,ssim"], "--perceptual"),
                                           (["--nose-model", "dwpose"], "--nose-model")])
def test_bad_scoring_options_are_refused_before_any_work(folder, tmp_path, capsys, extra, option):
    src, _ = folder
    assert sr_folder.main(["--model", "bicubic", "--input", str(src), "--output", str(tmp_path / "o"),
                           "--metrics", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {option}") and repr(extra[1].split(",")[-1]) in err and err.count("\n") == 1
    assert "Traceback" not in err and not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------ tiling
def _psnr(a, b):
    mse = float(((a.clamp(0, 1) - b.clamp(0, 1)) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


@pytest.fixture(scope="module")
def random_pan():
    import torch

    from thermsr_utils import data, models

    torch.manual_seed(0)
    model, _ = models.load_model("pan-tiny", source="random")
    return lambda lr: models.upscale(model, data.bgr_to_tensor(lr)[None], batch_size=1)[0]


def test_tiled_output_matches_the_whole_image_pass(random_pan):
    rng = np.random.default_rng(1)
    lr = cv2.GaussianBlur(rng.integers(0, 256, (45, 61, 3), dtype=np.uint8), (3, 3), 1)  # not a multiple of the tile
    whole = random_pan(lr)
    tiled = sr_folder.upscale_tiled(random_pan, lr, 4, tile=16, overlap=8)
    assert tiled.shape == whole.shape == (3, 180, 244)
    assert _psnr(tiled, whole) > 50
    # without context the tile borders show: the overlap is what makes the tiles seamless
    assert _psnr(sr_folder.upscale_tiled(random_pan, lr, 4, tile=16, overlap=0), whole) < 50


def test_tiled_bands_equal_the_converted_float_output_and_stream_into_one_png(random_pan, tmp_path):
    from thermsr_utils import data, io

    rng = np.random.default_rng(2)
    lr = cv2.GaussianBlur(rng.integers(0, 256, (37, 29, 3), dtype=np.uint8), (3, 3), 1)
    ref = data.tensor_to_bgr(sr_folder.upscale_tiled(random_pan, lr, 4, tile=12, overlap=4))
    bands = list(sr_folder.tiled_bands(random_pan, lr, 4, tile=12, overlap=4))
    assert [b.shape for b in bands] == [(48, 116, 3)] * 3 + [(4, 116, 3)]      # 37 LR rows: 12 + 12 + 12 + 1
    assert np.array_equal(np.concatenate(bands), ref)
    gray = np.concatenate(list(sr_folder.tiled_bands(random_pan, lr, 4, tile=12, overlap=4, gray=True)))
    assert np.array_equal(gray, cv2.cvtColor(ref, cv2.COLOR_BGR2GRAY))
    sr_folder.write_png_bands(tmp_path / "c.png", iter(bands), 116, 148)
    sr_folder.write_png_bands(tmp_path / "g.png", np.array_split(gray, 5), 116, 148, gray=True)
    assert np.array_equal(cv2.imread(str(tmp_path / "c.png"), cv2.IMREAD_UNCHANGED), ref)
    assert np.array_equal(cv2.imread(str(tmp_path / "g.png"), cv2.IMREAD_UNCHANGED), gray)
    with pytest.raises(ValueError, match="does not fit a 116-px wide BGR"):
        sr_folder.write_png_bands(tmp_path / "bad.png", [gray], 116, 148)
    with pytest.raises(ValueError, match="held 96 rows for an image 148 rows high"):   # never a truncated PNG
        sr_folder.write_png_bands(tmp_path / "short.png", bands[:2], 116, 148)
    with pytest.raises(ValueError, match="more than"):
        sr_folder.write_png_bands(tmp_path / "long.png", bands + bands, 116, 148)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.png", "g.png"]   # nothing half-written is left


def test_a_tiled_folder_run_writes_what_the_whole_image_pass_writes(tmp_path):
    rng = np.random.default_rng(3)
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "gray.png"), cv2.GaussianBlur(rng.integers(0, 256, (40, 52), dtype=np.uint8), (3, 3), 1))
    cv2.imwrite(str(src / "colour.png"), rng.integers(0, 256, (33, 47, 3), dtype=np.uint8))
    sr_folder.process_folder("bicubic", src, tmp_path / "tiled", tile=8, tile_overlap=4, progress=False)
    sr_folder.process_folder("bicubic", src, tmp_path / "whole", tile=0, progress=False)
    for name in ("gray.png", "colour.png"):
        tiled = cv2.imread(str(tmp_path / "tiled" / name), cv2.IMREAD_UNCHANGED)
        whole = cv2.imread(str(tmp_path / "whole" / name), cv2.IMREAD_UNCHANGED)
        assert tiled.shape == whole.shape and tiled.dtype == np.uint8
        assert np.array_equal(tiled, whole), name   # bicubic reads 2 LR px around: 4 px of overlap cover it


def test_tile_boxes_cover_the_image_once():
    boxes = sr_folder.tile_boxes(45, 61, 16)
    cover = np.zeros((45, 61), int)
    for y0, y1, x0, x1 in boxes:
        assert 0 < y1 - y0 <= 16 and 0 < x1 - x0 <= 16
        cover[y0:y1, x0:x1] += 1
    assert (cover == 1).all() and len(boxes) == 3 * 4


def test_large_images_are_tiled_automatically(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "big.png"), cv2.GaussianBlur(rng.integers(0, 256, (40, 52, 3), dtype=np.uint8), (5, 5), 2))
    cv2.imwrite(str(src / "small.png"), rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    monkeypatch.setattr(sr_folder, "AUTO_TILE_PIXELS", 20 * 20)
    monkeypatch.setattr(sr_folder, "AUTO_TILE", 16)
    auto = sr_folder.process_folder("bicubic", src, tmp_path / "auto", progress=False)
    assert any("tiles of 16 px" in n for n in notes_of(auto, "big.png"))
    assert not any("tiles" in n for n in notes_of(auto, "small.png"))
    sr_folder.process_folder("bicubic", src, tmp_path / "whole", tile=0, progress=False)
    a = cv2.imread(str(tmp_path / "auto" / "big.png")).astype(int)
    b = cv2.imread(str(tmp_path / "whole" / "big.png")).astype(int)
    assert a.shape == b.shape == (160, 208, 3) and np.abs(a - b).max() <= 1


def test_bad_tile_arguments(tmp_path, capsys, folder):
    src, _ = folder
    with pytest.raises(ValueError, match="--tile"):
        sr_folder.process_folder("bicubic", src, tmp_path / "o", tile=3, progress=False)
    assert sr_folder.main(["--model", "bicubic", "--input", str(src), "--output", str(tmp_path / "o"),
                           "--tile", "-1"]) == 2
    assert "--tile" in capsys.readouterr().err
    assert not (tmp_path / "o").exists(), "nothing may be written before the arguments are checked"


# ------------------------------------------------------------------------------ odd files
def test_odd_files_get_a_message_and_the_rest_is_processed(tmp_path):
    rng = np.random.default_rng(3)
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "good.png"), rng.integers(0, 256, (12, 10, 3), dtype=np.uint8))
    cv2.imwrite(str(src / "deep.tiff"), rng.integers(0, 60000, (12, 10), dtype=np.uint16))
    cv2.imwrite(str(src / "rgba.png"), rng.integers(0, 256, (12, 10, 4), dtype=np.uint8))
    cv2.imwrite(str(src / "line.png"), rng.integers(0, 256, (1, 40, 3), dtype=np.uint8))
    (src / "empty.png").write_bytes(b"")
    (src / "notes.txt").write_text("not an image")
    (src / "fake.jpg").write_text("text saved under an image name")
    (src / "folder.png").mkdir()                       # a folder, not a file: listed, not read
    report = sr_folder.process_folder("bicubic", src, tmp_path / "out", progress=False)
    assert sorted(report.processed) == ["good.png", "rgba.png"]
    skipped = dict(report.skipped)
    assert set(skipped) == {"deep.tiff", "line.png", "empty.png", "notes.txt", "fake.jpg", "folder.png"}
    assert skipped["folder.png"].startswith("a folder")
    assert "16-bit" in skipped["deep.tiff"] and "8 bits" in skipped["deep.tiff"]
    assert "40x1" in skipped["line.png"] and "too small" in skipped["line.png"]
    assert skipped["empty.png"] == "empty file (0 bytes)"
    assert "not an image type (.txt)" in skipped["notes.txt"]
    assert "cannot decode" in skipped["fake.jpg"] and str(src) not in skipped["fake.jpg"]
    assert "alpha channel dropped" in notes_of(report, "rgba.png")
    assert cv2.imread(str(tmp_path / "out" / "rgba.png"), cv2.IMREAD_UNCHANGED).shape == (48, 40, 3)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["processed"] == 2 and {s["file"] for s in summary["skipped"]} == set(skipped)


def test_inputs_with_the_same_stem_do_not_overwrite_each_other(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), np.full((8, 8, 3), 10, np.uint8))
    cv2.imwrite(str(src / "a.bmp"), np.full((8, 8, 3), 200, np.uint8))
    report = sr_folder.process_folder("bicubic", src, tmp_path / "out", progress=False)
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["a.png", "a_png.png"]
    assert "written as a_png.png" in notes_of(report, "a.png")[0]
    assert cv2.imread(str(tmp_path / "out" / "a.png"))[0, 0, 0] == 200      # a.bmp comes first in sorted order


def test_bad_outputs_and_scales_are_refused_in_one_sentence_before_any_work(tmp_path, capsys, monkeypatch):
    import tempfile

    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), np.full((40, 40), 100, np.uint8))
    (tmp_path / "file.txt").write_text("x")
    loop = tmp_path / "loop"
    loop.symlink_to(tmp_path / "loop")
    cases = [(["--output", str(src / "sub")], "lies inside --input"),
             (["--output", str(src)], "must differ from --input"),
             (["--output", str(tmp_path / "file.txt")], "is a file, not a folder"),
             (["--output", str(loop / "x")], "cannot be used"),
             (["--output", str(tmp_path / "ok"), "--scale", "0", "--metrics"], "--scale must be an integer ≥ 1")]
    for extra, message in cases:
        assert sr_folder.main(["--model", "bicubic", "--input", str(src), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and err.count("\n") == 1, (extra, err)
    assert sorted(p.name for p in src.iterdir()) == ["a.png"]          # nothing was written into the input
    assert not (tmp_path / "ok").exists()

    def read_only(*args, **kwargs):             # a read-only folder (chmod does not stop root, so simulated)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    assert sr_folder.main(["--model", "bicubic", "--input", str(src), "--output", str(tmp_path / "ro")]) == 2
    assert "--output " + str(tmp_path / "ro") + " is not writable (Permission denied)" in capsys.readouterr().err


# ------------------------------------------------------------------------------ colour (false-colour palette) input
def iron_crop(size=64, seed=0):
    """A small generated-looking thermal crop in the inferno palette (BGR), and its gray (white-hot) original."""
    from thermsr_utils import synthetic

    rng = np.random.default_rng(seed)
    gray = cv2.GaussianBlur(rng.integers(0, 256, (size, size), dtype=np.uint8), (0, 0), 3)
    gray = cv2.normalize(gray, None, 0, 255, cv2.NORM_MINMAX)
    return synthetic.iron(gray), gray


def test_palette_inversion_round_trips_an_inferno_image_exactly():
    from thermsr_utils import synthetic

    gray = np.arange(256, dtype=np.uint8).reshape(16, 16)
    index, dist = colour.invert_palette(synthetic.iron(gray))
    assert np.array_equal(index, gray) and float(dist.max()) == 0.0
    assert np.array_equal(np.rint(colour.apply_palette(gray) * 255).astype(np.uint8), synthetic.iron(gray))
    hot = cv2.applyColorMap(gray, cv2.COLORMAP_HOT)         # another palette: far from inferno
    assert float(colour.invert_palette(hot)[1].mean()) > colour.PALETTE_MAX_ERROR
    assert colour.colour_path("palette", hot)[0] == "luma"
    assert colour.colour_path("palette", synthetic.iron(gray))[0] == "palette"
    assert colour.is_colour(synthetic.iron(gray)) and not colour.is_colour(np.dstack([gray] * 3))


def test_the_colour_paths_of_an_identity_method_keep_the_image():
    """With a method that only replicates pixels, luma and palette give the nearest-neighbour upscale back."""
    import torch

    from thermsr_utils import data

    def nearest(lr):
        return data.bgr_to_tensor(cv2.resize(lr, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST))

    iron, _ = iron_crop(32)
    expected = cv2.resize(iron, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    out = data.tensor_to_bgr(colour.palette_method(nearest)(iron))
    assert np.abs(out.astype(int) - expected).max() <= 1
    luma = data.tensor_to_bgr(colour.luma_method(nearest)(iron))   # Cr/Cb bicubic: close, not equal
    assert 10 * np.log10(255 ** 2 / np.mean((luma.astype(float) - expected) ** 2)) > 25
    assert colour.colour_method(nearest, "as-is") is nearest
    assert isinstance(colour.palette_method(nearest)(iron), torch.Tensor)


def _gray_trained_model(tmp_path, trained_on):
    """A random pan-tiny saved with a thermsr.json like a kept checkpoint's (``trained_on`` or, if None, a
    pre-record one with a recipe but no trained_on)."""
    import torch

    from thermsr_utils import models

    torch.manual_seed(0)
    model, _ = models.load_model("pan-tiny", source="random")
    meta = {"recipe": {"name": "v1"}, "epoch": 1}
    if trained_on is not None:
        meta["trained_on"] = trained_on
    return models.save_model(model, tmp_path / "m", extra_json={"thermsr.json": meta})


@pytest.mark.parametrize("trained_on,expected", [
    ({"palettes": ["gray"], "datasets": ["sftl54", "thermeval"]}, "palette"),
    (None, "palette"),                                                   # a record from before trained_on
    ({"palettes": ["gray", "iron"], "datasets": ["sftl54"]}, "as-is"),
])
def test_a_colour_image_takes_the_path_its_models_training_calls_for_and_says_so(tmp_path, trained_on, expected):
    src = tmp_path / "in"
    src.mkdir()
    iron, gray = iron_crop()
    cv2.imwrite(str(src / "iron.png"), iron)
    cv2.imwrite(str(src / "gray.png"), gray)
    model = _gray_trained_model(tmp_path, trained_on)
    report = sr_folder.process_folder(str(model), src, tmp_path / "out", metrics=True, perceptual=(),
                                      nose_model="none", progress=False)
    assert sorted(report.processed) == ["gray.png", "iron.png"]
    assert notes_of(report, "gray.png") == []                           # gray input: nothing to say, nothing done
    (note,) = notes_of(report, "iron.png")
    assert note.startswith(f"colour image ({expected}, --colour auto)")
    assert "trained on " + "/".join((trained_on or {"palettes": ["gray"]})["palettes"]) in note
    assert ("assumed" in note) == (trained_on is None)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["colour"]["colour_images"] == {expected: 1}
    assert summary["colour"]["auto_means"] == expected and summary["colour"]["option"] == "auto"
    assert any(n["file"] == "iron.png" and n["note"] == note for n in summary["notes"])


def test_models_without_a_training_record_run_colour_as_is(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "iron.png"), iron_crop()[0])
    report = sr_folder.process_folder("bicubic", src, tmp_path / "out", progress=False)
    (note,) = notes_of(report, "iron.png")
    assert note.startswith("colour image (as-is, --colour auto)") and "bicubic has no training" in note
    assert colour.model_trained_on("waifu2x-photo") is None
    assert colour.resolve_colour("auto", None) == "as-is"
    with pytest.raises(ValueError, match="--colour"):
        colour.resolve_colour("sepia", None)


def test_colour_as_is_reproduces_the_old_behaviour_bit_for_bit(tmp_path, monkeypatch):
    """--colour as-is: every output image and metric equals a run with the colour handling switched off."""
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "iron.png"), iron_crop()[0])
    cv2.imwrite(str(src / "hot.png"), cv2.applyColorMap(iron_crop(seed=1)[1], cv2.COLORMAP_HOT))
    cv2.imwrite(str(src / "gray.png"), iron_crop(seed=2)[1])
    model = str(_gray_trained_model(tmp_path, {"palettes": ["gray"], "datasets": ["sftl54"]}))
    kw = dict(metrics=True, perceptual=(), nose_model="none", progress=False)
    new = sr_folder.process_folder(model, src, tmp_path / "as_is", colour="as-is", **kw)
    auto = sr_folder.process_folder(model, src, tmp_path / "auto", **kw)
    monkeypatch.setattr(sr_folder, "is_colour", lambda img: False)      # the code before colour handling
    old = sr_folder.process_folder(model, src, tmp_path / "old", **kw)
    for name in ("iron.png", "hot.png", "gray.png"):
        a = cv2.imread(str(tmp_path / "as_is" / name), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(a, cv2.imread(str(tmp_path / "old" / name), cv2.IMREAD_UNCHANGED)), name
    assert (tmp_path / "as_is" / "metrics.csv").read_text() == (tmp_path / "old" / "metrics.csv").read_text()
    assert new.colour == {"as-is": 2} and len(new.rows) == len(old.rows) == 3
    assert auto.colour == {"palette": 1, "luma": 1}
    assert not np.array_equal(cv2.imread(str(tmp_path / "auto" / "iron.png")),
                              cv2.imread(str(tmp_path / "old" / "iron.png")))
    assert np.array_equal(cv2.imread(str(tmp_path / "auto" / "gray.png"), cv2.IMREAD_UNCHANGED),
                          cv2.imread(str(tmp_path / "old" / "gray.png"), cv2.IMREAD_UNCHANGED))
    assert sr_folder.main(["--model", model, "--input", str(src), "--output", str(tmp_path / "cli"),
                           "--colour", "as-is"]) == 0
    plain = tmp_path / "plain"
    sr_folder.process_folder(model, src, plain, progress=False)         # is_colour still switched off: old code
    for name in ("iron.png", "hot.png", "gray.png"):
        assert np.array_equal(cv2.imread(str(tmp_path / "cli" / name), cv2.IMREAD_UNCHANGED),
                              cv2.imread(str(plain / name), cv2.IMREAD_UNCHANGED)), name


# ------------------------------------------------------------------------------ --tta: the x8 self-ensemble
@pytest.fixture(scope="module")
def saved_pan(tmp_path_factory):
    import torch

    from thermsr_utils import models

    torch.manual_seed(0)
    model, _ = models.load_model("pan-tiny", source="random")
    path = tmp_path_factory.mktemp("tta_model") / "m"
    models.save_model(model, path)
    return str(path)


def test_tta_writes_the_self_ensemble_of_every_image_and_says_so(tmp_path, saved_pan, capsys):
    from thermsr_utils import data, models

    rng = np.random.default_rng(9)
    src = tmp_path / "in"
    src.mkdir()
    images = {"colour.png": rng.integers(0, 256, (10, 14, 3), dtype=np.uint8),
              "gray.png": rng.integers(0, 256, (12, 12), dtype=np.uint8)}
    for name, img in images.items():
        cv2.imwrite(str(src / name), img)
    out = tmp_path / "tta"
    assert sr_folder.main(["--model", saved_pan, "--input", str(src), "--output", str(out), "--tta"]) == 0
    assert "8 forward passes per image" in capsys.readouterr().out
    method = json.loads((out / "summary.json").read_text())["method"]
    assert method["self_ensemble"] is True and method["forward_passes_per_image"] == 8
    model, _ = models.load_model(saved_pan, 4)
    for name, img in images.items():
        bgr = img if img.ndim == 3 else np.repeat(img[..., None], 3, axis=2)
        x = data.bgr_to_tensor(bgr)[None]
        want = data.tensor_to_bgr(models.upscale(model, x, self_ensemble=True)[0])
        plain = data.tensor_to_bgr(models.upscale(model, x)[0])
        if img.ndim == 2:
            want, plain = cv2.cvtColor(want, cv2.COLOR_BGR2GRAY), cv2.cvtColor(plain, cv2.COLOR_BGR2GRAY)
        written = cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED)
        assert written.shape == want.shape == (4 * img.shape[0], 4 * img.shape[1]) + img.shape[2:]
        assert np.array_equal(written, want), name
        assert not np.array_equal(written, plain), name        # the ensemble is not the plain pass
    report = sr_folder.process_folder(saved_pan, src, tmp_path / "plain", progress=False)
    assert sorted(report.written) == sorted(images)
    assert json.loads((tmp_path / "plain" / "summary.json").read_text())["method"]["self_ensemble"] is False


def test_tta_runs_every_tile_through_the_self_ensemble(tmp_path, saved_pan):
    rng = np.random.default_rng(10)
    src = tmp_path / "in"
    src.mkdir()
    lr = cv2.GaussianBlur(rng.integers(0, 256, (13, 19, 3), dtype=np.uint8), (3, 3), 1)
    cv2.imwrite(str(src / "big.png"), lr)
    report = sr_folder.process_folder(saved_pan, src, tmp_path / "o", tile=8, tile_overlap=4, tta=True,
                                      progress=False)
    assert any("tiles of 8 px" in n for n in notes_of(report, "big.png"))
    tta_method, info = sr_folder.load_method(saved_pan, 4, "cpu", self_ensemble=True)
    assert info["self_ensemble"] is True
    want = np.concatenate(list(sr_folder.tiled_bands(tta_method, lr, 4, 8, 4)))
    assert np.array_equal(cv2.imread(str(tmp_path / "o" / "big.png")), want)


def test_tta_with_bicubic_is_refused_in_one_sentence_and_writes_nothing(folder, tmp_path, capsys):
    src, before = folder
    out = tmp_path / "o"
    assert sr_folder.main(["--model", "bicubic", "--input", str(src), "--output", str(out), "--tta"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {sr_folder.NO_TTA_FOR_BICUBIC}\n" and "bicubic has no model to ensemble" in err
    assert not out.exists()
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before
    with pytest.raises(ValueError, match="no model to ensemble"):
        sr_folder.load_method("bicubic", 4, "cpu", self_ensemble=True)


# ------------------------------------------------------------------------------ ×8
@pytest.fixture
def x8_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("THERMSR_ARTIFACTS", str(tmp_path / "artifacts"))   # zoo weights converted privately
    rng = np.random.default_rng(8)
    src = tmp_path / "in"
    src.mkdir()
    smooth = lambda h, w, c: cv2.GaussianBlur(rng.integers(0, 256, (h, w, c), dtype=np.uint8), (5, 5), 2)  # noqa: E731
    cv2.imwrite(str(src / "colour.png"), smooth(72, 80, 3))
    cv2.imwrite(str(src / "gray.png"), smooth(66, 64, 1))          # 66 rows: trimmed to 64 for --metrics
    return src


@pytest.mark.parametrize("model", ["waifu2x-photo", "bicubic"])
def test_x8_folder_with_and_without_metrics(x8_folder, tmp_path, model, capsys):
    if model != "bicubic":
        need_zoo(model)
    src = x8_folder
    out = tmp_path / "out"
    assert sr_folder.main(["--model", model, "--input", str(src), "--output", str(out), "--scale", "8"]) == 0
    sizes = {n: cv2.imread(str(out / n), cv2.IMREAD_UNCHANGED).shape for n in ("colour.png", "gray.png")}
    assert sizes == {"colour.png": (576, 640, 3), "gray.png": (528, 512)}
    method = json.loads((out / "summary.json").read_text())["method"]
    assert method["scale"] == 8
    if model == "waifu2x-photo":
        assert (method["applications"], method["native_scale"]) == (3, 2)
        assert method["scale_note"] == "waifu2x-photo ×2 applied three times"

    cv2.imwrite(str(src / "small.png"), np.full((40, 72), 90, np.uint8))   # ≥ 32 px, but its ×8 LR is 5 px high
    scored = tmp_path / "scored"
    report = sr_folder.process_folder(model, src, scored, metrics=True, scale=8, perceptual=(), nose_model="none",
                                      progress=False)
    assert report.processed == ["colour.png", "gray.png"]
    assert dict(report.skipped) == {"small.png": "72x40 is smaller than 64 px, too small to score at ×8 "
                                                 "(its LR must be at least 8 px)"}
    assert "trimmed 64x66 to 64x64 (a multiple of 8)" in notes_of(report, "gray.png")
    summary = json.loads((scored / "summary.json").read_text())
    assert summary["n_scored"] == 2 and summary["method"]["scale"] == 8
    assert math.isfinite(summary["mean"]["psnr"]) and 10 < summary["mean"]["psnr"] < 60
    assert cv2.imread(str(scored / "gray.png"), cv2.IMREAD_UNCHANGED).shape == (64, 64)   # the SR of its ×8 LR
    rows = {r["file"]: r for r in csv.DictReader((scored / "metrics.csv").open())}
    assert set(rows) == {"colour.png", "gray.png"} and (rows["gray.png"]["width"], rows["gray.png"]["height"]) == (
        "64", "64")


def test_the_smallest_scored_side_depends_on_the_scale():
    assert [sr_folder.min_scored_side(s) for s in (2, 3, 4, 8, 16)] == [32, 32, 32, 64, 128]


@pytest.mark.parametrize("model", ["srresnet", "dat-light", "drln"])
def test_models_without_a_x8_path_are_refused_in_one_sentence_before_any_work(x8_folder, tmp_path, model, capsys):
    out = tmp_path / "out"
    assert sr_folder.main(["--model", model, "--input", str(x8_folder), "--output", str(out), "--scale", "8",
                           "--metrics"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "×8 is offered by waifu2x-photo (waifu2x-photo ×2 applied three times) and bicubic" in err
    assert not out.exists()


def test_tiling_at_x8_equals_the_whole_image_pass(tmp_path):
    rng = np.random.default_rng(9)
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "gray.png"), cv2.GaussianBlur(rng.integers(0, 256, (21, 30), dtype=np.uint8), (3, 3), 1))
    cv2.imwrite(str(src / "colour.png"), rng.integers(0, 256, (17, 23, 3), dtype=np.uint8))
    tiled = sr_folder.process_folder("bicubic", src, tmp_path / "tiled", scale=8, tile=8, tile_overlap=4,
                                     progress=False)
    assert any("tiles of 8 px" in n for n in notes_of(tiled, "gray.png"))
    sr_folder.process_folder("bicubic", src, tmp_path / "whole", scale=8, tile=0, progress=False)
    for name, shape in (("gray.png", (168, 240)), ("colour.png", (136, 184, 3))):
        a = cv2.imread(str(tmp_path / "tiled" / name), cv2.IMREAD_UNCHANGED)
        b = cv2.imread(str(tmp_path / "whole" / name), cv2.IMREAD_UNCHANGED)
        assert a.shape == b.shape == shape and np.array_equal(a, b), name   # the banded PNG path at ×8


def test_tiled_waifu2x_x8_matches_the_whole_image_pass(tmp_path, monkeypatch):
    need_zoo("waifu2x-photo")
    monkeypatch.setenv("THERMSR_ARTIFACTS", str(tmp_path / "artifacts"))
    method, info = sr_folder.load_method("waifu2x-photo", 8, "cpu")
    assert info["applications"] == 3
    rng = np.random.default_rng(10)
    lr = cv2.GaussianBlur(rng.integers(0, 256, (19, 26, 3), dtype=np.uint8), (3, 3), 1)   # not a multiple of the tile
    whole = method(lr)
    tiled = sr_folder.upscale_tiled(method, lr, 8, tile=12, overlap=sr_folder.TILE_OVERLAP)   # the default
    assert tiled.shape == whole.shape == (3, 152, 208)
    assert _psnr(tiled, whole) > 50
    assert _psnr(sr_folder.upscale_tiled(method, lr, 8, tile=12, overlap=0), whole) < 50
