"""The ``bnt-hourly-traffic`` flow: plan -> fetch (API or a bulk export -> raw zone) -> stage
(the engine: raw files -> Iceberg data files, each page staged as soon as it is written) ->
commit (table, then rejects) -> warehouses (from the same data files) -> summary.

Tasks pass lake URLs, staged data-file descriptors and small summaries, never data. The flow is
what the CLI runs and what a deployment schedules; parameters are validated before anything is
written.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from pydantic import Field

from civiclake._private.display import display_value
from civiclake.blocks import Blocks, settings_for
from civiclake.config import Settings
from civiclake.errors import CivicLakeError, ParameterError, SourceError, describe
from civiclake.flows import preflight
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

if TYPE_CHECKING:
    from pyiceberg.table import Table

    from civiclake.lake import Lake
    from civiclake.pipeline import Staged

FLOW_NAME = "bnt-hourly-traffic"
logger = logging.getLogger(__name__)
HWM_PROPERTY = "high-water-mark"
"""Snapshot property: the newest ``date`` in the table after the load (ISO)."""


def high_water_mark(settings: Settings) -> date | None:
    """Latest ``date`` in the table: the current snapshot's property, or (a table written
    before the property, or a snapshot of ``maintain``) its data files' statistics."""
    from civiclake import tables

    catalog = tables.load_catalog(settings)
    if not catalog.table_exists(bnt_fetch.TABLE):
        return None
    return table_high_water_mark(catalog.load_table(bnt_fetch.TABLE))


def table_high_water_mark(table: Table) -> date | None:
    from civiclake import tables

    snapshot = table.current_snapshot()
    if snapshot is None:
        return None
    if snapshot.summary is not None:
        value = snapshot.summary.additional_properties.get(
            tables.SNAPSHOT_PROPERTY_PREFIX + HWM_PROPERTY
        )
        if value:
            return date.fromisoformat(value)
    files = table.inspect.files()
    if files.num_rows == 0:
        return None
    uppers = [
        m["date"]["upper_bound"]
        for m in files.column("readable_metrics").to_pylist()
        if m and m.get("date") and m["date"]["upper_bound"] is not None
    ]
    return max(uppers) if uppers else None


def _next_high_water_mark(previous: date | None, replaced: Slice, days: Any) -> date | None:
    """The table's newest date once ``replaced`` holds ``days``: None when unknown without
    reading the table (then the next plan reads file statistics)."""
    newest = max(days) if days else None
    if previous is None or not _covers(replaced, previous):
        present = [d for d in (previous, newest) if d is not None]
        return max(present) if present else None
    # the newest row was replaced: every row left outside the slice is older than the new
    # rows (a window: before its start; a file's days: the slice ends at its newest day)
    return newest


def _covers(replaced: Slice, day: date) -> bool:
    windows = replaced.windows if isinstance(replaced, Windows) else [replaced]
    return any(
        isinstance(w, Window) and w.start <= day < w.stop  # type: ignore[operator]
        for w in windows
    )


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
    start: date,
    stop: date,
    run_id: str,
    source: str,
    page_size: int,
    blocks: Blocks = None,
) -> dict[str, Any]:
    """Page the API into the raw zone, each page staged (typed into data files) as soon as it
    is written; returns the fetch's counts and the staged load."""
    settings = settings_for(blocks)
    log = get_run_logger()
    load_range = bnt_fetch.LoadRange(start, stop)
    with SocrataClient.from_settings(settings) as client:
        fetched, staged = fetch_and_stage(
            settings,
            client,
            load_range,
            run_id=run_id,
            source=source,
            page_size=page_size,
            log=log,
        )
    log.info(
        "fetched %s rows in %d pages (%d retries)",
        f"{fetched.rows:,}",
        fetched.pages,
        fetched.retries,
    )
    return {"fetched": asdict(fetched), "staged": staged}


def fetch_and_stage(
    settings: Settings,
    client: SocrataClient,
    load_range: bnt_fetch.LoadRange,
    *,
    run_id: str,
    source: str,
    page_size: int,
    log: Any = None,
) -> tuple[bnt_fetch.FetchResult, Staged]:
    """The fetch and the stage of a range, overlapped (no Prefect: the flow's ``fetch`` task,
    tests and benchmarks call it). The fetch runs ahead in a thread from the first request
    (raw pages wait in the lake, not in memory) while the stage imports its engine, opens the
    tables and types each page written. A count mismatch discards the staged files and fetches
    (and stages) the range again."""
    from civiclake._private.prefetch import Prefetch

    lake = settings.lake()
    stages: list[Any] = []

    def consume(pages: Any) -> Staged:
        with Prefetch(pages, depth=100_000, name="civiclake-fetch") as ahead:
            if not stages:
                from civiclake.sources import bnt

                ctx = bnt.context(run_id, source, datetime.now(UTC), load_range)
                stages.append(stager(settings, lake, ctx, log))
            return stages[0](ahead)  # type: ignore[no-any-return]

    fetched, staged = bnt_fetch.fetch_range(
        client,
        lake,
        load_range,
        run_id=run_id,
        dataset_id=settings.bnt_dataset_id,
        page_size=page_size,
        consume=consume,
        discard=lambda done: discard(lake, done),
        log=log or logger,
    )
    _warn_unknown_plazas(staged, log)
    return fetched, staged


