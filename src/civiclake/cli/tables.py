"""``civiclake sql``, ``tables``, ``history``, ``rollback``: reading the catalog's tables and
their snapshots. No Prefect: metadata work, and SQL through DuckDB.

The consoles print text verbatim (no markup): a source or path like ``a[s3]b`` shows as is.
"""

from __future__ import annotations

import csv
import sys
from typing import Any

import typer
from rich.table import Table as RichTable

from civiclake.cli._base import (
    LAKE_OPTION,
    OutputFormat,
    count_text,
    lake_settings,
    out,
    print_table,
    user_errors,
    wrote_records,
)
from civiclake.config import Settings
from civiclake.errors import CivicLakeError, ParameterError


@user_errors
def sql(
    query: str = typer.Argument(..., help="SQL for DuckDB; tables as namespace.table."),
    output: OutputFormat = typer.Option(
        OutputFormat.table, "--format", "-f", help="table for people; csv or json for scripts."
    ),
    lake: str | None = LAKE_OPTION,
    as_of: str | None = typer.Option(
        None,
        "--as-of",
        help="Time travel: a snapshot id or a timestamp (2026-12-01T08:00:00Z); every table "
        "the query mentions is read as it was then.",
        show_default=False,
    ),
) -> None:
    """Run SQL (DuckDB) over the catalog's Iceberg tables."""
    from civiclake._private import values
    from civiclake.query import run_sql
    from civiclake.tables.history import parse_as_of

    when = parse_as_of(as_of) if as_of is not None else None
    result = run_sql(query, lake_settings(lake), as_of=when)
    names = result.column_names
    if output is OutputFormat.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(names)
        for batch in result.to_batches():
            for row in batch.to_pylist():
                writer.writerow([values.text_value(row[n]) for n in names])
    elif output is OutputFormat.json:
        rows = result.to_pylist()
        sys.stdout.write(values.dumps([{n: row[n] for n in names} for row in rows]) + "\n")
    else:
        total = result.num_rows
        shown = result.slice(0, SQL_TABLE_ROWS).to_pylist()
        table = RichTable(*(n for n in names))
        for row in shown:
            table.add_row(*(values.text_value(row[n]) for n in names))
        print_table(table)
        note = f"{total:,} row{'s' if total != 1 else ''}"
        if total > len(shown):
            note += (
                f"; the first {len(shown):,} shown, {total - len(shown):,} left out: "
                "use --format csv (or json) for them all"
            )
        out.print(note, style="dim", soft_wrap=True)


SQL_TABLE_ROWS = 1000  # rows a person reads; scripts use --format csv/json (no cap)


@user_errors
def list_tables(
    output: OutputFormat = typer.Option(
        OutputFormat.table, "--format", "-f", help="table for people; csv or json for scripts."
    ),
    lake: str | None = LAKE_OPTION,
) -> None:
    """List tables with row counts, snapshot counts and their last load."""
    from civiclake import tables

    summaries = tables.summarize(tables.load_catalog(lake_settings(lake)))
    records = [
        {
            "table": s.identifier,
            "rows": s.rows,
            "snapshots": s.snapshots,
            "last_load_at": s.last_load_at.isoformat() if s.last_load_at else None,
            "last_run_id": s.last_run_id,
            "last_source": s.last_source,
        }
        for s in summaries
    ]
    if wrote_records(records, _TABLE_FIELDS, output):
        return
    if not summaries:
        out.print("no tables yet: run `civiclake bnt run ...` first")
        return
    table = RichTable("table", "rows", "snapshots", "last load (UTC)", "run", "source")
    table.columns[0].no_wrap = True
    for s in summaries:
        table.add_row(
            s.identifier,
            f"{s.rows:,}",
            str(s.snapshots),
            s.last_load_at.strftime("%Y-%m-%d %H:%M:%S") if s.last_load_at else "",
            (s.last_run_id or "")[:8],
            s.last_source or "",
        )
    print_table(table)


