"""The ``socrata-dataset`` flow: any Socrata dataset -> raw zone -> stage Parquet -> Iceberg.

The first run (and ``full``) fetches everything and replaces the whole table in one commit,
which is how rows deleted at the source disappear. Later runs are incremental: rows whose
``:updated_at`` is at or after the table's high-water mark (minus ``OVERLAP``) are fetched and
merged by ``:id`` — those ids replaced, new ids appended — in one commit. The high-water mark
is a snapshot property of the last load, so finding it reads no data file. Two tasks only
(fetch+stage, load): Prefect's bookkeeping per task costs more than a small dataset's work.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from pydantic import Field

from civiclake._private.display import display_value
from civiclake.blocks import Blocks, settings_for
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
from civiclake.lake import iter_table_chunks
from civiclake.slices import RowIds, Slice, WholeTable, Window
from civiclake.sources import socrata_dataset as datasets
from civiclake.sources.socrata import SocrataClient
from civiclake.sources.socrata_dataset import DatasetSpec, LoadMode
from civiclake.sources.socrata_plan import (
    HWM_PROPERTY,
    Plan,
    plan,
    range_window,
    resolve_spec,
)
from civiclake.sources.socrata_stage import (
    StageResult,
    fetch_and_stage,
    stage_dir,
    staged_ids,
    staged_ids_of,
)

FLOW_NAME = "socrata-dataset"
REJECTS_SLICE = "rejects-slice"
"""Snapshot property of a load: its rejects slice (``whole`` or ``ids``), for the repair."""


@task(name="fetch-stage", cache_policy=NO_CACHE)
def fetch_stage(
    spec: DatasetSpec, where: str | None, run_id: str, page_size: int, blocks: Blocks = None
) -> dict[str, Any]:
    """API pages -> raw zone -> stage Parquet (valid + rejects), streamed in one pass."""
    settings = settings_for(blocks)
    with SocrataClient.from_settings(settings, base_url=spec.portal) as client:
        staged = fetch_and_stage(
            client,
            settings.lake(),
            spec,
            where=where,
            run_id=run_id,
            source=spec.source,
            page_size=page_size,
            log=get_run_logger(),
        )
    return asdict(staged)


@task(name="load", cache_policy=NO_CACHE)
def load(
    planned: Plan,
    staged: dict[str, Any],
    run_id: str,
    blocks: Blocks = None,
    allow_empty: bool = False,
    warehouse: str | None = None,
) -> dict[str, Any]:
    """Replace the slice (whole table, fetched ids, a date range) in the table and rejects;
    an empty fetch never empties the table or a range unless ``allow_empty``."""
    from civiclake import tables

    spec = planned.spec
    settings = settings_for(blocks)
    lake = settings.lake()
    result = StageResult(**staged)
    replaced, rejects_replaced = _slices(planned, lake, result)
    carried = [planned.high_water_mark]
    if planned.mode is not LoadMode.window:  # a window's rows do not say what else changed
        carried.append(result.high_water_mark)
    hwm = max(filter(None, carried), default=None)
    props = {
        "run-id": run_id,
        "source": spec.source,
        "range": _range_text(planned),
        "rows-fetched": str(result.rows_fetched),
        "rows-loaded": str(result.rows_valid),
        "rows-rejected": str(result.rows_rejected),
        **({WAREHOUSE_PROPERTY: warehouse} if warehouse else {}),
    }
    if hwm:
        props[HWM_PROPERTY] = hwm
    partition = (
        (spec.partition.transform, spec.partition.column) if spec.partition.transform else None
    )
    catalog = tables.load_catalog(settings)
    props[REJECTS_SLICE] = "whole" if isinstance(rejects_replaced, WholeTable) else "ids"
    with table_lock(spec.table, settings):
        repair_rejects(catalog, lake, spec)
        refuse_empty(
            catalog.load_table(spec.table) if catalog.table_exists(spec.table) else None,
            spec.table,
            replaced,
            result.rows_valid,
            allow_empty=allow_empty,
        )
        table = tables.ensure_table_for(
            catalog, spec.table, spec.arrow_schema(), partition=partition, evolve=True
        )
        if planned.mode is not LoadMode.full and _unchanged(
            catalog, spec, (replaced, rejects_replaced), result, lake
        ):
            # nothing new at the source: no commit (the README's "a re-run changes nothing")
            snapshot = table.current_snapshot()
            total = int(snapshot.summary["total-records"]) if snapshot and snapshot.summary else 0
            get_run_logger().info("%s unchanged: nothing committed", spec.table)
            return {
                "snapshot_id": snapshot.snapshot_id if snapshot else None,
                "table_rows": total,
                "replaced": str(replaced),
                "changes": "unchanged (nothing committed)",
            }
        main = tables.replace_range(
            table,
            replaced.iceberg_filter(),
            lambda: (tables.conform(c, table) for c in iter_table_chunks(lake, result.valid_url)),
            props,
        )
        commit_rejects(catalog, lake, spec, rejects_replaced, result.rejects_url, props)
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


def commit_rejects(
    catalog: Any,
    lake: Any,
    spec: DatasetSpec,
    replaced: Slice,
    rejects_url: str,
    props: dict[str, str],
) -> None:
    """A load's second commit: its rejects replace the rejects slice (after the table's)."""
    from civiclake import tables

    rejects_table = tables.ensure_table_for(catalog, spec.rejects_table, datasets.REJECTS_SCHEMA)
    tables.replace_range(
        rejects_table,
        replaced.iceberg_filter(),
        lambda: iter_table_chunks(lake, rejects_url),
        props,
    )


def repair_rejects(catalog: Any, lake: Any, spec: DatasetSpec) -> bool:
    """Complete a load whose rejects commit never happened (a crash between its two commits),
    from its staged files and the slice its table snapshot records. True when it repaired one.
    Called under the table's lock, before the next load commits anything."""
    from civiclake.tables.pairs import pending_rejects

    props = pending_rejects(catalog, spec.table, spec.rejects_table, REJECTS_SLICE)
    if props is None:
        return False
    run_id = props["run-id"]
    folder = stage_dir(lake, spec, run_id)  # where ``fetch_and_stage`` wrote them
    valid_url, rejects_url = f"{folder}/valid.parquet", f"{folder}/rejects.parquet"
    if not (lake.exists(valid_url) and lake.exists(rejects_url)):
        get_run_logger().warning(
            "%s: the rejects commit of run %s is missing and its staged files are gone;"
            " the next load of those rows replaces them",
            spec.rejects_table,
            run_id,
        )
        return False
    replaced: Slice = WholeTable()
    if props[REJECTS_SLICE] == "ids":
        ids = staged_ids_of(lake, valid_url, rejects_url)
        replaced = RowIds.of(datasets.ID_COLUMN, ids)
    commit_rejects(catalog, lake, spec, replaced, rejects_url, props)
    get_run_logger().warning(
        "completed the rejects commit of run %s (interrupted between its commits)", run_id
    )
    return True


