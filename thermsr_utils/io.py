"""Small, safe file helpers: atomic writes, image and torch-file reading with clear errors, hashes, Markdown tables.

Every file the pipeline writes goes through ``atomic_write_*``: it is written to a temporary name in
the same folder and renamed into place, so a killed process leaves either the old file or the new one.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

import numpy as np


_UMASK = os.umask(0)
os.umask(_UMASK)


class ImageReadError(ValueError):
    """An image file that cannot be decoded; the message names the file."""


# ---------------------------------------------------------------------------------------------
# Temporary siblings: named after their target and the writing process, removed by the next writer once that
# process is gone (a writer killed by SIGKILL cannot remove its own)
# ---------------------------------------------------------------------------------------------
def temp_prefix(target: str | os.PathLike, kind: str = "tmp") -> str:
    """The name prefix of a temporary sibling of ``target`` made by this process: ``.<name>.<kind>-<pid>-``."""
    return f".{Path(target).name}.{kind}-{os.getpid()}-"


def process_alive(pid: int) -> bool:
    """True if a process with ``pid`` exists on this host (signal 0 probes without sending anything; a process of
    another user counts)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:      # another user's live process
        return True
    return True


def remove_leftovers(target: str | os.PathLike, say=True) -> list[Path]:
    """Remove the temporary siblings of ``target`` (``.<name>.tmp-…`` / ``.<name>.old-…``) whose writing process
    is gone, saying so on stderr; return what was removed. Siblings of a live process are left alone."""
    target = Path(target)
    if not target.parent.is_dir():
        return []
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(?:tmp|old)-(?:(\d+)-)?")
    removed = []
    for p in target.parent.iterdir():
        m = pattern.match(p.name)
        if not m or (m.group(1) and process_alive(int(m.group(1)))):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        removed.append(p)
        if say:
            print(f"removed {p}, left by an interrupted run", file=sys.stderr, flush=True)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None):
    """Yield a temporary path beside ``path``; on success rename it over ``path``. Temporary files of ``path``
    that killed writers left are removed first (``remove_leftovers``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=suffix or path.suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the permissions open() would
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_dir(out_dir: str | os.PathLike, write) -> Path:
    """Call ``write(tmp)`` on a temporary folder beside ``out_dir`` and rename it over ``out_dir`` (after removing
    the temporary folders of ``out_dir`` that killed writers left)."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(out_dir)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(out_dir), dir=out_dir.parent))
    try:
        write(tmp)
        old = None
        if out_dir.exists():
            old = out_dir.parent / f"{temp_prefix(out_dir, 'old')}{uuid.uuid4().hex[:8]}"
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def atomic_write_bytes(path: str | os.PathLike, data) -> None:
    """Write ``data`` (bytes or any contiguous buffer, such as an encoded image array) to ``path`` atomically
    (fsynced before the rename)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def markdown_table(header, rows, caption: str | None = None) -> str:
    """A Markdown table: ``header`` labels, ``rows`` of cells (as ``str`` gives them), ``caption`` in italics under it."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines + ([] if caption is None else ["", f"*{caption}*", ""]))


def atomic_write_csv_and_md(rows: list[dict], stem, markdown: str) -> tuple[Path, Path]:
    """Write ``stem``.csv (every field of every row, in first-seen order) and ``stem``.md, atomically."""
    import csv
    import io as _io

    stem = Path(stem)
    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(stem.with_suffix(".csv"), buf.getvalue())
    atomic_write_text(stem.with_suffix(".md"), markdown)
    return stem.with_suffix(".csv"), stem.with_suffix(".md")


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as indented, key-sorted JSON, atomically."""
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: str | os.PathLike):
    """Parse a JSON file; a parse error names the file and the position."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"JSON file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot parse JSON file {path}: {e}") from None


def read_image(path: str | os.PathLike, flags: int | None = None) -> np.ndarray:
    """Read an image with OpenCV (BGR or gray uint8 by default); raise ImageReadError naming it.

    Reads the bytes ourselves (read-only) and decodes them, so a truncated or corrupt file gives a
    clear error instead of OpenCV's silent ``None``.
    """
    import cv2

    path = Path(path)
    if flags is None:
        flags = cv2.IMREAD_UNCHANGED
    try:
        with open(path, "rb") as f:
            buf = np.frombuffer(f.read(), dtype=np.uint8)
    except FileNotFoundError:
        raise ImageReadError(f"image not found: {path}") from None
    except OSError as e:
        raise ImageReadError(f"cannot read image {path}: {e}") from None
    if buf.size == 0:
        raise ImageReadError(f"empty image file: {path}")
    img = cv2.imdecode(buf, flags)
    if img is None or img.size == 0:
        raise ImageReadError(f"cannot decode image (corrupt, truncated or not an image): {path}")
    if _png_truncated(path, buf):
        raise ImageReadError(f"truncated PNG (no IEND chunk): {path}")
    return img


def _png_truncated(path: Path, buf: np.ndarray) -> bool:
    """OpenCV decodes some truncated PNGs without complaint; check the IEND trailer ourselves."""
    if path.suffix.lower() != ".png" or buf[:8].tobytes() != b"\x89PNG\r\n\x1a\n":
        return False
    return b"IEND" not in buf[-16:].tobytes()


def write_png(path: str | os.PathLike, img: np.ndarray) -> None:
    """Encode ``img`` (uint8 gray or BGR) as PNG and write it atomically."""
    import cv2

    ok, enc = cv2.imencode(".png", img)
    if not ok:
        raise ValueError(f"cannot encode image for {path}")
    atomic_write_bytes(path, enc)   # the encoded buffer itself: no copy of a possibly large PNG


def pixel_sha256(img: np.ndarray) -> str:
    """sha256 of an image's decoded pixels (shape and dtype included), independent of PNG encoding."""
    h = hashlib.sha256()
    h.update(f"{img.dtype.str}:{'x'.join(map(str, img.shape))}:".encode())
    h.update(np.ascontiguousarray(img).tobytes())
    return h.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 hex digest of a file's bytes, read 1 MiB at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class UnsafeCheckpointError(ValueError):
    """A torch file that ``torch.load(weights_only=True)`` refuses, or that is not a plain tensor state dict."""


def load_torch(path, what: str = "weights file", *, state_dict: bool = False):
    """The package's one reader of torch files: ``torch.load(weights_only=True)`` onto the CPU, so no file can run
    code. Errors name ``what`` and the file: FileNotFoundError, UnsafeCheckpointError (objects that only a
    code-running unpickler reads; with ``state_dict``, anything but a mapping of names to tensors), ValueError (a
    truncated file or not a torch file at all)."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        detail = [ln.strip() for ln in str(e).splitlines() if "GLOBAL" in ln or "Unsupported" in ln]
        raise UnsafeCheckpointError(
            f"refusing to load {what} {path}: it holds objects other than tensors and plain containers, which only "
            "an unpickler that can run code could read; re-save it as a plain state dict"
            + (f" ({detail[0]})" if detail else "")) from None
    except Exception as e:  # noqa: BLE001 - re-raised with the file name
        raise ValueError(f"cannot read {what} {path}: {type(e).__name__}: {e}") from None
    if state_dict and not (isinstance(obj, dict) and all(isinstance(k, str) and torch.is_tensor(v)
                                                          for k, v in obj.items())):
        raise UnsafeCheckpointError(f"{path} is not a state dict (a mapping of names to tensors)")
    return obj
