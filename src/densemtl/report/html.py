"""One self-contained HTML page: the report's tables and its PNG plots embedded as base64."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence

from densemtl.report.tables import Section, Table

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 80em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f2f2f2; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.note { color: #555; font-size: 0.85em; }
td.best { font-weight: bold; background: #e6f4ea; }
"""


BEST = ' class="best"'


def table_html(table: Table) -> str:
    """A :class:`Table` as an HTML table (escaped) under its title; each column's best value is
    a ``td.best`` cell (bold, shaded)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    body = "".join(
        "<tr>" + "".join(
            f"<td{BEST if (i, j) in table.best else ''}>{html.escape(str(c))}</td>"
            for j, c in enumerate(row)
        ) + "</tr>"
        for i, row in enumerate(table.rows)
    )
    best = " Best value per column in bold." if table.best else ""
    note = (f'<p class="note">{html.escape(table.note + best)}</p>'
            if table.note or best else "")
    return (f"<h3>{html.escape(table.title)}</h3>\n<table><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>{note}")


def section_html(section: Section) -> str:
    """A :class:`Section`: heading, tables, images inlined as ``data:`` URIs, paragraphs."""
    parts = [f"<h2>{html.escape(section.heading)}</h2>"]
    parts += [table_html(t) for t in section.tables]
    for path in section.images:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        parts.append(f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">')
    parts += [f"<p>{html.escape(p)}</p>" for p in section.text]
    return "\n".join(parts)


def render_html(title: str, sections: Sequence[Section]) -> str:
    """The whole page; it references no other file, so it can be mailed or archived alone."""
    body = "\n".join(section_html(s) for s in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n"
            f"<body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n")
