"""``civiclake doctor`` on the local defaults and on a real PostgreSQL server (object-store
lakes are checked in tests/lake)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from civiclake.cli import app
from testsupport.postgres import PostgresServer


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def test_local_defaults_are_healthy_and_left_unchanged(civiclake_home: Path) -> None:
    result = cli("doctor")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "ok   lake",
        "ok   catalog",
        "ok   warehouse duckdb",
    ]
    # probes are deleted and the DuckDB probe table was rolled back
    assert not list((civiclake_home / "lake").rglob("probe-*"))
    from civiclake.config import get_settings
    from civiclake.warehouse import open_warehouse

    with open_warehouse("duckdb", get_settings()) as warehouse:
        assert warehouse.column_types("main.__civiclake_probe") == {}


def test_a_lake_that_is_not_a_folder_fails_precisely(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = cli("doctor", "--lake", (blocker / "lake").as_uri())
    assert result.exit_code == 1
    assert f"FAIL lake: lake {(blocker / 'lake').as_uri()}: {blocker} is not a writable folder" in (
        result.stdout
    )
    assert "ok   warehouse duckdb" in result.stdout  # the other checks still ran


def test_unsupported_lake_and_unknown_warehouse_are_parameter_errors() -> None:
    bad_lake = cli("doctor", "--lake", "ftp://host/x")
    assert bad_lake.exit_code == 1
    assert "unsupported lake URL 'ftp://host/x'" in bad_lake.stdout
    bad_kind = cli("doctor", "--to", "oracle")
    assert bad_kind.exit_code == 2
    assert "unknown warehouse 'oracle'" in bad_kind.output


@pytest.mark.slow
def test_postgres_is_checked_when_configured(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CIVICLAKE_POSTGRES_URL", postgres_server.url)
    result = cli("doctor")
    assert result.exit_code == 0, result.output
    assert "ok   warehouse postgres: PostgreSQL 127.0.0.1:" in result.stdout
    assert "may create schemas and tables" in result.stdout

    wrong = postgres_server.url.replace(postgres_server.password, "wrong-password")
    monkeypatch.setenv("CIVICLAKE_POSTGRES_URL", wrong)
    result = cli("doctor", "--to", "postgres")
    assert result.exit_code == 1
    assert "FAIL warehouse postgres: cannot connect to PostgreSQL at 127.0.0.1:" in result.stdout
    assert "password authentication failed" in result.stdout
    assert "wrong-password" not in result.output
    assert postgres_server.password not in result.output
