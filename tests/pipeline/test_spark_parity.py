"""Arrow engine vs Spark engine on real specs, end to end through the CLI: one suite over a B&T
range with bad rows, the every-type Socrata sample (with a reject) and the real green 2020-10
TLC month. Each engine loads into its own civiclake home; then, for the table AND its rejects
table, both engines must give the same rows (EXCEPT ALL both ways, lineage columns aside), the
same rejects with the same reasons, the same column types (the whole Iceberg schema: names,
field ids, types, required), the same partition spec and the same snapshot properties (every
key; the values too, except the ones listed in ``PER_RUN`` and ``FILE_LAYOUT``)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pyiceberg.partitioning import PartitionSpec
from pyiceberg.schema import Schema
from typer.testing import CliRunner

from civiclake import tables
from civiclake.cli import app
from civiclake.config import get_settings
from civiclake.sources import bnt
from civiclake.testing.socrata import SocrataServer, bnt_rows
from civiclake.testing.socrata_samples import COLUMNS, DATASET, sample_rows

pytestmark = [
    pytest.mark.spark,
    pytest.mark.slow,
    pytest.mark.prefect,
    pytest.mark.usefixtures("prefect_server"),
]
pyspark = pytest.importorskip("pyspark")

FIRST_DAY = date.today() - timedelta(days=20)
GREEN = Path(__file__).resolve().parents[2].parent / "shared/data/tlc/green_tripdata_2020-10.csv.gz"
LINEAGE = ("load_run_id", "loaded_at", "rejected_at", "load_source")
"""Columns whose values are the run's own (its id, its clock): compared by type only."""
PER_RUN = frozenset({"civiclake.run-id"})
"""Snapshot properties whose values legitimately differ between two runs: the run's id (no
timestamp, duration or engine name is recorded as a snapshot property)."""
FILE_LAYOUT = frozenset(
    {"added-data-files", "total-data-files", "added-files-size", "total-files-size"}
)
"""Iceberg's own counts of data files and bytes: the Spark engine writes one file per
partition per TASK (the Arrow engine one per partition), so these follow the file layout; the
record counts (``added-records``, ``total-records``...) must still be equal."""


@dataclass(frozen=True)
class Loaded:
    """What one engine left in one table."""

    rows: pa.Table
    schema: Schema
    spec: PartitionSpec
    summary: dict[str, str]  # the current snapshot's summary: operation and every property


@dataclass(frozen=True)
class Case:
    args: list[str]
    tables: tuple[str, str]  # the table, its rejects table
    source: Callable[[pytest.MonkeyPatch], AbstractContextManager[object]]
    check: Callable[[dict[str, dict[str, Loaded]]], None]


@pytest.fixture(scope="module", autouse=True)
def _one_session() -> Iterator[None]:
    yield
    from civiclake.pipeline.engines import spark

    spark.stop_session()


