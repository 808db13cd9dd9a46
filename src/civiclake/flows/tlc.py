"""The ``tlc-taxi-trips`` flow: TLC monthly files -> lake (raw, Parquet) -> Iceberg -> warehouse.

The parent flow runs one ``tlc-taxi-month`` subflow per month, a bounded number at a time
(``CIVICLAKE_TLC_CONCURRENCY``). A month that fails (a 404, a corrupt file) loads nothing and the
other months still complete; the parent then fails, naming the months. Tasks pass lake URLs.

Into a warehouse that streams while staging (``Capabilities.streams_while_staging``: PostgreSQL),
a month's conversion and its warehouse load overlap (``convert-load-warehouse``): the valid rows
stream into the COPY of an open transaction while the file is converted, and the commit waits
for the whole file and its Parquet. Other warehouses load the Parquet afterwards.
"""

from __future__ import annotations

import time
from datetime import date, timedelta
from enum import StrEnum
from typing import Annotated, Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.runtime import flow_run
from prefect.states import State
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import Field
from pyiceberg.expressions import And, EqualTo, GreaterThanOrEqual, LessThan

from civiclake import tables
from civiclake.blocks import Blocks, settings_for
from civiclake.errors import CivicLakeError, ParameterError
from civiclake.flows._locks import table_lock
from civiclake.flows._params import (
    AllowEmptyParam,
    LakeBlockParam,
    LakeParam,
    MonthNumber,
    WarehouseBlockParam,
    WarehouseKind,
)
from civiclake.flows._sync import (
    WAREHOUSE_PROPERTY,
    WarehouseNotSynced,
    check_warehouse,
    mark_not_synced,
    not_synced,
    not_synced_line,
    sync_whole_table,
)
from civiclake.guards import EmptyLoadRefused, refuse_empty, refused
from civiclake.lake import iter_table_chunks
from civiclake.slices import Window
from civiclake.sources import tlc
from civiclake.warehouse import check_configured, warehouse_module

FLOW_NAME = "tlc-taxi-trips"
MONTH_FLOW_NAME = "tlc-taxi-month"
REJECTS_MONTH = "rejects-month"
"""Snapshot property of a month's load: the month its rejects replace, for the repair."""
DOWNLOAD_CACHE_EXPIRATION = timedelta(days=1)


class Color(StrEnum):
    yellow = "yellow"
    green = "green"
    fhv = "fhv"


class MonthsFailed(CivicLakeError):
    """Some months failed; the others are loaded. Carries the run summary for the CLI."""

    def __init__(
        self, message: str, summary: dict[str, Any] | None = None, *, refused: bool = False
    ) -> None:
        super().__init__(message)
        self.summary = summary
        if refused:  # every failed month was refused input (empty, truncated): exit 2
            self.exit_code = 2


def _refuse_empty_month(
    settings: Any, spec: tlc.TripSchema, the_month: tlc.Month, rows: int, allow_empty: bool
) -> None:
    """A month that converted to no row must not empty a month that has rows."""
    if rows or allow_empty:
        return
    catalog = tables.load_catalog(settings)
    table = catalog.load_table(spec.table) if catalog.table_exists(spec.table) else None
    month = Window(spec.pickup, the_month.start, the_month.stop)
    refuse_empty(table, spec.table, month, rows, allow_empty=allow_empty)


def _is_transient(task: Any, task_run: TaskRun, state: State[Any]) -> bool:
    """Retry network trouble and cut-off bodies; a 404 or a corrupt file will not get better."""
    return isinstance(state.data, tlc.TransientDownloadError)


def _download_cache_key(context: Any, parameters: dict[str, Any]) -> str:
    return f"civiclake-tlc-download:{parameters['url']}->{parameters['raw_url']}"


