"""The ``tlc-taxi-trips`` flow: TLC monthly files -> lake (raw) -> Iceberg -> warehouse.

The parent flow runs one ``tlc-taxi-month`` subflow per month, a bounded number at a time
(``CIVICLAKE_TLC_CONCURRENCY``). A month that fails (a 404, a corrupt file) loads nothing and the
other months still complete; the parent then fails, naming the months. A month is the one
pipeline (``civiclake.pipeline``): download into the raw zone, stage (the color's spec run by
the ``CIVICLAKE_ENGINE`` engine: Iceberg data files written once), commit (the table, then its
rejects), the warehouse loaded from the same data files.

Into a warehouse that streams while staging (``Capabilities.streams_while_staging``: PostgreSQL),
a month's stage and its warehouse load overlap (``stage-load-warehouse``): the valid rows
stream into the COPY of an open transaction while the file is staged, and the commit waits for
the whole file. Other warehouses load the data files afterwards.
"""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.states import State
from pydantic import Field

from civiclake import tables
from civiclake.blocks import Blocks, settings_for
from civiclake.errors import CivicLakeError, ParameterError
from civiclake.flows import _pipeline as pipeline, preflight
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
    WarehouseNotSynced,
    check_warehouse,
    mark_not_synced,
    not_synced,
    not_synced_line,
    sync_whole_table,
)
from civiclake.guards import refused, refusing
from civiclake.pipeline import Staged
from civiclake.slices import Window
from civiclake.sources import tlc, tlc_fetch
from civiclake.warehouse import warehouse_module

FLOW_NAME = "tlc-taxi-trips"
MONTH_FLOW_NAME = "tlc-taxi-month"
REJECTS_MONTH = "rejects-month"
"""Snapshot property of a month's load: the month its rejects replace."""
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


def _is_transient(task: Any, task_run: TaskRun, state: State[Any]) -> bool:
    """Retry network trouble and cut-off bodies; a 404 or a corrupt file will not get better."""
    return isinstance(state.data, tlc_fetch.TransientDownloadError)


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
    result = tlc_fetch.download(url, settings.lake(), raw_url, timeout=settings.download_timeout)
    log.info("downloaded %s bytes into %s", f"{result.bytes:,}", raw_url)
    return result.raw_url


@task(name="stage-file", cache_policy=NO_CACHE)
def stage_file(path: str, color: str, year: int, month: int, blocks: Blocks = None) -> str:
    settings = settings_for(blocks)
    return tlc_fetch.stage_local_file(settings.lake(), path, color, tlc.Month(year, month))


def _month_load(
    staged: Staged, spec: tlc.TlcSpec, the_month: tlc.Month, run_id: str, warehouse: str
) -> pipeline.Replace:
    """A month's load: the month of the table, the month's rejects (``source_month``). Every
    run commits (a month re-loaded is a new snapshot, as before)."""
    return pipeline.Replace(
        Window(spec.pickup, the_month.start, the_month.stop),
        _rejects_slice(the_month),
        pipeline.properties(
            run_id,
            f"tlc:{spec.color}/{the_month}",
            str(the_month),
            staged,
            warehouse=warehouse,  # what rollback reads
            **{REJECTS_MONTH: the_month.first_day.isoformat()},
        ),
        allow_empty=True,  # refused before the warehouse load (``pipeline.refuse_empty_load``)
        skip_unchanged=False,
    )


def _context(spec: tlc.TlcSpec, the_month: tlc.Month, run_id: str) -> Any:
    return tlc.context(spec, the_month, run_id=run_id, now=datetime.now(UTC))


def _counts(staged: Staged, iceberg: dict[str, Any]) -> dict[str, Any]:
    """What a month's summary line says of its stage and its Iceberg commit."""
    return {
        "rows_read": staged.rows_read,
        "rows_loaded": staged.rows_valid,
        "rows_rejected": staged.rows_rejected,
        "rejected_by_rule": {rule: staged.rejected_by_reason.get(rule, 0) for rule in tlc.RULES},
        **pipeline.stage_fields(staged),
        "iceberg_snapshot_id": iceberg["snapshot_id"],
        "partitions_touched": iceberg["partitions"],
    }


