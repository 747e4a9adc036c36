"""Figures of the notebooks. matplotlib is imported inside the functions, so importing this module is cheap.

Every figure is written with ``save_figure``: rendered to a temporary file beside the target and renamed
into place, so a figure on disk is always complete.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import io as tio, readers, timing
from .data import DATASET_LABELS, NOSE_TIP, make_lr
from .metric_specs import METRICS

CAPTION_FONTSIZE = 7


def save_figure(fig, path: str | os.PathLike, caption: str | None = None, **kwargs):
    """Save ``fig`` atomically (format from the suffix) with ``caption`` under it as one line of small text, cut
    with "…" rather than wrapped (a paragraph would crowd the axis labels); return ``fig``."""
    path = Path(path)
    if caption:
        _one_line_label(fig, " ".join(caption.split()))
    with timing.phase("figures"), tio.atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", **kwargs)
    return fig


def _one_line_label(fig, text: str):
    """``fig``'s supxlabel: ``text`` in small grey type, cut with "…" to the figure's width (by bisection)."""
    label = fig.supxlabel(text, fontsize=CAPTION_FONTSIZE, color="0.35")
    renderer, limit = fig._get_renderer(), 0.98 * fig.bbox.width

    def fits(n):
        label.set_text(text if n == len(text) else text[:n].rstrip() + "…")
        return label.get_window_extent(renderer).width <= limit

    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    fits(lo)
    return label


def _spread(items: list, n: int) -> list:
    """Up to ``n`` items taken evenly across a sorted list (deterministic)."""
    if len(items) <= n:
        return list(items)
    idx = np.linspace(0, len(items) - 1, n).round().astype(int)
    return [items[i] for i in idx]


def _spread_readable(items: list, n: int, read) -> tuple[list, int]:
    """``_spread`` of ``items`` passed through ``read``, replacing items whose ``read`` raises ImageReadError or
    ValueError (a corrupt frame, a bad annotation); returns the read items and how many were passed over."""
    pool, good, passed_over = list(items), [], 0
    while pool and len(good) < n:
        for item in _spread(pool, n - len(good)):
            pool.remove(item)
            try:
                good.append(read(item))
            except (tio.ImageReadError, ValueError):
                passed_over += 1
    return good, passed_over


def _sftl54_samples(root: Path, n: int) -> tuple[list, int]:
    """(path, image, face box or None, landmarks) of gray-palette frames spread over subjects and splits, and how
    many were passed over as unreadable."""
    pairs = []
    for split in ("train", "val", "test"):
        for js in sorted((root / "gray" / split / "json").glob("*.json")):
            img = js.parent.parent / "images" / f"{js.stem}.png"
            if img.exists():
                pairs.append((img, js))
    if not pairs:
        raise FileNotFoundError(f"no SF-TL54 gray images with annotations under {root}")

    def read(pair):
        face, landmarks = readers.read_labelme(pair[1])
        return pair[0], readers.read_frame(pair[0]), face, landmarks

    return _spread_readable(pairs, n, read)


def _thermeval_samples(root: Path, n: int) -> tuple[list, int]:
    """(path, frame, annotations) spread over both annotation files, frames with a Nose preferred (a file_name
    that leaves images/ is never opened), and how many were passed over."""
    frames = []
    for ann_file in sorted((root / "Annotations").glob("annotations_*.json")):
        images, anns = readers.read_coco(ann_file)
        by_image: dict = {}
        for a in anns:
            by_image.setdefault(a["image_id"], []).append(a)
        for im in images:
            found = by_image.get(im["id"], [])
            frames.append((any(int(a["category_id"]) == readers.NOSE for a in found), im["file_name"], found))
    if not frames:
        raise FileNotFoundError(f"no ThermEval-D images listed under {root / 'Annotations'}")

    def read(frame):
        disk = readers.resolve_image(root / "images", frame[1])
        if disk is None:
            raise tio.ImageReadError(f"image not found: {root / 'images' / frame[1]}")
        return disk, readers.read_frame(disk), frame[2]

    with_nose = [f for f in frames if f[0]] or frames
    return _spread_readable(with_nose, n, read)


def synthetic_samples_figure(sftl54_root, thermeval_root, out_path, n: int = 4, title_prefix: str = "SYNTHETIC"):
    """Grid of raw frames with their annotations, saved to ``out_path``; returns the figure.

    Row 1: SF-TL54 white-hot frames with the face box, the 54 landmarks and the nose tip (landmark 30).
    Row 2: the same frames in the iron palette, when that palette exists. Row 3: ThermEval-D frames
    with Person (green) and Nose (red) boxes. ``title_prefix`` names the kind of data in the title.
    """
    import cv2
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    sf_root, te_root = Path(sftl54_root), Path(thermeval_root)
    sf, sf_passed = _sftl54_samples(sf_root, n)
    te, te_passed = _thermeval_samples(te_root, n)
    iron = [sf_root / "iron" / img.parent.parent.name / "images" / img.name for img, *_ in sf]
    has_iron = all(p.exists() for p in iron)
    rows = 3 if has_iron else 2
    fig = Figure(figsize=(3.0 * n, 2.4 * rows + 0.6))
    axes = fig.subplots(rows, n, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for j, (img_path, img, box, pts) in enumerate(sf):
        ax = axes[0, j]
        ax.imshow(img[..., ::-1])
        if box is not None:
            ax.add_patch(Rectangle(box[:2], box[2] - box[0], box[3] - box[1], fill=False, ec="cyan", lw=1))
        ax.scatter(pts[:, 0], pts[:, 1], s=3, c="lime", linewidths=0)
        if len(pts) > NOSE_TIP:
            ax.scatter([pts[NOSE_TIP, 0]], [pts[NOSE_TIP, 1]], s=40, marker="+", c="red", linewidths=1.2)
        ax.set_title(f"SF-TL54 gray · {img_path.stem}", fontsize=7)
        if has_iron:
            ax = axes[1, j]
            try:
                ax.imshow(tio.read_image(iron[j], cv2.IMREAD_COLOR)[..., ::-1])
            except tio.ImageReadError:
                ax.text(0.5, 0.5, f"{iron[j].name}: unreadable", ha="center", fontsize=7, transform=ax.transAxes)
                sf_passed += 1
            if len(pts) > NOSE_TIP:
                ax.scatter([pts[NOSE_TIP, 0]], [pts[NOSE_TIP, 1]], s=40, marker="+", c="cyan", linewidths=1.2)
            ax.set_title(f"SF-TL54 iron · {img_path.stem}", fontsize=7)
    for j, (img_path, img, anns) in enumerate(te):
        ax = axes[rows - 1, j]
        ax.imshow(img[..., ::-1])
        for a in anns:
            x, y, w, h = (float(v) for v in a["bbox"])
            if (colour := {readers.PERSON: "lime", readers.NOSE: "red"}.get(int(a["category_id"]))) is not None:
                ax.add_patch(Rectangle((x, y), w, h, fill=False, ec=colour, lw=1))
        ax.set_title(f"ThermEval-D · {img_path.stem}", fontsize=7)
    fig.suptitle(f"{title_prefix} data: SF-TL54-style portraits (face box, 54 landmarks, + nose tip) and "
                 f"ThermEval-D-style scenes (Person green, Nose red)", fontsize=9)
    passed = sf_passed + te_passed
    note = f" · {passed} unreadable frame(s) passed over (the build names them)" if passed else ""
    fig.text(0.5, 0.005, f"sources: {sf_root.name}/, {te_root.name}/ · {title_prefix}{note}", ha="center",
             fontsize=7)
    fig.tight_layout(rect=(0, 0.02, 1, 0.96))
    save_figure(fig, out_path, dpi=130)
    return fig


# Result figures: built on matplotlib.figure.Figure (not pyplot), so a notebook shows each exactly once.
def new_figure(w: float, h: float, *grid, **kwargs):
    """A pyplot-free matplotlib Figure of ``w``×``h`` inches and its axes, ``fig.subplots(*grid, **kwargs)``."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), layout="constrained")
    return fig, fig.subplots(*grid, **kwargs)


