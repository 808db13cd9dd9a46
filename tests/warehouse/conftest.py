"""Shared warehouse fixtures: one real PostgreSQL for the session, and trip-like Parquet data.

The data has every Arrow type the warehouses map, NULLs in every nullable column, empty
strings next to NULLs, awkward text (quotes, commas, newlines, backslashes, non-ASCII) and
mixed-case column names, so a round trip proves the types, the quoting and NULL handling.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from civiclake.lake import Lake

RANGE_COLUMN = "tpep_pickup_datetime"
TRIPS_SCHEMA = pa.schema(
    [
        ("VendorID", pa.int8()),
        ("RatecodeID", pa.int16()),
        ("PULocationID", pa.int32()),
        ("trip_id", pa.int64()),
        ("trip_distance", pa.float64()),
        ("fare_amount", pa.decimal128(10, 2)),
        ("big_amount", pa.decimal128(38, 9)),
        ("store_and_fwd_flag", pa.string()),
        ("Note", pa.large_string()),
        ("is_shared", pa.bool_()),
        ("pickup_date", pa.date32()),
        (RANGE_COLUMN, pa.timestamp("us")),
        ("loaded_at", pa.timestamp("us", tz="UTC")),
    ]
)
TEXTS = ["Y", "N", "", "a\"b'c", "x,y\nz", "back\\slash", "café ✓", " spaced ", "\\N", "NULL"]
FLOATS = [0.1, 1e-300, -2.5, float("inf"), float("-inf"), 123456.789012345, -0.0]


def make_trips(month: date, rows: int, *, first_id: int = 0, tag: str = "") -> pa.Table:
    """``rows`` deterministic trips picked up in ``month`` (ids from ``first_id``)."""
    start = datetime(month.year, month.month, 1)
    records: dict[str, list[Any]] = {name: [] for name in TRIPS_SCHEMA.names}
    for i in range(rows):
        trip = first_id + i
        null = i % 7 == 3  # a NULL in every nullable column of these rows
        pickup = start + timedelta(minutes=13 * i, microseconds=trip % 1_000_000)
        values: dict[str, Any] = {
            "VendorID": [-128, 1, 2, 127][i % 4],
            "RatecodeID": [-32768, 1, 99, 32767][i % 4],
            "PULocationID": [-(2**31), 1, 265, 2**31 - 1][i % 4],
            "trip_id": trip,
            "trip_distance": FLOATS[i % len(FLOATS)],
            "fare_amount": Decimal(trip % 100_000) / 100 * (-1 if i % 5 == 1 else 1),
            "big_amount": Decimal(f"{'-' if i % 3 == 1 else ''}{trip}{'9' * 20}.123456789"),
            "store_and_fwd_flag": TEXTS[i % len(TEXTS)],
            "Note": f"{tag}note {trip}",
            "is_shared": i % 2 == 0,
            "pickup_date": pickup.date(),
            RANGE_COLUMN: pickup,
            "loaded_at": datetime(1999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
            + timedelta(days=i, microseconds=i),
        }
        for name in records:
            keep = name in ("trip_id", RANGE_COLUMN) or not null
            records[name].append(values[name] if keep else None)
    return pa.Table.from_pydict(records, schema=TRIPS_SCHEMA)


def rows_of(table: pa.Table) -> list[tuple[Any, ...]]:
    """Rows as tuples in schema order, sorted by trip_id (the order the tests read back in)."""
    rows = [tuple(row[name] for name in TRIPS_SCHEMA.names) for row in table.to_pylist()]
    return sorted(rows, key=lambda row: row[3])


def month_range(first: date) -> dict[str, Any]:
    """replace_range keywords for the calendar month starting at ``first``."""
    stop = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return {
        "column": RANGE_COLUMN,
        "start": datetime(first.year, first.month, 1),
        "stop": datetime(stop.year, stop.month, 1),
    }


@dataclass(frozen=True)
class TripData:
    """What the warehouse tests share (importing from a conftest is ambiguous in pytest)."""

    lake: Lake
    schema: pa.Schema = TRIPS_SCHEMA
    range_column: str = RANGE_COLUMN
    columns_sql: str = ", ".join(f'"{name}"' for name in TRIPS_SCHEMA.names)

    make = staticmethod(make_trips)
    rows = staticmethod(rows_of)
    month = staticmethod(month_range)

    def write(self, table: pa.Table, name: str, lake: Lake | None = None) -> str:
        """Write a table into the lake as zstd Parquet (small row groups: several per file)."""
        where = lake or self.lake
        url = where.join("stage", name)
        with where.open_atomic(url) as out:
            pq.write_table(table, out, compression="zstd", row_group_size=500)
        return url


@pytest.fixture
def data(civiclake_home: Path) -> TripData:
    """Trip data helpers over a local lake under this test's CIVICLAKE_HOME."""
    return TripData(Lake((civiclake_home / "lake").as_uri()))


@pytest.fixture
def namespace() -> str:
    """A schema name of its own for each test: tests share one PostgreSQL server."""
    return f"tlc_{uuid.uuid4().hex[:10]}"
