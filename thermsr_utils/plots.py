"""Figures of the notebooks. matplotlib is imported inside the functions, so importing this module is cheap.

Every figure is written with ``save_figure``: rendered to a temporary file beside the target and renamed
into place, so a figure on disk is always complete.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import io as tio
from . import timing

NOSE_TIP = 30  # SF-TL54 landmark index of the nose tip (0-based)
_PERSON, _NOSE = 0, 3  # ThermEval-D category ids


CAPTION_FONTSIZE = 7


def save_figure(fig, path: str | os.PathLike, caption: str | None = None, **kwargs):
    """Add ``caption`` (profile and substitutes) under the figure, save it atomically; return ``fig``.

    The format follows the file suffix.
    """
    import textwrap

    path = Path(path)
    if caption:
        # wrapped to the figure's width: one long line would widen a tight-bboxed figure to fit it
        chars = max(40, int(fig.get_figwidth() * 72 / (CAPTION_FONTSIZE * 0.55)))
        fig.supxlabel(textwrap.fill(caption, chars), fontsize=CAPTION_FONTSIZE, color="0.35")
    with timing.phase("figures"), tio.atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", **kwargs)
    return fig


def _spread(items: list, n: int) -> list:
    """Up to ``n`` items taken evenly across a sorted list (deterministic)."""
    if len(items) <= n:
        return list(items)
    idx = np.linspace(0, len(items) - 1, n).round().astype(int)
    return [items[i] for i in idx]


def _spread_readable(items: list, n: int, read) -> tuple[list, int]:
    """Up to ``n`` of ``items`` spread evenly, each passed through ``read``; items whose ``read`` raises
    ImageReadError or ValueError (a corrupt frame, a bad annotation) are replaced by others. Returns the
    read items and how many were passed over. With every item readable this is ``_spread`` itself."""
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
    """(image, face box or None, landmarks) of the gray palette spread over subjects and splits, read with
    the builder's own readers; and how many frames were passed over as unreadable."""
    from . import data

    pairs = []
    for split in ("train", "val", "test"):
        for js in sorted((root / "gray" / split / "json").glob("*.json")):
            img = js.parent.parent / "images" / f"{js.stem}.png"
            if img.exists():
                pairs.append((img, js))
    if not pairs:
        raise FileNotFoundError(f"no SF-TL54 gray images with annotations under {root}")

    def read(pair):
        face, landmarks = data.read_labelme(pair[1])
        return pair[0], data.read_frame(pair[0]), face, landmarks

    return _spread_readable(pairs, n, read)


def _thermeval_samples(root: Path, n: int) -> tuple[list, int]:
    """(image path, frame, annotations) spread over both annotation files, frames with a Nose preferred,
    read with the builder's own readers (a file_name that leaves images/ is never opened); and how many
    frames were passed over."""
    from . import data

    frames = []
    for ann_file in sorted((root / "Annotations").glob("annotations_*.json")):
        images, anns = data.read_coco(ann_file)
        by_image: dict = {}
        for a in anns:
            by_image.setdefault(a["image_id"], []).append(a)
        for im in images:
            found = by_image.get(im["id"], [])
            frames.append((any(int(a["category_id"]) == _NOSE for a in found), im["file_name"], found))
    if not frames:
        raise FileNotFoundError(f"no ThermEval-D images listed under {root / 'Annotations'}")

    def read(frame):
        disk = data.resolve_image(root / "images", frame[1])
        if disk is None:
            raise tio.ImageReadError(f"image not found: {root / 'images' / frame[1]}")
        return disk, data.read_frame(disk), frame[2]

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
            if int(a["category_id"]) == _PERSON:
                ax.add_patch(Rectangle((x, y), w, h, fill=False, ec="lime", lw=1))
            elif int(a["category_id"]) == _NOSE:
                ax.add_patch(Rectangle((x, y), w, h, fill=False, ec="red", lw=1))
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


# ------------------------------------------------------------------------------------------------
# Result figures. Built on matplotlib.figure.Figure (not pyplot), so a notebook shows each exactly once.
# ------------------------------------------------------------------------------------------------
def new_figure(w: float, h: float):
    """A pyplot-free matplotlib Figure of ``w``×``h`` inches."""
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), layout="constrained")


def _rgb(img_bgr):
    return img_bgr[..., ::-1]


