"""Issue 17, silent data loss: no input may silently empty or shrink a table.

Each numbered case of the issue reproduced through the CLI and the real flows (real Iceberg,
DuckDB, PostgreSQL, the Socrata replay server), with the real B&T sample and TLC month, plus
principle tests with inputs of our own.
"""

from __future__ import annotations

import gzip
from collections import Counter
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from civiclake import tables
from civiclake.cli import app
from civiclake.config import get_settings
from civiclake.sources import bnt
from civiclake.testing.socrata import SocrataServer, bnt_rows
from civiclake.testing.socrata_samples import COLUMNS, DATASET, sample_rows
from civiclake.warehouse import open_warehouse

pytestmark = [pytest.mark.prefect, pytest.mark.usefixtures("prefect_server")]

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_CSV = ROOT / "examples" / "bnt_sample.csv"
TLC_DATA = ROOT.parent / "shared" / "data" / "tlc"
GREEN = TLC_DATA / "green_tripdata_2020-10.csv.gz"
YELLOW = TLC_DATA / "yellow_tripdata_2020-07_sample.csv"
ROWS_PER_DAY = 480
SAMPLE_DAYS = 14  # 2024-03-01 .. 2024-03-14


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def table_rows(name: str = bnt.TABLE) -> list[dict]:
    return tables.load_catalog(get_settings()).load_table(name).scan().to_arrow().to_pylist()


def rows_per_day(rows: list[dict]) -> Counter[date]:
    return Counter(r["date"] for r in rows)


def error_line(result: Result) -> str:
    """The CLI's ``error:`` line (Prefect's run logs come before it in the captured output)."""
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("error: "), result.output
    return line


def sample_lines() -> tuple[str, list[str]]:
    header, *lines = SAMPLE_CSV.read_text().splitlines()
    return header, lines


def write_csv(path: Path, header: str, lines: list[str]) -> Path:
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


@pytest.fixture
def loaded_sample() -> list[dict]:
    result = cli("bnt", "run", "--from-file", str(SAMPLE_CSV))
    assert result.exit_code == 0, result.output
    rows = table_rows()
    assert len(rows) == SAMPLE_DAYS * ROWS_PER_DAY
    return rows


# ---------------------------------------------------------------- case 2: B&T file loads


def test_cut_off_export_is_refused_and_changes_nothing(
    loaded_sample: list[dict], tmp_path: Path
) -> None:
    """Case 2: ``head -c 100000 examples/bnt_sample.csv`` (ends right after a comma)."""
    cut = tmp_path / "cut.csv"
    cut.write_bytes(SAMPLE_CSV.read_bytes()[:100_000])
    result = cli("bnt", "run", "--from-file", str(cut))
    assert result.exit_code == 2
    assert "cut.csv: truncated file" in error_line(result)
    assert rows_per_day(table_rows()) == rows_per_day(loaded_sample)


@pytest.mark.parametrize(
    ("tail", "why"),
    [
        ("21,03/08/2024,4,O,20", "has 5 of 6 fields"),
        ("21,03/08/20", "has 2 of 6 fields"),
        ('21,03/08/2024,4,O,2004,"12', "quoted value"),
    ],
)
def test_any_cut_inside_the_last_record_is_refused(tmp_path: Path, tail: str, why: str) -> None:
    header, lines = sample_lines()
    cut = tmp_path / "cut.csv"
    cut.write_text("\n".join([header, *lines[:100], tail]))  # no final newline
    result = cli("bnt", "run", "--from-file", str(cut))
    assert result.exit_code == 2
    assert why in error_line(result)
    assert not tables.load_catalog(get_settings()).table_exists(bnt.TABLE)


def test_complete_last_line_without_final_newline_is_fine(tmp_path: Path) -> None:
    header, lines = sample_lines()
    day_one = [line for line in lines if ",03/01/2024," in line]
    path = tmp_path / "day1.csv"
    path.write_text("\n".join([header, *day_one]))
    result = cli("bnt", "run", "--from-file", str(path))
    assert result.exit_code == 0, result.output
    assert rows_per_day(table_rows()) == {date(2024, 3, 1): ROWS_PER_DAY}


