"""Publishing a run: its figures and tables copied into ``figures/<profile>/`` with a PROVENANCE.json and the
executed notebooks as a report (``publish``), and the README's results block rewritten from them
(``update_readme``). ``python -m thermsr_utils.run --publish`` (or ``--publish-only``) calls both.
"""
from __future__ import annotations

import datetime
import time
from pathlib import Path

from . import config, report
from .notebook import discover, read_cache, record_time

# What a published folder holds beside the figures (from the run's results folder)
PUBLISHED_RESULTS = ("table_*.md", "table_*.csv", "recommendation.md", "findings.md", "frontier.md", "headline.md",
                     "nose_noise_floor.json", "downstream_aware.md")
# What the notebooks beyond the write-up (config.BEYOND_FROM on) add: published only while their execution is current
BEYOND_FILES = ("table_v3*", "table_self_ensemble*", "table_x8*", "v3_*.png", "x8_*.png", "downstream_aware.md")
# The README's results block of a profile lies between these markers; `--publish` rewrites it.
README_START = "<!-- results: figures/{profile} (written by --publish; a test keeps it equal to the published files) -->"
README_END = "<!-- end results -->"
# What the report and the README open with: notebook 06's four findings and 07's frontier, with what to look at
HEADLINE_FILE = "headline.md"
HEADLINE_FIGURE = "frontier.png"
HEADLINE_CAPTION = ("The perception–distortion frontier. Left: LPIPS (down: perceptually closer to the HR) against "
                    "PSNR (right: less distortion), each model with its 95 % intervals; the star is v2 at the "
                    "write-up's λ, the other blue points v2 at other λ, the orange ones weight blends, and a point "
                    "down and to the right of another is better on both. Middle: the same against DISTS, a measure "
                    "v2 was not trained on. Right: the nose error of the landmark model.")


def timings_markdown(timings: dict, device: str = "") -> str:
    """The run's wall time per notebook (and the report) with each one's three longest phases, as Markdown."""
    seconds, phases = timings.get("seconds", {}), timings.get("phases", {})

    def top(key):
        ranked = sorted(phases.get(key, {}).items(), key=lambda kv: -kv[1])[:3]
        return ", ".join(f"{name} {value:.0f} s" for name, value in ranked) or "–"
    from .io import markdown_table

    rows = [(key, f"{value:.0f}", top(key)) for key, value in seconds.items()]
    rows.append(("**total**", f"**{sum(seconds.values()):.0f}** ({sum(seconds.values()) / 60:.1f} min)", ""))
    return (f"### Where the time went ({device or 'this machine'})\n\n"
            + markdown_table(("step", "seconds", "longest phases"), rows))


def readme_block(figures_dir: Path) -> str:
    """The README's results block for a published folder: a link to its report where one was published, the run's
    four findings, the headline figure, links to the full findings and tables, and the run's wall time."""
    import json

    figures_dir = Path(figures_dir)
    where = f"figures/{figures_dir.name}"
    parts = []
    if (figures_dir / REPORT_DIR / "README.md").is_file():
        parts.append(f"**Read the study as it ran:** [the report]({where}/{REPORT_DIR}/index.html) (one self-contained "
                     f"page; download and open it, it needs no network) or [one page per notebook]"
                     f"({where}/{REPORT_DIR}/README.md).")
    if (figures_dir / HEADLINE_FILE).is_file():
        parts.append(f"**What the {figures_dir.name} run found:**\n\n" + (figures_dir / HEADLINE_FILE).read_text().strip())
    if (figures_dir / HEADLINE_FIGURE).is_file():
        parts.append(f"![the perception–distortion frontier]({where}/{HEADLINE_FIGURE})\n\n*{HEADLINE_CAPTION}*")
    more = [f"[{name}]({where}/{name})" for name in ("findings.md", "recommendation.md", "frontier.md", "table_v2.md",
                                                     "downstream_aware.md") if (figures_dir / name).is_file()]
    if more:
        parts.append("In full: " + ", ".join(more) + ".")
    prov_file = figures_dir / "PROVENANCE.json"
    prov = json.loads(prov_file.read_text()) if prov_file.is_file() else {}
    seconds = prov.get("timings", {}).get("seconds", {})
    beyond = {k: v for k, v in seconds.items() if k[:2].isdigit() and k[:2] >= config.BEYOND_FROM}
    if seconds:
        extra = (f"; notebook{'s' if len(beyond) > 1 else ''} {', '.join(k[:2] for k in beyond)}, beyond the write-up "
                 f"(`make beyond`), took {sum(beyond.values()) / 60:.1f} min more" if beyond else "")
        parts.append(f"The run took {(sum(seconds.values()) - sum(beyond.values())) / 60:.1f} min on "
                     f"{prov.get('device') or 'this machine'}{extra} (per notebook: the report's provenance appendix).")
    return "\n\n".join(parts)


