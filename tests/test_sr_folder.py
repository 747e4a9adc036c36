"""sr_folder: a user's own images, mixed formats and sizes, corrupt files listed and skipped."""
import csv
import json

import cv2
import numpy as np
import pytest

from thermsr_utils import sr_folder


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
    report = sr_folder.process_folder("bicubic", src, out, metrics=True, progress=False)
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
    report = sr_folder.process_folder(str(tmp_path / "m"), src, tmp_path / "o", metrics=True, progress=False)
    assert len(report.rows) == 5
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["method"]["source"] == "local"
