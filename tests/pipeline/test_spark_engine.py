"""The Spark engine on the toy spec of test_arrow_engine: the same tables as the Arrow engine,
on ``local[2]`` and on a real standalone cluster (master + worker via spark-daemon.sh), with
the driver committing; failures commit nothing. One Spark session per master for the module."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import test_arrow_engine
from test_arrow_engine import DaysSpec, _ctx, _write_raw

from civiclake import tables
from civiclake.config import get_settings
from civiclake.errors import CivicLakeError
from civiclake.lake import Lake
from civiclake.pipeline import RunContext, Staged, commit as pipeline_commit
from civiclake.pipeline.engines import get_stage, spark
from civiclake.slices import WholeTable, Window
from testsupport.objectstores import ObjectStore, use_env
from testsupport.spark import SparkCluster

pytestmark = [pytest.mark.spark, pytest.mark.slow]
pyspark = pytest.importorskip("pyspark")

SECRET_PROPERTY = ("spark.civiclake.test.secret", "s3cr3t-not-in-argv")
SMALL = {
    "spark.driver.memory": "512m",
    "spark.executor.memory": "512m",
    SECRET_PROPERTY[0]: SECRET_PROPERTY[1],
}
WINDOW = Window("day", date(2024, 1, 1), date(2024, 4, 1))


class SparkDays(DaysSpec):
    """The same spec writing other tables, to compare both engines' results."""

    table = "toy.days_spark"
    rejects_table = "toy.days_spark_rejects"


class FailingDays(DaysSpec):
    """A transform that raises on the March file (a bug, or a file it cannot read)."""

    def transform(self, batch: pa.RecordBatch, ctx: RunContext) -> pa.RecordBatch:
        if batch.column("day")[0].as_py().startswith("2024-03"):
            raise ValueError("cannot type March")
        return super().transform(batch, ctx)


class DyingDays(DaysSpec):
    """Kills its own Python worker (SIGKILL) on the March file once the other task has written
    its data files (it waits for more than ``files`` Parquet files under ``warehouse``): a job
    killed mid-write, with files of the same load already in the table's location."""

    def transform(self, batch: pa.RecordBatch, ctx: RunContext) -> pa.RecordBatch:
        if ctx.options.get("die") and batch.column("day")[0].as_py().startswith("2024-03"):
            deadline = time.monotonic() + 120
            while len(_parquet(ctx.options["warehouse"])) <= ctx.options["files"]:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            os.kill(os.getpid(), 9)
        return super().transform(batch, ctx)


def _parquet(folder: str) -> list[str]:
    return [str(p) for p in Path(folder).rglob("*.parquet")]


@pytest.fixture(scope="module", autouse=True)
def _specs_by_value() -> Iterator[None]:
    """Executors import civiclake; these test modules they get by value with the task."""
    from pyspark import cloudpickle

    for module in (test_arrow_engine, sys.modules[__name__]):
        cloudpickle.register_pickle_by_value(module)
    yield
    spark.stop_session()
    for module in (test_arrow_engine, sys.modules[__name__]):
        cloudpickle.unregister_pickle_by_value(module)


@pytest.fixture(scope="module")
def spark_cluster() -> Iterator[SparkCluster]:
    with SparkCluster(cores=2, memory="1g") as cluster:
        yield cluster


@pytest.fixture
def local_spark(monkeypatch: pytest.MonkeyPatch) -> str:
    import json

    monkeypatch.setenv("CIVICLAKE_SPARK_MASTER", "local[2]")
    monkeypatch.setenv("CIVICLAKE_SPARK_CONF", json.dumps(SMALL))
    return "local[2]"


def _tables(spec: type[DaysSpec] = DaysSpec) -> tuple[Any, Any, Any]:
    catalog = tables.load_catalog(get_settings())
    table = tables.ensure_table_for(catalog, spec.table, test_arrow_engine.SCHEMA, month_of="day")
    rejects = tables.ensure_table_for(catalog, spec.rejects_table, test_arrow_engine.REJECTS)
    return catalog, table, rejects


