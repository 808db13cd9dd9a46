"""The contract between a dataset spec and the engines that stage it.

A spec's ``transform`` is a pure function from ONE Arrow batch, as the spec's reader yields it,
to ONE Arrow batch: the table's columns, typed, plus ``REJECT_REASON`` (NULL for a row that
passed every rule) and ``RAW_RECORD`` (the record as received, for rejects). One stream in, one
stream out is the shape Spark's ``mapInArrow``, Ray's ``map_batches`` and a local thread all
run unchanged; a transform returning a (rows, rejects) pair fits none of them. No closures, no
I/O, no global state inside it: everything a rule needs travels in ``RunContext``.

``split`` is the engines' common step after it: rows to the table, rejected rows through the
spec's ``rejects`` projection (each source keeps its rejects layout: ``reason`` or
``reject_reason``, with or without the typed columns).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table

    from civiclake._private.iceberg_write import DataFiles
    from civiclake.lake import Lake
    from civiclake.slices import Slice

REJECT_REASON = "_reject_reason"
"""Output column of a transform: why the row is rejected (every failed rule), NULL if valid."""
RAW_RECORD = "_raw_record"
"""Output column of a transform: the record as received (JSON text), kept for its rejects."""


@dataclass(frozen=True)
class RunContext:
    """What a load's rules and lineage columns need, passed by value (picklable) to a transform
    wherever it runs."""

    run_id: str
    source: str
    now: datetime
    """``loaded_at`` / ``rejected_at`` of the load (UTC), the same for every row."""
    slice: Slice | None = None
    """The slice the load replaces: a row outside a window is a reject."""
    label: str = ""
    """The load's own name for its range (e.g. B&T's ``load_range``), for the rejects."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """Source-specific facts (e.g. the TLC month a file belongs to)."""


@runtime_checkable
class DatasetSpec(Protocol):
    """A dataset as data: its table, its rejects table, the reader of its raw files and its
    pure transform. One implementation per source kind (Socrata from view metadata, B&T, TLC)."""

    @property
    def table(self) -> str: ...

    @property
    def rejects_table(self) -> str: ...

    def arrow_schema(self) -> pa.Schema:
        """The table's columns, in order, with their types."""
        ...

    def rejects_schema(self) -> pa.Schema:
        """The rejects table's columns, in order, with their types."""
        ...

    def ensure_tables(self, catalog: Catalog) -> tuple[Table, Table]:
        """The table and its rejects table, created when missing (a spec whose ``evolves`` is
        true also adds new columns): called under the table's lock before a stage."""
        ...

    def read(self, lake: Lake, url: str) -> Iterator[pa.RecordBatch]:
        """One raw file of the lake as batches (the I/O edge: strings, or typed columns where
        the format carries types)."""
        ...

    def transform(self, batch: pa.RecordBatch, ctx: RunContext) -> pa.RecordBatch:
        """Pure: a read batch -> ``output_schema(self)`` rows (see the module docstring)."""
        ...

    def rejects(self, rejected: pa.Table, ctx: RunContext) -> pa.Table:
        """Pure: the transform's rejected rows -> rows of ``rejects_schema()``."""
        ...

    def observe(self, rows: pa.Table) -> dict[str, set[Any]]:
        """Pure: facts the load reports or plans with, from valid rows (e.g. the days a file
        holds, the newest update time), as sets the engine unions over the whole stage."""
        ...


def output_schema(spec: DatasetSpec) -> pa.Schema:
    """What ``spec.transform`` returns: the table's columns + the reject reason + raw record."""
    return (
        spec.arrow_schema()
        .append(pa.field(REJECT_REASON, pa.string()))
        .append(pa.field(RAW_RECORD, pa.string()))
    )


def split(
    spec: DatasetSpec, out: pa.RecordBatch | pa.Table, ctx: RunContext
) -> tuple[pa.Table, pa.Table]:
    """A transform's output -> (rows for the table, rows for the rejects table)."""
    table = out if isinstance(out, pa.Table) else pa.Table.from_batches([out])
    reasons = table.column(REJECT_REASON)
    names = spec.arrow_schema().names
    if reasons.null_count == table.num_rows:
        return table.select(names), spec.rejects_schema().empty_table()
    rejected = pc.is_valid(reasons)
    rows = table.filter(pc.invert(rejected)).select(names)
    return rows, spec.rejects(table.filter(rejected), ctx)


@dataclass(frozen=True)
class Staged:
    """What a stage produced: data files for the table and for its rejects (written, not yet
    committed), counts, and the union of the spec's observations. Picklable: an engine's
    workers produce it, the driver commits it (``pipeline.commit`` keeps a copy for repair)."""

    data: DataFiles
    rejects: DataFiles
    rows_read: int
    rows_valid: int
    rows_rejected: int
    observed: Mapping[str, frozenset[Any]] = field(default_factory=dict)
    engine: str = "arrow"
    seconds: float = 0.0
    rejected_by_reason: Mapping[str, int] = field(default_factory=dict)
    """Rejected rows per distinct ``REJECT_REASON`` value (a summary's "by rule")."""

    @property
    def data_urls(self) -> list[str]:
        """The table's new data files (Parquet): what a warehouse loads."""
        return [f.file_path for f in self.data.files]

    @property
    def rejects_urls(self) -> list[str]:
        return [f.file_path for f in self.rejects.files]
