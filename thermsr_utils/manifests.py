"""The manifest: both datasets built into crops and ``manifest.json`` (``build_dataset``), the splits checked
disjoint, a committed manifest compared, every crop verified against its sha256, and ``open_run``, every
notebook's first step.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import io
from .data import DATASETS, SPLITS
from .readers import TRAIN_FRAC, BuildResult, build_sftl54, build_thermeval, record_palette

SCHEMA_VERSION = 1
# The builders' parameters, in the manifest's order: notebook 01 gives the values of the first six (its palette,
# sftl54_max_*, crop_size, crop_pad, min_crop_side, thermeval_split_seed); the last two are the protocol's.
PARAMS = ("palette", "caps", "size", "pad", "min_crop_side", "keep_square", "seed", "train_frac")
PROTOCOL = {"keep_square": False, "train_frac": TRAIN_FRAC}
_SFTL54_KEYS = ("palette", "caps", "size", "pad", "min_crop_side", "keep_square")
_THERMEVAL_KEYS = ("seed", "train_frac", "size", "pad", "min_crop_side", "keep_square")
_STAGING = ".staging"


class ManifestMismatch(ValueError):
    """A freshly built manifest differs from the committed one; the message lists the records."""


class CropIntegrityError(ValueError):
    """Crops missing, unreadable or with pixels that differ from the manifest's sha256.

    The message names them (the first 20 of each kind); ``missing`` and ``changed`` hold every one.
    """

    def __init__(self, message: str, missing: list[str], changed: list[str]):
        super().__init__(message)
        self.missing = list(missing)
        self.changed = list(changed)


def sort_records(records: list[dict]) -> list[dict]:
    """Records in the manifest's stable order: split (train, val, test), then dataset, then id."""
    return sorted(records, key=lambda r: (SPLITS.index(r["split"]), r["dataset"], r["id"]))


def check_disjoint(records: list[dict]) -> None:
    """Raise ValueError naming every SF-TL54 subject or source image that occurs in more than one split."""
    where: dict[tuple, set] = {}
    for r in records:
        where.setdefault(("source image", r["dataset"], r["source"]), set()).add(r["split"])
        if r.get("subject") is not None:
            where.setdefault(("subject", r["dataset"], r["subject"]), set()).add(r["split"])
    clashes = [f"{kind} {key!r} of {ds} is in splits {sorted(s, key=SPLITS.index)}"
               for (kind, ds, key), s in where.items() if len(s) > 1]
    if clashes:
        raise ValueError("splits are not disjoint: " + "; ".join(sorted(clashes)))


def _check_unique_ids(records: list[dict]) -> None:
    """Raise ValueError naming the record ids that occur more than once."""
    seen, dup = set(), set()
    for r in records:
        (dup if r["id"] in seen else seen).add(r["id"])
    if dup:
        raise ValueError(f"duplicate crop ids: {sorted(dup)[:20]}")


class ManifestDiff(NamedTuple):
    """One difference between two record lists: ``kind`` is "added", "removed" or "changed"; ``fields`` names
    the changed fields (empty for added and removed ids). ``str()`` is the sentence a message shows."""
    kind: str
    id: str
    fields: tuple[str, ...] = ()

    def __str__(self):
        return f"{self.kind}: {self.id}" + (f" ({', '.join(self.fields)})" if self.fields else "")


def _with_palette(record: dict) -> dict:
    """``record`` with its ``palette`` filled in: a record written before the field existed reads as gray."""
    return record if "palette" in record else {**record, "palette": record_palette(record)}


def compare_manifests(new_records: list[dict], committed_records: list[dict]) -> list[ManifestDiff]:
    """Differences between two record lists: added, removed, then changed ids (with their fields). A record
    without ``palette`` (a manifest committed before the field existed) compares as gray."""
    new = {r["id"]: _with_palette(r) for r in new_records}
    old = {r["id"]: _with_palette(r) for r in committed_records}
    diffs = [ManifestDiff("added", i) for i in sorted(set(new) - set(old))]
    diffs += [ManifestDiff("removed", i) for i in sorted(set(old) - set(new))]
    for i in sorted(set(new) & set(old)):
        fields = tuple(sorted(k for k in set(new[i]) | set(old[i]) if new[i].get(k) != old[i].get(k)))
        if fields:
            diffs.append(ManifestDiff("changed", i, fields))
    return diffs