def update_readme(profile: str, readme: Path | None = None, figures_root: Path | None = None) -> bool:
    """Rewrite the results block of ``profile`` in the README from its published files; False when the README
    has no block for it. Written atomically."""
    from .io import atomic_write_text

    readme = Path(readme or config.REPO_ROOT / "README.md")
    start = README_START.format(profile=profile)
    text = readme.read_text() if readme.is_file() else ""
    if start not in text or README_END not in text[text.index(start):]:
        return False
    head, rest = text.split(start, 1)
    tail = rest[rest.index(README_END):]
    block = readme_block(Path(figures_root or config.FIGURES_DIR) / profile)
    atomic_write_text(readme, f"{head}{start}\n{block}\n{tail}")
    return True


REPORT_DIR = "report"


def publish(profile: str, dest_root: Path | None = None) -> Path:
    """Copy the profile's figures and tables into ``figures/<profile>/`` with a PROVENANCE.json, and the executed
    notebooks as a report into ``figures/<profile>/report/`` (``report.write_report``).

    The folder is assembled beside its destination and swapped in whole, so a reader never finds a mix of
    two runs' figures.
    """
    import platform
    import shutil

    from .io import atomic_write_json, file_sha256

    paths = config.run_paths(profile)
    current, notebooks = read_cache(paths), discover()
    executed = [paths.executed / f"{nb.name}.ipynb" for nb in notebooks if nb.name in current]
    stale = set()
    if not all(nb.name in current for nb in notebooks if nb.number >= config.BEYOND_FROM):
        stale = {f for pattern in BEYOND_FILES for f in (*paths.figures.glob(pattern), *paths.results.glob(pattern))}
    files = sorted(paths.figures.glob("*.png"))
    for pattern in PUBLISHED_RESULTS:
        files += sorted(paths.results.glob(pattern))
    files = [f for f in files if f not in stale]
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
    provenance = {
        "profile": profile, "code_version": config.code_version(),
        "date": datetime.date.today().isoformat(), "device": device,
        "data_manifest_sha256": file_sha256(paths.manifest) if paths.manifest.exists() else None,
        "substitutes_and_sources": {k: v for k, v in config.provenance(paths).items() if k != "timings"},
        "files": [f.name for f in files],
        "note": "demo and smoke figures come from synthetic data and offline stand-ins; see substitutes_and_sources"
        if profile != "paper" else "paper profile",
    }
    t0 = time.perf_counter()
    run_times = config.provenance(paths).get("timings") or {}
    if any(p.is_file() for p in executed):   # the executed narrative, readable without running it
        report.write_report([p for p in executed if p.is_file()], staging / REPORT_DIR,
                            title=f"thermsr: the study as executed ({profile} profile)",
                            provenance={k: v for k, v in provenance.items() if k not in ("files", "note")},
                            headline=(paths.results / HEADLINE_FILE).read_text()
                            if (paths.results / HEADLINE_FILE).is_file() else "",
                            headline_figure=staging / HEADLINE_FIGURE, figure_caption=HEADLINE_CAPTION,
                            timings=timings_markdown(run_times, device) if run_times.get("seconds") else "",
                            places={str(paths.root): f"artifacts/{profile}", str(config.artifacts_root()): "artifacts",
                                    str(config.data_root()): "data", str(config.REPO_ROOT): "."})
    record_time(paths, "report", time.perf_counter() - t0)
    provenance["timings"] = config.provenance(paths).get("timings")
    atomic_write_json(staging / "PROVENANCE.json", provenance)
    old = dest.with_name(f".{profile}.old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    staging.rename(dest)
    shutil.rmtree(old, ignore_errors=True)
    return dest
