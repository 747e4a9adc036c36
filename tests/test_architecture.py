"""The packages' layering: no module imports, directly or through others, a module that imports it back; the
study package (``thermsr_utils``, what the notebooks import) never imports the tools package (``thermsr_tools``)."""
import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "thermsr_utils"
TOOLS = PACKAGE.parent / "thermsr_tools"


def package_imports(source: str, modules: set[str], package: str = "thermsr_utils", relative: bool = True) -> set[str]:
    """Names of ``package``'s modules that ``source`` imports anywhere (module level or inside functions); with
    ``relative``, ``source`` is a module of ``package`` and its relative imports count too."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            absolute = node.level == 0 and (base == package or base.startswith(package + "."))
            if (relative and node.level == 1) or absolute:
                base = base.removeprefix(package).lstrip(".") if node.level == 0 else base
                if base:
                    found.add(base.split(".")[0])
                else:
                    found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith(package + "."))
    return found & modules


def _modules(package: Path) -> dict[str, Path]:
    return {p.stem: p for p in package.glob("*.py") if p.stem != "__init__"}


def import_graph(package: Path = PACKAGE, tools: Path | None = TOOLS) -> dict[str, set[str]]:
    """{module: the modules it imports} over the study package and the tools package beside it (whose modules
    import the study package's by absolute name); a module name is used in one of the two only."""
    files = _modules(package)
    graph = {name: package_imports(p.read_text(encoding="utf-8"), set(files)) - {name} for name, p in files.items()}
    extra = _modules(tools) if tools else {}
    assert not set(extra) & set(files), f"modules named alike in both packages: {sorted(set(extra) & set(files))}"
    for name, p in extra.items():
        source = p.read_text(encoding="utf-8")
        graph[name] = (package_imports(source, set(extra), package=tools.name)
                       | package_imports(source, set(files), relative=False)) - {name}
    return graph


def imports_of_tools(source: str, tools: str = "thermsr_tools") -> list[str]:
    """Every import of the tools package in ``source``: import statements, and strings that name it or one of
    its modules (``importlib.import_module("thermsr_tools.bench")``, ``[python, "-m", "thermsr_tools.bench"]``)."""
    named = re.compile(rf"{tools}(\.\w+)*")
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and named.fullmatch(node.module or ""):
            found.append(f"from {node.module} import …")
        elif isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if named.fullmatch(a.name)]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and named.fullmatch(node.value):
            found.append(repr(node.value))
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, …, a], or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle_and_only_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_import_scan_sees_every_import_form():
    src = ("from . import data, io\nfrom .train import fit\nimport thermsr_utils.models\n"
           "def f():\n    from thermsr_utils import stats\n    from thermsr_utils.plots import x\n    from . import __version__\n")
    assert package_imports(src, {"data", "io", "train", "models", "stats", "plots", "zoo"}) == {
        "data", "io", "train", "models", "stats", "plots"}
    tool = "from . import bench\nfrom thermsr_utils import config\ndef f():\n    import thermsr_utils.models\n"
    assert package_imports(tool, {"bench", "gpu_check"}, package="thermsr_tools") == {"bench"}
    assert package_imports(tool, {"config", "models", "bench"}, relative=False) == {"config", "models"}


def test_the_study_package_never_imports_the_tools_package():
    """The notebooks import thermsr_utils; the benchmark and the GPU check stay outside what they load."""
    src = ("import thermsr_tools.bench\nfrom thermsr_tools import gpu_check\nfrom .tools import x\n"
           "def f():\n    importlib.import_module('thermsr_tools.bench')\n    'a docstring on thermsr_tools'\n")
    assert imports_of_tools(src) == ["import thermsr_tools.bench", "from thermsr_tools import …",
                                     "'thermsr_tools.bench'"]
    assert {"bench", "gpu_check"} <= set(_modules(TOOLS))
    found = {p.name: imports_of_tools(p.read_text(encoding="utf-8")) for p in sorted(PACKAGE.glob("*.py"))}
    assert len(found) > 20 and {name: f for name, f in found.items() if f} == {}


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert {"train", "accel", "evaluate", "run"} <= set(graph)
    assert find_cycle(graph) is None, f"import cycle: {' → '.join(find_cycle(graph))}"


