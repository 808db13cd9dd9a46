"""CLI behaviour that needs no Prefect: parameter errors, sql, tables, import cost."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner, Result

from civiclake import tables
from civiclake.cli import app
from civiclake.config import get_settings
from civiclake.sources import bnt


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--start-date", "2023-13-01"], "--start-date: '2023-13-01' is not a date (YYYY-MM-DD)"),
        (
            ["--start-date", "2023-04-10", "--stop-date", "04/27/2023"],
            "--stop-date: '04/27/2023' is not a date",
        ),
        (["--start-date", "2023-04-10", "--stop-date", "2023-04-10"], "must be after"),
        (["--start-date", "2023-04-10", "--stop-date", "2023-04-01"], "must be after"),
        (["--from-file", "x.csv", "--start-date", "2023-04-10"], "drop the date options"),
        ([], "is empty: give --start-date"),
    ],
)
def test_bad_parameters_exit_2_and_write_nothing(
    args: list[str], message: str, civiclake_home: Path
) -> None:
    result = cli("bnt", "run", *args)
    assert result.exit_code == 2
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (civiclake_home / "lake").exists()


def test_typer_rejects_bad_option_values() -> None:
    assert cli("bnt", "run", "--page-size", "0").exit_code == 2
    assert cli("bnt", "run", "--lookback-days", "-1").exit_code == 2


def _load_some_rows() -> None:
    catalog = tables.load_catalog(get_settings())
    table = tables.ensure_table(catalog, bnt.TABLE, bnt.SCHEMA, bnt.PARTITION_SPEC)
    now = datetime.now(UTC)
    data = pa.Table.from_pylist(
        [
            {
                "plaza_id": p,
                "facility": bnt.PLAZA_FACILITIES[p],
                "date": date(2024, 3, d),
                "hour": 1,
                "direction": "I",
                "vehicles_e_zpass": 10 * d,
                "vehicles_vtoll": p,
                "load_run_id": "r1",
                "load_source": "test",
                "loaded_at": now,
            }
            for p in (21, 30)
            for d in (1, 2)
        ],
        schema=bnt.ARROW_SCHEMA,
    )
    tables.replace_range(
        table,
        bnt.LoadRange(date(2024, 3, 1), date(2024, 3, 3)).table_filter(),
        lambda: [data],
        {"run-id": "r1", "source": "test"},
    )


def test_sql_formats() -> None:
    _load_some_rows()
    query = (
        "SELECT plaza_id, date, sum(vehicles_e_zpass) AS ez FROM mta.bnt_traffic_hourly "
        "GROUP BY ALL ORDER BY ALL"
    )
    as_json = cli("sql", query, "--format", "json")
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout) == [
        {"plaza_id": 21, "date": "2024-03-01", "ez": 10},
        {"plaza_id": 21, "date": "2024-03-02", "ez": 20},
        {"plaza_id": 30, "date": "2024-03-01", "ez": 10},
        {"plaza_id": 30, "date": "2024-03-02", "ez": 20},
    ]
    as_csv = cli("sql", query, "--format", "csv")
    assert list(csv.reader(io.StringIO(as_csv.stdout)))[:2] == [
        ["plaza_id", "date", "ez"],
        ["21", "2024-03-01", "10"],
    ]
    as_table = cli("sql", "SELECT count(*) AS n FROM mta.bnt_traffic_hourly")
    assert "4" in as_table.stdout and "1 row" in as_table.stdout


def test_sql_errors_are_one_line() -> None:
    result = cli("sql", "SELECT * FROM mta.nope")
    assert result.exit_code == 1
    assert result.output.startswith("error: SQL error: Catalog Error")
    assert len(result.output.strip().splitlines()) == 1


def test_sql_on_empty_table_has_columns() -> None:
    tables.ensure_table(
        tables.load_catalog(get_settings()), bnt.TABLE, bnt.SCHEMA, bnt.PARTITION_SPEC
    )
    result = cli("sql", "SELECT * FROM mta.bnt_traffic_hourly", "--format", "csv")
    assert result.exit_code == 0
    assert result.stdout.strip().startswith("plaza_id,facility,date,hour")


def test_tables_lists_counts_and_last_load() -> None:
    assert "no tables yet" in cli("tables").stdout
    _load_some_rows()
    result = cli("tables")
    assert result.exit_code == 0
    assert "mta.bnt_traffic_hourly" in result.stdout and "r1" in result.stdout
    (listed,) = json.loads(cli("tables", "--format", "json").stdout)
    assert listed["table"] == "mta.bnt_traffic_hourly"
    assert (listed["rows"], listed["snapshots"], listed["last_run_id"]) == (4, 1, "r1")
    assert listed["last_source"] == "test"


def test_sql_and_tables_do_not_import_prefect(civiclake_home: Path) -> None:
    _load_some_rows()
    code = (
        "import sys\n"
        "from civiclake.cli import app\n"
        "for args in (['tables'], ['sql', 'SELECT count(*) FROM mta.bnt_traffic_hourly'],"
        " ['--help']):\n"
        "    try:\n"
        "        app(args)\n"
        "    except SystemExit as e:\n"
        "        assert e.code in (0, None), e.code\n"
        "assert 'prefect' not in sys.modules, 'prefect was imported'\n"
    )
    env = {**os.environ, "CIVICLAKE_HOME": str(civiclake_home)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_deploy_needs_a_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    result = cli("deploy")
    assert result.exit_code == 2
    assert "needs a running Prefect server" in result.output
    assert len(result.output.strip().splitlines()) == 1
