"""``PostgresWarehouse``: the load contract over one connection, COPY fed by Arrow."""

from __future__ import annotations

import contextlib
import threading
from datetime import date, datetime
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import SecretStr

from civiclake._private.prefetch import Prefetch
from civiclake.config import Settings
from civiclake.errors import CivicLakeError, ParameterError
from civiclake.lake import Lake
from civiclake.slices import RowIds, Slice, Window
from civiclake.warehouse._arrow_sql import (
    check_range,
    create_table_sql,
    missing_columns,
    qualified,
    quote_ident,
    split_table,
)
from civiclake.warehouse._sql import Load, SqlWarehouse, range_column, slice_condition
from civiclake.warehouse.postgres.connection import (
    connect,
    describe,
    load_error,
    postgres_url,
    server_reason,
)
from civiclake.warehouse.postgres.encoding import DEFAULT_BATCH_ROWS, ENCODERS, CopyFormat
from civiclake.warehouse.postgres.range_load import RangeLoad

PROBE_SCHEMA = "civiclake_doctor_probe"


class PostgresWarehouse(SqlWarehouse):
    """One connection (autocommit outside explicit transactions); operations are serialised."""

    name = "postgres"
    dialect = "postgres"
    label = "PostgreSQL"

    def __init__(
        self,
        url: SecretStr | str,
        *,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        copy_format: CopyFormat = "binary",
    ) -> None:
        if copy_format not in ENCODERS:
            raise ParameterError(f"copy_format must be one of {sorted(ENCODERS)}")
        secret = url if isinstance(url, SecretStr) else SecretStr(url)
        self.batch_rows = batch_rows
        self.copy_format: CopyFormat = copy_format
        self.target = describe(secret.get_secret_value())[0]  # host:port/db, no credentials
        self._url = secret
        self._conn = connect(secret)
        self._lock = threading.Lock()

    @property
    def _connection(self) -> psycopg.Connection[Any]:
        """The connection, opened again if the server dropped it (a restart, a timeout)."""
        if self._conn.broken:
            self._conn = connect(self._url)
        return self._conn

    @classmethod
    def from_settings(cls, settings: Settings) -> PostgresWarehouse:
        return cls(postgres_url(settings))

    def _replace(self, load: Load) -> int:
        """Delete the slice and COPY the files in, in one transaction. ``evolve``: columns of
        ``schema`` the table lacks are added (a source's new column) instead of refused."""
        table, schema, parquet_urls, lake, replaced, evolve = load
        create = self.checked_create_sql(table, schema, parquet_urls, lake, replaced)
        with self._lock:
            try:
                self._ensure_schema(split_table(table)[0])
                with self._connection.transaction(), self._conn.cursor() as cur:
                    self._begin_replace(cur, table, schema, create, replaced, evolve=evolve)
                    return self._copy_files(cur, table, parquet_urls, lake)
            except (psycopg.Error, OSError, pa.ArrowException) as exc:
                raise load_error(table, exc) from exc

    def _copy_files(
        self, cur: psycopg.Cursor[Any], table: str, parquet_urls: list[str], lake: Lake
    ) -> int:
        return sum(self._copy(cur, qualified(table), lake, url) for url in parquet_urls)

    def range_load(
        self,
        table: str,
        schema: pa.Schema,
        *,
        column: str,
        start: datetime | date,
        stop: datetime | date,
    ) -> RangeLoad:
        """``replace_range`` fed by the caller, batch by batch, while it produces the rows.

        ``with warehouse.range_load(...) as load: load.write(batch) ...``: BEGIN, delete
        ``start <= column < stop``, COPY each batch as it comes (encoded and sent from a thread
        of its own), COMMIT when the block ends without an error; any error rolls everything
        back. ``load.replace_range`` replaces a range of another table in the same transaction.
        PostgreSQL only: the other warehouses load files (``replace_range``).
        """
        check_range(table, schema, column, start, stop)
        create = create_table_sql(table, schema, "postgres")
        return RangeLoad(self, table, schema, create, Window(column, start, stop))

    def _begin_replace(
        self,
        cur: psycopg.Cursor[Any],
        table: str,
        schema: pa.Schema,
        create: str,
        replaced: Slice,
        *,
        evolve: bool = False,
    ) -> None:
        """In the open transaction: lock the table, create it if missing, delete the slice."""
        # one civiclake writer per table at a time, across processes
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"civiclake:{table}"])
        # naive bounds and CSV timestamp text (see _csv_ready) are UTC
        cur.execute("SET LOCAL TIME ZONE 'UTC'")
        self._ensure_table(cur, table, create, replaced)
        target = qualified(table)
        if evolve:
            for name, kind in missing_columns(column_types(cur, table), schema, "postgres"):
                cur.execute(f"ALTER TABLE {target} ADD COLUMN {quote_ident(name)} {kind}")
        self.check_columns(table, schema, column_types(cur, table))
        params: list[Any] = []

        def bind(value: Any) -> str:
            params.append(value)
            return "%s"

        def member(column: str, ids: RowIds) -> str:
            return f"{column} = ANY({bind(sorted(ids.ids))})"

        where = slice_condition(replaced, quote_ident, bind, member)
        if where is not None:
            cur.execute(f"DELETE FROM {target} WHERE {where}", params)

    def _ensure_schema(self, namespace: str) -> None:
        """Create the schema, if missing, in its own transaction, before the load's.

        Inside the load it would need a lock per schema (two loads creating it at once: one
        fails), serialising every table of the schema. An empty schema left by a failed load
        is harmless. Checked first: IF NOT EXISTS still needs the CREATE privilege.
        """
        conn = self._connection
        if conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [namespace]).fetchone():
            return
        with (
            contextlib.suppress(psycopg.errors.UniqueViolation, psycopg.errors.DuplicateSchema),
            conn.transaction(),  # inside a RangeLoad: a savepoint, so a lost race is harmless
        ):
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(namespace)}")

    def _ensure_table(
        self, cur: psycopg.Cursor[Any], table: str, create: str, replaced: Slice
    ) -> None:
        """Create the table and its index if missing (under the table's advisory lock)."""
        cur.execute("SELECT to_regclass(%s)", [qualified(table)])
        row = cur.fetchone()
        if row is None or row[0] is None:
            cur.execute(create)
            ranged = range_column(replaced)
            if ranged is not None:
                # BRIN: tiny, nearly free to maintain, turns the range DELETE into a range scan
                cur.execute(
                    f"CREATE INDEX ON {qualified(table)} USING brin ({quote_ident(ranged)})"
                )
            elif isinstance(replaced, RowIds):  # a merge deletes by id: a B-tree finds them
                column = quote_ident(replaced.column)
                cur.execute(f"CREATE INDEX ON {qualified(table)} ({column})")

    def _copy(self, cur: psycopg.Cursor[Any], target: str, lake: Lake, url: str) -> int:
        """Stream one Parquet file through COPY, one record batch at a time, by column name."""
        with lake.open(url) as handle:
            parquet = pq.ParquetFile(handle)
            columns = ", ".join(quote_ident(n) for n in parquet.schema_arrow.names)
            statement = f"COPY {target} ({columns}) FROM STDIN (FORMAT {self.copy_format})"
            encode = ENCODERS[self.copy_format]
            with (
                cur.copy(statement) as copy,
                Prefetch(
                    encode(parquet.iter_batches(batch_size=self.batch_rows)), name="civiclake-copy"
                ) as chunks,
            ):
                for chunk in chunks:
                    copy.write(chunk)
        return max(cur.rowcount, 0)

    def check(self) -> str:
        """Prove this login may create schemas and tables (in a transaction rolled back)."""
        with self._lock, self._connection.transaction(force_rollback=True):
            try:
                self._connection.execute(f"CREATE SCHEMA IF NOT EXISTS {PROBE_SCHEMA}")
                self._connection.execute(f"CREATE TABLE {PROBE_SCHEMA}.probe (x int)")
            except psycopg.Error as exc:
                raise CivicLakeError(
                    f"PostgreSQL at {self.target} is reachable but not writable: "
                    f"{server_reason(exc)}"
                ) from None
        return f"PostgreSQL {self.target}: connected, may create schemas and tables"

    def column_types(self, table: str) -> dict[str, str]:
        with self._lock, self._connection.cursor() as cur:
            return column_types(cur, table)

    def count(self, table: str, where: str | None = None) -> int:
        query = f"SELECT count(*) FROM {qualified(table)}" + (f" WHERE {where}" if where else "")
        with self._lock, self._connection.cursor() as cur:
            try:
                cur.execute(query)
            except psycopg.Error as exc:
                raise CivicLakeError(
                    f"cannot count {table} in PostgreSQL: {server_reason(exc)}"
                ) from exc
            row = cur.fetchone()
            return int(row[0]) if row else 0

    def close(self) -> None:
        self._conn.close()


def column_types(cur: psycopg.Cursor[Any], table: str) -> dict[str, str]:
    cur.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
        "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped "
        "ORDER BY a.attnum",
        [qualified(table)],
    )
    return {str(name): str(kind) for name, kind in cur.fetchall()}
