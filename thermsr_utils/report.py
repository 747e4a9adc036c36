"""The executed notebooks as a report a reader opens without running anything (made with nbconvert).

``write_report`` turns the executed notebooks of a run, in order, into a folder with

* ``<name>.md``, one Markdown page per notebook with its figures beside it in ``<name>_files/`` (GitHub renders
  these pages), and ``README.md``, their index (GitHub shows it when the folder is opened);
* ``index.html``, the whole study in one self-contained file; its figures are embedded and it fetches no
  script or style sheet from anywhere (no MathJax, RequireJS or widget manager), so it opens offline.

Both open on the same first screen: one sentence that says what the run is (``banner``), the run's findings in
four lines (the ``headline`` notebook 06 writes) and the headline figure; then the notebooks in order, each
page opening with the same sentence (the references close notebook 07); then one provenance appendix, to which
the captions of tables and figures point.

A reader sees prose, tables and figures: code cells are folded (``<details>``, one click opens them), the
notebook's defaults and the values the runner injected are shown as one parameters cell, and reader-noise is
stripped (``clean``): every stderr stream (progress bars, the kernel's chatter, warnings), widget outputs, and
the text reprs that stand for an object (``<Figure size 990x352 with 2 Axes>``). The numbers are the run's, as
the notebooks computed them.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path

from .io import atomic_write_bytes, atomic_write_text

INDEX_HTML = "index.html"
INDEX_MD = "README.md"
BANNER_ID = "thermsr-banner"
HEADLINE_ID = "thermsr-headline"
PROVENANCE_ID = "provenance"

# a text/plain output that only names an object another output shows (or that shows nothing)
_OBJECT_REPR = re.compile(r"^(?:\[)?'?<(?:Figure size [^>]* with \d+ Axes|[\w.]+ object(?: at 0x[0-9a-f]+)?)>'?"
                          r"(?:\])?$")

_CSS = """
<style>
#thermsr-banner { border: 2px solid #b35900; background: #fff7ee; padding: 0.6em 1.2em; margin: 0.5em 0 1em 0; }
#thermsr-banner img { max-width: 100%; }
.jp-RenderedMarkdown blockquote { border-left: 4px solid #b35900; background: #fff7ee; padding: 0.3em 0.8em; }
details.thermsr-code > summary { cursor: pointer; color: #666; font-size: 0.85em; margin: 0.2em 0 0.2em 0.5em; }
</style>
"""

# lab's page without its remote scripts (the report must open offline and fetch nothing), code folded
_TEMPLATE_NAME = "thermsr_report.html.j2"
_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{% block extra_css %}""" + _CSS + """{% endblock extra_css %}
{% block body_header %}{{ super() }}{{ resources.get("thermsr_first_screen", "") }}{% endblock body_header %}
{% block input_group -%}
<details class="thermsr-code"><summary>code</summary>
{{ super() }}
</details>
{%- endblock input_group %}
"""
_MD_TEMPLATE_NAME = "thermsr_report.md.j2"
_MD_TEMPLATE = """{%- extends 'markdown/index.md.j2' -%}
{% block input %}
<details><summary>code</summary>

{{ super() }}
</details>
{% endblock input %}
"""


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def _relative(text: str, places: dict[str, str]) -> str:
    """``text`` with each absolute folder of ``places`` (longest first) written as its name there."""
    for where in sorted(places, key=len, reverse=True):
        text = text.replace(where, places[where])
    return text


def _assignments(source: str) -> dict[str, tuple[int, int, str]]:
    """{name: (first line, last line, value source)} of the top-level ``name = value`` statements of ``source``
    (lines 0-based); {} when it does not parse."""
    import ast

    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    return {node.targets[0].id: (node.lineno - 1, node.end_lineno - 1, ast.get_source_segment(source, node.value))
            for node in tree.body if isinstance(node, ast.Assign) and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)}


def _comments(source: str) -> dict[int, str]:
    """{line (0-based): the text of its ``#`` comment} of ``source``."""
    import io
    import tokenize

    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError):
        return {}
    return {t.start[0] - 1: t.string.lstrip("#").strip() for t in tokens if t.type == tokenize.COMMENT}


def one_parameters_cell(nb):
    """``nb`` with its ``parameters`` cell (the notebook's defaults) and papermill's ``injected-parameters`` cell
    shown as one: each injected value that differs from the default replaces it, the line saying so
    (``# this run; the notebook's default: …``); injected names the defaults lack are appended."""
    tagged = {tag: i for i, c in enumerate(nb.cells) for tag in c.get("metadata", {}).get("tags", [])}
    if "parameters" not in tagged or "injected-parameters" not in tagged:
        return nb
    cell, injected = nb.cells[tagged["parameters"]], nb.cells[tagged["injected-parameters"]]
    source = _text(cell.source)
    lines, defaults, comments = source.splitlines(), _assignments(source), _comments(source)
    extra = []
    for name, (_, _, value) in _assignments(_text(injected.source)).items():
        if name not in defaults:
            extra.append(f"{name} = {value}  # set by the runner")
            continue
        first, last, default = defaults[name]
        if value != default:
            why = f" ({comments[last]})" if last in comments else ""
            lines[first:last + 1] = ([f"{name} = {value}  # this run; the notebook's default: {' '.join(default.split())}"
                                      f"{why}"] + [None] * (last - first))
    cell.source = "\n".join([line for line in lines if line is not None] + extra)
    del nb.cells[tagged["injected-parameters"]]
    return nb


