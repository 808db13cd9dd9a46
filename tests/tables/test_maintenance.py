"""``civiclake maintain`` on real tables of a local lake after simulated daily incremental
B&T loads (the Socrata replay server, the current month revised every day): rows unchanged,
snapshots retained as asked, files removed, time travel, orphans of a crashed load, a load
running during maintain."""

from __future__ import annotations

import os
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from table_support import (
    FIRST_DAY,
    ROWS_PER_DAY,
    cli,
    cli_json,
    full_rows,
    load_table,
    warehouse_files,
)

from civiclake.config import get_settings
from civiclake.sources import bnt
from civiclake.tables import maintenance
from civiclake.tables.history import snapshot_history
from civiclake.testing.socrata import SocrataServer
from testsupport import bnt_daily

pytestmark = pytest.mark.slow
DAYS = 40
TABLES = (bnt.TABLE, bnt.REJECTS_TABLE)


def run_days(server: SocrataServer, days: range) -> list[bnt_daily.DayLoad]:
    settings = get_settings()
    return [bnt_daily.load_day(settings, server, FIRST_DAY, d) for d in days]


def test_forty_daily_runs_then_maintain(socrata: SocrataServer) -> None:
    began = time.monotonic()
    digests: dict[int, str] = {}
    loads = []
    for day in range(DAYS):
        (done,) = run_days(socrata, range(day, day + 1))
        assert done.snapshot_id is not None
        if day >= DAYS - 3:  # the days time travel reads back below
            digests[done.snapshot_id] = bnt_daily.digest(load_table().scan().to_arrow())
        loads.append(done)
    loaded_s = time.monotonic() - began
    assert loads[-1].rows == DAYS * ROWS_PER_DAY
    before = {name: full_rows(name) for name in TABLES}
    assert before[bnt.REJECTS_TABLE].num_rows == DAYS  # one invalid row a day, each kept once
    files_before = warehouse_files()
    snapshots_before = {name: len(load_table(name).metadata.snapshots) for name in TABLES}
    # a load commits a delete (or an overwrite of partly deleted files, or both) and an append
    assert 2 * DAYS <= snapshots_before[bnt.TABLE] <= 3 * DAYS
    newest_ten = [e.snapshot_id for e in snapshot_history(load_table(), limit=10)]

    dry = cli_json("maintain", "--retain-days", "0", "--retain-last", "10", "--dry-run")
    assert warehouse_files() == files_before  # a dry run changes nothing
    assert {r["table"] for r in dry} == set(TABLES)
    assert all(r["files"] and all(f["size"] > 0 for f in r["files"]) for r in dry)

    started = time.monotonic()
    reports = cli_json("maintain", "--retain-days", "0", "--retain-last", "10")
    maintain_s = time.monotonic() - started
    by_table = {r["table"]: r for r in reports}
    for name in TABLES:
        assert by_table[name]["snapshots_expired"] == snapshots_before[name] - 10
        assert by_table[name]["snapshots_kept"] == 10
        assert len(load_table(name).metadata.snapshots) == 10
        assert full_rows(name).equals(before[name]), f"{name} changed"
    # the dry run predicted what was removed (the real expiry commit also rotates one metadata
    # file out of the table's 20-version log)
    predicted = next(r["files_removed"] for r in dry if r["table"] == bnt.TABLE)
    assert predicted <= by_table[bnt.TABLE]["files_removed"] <= predicted + 1
    assert [e.snapshot_id for e in snapshot_history(load_table())] == newest_ten
    assert newest_ten[0] == loads[-1].snapshot_id

    files_after = warehouse_files()
    print(
        f"\n{DAYS} daily runs ({loaded_s:.1f} s): warehouse {len(files_before):,} files "
        f"{sum(files_before.values()):,} bytes -> after maintain {len(files_after):,} files "
        f"{sum(files_after.values()):,} bytes ({maintain_s:.2f} s)"
    )
    assert len(files_after) < len(files_before) / 2
    assert sum(files_after.values()) < sum(files_before.values())

    # time travel: a retained snapshot gives that day's rows, by id and by its time
    day38 = loads[-3]  # three loads commit at most nine snapshots: retained
    assert day38.snapshot_id is not None
    query = "SELECT * FROM mta.bnt_traffic_hourly"
    from civiclake.query import run_sql

    past = run_sql(query, get_settings(), as_of=day38.snapshot_id)
    assert bnt_daily.digest(past) == digests[day38.snapshot_id]
    assert bnt_daily.digest(past) != digests[loads[-1].snapshot_id]  # revised since
    entry = next(e for e in snapshot_history(load_table()) if e.snapshot_id == day38.snapshot_id)
    by_time = run_sql(query, get_settings(), as_of=entry.committed_at)
    assert bnt_daily.digest(by_time) == digests[day38.snapshot_id]
    counted = cli_json(
        "sql",
        "SELECT count(*) AS n FROM mta.bnt_traffic_hourly",
        "--as-of",
        str(day38.snapshot_id),
    )
    assert counted == [{"n": (DAYS - 2) * ROWS_PER_DAY}]
    # an expired one: a clear one-line error
    expired = cli("sql", query, "--as-of", str(loads[10].snapshot_id))
    assert expired.exit_code == 2
    assert expired.output.strip() == (
        f"error: {bnt.TABLE} has no snapshot {loads[10].snapshot_id} (expired by "
        f"`civiclake maintain`, or never existed): see `civiclake history {bnt.TABLE}`"
    )
    too_old = cli("sql", query, "--as-of", "2001-01-01T00:00:00Z")
    assert too_old.exit_code == 2 and "was expired by `civiclake maintain`" in too_old.output

    # compaction: each month's files become one, rows byte-for-byte the same
    month_files = len(list(load_table().scan().plan_files()))
    compacted = cli_json("maintain", "--compact", "--retain-days", "0", "--retain-last", "1")
    main = next(r for r in compacted if r["table"] == bnt.TABLE)
    assert main["files_compacted"] == month_files > 2
    assert main["partitions_compacted"] == ["date_month=2024-01", "date_month=2024-02"]
    assert len(list(load_table().scan().plan_files())) == 2
    for name in TABLES:
        assert full_rows(name).equals(before[name]), f"{name} changed by compaction"
        # every load snapshot but the current one expired; compaction's own are younger
        left = snapshot_history(load_table(name))
        assert all(e.current or e.source == "civiclake maintain --compact" for e in left)
    # the next daily load works on the maintained table
    (nxt,) = run_days(socrata, range(DAYS, DAYS + 1))
    assert nxt.rows == (DAYS + 1) * ROWS_PER_DAY


