"""The executed notebooks as a report a reader opens without running anything (made with nbconvert).

``write_report`` turns the executed notebooks of a run, in order, into a folder with

* ``<name>.md``, one Markdown page per notebook with its figures beside it in ``<name>_files/`` (GitHub renders
  these pages), and ``README.md``, their index (GitHub shows it when the folder is opened);
* ``index.html``, the whole study in one self-contained file: an index (the notebooks in order, the run's
  provenance and the substitutes it used), then every notebook; its figures are embedded and it fetches no
  script or style sheet from anywhere (no MathJax, RequireJS or widget manager), so it opens offline.

Reader-noise is stripped first (``clean``): progress bars and the kernel's chatter on stderr, widget outputs,
and the text reprs that stand for an object (``<Figure size 990x352 with 2 Axes>``). Figures keep their captions
(drawn into them by ``plots.save_figure``); the numbers are the run's, as the notebooks computed them.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path

from .io import atomic_write_bytes, atomic_write_text

INDEX_HTML = "index.html"
INDEX_MD = "README.md"

# stderr lines a reader does not need: progress bars (tqdm redraws with \r), the kernel's own warnings
_NOISE_LINE = re.compile(r"\r|\d+%\|[^|]*\||^\[IPKernelApp\]|^\s*$")
# a text/plain output that only names an object another output shows (or that shows nothing)
_OBJECT_REPR = re.compile(r"^(?:\[)?'?<(?:Figure size [^>]* with \d+ Axes|[\w.]+ object(?: at 0x[0-9a-f]+)?)>'?"
                          r"(?:\])?$")

# lab's page without its remote scripts: the report must open offline and fetch nothing
_TEMPLATE_NAME = "thermsr_report.html.j2"
_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
"""


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def _stderr_kept(text: str) -> str:
    """The lines of a stderr stream worth reading (warnings a reader should see), without progress bars."""
    return "".join(line for line in text.splitlines(keepends=True) if not _NOISE_LINE.search(line))


def _relative(text: str, places: dict[str, str]) -> str:
    """``text`` with each absolute folder of ``places`` (longest first) written as its name there."""
    for where in sorted(places, key=len, reverse=True):
        text = text.replace(where, places[where])
    return text


def clean(nb, places: dict[str, str] | None = None):
    """A copy of notebook ``nb`` (nbformat) without reader-noise: stderr progress bars and kernel warnings,
    widget outputs, and object reprs (``<Figure size … with N Axes>``, ``<… object>``) that stand alone or
    beside the richer output they describe. ``places`` maps absolute folders of the machine that ran it to
    the names a reader knows (``artifacts/demo``); they are rewritten in sources and text outputs."""
    nb = copy.deepcopy(nb)
    nb.metadata.pop("widgets", None)
    nb.metadata.pop("papermill", None)          # input/output paths of the machine that ran it
    places = places or {}
    for cell in nb.cells:
        cell.source = _relative(_text(cell.source), places)
        if cell.cell_type != "code":
            continue
        kept = []
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                out.text = _relative(_text(out.text), places)
            for kind in ("text/plain", "text/markdown", "text/html"):
                if kind in out.get("data", {}):
                    out.data[kind] = _relative(_text(out.data[kind]), places)
            if out.output_type == "stream" and out.name == "stderr":
                out.text = _stderr_kept(out.text)
                if not out.text:
                    continue
            elif out.output_type in ("display_data", "execute_result"):
                data = out.get("data", {})
                if any(k.startswith("application/vnd.jupyter.widget") for k in data):
                    continue
                if _OBJECT_REPR.match(_text(data.get("text/plain", "")).strip()):
                    data.pop("text/plain")
                    if not data:
                        continue
            kept.append(out)
        cell.outputs = kept
    return nb


def title_of(nb, fallback: str) -> str:
    """The notebook's heading: the first ``# `` line of its first markdown cell (``fallback`` without one)."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in _text(cell.source).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return fallback


def anchor(name: str) -> str:
    """The id of a notebook's section in ``index.html``."""
    return f"nb-{name}"


def _index_markdown(title: str, pages: list[tuple[str, str]], provenance: dict, link) -> str:
    """The report's index: the notebooks in order (linked with ``link(name)``), the run and its substitutes."""
    lines = [f"# {title}", "", "The executed notebooks of this run, in order; every number and figure comes from it.", ""]
    lines += [f"{i}. [{heading}]({link(name)})" for i, (name, heading) in enumerate(pages, 1)]
    run = {k: v for k, v in provenance.items() if not isinstance(v, dict)}
    if run:
        lines += ["", "## The run", "", "| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in run.items()]
    used = provenance.get("substitutes_and_sources") or {}
    if used:
        lines += ["", "## Substitutes and sources", "", "| what | used |", "|---|---|"]
        lines += [f"| {k} | {str(v).replace('|', '/')} |" for k, v in used.items()]
    return "\n".join(lines) + "\n"


def write_report(executed: list[Path], dest, *, title: str, provenance: dict | None = None,
                 places: dict[str, str] | None = None) -> Path:
    """Write the report of the executed notebooks ``executed`` (in this order) into ``dest``; return its
    ``index.html``. ``provenance`` (profile, code version, date, device, ``substitutes_and_sources``) goes
    into the index; ``places`` renames absolute folders (see ``clean``). Every file is written atomically;
    a notebook that cannot be read raises ValueError naming it."""
    import nbformat
    from nbconvert import HTMLExporter, MarkdownExporter

    dest = Path(dest)
    provenance = dict(provenance or {})
    notebooks = []
    for path in executed:
        try:
            nb = nbformat.read(str(path), as_version=4)
        except Exception as e:  # nbformat raises several kinds for a broken file
            raise ValueError(f"cannot read executed notebook {path} ({type(e).__name__}: {e})") from None
        notebooks.append((Path(path).stem, clean(nb, places)))
    if not notebooks:
        raise ValueError("no executed notebooks to report (run the notebooks first)")
    pages = [(name, title_of(nb, name)) for name, nb in notebooks]

    md = MarkdownExporter()
    for name, nb in notebooks:
        body, res = md.from_notebook_node(nb, resources={"unique_key": name, "output_files_dir": f"{name}_files"})
        for rel, data in res.get("outputs", {}).items():
            atomic_write_bytes(dest / rel, data)
        atomic_write_text(dest / f"{name}.md", f"[← index]({INDEX_MD})\n\n{body}")
    atomic_write_text(dest / INDEX_MD, _index_markdown(title, pages, provenance, lambda n: f"{n}.md"))

    whole = nbformat.v4.new_notebook(metadata={**notebooks[0][1].metadata, "title": title})
    whole.cells.append(nbformat.v4.new_markdown_cell(
        _index_markdown(title, pages, provenance, lambda n: f"#{anchor(n)}")))
    for name, nb in notebooks:
        whole.cells.append(nbformat.v4.new_markdown_cell(f'<a id="{anchor(name)}"></a>'))
        whole.cells.extend(nb.cells)
    import jinja2

    html = HTMLExporter(template_name="lab", template_file=_TEMPLATE_NAME, embed_images=True,
                        exclude_input_prompt=True, exclude_output_prompt=True,
                        extra_loaders=[jinja2.DictLoader({_TEMPLATE_NAME: _TEMPLATE})])
    body, _ = html.from_notebook_node(whole)
    atomic_write_text(dest / INDEX_HTML, body)
    return dest / INDEX_HTML
