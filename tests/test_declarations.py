"""Each hyperparameter is declared once: the notebooks' parameters cells hold the defaults, a profile holds only
what differs from them, and the package takes the values from its callers instead of declaring them again."""
import ast
import re
from pathlib import Path

import pytest

from thermsr_utils import config, notebook

PACKAGE = Path(__file__).resolve().parent.parent / "thermsr_utils"
NOTEBOOKS = notebook.discover()

# The recipe's parameters (λ, the EMA, epochs, learning rate, batch size, warmup, the scale) under the names the
# package and the notebooks give them.
RECIPE_NAME = re.compile(r"^(v[12]_)?(lpips_weight|fft_weight|weight|ema|ema_decay|decay|ema_half_life|half_life|"
                         r"epochs|lr|peak_lr|lr_peak|batch_size|warmup|scale|standin_steps|val_every)$")
RECIPE_CONSTANT = re.compile(r"(LPIPS|FFT_WEIGHT|DEFAULT_WEIGHT|(^|_)EMA(_|$)|DECAY|HALF_LIFE|EPOCHS?|(^|_)LR(_|$)|"
                             r"BATCH|WARMUP|(^|_)SCALE$)")

# (file, where, name): why a second value is right there. Every entry must still match something.
ALLOWED = {
    ("data.py", "<module>", "SCALE"): "the one declaration of the study's ×4 factor; the rest of the package refers "
                                      "to it",
    ("params.py", "<module>", "_LR"): "the rule every learning rate is checked against (its bounds, not a value)",
    ("train.py", "Recipe", "warmup"): "0 = no warmup, what v1 has; v2's share comes from notebook 05",
    ("models.py", "build_standin", "lr"): "the step size of the stand-in builder (notebook 02 makes its weights "
                                          "when no registry copy exists), not a finetuning recipe's",
    # inference and validation batches: how many crops go through the network at once; results do not depend on it
    ("models.py", "upscale", "batch_size"): "inference batch",
    ("evaluate.py", "model_method", "batch_size"): "inference batch",
    ("evaluate.py", "evaluate_method", "batch_size"): "inference batch",
    ("evaluate.py", "evaluate_methods", "batch_size"): "inference batch",
    ("frontier.py", "score", "batch_size"): "inference batch",
    ("frontier.py", "interpolate", "batch_size"): "inference batch",
    ("metrics.py", "__call__", "batch_size"): "inference batch",
    ("downstream.py", "__init__", "batch_size"): "inference batch",
    ("train.py", "evaluate", "batch_size"): "validation batch",
    ("sr_folder.py", "models.upscale", "batch_size"): "inference batch (one image at a time)",
    ("recipes.py", "torch.optim.AdamW", "lr"): "notebook 03 times one AdamW step per candidate network; the step "
                                                "size does not change its cost",
}


def _numbers(node) -> bool:
    """Whether ``node`` holds a number literal (not None or a bool)."""
    return any(isinstance(n, ast.Constant) and isinstance(n.value, (int, float)) and not isinstance(n.value, bool)
               for n in ast.walk(node))


def second_declarations(path: Path) -> list[tuple[str, str, str, int, str]]:
    """(file, where, name, line, text) of every value of a recipe parameter the file declares itself: a keyword
    default, a dataclass field default or a call's keyword given as a number, and a module constant with a number."""
    tree = ast.parse(path.read_text())
    found = []

    def add(where, name, node, value):
        found.append((path.name, where, name, node.lineno, f"{name} = {ast.unparse(value)}"))

    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            positional = a.posonlyargs + a.args
            pairs = list(zip(positional[len(positional) - len(a.defaults):], a.defaults))
            pairs += [(k, d) for k, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None]
            for arg, default in pairs:
                if RECIPE_NAME.match(arg.arg) and _numbers(default):
                    add(node.name, arg.arg, node, default)
        elif isinstance(node, ast.ClassDef):
            for st in node.body:
                if (isinstance(st, ast.AnnAssign) and isinstance(st.target, ast.Name) and st.value is not None
                        and RECIPE_NAME.match(st.target.id) and _numbers(st.value)):
                    add(node.name, st.target.id, st, st.value)
        elif isinstance(node, ast.Call):
            func = ast.unparse(node.func)
            for kw in node.keywords:
                if kw.arg and RECIPE_NAME.match(kw.arg) and _numbers(kw.value):
                    add(func, kw.arg, node, kw.value)
    for st in tree.body:
        targets = st.targets if isinstance(st, ast.Assign) else [st.target] if isinstance(st, ast.AnnAssign) else []
        for t in targets:
            if isinstance(t, ast.Name) and RECIPE_CONSTANT.search(t.id) and st.value is not None and _numbers(st.value):
                add("<module>", t.id, st, st.value)
    return found


