"""The ``socrata-dataset`` flow: any Socrata dataset -> raw zone -> stage -> Iceberg.

The first run (and ``full``) fetches everything and replaces the whole table in one commit,
which is how rows deleted at the source disappear. Later runs are incremental: rows whose
``:updated_at`` is at or after the table's high-water mark (minus ``OVERLAP``) are fetched and
merged by ``:id`` — those ids replaced, new ids appended — in one commit. The high-water mark
is a snapshot property of the last load, so finding it reads no data file.

The one pipeline (``civiclake.pipeline``): the fetch writes the API pages into the raw zone and
hands each page's URL on as it lands; the engine's stage reads it back, types it (the pure
``socrata_transform``) and writes the Iceberg data files once; ``pipeline.commit`` commits them
(table, then rejects); warehouses load the same data files. A re-run after a crash between
fetch and commit stages the pages already in the raw zone (``socrata_fetch.find_complete``).
Two tasks only (fetch+stage, load): Prefect's bookkeeping per task costs more than a small
dataset's work.
"""

from __future__ import annotations

import time
from contextlib import suppress
from datetime import UTC, datetime
from typing import Annotated, Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from pydantic import Field

from civiclake._private.display import display_value
from civiclake.blocks import Blocks, settings_for
from civiclake.errors import SourceError
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
from civiclake.guards import EmptyLoadRefused, refuse_empty, refused, same_rows
from civiclake.pipeline import RunContext, Staged
from civiclake.slices import RowIds, Slice, WholeTable, Window
from civiclake.sources import socrata_dataset as datasets
from civiclake.sources.socrata import BodyError, SocrataClient
from civiclake.sources.socrata_dataset import DatasetSpec, LoadMode
from civiclake.sources.socrata_plan import (
    HWM_PROPERTY,
    Plan,
    plan,
    range_window,
)

FLOW_NAME = "socrata-dataset"
REJECTS_SLICE = "rejects-slice"
"""Snapshot property of a load: its rejects slice (``whole`` or ``ids``)."""


@task(name="fetch-stage", cache_policy=NO_CACHE)
def fetch_stage(
    planned: Plan, run_id: str, page_size: int, blocks: Blocks = None
) -> dict[str, Any]:
    """API pages -> raw zone -> data files of the table and its rejects (nothing committed),
    each page staged from the lake as soon as it is written; or, when a complete fetch of the
    same request is in the raw zone and the portal reports no change since, from its pages."""
    from civiclake._private.malloc import mmap_large_allocations
    from civiclake.pipeline.engines import get_stage
    from civiclake.sources import socrata_fetch as fetching

    mmap_large_allocations()  # ~30 MB page bodies given back to the OS once freed
    spec = planned.spec
    settings = settings_for(blocks)
    lake = settings.lake()
    log = get_run_logger()
    engine = get_stage(settings.engine)
    ctx = RunContext(run_id=run_id, source=spec.source, now=datetime.now(UTC))
    key = fetching.fetch_key(spec, planned.where, planned.table_snapshot)

    created: list[str] = []

    def stage(urls: Any, expected: int) -> Staged:
        table, rejects_table = _ensure_tables(settings, spec, created)
        staged: Staged = engine(
            spec,
            lake,
            urls,
            ctx,
            table=table,
            rejects_table=rejects_table,
            expected_rows=expected,
            log=log,
        )
        if staged.rows_read != expected:  # the stage decoded other rows than the fetch counted
            raise fetching.CountMismatch(
                f"fetched {staged.rows_read:,} rows but the portal counts {expected:,}"
            )
        return staged

    from civiclake import interrupts

    # a first run that fails or is interrupted before its commit leaves no empty table
    with interrupts.undone_if_interrupted(lambda: _drop_unloaded(settings, created)):
        try:
            return _fetch_and_stage(planned, run_id, page_size, settings, key, stage, log)
        except BaseException:
            _drop_unloaded(settings, created)
            raise


