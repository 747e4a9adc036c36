"""A notebook's kernel and console while the runner executes it: the kernel listens on IPC sockets in a private
temporary folder (``kernel_manager_class``), and what its cells print reaches the runner's stderr as whole lines
prefixed with the notebook's name (``Console``, ``Relay``), with progress bars redrawn in place left out.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import sys
from pathlib import Path

from .progress import PROGRESS_ENV

_PAPERMILL_CHATTER = ("Input Notebook", "Output Notebook", "Working directory", "Executing notebook with kernel",
                      "Ending Cell")


def say(line: str) -> None:
    """One line on the runner's stderr, above papermill's cell bar (tqdm clears and redraws it)."""
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)
    sys.stderr.flush()


# what is left of a line after a carriage return, when it is a tqdm bar: "[elapsed<remaining" or "[elapsed, rate"
_BAR = re.compile(r"\[(?:\d+:)?\d\d:\d\d[<,\]]|\d+%\|")


class Relay:
    """A stream of a notebook's output (papermill's ``stdout_file``/``stderr_file``) as whole lines on the runner's
    stderr, each prefixed with ``[<notebook>] ``. A carriage return overwrites what came before it on the line, as
    on a terminal: progress bars redrawn in place leave only their last state, which is dropped too; so are blank
    lines."""

    def __init__(self, prefix: str):
        self.prefix, self._pending = prefix, ""

    def write(self, text: str) -> int:
        *lines, rest = (self._pending + text).replace("\r\n", "\n").split("\n")
        self._pending = rest[rest.rindex("\r"):] if "\r" in rest else rest   # a bar's last state at most
        for line in lines:
            self._emit(line)
        return len(text)

    def flush(self) -> None:        # papermill flushes after every message: lines are relayed when whole
        pass

    def end(self) -> None:
        """Relay what is left of an unterminated line (at the end of a cell)."""
        rest, self._pending = self._pending, ""
        self._emit(rest)

    def _emit(self, line: str) -> None:
        shown = line.rsplit("\r", 1)[-1].rstrip()
        if shown.strip() and not ("\r" in line and _BAR.search(shown)):
            say(self.prefix + shown)


class Console(logging.Handler):
    """Shows a running notebook on the runner's stderr: what its cells print (``Relay``) and papermill's own
    warnings, prefixed with the notebook's name, and, when ``cell_lines``, a line naming each code cell as it
    starts (``[05_v2_finetune] cell 10/18: result = train.fit(…``; without a bar the count would show nowhere).

    papermill relays cell output to its logger (``log_output=True``) and to ``stdout_file``/``stderr_file``;
    the logger also carries the cell markers. Outputs are taken from the files, which hold streams only: the
    logger's copies are dropped with its routine messages, and so are rich outputs' text (widgets, figures);
    its errors too, which the runner reports in a sentence of its own (``NotebookFailed``).
    """

    def __init__(self, name: str, labels: list, cell_lines: bool):
        import threading

        super().__init__(logging.INFO)
        self.prefix, self.labels, self.cell_lines = f"[{name}] ", labels, cell_lines
        self.stdout, self.stderr = Relay(self.prefix), Relay(self.prefix)
        self.thread = threading.get_ident()     # with notebooks run side by side, only this one's records

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self.thread:
            return
        try:
            msg = record.getMessage()
            cell = re.match(r"Executing Cell (\d+)", msg)
            if cell:
                self.end()
                n = int(cell.group(1))
                label = self.labels[n - 1] if 0 < n <= len(self.labels) else ""
                if self.cell_lines and label is not None:
                    say(f"{self.prefix}cell {n}/{len(self.labels)}" + (f": {label}" if label else ""))
            elif record.funcName == "log_output_message" or msg.startswith(_PAPERMILL_CHATTER):
                pass
            elif record.levelno == logging.WARNING:   # errors (a dead kernel…): the runner reports them itself
                say(f"{self.prefix}papermill: {msg}")
        except Exception:  # pragma: no cover - a console line must never stop a run
            self.handleError(record)

    def end(self) -> None:
        self.stdout.end()
        self.stderr.end()

    @contextlib.contextmanager
    def attached(self):
        """papermill's logger sends INFO and up to this handler alone while the notebook runs."""
        log = logging.getLogger("papermill")
        level, propagate = log.level, log.propagate
        log.setLevel(logging.INFO)
        log.propagate = False
        log.addHandler(self)
        try:
            yield self
        finally:
            self.end()
            log.removeHandler(self)
            log.setLevel(level)
            log.propagate = propagate


def cell_labels(src: Path, injected: bool) -> list:
    """Per cell of the notebook papermill runs (its parameters cell followed by the injected one when values are
    injected), the first line of code of a code cell, cut to 70 characters ('' when it has none), or None for a
    markdown cell."""
    import nbformat

    cells = nbformat.read(src, as_version=4).cells
    labels = []
    for cell in cells:
        if cell.cell_type != "code":
            labels.append(None)
            continue
        code = [ln.strip() for ln in cell.source.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        first = code[0] if code else ""
        labels.append(first if len(first) <= 70 else first[:69] + "…")
    if injected:
        tagged = [i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", [])]
        labels.insert(tagged[0] + 1 if tagged else 0, "the injected parameters")
    return labels


KERNEL_PREFIX = "thermsr-kernel-"     # + the runner's pid: a killed runner's folder is found by the next one


def remove_dead_kernel_folders(parent: Path) -> list[Path]:
    """Remove the kernel folders (sockets, connection file) of runners that were killed before removing them."""
    from .io import process_alive

    removed = []
    for p in parent.glob(f"{KERNEL_PREFIX}*"):
        m = re.match(rf"{KERNEL_PREFIX}(\d+)-", p.name)
        if p.is_dir() and m is not None and not process_alive(int(m.group(1))):   # without a pid: not ours to judge
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


@contextlib.contextmanager
def kernel_manager_class(env: dict | None = None):
    """A jupyter_client kernel manager class for papermill (``kernel_manager_class``) whose kernel listens on IPC
    sockets instead of TCP ports on localhost, and whose environment sets PROGRESS_ENV and the entries of ``env``
    (for this kernel alone: e.g. its thread count, or where it writes its phase times).

    Over TCP any local user can connect to the kernel's ports, and the kernel says so in a warning on every start
    ("Kernel is running over TCP without encryption"). Its IPC sockets and its connection file lie instead in a
    private temporary folder (mode 0700), removed when the notebook ends; nothing is written beside the notebooks
    (jupyter_client's default IPC path is relative to the working directory), even when the runner is killed.
    """
    import tempfile

    from jupyter_client.manager import AsyncKernelManager

    # a Unix socket's path holds at most 103 bytes (macOS): under a longer $TMPDIR the folder goes to /tmp
    parent = Path(tempfile.gettempdir() if len(tempfile.gettempdir()) <= 70 else "/tmp")
    remove_dead_kernel_folders(parent)
    folder = Path(tempfile.mkdtemp(prefix=f"{KERNEL_PREFIX}{os.getpid()}-", dir=parent))

    class IPCKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):
            super().__init__(**{**kwargs, "transport": "ipc", "ip": str(folder / "ipc"),
                                "connection_file": str(folder / "kernel.json")})

        async def start_kernel(self, **kwargs):
            kwargs["env"] = {**(kwargs.get("env") or os.environ), PROGRESS_ENV: "lines", **(env or {})}
            return await super().start_kernel(**kwargs)

    try:
        yield IPCKernelManager
    finally:
        shutil.rmtree(folder, ignore_errors=True)
