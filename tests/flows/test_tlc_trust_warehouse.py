"""Issue 17, case 5 for TLC: a month whose warehouse load fails after its Iceberg commit.

The warehouse passes its check (reachable, writable) but its load fails for a real reason: the
DuckDB file already holds ``tlc.yellow_trips`` with other columns. The run must say that the lake
moved and the warehouse did not, and the next run with the same ``--to`` must sync it.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner, Result

from civiclake import tables
from civiclake.cli import app
from civiclake.config import get_settings
from civiclake.warehouse import open_warehouse
from civiclake.warehouse.duckdb import FILE_NAME

pytestmark = [pytest.mark.prefect, pytest.mark.usefixtures("prefect_server")]

ROOT = Path(__file__).resolve().parents[2]
YELLOW = ROOT.parent / "shared" / "data" / "tlc" / "yellow_tripdata_2020-07_sample.csv"
TABLE = "tlc.yellow_trips"
REJECTS = "tlc.yellow_trips_rejects"


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def error_line(result: Result) -> str:
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("error: "), result.output
    return line


def iceberg_count(name: str) -> int:
    return tables.load_catalog(get_settings()).load_table(name).scan().to_arrow().num_rows


def warehouse_count(name: str) -> int:
    with open_warehouse("duckdb", get_settings()) as warehouse:
        return warehouse.count(name)


def not_synced_marks() -> list[str]:
    props = tables.load_catalog(get_settings()).load_table(TABLE).properties
    return [k for k in props if "not-synced" in k]


@pytest.fixture
def broken_duckdb_table(civiclake_home: Path) -> Path:
    """The DuckDB file passes its check, but ``tlc.yellow_trips`` there has other columns: the
    month's warehouse load fails while Iceberg commits the month."""
    path = get_settings().home_dir / FILE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE SCHEMA IF NOT EXISTS tlc")
        con.execute(f"CREATE TABLE {TABLE} (x INTEGER)")
    return path


def fix(path: Path) -> None:
    """What the operator does after reading the error: repair the warehouse."""
    with duckdb.connect(str(path)) as con:
        con.execute(f"DROP TABLE {TABLE}")


def fail_july() -> int:
    """The July load whose warehouse load fails; returns the lake snapshot it reports."""
    result = cli("taxi", "run", "--from-file", str(YELLOW), "--to", "duckdb")
    assert result.exit_code == 1, result.output
    snapshot = tables.load_catalog(get_settings()).load_table(TABLE).current_snapshot()
    line = (
        f"lake at snapshot {snapshot.snapshot_id}, warehouse not updated: "
        "re-run with --to duckdb to sync"
    )
    assert error_line(result).startswith(f"error: yellow 2020-07: {line} (")
    assert "(table tlc.yellow_trips in DuckDB lacks columns" in error_line(result)  # the cause
    summary = result.output.strip().splitlines()[:-1]
    month_rows = [x for x in summary if x.lstrip("│ ").startswith("2020-07")]
    assert len(month_rows) == 1 and line in month_rows[0], result.output  # the month's line
    assert "Traceback" not in result.output
    assert iceberg_count(TABLE) > 0  # the lake has the month
    assert not_synced_marks()
    return int(snapshot.snapshot_id)


def test_month_failing_in_the_warehouse_after_the_commit_says_so_and_a_rerun_syncs(
    broken_duckdb_table: Path,
) -> None:
    fail_july()
    fix(broken_duckdb_table)
    again = cli("taxi", "run", "--from-file", str(YELLOW), "--to", "duckdb")
    assert again.exit_code == 0, again.output
    assert warehouse_count(TABLE) == iceberg_count(TABLE) > 0
    assert warehouse_count(REJECTS) == iceberg_count(REJECTS)
    assert not not_synced_marks()


