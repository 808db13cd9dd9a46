"""Warehouses: SQL databases that hold query-ready copies of lake tables, one module each.

Every destination has the same shape (dlt-style): ``replace_range`` swaps one range of a table
(a month of trips) for the rows of some Parquet files in a single transaction, so a reload is
idempotent and readers never see a half-loaded month. DuckDB is the embedded default (a file
under CIVICLAKE_HOME); PostgreSQL is reached through ``CIVICLAKE_POSTGRES_URL``.
"""

from __future__ import annotations

from datetime import date, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self, runtime_checkable

import pyarrow as pa

from civiclake.errors import ParameterError

if TYPE_CHECKING:
    from civiclake.config import Settings
    from civiclake.lake import Lake

__all__ = ["WAREHOUSE_KINDS", "Warehouse", "open_warehouse"]

WAREHOUSE_KINDS = ("duckdb", "postgres", "bigquery")


@runtime_checkable
class Warehouse(Protocol):
    """A destination that can replace a range of a table atomically and bulk-load Parquet."""

    name: str

    def replace_range(
        self,
        table: str,
        schema: pa.Schema,
        parquet_urls: list[str],
        lake: Lake,
        *,
        column: str,
        start: datetime | date,
        stop: datetime | date,
    ) -> int:
        """In one transaction: create the table if missing, delete ``start <= column < stop``,
        load every row of ``parquet_urls``; return the rows loaded. On error nothing changes."""
        ...

    def check(self) -> str:
        """Prove the warehouse is reachable and writable without changing it; return one line
        saying what was verified, or raise ``CivicLakeError`` saying what is missing."""
        ...

    def column_types(self, table: str) -> dict[str, str]:
        """Column -> SQL type as the database reports it; empty when the table is missing."""
        ...

    def count(self, table: str, where: str | None = None) -> int:
        """Rows of ``table`` (matching the SQL condition ``where``, when given)."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


def open_warehouse(kind: str, settings: Settings) -> Warehouse:
    """The warehouse named ``kind``; drivers are imported only for the kind asked for."""
    if kind == "duckdb":
        from civiclake.warehouse.duckdb import DuckDBWarehouse

        return DuckDBWarehouse.from_settings(settings)
    if kind == "postgres":
        from civiclake.warehouse.postgres import PostgresWarehouse

        return PostgresWarehouse.from_settings(settings)
    if kind == "bigquery":
        from civiclake.warehouse.bigquery import BigQueryWarehouse

        return BigQueryWarehouse.from_settings(settings)
    raise ParameterError(f"unknown warehouse {kind!r}; choose one of {', '.join(WAREHOUSE_KINDS)}")
