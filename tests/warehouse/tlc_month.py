"""A TLC month as Parquet files of its table's rows and of its rejects, made by the color's
spec (reader -> transform -> split), for warehouse tests that load files without Iceberg."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq

from civiclake.lake import Lake
from civiclake.pipeline import split
from civiclake.sources import tlc, tlc_fetch


@dataclass(frozen=True)
class TlcMonth:
    valid_url: str
    rejects_url: str
    rows_read: int
    rows_valid: int
    rows_rejected: int


def tlc_month(lake: Lake, path: Path, color: str, month: tlc.Month, *, run_id: str) -> TlcMonth:
    spec = tlc.spec_for(color)
    raw = tlc_fetch.stage_local_file(lake, str(path), color, month)
    ctx = tlc.context(spec, month, run_id=run_id, now=datetime.now(UTC))
    base = lake.join("stage", "tests", color, str(month))
    valid_url, rejects_url = f"{base}/trips.parquet", f"{base}/rejects.parquet"
    read = valid = rejected = 0
    with (
        lake.open_atomic(valid_url) as valid_out,
        lake.open_atomic(rejects_url) as rejects_out,
        pq.ParquetWriter(valid_out, tlc.table_schema(spec)) as valid_writer,
        pq.ParquetWriter(rejects_out, tlc.rejects_schema(spec)) as rejects_writer,
    ):
        for batch in spec.read(lake, raw):
            rows, rejects = split(spec, spec.transform(batch, ctx), ctx)
            valid_writer.write_table(rows)
            rejects_writer.write_table(rejects)
            read, valid, rejected = (
                read + batch.num_rows,
                valid + rows.num_rows,
                rejected + rejects.num_rows,
            )
    return TlcMonth(valid_url, rejects_url, read, valid, rejected)
