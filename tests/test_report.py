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
    assert [o.output_type for o in outs] == ["stream", "execute_result", "display_data"]
    assert outs[0].text == WARNING                                   # a real warning stays, bars and kernel go
    assert set(outs[1].data) == {"image/png"}                        # the figure, not its repr
    assert set(outs[2].data) == {"text/markdown"}
    assert "widgets" not in nb.metadata


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


def test_the_report_opens_in_a_real_browser(tmp_path, browser):
    paths = [executed(tmp_path, "01_first", "01 · First notebook", 31),
             executed(tmp_path, "02_second", "02 · Second notebook", 42)]
    index = report.write_report(paths, tmp_path / "report", title="The study")
    seen = browser(index, tmp_path / "shot.png")
    assert seen["title"] == "The study"
    assert seen["images"] == 2 and seen["broken"] == []
    assert seen["links"] >= 4 and seen["dangling"] == []            # the index's two, the notebooks' own
    assert seen["h1"][:3] == ["The study", "01 · First notebook", "02 · Second notebook"]
    assert (tmp_path / "shot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_browser_check_catches_a_broken_image_and_a_dangling_link(tmp_path, browser):
    page = tmp_path / "bad.html"
    page.write_text('<html><head><title>bad</title></head><body><h1>bad</h1><img src="missing.png">'
                    '<a href="#nowhere">x</a></body></html>')
    seen = browser(page, tmp_path / "bad.png")
    assert seen["broken"] == ["missing.png"] and seen["dangling"] == ["nowhere"]