def _rgb(img_bgr):
    return img_bgr[..., ::-1]


def crop_grid(crops_dir, records, out_path, *, split="test", per_dataset=6, caption=None):
    """A grid of HR crops per dataset with their ground-truth nose points."""
    import cv2

    names = [d for d in ("sftl54", "thermeval") if any(r["dataset"] == d and r["split"] == split for r in records)]
    fig, axes = new_figure(1.6 * per_dataset, 1.8 * len(names), len(names), per_dataset, squeeze=False)
    for row, name in zip(axes, names):
        recs = [r for r in records if r["dataset"] == name and r["split"] == split][:per_dataset]
        for ax, rec in zip(row, recs):
            ax.imshow(_rgb(tio.read_image(Path(crops_dir) / rec["path"], cv2.IMREAD_COLOR)))
            if rec.get("nose") is not None:
                ax.plot(*rec["nose"], "+", color="cyan", ms=8, mew=1.5)
            ax.set_title(rec["id"], fontsize=6)
        for ax in row:
            ax.axis("off")
        row[0].text(-0.08, 0.5, DATASET_LABELS[name], transform=row[0].transAxes, rotation=90,
                    va="center", ha="right", fontsize=9)
    fig.suptitle(f"{split} crops (192×192) with ground-truth nose point", fontsize=10)
    return save_figure(fig, out_path, caption)


