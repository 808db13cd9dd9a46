"""BigQuery warehouse against a local emulator (bqemulator, started once per session): the
conformance suite, and what only BigQuery has (load jobs from Parquet, gs:// lakes, datasets,
credentials, the doctor's check), and the CLI into it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery
from tlc_month import TlcMonth, tlc_month
from typer.testing import CliRunner
from warehouse_suite import WarehouseSuite, shown

from civiclake.config import get_settings
from civiclake.errors import CivicLakeError, ParameterError
from civiclake.lake import Lake
from civiclake.sources import tlc
from civiclake.warehouse import Warehouse, open_warehouse
from civiclake.warehouse.bigquery import BigQueryWarehouse, bigquery_type
from testsupport import bigquery as testing_bigquery
from testsupport.bigquery import BigQueryEmulator

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "tlc"
GREEN = DATA / "green_tripdata_2020-10.csv.gz"
OCTOBER = tlc.Month(2020, 10)
JAN, FEB, MAR = date(2024, 1, 1), date(2024, 2, 1), date(2024, 3, 1)
GREEN_TYPES = {
    "VendorID": "INT64",
    "lpep_pickup_datetime": "DATETIME",
    "lpep_dropoff_datetime": "DATETIME",
    "store_and_fwd_flag": "STRING",
    "passenger_count": "INT64",
    "trip_distance": "FLOAT64",
    "ehail_fee": "FLOAT64",
    "loaded_at": "TIMESTAMP",
}
TRIP_TYPES = {
    "VendorID": "INT64",
    "RatecodeID": "INT64",
    "PULocationID": "INT64",
    "trip_id": "INT64",
    "trip_distance": "FLOAT64",
    "fare_amount": "NUMERIC",  # bqemulator drops NUMERIC's precision; BigQuery: NUMERIC(10, 2)
    "big_amount": "NUMERIC",  # NUMERIC(38, 9)
    "store_and_fwd_flag": "STRING",
    "Note": "STRING",
    "is_shared": "BOOL",
    "pickup_date": "DATE",
    "tpep_pickup_datetime": "DATETIME",
    "loaded_at": "TIMESTAMP",
}

slow = pytest.mark.slow


@slow
class TestBigQueryConformance(WarehouseSuite):
    kind = "bigquery"
    # bqemulator reports NUMERIC without its precision (BigQuery says NUMERIC(10, 2))
    trip_types: ClassVar[dict[str, str]] = {
        **dict.fromkeys(("VendorID", "RatecodeID", "PULocationID", "trip_id"), "INT64"),
        **dict.fromkeys(("fare_amount", "big_amount"), "NUMERIC"),
        **dict.fromkeys(("store_and_fwd_flag", "Note"), "STRING"),
        "trip_distance": "FLOAT64",
        "is_shared": "BOOL",
        "pickup_date": "DATE",
        "tpep_pickup_datetime": "DATETIME",
        "loaded_at": "TIMESTAMP",
    }

    @pytest.fixture
    def warehouse(self, bq_env: None) -> Iterator[BigQueryWarehouse]:
        with BigQueryWarehouse.from_settings(get_settings()) as opened:
            yield opened

    def rows(self, warehouse: Warehouse, table: str, columns: list[str]) -> list[tuple[Any, ...]]:
        assert isinstance(warehouse, BigQueryWarehouse)
        names = ", ".join(f"`{name}`" for name in columns)
        sql = f"SELECT {names} FROM `{warehouse.table_id(table)}`"
        return [tuple(row.values()) for row in warehouse._client.query(sql).result()]


@pytest.fixture(scope="session")
def reader(bq_emulator: BigQueryEmulator) -> Iterator[bigquery.Client]:
    """A client of its own: what another reader of the warehouse sees."""
    client = bigquery.Client(
        project=bq_emulator.project,
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=bq_emulator.endpoint),
    )
    yield client
    client.close()


@pytest.fixture
def no_adc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No application default credentials, whatever the machine has."""
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))


