"""``civiclake history`` and ``civiclake rollback`` on real tables of a local lake, after
simulated daily B&T loads and a bad one."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
from table_support import FIRST_DAY, ROWS_PER_DAY, cli, cli_json, full_rows, load_table

from civiclake import tables
from civiclake.config import get_settings
from civiclake.sources import bnt
from civiclake.tables.history import JSON_KEYS
from civiclake.testing.socrata import SocrataServer
from testsupport import bnt_daily

HISTORY_KEYS = [
    "snapshot_id",
    "parent_id",
    "committed_at",
    "operation",
    "run_id",
    "source",
    "range",
    "rows_added",
    "rows_deleted",
    "total_rows",
    "current",
    "state",
]


def history_json(*args: str) -> list[dict]:
    """``history --format json`` with its ids as ints again: beyond 2^53 JSON carries them as
    exact strings (a reader like jq would round a number)."""
    entries = cli_json("history", *args)
    for e in entries:
        for key in ("snapshot_id", "parent_id"):
            value = e[key]
            assert value is None or isinstance(value, int) or int(value) > 2**53, e
            e[key] = None if value is None else int(value)
    return entries


def load(server: SocrataServer, day: int, *, bad: bool = False) -> bnt_daily.DayLoad:
    return bnt_daily.load_day(get_settings(), server, FIRST_DAY, day, bad=bad)


def test_history_lists_every_snapshot_newest_first(socrata: SocrataServer) -> None:
    loads = [load(socrata, d) for d in range(3)]
    entries = history_json(bnt.TABLE)
    assert list(JSON_KEYS) == HISTORY_KEYS and all(list(e) == HISTORY_KEYS for e in entries)
    assert len(entries) == len(load_table().metadata.snapshots)
    assert [e["current"] for e in entries] == [True] + [False] * (len(entries) - 1)
    newest = entries[0]
    assert newest["snapshot_id"] == loads[-1].snapshot_id
    assert newest["operation"] == "append" and newest["rows_added"] == 3 * ROWS_PER_DAY
    assert newest["total_rows"] == 3 * ROWS_PER_DAY
    assert newest["range"] == "2024-01-04/2024-01-13"  # high-water mark - 7 days .. today
    assert newest["run_id"].startswith("day-02") and newest["source"].startswith("socrata:")
    assert entries[1]["rows_deleted"] == 2 * ROWS_PER_DAY  # the same load's delete
    stamps = [datetime.fromisoformat(e["committed_at"]) for e in entries]
    assert stamps == sorted(stamps, reverse=True) and stamps[0].tzinfo == UTC
    for older, newer in zip(entries[1:], entries, strict=False):
        assert newer["parent_id"] == older["snapshot_id"]

    early = cli("sql", "SELECT 1 FROM mta.bnt_traffic_hourly", "--as-of", "2001-01-01")
    assert early.exit_code == 2
    assert early.output.startswith(
        f"error: {bnt.TABLE} did not exist yet at 2001-01-01T00:00:00+00:00 (its first snapshot "
    )
    assert history_json(bnt.TABLE, "--limit", "2") == entries[:2]
    text = cli("history", bnt.TABLE, "--format", "csv").stdout
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [int(r["snapshot_id"]) for r in rows] == [e["snapshot_id"] for e in entries]
    table = cli("history", bnt.TABLE)
    assert table.exit_code == 0
    assert str(newest["snapshot_id"]) in table.stdout  # ids never get thousands separators
    assert f"{newest['snapshot_id']:,}" not in table.stdout
    assert "current" in table.stdout and "3,360" not in table.stdout


def test_history_prints_brackets_verbatim_and_bad_names_fail() -> None:
    catalog = tables.load_catalog(get_settings())
    table = tables.ensure_table(catalog, bnt.REJECTS_TABLE, bnt.REJECTS_SCHEMA)
    row = {
        "date": date(2024, 1, 1),
        "reason": "r",
        "raw_record": "{}",
        "load_range": "x",
        "load_run_id": "run[1]",
        "load_source": "a[s3]b",
        "rejected_at": datetime.now(UTC),
    }
    tables.replace_range(
        table,
        bnt.LoadRange(date(2024, 1, 1), date(2024, 1, 2)).table_filter(),
        lambda: [pa.Table.from_pylist([row], schema=bnt.REJECTS_ARROW_SCHEMA)],
        {"run-id": "run[1]", "source": "a[s3]b", "range": "[bold]x[/bold]"},
    )
    shown = cli("history", bnt.REJECTS_TABLE)
    assert shown.exit_code == 0, shown.output
    assert "a[s3]b" in shown.stdout and "[bold]x[/bold]" in shown.stdout
    assert "a[s3]b" in cli("sql", f"SELECT load_source FROM {bnt.REJECTS_TABLE}").stdout
    assert "a[s3]b" in cli("tables").stdout
    for args, message in [
        (("history", "nope"), "error: 'nope' is not a table name: give namespace.table"),
        (("history", "mta.nope"), "error: no table mta.nope: `civiclake tables` lists them"),
        (("history", "a[s3]b.x"), "error: no table a[s3]b.x: `civiclake tables` lists them"),
        (("sql", "SELECT 1", "--as-of", "x[s3]"), "error: --as-of: 'x[s3]' is neither"),
        (("rollback", "mta.nope", "--to", "1", "--yes"), "error: no table mta.nope"),
    ]:
        result = cli(*args)
        assert result.exit_code == 2 and result.output.strip().startswith(message), result.output


def test_rollback_undoes_a_bad_load_and_the_next_load_works(socrata: SocrataServer) -> None:
    good = [load(socrata, d) for d in range(3)]
    before = {name: full_rows(name) for name in (bnt.TABLE, bnt.REJECTS_TABLE)}
    bad = load(socrata, 3, bad=True)  # the portal served day 3 wrongly (doubled counts)
    doubled = (
        "SELECT sum(vehicles_vtoll) AS v FROM mta.bnt_traffic_hourly WHERE date = '2024-01-13'"
    )
    wrong = cli_json("sql", doubled)[0]["v"]

    # not a terminal: --yes is required, and nothing changes without it
    refused = cli("rollback", bnt.TABLE, "--to", str(good[-1].snapshot_id))
    assert refused.exit_code == 2
    assert "not a terminal, so pass --yes" in refused.output
    assert load_table().current_snapshot().snapshot_id == bad.snapshot_id
    # a snapshot that is not an ancestor, and one that does not exist: refused in one line
    unknown = cli("rollback", bnt.TABLE, "--to", "12345", "--yes")
    assert unknown.exit_code == 2 and len(unknown.output.strip().splitlines()) == 1
    assert f"{bnt.TABLE} has no snapshot 12345" in unknown.output

    done = cli("rollback", bnt.TABLE, "--to", str(good[-1].snapshot_id), "--yes")
    assert done.exit_code == 0, done.output
    assert f"snapshot {good[-1].snapshot_id} is current again (1,440 rows)" in done.stdout
    rejects_target = good[-1].rejects_snapshot_id
    assert cli("rollback", bnt.REJECTS_TABLE, "--to", str(rejects_target), "--yes").exit_code == 0
    for name, rows in before.items():
        assert full_rows(name).equals(rows), f"{name} not restored"
    assert cli_json("sql", "SELECT count(*) AS n FROM mta.bnt_traffic_hourly") == [
        {"n": 3 * ROWS_PER_DAY}
    ]
    # recorded: the bad load's snapshots are still listed, no longer current
    entries = history_json(bnt.TABLE)
    assert [e["snapshot_id"] for e in entries if e["current"]] == [good[-1].snapshot_id]
    assert any(e["snapshot_id"] == bad.snapshot_id for e in entries)
    assert "rolled back" in cli("history", bnt.TABLE).stdout
    # the formats for scripts say it too, not only `current`
    undone = next(e for e in entries if e["snapshot_id"] == bad.snapshot_id)
    assert undone["state"] == "rolled back"
    assert [e["state"] for e in entries if e["current"]] == ["current"]
    rows = list(csv.DictReader(io.StringIO(cli("history", bnt.TABLE, "-f", "csv").stdout)))
    assert {r["snapshot_id"]: r["state"] for r in rows}[str(bad.snapshot_id)] == "rolled back"
    log = load_table().metadata.snapshot_log
    assert log[-1].snapshot_id == good[-1].snapshot_id
    not_ancestor = cli("rollback", bnt.TABLE, "--to", str(bad.snapshot_id), "--yes")
    assert not_ancestor.exit_code == 2
    assert "is not an ancestor of the current snapshot" in not_ancestor.output

    fixed = load(socrata, 3)  # the next (corrected) load works on top of the rollback
    assert fixed.rows == 4 * ROWS_PER_DAY
    right = cli_json("sql", doubled)[0]["v"]
    assert right * 2 == wrong
    parent = load_table().snapshot_by_id(fixed.snapshot_id)
    ancestors = {e["snapshot_id"] for e in history_json(bnt.TABLE)}
    assert parent is not None and good[-1].snapshot_id in ancestors


def _two_rejects_loads() -> list[int]:
    catalog = tables.load_catalog(get_settings())
    table = tables.ensure_table(catalog, bnt.REJECTS_TABLE, bnt.REJECTS_SCHEMA)
    for run in ("r1", "r2"):
        row = {
            "date": date(2024, 1, 1),
            "reason": run,
            "raw_record": "{}",
            "load_range": "x",
            "load_run_id": run,
            "load_source": "test",
            "rejected_at": datetime.now(UTC),
        }
        tables.replace_range(
            table,
            bnt.LoadRange(date(2024, 1, 1), date(2024, 1, 2)).table_filter(),
            lambda row=row: [pa.Table.from_pylist([row], schema=bnt.REJECTS_ARROW_SCHEMA)],
            {"run-id": run, "source": "test"},
        )
    table.refresh()
    return [s.snapshot_id for s in table.metadata.snapshots]


def test_table_operations_do_not_import_prefect(civiclake_home: Path) -> None:
    first = _two_rejects_loads()[0]
    name = bnt.REJECTS_TABLE
    code = (
        "import sys\n"
        "from civiclake.cli import app\n"
        f"for args in (['history', '{name}'], ['sql', 'SELECT * FROM {name}', '--as-of',"
        f" '{first}'], ['maintain', '--dry-run'], ['rollback', '{name}', '--to', '{first}',"
        " '--yes']):\n"
        "    try:\n"
        "        app(args)\n"
        "    except SystemExit as e:\n"
        "        assert e.code in (0, None), (args, e.code)\n"
        "assert 'prefect' not in sys.modules, 'prefect was imported'\n"
    )
    env = {**os.environ, "CIVICLAKE_HOME": str(civiclake_home)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert load_table(name).current_snapshot().snapshot_id == first
