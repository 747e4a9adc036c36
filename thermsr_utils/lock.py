"""One writer per artifacts folder: ``run_lock`` holds a profile's folder for the running process (flock and an
owner record in ``paths.lock``), refuses a second live run with ``RunLocked`` and takes over a stale lock.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import shlex
import socket
import sys

from . import config
from .io import process_alive


class RunLocked(RuntimeError):
    """Another live run holds the profile's artifacts folder; the message names it."""


def _pid_start(pid: int) -> str | None:
    """The kernel's start time of process ``pid`` (Linux /proc), to tell a reused pid apart; None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return None


def read_lock(path) -> dict | None:
    """The owner record of a lock file (pid, host, started, command); None if absent or unreadable."""
    from .io import read_json

    try:
        owner = read_json(path)
    except (FileNotFoundError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def _describe(owner: dict | None) -> str:
    """A lock owner in words."""
    if not owner:
        return "an unknown process (unreadable lock file)"
    return (f"pid {owner.get('pid')} on {owner.get('host')}, started {owner.get('started')}, "
            f"command: {owner.get('command')}")


def _owner_is_running(owner: dict | None) -> bool:
    """True when the lock's owner may still be running: another host, or a live pid that was not reused."""
    if not owner:
        return False
    if owner.get("host") != socket.gethostname():
        return True  # cannot be checked from here
    pid = owner.get("pid")
    if pid == os.getpid() or not process_alive(pid):
        return False
    recorded = owner.get("pid_start")
    return recorded is None or recorded == _pid_start(pid)


@contextlib.contextmanager
def run_lock(paths: config.RunPaths, command: str | None = None):
    """Hold the artifacts folder of ``paths`` for this process; raise RunLocked naming a live holder.

    The folder itself is flock-ed (released by the kernel even when the holder is killed) and
    ``paths.lock`` records the owner. A lock left by a process that no longer runs on this host is
    taken over with a message on stderr. The lock file is removed on exit.
    """
    from .io import atomic_write_json

    paths.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(paths.root, os.O_RDONLY)
    try:
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # pragma: no cover - no flock on this platform: the pid check below remains
            pass
        except BlockingIOError:
            raise RunLocked(f"another run is writing {paths.root}: {_describe(read_lock(paths.lock))}. "
                            "Wait for it to finish or stop it first.") from None
        if paths.lock.exists():
            owner = read_lock(paths.lock)
            if _owner_is_running(owner):
                raise RunLocked(f"another run is writing {paths.root}: {_describe(owner)}. Wait for it to "
                                f"finish or stop it; if it is certainly not running, delete {paths.lock}.")
            print(f"note: taking over the stale lock {paths.lock} of {_describe(owner)}, which is no longer "
                  "running; its outputs may be incomplete and are rewritten by this run", file=sys.stderr)
        me = {"pid": os.getpid(), "pid_start": _pid_start(os.getpid()), "host": socket.gethostname(),
              "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
              "command": command or shlex.join(sys.argv)}
        atomic_write_json(paths.lock, me)
        try:
            yield me
        finally:
            if (read_lock(paths.lock) or {}).get("pid") == me["pid"]:
                paths.lock.unlink(missing_ok=True)
    finally:
        os.close(fd)  # releases the flock
