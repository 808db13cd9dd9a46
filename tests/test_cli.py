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
from pyiceberg.expressions import AlwaysTrue
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
    assert result.exit_code == 2  # bad input
    assert result.output.startswith("error: SQL error: Catalog Error: no table mta.nope")
    assert len(result.output.strip().splitlines()) == 1


def test_sql_on_empty_table_has_columns() -> None:
    table = tables.ensure_table(
        tables.load_catalog(get_settings()), bnt.TABLE, bnt.SCHEMA, bnt.PARTITION_SPEC
    )
    # a load of no rows (a table never loaded is not one: tests/tables/test_never_loaded.py)
    empty = bnt.ARROW_SCHEMA.empty_table()
    tables.replace_range(table, AlwaysTrue(), lambda: [empty], {"run-id": "r0"})
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


# -- text is printed verbatim; ids are not quantities; missing extras name the pip command ---


def test_values_with_brackets_and_colons_print_verbatim() -> None:
    """Rich used to read ``[s3]`` as a style tag (``a[s3]b`` printed ``ab``) and ``:x:`` as
    an emoji code: every cell of ``sql`` prints exactly what the query returned."""
    query = "SELECT 'a[s3]b' AS y, '[bold]x[/bold]' AS markup, ':thumbs_up: [link=x]z[/link]' AS z"
    result = cli("sql", query)
    assert result.exit_code == 0, result.output
    assert "a[s3]b" in result.stdout
    assert "[bold]x[/bold]" in result.stdout
    assert ":thumbs_up: [link=x]z[/link]" in result.stdout


def test_tables_and_errors_print_bracketed_text_verbatim(monkeypatch: pytest.MonkeyPatch) -> None:
    from civiclake.cli import out

    monkeypatch.setattr(out, "_width", 200)  # one line per table row
    _load_some_rows()
    catalog = tables.load_catalog(get_settings())
    table = catalog.load_table(bnt.TABLE)
    tables.replace_range(
        table,
        bnt.LoadRange(date(2024, 3, 1), date(2024, 3, 2)).table_filter(),
        lambda: [],
        {"run-id": "[red]r2", "source": "file:bnt[2024].csv"},
    )
    listed = cli("tables")
    assert "file:bnt[2024].csv" in listed.stdout and "[red]r2" in listed.stdout
    failed = cli("sql", 'SELECT * FROM mta."missing_[s3]"')
    assert failed.exit_code == 2
    assert failed.output.startswith("error: ") and "missing_[s3]" in failed.output


def _hide_modules(tmp_path: Path, *modules: str) -> dict[str, str]:
    """An environment whose Python cannot import ``modules`` (as if never installed)."""
    site = tmp_path / "hide-modules"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import sys\n"
        f"HIDDEN = {modules!r}\n"
        "class _Hide:\n"
        "    @staticmethod\n"
        "    def find_spec(name, path=None, target=None):\n"
        "        if any(name == m or name.startswith(m + '.') for m in HIDDEN):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "        return None\n"
        "sys.meta_path.insert(0, _Hide())\n"
    )
    return {**os.environ, "PYTHONPATH": str(site), "COLUMNS": "200"}