@task(
    name="download",
    retries=3,
    retry_delay_seconds=2,
    retry_jitter_factor=0.5,
    retry_condition_fn=_is_transient,
    cache_key_fn=_download_cache_key,
    cache_expiration=DOWNLOAD_CACHE_EXPIRATION,
    persist_result=True,
)
def download(url: str, raw_url: str, blocks: Blocks = None) -> str:
    """Download a month into the raw zone (cached by URL for a day); returns its lake URL."""
    settings = settings_for(blocks)
    log = get_run_logger()
    log.info("downloading %s", url)
    result = tlc.download(url, settings.lake(), raw_url, timeout=settings.download_timeout)
    log.info("downloaded %s bytes into %s", f"{result.bytes:,}", raw_url)
    return result.raw_url


@task(name="stage-file", cache_policy=NO_CACHE)
def stage_file(path: str, color: str, year: int, month: int, blocks: Blocks = None) -> str:
    settings = settings_for(blocks)
    return tlc.stage_local_file(settings.lake(), path, color, tlc.Month(year, month))


@task(name="convert", cache_policy=NO_CACHE)
def convert(
    raw_url: str, color: str, year: int, month: int, run_id: str, blocks: Blocks = None
) -> dict[str, Any]:
    """Raw file -> typed Parquet (zstd) and rejects in the lake's stage zone."""
    settings = settings_for(blocks)
    result = tlc.convert(
        settings.lake(),
        raw_url,
        tlc.spec_for(color),
        tlc.Month(year, month),
        run_id=run_id,
        log=get_run_logger(),
    )
    return _converted(result)


def _converted(result: tlc.Conversion) -> dict[str, Any]:
    return {
        "valid_url": result.valid_url,
        "rejects_url": result.rejects_url,
        "rows_read": result.rows_read,
        "rows_valid": result.rows_valid,
        "rows_rejected": result.rows_rejected,
        "rejected_by_rule": result.rejected_by_rule,
    }


@task(name="convert-load-warehouse", cache_policy=NO_CACHE)
def convert_load_warehouse(
    raw_url: str,
    color: str,
    year: int,
    month: int,
    run_id: str,
    to: str,
    blocks: Blocks = None,
    allow_empty: bool = False,
) -> dict[str, Any]:
    """``convert`` and ``load_warehouse`` overlapped, for a warehouse that streams while
    staging (``range_load``).

    One transaction: the month is deleted, then the valid rows are COPYed while the file is
    still being converted (each batch as it is made), then the rejects file is loaded; the
    commit comes only once the whole file converted and both Parquet files are written. A
    corrupt or truncated file, a failing rule or a COPY error rolls it all back: the month's
    previous rows stay, as with ``load_warehouse``. Returns ``convert``'s summary plus the
    rows loaded.
    """
    from civiclake.warehouse import open_streaming

    settings = settings_for(blocks)
    lake = settings.lake()
    spec = tlc.spec_for(color)
    the_month = tlc.Month(year, month)
    with (
        table_lock(f"{to}:{spec.table}", settings, commits=False),
        open_streaming(to, settings) as warehouse,
        warehouse.range_load(
            spec.table,
            tlc.table_schema(spec),
            column=spec.pickup,
            start=the_month.start,
            stop=the_month.stop,
        ) as load,
    ):
        result = tlc.convert(
            lake, raw_url, spec, the_month, run_id=run_id, log=get_run_logger(), sink=load.write
        )
        rows = load.finish()
        # before the COMMIT: a refusal rolls the warehouse back too
        _refuse_empty_month(settings, spec, the_month, result.rows_valid, allow_empty)
        load.replace(
            spec.rejects_table,
            tlc.rejects_schema(spec),
            [result.rejects_url],
            lake,
            _rejects_slice(the_month),
        )
    return {**_converted(result), "warehouse": to, "warehouse_rows": rows}


def _rejects_slice(the_month: tlc.Month) -> Window:
    """A month's rejects in the warehouse: those recorded for its first day (``source_month``)."""
    return Window("source_month", the_month.first_day, the_month.first_day + timedelta(days=1))


