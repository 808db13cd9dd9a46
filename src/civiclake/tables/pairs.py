"""A load's two commits: its table, then its rejects table.

Iceberg commits one table at a time, so a crash between the two commits leaves the table at the
new load and its rejects at the previous one. Each flow records in the table's snapshot what
the rejects commit needs (a property naming the rejects slice; the staged rejects file is found
from the run id), and its next load, under the table's lock, first completes a missing rejects
commit with :func:`pending_rejects`: what the crashed load would have committed, as it would
have committed it.
"""

from __future__ import annotations

from pyiceberg.catalog import Catalog

from civiclake.tables import SNAPSHOT_PROPERTY_PREFIX


def pending_rejects(
    catalog: Catalog, table_name: str, rejects_name: str, marker: str
) -> dict[str, str] | None:
    """The civiclake properties (prefix removed) of ``table_name``'s current snapshot when its
    load's rejects commit never happened: the snapshot carries ``marker`` and a run id, and no
    snapshot of ``rejects_name`` has that run id. None when there is nothing to complete."""
    if not catalog.table_exists(table_name):
        return None
    snapshot = catalog.load_table(table_name).current_snapshot()
    if snapshot is None or snapshot.summary is None:
        return None
    props = {
        k.removeprefix(SNAPSHOT_PROPERTY_PREFIX): v
        for k, v in snapshot.summary.additional_properties.items()
        if k.startswith(SNAPSHOT_PROPERTY_PREFIX)
    }
    run_id = props.get("run-id")
    if not run_id or marker not in props:
        return None
    if catalog.table_exists(rejects_name):
        key = SNAPSHOT_PROPERTY_PREFIX + "run-id"
        if any(
            s.summary and s.summary.additional_properties.get(key) == run_id
            for s in catalog.load_table(rejects_name).metadata.snapshots
        ):
            return None
    return props
