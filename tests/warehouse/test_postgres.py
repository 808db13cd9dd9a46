"""PostgreSQL warehouse against a real server: the conformance suite, and what only PostgreSQL
has (binary and CSV COPY, the streaming ``range_load``, a password that never shows up in an
error)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from warehouse_suite import WarehouseSuite, shown

from civiclake.config import get_settings
from civiclake.errors import CivicLakeError, ParameterError
from civiclake.lake import Lake
from civiclake.warehouse import Warehouse, open_warehouse
from civiclake.warehouse._arrow_sql import qualified, quote_ident
from civiclake.warehouse.postgres import PostgresWarehouse, encoding, postgres_url
from testsupport import postgres as testing_postgres
from testsupport.postgres import PostgresServer

JAN, FEB, MAR = date(2024, 1, 1), date(2024, 2, 1), date(2024, 3, 1)
TLC_GREEN = (
    Path(__file__).resolve().parents[3]
    / "shared"
    / "data"
    / "tlc"
    / "green_tripdata_2020-10.csv.gz"
)
EXPECTED_TYPES = {
    "VendorID": "smallint",
    "RatecodeID": "smallint",
    "PULocationID": "integer",
    "trip_id": "bigint",
    "trip_distance": "double precision",
    "fare_amount": "numeric(10,2)",
    "big_amount": "numeric(38,9)",
    "store_and_fwd_flag": "text",
    "Note": "text",
    "is_shared": "boolean",
    "pickup_date": "date",
    "tpep_pickup_datetime": "timestamp without time zone",
    "loaded_at": "timestamp with time zone",
}


@pytest.fixture
def pg_env(postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """CIVICLAKE_POSTGRES_URL for this test (the autouse home fixture cleared CIVICLAKE_*)."""
    monkeypatch.setenv("CIVICLAKE_POSTGRES_URL", postgres_server.url)
    return postgres_server.url


@pytest.fixture(params=["binary", "csv"])
def warehouse(request: pytest.FixtureRequest, pg_env: str) -> Iterator[PostgresWarehouse]:
    with PostgresWarehouse(postgres_url(get_settings()), copy_format=request.param) as opened:
        yield opened


@pytest.fixture
def table(namespace: str) -> str:
    return f"{namespace}.yellow_trips"


class TestPostgresConformance(WarehouseSuite):
    kind = "postgres"
    trip_types = EXPECTED_TYPES

    @pytest.fixture(params=["binary", "csv"])
    def warehouse(self, request: pytest.FixtureRequest, pg_env: str) -> Iterator[PostgresWarehouse]:
        with PostgresWarehouse(postgres_url(get_settings()), copy_format=request.param) as opened:
            yield opened

    def rows(self, warehouse: Warehouse, table: str, columns: list[str]) -> list[tuple[Any, ...]]:
        assert isinstance(warehouse, PostgresWarehouse)
        names = ", ".join(quote_ident(name) for name in columns)
        with psycopg.connect(warehouse._url.get_secret_value()) as reader:
            return reader.execute(f"SELECT {names} FROM {qualified(table)}").fetchall()


def read_rows(server: PostgresServer, data: Any, table: str, where: str = "true") -> list[Any]:
    """Everything in the table, read by a second connection (what a reader sees)."""
    schema, name = table.split(".")
    with psycopg.connect(server.url) as reader:
        return reader.execute(
            f'SELECT {data.columns_sql} FROM "{schema}"."{name}" WHERE {where} ORDER BY trip_id'
        ).fetchall()


def test_open_warehouse_reads_the_url_from_the_environment(pg_env: str, table: str) -> None:
    with open_warehouse("postgres", get_settings()) as warehouse:
        assert isinstance(warehouse, Warehouse)
        assert warehouse.name == "postgres"
        assert warehouse.column_types(table) == {}


def test_no_url_configured_is_a_parameter_error() -> None:
    with pytest.raises(ParameterError, match="CIVICLAKE_POSTGRES_URL"):
        open_warehouse("postgres", get_settings())


def test_timestamps_mean_utc_whatever_the_reader_time_zone(
    warehouse: PostgresWarehouse, postgres_server: PostgresServer, data: Any, table: str
) -> None:
    url = data.write(data.make(JAN, 3), "jan.parquet")
    warehouse.replace_range(table, data.schema, [url], data.lake, **data.month(JAN))

    with psycopg.connect(postgres_server.url) as reader:
        reader.execute("SET TIME ZONE 'America/New_York'")
        naive, zoned = reader.execute(
            f"SELECT tpep_pickup_datetime::text, loaded_at AT TIME ZONE 'UTC' FROM {table} "
            "ORDER BY trip_id LIMIT 1"
        ).fetchone()
    assert naive == "2024-01-01 00:00:00"  # TIMESTAMP: the wall time, untouched
    assert zoned == datetime(1999, 12, 31, 23, 59, 59, 999_999)  # TIMESTAMPTZ: the instant


def test_a_remote_lake_streams_through_fsspec(
    warehouse: PostgresWarehouse, postgres_server: PostgresServer, data: Any, table: str
) -> None:
    remote = Lake("memory://civiclake-pg-test-lake")
    january = data.make(JAN, 1200)
    url = data.write(january, "jan.parquet", remote)
    warehouse.batch_rows = 250  # several COPY chunks per file

    assert warehouse.replace_range(table, data.schema, [url], remote, **data.month(JAN)) == 1200

    assert read_rows(postgres_server, data, table) == data.rows(january)
    remote.fs.rm("/civiclake-pg-test-lake", recursive=True)


def test_concurrent_loads_from_threads_all_land(pg_env: str, data: Any, namespace: str) -> None:
    """Connections of their own creating one schema at once; one table loaded twice at once."""
    url = data.write(data.make(JAN, 2000), "jan.parquet")

    def load(table: str) -> int:
        with PostgresWarehouse(pg_env) as warehouse:
            return warehouse.replace_range(table, data.schema, [url], data.lake, **data.month(JAN))

    tables = [f"{namespace}.{name}" for name in ("a", "b", "c", "a")]
    with ThreadPoolExecutor(len(tables)) as pool:
        assert list(pool.map(load, tables)) == [2000] * len(tables)
    with PostgresWarehouse(pg_env) as warehouse:
        assert [warehouse.count(t) for t in tables] == [2000] * len(tables)


NUMERIC_TYPES = [(1, 0), (4, 4), (5, 1), (9, 3), (16, 0), (16, 8), (16, 16), (17, 5), (38, 0)]


def test_numeric_and_float_edge_values(
    warehouse: PostgresWarehouse, postgres_server: PostgresServer, data: Any, namespace: str
) -> None:
    """Every decimal shape the binary encoder aligns differently, exactly; NaN and infinities."""
    columns: dict[str, pa.Array] = {"day": pa.array([date(2024, 1, 1)] * 7, pa.date32())}
    for precision, scale in NUMERIC_TYPES:
        nines = (9,) * precision  # built from digit tuples: exact, whatever the context
        values = [Decimal((sign, digits, -scale)) for sign in (0, 1) for digits in (nines, (1,))]
        values += [Decimal(0), None, Decimal((0, (7,), -scale))]
        columns[f"d{precision}_{scale}"] = pa.array(values, pa.decimal128(precision, scale))
    nan, inf = float("nan"), float("inf")
    columns["f"] = pa.array([nan, inf, -inf, 5e-324, 1.7976931348623157e308, None, -0.0])
    edge = pa.table(columns)
    url = data.write(edge, "edge.parquet")
    table = f"{namespace}.edge"
    days = {"column": "day", "start": date(2024, 1, 1), "stop": date(2024, 1, 2)}

    assert warehouse.replace_range(table, edge.schema, [url], data.lake, **days) == 7

    names = ", ".join(f'"{name}"' for name in edge.column_names)
    with psycopg.connect(postgres_server.url) as reader:
        got = reader.execute(f"SELECT {names} FROM {table}").fetchall()
    expected = [tuple(row.values()) for row in edge.to_pylist()]
    assert [row[:-1] for row in got] == [row[:-1] for row in expected]
    assert repr([row[-1] for row in got]) == repr([row[-1] for row in expected])
    types = warehouse.column_types(table)
    assert [types[f"d{p}_{s}"] for p, s in NUMERIC_TYPES] == [
        f"numeric({p},{s})" for p, s in NUMERIC_TYPES
    ]


def test_a_value_the_server_rejects_rolls_back(
    warehouse: PostgresWarehouse, postgres_server: PostgresServer, data: Any, table: str
) -> None:
    """A failure inside COPY, after the DELETE ran: the whole transaction goes."""
    good = data.write(data.make(JAN, 600), "good.parquet")
    warehouse.replace_range(table, data.schema, [good], data.lake, **data.month(JAN))
    before = read_rows(postgres_server, data, table)
    poisoned = data.make(JAN, 600).to_pylist()
    poisoned[-1]["Note"] = "a NUL byte \x00 is not valid in PostgreSQL text"
    bad = data.write(pa.Table.from_pylist(poisoned, schema=data.schema), "nul.parquet")

    with pytest.raises(CivicLakeError, match=r"into PostgreSQL failed: .*0x00"):
        warehouse.replace_range(table, data.schema, [good, bad], data.lake, **data.month(JAN))

    assert read_rows(postgres_server, data, table) == before


def test_count_of_a_missing_table_is_a_civiclake_error(warehouse: PostgresWarehouse) -> None:
    with pytest.raises(CivicLakeError, match=r'relation "tlc\.nothing" does not exist'):
        warehouse.count("tlc.nothing")
    assert warehouse.count("pg_catalog.pg_class") > 0  # the connection is still usable


def test_a_wrong_password_never_shows_the_password(postgres_server: PostgresServer) -> None:
    parts = urlsplit(postgres_server.url)
    wrong = "Wr0ng-S3cret-Pa55"
    url = postgres_server.url.replace(f":{postgres_server.password}@", f":{wrong}@")

    with pytest.raises(CivicLakeError) as caught:
        PostgresWarehouse(url)

    message = str(caught.value)
    assert message.startswith(
        f"cannot connect to PostgreSQL at 127.0.0.1:{parts.port}/{postgres_server.database}: "
    )
    assert "password authentication failed" in message
    for secret in (wrong, postgres_server.password):
        assert secret not in shown(caught.value)


def test_an_unreachable_server_is_one_line_without_the_password() -> None:
    with pytest.raises(CivicLakeError) as caught:
        PostgresWarehouse("postgresql://someone:TopS3cret@127.0.0.1:9/nodb")

    message = str(caught.value)
    assert message.startswith("cannot connect to PostgreSQL at 127.0.0.1:9/nodb: ")
    assert "TopS3cret" not in shown(caught.value)
    assert "\n" not in message


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://someone:TopS3cret@127.0.0.1:notaport/db",
        "postgresql://someone:TopS3cret@[::1/db",
        "host=127.0.0.1 password=TopS3cret bogus",
    ],
)
def test_a_malformed_url_does_not_echo_the_password(url: str) -> None:
    with pytest.raises(CivicLakeError) as caught:
        PostgresWarehouse(url)

    assert str(caught.value).startswith("cannot connect to PostgreSQL at ")
    assert "TopS3cret" not in shown(caught.value)


def test_bad_copy_format_is_a_parameter_error(pg_env: str) -> None:
    with pytest.raises(ParameterError, match="copy_format"):
        PostgresWarehouse(pg_env, copy_format="parquet")  # type: ignore[arg-type]


def test_missing_server_binaries_say_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(testing_postgres, "SEARCH_ROOT", tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(RuntimeError, match="apt-get install -y postgresql"):
        PostgresServer().start()


def test_the_newest_installed_version_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for version in ("9.6", "15", "16"):
        for name in ("initdb", "pg_ctl", "postgres", "psql"):
            (tmp_path / version / "bin").mkdir(parents=True, exist_ok=True)
            (tmp_path / version / "bin" / name).touch()
    monkeypatch.setattr(testing_postgres, "SEARCH_ROOT", tmp_path)

    assert testing_postgres.find_binaries().initdb == tmp_path / "16" / "bin" / "initdb"


# ---------------------------------------------------------------- range_load: streamed batches


def test_shaped_encoding_is_byte_identical_to_the_general_one(data: Any) -> None:
    """The fast, shape-by-shape binary encoder writes exactly the general encoder's bytes."""
    trips = data.make(JAN, 700).drop_columns(["fare_amount", "big_amount"])  # no decimals
    flags = pa.array([None if i % 5 == 0 else ["Y", "N", ""][i % 3] for i in range(700)])
    shaped = trips.set_column(
        trips.schema.get_field_index("Note"), "Note", flags.cast("large_string")
    )
    cases = {
        "several shapes, kept in row order": shaped,
        "strings of three lengths": trips,
        "one shape": shaped.filter(
            pc.and_(
                pc.is_valid(shaped.column("VendorID")),
                pc.equal(shaped.column("store_and_fwd_flag"), "Y"),
            )
        ),
        "dictionary strings": shaped.set_column(
            shaped.schema.get_field_index("store_and_fwd_flag"),
            "store_and_fwd_flag",
            shaped.column("store_and_fwd_flag").dictionary_encode(),
        ),
    }
    for name, table in cases.items():
        batch = table.combine_chunks().to_batches()[0]
        got = encoding._shaped_tuples(batch)
        assert got is not None, name
        assert bytes(got) == bytes(encoding._joined_tuples(batch)), name
    notes = pa.array(["x" * (i % 50) for i in range(700)], pa.large_string())
    many_lengths = trips.set_column(trips.schema.get_field_index("Note"), "Note", notes)
    assert encoding._shaped_tuples(many_lengths.to_batches()[0]) is None  # 50 lengths: joined
    assert encoding._shaped_tuples(data.make(JAN, 10).to_batches()[0]) is None  # decimals