def stager(settings: Settings, lake: Lake, ctx: Any, log: Any) -> Any:
    """``raw URLs -> Staged`` with the settings' engine, into the B&T tables (created first:
    data files are written for the table's current partition spec)."""
    from civiclake import tables
    from civiclake.pipeline.engines import get_stage
    from civiclake.sources import bnt

    engine = get_stage(settings.engine)
    table, rejects_table = bnt.SPEC.ensure_tables(tables.load_catalog(settings))

    def stage(urls: Any) -> Staged:
        return engine(  # type: ignore[no-any-return]
            bnt.BntSpec(),  # (its own: it warns once a run about unknown fields)
            lake,
            urls,
            ctx,
            table=table,
            rejects_table=rejects_table,
            log=log or logger,
        )

    return stage


def discard(lake: Lake, staged: Staged) -> None:
    """Remove a stage's data files that will never be committed (else ``maintain`` would)."""
    for url in [*staged.data_urls, *staged.rejects_urls]:
        with contextlib.suppress(OSError):
            lake.remove(url)


def _warn_unknown_plazas(staged: Staged, log: Any) -> None:
    unknown = staged.observed.get("unknown_plaza_ids")
    if unknown:
        (log or logger).warning(
            "plaza ids with no known facility (loaded, facility NULL): %s",
            ", ".join(map(str, sorted(unknown))),
        )


@task(name="stage-file", cache_policy=NO_CACHE)
def stage_file(path: str, run_id: str, source: str, blocks: Blocks = None) -> Staged:
    """Copy a bulk export into the raw zone and stage it; its errors name the user's path,
    not the raw-zone copy."""
    import pyarrow as pa

    from civiclake.sources import bnt

    settings = settings_for(blocks)
    lake = settings.lake()
    raw_urls = bnt.stage_file(lake, path, run_id=run_id)
    log = get_run_logger()
    try:
        staged: Staged = stager(
            settings, lake, bnt.context(run_id, source, datetime.now(UTC)), log
        )(raw_urls)
    except CivicLakeError as exc:
        text = str(exc)
        for url in raw_urls:
            text = text.replace(url, path)
        raise type(exc)(text) from None
    except (OSError, EOFError, ValueError, pa.ArrowException) as exc:
        raise SourceError(
            f"{path}: cannot read it ({describe(exc)}): is the file complete? (download it again)"
        ) from None
    _warn_unknown_plazas(staged, log)
    return staged