def clean(nb, places: dict[str, str] | None = None):
    """A copy of notebook ``nb`` (nbformat) without reader-noise: every stderr stream (progress bars, kernel
    warnings), widget outputs, object reprs (``<Figure size … with N Axes>``, ``<… object>``) that stand alone
    or beside the richer output they describe, and a second parameters cell (``one_parameters_cell``).
    ``places`` maps absolute folders of the machine that ran it to the names a reader knows
    (``artifacts/demo``); they are rewritten in sources and text outputs."""
    nb = one_parameters_cell(copy.deepcopy(nb))
    nb.metadata.pop("widgets", None)
    nb.metadata.pop("papermill", None)          # input/output paths of the machine that ran it
    places = places or {}
    for cell in nb.cells:
        cell.source = _relative(_text(cell.source), places)
        if cell.cell_type != "code":
            continue
        kept = []
        for out in cell.get("outputs", []):
            if out.output_type == "stream" and out.name == "stderr":
                continue
            if out.output_type == "stream":
                out.text = _relative(_text(out.text), places)
            for kind in ("text/plain", "text/markdown", "text/html"):
                if kind in out.get("data", {}):
                    out.data[kind] = _relative(_text(out.data[kind]), places)
            if out.output_type in ("display_data", "execute_result"):
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


def _head(value) -> str:
    """The name part of a provenance entry: its text before the first parenthesis."""
    return str(value).split(" (")[0].strip()


def banner(provenance: dict) -> str:
    """One sentence that says what the run is: its profile, data, network and where its weights came from, the
    recipes' schedule, the perceptual metrics, the nose models and the machine, from the run's provenance."""
    used = provenance.get("substitutes_and_sources") or {}
    sentence = f"**This is the {provenance.get('profile', '?')} profile's run**"
    if used.get("data"):
        sentence += f" on {used['data']}"
    if used.get("v1"):
        net, _, schedule = str(used["v1"]).partition(", ")
        sentence += f": {net} finetuned ({schedule})"
        pins = [re.search(r"[\w.-]+==[\w.]+", part) for part in str(used.get("zero_shot_weights", "")).split(";")
                if part.strip().startswith(f"{net}:")]
        if pins and pins[0]:
            sentence += f" from its pretrained weights in {pins[0].group(0)}"
    metrics = [_head(used[k]) for k in ("lpips", "dists") if used.get(k)]
    if metrics:
        sentence += f"; perceptual distances {' and '.join(metrics)}"
    noses = [_head(used[k]) for k in ("nose_locator", "nose_locator2") if used.get(k)]
    if noses:
        sentence += f"; nose models {' and '.join(noses)}"
    if provenance.get("device"):
        sentence += f"; run on {provenance['device']}"
    return sentence + f". Every source and checksum is in the [provenance appendix](#{PROVENANCE_ID})."