def _stream(
    warehouse: PostgresWarehouse, data: Any, table: str, batches: list[pa.Table], month: date
) -> int:
    with warehouse.range_load(table, data.schema, **data.month(month)) as load:
        for batch in batches:
            load.write(batch)
    return load.rows


def test_range_load_streams_batches_and_replaces_the_range(
    warehouse: PostgresWarehouse, postgres_server: PostgresServer, data: Any, table: str
) -> None:
    first = data.make(JAN, 900)
    warehouse.replace_range(
        table,
        data.schema,
        [data.write(data.make(FEB, 300, first_id=50_000), "feb")],
        data.lake,
        **data.month(FEB),
    )
    warehouse.batch_rows = 250  # several COPY batches per written table

    assert _stream(warehouse, data, table, [first.slice(0, 400), first.slice(400)], JAN) == 900
    assert read_rows(postgres_server, data, table, "trip_id < 50000") == data.rows(first)

    again = data.make(JAN, 500, first_id=20_000, tag="v2 ")
    reordered = again.select(list(reversed(again.column_names)))  # columns load by name
    assert _stream(warehouse, data, table, [reordered.to_batches()[0], reordered.slice(0, 0)], JAN)

    assert read_rows(postgres_server, data, table, "trip_id < 50000") == data.rows(again)
    assert warehouse.count(table, "trip_id >= 50000") == 300  # February untouched