def test_stray_future_date_is_a_reject_not_a_range(
    loaded_sample: list[dict], tmp_path: Path
) -> None:
    """Case 2: one row dated 03/02/2099 made the range [2024-03-02, 2099-03-03)."""
    header, lines = sample_lines()
    day_two = [line for line in lines if ",03/02/2024," in line]
    stray = "21,03/02/2099,0,I,10,10"
    result = cli(
        "bnt", "run", "--from-file", str(write_csv(tmp_path / "f.csv", header, [*day_two, stray]))
    )
    assert result.exit_code == 0, result.output
    assert rows_per_day(table_rows()) == rows_per_day(loaded_sample)
    reasons = [r["reason"] for r in table_rows(bnt.REJECTS_TABLE)]
    assert "date 2099-03-02 is more than a day in the future" in reasons


def test_file_with_days_1_and_14_replaces_only_those_days(
    loaded_sample: list[dict], tmp_path: Path
) -> None:
    """Case 2: a file with days 1 and 14 only deleted days 2-13."""
    header, lines = sample_lines()
    # the same keys with new counts, so a replaced day is visible
    edges = [
        line.rsplit(",", 1)[0] + ",987654"
        for line in lines
        if ",03/01/2024," in line or ",03/14/2024," in line
    ]
    path = write_csv(tmp_path / "edges.csv", header, edges)
    result = cli("bnt", "run", "--from-file", str(path), "--to", "duckdb")
    assert result.exit_code == 0, result.output
    rows = table_rows()
    assert rows_per_day(rows) == rows_per_day(loaded_sample)
    changed = {r["date"] for r in rows if r["vehicles_vtoll"] == 987654}
    assert changed == {date(2024, 3, 1), date(2024, 3, 14)}
    with open_warehouse("duckdb", get_settings()) as warehouse:
        assert warehouse.count(bnt.TABLE) == ROWS_PER_DAY * 2  # only the file's days
        assert warehouse.count(bnt.TABLE, "date BETWEEN '2024-03-02' AND '2024-03-13'") == 0


