"""The HTML of a page and of the index: one file each, styles inline, charts as inline SVG,
no script, no link to anything outside the page (it opens from disk, offline)."""

from __future__ import annotations

import math
from decimal import Decimal
from html import escape
from typing import Any

from civiclake.report.charts import Chart
from civiclake.report.page import Page, Section, TableBlock

STYLE = """
body{font-family:"DejaVu Sans",Helvetica,Arial,sans-serif;margin:2rem auto;max-width:1100px;
color:#1f2933;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{border-bottom:1px solid #d9e2ec;padding-bottom:.3rem;
margin-top:2.2rem}h3{font-size:1rem;margin:1.2rem 0 .4rem}
.meta{color:#52606d}.note{color:#7b8794;font-style:italic;margin:.2rem 0}
table{border-collapse:collapse;font-size:.85rem;margin:.4rem 0}
td,th{border:1px solid #d9e2ec;padding:.2rem .5rem;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}th{background:#f0f4f8}
.chart svg{max-width:100%;height:auto}a{color:#2f6fb0}
"""


def number_text(value: int | float | Decimal) -> str:
    """A figure as an analyst reads it: fixed notation with thousands separators, every digit
    kept (``900,000``, ``1,100,000,000.5``), never ``9e+05``; no trailing zeros."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        value = Decimal(repr(value))  # the shortest text that is this float
    if isinstance(value, Decimal):
        if not value.is_finite():
            return str(value)
        text = format(value, ",f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    return f"{value:,}"


def _cell(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return f"<td>{'' if value is None else escape(str(value))}</td>"
    if isinstance(value, int | float | Decimal):  # ids are kept as text upstream
        return f'<td class="num">{number_text(value)}</td>'
    return f"<td>{escape(str(value))}</td>"


def table_html(records: list[dict[str, Any]]) -> str:
    if not records:
        return ""
    names = list(records[0])
    head = "".join(f"<th>{escape(n)}</th>" for n in names)
    body = "".join("<tr>" + "".join(_cell(r.get(n)) for n in names) + "</tr>" for r in records)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _item(item: Chart | TableBlock) -> str:
    parts = [f'<div class="item" id="{escape(item.key)}"><h3>{escape(item.title)}</h3>']
    if isinstance(item, Chart):
        if item.svg:
            parts.append(f'<div class="chart">{item.svg}</div>')
    else:
        parts.append(table_html(item.records))
    if item.note:
        parts.append(f'<p class="note">{escape(item.note)}</p>')
    parts.append("</div>")
    return "".join(parts)


def _section(section: Section) -> str:
    notes = "".join(f'<p class="note">{escape(n)}</p>' for n in section.notes)
    items = "".join(_item(i) for i in section.items)
    return f"<section><h2>{escape(section.title)}</h2>{notes}{items}</section>"


def _document(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        # no request may leave the page, whatever a chart's SVG holds
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; img-src data:\">"
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>{body}</body></html>"
    )


def page_html(page: Page, generated_at: str) -> str:
    since = f", rows since {escape(page.since)}" if page.since else ""
    notes = "".join(f'<p class="note">{escape(n)}</p>' for n in page.notes)
    body = (
        '<p><a href="index.html">all tables</a></p>'
        f"<h1>{escape(page.identifier)}</h1>"
        f'<p class="meta">{page.rows:,} rows{since} · generated {escape(generated_at)}</p>'
        f"{notes}" + "".join(_section(s) for s in page.sections)
    )
    return _document(f"{page.identifier} · civiclake report", body)


def index_html(entries: list[dict[str, Any]], generated_at: str) -> str:
    rows = "".join(
        "<tr>"
        f'<td><a href="{escape(e["file"])}">{escape(e["table"])}</a></td>'
        f'<td class="num">{e["rows"]:,}</td><td class="num">{e["snapshots"]:,}</td>'
        f"<td>{escape(e['last_load'] or '')}</td><td>{escape(e['kind'])}</td></tr>"
        for e in entries
    )
    body = (
        "<h1>civiclake tables</h1>"
        f'<p class="meta">generated {escape(generated_at)}</p>'
        "<table><thead><tr><th>table</th><th>rows</th><th>snapshots</th>"
        f"<th>last load (UTC)</th><th>page</th></tr></thead><tbody>{rows}</tbody></table>"
    )
    return _document("civiclake report", body)