def load_manifest(path) -> dict:
    """Read a manifest (or committed manifest) JSON; ValueError naming the file if it is not one. Records
    written before the ``palette`` field existed get ``palette: "gray"`` (what they were built from)."""
    m = io.read_json(path)
    if not isinstance(m, dict) or m.get("schema_version") != SCHEMA_VERSION or not isinstance(m.get("records"), list):
        raise ValueError(f"{path}: not a schema_version {SCHEMA_VERSION} manifest with a 'records' list")
    m["records"] = [_with_palette(r) if isinstance(r, dict) else r for r in m["records"]]
    return m


def read_verified_crops(crops_dir, records: list[dict]) -> list[np.ndarray]:
    """The crops of ``records`` as ``io.read_image`` returns them (uint8 BGR H×W×3), each checked against
    its manifest sha256. Raises CropIntegrityError naming every missing, unreadable or changed crop (all
    files are checked before it is raised)."""
    crops_dir = Path(crops_dir)
    images, missing, bad = [], [], []
    for r in records:
        p = crops_dir / r["path"]
        if not p.is_file():
            missing.append(r["path"])
            continue
        try:
            img = io.read_image(p)
        except io.ImageReadError:
            bad.append(r["path"])
            continue
        if io.pixel_sha256(img) != r["sha256"]:
            bad.append(r["path"])
            continue
        images.append(img)
    if missing or bad:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing: {_head(missing)}")
        if bad:
            parts.append(f"{len(bad)} unreadable or with different pixels: {_head(bad)}")
        raise CropIntegrityError(f"crops in {crops_dir} do not match the manifest; " + "; ".join(parts)
                                 + ". Rebuild them with notebook 01 (or restore the files).", missing, bad)
    return images


def verify_crops(crops_dir, records: list[dict]) -> int:
    """Check every record's crop file exists and its pixel sha256 matches; raise CropIntegrityError naming
    the missing, unreadable and changed files. Returns the number of crops verified."""
    read_verified_crops(crops_dir, records)
    return len(records)


def open_run(profile: str, seed: int, device: str = "auto", *, sweep_point: str = ""):
    """Every notebook's first step: ``(paths, device, records)`` — the run's folders made and everything seeded
    (``config.setup``), the device resolved, and the manifest's records with every crop verified."""
    from .config import resolve_device, setup

    paths = setup(profile, seed, sweep_point=sweep_point)
    return paths, resolve_device(device), load_verified_manifest(paths)["records"]


def load_verified_manifest(paths) -> dict:
    """The run's manifest (``paths.manifest``) after checking every crop under ``paths.crops`` against it.

    ``paths`` is a ``config.RunPaths``. Notebooks 02-06 load the manifest through this, so a crop that
    went missing or changed since notebook 01 stops the run with its name before anything uses it.
    """
    if not Path(paths.manifest).is_file():
        raise FileNotFoundError(f"no manifest at {paths.manifest}: run notebook 01_build_dataset for profile "
                                f"{paths.profile!r} first")
    manifest = load_manifest(paths.manifest)
    verify_crops(paths.crops, manifest["records"])
    return manifest


def _head(items: list, n: int = 20) -> str:
    """The first ``n`` items joined by commas, plus how many more there are."""
    more = f" ... and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(map(str, items[:n])) + more


def _summary(records: list[dict], results: list[BuildResult]) -> dict:
    """Counts per split x dataset, upscaled counts, per-dataset extras and skips (reason -> files)."""
    counts = {s: {d: 0 for d in DATASETS} for s in SPLITS}
    for r in records:
        counts[r["split"]][r["dataset"]] += 1
    for s in SPLITS:
        counts[s]["total"] = sum(counts[s][d] for d in DATASETS)
    palettes = {s: {} for s in SPLITS}
    for r in records:
        pal = palettes[r["split"]]
        pal[record_palette(r)] = pal.get(record_palette(r), 0) + 1
    return {
        "counts": counts,
        "palettes": {s: dict(sorted(c.items())) for s, c in palettes.items()},
        "total": len(records),
        "upscaled": {res.dataset: res.info.get("upscaled", 0) for res in results},
        "available_before_cap": {res.dataset: res.info["available"] for res in results if "available" in res.info},
        "source_images": {res.dataset: res.info["images"] for res in results if "images" in res.info},
        "skipped": {res.dataset: {reason: {"count": len(files), "files": sorted(files)}
                                  for reason, files in sorted(res.skipped.items())} for res in results},
    }