@task(name="stage", cache_policy=NO_CACHE)
def stage(
    raw_url: str,
    color: str,
    year: int,
    month: int,
    run_id: str,
    blocks: Blocks = None,
    from_file: str | None = None,
) -> Staged:
    """Raw file -> typed, ruled Iceberg data files of the table and its rejects (uncommitted).
    ``from_file``: the user's file ``raw_url`` is a copy of, which errors name."""
    spec, the_month = tlc.spec_for(color), tlc.Month(year, month)
    ctx = _context(spec, the_month, run_id)
    settings = settings_for(blocks)
    with _naming(settings, from_file, raw_url):
        return pipeline.stage(settings, spec, [raw_url], ctx, log=get_run_logger())


@task(name="stage-load-warehouse", cache_policy=NO_CACHE)
def stage_load_warehouse(
    raw_url: str,
    color: str,
    year: int,
    month: int,
    run_id: str,
    to: str,
    blocks: Blocks = None,
    allow_empty: bool = False,
    from_file: str | None = None,
) -> tuple[Staged, int]:
    """``stage`` and the warehouse load overlapped (``pipeline.stage_streaming``), for a
    warehouse that streams while staging: the month's previous rows stay in it unless the whole
    file is staged and the load is not refused."""
    spec, the_month = tlc.spec_for(color), tlc.Month(year, month)
    settings = settings_for(blocks)
    with _naming(settings, from_file, raw_url):
        return pipeline.stage_streaming(
            settings,
            spec,
            [raw_url],
            _context(spec, the_month, run_id),
            to,
            Window(spec.pickup, the_month.start, the_month.stop),
            _rejects_slice(the_month),
            allow_empty=allow_empty,
            log=get_run_logger(),
        )


def _naming(
    settings: Any, from_file: str | None, raw_url: str
) -> contextlib.AbstractContextManager[None]:
    """``--from-file``: the stage's errors name the user's file, not its raw-zone copy."""
    if not from_file:
        return contextlib.nullcontext()
    from civiclake.sources.local_file import naming_user_file

    return naming_user_file(settings.lake(), from_file, [raw_url])


def _rejects_slice(the_month: tlc.Month) -> Window:
    """A month's rejects: those recorded for its first day (``source_month``)."""
    return Window("source_month", the_month.first_day, the_month.first_day + timedelta(days=1))


@flow(name=MONTH_FLOW_NAME, validate_parameters=True)
@refusing
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
    """One month: download (or copy a local file) into the raw zone, stage, commit Iceberg,
    load the warehouse from the same data files.

    A warehouse that streams while staging (PostgreSQL): stage and load it at once, then commit
    Iceberg. If Iceberg then fails, the warehouse keeps the month, as when the two loads ran
    side by side. A month with no valid row is refused (Failed, that line)
    when the table has rows for it, unless ``allow_empty``.
    """
    began = time.monotonic()
    blocks = {"lake": lake, "lake_block": lake_block, "warehouse_block": warehouse_block}
    settings = settings_for(blocks)
    the_month = tlc.Month(year, month)
    run_id = pipeline.run_id()
    the_lake = settings.lake()
    if from_file:
        raw_url = stage_file(from_file, color.value, year, month, blocks=blocks)
    else:
        url = tlc_fetch.source_url(settings.tlc_url, color.value, the_month)
        raw_target = tlc_fetch.raw_url_for(the_lake, color.value, the_month, url)
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
    spec = tlc.spec_for(color.value)
    if warehouse_module(to.value).capabilities.streams_while_staging:
        # the warehouse loads while the file is staged (committed once it is all staged);
        # Iceberg then commits the same data files
        staged, warehouse_rows = stage_load_warehouse(
            raw_url,
            color.value,
            year,
            month,
            run_id,
            to.value,
            blocks=blocks,
            allow_empty=allow_empty,
            from_file=from_file,
        )
        load = _month_load(staged, spec, the_month, run_id, to.value)
        iceberg = pipeline.commit_task(spec, staged, load, blocks=blocks)
        warehouse = {"warehouse": to.value, "rows": warehouse_rows}
    else:
        staged = stage(
            raw_url, color.value, year, month, run_id, blocks=blocks, from_file=from_file
        )
        load = _month_load(staged, spec, the_month, run_id, to.value)
        pipeline.refuse_empty_load(settings, spec, load.replaced, staged.rows_valid, allow_empty)
        # Iceberg commits the data files while the warehouse loads them: side by side
        iceberg_future = pipeline.commit_task.submit(spec, staged, load, blocks=blocks)
        warehouse_future = pipeline.load_warehouse_task.submit(
            spec, staged, to.value, load.replaced, load.rejects_replaced, blocks=blocks
        )
        iceberg = iceberg_future.result()
        try:
            warehouse = warehouse_future.result()
        except Exception as exc:  # the lake committed the month, the warehouse did not
            counts = _counts(staged, iceberg)
            line = _month_not_synced(settings, spec, to.value, counts, the_month, exc)
            return {**line, "duration_s": _since(began)}
    return {
        "month": str(the_month),
        "status": "loaded",
        **_counts(staged, iceberg),
        "warehouse": warehouse["warehouse"],
        "warehouse_rows": warehouse["rows"],
        "duration_s": _since(began),
    }