def _raw(lake: Lake) -> list[str]:
    return [
        _write_raw(lake, "a.csv", date(2024, 1, 30), 5, 200, bad=3),  # Jan 30 - Feb 3
        _write_raw(lake, "b.csv", date(2024, 3, 1), 2, 200, bad=1),
        _write_raw(lake, "c.csv", date(2024, 2, 10), 3, 50),
    ]


def _load(
    engine: str, spec: DaysSpec, urls: list[str], run: str, sink: Any = None, **options: Any
) -> Staged:
    """Stage with ``engine`` and commit the window and the whole rejects table, as a flow does."""
    lake = get_settings().lake()
    _, table, rejects = _tables(type(spec))
    ctx = RunContext(run_id=run, source="test", now=_ctx().now, options=options)
    staged = get_stage(engine)(
        spec, lake, iter(urls), ctx, table=table, rejects_table=rejects, sink=sink
    )
    properties = {"run-id": run, "engine": engine}
    load = pipeline_commit.Load(staged, WINDOW, WholeTable(), properties)
    pipeline_commit.commit(lake, table, rejects, load)
    return staged


def _rows(name: str) -> pa.Table:
    return tables.load_catalog(get_settings()).load_table(name).scan().to_arrow()


def _same(left: pa.Table, right: pa.Table, drop: tuple[str, ...] = ()) -> None:
    """EXCEPT ALL both ways is empty (and the types are the same)."""
    a, b = left.drop_columns(list(drop)), right.drop_columns(list(drop))
    assert a.schema == b.schema
    con = duckdb.connect()
    con.register("a", a)
    con.register("b", b)
    for one, other in (("a", "b"), ("b", "a")):
        query = f"SELECT * FROM {one} EXCEPT ALL SELECT * FROM {other}"
        assert con.execute(query).fetchall() == []
    assert a.num_rows == b.num_rows


def _partitions(staged: Staged) -> set[str]:
    return {str(f.partition[0]) for f in staged.data.files}


def test_spark_local_gives_the_arrow_engines_tables(
    local_spark: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="civiclake.pipeline")
    lake = get_settings().lake()
    urls = _raw(lake)
    streamed: dict[str, list[pa.Table]] = {"arrow": [], "spark": []}  # a streaming warehouse
    arrow = _load("arrow", DaysSpec(), urls, "r1", sink=streamed["arrow"].append)
    on_spark = _load("spark", SparkDays(), urls, "r1", sink=streamed["spark"].append)
    assert on_spark.engine == "spark" and on_spark.seconds > 0
    assert on_spark.rejected_by_reason == arrow.rejected_by_reason
    assert sum(on_spark.rejected_by_reason.values()) == 4
    _same(pa.concat_tables(streamed["arrow"]), pa.concat_tables(streamed["spark"]))
    assert (on_spark.rows_read, on_spark.rows_valid, on_spark.rows_rejected) == (1554, 1550, 4)
    assert (arrow.rows_read, arrow.rows_valid, arrow.rows_rejected) == (1554, 1550, 4)
    assert on_spark.observed == arrow.observed
    assert _partitions(on_spark) == _partitions(arrow)  # same months (Feb: a file per task)
    _same(_rows(DaysSpec.table), _rows(SparkDays.table))
    _same(_rows(DaysSpec.rejects_table), _rows(SparkDays.rejects_table))
    table = tables.load_catalog(get_settings()).load_table(SparkDays.table)
    assert table.spec() == tables.load_catalog(get_settings()).load_table(DaysSpec.table).spec()
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("spark:")]
    assert "spark: stage toy.days_spark: 3 raw file(s) in 2 task(s) on local[2]" in progress
    assert "spark: job of toy.days_spark started: 2 task(s)" in progress
    assert "spark: toy.days_spark: 2/2 task(s) done" in progress
    assert progress[-1].startswith("spark: stage toy.days_spark done in ")
    assert progress[-1].endswith("1,554 rows read, 1,550 valid, 4 rejected, 6 data file(s)")
    summary = table.current_snapshot().summary  # type: ignore[union-attr]
    assert summary[tables.SNAPSHOT_PROPERTY_PREFIX + "engine"] == "spark"  # type: ignore[index]
    assert summary["added-records"] == "1550"  # type: ignore[index]


