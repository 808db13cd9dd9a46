"""The ``civiclake`` command.

Commands that run no flow (``sql``, ``tables``, ``--help``) never import Prefect: its import
and ephemeral server cost seconds on a small machine. Flows are imported inside the command.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click
import typer
from rich.table import Table as RichTable
from rich.text import Text

from civiclake import interrupts
from civiclake._private.display import display_value, plain_console, styled
from civiclake.config import Settings, get_settings
from civiclake.errors import CivicLakeError, ParameterError
from civiclake.warehouse import describe_kinds

# Help texts are plain text: with rich markup on, "[default: 7]" in a help line vanished.
HELP_MARKUP = None
app = typer.Typer(
    help="Public open data into a lake, Apache Iceberg tables and a warehouse, with Prefect.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=HELP_MARKUP,
)
taxi_app = typer.Typer(
    help="NYC TLC taxi trips (yellow, green, fhv) by month.",
    no_args_is_help=True,
    rich_markup_mode=HELP_MARKUP,
)
app.add_typer(taxi_app, name="taxi")
bnt_app = typer.Typer(
    help="MTA Bridges & Tunnels hourly traffic (data.ny.gov qzve-kjga).",
    no_args_is_help=True,
    rich_markup_mode=HELP_MARKUP,
)
app.add_typer(bnt_app, name="bnt")
socrata_app = typer.Typer(
    help="Any dataset of any Socrata portal, typed from its metadata, kept up to date.",
    no_args_is_help=True,
    rich_markup_mode=HELP_MARKUP,
)
app.add_typer(socrata_app, name="socrata")


def _plain_help_labels() -> None:
    """Help in the words people know: ``QUERY`` and ``--limit INTEGER``, not Typer's internal
    labels (``{query}``, ``query <str>``, ``<int range>``, ``[[TABLE ...]]...``)."""
    from typer import core

    labels = {"str": "TEXT", "int": "INTEGER", "float": "NUMBER", "bool": "BOOLEAN"}

    def option_type(self: Any, ctx: click.Context) -> str | None:
        if self.metavar is not None:
            return str(self.metavar)
        if getattr(self, "is_flag", False):
            return None
        desc = self.type_descriptor
        if desc.is_choice:
            return "[" + "|".join(str(getattr(c, "value", c)) for c in desc.choices or ()) + "]"
        bare = original_type(self, ctx).strip("<>")
        bare = bare.removesuffix(" range").removeprefix("list[").removesuffix("]")
        return labels.get(bare, bare.upper())

    def argument_usage(self: Any) -> str:
        name = self.metavar or self.name.upper()
        name = name if self.required else f"[{name}]"
        return name + ("..." if self.nargs != 1 else "")

    original_type = core._TyperParameter.display_type
    core.TyperOption.display_type_rich = option_type  # type: ignore[method-assign]
    core.TyperArgument.display_type_rich = lambda self, ctx: None  # type: ignore[method-assign]
    core.TyperArgument._rich_display_name = lambda self: self.metavar or self.name.upper()  # type: ignore[method-assign]
    core.TyperArgument._usage_display_name = argument_usage  # type: ignore[method-assign]


_plain_help_labels()

# Markup off: messages and data print verbatim (``civiclake[s3]``, a value ``a[s3]b``).
out = plain_console()
err = plain_console(stderr=True)
P = ParamSpec("P")
R = TypeVar("R")


DEBUG_ENV = "CIVICLAKE_DEBUG"
_state = {"debug": False}


def debugging() -> bool:
    """Whether ``--debug`` or ``CIVICLAKE_DEBUG=1`` asked for tracebacks."""
    flag = os.environ.get(DEBUG_ENV, "").strip().lower()
    return _state["debug"] or flag in ("1", "true", "yes", "on")


@app.callback()
def _global_options(
    debug: bool = typer.Option(
        False,
        "--debug",
        help=f"On an unexpected error also print the Python traceback (or set {DEBUG_ENV}=1).",
    ),
) -> None:
    """Public open data into a lake, Apache Iceberg tables and a warehouse, with Prefect."""
    _state["debug"] = debug


def one_line(text: str) -> str:
    """A message on one line: a user reads the last line of a failed command."""
    return " ".join(part.strip() for part in text.strip().splitlines() if part.strip())


def describe_unexpected(exc: BaseException) -> str:
    """A short description of an exception civiclake did not anticipate."""
    from civiclake.errors import describe

    return describe(exc)


def fail(message: str, exit_code: int) -> typer.Exit:
    """Print ``error: message`` (one line) on stderr; the Exit to raise."""
    if "prefect" in sys.modules:  # its shutdown lines ("Stopping temporary server") stay out
        logging.getLogger("prefect").setLevel(logging.WARNING)
    err.print(Text.assemble(styled("error:", "red"), f" {one_line(message)}"), soft_wrap=True)
    return typer.Exit(exit_code)


def user_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """The central error rule: civiclake's errors as one line and their exit code; anything
    else one line and exit 1, the traceback only with ``--debug`` or ``CIVICLAKE_DEBUG=1``."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except CivicLakeError as exc:
            if debugging():
                traceback.print_exc()
            raise fail(str(exc), exc.exit_code) from None
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            # Ctrl-C: left to the interrupt handling (issue 17 maps it to exit 130).
            raise
        except Exception as exc:
            if debugging():
                traceback.print_exc()
                raise fail(describe_unexpected(exc), 1) from None
            hint = f" (details: --debug or {DEBUG_ENV}=1)"
            raise fail(describe_unexpected(exc) + hint, 1) from None

    return wrapper


class OutputFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


LAKE_HELP = "Lake URL (file://, abfs://, s3://, gs://) instead of CIVICLAKE_LAKE_URL."
# Options several commands share (typer reads them; one declaration each).
LAKE_OPTION = typer.Option(None, "--lake", help=LAKE_HELP, show_default=False)
LAKE_BLOCK_OPTION = typer.Option(
    None, "--lake-block", help="A civiclake-lake Prefect block instead of CIVICLAKE_LAKE_URL."
)
TOKEN_BLOCK_OPTION = typer.Option(
    None, "--socrata-token-block", help="A Prefect Secret block holding the app token."
)
WAREHOUSE_BLOCK_OPTION = typer.Option(
    None,
    "--warehouse-block",
    help="A civiclake-postgres or civiclake-bigquery Prefect block (with --to).",
)
PAGE_SIZE_OPTION = typer.Option(
    None, "--page-size", min=1, help="Rows per API page ($limit) [default: 50000]."
)
ALLOW_EMPTY_OPTION = typer.Option(
    False,
    "--allow-empty",
    help="Let a load that holds no row empty a range that has rows (refused otherwise).",
)


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
    page_size: int | None = PAGE_SIZE_OPTION,
    lake: str | None = LAKE_OPTION,
    lake_block: str | None = LAKE_BLOCK_OPTION,
    socrata_token_block: str | None = TOKEN_BLOCK_OPTION,
    to: str | None = typer.Option(
        None,
        "--to",
        help=f"Also load a warehouse: {describe_kinds()} [default: none].",
    ),
    warehouse_block: str | None = WAREHOUSE_BLOCK_OPTION,
    allow_empty: bool = ALLOW_EMPTY_OPTION,
    portal: str | None = typer.Option(
        None,
        "--portal",
        help="Portal serving the dataset (https://host) instead of CIVICLAKE_SOCRATA_URL "
        "[default: https://data.ny.gov].",
    ),
) -> None:
    """Load MTA B&T hourly traffic into mta.bnt_traffic_hourly (replaces the date range)."""
    from civiclake.sources.socrata_dataset import check_portal

    if portal is not None:
        if from_file:
            raise ParameterError("--portal is for the API: drop it with --from-file")
        # the run (checks and flow, in this process) reads its portal from the environment
        os.environ["CIVICLAKE_SOCRATA_URL"] = check_portal(portal)
    elif not from_file:
        check_portal(_settings(lake).socrata_url)  # CIVICLAKE_SOCRATA_URL: bad input, not retried
    start = parse_date("--start-date", start_date)
    stop = parse_date("--stop-date", stop_date)
    if from_file and (start or stop):
        raise ParameterError("--from-file takes its dates from the file: drop the date options")
    if from_file:
        _check_from_file(from_file, (".csv", ".csv.gz", ".json", ".json.gz", ".ndjson"))
    if start and stop and stop <= start:
        raise ParameterError(
            f"--stop-date {stop} must be after --start-date {start} (the range is [start, stop))"
        )
    if warehouse_block and not to:
        raise ParameterError("--warehouse-block names the warehouse of --to: give --to as well")
    if to:
        _check_warehouse(to, _settings(lake), warehouse_block)
    if not lake_block:  # fail before Prefect starts: wrong credentials, no container, ...
        settings = _settings(lake)
        settings.lake().check_writable()
        if not from_file and start is None:
            _check_incremental_possible(settings)

    _use_local_server()  # civiclake server: reused (or started) unless PREFECT_API_URL
    interrupts.install()  # Ctrl-C: stop now, one line, exit 130 (civiclake.interrupts)
    from civiclake.flows._sync import WarehouseNotSynced
    from civiclake.flows.bnt import bnt_hourly_traffic

    _prefect_ready()

    with _summary_on(WarehouseNotSynced):
        summary = bnt_hourly_traffic(
            start_date=start,
            stop_date=stop,
            from_file=from_file,
            lookback_days=lookback_days,
            page_size=page_size,
            lake=lake,
            lake_block=lake_block,
            socrata_token_block=socrata_token_block,
            to=to,
            warehouse_block=warehouse_block,
            allow_empty=allow_empty,
        )
    _print_summary(summary)