# The layers, lowest first: a module imports only modules of lower layers. The command lines sit on top.
LAYERS = (
    ("io", "progress", "timing", "metric_specs"),                # atomic files; progress lines; phase times; metric table
    ("config",),                                                  # paths, profiles, parameter rules
    ("params", "data", "weights", "faces"),                       # parameter rules, LR operator and crop geometry,
                                                                  # weights, the generator's people
    ("readers", "synthetic"),                                     # SF-TL54 and ThermEval-D folders -> crops, records;
                                                                  # the generator writing look-alike folders
    ("manifests",),                                               # the manifest: built, compared, verified; open_run
    ("zoo", "metrics", "downstream", "datasets", "accel", "instrument", "losses"),  # ...; a landmark model against the
                                                                  # annotations; losses (weights checked by params)
    ("models", "colour", "taskloss"),                             # models loaded; palette images in and out of them;
                                                                  # a frozen face model as a loss term (v3)
    ("checkpoint", "evaluate"),
    ("train", "stats", "plots"),
    ("findings", "frontier"),
    ("recipes", "report"),                                        # notebook parameters -> recipe; executed -> report
    ("console", "lock"),                                          # a running notebook's kernel and console lines;
                                                                  # one writer per artifacts folder
    ("notebook",),                                                # notebooks found, parameters resolved, one executed
    ("publish",),                                                 # figures and report into figures/, the README block
    ("run",),                                                     # the notebook runner: in order, sweeps, reruns
    ("sr_folder", "train_cli"),                                   # the other command lines
    # the tools package (thermsr_tools/) on top: measurements around the study, never imported by it
    ("bench",),                                                   # the throughput benchmark
    ("gpu_check",),                                               # the GPU check (uses bench)
)


def layer_violations(graph: dict[str, set[str]], layers=LAYERS) -> list[str]:
    rank = {m: i for i, layer in enumerate(layers) for m in layer}
    return sorted(f"{m} imports {d}" for m, deps in graph.items() for d in deps if rank[d] >= rank[m])


def test_the_layer_check_catches_an_upward_import():
    assert layer_violations({"io": {"config"}, "config": set()}, (("io",), ("config",))) == ["io imports config"]
    assert layer_violations({"io": set(), "config": {"io"}}, (("io",), ("config",))) == []


def test_every_module_imports_only_lower_layers():
    graph = import_graph()
    declared = [m for layer in LAYERS for m in layer]
    assert sorted(declared) == sorted(graph), "every module is in exactly one layer"
    assert layer_violations(graph) == []


def test_the_layers_page_lists_the_tested_layers():
    """docs/architecture.md describes the layers; its table lists exactly LAYERS, layer by layer, in order."""
    import re

    page = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    rows = [line for line in page.splitlines() if re.match(r"\|\s*\d+\s*\|", line)]
    listed = [tuple(sorted(re.findall(r"`(\w+)\.py`", row.split("|")[3]))) for row in rows]
    assert listed == [tuple(sorted(layer)) for layer in LAYERS], (
        "docs/architecture.md's layer table differs from LAYERS in tests/test_architecture.py")


# What a newcomer reads to follow the study: the modules the notebooks import, directly or through others.
MAX_MODULE_LINES = 700
MAX_FUNCTION_LINES = 80
GENERATOR_MODULES = {"synthetic", "faces"}   # drawing a face is long by nature; only its module size is held


def study_modules(graph: dict[str, set[str]], notebooks: list[str]) -> set[str]:
    """The modules that the notebooks' sources import, and everything those import in turn."""
    found, todo = set(), [m for src in notebooks for m in package_imports(src, set(graph), relative=False)]
    while todo:
        module = todo.pop()
        if module not in found:
            found.add(module)
            todo += graph[module]
    return found


def long_functions(source: str, limit: int) -> list[str]:
    """``name (N lines)`` of every function or method in ``source`` longer than ``limit`` lines."""
    return [f"{n.name} ({n.end_lineno - n.lineno + 1} lines)" for n in ast.walk(ast.parse(source))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > limit]


def test_the_study_scan_follows_imports_and_measures_functions():
    graph = {"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a"}}
    assert study_modules(graph, ["from thermsr_utils import a\n"]) == {"a", "b", "c"}
    assert long_functions("def f():\n    x = 1\n    return x\n\ndef g():\n    pass\n", 2) == ["f (3 lines)"]


def test_the_study_is_short_enough_to_read():
    """Every study module at most 700 lines; every function at most 80 lines outside the face generator."""
    graph = {m: deps for m, deps in import_graph(tools=None).items()}
    notebooks = [p.read_text(encoding="utf-8") for p in sorted((PACKAGE.parent / "notebooks").glob("[0-9]*.py"))]
    study = study_modules(graph, notebooks)
    assert {"train", "data", "stats"} <= study and "run" not in study
    sources = {m: (PACKAGE / f"{m}.py").read_text(encoding="utf-8") for m in sorted(study)}
    too_long = {m: len(s.splitlines()) for m, s in sources.items() if len(s.splitlines()) > MAX_MODULE_LINES}
    assert too_long == {}, f"study modules over {MAX_MODULE_LINES} lines: {too_long}"
    long = {m: f for m, s in sources.items() if m not in GENERATOR_MODULES
            if (f := long_functions(s, MAX_FUNCTION_LINES))}
    assert long == {}, f"functions over {MAX_FUNCTION_LINES} lines: {long}"