def image_gallery(items, out_path, *, ncols: int = 4, caption=None, title=None):
    """``items`` = [(label, uint8 gray or BGR image)] in a grid of ``ncols`` columns, each titled with its label."""
    nrows = -(-len(items) // ncols)
    fig, axes = new_figure(2.6 * ncols, 2.1 * nrows, nrows, ncols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (label, img) in zip(axes.flat, items):
        ax.imshow(img if img.ndim == 2 else _rgb(img), cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255)
        ax.set_title(label, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    return save_figure(fig, out_path, caption)


def landmark_overlay(images, truth, predictions: dict, labels, out_path, *, caption=None, title=None):
    """HR crops (uint8 BGR N×H×W×3) with the annotated five points (``truth`` N×5×2, green circles) and each
    model's points (``predictions`` {model name: N×5×2}, NaN where not found) as coloured crosses."""
    colours = ["red", "deepskyblue", "orange", "magenta"]
    fig, (axes,) = new_figure(2.3 * len(images), 2.7, 1, len(images), squeeze=False)
    for i, ax in enumerate(axes):
        ax.imshow(_rgb(images[i]))
        t = np.asarray(truth[i], float)
        ok = np.isfinite(t).all(1)
        ax.scatter(t[ok, 0], t[ok, 1], s=40, facecolors="none", edgecolors="lime", linewidths=1.5,
                   label="annotated" if i == 0 else None)
        for k, (name, pts) in enumerate(predictions.items()):
            p = np.asarray(pts[i], float)
            okp = np.isfinite(p).all(1)
            ax.plot(p[okp, 0], p[okp, 1], "x", color=colours[k % len(colours)], ms=6, mew=1.5,
                    label=name if i == 0 else None)
        ax.set_title(labels[i], fontsize=8)
        ax.axis("off")
    fig.legend(loc="outside lower center", ncols=1 + len(predictions), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, out_path, caption)


_MARKERS = (("x", "red"), ("+", "cyan"), ("1", "orange"))


def _draw_points(ax, points, ref=None, label_it=False):
    """``points`` {model: (x, y) or None} as crosses, one style per model, beside ``ref`` (on HR) as circles."""
    for k, (model, xy) in enumerate(points.items()):
        marker, colour = _MARKERS[k % len(_MARKERS)]
        if ref is not None and ref.get(model) is not None:
            ax.plot(*ref[model], "o", mfc="none", mec=colour, ms=7, mew=1.0)
        if xy is not None:
            ax.plot(*xy, marker, color=colour, ms=8, mew=1.6, label=model if label_it else None)


def comparison_panel(rows, columns, out_path, *, zoom=None, caption=None, title=None, points=None, scores=None,
                     row_labels=None, n_inputs=2):
    """Rows of images (uint8 BGR, the first of each row HR, any sizes) under column titles.

    ``zoom`` = per row (x0, y0, x1, y1) in HR pixels: the region is outlined and drawn below twice, enlarged: as
    luma stretched to the HR region's 1st–99th percentile, and (columns after the first ``n_inputs``) as
    |image − HR| on one colour scale for the figure. ``scores`` = per row, per column a text on that image (or
    None). ``points`` = per row, per column {model: (x, y) or None} in HR pixels (None for a column without),
    drawn as crosses beside the HR column's positions as circles.
    """
    per = 3 if zoom else 1
    fig, axes = new_figure(1.75 * len(columns) + 0.7, 1.75 * len(rows) * per, len(rows) * per, len(columns),
                           squeeze=False)
    vmax = _error_scale(rows, zoom, n_inputs) if zoom else None
    for i, images in enumerate(rows):
        _image_row(axes[per * i], images, zoom[i] if zoom else None, scores[i] if scores else None)
        axes[per * i][0].set_ylabel(row_labels[i] if row_labels else "", fontsize=7)
        if zoom:
            _closeup_row(axes[per * i + 1], images, zoom[i])
            shown = _error_row(axes[per * i + 2], images, zoom[i], n_inputs, vmax)
            fig.colorbar(shown, ax=list(axes[per * i + 2]), shrink=0.9, aspect=12, pad=0.01, extend="max",
                         label="grey levels")
        for j in range(len(images)):
            if points is not None and points[i][j] is not None:
                ref = points[i][0] if j else None
                for target in ([axes[per * i][j], axes[per * i + 1][j]] if zoom else [axes[per * i][j]]):
                    _draw_points(target, points[i][j], ref, label_it=(i == 0 and j == 0 and target is axes[0][0]))
    for ax, name in zip(axes[0], columns):
        ax.set_title(name, fontsize=8)
    if points is not None:
        axes[0][0].legend(loc="upper left", fontsize=6, framealpha=0.7, borderpad=0.3, handletextpad=0.3,
                          title="nose (○ = on HR)", title_fontsize=6)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, out_path, caption)


def _bare(ax):
    """No ticks, and the limits the image set kept (a landmark drawn outside the region is cut, not shown)."""
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_autoscale_on(False)


def _image_row(axes, images, box, scores):
    """Each image in HR coordinates (an LR image nearest-neighbour), ``box`` outlined, ``scores`` written on it."""
    from matplotlib.patches import Rectangle

    h, w = images[0].shape[:2]
    for j, (ax, img) in enumerate(zip(axes, images)):
        ax.imshow(_rgb(img), extent=(0, w, h, 0), interpolation="nearest")
        _bare(ax)
        if box:
            x0, y0, x1, y1 = box
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="yellow", lw=0.8))
        if scores and scores[j]:
            ax.text(0.03, 0.03, scores[j], transform=ax.transAxes, fontsize=7, color="white", va="bottom",
                    bbox=dict(facecolor="black", alpha=0.65, pad=1.5, lw=0))


