"""The numbered notebooks the runner executes: found (``discover``, ``select``), their parameters resolved against
the profile and checked by the rules of ``params`` (``resolve_parameters``), one executed with papermill
(``execute``, its cells' output on the runner's console) and its wall time recorded in the run's provenance
(``record_time``). ``run`` runs them in order and in sweeps.
"""
from __future__ import annotations

import ast
import errno
from dataclasses import dataclass
from pathlib import Path

from . import config, timing
from .config import NOTEBOOK_RE, read_parameters
from .console import Console, cell_labels, kernel_manager_class
from .io import remove_leftovers
from .params import check_parameters


class ParameterError(ValueError):
    """A parameter override that no selected notebook declares, or with the wrong type."""


class NotebookFailed(RuntimeError):
    """A notebook cell raised; the message names the notebook, the cell and the error."""


@dataclass
class Notebook:
    name: str                      # e.g. "01_build_dataset"
    source: Path                   # the py:percent file
    parameters: dict               # name -> default value (literal) from the parameters cell

    @property
    def number(self) -> str:
        return self.name[:2]


def discover(notebooks_dir: Path | None = None) -> list[Notebook]:
    """All numbered notebooks, in order."""
    found = sorted(p for p in Path(notebooks_dir or config.NOTEBOOKS_DIR).glob("*.py") if NOTEBOOK_RE.match(p.name))
    return [Notebook(p.stem, p, read_parameters(p)) for p in found]


def find_notebook(notebooks: list[Notebook], text: str, flag: str = "--only") -> Notebook:
    """The notebook a person means by ``text``: its name ("03_v1_finetune"), its number with or without the leading
    zero ("03", "3"), or its name without the number ("v1_finetune"). ParameterError naming the notebooks otherwise."""
    text = str(text).strip()
    if text.endswith(".py") or text.endswith(".ipynb"):
        text = Path(text).stem
    for nb in notebooks:
        if text in (nb.name, nb.name[3:]) or (text.isdigit() and int(text) == int(nb.number)):
            return nb
    raise ParameterError(f"{flag} {text!r} names no notebook; give a number or a name of one of: "
                         f"{', '.join(nb.name for nb in notebooks)}")


def select(notebooks: list[Notebook], only: list[str] | None = None, start: str | None = None) -> list[Notebook]:
    """Notebooks named by ``only`` (each a name or a number, see ``find_notebook``), or from notebook ``start`` on."""
    chosen = notebooks
    if only:
        wanted = {find_notebook(notebooks, text).name for text in only}
        chosen = [nb for nb in notebooks if nb.name in wanted]
    if start:
        first = find_notebook(notebooks, start, "--from")
        chosen = [nb for nb in chosen if nb.number >= first.number]
    if not chosen:
        raise ParameterError(f"--only {' '.join(only or [])} and --from {start} together select no notebook; "
                             f"the notebooks are: {', '.join(nb.name for nb in notebooks)}")
    return chosen


