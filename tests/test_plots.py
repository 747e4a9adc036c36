"""Figure saving: the provenance caption stays within the figure's width."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from thermsr_utils import plots  # noqa: E402


def test_a_long_caption_is_wrapped_not_widening_the_figure(tmp_path):
    caption = " ".join(f"substitute-{i}: weights from package-{i}==0.{i} (sha256 {i:064d})" for i in range(20))
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot([0, 1], [0, 1])
    with matplotlib.rc_context({"savefig.bbox": "tight", "savefig.dpi": 100}):
        plots.save_figure(fig, tmp_path / "f.png", caption)
    label = fig._supxlabel.get_text()
    plt.close(fig)
    width, height = Image.open(tmp_path / "f.png").size
    assert width <= 1.2 * 600, width
    assert label.split() == caption.split() and label.count("\n") >= 5    # every word kept, on several lines
    assert height > 300


def test_nose_box_centres_on_the_nose_and_stays_inside_the_crop():
    assert plots.nose_box({"nose": (96, 100)}, (192, 192)) == (64, 60, 128, 124)
    assert plots.nose_box({"nose": (2, 190)}, (192, 192)) == (0, 128, 64, 192)       # clipped at the corner
    assert plots.nose_box({}, (192, 192)) == (64, 56, 128, 120)                        # no annotation: the centre
    assert plots.nose_box({"nose": (10, 10)}, (32, 48)) == (0, 0, 32, 32)             # a crop smaller than the box


def test_method_panel_reads_each_methods_saved_output(tmp_path):
    from thermsr_utils import evaluate, io

    rng = np.random.default_rng(0)
    recs = [{"id": "a", "path": "test/a.png", "nose": (20, 20)}, {"id": "b", "path": "test/b.png"}]
    for r in recs:
        io.write_png(tmp_path / "crops" / r["path"], rng.integers(0, 256, (48, 48, 3), dtype=np.uint8))
        io.write_png(evaluate.result_stem(tmp_path / "sr", "v1 L1") / f"{r['id']}.png",
                     rng.integers(0, 256, (48, 48, 3), dtype=np.uint8))
    fig = plots.method_panel(tmp_path / "crops", tmp_path / "sr", recs, ["v1 L1"], tmp_path / "p.png", title="t")
    assert (tmp_path / "p.png").exists()
    assert [ax.get_title() for ax in fig.axes[:3]] == ["HR", "LR (nearest)", "v1 L1"]
    assert len(fig.axes) == 2 * 2 * 3                              # two crops, each a row and a zoom row
    plt.close(fig)
    with pytest.raises(Exception, match="b.png"):                  # a method without an output for a crop
        (evaluate.result_stem(tmp_path / "sr", "v1 L1") / "b.png").unlink()
        plots.method_panel(tmp_path / "crops", tmp_path / "sr", recs, ["v1 L1"], tmp_path / "q.png")