def _region(img, box, shape, luma=True):
    """``box`` (x0, y0, x1, y1, HR pixels) of ``img`` as float, ``img`` first enlarged (nearest-neighbour) to the HR
    ``shape`` when smaller (the LR input); as luma (BT.601 of the BGR image) when ``luma``."""
    import cv2

    from .metrics import LUMA_WEIGHTS

    if img.shape[:2] != tuple(shape[:2]):
        img = cv2.resize(img, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    x0, y0, x1, y1 = box
    region = np.asarray(img[y0:y1, x0:x1], float)
    if luma and region.ndim == 3:
        region = region @ np.array(LUMA_WEIGHTS[::-1])
    return region


def _closeup_row(axes, images, box):
    """The region ``box`` of each image as luma, stretched to the HR region's 1st–99th percentile."""
    x0, y0, x1, y1 = box
    regions = [_region(img, box, images[0].shape) for img in images]
    lo, hi = np.percentile(regions[0], [1, 99])
    for ax, region in zip(axes, regions):
        ax.imshow(region, cmap="gray", vmin=lo, vmax=max(hi, lo + 1), extent=(x0, x1, y1, y0), interpolation="nearest")
        _bare(ax)
    axes[0].set_ylabel(f"close-up, luma\nstretched {lo:.0f}–{hi:.0f}", fontsize=7)


def _error(img, hr, box):
    """|img − HR| in ``box``, averaged over the colour channels (grey levels)."""
    return np.abs(_region(img, box, hr.shape, luma=False) - _region(hr, box, hr.shape, luma=False)).reshape(
        box[3] - box[1], box[2] - box[0], -1).mean(-1)


def _error_scale(rows, zoom, n_inputs) -> float:
    """One top for every error map of a figure: the 99th percentile of all their pixels (at least 1 grey level)."""
    errors = [_error(img, images[0], box).ravel() for images, box in zip(rows, zoom) for img in images[n_inputs:]]
    return max(1.0, float(np.percentile(np.concatenate(errors), 99))) if errors else 1.0


def _error_row(axes, images, box, n_inputs, vmax):
    """|image − HR| in ``box`` for the images after the first ``n_inputs``; the first cell says what the row is."""
    x0, y0, x1, y1 = box
    shown = None
    for j, ax in enumerate(axes):
        if j < n_inputs:
            ax.set_frame_on(False)
        else:
            shown = ax.imshow(_error(images[j], images[0], box), cmap="magma", vmin=0, vmax=vmax,
                              extent=(x0, x1, y1, y0), interpolation="nearest")
        _bare(ax)
    axes[0].text(0.95, 0.5, "|output − HR|\nin the close-up,\none colour scale\nfor the figure →",
                 transform=axes[0].transAxes, ha="right", va="center", fontsize=7)
    return shown


def _score_text(hr, out, lpips=None) -> str:
    """PSNR of ``out`` against ``hr`` (uint8, scikit-image, data range 255) and the crop's LPIPS when known."""
    from skimage.metrics import peak_signal_noise_ratio

    text = f"PSNR {peak_signal_noise_ratio(hr, out, data_range=255):.2f} dB"
    try:
        return text + (f"\nLPIPS {float(lpips):.3f}" if lpips is not None and np.isfinite(float(lpips)) else "")
    except (TypeError, ValueError):
        return text


def nose_box(rec: dict, shape, side: int = 64) -> tuple[int, int, int, int]:
    """The zoom box (x0, y0, x1, y1) of a method panel: ``side`` px around the nose (else the centre), a little
    above it so the eyes show, inside the crop."""
    h, w = shape[:2]
    side = min(side, h, w)
    nx, ny = rec["nose"] if rec.get("nose") else (w / 2, h / 2)
    x0, y0 = int(np.clip(nx - side / 2, 0, w - side)), int(np.clip(ny - side * 5 / 8, 0, h - side))
    return x0, y0, x0 + side, y0 + side


def method_panel(crops_dir, sr_dir, recs, methods, out_path, *, caption=None, title=None, locators=None,
                 crop_rows=None):
    """HR, the LR input and each method's saved output (``<sr_dir>/<method stem>/<id>.png``) for the crops
    ``recs``, with a close-up of the nose, each output's error there and its PSNR (and LPIPS from ``crop_rows``,
    per-crop result rows); ``locators`` ({model name: nose locator}) draws each model's nose on every image."""
    from .evaluate import load_crops, result_stem

    lpips = {(r.get("method"), r.get("id")): r.get("lpips") for r in crop_rows or ()}
    rows, zooms, points, scores = [], [], [], []
    for rec in recs:
        hr = load_crops(crops_dir, [rec])[0]
        outs = [load_crops(result_stem(sr_dir, m), [{"path": f"{rec['id']}.png"}])[0] for m in methods]
        rows.append([hr, make_lr(hr), *outs])
        zooms.append(nose_box(rec, hr.shape))
        scores.append([None, None, *[_score_text(hr, o, lpips.get((m, rec["id"]))) for m, o in zip(methods, outs)]])
        if locators:
            found = {name: loc.locate(np.stack([hr, *outs])) for name, loc in locators.items()}
            per_image = [{name: (tuple(xy[k]) if ok[k] else None) for name, (xy, ok) in found.items()}
                         for k in range(1 + len(outs))]
            points.append([per_image[0], None, *per_image[1:]])
    return comparison_panel(rows, ["HR", "LR (nearest)", *methods], out_path, zoom=zooms, caption=caption, title=title,
                            points=points if locators else None, scores=scores, row_labels=[r["id"] for r in recs])


_SPLIT_MARKERS = ("o", "s", "D", "^", "v", "P")
_DISTORTION_AXIS = f"{METRICS['psnr'].heading(unit=True)}, → less distortion"   # the planes' x axis


def metric_dots(table, metric, out_path, *, label=None, caption=None, title=None):
    """``metric`` per method (a row each) and split (a marker each) as points with their value beside them, and
    whiskers where rows carry ``<metric>_lo`` / ``<metric>_hi``. Points, not bars: the axis spans the values (its
    label says where it starts when not at zero), so a 1 dB difference shows."""
    methods = list(dict.fromkeys(r["method"] for r in table))
    splits = list(dict.fromkeys(r["split"] for r in table))
    fig, ax = new_figure(6.6, 1.5 + len(methods) * (0.24 * len(splits) + 0.2))
    step = 0.8 / len(splits)
    seen = []
    for k, split in enumerate(splits):
        rows = [next((r for r in table if r["method"] == m and r["split"] == split), {}) for m in methods]
        v, lo, hi = (np.array([float(r.get(k, np.nan)) for r in rows]) for k in (metric, f"{metric}_lo", f"{metric}_hi"))
        y = np.arange(len(methods)) + (k - (len(splits) - 1) / 2) * step
        whiskers = np.isfinite(lo).any()
        ax.errorbar(v, y, xerr=np.abs([v - lo, hi - v]) if whiskers else None, fmt=_SPLIT_MARKERS[k % 6], ms=6,
                    capsize=2, elinewidth=0.8, label=split)
        for vi, hi_i, yi in zip(v, np.where(np.isfinite(hi), hi, v), y):
            if np.isfinite(vi):
                ax.annotate(f"{vi:.3g}", (hi_i, yi), xytext=(6, 0), textcoords="offset points", va="center", fontsize=8)
        seen += [*v, *(lo if whiskers else []), *(hi if whiskers else [])]
    left = _value_axis(ax, np.asarray(seen, float))
    ax.set_yticks(np.arange(len(methods)), methods, fontsize=9)
    ax.set_ylim(len(methods) - 0.5, -0.5)
    ax.grid(axis="x", alpha=0.3)
    for edge in np.arange(len(methods) - 1) + 0.5:
        ax.axhline(edge, color="0.85", lw=0.8)
    starts = f" · axis starts at {left:.3g}, not at 0" if left > 0 else ""
    ax.set_xlabel(f"{label or metric} ({'higher' if METRICS[metric].higher_is_better else 'lower'} is better){starts}")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=len(splits), fontsize=8, frameon=False)
    fig.suptitle(title or f"{label or metric} per method and split", fontsize=10)
    return save_figure(fig, out_path, caption)