def _fetch_and_stage(
    planned: Plan, run_id: str, page_size: int, settings: Any, key: str, stage: Any, log: Any
) -> dict[str, Any]:
    from civiclake._private.prefetch import Prefetch
    from civiclake.sources import socrata_fetch as fetching

    spec = planned.spec
    lake = settings.lake()
    reused = fetching.find_complete(lake, spec, key)
    if reused is not None:
        log.info(
            "staging the %d pages of run %s's complete fetch (%s rows) from the raw zone: the"
            " portal reports no change since",
            len(reused.pages),
            reused.run_id,
            f"{reused.rows:,}",
        )
        progress = fetching.FetchProgress(reused.rows, len(reused.pages), 0, reused=True)
        try:
            return _fetched(stage(reused.pages, reused.rows), progress)
        except (fetching.CountMismatch, BodyError) as exc:  # a page changed in the lake
            log.warning(
                "the raw pages of run %s do not read back (%s): fetching", reused.run_id, exc
            )
    last_error = ""
    with SocrataClient.from_settings(settings, base_url=spec.portal) as client:
        for attempt in range(1, fetching.FETCH_ATTEMPTS + 1):
            expected = client.count(spec.dataset_id, where=planned.where)  # the query is valid
            progress = fetching.FetchProgress()
            pages = fetching.fetch_pages(
                client,
                lake,
                spec,
                where=planned.where,
                run_id=run_id,
                page_size=page_size,
                expected=expected,
                progress=progress,
                log=log,
            )
            try:
                # the next page downloads while this one is read back and typed
                with Prefetch(pages, depth=1, name="civiclake-socrata-pages") as ahead:
                    staged = stage(ahead, expected)
            except (fetching.CountMismatch, BodyError) as exc:
                last_error = str(exc)
                log.warning("%s (attempt %d/%d)", last_error, attempt, fetching.FETCH_ATTEMPTS)
                continue
            fetching.record_complete(
                lake, spec, key=key, run_id=run_id, where=planned.where, progress=progress
            )
            return _fetched(staged, progress)
    raise SourceError(f"Socrata dataset '{spec.dataset_id}': {last_error} (incomplete answer)")


def _ensure_tables(settings: Any, spec: DatasetSpec, created: list[str]) -> tuple[Any, Any]:
    """The table (partition spec, columns added) and its rejects table, before the stage writes
    their data files; under the table's lock (a schema change is a commit). ``created`` gets
    the names of those it created."""
    from civiclake import tables

    catalog = tables.load_catalog(settings)
    partition = (
        (spec.partition.transform, spec.partition.column) if spec.partition.transform else None
    )
    with table_lock(spec.table, settings):
        created += [n for n in (spec.table, spec.rejects_table) if not catalog.table_exists(n)]
        table = tables.ensure_table_for(
            catalog, spec.table, spec.arrow_schema(), partition=partition, evolve=True
        )
        rejects = tables.ensure_table_for(catalog, spec.rejects_table, datasets.REJECTS_SCHEMA)
    return table, rejects


def _drop_unloaded(settings: Any, created: list[str]) -> None:
    """Drop the tables this run created when nothing was committed to them (a failed or
    interrupted first run leaves the catalog as it was)."""
    from civiclake import tables

    catalog = tables.load_catalog(settings)
    for name in created:
        with suppress(Exception):
            if catalog.load_table(name).current_snapshot() is None:
                catalog.drop_table(name)


def _fetched(staged: Staged, progress: Any) -> dict[str, Any]:
    get_run_logger().info(
        "fetched %s rows in %d pages: %s valid, %s rejected",
        f"{staged.rows_read:,}",
        progress.pages,
        f"{staged.rows_valid:,}",
        f"{staged.rows_rejected:,}",
    )
    newest = staged.observed.get(datasets.UPDATED_COLUMN)
    return {
        "staged": staged,
        "rows_fetched": staged.rows_read,
        "rows_valid": staged.rows_valid,
        "rows_rejected": staged.rows_rejected,
        "pages": progress.pages,
        "retries": progress.retries,
        "reused_raw": progress.reused,
        "high_water_mark": max(newest).isoformat() if newest else None,
    }


