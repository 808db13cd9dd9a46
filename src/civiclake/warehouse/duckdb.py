"""DuckDB: the embedded warehouse, one file at ``$CIVICLAKE_HOME/warehouse.duckdb``.

A local lake is loaded by DuckDB itself (``read_parquet`` over the files, multi-threaded, no
Python in the data path); any other lake is streamed as Arrow record batches through fsspec,
so memory stays bounded. Rows are inserted BY NAME: the files' column order never matters.
"""

from __future__ import annotations

import contextlib
import threading
from datetime import date, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from civiclake.config import Settings
from civiclake.errors import CivicLakeError
from civiclake.lake import Lake
from civiclake.slices import RowIds, Slice
from civiclake.warehouse._arrow_sql import (
    missing_columns,
    one_line,
    qualified,
    quote_ident,
    split_table,
)
from civiclake.warehouse._sql import Load, SqlWarehouse, slice_condition

__all__ = ["DEFAULT_BATCH_ROWS", "DuckDBWarehouse"]

DEFAULT_BATCH_ROWS = 64 * 1024
FILE_NAME = "warehouse.duckdb"
_STREAM_VIEW = "__civiclake_batches"
_IDS_VIEW = "__civiclake_ids"


_FILE_LOCKS: dict[str, threading.Lock] = {}
_FILE_LOCKS_GUARD = threading.Lock()


def _file_lock(path: str) -> threading.Lock:
    """One lock per database file in this process, shared by every warehouse object on it.

    Concurrent DuckDB transactions that both create the schema or table fail on commit with a
    write-write conflict; DuckDB parallelises each INSERT itself, so serialising costs little.
    """
    with _FILE_LOCKS_GUARD:
        return _FILE_LOCKS.setdefault(path, threading.Lock())