def test_range_load_commits_only_at_the_end_with_a_second_table(
    warehouse: PostgresWarehouse, postgres_server: PostgresServer, data: Any, table: str
) -> None:
    old = data.make(JAN, 600)
    warehouse.replace_range(
        table, data.schema, [data.write(old, "old")], data.lake, **data.month(JAN)
    )
    rejects = data.write(data.make(JAN, 40, first_id=80_000), "rejects")
    new = data.make(JAN, 800, first_id=10_000)

    with warehouse.range_load(table, data.schema, **data.month(JAN)) as load:
        load.write(new)
        assert load.finish() == 800
        extra = load.replace_range(
            f"{table}_rejects", data.schema, [rejects], data.lake, **data.month(JAN)
        )
        assert extra == 40
        # a reader still sees the old month: nothing is committed yet
        assert read_rows(postgres_server, data, table) == data.rows(old)
        with psycopg.connect(postgres_server.url) as reader:
            assert reader.execute(f"SELECT to_regclass('{table}_rejects')").fetchone() == (None,)

    assert read_rows(postgres_server, data, table) == data.rows(new)
    assert warehouse.count(f"{table}_rejects") == 40


@pytest.mark.parametrize("when", ["before any batch", "after some batches", "after finish"])
def test_a_failing_producer_rolls_the_range_load_back(
    warehouse: PostgresWarehouse,
    postgres_server: PostgresServer,
    data: Any,
    table: str,
    when: str,
) -> None:
    old = data.make(JAN, 1000)
    warehouse.replace_range(
        table, data.schema, [data.write(old, "old")], data.lake, **data.month(JAN)
    )
    warehouse.batch_rows = 100
    new = data.make(JAN, 3000, first_id=10_000)

    with (
        pytest.raises(ValueError, match="corrupt input"),
        warehouse.range_load(table, data.schema, **data.month(JAN)) as load,
    ):
        if when != "before any batch":
            for batch in new.to_batches(max_chunksize=500):
                load.write(batch)
        if when == "after finish":
            load.finish()
            load.replace_range(
                f"{table}_rejects",
                data.schema,
                [data.write(new, "r")],
                data.lake,
                **data.month(JAN),
            )
        raise ValueError("corrupt input")

    assert read_rows(postgres_server, data, table) == data.rows(old)
    assert warehouse.column_types(f"{table}_rejects") == {}
    assert warehouse.replace_range(table, data.schema, [], data.lake, **data.month(FEB)) == 0


