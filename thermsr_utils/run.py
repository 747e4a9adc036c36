"""Run the numbered notebooks headlessly with papermill, in order, for one profile.

    python -m thermsr_utils.run --profile smoke
    python -m thermsr_utils.run --profile demo --only 01_build_dataset 02_zero_shot_baselines
    python -m thermsr_utils.run --profile demo --from 03 -p v1_epochs 5

The py:percent file ``notebooks/NN_name.py`` is the source that runs (its .ipynb pair is for Jupyter and is
kept identical by jupytext; a test checks the pairs). Executed copies land in
``artifacts/<profile>/executed/``. Parameters are checked against each notebook's ``parameters`` cell
before any notebook starts: an unknown name, a value of the wrong type or a value outside its rule in
``params.PARAMETER_RULES`` stops the run with a message. One run at a time may write a profile's artifacts
folder: ``artifacts/<profile>/.lock`` names the running one, and a second run is refused. SIGINT or SIGTERM
stops the run cleanly: the kernel is shut down and the lock released.

While a notebook runs, what its cells print appears on stderr, each line prefixed with the notebook's name
(``[03_v1_finetune] epoch   3/6  loss 0.0213  val[model] all: psnr 31.2 …``): training prints a line every
epoch and, under the runner, a line every half minute within an epoch and an evaluation; progress bars redrawn
in place are left out. Above it papermill's bar counts the cells (with ``--no-progress`` a line names each code
cell instead). Kernels are reached over IPC sockets in a private temporary folder, not over TCP.

Sweeps run the selected notebooks once per value (``--sweep NAME V1 V2 …``, repeatable for a grid):

    python -m thermsr_utils.run --profile demo --only 05 --sweep lpips_weight 0 0.1 1 -p v2_epochs 2

Each point is a run of its own under ``artifacts/<profile>/sweeps/<name>=<value>,…/`` (named after the values
that differ from the profile's defaults), which reuses the main run's crops and models and starts from a copy
of its results and checkpoints (hard links; training state excluded). Every point's values are checked before
anything runs; a finished point is skipped, an interrupted one resumes (``resume=True``); executed notebooks are
kept per point. Notebook 07 declares the frontier sweeps (``frontier_*`` parameters): when it is selected, the
runner executes them before it and writes down which run holds each model (``frontier_plan.json``); sweep points run
``--jobs`` at a time (two on a CPU-only machine, each kernel with one thread).

A notebook is executed again only when its source, its parameters, the package's code or a notebook before it
changed since its last finished execution (``executed/cache.json``; ``--force`` executes it anyway); a clean
checkout executes everything. The wall time of every notebook and of the phases inside it (training, validation,
SR inference, each metric, figures; ``timing``) goes into the run's provenance, and ``--publish`` shows it.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import datetime
import errno
import itertools
import os
import shlex
import shutil
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import config, report, timing
from .console import Console, cell_labels, kernel_manager_class
from .io import process_alive, remove_leftovers
from .config import NOTEBOOK_RE, read_parameters
from .params import check_parameters



class ParameterError(ValueError):
    """A parameter override that no selected notebook declares, or with the wrong type."""


class NotebookFailed(RuntimeError):
    """A notebook cell raised; the message names the notebook, the cell and the error."""


class RunLocked(RuntimeError):
    """Another live run holds the profile's artifacts folder; the message names it."""


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


# ---------------------------------------------------------------------------------------------
# Sweeps
# ---------------------------------------------------------------------------------------------
POINT_RECORD = "point.json"        # in a point's folder: its values and the notebooks finished there
_RECORD_LOCK = threading.Lock()     # points run side by side write the main run's provenance one at a time
FRONTIER_TRAINERS = {"v1": "03_v1_finetune", "v2": "05_v2_finetune"}
_RUN_CONTROL = ("resume", "fresh_start")    # how a training run starts, not what it computes: not in a point's name
_NOT_SWEPT = ("profile", "sweep_point", *_RUN_CONTROL)


