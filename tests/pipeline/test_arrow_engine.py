"""The local engine on a small spec: raw CSV files in the lake -> data files of a table and its
rejects (partitioned, streamed in small batches), committed once; nothing visible before."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from civiclake import tables
from civiclake._private import iceberg_write
from civiclake.config import get_settings
from civiclake.errors import ParameterError
from civiclake.lake import Lake
from civiclake.pipeline import (
    RAW_RECORD,
    REJECT_REASON,
    RunContext,
    commit as pipeline_commit,
    output_schema,
)
from civiclake.pipeline.engines import get_stage
from civiclake.slices import WholeTable, Window

SCHEMA = pa.schema([("day", pa.date32()), ("count", pa.int64()), ("load_run_id", pa.string())])
REJECTS = pa.schema([("reason", pa.string()), ("raw_record", pa.string())])


class DaysSpec:
    """A toy spec: CSV files of ``day,count``; a count must be a non-negative integer."""

    table = "toy.days"
    rejects_table = "toy.days_rejects"

    def arrow_schema(self) -> pa.Schema:
        return SCHEMA

    def rejects_schema(self) -> pa.Schema:
        return REJECTS

    def read(self, lake: Lake, url: str) -> Iterator[pa.RecordBatch]:
        with lake.open(url) as handle:
            reader = pcsv.open_csv(
                io.BytesIO(handle.read()),
                read_options=pcsv.ReadOptions(block_size=4096),
                convert_options=pcsv.ConvertOptions(
                    column_types={"day": pa.string(), "count": pa.string()}
                ),
            )
            yield from reader

    def transform(self, batch: pa.RecordBatch, ctx: RunContext) -> pa.RecordBatch:
        days = pc.cast(batch.column("day"), pa.date32())
        counts = pc.cast(
            pc.if_else(
                pc.match_substring_regex(batch.column("count"), r"^[0-9]+$"),
                batch.column("count"),
                None,
            ),
            pa.int64(),
        )
        reason = pc.if_else(
            pc.is_null(counts),
            pc.binary_join_element_wise(
                "count not a non-negative integer: ", batch.column("count"), ""
            ),
            pa.scalar(None, pa.string()),
        )
        raw = pc.binary_join_element_wise(batch.column("day"), batch.column("count"), ",")
        return pa.RecordBatch.from_arrays(
            [days, counts, pa.repeat(pa.scalar(ctx.run_id), batch.num_rows), reason, raw],
            schema=output_schema(self),
        )

    def rejects(self, rejected: pa.Table, ctx: RunContext) -> pa.Table:
        return pa.table(
            {"reason": rejected.column(REJECT_REASON), "raw_record": rejected.column(RAW_RECORD)},
            schema=REJECTS,
        )

    def observe(self, rows: pa.Table) -> dict[str, set[Any]]:
        return {"days": set(pc.unique(rows.column("day")).to_pylist())}


def _write_raw(lake: Lake, name: str, first: date, days: int, per_day: int, bad: int = 0) -> str:
    lines = ["day,count"]
    for d in range(days):
        lines += [f"{first + timedelta(days=d)},{n}" for n in range(per_day)]
    lines += [f"{first},x{n}" for n in range(bad)]
    url = lake.join("raw", "toy", name)
    lake.write_bytes(url, ("\n".join(lines) + "\n").encode())
    return url


def _tables() -> tuple[Any, Any, Any]:
    catalog = tables.load_catalog(get_settings())
    table = tables.ensure_table_for(catalog, DaysSpec.table, SCHEMA, month_of="day")
    rejects = tables.ensure_table_for(catalog, DaysSpec.rejects_table, REJECTS)
    return catalog, table, rejects


def _ctx(run: str = "r1") -> RunContext:
    return RunContext(run_id=run, source="test", now=datetime(2024, 5, 1, tzinfo=UTC))


def test_stage_writes_partitioned_data_files_once_and_commit_makes_them_visible() -> None:
    lake = get_settings().lake()
    _, table, rejects = _tables()
    urls = [
        _write_raw(lake, "a.csv", date(2024, 1, 30), 5, 200, bad=3),  # Jan 30 - Feb 3
        _write_raw(lake, "b.csv", date(2024, 3, 1), 2, 200),
    ]
    staged = get_stage("arrow")(
        DaysSpec(), lake, iter(urls), _ctx(), table=table, rejects_table=rejects
    )
    assert (staged.rows_read, staged.rows_valid, staged.rows_rejected) == (1403, 1400, 3)
    assert staged.observed["days"] == {date(2024, 1, 30) + timedelta(days=d) for d in range(5)} | {
        date(2024, 3, 1),
        date(2024, 3, 2),
    }
    # one file per month however small the batches were (4 KiB blocks: many batches a file)
    months = sorted(str(f.partition[0]) for f in staged.data.files)
    assert len(months) == 3 == len(set(months))
    for data_file in staged.data.files:
        assert pq.ParquetFile(lake.fs.open(data_file.file_path)).metadata.num_row_groups == 1
    assert table.scan().to_arrow().num_rows == 0  # written, not committed: invisible

    tables.commit_files(
        table,
        Window("day", date(2024, 1, 1), date(2024, 4, 1)).iceberg_filter(),
        staged.data,
        {"run-id": "r1"},
    )
    tables.commit_files(rejects, WholeTable().iceberg_filter(), staged.rejects, {"run-id": "r1"})
    got = table.scan().to_arrow()
    assert got.num_rows == 1400
    assert pc.sum(got.column("count")).as_py() == 7 * sum(range(200))
    assert set(got.column("load_run_id").to_pylist()) == {"r1"}
    bad = rejects.scan().to_arrow().sort_by("raw_record")
    assert bad.column("reason").to_pylist() == [
        f"count not a non-negative integer: x{n}" for n in range(3)
    ]
    assert bad.column("raw_record").to_pylist() == [f"2024-01-30,x{n}" for n in range(3)]


def test_staged_round_trips_through_the_lake_and_commits_exactly_once() -> None:
    lake = get_settings().lake()
    _, table, rejects = _tables()
    url = _write_raw(lake, "c.csv", date(2024, 2, 1), 3, 50)
    staged = get_stage()(DaysSpec(), lake, [url], _ctx(), table=table, rejects_table=rejects)
    saved = pipeline_commit.load_url(lake, DaysSpec.table, "r1")
    pipeline_commit.Load(staged, WholeTable(), WholeTable(), {"run-id": "r1"}).save(lake, saved)
    again = pipeline_commit.Load.read(lake, saved).staged
    assert again.data_urls == staged.data_urls and again.rows_valid == 150
    window = Window("day", date(2024, 2, 1), date(2024, 3, 1)).iceberg_filter()
    tables.commit_files(table, window, again.data, {"run-id": "r1"})
    tables.commit_files(table, window, again.data, {"run-id": "r1"})  # a replayed commit
    assert table.scan().to_arrow().num_rows == 150


def test_writer_bounds_buffers_and_rolls_row_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small buffers: rows still land once, in several row groups of one file per month."""
    monkeypatch.setattr(iceberg_write, "ROW_GROUP_ROWS", 100)
    monkeypatch.setattr(iceberg_write, "BUFFER_BYTES", 2_000)
    lake = get_settings().lake()
    _, table, rejects = _tables()
    url = _write_raw(lake, "d.csv", date(2024, 1, 1), 60, 40)
    staged = get_stage()(DaysSpec(), lake, [url], _ctx(), table=table, rejects_table=rejects)
    assert staged.rows_valid == 2400 and len(staged.data.files) == 2
    tables.commit_files(
        table,
        Window("day", date(2024, 1, 1), date(2024, 3, 1)).iceberg_filter(),
        staged.data,
        {"run-id": "r1"},
    )
    got = table.scan().to_arrow()
    assert got.num_rows == 2400 and pc.count_distinct(got.column("day")).as_py() == 60