@pytest.fixture
def bq_env(bq_emulator: BigQueryEmulator, no_adc: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CIVICLAKE_BIGQUERY_PROJECT", bq_emulator.project)
    monkeypatch.setenv("CIVICLAKE_BIGQUERY_ENDPOINT", bq_emulator.endpoint)


@pytest.fixture
def warehouse(bq_env: None) -> Iterator[BigQueryWarehouse]:
    with BigQueryWarehouse.from_settings(get_settings()) as opened:
        yield opened


@pytest.fixture
def table(namespace: str) -> str:
    return f"{namespace}.yellow_trips"


@dataclass(frozen=True)
class Green:
    lake: Lake
    month: TlcMonth


@pytest.fixture(scope="session")
def green(tmp_path_factory: pytest.TempPathFactory) -> Green:
    """The real green October 2020 month, staged once to Parquet files in the lake."""
    lake = Lake((tmp_path_factory.mktemp("green") / "lake").as_uri())
    return Green(lake, tlc_month(lake, GREEN, "green", OCTOBER, run_id="run-bq"))


def parquet(url: str) -> pa.Table:
    return pq.read_table(url.removeprefix("file://"))


def trips(data: Any, month: date, rows: int, **kwargs: Any) -> pa.Table:
    return data.make(month, rows, **kwargs)


def read_rows(
    reader: bigquery.Client, warehouse: BigQueryWarehouse, table: str, where: str = "TRUE"
) -> list[tuple[Any, ...]]:
    """Every row as a second client reads it, in the shared trip schema's column order."""
    columns = ", ".join(f"`{name}`" for name in list(TRIP_TYPES))
    sql = f"SELECT {columns} FROM `{warehouse.table_id(table)}` WHERE {where} ORDER BY trip_id"
    return [tuple(row.values()) for row in reader.query(sql).result()]


def rows_of(arrow: pa.Table) -> list[tuple[Any, ...]]:
    rows = [tuple(row[name] for name in TRIP_TYPES) for row in arrow.to_pylist()]
    return sorted(rows, key=lambda row: row[3])


def tables_in(reader: bigquery.Client, warehouse: BigQueryWarehouse, table: str) -> list[str]:
    dataset = warehouse.table_id(table).rsplit(".", 1)[0]
    return sorted(t.table_id for t in reader.list_tables(dataset))


# -- against the emulator --------------------------------------------------------------------


@slow
def test_open_warehouse_reads_the_settings_from_the_environment(bq_env: None, table: str) -> None:
    with open_warehouse("bigquery", get_settings()) as warehouse:
        assert isinstance(warehouse, Warehouse)
        assert warehouse.name == "bigquery"
        assert warehouse.column_types(table) == {}
        assert "anonymous" in warehouse.credential_source


@slow
def test_the_green_month_loads_replaces_and_keeps_its_types(
    warehouse: BigQueryWarehouse,
    reader: bigquery.Client,
    green: Green,
    namespace: str,
) -> None:
    lake, converted = green.lake, green.month
    valid, rejects = parquet(converted.valid_url), parquet(converted.rejects_url)
    trips_table, rejects_table = f"{namespace}.green_trips", f"{namespace}.green_trips_rejects"
    month = {"column": "lpep_pickup_datetime", "start": OCTOBER.start, "stop": OCTOBER.stop}
    day = {"column": "source_month", "start": OCTOBER.first_day}
    day["stop"] = OCTOBER.first_day + timedelta(days=1)
    schema, rejects_schema = tlc.table_schema(tlc.GREEN), tlc.rejects_schema(tlc.GREEN)

    for _ in range(2):  # the second run replaces the month: no duplicates
        loaded = warehouse.replace_range(trips_table, schema, [converted.valid_url], lake, **month)
        assert loaded == valid.num_rows == converted.rows_valid > 90_000
        assert warehouse.count(trips_table) == valid.num_rows
        warehouse.replace_range(rejects_table, rejects_schema, [converted.rejects_url], lake, **day)
        assert warehouse.count(rejects_table) == rejects.num_rows == converted.rows_rejected > 0

    nulls = valid.column("passenger_count").null_count
    assert warehouse.count(trips_table, "passenger_count IS NULL") == nulls > 0
    # values land in their own columns (loads match Parquet columns by name)
    sql = (
        f"SELECT SUM(PULocationID), SUM(DOLocationID), ROUND(SUM(trip_distance), 2), "
        f"MIN(lpep_pickup_datetime), MAX(lpep_dropoff_datetime) "
        f"FROM `{warehouse.table_id(trips_table)}`"
    )
    got = tuple(next(iter(reader.query(sql).result())).values())
    assert got == (
        pc.sum(valid.column("PULocationID")).as_py(),
        pc.sum(valid.column("DOLocationID")).as_py(),
        round(pc.sum(valid.column("trip_distance")).as_py(), 2),
        pc.min(valid.column("lpep_pickup_datetime")).as_py(),
        pc.max(valid.column("lpep_dropoff_datetime")).as_py(),
    )
    types = warehouse.column_types(trips_table)
    assert list(types) == schema.names
    assert {name: types[name] for name in GREEN_TYPES} == GREEN_TYPES
    assert warehouse.column_types(rejects_table)["source_month"] == "DATE"
    partitioning = reader.get_table(warehouse.table_id(trips_table)).time_partitioning
    assert (partitioning.type_, partitioning.field) == ("MONTH", "lpep_pickup_datetime")
    assert tables_in(reader, warehouse, trips_table) == ["green_trips", "green_trips_rejects"]


@slow
def test_a_file_larger_than_an_upload_chunk_streams_in_chunks(
    warehouse: BigQueryWarehouse, green: Green, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real months exceed the client's 100 MB chunk: shrink it to see several chunks land."""
    import google.cloud.bigquery.client as client_module

    url = green.month.valid_url
    size = green.lake.fs.size(url.removeprefix("file://"))
    chunk = 256 * 1024  # resumable uploads go in multiples of 256 KiB
    assert size > 3 * chunk
    monkeypatch.setattr(client_module, "_DEFAULT_CHUNKSIZE", chunk)
    month = {"column": "lpep_pickup_datetime", "start": OCTOBER.start, "stop": OCTOBER.stop}
    table = f"{namespace}.green_trips"

    loaded = warehouse.replace_range(table, tlc.table_schema(tlc.GREEN), [url], green.lake, **month)

    assert loaded == warehouse.count(table) == green.month.rows_valid


@slow
def test_a_failure_inside_the_transaction_rolls_back(
    warehouse: BigQueryWarehouse,
    reader: bigquery.Client,
    data: Any,
    table: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The DELETE and the INSERT ran, then a statement fails: BigQuery undoes both."""
    rows = trips(data, JAN, 300)
    url = data.write(rows, "jan.parquet")
    warehouse.replace_range(table, rows.schema, [url], data.lake, **data.month(JAN))
    before = read_rows(reader, warehouse, table)
    script = warehouse._replace_script

    def failing(*args: Any) -> str:
        return script(*args).replace("COMMIT", "SELECT ERROR('injected failure');\nCOMMIT")

    monkeypatch.setattr(warehouse, "_replace_script", failing)
    other = data.write(trips(data, JAN, 50, first_id=80_000), "other.parquet")

    with pytest.raises(CivicLakeError, match=r"into BigQuery failed: .*injected failure"):
        warehouse.replace_range(table, rows.schema, [other], data.lake, **data.month(JAN))

    assert read_rows(reader, warehouse, table) == before
    assert tables_in(reader, warehouse, table) == ["yellow_trips"]


@slow
def test_a_gs_lake_is_loaded_by_uri(
    warehouse: BigQueryWarehouse,
    reader: bigquery.Client,
    bq_emulator: BigQueryEmulator,
    data: Any,
    table: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """BigQuery reads gs:// files itself (the emulator maps gs://bucket/x to a folder)."""
    rows = trips(data, JAN, 250)
    path = bq_emulator.gcs_root / "lake-bucket" / "stage" / f"{table}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(rows, path)

    class BucketLake:  # what the warehouse needs of a gs:// lake: footers through open()
        url = "gs://lake-bucket"

        def open(self, url: str, mode: str = "rb") -> Any:
            return (bq_emulator.gcs_root / url.removeprefix("gs://")).open(mode)

    def no_upload(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("gs:// files must not be uploaded")

    monkeypatch.setattr(warehouse._client, "load_table_from_file", no_upload)
    uri = f"gs://lake-bucket/stage/{table}.parquet"

    loaded = warehouse.replace_range(
        table,
        rows.schema,
        [uri],
        BucketLake(),
        **data.month(JAN),  # type: ignore[arg-type]
    )

    assert loaded == 250
    assert read_rows(reader, warehouse, table) == rows_of(rows)


@slow
def test_a_configured_dataset_replaces_the_namespace(
    bq_emulator: BigQueryEmulator, no_adc: None, reader: bigquery.Client, data: Any
) -> None:
    with BigQueryWarehouse(
        bq_emulator.project, dataset="civiclake_other", endpoint=bq_emulator.endpoint
    ) as warehouse:
        rows = trips(data, JAN, 20)
        url = data.write(rows, "jan.parquet")
        warehouse.replace_range("tlc.some_trips", rows.schema, [url], data.lake, **data.month(JAN))

        assert (
            warehouse.table_id("tlc.some_trips")
            == f"{bq_emulator.project}.civiclake_other.some_trips"
        )
        assert warehouse.count("tlc.some_trips") == 20
        assert reader.get_dataset(f"{bq_emulator.project}.civiclake_other").location == "US"


@slow
def test_count_of_a_missing_table_is_one_line(warehouse: BigQueryWarehouse, namespace: str) -> None:
    with pytest.raises(CivicLakeError) as caught:
        warehouse.count(f"{namespace}.nothing")
    message = str(caught.value)
    assert message.startswith(f"cannot count {namespace}.nothing in BigQuery: Not found: ")
    assert "\n" not in message


@slow
def test_check_proves_a_table_can_be_created(
    bq_emulator: BigQueryEmulator, no_adc: None, reader: bigquery.Client, namespace: str
) -> None:
    with BigQueryWarehouse(
        bq_emulator.project, dataset=namespace, endpoint=bq_emulator.endpoint
    ) as warehouse:
        described = warehouse.check()

    assert described.startswith(f"BigQuery {bq_emulator.project}.{namespace} (US) via ")
    assert "table created, queried (dry run) and deleted" in described
    assert "\n" not in described
    assert list(reader.list_tables(f"{bq_emulator.project}.{namespace}")) == []  # probe gone


def test_check_of_a_dead_endpoint_fails_fast_and_clearly(no_adc: None) -> None:
    port = testing_bigquery.free_port()  # nothing listens there
    began = time.monotonic()
    warehouse = BigQueryWarehouse("civiclake-test", endpoint=f"http://127.0.0.1:{port}")
    with warehouse, pytest.raises(CivicLakeError) as caught:
        warehouse.check()

    assert str(caught.value) == (
        f"cannot connect to the BigQuery endpoint http://127.0.0.1:{port} "
        "(CIVICLAKE_BIGQUERY_ENDPOINT; is the emulator running?)"
    )
    assert time.monotonic() - began < 10


def test_no_credentials_is_a_clear_error(no_adc: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from google.auth.compute_engine import _metadata

    monkeypatch.setattr(_metadata, "_NO_GCE_CHECK", True)  # NO_GCE_CHECK=true: no metadata probe
    monkeypatch.setenv("CIVICLAKE_BIGQUERY_PROJECT", "some-project")

    with pytest.raises(CivicLakeError, match="no Google credentials found: run `gcloud auth"):
        open_warehouse("bigquery", get_settings())

    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/key-Secr3t.json")
    with pytest.raises(CivicLakeError) as caught:
        open_warehouse("bigquery", get_settings())
    assert "GOOGLE_APPLICATION_CREDENTIALS does not name a usable credentials file" in str(
        caught.value
    )
    assert "Secr3t" not in shown(caught.value)


# -- without a server ------------------------------------------------------------------------


def test_no_project_is_a_parameter_error() -> None:
    with pytest.raises(ParameterError, match=r"^--to bigquery needs CIVICLAKE_BIGQUERY_PROJECT$"):
        open_warehouse("bigquery", get_settings())


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CIVICLAKE_BIGQUERY_PROJECT": "Bad Project!"}, "is not a Google Cloud project id"),
        ({"CIVICLAKE_BIGQUERY_DATASET": "bad-dataset"}, "letters, digits and underscores"),
    ],
)
def test_bad_names_are_parameter_errors(
    env: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CIVICLAKE_BIGQUERY_PROJECT", "some-project")
    monkeypatch.setenv("CIVICLAKE_BIGQUERY_ENDPOINT", "http://127.0.0.1:9")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ParameterError, match=message):
        open_warehouse("bigquery", get_settings())


def test_arrow_types_map_to_bigquery_types() -> None:
    assert [bigquery_type(t) for t in (pa.int8(), pa.int32(), pa.int64())] == ["INT64"] * 3
    assert bigquery_type(pa.float64()) == "FLOAT64"
    assert bigquery_type(pa.large_string()) == bigquery_type(pa.string()) == "STRING"
    assert bigquery_type(pa.dictionary(pa.int32(), pa.string())) == "STRING"
    assert bigquery_type(pa.bool_()) == "BOOL"
    assert bigquery_type(pa.date32()) == "DATE"
    assert bigquery_type(pa.timestamp("us")) == "DATETIME"  # wall time, like TIMESTAMP in SQL
    assert bigquery_type(pa.timestamp("us", tz="UTC")) == "TIMESTAMP"  # an instant
    assert bigquery_type(pa.decimal128(10, 2)) == "NUMERIC(10,2)"
    assert bigquery_type(pa.decimal128(38, 9)) == "NUMERIC(38,9)"  # up to 29 integer digits
    assert bigquery_type(pa.decimal128(38, 10)) == "BIGNUMERIC(38,10)"
    assert bigquery_type(pa.decimal128(38, 0)) == "BIGNUMERIC(38,0)"
    for unmapped in (pa.uint64(), pa.timestamp("ns"), pa.binary(), pa.float32()):
        assert bigquery_type(unmapped) is None


def test_an_unmapped_type_fails_before_any_request(no_adc: None, data: Any) -> None:
    odd = pa.table({"day": pa.array([JAN], pa.date32()), "x": pa.array([1], pa.uint64())})
    url = data.write(odd, "odd.parquet")
    days = {"column": "day", "start": JAN, "stop": FEB}
    # nothing listens on port 9: any request would fail differently
    warehouse = BigQueryWarehouse("p", endpoint="http://127.0.0.1:9")
    with warehouse, pytest.raises(CivicLakeError, match=r"^table tlc\.odd: no BigQuery column"):
        warehouse.replace_range("tlc.odd", odd.schema, [url], data.lake, **days)


def test_a_missing_emulator_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CIVICLAKE_BQEMULATOR", str(tmp_path / "nowhere"))
    with pytest.raises(RuntimeError, match=r"CIVICLAKE_BQEMULATOR=.* is not an executable"):
        BigQueryEmulator().start()
    monkeypatch.delenv("CIVICLAKE_BQEMULATOR")
    monkeypatch.setattr(testing_bigquery, "DEFAULT_EXECUTABLE", tmp_path / "nowhere")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="scripts/install-emulators"):
        BigQueryEmulator().start()


# -- the CLI, end to end ---------------------------------------------------------------------


@slow
@pytest.mark.prefect
@pytest.mark.usefixtures("prefect_server")
def test_taxi_run_into_bigquery(
    bq_env: None,
    reader: bigquery.Client,
    green: Green,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from civiclake.cli import app

    monkeypatch.setenv("CIVICLAKE_BIGQUERY_DATASET", namespace)
    args = ["taxi", "run", "--color", "green", "--year", "2020", "--months", "10"]
    args += ["--from-file", str(GREEN), "--to", "bigquery"]

    result = CliRunner().invoke(app, args)

    assert result.exit_code == 0, result.output
    assert f"{green.month.rows_valid:,}" in result.output
    with open_warehouse("bigquery", get_settings()) as warehouse:
        assert warehouse.count("tlc.green_trips") == green.month.rows_valid
        assert warehouse.count("tlc.green_trips_rejects") == green.month.rows_rejected
        assert warehouse.column_types("tlc.green_trips")["lpep_pickup_datetime"] == "DATETIME"


@slow
@pytest.mark.prefect
@pytest.mark.usefixtures("prefect_server")
def test_taxi_run_with_a_bigquery_block(
    bq_emulator: BigQueryEmulator, no_adc: None, green: Green, namespace: str
) -> None:
    """Project, dataset and endpoint from a civiclake-bigquery block, none from the env."""
    from civiclake.blocks import BigQueryWarehouseBlock, settings_with_blocks
    from civiclake.cli import app

    name = f"bq-{namespace.replace('_', '-')}"
    BigQueryWarehouseBlock(
        project=bq_emulator.project, dataset=namespace, endpoint=bq_emulator.endpoint
    ).save(name)
    args = ["taxi", "run", "--from-file", str(GREEN), "--to", "bigquery"]

    result = CliRunner().invoke(app, [*args, "--warehouse-block", name])

    assert result.exit_code == 0, result.output
    settings = settings_with_blocks(warehouse_block=f"civiclake-bigquery/{name}")
    assert settings.bigquery_dataset == namespace
    with open_warehouse("bigquery", settings) as warehouse:
        assert warehouse.count("tlc.green_trips") == green.month.rows_valid
    missing = CliRunner().invoke(app, [*args, "--warehouse-block", "no-such-block"])
    assert missing.exit_code == 2
    assert "no civiclake-postgres or civiclake-bigquery block named 'no-such-block'" in (
        missing.output
    )


def test_a_broken_service_account_key_is_one_clear_line(bq_env: None) -> None:
    from pydantic import Secret

    settings = get_settings(bigquery_credentials=Secret({"type": "service_account"}))
    with pytest.raises(CivicLakeError, match="service account key is not a valid key file"):
        BigQueryWarehouse.from_settings(settings)
