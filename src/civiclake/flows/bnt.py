"""The ``bnt-hourly-traffic`` flow: Socrata API (or a bulk export) -> raw zone -> stage -> Iceberg.

Tasks pass lake URLs and small summaries, never data. The flow is what the CLI runs and what a
deployment schedules; parameters are validated before anything is written.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

import pyarrow as pa
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from pydantic import Field

from civiclake._private.display import display_value
from civiclake.blocks import Blocks, settings_for
from civiclake.config import Settings
from civiclake.errors import CivicLakeError, ParameterError, SourceError, describe
from civiclake.flows._locks import table_lock
from civiclake.flows._params import (
    AllowEmptyParam,
    AlsoWarehouseParam,
    DateParam,
    LakeBlockParam,
    LakeParam,
    PageSizeParam,
    TokenBlockParam,
    WarehouseBlockParam,
)
from civiclake.flows._sync import (
    WAREHOUSE_PROPERTY,
    WarehouseNotSynced,
    check_warehouse,
    load_or_sync,
)
from civiclake.guards import EmptyLoadRefused, refuse_empty, refused
from civiclake.slices import Slice, Window, Windows
from civiclake.sources import bnt_fetch
from civiclake.sources.socrata import SocrataClient

FLOW_NAME = "bnt-hourly-traffic"


def high_water_mark(settings: Settings) -> date | None:
    """Latest ``date`` in the table, from file statistics (no data file read)."""
    from civiclake import tables

    catalog = tables.load_catalog(settings)
    if not catalog.table_exists(bnt_fetch.TABLE):
        return None
    table = catalog.load_table(bnt_fetch.TABLE)
    if table.current_snapshot() is None:
        return None
    files = table.inspect.files()
    if files.num_rows == 0:
        return None
    uppers = [
        m["date"]["upper_bound"]
        for m in files.column("readable_metrics").to_pylist()
        if m and m.get("date") and m["date"]["upper_bound"] is not None
    ]
    return max(uppers) if uppers else None


def plan_range(
    start: date | None,
    stop: date | None,
    *,
    lookback_days: int,
    today: date,
    hwm: date | None,
) -> bnt_fetch.LoadRange:
    """The ``[start, stop)`` a run replaces; stop defaults to the end of today."""
    stop = stop or today + timedelta(days=1)
    if start is None:
        if hwm is None:
            raise ParameterError(
                f"{bnt_fetch.TABLE} is empty: give --start-date for the first load (or --from-file)"
            )
        start = hwm - timedelta(days=lookback_days)
    if stop <= start:
        raise ParameterError(
            f"stop date {stop.isoformat()} must be after start date {start.isoformat()} "
            "(the range is [start, stop))"
        )
    return bnt_fetch.LoadRange(start, stop)


def _run_id() -> str:
    return str(flow_run.id or f"local-{datetime.now(UTC):%Y%m%dT%H%M%S}")


@task(name="fetch", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def fetch(
    start: date, stop: date, run_id: str, page_size: int, blocks: Blocks = None
) -> dict[str, Any]:
    """Page the API into the raw zone; returns lake URLs and counts."""
    settings = settings_for(blocks)
    log = get_run_logger()
    with SocrataClient.from_settings(settings) as client:
        result = bnt_fetch.fetch_range(
            client,
            settings.lake(),
            bnt_fetch.LoadRange(start, stop),
            run_id=run_id,
            dataset_id=settings.bnt_dataset_id,
            page_size=page_size,
            log=log,
        )
    log.info(
        "fetched %s rows in %d pages (%d retries)", f"{result.rows:,}", result.pages, result.retries
    )
    return asdict(result)


@task(name="stage-file", cache_policy=NO_CACHE)
def stage_file(path: str, run_id: str, blocks: Blocks = None) -> list[str]:
    """Copy a bulk export into the raw zone."""
    from civiclake.sources import bnt

    settings = settings_for(blocks)
    return bnt.stage_file(settings.lake(), path, run_id=run_id)


@task(name="stage", cache_policy=NO_CACHE)
def stage(
    raw_urls: list[str],
    run_id: str,
    source: str,
    start: date | None,
    stop: date | None,
    expected_rows: int | None = None,
    blocks: Blocks = None,
) -> dict[str, Any]:
    """Raw files -> typed, validated Parquet (and rejects) in the stage zone."""
    from civiclake.sources import bnt

    settings = settings_for(blocks)
    load_range = bnt_fetch.LoadRange(start, stop) if start and stop else None
    ctx = bnt_fetch.LoadContext(run_id, source, datetime.now(UTC), load_range)
    lake = settings.lake()
    result = bnt.stage(lake, raw_urls, ctx, log=get_run_logger(), expected_rows=expected_rows)
    return asdict(result)


def _stage_user_file(
    from_file: str, raw_urls: list[str], run_id: str, source: str, blocks: Blocks
) -> dict[str, Any]:
    """``stage`` of a user's file: its errors name the user's path, not the raw-zone copy."""
    try:
        return stage(raw_urls, run_id, source, None, None, blocks=blocks)  # type: ignore[no-any-return]
    except CivicLakeError as exc:
        text = str(exc)
        for url in raw_urls:
            text = text.replace(url, from_file)
        raise type(exc)(text) from None
    except (OSError, EOFError, ValueError, pa.ArrowException) as exc:
        raise SourceError(
            f"{from_file}: cannot read it ({describe(exc)}): is the file complete? "
            "(download it again)"
        ) from None


@task(name="load", cache_policy=NO_CACHE)
def load(
    staged: dict[str, Any],
    run_id: str,
    source: str,
    start: date,
    stop: date,
    rows_fetched: int,
    load_key: str,
    blocks: Blocks = None,
    replaced: Slice | None = None,
    allow_empty: bool = False,
    warehouse: str | None = None,
) -> dict[str, Any]:
    """Replace the range (or ``replaced``: a file's days) in the table and its rejects table,
    each in one Iceberg commit; an empty stage never deletes rows unless ``allow_empty``."""
    from civiclake import tables
    from civiclake.sources import bnt
    from civiclake.tables.history import partitions_touched

    settings = settings_for(blocks)
    lake = settings.lake()
    catalog = tables.load_catalog(settings)
    load_range = bnt_fetch.LoadRange(start, stop)
    props = {
        "run-id": run_id,
        "source": source,
        "range": str(load_range),
        "rows-fetched": str(rows_fetched),
        "rows-loaded": str(staged["rows_valid"]),
        "rows-rejected": str(staged["rows_rejected"]),
        **({WAREHOUSE_PROPERTY: warehouse} if warehouse else {}),
    }
    replaced = replaced or Window(bnt_fetch.DATE_FIELD, start, stop)
    with table_lock(bnt_fetch.TABLE, settings):
        refuse_empty(
            catalog.load_table(bnt_fetch.TABLE) if catalog.table_exists(bnt_fetch.TABLE) else None,
            bnt_fetch.TABLE,
            replaced,
            staged["rows_valid"],
            allow_empty=allow_empty,
        )
        bnt.repair_rejects(catalog, lake)  # a crash between an earlier load's two commits
        if _unchanged(catalog, lake, staged, replaced, load_key):
            table = catalog.load_table(bnt_fetch.TABLE)
            snapshot = table.current_snapshot()
            assert snapshot is not None and snapshot.summary is not None
            get_run_logger().info("%s unchanged: nothing committed", bnt_fetch.TABLE)
            return {
                "snapshot_id": snapshot.snapshot_id,
                "rows_loaded": staged["rows_valid"],
                "table_rows": int(snapshot.summary["total-records"]),
                "rejects_snapshot_id": None,
                "partitions": [],  # nothing committed, nothing touched
                "changes": "unchanged (nothing committed)",
            }
        main, rejects = bnt.commit_staged(
            catalog,
            lake,
            staged["valid_url"],
            staged["rejects_url"],
            load_range,
            load_key,
            props,
            replaced,
        )
        # under the lock: the newest snapshots are this run's
        touched = partitions_touched(catalog.load_table(bnt_fetch.TABLE), run_id)
    get_run_logger().info(
        "committed snapshot %s to %s (%s rows now)",
        main.snapshot_id,
        bnt_fetch.TABLE,
        f"{main.total_rows:,}",
    )
    return {
        "snapshot_id": main.snapshot_id,
        "rows_loaded": main.rows_written,
        "table_rows": main.total_rows,
        "rejects_snapshot_id": rejects.snapshot_id,
        "partitions": touched,  # what changed, not every month the range spans
    }


@dataclass(frozen=True)
class _Rejects:
    """The rejects a load replaces: dated in its slice, or recorded by the same load key."""

    replaced: Slice
    load_key: str

    def iceberg_filter(self) -> Any:
        from pyiceberg.expressions import EqualTo, Or

        return Or(self.replaced.iceberg_filter(), EqualTo("load_range", self.load_key))


def _unchanged(
    catalog: Any, lake: Any, staged: dict[str, Any], replaced: Slice, load_key: str
) -> bool:
    """A re-run with nothing new: the staged rows and rejects are what the slice holds."""
    from civiclake.guards import same_rows
    from civiclake.sources import bnt

    if not catalog.table_exists(bnt_fetch.TABLE) or not catalog.table_exists(bnt.REJECTS_TABLE):
        return False
    rejects = catalog.load_table(bnt.REJECTS_TABLE)
    if not same_rows(rejects, _Rejects(replaced, load_key), staged["rejects_url"], lake):
        return False
    table = catalog.load_table(bnt_fetch.TABLE)
    return same_rows(table, replaced, staged["valid_url"], lake)


@task(name="load-warehouse", cache_policy=NO_CACHE)
def load_warehouse(
    staged: dict[str, Any],
    start: date,
    stop: date,
    to: str,
    load_key: str | None = None,
    blocks: Blocks = None,
    replaced: Slice | None = None,
) -> dict[str, Any]:
    """Replace ``[start, stop)`` (or ``replaced``: the days a file holds) of the table in the
    warehouse from the same staged Parquet, and the load's rejects (those recorded under the
    same load key, as TLC's and Socrata's rejects go to the warehouse): delete + bulk load, one
    transaction per table."""
    from civiclake.slices import RowIds, Window
    from civiclake.sources import bnt
    from civiclake.warehouse import open_warehouse

    settings = settings_for(blocks)
    lake = settings.lake()
    with (
        table_lock(f"{to}:{bnt_fetch.TABLE}", settings, commits=False),
        open_warehouse(to, settings) as warehouse,
    ):
        rows = warehouse.replace(
            bnt_fetch.TABLE,
            bnt.ARROW_SCHEMA,
            [staged["valid_url"]],
            lake,
            replaced or Window(bnt_fetch.DATE_FIELD, start, stop),
        )
        if load_key is not None:
            warehouse.replace(
                bnt_fetch.REJECTS_TABLE,
                bnt.REJECTS_ARROW_SCHEMA,
                [staged["rejects_url"]],
                lake,
                RowIds.of("load_range", [load_key]),
            )
    get_run_logger().info(
        "replaced %s in %s %s: %s rows",
        replaced or f"[{start}, {stop})",
        to,
        bnt_fetch.TABLE,
        f"{rows:,}",
    )
    return {"warehouse": to, "rows": rows}


@task(name="report", cache_policy=NO_CACHE)
def report(summary: dict[str, Any], blocks: Blocks = None) -> dict[str, Any]:
    """Publish the run summary as a Prefect artifact (visible in the UI) and return it."""
    rows = "\n".join(f"| {k} | {_fmt(k, v)} |" for k, v in summary.items())
    create_markdown_artifact(
        key="bnt-load-summary",
        markdown=f"## {FLOW_NAME}: {bnt_fetch.TABLE}\n\n| metric | value |\n|---|---|\n{rows}\n"
        + _load_figures(summary, blocks),
        description=f"{bnt_fetch.TABLE} load {summary['range']}",
    )
    return summary


def _load_figures(summary: dict[str, Any], blocks: Blocks) -> str:
    """Chart and tables of what this run loaded (civiclake.report.artifact), as markdown."""
    from civiclake.report.artifact import bnt_figures

    start, stop = (date.fromisoformat(d) for d in summary["range"].strip("[)").split(", "))
    return bnt_figures(settings_for(blocks), start, stop, summary["run_id"])


def _fmt(key: str, value: Any) -> str:
    if isinstance(value, list):
        return (
            ", ".join(map(str, value))
            if len(value) <= 12
            else (f"{value[0]} .. {value[-1]} ({len(value)})")
        )
    return display_value(key, value)


@flow(name=FLOW_NAME, validate_parameters=True)
def bnt_hourly_traffic(
    start_date: Annotated[
        DateParam | None, Field(description="First date (YYYY-MM-DD); empty: incremental")
    ] = None,
    stop_date: Annotated[
        DateParam | None, Field(description="Date after the last one; empty: through today")
    ] = None,
    from_file: Annotated[str | None, Field(description="Load a bulk export instead")] = None,
    lookback_days: Annotated[
        int | None, Field(ge=0, description="Incremental re-fetch window, days")
    ] = None,
    page_size: PageSizeParam = None,
    lake: LakeParam = None,
    lake_block: LakeBlockParam = None,
    socrata_token_block: TokenBlockParam = None,
    to: AlsoWarehouseParam = None,
    warehouse_block: WarehouseBlockParam = None,
    allow_empty: AllowEmptyParam = False,
) -> dict[str, Any]:
    """MTA Bridges & Tunnels hourly traffic into ``mta.bnt_traffic_hourly``.

    Dates ``[start_date, stop_date)``; without ``start_date`` the run is incremental (high-water
    mark minus ``lookback_days``); ``from_file`` loads a bulk export (CSV or JSON) instead and
    replaces the days it holds. A load with no row for a range that has rows is refused (the
    run ends Failed with that line) unless ``allow_empty``.
    """
    try:
        return _bnt_hourly_traffic(
            start_date,
            stop_date,
            from_file,
            lookback_days,
            page_size,
            lake,
            lake_block,
            socrata_token_block,
            to,
            warehouse_block,
            allow_empty,
        )
    except EmptyLoadRefused as exc:
        return refused(exc)  # type: ignore[no-any-return]


def _bnt_hourly_traffic(
    start_date: date | None,
    stop_date: date | None,
    from_file: str | None,
    lookback_days: int | None,
    page_size: int | None,
    lake: str | None,
    lake_block: str | None,
    socrata_token_block: str | None,
    to: Any,
    warehouse_block: str | None,
    allow_empty: bool,
) -> dict[str, Any]:
    began = time.monotonic()
    blocks = {
        "lake": lake,
        "lake_block": lake_block,
        "socrata_token_block": socrata_token_block,
        "warehouse_block": warehouse_block,
    }
    settings = settings_for(blocks)
    log = get_run_logger()
    run_id = _run_id()
    if to is not None:
        from civiclake.warehouse import check_configured  # (pyarrow: only when loading one)

        check_configured(to.value, settings)
        # reachable, credentials, writable: before anything is fetched or committed
        check_warehouse(to.value, settings)
    page_size = page_size or settings.page_size
    if page_size < 1:
        raise ParameterError("page size must be at least 1")
    # Wrong credentials, a missing container or a dead endpoint fail here, before any write.
    settings.lake().check_writable()

    if from_file:
        if start_date or stop_date:
            raise ParameterError("--from-file takes its dates from the file: drop the date options")
        source = f"file:{from_file.rsplit('/', 1)[-1]}"
        raw_urls = stage_file(from_file, run_id, blocks=blocks)
        staged = _stage_user_file(from_file, raw_urls, run_id, source, blocks)
        if staged["rows_valid"] == 0:
            raise ParameterError(
                f"{from_file}: no valid row to load ({staged['rows_rejected']} rejected)"
            )
        start = staged["min_date"]
        stop = staged["max_date"] + timedelta(days=1)
        fetched = staged["rows_read"]
        # the days the file holds, not the span between its first and last date
        replaced: Slice = Windows.of_days(bnt_fetch.DATE_FIELD, staged["days"])
    else:
        lookback = settings.bnt_lookback_days if lookback_days is None else lookback_days
        hwm = None if start_date else high_water_mark(settings)
        planned = plan_range(
            start_date, stop_date, lookback_days=lookback, today=date.today(), hwm=hwm
        )
        start, stop = planned.start, planned.stop
        source = f"socrata:{settings.socrata_url.split('://', 1)[-1]}/{settings.bnt_dataset_id}"
        log.info(
            "loading %s for [%s, %s)%s",
            bnt_fetch.TABLE,
            start,
            stop,
            "" if start_date else f" (incremental from high-water mark {hwm})",
        )
        fetch_with_retries = fetch.with_options(
            retries=settings.fetch_retries, retry_delay_seconds=settings.fetch_retry_delay
        )
        fetched_info = fetch_with_retries(start, stop, run_id, page_size, blocks=blocks)
        staged = stage(
            fetched_info["raw_urls"],
            run_id,
            source,
            start,
            stop,
            fetched_info["rows"],
            blocks=blocks,
        )
        fetched = fetched_info["rows"]
        replaced = Window(bnt_fetch.DATE_FIELD, start, stop)

    load_key = source if from_file else str(bnt_fetch.LoadRange(start, stop))
    loaded = load(
        staged,
        run_id,
        source,
        start,
        stop,
        fetched,
        load_key,
        blocks=blocks,
        replaced=replaced,
        allow_empty=allow_empty,
        warehouse=to.value if to is not None else None,
    )
    warehouse, not_synced = None, None
    if to is not None:
        warehouse, not_synced = load_or_sync(
            lambda: load_warehouse(
                staged, start, stop, to.value, load_key, blocks=blocks, replaced=replaced
            ),
            settings=settings,
            identifiers=[bnt_fetch.TABLE],
            to=to.value,
            run_id=run_id,
            snapshot_id=loaded["snapshot_id"],
        )
    summary = {
        "table": bnt_fetch.TABLE,
        "range": f"[{start}, {stop})",
        **({"replaced": str(replaced)} if isinstance(replaced, Windows) else {}),
        "rows_fetched": fetched,
        "rows_loaded": loaded["rows_loaded"],
        "rows_rejected": staged["rows_rejected"],
        "partitions_touched": loaded["partitions"],
        **({"changes": loaded["changes"]} if "changes" in loaded else {}),
        "snapshot_id": loaded["snapshot_id"],
        "table_rows": loaded["table_rows"],
        **(
            {"warehouse": to.value, "warehouse_rows": warehouse["rows"]} if warehouse and to else {}
        ),
        **({"warehouse": not_synced} if not_synced else {}),
        "run_id": run_id,
        "duration_s": round(time.monotonic() - began, 2),
    }
    report(summary, blocks=blocks)
    if not_synced:
        raise WarehouseNotSynced(not_synced, summary)
    return summary
