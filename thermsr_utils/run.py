"""Run the numbered notebooks headlessly with papermill, in order, for one profile.

    python -m thermsr_utils.run --profile smoke
    python -m thermsr_utils.run --profile demo --only 01_build_dataset 02_zero_shot_baselines
    python -m thermsr_utils.run --profile demo --from 03 -p epochs 5

The py:percent file ``notebooks/NN_name.py`` is the source that runs (its .ipynb pair is for Jupyter and is
kept identical by jupytext; a test checks the pairs). Executed copies land in
``artifacts/<profile>/executed/``. Parameters are checked against each notebook's ``parameters`` cell
before any notebook starts: an unknown name or a value of the wrong type stops the run with a message.
"""
from __future__ import annotations

import argparse
import ast
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import config

NOTEBOOK_RE = re.compile(r"^(\d\d)_[a-z0-9_]+\.py$")


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


def read_parameters(source: Path) -> dict:
    """Names and literal defaults of the ``parameters``-tagged cell of a py:percent notebook."""
    import jupytext

    nb = jupytext.read(source)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{source.name}: expected exactly one cell tagged 'parameters', found {len(cells)}")
    tree = ast.parse(cells[0].source)
    params = {}
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            raise ValueError(f"{source.name}: the parameters cell may hold only `name = literal` lines "
                             f"(line {node.lineno})")
        try:
            params[node.targets[0].id] = ast.literal_eval(node.value)
        except ValueError:
            raise ValueError(f"{source.name}: parameter {node.targets[0].id!r} is not a plain literal "
                             f"(derived values belong in the next cell)") from None
    return params


def discover(notebooks_dir: Path | None = None) -> list[Notebook]:
    """All numbered notebooks, in order."""
    found = sorted(p for p in Path(notebooks_dir or config.NOTEBOOKS_DIR).glob("*.py") if NOTEBOOK_RE.match(p.name))
    return [Notebook(p.stem, p, read_parameters(p)) for p in found]


def select(notebooks: list[Notebook], only: list[str] | None = None, start: str | None = None) -> list[Notebook]:
    """Notebooks named by ``only`` (name or number) or from number ``start`` on."""
    chosen = notebooks
    if only:
        wanted = set(only)
        chosen = [nb for nb in notebooks if nb.name in wanted or nb.number in wanted]
        missing = wanted - {nb.name for nb in chosen} - {nb.number for nb in chosen}
        if missing:
            raise ParameterError(f"unknown notebook(s) {sorted(missing)}; available: "
                                 f"{', '.join(nb.name for nb in notebooks)}")
    if start:
        chosen = [nb for nb in chosen if nb.number >= start[:2]]
    if not chosen:
        raise ParameterError("no notebook selected")
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
    """Per notebook, the values papermill injects: profile defaults, then overrides, type-checked."""
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
    base = config.profile_params(profile)
    resolved = {}
    for nb in notebooks:
        values = {k: v for k, v in base.items() if k in nb.parameters}
        values.update({k: v for k, v in overrides.items() if k in nb.parameters})
        for key, value in values.items():
            if not _type_ok(value, nb.parameters[key]):
                raise ParameterError(f"profile {profile!r} sets {key!r}={value!r}, but {nb.name} declares "
                                     f"{type(nb.parameters[key]).__name__}")
        resolved[nb.name] = values
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


def execute(nb: Notebook, params: dict, paths: config.RunPaths, progress: bool = True) -> Path:
    """Execute one notebook with papermill; raise NotebookFailed naming the cell on error."""
    import papermill as pm

    paths.executed.mkdir(parents=True, exist_ok=True)
    src = _to_ipynb(nb, paths.executed / ".src")
    out = paths.executed / f"{nb.name}.ipynb"
    try:
        pm.execute_notebook(str(src), str(out), parameters=params, kernel_name="python3",
                            progress_bar=progress, cwd=str(nb.source.parent))
    except pm.PapermillExecutionError as e:
        raise NotebookFailed(f"{nb.name} failed in cell {e.exec_count} ({e.ename}: {e.evalue}); "
                             f"partly executed copy: {out}") from None
    return out


def run(profile: str, only=None, start=None, overrides=None, notebooks_dir=None,
        progress: bool = True) -> list[Path]:
    """Validate everything first, then execute the selected notebooks in order."""
    notebooks = select(discover(notebooks_dir), only, start)
    resolved = resolve_parameters(notebooks, profile, overrides or {})
    paths = config.run_paths(profile)
    outputs = []
    for i, nb in enumerate(notebooks, 1):
        print(f"[{i}/{len(notebooks)}] {nb.name} (profile {profile})", flush=True)
        t0 = time.perf_counter()
        outputs.append(execute(nb, resolved[nb.name], paths, progress=progress))
        print(f"[{i}/{len(notebooks)}] {nb.name} done in {time.perf_counter() - t0:.0f} s -> {outputs[-1]}",
              flush=True)
    return outputs


PUBLISHED_RESULTS = ("table_*.md", "table_*.csv", "recommendation.md")


def publish(profile: str, dest_root: Path | None = None) -> Path:
    """Copy the profile's figures and tables into ``figures/<profile>/`` with a PROVENANCE.json.

    The folder is assembled beside its destination and swapped in whole, so a reader never finds a mix of
    two runs' figures.
    """
    import datetime
    import platform
    import shutil

    from . import __version__
    from .io import atomic_write_json, file_sha256
    from .train import _git_suffix

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
    atomic_write_json(staging / "PROVENANCE.json", {
        "profile": profile, "code_version": __version__ + _git_suffix(),
        "date": datetime.date.today().isoformat(), "device": device,
        "data_manifest_sha256": file_sha256(paths.manifest) if paths.manifest.exists() else None,
        "substitutes_and_sources": config.provenance(paths), "files": [f.name for f in files],
        "note": "demo and smoke figures come from synthetic data and offline stand-ins; see substitutes_and_sources"
        if profile != "paper" else "paper profile",
    })
    old = dest.with_name(f".{profile}.old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    staging.rename(dest)
    shutil.rmtree(old, ignore_errors=True)
    return dest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m thermsr_utils.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default=config.DEFAULT_PROFILE, choices=config.PROFILE_NAMES)
    ap.add_argument("--only", nargs="+", metavar="NAME", help="notebook names or numbers to run")
    ap.add_argument("--from", dest="start", metavar="NN", help="run from this notebook number on")
    ap.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                    help="override a notebook parameter (repeatable)")
    ap.add_argument("--no-progress", action="store_true", help="no per-cell progress bars")
    ap.add_argument("--publish", action="store_true",
                    help="after the run, copy figures and tables into figures/<profile>/ with PROVENANCE.json")
    ap.add_argument("--publish-only", action="store_true", help="publish the last run's figures without running")
    args = ap.parse_args(argv)
    overrides = {k: parse_value(v) for k, v in args.param}
    try:
        if not args.publish_only:
            run(args.profile, args.only, args.start, overrides, progress=not args.no_progress)
        if args.publish or args.publish_only:
            print(f"published to {publish(args.profile)}")
    except (ParameterError, NotebookFailed, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2 if isinstance(e, ParameterError) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