def test_file_days_into_postgres_keep_the_days_between(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Windows slice in PostgreSQL: a file of days 1 and 14 leaves days 2-13 alone."""
    import psycopg

    monkeypatch.setenv("CIVICLAKE_POSTGRES_URL", postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {bnt.TABLE}")
    assert cli("bnt", "run", "--from-file", str(SAMPLE_CSV), "--to", "postgres").exit_code == 0
    header, lines = sample_lines()
    first = [line for line in lines if ",03/01/2024," in line][:50]
    last = [line for line in lines if ",03/14/2024," in line][:50]
    path = write_csv(tmp_path / "edges.csv", header, first + last)
    result = cli("bnt", "run", "--from-file", str(path), "--to", "postgres")
    assert result.exit_code == 0, result.output
    with open_warehouse("postgres", get_settings()) as warehouse:
        assert warehouse.count(bnt.TABLE, "date BETWEEN '2024-03-02' AND '2024-03-13'") == (
            12 * ROWS_PER_DAY
        )
        assert warehouse.count(bnt.TABLE, "date IN ('2024-03-01', '2024-03-14')") == 100
    assert len(table_rows()) == 12 * ROWS_PER_DAY + 100


# ---------------------------------------------------------------- allow-empty, B&T API


@pytest.fixture
def bnt_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[SocrataServer]:
    """A portal whose B&T dataset holds 2024-03-20 .. 2024-03-21 only."""
    with SocrataServer({"qzve-kjga": bnt_rows(date(2024, 3, 20), 2)}) as srv:
        monkeypatch.setenv("CIVICLAKE_SOCRATA_URL", srv.url)
        monkeypatch.setenv("CIVICLAKE_PAGE_SIZE", "2000")
        yield srv


def test_api_range_with_no_rows_refuses_to_empty_it(
    loaded_sample: list[dict], bnt_server: SocrataServer
) -> None:
    args = ("bnt", "run", "--start-date", "2024-03-01", "--stop-date", "2024-03-08")
    result = cli(*args)
    assert result.exit_code == 2
    line = error_line(result)
    assert "date in [2024-03-01, 2024-03-08)" in line and "mta.bnt_traffic_hourly" in line
    assert f"would delete {7 * ROWS_PER_DAY:,}" in line and "--allow-empty" in line
    assert rows_per_day(table_rows()) == rows_per_day(loaded_sample)

    allowed = cli(*args, "--allow-empty")
    assert allowed.exit_code == 0, allowed.output
    assert len(table_rows()) == 7 * ROWS_PER_DAY  # days 8-14 left


def test_refusal_ends_the_flow_run_failed_with_that_line(
    loaded_sample: list[dict], bnt_server: SocrataServer
) -> None:
    from civiclake.flows.bnt import bnt_hourly_traffic

    state = bnt_hourly_traffic(
        start_date=date(2024, 3, 1), stop_date=date(2024, 3, 2), return_state=True
    )
    assert state.is_failed()
    assert state.message == (
        "refusing to replace date in [2024-03-01, 2024-03-02) of mta.bnt_traffic_hourly with "
        f"nothing: the load holds 0 rows and would delete {ROWS_PER_DAY} "
        "(pass --allow-empty to empty it)"
    )


# ---------------------------------------------------------------- case 1: TLC


def iceberg_count(name: str) -> int:
    return tables.load_catalog(get_settings()).load_table(name).scan().to_arrow().num_rows


def test_header_only_tlc_month_is_refused(tmp_path: Path) -> None:
    """Case 1: a header-only green_tripdata_2020-10.csv.gz emptied the month, exit 0."""
    assert cli("taxi", "run", "--from-file", str(GREEN)).exit_code == 0
    trips, rejects = iceberg_count("tlc.green_trips"), iceberg_count("tlc.green_trips_rejects")
    assert trips > 90_000
    header = gzip.decompress(GREEN.read_bytes()).split(b"\n", 1)[0] + b"\n"
    empty = tmp_path / GREEN.name
    empty.write_bytes(gzip.compress(header))

    result = cli("taxi", "run", "--from-file", str(empty))
    assert result.exit_code == 2, result.output
    assert f"would delete {trips:,}" in result.output
    assert "tlc.green_trips" in result.output and "--allow-empty" in result.output
    assert iceberg_count("tlc.green_trips") == trips
    assert iceberg_count("tlc.green_trips_rejects") == rejects
    with open_warehouse("duckdb", get_settings()) as warehouse:
        assert warehouse.count("tlc.green_trips") == trips

    allowed = cli("taxi", "run", "--from-file", str(empty), "--allow-empty")
    assert allowed.exit_code == 0, allowed.output
    assert iceberg_count("tlc.green_trips") == 0


def test_header_only_tlc_month_into_postgres_is_refused_and_rolled_back(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CIVICLAKE_POSTGRES_URL", postgres_url)
    assert cli("taxi", "run", "--from-file", str(YELLOW), "--to", "postgres").exit_code == 0
    trips = iceberg_count("tlc.yellow_trips")
    empty = tmp_path / YELLOW.name
    empty.write_text(YELLOW.read_text().split("\n", 1)[0] + "\n")
    result = cli("taxi", "run", "--from-file", str(empty), "--to", "postgres")
    assert result.exit_code == 2, result.output
    assert f"would delete {trips:,}" in result.output
    assert iceberg_count("tlc.yellow_trips") == trips
    with open_warehouse("postgres", get_settings()) as warehouse:
        assert warehouse.count("tlc.yellow_trips") == trips


def test_cut_off_tlc_csv_is_refused(tmp_path: Path) -> None:
    text = YELLOW.read_bytes()
    cut = tmp_path / YELLOW.name
    cut.write_bytes(text[: len(text) // 2].rsplit(b",", 1)[0] + b",")
    result = cli("taxi", "run", "--from-file", str(cut))
    assert result.exit_code == 2, result.output
    assert "truncated file" in result.output
    assert not tables.load_catalog(get_settings()).table_exists("tlc.yellow_trips")


# ---------------------------------------------------------------- Socrata


@pytest.fixture
def portal(monkeypatch: pytest.MonkeyPatch) -> Iterator[SocrataServer]:
    srv = SocrataServer()
    srv.add_dataset(DATASET, sample_rows(25), columns=COLUMNS, name="Every type")
    with srv:
        monkeypatch.setenv("CIVICLAKE_SOCRATA_URL", srv.url)
        yield srv


def test_full_refresh_that_fetches_nothing_is_refused(portal: SocrataServer) -> None:
    assert cli("socrata", "run", DATASET).exit_code == 0
    table = "socrata.abcd_1234"
    result = cli("socrata", "run", DATASET, "--full", "--where", "zip = 'no such zip'")
    assert result.exit_code == 2, result.output
    assert f"refusing to replace all of {table} with nothing" in error_line(result)
    assert "would delete 25" in result.output
    assert len(table_rows(table)) == 25


def test_where_with_a_typo_fails_before_anything_is_fetched(portal: SocrataServer) -> None:
    """Case 3: ``--full --where "creatd_date >= '2024-01-01'"`` fetched 0 rows, emptied it."""
    assert cli("socrata", "run", DATASET).exit_code == 0
    portal.requests.clear()
    result = cli("socrata", "run", DATASET, "--full", "--where", "creatd_date >= '2024-01-01'")
    assert result.exit_code == 2, result.output
    assert f"--where: {DATASET} has no column 'creatd_date'" in error_line(result)
    assert not [r for r in portal.requests if "$limit" in r.params]  # nothing fetched
    assert len(table_rows("socrata.abcd_1234")) == 25


@pytest.mark.parametrize(
    "where",
    [
        "zip = 'x' AND upper(zip) = 'X'",
        "`zip` IS NOT NULL AND :updated_at > '2020-01-01T00:00:00'",
        "zip in ('a', 'b''c') OR count between 1 and 2",
    ],
)
def test_where_naming_real_columns_passes_the_check(portal: SocrataServer, where: str) -> None:
    from civiclake.sources.socrata_plan import resolve_spec

    assert resolve_spec(get_settings(), DATASET, where=where).where == where


def test_portal_400_is_one_line_exit_2(portal: SocrataServer) -> None:
    result = cli("socrata", "run", DATASET, "--where", "zip = 'x' ) (")
    assert result.exit_code == 2, result.output
    assert "the portal refused the query (HTTP 400)" in error_line(result)
    assert not tables.load_catalog(get_settings()).table_exists("socrata.abcd_1234")


def test_metadata_without_columns_types_from_soda2_headers(portal: SocrataServer) -> None:
    """Case 4: view metadata without a column list nulled every data column of re-fetched
    rows in an incremental run. The data pages' X-SODA2 headers type them instead."""
    from civiclake.testing.socrata_samples import sample_row

    assert cli("socrata", "run", DATASET).exit_code == 0
    revised = sample_rows(25)
    revised[4] = {**sample_row(4, minutes=500), "zip": "REV4"}
    portal.add_dataset(DATASET, revised, columns=COLUMNS, name="Every type")
    portal.add_view(DATASET, {"id": DATASET, "name": "Every type", "viewType": "tabular"})
    result = cli("socrata", "run", DATASET)
    assert result.exit_code == 0, result.output
    rows = {r["socrata_id"]: r for r in table_rows("socrata.abcd_1234")}
    assert len(rows) == 25
    assert rows["row-00004"]["zip"] == "REV4"
    for row in rows.values():  # every re-fetched row keeps its data
        assert row["zip"] is not None and row["count"] is not None and row["blob"] is not None


def test_metadata_without_columns_or_headers_is_refused(portal: SocrataServer) -> None:
    portal.add_dataset("bare-1234", sample_rows(3))  # no columns: no metadata, no headers
    portal.add_view("bare-1234", {"id": "bare-1234", "name": "Bare", "viewType": "tabular"})
    result = cli("socrata", "run", "bare-1234")
    assert result.exit_code == 1, result.output
    assert "metadata lists no columns" in error_line(result)
    assert not tables.load_catalog(get_settings()).table_exists("socrata.bare_1234")


# ---------------------------------------------------------------- case 5: warehouses


def test_dead_warehouse_fails_before_the_lake_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Case 5: ``--to postgres`` with a dead server changed the lake, then failed."""
    import socket

    with socket.socket() as probe:  # a free port: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("CIVICLAKE_POSTGRES_URL", f"postgresql://u:p@127.0.0.1:{port}/db")
    result = cli("bnt", "run", "--from-file", str(SAMPLE_CSV), "--to", "postgres")
    assert result.exit_code == 1, result.output
    assert error_line(result).startswith("error: --to postgres: ")
    assert "nothing loaded" in error_line(result)
    assert not tables.load_catalog(get_settings()).table_exists(bnt.TABLE)


@pytest.fixture
def broken_postgres_table(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A warehouse that passes its check but whose load fails: the target table exists with
    other columns (the load refuses it after the Iceberg commit)."""
    import psycopg

    monkeypatch.setenv("CIVICLAKE_POSTGRES_URL", postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for name in (bnt.TABLE, "socrata.abcd_1234", "socrata.abcd_1234_rejects"):
            conn.execute(f"DROP TABLE IF EXISTS {name}")
        conn.execute("CREATE SCHEMA IF NOT EXISTS mta")
        conn.execute("CREATE SCHEMA IF NOT EXISTS socrata")
        conn.execute(f"CREATE TABLE {bnt.TABLE} (x int)")
        conn.execute("CREATE TABLE socrata.abcd_1234 (blob date)")  # a conflicting type
    yield postgres_url
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for name in (bnt.TABLE, "socrata.abcd_1234", "socrata.abcd_1234_rejects"):
            conn.execute(f"DROP TABLE IF EXISTS {name}")


def drop(url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {name}")


def test_warehouse_failing_after_the_commit_says_so_and_a_rerun_syncs(
    broken_postgres_table: str, tmp_path: Path
) -> None:
    result = cli("bnt", "run", "--from-file", str(SAMPLE_CSV), "--to", "postgres")
    assert result.exit_code == 1, result.output
    snapshot = tables.load_catalog(get_settings()).load_table(bnt.TABLE).current_snapshot()
    line = (
        f"lake at snapshot {snapshot.snapshot_id}, warehouse not updated: "
        "re-run with --to postgres to sync"
    )
    assert error_line(result).startswith(f"error: {line}")
    assert "snapshot id" in result.output  # the summary was printed
    assert len(table_rows()) == SAMPLE_DAYS * ROWS_PER_DAY

    drop(broken_postgres_table, bnt.TABLE)  # the operator fixes the warehouse
    header, lines = sample_lines()
    day_one = write_csv(tmp_path / "d1.csv", header, [x for x in lines if ",03/01/2024," in x])
    again = cli("bnt", "run", "--from-file", str(day_one), "--to", "postgres")
    assert again.exit_code == 0, again.output
    with open_warehouse("postgres", get_settings()) as warehouse:  # all of it, not day 1 only
        assert warehouse.count(bnt.TABLE) == SAMPLE_DAYS * ROWS_PER_DAY
    props = tables.load_catalog(get_settings()).load_table(bnt.TABLE).properties
    assert not [k for k in props if "not-synced" in k]


def test_socrata_rerun_with_nothing_new_syncs_the_warehouse(
    broken_postgres_table: str, portal: SocrataServer
) -> None:
    first = cli("socrata", "run", DATASET, "--to", "postgres")
    assert first.exit_code == 1, first.output
    assert "warehouse not updated: re-run with --to postgres to sync" in error_line(first)
    drop(broken_postgres_table, "socrata.abcd_1234")
    again = cli("socrata", "run", DATASET, "--to", "postgres")  # incremental, nothing new
    assert again.exit_code == 0, again.output
    with open_warehouse("postgres", get_settings()) as warehouse:
        assert warehouse.count("socrata.abcd_1234") == 25


def test_rollback_says_the_warehouse_is_not_rolled_back_and_a_rerun_resyncs(
    tmp_path: Path,
) -> None:
    """Case 5: ``rollback`` restored Iceberg, not the warehouse, silently."""
    assert cli("bnt", "run", "--from-file", str(SAMPLE_CSV), "--to", "duckdb").exit_code == 0
    before = tables.load_catalog(get_settings()).load_table(bnt.TABLE).current_snapshot()
    header, lines = sample_lines()
    day_one = write_csv(tmp_path / "d1.csv", header, [x for x in lines if ",03/01/2024,0," in x])
    assert cli("bnt", "run", "--from-file", str(day_one), "--to", "duckdb").exit_code == 0
    with open_warehouse("duckdb", get_settings()) as warehouse:
        shrunk = warehouse.count(bnt.TABLE)
    assert shrunk < SAMPLE_DAYS * ROWS_PER_DAY

    result = cli("rollback", bnt.TABLE, "--to", str(before.snapshot_id), "--yes")
    assert result.exit_code == 0, result.output
    assert "warehouses are not rolled back: re-run the load with --to duckdb to re-sync" in (
        " ".join(result.output.split())
    )
    # a re-run of another day (day 1 untouched by it) re-syncs the whole table
    day_14 = write_csv(tmp_path / "d14.csv", header, [x for x in lines if ",03/14/2024," in x])
    again = cli("bnt", "run", "--from-file", str(day_14), "--to", "duckdb")
    assert again.exit_code == 0, again.output
    with open_warehouse("duckdb", get_settings()) as warehouse:
        assert warehouse.count(bnt.TABLE) == SAMPLE_DAYS * ROWS_PER_DAY


def test_rollback_of_lake_only_loads_says_no_warehouse_was_touched(tmp_path: Path) -> None:
    assert cli("bnt", "run", "--from-file", str(SAMPLE_CSV)).exit_code == 0
    before = tables.load_catalog(get_settings()).load_table(bnt.TABLE).current_snapshot()
    header, lines = sample_lines()
    assert (
        cli(
            "bnt", "run", "--from-file", str(write_csv(tmp_path / "d.csv", header, lines[:9]))
        ).exit_code
        == 0
    )
    result = cli("rollback", bnt.TABLE, "--to", str(before.snapshot_id), "--yes")
    assert result.exit_code == 0, result.output
    assert "no warehouse was loaded by the undone snapshots" in " ".join(result.output.split())


# ---------------------------------------------------------------- as-of: the same load


def test_as_of_reads_a_table_and_its_rejects_at_the_same_load(tmp_path: Path) -> None:
    """``--as-of`` a load's snapshot: its rejects table as that load left it, not one load
    earlier (the rejects commit comes a moment after the table's)."""
    from civiclake.query import run_sql

    header, lines = sample_lines()
    first = write_csv(tmp_path / "a.csv", header, lines[:960])  # day 1, 2: valid rows
    bad = [f"21,03/01/2024,{hour},N,1,1" for hour in range(3)]  # 3 rejects on day 1
    second = write_csv(tmp_path / "b.csv", header, lines[:960] + bad)
    assert cli("bnt", "run", "--from-file", str(first)).exit_code == 0
    assert cli("bnt", "run", "--from-file", str(second)).exit_code == 0
    catalog = tables.load_catalog(get_settings())
    snapshot = catalog.load_table(bnt.TABLE).current_snapshot().snapshot_id
    sql = f"SELECT count(*) AS n FROM {bnt.REJECTS_TABLE}"
    assert run_sql(sql, get_settings()).column("n").to_pylist() == [3]
    joined = f"SELECT (SELECT count(*) FROM {bnt.TABLE}) AS rows, ({sql}) AS rejects"
    assert run_sql(joined, get_settings(), as_of=snapshot).to_pylist() == [
        {"rows": 960, "rejects": 3}
    ]


def test_crash_between_the_two_commits_is_repaired_by_the_next_load(tmp_path: Path) -> None:
    """What a crash between a load's two commits leaves: the table at the new load, its
    rejects at the previous one. The next load (of anything) completes the rejects commit."""
    import pickle
    from datetime import UTC, datetime

    from civiclake.flows import _pipeline as pipeline
    from civiclake.flows.bnt import _Rejects
    from civiclake.pipeline.commit import LOAD_MARKER, Load, load_url
    from civiclake.query import run_sql
    from civiclake.slices import Windows

    header, lines = sample_lines()
    assert (
        cli(
            "bnt", "run", "--from-file", str(write_csv(tmp_path / "a.csv", header, lines[:480]))
        ).exit_code
        == 0
    )
    # run "crashed": staged like a real run, then only the first of its two commits
    bad = [f"21,03/01/2024,{hour},N,1,1" for hour in range(3)]
    path = write_csv(tmp_path / "b.csv", header, lines[:480] + bad)
    settings = get_settings()
    lake, catalog = settings.lake(), tables.load_catalog(settings)
    ctx = bnt.context("crashed", "file:b.csv", datetime.now(UTC))
    raw = bnt.stage_file(lake, str(path), run_id="crashed")
    staged = pipeline.stage(settings, bnt.BntSpec(), raw, ctx)
    days = Windows.of_days(bnt.DATE_FIELD, staged.observed["days"])
    props = {"run-id": "crashed", "load-key": ctx.label}
    load = Load(staged, days, _Rejects(days, ctx.label), props)
    # the first half of pipeline.commit.commit: the load saved, the table committed
    lake.write_bytes(load_url(lake, bnt.TABLE, "crashed"), pickle.dumps(load))
    crashed = tables.commit_files(
        catalog.load_table(bnt.TABLE),
        days.iceberg_filter(),
        staged.data,
        {**props, LOAD_MARKER: "1"},
    )
    # what it leaves: the table at the crashed load, its rejects at the previous load
    count = f"SELECT count(*) AS n FROM {bnt.REJECTS_TABLE}"
    joined = f"SELECT (SELECT count(*) FROM {bnt.TABLE}) AS rows, ({count}) AS rejects"
    assert run_sql(joined, settings, as_of=crashed.snapshot_id).to_pylist() == [
        {"rows": 480, "rejects": 0}
    ]
    # the next load, of another day, completes the crashed one's rejects first
    day_two = [line for line in lines if ",03/02/2024," in line]
    assert (
        cli(
            "bnt", "run", "--from-file", str(write_csv(tmp_path / "c.csv", header, day_two))
        ).exit_code
        == 0
    )
    assert run_sql(joined, settings, as_of=crashed.snapshot_id).to_pylist() == [
        {"rows": 480, "rejects": 3}
    ]
    assert run_sql(count, settings).column("n").to_pylist() == [3]


@pytest.mark.parametrize("mode", [(), ("--full",)], ids=["incremental", "full"])
def test_socrata_crash_between_the_two_commits_is_repaired_by_the_next_run(
    portal: SocrataServer, monkeypatch: pytest.MonkeyPatch, mode: tuple[str, ...]
) -> None:
    """The Socrata flow's two commits, as for B&T: a crash after the table's commit leaves
    its rejects one load behind; the next run completes them from the staged files before
    it commits anything, so ``--as-of`` the crashed load reads both at that load."""
    from civiclake.pipeline import commit as pipeline_commit
    from civiclake.query import run_sql
    from civiclake.tables.pairs import pending_rejects
    from civiclake.testing.socrata_samples import sample_row

    assert cli("socrata", "run", DATASET).exit_code == 0
    rows = sample_rows(25)
    for i in (20, 21):  # revised at the source, and no longer valid
        rows[i] = {**sample_row(i, minutes=900), "count": "bad"}
    portal.add_dataset(DATASET, rows, columns=COLUMNS)

    commit_files = tables.commit_files

    def crash(table: Any, *args: Any, **kwargs: Any) -> Any:
        if table.name()[-1].endswith("_rejects"):
            raise RuntimeError("killed between the two commits")
        return commit_files(table, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(pipeline_commit.tables, "commit_files", crash)
        crashed_run = cli("socrata", "run", DATASET, *mode)
    assert crashed_run.exit_code != 0, crashed_run.output
    settings = get_settings()
    table, rejects = "socrata.abcd_1234", "socrata.abcd_1234_rejects"
    crashed = tables.load_catalog(settings).load_table(table).current_snapshot().snapshot_id
    count = f"SELECT count(*) AS n FROM {rejects}"
    joined = f"SELECT (SELECT count(*) FROM {table}) AS rows, ({count}) AS rejects"
    # what it leaves: the table at the crashed load, its rejects at the previous load
    assert run_sql(joined, settings, as_of=crashed).to_pylist() == [{"rows": 23, "rejects": 0}]

    again = cli("socrata", "run", DATASET)  # the same rows at the source
    assert again.exit_code == 0, again.output
    assert run_sql(joined, settings, as_of=crashed).to_pylist() == [{"rows": 23, "rejects": 2}]
    ids = run_sql(f"SELECT socrata_id FROM {rejects} ORDER BY 1", settings)
    assert ids.column("socrata_id").to_pylist() == ["row-00020", "row-00021"]
    # repaired once: nothing left to complete, and a later run commits nothing
    catalog = tables.load_catalog(settings)
    assert pending_rejects(catalog, table, rejects, pipeline_commit.LOAD_MARKER) is None
    before = len(catalog.load_table(rejects).metadata.snapshots)
    assert cli("socrata", "run", DATASET).exit_code == 0
    assert len(tables.load_catalog(settings).load_table(rejects).metadata.snapshots) == before


def test_tlc_crash_between_the_two_commits_is_repaired_by_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TLC's month load is the same two commits: a crash after the table's commit is
    completed by the next load of the table (here another month) from the staged load."""
    from civiclake.query import run_sql

    header, *lines = YELLOW.read_text().splitlines()
    bad = [  # dropoff before pickup: 2 rejects a month
        f"1,2020-07-0{d} 10:00:00,2020-07-0{d} 09:00:00,1,1.5,1,N,238,75,2,8,0.5,0.5,0,0,0.3,9.3,0"
        for d in (2, 3)
    ]
    july = write_csv(tmp_path / "yellow_tripdata_2020-07.csv", header, lines[:40] + bad)
    august = write_csv(
        tmp_path / "yellow_tripdata_2020-08.csv",
        header,
        [x.replace("2020-07-", "2020-08-") for x in lines[:40] + bad],
    )
    assert cli("taxi", "run", "--from-file", str(august)).exit_code == 0

    commit_files = tables.commit_files

    def crash(table: Any, *args: Any, **kwargs: Any) -> Any:
        if table.name()[-1].endswith("_rejects"):  # the second commit
            raise RuntimeError("killed between the two commits")
        return commit_files(table, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(tables, "commit_files", crash)
        assert cli("taxi", "run", "--from-file", str(july)).exit_code != 0
    settings = get_settings()
    table, rejects = "tlc.yellow_trips", "tlc.yellow_trips_rejects"
    crashed = tables.load_catalog(settings).load_table(table).current_snapshot().snapshot_id

    def month(m: int) -> str:
        return f"(SELECT count(*) FROM {rejects} WHERE source_month = DATE '2020-0{m}-01')"

    joined = f"SELECT (SELECT count(*) FROM {table}) AS rows, {month(7)} AS jul, {month(8)} AS aug"
    # what it leaves: July in the table, its rejects missing (August's only)
    (left,) = run_sql(joined, settings, as_of=crashed).to_pylist()
    assert (left["jul"], left["aug"]) == (0, 2)
    assert left["rows"] > 40  # both months' valid rows

    assert cli("taxi", "run", "--from-file", str(august)).exit_code == 0
    assert run_sql(joined, settings, as_of=crashed).to_pylist() == [{**left, "jul": 2}]
    assert run_sql(joined, settings).to_pylist() == [{**left, "jul": 2}]
    # the usual retry, the same month again: the crashed run's rejects are completed from its
    # staged load, then the retry's own two commits replace the month again
    with monkeypatch.context() as patch:
        patch.setattr(tables, "commit_files", crash)
        assert cli("taxi", "run", "--from-file", str(july)).exit_code != 0
    retry = cli("taxi", "run", "--from-file", str(july))
    assert retry.exit_code == 0, retry.output
    assert run_sql(joined, settings).to_pylist() == [{**left, "jul": 2}]


# ---------------------------------------------------------------- re-run: nothing new


def test_socrata_rerun_with_nothing_new_commits_nothing(portal: SocrataServer) -> None:
    """The README promises "a re-run changes nothing": no snapshot either."""
    assert cli("socrata", "run", DATASET).exit_code == 0
    catalog = tables.load_catalog(get_settings())
    table = catalog.load_table("socrata.abcd_1234")
    snapshots = len(table.metadata.snapshots)
    rejects = len(catalog.load_table("socrata.abcd_1234_rejects").metadata.snapshots)
    again = cli("socrata", "run", DATASET)  # incremental: re-fetches the overlap, all the same
    assert again.exit_code == 0, again.output
    assert "unchanged (nothing committed)" in " ".join(again.output.split())
    table = tables.load_catalog(get_settings()).load_table("socrata.abcd_1234")
    assert len(table.metadata.snapshots) == snapshots
    assert len(catalog.load_table("socrata.abcd_1234_rejects").metadata.snapshots) == rejects
    # a revised row is a change: committed
    portal.add_dataset(DATASET, _revised(), columns=COLUMNS)
    changed = cli("socrata", "run", DATASET)
    assert changed.exit_code == 0, changed.output
    table = tables.load_catalog(get_settings()).load_table("socrata.abcd_1234")
    assert len(table.metadata.snapshots) > snapshots  # (a delete and an append snapshot)


def _revised() -> list[dict]:
    from civiclake.testing.socrata_samples import sample_row

    rows = sample_rows(25)
    rows[20] = {**sample_row(20, minutes=900), "zip": "NEW20"}
    return rows


def test_bnt_rerun_with_nothing_new_commits_nothing(bnt_server: SocrataServer) -> None:
    args = ("bnt", "run", "--start-date", "2024-03-20", "--stop-date", "2024-03-22")
    assert cli(*args).exit_code == 0
    catalog = tables.load_catalog(get_settings())
    counts = [len(catalog.load_table(t).metadata.snapshots) for t in (bnt.TABLE, bnt.REJECTS_TABLE)]
    again = cli(*args)
    assert again.exit_code == 0, again.output
    assert "unchanged (nothing committed)" in " ".join(again.output.split())
    catalog = tables.load_catalog(get_settings())
    after = [len(catalog.load_table(t).metadata.snapshots) for t in (bnt.TABLE, bnt.REJECTS_TABLE)]
    assert after == counts
    assert len(table_rows()) == 2 * ROWS_PER_DAY


def test_rollback_of_a_taxi_month_says_its_warehouse_is_not_rolled_back(tmp_path: Path) -> None:
    assert cli("taxi", "run", "--from-file", str(YELLOW)).exit_code == 0  # -> DuckDB
    first = tables.load_catalog(get_settings()).load_table("tlc.yellow_trips").current_snapshot()
    fewer = tmp_path / YELLOW.name
    fewer.write_text("\n".join(YELLOW.read_text().splitlines()[:50]) + "\n")
    assert cli("taxi", "run", "--from-file", str(fewer)).exit_code == 0
    result = cli("rollback", "tlc.yellow_trips", "--to", str(first.snapshot_id), "--yes")
    assert result.exit_code == 0, result.output
    assert "re-run the load with --to duckdb to re-sync" in " ".join(result.output.split())