@contextlib.contextmanager
def _summary_on(error: type[Exception]) -> Iterator[None]:
    """The run's summary, when ``error`` carries one, printed before its one-line message."""
    try:
        yield
    except error as exc:
        summary = getattr(exc, "summary", None)
        if summary:
            _print_summary(summary)
        raise


class _NoTracebacks(logging.Filter):
    """Keeps Python tracebacks out of Prefect's console lines (the run's API logs keep them):
    a failed command ends with its one ``error:`` line, not 80 lines of frames."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and not debugging():
            record.exc_info = None
            record.exc_text = None
        return True


def _prefect_ready() -> None:
    """After a flow module is imported, before it runs: a configured Prefect server answers
    (else one line, exit 1), and Prefect's console shows no tracebacks."""
    from prefect.logging.handlers import PrefectConsoleHandler
    from prefect.settings import PREFECT_API_URL

    loggers = [
        logging.getLogger(),
        *(logging.getLogger(n) for n in logging.root.manager.loggerDict),
    ]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, PrefectConsoleHandler) and not any(
                isinstance(f, _NoTracebacks) for f in handler.filters
            ):
                handler.addFilter(_NoTracebacks())
    url = PREFECT_API_URL.value()
    if not url:
        return  # a temporary server is started for the run
    import httpx

    try:
        # unreachable is the failure to report; an answer of any status means a server is there
        httpx.get(f"{url.rstrip('/')}/health", timeout=10)
    except httpx.TransportError as exc:
        raise CivicLakeError(
            f"cannot reach the Prefect server at PREFECT_API_URL={url} ({describe_unexpected(exc)})"
            ": start it (prefect server start) or unset PREFECT_API_URL to run without one"
        ) from None


def _check_from_file(path: str, suffixes: tuple[str, ...]) -> None:
    """Before Prefect starts: a local --from-file exists and is a kind civiclake reads."""
    from urllib.parse import urlsplit

    if not path.lower().endswith(suffixes):
        raise ParameterError(
            f"--from-file {path}: unsupported file type (expected {', '.join(suffixes)})"
        )
    scheme = urlsplit(path).scheme
    if scheme in ("", "file") or len(scheme) == 1:  # a local path (or a Windows drive)
        local = Path(path.removeprefix("file://")).expanduser()
        if not local.is_file():
            raise ParameterError(f"--from-file {path}: no such file")


def _check_warehouse(to: str, settings: Settings, warehouse_block: str | None) -> None:
    """Before Prefect starts: a known warehouse, its driver installed, its settings present."""
    from civiclake.warehouse import WAREHOUSE_KINDS, check_configured

    if to not in WAREHOUSE_KINDS:
        raise ParameterError(f"--to: unknown warehouse {to!r} ({' or '.join(WAREHOUSE_KINDS)})")
    check_configured(to, settings, block=bool(warehouse_block))


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
            value = _partitions_text(value)
        table.add_row(key.replace("_", " "), display_value(key, value))
    _print_table(table)


def _partitions_text(values: list[str]) -> str:
    """Partitions as a person reads them: all of a few, else the first, the last and how many
    (the values are the partitions actually changed, so the count is theirs, not a span's)."""
    if not values:
        return "none"
    if len(values) <= 6:
        return ", ".join(values)
    return f"{values[0]} .. {values[-1]} ({len(values)} partitions)"


PORTAL_HELP = (
    "Portal URL (https://host) instead of CIVICLAKE_SOCRATA_URL [default: https://data.ny.gov] "
    "(for a bare dataset id)."
)
DATASET_HELP = "A 4x4 id (erm2-nwe9), a dataset URL of any portal, or a name from the config."