def test_spark_properties_reach_the_jvm_but_not_its_command_line(local_spark: str) -> None:
    session = spark.spark_session(get_settings())
    assert session.conf.get(SECRET_PROPERTY[0]) == SECRET_PROPERTY[1]
    assert session.sparkContext.master == "local[2]"
    assert session.conf.get("spark.ui.enabled") == "false"
    command_lines = []
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):  # a finished child (zombie, gone)
            command_lines.append(" ".join(child.cmdline()))
    assert any("java" in line for line in command_lines)  # the JVM is our child
    assert not any(SECRET_PROPERTY[1] in line for line in command_lines)
    assert SECRET_PROPERTY[1] not in repr(get_settings())


def test_rerun_is_idempotent_and_engines_alternate_on_one_table(local_spark: str) -> None:
    """Arrow, Spark, Spark again, Arrow: each load replaces the window, every row once."""
    lake = get_settings().lake()
    urls = _raw(lake)
    for run, engine in enumerate(["arrow", "spark", "spark", "arrow", "spark"]):
        _load(engine, DaysSpec(), urls, f"r{run}")
        rows = _rows(DaysSpec.table)
        assert rows.num_rows == 1550, engine
        assert set(rows.column("load_run_id").to_pylist()) == {f"r{run}"}
        con = duckdb.connect()
        con.register("t", rows)
        assert con.execute("SELECT count(*) FROM (SELECT DISTINCT * FROM t)").fetchone() == (1550,)
        assert _rows(DaysSpec.rejects_table).num_rows == 4
    expected = _load("arrow", SparkDays(), urls, "r4")
    assert expected.rows_valid == 1550
    _same(_rows(DaysSpec.table), _rows(SparkDays.table))


def test_a_job_killed_mid_write_commits_nothing_and_the_next_run_completes(
    local_spark: str,
) -> None:
    lake = get_settings().lake()
    urls = _raw(lake)
    _load("spark", DaysSpec(), urls[:1], "before")
    table = tables.load_catalog(get_settings()).load_table(DaysSpec.table)
    before = table.current_snapshot().snapshot_id  # type: ignore[union-attr]
    warehouse = lake.join("warehouse").removeprefix("file://")
    files_before = set(_parquet(warehouse))
    failed = r"spark job staging toy\.days failed, nothing was committed"
    with pytest.raises(CivicLakeError, match=failed) as failed_job:
        options = {"die": True, "warehouse": warehouse, "files": len(files_before)}
        _load("spark", DyingDays(), urls, "killed", **options)
    table = tables.load_catalog(get_settings()).load_table(DaysSpec.table)
    assert table.current_snapshot().snapshot_id == before  # type: ignore[union-attr]
    assert set(_rows(DaysSpec.table).column("load_run_id").to_pylist()) == {"before"}
    assert set(_parquet(warehouse)) > files_before  # the killed job wrote: orphans only
    assert "Python worker exited unexpectedly" in str(failed_job.value)
    assert "\n" not in str(failed_job.value)
    with pytest.raises(CivicLakeError) as raised:
        _load("spark", FailingDays(), urls, "raised")
    assert str(raised.value) == (
        "spark job staging toy.days failed, nothing was committed: ValueError: cannot type March"
    )
    assert set(_rows(DaysSpec.table).column("load_run_id").to_pylist()) == {"before"}
    after = _load("spark", DyingDays(), urls, "after")
    assert after.rows_valid == 1550 and _rows(DaysSpec.table).num_rows == 1550


