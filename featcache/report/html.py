"""One self-contained HTML report: conclusion on top, then sections of numbers beside plots.

Images are embedded as base64 ``data:`` URIs and the stylesheet is inline, so
the file can be mailed or archived alone: it loads nothing from anywhere.
"""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

from featcache.files import write_text

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1200px;
color:#222;line-height:1.4;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;border-bottom:1px solid #ddd;
padding-bottom:.2em;margin-top:1.8em}
.meta{color:#666;font-size:.9em}
.conclusion{background:#f4f7fb;border-left:4px solid #2a6ebb;padding:.6em 1.2em;margin:1em 0}
.conclusion li{margin:.35em 0}
.section{display:flex;flex-wrap:wrap;gap:1.5em;align-items:flex-start}
.numbers{flex:1 1 380px;min-width:320px}.plots{flex:1 1 480px}
.plots img{max-width:100%;border:1px solid #eee;margin-bottom:.8em}
table{border-collapse:collapse;font-size:.9em;width:100%}
td,th{border-bottom:1px solid #eee;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#fafafa}td.num{text-align:right;font-variant-numeric:tabular-nums}
p.note{color:#444;font-size:.92em}
"""


@dataclass
class Section:
    """One block of the report: a title, notes, tables (numbers) and plots.

    Attributes
    ----------
    title : str
    notes : list of str, short paragraphs shown above the tables.
    tables : list of (header list, rows list-of-lists); cells are str, int or
        float (floats are shown with 4 significant digits).
    images : list of PNG paths, shown beside the numbers.
    """

    title: str
    notes: list = field(default_factory=list)
    tables: list = field(default_factory=list)
    images: list = field(default_factory=list)


def data_uri(png_path) -> str:
    """A PNG file as a ``data:image/png;base64,...`` URI."""
    data = Path(png_path).read_bytes()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _is_number(text: str) -> bool:
    try:
        float(text.rstrip("%"))
    except ValueError:
        return False
    return True


def _cell(value) -> str:
    """A table cell; floats get 4 significant digits, numbers align right."""
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    cls = ' class="num"' if isinstance(value, (int, float)) or _is_number(text) else ""
    return f"<td{cls}>{html.escape(text)}</td>"


def _table(header, rows) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _section(sec: Section) -> str:
    notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in sec.notes)
    tables = "".join(_table(h, r) for h, r in sec.tables)
    imgs = "".join(f'<img alt="{html.escape(Path(p).stem)}" src="{data_uri(p)}">'
                   for p in sec.images)
    plots = f'<div class="plots">{imgs}</div>' if imgs else ""
    return (f"<h2>{html.escape(sec.title)}</h2><div class=\"section\">"
            f"<div class=\"numbers\">{notes}{tables}</div>{plots}</div>")


def render_html(title: str, conclusion, sections, meta: str = "", extra_html: str = "") -> str:
    """The whole report as one HTML string.

    Parameters
    ----------
    title : str
    conclusion : list of str, plain-language sentences shown first.
    sections : list of Section
    meta : str, one line under the title (data source, settings).
    extra_html : str, trusted HTML (already escaped) appended after the sections.
    """
    items = "".join(f"<li>{html.escape(c)}</li>" for c in conclusion)
    body = "".join(_section(s) for s in sections)
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p class=\"meta\">{html.escape(meta)}</p>"
            f"<div class=\"conclusion\"><strong>Conclusion</strong><ul>{items}</ul></div>"
            f"{body}{extra_html}</body></html>\n")


def write_html(path, title: str, conclusion, sections, meta: str = "") -> Path:
    """Write :func:`render_html` to ``path`` (parent folders are created)."""
    return write_text(path, render_html(title, conclusion, sections, meta))
