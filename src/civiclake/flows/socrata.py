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
Everything after the stage is the shared ``flows._pipeline``; this flow plans and fetches.
Two tasks only (fetch+stage, load): Prefect's bookkeeping per task costs more than a small
dataset's work.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import Field

from civiclake.blocks import Blocks, settings_for
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
from civiclake.pipeline import RunContext, Staged
from civiclake.slices import RowIds, Slice, WholeTable, Window
from civiclake.sources import socrata_dataset as datasets
from civiclake.sources.socrata import BodyError, SocrataClient
from civiclake.sources.socrata_dataset import LoadMode
from civiclake.sources.socrata_plan import Plan, plan, range_window

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
    from civiclake import interrupts
    from civiclake._private.malloc import mmap_large_allocations
    from civiclake.sources import socrata_fetch as fetching

    mmap_large_allocations()  # ~30 MB page bodies given back to the OS once freed
    spec = planned.spec
    settings = settings_for(blocks)
    log = get_run_logger()
    ctx = RunContext(run_id=run_id, source=spec.source, now=datetime.now(UTC))
    key = fetching.fetch_key(spec, planned.where, planned.table_snapshot)
    created: list[str] = []

    def stage(urls: Any, expected: int) -> Staged:
        staged = pipeline.stage(
            settings, spec, urls, ctx, expected_rows=expected, created=created, log=log
        )
        fetching.check_read_back(staged.rows_read, expected)
        return staged

    # a first run that fails or is interrupted before its commit leaves no empty table
    with interrupts.undone_if_interrupted(lambda: pipeline.drop_unloaded(settings, created)):
        try:
            return _fetch_and_stage(planned, run_id, page_size, settings, key, stage, log)
        except BaseException:
            pipeline.drop_unloaded(settings, created)
            raise


def _fetch_and_stage(
    planned: Plan, run_id: str, page_size: int, settings: Any, key: str, stage: Any, log: Any
) -> dict[str, Any]:
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
    with SocrataClient.from_settings(settings, base_url=spec.portal) as client:
        # the next page downloads while this one is read back and typed
        staged, progress = fetching.fetch_counted(
            client,
            lake,
            fetching.PageQuery(
                spec.dataset_id, fetching.raw_dir(lake, spec, run_id), planned.where, page_size
            ),
            stage,
            incomplete=lambda error: (
                f"Socrata dataset '{spec.dataset_id}': {error} (incomplete answer)"
            ),
            log=log,
        )
    fetching.record_complete(
        lake, spec, key=key, run_id=run_id, where=planned.where, progress=progress
    )
    return _fetched(staged, progress)


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
        "pages": progress.pages,
        "retries": progress.retries,
        "reused_raw": progress.reused,
        "high_water_mark": max(newest).isoformat() if newest else None,
    }


def replacing(
    planned: Plan,
    fetched: dict[str, Any],
    run_id: str,
    lake: Any,
    allow_empty: bool = False,
    warehouse: str | None = None,
) -> pipeline.Replace:
    """What the load replaces (whole table, fetched ids, a date range) and its properties; an
    empty fetch never empties the table or a range unless ``allow_empty``."""
    staged: Staged = fetched["staged"]
    replaced, rejects_replaced = slices_of(planned, lake, staged)
    carried = [planned.high_water_mark]
    if planned.mode is not LoadMode.window:  # a window's rows do not say what else changed
        carried.append(fetched["high_water_mark"])
    hwm = max(filter(None, carried), default=None)
    return pipeline.Replace(
        replaced,
        rejects_replaced,
        pipeline.properties(
            run_id,
            planned.spec.source,
            _range_text(planned),
            staged,
            warehouse=warehouse,
            **{REJECTS_SLICE: "whole" if isinstance(rejects_replaced, WholeTable) else "ids"},
        ),
        allow_empty=allow_empty,
        # a full load commits even when nothing changed (the README's "--full re-fetches")
        skip_unchanged=planned.mode is not LoadMode.full,
        high_water_mark=lambda _table: hwm,
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


@flow(name=FLOW_NAME, validate_parameters=True)
@refusing
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
    run_id = pipeline.run_id()
    window = range_window(spec, date_field, start_date, stop_date, full=full)
    planned = plan(settings, spec, full=full, window=window)
    log.info("%s (%s) -> %s: %s", spec.dataset_id, spec.name, spec.table, planned.mode_text)
    page = page_size or settings.page_size
    fetched = fetch_stage(planned, run_id, page, blocks=blocks)
    staged: Staged = fetched["staged"]
    load = replacing(
        planned,
        fetched,
        run_id,
        settings.lake(),
        allow_empty=allow_empty,
        warehouse=to.value if to is not None else None,
    )
    loaded = pipeline.commit_and_sync(
        settings,
        spec,
        staged,
        load,
        run_id=run_id,
        to=to.value if to is not None else None,
        blocks=blocks,
        evolve=not isinstance(load.replaced, Window),  # a merge may bring new columns
    )
    head = {
        "table": spec.table,
        "range": _range_text(planned),
        "dataset": f"{spec.portal}/{spec.dataset_id}",
        "mode": planned.mode.value,
        "rows_fetched": staged.rows_read,
        "rows_loaded": staged.rows_valid,
        "rows_rejected": staged.rows_rejected,
        "replaced": str(load.replaced),
    }
    summary = loaded.summary(head, staged, run_id, began)
    pipeline.publish(
        "socrata-load-summary",
        f"{FLOW_NAME}: {spec.table}",
        f"{spec.table} {planned.mode.value} load",
        summary,
    )
    loaded.raise_if_not_synced(summary)
    return summary
