"""Range replacement on real Iceberg tables (SQLite catalog, local warehouse)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
import pytest

from civiclake import tables
from civiclake.config import get_settings
from civiclake.sources import bnt


def rows_for(start: date, days: int, *, run: str, count: int = 1) -> pa.Table:
    records = []
    for d in range(days):
        for hour in range(24):
            for plaza in (21, 30):
                records.append(
                    {
                        "plaza_id": plaza,
                        "facility": bnt.PLAZA_FACILITIES[plaza],
                        "date": start + timedelta(days=d),
                        "hour": hour,
                        "direction": "I",
                        "vehicles_e_zpass": count,
                        "vehicles_vtoll": count,
                        "load_run_id": run,
                        "load_source": "test",
                        "loaded_at": datetime.now(UTC),
                    }
                )
    return pa.Table.from_pylist(records, schema=bnt.ARROW_SCHEMA)


def replace(table, start: date, stop: date, data: pa.Table, run: str) -> tables.CommitResult:
    return tables.replace_range(
        table,
        bnt.LoadRange(start, stop).table_filter(),
        lambda: iter([data.slice(0, data.num_rows // 2), data.slice(data.num_rows // 2)]),
        {"run-id": run},
    )


@pytest.fixture
def table():
    catalog = tables.load_catalog(get_settings())
    return tables.ensure_table(catalog, bnt.TABLE, bnt.SCHEMA, bnt.PARTITION_SPEC)


def test_replace_is_idempotent_and_one_append(table) -> None:
    data = rows_for(date(2024, 1, 30), 4, run="a")
    first = replace(table, date(2024, 1, 30), date(2024, 2, 3), data, "a")
    assert first.rows_written == first.total_rows == 4 * 48
    again = replace(table, date(2024, 1, 30), date(2024, 2, 3), data, "b")
    assert again.total_rows == 4 * 48
    assert table.scan().to_arrow().num_rows == 4 * 48
    # every chunk went into a single append snapshot carrying our properties
    snapshot = table.current_snapshot()
    assert snapshot.summary.operation.value == "append"
    assert snapshot.summary["added-records"] == str(4 * 48)
    assert snapshot.summary["civiclake.run-id"] == "b"


def test_overlapping_ranges_give_the_union(table) -> None:
    replace(table, date(2024, 3, 1), date(2024, 3, 5), rows_for(date(2024, 3, 1), 4, run="a"), "a")
    replace(
        table,
        date(2024, 3, 3),
        date(2024, 3, 8),
        rows_for(date(2024, 3, 3), 5, run="b", count=7),
        "b",
    )
    result = table.scan().to_arrow()
    assert result.num_rows == 7 * 48
    by_day = {}
    for r in result.to_pylist():
        by_day.setdefault(r["date"], set()).add(r["vehicles_e_zpass"])
    assert by_day[date(2024, 3, 2)] == {1} and by_day[date(2024, 3, 3)] == {7}
    keys = {(r["plaza_id"], r["date"], r["hour"]) for r in result.to_pylist()}
    assert len(keys) == result.num_rows  # each row once


def test_crash_during_load_leaves_previous_snapshot(table) -> None:
    replace(table, date(2024, 4, 1), date(2024, 4, 3), rows_for(date(2024, 4, 1), 2, run="a"), "a")
    before = table.current_snapshot().snapshot_id

    def exploding() -> Iterator[pa.Table]:
        yield rows_for(date(2024, 4, 1), 1, run="b")
        raise RuntimeError("killed mid-load")

    with pytest.raises(RuntimeError, match="killed"):
        tables.replace_range(
            table,
            bnt.LoadRange(date(2024, 4, 1), date(2024, 4, 3)).table_filter(),
            exploding,
            {"run-id": "b"},
        )
    table.refresh()
    assert table.current_snapshot().snapshot_id == before
    assert table.scan().to_arrow().num_rows == 2 * 48
    # and the next run completes
    done = replace(
        table, date(2024, 4, 1), date(2024, 4, 3), rows_for(date(2024, 4, 1), 2, run="c"), "c"
    )
    assert done.total_rows == 2 * 48


def test_summarize_lists_tables(table) -> None:
    replace(table, date(2024, 5, 1), date(2024, 5, 2), rows_for(date(2024, 5, 1), 1, run="z"), "z")
    (summary,) = tables.summarize(tables.load_catalog(get_settings()))
    assert summary.identifier == bnt.TABLE
    assert summary.rows == 48 and summary.last_run_id == "z"
    assert summary.snapshots >= 1


def test_concurrent_writers_lose_no_rows(table) -> None:
    """Two loads of different ranges committing at the same time: a commit conflict is
    retried against the refreshed table, so both ranges end up loaded."""
    import threading

    catalog_tables = [tables.load_catalog(get_settings()).load_table(bnt.TABLE) for _ in range(2)]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def load(index: int) -> None:
        start = date(2024, 6, 1) + timedelta(days=10 * index)
        data = rows_for(start, 3, run=f"w{index}")

        def chunks() -> Iterator[pa.Table]:
            barrier.wait(timeout=30)  # both transactions are open before either commits
            yield data

        try:
            tables.replace_range(
                catalog_tables[index],
                bnt.LoadRange(start, start + timedelta(days=3)).table_filter(),
                chunks,
                {"run-id": f"w{index}"},
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=load, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    table.refresh()
    assert table.scan().to_arrow().num_rows == 2 * 3 * 48