@task(name="load", cache_policy=NO_CACHE)
def load(
    staged: Staged,
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
    """Replace the range (or ``replaced``: a file's days) in the table and its rejects table
    with the staged data files, each in one Iceberg commit; an empty stage never deletes rows
    unless ``allow_empty``."""
    settings = settings_for(blocks)
    replaced = replaced or Window(bnt_fetch.DATE_FIELD, start, stop)
    with table_lock(bnt_fetch.TABLE, settings):
        return commit_load(
            settings,
            staged,
            run_id=run_id,
            source=source,
            load_range=bnt_fetch.LoadRange(start, stop),
            rows_fetched=rows_fetched,
            load_key=load_key,
            replaced=replaced,
            allow_empty=allow_empty,
            warehouse=warehouse,
            log=get_run_logger(),
        )


def commit_load(
    settings: Settings,
    staged: Staged,
    *,
    run_id: str,
    source: str,
    load_range: bnt_fetch.LoadRange,
    rows_fetched: int,
    load_key: str,
    replaced: Slice,
    allow_empty: bool = False,
    warehouse: str | None = None,
    log: Any = None,
) -> dict[str, Any]:
    """The commit step of a load, under the table's lock (no Prefect: ``load`` and the daily
    test harness call it): refuse an empty load, complete an earlier load's missing rejects
    commit, skip an unchanged re-run, else commit the table, then its rejects."""
    from civiclake import tables
    from civiclake.pipeline.commit import Load, commit, repair
    from civiclake.tables.history import partitions_touched

    lake = settings.lake()
    catalog = tables.load_catalog(settings)
    table = catalog.load_table(bnt_fetch.TABLE)
    rejects_table = catalog.load_table(bnt_fetch.REJECTS_TABLE)
    refuse_empty(table, bnt_fetch.TABLE, replaced, staged.rows_valid, allow_empty=allow_empty)
    log = log or logger
    repair(catalog, lake, bnt_fetch.TABLE, bnt_fetch.REJECTS_TABLE, log)
    rejects_replaced = _Rejects(replaced, load_key)
    if _unchanged(table, rejects_table, lake, staged, replaced, rejects_replaced):
        snapshot = table.current_snapshot()
        assert snapshot is not None and snapshot.summary is not None
        log.info("%s unchanged: nothing committed", bnt_fetch.TABLE)
        return {
            "snapshot_id": snapshot.snapshot_id,
            "rows_loaded": staged.rows_valid,
            "table_rows": int(snapshot.summary["total-records"]),
            "rejects_snapshot_id": None,
            "partitions": [],  # nothing committed, nothing touched
            "changes": "unchanged (nothing committed)",
        }
    spans = (
        [(w.start, w.stop) for w in replaced.windows]
        if isinstance(replaced, Windows)
        else [(load_range.start, load_range.stop)]
    )
    hwm = _next_high_water_mark(table_high_water_mark(table), replaced, staged.observed.get("days"))
    props = {
        "run-id": run_id,
        "source": source,
        "range": str(load_range),
        "rows-fetched": str(rows_fetched),
        "rows-loaded": str(staged.rows_valid),
        "rows-rejected": str(staged.rows_rejected),
        **({WAREHOUSE_PROPERTY: warehouse} if warehouse else {}),
        "rejects-days": ",".join(f"{a.isoformat()}/{b.isoformat()}" for a, b in spans),
        "load-key": load_key,
        **({HWM_PROPERTY: hwm.isoformat()} if hwm else {}),
    }
    main = commit(lake, table, rejects_table, Load(staged, replaced, rejects_replaced, props))
    rejects_snapshot = rejects_table.current_snapshot()
    # under the lock: the newest snapshots are this run's
    touched = partitions_touched(table, run_id)
    log.info(
        "committed snapshot %s to %s (%s rows now)",
        main.snapshot_id,
        bnt_fetch.TABLE,
        f"{main.total_rows:,}",
    )
    return {
        "snapshot_id": main.snapshot_id,
        "rows_loaded": main.rows_written,
        "table_rows": main.total_rows,
        "rejects_snapshot_id": rejects_snapshot.snapshot_id if rejects_snapshot else None,
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
    table: Table,
    rejects_table: Table,
    lake: Lake,
    staged: Staged,
    replaced: Slice,
    rejects_replaced: _Rejects,
) -> bool:
    """A re-run with nothing new: the staged rows and rejects are what the slice holds."""
    from civiclake.guards import same_rows

    if not same_rows(rejects_table, rejects_replaced, staged.rejects_urls, lake):
        return False
    return same_rows(table, replaced, staged.data_urls, lake)


@task(name="load-warehouse", cache_policy=NO_CACHE)
def load_warehouse(
    staged: Staged,
    start: date,
    stop: date,
    to: str,
    load_key: str | None = None,
    blocks: Blocks = None,
    replaced: Slice | None = None,
) -> dict[str, Any]:
    """Replace ``[start, stop)`` (or ``replaced``: the days a file holds) of the table in the
    warehouse from the load's data files, and the load's rejects (those recorded under the
    same load key, as TLC's and Socrata's rejects go to the warehouse): delete + bulk load, one
    transaction per table."""
    from civiclake.slices import RowIds
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
            staged.data_urls,
            lake,
            replaced or Window(bnt_fetch.DATE_FIELD, start, stop),
        )
        if load_key is not None:
            warehouse.replace(
                bnt_fetch.REJECTS_TABLE,
                bnt.REJECTS_ARROW_SCHEMA,
                staged.rejects_urls,
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
    # the checks the CLI ran before Prefect started, again for a run without it (a deployment)
    preflight.bnt(
        settings,
        start_date=start_date,
        stop_date=stop_date,
        from_file=from_file,
        to=to.value if to is not None else None,
        warehouse_block=warehouse_block,
    )
    if to is not None:  # reachable, credentials, writable: before anything is fetched
        check_warehouse(to.value, settings)
    page_size = page_size or settings.page_size
    if page_size < 1:
        raise ParameterError("page size must be at least 1")

    if from_file:
        source = f"file:{from_file.rsplit('/', 1)[-1]}"
        staged = stage_file(from_file, run_id, source, blocks=blocks)
        days = sorted(staged.observed.get("days", ()))
        if staged.rows_valid == 0:
            raise ParameterError(
                f"{from_file}: no valid row to load ({staged.rows_rejected} rejected)"
            )
        start = days[0]
        stop = days[-1] + timedelta(days=1)
        fetched = staged.rows_read
        # the days the file holds, not the span between its first and last date
        replaced: Slice = Windows.of_days(bnt_fetch.DATE_FIELD, days)
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
        fetched_info = fetch_with_retries(start, stop, run_id, source, page_size, blocks=blocks)
        staged = fetched_info["staged"]
        fetched = fetched_info["fetched"]["rows"]
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
        "rows_rejected": staged.rows_rejected,
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
    if "changes" in loaded:  # nothing committed: the staged files are no one's
        discard(settings.lake(), staged)
    report(summary, blocks=blocks)
    if not_synced:
        raise WarehouseNotSynced(not_synced, summary)
    return summary