def test_unknown_engine_is_a_parameter_error() -> None:
    with pytest.raises(ParameterError, match="unknown engine 'ray' \\(engines: arrow, spark\\)"):
        get_stage("ray")


def test_commit_then_crash_before_rejects_is_completed_by_repair() -> None:
    """The table committed, the process gone before its rejects commit: ``repair`` commits
    the saved rejects (once), and a second repair finds nothing to do."""
    from civiclake.pipeline import commit as pipeline_commit

    lake = get_settings().lake()
    catalog, table, rejects = _tables()
    url = _write_raw(lake, "e.csv", date(2024, 2, 1), 2, 10, bad=2)
    staged = get_stage()(DaysSpec(), lake, [url], _ctx("r9"), table=table, rejects_table=rejects)
    window = Window("day", date(2024, 2, 1), date(2024, 3, 1))
    load = pipeline_commit.Load(staged, window, WholeTable(), {"run-id": "r9"})
    load.save(lake, pipeline_commit.load_url(lake, DaysSpec.table, "r9"))
    tables.commit_files(
        table,
        window.iceberg_filter(),
        staged.data,
        {"run-id": "r9", pipeline_commit.LOAD_MARKER: "1"},
    )  # ... and the process dies here
    assert rejects.scan().to_arrow().num_rows == 0
    assert pipeline_commit.repair(catalog, lake, DaysSpec.table, DaysSpec.rejects_table)
    assert catalog.load_table(DaysSpec.rejects_table).scan().to_arrow().num_rows == 2
    assert not pipeline_commit.repair(catalog, lake, DaysSpec.table, DaysSpec.rejects_table)
    # a whole commit leaves nothing to repair
    staged2 = get_stage()(DaysSpec(), lake, [url], _ctx("r10"), table=table, rejects_table=rejects)
    pipeline_commit.commit(
        lake, table, rejects, pipeline_commit.Load(staged2, window, WholeTable(), {"run-id": "r10"})
    )
    assert not pipeline_commit.repair(catalog, lake, DaysSpec.table, DaysSpec.rejects_table)
    assert catalog.load_table(DaysSpec.rejects_table).scan().to_arrow().num_rows == 2
    assert table.scan().to_arrow().num_rows == 20