def crop_grid(crops_dir, records, out_path, *, split="test", per_dataset=6, caption=None):
    """A grid of HR crops per dataset with their ground-truth nose points."""
    import cv2

    from .data import DATASET_LABELS
    from .io import read_image

    names = [d for d in ("sftl54", "thermeval") if any(r["dataset"] == d and r["split"] == split for r in records)]
    fig = new_figure(1.6 * per_dataset, 1.8 * len(names))
    axes = fig.subplots(len(names), per_dataset, squeeze=False)
    for row, name in zip(axes, names):
        recs = [r for r in records if r["dataset"] == name and r["split"] == split][:per_dataset]
        for ax, rec in zip(row, recs):
            ax.imshow(_rgb(read_image(Path(crops_dir) / rec["path"], cv2.IMREAD_COLOR)))
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
    fig = new_figure(2.6 * ncols, 2.1 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False)
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
    n = len(images)
    fig = new_figure(2.3 * n, 2.7)
    axes = fig.subplots(1, n, squeeze=False)[0]
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
    """``points`` {model: (x, y) or None} as crosses (one style per model); ``ref`` the same for HR, drawn as
    hollow circles of the same colour, so the distance between circle and cross is the nose's displacement."""
    for k, (model, xy) in enumerate(points.items()):
        marker, colour = _MARKERS[k % len(_MARKERS)]
        if ref is not None and ref.get(model) is not None:
            ax.plot(*ref[model], "o", mfc="none", mec=colour, ms=7, mew=1.0)
        if xy is not None:
            ax.plot(*xy, marker, color=colour, ms=8, mew=1.6, label=model if label_it else None)


def comparison_panel(rows, columns, out_path, *, zoom=None, caption=None, title=None, points=None):
    """Rows of images (uint8 BGR, any sizes) under column titles; ``zoom`` = per-row (x0, y0, x1, y1) in HR
    pixels: that region is drawn enlarged in an inset and outlined on every column. ``points`` = per row, per
    column a {model: (x, y) or None} of landmark positions in HR pixels (None for a column without), drawn as
    crosses with the first column's (HR) positions as circles beside them."""
    from matplotlib.patches import Rectangle

    n_rows, n_cols = len(rows), len(columns)
    fig = new_figure(1.9 * n_cols, 1.9 * n_rows * (2 if zoom else 1))
    axes = fig.subplots(n_rows * (2 if zoom else 1), n_cols, squeeze=False)
    for i, images in enumerate(rows):
        main = axes[2 * i] if zoom else axes[i]
        for j, img in enumerate(images):
            ax = main[j]
            hr_side = rows[i][0].shape[0]
            extent = (0, hr_side, hr_side, 0)  # show every column in HR coordinates (LR is nearest-neighbour)
            ax.imshow(_rgb(img), extent=extent, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_title(columns[j], fontsize=8)
            if zoom:
                x0, y0, x1, y1 = zoom[i]
                ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="yellow", lw=0.8))
                zax = axes[2 * i + 1][j]
                zax.imshow(_rgb(img), extent=extent, interpolation="nearest")
                zax.set_xlim(x0, x1), zax.set_ylim(y1, y0)
                zax.set_xticks([]), zax.set_yticks([])
            if points is not None and points[i][j] is not None:
                ref = points[i][0] if j else None
                for target in ([ax, axes[2 * i + 1][j]] if zoom else [ax]):
                    _draw_points(target, points[i][j], ref, label_it=(i == 0 and j == 0 and target is ax))
    if points is not None:
        (axes[0][0]).legend(loc="upper left", fontsize=6, framealpha=0.7, borderpad=0.3, handletextpad=0.3,
                            title="nose (○ = on HR)", title_fontsize=6)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, out_path, caption)


def nose_box(rec: dict, shape, side: int = 64) -> tuple[int, int, int, int]:
    """The zoom box (x0, y0, x1, y1) of a method panel: ``side`` px around the crop's nose annotation, a little
    above it so the eyes show (the crop's centre when it has none), kept inside the crop."""
    h, w = shape[:2]
    side = min(side, h, w)
    nx, ny = rec["nose"] if rec.get("nose") else (w / 2, h / 2)
    x0, y0 = int(np.clip(nx - side / 2, 0, w - side)), int(np.clip(ny - side * 5 / 8, 0, h - side))
    return x0, y0, x0 + side, y0 + side


def method_panel(crops_dir, sr_dir, recs, methods, out_path, *, caption=None, title=None, locators=None):
    """HR, the LR input (nearest-neighbour) and each method's saved output (``<sr_dir>/<method stem>/<id>.png``,
    as ``evaluate`` writes them) for the crops ``recs``, each with a zoom on its nose. ``locators`` ({model name:
    nose locator}) draws each model's nose on HR and on every output."""
    from .data import make_lr
    from .evaluate import load_crops, result_stem

    rows, zooms, points = [], [], []
    for rec in recs:
        hr = load_crops(crops_dir, [rec])[0]
        outs = [load_crops(result_stem(sr_dir, m), [{"path": f"{rec['id']}.png"}])[0] for m in methods]
        rows.append([hr, make_lr(hr), *outs])
        zooms.append(nose_box(rec, hr.shape))
        if locators:
            found = {name: loc.locate(np.stack([hr, *outs])) for name, loc in locators.items()}
            per_image = [{name: (tuple(xy[k]) if ok[k] else None) for name, (xy, ok) in found.items()}
                         for k in range(1 + len(outs))]
            points.append([per_image[0], None, *per_image[1:]])
    return comparison_panel(rows, ["HR", "LR (nearest)", *methods], out_path, zoom=zooms, caption=caption, title=title,
                            points=points if locators else None)


def metric_bars(table, metric, out_path, *, label=None, caption=None, lower_is_better=False):
    """Grouped bars of ``metric`` per method and split from an aggregated table."""
    import numpy as np

    methods = list(dict.fromkeys(r["method"] for r in table))
    splits = list(dict.fromkeys(r["split"] for r in table))
    fig = new_figure(1.2 + 1.1 * len(methods), 3.0)
    ax = fig.subplots()
    width = 0.8 / len(splits)
    for k, split in enumerate(splits):
        vals = [next((r[metric] for r in table if r["method"] == m and r["split"] == split), np.nan) for m in methods]
        bars = ax.bar(np.arange(len(methods)) + k * width, vals, width, label=split)
        ax.bar_label(bars, fmt="%.3g", fontsize=6)
    ax.set_xticks(np.arange(len(methods)) + width * (len(splits) - 1) / 2, methods, fontsize=8, rotation=15)
    ax.set_ylabel((label or metric) + (" (lower is better)" if lower_is_better else ""))
    ax.legend(fontsize=7)
    return save_figure(fig, out_path, caption)


def training_curves(histories: dict, out_path, *, metric="psnr", caption=None):
    """Validation ``metric`` against epoch: overall (left) and per dataset (right), one line style per run."""
    fig = new_figure(9, 3.2)
    ax_all, ax_ds = fig.subplots(1, 2)
    styles = ["-", "--", ":", "-."]
    for (name, hist), ls in zip(histories.items(), styles):
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