def _unchanged(
    catalog: Any, spec: DatasetSpec, slices: tuple[Slice, Slice], staged: StageResult, lake: Any
) -> bool:
    """The fetched rows and rejects equal what the table and its rejects hold for them."""
    replaced, rejects_replaced = slices
    rejects = (
        catalog.load_table(spec.rejects_table) if catalog.table_exists(spec.rejects_table) else None
    )
    if rejects is None and staged.rows_rejected == 0:
        rejects_same = True
    else:
        rejects_same = same_rows(rejects, rejects_replaced, staged.rejects_url, lake)
    table = catalog.load_table(spec.table)
    return rejects_same and same_rows(table, replaced, staged.valid_url, lake)


def _slices(planned: Plan, lake: Any, staged: StageResult) -> tuple[Slice, Slice]:
    """The slices a load replaces in the table and in its rejects: the whole table (full), the
    ids the fetch saw (incremental), or the date range (window; its rejects by id: a rejects
    row has no date to range on)."""
    if planned.mode is LoadMode.full:
        return WholeTable(), WholeTable()
    ids = RowIds.of(datasets.ID_COLUMN, staged_ids(lake, staged))
    if planned.mode is LoadMode.window and planned.window is not None:
        return planned.window, ids
    return ids, ids


def _range_text(planned: Plan) -> str:
    if planned.mode is LoadMode.window and planned.window is not None:
        return str(planned.window)
    if planned.mode is LoadMode.incremental:
        return f"updated since {planned.high_water_mark}"
    return LoadMode.full.value


@task(name="load-warehouse", cache_policy=NO_CACHE)
def load_warehouse(
    planned: Plan, staged: dict[str, Any], to: str, blocks: Blocks = None
) -> dict[str, Any]:
    """The same slices replaced in the warehouse from the same staged Parquet, one
    transaction per table (new columns added first)."""
    from civiclake.warehouse import open_warehouse

    spec = planned.spec
    settings = settings_for(blocks)
    lake = settings.lake()
    result = StageResult(**staged)
    replaced, rejects_replaced = _slices(planned, lake, result)
    merges = not isinstance(replaced, Window)
    with (
        table_lock(f"{to}:{spec.table}", settings, commits=False),
        open_warehouse(to, settings) as warehouse,
    ):
        rows = warehouse.replace(
            spec.table, spec.arrow_schema(), [result.valid_url], lake, replaced, evolve=merges
        )
        warehouse.replace(
            spec.rejects_table,
            datasets.REJECTS_SCHEMA,
            [result.rejects_url],
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
    if to is not None:
        from civiclake.warehouse import check_configured, check_merges

        (check_configured if date_field else check_merges)(to.value, settings)
        # reachable, credentials, writable: before anything is fetched or committed
        check_warehouse(to.value, settings)
    log = get_run_logger()
    run_id = str(flow_run.id or f"local-{datetime.now(UTC):%Y%m%dT%H%M%S}")
    settings.lake().check_writable()
    spec = resolve_spec(
        settings, dataset, portal=portal, table=table, partition=partition, where=where
    )
    window = range_window(spec, date_field, start_date, stop_date, full=full)
    planned = plan(settings, spec, full=full, window=window)
    log.info("%s (%s) -> %s: %s", spec.dataset_id, spec.name, spec.table, planned.mode_text)
    page = page_size or settings.page_size
    staged = fetch_stage(spec, planned.where, run_id, page, blocks=blocks)
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