def summary_table(manifest: dict, max_names: int = 20) -> str:
    """Printable counts per split x dataset, upscaled counts, and every skip reason with its files."""
    s = manifest["summary"]
    lines = [f"{'split':<8}" + "".join(f"{d:>11}" for d in DATASETS) + f"{'total':>9}"]
    for split in SPLITS:
        c = s["counts"][split]
        lines.append(f"{split:<8}" + "".join(f"{c[d]:>11}" for d in DATASETS) + f"{c['total']:>9}")
    lines.append(f"{'all':<8}" + "".join(f"{sum(s['counts'][x][d] for x in SPLITS):>11}" for d in DATASETS)
                 + f"{s['total']:>9}")
    if "palettes" in s:
        lines.append("renderings: " + "; ".join(f"{split} " + ", ".join(f"{k} {v}" for k, v in s["palettes"][split].items())
                                                for split in SPLITS if s["palettes"].get(split)))
    for ds, n in s.get("upscaled", {}).items():
        lines.append(f"{ds}: {n} crops upscaled (crop smaller than the output size)")
    for ds, avail in s.get("available_before_cap", {}).items():
        lines.append(f"{ds}: valid crops before the caps: " + ", ".join(f"{k} {v}" for k, v in avail.items()))
    for ds, imgs in s.get("source_images", {}).items():
        lines.append(f"{ds}: source images per split: " + ", ".join(f"{k} {v}" for k, v in imgs.items()))
    skipped = s.get("skipped", {})
    if not any(skipped.values()):
        lines.append("skipped: none")
    for ds, reasons in skipped.items():
        for reason, info in reasons.items():
            lines.append(f"skipped {ds} / {reason}: {info['count']}")
            lines.extend(f"    {name}" for name in info["files"][:max_names])
            if info["count"] > max_names:
                lines.append(f"    ... and {info['count'] - max_names} more (see manifest.json summary)")
    return "\n".join(lines)


def _resolve_params(params: dict) -> dict:
    """The builder parameters with the protocol's filled in; TypeError naming any unknown or missing key."""
    unknown = sorted(set(params) - set(PARAMS))
    if unknown:
        raise TypeError(f"unknown build parameter(s) {unknown}; known: {sorted(PARAMS)}")
    given = {**PROTOCOL, **params}
    missing = [k for k in PARAMS if k not in given]
    if missing:
        raise TypeError(f"build_dataset needs {', '.join(missing)} (notebook 01 passes its parameters)")
    return {k: given[k] for k in PARAMS}


def _is_within(a: Path, b: Path) -> bool:
    """True if path ``a`` is ``b`` or lies inside it (both resolved)."""
    a, b = a.resolve(), b.resolve()
    return a == b or b in a.parents


def _clear_stale(crops_dir: Path, records: list[dict]) -> list[str]:
    """Delete PNGs under crops_dir/<split>/<dataset>/ that no record names; return their relative paths."""
    keep = {r["path"] for r in records}
    removed = []
    for split in SPLITS:
        for ds in DATASETS:
            folder = crops_dir / split / ds
            if not folder.is_dir():
                continue
            for p in sorted(folder.glob("*.png")):
                rel = p.relative_to(crops_dir).as_posix()
                if p.is_file() and rel not in keep:
                    p.unlink()
                    removed.append(rel)
    return removed


# The largest fraction of synthetic crops that may differ from the committed manifest in pixels alone (see
# build_dataset's pixel_drift_ok): float rounding differs between CPUs; a code change moves far more crops.
SYNTHETIC_PIXEL_DRIFT_OK = 0.25


