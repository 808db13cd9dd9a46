"""End to end: TLC months from a local mirror -> lake -> Iceberg -> DuckDB / PostgreSQL,
with the real green October 2020 month and the real yellow sample."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
import pyarrow as pa
import pytest
from typer.testing import CliRunner, Result

from civiclake import tables
from civiclake.cli import app
from civiclake.config import get_settings
from civiclake.sources import tlc
from civiclake.warehouse import open_warehouse
from civiclake.warehouse.postgres import RangeLoad
from testsupport.files import FileServer

pytestmark = [pytest.mark.prefect, pytest.mark.usefixtures("prefect_server")]

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "tlc"
GREEN = DATA / "green_tripdata_2020-10.csv.gz"
YELLOW = DATA / "yellow_tripdata_2020-07_sample.csv"
GREEN_PATH = "/green/green_tripdata_2020-10.csv.gz"


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FileServer]:
    root = tmp_path_factory.mktemp("mirror")
    (root / "green").mkdir()
    (root / "yellow").mkdir()
    shutil.copy(GREEN, root / "green" / GREEN.name)
    # the course mirror serves gzip; the yellow sample is plain CSV: gzip it the same way
    import gzip

    (root / "yellow" / "yellow_tripdata_2020-07.csv.gz").write_bytes(
        gzip.compress(YELLOW.read_bytes())
    )
    with FileServer(root) as server:
        yield server


@pytest.fixture(autouse=True)
def _point_at_mirror(mirror: FileServer, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror.clear()
    monkeypatch.setenv("CIVICLAKE_TLC_URL", mirror.url)


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def expected(path: Path, pickup: str, dropoff: str, month: tlc.Month) -> tuple[int, dict]:
    """Rows and per-rule rejects computed independently with pandas (first rule wins)."""
    frame = pd.read_csv(path, low_memory=False)
    pu, do = pd.to_datetime(frame[pickup]), pd.to_datetime(frame[dropoff])
    outside = ~((pu >= month.start) & (pu < month.stop))
    backwards = (do < pu) & ~outside
    zero = (frame["passenger_count"] == 0) & ~outside & ~backwards
    return len(frame), {
        tlc.RULE_PICKUP_OUTSIDE_MONTH: int(outside.sum()),
        tlc.RULE_DROPOFF_BEFORE_PICKUP: int(backwards.sum()),
        tlc.RULE_PASSENGER_COUNT_ZERO: int(zero.sum()),
    }


def iceberg_count(name: str) -> int:
    return tables.load_catalog(get_settings()).load_table(name).scan().to_arrow().num_rows


def test_green_month_into_duckdb_is_idempotent_and_cached(mirror: FileServer) -> None:
    month = tlc.Month(2020, 10)
    rows, by_rule = expected(GREEN, "lpep_pickup_datetime", "lpep_dropoff_datetime", month)
    rejected = sum(by_rule.values())
    result = cli("taxi", "run", "--color", "green", "--year", "2020", "--months", "10")
    assert result.exit_code == 0, result.output
    assert f"{rows:,}" in result.output and f"{rows - rejected:,}" in result.output
    assert iceberg_count("tlc.green_trips") == rows - rejected
    assert iceberg_count("tlc.green_trips_rejects") == rejected
    with open_warehouse("duckdb", get_settings()) as warehouse:
        assert warehouse.count("tlc.green_trips") == rows - rejected
        assert warehouse.count("tlc.green_trips_rejects") == rejected
        for rule, count in by_rule.items():
            assert warehouse.count("tlc.green_trips_rejects", f"reject_reason = '{rule}'") == count
        # NULL passenger counts stay NULL
        frame = pd.read_csv(GREEN, low_memory=False)
        assert warehouse.count("tlc.green_trips", "passenger_count IS NULL") == int(
            frame["passenger_count"].isna().sum()
        )
        types = warehouse.column_types("tlc.green_trips")
    assert types["lpep_pickup_datetime"] == "TIMESTAMP"
    assert types["trip_distance"] == "DOUBLE"
    assert types["PULocationID"] == "INTEGER"
    assert mirror.gets(GREEN_PATH) == 1

    again = cli("taxi", "run", "--color", "green", "--year", "2020", "--months", "10")
    assert again.exit_code == 0, again.output
    assert mirror.gets(GREEN_PATH) == 1  # cache hit: not downloaded again within the day
    assert iceberg_count("tlc.green_trips") == rows - rejected
    with open_warehouse("duckdb", get_settings()) as warehouse:
        assert warehouse.count("tlc.green_trips") == rows - rejected
        assert warehouse.count("tlc.green_trips_rejects") == rejected

    listed = json.loads(cli("tables", "--format", "json").stdout)
    assert {t["table"] for t in listed} >= {"tlc.green_trips", "tlc.green_trips_rejects"}
    answer = cli("sql", "SELECT count(*) AS n FROM tlc.green_trips", "--format", "json")
    assert json.loads(answer.stdout) == [{"n": rows - rejected}]


def test_failed_month_loads_nothing_and_others_complete(mirror: FileServer) -> None:
    mirror.truncate("/yellow/yellow_tripdata_2020-07.csv.gz")
    result = cli("taxi", "run", "--color", "yellow", "--year", "2020", "--months", "6-7")
    assert result.exit_code == 1
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("error: 2 of 2 months failed")
    assert "yellow 2020-06: not found (HTTP 404)" in last
    assert "yellow 2020-07: truncated gzip file" in last
    assert not tables.load_catalog(get_settings()).table_exists("tlc.yellow_trips")

    mirror.clear()
    result = cli("taxi", "run", "--color", "green", "--year", "2020", "--months", "9-10")
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        "error: 1 of 2 months failed: green 2020-09: not found (HTTP 404): "
        f"{mirror.url}/green/green_tripdata_2020-09.csv.gz"
    )
    assert iceberg_count("tlc.green_trips") > 90_000  # October still loaded


def test_transient_errors_are_retried(mirror: FileServer) -> None:
    mirror.fail_next("/yellow/yellow_tripdata_2020-07.csv.gz", 503, times=2)
    result = cli("taxi", "run", "--color", "yellow", "--year", "2020", "--months", "7")
    assert result.exit_code == 0, result.output
    month_file = "/yellow/yellow_tripdata_2020-07.csv.gz"  # not the zone lookup's request
    assert [r.status for r in mirror.requests if r.path == month_file] == [503, 503, 200]


@pytest.mark.parametrize("concurrency", [4, 2])
def test_months_in_flight_follow_the_concurrency_setting(
    mirror: FileServer, monkeypatch: pytest.MonkeyPatch, concurrency: int
) -> None:
    """CIVICLAKE_TLC_CONCURRENCY is the one bound on months in flight (it was stuck at 2)."""
    sample = YELLOW.read_text()
    months = (1, 3, 5, 10)  # months of 31 days: the July sample's dates stay valid
    for m in months:
        shifted = sample.replace("2020-07-", f"2020-{m:02d}-")
        target = mirror.root / "yellow" / f"yellow_tripdata_2020-{m:02d}.csv.gz"
        target.write_bytes(gzip.compress(shifted.encode()))
    monkeypatch.setenv("CIVICLAKE_TLC_CONCURRENCY", str(concurrency))
    # answers wait until all four downloads are in flight (4 s at most): only a runner that
    # admits four months at once gets there (the zone lookup comes after the months)
    mirror.gather(len(months), timeout=4 if concurrency < len(months) else 60, prefix="/yellow/")
    result = cli("taxi", "run", "--color", "yellow", "--year", "2020", "--months", "1,3,5,10")
    assert result.exit_code == 0, result.output
    assert sorted(r.path for r in mirror.requests if r.path.startswith("/yellow/")) == [
        f"/yellow/yellow_tripdata_2020-{m:02d}.csv.gz" for m in months
    ]
    assert mirror.max_in_flight == concurrency


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--color", "purple", "--year", "2020", "--months", "10"], "unknown color 'purple'"),
        (["--color", "green", "--year", "2020", "--months", "13"], "month 2020-13 does not exist"),
        (
            ["--color", "green", "--year", "2020", "--months", "10", "--to", "oracle"],
            "unknown warehouse 'oracle'",
        ),
        (
            ["--color", "green", "--year", "2020", "--months", "10", "--to", "postgres"],
            "needs CIVICLAKE_POSTGRES_URL",
        ),
        (["--color", "green"], "give --color, --year and --months"),
    ],
)
def test_bad_parameters_exit_2(args: list[str], message: str, civiclake_home: Path) -> None:
    result = cli("taxi", "run", *args)
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not (civiclake_home / "lake").exists()


def test_an_unknown_engine_exits_2_before_any_month(
    monkeypatch: pytest.MonkeyPatch, civiclake_home: Path
) -> None:
    monkeypatch.setenv("CIVICLAKE_ENGINE", "nope")
    result = cli("taxi", "run", "--from-file", str(YELLOW))
    assert result.exit_code == 2, result.output
    assert "unknown engine 'nope' (engines: arrow, spark)" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not tables.load_catalog(get_settings()).table_exists("tlc.yellow_trips")


def test_from_file_infers_the_month(tmp_path: Path) -> None:
    result = cli("taxi", "run", "--from-file", str(YELLOW))
    assert result.exit_code == 0, result.output
    rows, by_rule = expected(
        YELLOW, "tpep_pickup_datetime", "tpep_dropoff_datetime", tlc.Month(2020, 7)
    )
    assert iceberg_count("tlc.yellow_trips") == rows - sum(by_rule.values())


def test_yellow_into_postgres(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CIVICLAKE_POSTGRES_URL", postgres_url)
    rows, by_rule = expected(
        YELLOW, "tpep_pickup_datetime", "tpep_dropoff_datetime", tlc.Month(2020, 7)
    )
    for _ in range(2):  # the second run replaces the month: same contents
        result = cli(
            "taxi",
            "run",
            "--color",
            "yellow",
            "--year",
            "2020",
            "--months",
            "7",
            "--to",
            "postgres",
        )
        assert result.exit_code == 0, result.output
        assert postgres_url.split("@")[0].split(":")[-1] not in result.output  # no password
        with open_warehouse("postgres", get_settings()) as warehouse:
            assert warehouse.count("tlc.yellow_trips") == rows - sum(by_rule.values())
            assert warehouse.count("tlc.yellow_trips_rejects") == sum(by_rule.values())
            types = warehouse.column_types("tlc.yellow_trips")
    assert types["tpep_pickup_datetime"] == "timestamp without time zone"
    assert types["passenger_count"] == "integer"
    assert types["fare_amount"] == "double precision"
    assert types["store_and_fwd_flag"] == "text"


def test_green_into_postgres_streams_and_a_failed_rerun_keeps_the_month(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """PostgreSQL is loaded while the file converts: the same rows and rejects as the file
    path, and a re-run that fails half-way (rows already streamed) leaves the month as it was."""
    monkeypatch.setenv("CIVICLAKE_POSTGRES_URL", postgres_url)
    monkeypatch.setattr(tlc, "PARQUET_BATCH_ROWS", 20_000)  # several batches per month
    writes: list[int] = []
    write = RangeLoad.write

    def counted(self: RangeLoad, batch: pa.Table) -> None:
        writes.append(batch.num_rows)
        write(self, batch)

    monkeypatch.setattr(RangeLoad, "write", counted)
    month = tlc.Month(2020, 10)
    rows, by_rule = expected(GREEN, "lpep_pickup_datetime", "lpep_dropoff_datetime", month)
    rejected = sum(by_rule.values())
    run = ["taxi", "run", "--color", "green", "--year", "2020", "--months", "10"]

    result = cli(*run, "--to", "postgres")
    assert result.exit_code == 0, result.output
    assert f"{rows:,}" in result.output and f"{rows - rejected:,}" in result.output
    assert len(writes) >= 4 and sum(writes) == rows - rejected  # streamed, batch by batch
    with open_warehouse("postgres", get_settings()) as warehouse:
        assert warehouse.count("tlc.green_trips") == rows - rejected
        assert warehouse.count("tlc.green_trips_rejects") == rejected
        for rule, count in by_rule.items():
            assert warehouse.count("tlc.green_trips_rejects", f"reject_reason = '{rule}'") == count
        frame = pd.read_csv(GREEN, low_memory=False)
        assert warehouse.count("tlc.green_trips", "passenger_count IS NULL") == int(
            frame["passenger_count"].isna().sum()
        )
    good_run = _run_ids()
    assert len(good_run) == 1
    assert iceberg_count("tlc.green_trips") == rows - rejected
    assert iceberg_count("tlc.green_trips_rejects") == rejected

    # 1. a re-run (the cached download) where the rule code raises on the third batch
    transform, calls = tlc.TlcSpec.transform, []

    def failing_rules(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("rule code broke")
        return transform(*args, **kwargs)

    monkeypatch.setattr(tlc.TlcSpec, "transform", failing_rules)
    writes.clear()
    result = cli(*run, "--to", "postgres")
    assert result.exit_code == 1
    assert "green 2020-10: rule code broke" in result.output
    assert len(writes) == 2
    _assert_month_kept(rows - rejected, rejected, good_run)
    monkeypatch.setattr(tlc.TlcSpec, "transform", transform)

    # 2. a re-run from a file that is damaged near its end: batches were already COPYed
    lines = gzip.decompress(GREEN.read_bytes())
    damaged = tmp_path / "green_tripdata_2020-10.csv.gz"
    damaged.write_bytes(gzip.compress(lines + lines.split(b"\n", 1)[1] * 5)[:-100_000])
    writes.clear()
    result = cli("taxi", "run", "--from-file", str(damaged), "--to", "postgres")
    assert result.exit_code == 1
    # (the user's file, not its raw-zone copy)
    assert f"green 2020-10: cannot read {damaged}: " in result.output
    assert writes
    _assert_month_kept(rows - rejected, rejected, good_run)

    # 3. a good re-run replaces the month: the same contents, from the new run
    result = cli("taxi", "run", "--from-file", str(GREEN), "--to", "postgres")
    assert result.exit_code == 0, result.output
    with open_warehouse("postgres", get_settings()) as warehouse:
        assert warehouse.count("tlc.green_trips") == rows - rejected
        assert warehouse.count("tlc.green_trips_rejects") == rejected
    new_run = _run_ids()
    assert len(new_run) == 1 and new_run != good_run
    assert iceberg_count("tlc.green_trips") == rows - rejected


def _run_ids() -> set[str]:
    """The load_run_id values in PostgreSQL's green trips and rejects (which run loaded them)."""
    ids: set[str] = set()
    with psycopg.connect(os.environ["CIVICLAKE_POSTGRES_URL"]) as conn:
        for table in ("tlc.green_trips", "tlc.green_trips_rejects"):
            ids |= {r[0] for r in conn.execute(f"SELECT DISTINCT load_run_id FROM {table}")}
    return ids


def _assert_month_kept(valid: int, rejected: int, run_ids: set[str]) -> None:
    with open_warehouse("postgres", get_settings()) as warehouse:
        assert warehouse.count("tlc.green_trips") == valid
        assert warehouse.count("tlc.green_trips_rejects") == rejected
    assert _run_ids() == run_ids
    assert iceberg_count("tlc.green_trips") == valid
    assert iceberg_count("tlc.green_trips_rejects") == rejected
