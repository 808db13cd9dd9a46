"""One lake for every report test: the demo sample and the real green 2020-10 month loaded by
the real flows (CLI, ``--from-file``), a Socrata-like table and three edge-case tables written
straight to Iceberg. Built once per session (~15 s); each test points CIVICLAKE_HOME at it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import In
from report_support import (
    EMPTY_TABLE,
    GREEN,
    NO_TIME_TABLE,
    ONE_ROW_TABLE,
    PERMITS_ROWS,
    PERMITS_TABLE,
    REVISED_CHANGED,
    REVISED_ROWS,
    REVISED_TABLE,
    REVISED_UNDONE,
    SAMPLE_CSV,
    SOCRATA_ROWS,
    SOCRATA_TABLE,
    Lake,
    permits,
    revised,
    socrata_like,
)
from typer.testing import CliRunner

from civiclake import tables
from civiclake.cli import app
from civiclake.config import get_settings
from civiclake.tables import history


def _write(
    identifier: str,
    table: pa.Table,
    props: dict[str, str],
    partition: tuple[str, str] | None = None,
) -> None:
    catalog = tables.load_catalog(get_settings())
    target = tables.ensure_table_for(catalog, identifier, table.schema, partition=partition)
    prefixed = {tables.SNAPSHOT_PROPERTY_PREFIX + k: v for k, v in props.items()}
    target.append(table, snapshot_properties=prefixed)


@pytest.fixture(scope="session")
def lake(tmp_path_factory: pytest.TempPathFactory, prefect_server: None) -> Iterator[Lake]:
    home = tmp_path_factory.mktemp("report-home")
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("CIVICLAKE_")]:
            mp.delenv(key)
        mp.setenv("CIVICLAKE_HOME", str(home))
        runner = CliRunner()
        done = runner.invoke(app, ["bnt", "run", "--from-file", str(SAMPLE_CSV)])
        assert done.exit_code == 0, done.output
        # the real month; taxi_zone_lookup.csv sits next to it, as an offline run brings it
        done = runner.invoke(app, ["taxi", "run", "--from-file", str(GREEN)])
        assert done.exit_code == 0, done.output
        _write(SOCRATA_TABLE, socrata_like(SOCRATA_ROWS), {"run-id": "r1", "source": "socrata"})
        _write(
            PERMITS_TABLE,
            permits(PERMITS_ROWS),
            {"run-id": "p1", "source": "socrata"},
            partition=("month", "issued_date"),
        )
        catalog = tables.load_catalog(get_settings())
        tables.ensure_table_for(
            catalog, EMPTY_TABLE, pa.schema([("id", pa.int64()), ("at", pa.timestamp("us"))])
        )
        _write(
            ONE_ROW_TABLE,
            pa.table({"id": [1], "at": pa.array([datetime(2024, 5, 1, 12)], pa.timestamp("us"))}),
            {"run-id": "one"},
        )
        _write(
            NO_TIME_TABLE,
            pa.table({"code": ["a", "b", "a", None], "value": [1.5, 2.5, None, 4.0]}),
            {"run-id": "nt"},
        )
        _revise(catalog)
    yield Lake(home)


def _revise(catalog: Catalog) -> None:
    """What an incremental load does to a table: a load of 20,000 rows (one file), then 800 of
    them replaced through the flows' own commit (``replace_range``: the file is rewritten),
    then 300 more replaced and rolled back (``civiclake rollback``'s code)."""
    _write(REVISED_TABLE, revised(range(REVISED_ROWS), 1), {"run-id": "v1"})
    target = catalog.load_table(REVISED_TABLE)
    for version, count in ((2, REVISED_CHANGED), (3, REVISED_UNDONE)):
        ids = range(count)
        tables.replace_range(
            target,
            In("id", list(ids)),
            lambda ids=ids, version=version: [revised(ids, version)],
            {"run-id": f"v{version}"},
        )
        if version == 2:
            keep = target.current_snapshot()
    assert keep is not None
    history.rollback(target, history.plan_rollback(target, REVISED_TABLE, keep.snapshot_id))


@pytest.fixture
def at_lake(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> Lake:
    monkeypatch.setenv("CIVICLAKE_HOME", str(lake.home))
    return lake