def pixel_drift(diffs: list[ManifestDiff]) -> list[str]:
    """The ids among ``compare_manifests`` differences that changed in their pixel hash alone."""
    return [d.id for d in diffs if d.kind == "changed" and d.fields == ("sha256",)]


def build_dataset(crops_dir, *, sftl54_root, thermeval_root, committed_manifest=None,
                  update_committed: bool = False, pixel_drift_ok: float = 0.0, **params) -> dict:
    """Build both datasets' crops and ``crops_dir/manifest.json``; return the manifest.

    ``params``: the builders' values (``PARAMS``; ``PROTOCOL`` fills keep_square and train_frac). A root of None leaves that dataset out. Crops are written to a staging folder
    first; only when both builds succeed, the splits are disjoint (``check_disjoint``), the ids are
    unique and the committed manifest (if given) agrees, are they moved into place; then PNGs of an
    earlier run that the new manifest does not name are deleted, and the manifest is written last,
    atomically. ``committed_manifest``: a path to a records-only manifest kept in the repository.
    If it exists and the new records differ, ManifestMismatch is raised (nothing in ``crops_dir``
    changes) unless ``update_committed`` is True, which rewrites it; if it does not exist it is
    written. ``pixel_drift_ok``: the largest fraction of crops that may differ from the committed manifest in
    their pixel hash alone (same ids, splits, boxes and noses) without stopping the build; such crops are
    listed in the manifest's ``committed_pixel_drift``. The synthetic generator computes in float32, and
    OpenCV and NumPy pick their SIMD code by CPU, so a few pixels of a few crops round differently on
    another CPU. No absolute path is written anywhere.
    """
    crops_dir = Path(crops_dir)
    p = _resolve_params(params)
    roots = {"sftl54": sftl54_root, "thermeval": thermeval_root}
    if all(r is None for r in roots.values()):
        raise ValueError("nothing to build: both sftl54_root and thermeval_root are None")
    for name, r in roots.items():
        if r is not None and Path(r).exists() and (_is_within(crops_dir, Path(r)) or _is_within(Path(r), crops_dir)):
            raise ValueError(f"crops_dir {crops_dir} and the {name} root {r} overlap; "
                             "crops must never be written inside a raw dataset")
    staging = crops_dir / _STAGING
    if staging.exists():
        shutil.rmtree(staging)
    try:
        results = []
        if sftl54_root is not None:
            results.append(build_sftl54(sftl54_root, staging, **{k: p[k] for k in _SFTL54_KEYS}))
        if thermeval_root is not None:
            results.append(build_thermeval(thermeval_root, staging, **{k: p[k] for k in _THERMEVAL_KEYS}))
        records = sort_records([r for res in results for r in res.records])
        check_disjoint(records)
        _check_unique_ids(records)
        committed = Path(committed_manifest) if committed_manifest is not None else None
        write_committed = committed is not None and (update_committed or not committed.exists())
        drift = []
        if committed is not None and committed.exists() and not update_committed:
            diffs = compare_manifests(records, load_manifest(committed)["records"])
            drift = pixel_drift(diffs)
            if len(drift) == len(diffs) and len(drift) <= pixel_drift_ok * len(records):
                diffs = []
            if diffs:
                raise ManifestMismatch(
                    f"the built records differ from the committed manifest {committed.name} in "
                    f"{len(diffs)} place(s): {_head(diffs)}. Pass update_committed=True to accept them.")
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "params": {**{k: (list(v) if isinstance(v, tuple) else v) for k, v in p.items()},
                       "datasets": [res.dataset for res in results]},
            "summary": _summary(records, results),
            "records": records,
        }
        if drift:
            manifest["committed_pixel_drift"] = drift
        manifest_path = crops_dir / "manifest.json"
        if manifest_path.exists():
            manifest_path.unlink()  # never leave an old manifest beside new crops
        for r in records:
            dest = crops_dir / r["path"]
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / r["path"], dest)
        manifest["summary"]["stale_removed"] = _clear_stale(crops_dir, records)
        io.atomic_write_json(manifest_path, manifest)
        if write_committed:
            io.atomic_write_json(committed, {"schema_version": SCHEMA_VERSION, "records": records})
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest
