"""A synthetic Socrata dataset with every column type (tests and benchmarks of the generic
pipeline): rows as the API serves them with ``$select=:*, *``, numbers as strings."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

DATASET = "abcd-1234"
COLUMNS: list[tuple[str, str]] = [
    ("zip", "text"),
    ("count", "number"),
    ("fare", "money"),
    ("share", "percent"),
    ("flag", "checkbox"),
    ("created_date", "calendar_date"),
    ("closed_at", "floating_timestamp"),
    ("reported_at", "fixed_timestamp"),
    ("location", "point"),
    ("old_location", "location"),
    ("area", "polygon"),
    ("website", "url"),
    ("blob", "blob"),
    (":@computed_region_efsh_h5xi", "number"),
]
FIRST_UPDATE = datetime(2024, 3, 1, 12, 0, 0)


def updated_at(minutes: int) -> str:
    return (FIRST_UPDATE + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def sample_row(i: int, *, minutes: int | None = None) -> dict[str, Any]:
    """Row ``i`` as the API serves it with ``$select=:*, *`` (numbers as strings)."""
    row: dict[str, Any] = {
        ":id": f"row-{i:05d}",
        ":created_at": updated_at(0),
        ":updated_at": updated_at(i if minutes is None else minutes),
        "zip": f"{i:05d}",
        "count": str(3_000_000_000 + i),  # beyond 2^31
        "fare": f"{i}.50",
        "share": f"{i % 100}.25",
        "flag": i % 2 == 0,
        "created_date": f"2024-03-{1 + i % 28:02d}T00:00:00.000",
        "closed_at": f"2024-03-{1 + i % 28:02d}T10:30:15.250",
        "reported_at": f"2024-03-{1 + i % 28:02d}T10:00:00.000Z",
        "location": {"type": "Point", "coordinates": [-73.5 - i * 0.25, 40.5 + i * 0.125]},
        "old_location": {"latitude": "40.5", "longitude": "-74.1", "human_address": "{}"},
        "area": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]},
        "website": {"url": f"https://example.org/{i}", "description": "x"},
        "blob": f"blob-{i}",
        ":@computed_region_efsh_h5xi": str(i % 5),
    }
    if i % 3 == 0:  # Socrata omits null fields: these rows have no share and no website
        row["share"] = None
        row["website"] = None
    return row


def sample_rows(n: int) -> list[dict[str, Any]]:
    return [sample_row(i) for i in range(n)]
