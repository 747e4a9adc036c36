"""Figures: a one-line caption, axes that show the differences, labels apart, panels with error maps."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from thermsr_utils import plots  # noqa: E402


def test_a_long_caption_is_one_line_cut_to_the_figure_width(tmp_path):
    caption = " ".join(f"substitute-{i}: weights from package-{i}==0.{i} (sha256 {i:064d})" for i in range(20))
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot([0, 1], [0, 1])
    with matplotlib.rc_context({"savefig.bbox": "tight", "savefig.dpi": 100}):
        plots.save_figure(fig, tmp_path / "f.png", caption)
    label = fig._supxlabel
    text = label.get_text()
    width = label.get_window_extent(fig.canvas.get_renderer()).width
    plt.close(fig)
    assert "\n" not in text and text.endswith("…")                        # one line, cut
    assert caption.startswith(text[:-1].rstrip()) and len(text) > 40      # the caption's start, not a stub
    assert width <= fig.bbox.width
    assert Image.open(tmp_path / "f.png").size[0] <= 1.05 * 600           # the figure was not widened to fit it


def test_a_short_caption_is_kept_whole(tmp_path):
    fig, ax = plots.new_figure(6, 3)
    ax.plot([0, 1])
    plots.save_figure(fig, tmp_path / "f.png", "demo profile · synthetic faces")
    assert fig._supxlabel.get_text() == "demo profile · synthetic faces"


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
    assert len(fig.axes) == 2 * 3 * 3 + 2  # 2 crops × (image, close-up, error row), 2 colour bars
    plt.close(fig)
    with pytest.raises(Exception, match="b.png"):                  # a method without an output for a crop
        (evaluate.result_stem(tmp_path / "sr", "v1 L1") / "b.png").unlink()
        plots.method_panel(tmp_path / "crops", tmp_path / "sr", recs, ["v1 L1"], tmp_path / "q.png")


def _panel_inputs(tmp_path, n=1):
    from thermsr_utils import evaluate, io

    rng = np.random.default_rng(1)
    recs = [{"id": f"c{k}", "path": f"test/c{k}.png", "nose": (24, 26)} for k in range(n)]
    for r in recs:
        hr = rng.integers(40, 200, (48, 48, 3), dtype=np.uint8)
        io.write_png(tmp_path / "crops" / r["path"], hr)
        for m, noise in (("v1 L1", 4), ("v2 perceptual", 12)):
            sr = np.clip(hr.astype(int) + rng.integers(-noise, noise + 1, hr.shape), 0, 255).astype(np.uint8)
            io.write_png(evaluate.result_stem(tmp_path / "sr", m) / f"{r['id']}.png", sr)
    return recs


def test_method_panel_draws_error_maps_on_one_scale_and_prints_each_outputs_psnr_and_lpips(tmp_path):
    import re

    from skimage.metrics import peak_signal_noise_ratio

    from thermsr_utils import evaluate, io

    recs = _panel_inputs(tmp_path)
    methods = ["v1 L1", "v2 perceptual"]
    fig = plots.method_panel(tmp_path / "crops", tmp_path / "sr", recs, methods, tmp_path / "p.png",
                             crop_rows=[{"method": "v2 perceptual", "id": "c0", "lpips": 0.1234}])
    grid = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(grid) == 3 * 4 and len(fig.axes) == 3 * 4 + 1
    error_maps = [ax.get_images()[0] for ax in grid[8:] if ax.get_images()]
    assert len(error_maps) == 2 and error_maps[0].get_clim() == error_maps[1].get_clim()   # one error row, one scale
    assert error_maps[1].get_array().mean() > error_maps[0].get_array().mean()             # the noisier output shows
    hr = io.read_image(tmp_path / "crops" / "test/c0.png")
    for ax, m in zip(grid[2:4], methods):
        sr = io.read_image(evaluate.result_stem(tmp_path / "sr", m) / "c0.png")
        (text,) = [t.get_text() for t in ax.texts if "PSNR" in t.get_text()]
        printed = float(re.search(r"PSNR ([\d.]+) dB", text).group(1))
        assert printed == round(peak_signal_noise_ratio(hr, sr, data_range=255), 2)
        assert ("LPIPS 0.123" in text) == (m == "v2 perceptual")
    plt.close(fig)


def test_method_panel_closeups_share_the_hr_stretch(tmp_path):
    recs = _panel_inputs(tmp_path)
    fig = plots.method_panel(tmp_path / "crops", tmp_path / "sr", recs, ["v1 L1", "v2 perceptual"], tmp_path / "p.png")
    closeups = [ax.get_images()[0] for ax in fig.axes[4:8]]
    hr_region = np.asarray(closeups[0].get_array())
    lo, hi = np.percentile(hr_region, [1, 99])
    assert all(np.allclose(im.get_clim(), (lo, hi)) for im in closeups)
    assert hr_region.shape == (48, 48) and list(closeups[0].get_extent()) == [0, 48, 48, 0]   # the box, as luma
    plt.close(fig)


def test_metric_dots_start_the_axis_at_the_values_and_say_so(tmp_path):
    table = [{"method": m, "split": s, "psnr": v} for m, base in (("bicubic", 30.2), ("zero-shot", 35.0), ("v1", 36.9))
             for s, v in (("all", base), ("SF-TL54", base - 0.5), ("ThermEval-D", base + 0.4))]
    fig = plots.metric_dots(table, "psnr", tmp_path / "d.png", label="PSNR (dB)")
    ax = fig.axes[0]
    left, right = ax.get_xlim()
    assert 28 < left < 29.7 and 37.3 < right < 40                     # around the values, not from 0
    assert "not at 0" in ax.get_xlabel() and f"{left:.3g}" in ax.get_xlabel()
    assert not ax.patches                                             # points, not bars
    assert sorted(t.get_text() for t in ax.texts)[:2] == ["29.7", "30.2"]   # each value written beside its point
    plt.close(fig)


def test_metric_dots_start_at_zero_when_zero_is_near(tmp_path):
    table = [{"method": m, "split": "all", "lpips": v} for m, v in (("a", 0.05), ("b", 0.2))]
    fig = plots.metric_dots(table, "lpips", tmp_path / "d.png")
    assert fig.axes[0].get_xlim()[0] == 0 and "not at 0" not in fig.axes[0].get_xlabel()
    plt.close(fig)


def test_scatter_keeps_the_bulk_readable_and_counts_the_clipped_outlier(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 3.5, 110), rng.normal(0, 0.8, 110)
    y[7] = 54.0                                                       # one far outlier
    fig = plots.scatter(x, y, tmp_path / "s.png", xlabel="x", ylabel="y", hline=0, vline=0, title="t")
    ax = fig.axes[0]
    lo, hi = ax.get_ylim()
    assert hi - lo < 10 and lo < y[np.arange(110) != 7].min() and hi > np.sort(y)[-2]   # the bulk fills the axis
    assert "1 point beyond the axis, shown at the edge" in ax.get_title()
    (edge,) = [c for c in ax.collections if len(c.get_offsets()) == 1]
    assert lo < edge.get_offsets()[0][1] < hi                         # drawn at the edge, inside the axis
    assert any("54" in t.get_text() for t in ax.texts)                # with its value
    plt.close(fig)


def test_scatter_without_outliers_clips_nothing(tmp_path):
    x, y = np.linspace(0, 1, 30), np.linspace(-2, 2, 30)
    fig = plots.scatter(x, y, tmp_path / "s.png", xlabel="x", ylabel="y")
    ax = fig.axes[0]
    assert ax.get_ylim()[0] < -2 and ax.get_ylim()[1] > 2 and ax.get_title() == ""
    plt.close(fig)


def _frontier_groups():
    def row(method, tag, psnr, lpips):
        return {"method": method, "tag": tag, "psnr": psnr, "psnr_lo": psnr - 0.4, "psnr_hi": psnr + 0.4,
                "lpips": lpips, "lpips_lo": lpips - 0.012, "lpips_hi": lpips + 0.012}
    lam = [row("v2 λ=0", "λ=0", 36.9, 0.147), row("v2 λ=0.05", "λ=0.05", 36.12, 0.076),
           row("v2 λ=1", "λ=1", 34.0, 0.041)]
    blends = [row(f"b{a}", f"α={a:.2f}", x, y) for a, x, y in
              ((0.17, 36.85, 0.138), (0.33, 36.6, 0.118), (0.5, 36.15, 0.093), (0.67, 35.6, 0.069),
               (0.83, 34.9, 0.052))]
    refs = [row("bicubic", "bicubic", 33.4, 0.207), row("zs", "zero-shot srresnet", 35.2, 0.158),
            row("v1 seed 0", "v1", 36.84, 0.147)]
    return {"λ": lam, "blends": [lam[0], *blends, lam[-1]], "references": refs}


def test_frontier_labels_do_not_overlap_each_other_or_the_star(tmp_path):
    from matplotlib.text import Text

    fig = plots.plane_with_intervals(_frontier_groups(), tmp_path / "f.png", connect=("λ", "blends"),
                                     mark="v2 λ=0.05",
                                     fronts={"lpips": ["v2 λ=1", "v2 λ=0.05", "v2 λ=0"]}, title="t")
    ax = fig.axes[0]
    renderer = fig._get_renderer()
    for t in ax.texts:          # positions at the figure's dpi (the last draw was savefig's, at savefig.dpi)
        t.update_positions(renderer)
    boxes = {t.get_text(): Text.get_window_extent(t, renderer) for t in ax.texts}   # the text, not its leader line
    assert len(boxes) == len(ax.texts) == 11              # each point labelled once (λ=0, λ=1 are in two groups)
    names = sorted(boxes)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not boxes[a].overlaps(boxes[b]), (a, b)
    star = ax.transData.transform((36.12, 0.076))
    assert not any(b.contains(*star) for b in boxes.values())
    frame = ax.get_window_extent(renderer)
    assert all(frame.x0 <= b.x0 and b.x1 <= frame.x1 and frame.y0 <= b.y0 and b.y1 <= frame.y1 for b in boxes.values())
    plt.close(fig)


def test_perception_distortion_keeps_labels_inside_the_axes(tmp_path):
    table = [{"method": m, "split": "all", "psnr": x, "lpips": y} for m, x, y in
             (("bicubic", 33.4, 0.207), ("zero-shot srresnet", 35.2, 0.158), ("v1 L1", 36.84, 0.147),
              ("v2 perceptual", 36.12, 0.076), ("zero-shot waifu2x-photo ×2 twice", 36.95, 0.12),   # long, rightmost
              ("not scored", 35.0, float("nan")))]                                              # nothing to label
    fig = plots.perception_distortion(table, tmp_path / "p.png", axes_spec=(("lpips", "LPIPS (AlexNet)"),))
    ax = fig.axes[0]
    renderer = fig._get_renderer()
    frame = ax.get_window_extent(renderer)
    for t in ax.texts:
        b = t.get_window_extent(renderer)
        assert frame.x0 <= b.x0 and b.x1 <= frame.x1, t.get_text()
    assert len(ax.texts) == 5 and len(ax.get_ylabel()) < 30
    plt.close(fig)