@task(name="load", cache_policy=NO_CACHE)
def load(
    planned: Plan,
    fetched: dict[str, Any],
    run_id: str,
    blocks: Blocks = None,
    allow_empty: bool = False,
    warehouse: str | None = None,
) -> dict[str, Any]:
    """Replace the slice (whole table, fetched ids, a date range) in the table and rejects;
    an empty fetch never empties the table or a range unless ``allow_empty``."""
    from civiclake import tables
    from civiclake.pipeline import commit as pipeline_commit

    spec = planned.spec
    settings = settings_for(blocks)
    lake = settings.lake()
    staged: Staged = fetched["staged"]
    replaced, rejects_replaced = slices_of(planned, lake, staged)
    carried = [planned.high_water_mark]
    if planned.mode is not LoadMode.window:  # a window's rows do not say what else changed
        carried.append(fetched["high_water_mark"])
    hwm = max(filter(None, carried), default=None)
    props = {
        "run-id": run_id,
        "source": spec.source,
        "range": _range_text(planned),
        "rows-fetched": str(staged.rows_read),
        "rows-loaded": str(staged.rows_valid),
        "rows-rejected": str(staged.rows_rejected),
        **({WAREHOUSE_PROPERTY: warehouse} if warehouse else {}),
    }
    if hwm:
        props[HWM_PROPERTY] = hwm
    catalog = tables.load_catalog(settings)
    props[REJECTS_SLICE] = "whole" if isinstance(rejects_replaced, WholeTable) else "ids"
    with table_lock(spec.table, settings):
        pipeline_commit.repair(catalog, lake, spec.table, spec.rejects_table, get_run_logger())
        table = catalog.load_table(spec.table)
        rejects_table = catalog.load_table(spec.rejects_table)
        try:
            refuse_empty(table, spec.table, replaced, staged.rows_valid, allow_empty=allow_empty)
        except EmptyLoadRefused:
            _discard(lake, staged)
            raise
        if planned.mode is not LoadMode.full and _unchanged(
            table, rejects_table, (replaced, rejects_replaced), staged, lake
        ):
            # nothing new at the source: no commit (the README's "a re-run changes nothing")
            _discard(lake, staged)
            snapshot = table.current_snapshot()
            total = int(snapshot.summary["total-records"]) if snapshot and snapshot.summary else 0
            get_run_logger().info("%s unchanged: nothing committed", spec.table)
            return {
                "snapshot_id": snapshot.snapshot_id if snapshot else None,
                "table_rows": total,
                "replaced": str(replaced),
                "changes": "unchanged (nothing committed)",
            }
        main = pipeline_commit.commit(
            lake,
            table,
            rejects_table,
            pipeline_commit.Load(staged, replaced, rejects_replaced, props),
        )
    get_run_logger().info(
        "committed snapshot %s to %s (%s rows now)",
        main.snapshot_id,
        spec.table,
        f"{main.total_rows:,}",
    )
    return {
        "snapshot_id": main.snapshot_id,
        "table_rows": main.total_rows,
        "replaced": str(replaced),
    }


def _discard(lake: Any, staged: Staged) -> None:
    """Remove the data files of a load that commits nothing (no orphans left for ``maintain``)."""
    for url in [*staged.data_urls, *staged.rejects_urls]:
        if lake.exists(url):
            lake.remove(url)


def _unchanged(
    table: Any, rejects: Any, slices: tuple[Slice, Slice], staged: Staged, lake: Any
) -> bool:
    """The staged rows and rejects equal what the table and its rejects hold for them."""
    replaced, rejects_replaced = slices
    return same_rows(rejects, rejects_replaced, staged.rejects_urls, lake) and same_rows(
        table, replaced, staged.data_urls, lake
    )


def slices_of(planned: Plan, lake: Any, staged: Staged) -> tuple[Slice, Slice]:
    """The slices a load replaces in the table and in its rejects: the whole table (full), the
    ids the fetch saw (incremental), or the date range (window; its rejects by id: a rejects
    row has no date to range on)."""
    if planned.mode is LoadMode.full:
        return WholeTable(), WholeTable()
    ids = RowIds.of(datasets.ID_COLUMN, staged_ids(lake, staged))
    if planned.mode is LoadMode.window and planned.window is not None:
        return planned.window, ids
    return ids, ids


def staged_ids(lake: Any, staged: Staged) -> set[str]:
    """Every ``socrata_id`` the stage wrote, valid or rejected: the ids a merge replaces (read
    from the data files' ``socrata_id`` column only)."""
    import pyarrow.parquet as pq

    ids: set[str] = set()
    for url in [*staged.data_urls, *staged.rejects_urls]:
        with lake.open(url) as handle:
            column = pq.read_table(handle, columns=[datasets.ID_COLUMN]).column(datasets.ID_COLUMN)
        ids.update(v for v in column.to_pylist() if v is not None)
    return ids


def _range_text(planned: Plan) -> str:
    if planned.mode is LoadMode.window and planned.window is not None:
        return str(planned.window)
    if planned.mode is LoadMode.incremental:
        return f"updated since {planned.high_water_mark}"
    return LoadMode.full.value


@task(name="load-warehouse", cache_policy=NO_CACHE)
def load_warehouse(
    planned: Plan, fetched: dict[str, Any], to: str, blocks: Blocks = None
) -> dict[str, Any]:
    """The same slices replaced in the warehouse from the same data files, one transaction
    per table (new columns added first)."""
    from civiclake.warehouse import open_warehouse

    spec = planned.spec
    settings = settings_for(blocks)
    lake = settings.lake()
    staged: Staged = fetched["staged"]
    replaced, rejects_replaced = slices_of(planned, lake, staged)
    merges = not isinstance(replaced, Window)
    with (
        table_lock(f"{to}:{spec.table}", settings, commits=False),
        open_warehouse(to, settings) as warehouse,
    ):
        rows = warehouse.replace(
            spec.table, spec.arrow_schema(), staged.data_urls, lake, replaced, evolve=merges
        )
        warehouse.replace(
            spec.rejects_table,
            datasets.REJECTS_SCHEMA,
            staged.rejects_urls,
            lake,
            rejects_replaced,
        )
    get_run_logger().info("%s %s: %s rows loaded (%s)", to, spec.table, f"{rows:,}", replaced)
    return {"warehouse": to, "rows": rows}


