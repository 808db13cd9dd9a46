"""The local engine: raw files -> Iceberg data files, streamed with bounded memory.

Each raw file is read batch by batch by the spec's reader; the next batch is read in a thread
while the current one is typed (the transform) and written (``DataFileWriter``: one open
Parquet file per partition, straight into the table's location, so every row is written once).
Memory holds a batch being read, one being typed, and the writer's bounded buffers.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from civiclake._private.iceberg_write import DataFileWriter
from civiclake._private.prefetch import Prefetch
from civiclake._private.progress import Progress
from civiclake.pipeline.contract import REJECT_REASON, DatasetSpec, RunContext, Staged, split

if TYPE_CHECKING:
    from pyiceberg.table import Table

    from civiclake.lake import Lake

logger = logging.getLogger("civiclake.pipeline")

NAME = "arrow"


def stage(
    spec: DatasetSpec,
    lake: Lake,
    raw_urls: Iterable[str],
    ctx: RunContext,
    *,
    table: Table,
    rejects_table: Table,
    expected_rows: int | None = None,
    log: logging.Logger | logging.LoggerAdapter[Any] = logger,
    sink: Callable[[pa.Table], None] | None = None,
) -> Staged:
    """Type every batch of ``raw_urls`` (which may be a generator yielding each file as the
    fetch writes it) into data files of ``table`` and ``rejects_table``; commit nothing.

    ``sink``, when given, gets each table of valid rows before it is written: a warehouse that
    streams while staging (``Capabilities.streams_while_staging``) loads them meanwhile. Its
    error ends the stage, unchanged."""
    began = time.monotonic()
    read = 0
    observed: dict[str, set[Any]] = {}
    reasons: Counter[str] = Counter()
    with (
        DataFileWriter(table.metadata, table.io) as rows_out,
        DataFileWriter(rejects_table.metadata, rejects_table.io) as rejects_out,
        Progress(f"stage {spec.table}", total=expected_rows, logger=log) as progress,
        Prefetch(_batches(spec, lake, raw_urls), depth=1, name="civiclake-stage-read") as ahead,
    ):
        for batch in ahead:
            out = spec.transform(batch, ctx)
            rows, rejects = split(spec, out, ctx)
            if rejects.num_rows:
                for item in pc.value_counts(out.column(REJECT_REASON)).to_pylist():
                    if item["values"] is not None:
                        reasons[item["values"]] += item["counts"]
            if sink is not None and rows.num_rows:
                sink(rows)
            rows_out.write(rows)
            rejects_out.write(rejects)
            if rows.num_rows:
                for key, values in spec.observe(rows).items():
                    observed.setdefault(key, set()).update(values)
            read += batch.num_rows
            progress.advance(batch.num_rows)
            del batch, out, rows, rejects
        data, rejected = rows_out.close(), rejects_out.close()
    pa.default_memory_pool().release_unused()
    return Staged(
        data=data,
        rejects=rejected,
        rows_read=read,
        rows_valid=data.rows,
        rows_rejected=rejected.rows,
        observed={key: frozenset(values) for key, values in observed.items()},
        engine=NAME,
        seconds=round(time.monotonic() - began, 3),
        rejected_by_reason=dict(reasons),
    )


def _batches(spec: DatasetSpec, lake: Lake, urls: Iterable[str]) -> Iterator[pa.RecordBatch]:
    for url in urls:
        yield from spec.read(lake, url)
