"""Progress for long loops where output is relayed line by line.

The runner (``python -m thermsr_utils.run``) sets THERMSR_PROGRESS=lines in the kernels it starts and relays what
they print to its console. There a bar redrawn with \\r (or a widget) shows nothing, so ``train.fit`` and
``evaluate.evaluate_methods`` print a plain line every PROGRESS_EVERY_S seconds instead.
"""
from __future__ import annotations

import os
import sys
import time

PROGRESS_ENV = "THERMSR_PROGRESS"
PROGRESS_EVERY_S = 30.0


def plain_progress() -> bool:
    """True where progress is shown as plain lines rather than bars (THERMSR_PROGRESS=lines)."""
    return os.environ.get(PROGRESS_ENV) == "lines"


class LineProgress:
    """A plain progress line on stderr at most every ``every`` seconds: ``<label>: <done>/<total> <unit><extra>``."""

    def __init__(self, label: str, total: int, unit: str, every: float = PROGRESS_EVERY_S):
        self.label, self.total, self.unit, self.every = label, total, unit, every
        self._last = time.monotonic()

    def update(self, done: int, extra: str = "") -> None:
        now = time.monotonic()
        if now - self._last >= self.every and done < self.total:
            self._last = now
            print(f"{self.label}: {done}/{self.total} {self.unit}{extra}", file=sys.stderr, flush=True)
