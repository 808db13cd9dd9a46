"""The ``bnt-hourly-traffic`` flow: plan -> fetch (API or a bulk export -> raw zone) -> stage
(the engine: raw files -> Iceberg data files, each page staged as soon as it is written) ->
commit (table, then rejects) -> warehouses (from the same data files) -> summary.

Tasks pass lake URLs, staged data-file descriptors and small summaries, never data. The flow is
what the CLI runs and what a deployment schedules; parameters are validated before anything is
written.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import Field

from civiclake.blocks import Blocks, settings_for
from civiclake.config import Settings
from civiclake.errors import ParameterError
from civiclake.flows import _pipeline as pipeline, preflight
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
from civiclake.flows._sync import check_warehouse
from civiclake.guards import refusing
from civiclake.slices import RowIds, Slice, Window, Windows
from civiclake.sources import bnt_fetch, socrata_fetch
from civiclake.sources.socrata import SocrataClient
from civiclake.sources.socrata_fetch import FetchProgress

if TYPE_CHECKING:
    from pyiceberg.table import Table

    from civiclake.pipeline import Staged

FLOW_NAME = "bnt-hourly-traffic"
logger = logging.getLogger(__name__)


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
) -> tuple[FetchProgress, Staged]:
    """The fetch and the stage of a range, overlapped (no Prefect: the flow's ``fetch`` task,
    tests and benchmarks call it). The fetch runs ahead in a thread from the first request
    (raw pages wait in the lake, not in memory) while the stage imports its engine, opens the
    tables and types each page written. A count mismatch abandons the stage (its files are
    removed) and fetches (and stages) the range again. A fetch the command began for this
    range before Prefect was imported (``bnt_fetch.fetch_ahead``) is taken over, not repeated."""
    specs: list[Any] = []  # one per run (it warns once about unknown fields), made on first use

    def consume(pages: Iterable[str], expected: int) -> Staged:
        from civiclake.sources import bnt  # PyArrow: imported while the first page downloads

        specs[:] = specs or [bnt.BntSpec()]
        ctx = bnt.context(run_id, source, datetime.now(UTC), load_range)
        staged = pipeline.stage(
            settings, specs[0], pages, ctx, expected_rows=expected, log=log or logger
        )
        socrata_fetch.check_read_back(staged.rows_read, expected)
        return staged

    fetched, staged = bnt_fetch.fetch_range(
        client,
        settings.lake(),
        load_range,
        consume,
        run_id=run_id,
        dataset_id=settings.bnt_dataset_id,
        page_size=page_size,
        log=log or logger,
        ahead=bnt_fetch.take_ahead(settings, load_range, page_size, log or logger),
    )
    _warn_unknown_plazas(staged, log)
    return fetched, staged


def _warn_unknown_plazas(staged: Staged, log: Any) -> None:
    unknown = staged.observed.get("unknown_plaza_ids")
    if unknown:
        (log or logger).warning(
            "plaza ids with no known facility (loaded, facility NULL): %s",
            ", ".join(map(str, sorted(unknown))),
        )


@task(name="stage-file", cache_policy=NO_CACHE)
def stage_file(path: str, run_id: str, source: str, blocks: Blocks = None) -> Staged:
    """Copy a bulk export into the raw zone and stage it (``pipeline.stage_local``)."""
    from civiclake.sources import bnt

    settings = settings_for(blocks)
    raw_urls = bnt.stage_file(settings.lake(), path, run_id=run_id)
    log = get_run_logger()
    ctx = bnt.context(run_id, source, datetime.now(UTC))
    staged = pipeline.stage_local(settings, bnt.BntSpec(), path, raw_urls, ctx, log)
    _warn_unknown_plazas(staged, log)
    return staged


def replacing(
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
) -> pipeline.Replace:
    """What a B&T load replaces: its range (or a file's days) in the table; in the rejects,
    the same days and whatever an earlier load with the same key rejected."""
    spans = (
        [(w.start, w.stop) for w in replaced.windows]
        if isinstance(replaced, Windows)
        else [(load_range.start, load_range.stop)]
    )

    def next_hwm(table: Table) -> str | None:
        days = staged.observed.get("days")
        hwm = _next_high_water_mark(bnt_fetch.table_high_water_mark(table), replaced, days)
        return hwm.isoformat() if hwm else None

    return pipeline.Replace(
        replaced,
        _Rejects(replaced, load_key),
        pipeline.properties(
            run_id,
            source,
            str(load_range),
            staged,
            rows_fetched=rows_fetched,
            warehouse=warehouse,
            **{
                "rejects-days": ",".join(f"{a.isoformat()}/{b.isoformat()}" for a, b in spans),
                "load-key": load_key,
            },
        ),
        allow_empty=allow_empty,
        high_water_mark=next_hwm,
    )


def commit_load(
    settings: Settings, staged: Staged, *, log: Any = None, **load: Any
) -> dict[str, Any]:
    """The commit step of a load outside a flow (the daily test harness, the bench):
    ``replacing(staged, **load)`` committed by ``pipeline.commit``."""
    from civiclake.sources import bnt

    return pipeline.commit(settings, bnt.SPEC, staged, replacing(staged, **load), log)


@dataclass(frozen=True)
class _Rejects:
    """The rejects a load replaces: dated in its slice, or recorded by the same load key."""

    replaced: Slice
    load_key: str

    def iceberg_filter(self) -> Any:
        from pyiceberg.expressions import EqualTo, Or

        return Or(self.replaced.iceberg_filter(), EqualTo("load_range", self.load_key))


@task(name="report", cache_policy=NO_CACHE)
def report(summary: dict[str, Any], blocks: Blocks = None) -> dict[str, Any]:
    """Publish the run summary as a Prefect artifact (visible in the UI) and return it."""
    pipeline.publish(
        "bnt-load-summary",
        f"{FLOW_NAME}: {bnt_fetch.TABLE}",
        f"{bnt_fetch.TABLE} load {summary['range']}",
        summary,
        _load_figures(summary, blocks),
    )
    return summary


def _load_figures(summary: dict[str, Any], blocks: Blocks) -> str:
    """Chart and tables of what this run loaded (civiclake.report.artifact), as markdown."""
    from civiclake.report.artifact import bnt_figures

    start, stop = (date.fromisoformat(d) for d in summary["range"].strip("[)").split(", "))
    return bnt_figures(settings_for(blocks), start, stop, summary["run_id"])


@flow(name=FLOW_NAME, validate_parameters=True)
@refusing
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
    began = time.monotonic()
    blocks = {
        "lake": lake,
        "lake_block": lake_block,
        "socrata_token_block": socrata_token_block,
        "warehouse_block": warehouse_block,
    }
    settings = settings_for(blocks)
    log = get_run_logger()
    run_id = pipeline.run_id()
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
        planned, hwm = bnt_fetch.planned_range(settings, start_date, stop_date, lookback_days)
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

    from civiclake.sources import bnt

    load_key = source if from_file else str(bnt_fetch.LoadRange(start, stop))
    load = replacing(
        staged,
        run_id=run_id,
        source=source,
        load_range=bnt_fetch.LoadRange(start, stop),
        rows_fetched=fetched,
        load_key=load_key,
        replaced=replaced,
        allow_empty=allow_empty,
        warehouse=to.value if to is not None else None,
    )
    loaded = pipeline.commit_and_sync(
        settings,
        bnt.SPEC,
        staged,
        load,
        run_id=run_id,
        to=to.value if to is not None else None,
        blocks=blocks,
        # the warehouse's rejects: those of the same load key, as TLC's and Socrata's
        warehouse_rejects=RowIds.of("load_range", [load_key]),
    )
    head = {
        "table": bnt_fetch.TABLE,
        "range": f"[{start}, {stop})",
        **({"replaced": str(replaced)} if isinstance(replaced, Windows) else {}),
        "rows_fetched": fetched,
        "rows_loaded": loaded.committed["rows_loaded"],
        "rows_rejected": staged.rows_rejected,
        "partitions_touched": loaded.committed["partitions"],
    }
    summary = loaded.summary(head, staged, run_id, began)
    report(summary, blocks=blocks)
    loaded.raise_if_not_synced(summary)
    return summary