_TABLE_FIELDS = ("table", "rows", "snapshots", "last_load_at", "last_run_id", "last_source")


def _table_arg(settings: Settings, name: str) -> tuple[Any, Any]:
    """The catalog and the table ``namespace.table``, or a one-line error."""
    from civiclake import tables

    if "." not in name.strip("."):
        raise ParameterError(f"{name!r} is not a table name: give namespace.table")
    catalog = tables.load_catalog(settings)
    if not catalog.table_exists(name):
        raise ParameterError(f"no table {name}: `civiclake tables` lists them")
    return catalog, catalog.load_table(name)


@user_errors
def history_command(
    table: str = typer.Argument(..., help="The table, as namespace.table."),
    limit: int | None = typer.Option(
        None, "--limit", min=1, help="Show the newest N snapshots only.", show_default=False
    ),
    output: OutputFormat = typer.Option(
        OutputFormat.table, "--format", "-f", help="table for people; csv or json for scripts."
    ),
    lake: str | None = LAKE_OPTION,
) -> None:
    """One line per snapshot of a table, newest first: what each load did."""
    from civiclake.tables.history import JSON_KEYS, snapshot_history

    _, iceberg = _table_arg(lake_settings(lake), table)
    entries = snapshot_history(iceberg, limit)
    records = [e.as_json() for e in entries]
    if wrote_records(records, JSON_KEYS, output):
        return
    if not entries:
        out.print(f"{table} has no snapshot yet", highlight=False)
        return
    view = RichTable(
        "snapshot",
        "committed (UTC)",
        "operation",
        "run",
        "source",
        "range",
        "added",
        "deleted",
        "total",
        "current",
        title=table,
    )
    view.columns[0].no_wrap = True
    for e in entries:
        view.add_row(
            str(e.snapshot_id),
            e.committed_at.strftime("%Y-%m-%d %H:%M:%S"),
            e.operation,
            (e.run_id or "")[:8],
            e.source or "",
            e.range or "",
            count_text(e.rows_added),
            count_text(e.rows_deleted),
            count_text(e.total_rows),
            e.state,
        )
    print_table(view)


@user_errors
def rollback_command(
    table: str = typer.Argument(..., help="The table, as namespace.table."),
    to: int = typer.Option(..., "--to", help="The snapshot to make current again."),
    yes: bool = typer.Option(
        False,
        "--yes",
        "-y",
        help="Do not ask for confirmation; required when stdin is not a terminal (scripts).",
    ),
    lake: str | None = LAKE_OPTION,
) -> None:
    """Make an earlier snapshot current again (undo a bad load); recorded in the history."""
    from civiclake.tables.history import committed_at, plan_rollback, rollback

    _, iceberg = _table_arg(lake_settings(lake), table)
    plan = plan_rollback(iceberg, table, to)
    summary = plan.target.summary
    rows = int(summary.additional_properties.get("total-records", 0)) if summary else 0
    if not yes:
        if not sys.stdin.isatty():
            raise ParameterError("rollback changes the table: not a terminal, so pass --yes")
        question = (
            f"Roll {table} back from snapshot {plan.current} to {to} "
            f"({committed_at(plan.target):%Y-%m-%d %H:%M:%S} UTC, {rows:,} rows)? "
            f"{plan.undone} later snapshot(s) stop being current"
        )
        if not typer.confirm(question, default=False):
            raise CivicLakeError("rollback cancelled: the table is unchanged")
    rollback(iceberg, plan)
    from civiclake.flows._sync import after_rollback

    warehouses = after_rollback(iceberg, plan.current, to)
    out.print(
        f"{table}: snapshot {to} is current again ({rows:,} rows); "
        f"{plan.undone} later snapshot(s) undone (kept until maintain expires them); "
        f"{warehouses}",
        highlight=False,
        soft_wrap=True,
    )
