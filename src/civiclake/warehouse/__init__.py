"""Warehouses: SQL databases that hold query-ready copies of lake tables, one module each.

Every destination has the same shape (dlt-style): ``replace_range`` swaps one range of a table
(a month of trips) for the rows of some Parquet files in a single transaction, so a reload is
idempotent and readers never see a half-loaded month. DuckDB is the embedded default (a file
under CIVICLAKE_HOME); PostgreSQL is reached through ``CIVICLAKE_POSTGRES_URL``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from datetime import date, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self, runtime_checkable

import pyarrow as pa

from civiclake._private.extras import require
from civiclake.errors import ParameterError

if TYPE_CHECKING:
    from civiclake.config import Settings
    from civiclake.lake import Lake
    from civiclake.slices import Slice

__all__ = [
    "WAREHOUSE_KINDS",
    "WAREHOUSE_MODULES",
    "Warehouse",
    "check_configured",
    "check_merges",
    "open_warehouse",
    "require_driver",
]

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

    def replace(
        self,
        table: str,
        schema: pa.Schema,
        parquet_urls: list[str],
        lake: Lake,
        replaced: Slice,
        *,
        evolve: bool = False,
    ) -> int:
        """The load contract: in one transaction delete the slice (a window, a set of row ids,
        the whole table) and load ``parquet_urls``; ``evolve`` adds new columns first."""
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


@dataclass(frozen=True)
class WarehouseModule:
    """Where a warehouse lives and which optional driver it needs (imported only when used)."""

    kind: str
    module: str
    class_name: str
    driver: str | None = None  # import name of the client library
    package: str | None = None  # its distribution name, for the pip hint
    extra: str | None = None  # civiclake's extra that installs it
    merges: bool = True  # replaces any slice (whole table, row ids) and adds new columns

    def require_driver(self) -> None:
        """One line with the pip command when the client library is not installed."""
        if self.driver:
            require(
                self.driver,
                package=self.package or self.driver,
                extra=self.extra,
                needed_by=f"the {self.kind} warehouse",
            )


WAREHOUSE_MODULES: dict[str, WarehouseModule] = {
    "duckdb": WarehouseModule("duckdb", "civiclake.warehouse.duckdb", "DuckDBWarehouse"),
    "postgres": WarehouseModule(
        "postgres",
        "civiclake.warehouse.postgres",
        "PostgresWarehouse",
        driver="psycopg",
        package="psycopg[binary]",
    ),
    "bigquery": WarehouseModule(
        "bigquery",
        "civiclake.warehouse.bigquery",
        "BigQueryWarehouse",
        driver="google.cloud.bigquery",
        package="google-cloud-bigquery",
        extra="bigquery",
        merges=False,  # date/time windows only, for now
    ),
}
assert tuple(WAREHOUSE_MODULES) == WAREHOUSE_KINDS


def warehouse_module(kind: str) -> WarehouseModule:
    """The entry for ``kind``; a clear error for an unknown one."""
    try:
        return WAREHOUSE_MODULES[kind]
    except KeyError:
        choices = ", ".join(WAREHOUSE_KINDS)
        raise ParameterError(f"unknown warehouse {kind!r}; choose one of {choices}") from None


def require_driver(kind: str) -> None:
    """Fail before any work when the warehouse ``kind``'s client library is missing."""
    warehouse_module(kind).require_driver()


def open_warehouse(kind: str, settings: Settings) -> Warehouse:
    """The warehouse named ``kind``; drivers are imported only for the kind asked for."""
    entry = warehouse_module(kind)
    entry.require_driver()
    cls = getattr(importlib.import_module(entry.module), entry.class_name)
    return cls.from_settings(settings)  # type: ignore[no-any-return]


def check_configured(kind: str, settings: Settings, *, block: bool = False) -> None:
    """Fail before any work when ``--to kind`` cannot work: unknown kind, its client library
    missing, or its settings absent (``block``: a warehouse block will provide them)."""
    entry = warehouse_module(kind)
    entry.require_driver()
    if block:
        return
    if kind == "postgres" and settings.postgres_url is None:
        raise ParameterError(
            "--to postgres needs CIVICLAKE_POSTGRES_URL (postgresql://user:password@host:port/db)"
            " or a warehouse block"
        )
    if kind == "bigquery" and not settings.bigquery_project:
        raise ParameterError("--to bigquery needs CIVICLAKE_BIGQUERY_PROJECT or a warehouse block")


def check_merges(kind: str, settings: Settings, *, block: bool = False) -> None:
    """``check_configured``, and the warehouse replaces any slice (a Socrata dataset's loads
    replace the whole table or merge by row id)."""
    check_configured(kind, settings, block=block)
    if not warehouse_module(kind).merges:
        raise ParameterError(
            f"--to {kind}: this warehouse replaces date/time ranges only; a Socrata dataset "
            f"(full refresh, merge by id) loads into {', '.join(merging_kinds())}"
        )


def merging_kinds() -> list[str]:
    return [kind for kind, entry in WAREHOUSE_MODULES.items() if entry.merges]