@task(name="load-iceberg", cache_policy=NO_CACHE)
def load_iceberg(
    converted: dict[str, Any],
    color: str,
    year: int,
    month: int,
    run_id: str,
    blocks: Blocks = None,
    warehouse: str | None = None,
) -> dict[str, Any]:
    """Replace the month in ``tlc.{color}_trips`` (and its rejects), one commit each."""
    from civiclake.tables.history import partitions_touched

    settings = settings_for(blocks)
    lake = settings.lake()
    spec = tlc.spec_for(color)
    the_month = tlc.Month(year, month)
    catalog = tables.load_catalog(settings)
    props = {
        "run-id": run_id,
        "source": f"tlc:{color}/{the_month}",
        "range": str(the_month),
        "rows-loaded": str(converted["rows_valid"]),
        "rows-rejected": str(converted["rows_rejected"]),
        **({WAREHOUSE_PROPERTY: warehouse} if warehouse else {}),  # what rollback reads
        REJECTS_MONTH: the_month.first_day.isoformat(),  # what a repair of the rejects needs
    }
    with table_lock(spec.table, settings):
        repair_rejects(catalog, lake, spec, the_month.first_day)
        table = tables.ensure_table_for(
            catalog, spec.table, tlc.table_schema(spec), month_of=spec.pickup
        )
        month_filter = And(
            GreaterThanOrEqual(spec.pickup, the_month.start.isoformat()),
            LessThan(spec.pickup, the_month.stop.isoformat()),
        )
        main = tables.replace_range(
            table, month_filter, lambda: iter_table_chunks(lake, converted["valid_url"]), props
        )
        commit_rejects(catalog, lake, spec, the_month.first_day, converted["rejects_url"], props)
        touched = partitions_touched(table, run_id)  # under the lock: the newest are ours
    return {"snapshot_id": main.snapshot_id, "rows": main.rows_written, "partitions": touched}


def commit_rejects(
    catalog: Any,
    lake: Any,
    spec: tlc.TripSchema,
    first_day: date,
    rejects_url: str,
    props: dict[str, str],
) -> None:
    """A month's second commit: its rejects (after the table's)."""
    rejects_table = tables.ensure_table_for(catalog, spec.rejects_table, tlc.rejects_schema(spec))
    tables.replace_range(
        rejects_table,
        EqualTo("source_month", first_day.isoformat()),
        lambda: iter_table_chunks(lake, rejects_url),
        props,
    )