class Killed(BaseException):
    """Stands for the process dying: nothing after it runs, no cleanup code either."""


def _age(paths: list[str], days: float) -> None:
    old = time.time() - days * 86400
    for path in paths:
        os.utime(path, (old, old))


def test_orphans_of_a_killed_load_are_kept_while_young(
    socrata: SocrataServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyiceberg.catalog.sql import SqlCatalog

    run_days(socrata, range(3))
    rows = {name: full_rows(name) for name in TABLES}
    known = set(warehouse_files())

    def die(*args: object, **kwargs: object) -> None:
        raise Killed

    with monkeypatch.context() as patch:  # the load dies at its catalog commit
        patch.setattr(SqlCatalog, "commit_table", die)
        with pytest.raises(Killed):
            run_days(socrata, range(3, 4))
    orphans = sorted(set(warehouse_files()) - known)
    assert any(p.endswith(".parquet") for p in orphans) and any("/metadata/" in p for p in orphans)
    for name in TABLES:
        assert full_rows(name).equals(rows[name])  # the table is at its previous snapshot

    # (the stage wrote the data files of both tables before the first commit died)
    for window in ("3d", "1h"):
        (main, rejects) = cli_json("maintain", "--orphans-older-than", window)
        assert main["orphans_removed"] == rejects["orphans_removed"] == 0
        assert main["orphans_kept_young"] + rejects["orphans_kept_young"] == len(orphans)
        assert all(Path(p).exists() for p in orphans)

    _age(orphans, days=3.5)  # the crash was three and a half days ago
    (main, rejects) = cli_json("maintain")
    assert main["orphans_removed"] + rejects["orphans_removed"] == len(orphans)
    assert not any(Path(p).exists() for p in orphans)
    for name in TABLES:
        assert full_rows(name).equals(rows[name])
    (again,) = run_days(socrata, range(3, 4))  # the next run completes
    assert again.rows == 4 * ROWS_PER_DAY


def test_a_load_running_during_maintain_loses_nothing(
    socrata: SocrataServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The load has written its data files and waits before its commit step while maintain
    compacts (moving the table on) and expires: its files are young orphans, kept; its
    commit (under the table's lock, which maintain held meanwhile) lands whole on the
    compacted table."""
    from civiclake.flows import _pipeline

    run_days(socrata, range(10))  # ranges now leave two files in January: compactable
    original = _pipeline.commit
    written, resume = threading.Event(), threading.Event()

    def paused_commit(*args: Any, **kwargs: Any) -> Any:
        if not written.is_set():  # the first commit only: the stage's files are written now
            written.set()
            assert resume.wait(60)
        return original(*args, **kwargs)

    monkeypatch.setattr(_pipeline, "commit", paused_commit)
    outcome: list[object] = []

    def load() -> None:
        try:
            outcome.extend(run_days(socrata, range(10, 11)))
        except BaseException as exc:  # reported by the assert below
            outcome.append(exc)

    settled = set(warehouse_files())
    thread = threading.Thread(target=load)
    thread.start()
    assert written.wait(60)
    pending = sorted(set(warehouse_files()) - settled)  # the running load's files so far
    assert any(p.endswith(".parquet") for p in pending)
    reports = cli_json("maintain", "--compact", "--retain-days", "0", "--retain-last", "2")
    main = next(r for r in reports if r["table"] == bnt.TABLE)
    assert main["files_compacted"] >= 2  # (pending: the staged files of both tables)
    assert sum(r["orphans_kept_young"] for r in reports) >= len(pending)
    assert all(Path(p).exists() for p in pending)  # young orphans: never removed
    resume.set()
    thread.join(60)
    assert outcome and isinstance(outcome[0], bnt_daily.DayLoad), outcome

    # the table is exactly what the portal of day 10 says for the range, rows from before kept
    got = bnt_daily.content(load_table().scan().to_arrow())
    assert got.num_rows == 11 * ROWS_PER_DAY
    key_columns = [got.column(c).to_pylist() for c in ("plaza_id", "date", "hour", "direction")]
    assert len(set(zip(*key_columns, strict=True))) == got.num_rows
    revised = FIRST_DAY + timedelta(days=10 - bnt_daily.LOOKBACK_DAYS - 1)
    expected = {
        (int(r["plaza_id"]), r["date"][:10], int(r["hour"]), int(r["vehicles_e_zpass"]))
        for r in bnt_daily.portal_rows(FIRST_DAY, 10)
        if r["hour"] != "24" and r["date"][:10] >= revised.isoformat()
    }
    loaded = {
        (r["plaza_id"], r["date"].isoformat(), r["hour"], r["vehicles_e_zpass"])
        for r in got.to_pylist()
        if r["date"] >= revised
    }
    assert loaded == expected
    assert load_table().current_snapshot().summary["civiclake.run-id"].startswith("day-10")


def test_durations_and_bad_input_fail_in_one_line() -> None:
    assert maintenance.parse_duration("3d") == timedelta(days=3)
    assert maintenance.parse_duration("12h") == timedelta(hours=12)
    assert maintenance.parse_duration("0") == timedelta(0)
    for bad in ("3", "3w", "-1d", "soon"):
        with pytest.raises(maintenance.ParameterError):
            maintenance.parse_duration(bad)
    result = cli("maintain", "--orphans-older-than", "3w")
    assert result.exit_code == 2
    assert result.output.strip() == (
        "error: --orphans-older-than: '3w' is not a duration (e.g. 3d, 12h, or 0)"
    )
    missing = cli("maintain", "mta.nope")
    assert missing.exit_code == 2 and "no table mta.nope" in missing.output
    assert cli("maintain", "--retain-last", "0").exit_code == 2


HOLD_LOCK = """
import sys, time
from civiclake.config import get_settings
from civiclake.flows._locks import table_lock
with table_lock(sys.argv[1], get_settings()):
    print("held", flush=True)
    time.sleep(600)
"""


def test_maintain_waits_for_the_lock_a_load_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    """A load holds its table's lock (a real process, as during its commits): ``maintain`` of
    the table, and of its rejects table (committed under the same lock), waits for it and,
    after ``CIVICLAKE_LOCK_TIMEOUT``, gives up in one line having changed nothing."""
    import subprocess
    import sys

    import pyarrow as pa
    from pyiceberg.expressions import AlwaysTrue

    from civiclake import tables

    catalog = tables.load_catalog(get_settings())
    names = ("ns.trips", "ns.trips_rejects")
    for name in names:
        table = tables.ensure_table_for(catalog, name, pa.schema([("n", pa.int64())]))
        for n in range(3):  # snapshots that --retain-last 1 would expire
            data = pa.table({"n": pa.array([n], pa.int64())})
            tables.replace_range(table, AlwaysTrue(), lambda data=data: [data], {"run-id": "r"})
    before = {name: len(load_table(name).metadata.snapshots) for name in names}
    assert min(before.values()) >= 3
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, "ns.trips"],
        env=os.environ,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        monkeypatch.setenv("CIVICLAKE_LOCK_TIMEOUT", "1")
        for name in names:
            result = cli("maintain", name, "--retain-days", "0", "--retain-last", "1")
            assert result.exit_code == 1, result.output
            line = result.output.strip().splitlines()[-1]
            assert line.startswith(
                f"error: ns.trips (catalog civiclake) is locked by pid {holder.pid}"
            )
            assert "CIVICLAKE_LOCK_TIMEOUT" in line
            assert len(load_table(name).metadata.snapshots) == before[name]  # nothing expired
    finally:
        holder.kill()
        holder.wait()
    for name in names:  # the load is over: maintain goes ahead
        result = cli("maintain", name, "--retain-days", "0", "--retain-last", "1")
        assert result.exit_code == 0, result.output
        assert len(load_table(name).metadata.snapshots) == 1
