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
import contextlib
import datetime
import itertools
import os
import shlex
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import config, timing
from .lock import RunLocked, run_lock
from .notebook import (CACHE_FILE, Notebook, NotebookFailed, ParameterError, discover, execute, parse_value,
                       points_phases, read_cache, record_time, resolve_parameters, select, timings_file, write_cache)
from .publish import publish, update_readme


# ---- Sweeps ----
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


def _point_value(value) -> str:
    """One swept value as it appears in a point's name."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return f"{value:.1f}"
    return str(value)


def point_values(profile: str, values: dict, defaults: dict | None = None) -> dict:
    """The entries of ``values`` that differ from the main run's: the profile's values over ``defaults`` (the
    selected notebooks' literals; by default every notebook's). What makes a sweep point different from the main
    run."""
    base = {**(config.notebook_defaults() if defaults is None else defaults), **config.profile_values(profile)}
    return {k: v for k, v in sorted(values.items()) if k not in base or base[k] != v}


def point_name(profile: str, values: dict, defaults: dict | None = None) -> str:
    """The folder name of the sweep point with these parameter values ('' when they are the main run's):
    ``name=value`` pairs of the non-default values, sorted and joined by commas."""
    differing = point_values(profile, values, defaults)
    name = ",".join(f"{k}={_point_value(v)}" for k, v in differing.items())
    if name and not config.SWEEP_POINT.match(name):
        raise config.ParameterValueError(f"cannot name a sweep point after {differing}: swept values must be "
                                         "numbers, True/False or short names made of letters, digits, '.', '_', "
                                         "'+' and '-'")
    return name


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
            name = point_name(profile, named, declared)
        except config.ParameterValueError as e:
            raise ParameterError(str(e)) from None
        values = point_values(profile, named, declared)
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
    if not (only or start or config.RUNS_BEYOND[profile]):
        left = [nb.name for nb in notebooks if nb.number >= config.BEYOND_FROM]
        notebooks = [nb for nb in notebooks if nb.number < config.BEYOND_FROM]
        if left:
            print(f"the {profile} profile runs notebooks 01-{notebooks[-1].number}; {', '.join(left)} (beyond the "
                  f"write-up) run with `--from {config.BEYOND_FROM}` (`make beyond`)", flush=True)
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


# ---- Reruns recompute only what changed (as jupyter-cache or Quarto's freeze do) ----
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