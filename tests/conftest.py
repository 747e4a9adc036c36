"""Shared test fixtures and the tiny super-image model the training tests use (``from conftest import …``)."""
from pathlib import Path

import pytest
import torch
from super_image import PretrainedConfig, PreTrainedModel
from torch import nn


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` are skipped, saying why, where torch sees no CUDA device."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (run `make test` on a machine with one)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def need_zoo(name):
    """Skip, saying why, unless the registry package holding zoo model ``name``'s weights is installed at its pin."""
    import importlib.metadata as md

    from thermsr_utils import zoo

    spec = zoo.ZOO[name]
    try:
        version = md.distribution(spec["package"]).version
    except md.PackageNotFoundError:
        pytest.skip(f"{spec['package']}=={spec['version']} is not installed (run `make install`)")
    if version != spec["version"]:
        pytest.skip(f"{spec['package']} {version} is installed, {spec['version']} is pinned (run `make install`)")


ASTRONAUT_FACE = (178, 57, 273, 177)  # x0, y0, x1, y1 of the face in skimage's 512×512 astronaut


def astronaut_face_crops(pads, offsets=((0.0, 0.0),), size=192):
    """Square crops around the astronaut's face (side ``pad`` × the face, centre moved by ``offsets`` × the side),
    each resized to ``size``² by INTER_AREA: uint8 BGR N×size×size×3, the kind of face crop the project evaluates."""
    import cv2
    import numpy as np
    from skimage import data

    img = np.ascontiguousarray(data.astronaut()[..., ::-1])
    x0, y0, x1, y1 = ASTRONAUT_FACE
    cx, cy, side = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0)
    out = []
    for pad in pads:
        for dx, dy in offsets:
            s = int(round(pad * side))
            a = min(max(int(round(cx - s / 2 + dx * s)), 0), 512 - s)
            b = min(max(int(round(cy - s / 2 + dy * s)), 0), 512 - s)
            out.append(cv2.resize(img[b:b + s, a:a + s], (size, size), interpolation=cv2.INTER_AREA))
    return np.stack(out)


@pytest.fixture
def one_thread():
    """Run torch single-threaded: tiny convolutions are much faster that way on a busy 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class TinyConfig(PretrainedConfig):
    model_type = "THERMSR_TINY_TEST"

    def __init__(self, scale=4, n_feats=16, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale
        self.n_feats = n_feats
        self.dropout = dropout
        self.data_parallel = False


class TinySR(PreTrainedModel):
    """conv → ReLU (→ dropout) → conv → PixelShuffle: the smallest ×4 model with super-image's save/load."""

    config_class = TinyConfig

    def __init__(self, config):
        super().__init__(config)
        s, nf = config.scale, config.n_feats
        self.body = nn.Sequential(nn.Conv2d(3, nf, 3, padding=1), nn.ReLU(), nn.Dropout(config.dropout),
                                  nn.Conv2d(nf, 3 * s * s, 3, padding=1), nn.PixelShuffle(s))

    def forward(self, x):
        return self.body(x)


def tiny_model(seed=0, n_feats=16, dropout=0.0):
    """A TinySR initialised from ``seed``."""
    torch.manual_seed(seed)
    return TinySR(TinyConfig(n_feats=n_feats, dropout=dropout))


# ---------------------------------------------------------------------------------------------
# A real browser: headless Chromium (Debian's `chromium` package; .ci/run installs it)
# ---------------------------------------------------------------------------------------------
_CHECK_JS = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => (i.getAttribute('src') || '').slice(0, 80));
  const links = [...document.querySelectorAll('a[href^="#"]')].map(a => a.getAttribute('href').slice(1));
  const dangling = links.filter(id => id && !document.getElementById(id));
  const h1 = [...document.querySelectorAll('h1')].map(h => h.textContent.replace('\\u00b6', '').trim());
  const shown = el => !el.closest('details:not([open])') && el.checkVisibility();
  const box = id => { const el = document.getElementById(id); if (!el) return null;
                      const r = el.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
  const code = [...document.querySelectorAll('.jp-CodeCell .jp-InputArea, pre code, .highlight')].filter(shown).length;
  const stderr = [...document.querySelectorAll('[data-mime-type="application/vnd.jupyter.stderr"]')].length;
  const pre = document.createElement('pre');
  pre.id = 'thermsr-check';
  pre.textContent = JSON.stringify({title: document.title, images: imgs.length, broken, links: links.length, dangling,
                                    h1, visible_code: code, stderr, boxes: Object.fromEntries(
                                      (window.THERMSR_BOXES || []).map(id => [id, box(id)]))});
  document.body.appendChild(pre);
});
</script>"""
# on load, everything before the element with this id is removed, so a screenshot starts there
_FROM_JS = """<script>
window.addEventListener('load', () => {
  let el = document.getElementById(%s);
  while (el && el !== document.body) {
    while (el.previousSibling) el.previousSibling.remove();
    el = el.parentNode;
  }
});
</script>"""
WINDOW = (1400, 1400)


@pytest.fixture
def browser(tmp_path):
    """``open(html, screenshot, boxes=(), start=None)``: load ``html`` in headless Chromium in a 1400 × 1400
    window, wait for the load event, save a screenshot of the first screen (of the page from the element with id
    ``start`` on, when given), and return what the page reports: title, images (count), broken (images that did
    not decode: naturalWidth 0), links (internal ``#…`` links), dangling (those whose target id is missing), h1
    (headings), visible_code (code blocks a reader sees without opening anything), stderr (stderr outputs) and
    boxes ({id: [left, top, right, bottom]} in px of each id in ``boxes``, None if absent). The check script
    runs on a copy in a temporary folder, so a page that is not self-contained fails it."""
    import html as html_mod
    import json
    import re
    import shutil
    import subprocess

    exe = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if exe is None:
        pytest.skip("no headless browser: install Debian's chromium (apt-get install chromium) to run this test")
    flags = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=15000",
             f"--window-size={WINDOW[0]},{WINDOW[1]}"]

    def open_page(page, screenshot, boxes=(), start=None):
        page = Path(page)
        text = page.read_text(encoding="utf-8")
        probe = tmp_path / f"probe-{page.name}"
        ids = f"<script>window.THERMSR_BOXES = {json.dumps(list(boxes))};</script>"
        probe.write_text(text.replace("</body>", ids + _CHECK_JS + "</body>"), encoding="utf-8")
        dom = subprocess.run([*flags, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=180)
        found = re.search(r'<pre id="thermsr-check">(.*?)</pre>', dom.stdout, re.S)
        assert found, f"the page did not finish loading in Chromium: {dom.stderr[-500:]}"
        shot = page
        if start:
            shot = tmp_path / f"from-{start}-{page.name}"
            shot.write_text(text.replace("</body>", _FROM_JS % json.dumps(start) + "</body>"), encoding="utf-8")
        Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([*flags, f"--screenshot={screenshot}", shot.as_uri()], capture_output=True, timeout=180,
                       check=True)
        return json.loads(html_mod.unescape(found.group(1)))

    return open_page
