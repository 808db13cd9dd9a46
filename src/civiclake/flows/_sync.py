"""The lake and a warehouse: checked before the Iceberg commit, re-synced after a failure.

A run commits Iceberg first, then loads the warehouse (``--to``). The warehouse is checked
(reachable, credentials, writable) before anything is fetched, so a dead server or missing
credentials fail a run that changed nothing. If the warehouse load still fails after the
commit, the table records it (a table property, no new snapshot) and the run ends with one
line saying so; the next run with the same ``--to`` copies the whole table from Iceberg into
the warehouse, even when the source has nothing new.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from civiclake.errors import CivicLakeError

if TYPE_CHECKING:
    from pyiceberg.table import Table

    from civiclake.config import Settings

PENDING_PROPERTY = "civiclake.warehouse-not-synced."
"""+ the warehouse kind: the lake snapshot a failed warehouse load left behind."""
WAREHOUSE_PROPERTY = "warehouse"
"""Snapshot property (``civiclake.warehouse``): the warehouse the load also went to."""


class WarehouseNotSynced(CivicLakeError):
    """The lake committed, the warehouse did not: carries the run summary for the CLI."""

    def __init__(self, message: str, summary: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.summary = summary


def not_synced_line(snapshot_id: int | None, to: str) -> str:
    return f"lake at snapshot {snapshot_id}, warehouse not updated: re-run with --to {to} to sync"


def check_warehouse(to: str, settings: Settings) -> str:
    """The warehouse's own ``check()``: reachable, credentials valid, writable, or one line."""
    from civiclake.warehouse import open_warehouse

    try:
        with open_warehouse(to, settings) as warehouse:
            return warehouse.check()
    except CivicLakeError as exc:
        raise CivicLakeError(f"--to {to}: {exc}; nothing loaded") from None


def mark_not_synced(settings: Settings, identifier: str, to: str, snapshot_id: int | None) -> None:
    from civiclake import tables

    table = tables.load_catalog(settings).load_table(identifier)
    with table.transaction() as tx:
        tx.set_properties({PENDING_PROPERTY + to: str(snapshot_id)})


def after_rollback(table: Table, current: int, target: int) -> str:
    """What a rollback from ``current`` to ``target`` means for the warehouses: the loads it
    undoes that also went to a warehouse mark it not synced (the next run with that ``--to``
    copies the table whole), and the line says so."""
    from pyiceberg.table.snapshots import ancestors_of

    from civiclake.tables import SNAPSHOT_PROPERTY_PREFIX

    kinds: set[str] = set()
    snapshot = table.snapshot_by_id(current)
    for ancestor in ancestors_of(snapshot, table.metadata) if snapshot else []:
        if ancestor.snapshot_id == target:
            break
        props = ancestor.summary.additional_properties if ancestor.summary else {}
        kind = props.get(SNAPSHOT_PROPERTY_PREFIX + WAREHOUSE_PROPERTY)
        if kind:
            kinds.add(kind)
    if not kinds:
        return "no warehouse was loaded by the undone snapshots"
    with table.transaction() as tx:
        tx.set_properties({PENDING_PROPERTY + kind: str(target) for kind in sorted(kinds)})
    options = " / ".join(f"--to {kind}" for kind in sorted(kinds))
    return f"warehouses are not rolled back: re-run the load with {options} to re-sync"


def not_synced(settings: Settings, identifier: str, to: str) -> bool:
    from civiclake import tables

    catalog = tables.load_catalog(settings)
    if not catalog.table_exists(identifier):
        return False
    return PENDING_PROPERTY + to in catalog.load_table(identifier).properties


def sync_whole_table(settings: Settings, identifiers: list[str], to: str, run_id: str) -> int:
    """Copy each Iceberg table whole into the warehouse (one transaction per table), then clear
    the mark on the first (the main table). Returns the main table's rows loaded."""
    import pyarrow.parquet as pq

    from civiclake import tables
    from civiclake.lake import STAGE_ZONE
    from civiclake.slices import WholeTable
    from civiclake.warehouse import open_warehouse

    catalog = tables.load_catalog(settings)
    lake = settings.lake()
    loaded: list[int] = []
    with open_warehouse(to, settings) as warehouse:
        for identifier in identifiers:
            if not catalog.table_exists(identifier):
                continue
            table = catalog.load_table(identifier)
            schema = table.schema().as_arrow()
            url = lake.join(STAGE_ZONE, "sync", *identifier.split("."), f"{run_id}.parquet")
            with lake.open_atomic(url) as out, pq.ParquetWriter(out, schema) as writer:
                for batch in table.scan().to_arrow_batch_reader():
                    writer.write_batch(batch.cast(schema))
            loaded.append(warehouse.replace(identifier, schema, [url], lake, WholeTable()))
    main = catalog.load_table(identifiers[0])
    with main.transaction() as tx:
        tx.remove_properties(PENDING_PROPERTY + to)
    return loaded[0] if loaded else 0


def load_or_sync(
    load: Callable[[], dict[str, Any]],
    *,
    settings: Settings,
    identifiers: list[str],
    to: str,
    run_id: str,
    snapshot_id: int | None,
) -> tuple[dict[str, Any] | None, str | None]:
    """After the Iceberg commit: the warehouse load (``load``), or the whole table when an
    earlier run left the warehouse behind. Returns (its result, None) or (None, the line that
    says the lake moved and the warehouse did not, with the cause)."""
    from prefect import get_run_logger, task
    from prefect.cache_policies import NO_CACHE

    try:
        if not_synced(settings, identifiers[0], to):
            sync = task(name="sync-warehouse", cache_policy=NO_CACHE)(sync_whole_table)
            rows = sync(settings, identifiers, to, run_id)
            get_run_logger().info(
                "%s: %s re-synced from the lake (%s rows)", to, identifiers[0], rows
            )
            return {"warehouse": to, "rows": rows}, None
        return load(), None
    except Exception as exc:  # after the commit, any failure is reported the same way
        mark_not_synced(settings, identifiers[0], to, snapshot_id)
        cause = " ".join(str(exc).split()) or type(exc).__name__
        return None, f"{not_synced_line(snapshot_id, to)} ({cause})"
