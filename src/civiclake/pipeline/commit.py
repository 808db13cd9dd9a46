"""The commit step: a staged load -> its table, then its rejects table.

Iceberg commits one table at a time. Before the first commit the load (its staged data files,
the two slices it replaces, its snapshot properties) is saved in the stage zone under its run
id; the table's snapshot carries ``LOAD_MARKER``. If the process dies between the two commits,
the next load of the table (under its lock) finds the table's snapshot without a rejects
snapshot of the same run (``tables.pairs.pending_rejects``) and completes the rejects commit
from the saved load: what the crashed load would have committed, as it would have. A load made
by the code before the one pipeline is completed the same way from that code's staged files
(``pipeline.legacy``).
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from civiclake import tables
from civiclake.lake import STAGE_ZONE
from civiclake.pipeline.contract import Staged

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table

    from civiclake.lake import Lake
    from civiclake.slices import Slice

logger = logging.getLogger("civiclake.pipeline")

LOAD_MARKER = "staged-load"
"""Snapshot property of a table commit made by ``commit``: its rejects commit follows."""
LOAD_FILE = "load.pickle"


@dataclass(frozen=True)
class Load:
    """A staged load ready to commit (picklable)."""

    staged: Staged
    replaced: Slice
    rejects_replaced: Slice
    properties: dict[str, str]

    @property
    def run_id(self) -> str:
        return self.properties["run-id"]

    def save(self, lake: Lake, url: str) -> None:
        lake.write_bytes(url, pickle.dumps(self))

    @classmethod
    def read(cls, lake: Lake, url: str) -> Load:
        with lake.open(url) as handle:
            saved = pickle.loads(handle.read())  # our own file in our own lake
        if not isinstance(saved, cls):
            raise TypeError(f"{url} is not a staged load")
        return saved


def load_url(lake: Lake, table: str, run_id: str) -> str:
    """Where ``commit`` saves a load of ``table`` (``ns.name``) before committing it."""
    return lake.join(STAGE_ZONE, *table.split("."), f"run={run_id}", LOAD_FILE)


def commit(lake: Lake, table: Table, rejects_table: Table, load: Load) -> tables.CommitResult:
    """Replace ``load.replaced`` in ``table`` with the staged data files, then
    ``load.rejects_replaced`` in ``rejects_table`` with the staged rejects; each one atomic
    transaction (replayed on a conflict). Returns the table's commit."""
    name = ".".join(table.name())
    load.save(lake, load_url(lake, name, load.run_id))
    main = tables.commit_files(
        table,
        load.replaced.iceberg_filter(),
        load.staged.data,
        {**load.properties, LOAD_MARKER: "1"},
    )
    tables.commit_files(
        rejects_table,
        load.rejects_replaced.iceberg_filter(),
        load.staged.rejects,
        load.properties,
    )
    return main


def repair(
    catalog: Catalog,
    lake: Lake,
    table: str,
    rejects_table: str,
    log: logging.Logger | logging.LoggerAdapter[Any] = logger,
) -> bool:
    """Complete the rejects commit of ``table``'s last load if it never happened (a crash
    between the two commits). Call under the table's lock, before committing anything. True
    when it completed one. A half load made by the code before the one pipeline is completed
    from the files that code staged (``pipeline.legacy``)."""
    from civiclake.pipeline import legacy
    from civiclake.tables.pairs import pending_rejects

    props = pending_rejects(catalog, table, rejects_table, LOAD_MARKER)
    if props is None:
        return legacy.complete(catalog, lake, table, rejects_table, LOAD_MARKER, log)
    run_id = props["run-id"]
    url = load_url(lake, table, run_id)
    saved = Load.read(lake, url) if lake.exists(url) else None
    if saved is None or not all(lake.exists(f.file_path) for f in saved.staged.rejects.files):
        log.warning(
            "%s: the rejects commit of run %s is missing and its staged files are gone;"
            " the next load of those rows replaces them",
            rejects_table,
            run_id,
        )
        return False
    tables.commit_files(
        catalog.load_table(rejects_table),
        saved.rejects_replaced.iceberg_filter(),
        saved.staged.rejects,
        saved.properties,
    )
    log.warning("completed the rejects commit of run %s (interrupted between its commits)", run_id)
    return True