def test_a_value_the_server_rejects_rolls_the_range_load_back(
    warehouse: PostgresWarehouse, postgres_server: PostgresServer, data: Any, table: str
) -> None:
    old = data.make(JAN, 300)
    warehouse.replace_range(
        table, data.schema, [data.write(old, "old")], data.lake, **data.month(JAN)
    )
    poisoned = data.make(JAN, 300, first_id=5_000).to_pylist()
    poisoned[-1]["Note"] = "a NUL byte \x00 is not valid in PostgreSQL text"

    with pytest.raises(CivicLakeError, match=r"into PostgreSQL failed: .*0x00") as caught:
        _stream(
            warehouse, data, table, [old, pa.Table.from_pylist(poisoned, schema=data.schema)], JAN
        )

    assert "\n" not in str(caught.value)
    assert read_rows(postgres_server, data, table) == data.rows(old)


def test_a_batch_of_the_wrong_shape_is_refused(
    warehouse: PostgresWarehouse, postgres_server: PostgresServer, data: Any, table: str
) -> None:
    old = data.make(JAN, 200)
    warehouse.replace_range(
        table, data.schema, [data.write(old, "old")], data.lake, **data.month(JAN)
    )
    wrong = data.make(JAN, 10).drop_columns(["Note"])

    with pytest.raises(CivicLakeError, match=r"missing \['Note'\]"):
        _stream(warehouse, data, table, [data.make(JAN, 10), wrong], JAN)

    assert read_rows(postgres_server, data, table) == data.rows(old)