def _value_axis(ax, values) -> float:
    """Set a dot plot's value axis to the values' range plus margins (from 0 when near); return its start."""
    f = values[np.isfinite(values)]
    if not len(f):
        return 0.0
    lo, hi = float(f.min()), float(f.max())
    span = hi - lo or abs(hi) * 0.1 or 1.0
    left = lo - 0.1 * span
    if 0 < left < 0.5 * span:
        left = 0.0
    ax.set_xlim(left, hi + 0.22 * span)
    return left


def training_curves(histories: dict, out_path, *, metric="psnr", caption=None):
    """Validation ``metric`` against epoch: overall (left) and per dataset (right), one line style per run."""
    fig, (ax_all, ax_ds) = new_figure(9, 3.2, 1, 2)
    for (name, hist), ls in zip(histories.items(), ["-", "--", ":", "-."]):
        vals = [h for h in hist if h.get("val")]
        ep = [h["epoch"] for h in vals]
        ax_all.plot(ep, [h["val"]["all"][metric] for h in vals], ls, marker="o", ms=3, label=name)
        for ds in [k for k in vals[0]["val"] if k != "all"] if vals else []:
            ax_ds.plot(ep, [h["val"][ds][metric] for h in vals], ls, marker="o", ms=3, label=f"{name} · {ds}")
    ax_all.set_title(f"validation {metric}, all crops", fontsize=9)
    ax_ds.set_title(f"validation {metric} per dataset", fontsize=9)
    for ax in (ax_all, ax_ds):
        ax.set_xlabel("epoch"), ax.set_ylabel(metric), ax.legend(fontsize=7), ax.grid(alpha=0.3)
    return save_figure(fig, out_path, caption)