def test_a_rerun_of_another_month_syncs_the_whole_table(
    broken_duckdb_table: Path, tmp_path: Path
) -> None:
    """The warehouse left behind in July is brought in sync by a load of August: the whole
    table is copied, not just the month loaded."""
    fail_july()
    july = iceberg_count(TABLE)
    august = tmp_path / "yellow_tripdata_2020-08.csv"
    august.write_text(YELLOW.read_text().replace("2020-07-", "2020-08-"))
    fix(broken_duckdb_table)

    result = cli("taxi", "run", "--from-file", str(august), "--to", "duckdb")
    assert result.exit_code == 0, result.output
    assert iceberg_count(TABLE) > july
    assert warehouse_count(TABLE) == iceberg_count(TABLE)
    assert warehouse_count(REJECTS) == iceberg_count(REJECTS)
    assert f"{TABLE} re-synced from the lake" in result.output
    assert not not_synced_marks()


def test_rollback_of_a_taxi_month_then_a_rerun_resyncs(tmp_path: Path) -> None:
    """``rollback`` says the warehouse was not rolled back; the next taxi run copies it."""
    assert cli("taxi", "run", "--from-file", str(YELLOW), "--to", "duckdb").exit_code == 0
    before = tables.load_catalog(get_settings()).load_table(TABLE).current_snapshot()
    august = tmp_path / "yellow_tripdata_2020-08.csv"
    august.write_text(YELLOW.read_text().replace("2020-07-", "2020-08-"))
    assert cli("taxi", "run", "--from-file", str(august), "--to", "duckdb").exit_code == 0
    assert warehouse_count(TABLE) > iceberg_count(TABLE) // 2

    result = cli("rollback", TABLE, "--to", str(before.snapshot_id), "--yes")
    assert result.exit_code == 0, result.output
    assert "re-run the load with --to duckdb to re-sync" in " ".join(result.output.split())
    assert warehouse_count(TABLE) > iceberg_count(TABLE)  # August: still in DuckDB

    again = cli("taxi", "run", "--from-file", str(YELLOW), "--to", "duckdb")
    assert again.exit_code == 0, again.output
    assert warehouse_count(TABLE) == iceberg_count(TABLE)  # August gone, as in the lake


def test_postgres_month_failing_leaves_the_lake_unchanged(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Into PostgreSQL the month commits before Iceberg's: its failure never moves the lake."""
    import psycopg

    monkeypatch.setenv("CIVICLAKE_POSTGRES_URL", postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS tlc")
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        conn.execute(f"CREATE TABLE {TABLE} (x int)")  # passes the check, refuses the load
    result = cli("taxi", "run", "--from-file", str(YELLOW), "--to", "postgres")
    assert result.exit_code == 1, result.output
    assert "lacks columns" in error_line(result)
    assert "warehouse not updated" not in error_line(result)
    catalog = tables.load_catalog(get_settings())
    assert not catalog.table_exists(TABLE) or iceberg_count(TABLE) == 0


def test_rollback_into_postgres_then_a_rerun_resyncs(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The streaming warehouse honours the mark too: the whole table, after the months."""
    import psycopg

    monkeypatch.setenv("CIVICLAKE_POSTGRES_URL", postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for name in (TABLE, REJECTS):
            conn.execute(f"DROP TABLE IF EXISTS {name}")
    assert cli("taxi", "run", "--from-file", str(YELLOW), "--to", "postgres").exit_code == 0
    before = tables.load_catalog(get_settings()).load_table(TABLE).current_snapshot()
    august = tmp_path / "yellow_tripdata_2020-08.csv"
    august.write_text(YELLOW.read_text().replace("2020-07-", "2020-08-"))
    assert cli("taxi", "run", "--from-file", str(august), "--to", "postgres").exit_code == 0
    assert cli("rollback", TABLE, "--to", str(before.snapshot_id), "--yes").exit_code == 0

    again = cli("taxi", "run", "--from-file", str(YELLOW), "--to", "postgres")
    assert again.exit_code == 0, again.output
    with open_warehouse("postgres", get_settings()) as warehouse:
        assert warehouse.count(TABLE) == iceberg_count(TABLE)
    assert not not_synced_marks()
