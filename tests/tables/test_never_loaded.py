"""Tables a first load created and never committed to (it was killed before its commit): not
listed, and the next load's ``ensure_table_for`` takes them as new — kept when they are what
it would create, made anew when their columns or partitioning differ; a loaded table is never
touched that way."""

from __future__ import annotations

import json

import pyarrow as pa
from pyiceberg.expressions import AlwaysTrue

from civiclake import tables
from civiclake.config import get_settings
from civiclake.sources import socrata_dataset as datasets
from civiclake.testing.socrata import tabular_view
from civiclake.testing.socrata_samples import COLUMNS, DATASET

NAME = "socrata.abcd_1234"


def every_type() -> pa.Schema:
    view = tabular_view(DATASET, COLUMNS, "Sample", 10)
    return datasets.spec_from_view(view, portal="https://data.example.org").arrow_schema()


def test_a_phantom_of_the_same_shape_is_kept() -> None:
    catalog = tables.load_catalog(get_settings())
    schema = every_type()
    first = tables.ensure_table_for(catalog, NAME, schema, partition=("month", "closed_at"))
    assert tables.never_loaded(first)
    again = tables.ensure_table_for(
        catalog, NAME, schema, partition=("month", "closed_at"), evolve=True
    )
    assert again.metadata.table_uuid == first.metadata.table_uuid
    assert [t.identifier for t in tables.summarize(catalog)] == []  # not listed


def test_a_phantom_of_another_shape_is_made_anew() -> None:
    catalog = tables.load_catalog(get_settings())
    schema = every_type()
    first = tables.ensure_table_for(catalog, NAME, schema, partition=("month", "closed_at"))
    by_day = tables.ensure_table_for(catalog, NAME, schema, partition=("day", "closed_at"))
    assert by_day.metadata.table_uuid != first.metadata.table_uuid
    assert [str(f.transform) for f in by_day.spec().fields] == ["day"]
    fewer = pa.schema([schema.field("socrata_id"), schema.field("closed_at")])
    other = tables.ensure_table_for(catalog, NAME, fewer, evolve=True)
    assert other.schema().column_names == ["socrata_id", "closed_at"]  # none left over
    assert other.spec().is_unpartitioned()


def test_a_loaded_table_is_never_made_anew() -> None:
    catalog = tables.load_catalog(get_settings())
    schema = pa.schema([("n", pa.int64())])
    table = tables.ensure_table_for(catalog, "ns.loaded", schema)
    tables.replace_range(table, AlwaysTrue(), lambda: [pa.table({"n": [1]})], {"run-id": "r"})
    wider = pa.schema([("n", pa.int64()), ("m", pa.string())])
    same = tables.ensure_table_for(catalog, "ns.loaded", wider, evolve=True)
    assert same.metadata.table_uuid == table.metadata.table_uuid
    assert same.schema().column_names == ["n", "m"]  # evolved, as before
    assert same.scan().to_arrow().column("n").to_pylist() == [1]
    assert [t.identifier for t in tables.summarize(catalog)] == ["ns.loaded"]


def test_sql_and_doctor_leave_out_a_table_never_loaded() -> None:
    """As ``tables`` and ``report`` do: SQL does not find it, doctor does not count it."""
    from typer.testing import CliRunner

    from civiclake.cli import app

    catalog = tables.load_catalog(get_settings())
    schema = pa.schema([("n", pa.int64())])
    loaded = tables.ensure_table_for(catalog, "ns.loaded", schema)
    tables.replace_range(loaded, AlwaysTrue(), lambda: [pa.table({"n": [1]})], {"run-id": "r"})
    tables.ensure_table_for(catalog, "ns.phantom", schema)  # a first load killed before commit
    runner = CliRunner()

    phantom = runner.invoke(app, ["sql", "SELECT count(*) AS n FROM ns.phantom"])
    assert phantom.exit_code == 2, phantom.output
    assert "no table ns.phantom in the catalog" in phantom.output
    assert len(phantom.output.strip().splitlines()) == 1
    both = "SELECT count(*) AS n FROM ns.loaded, ns.phantom"
    assert "no table ns.phantom in the catalog" in runner.invoke(app, ["sql", both]).output
    counted = runner.invoke(app, ["sql", "SELECT count(*) AS n FROM ns.loaded", "-f", "json"])
    assert counted.exit_code == 0, counted.output
    assert json.loads(counted.stdout) == [{"n": 1}]

    doctor = runner.invoke(app, ["doctor"])
    assert doctor.exit_code == 0, doctor.output
    (line,) = [line for line in doctor.stdout.splitlines() if line.startswith("ok   catalog")]
    assert ": 1 table;" in line, line