@socrata_app.command("describe")
@user_errors
def socrata_describe(
    dataset: str = typer.Argument(..., help=DATASET_HELP),
    portal: str | None = typer.Option(None, "--portal", help=PORTAL_HELP),
    table: str | None = typer.Option(None, "--table", help="NS.NAME [default: socrata.<id>]."),
    partition: str | None = typer.Option(
        None, "--partition", help="month(COL), day(COL), year(COL) or none [default: none]."
    ),
) -> None:
    """Name, rows and columns of a dataset: Socrata type -> the column type it becomes."""
    from civiclake.sources.socrata_plan import describe

    settings = _settings()
    plan = describe(settings, dataset, portal=portal, table=table, partition=partition)
    spec = plan.spec
    out.print(f"{spec.name} ({spec.portal}/{spec.dataset_id})", soft_wrap=True)
    rows = f"{spec.row_count:,}" if spec.row_count is not None else "unknown"
    out.print(f"rows: {rows}   table: {spec.table}   partition: {spec.partition}", soft_wrap=True)
    out.print(f"run would load: {plan.mode_text}", soft_wrap=True)
    columns = RichTable("column", "field", "Socrata type", "type")
    for column in spec.columns:
        columns.add_row(column.name, column.field, column.socrata_type, str(column.iceberg_type))
        if column.has_coordinates:
            for axis in ("longitude", "latitude"):
                columns.add_row(f"{column.name}_{axis}", "", f"({axis})", "double")
    _print_table(columns)


@socrata_app.command("run")
@user_errors
def socrata_run(
    dataset: str = typer.Argument(..., help=DATASET_HELP),
    table: str | None = typer.Option(None, "--table", help="NS.NAME [default: socrata.<id>]."),
    full: bool = typer.Option(
        False, "--full", help="Fetch everything and replace the table (drops deleted rows)."
    ),
    partition: str | None = typer.Option(
        None, "--partition", help="month(COL), day(COL), year(COL) or none [default: none]."
    ),
    where: str | None = typer.Option(None, "--where", help="A SoQL $where filter."),
    date_field: str | None = typer.Option(
        None,
        "--date-field",
        help="Range mode: replace the rows with this date column in [--start-date, --stop-date).",
    ),
    start_date: str | None = typer.Option(
        None, "--start-date", help="Range mode: first date to load (YYYY-MM-DD)."
    ),
    stop_date: str | None = typer.Option(
        None,
        "--stop-date",
        help="Range mode: date after the last one (exclusive) [default: today].",
    ),
    portal: str | None = typer.Option(None, "--portal", help=PORTAL_HELP),
    page_size: int | None = PAGE_SIZE_OPTION,
    lake: str | None = LAKE_OPTION,
    lake_block: str | None = LAKE_BLOCK_OPTION,
    socrata_token_block: str | None = TOKEN_BLOCK_OPTION,
    to: str | None = typer.Option(
        None,
        "--to",
        help=f"Also load a warehouse: {describe_kinds()} (merged by :id, or the --date-field "
        "range) [default: none].",
    ),
    warehouse_block: str | None = WAREHOUSE_BLOCK_OPTION,
    allow_empty: bool = ALLOW_EMPTY_OPTION,
) -> None:
    """Load a dataset into Iceberg: everything first, then rows updated since the last run."""
    from civiclake.sources.socrata_plan import check_existing_table, range_window, resolve_spec

    start = parse_date("--start-date", start_date)
    stop = parse_date("--stop-date", stop_date)
    if warehouse_block and not to:
        raise ParameterError("--warehouse-block names the warehouse of --to: give --to as well")
    settings = _settings(lake)
    if to:
        from civiclake.warehouse import check_merges

        _check_warehouse(to, settings, warehouse_block)
        if not date_field:  # a range load replaces a window: every warehouse can
            check_merges(to, settings, block=bool(warehouse_block))
    if not lake_block:  # fail before Prefect starts: a bad id, a 404, a wrong column, the lake
        settings.lake().check_writable()
        spec = resolve_spec(
            settings, dataset, portal=portal, table=table, partition=partition, where=where
        )
        range_window(spec, date_field, start, stop, full=full)
        check_existing_table(settings, spec, full=full)

    _use_local_server()  # civiclake server: reused (or started) unless PREFECT_API_URL
    interrupts.install()
    from civiclake.flows._sync import WarehouseNotSynced
    from civiclake.flows.socrata import socrata_dataset

    _prefect_ready()

    with _summary_on(WarehouseNotSynced):
        summary = socrata_dataset(
            dataset=dataset,
            table=table,
            full=full,
            partition=partition,
            where=where,
            date_field=date_field,
            start_date=start,
            stop_date=stop,
            portal=portal,
            page_size=page_size,
            lake=lake,
            lake_block=lake_block,
            socrata_token_block=socrata_token_block,
            to=to,
            warehouse_block=warehouse_block,
            allow_empty=allow_empty,
        )
    _print_summary(summary)


