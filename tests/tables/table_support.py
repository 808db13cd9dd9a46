"""Helpers of the table-operation tests (imported by name, like tests/deploy's support)."""

from __future__ import annotations

import json
from datetime import date

import pyarrow as pa
from pyiceberg.table import Table
from typer.testing import CliRunner, Result

from civiclake import tables
from civiclake.cli import app
from civiclake.config import get_settings
from civiclake.sources import bnt

FIRST_DAY = date(2024, 1, 10)  # 40 days from here cross a month boundary
ROWS_PER_DAY = 480


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def cli_json(*args: str) -> list[dict]:
    result = cli(*args, "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def load_table(name: str = bnt.TABLE) -> Table:
    return tables.load_catalog(get_settings()).load_table(name)


def full_rows(name: str, snapshot_id: int | None = None) -> pa.Table:
    """Every column of every row, in a fixed order and with the declared Arrow types."""
    schema = bnt.ARROW_SCHEMA if name == bnt.TABLE else bnt.REJECTS_ARROW_SCHEMA
    arrow = load_table(name).scan(snapshot_id=snapshot_id).to_arrow().cast(schema)
    keys = [(c, "ascending") for c in schema.names if c != "loaded_at"]
    return arrow.sort_by(keys).combine_chunks()


def warehouse_files() -> dict[str, int]:
    """Every file of the lake's Iceberg warehouse (path -> size), read through fsspec."""
    settings = get_settings()
    lake = settings.lake()
    root = lake.fs._strip_protocol(settings.warehouse_url)
    if not lake.fs.exists(root):
        return {}
    found = lake.fs.find(root, detail=True)
    return {p: int(i.get("size") or 0) for p, i in found.items() if i.get("type") != "directory"}