def repair_rejects(catalog: Any, lake: Any, spec: tlc.TripSchema, loading: date) -> bool:
    """Complete a month whose rejects commit never happened (a crash between its two commits)
    from the month's staged rejects, if they are still that run's: a later conversion of the
    same month replaces them, and its load then replaces the month's rejects anyway. True when
    it repaired one. Called under the table's lock, before the next load (of the month that
    begins on ``loading``) commits anything."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from civiclake.tables.pairs import pending_rejects

    props = pending_rejects(catalog, spec.table, spec.rejects_table, REJECTS_MONTH)
    if props is None:
        return False
    run_id, first_day = props["run-id"], date.fromisoformat(props[REJECTS_MONTH])
    rejects_url = tlc.stage_urls(lake, spec, tlc.Month(first_day.year, first_day.month))[1]
    runs: list[str | None] = []
    if lake.exists(rejects_url):
        with lake.open(rejects_url) as handle:
            column = pq.read_table(handle, columns=["load_run_id"]).column("load_run_id")
        runs = pc.unique(column).to_pylist()
    if runs != [run_id] and not (runs == [] and props.get("rows-rejected") == "0"):
        if first_day == loading:  # the usual retry: this load replaces the month's rejects
            get_run_logger().info(
                "%s: replacing the rejects of %s that run %s did not commit",
                spec.rejects_table,
                first_day.strftime("%Y-%m"),
                run_id,
            )
        else:
            get_run_logger().warning(
                "%s: the rejects commit of run %s (%s) is missing and its staged rejects are"
                " gone; the next load of that month replaces them",
                spec.rejects_table,
                run_id,
                first_day.strftime("%Y-%m"),
            )
        return False
    commit_rejects(catalog, lake, spec, first_day, rejects_url, props)
    get_run_logger().warning(
        "completed the rejects commit of run %s (interrupted between its commits)", run_id
    )
    return True


@task(name="load-warehouse", cache_policy=NO_CACHE)
def load_warehouse(
    converted: dict[str, Any],
    color: str,
    year: int,
    month: int,
    to: str,
    blocks: Blocks = None,
) -> dict[str, Any]:
    """Replace the month in the warehouse: delete + bulk load in one transaction."""
    from civiclake.warehouse import open_warehouse

    settings = settings_for(blocks)
    lake = settings.lake()
    spec = tlc.spec_for(color)
    the_month = tlc.Month(year, month)
    with (
        table_lock(f"{to}:{spec.table}", settings, commits=False),
        open_warehouse(to, settings) as warehouse,
    ):
        rows = warehouse.replace(
            spec.table,
            tlc.table_schema(spec),
            [converted["valid_url"]],
            lake,
            Window(spec.pickup, the_month.start, the_month.stop),
        )
        warehouse.replace(
            spec.rejects_table,
            tlc.rejects_schema(spec),
            [converted["rejects_url"]],
            lake,
            _rejects_slice(the_month),
        )
    return {"warehouse": to, "rows": rows}


@flow(name=MONTH_FLOW_NAME, validate_parameters=True)
def tlc_month(
    color: Color,
    year: int,
    month: int,
    to: WarehouseKind = WarehouseKind.duckdb,
    from_file: str | None = None,
    lake: str | None = None,
    lake_block: str | None = None,
    warehouse_block: str | None = None,
    allow_empty: bool = False,
) -> dict[str, Any]:
    """One month: download (or stage a local file), convert, load Iceberg, load the warehouse.

    A warehouse that streams while staging (PostgreSQL): convert and load it at once, then load
    Iceberg from the same Parquet. If Iceberg then fails, the warehouse keeps the month, as when
    the two loads ran side by side. A month with no valid row is refused (Failed, that line)
    when the table has rows for it, unless ``allow_empty``.
    """
    try:
        return _tlc_month(
            color, year, month, to, from_file, lake, lake_block, warehouse_block, allow_empty
        )
    except EmptyLoadRefused as exc:
        return refused(exc)  # type: ignore[no-any-return]


def _tlc_month(
    color: Color,
    year: int,
    month: int,
    to: WarehouseKind,
    from_file: str | None,
    lake: str | None,
    lake_block: str | None,
    warehouse_block: str | None,
    allow_empty: bool,
) -> dict[str, Any]:
    began = time.monotonic()
    blocks = {"lake": lake, "lake_block": lake_block, "warehouse_block": warehouse_block}
    settings = settings_for(blocks)
    the_month = tlc.Month(year, month)
    run_id = str(flow_run.id or "local")
    the_lake = settings.lake()
    if from_file:
        raw_url = stage_file(from_file, color.value, year, month, blocks=blocks)
    else:
        url = tlc.source_url(settings.tlc_url, color.value, the_month)
        raw_target = tlc.raw_url_for(the_lake, color.value, the_month, url)
        fetch = download.with_options(
            retries=settings.download_retries,
            retry_delay_seconds=[
                settings.download_retry_delay * 2**i
                for i in range(max(1, settings.download_retries))
            ],
        )
        raw_url = fetch(url, raw_target, blocks=blocks)
        if not the_lake.exists(raw_url):  # cached, but someone cleaned the raw zone since
            raw_url = fetch.with_options(refresh_cache=True)(url, raw_target, blocks=blocks)
    if warehouse_module(to.value).capabilities.streams_while_staging:
        # the warehouse loads while the file converts (committed once it all converted);
        # Iceberg then commits the same Parquet
        converted = convert_load_warehouse(
            raw_url,
            color.value,
            year,
            month,
            run_id,
            to.value,
            blocks=blocks,
            allow_empty=allow_empty,
        )
        iceberg = load_iceberg(
            converted, color.value, year, month, run_id, blocks=blocks, warehouse=to.value
        )
        warehouse = {"warehouse": converted["warehouse"], "rows": converted["warehouse_rows"]}
    else:
        converted = convert(raw_url, color.value, year, month, run_id, blocks=blocks)
        spec = tlc.spec_for(color.value)
        _refuse_empty_month(settings, spec, the_month, converted["rows_valid"], allow_empty)
        # Iceberg and the warehouse load the same Parquet independently: side by side
        iceberg_future = load_iceberg.submit(
            converted, color.value, year, month, run_id, blocks=blocks, warehouse=to.value
        )
        warehouse_future = load_warehouse.submit(
            converted, color.value, year, month, to.value, blocks=blocks
        )
        iceberg = iceberg_future.result()
        try:
            warehouse = warehouse_future.result()
        except Exception as exc:  # the lake committed the month, the warehouse did not
            line = _month_not_synced(settings, spec, to.value, iceberg, converted, the_month, exc)
            return {**line, "duration_s": round(time.monotonic() - began, 2)}
    return {
        "month": str(the_month),
        "status": "loaded",
        "rows_read": converted["rows_read"],
        "rows_loaded": converted["rows_valid"],
        "rows_rejected": converted["rows_rejected"],
        "rejected_by_rule": converted["rejected_by_rule"],
        "iceberg_snapshot_id": iceberg["snapshot_id"],
        "partitions_touched": iceberg["partitions"],
        "warehouse": warehouse["warehouse"],
        "warehouse_rows": warehouse["rows"],
        "duration_s": round(time.monotonic() - began, 2),
    }


def _month_not_synced(
    settings: Any,
    spec: tlc.TripSchema,
    to: str,
    iceberg: dict[str, Any],
    converted: dict[str, Any],
    the_month: tlc.Month,
    exc: BaseException,
) -> dict[str, Any]:
    """A month whose warehouse load failed after its Iceberg commit: the table is marked (the
    next run with the same ``--to`` copies it whole) and the month says so, with the cause."""
    snapshot_id = iceberg["snapshot_id"]
    with table_lock(spec.table, settings):  # a property commit, beside other months' loads
        mark_not_synced(settings, spec.table, to, snapshot_id)
    line = not_synced_line(snapshot_id, to)
    cause = " ".join(str(exc).split()) or type(exc).__name__
    get_run_logger().error("%s: %s (%s)", the_month, line, cause)
    return {
        "month": str(the_month),
        "status": "not synced",
        "error": f"{line} ({cause})",
        "warehouse_line": line,
        "rows_read": converted["rows_read"],
        "rows_loaded": converted["rows_valid"],
        "rows_rejected": converted["rows_rejected"],
        "rejected_by_rule": converted["rejected_by_rule"],
        "iceberg_snapshot_id": snapshot_id,
        "partitions_touched": iceberg["partitions"],
        "warehouse": to,
        "warehouse_rows": None,
    }


@task(name="resync-warehouse", cache_policy=NO_CACHE)
def resync_warehouse(
    identifiers: list[str], to: str, run_id: str, blocks: Blocks = None
) -> dict[str, Any]:
    """Copy the table and its rejects whole into the warehouse, after an earlier run (or a
    rollback) left it behind the lake; on failure the mark stays, at the current snapshot."""
    settings = settings_for(blocks)
    try:
        with table_lock(f"{to}:{identifiers[0]}", settings, commits=False):
            rows = sync_whole_table(settings, identifiers, to, run_id)
    except Exception as exc:
        table = tables.load_catalog(settings).load_table(identifiers[0])
        snapshot = table.current_snapshot()
        snapshot_id = snapshot.snapshot_id if snapshot else None
        with table_lock(identifiers[0], settings):
            mark_not_synced(settings, identifiers[0], to, snapshot_id)
        cause = " ".join(str(exc).split()) or type(exc).__name__
        return {"error": f"{not_synced_line(snapshot_id, to)} ({cause})"}
    get_run_logger().info("%s: %s re-synced from the lake (%s rows)", to, identifiers[0], rows)
    return {"rows": rows}


@task(name="month", cache_policy=NO_CACHE)
def run_month(
    color: Color,
    year: int,
    month: int,
    to: WarehouseKind,
    from_file: str | None,
    blocks: Blocks = None,
    allow_empty: bool = False,
) -> dict[str, Any]:
    """Runs a month's subflow as a task, so months run on the parent's bounded thread pool."""
    return tlc_month(
        color=color,
        year=year,
        month=month,
        to=to,
        from_file=from_file,
        allow_empty=allow_empty,
        **{k: v for k, v in (blocks or {}).items() if v},
    )


def _error_of(state: State[Any]) -> BaseException | None:
    error = state.data if isinstance(state.data, BaseException) else None
    if error is None:
        try:
            state.result(raise_on_failure=True)
        except BaseException as exc:
            error = exc
    return error


def _error_line(state: State[Any]) -> str:
    error = _error_of(state)
    text = str(error) if error else (state.message or "failed")
    return " ".join(text.split())


@flow(name=FLOW_NAME, validate_parameters=True)
def tlc_taxi_trips(
    color: Annotated[Color, Field(description="Trip records to load")] = Color.green,
    year: Annotated[
        int | None, Field(ge=2009, le=2100, description="Empty: the previous month's")
    ] = None,
    months: Annotated[
        list[MonthNumber] | None, Field(description="Months 1-12; empty: the previous month")
    ] = None,
    to: Annotated[WarehouseKind, Field(description="Warehouse")] = WarehouseKind.duckdb,
    from_file: Annotated[str | None, Field(description="A month's file on disk")] = None,
    lake: LakeParam = None,
    lake_block: LakeBlockParam = None,
    warehouse_block: WarehouseBlockParam = None,
    allow_empty: AllowEmptyParam = False,
) -> dict[str, Any]:
    """TLC trips of ``color`` for ``months`` of ``year`` into ``tlc.{color}_trips``.

    Without ``year`` and ``months``: the previous calendar month (what a monthly schedule wants).
    """
    began = time.monotonic()
    log = get_run_logger()
    blocks = {"lake": lake, "lake_block": lake_block, "warehouse_block": warehouse_block}
    settings = settings_for(blocks)
    if year is None and not months:
        last = date.today().replace(day=1) - timedelta(days=1)
        year, months = last.year, [last.month]
    if year is None or not months:
        raise ParameterError("give both year and months, or neither (the previous month)")
    wanted = tlc.parse_months(",".join(map(str, months)), year)
    if from_file and len(wanted) != 1:
        raise ParameterError("--from-file loads one month: give exactly one month")
    check_configured(to.value, settings)
    check_warehouse(to.value, settings)  # reachable, credentials: before any month commits
    # Wrong credentials, a missing container or a dead endpoint fail here, before any write.
    settings.lake().check_writable()
    spec = tlc.spec_for(color.value)
    # an earlier run (or a rollback) left the warehouse behind the lake: copy it whole at the end
    behind = not_synced(settings, spec.table, to.value)
    limit = min(settings.tlc_concurrency, len(wanted))
    log.info(
        "%s %s: %s months, %d at a time, into %s", color.value, year, len(wanted), limit, to.value
    )
    results: list[dict[str, Any]] = []
    # The setting is the one bound on months in flight: a thread pool of exactly that size
    # runs the month tasks (the flow's own runner is fixed at import, before settings exist).
    with ThreadPoolTaskRunner(max_workers=limit) as months_runner:
        futures = [
            (
                m,
                months_runner.submit(
                    run_month,
                    {
                        "color": color,
                        "year": m.year,
                        "month": m.month,
                        "to": to,
                        "from_file": from_file,
                        "blocks": blocks,
                        "allow_empty": allow_empty,
                    },
                ),
            )
            for m in wanted
        ]
        for the_month, future in futures:
            future.wait()
            state = future.state
            if state.is_completed():
                results.append(future.result())
            else:
                reason = _error_line(state)
                log.error("%s %s failed: %s", color.value, the_month, reason)
                refusal = isinstance(_error_of(state), ParameterError)  # refused input
                results.append(
                    {"month": str(the_month), "status": "failed", "error": reason}
                    | ({"refused": True} if refusal else {})
                )
    unsynced = [r for r in results if r["status"] == "not synced"]
    resync: dict[str, Any] = {}
    if behind and not unsynced:  # after the months: no month loads while the copy is made
        run_id = str(flow_run.id or "local")
        resync = resync_warehouse([spec.table, spec.rejects_table], to.value, run_id, blocks)
    summary = {
        "table": spec.table,
        "color": color.value,
        "to": to.value,
        "months": results,
        **({"warehouse_resynced_rows": resync["rows"]} if "rows" in resync else {}),
        **({"warehouse": resync["error"]} if "error" in resync else {}),
        "duration_s": round(time.monotonic() - began, 2),
    }
    load_taxi_zones(from_file, blocks=blocks)
    _publish(summary, blocks)
    failed = [r for r in results if r["status"] == "failed"]
    not_synced_detail = "; ".join(
        [f"{color.value} {r['month']}: {r['error']}" for r in unsynced]
        + ([resync["error"]] if "error" in resync else [])
    )
    if not failed and not_synced_detail:
        raise WarehouseNotSynced(not_synced_detail, summary)
    if failed:
        detail = "; ".join(
            [
                f"{color.value} {r['month']}: "
                + r["error"].removeprefix(f"{color.value} {r['month']}: ")  # said once
                for r in failed
            ]
            + ([not_synced_detail] if not_synced_detail else [])
        )
        error = MonthsFailed(
            f"{len(failed)} of {len(results)} months failed: {detail}",
            summary,
            refused=all(r.get("refused") for r in failed),
        )
        if error.exit_code == 2:  # refused: the run's message is the refusal's one line
            return refused(error)  # type: ignore[no-any-return]
        raise error
    return summary


def _publish(summary: dict[str, Any], blocks: Blocks = None) -> None:
    lines = [
        "| month | status | read | loaded | rejected | by rule | snapshot | seconds |",
        "|---|---|---:|---:|---:|---|---|---:|",
    ]
    for r in summary["months"]:
        if r["status"] == "failed":
            lines.append(f"| {r['month']} | failed: {r['error']} | | | | | | |")
            continue
        if r["status"] == "not synced":
            lines.append(
                f"| {r['month']} | {r['error']} | {r['rows_read']:,} | {r['rows_loaded']:,} | "
                f"{r['rows_rejected']:,} | | {r['iceberg_snapshot_id']} | |"
            )
            continue
        rules = ", ".join(f"{k}={v}" for k, v in r["rejected_by_rule"].items() if v)
        lines.append(
            f"| {r['month']} | loaded | {r['rows_read']:,} | {r['rows_loaded']:,} | "
            f"{r['rows_rejected']:,} | {rules} | {r['iceberg_snapshot_id']} | "
            f"{r['duration_s']} |"
        )
    create_markdown_artifact(
        key="tlc-load-summary",
        markdown=f"## {FLOW_NAME}: {summary['table']} -> {summary['to']}\n\n"
        + "\n".join(lines)
        + _load_figures(summary, blocks),
        description=f"{summary['table']} months",
    )


def _load_figures(summary: dict[str, Any], blocks: Blocks) -> str:
    """Chart and tables of what this run loaded (civiclake.report.artifact), as markdown."""
    from civiclake.report.artifact import tlc_figures

    return tlc_figures(settings_for(blocks), summary)


@task(name="load-taxi-zones", cache_policy=NO_CACHE)
def load_taxi_zones(from_file: str | None, blocks: Blocks = None) -> dict[str, Any]:
    """``tlc.taxi_zones`` (the zone lookup) when missing; never fails the run (see tlc_zones)."""
    from civiclake.sources import tlc_zones

    run_id = str(flow_run.id or "local")
    return tlc_zones.ensure(
        settings_for(blocks), run_id=run_id, from_file=from_file, log=get_run_logger()
    )
