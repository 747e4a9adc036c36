"""Wall time per phase of a notebook (training, validation, SR inference, each metric, figures), for the runner.

A phase is timed with ``with timing.phase("score lpips"):``; the totals accumulate per process. When the runner
starts a notebook's kernel it sets ``THERMSR_TIMINGS`` to a file, and every phase's end rewrites that file with the
totals so far (temp file + rename), so the runner reads them when the notebook finishes, also after a failure.
Outside the runner nothing is written. Phases must not nest (the totals would count the inner one twice).
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

ENV = "THERMSR_TIMINGS"
_totals: dict[str, float] = {}


@contextlib.contextmanager
def phase(name: str):
    """Add the wall time of the block to phase ``name``."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        _totals[name] = _totals.get(name, 0.0) + time.perf_counter() - t0
        _write()


def totals() -> dict[str, float]:
    """The phase totals of this process so far, in seconds."""
    return dict(_totals)


def _write() -> None:
    target = os.environ.get(ENV)
    if not target:
        return
    path = Path(target)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-w")    # io.remove_leftovers' pattern: swept if killed
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({k: round(v, 3) for k, v in sorted(_totals.items())}))
        os.replace(tmp, path)
    except OSError:       # timings are a report, never a reason to stop a notebook
        with contextlib.suppress(OSError):
            tmp.unlink()


def read(path) -> dict[str, float]:
    """The phase totals a kernel wrote to ``path`` ({} when it wrote none or the file is unreadable)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): float(v) for k, v in data.items() if isinstance(v, (int, float))} if isinstance(data, dict) else {}