def _bulk_limits(v, keep=None) -> tuple[float, float, float]:
    """(lo, hi, margin) of an axis holding the bulk of ``v``: the 5th–95th percentile range widened 1.5 times on
    each side, within the data, ``keep`` (a reference line) inside; values outside are drawn at the edge."""
    f = v[np.isfinite(v)]
    if not len(f):
        return -1.0, 1.0, 0.1
    p5, p95 = np.percentile(f, [5, 95])
    span = p95 - p5 or max(abs(p95), 1.0)
    lo, hi = max(f.min(), p5 - 1.5 * span), min(f.max(), p95 + 1.5 * span)
    if keep is not None:
        lo, hi = min(lo, keep), max(hi, keep)
    return float(lo), float(hi), 0.06 * float(hi - lo or 1.0)


def scatter(x, y, out_path, *, xlabel, ylabel, labels=None, groups=None, caption=None, title=None,
            annotate=None, hline=None, vline=None):
    """A labelled scatter plot; ``groups`` colours points by group name, ``annotate`` marks points by text. A far
    outlier (``_bulk_limits``) is drawn at the edge as a triangle pointing its way, its value beside it."""
    fig, ax = new_figure(5.6, 4.2)
    x, y = np.asarray(x, float), np.asarray(y, float)
    (xlo, xhi, xm), (ylo, yhi, ym) = _bulk_limits(x, vline), _bulk_limits(y, hline)
    out = (x < xlo) | (x > xhi) | (y < ylo) | (y > yhi)
    xs, ys = np.clip(x, xlo - xm / 2, xhi + xm / 2), np.clip(y, ylo - ym / 2, yhi + ym / 2)
    groups = np.asarray(groups if groups is not None else [""] * len(x))
    for g in dict.fromkeys(groups):
        m = groups == g
        dots = ax.scatter(xs[m & ~out], ys[m & ~out], s=22, alpha=0.75, label=g or None)
        for k in np.flatnonzero(m & out):
            marker = "^" if y[k] > yhi else "v" if y[k] < ylo else ">" if x[k] > xhi else "<"
            ax.scatter([xs[k]], [ys[k]], s=60, marker=marker, color=dots.get_facecolor()[0], edgecolors="k",
                       linewidths=0.6, clip_on=False, zorder=4)
            ax.annotate(f"({x[k]:.3g}, {y[k]:.3g})", (xs[k], ys[k]), textcoords="offset points", fontsize=7,
                        xytext=(-8 if xs[k] > (xlo + xhi) / 2 else 8, -3 if y[k] > yhi else 3),
                        ha="right" if xs[k] > (xlo + xhi) / 2 else "left", va="top" if y[k] > yhi else "bottom")
    if annotate is not None:
        _place_labels(ax, list(zip(xs, ys, annotate)), avoid=list(zip(xs, ys)))
    if hline is not None:
        ax.axhline(hline, color="0.5", lw=0.8)
    if vline is not None:
        ax.axvline(vline, color="0.5", lw=0.8)
    ax.set_xlim(xlo - xm, xhi + xm), ax.set_ylim(ylo - ym, yhi + ym)
    ax.set_xlabel(xlabel), ax.set_ylabel(ylabel)
    n = int(out.sum())
    note = (f"{n} point{'s' if n > 1 else ''} beyond the axis, shown at the edge (▲▼◀▶) with "
            f"{'their values' if n > 1 else 'its value'}") if n else ""
    ax.set_title("\n".join(t for t in (title, note) if t), fontsize=9)
    if any(groups):
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, out_path, caption)