@dataclass
class Point:
    """One point of a sweep: the notebooks to run there and the values papermill injects into each."""

    name: str                       # folder name under sweeps/ ('' = the main run itself)
    values: dict                    # the parameter values that differ from the profile's defaults
    notebooks: list                 # Notebook objects, in order
    params: dict = field(default_factory=dict)   # notebook name -> injected values


def _typed(value, default):
    """A swept value in the type of the notebook's literal (an int given for a float parameter becomes one)."""
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def sweep_points(notebooks: list[Notebook], profile: str, grid: dict[str, list], overrides: dict | None = None
                 ) -> list[Point]:
    """Every point of ``grid`` (name -> values; several names make a grid) for ``notebooks``, each checked by
    the same rules as ``-p``, all before anything runs. Points with the same values are one point."""
    overrides = dict(overrides or {})
    if not grid:
        raise ParameterError("a sweep needs at least one --sweep NAME VALUE …")
    if any(nb.number == "01" for nb in notebooks):
        raise ParameterError("a sweep reuses the main run's crops, so it cannot run 01_build_dataset; select the "
                             "notebooks to repeat with --only (e.g. --only 05) or --from")
    if any("frontier_lambdas" in nb.parameters for nb in notebooks):
        raise ParameterError("notebook 07 reads sweeps and runs its own before it; run it without --sweep")
    declared: dict[str, object] = {}
    for nb in notebooks:
        declared.update(nb.parameters)
    for name, values in grid.items():
        if name in _NOT_SWEPT:
            raise ParameterError(f"{name!r} cannot be swept")
        if name in overrides:
            raise ParameterError(f"parameter {name!r} is given both with -p and with --sweep; choose one")
        if not values:
            raise ParameterError(f"--sweep {name} needs at least one value")
        if name in declared and isinstance(declared[name], (list, dict)):
            raise ParameterError(f"{name!r} is a list parameter; sweep a number, a flag or a name")
    points: dict[str, Point] = {}
    for combo in itertools.product(*grid.values()):
        chosen = {**overrides, **{k: _typed(v, declared.get(k)) for k, v in zip(grid, combo)}}
        resolved = resolve_parameters(notebooks, profile, chosen)   # unknown names, types and rules
        named = {k: v for k, v in chosen.items() if k not in _RUN_CONTROL}
        try:
            name = config.point_name(profile, named, declared)
        except config.ParameterValueError as e:
            raise ParameterError(str(e)) from None
        values = config.point_values(profile, named, declared)
        if name not in points:
            for nb in notebooks:
                resolved[nb.name] = {**resolved[nb.name], **({"sweep_point": name} if "sweep_point" in nb.parameters
                                                             else {})}
                if "resume" in nb.parameters and name:
                    resolved[nb.name]["resume"] = True      # an interrupted point continues where it stopped
            points[name] = Point(name, values, list(notebooks), resolved)
    return list(points.values())


