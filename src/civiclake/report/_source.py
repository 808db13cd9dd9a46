"""The tables a page reads, as DuckDB views over the Parquet files PyIceberg plans
(``civiclake.query``): every figure is a SQL aggregate, no table is pulled into Python."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import duckdb
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table
from pyiceberg.transforms import IdentityTransform, TimeTransform
from pyiceberg.types import (
    DateType,
    TimestampNanoType,
    TimestampType,
    TimestamptzNanoType,
    TimestamptzType,
)

from civiclake.config import Settings
from civiclake.query import _quote, connect_for

DATA_VIEW = "t"  # the table, restricted to --since on its time column
DATE_TYPES = (DateType, TimestampType, TimestamptzType, TimestampNanoType, TimestamptzNanoType)
TIME_TYPES = ("DATE", "TIMESTAMP", "TIMESTAMP WITH TIME ZONE", "TIMESTAMP_NS", "TIMESTAMP_S")
LOAD_META_COLUMNS = frozenset({"load_run_id", "load_source", "loaded_at", "rejected_at"})
# a portal's own bookkeeping (when a row was published or edited), not the dataset's date
SYSTEM_TIME_COLUMNS = ("socrata_created_at", "socrata_updated_at")


def plain(value: Any) -> Any:
    """A JSON-friendly scalar (Vega-Lite data, HTML cells)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def quote(name: str) -> str:
    return _quote(name)


def sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass
class Source:
    """One table (and the tables its page joins) registered in an in-memory DuckDB."""

    identifier: str
    table: Table
    con: duckdb.DuckDBPyConnection
    columns: dict[str, str]  # name -> DuckDB type
    time_column: str | None
    since: date | None

    def rows(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        cursor = self.con.execute(sql, params or [])
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, map(plain, row), strict=True)) for row in cursor.fetchall()]

    def one(self, sql: str) -> Any:
        row = self.con.execute(sql).fetchone()
        return plain(row[0]) if row else None

    def has(self, identifier: str) -> bool:
        ns, name = identifier.rsplit(".", 1)
        found = self.con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? "
            "AND table_name = ?",
            [ns, name],
        ).fetchone()
        return bool(found and found[0])

    def close(self) -> None:
        self.con.close()


def time_column_of(
    columns: dict[str, str], preferred: str | None = None, partition: str | None = None
) -> str | None:
    """The column rows are counted over: the page's own choice, else the table's time
    partition column, else the first date or timestamp column that is neither load metadata
    (``loaded_at``) nor a portal system timestamp (``socrata_created_at``: when the portal
    published a row, one spike per bulk upload), else such a system timestamp."""
    if preferred and preferred in columns:
        return preferred
    timed = [c for c, t in columns.items() if t.upper().startswith(TIME_TYPES)]
    if partition in timed:
        return partition
    data = [c for c in timed if c not in LOAD_META_COLUMNS and c not in SYSTEM_TIME_COLUMNS]
    system = [c for c in SYSTEM_TIME_COLUMNS if c in timed]
    return (data or system or [None])[0]


def partition_time_column(table: Table) -> str | None:
    """The source column of the table's first time partition field (``month(date)``)."""
    schema = table.schema()
    for spec_field in table.spec().fields:
        if isinstance(spec_field.transform, TimeTransform | IdentityTransform):
            source = schema.find_field(spec_field.source_id)
            if isinstance(source.field_type, DATE_TYPES):
                return source.name
    return None


def date_columns(table: Table) -> list[str]:
    """The table's date and timestamp columns (what ``--date-column`` may name)."""
    return [f.name for f in table.schema().fields if isinstance(f.field_type, DATE_TYPES)]


def open_source(
    settings: Settings,
    catalog: Catalog,
    identifier: str,
    *,
    joins: tuple[str, ...] = (),
    time_column: str | None = None,
    since: date | None = None,
) -> Source:
    """Register ``identifier`` (+ ``joins`` that exist) and the view ``t`` over it."""
    table = catalog.load_table(identifier)
    existing = [j for j in joins if catalog.table_exists(j)]
    con = connect_for(" ".join([identifier, *existing]), settings, catalog)
    ns, name = identifier.rsplit(".", 1)
    target = f"{quote(ns)}.{quote(name)}"
    described = con.execute(f"DESCRIBE {target}").fetchall()
    columns = {row[0]: str(row[1]) for row in described}
    column = time_column_of(columns, time_column, partition_time_column(table))
    where = ""
    if since is not None and column is not None:
        where = f" WHERE {quote(column)} >= DATE {sql_literal(since.isoformat())}"
    con.execute(f"CREATE VIEW {DATA_VIEW} AS SELECT * FROM {target}{where}")
    return Source(identifier, table, con, columns, column, since)