def loss_share(history, out_path, *, caption=None):
    """Each loss term's share of the weighted total per training epoch (stacked areas)."""
    recs = [h for h in history if h.get("train_term_share")]
    names = list(recs[0]["train_term_share"]) if recs else []
    ep = [h["epoch"] for h in recs]
    fig, ax = new_figure(5.0, 3.0)
    if recs:
        ax.stackplot(ep, np.array([[h["train_term_share"][n] for h in recs] for n in names]), labels=names,
                     alpha=0.8)
    ax.set_ylim(0, 1), ax.set_xlabel("epoch"), ax.set_ylabel("share of the training loss")
    ax.legend(fontsize=7, loc="upper left")
    return save_figure(fig, out_path, caption)


# offsets tried around a point, in order: right-up first, then the other sides (unit steps, x right, y up)
_AROUND = ((1, 1), (1, 0), (1, -1), (-1, 1), (-1, 0), (-1, -1), (0, 1), (0, -1))


def _place_labels(ax, items, *, avoid=(), fontsize=7, avoid_px=5.0, pad_px=2.0):
    """Write each (x, y, text) of ``items`` beside its point, greedily at the first spot, ring by ring, that
    overlaps no earlier label nor point of ``avoid`` ((x, y) or (x, y, radius px)), stays inside the axes and is
    nearer its own point than any other (else the least bad spot); off the first ring with a leader line."""
    from matplotlib.transforms import Bbox

    fig = ax.figure
    fig.draw_without_rendering()          # the layout and the limits that the labels are placed in
    renderer, to_px, pt = fig._get_renderer(), ax.transData.transform, fig.dpi / 72
    frame = ax.get_window_extent(renderer)
    marks = [(*to_px(p[:2]), p[2] if len(p) > 2 else avoid_px) for p in avoid if np.isfinite(p[:2]).all()]
    taken = [Bbox.from_bounds(mx - r, my - r, 2 * r, 2 * r) for mx, my, r in marks]
    placed = []
    for x, y, text in items:
        if not np.isfinite([x, y]).all():
            continue                      # a metric not computed for this point: nothing drawn, nothing to label
        px, py = to_px((x, y))
        own = max([r for mx, my, r in marks if abs(mx - px) < 0.5 and abs(my - py) < 0.5], default=avoid_px)
        others = [(mx, my) for mx, my, _ in marks if abs(mx - px) >= 0.5 or abs(my - py) >= 0.5]
        probe = ax.annotate(text, (x, y), fontsize=fontsize)
        ext = probe.get_window_extent(renderer)
        probe.remove()
        w, h = ext.width + 2 * pad_px, ext.height + 2 * pad_px
        best = None
        for k, ring in enumerate((1, 6, 12, 20, 30, 42)):
            for dx, dy in _AROUND:
                cx, cy = px + dx * (own + ring * pt + w / 2), py + dy * (own + ring * pt + h / 2)
                box = Bbox.from_bounds(cx - w / 2, cy - h / 2, w, h)
                penalty = (sum(_overlap(box, t) for t in taken) + 10 * (w * h - _overlap(box, frame))
                           + (0.2 * w * h if any(_gap(box, o) < _gap(box, (px, py)) for o in others) else 0))
                if best is None or penalty < best[0]:
                    best = (penalty, cx, cy, k, box)
            if best[0] == 0:
                break
        _, cx, cy, k, box = best
        taken.append(box)
        placed.append(ax.annotate(text, (x, y), xytext=((cx - px) / pt, (cy - py) / pt), textcoords="offset points",
                                  ha="center", va="center", fontsize=fontsize,
                                  bbox=dict(boxstyle="square,pad=0.05", fc="white", ec="none", alpha=0.75),
                                  arrowprops=dict(arrowstyle="-", lw=0.6, color="0.3", shrinkA=1, shrinkB=own / pt)
                                  if k else None))
    return placed


def _gap(box, xy) -> float:
    """Distance from a point to a Bbox (0 inside)."""
    return float(np.hypot(max(box.x0 - xy[0], 0, xy[0] - box.x1), max(box.y0 - xy[1], 0, xy[1] - box.y1)))


def _overlap(a, b) -> float:
    """Area shared by two Bboxes (0 when apart)."""
    return max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0)) * max(0.0, min(a.y1, b.y1) - max(a.y0, b.y0))