class DuckDBWarehouse(SqlWarehouse):
    """One DuckDB file; writes to it from this process are serialised (see ``_file_lock``)."""

    name = "duckdb"
    dialect = "duckdb"
    label = "DuckDB"

    def __init__(self, path: Path | str, *, batch_rows: int = DEFAULT_BATCH_ROWS) -> None:
        self.path = Path(path)
        self.batch_rows = batch_rows
        memory = str(path) == ":memory:"
        if not memory:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._con = duckdb.connect(str(path))
            # Naive datetimes (range bounds, TIMESTAMP columns) are UTC, as in the lake.
            self._con.execute("SET TimeZone = 'UTC'")
        except duckdb.Error as exc:
            raise CivicLakeError(
                f"cannot open the DuckDB warehouse {path}: {_reason(exc)}"
            ) from exc
        self._lock = threading.Lock() if memory else _file_lock(str(self.path.resolve()))

    @classmethod
    def from_settings(cls, settings: Settings) -> DuckDBWarehouse:
        return cls(settings.home_dir / FILE_NAME)

    def _replace(self, load: Load) -> int:
        """Delete the slice and load the files, in one transaction. ``evolve``: columns of
        ``schema`` the table lacks are added (a source's new column) instead of refused."""
        table, schema, parquet_urls, lake, replaced, evolve = load
        create = self.checked_create_sql(table, schema, parquet_urls, lake, replaced)
        namespace, _ = split_table(table)
        target = qualified(table)
        local = _local_paths(lake, parquet_urls)
        with self._lock:
            con = self._con
            con.execute("BEGIN TRANSACTION")
            try:
                con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(namespace)}")
                con.execute(create)
                if evolve:
                    for name, kind in missing_columns(self._column_types(table), schema, "duckdb"):
                        con.execute(f"ALTER TABLE {target} ADD COLUMN {quote_ident(name)} {kind}")
                self.check_columns(table, schema, self._column_types(table))
                self._delete(target, replaced)
                if not parquet_urls:
                    loaded = 0
                elif local is not None:
                    loaded = _first(
                        con.execute(
                            f"INSERT INTO {target} BY NAME SELECT * FROM read_parquet(?, "
                            "union_by_name = true, hive_partitioning = false)",
                            [local],
                        )
                    )
                else:
                    loaded = sum(self._insert_streamed(target, lake, url) for url in parquet_urls)
                con.execute("COMMIT")
            except BaseException as exc:
                with contextlib.suppress(duckdb.Error):  # never hide the error that got us here
                    con.execute("ROLLBACK")
                if isinstance(exc, duckdb.Error):
                    raise CivicLakeError(
                        f"loading {table} into DuckDB failed: {_reason(exc)}"
                    ) from exc
                if isinstance(exc, (OSError, pa.ArrowException)):
                    raise CivicLakeError(f"loading {table} into DuckDB failed: {exc}") from exc
                raise
        return loaded

    def _delete(self, target: str, replaced: Slice) -> None:
        con, params = self._con, []

        def bind(value: date | datetime) -> str:
            params.append(value)
            return "?"

        def member(column: str, ids: RowIds) -> str:  # the ids as an Arrow table joined against
            con.register(_IDS_VIEW, pa.table({"id": pa.array(sorted(ids.ids), pa.string())}))
            return f"{column} IN (SELECT id FROM {_IDS_VIEW})"

        where = slice_condition(replaced, quote_ident, bind, member)
        if where is None:
            return
        try:
            con.execute(f"DELETE FROM {target} WHERE {where}", params)
        finally:
            if isinstance(replaced, RowIds):
                con.unregister(_IDS_VIEW)

    def _insert_streamed(self, target: str, lake: Lake, url: str) -> int:
        """Bounded memory: DuckDB pulls record batches from the file while it inserts."""
        with lake.open(url) as handle:
            parquet = pq.ParquetFile(handle)
            reader = pa.RecordBatchReader.from_batches(
                parquet.schema_arrow, parquet.iter_batches(batch_size=self.batch_rows)
            )
            self._con.register(_STREAM_VIEW, reader)
            try:
                return _first(
                    self._con.execute(f"INSERT INTO {target} BY NAME SELECT * FROM {_STREAM_VIEW}")
                )
            finally:
                self._con.unregister(_STREAM_VIEW)

    def check(self) -> str:
        """Prove the file takes writes (a table created in a transaction rolled back)."""
        with self._lock:
            try:
                self._con.execute("BEGIN TRANSACTION")
                self._con.execute("CREATE TABLE __civiclake_probe (x INTEGER)")
            except duckdb.Error as exc:
                raise CivicLakeError(
                    f"the DuckDB warehouse {self.path} is not writable: {_reason(exc)}"
                ) from None
            finally:
                with contextlib.suppress(duckdb.Error):
                    self._con.execute("ROLLBACK")
        return f"DuckDB {self.path}: writable"

    def column_types(self, table: str) -> dict[str, str]:
        with self._lock:
            return self._column_types(table)

    def _column_types(self, table: str) -> dict[str, str]:
        namespace, name = split_table(table)
        rows = self._con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_catalog = current_database() "
            "AND lower(table_schema) = lower(?) AND lower(table_name) = lower(?) "
            "ORDER BY ordinal_position",
            [namespace, name],
        ).fetchall()
        return {str(column): str(kind) for column, kind in rows}

    def count(self, table: str, where: str | None = None) -> int:
        sql = f"SELECT count(*) FROM {qualified(table)}" + (f" WHERE {where}" if where else "")
        with self._lock:
            try:
                return _first(self._con.execute(sql))
            except duckdb.Error as exc:
                raise CivicLakeError(f"cannot count {table} in DuckDB: {_reason(exc)}") from exc

    def close(self) -> None:
        self._con.close()


def _local_paths(lake: Lake, urls: list[str]) -> list[str] | None:
    """Local paths DuckDB can read itself, or None when the lake is not on this disk."""
    if not isinstance(lake.fs, LocalFileSystem):
        return None
    return [lake.fs._strip_protocol(url) for url in urls]


def _first(result: duckdb.DuckDBPyConnection) -> int:
    row = result.fetchone()
    return int(row[0]) if row else 0


def _reason(exc: BaseException) -> str:
    """The first line of a database error: the CLI shows one line."""
    return one_line((str(exc).strip().splitlines() or [""])[0]) or type(exc).__name__
