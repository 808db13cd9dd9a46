"""What a run checks before it fetches or writes anything: one function per flow.

Prefect-free (this package's ``__init__`` only sets environment defaults), so the CLI runs
them before it starts Prefect: a bad input is one line and exit 2 in a second, not after the
server start. Each function takes the flow's parameters (the CLI parses its options into those
first), and each flow runs the same call at its start (a deployment run has no CLI): one
definition of every check, the flow's the source of truth.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from civiclake.config import Settings
from civiclake.errors import ParameterError

__all__ = [
    "BNT_FILE_SUFFIXES",
    "TLC_FILE_SUFFIXES",
    "bnt",
    "check_from_file",
    "check_incremental_possible",
    "check_to",
    "socrata",
    "tlc",
]

BNT_FILE_SUFFIXES = (".csv", ".csv.gz", ".json", ".json.gz", ".ndjson")
TLC_FILE_SUFFIXES = (".csv", ".csv.gz", ".parquet")


def check_to(
    to: str, settings: Settings, *, warehouse_block: str | None = None, merges: bool = False
) -> None:
    """``--to``: a known warehouse, its driver installed, its settings present (or a block);
    ``merges``: it also replaces whole tables and merges by row id (a Socrata dataset)."""
    from civiclake.warehouse import WAREHOUSE_KINDS, check_configured, check_merges

    if to not in WAREHOUSE_KINDS:
        raise ParameterError(f"--to: unknown warehouse {to!r} ({' or '.join(WAREHOUSE_KINDS)})")
    (check_merges if merges else check_configured)(to, settings, block=bool(warehouse_block))


def _check_block_has_to(to: str | None, warehouse_block: str | None) -> None:
    if warehouse_block and not to:
        raise ParameterError("--warehouse-block names the warehouse of --to: give --to as well")


def check_from_file(path: str, suffixes: tuple[str, ...]) -> None:
    """A local ``--from-file`` exists and is a kind civiclake reads (a URL is read later)."""
    if not path.lower().endswith(suffixes):
        raise ParameterError(
            f"--from-file {path}: unsupported file type (expected {', '.join(suffixes)})"
        )
    scheme = urlsplit(path).scheme
    if scheme in ("", "file") or len(scheme) == 1:  # a local path (or a Windows drive)
        local = Path(path.removeprefix("file://")).expanduser()
        if not local.is_file():
            raise ParameterError(f"--from-file {path}: no such file")


def check_incremental_possible(settings: Settings) -> None:
    """An incremental B&T run needs a loaded table (its high-water mark)."""
    from civiclake import tables
    from civiclake.sources import bnt_fetch

    catalog = tables.load_catalog(settings)
    if (
        not catalog.table_exists(bnt_fetch.TABLE)
        or catalog.load_table(bnt_fetch.TABLE).current_snapshot() is None
    ):
        raise ParameterError(
            f"{bnt_fetch.TABLE} is empty: give --start-date for the first load (or --from-file)"
        )


def bnt(
    settings: Settings,
    *,
    start_date: date | None = None,
    stop_date: date | None = None,
    from_file: str | None = None,
    to: str | None = None,
    warehouse_block: str | None = None,
    lake_block: str | None = None,
    lookback_days: int | None = None,
    page_size: int | None = None,
    lake: str | None = None,
    socrata_token_block: str | None = None,
    allow_empty: bool = False,
) -> None:
    """``bnt-hourly-traffic``: dates or a file (not both), the range, the warehouse, the lake
    (unless a block provides it: the run reads it then) and a table to continue from. Every
    parameter of the flow is taken, the last five unchecked here, so the CLI passes the
    flow's parameters as they are (``lake`` is in ``settings`` already)."""
    start, stop = start_date, stop_date
    if from_file and (start or stop):
        raise ParameterError("--from-file takes its dates from the file: drop the date options")
    if from_file:
        check_from_file(from_file, BNT_FILE_SUFFIXES)
    if start and stop and stop <= start:
        raise ParameterError(
            f"--stop-date {stop} must be after --start-date {start} (the range is [start, stop))"
        )
    _check_block_has_to(to, warehouse_block)
    check_engine(settings)
    if to:
        check_to(to, settings, warehouse_block=warehouse_block)
    if not lake_block:  # wrong credentials, no container, ...
        settings.lake().check_writable()
        if not from_file and start is None:
            check_incremental_possible(settings)


def socrata(
    settings: Settings,
    *,
    dataset: str,
    table: str | None = None,
    full: bool = False,
    partition: str | None = None,
    where: str | None = None,
    date_field: str | None = None,
    start_date: date | None = None,
    stop_date: date | None = None,
    portal: str | None = None,
    to: str | None = None,
    warehouse_block: str | None = None,
    lake_block: str | None = None,
    page_size: int | None = None,
    lake: str | None = None,
    socrata_token_block: str | None = None,
    allow_empty: bool = False,
) -> Any:
    """``socrata-dataset``: the warehouse (one that merges, unless a date range is replaced),
    the lake, the dataset (id, portal, columns, ``--where``, partitioning), the range and an
    existing table's columns. The dataset's spec, or None when a lake block defers the rest.
    Every parameter of the flow is taken, the last four unchecked here (as ``bnt``)."""
    from civiclake.sources.socrata_plan import check_existing_table, range_window, resolve_spec

    _check_block_has_to(to, warehouse_block)
    check_engine(settings)
    if to:  # a range load replaces a window: every warehouse can
        check_to(to, settings, warehouse_block=warehouse_block, merges=not date_field)
    if lake_block:
        return None
    settings.lake().check_writable()
    spec = resolve_spec(
        settings, dataset, portal=portal, table=table, partition=partition, where=where
    )
    range_window(spec, date_field, start_date, stop_date, full=full)
    check_existing_table(settings, spec, full=full)
    return spec


def tlc(
    settings: Settings,
    *,
    color: str,
    year: int,
    months: str,
    from_file: str | None,
    to: str,
    warehouse_block: str | None,
    lake_block: str | None,
) -> tuple[Any, list[Any]]:
    """``tlc-taxi-trips``: the color, the months, the warehouse, one month for a file, the
    lake. The trip schema and the months."""
    from civiclake.sources import tlc as source

    if from_file:
        check_from_file(from_file, TLC_FILE_SUFFIXES)
    spec = source.spec_for(color)
    wanted = source.parse_months(months, year)
    check_to(to, settings, warehouse_block=warehouse_block)
    if from_file and len(wanted) != 1:
        raise ParameterError("--from-file loads one month: give exactly one month")
    if not lake_block:
        settings.lake().check_writable()
    check_engine(settings)
    return spec, wanted


def check_engine(settings: Settings) -> None:
    """An unknown ``CIVICLAKE_ENGINE``, refused before anything is fetched."""
    from civiclake.pipeline.engines import check_engine as check

    check(settings.engine)