def perception_distortion(table, out_path, *, split="all", axes_spec=(("lpips", "LPIPS"),), caption=None):
    """The perception–distortion plane (Blau & Michaeli, 2018): PSNR (right is better) against each perceptual
    measure (down is better), one labelled point per method."""
    rows = [r for r in table if r["split"] == split]
    fig, (axs,) = new_figure(4.2 * len(axes_spec), 3.6, 1, len(axes_spec), squeeze=False)
    panels = []
    for ax, (key, label) in zip(axs, axes_spec):
        pts = [(float(r["psnr"]), float(r[key]), r["method"]) for r in rows]
        for k, (x, y, _) in enumerate(pts):
            ax.scatter(x, y, s=40, color=f"C{k}", zorder=3)
        ax.set_xlabel(_DISTORTION_AXIS), ax.set_ylabel(f"{label}, ↓ better")
        ax.margins(x=0.15, y=0.15)
        ax.grid(alpha=0.3)
        panels.append(pts)
    fig.suptitle(f"Perception–distortion plane ({split} table crops): lower right is better", fontsize=10)
    for ax, pts in zip(axs, panels):
        _place_labels(ax, pts, avoid=[p[:2] for p in pts], fontsize=8)
    return save_figure(fig, out_path, caption)


def plane_with_intervals(groups: dict, out_path, *, metrics=(("lpips", "LPIPS"),), connect=(), fronts=None,
                         mark=None, caption=None, title=None):
    """PSNR (x, right is less distortion) against each metric of ``metrics`` (y, lower is better), one panel each.

    ``groups`` maps a legend label to summary rows (``method``, each metric with ``_lo``/``_hi``, optional ``tag``
    to write beside the point); groups in ``connect`` are joined in order (and left out of a panel whose metric
    some of their points lack); ``fronts`` maps a metric to its non-dominated methods (a dashed line); the method
    ``mark`` gets a star.
    """
    fig, (axs,) = new_figure(4.3 * len(metrics), 4.1, 1, len(metrics), squeeze=False)
    every = {r["method"]: r for rows in groups.values() for r in rows}
    labels = []
    for ax, (key, label) in zip(axs, metrics):
        labels.append(_plane_panel(ax, groups, key, connect))
        front = [every[m] for m in (fronts or {}).get(key, []) if m in every]
        if len(front) > 1:
            ax.plot([r["psnr"] for r in front], [r[key] for r in front], "--", color="0.3", lw=1.2,
                    label="non-dominated", zorder=0)
        if mark in every and np.isfinite(every[mark][key]):
            ax.scatter([every[mark]["psnr"]], [every[mark][key]], marker="*", s=160, facecolors="none",
                       edgecolors="k", linewidths=1.0, label=f"{mark} (the write-up's λ)", zorder=5)
            labels[-1][1].append((every[mark]["psnr"], every[mark][key], 9.0))
        ax.set_xlabel(_DISTORTION_AXIS), ax.set_ylabel(f"{label}, ↓ better")
        ax.margins(x=0.08, y=0.1)
        ax.grid(alpha=0.3)
    handles = {lab: h for ax in axs for h, lab in zip(*ax.get_legend_handles_labels())}
    # the title heads the legend: a suptitle and a legend outside the panels would overlap
    legend = fig.legend(handles.values(), handles.keys(), loc="outside upper center", ncols=min(len(handles), 5),
                        fontsize=8, frameon=False, title=title)
    legend.get_title().set_fontsize(10)
    for ax, (items, avoid) in zip(axs, labels):
        _place_labels(ax, items, avoid=avoid)
    return save_figure(fig, out_path, caption)


def _plane_panel(ax, groups, key, connect):
    """One panel of ``plane_with_intervals``: each group's points with intervals; returns the labels to write
    ((x, y, tag), each point once) and the points they must keep clear of."""
    items, avoid = {}, []
    for g, (name, rows) in enumerate(groups.items()):
        finite = [r for r in rows if np.isfinite(r["psnr"]) and np.isfinite(r[key])]
        if not finite or (name in connect and len(finite) < len(rows)):
            continue        # a connected group with a metric not computed for all its points: a false line
        x = np.array([r["psnr"] for r in finite])
        y = np.array([r[key] for r in finite])
        xerr = np.array([[r["psnr"] - r["psnr_lo"] for r in finite], [r["psnr_hi"] - r["psnr"] for r in finite]])
        yerr = np.array([[r[key] - r[f"{key}_lo"] for r in finite], [r[f"{key}_hi"] - r[key] for r in finite]])
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o-" if name in connect else "s", ms=4, lw=0.8,
                    elinewidth=0.7, capsize=2, label=name, color=f"C{g}")      # one colour per group in every panel
        for r in finite:
            items.setdefault((r["psnr"], r[key]), r.get("tag", r["method"]))
            avoid.append((r["psnr"], r[key]))
    return [(x, y, t) for (x, y), t in items.items()], avoid