def _allowed(hit) -> bool:
    file, where, name = hit[:3]
    return any((file, w, n) in ALLOWED for w in (where, "*") for n in (name, "*"))


def test_the_package_declares_no_recipe_parameter_a_second_time():
    hits = [h for f in sorted(PACKAGE.glob("*.py")) for h in second_declarations(f)]
    extra = [f"{file}:{line} ({where}) {text}" for file, where, name, line, text in hits if not _allowed((file, where, name))]
    assert not extra, ("the package declares values the notebooks declare (pass them from the notebook's parameters "
                       "instead, or add an entry with a reason to ALLOWED):\n" + "\n".join(extra))
    used = {(file, w, n) for file, where, name, *_ in hits for w in (where, "*") for n in (name, "*")}
    stale = sorted(k for k in ALLOWED if k not in used)
    assert not stale, f"ALLOWED entries that match nothing any more: {stale}"


def test_the_scan_finds_a_second_declaration(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("LPIPS_WEIGHT = 0.05\nEMA_DECAY = 0.999\nSCALE = 4\n\n"
                 "def fit(x, *, epochs: int = 200, lr=2e-5, ema_decay=None, scale=SCALE):\n"
                 "    return make_ema(x, decay=0.999)\n\n"
                 "class R:\n    batch_size: int = 16\n    ema_half_life: float | None = None\n")
    names = {(where, name) for _, where, name, *_ in second_declarations(f)}
    assert names == {("<module>", "LPIPS_WEIGHT"), ("<module>", "EMA_DECAY"), ("<module>", "SCALE"),
                     ("fit", "epochs"), ("fit", "lr"), ("make_ema", "decay"), ("R", "batch_size")}


def test_notebooks_agree_on_the_defaults_they_share():
    declared = {}
    for nb in NOTEBOOKS:
        for key, value in nb.parameters.items():
            assert declared.setdefault(key, value) == value, f"{nb.name}: {key} has different defaults across notebooks"


@pytest.mark.parametrize("profile", config.PROFILE_NAMES)
def test_a_profile_holds_only_what_differs_from_the_notebooks(profile):
    literals = config.notebook_defaults()
    values = config.PROFILES[profile]
    assert set(values) <= set(literals), f"{profile} sets names no notebook declares: {sorted(set(values) - set(literals))}"
    same = sorted(k for k, v in values.items() if literals[k] == v and type(literals[k]) is type(v))
    assert not same, f"{profile} repeats the notebooks' own values for {same}"
    assert "profile" not in values, "the runner injects the profile's name itself"


def test_the_demo_is_the_notebooks_as_written():
    assert config.PROFILES["demo"] == {}
    assert config.profile_params("demo") == {**config.notebook_defaults(), "profile": "demo"}


def test_a_run_sees_the_notebooks_literals_under_the_profiles_values():
    resolved = notebook.resolve_parameters(NOTEBOOKS, "smoke", {"v2_epochs": 3})
    v2 = next(nb for nb in NOTEBOOKS if nb.name.startswith("05"))
    assert resolved[v2.name]["profile"] == "smoke" and resolved[v2.name]["v2_epochs"] == 3
    assert resolved[v2.name]["lpips_weight"] == config.PROFILES["smoke"]["lpips_weight"]
    assert "v2_batch_size" not in resolved[v2.name]            # the notebook's literal holds: nothing injected
    assert {**v2.parameters, **resolved[v2.name]}["v2_batch_size"] == v2.parameters["v2_batch_size"]
    assert config.profile_params("smoke")["v2_batch_size"] == v2.parameters["v2_batch_size"]
