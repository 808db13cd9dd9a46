"""SQL over the catalog's Iceberg tables with DuckDB, addressed as ``namespace.table``.

DuckDB cannot download its Iceberg extension offline, so PyIceberg plans the scan (current
snapshot, live data files) and DuckDB reads those Parquet files directly: projection and
filter pushdown, parallel, and nothing materialized in Python; on an object store through the
lake's own fsspec filesystem (same credentials). Tables with merge-on-read delete
files (written by other engines) fall back to PyIceberg's own reader, which applies them.
Only tables the query mentions are planned, so a query costs one table's metadata, not all.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import duckdb
import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from civiclake import tables
from civiclake.config import Settings
from civiclake.errors import CivicLakeError
from civiclake.lake import Lake, scheme_of


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _mentions(sql: str, namespace: str, name: str) -> bool:
    pattern = rf'(?<![\w."]){re.escape(namespace)}"?\s*\.\s*"?{re.escape(name)}(?![\w"])'
    return re.search(pattern, sql, flags=re.IGNORECASE) is not None


def _register(
    con: duckdb.DuckDBPyConnection, table: Table, namespace: str, name: str, lake: Lake
) -> None:
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote(namespace)}")
    target = f"{_quote(namespace)}.{_quote(name)}"
    tasks = list(table.scan().plan_files()) if table.current_snapshot() else []
    if tasks and not any(t.delete_files for t in tasks):
        paths = [t.file.file_path for t in tasks]
        if all(p.startswith("file://") or p.startswith("/") for p in paths):
            paths = [p.removeprefix("file://") for p in paths]
        elif all(scheme_of(p) in lake.backend.schemes for p in paths):
            # DuckDB reads the object store through the lake's own fsspec filesystem (same
            # credentials); its httpfs extension cannot be downloaded offline anyway.
            _register_filesystem(con, lake)
        else:
            paths = []
        if paths:
            listing = ", ".join("'" + p.replace("'", "''") + "'" for p in paths)
            columns = ", ".join(_quote(f.name) for f in table.schema().fields)
            con.execute(
                f"CREATE VIEW {target} AS SELECT {columns} FROM "
                f"read_parquet([{listing}], union_by_name=true)"
            )
            return
    # merge-on-read deletes, or files outside the lake: PyIceberg's reader applies everything
    arrow = table.scan().to_arrow() if tasks else table.schema().as_arrow().empty_table()
    view = f"__iceberg_{namespace}_{name}"
    con.register(view, arrow)
    con.execute(f"CREATE VIEW {target} AS SELECT * FROM {_quote(view)}")


def connect_for(
    sql: str, settings: Settings, catalog: Catalog | None = None
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB where every catalog table the SQL mentions is a view."""
    catalog = catalog or tables.load_catalog(settings)
    lake = settings.lake()
    con = duckdb.connect()
    for namespace in catalog.list_namespaces():
        for ident in catalog.list_tables(namespace):
            ns, name = ".".join(ident[:-1]), ident[-1]
            if _mentions(sql, ns, name):
                _register(con, catalog.load_table(ident), ns, name, lake)
    return con


def _register_filesystem(con: duckdb.DuckDBPyConnection, lake: Lake) -> None:
    protocols = lake.fs.protocol if isinstance(lake.fs.protocol, tuple) else (lake.fs.protocol,)
    if not any(con.filesystem_is_registered(p) for p in protocols):
        con.register_filesystem(lake.fs)


def run_sql(sql: str, settings: Settings) -> pa.Table:
    """Run one statement; DuckDB errors become one-line ``CivicLakeError``s."""
    con = connect_for(sql, settings)
    try:
        relation = con.sql(sql)
        if relation is None:  # a statement without a result (CREATE, SET, ...)
            return pa.table({})
        return relation.to_arrow_table()
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CivicLakeError(f"SQL error: {first}") from None
    finally:
        con.close()


def to_python(value: Any) -> Any:
    """JSON-friendly form of a result value."""
    if isinstance(value, Decimal):  # DuckDB's sum() of integers is a HUGEINT/DECIMAL
        return int(value) if value == value.to_integral_value() else float(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return value