def _link_or_copy(src: str, dst: str) -> None:
    """Hard-link ``src`` to ``dst`` (every writer here replaces files by rename, so the main run's copy is never
    changed through the link); copy where links are not possible."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def prepare_point(paths: config.RunPaths) -> None:
    """Create a sweep point's folder as a copy of the main run's results and checkpoints (training states
    excluded, so that nothing resumes from the main run) and provenance; assembled beside it, then renamed."""
    if paths.root.exists():
        return
    main = config.RunPaths(paths.profile, paths.main_root)
    if not main.manifest.is_file():
        raise FileNotFoundError(f"sweep point {paths.point!r} reuses the main run's crops, but {main.manifest} does "
                                f"not exist: run `python -m thermsr_utils.run --profile {paths.profile}` first")
    from . import checkpoint
    from .io import atomic_dir

    def fill_point(tmp: Path) -> None:
        for sub in ("results", "checkpoints"):
            if (main.root / sub).is_dir():
                shutil.copytree(main.root / sub, tmp / sub, copy_function=_link_or_copy,
                                ignore=shutil.ignore_patterns(checkpoint.STATE_FILE, ".*", "*.old-*"))
        if (main.root / "provenance.json").is_file():
            shutil.copy2(main.root / "provenance.json", tmp / "provenance.json")

    atomic_dir(paths.root, fill_point)


def _point_record(paths: config.RunPaths) -> dict:
    from .io import read_json

    try:
        record = read_json(paths.root / POINT_RECORD)
    except (FileNotFoundError, ValueError):
        return {"finished": {}}
    return record if isinstance(record.get("finished"), dict) else {"finished": {}}


def point_finished(paths: config.RunPaths, nb_name: str, params: dict) -> bool:
    """True when ``nb_name`` completed in this point with exactly these injected values."""
    done = _point_record(paths)["finished"].get(nb_name)
    return done is not None and done.get("params") == _plain(params)


def _plain(params: dict) -> dict:
    """Injected values as JSON would store them (tuples as lists), for comparing with the record."""
    import json

    return json.loads(json.dumps(params, default=str))


def _mark_finished(paths: config.RunPaths, point: Point, nb_name: str, stamp: dict | None = None) -> None:
    from .io import atomic_write_json

    record = _point_record(paths)
    record["values"] = point.values
    record["finished"][nb_name] = {"params": _plain({**point.params[nb_name], **(stamp or {})}),
                                   "at": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    atomic_write_json(paths.root / POINT_RECORD, record)


def run_points(points: list[Point], profile: str, progress: bool = True, label: str = "sweep", upstream: str = "",
               force: bool = False, jobs: int = 1) -> list[Path]:
    """Execute every point (the caller holds the profile's lock); notebooks a point finished with the same values,
    the same package code and the same main run (``upstream``: the main run's cache key it started from) are
    skipped unless ``force``. With ``jobs`` > 1 that many points run side by side, each kernel with its share of
    the CPU's cores (two single-thread trainings on two cores finish sooner than two two-thread ones in turn)."""
    n = len(points)
    stamp = {"code": code_fingerprint(), "upstream": upstream}
    work = []
    for k, point in enumerate(points, 1):
        tag = f"[{label} point {k}/{n} {point.name or '(main run)'}]"
        if not point.name:
            print(f"{tag} has the main run's values: reusing the main run", flush=True)
            continue
        paths = config.run_paths(profile, point.name)
        todo = [nb for nb in point.notebooks
                if force or not point_finished(paths, nb.name, {**point.params[nb.name], **stamp})]
        if not todo:
            print(f"{tag} finished earlier: skipped", flush=True)
            continue
        prepare_point(paths)
        work.append((tag, point, paths, todo))
    jobs = max(1, min(jobs, len(work)))
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None

    def one(tag, point, paths, todo) -> list[Path]:
        done = []
        for i, nb in enumerate(todo, 1):
            if isinstance(nb, tuple):             # a lane of several points that share one folder
                done += one(*nb)
                continue
            print(f"{tag} [{i}/{len(todo)}] {nb.name}", flush=True)
            t0 = time.perf_counter()
            done.append(execute(nb, point.params[nb.name], paths, progress=progress and jobs == 1, threads=threads,
                                tag=point.name if jobs > 1 else ""))
            with _RECORD_LOCK:
                record_time(config.run_paths(profile), f"{point.name} {nb.number}", time.perf_counter() - t0,
                            timing.read(timings_file(paths, nb)), section="points")
                _mark_finished(paths, point, nb.name, stamp)
            print(f"{tag} [{i}/{len(todo)}] {nb.name} done in {time.perf_counter() - t0:.0f} s -> {done[-1]}",
                  flush=True)
        return done

    if jobs == 1:
        return [out for item in work for out in one(*item)]
    from concurrent.futures import ThreadPoolExecutor

    # points that share a folder (v1 and v2 at one seed) run one after the other in one lane, never side by side
    lanes: dict[str, list] = {}
    for item in work:
        lanes.setdefault(item[1].name, []).append(item)
    items = [group[0] if len(group) == 1 else (group[0][0], group[0][1], group[0][2], group) for group in lanes.values()]
    print(f"[{label}] {len(work)} points, {jobs} at a time, {threads} thread(s) each", flush=True)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(one, *item) for item in sorted(items, key=_point_cost, reverse=True)]
        return [out for f in futures for out in f.result()]


def _point_cost(item) -> int:
    """Rough order of a lane's cost, longest first, so that side-by-side lanes end together (v2 trains longest)."""
    _, point, _, todo = item
    return sum(_point_cost(nb) if isinstance(nb, tuple) else 2 if "lpips_weight" in nb.parameters else 1 for nb in todo)


# Notebook 07's sweeps: (group, recipe, swept parameter, 07's list parameter, whether the main run's value belongs
# to the group even when the list leaves it out)
FRONTIER_GROUPS = (("lambda", "v2", "lpips_weight", "frontier_lambdas", True),
                   ("v1 seed", "v1", "seed", "frontier_seeds", False),
                   ("v2 seed", "v2", "seed", "frontier_seeds", False),
                   ("v1 lr", "v1", "v1_lr", "frontier_v1_lrs", True))
FRONTIER_PLAN = "frontier_plan.json"   # in the main run's folder: which run holds each model notebook 07 reads


def frontier_plan(all_notebooks: list[Notebook], reader: Notebook, params: dict, profile: str,
                  overrides: dict | None = None) -> tuple[list[Point], list[dict]]:
    """The sweep points notebook 07 reads, and its plan: one entry per model ({group, recipe, value, point}).

    From 07's resolved ``frontier_*`` values: v2 at every λ, v1 and v2 at every seed, v1 at every learning rate,
    each with the main run's schedule and overrides. A value equal to the main run's is the main run itself
    (point ''); points shared by two groups run once."""
    values = {**reader.parameters, **params}
    by_name = {nb.name: nb for nb in all_notebooks}
    missing = [n for n in FRONTIER_TRAINERS.values() if n not in by_name]
    if missing:
        raise ParameterError(f"{reader.name} sweeps {missing}, which are not among the notebooks")
    trainers = {recipe: by_name[name] for recipe, name in FRONTIER_TRAINERS.items()}
    base = {k: v for k, v in (overrides or {}).items() if k != "sweep_point"}
    main = {recipe: {**nb.parameters, **resolve_parameters([nb], profile, {k: v for k, v in base.items()
                                                                           if k in nb.parameters})[nb.name]}
            for recipe, nb in trainers.items()}
    points: dict[tuple, Point] = {}
    plan = []
    for group, recipe, name, list_param, with_main in FRONTIER_GROUPS:
        nb, main_value = trainers[recipe], main[recipe][name]
        chosen = list(dict.fromkeys([*values[list_param], *([main_value] if with_main else [])]))
        for value in chosen:
            if _typed(value, main_value) == main_value:
                plan.append({"group": group, "recipe": recipe, "value": main_value, "point": ""})
                continue
            fixed = {k: v for k, v in base.items() if k != name and k in nb.parameters}
            (point,) = sweep_points([nb], profile, {name: [value]}, fixed)
            points.setdefault((point.name, nb.name), point)
            plan.append({"group": group, "recipe": recipe, "value": _typed(value, main_value), "point": point.name})
    return list(points.values()), plan


def write_plan(paths: config.RunPaths, plan: list[dict]) -> Path:
    """The frontier plan, atomically, where notebook 07 reads it (``frontier.read_plan``)."""
    from .io import atomic_write_json

    paths.root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(paths.root / FRONTIER_PLAN, {"profile": paths.profile, "entries": plan})
    return paths.root / FRONTIER_PLAN


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


# ---------------------------------------------------------------------------------------------
# What a running notebook shows on the runner's console, and how its kernel is reached
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# One writer per artifacts folder
# ---------------------------------------------------------------------------------------------
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


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """Turn SIGTERM into KeyboardInterrupt while notebooks run, so papermill shuts the kernel down and the
    lock is released (the default action would leave a kernel running without its runner)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(profile: str, only=None, start=None, overrides=None, notebooks_dir=None,
        progress: bool = True, command: str | None = None, sweep: dict | None = None, force: bool = False,
        jobs: int = 1) -> list[Path]:
    """Validate everything first, then execute the selected notebooks in order, holding the folder's lock.

    With ``sweep`` (name -> values) the selected notebooks run once per point instead (see ``sweep_points``).
    A selected notebook that declares the frontier sweeps (07) has them run just before it. A notebook whose
    source, parameters, package code and predecessor are those of its last finished execution is not executed
    again (``force`` executes it anyway); a clean checkout executes everything.
    """
    overrides = dict(overrides or {})
    if "sweep_point" in overrides:
        raise ParameterError("sweep_point is set by --sweep, not with -p")
    all_notebooks = discover(notebooks_dir)
    notebooks = select(all_notebooks, only, start)
    paths = config.run_paths(profile)
    if sweep:
        points = sweep_points(notebooks, profile, sweep, overrides)
        with run_lock(paths, command), _sigterm_as_interrupt():
            return run_points(points, profile, progress, jobs=jobs)
    resolved = resolve_parameters(notebooks, profile, overrides)
    frontier = {nb.name: frontier_plan(all_notebooks, nb, resolved[nb.name], profile, overrides)
                for nb in notebooks if "frontier_lambdas" in nb.parameters}
    outputs = []
    with run_lock(paths, command), _sigterm_as_interrupt():
        record = read_cache(paths)
        executed_one = False
        for i, nb in enumerate(notebooks, 1):
            key = cache_key(nb, resolved[nb.name], previous_key(all_notebooks, nb, record))
            if nb.name in frontier:
                t0 = time.perf_counter()
                planned_points, plan = frontier[nb.name]
                write_plan(paths, plan)
                trained = run_points(planned_points, profile, progress, label="frontier",
                                     upstream=previous_key(all_notebooks, nb, record), force=force, jobs=jobs)
                if trained:
                    record_time(paths, "frontier sweeps", time.perf_counter() - t0, points_phases(paths))
                outputs += trained
            out = paths.executed / f"{nb.name}.ipynb"
            if (not force and not executed_one and record.get(nb.name) == key and out.is_file()
                    and all(p.exists() for p in KEPT_OUTPUTS.get(nb.name, lambda _: ())(paths))):
                print(f"[{i}/{len(notebooks)}] {nb.name}: unchanged since its last run (source, parameters, code and "
                      f"the notebooks before it), not executed again; --force runs it anyway", flush=True)
                outputs.append(out)
                continue
            if nb.number == "01":
                config.record_provenance(paths, timings={"seconds": {}, "phases": {}, "points": {}})   # from the start
            record.pop(nb.name, None)
            write_cache(paths, record)
            print(f"[{i}/{len(notebooks)}] {nb.name} (profile {profile})", flush=True)
            t0 = time.perf_counter()
            outputs.append(execute(nb, resolved[nb.name], paths, progress=progress))
            record_time(paths, nb.name, time.perf_counter() - t0, timing.read(timings_file(paths, nb)))
            record[nb.name] = key
            executed_one = True              # what comes after it reads its new outputs: it runs too
            for later in all_notebooks:          # what came after it read its old outputs
                if later.number > nb.number and later.name not in {n.name for n in notebooks}:
                    record.pop(later.name, None)
            write_cache(paths, record)
            print(f"[{i}/{len(notebooks)}] {nb.name} done in {time.perf_counter() - t0:.0f} s -> {outputs[-1]}",
                  flush=True)
    return outputs


# ---------------------------------------------------------------------------------------------
# Reruns recompute only what changed (as jupyter-cache or Quarto's freeze do)
# ---------------------------------------------------------------------------------------------
CACHE_FILE = "cache.json"
# what a notebook makes outside its executed copy that a rerun may not find anymore (removed by hand): its absence
# reruns it
KEPT_OUTPUTS = {"01_build_dataset": lambda paths: (paths.manifest,)}


def code_fingerprint() -> str:
    """sha256 over the package's source files: any change to the code counts as a change to every notebook."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(Path(__file__).parent.glob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def cache_key(nb: Notebook, params: dict, upstream: str) -> str:
    """What a notebook's outputs depend on: its source, its injected parameters, the package's code and the key
    of the notebook before it (so a change anywhere reruns everything after it)."""
    import hashlib
    import json

    blob = json.dumps({"source": nb.source.read_text(), "params": _plain(params), "code": code_fingerprint(),
                       "upstream": upstream}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def previous_key(all_notebooks: list[Notebook], nb: Notebook, record: dict) -> str:
    """The recorded key of the notebook just before ``nb`` ('' for the first, 'missing' when it never finished)."""
    before = [n for n in all_notebooks if n.number < nb.number]
    return record.get(before[-1].name, "missing") if before else ""


def read_cache(paths: config.RunPaths) -> dict:
    """{notebook name: key of its last finished execution} of the run ``paths`` ({} when none)."""
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


PUBLISHED_RESULTS = ("table_*.md", "table_*.csv", "recommendation.md", "findings.md", "frontier.md", "headline.md",
                     "nose_noise_floor.json")
# The README's results block of a profile lies between these markers; `--publish` rewrites it.
README_START = "<!-- results: figures/{profile} (written by --publish; a test keeps it equal to the published files) -->"
README_END = "<!-- end results -->"
# What the report and the README open with: notebook 06's four findings and 07's frontier, with what to look at
HEADLINE_FILE = "headline.md"
HEADLINE_FIGURE = "frontier.png"
HEADLINE_CAPTION = ("The perception–distortion frontier. Left: LPIPS (down: perceptually closer to the HR) against "
                    "PSNR (right: less distortion), each model with its 95 % intervals; the star is v2 at the "
                    "write-up's λ, the other blue points v2 at other λ, the orange ones weight blends, and a point "
                    "down and to the right of another is better on both. Middle: the same against DISTS, a measure "
                    "v2 was not trained on. Right: the nose error of the landmark model.")


def timings_markdown(timings: dict, device: str = "") -> str:
    """The run's wall time per notebook (and the report) with each one's three longest phases, as Markdown."""
    seconds, phases = timings.get("seconds", {}), timings.get("phases", {})

    def top(key):
        ranked = sorted(phases.get(key, {}).items(), key=lambda kv: -kv[1])[:3]
        return ", ".join(f"{name} {value:.0f} s" for name, value in ranked) or "–"
    from .io import markdown_table

    rows = [(key, f"{value:.0f}", top(key)) for key, value in seconds.items()]
    rows.append(("**total**", f"**{sum(seconds.values()):.0f}** ({sum(seconds.values()) / 60:.1f} min)", ""))
    return (f"### Where the time went ({device or 'this machine'})\n\n"
            + markdown_table(("step", "seconds", "longest phases"), rows))


def readme_block(figures_dir: Path) -> str:
    """The README's results block for a published folder: a link to its report where one was published, the run's
    four findings, the headline figure, links to the full findings and tables, and the run's wall time."""
    import json

    figures_dir = Path(figures_dir)
    where = f"figures/{figures_dir.name}"
    parts = []
    if (figures_dir / REPORT_DIR / "README.md").is_file():
        parts.append(f"**Read the study as it ran:** [the report]({where}/{REPORT_DIR}/index.html) (one self-contained "
                     f"page; download and open it, it needs no network) or [one page per notebook]"
                     f"({where}/{REPORT_DIR}/README.md).")
    if (figures_dir / HEADLINE_FILE).is_file():
        parts.append(f"**What the {figures_dir.name} run found:**\n\n" + (figures_dir / HEADLINE_FILE).read_text().strip())
    if (figures_dir / HEADLINE_FIGURE).is_file():
        parts.append(f"![the perception–distortion frontier]({where}/{HEADLINE_FIGURE})\n\n*{HEADLINE_CAPTION}*")
    more = [f"[{name}]({where}/{name})" for name in ("findings.md", "recommendation.md", "frontier.md", "table_v2.md")
            if (figures_dir / name).is_file()]
    if more:
        parts.append("In full: " + ", ".join(more) + ".")
    prov_file = figures_dir / "PROVENANCE.json"
    prov = json.loads(prov_file.read_text()) if prov_file.is_file() else {}
    seconds = prov.get("timings", {}).get("seconds", {})
    if seconds:
        parts.append(f"The run took {sum(seconds.values()) / 60:.1f} min on {prov.get('device') or 'this machine'} "
                     "(per notebook: the report's provenance appendix).")
    return "\n\n".join(parts)


def update_readme(profile: str, readme: Path | None = None, figures_root: Path | None = None) -> bool:
    """Rewrite the results block of ``profile`` in the README from its published files; False when the README
    has no block for it. Written atomically."""
    from .io import atomic_write_text

    readme = Path(readme or config.REPO_ROOT / "README.md")
    start = README_START.format(profile=profile)
    text = readme.read_text() if readme.is_file() else ""
    if start not in text or README_END not in text[text.index(start):]:
        return False
    head, rest = text.split(start, 1)
    tail = rest[rest.index(README_END):]
    block = readme_block(Path(figures_root or config.FIGURES_DIR) / profile)
    atomic_write_text(readme, f"{head}{start}\n{block}\n{tail}")
    return True


REPORT_DIR = "report"


def publish(profile: str, dest_root: Path | None = None) -> Path:
    """Copy the profile's figures and tables into ``figures/<profile>/`` with a PROVENANCE.json, and the executed
    notebooks as a report into ``figures/<profile>/report/`` (``report.write_report``).

    The folder is assembled beside its destination and swapped in whole, so a reader never finds a mix of
    two runs' figures.
    """
    import platform
    import shutil

    from .io import atomic_write_json, file_sha256

    paths = config.run_paths(profile)
    files = sorted(paths.figures.glob("*.png"))
    for pattern in PUBLISHED_RESULTS:
        files += sorted(paths.results.glob(pattern))
    if not files:
        raise FileNotFoundError(f"nothing to publish: no figures in {paths.figures} (run the notebooks first)")
    dest = Path(dest_root or config.FIGURES_DIR) / profile
    staging = dest.with_name(f".{profile}.publishing")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for f in files:
        shutil.copy2(f, staging / f.name)
    try:
        import torch

        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({platform.processor() or platform.machine()})"
    except ImportError:  # pragma: no cover
        device = platform.machine()
    provenance = {
        "profile": profile, "code_version": config.code_version(),
        "date": datetime.date.today().isoformat(), "device": device,
        "data_manifest_sha256": file_sha256(paths.manifest) if paths.manifest.exists() else None,
        "substitutes_and_sources": {k: v for k, v in config.provenance(paths).items() if k != "timings"},
        "files": [f.name for f in files],
        "note": "demo and smoke figures come from synthetic data and offline stand-ins; see substitutes_and_sources"
        if profile != "paper" else "paper profile",
    }
    t0 = time.perf_counter()
    run_times = config.provenance(paths).get("timings") or {}
    executed = [paths.executed / f"{nb.name}.ipynb" for nb in discover()]
    if any(p.is_file() for p in executed):   # the executed narrative, readable without running it
        report.write_report([p for p in executed if p.is_file()], staging / REPORT_DIR,
                            title=f"thermsr: the study as executed ({profile} profile)",
                            provenance={k: v for k, v in provenance.items() if k not in ("files", "note")},
                            headline=(paths.results / HEADLINE_FILE).read_text()
                            if (paths.results / HEADLINE_FILE).is_file() else "",
                            headline_figure=staging / HEADLINE_FIGURE, figure_caption=HEADLINE_CAPTION,
                            timings=timings_markdown(run_times, device) if run_times.get("seconds") else "",
                            places={str(paths.root): f"artifacts/{profile}", str(config.artifacts_root()): "artifacts",
                                    str(config.data_root()): "data", str(config.REPO_ROOT): "."})
    record_time(paths, "report", time.perf_counter() - t0)
    provenance["timings"] = config.provenance(paths).get("timings")
    atomic_write_json(staging / "PROVENANCE.json", provenance)
    old = dest.with_name(f".{profile}.old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    staging.rename(dest)
    shutil.rmtree(old, ignore_errors=True)
    return dest


def default_jobs() -> int:
    """Points side by side: two on a CPU-only machine with at least two cores, else one (a GPU runs one at a time)."""
    if shutil.which("nvidia-smi"):
        return 1
    return 2 if (os.cpu_count() or 1) >= 2 else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m thermsr_utils.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default=config.DEFAULT_PROFILE, choices=config.PROFILE_NAMES)
    ap.add_argument("--only", nargs="+", metavar="NAME", help="notebook names or numbers to run")
    ap.add_argument("--from", dest="start", metavar="NN", help="run from this notebook number on")
    ap.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                    help="override a notebook parameter (repeatable)")
    ap.add_argument("--sweep", nargs="+", action="append", default=[], metavar=("NAME", "VALUE"),
                    help="run the selected notebooks once per value of parameter NAME, each point in its own "
                         "folder under artifacts/<profile>/sweeps/ (repeatable: a grid)")
    ap.add_argument("--no-progress", action="store_true",
                    help="no per-cell progress bar; instead a line names each code cell as it starts. What the "
                         "notebooks print (training epochs with loss and validation PSNR, evaluation batches, "
                         "results) is shown on stderr either way, each line prefixed with [<notebook>], so that "
                         "logs keep it")
    ap.add_argument("--publish", action="store_true",
                    help="after the run, copy figures and tables into figures/<profile>/ with PROVENANCE.json")
    ap.add_argument("--jobs", type=int, default=default_jobs(), metavar="N",
                    help="sweep points (and notebook 07's frontier points) run N at a time, each kernel with its "
                         "share of the cores (default: %(default)s, the cores of this machine on a CPU-only machine "
                         "up to 2; 1 with a GPU)")
    ap.add_argument("--force", action="store_true",
                    help="execute the selected notebooks even where nothing changed since their last run (by default "
                         "a notebook whose source, parameters, package code and predecessors are unchanged is reused)")
    ap.add_argument("--publish-only", action="store_true", help="publish the last run's figures without running")
    args = ap.parse_args(argv)
    overrides = {k: parse_value(v) for k, v in args.param}
    sweep = {}
    for name, *values in args.sweep:
        if name in sweep:
            print(f"error: --sweep {name} is given twice; list all its values once", file=sys.stderr)
            return 2
        sweep[name] = [parse_value(v) for v in values]
    command = shlex.join(["python", "-m", "thermsr_utils.run", *(sys.argv[1:] if argv is None else argv)])
    try:
        if not args.publish_only:
            run(args.profile, args.only, args.start, overrides, progress=not args.no_progress, command=command,
                sweep=sweep or None, force=args.force, jobs=args.jobs)
        if args.publish or args.publish_only:
            with run_lock(config.run_paths(args.profile), command):
                print(f"published to {publish(args.profile)}")
                if update_readme(args.profile):
                    print(f"README.md: results block of the {args.profile} profile rewritten")
    except (ParameterError, NotebookFailed, FileNotFoundError, RunLocked) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2 if isinstance(e, ParameterError) else 1
    except KeyboardInterrupt as e:
        print(f"interrupted{f' ({e})' if str(e) else ''}: training notebooks continue where they stopped when run "
              "again with `-p resume True` (use --from NN to skip the finished notebooks); a sweep skips its finished "
              "points and resumes the interrupted one when the same command is run again", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
