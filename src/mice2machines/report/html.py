"""The HTML report: one self-contained page (images inlined) from the figure registry.

Captions and the workflow description are reStructuredText files of workflow/report,
rendered with docutils (a dependency of Snakemake); the page needs no network to open.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from .registry import FigureSpec

STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figure { margin: 1.5em 0 2.5em; }
figcaption { font-size: 0.92em; color: #333; }
table { border-collapse: collapse; font-size: 0.88em; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; }
nav a { margin-right: 1em; }
.files a { font-size: 0.85em; margin-right: 0.8em; }
"""


def rst_html(text: str) -> str:
    """The body of reStructuredText as HTML (plain paragraphs if docutils is missing)."""
    try:
        from docutils.core import publish_parts
    except ImportError:  # pragma: no cover - docutils comes with snakemake
        return "".join(f"<p>{html.escape(p)}</p>" for p in text.split("\n\n"))
    parts = publish_parts(
        text, writer_name="html", settings_overrides={"report_level": 4, "halt_level": 5}
    )
    return parts["body"]


def _anchor(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def _image(png: Path) -> str:
    data = base64.b64encode(png.read_bytes()).decode()
    return f"data:image/png;base64,{data}"


def table_html(df: pd.DataFrame, caption: str) -> str:
    """A table with a caption line above it."""
    body = df.to_html(index=False, escape=True, border=0, classes="table")
    return f"<div class='tbl'><p>{caption}</p>{body}</div>"


def render(
    specs: Sequence[FigureSpec],
    results: str | Path,
    captions: str | Path,
    title: str = "mice2machines report",
    tables: Mapping[str, str] | None = None,
) -> str:
    """The report page: the workflow description (captions/workflow.rst), then each
    section's figures in registry order (PNG inlined, links to the PNG and SVG files),
    with ``tables`` (section -> HTML) after that section's figures."""
    captions = Path(captions)
    tables = dict(tables or {})
    sections = list(dict.fromkeys([s.section for s in specs] + list(tables)))
    out = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<nav>" + "".join(f"<a href='#{_anchor(s)}'>{html.escape(s)}</a>" for s in sections),
        "</nav>",
        "<section id='workflow'><h2>Workflow</h2>",
        rst_html((captions / "workflow.rst").read_text()),
        "</section>",
    ]
    for section in sections:
        out.append(f"<section id='{_anchor(section)}'><h2>{html.escape(section)}</h2>")
        for spec in (s for s in specs if s.section == section):
            png = spec.png(results)
            rel = [f.relative_to(results) for f in spec.files(results)]
            links = "".join(f"<a href='{f.as_posix()}'>{f.suffix[1:].upper()}</a>" for f in rel)
            out += [
                f"<figure id='fig-{spec.name}' data-figure='{spec.name}'>",
                f"<h3>{html.escape(spec.title)}</h3>",
                f"<img alt='{html.escape(spec.title)}' src='{_image(png)}'>",
                "<figcaption>",
                rst_html((captions / spec.caption).read_text()),
                f"<div class='files'>{links}</div></figcaption></figure>",
            ]
        if section in tables:
            out.append(tables[section])
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out)
