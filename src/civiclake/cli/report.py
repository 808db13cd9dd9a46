"""``civiclake report``: offline HTML pages of charts and data quality."""

from __future__ import annotations

from pathlib import Path

import typer

from civiclake.cli._base import LAKE_OPTION, lake_settings, out, parse_date, user_errors
from civiclake.errors import ParameterError


@user_errors
def report(
    table_names: list[str] = typer.Argument(
        None, metavar="TABLE", help="Tables as namespace.table [default: every table]."
    ),
    out_dir: str | None = typer.Option(
        None, "--out", help="Folder for the pages [default: $CIVICLAKE_HOME/reports]."
    ),
    since: str | None = typer.Option(
        None, "--since", help="Chart only rows on or after this date (YYYY-MM-DD)."
    ),
    date_column: str | None = typer.Option(
        None,
        "--date-column",
        metavar="COLUMN",
        help="Date or timestamp column to chart rows over and filter --since on "
        "[default: the time partition column, else the first non-system one].",
    ),
    lake: str | None = LAKE_OPTION,
) -> None:
    """Write an HTML page of charts and data quality per table, plus index.html (offline)."""
    from civiclake import tables
    from civiclake.report import write_reports

    start = parse_date("--since", since)
    settings = lake_settings(lake)
    folder = Path(out_dir).expanduser() if out_dir else settings.home_dir / "reports"
    if any(p.exists() and not p.is_dir() for p in (folder, *folder.parents)):
        raise ParameterError(f"--out {folder}: not a directory (give a folder for the pages)")
    index, _ = write_reports(
        settings,
        tables.load_catalog(settings),
        list(table_names or []),
        folder,
        since=start,
        on_page=lambda path: out.print(str(path), soft_wrap=True),
        date_column=date_column,
    )
    out.print(str(index), soft_wrap=True)