def _provenance_markdown(provenance: dict) -> str:
    """The provenance appendix: the run's facts, then each substitute and source in full."""
    run = {k: v for k, v in provenance.items() if not isinstance(v, (dict, list))}
    lines = [f'<a id="{PROVENANCE_ID}"></a>', "", "## Appendix: provenance", "",
             "What produced every number of this report; the captions of its tables and figures point here. "
             "The same facts are in `PROVENANCE.json` beside the published figures.", ""]
    if run:
        lines += ["| the run | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in run.items()]
    used = provenance.get("substitutes_and_sources") or {}
    if used:
        lines += ["", "| what | used |", "|---|---|"]
        lines += [f"| {k.replace('_', ' ')} | {str(v).replace('|', '/')} |" for k, v in used.items()]
    return "\n".join(lines) + "\n"


def _first_screen(provenance: dict, headline: str, figure: str | None, figure_caption: str) -> str:
    """The report's opening under its title, in Markdown: the banner sentence, the four findings and the headline
    figure (``figure``: a link, or a data URI for the HTML page)."""
    box = [banner(provenance), "", "**What this run found** (differences with 95 % intervals over subjects and "
           "frames; a verdict of better or worse means the interval excludes zero):", "", headline.strip()]
    if figure:
        box += ["", f'<img id="{HEADLINE_ID}" src="{figure}" alt="the perception–distortion frontier" width="100%">',
                "", f"*{figure_caption}*"]
    return "\n".join(box) + "\n"


def _contents(pages: list[tuple[str, str]], link) -> str:
    """The notebooks in order, linked with ``link(name)``."""
    lines = ["## The notebooks", "", "The executed notebooks of this run, in order; every number and figure comes "
             "from it. Code is folded (open it with a click); each notebook ends with a summary of what it found.", ""]
    lines += [f"{i}. [{heading}]({link(name)})" for i, (name, heading) in enumerate(pages, 1)]
    return "\n".join(lines) + "\n"


def _html_box(markdown_text: str, element_id: str) -> str:
    """``markdown_text`` rendered as one HTML block with id ``element_id`` (put into the page by the template)."""
    from nbconvert.filters.markdown import markdown2html

    return f'<div id="{element_id}" class="jp-RenderedHTMLCommon">\n{markdown2html(markdown_text)}\n</div>'


def _data_uri(path: Path) -> str:
    import base64

    kind = "png" if path.suffix.lower() == ".png" else "jpeg"
    return f"data:image/{kind};base64,{base64.b64encode(path.read_bytes()).decode()}"


def _read_notebooks(executed: list[Path], places) -> list[tuple[str, object]]:
    import nbformat

    notebooks = []
    for path in executed:
        try:
            nb = nbformat.read(str(path), as_version=4)
        except Exception as e:  # nbformat raises several kinds for a broken file
            raise ValueError(f"cannot read executed notebook {path} ({type(e).__name__}: {e})") from None
        notebooks.append((Path(path).stem, clean(nb, places)))
    if not notebooks:
        raise ValueError("no executed notebooks to report (run the notebooks first)")
    return notebooks


def write_report(executed: list[Path], dest, *, title: str, provenance: dict | None = None,
                 places: dict[str, str] | None = None, headline: str = "", headline_figure: Path | None = None,
                 figure_caption: str = "", timings: str = "") -> Path:
    """Write the report of the executed notebooks ``executed`` (in this order) into ``dest``; return its
    ``index.html``. ``provenance`` (profile, code version, date, device, ``substitutes_and_sources``) gives the
    banner sentence and the appendix; ``headline`` (Markdown lines) and ``headline_figure`` (an image file, with
    ``figure_caption`` saying what to look at) make the first screen; ``timings`` (Markdown) joins the appendix;
    ``places`` renames absolute folders (see
    ``clean``). Every file is written atomically; a notebook that cannot be read raises ValueError naming it."""
    import jinja2
    import nbformat
    from nbconvert import HTMLExporter, MarkdownExporter

    dest = Path(dest)
    provenance = dict(provenance or {})
    notebooks = _read_notebooks(executed, places)
    pages = [(name, title_of(nb, name)) for name, nb in notebooks]
    line = banner(provenance)
    tail = _provenance_markdown(provenance) + (f"\n{timings}\n" if timings else "")
    figure = Path(headline_figure) if headline_figure and Path(headline_figure).is_file() else None

    md = MarkdownExporter(template_file=_MD_TEMPLATE_NAME,
                          extra_loaders=[jinja2.DictLoader({_MD_TEMPLATE_NAME: _MD_TEMPLATE})])
    for name, nb in notebooks:
        body, res = md.from_notebook_node(nb, resources={"unique_key": name, "output_files_dir": f"{name}_files"})
        for rel, data in res.get("outputs", {}).items():
            atomic_write_bytes(dest / rel, data)
        opening = line.replace(f"(#{PROVENANCE_ID})", f"({INDEX_MD}#{PROVENANCE_ID})")
        atomic_write_text(dest / f"{name}.md", f"[← index]({INDEX_MD})\n\n> {opening}\n\n{body}")
    first = _first_screen(provenance, headline, f"../{figure.name}" if figure else None, figure_caption)
    atomic_write_text(dest / INDEX_MD, "\n".join([f"# {title}", "", first, _contents(pages, lambda n: f"{n}.md"),
                                                  tail]))

    new_md = nbformat.v4.new_markdown_cell
    whole = nbformat.v4.new_notebook(metadata={**notebooks[0][1].metadata, "title": title})
    whole.cells.append(new_md(_contents(pages, lambda n: f"#{anchor(n)}")))
    for name, nb in notebooks:        # each notebook opens with the banner sentence (a quote styled as a box)
        whole.cells.append(new_md(f'<a id="{anchor(name)}"></a>\n\n> {line}'))
        whole.cells.extend(nb.cells)
    whole.cells.append(new_md(tail))
    html = HTMLExporter(template_name="lab", template_file=_TEMPLATE_NAME, embed_images=True,
                        exclude_input_prompt=True, exclude_output_prompt=True,
                        extra_loaders=[jinja2.DictLoader({_TEMPLATE_NAME: _TEMPLATE})])
    first = _first_screen(provenance, headline, _data_uri(figure) if figure else None, figure_caption)
    opening = f'<div class="jp-Cell"><h1>{title}</h1>{_html_box(first, BANNER_ID)}</div>'
    body, _ = html.from_notebook_node(whole, resources={"thermsr_first_screen": opening})
    atomic_write_text(dest / INDEX_HTML, body)
    return dest / INDEX_HTML