@socrata_app.command("list")
@user_errors
def socrata_list(
    output: OutputFormat = typer.Option(
        OutputFormat.table, "--format", "-f", help="table for people; csv or json for scripts."
    ),
    lake: str | None = LAKE_OPTION,
) -> None:
    """Datasets declared in the config file ([datasets.NAME]) and their last load."""
    from civiclake import tables

    settings = _settings(lake)
    if not settings.datasets and output is OutputFormat.table:
        out.print('no datasets in the config file: add [datasets.NAME] with id = "xxxx-xxxx"')
        return
    from civiclake.sources.socrata_dataset import default_table, parse_dataset

    loaded = (
        {s.identifier: s for s in tables.summarize(tables.load_catalog(settings))}
        if settings.datasets
        else {}
    )
    records = []
    for name, config in sorted(settings.datasets.items()):
        portal, dataset_id = parse_dataset(config.id, config.portal or settings.socrata_url)
        table_name = config.table or default_table(dataset_id)
        last = loaded.get(table_name)
        records.append(
            {
                "name": name,
                "dataset": f"{portal}/{dataset_id}",
                "table": table_name,
                "rows": last.rows if last else None,
                "last_load_at": last.last_load_at.isoformat()
                if last and last.last_load_at
                else None,
            }
        )
    if _wrote_records(records, ("name", "dataset", "table", "rows", "last_load_at"), output):
        return
    listing = RichTable("name", "dataset", "table", "rows", "last load (UTC)")
    for r in records:
        when = r["last_load_at"]
        listing.add_row(
            r["name"],
            r["dataset"],
            r["table"],
            f"{r['rows']:,}" if r["rows"] is not None else "",
            datetime.fromisoformat(when).strftime("%Y-%m-%d %H:%M:%S") if when else "",
        )
    _print_table(listing)


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
        None,
        "--from-file",
        help="A month's file already on disk (CSV, CSV.gz or Parquet). Its name "
        "(green_tripdata_2020-10.csv.gz) gives --color, --year and --months; an option that "
        "contradicts it is refused.",
    ),
    lake: str | None = LAKE_OPTION,
    lake_block: str | None = LAKE_BLOCK_OPTION,
    warehouse_block: str | None = WAREHOUSE_BLOCK_OPTION,
    allow_empty: bool = ALLOW_EMPTY_OPTION,
) -> None:
    """Load TLC months: web -> lake (Parquet) -> Iceberg tlc.{color}_trips -> warehouse."""
    import re

    from civiclake.sources import tlc

    if from_file:
        _check_from_file(from_file, (".csv", ".csv.gz", ".parquet"))
        match = re.search(TAXI_FILE_PATTERN, from_file.rsplit("/", 1)[-1])
        if match:  # the file's name says what it holds; an option saying otherwise is refused
            named = {
                "--color": match.group(1),
                "--year": match.group(2),
                "--months": match.group(3),
            }
            given = {"--color": color, "--year": year, "--months": months}
            for option, value in given.items():
                if value is not None and str(value).lstrip("0") != named[option].lstrip("0"):
                    raise ParameterError(
                        f"{option} {value} contradicts the file name "
                        f"{from_file.rsplit('/', 1)[-1]} ({option} {named[option]}): "
                        f"drop {option} or rename the file"
                    )
            color = color or match.group(1)
            year = year or int(match.group(2))
            months = months or str(int(match.group(3)))
    if color is None or year is None or months is None:
        raise ParameterError(
            "give --color, --year and --months (e.g. --color green --year 2020 --months 10)"
        )
    spec = tlc.spec_for(color)
    wanted = tlc.parse_months(months, year)
    settings = _settings(lake)
    _check_warehouse(to, settings, warehouse_block)
    if from_file and len(wanted) != 1:
        raise ParameterError("--from-file loads one month: give exactly one month")
    if not lake_block:  # fail before Prefect starts: wrong credentials, no container, ...
        settings.lake().check_writable()

    _use_local_server()  # civiclake server: reused (or started) unless PREFECT_API_URL
    interrupts.install()
    from civiclake.flows._sync import WarehouseNotSynced
    from civiclake.flows.tlc import MonthsFailed, tlc_taxi_trips

    _prefect_ready()

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
            allow_empty=allow_empty,
        )
    except (MonthsFailed, WarehouseNotSynced) as exc:
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
        "partitions touched",
        "snapshot id",
        "seconds",
        title=f"{summary['table']} -> Iceberg + {summary['to']}",
    )
    for r in summary["months"]:
        if r["status"] == "failed":
            table.add_row(r["month"], styled("failed", "red"), "", "", "", "", "", "", "")
            continue
        status = "loaded"
        if r["status"] == "not synced":  # in the lake, not in the warehouse: say which snapshot
            status = styled(r["warehouse_line"], "red")
        rules = ", ".join(f"{k} {v:,}" for k, v in r["rejected_by_rule"].items() if v)
        table.add_row(
            r["month"],
            status,
            f"{r['rows_read']:,}",
            f"{r['rows_loaded']:,}",
            f"{r['rows_rejected']:,}",
            rules,
            _partitions_text(r.get("partitions_touched", [])),
            str(r.get("iceberg_snapshot_id", "")),
            str(r["duration_s"]),
        )
    _print_table(table)
    if "warehouse_resynced_rows" in summary:
        out.print(
            f"{summary['to']}: {summary['table']} re-synced from the lake "
            f"({summary['warehouse_resynced_rows']:,} rows)"
        )