def test_a_range_load_waiting_for_the_table_lock_is_abandoned_at_once(
    pg_env: str, postgres_server: PostgresServer, data: Any, table: str
) -> None:
    """Another writer holds the table: a producer failure does not wait for it to finish."""
    with PostgresWarehouse(pg_env) as warehouse:
        warehouse.replace_range(
            table,
            data.schema,
            [data.write(data.make(JAN, 50), "old")],
            data.lake,
            **data.month(JAN),
        )
        with psycopg.connect(postgres_server.url, autocommit=True) as other:
            other.execute("SELECT pg_advisory_lock(hashtext(%s))", [f"civiclake:{table}"])
            began = time.monotonic()
            with (
                pytest.raises(ValueError, match="gave up"),
                warehouse.range_load(table, data.schema, **data.month(JAN)),
            ):
                time.sleep(0.3)  # the COPY thread is now waiting for the lock
                raise ValueError("gave up")
            assert time.monotonic() - began < 5
        assert warehouse.count(table) == 50
        assert warehouse.replace_range(table, data.schema, [], data.lake, **data.month(JAN)) == 0


def test_tlc_month_streamed_while_staging_equals_the_load_of_its_data_files(
    pg_env: str, postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The real green month: streamed batch by batch while the engine stages it, or loaded
    afterwards from the Iceberg data files the stage wrote, PostgreSQL ends up with exactly
    the same rows."""
    from datetime import UTC

    from civiclake import tables
    from civiclake.pipeline.engines import get_stage
    from civiclake.sources import tlc, tlc_fetch

    monkeypatch.setattr(tlc, "PARQUET_BATCH_ROWS", 20_000)  # several sink calls
    settings = get_settings()
    lake = settings.lake()
    month, spec = tlc.Month(2020, 10), tlc.GREEN
    catalog = tables.load_catalog(settings)
    table = tables.ensure_table_for(
        catalog, spec.table, tlc.table_schema(spec), month_of=spec.pickup
    )
    rejects = tables.ensure_table_for(catalog, spec.rejects_table, tlc.rejects_schema(spec))
    raw = tlc_fetch.stage_local_file(lake, str(TLC_GREEN), "green", month)
    ctx = tlc.context(spec, month, run_id="run-1", now=datetime.now(UTC))
    schema = tlc.table_schema(spec)
    bounds = {"column": spec.pickup, "start": month.start, "stop": month.stop}
    namespace = f"tlc_{uuid.uuid4().hex[:10]}"
    streamed, from_file = f"{namespace}.streamed", f"{namespace}.from_file"
    calls: list[int] = []

    with PostgresWarehouse(pg_env) as warehouse:
        with warehouse.range_load(streamed, schema, **bounds) as load:

            def sink(rows: pa.Table) -> None:
                calls.append(rows.num_rows)
                load.write(rows)

            staged = get_stage()(
                spec, lake, [raw], ctx, table=table, rejects_table=rejects, sink=sink
            )
        loaded = warehouse.replace_range(from_file, schema, staged.data_urls, lake, **bounds)

        assert len(calls) >= 4 and sum(calls) == staged.rows_valid == load.rows == loaded
        assert warehouse.count(streamed) == warehouse.count(from_file) == 94_852
    with psycopg.connect(postgres_server.url) as reader:
        for one, other in ((streamed, from_file), (from_file, streamed)):
            difference = reader.execute(
                f"SELECT count(*) FROM (SELECT * FROM {one} EXCEPT ALL SELECT * FROM {other}) d"
            ).fetchone()
            assert difference == (0,)
