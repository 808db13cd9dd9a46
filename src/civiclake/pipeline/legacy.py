"""Half loads of the code before the one pipeline (6893fc3 and older), completed by the new code.

The old flows committed a table from a staged Parquet file, then its rejects from another one,
and marked the table's snapshot with what their own repair needed, one marker per source:

- B&T: ``rejects-days`` (the days replaced) and ``load-key``; the staged rejects in
  ``stage/<ns>/<table>/run=<run id>/rejects.parquet``; the rejects slice is those days or
  that load key.
- TLC: ``rejects-month`` (the month's first day); the staged rejects in
  ``stage/tlc/<color>/<YYYY-MM>/rejects.parquet`` (one per month: a later conversion of the
  month overwrote it, so it counts only if its ``load_run_id`` is the run's); the rejects slice
  is ``source_month``.
- Socrata: ``rejects-slice`` (``whole`` or ``ids``); the staged files in
  ``stage/socrata/<dataset id>/<run id>/{valid,rejects}.parquet``; an ``ids`` slice is every
  ``socrata_id`` of both files.

The new code writes these markers too, with ``LOAD_MARKER`` beside them: a snapshot with an
old marker and no ``LOAD_MARKER`` was made by the old code. These layouts are facts about code
that no longer changes, so they are spelled out here rather than read from today's sources.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from civiclake.lake import STAGE_ZONE

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.expressions import BooleanExpression

    from civiclake.lake import Lake

BNT_MARKER = "rejects-days"
TLC_MARKER = "rejects-month"
SOCRATA_MARKER = "rejects-slice"
MARKERS = (BNT_MARKER, TLC_MARKER, SOCRATA_MARKER)


@dataclass(frozen=True)
class OldRejects:
    """What an old-code load's missing rejects commit would have done."""

    url: str
    """The staged rejects Parquet file."""
    replaced: BooleanExpression
    """The rows of the rejects table it replaces."""


def pending(
    catalog: Catalog, table: str, rejects_table: str, load_marker: str
) -> tuple[str, dict[str, str]] | None:
    """(marker, properties) of ``table``'s current snapshot when the OLD code made it and its
    rejects commit never happened; None otherwise."""
    from civiclake.tables import SNAPSHOT_PROPERTY_PREFIX
    from civiclake.tables.pairs import pending_rejects

    if not catalog.table_exists(table):
        return None
    snapshot = catalog.load_table(table).current_snapshot()
    if snapshot is None or snapshot.summary is None:
        return None
    summary = snapshot.summary.additional_properties
    if SNAPSHOT_PROPERTY_PREFIX + load_marker in summary:
        return None  # the new code's load: ``commit.repair`` handles it
    for marker in MARKERS:
        if SNAPSHOT_PROPERTY_PREFIX + marker in summary:
            props = pending_rejects(catalog, table, rejects_table, marker)
            return None if props is None else (marker, props)
    return None


def locate(lake: Lake, table: str, marker: str, props: dict[str, str]) -> OldRejects | None:
    """Where the old code staged the load's rejects and what they replace; None when the staged
    files are gone (pruned) or no longer that run's."""
    run_id = props["run-id"]
    if marker == BNT_MARKER:
        return _bnt(lake, table, run_id, props)
    if marker == TLC_MARKER:
        return _tlc(lake, table, run_id, props)
    return _socrata(lake, run_id, props)


def _bnt(lake: Lake, table: str, run_id: str, props: dict[str, str]) -> OldRejects | None:
    from pyiceberg.expressions import EqualTo, Or

    from civiclake.slices import Windows

    url = lake.join(STAGE_ZONE, *table.split("."), f"run={run_id}", "rejects.parquet")
    if not lake.exists(url):
        return None
    spans = []
    for span in filter(None, props[BNT_MARKER].split(",")):
        start, stop = span.split("/")
        spans.append((date.fromisoformat(start), date.fromisoformat(stop)))
    days = Windows.of("date", spans).iceberg_filter()
    return OldRejects(url, Or(days, EqualTo("load_range", props.get("load-key", ""))))


def _tlc(lake: Lake, table: str, run_id: str, props: dict[str, str]) -> OldRejects | None:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from pyiceberg.expressions import EqualTo

    color = table.split(".", 1)[-1].removesuffix("_trips")
    first_day = date.fromisoformat(props[TLC_MARKER])
    url = lake.join(STAGE_ZONE, "tlc", color, first_day.strftime("%Y-%m"), "rejects.parquet")
    if not lake.exists(url):
        return None
    with lake.open(url) as handle:
        runs = pc.unique(pq.read_table(handle, columns=["load_run_id"]).column(0)).to_pylist()
    if runs not in ([run_id], []) or (runs == [] and props.get("rows-rejected") != "0"):
        return None  # a later conversion of the month replaced the run's file
    return OldRejects(url, EqualTo("source_month", first_day.isoformat()))


def _socrata(lake: Lake, run_id: str, props: dict[str, str]) -> OldRejects | None:
    import pyarrow.parquet as pq
    from pyiceberg.expressions import AlwaysTrue

    from civiclake.slices import RowIds

    dataset_id = props.get("source", "").rsplit("/", 1)[-1]
    folder = lake.join(STAGE_ZONE, "socrata", dataset_id, run_id)
    valid_url, rejects_url = f"{folder}/valid.parquet", f"{folder}/rejects.parquet"
    if not (dataset_id and lake.exists(valid_url) and lake.exists(rejects_url)):
        return None
    if props[SOCRATA_MARKER] != "ids":
        return OldRejects(rejects_url, AlwaysTrue())
    ids: set[str] = set()
    for url in (valid_url, rejects_url):
        with lake.open(url) as handle:
            column = pq.read_table(handle, columns=["socrata_id"]).column(0)
        ids.update(v for v in column.to_pylist() if v is not None)
    return OldRejects(rejects_url, RowIds.of("socrata_id", ids).iceberg_filter())


def complete(
    catalog: Catalog,
    lake: Lake,
    table: str,
    rejects_table: str,
    load_marker: str,
    log: logging.Logger | logging.LoggerAdapter[Any],
) -> bool:
    """Complete the missing rejects commit of an old-code load of ``table`` from the files the
    old code staged, as the old code's own repair did. True when it completed one; when those
    files are gone, one warning line (the next load of those rows replaces their rejects)."""
    from civiclake import tables
    from civiclake.lake import iter_table_chunks

    found = pending(catalog, table, rejects_table, load_marker)
    if found is None:
        return False
    marker, props = found
    run_id = props["run-id"]
    old = locate(lake, table, marker, props)
    if old is None or not catalog.table_exists(rejects_table):
        log.warning(
            "%s: the rejects commit of run %s (made by civiclake before the upgrade) is missing"
            " and its staged rejects are gone; the next load of those rows replaces them",
            rejects_table,
            run_id,
        )
        return False
    target = catalog.load_table(rejects_table)
    tables.replace_range(
        target,
        old.replaced,
        lambda: (_typed(c, target) for c in iter_table_chunks(lake, old.url)),
        props,
    )
    log.warning(
        "completed the rejects commit of run %s (made by civiclake before the upgrade,"
        " interrupted between its commits)",
        run_id,
    )
    return True


def _typed(chunk: Any, table: Any) -> Any:
    """A staged chunk in the rejects table's columns and types."""
    from civiclake import tables

    conformed = tables.conform(chunk, table)
    return conformed.cast(table.schema().as_arrow())
