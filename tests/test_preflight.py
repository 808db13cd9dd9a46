"""The run commands' checks are ``civiclake.flows.preflight``'s, run before Prefect starts."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from civiclake.cli import app
from civiclake.config import get_settings
from civiclake.errors import ParameterError
from civiclake.flows import preflight


def error_line(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return result.exit_code, lines[0]


def refusal(check: object, **kwargs: object) -> str:
    with pytest.raises(ParameterError) as caught:
        check(get_settings(), **kwargs)  # type: ignore[operator]
    return f"error: {caught.value}"


def test_preflight_imports_no_prefect(civiclake_home: Path) -> None:
    code = (
        "import sys\n"
        "from civiclake.flows import preflight\n"
        "from civiclake.config import get_settings\n"
        "try:\n"
        "    preflight.bnt(get_settings(), from_file=None, to='oracle',\n"
        "                  warehouse_block=None, lake_block=None)\n"
        "except Exception as exc:\n"
        "    print(exc)\n"
        "assert 'prefect' not in sys.modules, 'prefect was imported'\n"
    )
    env = {**os.environ, "CIVICLAKE_HOME": str(civiclake_home)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "unknown warehouse 'oracle'" in done.stdout


def test_bnt_run_refuses_what_preflight_refuses(civiclake_home: Path) -> None:
    expected = refusal(
        preflight.bnt,
        start_date=date(2023, 4, 10),
        stop_date=date(2023, 4, 1),
        from_file=None,
        to=None,
        warehouse_block=None,
        lake_block=None,
    )
    code, line = error_line("bnt", "run", "--start-date", "2023-04-10", "--stop-date", "2023-04-01")
    assert (code, line) == (2, expected)
    assert "must be after" in line

    expected = refusal(
        preflight.bnt,
        from_file=None,
        to=None,
        warehouse_block=None,
        lake_block=None,
    )
    assert error_line("bnt", "run") == (2, expected)
    assert "is empty: give --start-date" in expected


def test_socrata_run_refuses_what_preflight_refuses(civiclake_home: Path) -> None:
    expected = refusal(
        preflight.socrata,
        dataset="abcd-1234",
        table=None,
        full=False,
        partition=None,
        where=None,
        date_field=None,
        portal=None,
        to=None,
        warehouse_block="pg",
        lake_block=None,
    )
    assert error_line("socrata", "run", "abcd-1234", "--warehouse-block", "pg") == (2, expected)
    assert "give --to as well" in expected


def test_taxi_run_refuses_what_preflight_refuses(civiclake_home: Path, tmp_path: Path) -> None:
    two_months = dict(color="green", year=2020, months="1-2", to="duckdb")
    month_file = tmp_path / "trips.csv"
    month_file.write_text("a,b\n1,2\n")
    expected = refusal(
        preflight.tlc,
        **two_months,
        from_file=str(month_file),
        warehouse_block=None,
        lake_block=None,
    )
    code, line = error_line(
        "taxi", "run", "--color", "green", "--year", "2020", "--months", "1-2",
        "--from-file", str(month_file),
    )  # fmt: skip
    assert (code, line) == (2, expected)
    assert "loads one month" in expected

    expected = refusal(
        preflight.tlc, **{**two_months, "to": "oracle"}, from_file=None, warehouse_block=None,
        lake_block=None,
    )  # fmt: skip
    assert error_line(
        "taxi", "run", "--color", "green", "--year", "2020", "--months", "1-2", "--to", "oracle"
    ) == (2, expected)
