"""The package's layering: no module imports, directly or through others, a module that imports it back."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "thermsr_utils"


def package_imports(source: str, modules: set[str]) -> set[str]:
    """Names of the package's modules that ``source`` imports anywhere (module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level == 1 or base == "thermsr_utils" or base.startswith("thermsr_utils."):
                base = base.removeprefix("thermsr_utils").lstrip(".")
                if base:
                    found.add(base.split(".")[0])
                else:
                    found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("thermsr_utils."))
    return found & modules


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    files = {p.stem: p for p in package.glob("*.py") if p.stem != "__init__"}
    return {name: package_imports(p.read_text(encoding="utf-8"), set(files)) - {name} for name, p in files.items()}


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


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert {"train", "accel", "evaluate", "run"} <= set(graph)
    assert find_cycle(graph) is None, f"import cycle: {' → '.join(find_cycle(graph))}"


# The layers, lowest first: a module imports only modules of lower layers. The command lines sit on top.
LAYERS = (
    ("io", "progress", "timing"),                                # atomic files; progress lines; phase times
    ("config",),                                                  # paths, profiles, parameter rules
    ("params", "data", "weights", "synthetic"),                   # parameter rules, crops and manifest, weights
    ("zoo", "metrics", "downstream", "datasets", "accel", "instrument", "losses"),  # ...; a landmark model against the
                                                                  # annotations; losses (weights checked by params)
    ("models",),
    ("checkpoint", "evaluate"),
    ("train", "stats", "plots"),
    ("findings", "frontier"),
    ("recipes", "report"),                                        # notebook parameters -> recipe; executed -> report
    ("console",),                                                 # a running notebook's kernel and console lines
    ("run",),                                                     # the notebook runner
    ("sr_folder", "bench", "train_cli"),                          # the other command lines
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
