"""Warehouses: SQL databases that hold query-ready copies of lake tables, one module each.

Every destination has the same contract (dlt-style): ``replace(table, schema, files, lake,
slice, evolve=...)`` swaps one slice of a table (a month of trips, a set of days, a set of row
ids, the whole table; see ``civiclake.slices``) for the rows of some Parquet files in a single
transaction, so a reload is idempotent and readers never see a half-loaded slice. What each
warehouse can do is declared once, in ``WAREHOUSE_MODULES`` (its ``Capabilities``); the flows,
the CLI, the doctor and the blocks derive the names and the checks from it, and the
conformance suite (tests/warehouse/warehouse_suite.py) proves it. Adding a warehouse is one
module, one entry here and the suite passing. DuckDB is the embedded default (a file under
CIVICLAKE_HOME); PostgreSQL is reached through ``CIVICLAKE_POSTGRES_URL``, BigQuery through
``CIVICLAKE_BIGQUERY_PROJECT``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from datetime import date, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self, runtime_checkable

from civiclake._private.extras import require
from civiclake.errors import ParameterError
from civiclake.slices import RowIds, WholeTable, Window, Windows

if TYPE_CHECKING:
    import pyarrow as pa

    from civiclake.config import Settings
    from civiclake.lake import Lake
    from civiclake.slices import Slice

__all__ = [
    "WAREHOUSE_KINDS",
    "WAREHOUSE_MODULES",
    "Capabilities",
    "Replaces",
    "StreamingWarehouse",
    "Warehouse",
    "check_configured",
    "check_merges",
    "open_streaming",
    "open_warehouse",
    "require_driver",
    "warehouse_module",
]


class Replaces(Protocol):
    """The load contract, the one call every warehouse (and a streaming load) answers."""

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
        """In one transaction: create the table if missing, delete the slice (a window, a set
        of windows, a set of row ids, the whole table), load every row of ``parquet_urls``;
        return the rows loaded. ``evolve`` adds the schema's new columns first. On error
        nothing changes."""
        ...


class Scoped(Protocol):
    """Closed when its ``with`` block ends."""

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@runtime_checkable
class Warehouse(Replaces, Scoped, Protocol):
    """A destination that replaces a slice of a table atomically from Parquet files."""

    name: str

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


class StreamingLoad(Replaces, Scoped, Protocol):
    """One open transaction replacing a window with rows handed over while they are made;
    its ``replace`` loads a slice of another table in the same transaction, after the stream."""

    def write(self, batch: pa.Table | pa.RecordBatch) -> None: ...

    def finish(self) -> int:
        """End the stream and return its row count; the commit comes when the block ends."""
        ...


@runtime_checkable
class StreamingWarehouse(Warehouse, Protocol):
    """A warehouse with ``Capabilities.streams_while_staging``: ``range_load`` streams rows
    into the window's transaction while the caller still converts the file."""

    def range_load(
        self,
        table: str,
        schema: pa.Schema,
        *,
        column: str,
        start: datetime | date,
        stop: datetime | date,
    ) -> StreamingLoad: ...


def open_streaming(kind: str, settings: Settings) -> StreamingWarehouse:
    """``open_warehouse`` for a warehouse that declares ``streams_while_staging``."""
    if not warehouse_module(kind).capabilities.streams_while_staging:
        raise ParameterError(f"the {kind} warehouse does not load rows while they are staged")
    opened = open_warehouse(kind, settings)
    assert isinstance(opened, StreamingWarehouse)
    return opened


@dataclass(frozen=True)
class Capabilities:
    """What a warehouse can do, declared once: the flows, the CLI and the doctor read it
    instead of testing warehouse names (and the conformance suite proves it)."""

    slices: frozenset[type] = frozenset((WholeTable, Window, Windows, RowIds))
    """The slice kinds ``replace`` accepts."""
    evolves: bool = True
    """``replace(..., evolve=True)`` adds a source's new columns."""
    streams_while_staging: bool = False
    """``range_load``: rows go in while the caller still makes them (one transaction)."""
    transactions: bool = True
    """The delete and the load commit together: readers never see half a load."""

    @property
    def merges(self) -> bool:
        """Replaces the whole table and merges by row id, adding new columns: a Socrata load."""
        return {WholeTable, RowIds} <= self.slices and self.evolves


@dataclass(frozen=True)
class WarehouseModule:
    """Where a warehouse lives, which optional driver it needs (imported only when used), the
    settings it reads and what it can do."""

    kind: str
    module: str
    class_name: str
    driver: str | None = None  # import name of the client library
    package: str | None = None  # its distribution name, for the pip hint
    extra: str | None = None  # civiclake's extra that installs it
    capabilities: Capabilities = Capabilities()
    setting: str | None = None  # the Settings field that configures it; None: always there
    setting_hint: str = ""  # what ``--to KIND`` says when that setting is missing
    block_class: str | None = None  # its Prefect block in civiclake.blocks
    label: str = ""  # how ``--to`` help texts describe it

    @property
    def merges(self) -> bool:
        return self.capabilities.merges

    def configured(self, settings: Settings) -> bool:
        """Its settings are present (an embedded warehouse always is)."""
        return self.setting is None or bool(getattr(settings, self.setting, None))

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
    "duckdb": WarehouseModule(
        "duckdb", "civiclake.warehouse.duckdb", "DuckDBWarehouse", label="duckdb (embedded)"
    ),
    "postgres": WarehouseModule(
        "postgres",
        "civiclake.warehouse.postgres",
        "PostgresWarehouse",
        driver="psycopg",
        package="psycopg[binary]",
        capabilities=Capabilities(streams_while_staging=True),
        setting="postgres_url",
        setting_hint="CIVICLAKE_POSTGRES_URL (postgresql://user:password@host:port/db)",
        block_class="PostgresWarehouseBlock",
    ),
    "bigquery": WarehouseModule(
        "bigquery",
        "civiclake.warehouse.bigquery",
        "BigQueryWarehouse",
        driver="google.cloud.bigquery",
        package="google-cloud-bigquery",
        extra="bigquery",
        setting="bigquery_project",
        setting_hint="CIVICLAKE_BIGQUERY_PROJECT",
        block_class="BigQueryWarehouseBlock",
    ),
}
WAREHOUSE_KINDS = tuple(WAREHOUSE_MODULES)


def describe_kinds() -> str:
    """``duckdb (embedded), postgres or bigquery``: the ``--to`` choices in a help text."""
    labels = [entry.label or entry.kind for entry in WAREHOUSE_MODULES.values()]
    return ", ".join(labels[:-1]) + " or " + labels[-1] if len(labels) > 1 else labels[0]


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
    if block or entry.configured(settings):
        return
    raise ParameterError(f"--to {kind} needs {entry.setting_hint} or a warehouse block")


def check_merges(kind: str, settings: Settings, *, block: bool = False) -> None:
    """``check_configured``, and the warehouse replaces any slice (a Socrata dataset's loads
    replace the whole table or merge by row id)."""
    check_configured(kind, settings, block=block)
    if not warehouse_module(kind).merges:
        raise ParameterError(
            f"--to {kind}: this warehouse does not replace whole tables or merge by row id; "
            "a Socrata dataset "
            f"(full refresh, merge by id) loads into {', '.join(merging_kinds())}"
        )


def merging_kinds() -> list[str]:
    """The warehouses a Socrata dataset (full refresh, merge by id) can load into."""
    return [kind for kind, entry in WAREHOUSE_MODULES.items() if entry.merges]