def test_no_java_is_one_line_error(local_spark: str, monkeypatch: pytest.MonkeyPatch) -> None:
    lake = get_settings().lake()
    urls = _raw(lake)
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(CivicLakeError, match="--engine spark needs a Java runtime") as failed:
        _load("spark", DaysSpec(), urls, "r1")
    assert "\n" not in str(failed.value)
    assert tables.load_catalog(get_settings()).load_table(DaysSpec.table).current_snapshot() is None


def test_dead_master_is_one_line_error_nothing_committed(monkeypatch: pytest.MonkeyPatch) -> None:
    from testsupport._process import free_port

    master = f"spark://127.0.0.1:{free_port()}"
    monkeypatch.setenv("CIVICLAKE_SPARK_MASTER", master)
    urls = _raw(get_settings().lake())
    with pytest.raises(CivicLakeError, match=f"Spark master {master} is not reachable") as failed:
        _load("spark", DaysSpec(), urls, "r1")
    assert "\n" not in str(failed.value) and "CIVICLAKE_SPARK_MASTER" in str(failed.value)
    assert tables.load_catalog(get_settings()).load_table(DaysSpec.table).current_snapshot() is None


@pytest.mark.parametrize("kind", ["azure", "s3"])
def test_object_store_lake_on_spark(
    local_spark: str,
    kind: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """An abfs:// (Azurite) or s3:// (moto) lake: tasks read raw files and write data files
    through fsspec and PyIceberg, no Hadoop connector; the credentials reach them with the
    job, not through Spark's configuration."""
    store: ObjectStore = request.getfixturevalue(f"{kind}_store")
    use_env(monkeypatch, tmp_path, store.env)
    monkeypatch.setenv("CIVICLAKE_LAKE_URL", store.lake_url(f"spark-lake-{os.getpid()}"))
    lake = get_settings().lake()
    urls = _raw(lake)
    assert all(url.startswith(f"{store.scheme}://") for url in urls)
    arrow = _load("arrow", DaysSpec(), urls, "r1")
    on_spark = _load("spark", SparkDays(), urls, "r1")
    assert all(f.file_path.startswith(f"{store.scheme}://") for f in on_spark.data.files)
    assert on_spark.rows_valid == arrow.rows_valid == 1550
    _same(_rows(DaysSpec.table), _rows(SparkDays.table))
    _same(_rows(DaysSpec.rejects_table), _rows(SparkDays.rejects_table))


def test_s3_lake_with_wrong_credentials_on_spark_is_one_line_and_writes_nothing(
    s3_store: ObjectStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Bad input on the Spark route: an s3:// lake whose credentials are wrong fails before
    any Spark session starts, in one line (exit 1) that shows no secret; nothing is written."""
    from typer.testing import CliRunner

    from civiclake.cli import app

    green = Path(__file__).resolve().parents[3] / "shared/data/tlc/green_tripdata_2020-10.csv.gz"
    url = s3_store.lake_url(f"spark-bad-{os.getpid()}")
    use_env(monkeypatch, tmp_path, s3_store.bad_env)
    monkeypatch.setenv("CIVICLAKE_LAKE_URL", url)
    result = CliRunner().invoke(
        app, ["taxi", "run", "--from-file", str(green), "--engine", "spark"]
    )
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: lake "), lines
    for secret in s3_store.secrets():
        assert secret not in result.output
    assert s3_store.list_objects(url.split("://", 1)[1].split("/", 1)[1]) == []


def test_standalone_cluster_gives_the_arrow_engines_tables(
    spark_cluster: SparkCluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import json

    monkeypatch.setenv("CIVICLAKE_SPARK_MASTER", spark_cluster.master)
    monkeypatch.setenv("CIVICLAKE_SPARK_CONF", json.dumps(SMALL | {"spark.cores.max": "2"}))
    lake = get_settings().lake()
    urls = _raw(lake)
    arrow = _load("arrow", DaysSpec(), urls, "r1")
    on_spark = _load("spark", SparkDays(), urls, "r1")
    assert spark.spark_session(get_settings()).sparkContext.master == spark_cluster.master
    assert (on_spark.rows_read, on_spark.rows_valid, on_spark.rows_rejected) == (1554, 1550, 4)
    assert on_spark.observed == arrow.observed and _partitions(on_spark) == _partitions(arrow)
    _same(_rows(DaysSpec.table), _rows(SparkDays.table))
    _same(_rows(DaysSpec.rejects_table), _rows(SparkDays.rejects_table))
    again = _load("spark", SparkDays(), urls, "r2")  # idempotent on the cluster too
    assert again.rows_valid == 1550 and _rows(SparkDays.table).num_rows == 1550


SUBMITTED = """
import json, sys
sys.path.insert(0, {tests!r})
import test_arrow_engine
from pyspark import cloudpickle
cloudpickle.register_pickle_by_value(test_arrow_engine)
from civiclake import tables
from civiclake.config import get_settings
from civiclake.pipeline import commit as pipeline_commit
from civiclake.pipeline.engines import get_stage, spark
from civiclake.slices import WholeTable, Window
from datetime import date
_, table, rejects = test_arrow_engine._tables()
staged = get_stage("spark")(
    test_arrow_engine.DaysSpec(), get_settings().lake(), {urls!r}, test_arrow_engine._ctx("sub"),
    table=table, rejects_table=rejects,
)
window = Window("day", date(2024, 1, 1), date(2024, 4, 1))
pipeline_commit.commit(get_settings().lake(), table, rejects,
                       pipeline_commit.Load(staged, window, WholeTable(), {{"run-id": "sub"}}))
master = spark.spark_session(get_settings()).sparkContext.master
print(json.dumps({{"master": master, "valid": staged.rows_valid, "engine": staged.engine}}))
"""


def test_spark_submit_runs_the_same_stage_on_its_own_session(tmp_path: Path) -> None:
    """Users who schedule Spark themselves submit the job: spark-submit's master and conf rule
    (a dead CIVICLAKE_SPARK_MASTER is ignored), the result is the same table."""
    import json
    import subprocess

    from testsupport.spark import spark_home

    urls = _raw(get_settings().lake())
    script = tmp_path / "job.py"
    script.write_text(SUBMITTED.format(tests=str(Path(__file__).parent), urls=urls))
    env = {k: v for k, v in os.environ.items() if k != "PYSPARK_SUBMIT_ARGS"}
    env["CIVICLAKE_SPARK_MASTER"] = "spark://127.0.0.1:1"
    env["SPARK_LOCAL_IP"] = "127.0.0.1"
    submit = [str(spark_home() / "bin" / "spark-submit"), "--master", "local[1]"]
    python = sys.executable
    for prop in ("ui.enabled=false", f"pyspark.python={python}", f"pyspark.driver.python={python}"):
        submit += ["--conf", f"spark.{prop}"]
    done = subprocess.run(
        [*submit, "--driver-memory", "512m", str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"master": "local[1]", "valid": 1550, "engine": "spark"}
    rows = _rows(DaysSpec.table)
    assert rows.num_rows == 1550 and set(rows.column("load_run_id").to_pylist()) == {"sub"}


def test_real_green_month_spark_gives_the_arrow_engines_tables(
    local_spark: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The TLC spec on the real green 2020-10 file: the same rows, rejects (reasons) and sums."""
    from civiclake.sources import tlc, tlc_fetch
    from civiclake.tables import SNAPSHOT_PROPERTY_PREFIX

    green = Path(__file__).resolve().parents[2].parent / "shared/data/tlc"
    spec, month = tlc.spec_for("green"), tlc.Month(2020, 10)
    ctx = tlc.context(spec, month, run_id="g1", now=_ctx().now)
    results: dict[str, tuple[Staged, pa.Table, pa.Table]] = {}
    for engine in ("arrow", "spark"):
        monkeypatch.setenv("CIVICLAKE_HOME", str(tmp_path / engine))
        settings = get_settings()
        lake = settings.lake()
        path = str(green / "green_tripdata_2020-10.csv.gz")
        raw = tlc_fetch.stage_local_file(lake, path, "green", month)
        catalog = tables.load_catalog(settings)
        table = tables.ensure_table_for(
            catalog, spec.table, tlc.table_schema(spec), month_of=spec.pickup
        )
        rejects = tables.ensure_table_for(catalog, spec.rejects_table, tlc.rejects_schema(spec))
        staged = get_stage(engine)(spec, lake, [raw], ctx, table=table, rejects_table=rejects)
        load = pipeline_commit.Load(
            staged,
            ctx.slice,  # type: ignore[arg-type]
            Window("source_month", month.first_day, month.first_day + timedelta(days=1)),
            {"run-id": "g1", "rows-loaded": str(staged.rows_valid)},
        )
        pipeline_commit.commit(lake, table, rejects, load)
        results[engine] = (staged, _rows(spec.table), _rows(spec.rejects_table))
        summary = catalog.load_table(spec.table).current_snapshot().summary  # type: ignore[union-attr]
        assert summary[SNAPSHOT_PROPERTY_PREFIX + "rows-loaded"] == "94852"  # type: ignore[index]
    (arrow, arrow_rows, arrow_rejects), (on_spark, rows, rejected) = results.values()
    assert (on_spark.rows_valid, on_spark.rows_rejected) == (94_852, 268)
    assert on_spark.rejected_by_reason == arrow.rejected_by_reason
    assert on_spark.observed == arrow.observed
    assert round(pc.sum(rows.column("total_amount")).as_py(), 2) == 2_192_954.40
    _same(arrow_rows, rows)
    _same(arrow_rejects, rejected)


@pytest.mark.prefect
@pytest.mark.usefixtures("prefect_server")
@pytest.mark.parametrize("to", ["duckdb", "postgres"])
def test_taxi_run_with_the_spark_engine_end_to_end(
    to: str, local_spark: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """``CIVICLAKE_ENGINE=spark civiclake taxi run --from-file --to W``: the flow stages on
    Spark, commits, and loads the warehouse from the job's data files in the driver (DuckDB
    reads them itself; PostgreSQL gets them batch by batch): the same rows and sums."""
    from typer.testing import CliRunner

    from civiclake.cli import app
    from civiclake.warehouse import open_warehouse

    if to == "postgres":
        monkeypatch.setenv("CIVICLAKE_POSTGRES_URL", request.getfixturevalue("postgres_url"))
    green = Path(__file__).resolve().parents[2].parent / "shared/data/tlc"
    monkeypatch.setenv("CIVICLAKE_ENGINE", "spark")
    result = CliRunner().invoke(
        app,
        ["taxi", "run", "--from-file", str(green / "green_tripdata_2020-10.csv.gz"), "--to", to],
    )
    assert result.exit_code == 0, result.output
    assert "94,852" in result.output
    rows = _rows("tlc.green_trips")
    assert rows.num_rows == 94_852
    assert _rows("tlc.green_trips_rejects").num_rows == 268
    dear = pc.sum(pc.greater_equal(rows.column("total_amount"), 100)).as_py()
    assert dear > 0
    with open_warehouse(to, get_settings()) as warehouse:
        assert warehouse.count("tlc.green_trips") == 94_852  # type: ignore[attr-defined]
        assert warehouse.count("tlc.green_trips_rejects") == 268  # type: ignore[attr-defined]
        assert warehouse.count("tlc.green_trips", "total_amount >= 100") == dear  # type: ignore[attr-defined]
