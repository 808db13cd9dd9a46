"""DuckDB warehouse: the conformance suite, and what only DuckDB has (its types, a remote lake
streamed as Arrow batches, one file shared by threads)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from warehouse_suite import WarehouseSuite

from civiclake.config import get_settings
from civiclake.errors import CivicLakeError, ParameterError
from civiclake.lake import Lake
from civiclake.warehouse import Warehouse, open_warehouse
from civiclake.warehouse._arrow_sql import qualified, quote_ident
from civiclake.warehouse.duckdb import DuckDBWarehouse

TABLE = "tlc.yellow_trips"
JAN, FEB, MAR = date(2024, 1, 1), date(2024, 2, 1), date(2024, 3, 1)
EXPECTED_TYPES = {
    "VendorID": "SMALLINT",
    "RatecodeID": "SMALLINT",
    "PULocationID": "INTEGER",
    "trip_id": "BIGINT",
    "trip_distance": "DOUBLE",
    "fare_amount": "DECIMAL(10,2)",
    "big_amount": "DECIMAL(38,9)",
    "store_and_fwd_flag": "VARCHAR",
    "Note": "VARCHAR",
    "is_shared": "BOOLEAN",
    "pickup_date": "DATE",
    "tpep_pickup_datetime": "TIMESTAMP",
    "loaded_at": "TIMESTAMP WITH TIME ZONE",
}


@pytest.fixture
def warehouse() -> Any:
    with open_warehouse("duckdb", get_settings()) as opened:
        yield opened


def read_rows(warehouse: DuckDBWarehouse, data: Any, where: str = "true") -> list[tuple[Any, ...]]:
    """Everything in the table, read by a second connection (what a reader sees)."""
    with duckdb.connect(str(warehouse.path)) as reader:
        return reader.execute(
            f"SELECT {data.columns_sql} FROM tlc.yellow_trips WHERE {where} ORDER BY trip_id"
        ).fetchall()


class TestDuckDBConformance(WarehouseSuite):
    kind = "duckdb"
    trip_types = EXPECTED_TYPES

    @pytest.fixture
    def warehouse(self) -> Iterator[DuckDBWarehouse]:
        with open_warehouse("duckdb", get_settings()) as opened:
            assert isinstance(opened, DuckDBWarehouse)
            yield opened

    def rows(self, warehouse: Warehouse, table: str, columns: list[str]) -> list[tuple[Any, ...]]:
        assert isinstance(warehouse, DuckDBWarehouse)
        names = ", ".join(quote_ident(name) for name in columns)
        with duckdb.connect(str(warehouse.path)) as reader:
            return reader.execute(f"SELECT {names} FROM {qualified(table)}").fetchall()


def test_open_warehouse_is_a_file_under_home(warehouse: DuckDBWarehouse) -> None:
    assert isinstance(warehouse, Warehouse)
    assert warehouse.name == "duckdb"
    assert warehouse.path == get_settings().home_dir / "warehouse.duckdb"
    assert warehouse.path.exists()


def test_unknown_kind_is_a_parameter_error() -> None:
    with pytest.raises(ParameterError, match="unknown warehouse 'oracle'"):
        open_warehouse("oracle", get_settings())


def test_round_trip_from_a_remote_lake_streams_batches(data: Any) -> None:
    """Not a local lake (memory://): batches stream through a registered Arrow reader."""
    remote = Lake("memory://civiclake-test-lake")
    january = data.make(JAN, 2500)
    urls = [
        data.write(january.slice(0, 1000), "a", remote),
        data.write(january.slice(1000), "b", remote),
    ]
    with DuckDBWarehouse(get_settings().home_dir / "remote.duckdb", batch_rows=300) as warehouse:
        assert warehouse.replace_range(TABLE, data.schema, urls, remote, **data.month(JAN)) == 2500
        assert read_rows(warehouse, data) == data.rows(january)
    remote.fs.rm("/civiclake-test-lake", recursive=True)


def test_an_empty_file_list_empties_the_month(warehouse: DuckDBWarehouse, data: Any) -> None:
    url = data.write(data.make(JAN, 100), "jan.parquet")
    warehouse.replace_range(TABLE, data.schema, [url], data.lake, **data.month(JAN))

    assert warehouse.replace_range(TABLE, data.schema, [], data.lake, **data.month(JAN)) == 0

    assert warehouse.count(TABLE) == 0


def test_a_failure_after_the_delete_rolls_back(
    warehouse: DuckDBWarehouse, data: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Skip the up-front file check: the mismatch now fails inside the transaction."""
    good = data.write(data.make(JAN, 800), "good.parquet")
    warehouse.replace_range(TABLE, data.schema, [good], data.lake, **data.month(JAN))
    before = read_rows(warehouse, data)
    foreign = data.make(JAN, 10).append_column("extra", pa.array(range(10)))
    bad = data.write(foreign, "foreign.parquet")
    monkeypatch.setattr("civiclake.warehouse._sql.check_file_schema", lambda *a: None)

    with pytest.raises(CivicLakeError, match=r"loading tlc\.yellow_trips into DuckDB failed"):
        warehouse.replace_range(TABLE, data.schema, [good, bad], data.lake, **data.month(JAN))

    assert read_rows(warehouse, data) == before


def test_concurrent_loads_from_threads_all_land(data: Any) -> None:
    """Separate warehouse objects on one file, first loads creating the same schema at once."""
    url = data.write(data.make(JAN, 2000), "jan.parquet")
    path = get_settings().home_dir / "warehouse.duckdb"

    def load(table: str) -> int:
        with DuckDBWarehouse(path) as warehouse:
            return warehouse.replace_range(table, data.schema, [url], data.lake, **data.month(JAN))

    tables = ["tlc.a", "tlc.b", "tlc.c", "tlc.a"]
    with ThreadPoolExecutor(len(tables)) as pool:
        assert list(pool.map(load, tables)) == [2000] * len(tables)
    with DuckDBWarehouse(path) as warehouse:
        assert [warehouse.count(t) for t in tables] == [2000] * len(tables)


def test_bad_arguments_are_parameter_errors(warehouse: DuckDBWarehouse, data: Any) -> None:
    month = data.month(JAN)
    with pytest.raises(ParameterError, match=r"namespace\.name"):
        warehouse.replace_range("trips", data.schema, [], data.lake, **month)
    with pytest.raises(ParameterError, match="no column 'nope'"):
        warehouse.replace_range(TABLE, data.schema, [], data.lake, **{**month, "column": "nope"})
    with pytest.raises(ParameterError, match="not before"):
        warehouse.replace_range(
            TABLE, data.schema, [], data.lake, **{**month, "start": month["stop"]}
        )
    assert warehouse.column_types(TABLE) == {}


def test_count_of_a_missing_table_is_a_civiclake_error(warehouse: DuckDBWarehouse) -> None:
    with pytest.raises(CivicLakeError, match=r"cannot count tlc\.nothing in DuckDB"):
        warehouse.count("tlc.nothing")
