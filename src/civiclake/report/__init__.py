"""``civiclake report``: one self-contained HTML page per table, plus an index.

A page is built from SQL aggregates (DuckDB over the table's Parquet files, see ``_source``),
drawn as inline SVG (``charts``) and laid out by ``html``. Which charts a table gets depends on
what it is: ``bnt`` for the B&T table, ``tlc`` for taxi trips, ``profile`` for anything else;
every page ends with the data-quality section (``quality``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from civiclake.config import Settings
from civiclake.errors import ParameterError

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

    from civiclake.report._source import Source
    from civiclake.report.page import Page

__all__ = ["Page", "build_page", "list_identifiers", "write_reports"]


def __getattr__(name: str) -> Any:
    """``Page`` and ``Section`` on first use: the page modules import altair (0.45-0.75 s),
    which a flow's summary artifact (``civiclake.report.artifact``) does not need."""
    if name in ("Page", "Section"):
        from civiclake.report import page

        return getattr(page, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def list_identifiers(catalog: Catalog) -> list[str]:
    """The tables a report covers by default: every table but those never loaded (a first
    load that died before its commit); named, such a table gets its page ("never loaded")."""
    from civiclake.tables import never_loaded

    return sorted(
        ".".join(ident)
        for ns in catalog.list_namespaces()
        for ident in catalog.list_tables(ns)
        if not never_loaded(catalog.load_table(ident))
    )


def _kind(identifier: str) -> str:
    from civiclake.report import bnt, tlc

    if identifier == bnt.TABLE:
        return "bnt"
    if tlc.TABLE_PATTERN.match(identifier):
        return "tlc"
    return "profile"


def _open(
    settings: Settings,
    catalog: Catalog,
    identifier: str,
    since: date | None,
    date_column: str | None = None,
) -> Source:
    from civiclake.report import bnt, tlc
    from civiclake.report._source import open_source

    kind = _kind(identifier)
    joins = (identifier + "_rejects",)
    preferred = date_column
    if kind == "bnt":
        preferred = bnt.TIME_COLUMN
    elif kind == "tlc":
        joins += (tlc.ZONES_TABLE,)
        if preferred is None:
            names = catalog.load_table(identifier).schema().column_names
            preferred = tlc.pickup_column(dict.fromkeys(names, ""))
    return open_source(
        settings, catalog, identifier, joins=joins, time_column=preferred, since=since
    )


def check_date_column(catalog: Catalog, identifiers: list[str], column: str) -> None:
    """``--date-column`` must be a date or timestamp column of every table reported: refused
    before any page is written, rather than silently charting another column."""
    from civiclake.report import bnt
    from civiclake.report._source import date_columns

    for identifier in identifiers:
        if _kind(identifier) == "bnt" and column != bnt.TIME_COLUMN:
            raise ParameterError(
                f"--date-column {column!r}: the page of {identifier} is drawn by its "
                f"{bnt.TIME_COLUMN!r} column; leave --date-column out for it"
            )
        found = date_columns(catalog.load_table(identifier))
        if column not in found:
            raise ParameterError(
                f"--date-column {column!r}: {identifier} has no such date or timestamp column "
                f"(its date columns: {', '.join(found) or 'none'}); name the tables it applies to"
            )


def build_page(
    settings: Settings,
    catalog: Catalog,
    identifier: str,
    since: date | None = None,
    date_column: str | None = None,
) -> Page:
    """Every figure of one table's page (SVG included); nothing is written.

    ``date_column``: the column rows are counted over (default: see ``time_column_of``).
    """
    from civiclake.report import bnt, profile, quality, tlc
    from civiclake.report.page import Page, Section

    kind = _kind(identifier)
    source = _open(settings, catalog, identifier, since, date_column)
    try:
        rows = int(source.one("SELECT count(*) FROM t") or 0)
        page = Page(identifier, kind, rows, since=since.isoformat() if since else None)
        if rows == 0:
            empty = "the table is empty" if since is None else f"no rows since {since}"
            page.notes.append(f"{empty}: nothing to chart")
            page.sections.append(Section("Data", notes=[f"{empty}."]))
        elif kind == "bnt":
            page.sections.extend(bnt.sections(source))
        elif kind == "tlc" and source.time_column:
            page.sections.extend(tlc.sections(source))
        else:
            page.sections.extend(profile.sections(source))
        if rows == 1:
            page.notes.append("one row only: distributions and trends say little")
        page.sections.append(quality.section(source))
        return page
    finally:
        source.close()


def write_reports(
    settings: Settings,
    catalog: Catalog,
    identifiers: list[str] | None,
    out_dir: Path,
    since: date | None = None,
    on_page: Callable[[Path], None] | None = None,
    date_column: str | None = None,
) -> tuple[Path, list[Page]]:
    """Write a page per table (default: all) and ``index.html``; returns the index's path."""
    from civiclake.report import quality
    from civiclake.report.html import index_html, page_html

    known = list_identifiers(catalog)
    wanted = identifiers or known
    missing = [i for i in wanted if i not in known and not catalog.table_exists(i)]
    if missing:
        raise ParameterError(
            f"no table {missing[0]!r} in the catalog (tables: {', '.join(known) or 'none yet'})"
        )
    if date_column is not None:
        check_date_column(catalog, wanted, date_column)
    out_dir.mkdir(parents=True, exist_ok=True)
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    pages: list[Page] = []
    entries = []
    for identifier in wanted:
        page = build_page(settings, catalog, identifier, since, date_column)
        path = out_dir / page.file_name
        _write(path, page_html(page, generated))
        pages.append(page)
        history = quality.snapshot_history(catalog.load_table(identifier))
        entries.append(
            {
                "table": identifier,
                "file": page.file_name,
                "rows": page.rows,
                "snapshots": len(history),
                "last_load": history[-1]["committed_at"] if history else None,
                "kind": page.kind,
            }
        )
        if on_page:
            on_page(path)
    index = out_dir / "index.html"
    _write(index, index_html(entries, generated))
    return index, pages


def _write(path: Path, text: str) -> None:
    """Whole or not at all: a reader never opens half a page."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