@pytest.fixture(autouse=True)
def _small_spark(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CIVICLAKE_SPARK_MASTER", "local[2]")
    monkeypatch.setenv(
        "CIVICLAKE_SPARK_CONF",
        json.dumps({"spark.driver.memory": "512m", "spark.executor.memory": "512m"}),
    )


# -- the cases -------------------------------------------------------------------------------


@contextmanager
def _bnt_source(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    rows = bnt_rows(FIRST_DAY, 3)
    bad = [
        {**rows[0], "hour": "24"},
        {**rows[1], "vehicles_e_zpass": "lots"},
        {**rows[2], "direction": "N", "plaza_id": "x"},
    ]
    with SocrataServer({"qzve-kjga": rows + bad}) as server:
        monkeypatch.setenv("CIVICLAKE_SOCRATA_URL", server.url)
        monkeypatch.setenv("CIVICLAKE_PAGE_SIZE", "500")
        yield


def _bnt_check(loaded: dict[str, dict[str, Loaded]]) -> None:
    arrow = loaded["arrow"][bnt.TABLE]
    assert arrow.rows.num_rows == 3 * 480 and arrow.summary["civiclake.rows-rejected"] == "3"
    reasons = sorted(loaded["spark"][bnt.REJECTS_TABLE].rows.column("reason").to_pylist())
    assert any("hour missing or outside 0-23" in r for r in reasons)
    assert any("plaza_id" in r and "direction" in r for r in reasons)  # every failed rule


@contextmanager
def _socrata_source(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    rows = sample_rows(40)
    rows[5] = {**rows[5], "count": "lots"}  # a number column: a reject with its reason
    server = SocrataServer()
    server.add_dataset(DATASET, rows, columns=COLUMNS, name="Every type")
    with server:
        monkeypatch.setenv("CIVICLAKE_SOCRATA_URL", server.url)
        monkeypatch.setenv("CIVICLAKE_PAGE_SIZE", "10")
        yield


def _socrata_check(loaded: dict[str, dict[str, Loaded]]) -> None:
    assert loaded["arrow"]["socrata.abcd_1234"].rows.num_rows == 39
    (reason,) = loaded["spark"]["socrata.abcd_1234_rejects"].rows.column("reason").to_pylist()
    assert reason.startswith("count: 'lots' is not a valid number")


def _green_check(loaded: dict[str, dict[str, Loaded]]) -> None:
    rows = loaded["spark"]["tlc.green_trips"].rows
    assert rows.num_rows == 94_852
    assert loaded["spark"]["tlc.green_trips_rejects"].rows.num_rows == 268
    assert round(pc.sum(rows.column("total_amount")).as_py(), 2) == 2_192_954.40


CASES = {
    "bnt-range-with-bad-rows": Case(
        [
            "bnt",
            "run",
            "--start-date",
            FIRST_DAY.isoformat(),
            "--stop-date",
            (FIRST_DAY + timedelta(days=3)).isoformat(),
        ],
        (bnt.TABLE, bnt.REJECTS_TABLE),
        _bnt_source,
        _bnt_check,
    ),
    "socrata-every-type": Case(
        ["socrata", "run", DATASET],
        ("socrata.abcd_1234", "socrata.abcd_1234_rejects"),
        _socrata_source,
        _socrata_check,
    ),
    "tlc-green-2020-10": Case(
        ["taxi", "run", "--from-file", str(GREEN)],
        ("tlc.green_trips", "tlc.green_trips_rejects"),
        lambda monkeypatch: nullcontext(),
        _green_check,
    ),
}


# -- the suite -------------------------------------------------------------------------------


def _run_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: Case
) -> dict[str, dict[str, Loaded]]:
    """``civiclake ARGS --engine E`` for each engine in its own home; what each table holds."""
    out: dict[str, dict[str, Loaded]] = {}
    with case.source(monkeypatch):
        for engine in ("arrow", "spark"):
            monkeypatch.setenv("CIVICLAKE_HOME", str(tmp_path / engine))
            result = CliRunner().invoke(app, [*case.args, "--engine", engine])
            assert result.exit_code == 0, result.output
            if case.args[0] != "taxi":  # (taxi prints a table of months)
                # the summary says which engine staged the load, and in how many seconds
                assert re.search(rf"engine\W+{engine}\b", result.output), result.output
                assert re.search(r"stage s\W+[0-9.]+", result.output), result.output
            catalog = tables.load_catalog(get_settings())
            out[engine] = {}
            for name in case.tables:
                table = catalog.load_table(name)
                snapshot = table.current_snapshot()
                assert snapshot is not None and snapshot.summary is not None, name
                summary = {
                    "operation": snapshot.summary.operation.value,
                    **snapshot.summary.additional_properties,
                }
                out[engine][name] = Loaded(
                    table.scan().to_arrow(), table.schema(), table.spec(), summary
                )
    return out


def _same_rows(left: pa.Table, right: pa.Table) -> None:
    drop = [c for c in LINEAGE if c in left.column_names]
    a, b = left.drop_columns(drop), right.drop_columns(drop)
    assert a.schema == b.schema
    con = duckdb.connect()
    con.register("a", a)
    con.register("b", b)
    for one, other in (("a", "b"), ("b", "a")):
        assert con.execute(f"SELECT * FROM {one} EXCEPT ALL SELECT * FROM {other}").fetchall() == []
    assert a.num_rows == b.num_rows


@pytest.mark.parametrize("name", list(CASES))
def test_both_engines_give_the_same_tables(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = CASES[name]
    loaded = _run_both(tmp_path, monkeypatch, case)
    for table in case.tables:
        arrow, spark = loaded["arrow"][table], loaded["spark"][table]
        _same_rows(arrow.rows, spark.rows)
        assert arrow.rows.schema == spark.rows.schema, table  # the lineage columns' types too
        assert spark.schema.as_struct() == arrow.schema.as_struct(), table
        assert spark.schema.identifier_field_ids == arrow.schema.identifier_field_ids, table
        assert spark.spec == arrow.spec, table
        assert spark.summary.keys() == arrow.summary.keys(), table
        differ = {
            key: (arrow.summary[key], spark.summary[key])
            for key in arrow.summary.keys() - PER_RUN - FILE_LAYOUT
            if arrow.summary[key] != spark.summary[key]
        }
        assert differ == {}, table
        for key in PER_RUN:  # really the run's own: each run wrote its own id
            if key in arrow.summary:
                assert arrow.summary[key] != spark.summary[key], (table, key)
    case.check(loaded)
