"""Names and data shared by the report tests (conftest.py builds the lake from them)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
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
SOCRATA_ROWS = 3_000
BOROUGHS = ("QUEENS", "BRONX", "BROOKLYN")


@dataclass(frozen=True)
class Lake:
    home: Path


def socrata_like(rows: int) -> pa.Table:
    """A Socrata dataset's shape: a timestamp, a few categories, numbers, some NULLs."""
    start = datetime(2024, 1, 1)
    return pa.table(
        {
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
