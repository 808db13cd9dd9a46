"""Arrow engine vs Spark engine on real specs, end to end through the CLI: a B&T range with bad
rows and the every-type Socrata sample (with a reject) give identical tables and rejects (EXCEPT
ALL both ways, lineage columns aside), the same partition specs and the same row counts in the
snapshot properties. Each engine loads into its own civiclake home."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
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
LINEAGE = ("load_run_id", "loaded_at", "rejected_at", "load_source")
COUNTS = ("rows-fetched", "rows-loaded", "rows-rejected")


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


def _run_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], names: list[str]
) -> dict[str, dict[str, tuple[pa.Table, object, dict[str, str]]]]:
    """``civiclake ARGS --engine E`` for each engine in its own home; each table's rows, its
    partition spec and its last snapshot's civiclake counts."""
    out: dict[str, dict[str, tuple[pa.Table, object, dict[str, str]]]] = {}
    for engine in ("arrow", "spark"):
        monkeypatch.setenv("CIVICLAKE_HOME", str(tmp_path / engine))
        result = CliRunner().invoke(app, [*args, "--engine", engine])
        assert result.exit_code == 0, result.output
        catalog = tables.load_catalog(get_settings())
        out[engine] = {}
        for name in names:
            table = catalog.load_table(name)
            snapshot = table.current_snapshot()
            props = snapshot.summary.additional_properties if snapshot and snapshot.summary else {}
            counts = {k: props.get(f"civiclake.{k}", "") for k in COUNTS}
            out[engine][name] = (table.scan().to_arrow(), table.spec(), counts)
    return out


def _same(left: pa.Table, right: pa.Table) -> None:
    drop = [c for c in LINEAGE if c in left.column_names]
    a, b = left.drop_columns(drop), right.drop_columns(drop)
    assert a.schema == b.schema
    con = duckdb.connect()
    con.register("a", a)
    con.register("b", b)
    for one, other in (("a", "b"), ("b", "a")):
        assert con.execute(f"SELECT * FROM {one} EXCEPT ALL SELECT * FROM {other}").fetchall() == []
    assert a.num_rows == b.num_rows


def _assert_parity(loaded: dict[str, dict[str, tuple[pa.Table, object, dict[str, str]]]]) -> None:
    for name, (rows, spec, counts) in loaded["arrow"].items():
        spark_rows, spark_spec, spark_counts = loaded["spark"][name]
        _same(rows, spark_rows)
        assert spec == spark_spec, name
        assert counts == spark_counts, name


def test_bnt_range_with_bad_rows_same_tables_on_both_engines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = bnt_rows(FIRST_DAY, 3)
    bad = [
        {**rows[0], "hour": "24"},
        {**rows[1], "vehicles_e_zpass": "lots"},
        {**rows[2], "direction": "N", "plaza_id": "x"},
    ]
    with SocrataServer({"qzve-kjga": rows + bad}) as server:
        monkeypatch.setenv("CIVICLAKE_SOCRATA_URL", server.url)
        monkeypatch.setenv("CIVICLAKE_PAGE_SIZE", "500")
        stop = (FIRST_DAY + timedelta(days=3)).isoformat()
        args = ["bnt", "run", "--start-date", FIRST_DAY.isoformat(), "--stop-date", stop]
        loaded = _run_both(tmp_path, monkeypatch, args, [bnt.TABLE, bnt.REJECTS_TABLE])
    _assert_parity(loaded)
    arrow_rows, _, counts = loaded["arrow"][bnt.TABLE]
    assert arrow_rows.num_rows == 3 * 480 and counts["rows-rejected"] == "3"
    reasons = sorted(loaded["spark"][bnt.REJECTS_TABLE][0].column("reason").to_pylist())
    assert any("hour missing or outside 0-23" in r for r in reasons)
    assert any("plaza_id" in r and "direction" in r for r in reasons)  # every failed rule


def test_socrata_every_type_sample_same_tables_on_both_engines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = sample_rows(40)
    rows[5] = {**rows[5], "count": "lots"}  # a number column: a reject with its reason
    server = SocrataServer()
    server.add_dataset(DATASET, rows, columns=COLUMNS, name="Every type")
    with server:
        monkeypatch.setenv("CIVICLAKE_SOCRATA_URL", server.url)
        monkeypatch.setenv("CIVICLAKE_PAGE_SIZE", "10")
        names = ["socrata.abcd_1234", "socrata.abcd_1234_rejects"]
        loaded = _run_both(tmp_path, monkeypatch, ["socrata", "run", DATASET], names)
    _assert_parity(loaded)
    assert loaded["arrow"][names[0]][0].num_rows == 39
    (reason,) = loaded["spark"][names[1]][0].column("reason").to_pylist()
    assert reason.startswith("count: 'lots' is not a valid number")
