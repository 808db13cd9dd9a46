"""Simulated daily incremental B&T loads against the local Socrata replay server.

Each simulated day the portal holds the rows up to that day, and the whole current month is
revised (its counts change every day, as the real dataset's recent days do), plus one invalid
row for every day (they land in the rejects table). A day's load is what the deployment
``bnt-hourly-traffic/daily`` runs, through the same non-Prefect functions its tasks call
(high-water mark minus the lookback through the end of the day, fetch, stage, commit), so
tests and benchmarks run 40 days in seconds instead of 40 flow runs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa

from civiclake.config import Settings
from civiclake.sources import bnt
from civiclake.testing.socrata import SocrataServer, bnt_rows

DATASET = bnt.DATASET_ID
LOOKBACK_DAYS = 7
CONTENT_COLUMNS = ("plaza_id", "date", "hour", "direction", "vehicles_e_zpass", "vehicles_vtoll")


def portal_rows(first: date, day: int, *, bad: bool = False) -> list[dict[str, str]]:
    """What the portal holds on simulated ``day`` (0-based from ``first``): rows through that
    day, the current month's counts revised by the day number; ``bad`` makes that day's own
    rows wrong (counts doubled), as a faulty revision would."""
    today = first + timedelta(days=day)
    month = today.strftime("%Y-%m")
    rows = bnt_rows(first, day + 1)
    for row in rows:
        if row["date"].startswith(month):
            row["vehicles_e_zpass"] = str(int(row["vehicles_e_zpass"]) + day)
        if bad and row["date"].startswith(today.isoformat()):
            row["vehicles_vtoll"] = str(int(row["vehicles_vtoll"]) * 2)
    per_day = len(rows) // (day + 1)
    invalid = [{**rows[i * per_day], "hour": "24"} for i in range(day + 1)]  # one a day
    return [*rows, *invalid]


@dataclass(frozen=True)
class DayLoad:
    day: int
    today: date
    snapshot_id: int | None
    rejects_snapshot_id: int | None
    rows: int


def load_day(
    settings: Settings,
    server: SocrataServer,
    first: date,
    day: int,
    *,
    bad: bool = False,
    run_id: str | None = None,
) -> DayLoad:
    """Publish the portal of ``day`` and run that day's incremental load."""
    from civiclake.flows.bnt import commit_load, fetch_and_stage
    from civiclake.slices import Window
    from civiclake.sources.bnt_fetch import high_water_mark, plan_range
    from civiclake.sources.socrata import SocrataClient

    server.add_dataset(DATASET, portal_rows(first, day, bad=bad))
    today = first + timedelta(days=day)
    hwm = high_water_mark(settings)
    planned = plan_range(
        first if hwm is None else None,
        None,
        lookback_days=LOOKBACK_DAYS,
        today=today,
        hwm=hwm,
    )
    run_id = run_id or f"day-{day:02d}-{datetime.now(UTC):%H%M%S%f}"
    source = f"socrata:{settings.socrata_url.split('://', 1)[-1]}/{DATASET}"
    with SocrataClient.from_settings(settings) as client:
        fetched, staged = fetch_and_stage(
            settings.model_copy(update={"bnt_dataset_id": DATASET}),
            client,
            planned,
            run_id=run_id,
            source=source,
            page_size=settings.page_size,
        )
    loaded = commit_load(
        settings,
        staged,
        run_id=run_id,
        source=source,
        load_range=planned,
        rows_fetched=fetched.rows,
        load_key=str(planned),
        replaced=Window(bnt.DATE_FIELD, planned.start, planned.stop),
    )
    return DayLoad(
        day, today, loaded["snapshot_id"], loaded["rejects_snapshot_id"], loaded["table_rows"]
    )


def content(arrow: pa.Table) -> pa.Table:
    """A table's rows without load metadata, in a fixed order: what must not change."""
    keys = [(c, "ascending") for c in ("date", "hour", "plaza_id", "direction")]
    # PyIceberg reads strings as string or large_string depending on the files it merges
    schema = pa.schema([bnt.ARROW_SCHEMA.field(c) for c in CONTENT_COLUMNS])
    return arrow.select(list(CONTENT_COLUMNS)).cast(schema).sort_by(keys).combine_chunks()


def digest(arrow: pa.Table) -> str:
    """SHA-256 of ``content(arrow)`` serialized: equal digests, byte-for-byte equal rows."""
    sink = pa.BufferOutputStream()
    ordered = content(arrow)
    with pa.ipc.new_stream(sink, ordered.schema) as writer:
        writer.write_table(ordered)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()