def _civiclake(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "civiclake.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_lake_without_its_driver_names_the_extra(tmp_path: Path, civiclake_home: Path) -> None:
    env = _hide_modules(tmp_path, "s3fs")
    done = _civiclake(env, "doctor", "--lake", "s3://bucket/lake")
    assert done.returncode == 1
    assert "FAIL lake: the lake s3://bucket/lake needs s3fs: pip install 'civiclake[s3]'" in (
        done.stdout
    )
    run = _civiclake(env, "bnt", "run", "--lake", "s3://bucket/lake", "--start-date", "2024-03-01")
    assert run.returncode == 2
    assert run.stderr.strip() == (
        "error: the lake s3://bucket/lake needs s3fs: pip install 'civiclake[s3]'"
    )


def test_bigquery_without_its_client_names_the_extra(tmp_path: Path, civiclake_home: Path) -> None:
    env = {
        **_hide_modules(tmp_path, "google.cloud.bigquery"),
        "CIVICLAKE_BIGQUERY_PROJECT": "my-project",
    }
    hint = "the bigquery warehouse needs google-cloud-bigquery: pip install 'civiclake[bigquery]'"
    run = _civiclake(
        env, "taxi", "run", "--color", "green", "--year", "2020", "--months", "10",
        "--to", "bigquery",
    )  # fmt: skip
    assert run.returncode == 2
    assert run.stderr.strip() == f"error: {hint}"
    assert not (civiclake_home / "lake").exists()  # failed before anything was written
    doctor = _civiclake(env, "doctor", "--to", "bigquery")
    assert doctor.returncode == 1
    assert f"FAIL warehouse bigquery: {hint}" in doctor.stdout
    assert "unexpected" not in doctor.stdout


@pytest.mark.parametrize(
    ("key", "value", "shown"),
    [
        ("snapshot_id", 8465074429383510934, "8465074429383510934"),
        ("rejects_snapshot_id", 1234567, "1234567"),
        ("iceberg_snapshot_id", 98765, "98765"),
        ("run_id", 12345, "12345"),
        ("rows_loaded", 1234567, "1,234,567"),
        ("table_rows", 0, "0"),
        ("duration_s", 2.5, "2.5"),
    ],
)
def test_ids_are_never_formatted_as_quantities(key: str, value: object, shown: str) -> None:
    from civiclake._private.display import display_value

    assert display_value(key, value) == shown


def test_run_summary_prints_the_snapshot_id_as_is() -> None:
    from civiclake.cli import _print_summary, out

    summary = {
        "table": "mta.bnt_traffic_hourly",
        "range": "[2024-03-01, 2024-03-02)",
        "rows_loaded": 1234567,
        "snapshot_id": 8465074429383510934,
        "rejects_snapshot_id": 7465074429383510934,
    }
    with out.capture() as captured:
        _print_summary(summary)
    text = captured.get()
    assert "8465074429383510934" in text and "7465074429383510934" in text
    assert "8,465" not in text and "7,465" not in text
    assert "1,234,567" in text


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        (["bnt", "run"], "[default: 7]"),
        (["bnt", "run"], "[default: 50000]"),
        (["socrata", "run"], "[default: socrata.<id>]"),
        (["deploy"], "[default: this checkout]"),
    ],
)
def test_help_texts_print_their_brackets(command: list[str], shown: str) -> None:
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert shown in result.stdout


@pytest.mark.parametrize(
    "command",
    [
        ["bnt", "run", "--start-date", "2024-03-01"],
        ["taxi", "run", "--color", "green", "--year", "2020", "--months", "10"],
        ["socrata", "run", "abcd-1234"],
    ],
)
def test_an_unknown_engine_option_is_refused_before_anything_runs(
    command: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CIVICLAKE_ENGINE", raising=False)
    result = cli(*command, "--engine", "ray")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: unknown engine 'ray' (engines: arrow, spark)"
    assert "CIVICLAKE_ENGINE" not in os.environ
    assert not (get_settings().home_dir / "lake").exists()  # nothing fetched or written


def test_the_engine_option_reaches_the_run_as_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """--engine overrides CIVICLAKE_ENGINE for the run (checks and flow read the setting)."""
    from civiclake.cli._base import use_engine

    monkeypatch.setenv("CIVICLAKE_ENGINE", "arrow")
    use_engine("spark")
    assert get_settings().engine == "spark"
    use_engine(None)
    assert get_settings().engine == "spark"


def test_a_command_flow_run_sends_no_heartbeats_unless_configured() -> None:
    """Prefect's heartbeat thread made every command wait 0-1 s at its end."""
    from prefect.settings import (
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        get_current_settings,
        temporary_settings,
    )

    from civiclake.cli._runs import command_flow_run

    assert get_current_settings().flows.heartbeat_frequency == 180  # Prefect's default
    with command_flow_run():
        assert get_current_settings().flows.heartbeat_frequency is None
    assert get_current_settings().flows.heartbeat_frequency == 180
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 60}), command_flow_run():
        assert get_current_settings().flows.heartbeat_frequency == 60  # the user's choice