def parse_value(text: str):
    """A command-line value as a Python literal when it is one, else as a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _type_ok(value, default) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if default is None:
        return True
    return isinstance(value, type(default))


def resolve_parameters(notebooks: list[Notebook], profile: str, overrides: dict) -> dict[str, dict]:
    """Per notebook, the values papermill injects: the profile's (its name and where it differs from the notebook's
    literals), then overrides, type-checked; the notebook's literals hold the rest."""
    declared: dict[str, object] = {}
    for nb in notebooks:
        declared.update(nb.parameters)
    for key, value in overrides.items():
        if key not in declared:
            raise ParameterError(f"parameter {key!r} is not declared by any selected notebook "
                                 f"({', '.join(nb.name for nb in notebooks)}); declared: {', '.join(sorted(declared))}")
        if not _type_ok(value, declared[key]):
            raise ParameterError(f"parameter {key!r} expects {type(declared[key]).__name__} "
                                 f"(like {declared[key]!r}), got {type(value).__name__} {value!r}")
    if "profile" in overrides:
        raise ParameterError("set the profile with --profile, not -p profile")
    base = config.profile_values(profile)
    resolved = {}
    for nb in notebooks:
        values = {k: v for k, v in base.items() if k in nb.parameters}
        values.update({k: v for k, v in overrides.items() if k in nb.parameters})
        for key, value in values.items():
            if not _type_ok(value, nb.parameters[key]):
                raise ParameterError(f"profile {profile!r} sets {key!r}={value!r}, but {nb.name} declares "
                                     f"{type(nb.parameters[key]).__name__}")
        try:  # the values the notebook will see: its own literals where nothing is injected
            checked = check_parameters({**nb.parameters, **values}, where=nb.name)
        except config.ParameterValueError as e:
            raise ParameterError(str(e)) from None
        resolved[nb.name] = {k: checked[k] for k in values}
    together = {k: v for nb in notebooks for k, v in {**nb.parameters, **resolved[nb.name]}.items()}
    try:  # rules between parameters of different notebooks (v1_patch of 03 against crop_size of 01)
        check_parameters(together, where="the selected notebooks")
    except config.ParameterValueError as e:
        raise ParameterError(str(e)) from None
    return resolved


def _to_ipynb(nb: Notebook, folder: Path) -> Path:
    """Write the notebook built from its py:percent source into ``folder`` (atomically)."""
    import jupytext

    from .io import atomic_write_text

    notebook = jupytext.read(nb.source)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    target = folder / f"{nb.name}.source.ipynb"
    atomic_write_text(target, jupytext.writes(notebook, fmt="ipynb"))
    return target


# Errors raised in a notebook whose message is the whole story (it names what to do): reported alone.
SELF_EXPLAINING_ERRORS = ("TrainingRunExists",)


def _how_to_resume(nb: Notebook, paths: config.RunPaths) -> str:
    """How to continue after ``nb`` stopped: the same command again, from ``nb`` on, resuming its training."""
    if paths.point:
        return "run the same command again (the sweep skips its finished points and resumes this one)"
    flags = f"--from {nb.number}" + (" -p resume True" if "resume" in nb.parameters else "")
    return (f"run the same command again with `{flags}` added"
            + (" (training continues from its last completed epoch)" if "resume" in nb.parameters else ""))


# ---- What a running notebook shows on the runner's console, and how its kernel is reached ----
def timings_file(paths: config.RunPaths, nb: Notebook) -> Path:
    """Where ``nb``'s kernel writes its phase times in the run ``paths`` (see ``timing``)."""
    return paths.root / "timings" / f"{nb.name}.json"


def record_time(main: config.RunPaths, key: str, seconds: float, phases: dict | None = None,
                section: str = "seconds") -> None:
    """Add one step's wall time and phase times to the main run's provenance: a notebook, the frontier sweeps as a
    whole or the report under "seconds" (they follow one another: their sum is the run's time), one sweep point's
    notebook under "points" (points may run side by side)."""
    timings = config.provenance(main).get("timings") or {"seconds": {}, "phases": {}}
    timings.setdefault(section, {})[key] = round(seconds, 1)
    timings.setdefault("phases", {})
    if phases:
        timings["phases"][key] = {k: round(v, 1) for k, v in phases.items()}
    timings["total_seconds"] = round(sum(timings["seconds"].values()), 1)
    config.record_provenance(main, timings=timings)


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")   # read by torch and NumPy when the kernel starts


def points_phases(main: config.RunPaths) -> dict[str, float]:
    """Each phase's seconds summed over the sweep points recorded in the main run's provenance (kernel time: points
    that ran side by side count in full)."""
    timings = config.provenance(main).get("timings") or {}
    out: dict[str, float] = {}
    for key in timings.get("points", {}):
        for name, value in timings.get("phases", {}).get(key, {}).items():
            out[name] = out.get(name, 0.0) + value
    return out