@app.command("deploy")
@user_errors
def deploy(
    project_dir: str | None = typer.Option(
        None, "--project-dir", help="Folder holding prefect.yaml [default: this checkout]."
    ),
    pool: str | None = typer.Option(
        None,
        "--pool",
        help="Work pool to create if missing [default: civiclake, or civiclake-docker].",
        show_default=False,
    ),
    docker: bool = typer.Option(
        False,
        "--docker",
        help="The docker pool and its deployments (daily-docker, monthly-docker) instead.",
    ),
    image: str | None = typer.Option(
        None, "--image", help="--docker: image the runs start [default: civiclake:latest]."
    ),
    pull_policy: str | None = typer.Option(
        None,
        "--pull-policy",
        help="--docker: IfNotPresent, Always or Never [default: Never, a locally built image].",
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
    lake: str | None = LAKE_OPTION,
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
        mark = styled("ok  ", "green") if check.ok else styled("FAIL", "red")
        out.print(Text.assemble(mark, f" {check.name}: {check.detail}"), soft_wrap=True)
        failed += not check.ok
    if failed:
        raise CivicLakeError(f"{failed} check{'s' if failed > 1 else ''} failed")


@app.command("sql")
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
    result = run_sql(query, _settings(lake), as_of=when)
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
        _print_table(table)
        note = f"{total:,} row{'s' if total != 1 else ''}"
        if total > len(shown):
            note += (
                f"; the first {len(shown):,} shown, {total - len(shown):,} left out: "
                "use --format csv (or json) for them all"
            )
        out.print(note, style="dim", soft_wrap=True)


SQL_TABLE_ROWS = 1000  # rows a person reads; scripts use --format csv/json (no cap)


def _print_table(renderable: Any) -> None:
    """A table on stdout: fitted to a terminal, and never cut when piped (every value whole)."""
    if out.is_terminal:
        out.print(renderable)
        return
    natural = plain_console(width=1_000_000).measure(renderable).maximum
    saved = out._width  # None: Rich's default (80 columns when not a terminal)
    out.width = max(out.width, natural)
    try:
        out.print(renderable)
    finally:
        out._width = saved


@app.command("tables")
@user_errors
def list_tables(
    output: OutputFormat = typer.Option(
        OutputFormat.table, "--format", "-f", help="table for people; csv or json for scripts."
    ),
    lake: str | None = LAKE_OPTION,
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
    if _wrote_records(records, _TABLE_FIELDS, output):
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
    _print_table(table)


def _wrote_records(
    records: list[dict[str, Any]], fields: Sequence[str], output: OutputFormat
) -> bool:
    """``records`` as JSON or CSV on stdout for scripts; False for the table format (people)."""
    if output is OutputFormat.json:
        from civiclake._private.values import dumps

        sys.stdout.write(dumps(records) + "\n")  # ids beyond 2^53 as exact strings
        return True
    if output is OutputFormat.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=list(fields), lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
        return True
    return False


_TABLE_FIELDS = ("table", "rows", "snapshots", "last_load_at", "last_run_id", "last_source")


@app.command("report")
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
    settings = _settings(lake)
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


# ---------------------------------------------------------------- table operations
# history, rollback and maintain: metadata work on the catalog's tables, no Prefect (the
# scheduled `civiclake-maintenance` flow runs the same code under the per-table load locks).
# The consoles print text verbatim (no markup): a source or path like `a[s3]b` shows as is.


def _table_arg(settings: Settings, name: str) -> tuple[Any, Any]:
    """The catalog and the table ``namespace.table``, or a one-line error."""
    from civiclake import tables

    if "." not in name.strip("."):
        raise ParameterError(f"{name!r} is not a table name: give namespace.table")
    catalog = tables.load_catalog(settings)
    if not catalog.table_exists(name):
        raise ParameterError(f"no table {name}: `civiclake tables` lists them")
    return catalog, catalog.load_table(name)


def _count(value: int) -> str:
    return f"{value:,}"


def _size(value: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:,} B" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024  # type: ignore[assignment]
    return str(value)


@app.command("history")
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

    _, iceberg = _table_arg(_settings(lake), table)
    entries = snapshot_history(iceberg, limit)
    records = [e.as_json() for e in entries]
    if _wrote_records(records, JSON_KEYS, output):
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
            _count(e.rows_added),
            _count(e.rows_deleted),
            _count(e.total_rows),
            e.state,
        )
    _print_table(view)


@app.command("rollback")
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

    _, iceberg = _table_arg(_settings(lake), table)
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


class MaintainFormat(StrEnum):
    table = "table"
    json = "json"


@app.command("maintain")
@user_errors
def maintain_command(
    names: list[str] = typer.Argument(
        None,
        metavar="TABLE",
        help="Tables (namespace.table) [default: every table].",
        show_default=False,
    ),
    retain_days: int = typer.Option(
        7, "--retain-days", min=0, help="Keep snapshots younger than this many days."
    ),
    retain_last: int = typer.Option(
        10, "--retain-last", min=1, help="Always keep the last N snapshots of the current history."
    ),
    orphans_older_than: str = typer.Option(
        "3d",
        "--orphans-older-than",
        help="Remove orphan files (crashed runs) older than this: Nd or Nh; 0 means now "
        "(only when no load is running: a running load's files are orphans until it commits).",
    ),
    compact: bool = typer.Option(
        False, "--compact", help="Rewrite each partition's small files into few large ones."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="List what would be removed (with sizes); change nothing."
    ),
    output: MaintainFormat = typer.Option(
        MaintainFormat.table, "--format", "-f", help="table for people; json for scripts."
    ),
    raw_retain_days: int = typer.Option(
        7,
        "--raw-retain-days",
        min=1,
        help="Without table names: remove raw and stage zone folders older than this many "
        "days (never a series' latest load).",
    ),
    lake: str | None = LAKE_OPTION,
) -> None:
    """Expire old snapshots, delete files nothing references, optionally compact; prune the
    raw and stage zones."""
    from civiclake import tables
    from civiclake.tables import maintenance

    options = maintenance.MaintainOptions(
        retain_days=retain_days,
        retain_last=retain_last,
        orphans_older_than=maintenance.parse_duration(orphans_older_than),
        compact=compact,
        dry_run=dry_run,
    )
    settings = _settings(lake)
    catalog = tables.load_catalog(settings)
    chosen = maintenance.resolve_tables(catalog, list(names or []))
    every = maintenance.resolve_tables(catalog, [])
    locations = maintenance.table_locations(catalog, every)
    the_lake = settings.lake()
    if not names:  # the whole lake: its raw and stage zones too (civiclake.tables.zones)
        _prune_zones(the_lake, raw_retain_days, dry_run, output is MaintainFormat.json)
    if not chosen:
        out.print("no tables yet: nothing to maintain")
        return
    reports = []
    for name in chosen:
        err.print(f"maintaining {name} ...", highlight=False)
        reports.append(
            maintenance.maintain_table(catalog, name, the_lake, options, other_locations=locations)
        )
    if output is MaintainFormat.json:
        payload = []
        for r in reports:
            item = r.as_json()
            if dry_run:
                item["files"] = [{"path": f.url, "size": f.size, "kind": f.kind} for f in r.removed]
            payload.append(item)
        from civiclake._private.values import dumps

        sys.stdout.write(dumps(payload) + "\n")
        return
    if dry_run:
        for r in reports:
            for f in r.removed:
                out.print(
                    f"would remove {f.kind} {f.url} ({_size(f.size)})",
                    highlight=False,
                    soft_wrap=True,
                )
    verb = "would remove" if dry_run else "removed"
    view = RichTable(
        "table",
        "snapshots expired",
        "kept",
        f"files {verb}",
        "bytes",
        "orphans (kept young)",
        "files compacted",
        "files before -> after",
        "seconds",
        title="civiclake maintain" + (" --dry-run (nothing changed)" if dry_run else ""),
    )
    view.columns[0].no_wrap = True
    for r in reports:
        view.add_row(
            r.table,
            _count(len(r.snapshots_expired)),
            _count(r.snapshots_kept),
            _count(len(r.removed)),
            _size(r.bytes_removed),
            f"{len(r.orphans_removed):,} ({r.orphans_kept:,})",
            f"{r.files_compacted:,} -> {r.files_written:,}" if compact else "",
            f"{r.files_before:,} -> {r.files_after:,}",
            f"{r.seconds:.2f}",
        )
    _print_table(view)


def _prune_zones(the_lake: Any, retain_days: int, dry_run: bool, quiet: bool) -> None:
    """Prune the raw and stage zones; the files (dry run) and a summary line on stderr when
    the table output is JSON, on stdout otherwise."""
    from civiclake.tables.zones import prune_zones

    err.print("pruning the raw and stage zones ...", highlight=False)
    report = prune_zones(the_lake, retain_days, dry_run=dry_run)
    console = err if quiet else out
    verb = "would remove" if dry_run else "removed"
    if dry_run:
        for f in report.removed:
            console.print(
                f"would remove {f.zone} {f.url} ({_size(f.size)})", highlight=False, soft_wrap=True
            )
    console.print(
        f"raw and stage zones: {verb} {report.folders_removed:,} load folder(s) older than "
        f"{retain_days} days, {len(report.removed):,} files, {_size(report.bytes_removed)}; "
        f"kept {report.folders_kept_latest:,} latest and {report.folders_kept_young:,} younger",
        highlight=False,
        soft_wrap=True,
    )


# -- civiclake server: one local Prefect server the run commands reuse ----------------------

server_app = typer.Typer(
    help="A local Prefect server in the background that run commands reuse (see the README).",
    no_args_is_help=True,
    rich_markup_mode=HELP_MARKUP,
)
app.add_typer(server_app, name="server")
SERVER_NOT_RUNNING_EXIT = 3  # `status` when no server runs (the LSB init-script convention)


def _use_local_server() -> None:
    """Before a run imports Prefect: the civiclake server instead of a temporary one, when no
    Prefect API URL is configured (civiclake._private.local_server)."""
    from civiclake._private import local_server

    line = local_server.use_for_run(get_settings().home_dir)
    if line:
        err.print(line, highlight=False, soft_wrap=True)


@server_app.command("start")
@user_errors
def server_start(
    port: int | None = typer.Option(
        None, "--port", min=1, max=65535, help="Port on 127.0.0.1 [default: the last one, or free]."
    ),
    timeout: float | None = typer.Option(
        None, "--timeout", min=1, help="Seconds to wait until it answers [default: 120]."
    ),
) -> None:
    """Start the local Prefect server in the background (nothing to do when it runs)."""
    from civiclake._private import local_server

    now, started = local_server.start(get_settings().home_dir, port, timeout)
    assert now.server is not None
    if not started and port is not None and port != now.server.port:
        raise CivicLakeError(
            f"the civiclake Prefect server already runs on port {now.server.port}: "
            "civiclake server stop, then start it with --port"
        )
    verb = "started" if started else "already running"
    out.print(
        f"{verb}: {now.server.url} (PREFECT_API_URL {now.server.api_url}), pid {now.server.pid}; "
        "run commands use it, civiclake server stop stops it",
        highlight=False,
        soft_wrap=True,
    )


@server_app.command("status")
@user_errors
def server_status() -> None:
    """Print url, pid and uptime: exit 0 running, 3 not running, 1 running but not answering."""
    from civiclake._private import local_server

    home = get_settings().home_dir
    now = local_server.status(home)
    folder = local_server.state_dir(home)
    if now.server is None:
        stale = f" (removed a stale pid file: pid {now.stale} is gone)" if now.stale else ""
        out.print(f"not running{stale}; state in {folder}", highlight=False, soft_wrap=True)
        raise SystemExit(SERVER_NOT_RUNNING_EXIT)  # not an error: no "error:" line
    line = (
        f"url {now.server.url}, pid {now.server.pid}, uptime {now.server.uptime()}; "
        f"state in {folder}"
    )
    if now.state != "running":
        raise CivicLakeError(f"not answering: {line}: civiclake server stop, then start")
    out.print(f"running: {line}", highlight=False, soft_wrap=True)


@server_app.command("stop")
@user_errors
def server_stop() -> None:
    """Stop the local Prefect server (nothing to do when it does not run)."""
    from civiclake._private import local_server

    was = local_server.stop(get_settings().home_dir)
    if was.server is None:
        out.print("not running", highlight=False)
    else:
        out.print(f"stopped (pid {was.server.pid})", highlight=False)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        raise  # see user_errors: issue 17's interrupt handling
    except SystemExit as done:  # every command ends here (Typer's standalone mode)
        from civiclake._private import fast_exit

        fast_exit.after_run(done.code)  # after a flow: no 2-3 s interpreter teardown
        raise
    except Exception as exc:  # outside any command (option parsing, callbacks)
        if debugging():
            traceback.print_exc()
        raise SystemExit(fail(describe_unexpected(exc), 1).exit_code) from None


if __name__ == "__main__":
    main()
