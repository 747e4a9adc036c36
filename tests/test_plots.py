"""Figure saving: the provenance caption stays within the figure's width."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
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