@flow(name=FLOW_NAME, validate_parameters=True)
def socrata_dataset(
    dataset: Annotated[
        str, Field(description="4x4 id, dataset URL, or a name from the config file")
    ],
    table: Annotated[str | None, Field(description="NS.NAME; empty: socrata.<id>")] = None,
    full: Annotated[bool, Field(description="Fetch everything and replace the table")] = False,
    partition: Annotated[
        str | None, Field(description="month(COL), day(COL), year(COL) or none")
    ] = None,
    where: Annotated[str | None, Field(description="SoQL $where filter")] = None,
    date_field: Annotated[
        str | None, Field(description="Range mode: the date column of start/stop")
    ] = None,
    start_date: Annotated[
        DateParam | None, Field(description="Range mode: first date (YYYY-MM-DD)")
    ] = None,
    stop_date: Annotated[
        DateParam | None, Field(description="Range mode: date after the last; empty: today")
    ] = None,
    portal: Annotated[str | None, Field(description="Portal URL; empty: settings")] = None,
    page_size: PageSizeParam = None,
    lake: LakeParam = None,
    lake_block: LakeBlockParam = None,
    socrata_token_block: TokenBlockParam = None,
    to: AlsoWarehouseParam = None,
    warehouse_block: WarehouseBlockParam = None,
    allow_empty: AllowEmptyParam = False,
) -> dict[str, Any]:
    """Any Socrata dataset into an Iceberg table: full the first time, incremental after.

    A full or range load that fetched no row is refused (Failed, that line) when the table or
    range has rows, unless ``allow_empty``.
    """
    try:
        return _socrata_dataset(
            dataset,
            table,
            full,
            partition,
            where,
            date_field,
            start_date,
            stop_date,
            portal,
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


def _socrata_dataset(
    dataset: str,
    table: str | None,
    full: bool,
    partition: str | None,
    where: str | None,
    date_field: str | None,
    start_date: Any,
    stop_date: Any,
    portal: str | None,
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
    # the checks the CLI ran before Prefect started, again for a run without it (a deployment):
    # the warehouse, the lake, the dataset, the range, an existing table's columns
    spec = preflight.socrata(
        settings,
        dataset=dataset,
        table=table,
        full=full,
        partition=partition,
        where=where,
        date_field=date_field,
        start_date=start_date,
        stop_date=stop_date,
        portal=portal,
        to=to.value if to is not None else None,
        warehouse_block=warehouse_block,
    )
    if to is not None:  # reachable, credentials, writable: before anything is fetched
        check_warehouse(to.value, settings)
    log = get_run_logger()
    run_id = str(flow_run.id or f"local-{datetime.now(UTC):%Y%m%dT%H%M%S}")
    window = range_window(spec, date_field, start_date, stop_date, full=full)
    planned = plan(settings, spec, full=full, window=window)
    log.info("%s (%s) -> %s: %s", spec.dataset_id, spec.name, spec.table, planned.mode_text)
    page = page_size or settings.page_size
    staged = fetch_stage(planned, run_id, page, blocks=blocks)
    loaded = load(
        planned,
        staged,
        run_id,
        blocks=blocks,
        allow_empty=allow_empty,
        warehouse=to.value if to is not None else None,
    )
    warehouse, not_synced = None, None
    if to is not None:
        warehouse, not_synced = load_or_sync(
            lambda: load_warehouse(planned, staged, to.value, blocks=blocks),
            settings=settings,
            identifiers=[spec.table, spec.rejects_table],
            to=to.value,
            run_id=run_id,
            snapshot_id=loaded["snapshot_id"],
        )
    mode = planned.mode
    summary = {
        "table": spec.table,
        "range": _range_text(planned),
        "dataset": f"{spec.portal}/{spec.dataset_id}",
        "mode": mode.value,
        "rows_fetched": staged["rows_fetched"],
        "rows_loaded": staged["rows_valid"],
        "rows_rejected": staged["rows_rejected"],
        "replaced": loaded["replaced"],
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
    rows = "\n".join(f"| {k} | {display_value(k, v)} |" for k, v in summary.items())
    create_markdown_artifact(
        key="socrata-load-summary",
        markdown=f"## {FLOW_NAME}: {spec.table}\n\n| metric | value |\n|---|---|\n{rows}\n",
        description=f"{spec.table} {mode.value} load",
    )
    if not_synced:
        raise WarehouseNotSynced(not_synced, summary)
    return summary