def _since(began: float) -> float:
    return round(time.monotonic() - began, 2)


def _month_not_synced(
    settings: Any,
    spec: tlc.TlcSpec,
    to: str,
    counts: dict[str, Any],
    the_month: tlc.Month,
    exc: BaseException,
) -> dict[str, Any]:
    """A month whose warehouse load failed after its Iceberg commit: the table is marked (the
    next run with the same ``--to`` copies it whole) and the month says so, with the cause."""
    snapshot_id = counts["iceberg_snapshot_id"]
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
        **counts,
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
    # the checks the CLI ran before Prefect started, again for a run without it (a deployment):
    # the months, the file, the warehouse, the lake (wrong credentials, a missing container or
    # a dead endpoint fail here, before any write), the engine
    spec, wanted = preflight.tlc(
        settings,
        color=color.value,
        year=year,
        months=",".join(map(str, months)),
        from_file=from_file,
        to=to.value,
        warehouse_block=warehouse_block,
        lake_block=None,  # resolved into ``settings`` above
    )
    check_warehouse(to.value, settings)  # reachable, credentials: before any month commits
    # an earlier run (or a rollback) left the warehouse behind the lake: copy it whole at the end
    behind = not_synced(settings, spec.table, to.value)
    limit = min(settings.tlc_concurrency, len(wanted))
    log.info(
        "%s %s: %s months, %d at a time, into %s", color.value, year, len(wanted), limit, to.value
    )
    params = {"color": color, "to": to, "from_file": from_file, "blocks": blocks}
    calls = [
        (
            f"{color.value} {m}",
            {**params, "year": m.year, "month": m.month, "allow_empty": allow_empty},
        )
        for m in wanted
    ]
    results: list[dict[str, Any]] = []
    for the_month, (_name, result, error, reason) in zip(
        wanted, pipeline.fan_out(run_month, calls, limit, log), strict=True
    ):
        if error is None and reason == "":
            results.append(result)
            continue
        refusal = isinstance(error, ParameterError)  # refused input
        results.append(
            {"month": str(the_month), "status": "failed", "error": reason}
            | ({"refused": True} if refusal else {})
        )
    unsynced = [r for r in results if r["status"] == "not synced"]
    resync: dict[str, Any] = {}
    if behind and not unsynced:  # after the months: no month loads while the copy is made
        run_id = pipeline.run_id()
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

    run_id = pipeline.run_id()
    return tlc_zones.ensure(
        settings_for(blocks), run_id=run_id, from_file=from_file, log=get_run_logger()
    )
