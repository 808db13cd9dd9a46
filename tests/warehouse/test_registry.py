"""The warehouse registry: every name and check the CLI, the flows, the doctor and the blocks use
comes from ``WAREHOUSE_MODULES`` and its capabilities, so a new entry reaches all of them."""

from __future__ import annotations

import dataclasses

import pytest
from typer.testing import CliRunner

from civiclake.blocks import WAREHOUSE_BLOCKS
from civiclake.cli import app
from civiclake.config import get_settings
from civiclake.doctor import configured_warehouses
from civiclake.errors import ParameterError
from civiclake.flows._params import WarehouseKind
from civiclake.slices import Window
from civiclake.warehouse import (
    WAREHOUSE_KINDS,
    WAREHOUSE_MODULES,
    Capabilities,
    check_configured,
    check_merges,
    describe_kinds,
    open_streaming,
)


def test_the_names_come_from_the_registry() -> None:
    assert WAREHOUSE_KINDS == tuple(WAREHOUSE_MODULES) == ("duckdb", "postgres", "bigquery")
    assert [kind.value for kind in WarehouseKind] == list(WAREHOUSE_KINDS)
    assert WarehouseKind("postgres") is WarehouseKind.postgres
    slugs = [block.get_block_type_slug() for block in WAREHOUSE_BLOCKS]
    assert slugs == ["civiclake-postgres", "civiclake-bigquery"]
    assert describe_kinds() == "duckdb (embedded), postgres or bigquery"


def test_every_run_command_offers_every_warehouse() -> None:
    for command in (["bnt", "run"], ["socrata", "run"]):
        result = CliRunner().invoke(app, [*command, "--help"], terminal_width=200)
        assert result.exit_code == 0
        assert "duckdb (embedded), postgres or bigquery" in " ".join(result.output.split())


def test_the_doctor_checks_the_warehouses_whose_settings_are_present(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert configured_warehouses(get_settings()) == ["duckdb"]
    monkeypatch.setenv("CIVICLAKE_BIGQUERY_PROJECT", "my-project")
    assert configured_warehouses(get_settings()) == ["duckdb", "bigquery"]
    monkeypatch.setenv("CIVICLAKE_POSTGRES_URL", "postgresql://u@127.0.0.1:1/db")
    assert configured_warehouses(get_settings()) == ["duckdb", "postgres", "bigquery"]


def test_missing_settings_are_named_by_the_registry() -> None:
    with pytest.raises(ParameterError, match=r"^--to postgres needs CIVICLAKE_POSTGRES_URL \("):
        check_configured("postgres", get_settings())
    with pytest.raises(ParameterError, match=r"^--to bigquery needs CIVICLAKE_BIGQUERY_PROJECT or"):
        check_configured("bigquery", get_settings())
    check_configured("bigquery", get_settings(), block=True)  # a block will provide them


def test_every_warehouse_merges_now() -> None:
    for kind, entry in WAREHOUSE_MODULES.items():
        assert entry.merges, kind
        check_merges(kind, get_settings(), block=True)


def test_a_warehouse_that_cannot_merge_is_refused_for_a_socrata_dataset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What a future warehouse declaring windows only would get, with no name tested anywhere."""
    windows_only = Capabilities(slices=frozenset({Window}), evolves=False)
    entry = dataclasses.replace(WAREHOUSE_MODULES["duckdb"], capabilities=windows_only)
    monkeypatch.setitem(WAREHOUSE_MODULES, "duckdb", entry)

    with pytest.raises(ParameterError, match=r"^--to duckdb: this warehouse does not replace"):
        check_merges("duckdb", get_settings())


def test_streaming_while_staging_is_a_capability() -> None:
    streaming = [k for k, e in WAREHOUSE_MODULES.items() if e.capabilities.streams_while_staging]
    assert streaming == ["postgres"]
    with pytest.raises(ParameterError, match="does not load rows while they are staged"):
        open_streaming("duckdb", get_settings())