def execute(nb: Notebook, params: dict, paths: config.RunPaths, progress: bool = True, *, threads: int | None = None,
            tag: str = "") -> Path:
    """Execute one notebook with papermill into ``executed/<name>.ipynb``; raise NotebookFailed in one sentence
    when a cell raises, the kernel dies or the copy cannot be written. ``threads`` caps the kernel's compute threads
    (for notebooks run side by side); ``tag`` is added to its console prefix.

    papermill writes into a temp file beside the copy, renamed over it when the run ends (also when a cell
    failed or the kernel died: papermill saves the partly executed notebook whole first); when that write
    itself fails (a full disk), the temp file is removed and an earlier copy stays as it was.
    """
    import papermill as pm
    from nbclient.exceptions import DeadKernelError

    from .io import atomic_path

    out = paths.executed / f"{nb.name}.ipynb"
    failure = None
    phases_file = timings_file(paths, nb)
    phases_file.unlink(missing_ok=True)
    remove_leftovers(phases_file)                    # what a killed kernel was writing
    env = {timing.ENV: str(phases_file)}             # the kernel writes its phase times there
    if threads:
        env |= {name: str(threads) for name in THREAD_VARIABLES}
    try:
        paths.executed.mkdir(parents=True, exist_ok=True)
        for leftover in paths.executed.glob(f".{out.name}.*"):    # temp files of a runner that was killed
            leftover.unlink(missing_ok=True)
        src = _to_ipynb(nb, paths.executed / ".src")
        console = Console(f"{nb.name}{f' {tag}' if tag else ''}", cell_labels(src, bool(params)),
                          cell_lines=not progress and not tag)
        with atomic_path(out) as tmp, kernel_manager_class(env) as manager, console.attached():
            try:
                pm.execute_notebook(str(src), str(tmp), parameters=params, kernel_name="python3",
                                    progress_bar=progress, cwd=str(nb.source.parent), log_output=True,
                                    stdout_file=console.stdout, stderr_file=console.stderr,
                                    kernel_manager_class=manager)
            except (pm.PapermillExecutionError, DeadKernelError) as e:
                failure = e
    except OSError as e:
        reason = "no space left on device" if e.errno in (errno.ENOSPC, errno.EDQUOT) else (e.strerror or str(e))
        fix = "free some space" if e.errno in (errno.ENOSPC, errno.EDQUOT) else "fix the cause"
        raise NotebookFailed(f"{nb.name} stopped: {reason} while writing its executed copy {out} (an earlier copy "
                             f"there is left as it was); {fix}, then {_how_to_resume(nb, paths)}.") from None
    if isinstance(failure, DeadKernelError):
        raise NotebookFailed(f"{nb.name} stopped: its kernel was killed (most likely out of memory, or by a "
                             f"signal); the partly executed copy is {out}; {_how_to_resume(nb, paths)}.") from None
    if failure is not None and failure.ename in SELF_EXPLAINING_ERRORS:
        raise NotebookFailed(f"{nb.name}: {failure.evalue}") from None
    if failure is not None:
        raise NotebookFailed(f"{nb.name} failed in cell {failure.exec_count} ({failure.ename}: {failure.evalue}); "
                             f"partly executed copy: {out}") from None
    return out


# ---- Which executions are current (the runner's rerun record; publish shows only these) ----
CACHE_FILE = "cache.json"


def read_cache(paths: config.RunPaths) -> dict:
    """{notebook name: key of its last finished execution} of the run ``paths`` ({} when none); a notebook whose
    predecessor ran again since is not in it."""
    from .io import read_json

    try:
        data = read_json(paths.executed / CACHE_FILE)
    except (FileNotFoundError, ValueError, OSError):
        return {}
    return data if isinstance(data, dict) else {}


def write_cache(paths: config.RunPaths, record: dict) -> None:
    from .io import atomic_write_json

    paths.executed.mkdir(parents=True, exist_ok=True)
    atomic_write_json(paths.executed / CACHE_FILE, record)