def scatter(x, y, out_path, *, xlabel, ylabel, labels=None, groups=None, caption=None, title=None,
            annotate=None, hline=None, vline=None):
    """A labelled scatter plot; ``groups`` colours points by group name, ``annotate`` marks points by text."""
    import numpy as np

    fig = new_figure(4.8, 3.8)
    ax = fig.subplots()
    x, y = np.asarray(x, float), np.asarray(y, float)
    groups = np.asarray(groups if groups is not None else [""] * len(x))
    for g in dict.fromkeys(groups):
        m = groups == g
        ax.scatter(x[m], y[m], s=18, alpha=0.75, label=g or None)
    if annotate is not None:
        for xi, yi, t in zip(x, y, annotate):
            ax.annotate(t, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if hline is not None:
        ax.axhline(hline, color="0.5", lw=0.8)
    if vline is not None:
        ax.axvline(vline, color="0.5", lw=0.8)
    ax.set_xlabel(xlabel), ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    if any(groups):
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return save_figure(fig, out_path, caption)


def loss_share(history, out_path, *, caption=None):
    """Each loss term's share of the weighted total per training epoch (stacked areas)."""
    import numpy as np

    recs = [h for h in history if h.get("train_term_share")]
    names = list(recs[0]["train_term_share"]) if recs else []
    ep = [h["epoch"] for h in recs]
    fig = new_figure(5.0, 3.0)
    ax = fig.subplots()
    if recs:
        ax.stackplot(ep, np.array([[h["train_term_share"][n] for h in recs] for n in names]), labels=names,
                     alpha=0.8)
    ax.set_ylim(0, 1), ax.set_xlabel("epoch"), ax.set_ylabel("share of the training loss")
    ax.legend(fontsize=7, loc="upper left")
    return save_figure(fig, out_path, caption)


def perception_distortion(table, out_path, *, split="all", axes_spec=(("lpips", "LPIPS ↓"),), caption=None):
    """The perception–distortion plane: PSNR (distortion, right is better) against each perceptual measure
    (down is better), one point per method; the lower-right corner is out of reach (Blau & Michaeli, 2018)."""
    import numpy as np

    rows = [r for r in table if r["split"] == split]
    fig = new_figure(4.4 * len(axes_spec), 3.8)
    axs = np.atleast_1d(fig.subplots(1, len(axes_spec)))
    for ax, (key, label) in zip(axs, axes_spec):
        for r in rows:
            ax.scatter(r["psnr"], r[key], s=40)
            ax.annotate(r["method"], (r["psnr"], r[key]), textcoords="offset points", xytext=(5, 4), fontsize=8)
        ax.set_xlabel("PSNR (dB) → less distortion"), ax.set_ylabel(f"{label} (better perception is lower)")
        ax.grid(alpha=0.3)
    fig.suptitle(f"Perception–distortion plane ({split} table crops)", fontsize=10)
    return save_figure(fig, out_path, caption)


def plane_with_intervals(groups: dict, out_path, *, metrics=(("lpips", "LPIPS"),), connect=(), fronts=None,
                         mark=None, caption=None, title=None):
    """PSNR (x, right is less distortion) against each metric of ``metrics`` (y, lower is better), one panel each.

    ``groups`` maps a legend label to summary rows (``method``, each metric and its ``_lo``/``_hi`` interval,
    optional ``tag`` to write beside the point); the groups named in ``connect`` are joined in their order, and
    left out of a panel whose metric some of their points lack;
    ``fronts`` maps a metric to the methods of its non-dominated set (drawn as a dashed line); the method
    ``mark`` gets a star.
    """
    import numpy as np

    fig = new_figure(4.3 * len(metrics), 3.9)
    axs = np.atleast_1d(fig.subplots(1, len(metrics)))
    every = {r["method"]: r for rows in groups.values() for r in rows}
    for ax, (key, label) in zip(axs, metrics):
        for name, rows in groups.items():
            finite = [r for r in rows if np.isfinite(r["psnr"]) and np.isfinite(r[key])]
            if not finite or (name in connect and len(finite) < len(rows)):
                continue        # a connected group with a metric not computed for all its points: a false line
            rows = finite
            x = np.array([r["psnr"] for r in rows])
            y = np.array([r[key] for r in rows])
            xerr = np.array([[r["psnr"] - r["psnr_lo"] for r in rows], [r["psnr_hi"] - r["psnr"] for r in rows]])
            yerr = np.array([[r[key] - r[f"{key}_lo"] for r in rows], [r[f"{key}_hi"] - r[key] for r in rows]])
            ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o-" if name in connect else "s", ms=4, lw=0.8,
                        elinewidth=0.7, capsize=2, label=name)
            for r in rows:
                ax.annotate(r.get("tag", r["method"]), (r["psnr"], r[key]), textcoords="offset points",
                            xytext=(4, 4), fontsize=7)
        front = [every[m] for m in (fronts or {}).get(key, []) if m in every]
        if len(front) > 1:
            ax.plot([r["psnr"] for r in front], [r[key] for r in front], "--", color="0.3", lw=1.2,
                    label="non-dominated", zorder=0)
        if mark in every and np.isfinite(every[mark][key]):
            ax.scatter([every[mark]["psnr"]], [every[mark][key]], marker="*", s=160, facecolors="none",
                       edgecolors="k", linewidths=1.0, label=f"{mark} (the write-up's λ)", zorder=5)
        ax.set_xlabel("PSNR (dB) → less distortion"), ax.set_ylabel(f"{label} (lower is better)")
        ax.grid(alpha=0.3)
    axs[0].legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, out_path, caption)
