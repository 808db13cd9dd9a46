"""Names and data shared by the report tests (conftest.py builds the lake from them)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow as pa

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_CSV = ROOT / "examples" / "bnt_sample.csv"
GREEN = ROOT.parent / "shared" / "data" / "tlc" / "green_tripdata_2020-10.csv.gz"
SCREENSHOTS = ROOT / "test-artifacts"
SOCRATA_TABLE = "socrata.service_requests"
EMPTY_TABLE = "edge.empty"
ONE_ROW_TABLE = "edge.one_row"
NO_TIME_TABLE = "edge.no_timestamp"
PERMITS_TABLE = "socrata.permits"  # partitioned by month(issued_date)
REVISED_TABLE = "edge.revised"  # 20,000 rows in one file, then 800 replaced, then a rollback
REVISED_ROWS = 20_000
REVISED_CHANGED = 800
REVISED_UNDONE = 300
SOCRATA_ROWS = 3_000
PERMITS_ROWS = 400
PUBLISHED = datetime(2025, 6, 2, 9, 30)  # one bulk upload: every row's socrata_created_at
BOROUGHS = ("QUEENS", "BRONX", "BROOKLYN")


@dataclass(frozen=True)
class Lake:
    home: Path


def _system_columns(rows: int) -> dict[str, pa.Array]:
    """The portal's own columns, first as a real load writes them: one upload, one instant."""
    utc = pa.timestamp("us", tz="UTC")
    return {
        "socrata_id": pa.array([f"row-{i:05d}" for i in range(rows)]),
        "socrata_created_at": pa.array([PUBLISHED] * rows, utc),
        "socrata_updated_at": pa.array(
            [PUBLISHED + timedelta(days=i % 3) for i in range(rows)], utc
        ),
    }


def socrata_like(rows: int) -> pa.Table:
    """A Socrata dataset's shape: the portal's system columns first, then a timestamp, a few
    categories, numbers, some NULLs."""
    start = datetime(2024, 1, 1)
    return pa.table(
        {
            **_system_columns(rows),
            "unique_key": pa.array([str(100_000 + i) for i in range(rows)]),
            "created_date": pa.array(
                [start + timedelta(hours=7 * i) for i in range(rows)], pa.timestamp("us")
            ),
            "agency": pa.array([("NYPD", "DOT", "DSNY", "HPD")[i % 4] for i in range(rows)]),
            "borough": pa.array([None if i % 10 == 0 else BOROUGHS[i % 3] for i in range(rows)]),
            "descriptor": pa.array([f"free text {i}" for i in range(rows)]),
            "response_hours": pa.array(
                [None if i % 7 == 0 else float(i % 50) / 2 for i in range(rows)], pa.float64()
            ),
            "units": pa.array([i % 5 for i in range(rows)], pa.int64()),
        }
    )


def permits(rows: int) -> pa.Table:
    """A dataset with two dates: filed first, issued 10 days later (its partition column)."""
    start = datetime(2023, 1, 1)
    filed = [start + timedelta(days=2 * i) for i in range(rows)]
    return pa.table(
        {
            **_system_columns(rows),
            "filed_date": pa.array(filed, pa.timestamp("us")),
            "issued_date": pa.array([f + timedelta(days=10) for f in filed], pa.timestamp("us")),
            "fee": pa.array([1_250_000.5 + i for i in range(rows)], pa.float64()),
            # exact decimals beyond a double's 15-17 digits (Socrata numbers are decimal(38,9))
            "valuation": pa.array(
                [Decimal("1100000000.123456789") + i for i in range(rows)], pa.decimal128(38, 9)
            ),
        }
    )


def revised(ids: range, version: int) -> pa.Table:
    """Rows ``ids`` of the revised table as load ``version`` writes them."""
    at = datetime(2024, 2, 1)
    return pa.table(
        {
            "id": pa.array(list(ids), pa.int64()),
            "at": pa.array([at + timedelta(minutes=i) for i in ids], pa.timestamp("us")),
            "value": pa.array([version * 1_000 + i % 97 for i in ids], pa.int64()),
        }
    )
