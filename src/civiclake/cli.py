"""The ``civiclake`` command.

Commands that run no flow (``sql``, ``tables``, ``--help``) never import Prefect: its import
and ephemeral server cost seconds on a small machine. Flows are imported inside the command.
"""

from __future__ import annotations

import csv
import functools
import json
import sys
from collections.abc import Callable
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.table import Table as RichTable

from civiclake.config import Settings, get_settings
from civiclake.errors import CivicLakeError, ParameterError

app = typer.Typer(
    help="Public open data into a lake, Apache Iceberg tables and a warehouse, with Prefect.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
taxi_app = typer.Typer(
    help="NYC TLC taxi trips (yellow, green, fhv) by month.", no_args_is_help=True
)
app.add_typer(taxi_app, name="taxi")
bnt_app = typer.Typer(
    help="MTA Bridges & Tunnels hourly traffic (data.ny.gov qzve-kjga).", no_args_is_help=True
)
app.add_typer(bnt_app, name="bnt")

out = Console()
err = Console(stderr=True)
P = ParamSpec("P")
R = TypeVar("R")


def user_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn civiclake's errors into one line on stderr and their exit code."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except CivicLakeError as exc:
            err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper


LAKE_HELP = "Lake URL (file://, abfs://, s3://, gs://) instead of CIVICLAKE_LAKE_URL."


def _settings(lake: str | None = None) -> Settings:
    """The environment's settings, with the lake given on the command line, if any."""
    return get_settings(lake_url=lake) if lake else get_settings()


def parse_date(option: str, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise ParameterError(f"{option}: {value!r} is not a date (YYYY-MM-DD)") from None


@bnt_app.command("run")
@user_errors
def bnt_run(
    start_date: str | None = typer.Option(
        None, "--start-date", help="First date to load (YYYY-MM-DD). Omitted: incremental."
    ),
    stop_date: str | None = typer.Option(
        None, "--stop-date", help="Date after the last one to load (exclusive). Omitted: today."
    ),
    from_file: str | None = typer.Option(
        None, "--from-file", help="Load a bulk export (CSV or JSON) instead of the API."
    ),
    lookback_days: int | None = typer.Option(
        None,
        "--lookback-days",
        min=0,
        help="Incremental runs re-fetch this many days before the high-water mark [default: 7].",
    ),
    page_size: int | None = typer.Option(
        None, "--page-size", min=1, help="Rows per API page ($limit) [default: 50000]."
    ),
    lake: str | None = typer.Option(None, "--lake", help=LAKE_HELP, show_default=False),
    lake_block: str | None = typer.Option(
        None, "--lake-block", help="A civiclake-lake Prefect block instead of CIVICLAKE_LAKE_URL."
    ),
    socrata_token_block: str | None = typer.Option(
        None, "--socrata-token-block", help="A Prefect Secret block holding the app token."
    ),
) -> None:
    """Load MTA B&T hourly traffic into mta.bnt_traffic_hourly (replaces the date range)."""
    start = parse_date("--start-date", start_date)
    stop = parse_date("--stop-date", stop_date)
    if from_file and (start or stop):
        raise ParameterError("--from-file takes its dates from the file: drop the date options")
    if start and stop and stop <= start:
        raise ParameterError(
            f"--stop-date {stop} must be after --start-date {start} (the range is [start, stop))"
        )
    if not lake_block:  # fail before Prefect starts: wrong credentials, no container, ...
        settings = _settings(lake)
        settings.lake().check_writable()
        if not from_file and start is None:
            _check_incremental_possible(settings)

    from civiclake.flows.bnt import bnt_hourly_traffic

    summary = bnt_hourly_traffic(
        start_date=start,
        stop_date=stop,
        from_file=from_file,
        lookback_days=lookback_days,
        page_size=page_size,
        lake=lake,
        lake_block=lake_block,
        socrata_token_block=socrata_token_block,
    )
    _print_summary(summary)


def _check_incremental_possible(settings: Settings) -> None:
    """Fail fast (before Prefect starts) when an incremental run has no high-water mark."""
    from civiclake import tables
    from civiclake.sources import bnt

    catalog = tables.load_catalog(settings)
    if (
        not catalog.table_exists(bnt.TABLE)
        or catalog.load_table(bnt.TABLE).current_snapshot() is None
    ):
        raise ParameterError(
            f"{bnt.TABLE} is empty: give --start-date for the first load (or --from-file)"
        )


def _print_summary(summary: dict[str, Any]) -> None:
    table = RichTable(title=f"{summary['table']} {summary['range']}", show_header=False)
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        if key in ("table", "range"):
            continue
        if isinstance(value, list):
            value = (
                ", ".join(value)
                if len(value) <= 6
                else f"{value[0]} .. {value[-1]} ({len(value)} months)"
            )
        elif isinstance(value, int) and key != "snapshot_id":
            value = f"{value:,}"
        table.add_row(key.replace("_", " "), str(value))
    out.print(table)


TAXI_FILE_PATTERN = r"(yellow|green|fhv)_tripdata_(\d{4})-(\d{2})(?!\d)"


@taxi_app.command("run")
@user_errors
def taxi_run(
    color: str | None = typer.Option(None, "--color", help="yellow, green or fhv."),
    year: int | None = typer.Option(None, "--year", help="Year of the months."),
    months: str | None = typer.Option(None, "--months", help="10, or a list like 1-3,10."),
    to: str = typer.Option(
        "duckdb", "--to", help="Warehouse: duckdb (embedded), postgres or bigquery."
    ),
    from_file: str | None = typer.Option(
        None, "--from-file", help="A month's file already on disk (CSV, CSV.gz or Parquet)."
    ),
    lake: str | None = typer.Option(None, "--lake", help=LAKE_HELP, show_default=False),
    lake_block: str | None = typer.Option(
        None, "--lake-block", help="A civiclake-lake Prefect block instead of CIVICLAKE_LAKE_URL."
    ),
    warehouse_block: str | None = typer.Option(
        None,
        "--warehouse-block",
        help="A civiclake-postgres or civiclake-bigquery Prefect block (with --to).",
    ),
) -> None:
    """Load TLC months: web -> lake (Parquet) -> Iceberg tlc.{color}_trips -> warehouse."""
    import re

    from civiclake.sources import tlc

    if from_file:
        match = re.search(TAXI_FILE_PATTERN, from_file.rsplit("/", 1)[-1])
        if match:  # the file's name says what it holds, unless told otherwise
            color = color or match.group(1)
            year = year or int(match.group(2))
            months = months or str(int(match.group(3)))
    if color is None or year is None or months is None:
        raise ParameterError(
            "give --color, --year and --months (e.g. --color green --year 2020 --months 10)"
        )
    spec = tlc.spec_for(color)
    wanted = tlc.parse_months(months, year)
    from civiclake.warehouse import WAREHOUSE_KINDS

    settings = _settings(lake)
    if to not in WAREHOUSE_KINDS:
        raise ParameterError(f"--to: unknown warehouse {to!r} ({' or '.join(WAREHOUSE_KINDS)})")
    if to == "bigquery" and not settings.bigquery_project and not warehouse_block:
        raise ParameterError("--to bigquery needs CIVICLAKE_BIGQUERY_PROJECT")
    if to == "postgres" and settings.postgres_url is None and not warehouse_block:
        raise ParameterError(
            "--to postgres needs CIVICLAKE_POSTGRES_URL (postgresql://user:password@host:port/db)"
        )
    if from_file and len(wanted) != 1:
        raise ParameterError("--from-file loads one month: give exactly one month")
    if not lake_block:  # fail before Prefect starts: wrong credentials, no container, ...
        settings.lake().check_writable()

    from civiclake.flows.tlc import MonthsFailed, tlc_taxi_trips

    try:
        summary = tlc_taxi_trips(
            color=spec.color,
            year=year,
            months=[m.month for m in wanted],
            to=to,
            from_file=from_file,
            lake=lake,
            lake_block=lake_block,
            warehouse_block=warehouse_block,
        )
    except MonthsFailed as exc:
        if exc.summary:
            _print_taxi_summary(exc.summary)
        raise
    _print_taxi_summary(summary)


def _print_taxi_summary(summary: dict[str, Any]) -> None:
    table = RichTable(
        "month",
        "status",
        "read",
        "loaded",
        "rejected",
        "by rule",
        "seconds",
        title=f"{summary['table']} -> Iceberg + {summary['to']}",
    )
    for r in summary["months"]:
        if r["status"] != "loaded":
            table.add_row(r["month"], "[red]failed[/red]", "", "", "", "", "")
            continue
        rules = ", ".join(f"{k} {v:,}" for k, v in r["rejected_by_rule"].items() if v)
        table.add_row(
            r["month"],
            "loaded",
            f"{r['rows_read']:,}",
            f"{r['rows_loaded']:,}",
            f"{r['rows_rejected']:,}",
            rules,
            str(r["duration_s"]),
        )
    out.print(table)


@app.command("deploy")
@user_errors
def deploy(
    project_dir: str | None = typer.Option(
        None, "--project-dir", help="Folder holding prefect.yaml \\[default: this checkout]."
    ),
    pool: str | None = typer.Option(
        None,
        "--pool",
        help="Work pool to create if missing \\[default: civiclake, or civiclake-docker].",
        show_default=False,
    ),
    docker: bool = typer.Option(
        False,
        "--docker",
        help="The docker pool and its deployments (daily-docker, monthly-docker) instead.",
    ),
    image: str | None = typer.Option(
        None, "--image", help="--docker: image the runs start \\[default: civiclake:latest]."
    ),
    pull_policy: str | None = typer.Option(
        None,
        "--pull-policy",
        help="--docker: IfNotPresent, Always or Never \\[default: Never, a locally built image].",
    ),
) -> None:
    """Register prefect.yaml's deployments and civiclake's block types on a Prefect server."""
    import os
    import subprocess

    if not os.environ.get("PREFECT_API_URL"):
        raise ParameterError(
            "civiclake deploy needs a running Prefect server: start one with `prefect server "
            "start --host 127.0.0.1` and set PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    if not docker and (image or pull_policy):
        raise ParameterError("--image and --pull-policy go with --docker")
    folder = Path(project_dir) if project_dir else _project_dir()
    if not (folder / "prefect.yaml").is_file():
        raise ParameterError(f"no prefect.yaml in {folder}")

    import civiclake.flows  # noqa: F401  (Prefect's offline defaults)
    from civiclake._private import deploy as setup

    if pull_policy is not None and pull_policy not in setup.PULL_POLICIES:
        raise ParameterError(
            f"--pull-policy: {pull_policy!r} is not one of {', '.join(setup.PULL_POLICIES)}"
        )
    found = setup.deployments(folder / "prefect.yaml", docker=docker)
    if docker:
        pool = pool or setup.DOCKER_POOL
        created = setup.ensure_docker_pool(pool)
    else:
        pool = pool or setup.PROCESS_POOL
        created = setup.ensure_process_pool(pool)
    err.print(f"work pool {pool!r} {'created' if created else 'exists'}")
    for slug in setup.register_block_types():
        err.print(f"block type {slug} registered")
    overrides = {
        key: value
        for key, value in (("image", image), ("image_pull_policy", pull_policy))
        if value is not None
    }
    # `prefect deploy --job-variable` replaces prefect.yaml's job variables rather than adding
    # to them, and is ignored when several deployments are registered at once: one call each.
    batches = (
        [([name], {**variables, **overrides}) for name, variables in found.items()]
        if overrides
        else [(list(found), {})]
    )
    for names, variables in batches:
        command = [sys.executable, "-m", "prefect", "--no-prompt", "deploy"]
        command += [arg for name in names for arg in ("--name", name)]
        for key, value in variables.items():
            text = value if isinstance(value, str) else json.dumps(value)
            command += ["--job-variable", f"{key}={text}"]
        command += ["--prefect-file", str(folder / "prefect.yaml")]
        done = subprocess.run(command, cwd=folder, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
            raise CivicLakeError("prefect deploy failed: " + (lines[-1] if lines else "no output"))
        out.print(done.stdout.strip())


def _project_dir() -> Path:
    """The checkout this civiclake runs from, or the current folder."""
    here = Path.cwd()
    for folder in (here, *here.parents, Path(__file__).resolve().parents[2]):
        if (folder / "prefect.yaml").is_file() and (folder / "src" / "civiclake").is_dir():
            return folder
    return here


@app.command("doctor")
@user_errors
def doctor(
    to: list[str] = typer.Option(
        [], "--to", help="Warehouse(s) to check [default: duckdb and every one configured]."
    ),
    lake: str | None = typer.Option(None, "--lake", help=LAKE_HELP, show_default=False),
) -> None:
    """Check that the lake, the Iceberg catalog and the warehouses are reachable and writable."""
    from civiclake.doctor import run_checks
    from civiclake.warehouse import WAREHOUSE_KINDS

    unknown = [kind for kind in to if kind not in WAREHOUSE_KINDS]
    if unknown:
        choices = ", ".join(WAREHOUSE_KINDS)
        raise ParameterError(f"--to: unknown warehouse {unknown[0]!r} ({choices})")
    failed = 0
    for check in run_checks(_settings(lake), list(to) or None):
        mark = "[green]ok[/green]  " if check.ok else "[red]FAIL[/red]"
        out.print(f"{mark} {check.name}: {check.detail}", highlight=False, soft_wrap=True)
        failed += not check.ok
    if failed:
        raise CivicLakeError(f"{failed} check{'s' if failed > 1 else ''} failed")


class OutputFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


@app.command("sql")
@user_errors
def sql(
    query: str = typer.Argument(..., help="SQL for DuckDB; tables as namespace.table."),
    output: OutputFormat = typer.Option(
        OutputFormat.table, "--format", "-f", help="table for people; csv or json for scripts."
    ),
    lake: str | None = typer.Option(None, "--lake", help=LAKE_HELP, show_default=False),
) -> None:
    """Run SQL (DuckDB) over the catalog's Iceberg tables."""
    from civiclake.query import run_sql, to_python

    result = run_sql(query, _settings(lake))
    names = result.column_names
    rows = result.to_pylist()
    if output is OutputFormat.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(names)
        for row in rows:
            writer.writerow([to_python(row[n]) if row[n] is not None else "" for n in names])
    elif output is OutputFormat.json:
        payload = [{n: to_python(row[n]) for n in names} for row in rows]
        sys.stdout.write(json.dumps(payload, default=str) + "\n")
    else:
        table = RichTable(*names)
        for row in rows:
            table.add_row(*("" if row[n] is None else str(to_python(row[n])) for n in names))
        out.print(table)
        out.print(f"{len(rows):,} row{'s' if len(rows) != 1 else ''}", style="dim")


@app.command("tables")
@user_errors
def list_tables(
    output: OutputFormat = typer.Option(
        OutputFormat.table, "--format", "-f", help="table for people; csv or json for scripts."
    ),
    lake: str | None = typer.Option(None, "--lake", help=LAKE_HELP, show_default=False),
) -> None:
    """List tables with row counts, snapshot counts and their last load."""
    from civiclake import tables

    summaries = tables.summarize(tables.load_catalog(_settings(lake)))
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
    if output is OutputFormat.json:
        sys.stdout.write(json.dumps(records) + "\n")
        return
    if output is OutputFormat.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=list(_TABLE_FIELDS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
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
    out.print(table)


_TABLE_FIELDS = ("table", "rows", "snapshots", "last_load_at", "last_run_id", "last_source")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
